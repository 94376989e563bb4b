"""The offline ``sample`` provider end to end: chunking, continuous and parent symbology."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from helpers import drop_schema, index_ns, make_session, row_counts

import hdi_lab
from hdi_lab.api import make_request
from hdi_lab.core.session import HdiSession
from hdi_lab.providers import sample
from hdi_lab.providers.sample import SampleProvider

pytestmark = pytest.mark.integration

ESH4, ESM4, ESU4, ESZ4 = 400001, 400002, 400005, 400006
BAR_FIELDS = ("open", "high", "low", "close", "volume")


@pytest.fixture
def other(pg_url: str, db_schema: str) -> Iterator[HdiSession]:
    """A second session on its own schema, dropped afterwards."""
    name = f"{db_schema}_b"
    s = make_session(pg_url, name)
    try:
        yield s
    finally:
        s.close()
        drop_schema(pg_url, name)


def _provider_records(**request: object) -> np.ndarray:
    """What the sample provider serves for ``request``, chunk by chunk (the input, before hdi_lab stores it)."""
    provider = SampleProvider()
    parts = [provider.records(c) for c in provider.plan(make_request("sample", **request))]  # type: ignore[arg-type]
    return np.concatenate(parts)


def _check_bars(frame: pd.DataFrame, expected: np.ndarray) -> None:
    order = np.lexsort((expected["instrument_id"], expected["ts_event"]))
    expected = expected[order]
    assert len(frame) == len(expected)
    np.testing.assert_array_equal(index_ns(frame), expected["ts_event"].astype(np.int64))
    np.testing.assert_array_equal(frame["instrument_id"].to_numpy(), expected["instrument_id"].astype(np.int64))
    for name in BAR_FIELDS:
        np.testing.assert_array_equal(frame[name].to_numpy(), expected[name].astype(np.int64), err_msg=name)


def test_one_go_equals_day_by_day(session: HdiSession, other: HdiSession) -> None:
    request = dict(schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-05")
    one = hdi_lab.ingest(provider="sample", **request, session=session)  # type: ignore[arg-type]
    assert len(one.chunks) == 3 and one.quarantined == 0 and one.inserted == one.fetched > 0

    inserted = 0
    for day in pd.date_range("2024-01-02", "2024-01-04", freq="D"):
        rep = hdi_lab.ingest(
            provider="sample",
            schema="ohlcv-1m",
            symbols=["ESH4"],
            start=day,
            end=day + pd.Timedelta(days=1),
            session=other,
        )
        assert len(rep.chunks) == 1 and rep.quarantined == 0
        inserted += rep.inserted
    assert inserted == one.inserted

    a = hdi_lab.query("ohlcv-1m", ["ESH4"], "2024-01-02", "2024-01-05", price_type="fixed", session=session)
    b = hdi_lab.query("ohlcv-1m", ["ESH4"], "2024-01-02", "2024-01-05", price_type="fixed", session=other)
    pd.testing.assert_frame_equal(a, b)
    assert (a["symbol"] == "ESH4").all() and (a["instrument_id"] == ESH4).all()
    _check_bars(a, _provider_records(**request))

    dump = 'SELECT * FROM "{s}".ohlcv_1m ORDER BY instrument_id, ts_event'
    pd.testing.assert_frame_equal(
        hdi_lab.sql(dump.format(s=session.schema), session=session),
        hdi_lab.sql(dump.format(s=other.schema), session=other),
    )
    assert row_counts(session)["ohlcv_1m"] == row_counts(other)["ohlcv_1m"] == one.inserted

    # the chunk keys are the same, so neither schema re-ingests the other's split
    again = hdi_lab.ingest(provider="sample", **request, session=other)  # type: ignore[arg-type]
    assert again.chunks_skipped == 3 and again.inserted == 0


def test_sample_data_is_deterministic_per_day(session: HdiSession, other: HdiSession) -> None:
    """A sub-day request stores exactly the matching bars of the whole day."""
    hdi_lab.ingest(
        provider="sample", schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-03", end="2024-01-04", session=session
    )
    hdi_lab.ingest(
        provider="sample",
        schema="ohlcv-1m",
        symbols=["ESH4"],
        start="2024-01-03T14:00",
        end="2024-01-03T16:30",
        session=other,
    )
    whole = hdi_lab.query(
        "ohlcv-1m", ["ESH4"], "2024-01-03T14:00", "2024-01-03T16:30", price_type="fixed", session=session
    )
    part = hdi_lab.query(
        "ohlcv-1m", ["ESH4"], "2024-01-03T14:00", "2024-01-03T16:30", price_type="fixed", session=other
    )
    assert len(part) == 150
    pd.testing.assert_frame_equal(whole, part)


def test_continuous_symbol_rolls_from_h4_to_m4(session: HdiSession) -> None:
    request = dict(schema="ohlcv-1d", symbols=["ES.c.0"], stype_in="continuous", start="2024-03-01", end="2024-04-01")
    report = hdi_lab.ingest(provider="sample", **request, session=session)  # type: ignore[arg-type]
    assert len(report.chunks) == 1 and report.quarantined == 0

    frame = hdi_lab.query("ohlcv-1d", ["ES.c.0"], "2024-03-01", "2024-04-01", price_type="fixed", session=session)
    assert len(frame) > 0 and (frame["symbol"] == "ES.c.0").all()
    roll = pd.Timestamp("2024-03-14", tz="UTC")
    before, after = frame[frame.index < roll], frame[frame.index >= roll]
    assert len(before) > 0 and len(after) > 0
    assert set(before["instrument_id"]) == {ESH4}
    assert set(after["instrument_id"]) == {ESM4}
    _check_bars(frame, _provider_records(**request))
    for ts, iid in zip(frame.index, frame["instrument_id"], strict=True):
        front = sample.front("ES", ts.date())
        assert front is not None and front.instrument_id == iid, ts


def test_continuous_query_over_a_sub_range(session: HdiSession) -> None:
    hdi_lab.ingest(
        provider="sample",
        schema="ohlcv-1d",
        symbols=["ES.c.0"],
        stype_in="continuous",
        start="2024-03-01",
        end="2024-04-01",
        session=session,
    )
    frame = hdi_lab.query("ohlcv-1d", ["ES.c.0"], "2024-03-12", "2024-03-16", price_type="fixed", session=session)
    days = [ts.date() for ts in frame.index]
    assert days == [dt.date(2024, 3, d) for d in (12, 13, 14, 15)]
    assert frame["instrument_id"].tolist() == [ESH4, ESH4, ESM4, ESM4]


def test_parent_symbol_resolves_to_every_listed_contract(session: HdiSession) -> None:
    request = dict(schema="ohlcv-1d", symbols=["ES.FUT"], stype_in="parent", start="2024-03-11", end="2024-03-20")
    report = hdi_lab.ingest(provider="sample", **request, session=session)  # type: ignore[arg-type]
    assert report.quarantined == 0 and report.inserted == report.fetched > 0

    frame = hdi_lab.query("ohlcv-1d", ["ES.FUT"], "2024-03-11", "2024-03-20", price_type="fixed", session=session)
    assert (frame["symbol"] == "ES.FUT").all()
    assert set(frame["instrument_id"]) == {ESH4, ESM4, ESU4, ESZ4}
    _check_bars(frame, _provider_records(**request))
    # ESH4 while it is listed (to its expiry on 2024-03-15), the later contracts on every day
    h4_days = {ts.date() for ts, iid in zip(frame.index, frame["instrument_id"], strict=True) if iid == ESH4}
    assert max(h4_days) == dt.date(2024, 3, 15)
    m4_days = {ts.date() for ts, iid in zip(frame.index, frame["instrument_id"], strict=True) if iid == ESM4}
    assert h4_days < m4_days
    for later in (ESU4, ESZ4):
        assert {
            ts.date() for ts, iid in zip(frame.index, frame["instrument_id"], strict=True) if iid == later
        } == m4_days
    assert ESH4 not in set(frame.loc[frame.index >= pd.Timestamp("2024-03-16", tz="UTC"), "instrument_id"])


def test_several_symbols_one_dataset(session: HdiSession) -> None:
    request = dict(schema="ohlcv-1h", symbols=["AAPL", "MSFT", "NVDA"], start="2024-01-02", end="2024-01-04")
    report = hdi_lab.ingest(provider="sample", **request, session=session)  # type: ignore[arg-type]
    assert report.quarantined == 0
    frame = hdi_lab.query("ohlcv-1h", ["NVDA", "AAPL"], "2024-01-02", "2024-01-04", price_type="fixed", session=session)
    assert set(zip(frame["symbol"], frame["instrument_id"], strict=True)) == {("AAPL", 500001), ("NVDA", 500003)}
    # rows come by time, then in the order the symbols were asked for
    rank = frame["symbol"].map({"NVDA": 0, "AAPL": 1}).to_numpy()
    key = index_ns(frame) * 2 + rank
    assert (np.diff(key) > 0).all()
    expected = _provider_records(**request)
    expected = expected[np.isin(expected["instrument_id"], [500001, 500003])]
    by_id = frame.reset_index().sort_values(["ts_event", "instrument_id"]).set_index("ts_event")
    _check_bars(by_id, expected)


def test_sample_symbols_from_two_datasets_are_refused(session: HdiSession) -> None:
    with pytest.raises(hdi_lab.ValidationError, match="several datasets"):
        hdi_lab.ingest(
            provider="sample",
            schema="ohlcv-1d",
            symbols=["ESH4", "AAPL"],
            start="2024-01-02",
            end="2024-01-03",
            session=session,
        )
    with pytest.raises(hdi_lab.ValidationError, match="stype_in=continuous"):
        hdi_lab.ingest(
            provider="sample",
            schema="ohlcv-1d",
            symbols=["ES.c.0"],
            start="2024-01-02",
            end="2024-01-03",
            session=session,
        )


def test_a_range_of_centuries_is_refused_not_planned(session: HdiSession) -> None:
    """A dry run from 1700 would plan 118,342 day chunks: refused, saying how many and what to do."""
    from hdi_lab.errors import ValidationError

    with pytest.raises(
        ValidationError,
        match=r"would be 118,342 chunks \(one per UTC day\), more than the "
        r"10,000 one request may plan: check start and end",
    ):
        hdi_lab.ingest(
            provider="sample",
            schema="ohlcv-1m",
            symbols=["ESH4"],
            start="1700-01-01",
            end="2024-01-05",
            dry_run=True,
            session=session,
        )
    assert row_counts(session)["ingest_log"] == 0


@pytest.mark.parametrize("schema", ["ohlcv-1m", "ohlcv-1d"])
def test_plans_end_at_the_last_nanosecond_date(session: HdiSession, schema: str) -> None:
    """The chunk after 2262-04-11 cannot be represented: the request's end closes the last chunk."""
    report = hdi_lab.ingest(
        provider="sample",
        schema=schema,
        symbols=["AAPL"],
        start="2262-04-01",
        end="2262-04-11T12:00",
        dry_run=True,
        session=session,
    )
    assert report.chunks[-1].chunk.end == pd.Timestamp("2262-04-11T12:00", tz="UTC")
    assert len(report.chunks) == (11 if schema == "ohlcv-1m" else 1)
