"""Live sessions (issue 18): the real ``databento.Live`` client against the local fake gateway
(tests/fake_databento_live.py), records stored through the one ingestion path into a real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg2
import pytest
from fake_databento_live import KEY, FakeLiveGateway

import hdi_lab
from hdi_lab.core import live
from hdi_lab.core.session import HdiSession
from hdi_lab.schemas import Schema, SType

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DAY = ("2024-03-01", "2024-03-02")
ES = dict(provider="databento", dataset="GLBX.MDP3", symbols="ES.c.0", stype_in="continuous")


@pytest.fixture
def gateway() -> Iterator[FakeLiveGateway]:
    gw = FakeLiveGateway(window=DAY)
    yield gw
    gw.close()


def live_session(session: HdiSession, gw: FakeLiveGateway) -> HdiSession:
    """A session of ``session``'s database whose Databento live feed talks to ``gw``."""
    return HdiSession(session.settings.replace(databento_api_key=KEY, databento_live_gateway=f"{gw.host}:{gw.port}"))


def request(schema: str = "trades,ohlcv-1s", **kw: object) -> live.LiveRequest:
    args: dict[str, object] = {**ES, "schema": schema, **kw}
    return live.make_request(str(args.pop("provider")), **args)  # type: ignore[arg-type]


def served(gw: FakeLiveGateway, schema: Schema) -> np.ndarray:
    return gw.records(schema, SType.CONTINUOUS, ["ES.c.0"])


def wait_for(handle: live.LiveHandle, records: int, timeout: float = 60.0) -> live.LiveStatus:
    """Wait until ``handle`` received ``records`` records (stored, duplicates or quarantined)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = handle.status()
        if st.records >= records or not handle.running:
            return st
        time.sleep(0.05)
    raise AssertionError(f"timed out: {handle.status()}")


def count(pg_url: str, schema: str, table: str) -> int:
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{schema}"."{table}"')
        n = int(cur.fetchone()[0])  # type: ignore[index]
    conn.close()
    return n


def test_stream_a_day_then_ingest_it_historically_changes_nothing(
    session: HdiSession, gateway: FakeLiveGateway, pg_url: str, db_schema: str
) -> None:
    want = {s: served(gateway, s) for s in (Schema.TRADES, Schema.OHLCV_1S)}
    total = sum(len(r) for r in want.values())
    with live_session(session, gateway) as s:
        handle = live.start(request(), s, heartbeat_interval_s=1)
        st = wait_for(handle, total)
        st = handle.stop()
    assert st.state == "stopped", st
    assert (st.records, st.inserted, st.quarantined, st.reconnects) == (total, total, 0, 0)
    assert count(pg_url, db_schema, "trades") == len(want[Schema.TRADES])
    assert count(pg_url, db_schema, "ohlcv_1s") == len(want[Schema.OHLCV_1S])
    # the stream's symbol mapping is stored as the historical metadata's: ES.c.0 is ESH4 on that day
    got = hdi_lab.query("trades", "ES.c.0", *DAY, session=session, price_type="fixed")
    assert len(got) == len(want[Schema.TRADES])
    assert np.array_equal(got["price"].to_numpy(), want[Schema.TRADES]["price"].astype(np.int64))
    # the same day ingested historically: every record is already stored, nothing changes
    for schema in ("trades", "ohlcv-1s"):
        report = hdi_lab.ingest(
            provider="sample",
            schema=schema,
            symbols=["ES.c.0"],
            stype_in="continuous",
            start=DAY[0],
            end=DAY[1],
            session=session,
        )
        assert (report.inserted, report.updated, report.deleted, report.quarantined) == (0, 0, 0, 0), report
        assert report.duplicates == len(want[Schema(schema)])
    assert count(pg_url, db_schema, "trades") == len(want[Schema.TRADES])
    rows = live.sessions(session)
    assert rows.loc[0, "state"] == "stopped" and rows.loc[0, "records"] == total
