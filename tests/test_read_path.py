"""The read path: one range scan per span (UNION ALL) or an unnest of many spans (LATERAL) give the same rows in
the same order; rows of another dataset's publisher never come back; a publisher added after the session cached
the publishers is seen; COPY columns are checked for NULLs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg2
import pytest

import hdi_lab
from hdi_lab.core import sessions
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import StorageError
from hdi_lab.storage import copy, scan

pytestmark = pytest.mark.integration

BARS = dict(provider="sample", schema="ohlcv-1m", symbols=["ESH4", "NQH4"], start="2024-01-02", end="2024-01-05")
TRADES = dict(provider="sample", schema="trades", symbols=["ESH4", "NQH4"], start="2024-01-02", end="2024-01-04")


def _admin(pg_url: str, statement: str, params: tuple[object, ...] = ()) -> None:
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
    finally:
        conn.close()


@pytest.mark.parametrize(("request_", "schema"), [(BARS, "ohlcv-1m"), (TRADES, "trades")])
def test_the_union_and_the_lateral_statements_read_the_same_rows(
    session: HdiSession, monkeypatch: pytest.MonkeyPatch, request_: dict[str, object], schema: str
) -> None:
    hdi_lab.ingest(**request_, session=session)  # type: ignore[arg-type]
    syms = ["NQH4", "ESH4"]
    if schema == "ohlcv-1m":  # a continuous symbol too: the same instrument under two symbols
        hdi_lab.ingest(**{**request_, "symbols": "ES.c.0", "stype_in": "continuous"}, session=session)  # type: ignore[arg-type]
        syms.append("ES.c.0")
    args = (schema, syms, "2024-01-02T13:07:00Z", "2024-01-03T21:00:00.000000123Z")
    union = hdi_lab.query(*args, session=session)
    monkeypatch.setattr(scan, "UNION_SPANS", 0)  # every read through the LATERAL statement
    lateral = hdi_lab.query(*args, session=session)
    assert len(union) > 0 and set(union["symbol"]) == set(syms)
    pd.testing.assert_frame_equal(union, lateral)
    stamps = union.index.asi8
    assert (np.diff(stamps) >= 0).all()  # time order, then symbol as requested, then instrument
    codes = pd.Categorical(union["symbol"], categories=syms).codes
    same = stamps[1:] == stamps[:-1]
    assert (codes[1:][same] >= codes[:-1][same]).all()


def test_rows_of_another_datasets_publisher_are_left_out_and_new_publishers_seen(
    session: HdiSession, pg_url: str
) -> None:
    hdi_lab.ingest(**BARS, session=session)  # type: ignore[arg-type]
    before = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-05", session=session)
    s = session.schema
    iid = int(before["instrument_id"].iloc[0])
    # the same instrument id from a publisher of another dataset (ids are the vendor's per dataset)
    _admin(pg_url, f"INSERT INTO \"{s}\".publishers VALUES (9001, 'XTST.OTHER', 'XTST')")
    _admin(
        pg_url,
        f'INSERT INTO "{s}".ohlcv_1m (instrument_id, publisher_id, ts_event, open, high, low, close, volume) '
        "SELECT instrument_id, 9001, ts_event, open, high, low, close, volume FROM "
        f'"{s}".ohlcv_1m WHERE instrument_id = %s',
        (iid,),
    )
    after = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-05", session=session)
    pd.testing.assert_frame_equal(before, after)
    # a publisher of the same dataset added after the session cached the publishers: its rows are read
    _admin(pg_url, f"INSERT INTO \"{s}\".publishers VALUES (9002, 'GLBX.MDP3', 'XTST')")
    _admin(
        pg_url,
        f'INSERT INTO "{s}".ohlcv_1m (instrument_id, publisher_id, ts_event, open, high, low, close, volume) '
        f'SELECT instrument_id, 9002, ts_event, open, high, low, close, volume FROM "{s}".ohlcv_1m '
        "WHERE instrument_id = %s AND publisher_id <> 9001",
        (iid,),
    )
    both = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-05", session=session)
    assert len(both) == 2 * len(before)
    assert sorted(set(both["publisher_id"])) == sorted({*before["publisher_id"], 9002})
    assert (np.diff(both.index.asi8) >= 0).all()
    assert both["session"].notna().all()
    # each row's session found from its own (publisher, instrument), as labelling the frame afresh finds it
    many = hdi_lab.query("ohlcv-1m", ["NQH4", "ESH4"], "2024-01-02", "2024-01-05", session=session)
    assert len(set(zip(many["publisher_id"], many["instrument_id"], strict=True))) == 3
    pd.testing.assert_series_equal(many["session"], sessions.label(session, many, 60 * 10**9))


def test_copy_columns_refuse_nulls(session: HdiSession) -> None:
    conn = session.connection()
    with conn.cursor() as cur:
        good = copy.copy_view(cur, "SELECT g::int8, (g * 2)::int4 FROM generate_series(1, 10000) g")
        cols = copy.columns(good, ["int8", "int4"])
        assert cols[0].dtype == np.dtype("int64") and cols[0].flags.c_contiguous
        assert cols[0].tolist() == list(range(1, 10001)) and cols[1].tolist() == list(range(2, 20001, 2))
        # a NULL in the last rows only (the first blocks are fine): still found
        bad = copy.copy_view(
            cur, "SELECT CASE WHEN g = 9999 THEN NULL ELSE g END::int8, 1::int8 FROM generate_series(1, 10000) g"
        )
        with pytest.raises(StorageError, match="NULL"):
            copy.columns(bad, ["int8", "int8"])
    conn.rollback()
