"""IB on a Dask cluster: the real ib_async client in two worker processes of a ``LocalCluster`` against the fake
TWS gateway (tests/fake_ib.py), through the ingest core into the test PostgreSQL; stored rows compared exactly with
a serial run's.

The workers pace their requests through the database's ledger on the database's clock, while the fake checks IB's
rules on its own (a real clock: the processes share no virtual one). The rules are IB's shape scaled down
(:data:`RULES`: a window of 2 s instead of 10 minutes) so a test waits seconds; the margin added to each wait
covers the time from a booking to the fake's receipt. The serial runs go to a second fake on a virtual clock.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import psycopg2
import pytest
from fake_ib import FakeIbGateway
from helpers import make_session, stored_rows

import hdi_lab
from hdi_lab.api import make_request
from hdi_lab.config import Settings
from hdi_lab.core import ingestion
from hdi_lab.core.executors import DaskExecutor
from hdi_lab.core.ledger import DatabaseLedger
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import UnavailableError
from hdi_lab.providers.base import Provider
from hdi_lab.providers.ib.client import IbConnection, load_library
from hdi_lab.providers.ib.pacing import Clock, HistRequest, Rules, SharedPacer, VirtualClock, violations
from hdi_lab.providers.ib.provider import CLIENT_IDS, IbProvider
from hdi_lab.storage import ledger as ledger_table

pytestmark = pytest.mark.integration

#: IB's pacing rules scaled down for the wall clock: 4 requests per 2 s, 2 per contract per 0.5 s, no identical
#: request within 1 s; each wait gets a margin of 0.4 s
RULES = Rules(window_s=2.0, window_max=4, identical_s=1.0, burst_s=0.5, burst_max=2, margin_s=0.4)
REQUEST = dict(schema="ohlcv-1m", symbols=["AAPL:STK:SMART:USD", "ES:FUT:CME:USD:202403"])
RANGE = dict(start="2024-01-02", end="2024-01-06")  # 4 weekdays: 8 bar requests and AAPL's head timestamp
TABLES = ("ohlcv_1m", "instruments", "symbology", "bar_counts", "publishers")
FIRST_ID = 40


def day(i: int) -> pd.Timestamp:
    return pd.Timestamp("2024-01-02", tz="UTC") + pd.Timedelta(days=i)


@pytest.fixture
def gateway() -> Iterator[FakeIbGateway]:
    """The fake the cluster's workers talk to: IB's rules (scaled) checked on the wall clock."""
    gw = FakeIbGateway(rules=RULES)
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def serial_gateway() -> Iterator[FakeIbGateway]:
    """A fake for the serial runs, on a virtual clock (no waiting)."""
    gw = FakeIbGateway(clock=VirtualClock(1000.0))
    gw.start()
    yield gw
    gw.stop()


def ib_settings(settings: Settings, gw: FakeIbGateway) -> Settings:
    return settings.replace(
        ib_host="127.0.0.1", ib_port=gw.port, ib_client_id=FIRST_ID, ib_library="ib_async", ib_timeout=5.0
    )


def serial_ingest(pg_url: str, db_schema: str, gw: FakeIbGateway, **request: Any) -> hdi_lab.IngestReport:
    with make_session(pg_url, db_schema) as s, IbProvider(ib_settings(s.settings, gw), clock=gw.clock) as prov:
        return ingestion.run(make_request("ib", **request), s, provider=prov)


def assert_paced_and_one_connection_per_id(gw: FakeIbGateway) -> None:
    """The fake saw no pacing violation on its clock (nor does a brute-force check of every request it received),
    both workers sent requests, and no connection was refused for a client id in use."""
    assert gw.violations == [] and violations(gw.sent, RULES) == []
    assert gw.clashes == []
    assert len(set(gw.sent_by)) == 2 and set(gw.sent_by) <= set(range(FIRST_ID, FIRST_ID + CLIENT_IDS))
    assert len(gw.sent) > RULES.window_max  # more than one window allows: the workers had to take turns


def test_ib_ingest_on_two_worker_processes_equals_a_serial_run(
    pg_url: str,
    session: HdiSession,
    other_schema: str,
    cluster: tuple[Any, Any],
    gateway: FakeIbGateway,
    serial_gateway: FakeIbGateway,
) -> None:
    _, client = cluster
    serial = serial_ingest(pg_url, other_schema, serial_gateway, **REQUEST, **RANGE)
    req = make_request("ib", **REQUEST, **RANGE)  # type: ignore[arg-type]
    with IbProvider(ib_settings(session.settings, gateway), rules=RULES) as prov:
        report = ingestion.run(req, session, provider=prov, executor=DaskExecutor(client))
        assert prov.connections == 0  # the caller only plans: the workers connect

    assert stored_rows(pg_url, session.schema, TABLES) == stored_rows(pg_url, other_schema, TABLES)
    assert [c.chunk.key for c in report.chunks] == [c.chunk.key for c in serial.chunks]
    assert report.fetched == serial.fetched > 1000 and report.inserted == serial.inserted
    assert_paced_and_one_connection_per_id(gateway)
    # every connection had a leased id (a worker connects once per wave of the run: definitions, then bars)
    assert set(gateway.client_ids) == set(gateway.sent_by)
    # the workers gave their leases back when the run ended (its plugin's teardown)
    conn = psycopg2.connect(pg_url)
    try:
        assert ledger_table.leases(conn, session.schema) == []
    finally:
        conn.close()


@pytest.mark.reliability
def test_a_worker_killed_waiting_for_ib_loses_and_duplicates_nothing(
    pg_url: str,
    session: HdiSession,
    other_schema: str,
    cluster: tuple[Any, Any],
    gateway: FakeIbGateway,
    serial_gateway: FakeIbGateway,
) -> None:
    _, client = cluster
    gateway.hold_at.add(4)  # the 4th request waits for an answer until the test releases it (never, here)
    req = make_request("ib", **REQUEST, **RANGE)  # type: ignore[arg-type]
    with IbProvider(ib_settings(session.settings, gateway), rules=RULES) as prov, ThreadPoolExecutor(1) as pool:
        running = pool.submit(ingestion.run, req, session, provider=prov, executor=DaskExecutor(client))
        deadline = time.monotonic() + 60
        while not gateway.holding:
            assert time.monotonic() < deadline, "the held request never came"
            assert not running.done(), running.result()
            time.sleep(0.05)
        [client_id] = gateway.holding
        conn = psycopg2.connect(pg_url)
        try:
            held = {cid: pid for _, cid, _, pid in ledger_table.leases(conn, session.schema)}
        finally:
            conn.close()
        pid = held[client_id]  # the worker process that connected with that client id
        assert pid in set(client.run(os.getpid).values()) and pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        report = running.result(timeout=120)

    serial = serial_ingest(pg_url, other_schema, serial_gateway, **REQUEST, **RANGE)
    assert [c.error for c in report.chunks] == [None] * len(serial.chunks)
    assert report.fetched == serial.fetched and report.inserted == serial.inserted
    stored = stored_rows(pg_url, session.schema, TABLES)
    assert stored == stored_rows(pg_url, other_schema, TABLES)
    assert len({row[0] for row in stored["ingest_log"]}) == len(stored["ingest_log"]) == len(serial.chunks)
    # the held request was sent again by another worker (identical, after IB's identical-request wait): no
    # violation, and the dead worker's lease was freed with its database connection, not taken twice
    assert gateway.violations == [] and violations(gateway.sent, RULES) == []
    assert gateway.clashes == []
    held_request = gateway.sent[3][1]
    assert sum(1 for _, r in gateway.sent if r == held_request) >= 2


class _PacedSession(HdiSession):
    """A session whose IB provider uses ``rules`` and ``clock`` (an update makes its providers itself)."""

    def __init__(self, settings: Settings, rules: Rules, clock: Clock | None = None) -> None:
        super().__init__(settings)
        self._rules, self._clock = rules, clock

    def provider(self, name: str) -> Provider:
        if name == "ib":
            return IbProvider(self.settings, clock=self._clock, rules=self._rules)
        return super().provider(name)


def test_ib_update_on_the_cluster_equals_a_serial_update(
    pg_url: str,
    session: HdiSession,
    other_schema: str,
    cluster: tuple[Any, Any],
    gateway: FakeIbGateway,
    serial_gateway: FakeIbGateway,
) -> None:
    _, client = cluster
    with make_session(pg_url, other_schema) as serial_base:
        serial_settings = ib_settings(serial_base.settings, serial_gateway)
    runs: list[tuple[HdiSession, dict[str, Any]]] = [
        (_PacedSession(serial_settings, Rules(), serial_gateway.clock), {}),
        (_PacedSession(ib_settings(session.settings, gateway), RULES), {"executor": "dask", "scheduler": client}),
    ]
    reports = []
    for s, how in runs:
        try:
            hdi_lab.watch("ib", schema="ohlcv-1m", symbols=REQUEST["symbols"], since=RANGE["start"], session=s)
            reports.append(hdi_lab.update(until=RANGE["end"], session=s, **how))
        finally:
            s.close()
    local, dask = (r.plans[0].report for r in reports)
    assert local is not None and dask is not None
    assert [c.chunk.key for c in dask.chunks] == [c.chunk.key for c in local.chunks]
    assert dask.fetched == local.fetched > 1000 and not dask.failed
    assert stored_rows(pg_url, session.schema, TABLES) == stored_rows(pg_url, other_schema, TABLES)
    assert_paced_and_one_connection_per_id(gateway)


# -- the ledger itself: shared pacing and client-id leases between processes (each a connection of its own) ------


def test_shared_pacers_take_turns_through_the_database(session: HdiSession) -> None:
    """Two pacers, each with its own ledger connection (as two workers): what one sent counts for the other, on
    the database's clock; a hold (after a pacing violation) holds both."""
    session.connection()  # the schema migrated
    url = session.database_url()
    rules = Rules(window_s=0.6, window_max=3, identical_s=0.3, burst_s=0.2, burst_max=2, margin_s=0.05)
    ledgers = [DatabaseLedger(url, session.schema) for _ in range(2)]
    try:
        a, b = (SharedPacer(rules, Clock(), ledger, "ib:test:1") for ledger in ledgers)
        sent: list[tuple[float, HistRequest]] = []
        for i in range(3):  # the window's 3 requests from one process
            r = HistRequest(str(i), "SMART", "TRADES", "1 min", day(i), "60 S")
            sent.append((a.acquire(r), r))
            a.release()
        r = HistRequest("9", "SMART", "TRADES", "1 min", day(9), "60 S")
        sent.append((b.acquire(r), r))  # the other process waits for the window to move
        b.release()
        assert sent[3][0] - sent[0][0] >= rules.window_s
        assert violations(sent, rules) == [] and violations([(sent[0][0], q) for _, q in sent], rules) != []
        a.hold(0.5)  # booked after sent[3]: nothing goes for 0.5 s from then, whichever process asks
        r = HistRequest("8", "SMART", "TRADES", "1 min", day(8), "60 S")
        at = b.acquire(r)
        b.release()
        assert at >= sent[3][0] + 0.5
    finally:
        for ledger in ledgers:
            ledger.close()


def test_client_ids_are_leased_once_and_an_id_in_use_elsewhere_is_skipped(
    session: HdiSession, gateway: FakeIbGateway
) -> None:
    session.connection()
    url = session.database_url()
    settings = ib_settings(session.settings, gateway)
    ledgers = [DatabaseLedger(url, session.schema) for _ in range(3)]
    provs = [IbProvider(settings, rules=RULES) for _ in ledgers]
    for prov, ledger in zip(provs, ledgers, strict=True):
        prov.share_ledger(ledger)
    # another program holds FIRST_ID + 1 (no lease: TWS refuses it to the second worker, which takes the next)
    other = IbConnection(load_library("ib_async"), "127.0.0.1", gateway.port, FIRST_ID + 1, 5.0).__enter__()
    try:
        ids = [prov.connection().client_id for prov in provs]
        assert ids == [FIRST_ID, FIRST_ID + 2, FIRST_ID + 3]
        # refused once, by the fake as TWS does: the worker that found it keeps it leased, so the next skips it
        assert gateway.clashes == [FIRST_ID + 1]
        conn = psycopg2.connect(url)
        try:
            held = ledger_table.leases(conn, session.schema)
            assert [(cid, pid) for _, cid, _, pid in held] == [(FIRST_ID + i, os.getpid()) for i in range(4)]
            # a process that dies frees its ids: its ledger connection ends
            ledgers[0].close()
            left = ledger_table.leases(conn, session.schema)
            assert [cid for _, cid, _, _ in left] == [FIRST_ID + i for i in (1, 2, 3)]
        finally:
            conn.close()
        provs[0].close()
        provs[0].share_ledger(ledgers[0])
        assert provs[0].connection().client_id == FIRST_ID  # free again
    finally:
        other.close()
        for prov in provs:
            prov.close()
        for ledger in ledgers:
            ledger.close()


def test_a_client_id_in_use_is_a_clear_error_without_a_ledger(session: HdiSession, gateway: FakeIbGateway) -> None:
    """A local run keeps its one client id: TWS refusing it (error 326) ends the wait at once with the fix."""
    other = IbConnection(load_library("ib_async"), "127.0.0.1", gateway.port, FIRST_ID, 5.0).__enter__()
    try:
        with IbProvider(ib_settings(session.settings, gateway), rules=RULES) as prov:
            t0 = time.monotonic()
            with pytest.raises(UnavailableError, match=f"refused client id {FIRST_ID}: .*set HDI_IB_CLIENT_ID"):
                prov.connection()
            assert time.monotonic() - t0 < 4.0  # not the 5 s connect timeout
        assert gateway.clashes == [FIRST_ID]
    finally:
        other.close()
