"""hdi_lab on real TimescaleDB: hypertables, compression, continuous aggregates, policies.

The server is PGlite's TimescaleDB build behind ``scripts/timescale-bridge`` (HDI_TEST_TIMESCALE_URL,
else started here). It serves one connection at a time and runs no background workers, so every
test uses one single-threaded session at a time (closed before anything else connects) and runs
policies with ``CALL run_job(id)``. Each test has its own schema, dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest
from conftest import ROOT, fixture_files
from helpers import by_time, drop_schema, index_ns, make_session, ns, resample_bars, row_counts

import hdi_lab
from hdi_lab.api import make_request
from hdi_lab.core import catalog
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import encode_dbn
from hdi_lab.errors import ConfigError
from hdi_lab.frontend.cli import main
from hdi_lab.frontend.display import StatusView
from hdi_lab.providers import sample
from hdi_lab.providers.sample import SampleProvider
from hdi_lab.schemas import SType
from hdi_lab.storage import aggregates, db, timescale

pytestmark = pytest.mark.integration

BARS = ("ohlcv_1s", "ohlcv_5s", "ohlcv_1m", "ohlcv_1h", "ohlcv_1d")
TICKS = ("trades", "tbbo", "statistics")


@pytest.fixture(scope="module")
def ts_url() -> Iterator[str]:
    """URL of the TimescaleDB test server (HDI_TEST_TIMESCALE_URL, else a bridge started here)."""
    url = os.environ.get("HDI_TEST_TIMESCALE_URL")
    tmp = None
    if not url:
        tmp = Path(tempfile.mkdtemp(prefix="hdi-ts-"))
        try:
            run = subprocess.run(
                ["bash", str(ROOT / "scripts" / "test-timescale"), "start", str(tmp / "bridge")],
                check=True,
                capture_output=True,
                text=True,
                timeout=600,
            )
            url = run.stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            shutil.rmtree(tmp, ignore_errors=True)
            if os.environ.get("CI"):
                pytest.fail(f"the TimescaleDB test server is required in CI and could not be started: {detail}")
            pytest.skip(f"no TimescaleDB test server (needs Node.js and npm): {detail}")
    try:
        yield url
    finally:
        if tmp:
            subprocess.run(
                ["bash", str(ROOT / "scripts" / "test-timescale"), "stop", str(tmp / "bridge")],
                check=False,
                capture_output=True,
            )
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def ts_schema(ts_url: str) -> Iterator[str]:
    name = f"ts_{uuid.uuid4().hex[:10]}"
    yield name
    drop_schema(ts_url, name)


@pytest.fixture
def ts(ts_url: str, ts_schema: str) -> Iterator[HdiSession]:
    """A single-threaded session on TimescaleDB (closed before the schema is dropped)."""
    s = make_session(ts_url, ts_schema)
    try:
        yield s
    finally:
        s.close()


def run_jobs(session: HdiSession, policy: str, targets: tuple[str, ...] | None = None) -> list[str]:
    """Run the schema's ``policy`` jobs now (no background workers here): ``CALL run_job(id)``."""
    conn = session.connection()
    jobs = timescale.job_ids(conn, session.schema, policy)
    ran = []
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for target, job in sorted(jobs.items()):
                if targets is None or target in targets:
                    cur.execute("CALL run_job(%s)", (job,))
                    ran.append(target)
    finally:
        conn.autocommit = False
    return ran


def chunks(session: HdiSession, table: str) -> pd.DataFrame:
    return hdi_lab.sql(
        "SELECT range_start, range_end, is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_schema = %s AND hypertable_name = %s ORDER BY range_start",
        (session.schema, table),
        session=session,
    )


def sample_records(**request: object) -> np.ndarray:
    provider = SampleProvider()
    plan = provider.plan(make_request("sample", **request))  # type: ignore[arg-type]
    return np.concatenate([provider.records(c) for c in plan])


def check_bars(frame: pd.DataFrame, expected: np.ndarray) -> None:
    """The stored bars are exactly the provider's records: nothing lost, nothing duplicated."""
    expected = expected[np.lexsort((expected["instrument_id"], expected["ts_event"]))]
    assert len(frame) == len(expected)
    np.testing.assert_array_equal(index_ns(frame), expected["ts_event"].astype(np.int64))
    for name in ("instrument_id", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(frame[name].to_numpy(), expected[name].astype(np.int64), err_msg=name)


# -- detection and schema ---------------------------------------------------------------------


def test_migrations_create_hypertables_compression_aggregates_and_policies(
    ts: HdiSession, ts_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = ts.connection()
    info = db.server_info(conn)
    assert info.timescaledb and info.timescaledb.startswith("2.") and info.timescaledb_available
    ht = hdi_lab.sql(
        "SELECT h.hypertable_name AS t, d.time_interval::text AS chunk, h.compression_enabled AS c "
        "FROM timescaledb_information.hypertables h JOIN timescaledb_information.dimensions d "
        "USING (hypertable_schema, hypertable_name) WHERE hypertable_schema = %s ORDER BY 1",
        (ts.schema,),
        session=ts,
    )
    assert dict(zip(ht["t"], ht["chunk"], strict=True)) == {
        "ohlcv_1s": "1 day",
        "ohlcv_5s": "1 day",
        "ohlcv_1m": "7 days",
        "ohlcv_1h": "90 days",
        "ohlcv_1d": "365 days",
        "trades": "1 day",
        "tbbo": "1 day",
        "statistics": "30 days",
    }
    assert ht["c"].all()
    cs = hdi_lab.sql(
        "SELECT hypertable_name AS t, attname, segmentby_column_index AS seg, orderby_column_index AS ord, "
        "orderby_asc AS asc FROM timescaledb_information.compression_settings WHERE hypertable_schema = %s",
        (ts.schema,),
        session=ts,
    )
    bars = cs[cs["t"] == "ohlcv_1m"].set_index("attname")
    assert bars.loc["instrument_id", "seg"] == 1 and bars.loc["publisher_id", "seg"] == 2
    assert bars.loc["ts_event", "ord"] == 1 and not bars.loc["ts_event", "asc"]
    trades = cs[cs["t"] == "trades"].set_index("attname")
    assert set(trades.dropna(subset=["ord"]).index) == {"ts_event", "ts_event_ns", "dup_idx"}

    st = db.server_info(conn, ts.schema)
    assert st.flavour == f"TimescaleDB {info.timescaledb}"
    assert sorted(st.hypertables["table"]) == sorted(BARS + TICKS)
    assert sorted(st.aggregates["view"]) == sorted(aggregates.ROLLUPS.values())
    assert not st.aggregates["materialized_only"].any()  # real-time aggregation
    policies = st.policies.groupby("policy")["target"].apply(sorted).to_dict()
    assert policies == {
        "policy_compression": sorted(BARS + TICKS),
        "policy_refresh_continuous_aggregate": sorted(aggregates.ROLLUPS.values()),
    }
    assert all(
        '"compress_after": "7 days"' in c for c in st.policies[st.policies["policy"] == "policy_compression"]["config"]
    )  # retention: none by default
    assert db.migrate(conn, ts.schema) == []  # a second run changes nothing
    assert db.server_info(conn, ts.schema).policies.equals(st.policies)
    shown = catalog.status(ts).server
    assert shown is not None and shown.timescaledb == info.timescaledb and shown.hypertables.equals(st.hypertables)
    view = repr(StatusView(catalog.status(ts), ts.schema, False))  # %hdi_status
    assert "hypertables:" in view and "policy_refresh_continuous_aggregate" in view and "rollup_1d" in view
    ts.close()  # the bridge serves one connection at a time: the CLI opens its own

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HDI_DB_SCHEMA", ts.schema)
    assert main(["--database-url", ts_url, "db", "info"], out, err) == 0, err.getvalue()
    text = out.getvalue()
    assert f"TimescaleDB {info.timescaledb}" in text
    for word in ("hypertables", "ohlcv_1m", "7 days", "compression_ratio", "rollup_5m", "policy_compression"):
        assert word in text, word


def test_retention_only_on_opt_in_and_policies_follow_settings(ts_url: str, ts_schema: str) -> None:
    def policies(**settings: object) -> pd.DataFrame:
        with make_session(ts_url, ts_schema, **settings) as s:
            return db.server_info(s.connection(), ts_schema).policies

    p = policies()
    assert "policy_retention" not in set(p["policy"])
    p = policies(timescale_retention="5 years", timescale_compress_after="30 days")
    retention = p[p["policy"] == "policy_retention"]
    assert sorted(retention["target"]) == sorted(BARS + TICKS)
    assert all('"drop_after": "5 years"' in c for c in retention["config"])
    assert all('"compress_after": "30 days"' in c for c in p[p["policy"] == "policy_compression"]["config"])
    p = policies(timescale_compress_after="off")  # retention back to unset: its policy goes
    assert set(p["policy"]) == {"policy_refresh_continuous_aggregate"}
    with pytest.raises(ConfigError, match="timescale_retention"):
        policies(timescale_retention="forever")


# -- ingest, compression, backfill -------------------------------------------------------------


def test_fixture_files_query_identically_on_timescaledb_and_plain_postgres(ts: HdiSession, session: HdiSession) -> None:
    files = [f for f in fixture_files() if "mbp-1" not in f.name]
    for target in (ts, session):
        for f in files:
            report = hdi_lab.ingest(provider="file", path=f, session=target)
            assert report.quarantined == 0 and report.inserted == report.fetched > 0, f
    queries = []
    for f in files:
        store_schema = f.name.split(".")[1]
        if store_schema == "definition":
            continue
        syms = hdi_lab.sql(
            "SELECT DISTINCT raw_symbol FROM instruments WHERE dataset = %s ORDER BY 1",
            (f.parent.name,),
            session=session,
        )["raw_symbol"].tolist()
        queries.append((store_schema, f.parent.name, syms))
    assert len(queries) > 15

    def read_all(s: HdiSession) -> list[pd.DataFrame]:
        return [
            hdi_lab.query(sch, syms, "2000-01-01", "2030-01-01", dataset=ds, price_type="fixed", session=s)
            for sch, ds, syms in queries
        ]

    plain = read_all(session)
    assert sum(len(f) for f in plain) > 0
    for a, b in zip(read_all(ts), plain, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert set(run_jobs(ts, "policy_compression")) == set(BARS + TICKS)
    compressed = db.server_info(ts.connection(), ts.schema).hypertables.set_index("table")
    assert (compressed["compressed_chunks"] == compressed["chunks"]).all() and compressed["chunks"].sum() > 10
    for a, b in zip(read_all(ts), plain, strict=True):  # compressed data reads back identically
        pd.testing.assert_frame_equal(a, b)
    for f in files:  # re-ingest into compressed chunks: nothing new, nothing changed
        report = hdi_lab.ingest(provider="file", path=f, force=True, session=ts)
        assert report.inserted == 0 and report.updated == 0 and report.duplicates == report.fetched, f
    assert row_counts(ts) == row_counts(session) | {"ingest_log": row_counts(ts)["ingest_log"]}


def test_backfill_into_compressed_chunks_loses_nothing(ts: HdiSession, tmp_path: Path) -> None:
    first = {"schema": "ohlcv-1m", "symbols": ["ESH4"], "start": "2024-01-02", "end": "2024-01-08"}
    later = {"schema": "ohlcv-1m", "symbols": ["ESH4"], "start": "2024-01-09", "end": "2024-01-12"}
    for req in (first, later):
        hdi_lab.ingest(provider="sample", **req, session=ts)  # type: ignore[arg-type]
    tbbo = {"schema": "tbbo", "symbols": ["ESH4"], "start": "2024-01-03", "end": "2024-01-04"}
    hdi_lab.ingest(provider="sample", **tbbo, session=ts)  # type: ignore[arg-type]
    before = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-01", "2024-01-13", session=ts)
    ticks = hdi_lab.query("tbbo", "ESH4", "2024-01-03", "2024-01-04", session=ts)
    assert run_jobs(ts, "policy_compression", ("ohlcv_1m", "tbbo")) == ["ohlcv_1m", "tbbo"]
    ch = chunks(ts, "ohlcv_1m")
    assert ch["is_compressed"].all() and len(ch) >= 2
    hole = pd.Timestamp("2024-01-08", tz="UTC")
    assert ((ch["range_start"] <= hole) & (ch["range_end"] > hole)).any()  # the gap is inside a compressed chunk
    pd.testing.assert_frame_equal(hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-01", "2024-01-13", session=ts), before)
    pd.testing.assert_frame_equal(hdi_lab.query("tbbo", "ESH4", "2024-01-03", "2024-01-04", session=ts), ticks)

    # backfill: the missing day, and a second instrument over the whole compressed range
    gap = hdi_lab.ingest(
        provider="sample", schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-08", end="2024-01-09", session=ts
    )
    other = hdi_lab.ingest(
        provider="sample", schema="ohlcv-1m", symbols=["ESM4"], start="2024-01-02", end="2024-01-12", session=ts
    )
    assert gap.inserted == gap.fetched > 1000 and other.inserted == other.fetched > 10000
    check_bars(
        hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-12", price_type="fixed", session=ts),
        sample_records(schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-12"),
    )
    check_bars(
        hdi_lab.query("ohlcv-1m", "ESM4", "2024-01-02", "2024-01-12", price_type="fixed", session=ts),
        sample_records(schema="ohlcv-1m", symbols=["ESM4"], start="2024-01-02", end="2024-01-12"),
    )
    # re-ingest everything: still idempotent on (partly) compressed chunks
    counts = row_counts(ts, ("ohlcv_1m", "tbbo"))
    again = hdi_lab.ingest(
        provider="sample",
        schema="ohlcv-1m",
        symbols=["ESH4"],
        start="2024-01-02",
        end="2024-01-12",
        force=True,
        session=ts,
    )
    assert again.inserted == 0 and again.duplicates == again.fetched
    assert row_counts(ts, ("ohlcv_1m", "tbbo")) == counts

    # a vendor correction of TBBO rows stored in a compressed chunk: ON CONFLICT DO UPDATE
    records = sample_records(**tbbo)
    fixed = records.copy()
    changed = np.arange(0, len(fixed), 97)
    fixed["bid_px_00"][changed] -= 250_000_000
    path = tmp_path / "tbbo-corrected.dbn.zst"
    day = dt.date(2024, 1, 3)
    path.write_bytes(
        encode_dbn(
            dataset="GLBX.MDP3",
            schema="tbbo",
            stype_in="raw_symbol",
            start=pd.Timestamp(day, tz="UTC"),
            end=pd.Timestamp(day, tz="UTC") + pd.Timedelta("1D"),
            symbols=["ESH4"],
            mappings=sample.mappings(["ESH4"], SType.RAW_SYMBOL, [day]),
            records=fixed,
        )
    )
    report = hdi_lab.ingest(provider="file", path=path, session=ts)
    assert report.updated == len(changed) and report.inserted == 0
    after = hdi_lab.query("tbbo", "ESH4", "2024-01-03", "2024-01-04", price_type="fixed", session=ts)
    assert len(after) == len(ticks) and row_counts(ts, ("ohlcv_1m", "tbbo")) == counts
    want = np.sort(fixed["bid_px_00"].astype(np.int64))
    np.testing.assert_array_equal(np.sort(after["bid_px_00"].to_numpy()), want)


# -- continuous aggregates ----------------------------------------------------------------------


def _rollups_match(session: HdiSession, start: str, end: str, intervals: tuple[str, ...]) -> None:
    bars = hdi_lab.query("ohlcv-1m", "ESH4,AAPL", start, end, price_type="fixed", session=session)
    for interval in intervals:
        got = hdi_lab.query("ohlcv-1m", "ESH4,AAPL", start, end, price_type="fixed", interval=interval, session=session)
        pd.testing.assert_frame_equal(by_time(got), resample_bars(bars, interval), obj=interval)


def test_continuous_aggregates_equal_pandas_resample_after_late_data_and_refresh(ts: HdiSession) -> None:
    for sym in ("ESH4", "AAPL"):
        for start, end in (("2024-01-02", "2024-01-04"), ("2024-01-05", "2024-01-06")):  # 01-04 comes late
            hdi_lab.ingest(provider="sample", schema="ohlcv-1m", symbols=[sym], start=start, end=end, session=ts)
    views = sorted(aggregates.ROLLUPS.values())

    def source(interval: str, start: str, end: str) -> str | None:
        """The aggregate query() reads for this range, None when it computes the rollup from raw bars."""
        with ts.connection().cursor() as cur:
            rollup = aggregates.choose(
                cur, ts.schema, "ohlcv_1m", aggregates.parse_interval(interval, 60), ns(start), ns(end)
            )
        ts.connection().rollback()
        return rollup.view

    picked = {iv: source(iv, "2024-01-02", "2024-01-06") for iv in ("5m", "15m", "1h", "1d", "30m")}
    assert picked == {"5m": "rollup_5m", "15m": "rollup_15m", "1h": "rollup_1h", "1d": "rollup_1d", "30m": None}
    intervals = ("5m", "15m", "1h", "1d", "30m")
    _rollups_match(ts, "2024-01-02", "2024-01-06", intervals)  # nothing materialised yet: real time

    assert sorted(run_jobs(ts, "policy_refresh_continuous_aggregate")) == views
    materialised = hdi_lab.sql(
        "SELECT view_name, format('%%I.%%I', materialization_hypertable_schema, materialization_hypertable_name) "
        "AS mat FROM timescaledb_information.continuous_aggregates WHERE view_schema = %s",
        (ts.schema,),
        session=ts,
    )
    for view, mat in zip(materialised["view_name"], materialised["mat"], strict=True):
        assert int(hdi_lab.sql(f"SELECT count(*) AS n FROM {mat}", session=ts)["n"].iloc[0]) > 0, view
    assert {iv: source(iv, "2024-01-02", "2024-01-06") for iv in picked} == picked
    _rollups_match(ts, "2024-01-02", "2024-01-06", intervals)  # materialised

    # late data behind the refresh: visible after the next refresh (materialised part is stale until then)
    for sym in ("ESH4", "AAPL"):
        hdi_lab.ingest(
            provider="sample", schema="ohlcv-1m", symbols=[sym], start="2024-01-04", end="2024-01-05", session=ts
        )
    materialised_day4 = "SELECT count(*) AS n FROM rollup_1h WHERE ts_event >= '2024-01-04' AND ts_event < '2024-01-05'"
    assert int(hdi_lab.sql(materialised_day4, session=ts)["n"].iloc[0]) == 0  # the aggregate alone is stale
    assert source("1h", "2024-01-04", "2024-01-05") is None  # so query() computes from the raw bars
    assert source("1h", "2024-01-05", "2024-01-06") == "rollup_1h"  # a range without late bars: the aggregate
    _rollups_match(ts, "2024-01-02", "2024-01-06", intervals)  # current before the refresh
    run_jobs(ts, "policy_refresh_continuous_aggregate")
    assert int(hdi_lab.sql(materialised_day4, session=ts)["n"].iloc[0]) > 0
    assert source("1h", "2024-01-04", "2024-01-05") == "rollup_1h"
    _rollups_match(ts, "2024-01-02", "2024-01-06", intervals)

    # compressed raw bars, late data into them, refresh: still equal
    run_jobs(ts, "policy_compression", ("ohlcv_1m",))
    assert chunks(ts, "ohlcv_1m")["is_compressed"].all()
    hdi_lab.ingest(
        provider="sample", schema="ohlcv-1m", symbols=["ESM4"], start="2024-01-02", end="2024-01-06", session=ts
    )
    assert source("15m", "2024-01-02", "2024-01-06") is None
    assert aggregates.refresh(ts.connection(), ts.schema, "2024-01-01", "2024-01-07") == views
    assert source("15m", "2024-01-02", "2024-01-06") == "rollup_15m"
    bars = hdi_lab.query("ohlcv-1m", "ESM4", "2024-01-02", "2024-01-06", price_type="fixed", session=ts)
    for interval in ("15m", "1d"):
        got = hdi_lab.query(
            "ohlcv-1m", "ESM4", "2024-01-02", "2024-01-06", price_type="fixed", interval=interval, session=ts
        )
        pd.testing.assert_frame_equal(by_time(got), resample_bars(bars, interval), obj=interval)


# -- the bridge itself ----------------------------------------------------------------------------


def test_bridge_resets_the_session_between_clients(ts_url: str, ts_schema: str) -> None:
    conn = psycopg2.connect(ts_url, options="-c timezone=America/New_York")
    with conn.cursor() as cur:
        cur.execute("SHOW timezone")
        assert cur.fetchone() == ("America/New_York",)
        cur.execute(f'CREATE SCHEMA "{ts_schema}"')
        conn.commit()
        cur.execute(f'CREATE TABLE "{ts_schema}".t (a int)')
        cur.execute("CREATE TEMP TABLE scratch (a int)")
        big = "x" * 300_000  # messages larger than 64 KB
        cur.execute("SELECT length(%s)", (big,))
        assert cur.fetchone() == (300_000,)
        buf = io.StringIO("".join(f"{i}\n" for i in range(200_000)))
        cur.copy_expert(f'COPY "{ts_schema}".t FROM STDIN', buf)
        cur.execute(f'SELECT count(*) FROM "{ts_schema}".t')
        assert cur.fetchone() == (200_000,)
    conn.close()  # leaves in the middle of a transaction
    conn = psycopg2.connect(ts_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s), to_regclass('pg_temp.scratch')", (f'"{ts_schema}".t',))
            assert cur.fetchone() == (None, None)  # rolled back, temp table gone
            cur.execute("SHOW timezone")
            assert cur.fetchone() != ("America/New_York",)
            cur.execute("SHOW search_path")
            assert "public" in str(cur.fetchone()[0])
            with pytest.raises(psycopg2.errors.DivisionByZero):
                cur.execute("SELECT 1 / 0")
            conn.rollback()
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_bridge_queues_a_second_client_until_the_first_leaves(ts_url: str) -> None:
    first = psycopg2.connect(ts_url)
    result: list[object] = []

    def second() -> None:
        conn = psycopg2.connect(ts_url, connect_timeout=20)
        with conn.cursor() as cur:
            cur.execute("SELECT 42")
            result.append(cur.fetchone())
        conn.close()

    waiter = threading.Thread(target=second)
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive() and not result  # the single backend is busy with the first client
    first.close()
    waiter.join(20)
    assert result == [(42,)]


def test_bar_counts_under_compression_and_retention(ts_url: str, ts_schema: str) -> None:
    """Compression keeps the bar counts right; a retention policy drops chunks without the loader, so gaps does not
    use the counts of windows older than its horizon, and removing the policy marks the counts stale until
    ``repair`` rebuilds them."""
    from hdi_lab.core.gaps import coverage
    from hdi_lab.storage import counts

    req = dict(schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-05")

    def stale(s: HdiSession) -> set[str]:
        return set(hdi_lab.sql(f'SELECT bar_table FROM "{ts_schema}".bar_counts_stale', session=s)["bar_table"])

    def present(s: HdiSession) -> list[int]:
        return coverage(s, "ohlcv-1m", ["ESH4"], "2024-01-02", "2024-01-05", dataset="GLBX.MDP3")["present"].tolist()

    def stored(s: HdiSession) -> int:
        return int(row_counts(s, ("ohlcv_1m",))["ohlcv_1m"])

    with make_session(ts_url, ts_schema, timescale_retention="365 days") as s:
        hdi_lab.ingest(provider="sample", **req, session=s)  # type: ignore[arg-type]
        assert run_jobs(s, "policy_compression", ("ohlcv_1m",)) == ["ohlcv_1m"]
        assert stale(s) == set()  # compressing moved rows, no loader needed
        full = present(s)
        assert len(full) == 3 and all(n > 1000 for n in full)
        hdi_lab.sql(f"INSERT INTO \"{ts_schema}\".bar_counts_stale VALUES ('ohlcv_1m')", session=s)
        assert present(s) == full  # the rows counted in the (compressed) table
        hdi_lab.sql(f'DELETE FROM "{ts_schema}".bar_counts_stale', session=s)
        assert run_jobs(s, "policy_retention", ("ohlcv_1m",)) == ["ohlcv_1m"]  # 2024-01 is older than a year
        assert stored(s) == 0
        assert present(s) == [0, 0, 0]  # the counts (still there) are older than the horizon: rows counted
        assert len(hdi_lab.sql(f'SELECT 1 FROM "{ts_schema}".bar_counts', session=s)) > 0
    with make_session(ts_url, ts_schema) as s:  # retention unset: the policy goes, the counts are stale
        s.connection()
        assert stale(s) == {"ohlcv_1s", "ohlcv_5s", "ohlcv_1m", "ohlcv_1h", "ohlcv_1d"}
        assert present(s) == [0, 0, 0]
        counts.repair(s.connection(), ts_schema)
        assert stale(s) == set()
        assert len(hdi_lab.sql(f'SELECT 1 FROM "{ts_schema}".bar_counts', session=s)) == 0
        assert present(s) == [0, 0, 0]


def test_cached_days_and_a_retention_policy(ts_url: str, ts_schema: str) -> None:
    """A retention policy drops chunks without any trigger: the read cache takes no day older than its horizon,
    and removing the policy gives the tables a new epoch, so days cached before it came are not taken either."""
    req = dict(schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-05")
    args = ("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-05")
    with make_session(ts_url, ts_schema) as s:
        hdi_lab.ingest(provider="sample", **req, session=s)  # type: ignore[arg-type]
        full = hdi_lab.query(*args, session=s)
        assert s.cache is not None and s.cache.flush(30)
        assert s.cache.usage().files >= 3 and len(full) > 3000
        pd.testing.assert_frame_equal(hdi_lab.query(*args, session=s), full)  # from the cache
    with make_session(ts_url, ts_schema, timescale_retention="365 days") as s:
        assert run_jobs(s, "policy_retention", ("ohlcv_1m",)) == ["ohlcv_1m"]  # 2024-01 is older than a year
        assert row_counts(s, ("ohlcv_1m",))["ohlcv_1m"] == 0
        assert len(hdi_lab.query(*args, session=s)) == 0  # older than the horizon: not from the cache
    with make_session(ts_url, ts_schema) as s:  # retention unset: the policy goes, the epoch moves on
        assert len(hdi_lab.query(*args, session=s)) == 0
