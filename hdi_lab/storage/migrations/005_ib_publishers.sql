-- Interactive Brokers as publishers of its own datasets (ids far above Databento's, which are < 1000):
-- bars from TWS / IB Gateway are stored under these, keyed by conId (hdi_lab/providers/ib.py).
INSERT INTO {s}.publishers (publisher_id, dataset, venue) VALUES
    (32000, 'IB', 'IBKR'),
    (32001, 'IB.MIDPOINT', 'IBKR'),
    (32002, 'IB.BID_ASK', 'IBKR')
ON CONFLICT (publisher_id) DO NOTHING;
