"""The offline store lives in :mod:`hdi_lab.featurestore.offline_store`; this path, the one
``feature_store.yaml`` names (``type: hdi_lab.feast_store.HdiOfflineStore``), keeps working."""

from __future__ import annotations

from hdi_lab.featurestore.offline_store import *  # noqa: F403  (the public names, as offline_store's __all__ declares them)
from hdi_lab.featurestore.offline_store import __all__ as __all__
