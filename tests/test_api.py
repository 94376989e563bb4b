"""Python API details: parameter conversion, numeric results, dry-run reports, progress events."""

from __future__ import annotations

import numpy as np
import pytest

import hdi_lab
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import Progress

pytestmark = pytest.mark.integration

REQ = dict(schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-04")


def test_numpy_parameters_are_sent_as_python_values(session: HdiSession) -> None:
    hdi_lab.ingest(provider="sample", **REQ, session=session)  # type: ignore[arg-type]
    ids = np.array([400001, 400002], dtype=np.int64)
    df = hdi_lab.sql(
        "SELECT count(*) AS n FROM ohlcv_1m WHERE instrument_id = ANY(%(ids)s) AND volume > %(v)s",
        {"ids": ids, "v": np.int64(0)},
        session=session,
    )
    assert int(df["n"].iloc[0]) == 2760
    one = hdi_lab.sql("SELECT %s::bigint AS x", [np.int32(7)], session=session)
    assert one["x"].tolist() == [7]
    with pytest.raises(ValidationError, match="cannot be sent"):
        hdi_lab.sql("SELECT %(x)s", {"x": object()}, session=session)


def test_numeric_results_arrive_as_floats(session: HdiSession) -> None:
    hdi_lab.ingest(provider="sample", **REQ, session=session)  # type: ignore[arg-type]
    df = hdi_lab.sql("SELECT sum(volume) AS vol, avg(close) / 1e9 AS px FROM ohlcv_1m", session=session)
    bars = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-04", session=session)
    assert df["vol"].dtype == np.float64 and df["vol"].iloc[0] == bars["volume"].sum()
    assert df["px"].iloc[0] == pytest.approx(bars["close"].mean(), rel=1e-12)


def test_dry_run_counts_chunks_already_done_and_reports_cost(session: HdiSession) -> None:
    first = hdi_lab.ingest(provider="sample", **REQ, dry_run=True, session=session)  # type: ignore[arg-type]
    assert first.chunks_skipped == 0 and first.summary()["est_cost_usd"] == 0.0
    real = hdi_lab.ingest(provider="sample", **REQ, session=session)  # type: ignore[arg-type]
    assert first.fetched == real.fetched == real.inserted
    again = hdi_lab.ingest(provider="sample", **REQ, dry_run=True, session=session)  # type: ignore[arg-type]
    assert again.chunks_skipped == len(again.chunks) == 2 and again.fetched == 0
    assert "2 already done" in str(again) and "nothing was written" in str(again)


def test_progress_announces_the_plan_then_each_chunk(session: HdiSession) -> None:
    events: list[Progress] = []
    hdi_lab.ingest(provider="sample", **REQ, session=session, progress=events.append)  # type: ignore[arg-type]
    assert [(e.done, e.total, e.chunk is None) for e in events] == [(0, 2, True), (1, 2, False), (2, 2, False)]
    assert events[-1].rows == 2760


def test_columns_of_a_bars_query_are_read_alone_and_equal_the_full_query(session: HdiSession) -> None:
    hdi_lab.ingest(
        provider="sample",
        schema="ohlcv-1m",
        symbols=["ESH4", "NQH4"],
        start="2024-01-02",
        end="2024-01-04",
        session=session,
    )
    args = ("ohlcv-1m", ["ESH4", "NQH4"], "2024-01-02", "2024-01-04")
    full = hdi_lab.query(*args, session=session)
    part = hdi_lab.query(*args, columns=["symbol", "close", "volume"], session=session)
    assert list(part.columns) == ["symbol", "close", "volume"] and len(part) == len(full) > 0
    assert part.index.equals(full.index)
    assert part.equals(full[["symbol", "close", "volume"]])
    with pytest.raises(ValidationError, match=r"unknown column\(s\) \['clsoe'\].*close"):
        hdi_lab.query(*args, columns=["clsoe"], session=session)
