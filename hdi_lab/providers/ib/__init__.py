"""Interactive Brokers: the provider (:mod:`.provider`) over ``ib_async`` / ``ib_insync`` (:mod:`.client`),
contract resolution (:mod:`.contracts`) and pacing (:mod:`.pacing`)."""
