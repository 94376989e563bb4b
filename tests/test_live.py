"""Live sessions (issue 18): the real ``databento.Live`` client against the local fake gateway
(tests/fake_databento_live.py), records stored through the one ingestion path into a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg2
import pytest
from fake_databento_live import KEY, FakeLiveGateway, Fault, live_session

import hdi_lab
from hdi_lab.core import live
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import IngestReport, Schema, SType

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DAY = ("2024-03-01", "2024-03-02")
ES = dict(provider="databento", dataset="GLBX.MDP3", symbols="ES.c.0", stype_in="continuous")


@pytest.fixture
def gateway() -> Iterator[FakeLiveGateway]:
    gw = FakeLiveGateway(window=DAY)
    yield gw
    gw.close()


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


def ingest_day(session: HdiSession, schema: str) -> IngestReport:
    """The streamed day of ES.c.0 ingested historically (the sample provider: the records the fake serves)."""
    return hdi_lab.ingest(
        provider="sample",
        schema=schema,
        symbols=["ES.c.0"],
        stype_in="continuous",
        start=DAY[0],
        end=DAY[1],
        session=session,
    )


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
        report = ingest_day(session, schema)
        assert (report.inserted, report.updated, report.deleted, report.quarantined) == (0, 0, 0, 0), report
        assert report.duplicates == len(want[Schema(schema)])
    assert count(pg_url, db_schema, "trades") == len(want[Schema.TRADES])
    rows = live.sessions(session)
    assert rows.loc[0, "state"] == "stopped" and rows.loc[0, "records"] == total


def test_disconnect_mid_stream_resumes_with_intraday_replay_and_stores_each_record_once(
    session: HdiSession, gateway: FakeLiveGateway, pg_url: str, db_schema: str
) -> None:
    want = {s: served(gateway, s) for s in (Schema.TRADES, Schema.OHLCV_1S)}
    total = sum(len(r) for r in want.values())
    gateway.faults = [Fault(drop_after=30_000)]
    with live_session(session, gateway) as s:
        handle = live.start(request(), s, heartbeat_interval_s=1, backoff=0.05)
        wait_for(handle, total)
        st = handle.stop()
    assert st.state == "stopped" and st.reconnects == 1, st
    assert (st.records, st.inserted) == (total, total), st
    assert st.replayed > 0  # the replay re-sent what had been received: recognised, stored once
    assert gateway.connections[0].ended == "dropped"
    first, second = gateway.connections[0], gateway.connections[1]
    assert all("start" not in sub for sub in first.subscriptions)
    # each schema resumed from the last ts_event stored for it
    resumed = {sub["schema"]: int(sub["start"]) for sub in second.subscriptions}
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        for schema, table in (("trades", "trades"), ("ohlcv-1s", "ohlcv_1s")):
            key = "instrument_id, ts_event, ts_event_ns, dup_idx" if table == "trades" else "instrument_id, ts_event"
            cur.execute(f'SELECT count(*), count(DISTINCT ({key})) FROM "{db_schema}"."{table}"')
            n, distinct = cur.fetchone()  # type: ignore[misc]
            assert n == distinct == len(want[Schema(schema)])
            assert resumed[schema] <= int(want[Schema(schema)]["ts_event"].max())
    conn.close()
    row = live.sessions(session).iloc[0]
    assert (row["reconnects"], row["records"], row["replayed"]) == (1, total, st.replayed)


def test_a_silent_gateway_is_detected_by_the_heartbeat_timeout_and_replaced(
    session: HdiSession, gateway: FakeLiveGateway
) -> None:
    want = served(gateway, Schema.TRADES)
    gateway.faults = [Fault(stall_after=5_000)]  # then nothing at all, heartbeats included
    with live_session(session, gateway) as s:
        t0 = time.monotonic()
        handle = live.start(request("trades"), s, heartbeat_interval_s=1, heartbeat_timeout=1.5, backoff=0.05)
        st = wait_for(handle, len(want))
        took = time.monotonic() - t0
        st = handle.stop()
    assert st.state == "stopped" and st.reconnects == 1 and st.inserted == len(want), st
    assert gateway.connections[0].ended == "stalled"
    assert any("nothing received for" in n for n in st.notes), st.notes
    assert took < 30  # the client's own monitor would wait for the heartbeat interval + 10 s


def test_a_slow_writer_applies_backpressure_and_loses_nothing(session: HdiSession, pg_url: str, db_schema: str) -> None:
    with FakeLiveGateway(window=("2024-03-01 14:00", "2024-03-01 16:00")) as gw:
        want = served(gw, Schema.TRADES)
        assert len(want) > 2_000
        commits: list[int] = []

        def slow(commit: live.LiveCommit) -> None:  # a consumer slower than the feed (e.g. indicators)
            commits.append(sum(len(r) for r in commit.records.values()))
            time.sleep(0.02)

        with live_session(session, gw) as s:
            handle = live.start(
                request("trades"), s, heartbeat_interval_s=1, buffer_size=200, max_batch=100, on_commit=slow
            )
            wait_for(handle, len(want))
            st = handle.stop()
    assert st.state == "stopped" and st.inserted == len(want), st
    assert st.backpressure_waits > 0  # the feed waited for room: the client stopped reading
    assert st.buffer_high_water <= 200  # memory stayed bounded by the buffer
    assert sum(commits) == len(want) and max(commits) <= 100
    assert count(pg_url, db_schema, "trades") == len(want)


def test_malformed_records_go_to_quarantine_with_their_reason(
    session: HdiSession, gateway: FakeLiveGateway, pg_url: str, db_schema: str
) -> None:
    want = served(gateway, Schema.TRADES)
    gateway.malformed = {"trades": {10, 2_000}}
    with live_session(session, gateway) as s:
        handle = live.start(request("trades"), s, heartbeat_interval_s=1)
        wait_for(handle, len(want))
        st = handle.stop()
    assert (st.records, st.inserted, st.quarantined) == (len(want), len(want) - 2, 2), st
    from hdi_lab.core import quarantine

    found = quarantine.list_entries(session, "open", None, 10)
    assert sorted(found["rule"]) == ["size_nonpositive", "size_nonpositive"]
    assert all("size is 0" in r for r in found["reason"])
    assert count(pg_url, db_schema, "trades") + 2 == len(want)  # nothing lost: stored or quarantined


def test_definitions_and_statistics_stream_into_their_tables(session: HdiSession, gateway: FakeLiveGateway) -> None:
    want = {s: served(gateway, s) for s in (Schema.DEFINITION, Schema.STATISTICS)}
    with live_session(session, gateway) as s:
        handle = live.start(request("definition,statistics"), s, heartbeat_interval_s=1)
        wait_for(handle, sum(len(r) for r in want.values()))
        st = handle.stop()
    assert st.inserted == sum(len(r) for r in want.values()) and st.quarantined == 0, st
    for schema in ("definition", "statistics"):
        report = ingest_day(session, schema)
        assert (report.inserted, report.updated, report.deleted) == (0, 0, 0), report


def test_a_wrong_key_fails_the_session_with_a_clear_message(session: HdiSession, gateway: FakeLiveGateway) -> None:
    gateway.key = "db-AnotherKey0123456789wxyz"
    with live_session(session, gateway) as s:
        handle = live.start(request("trades"), s, heartbeat_interval_s=1)
        st = handle.wait(30)
    assert st.state == "failed" and "refused the API key" in (st.error or ""), st
    assert live.sessions(session).iloc[0]["state"] == "failed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(provider="sample"), "has no live feed"),
        (dict(dataset=None), "dataset is required"),
        (dict(schema=""), "schema is required"),
        (dict(schema="trades,mbp-10"), "schema"),
        (dict(symbols=""), "symbols are required"),
        (dict(stype_in="nope"), "stype_in"),
        (dict(start="yesterday-ish"), "start"),
    ],
)
def test_bad_requests_are_one_line_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {**ES, "schema": "trades", **kwargs}
    with pytest.raises(ValidationError, match=message):
        live.make_request(str(args.pop("provider")), **args)  # type: ignore[arg-type]


def test_hdi_live_start_stops_gracefully_on_sigterm(
    session: HdiSession, pg_url: str, db_schema: str, hdi_env: dict[str, str]
) -> None:
    with FakeLiveGateway(window=DAY, speed=600.0) as gw:  # 10 data-minutes per second: mid-stream at SIGTERM
        env = {
            **os.environ,
            **hdi_env,
            "HDI_DATABENTO_API_KEY": KEY,
            "HDI_DATABENTO_LIVE_GATEWAY": f"{gw.host}:{gw.port}",
        }
        args = ["live", "start", "--dataset", "GLBX.MDP3", "--schema", "trades", "--symbols", "ES.c.0"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "hdi_lab.frontend.cli", *args, "--stype-in", "continuous", "--heartbeat", "5"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = live.sessions(session)
                if len(rows) and rows.iloc[0]["records"] > 500:
                    break
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        sent = sum(c.records for c in gw.connections)
    assert proc.returncode == 0, err
    assert "SIGTERM" in err and "stopped" in out, (out, err)
    row = live.sessions(session).iloc[0]
    assert row["state"] == "stopped" and row["ended_at"] is not None
    stored = count(pg_url, db_schema, "trades")
    assert 500 < stored == row["records"] == row["inserted"]  # everything received was stored before the exit
    assert stored <= sent < len(served(gw, Schema.TRADES))


def test_hdi_live_status_and_stop_reach_a_session_running_elsewhere(
    session: HdiSession, gateway: FakeLiveGateway, hdi_env: dict[str, str]
) -> None:
    from helpers import run_cli

    gateway.speed = 60.0  # slow: the session runs until stopped
    with live_session(session, gateway) as s:
        handle = live.start(request("trades"), s, heartbeat_interval_s=1)
        wait_for(handle, 10)
        code, out, _ = run_cli(["live", "status"])
        assert code == 0 and "running" in out and "ES.c.0" in out
        code, out, _ = run_cli(["live", "stop", str(handle.id)])
        assert code == 0 and f"asked to stop: {handle.id}" in out
        st = handle.wait(30)
    assert st.state == "stopped" and any("stop requested" in n for n in st.notes), st
    code, _, err = run_cli(["live", "stop", str(handle.id)])
    assert code == 1 and "not running" in err


def test_hdi_live_magic_starts_reports_and_stops(
    gateway: FakeLiveGateway, hdi_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import hdi_shell
    from IPython.core.error import UsageError

    monkeypatch.setenv("HDI_DATABENTO_API_KEY", KEY)
    monkeypatch.setenv("HDI_DATABENTO_LIVE_GATEWAY", f"{gateway.host}:{gateway.port}")
    want = served(gateway, Schema.OHLCV_1S)
    with hdi_shell() as ip:
        ip.run_cell(
            "h = %hdi_live start --dataset GLBX.MDP3 --schema ohlcv-1s --symbols ES.c.0 --stype-in continuous "
            "--heartbeat 1 --features momentum_v1 --no-online"
        )
        handle = ip.user_ns["h"]
        assert isinstance(handle, live.LiveHandle)
        assert handle.features is not None and handle.features.sets == ("momentum_v1",)
        assert handle.online is None  # --no-online: the Feast online store is left alone
        wait_for(handle, len(want))
        ip.run_cell("frame = %hdi_live status")
        assert ip.user_ns["frame"].iloc[0]["state"] == "running"
        with pytest.raises(UsageError, match="only %hdi_live start takes these"):
            ip.run_cell("%hdi_live status --symbols ES.c.0")
        with pytest.raises(UsageError, match="--online: only %hdi_live start takes these"):
            ip.run_cell("%hdi_live status --online")
        ip.run_cell("final = %hdi_live stop")
        final = ip.user_ns["final"]
        assert final.state == "stopped" and final.inserted == len(want), final
        # --features: the feature set was advanced per closed bar (the stop returns once it is computed)
        assert handle.features.errors == [] and handle.features.updates, handle.features.errors


def test_sessions_show_in_hdi_status_and_the_operations_dashboard(
    session: HdiSession, gateway: FakeLiveGateway, hdi_env: dict[str, str]
) -> None:
    from helpers import run_cli

    from hdi_lab.frontend.dashboard import Operations

    code, out, _ = run_cli(["status"])
    assert code == 0 and "live sessions:\n  (none: hdi live start ...)" in out
    assert "no live sessions" in Operations(session).live.value
    want = len(served(gateway, Schema.OHLCV_1S))
    with live_session(session, gateway) as s:
        handle = live.start(request("ohlcv-1s"), s, heartbeat_interval_s=1)
        wait_for(handle, want)
        running = live.summary(session)
        page = Operations(session)
        st = handle.stop()
    assert list(running.columns) == list(live.SUMMARY_COLUMNS)
    assert running.loc[0, "state"] == "running" and running.loc[0, "records"] >= 0
    assert "hdi-live" in page.live.value and "<td>running</td>" in page.live.value
    code, out, _ = run_cli(["status"])
    assert code == 0, out
    line = next(x for x in out.split("live sessions:")[1].splitlines() if x.strip().startswith(str(handle.id)))
    assert "stopped" in line and "GLBX.MDP3" in line and str(st.records) in line, line
    page.refresh()
    assert "<td>stopped</td>" in page.live.value and f"<td>{st.records}</td>" in page.live.value


def test_records_before_their_mapping_are_retried_automatically_when_it_arrives(
    session: HdiSession, gateway: FakeLiveGateway, pg_url: str, db_schema: str
) -> None:
    from hdi_lab.core import quarantine

    want = served(gateway, Schema.TRADES)
    gateway.faults = [Fault(map_after=300)]  # 300 trades, then (0.5 s later) the mapping that makes ESH4 known
    with live_session(session, gateway) as s:
        handle = live.start(request("trades"), s, heartbeat_interval_s=1)
        wait_for(handle, len(want))
        st = handle.stop()
    assert st.state == "stopped" and st.records == len(want), st
    # quarantined as of an unknown instrument when they arrived, loaded by the batch that brought the mapping
    assert 0 < st.quarantined <= 300 and st.recovered == st.quarantined, st
    assert st.inserted + st.recovered == len(want) and st.duplicates == 0, st
    entries = quarantine.list_entries(session, "all", None, 1_000)
    assert len(entries) == st.quarantined and (entries["status"] == "resolved").all()
    reason = (
        f"retried automatically when live session {handle.id} made its instrument known; quarantined as: "
        f"instrument_id {int(want['instrument_id'][0])} has no symbology or definition"
    )
    assert entries["reason"].str.startswith(reason).all(), entries["reason"].iloc[0]
    row = live.sessions(session).iloc[0]
    assert (row["quarantined"], row["recovered"], row["inserted"]) == (st.quarantined, st.recovered, st.inserted)
    # nothing lost, nothing twice: the stored trades are the served ones, and the day ingested again adds nothing
    got = hdi_lab.query("trades", "ES.c.0", *DAY, session=session, price_type="fixed")
    assert np.array_equal(got["price"].to_numpy(), want["price"].astype(np.int64))
    assert count(pg_url, db_schema, "trades") == len(want)
    report = ingest_day(session, "trades")
    assert (report.inserted, report.updated, report.quarantined, report.duplicates) == (0, 0, 0, len(want)), report


def test_records_of_an_instrument_made_known_elsewhere_are_retried_at_the_end(
    session: HdiSession, gateway: FakeLiveGateway, pg_url: str, db_schema: str
) -> None:
    from hdi_lab.dbn import Mapping
    from hdi_lab.storage import load

    want = served(gateway, Schema.TRADES)
    gateway.faults = [Fault(map_after=len(want) + 1)]  # the stream never maps ES.c.0
    with live_session(session, gateway) as s:
        handle = live.start(request("trades"), s, heartbeat_interval_s=1)
        st = wait_for(handle, len(want))
        time.sleep(0.3)  # the last batch committed
        assert (st.quarantined, st.recovered, st.inserted) == (len(want), 0, 0), st
        # another writer stores the instrument's symbology meanwhile, without retrying the session's entries (as a
        # concurrent ingest whose own retry ran before they were committed)
        day = dt.date.fromisoformat(DAY[0])
        mapping = Mapping("continuous", "ES.c.0", day, day + dt.timedelta(days=1), int(want["instrument_id"][0]))
        with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
            load.upsert_symbology(cur, db_schema, "GLBX.MDP3", [mapping])
        conn.close()
        st = handle.stop()
    assert st.state == "stopped" and st.recovered == len(want), st
    assert any("loaded at the end" in n for n in st.notes), st.notes
    assert count(pg_url, db_schema, "trades") == len(want)
    assert live.sessions(session).iloc[0]["recovered"] == len(want)
    reasons = hdi_lab.sql(f'SELECT status, reason FROM "{db_schema}".quarantine', session=session)
    assert len(reasons) == len(want) and (reasons["status"] == "resolved").all()
    assert reasons["reason"].str.startswith(f"retried automatically at the end of live session {handle.id}").all()
