"""Demo (listed in .feastignore): publish momentum_v1 for the offline sample data, build a training
frame and read the online store. Run from anywhere: ``python feature_repo/workflow.py``."""

import pandas as pd

import hdi_lab
from hdi_lab.publish import online_features, publish, training_frame

if __name__ == "__main__":
    with hdi_lab.HdiSession() as session:
        hdi_lab.ingest(
            provider="sample",
            schema="ohlcv-1d",
            symbols=["ESH4", "NQH4"],
            start="2023-06-01",
            end="2024-03-01",
            session=session,
        )
        report = publish("momentum_v1", ["ESH4", "NQH4"], "1d", "2023-06-01", "2024-03-01", session=session)
        print(report)
        bars = hdi_lab.query("ohlcv-1d", ["ESH4", "NQH4"], "2023-10-01", "2024-03-01", session=session)
        entities = pd.DataFrame({"instrument_id": bars["instrument_id"], "event_timestamp": bars.index})
        print(training_frame(entities, "momentum_v1", session=session).tail())
        print(online_features(report.instrument_ids, "momentum_v1", session=session))
