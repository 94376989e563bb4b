"""executor="dask": ingest plans on a real multi-process Dask LocalCluster against the test PostgreSQL.

Each test starts its own ``LocalCluster(n_workers=2, processes=True)`` (~2 s): one test kills a worker, and the
workers inherit the environment of their start (the fake gateway's CA bundle).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest
from cluster_providers import FailingSampleProvider, StallingSampleProvider, executing
from conftest import databento_session
from distributed import Client, LocalCluster, get_task_stream
from fake_databento import FakeDatabento
from helpers import TestingShell, make_session, run_cli, stored_rows

from hdi_lab.api import make_request
from hdi_lab.config import load_settings
from hdi_lab.core import ingestion
from hdi_lab.core.executors import DaskExecutor, executor_of
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ConfigError, ProviderError, ValidationError
from hdi_lab.providers.sample import SampleProvider
from hdi_lab.schemas import IngestReport, Progress

SAMPLE = dict(schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-09")


def _serial(pg_url: str, db_schema: str, **request: object) -> IngestReport:
    with make_session(pg_url, db_schema) as s:
        return ingestion.run(make_request("sample", **request), s)  # type: ignore[arg-type]


@pytest.mark.integration
def test_sample_ingest_on_two_worker_processes_equals_a_serial_run(
    pg_url: str, session: HdiSession, other_schema: str, cluster: tuple[LocalCluster, Client]
) -> None:
    cl, client = cluster
    serial = _serial(pg_url, other_schema, **SAMPLE)
    events: list[Progress] = []
    req = make_request("sample", **SAMPLE)  # type: ignore[arg-type]
    report = ingestion.run(req, session, executor=DaskExecutor(client), progress=events.append)

    assert stored_rows(pg_url, session.schema) == stored_rows(pg_url, other_schema)
    assert [c.chunk.key for c in report.chunks] == [c.chunk.key for c in serial.chunks]  # plan order
    assert (report.fetched, report.inserted, report.duplicates) == (serial.fetched, serial.inserted, 0)
    assert report.fetched > 5000
    assert [e.done for e in events] == list(range(len(serial.chunks) + 1))  # as each chunk finished
    assert events[-1].rows == serial.fetched
    worker_pids = set(client.run(os.getpid).values())
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids

    # by address (a client opened and closed for the run): everything committed is skipped
    again = ingestion.run(req, session, executor=DaskExecutor(cl.scheduler_address))
    assert [c.skipped for c in again.chunks] == [True] * len(serial.chunks)
    assert stored_rows(pg_url, session.schema) == stored_rows(pg_url, other_schema)


@pytest.mark.integration
@pytest.mark.reliability
def test_a_worker_killed_mid_chunk_loses_and_duplicates_nothing(
    pg_url: str, session: HdiSession, other_schema: str, cluster: tuple[LocalCluster, Client], tmp_path: Path
) -> None:
    _, client = cluster
    marker = tmp_path / "stalled.pid"
    provider = StallingSampleProvider("2024-01-03", marker)
    req = make_request("sample", **SAMPLE)  # type: ignore[arg-type]
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(ingestion.run, req, session, provider=provider, executor=DaskExecutor(client))
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline, "the stalling chunk never started"
            assert not running.done(), running.result()
            time.sleep(0.05)
        pid = int(marker.read_text())
        assert pid in set(client.run(os.getpid).values()) and pid != os.getpid()
        # mid-chunk: its rows are loaded in a transaction that is still open, invisible to anyone else
        conn = psycopg2.connect(pg_url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'")
                assert cur.fetchone()[0] >= 1
                cur.execute(
                    f'SELECT count(*) FROM "{session.schema}".ohlcv_1m WHERE ts_event >= %s AND ts_event < %s',
                    ("2024-01-03", "2024-01-04"),
                )
                assert cur.fetchone()[0] == 0
        finally:
            conn.close()
        os.kill(pid, signal.SIGKILL)
        report = running.result(timeout=120)

    assert pid not in set(client.run(os.getpid).values())  # that worker is gone (its nanny started another)
    serial = _serial(pg_url, other_schema, **SAMPLE)
    assert [c.error for c in report.chunks] == [None] * len(serial.chunks)
    assert not any(c.skipped for c in report.chunks)
    assert report.fetched == serial.fetched and report.inserted == serial.inserted
    stored = stored_rows(pg_url, session.schema)
    assert stored == stored_rows(pg_url, other_schema)
    assert len({row[0] for row in stored["ingest_log"]}) == len(stored["ingest_log"]) == len(serial.chunks)


@pytest.mark.integration
def test_a_retried_task_reports_what_its_run_committed(session: HdiSession) -> None:
    """A cluster task run again after its worker died past the commit (the result lost with it) reports what the
    first attempt logged; a chunk another run committed stays skipped."""
    provider = SampleProvider()
    chunk = provider.plan(make_request("sample", **SAMPLE))[1]  # a bars chunk (the first is definitions)
    work: ingestion.ChunkWork = (chunk, False, None, None)
    first, _ = ingestion.chunk_task(session, provider, work, run_id="run-a")
    assert not first.skipped and first.inserted > 0
    again, error = ingestion.chunk_task(session, provider, work, run_id="run-a")
    assert error is None and not again.skipped
    assert (again.fetched, again.inserted, again.updated, again.duplicates, again.held) == (
        first.fetched, first.inserted, first.updated, first.duplicates, first.held,
    )  # fmt: skip
    # what it changed is not logged: each instrument it holds counts as changed from the chunk's start
    assert again.changed == dict.fromkeys(first.changed, chunk.start.value)
    other, _ = ingestion.chunk_task(session, provider, work, run_id="run-b")
    assert other.skipped and other.inserted == 0


@pytest.mark.integration
def test_databento_on_the_cluster_equals_serial_and_holds_the_download_limit(
    pg_url: str, session: HdiSession, other_schema: str, fake: FakeDatabento
) -> None:
    request = dict(dataset="GLBX.MDP3", schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-10")
    req = make_request("databento", **request)  # type: ignore[arg-type]
    with (
        databento_session(make_session(pg_url, other_schema), fake) as serial_session,
        databento_session(session, fake, databento_concurrency=1) as dbs,
    ):
        serial = ingestion.run(req, serial_session)
        fake.max_in_flight = 0
        # long enough for the two workers to overlap without a limit (within one process the vendor calls are
        # serialised already, hdi_lab.dbn.vendor_warnings: with databento_concurrency=2 this sees 2)
        fake.get_range_delay = 0.4
        # the cluster starts after the fake gateway: its workers inherit REQUESTS_CA_BUNDLE
        with (
            LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0") as cl,
            Client(cl, set_as_default=False) as client,
        ):
            report = ingestion.run(req, dbs, executor=DaskExecutor(client))
    assert fake.max_in_flight == 1  # two worker processes, one lease
    assert report.fetched == serial.fetched > 0 and report.definitions == serial.definitions > 0
    assert [c.chunk.key for c in report.chunks] == [c.chunk.key for c in serial.chunks]
    assert stored_rows(pg_url, session.schema) == stored_rows(pg_url, other_schema)


@pytest.mark.integration
@pytest.mark.reliability
def test_the_database_password_never_reaches_dask_logs(
    pg_url: str, db_schema: str, cluster: tuple[LocalCluster, Client]
) -> None:
    _, client = cluster
    secret = f"pw-{uuid.uuid4().hex}"
    url = pg_url.replace("postgres@", f"postgres:{secret}@", 1)  # trust auth: the password is never checked
    assert secret in url
    req = make_request("sample", **SAMPLE)  # type: ignore[arg-type]
    with HdiSession(load_settings({"database_url": url, "db_schema": db_schema}, environ={})) as s:
        with pytest.raises(ProviderError, match="the test vendor refuses") as err:
            ingestion.run(req, s, provider=FailingSampleProvider("2024-01-05"), executor=DaskExecutor(client))
        assert secret not in str(err.value) and secret not in repr(s)
    logs = [msg for records in client.get_worker_logs().values() for _, msg in records]
    logs += [msg for _, msg in client.get_scheduler_logs()]
    assert any("Compute Failed" in m and "the test vendor refuses" in m for m in logs)  # the task's repr is logged
    assert not [m for m in logs if secret in m]


@pytest.mark.integration
def test_cli_ingest_with_executor_dask(
    hdi_env: dict[str, str], session: HdiSession, cluster: tuple[LocalCluster, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    cl, _ = cluster
    args = ["--provider", "sample", "--schema", "ohlcv-1m", "--symbols", "ESH4", "--start", "2024-01-02"]
    code, out, err = run_cli(["ingest", *args, "--end", "2024-01-04", "--scheduler", cl.scheduler_address])
    assert (code, err) == (0, "") and "2 chunks (0 already done)" in out
    monkeypatch.setenv("HDI_DASK_SCHEDULER", cl.scheduler_address)
    code, out, err = run_cli(["ingest", *args, "--end", "2024-01-05", "--executor", "dask"])
    assert (code, err) == (0, "") and "3 chunks (2 already done)" in out
    code, out, err = run_cli(["ingest", *args, "--end", "2024-01-05", "--executor", "local", "--scheduler", "x:1"])
    assert code != 0 and "scheduler= is given with executor='local'" in err


@pytest.mark.integration
def test_an_unreachable_scheduler_is_a_one_line_error(session: HdiSession) -> None:
    from hdi_lab.errors import ClusterError

    req = make_request("sample", **SAMPLE)  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match=r"tcp://127\.0\.0\.1:9 cannot be reached.*HDI_DASK_SCHEDULER"):
        ingestion.run(req, session, executor=DaskExecutor("tcp://127.0.0.1:9"))


@pytest.mark.integration
def test_without_dask_both_cluster_paths_name_the_extra(session: HdiSession, monkeypatch: pytest.MonkeyPatch) -> None:
    import hdi_lab.core
    from hdi_lab import features
    from hdi_lab.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    monkeypatch.delitem(sys.modules, "hdi_lab.core.cluster", raising=False)
    monkeypatch.delattr(hdi_lab.core, "cluster", raising=False)
    req = make_request("sample", **SAMPLE)  # type: ignore[arg-type]
    extra = r"distributed is not installed: install it with `pip install 'hdi_lab\[dask\]'`"
    with pytest.raises(MissingDependency, match=extra):
        ingestion.run(req, session, executor=DaskExecutor("tcp://127.0.0.1:9"))
    with pytest.raises(MissingDependency, match=extra):
        features.compute("momentum_v1", ["ESH4"], executor="dask", scheduler="tcp://127.0.0.1:9", session=session)


@pytest.mark.unit
def test_executor_choices() -> None:
    settings = load_settings(environ={})
    assert executor_of(None, None, settings) is None
    assert executor_of("local", None, settings) is None
    assert executor_of("dask", "tcp://h:8786", settings) == DaskExecutor("tcp://h:8786")
    assert executor_of(None, "tcp://h:8786", settings) == DaskExecutor("tcp://h:8786")
    env = load_settings(environ={"HDI_DASK_SCHEDULER": "tcp://env:8786"})
    assert executor_of("dask", None, env) == DaskExecutor("tcp://env:8786")
    with pytest.raises(ValidationError, match=r"executor=.dask. needs a scheduler.*HDI_DASK_SCHEDULER"):
        executor_of("dask", None, settings)
    with pytest.raises(ValidationError, match="executor='ray' is not known: use one of local, dask"):
        executor_of("ray", None, settings)
    with pytest.raises(ValidationError, match="not a Dask scheduler address"):
        executor_of("dask", "localhost", settings)
    with pytest.raises(ValidationError, match=r"neither an address nor a distributed\.Client"):
        executor_of("dask", 8786, settings)


@pytest.mark.unit
def test_settings_of_the_cluster(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"databento_concurrency=0 .* must be 1 or more"):
        load_settings(environ={"HDI_DATABENTO_CONCURRENCY": "0"})
    (tmp_path / "hdi_lab.toml").write_text('dask_scheduler = "tcp://evil:8786"\n')
    with pytest.raises(ConfigError, match=r"dask_scheduler in .* is refused: .*secrets"):
        load_settings(environ={}, cwd=tmp_path)


@pytest.mark.integration
def test_update_on_the_cluster_equals_a_serial_update(
    pg_url: str, session: HdiSession, other_schema: str, cluster: tuple[LocalCluster, Client]
) -> None:
    import hdi_lab

    _, client = cluster
    reports = []
    with make_session(pg_url, other_schema) as serial:
        for s, how in ((serial, {}), (session, {"executor": "dask", "scheduler": client})):
            hdi_lab.watch("sample", schema="ohlcv-1m", symbols="ESH4", since="2024-01-02", name="es", session=s)
            reports.append(hdi_lab.update(until="2024-01-08", session=s, **how))  # type: ignore[arg-type]
    local, dask = (r.plans[0].report for r in reports)
    assert local is not None and dask is not None
    assert [c.chunk.key for c in dask.chunks] == [c.chunk.key for c in local.chunks] and len(local.chunks) == 6
    assert dask.fetched == local.fetched > 0
    assert stored_rows(pg_url, session.schema) == stored_rows(pg_url, other_schema)
    assert hdi_lab.update(until="2024-01-08", executor="dask", scheduler=client, session=session).up_to_date


# -- features.compute partitioned by instrument ------------------------------------------------------------------

FEATURE_SYMBOLS = ["ESH4", "ESM4", "NQH4", "NQM4", "ESU4", "NQU4"]


def _features(pg_url: str, schema: str) -> dict[str, list[tuple[object, ...]]]:
    """The feature rows (``created`` left out: the time of each computation) and the saved states, in key order."""
    from hdi_lab import features

    table, states = features.table_name("momentum_v1", "1d"), features.state_table_name("momentum_v1", "1d")
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY instrument_id, event_timestamp')
            names = [d[0] for d in cur.description]
            rows = [tuple(v for n, v in zip(names, r, strict=True) if n != "created") for r in cur.fetchall()]
            cur.execute(f'SELECT * FROM "{schema}"."{states}" ORDER BY instrument_id')
            return {"rows": rows, "states": cur.fetchall()}
    finally:
        conn.close()


@pytest.mark.integration
def test_features_on_the_cluster_equal_a_serial_compute_and_resume(
    pg_url: str, session: HdiSession, other_schema: str, cluster: tuple[LocalCluster, Client]
) -> None:
    import hdi_lab
    from hdi_lab import features

    cl, client = cluster
    ranges = [("2023-06-01", "2024-01-02"), ("2024-01-02", "2024-03-01")]
    bars = dict(schema="ohlcv-1d", symbols=FEATURE_SYMBOLS, start="2023-06-01", end="2024-03-01")
    serial, dask = [], []
    events: list[tuple[int, int]] = []
    with make_session(pg_url, other_schema) as s:
        hdi_lab.ingest(provider="sample", session=s, **bars)  # type: ignore[arg-type]
        for lo, hi in ranges:
            serial.append(features.compute("momentum_v1", FEATURE_SYMBOLS, "1d", lo, hi, session=s))
    hdi_lab.ingest(provider="sample", session=session, **bars)  # type: ignore[arg-type]
    for lo, hi in ranges:  # the second range resumes from the states the first one's partitions saved
        dask.append(
            features.compute(
                "momentum_v1",
                FEATURE_SYMBOLS,
                "1d",
                lo,
                hi,
                executor="dask",
                scheduler=client,
                progress=lambda done, total: events.append((done, total)),
                session=session,
            )
        )

    stored = _features(pg_url, session.schema)
    assert stored == _features(pg_url, other_schema)
    assert len(stored["states"]) == len(FEATURE_SYMBOLS) and len(stored["rows"]) > 6 * 150
    for local, remote in zip(serial, dask, strict=True):
        assert (remote.instruments, remote.rows, remote.inserted, remote.updated) == (
            local.instruments,
            local.rows,
            local.inserted,
            local.updated,
        )
        assert (remote.resumed, remote.bars_read, remote.largest_gap) == (
            local.resumed,
            local.bars_read,
            local.largest_gap,
        )
    assert serial[1].resumed == dask[1].resumed == len(FEATURE_SYMBOLS)  # nothing recomputed from the first bar
    assert dask[0].instruments == len(FEATURE_SYMBOLS) and dask[1].inserted > 0
    n = len(FEATURE_SYMBOLS)  # one partition per instrument (fewer than PARTITIONS)
    assert events == [(i, n) for i in range(n + 1)] * 2

    # a re-run by address: the same values, nothing changed, the same work as a serial re-run
    again = features.compute(
        "momentum_v1",
        FEATURE_SYMBOLS,
        "1d",
        *ranges[1],
        executor="dask",
        scheduler=cl.scheduler_address,
        session=session,
    )
    with make_session(pg_url, other_schema) as s:
        local_again = features.compute("momentum_v1", FEATURE_SYMBOLS, "1d", *ranges[1], session=s)
    assert (again.inserted, again.updated, again.rows) == (0, 0, dask[1].rows)
    assert (again.resumed, again.bars_read) == (local_again.resumed, local_again.bars_read)
    assert _features(pg_url, session.schema) == _features(pg_url, other_schema)


@pytest.mark.integration
def test_cli_features_compute_with_executor_dask(
    hdi_env: dict[str, str], session: HdiSession, cluster: tuple[LocalCluster, Client]
) -> None:
    import hdi_lab

    cl, _ = cluster
    hdi_lab.ingest(
        provider="sample",
        schema="ohlcv-1d",
        symbols=["AAPL", "MSFT"],
        start="2023-01-01",
        end="2023-04-01",
        session=session,
    )
    args = ["features", "compute", "--set", "momentum_v1", "--symbols", "AAPL,MSFT", "--interval", "1d"]
    args += ["--start", "2023-01-01", "--end", "2023-04-01"]
    code, out, err = run_cli([*args, "--scheduler", cl.scheduler_address])
    assert (code, err) == (0, "") and "for 2 instrument(s)" in out and " inserted" in out
    code, out, err = run_cli([*args, "--executor", "local", "--scheduler", cl.scheduler_address])
    assert code != 0 and "scheduler= is given with executor='local'" in err
    code, out, err = run_cli([*args, "--executor", "dask", "--scheduler", cl.scheduler_address, "--adjust", "ratio"])
    assert code != 0 and err.count("\n") == 1


@pytest.mark.integration
def test_features_on_the_cluster_refuse_continuous_series(session: HdiSession) -> None:
    from hdi_lab import features

    with pytest.raises(ValidationError, match="does not compute continuous series"):
        features.compute(
            "momentum_v1",
            "ES.c.0",
            "1d",
            executor="dask",
            scheduler="tcp://127.0.0.1:9",
            adjust="ratio",
            session=session,
        )


@pytest.mark.integration
@pytest.mark.reliability
def test_a_worker_killed_mid_feature_compute_loses_and_duplicates_nothing(
    pg_url: str, session: HdiSession, other_schema: str, cluster: tuple[LocalCluster, Client]
) -> None:
    """A partition's worker killed while the partition's rows are written but not committed: the partition runs
    again on another worker, and the stored rows and states equal a serial compute's, each row once."""
    import hdi_lab
    from hdi_lab import features

    _, client = cluster
    bars = dict(schema="ohlcv-1d", symbols=FEATURE_SYMBOLS, start="2023-06-01", end="2024-03-01")
    first, second = ("2023-06-01", "2024-01-02"), ("2024-01-02", "2024-03-01")
    with make_session(pg_url, other_schema) as s:
        hdi_lab.ingest(provider="sample", session=s, **bars)  # type: ignore[arg-type]
        for lo, hi in (first, second):
            serial = features.compute("momentum_v1", FEATURE_SYMBOLS, "1d", lo, hi, session=s)
    hdi_lab.ingest(provider="sample", session=session, **bars)  # type: ignore[arg-type]
    features.compute("momentum_v1", FEATURE_SYMBOLS, "1d", *first, session=session)

    # the test holds one instrument's saved state (a row lock): its partition stores its rows, then waits there
    states = f'"{session.schema}"."{features.state_table_name("momentum_v1", "1d")}"'
    table = f'"{session.schema}"."{features.table_name("momentum_v1", "1d")}"'
    ids = sorted(int(i) for i in hdi_lab.sql(f"SELECT instrument_id FROM {states}", session=session)["instrument_id"])
    assert len(ids) == len(FEATURE_SYMBOLS)
    target = ids[2]
    partition = ids.index(target)  # one partition per instrument, in id order
    lock, probe = psycopg2.connect(pg_url), psycopg2.connect(pg_url)
    probe.autocommit = True  # pg_stat_activity is read once per transaction: each probe reads it anew
    try:
        with lock.cursor() as cur:
            cur.execute(f"SELECT 1 FROM {states} WHERE instrument_id = %s FOR UPDATE", (target,))
        with ThreadPoolExecutor(1) as pool:
            try:
                on_cluster = dict(executor="dask", scheduler=client, session=session)
                running = pool.submit(features.compute, "momentum_v1", FEATURE_SYMBOLS, "1d", *second, **on_cluster)
                deadline = time.monotonic() + 60
                worker = None
                while worker is None:
                    assert time.monotonic() < deadline, "the partition never waited on the held state"
                    assert not running.done(), running.result()
                    with probe.cursor() as cur:  # a backend waits for the test's row lock (not the table's lock)
                        cur.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND wait_event IN ('transactionid', 'tuple')"
                        )
                        waiting = cur.fetchone()[0]
                    if waiting:
                        prefix = f"hdi-features-{partition}-"
                        found = [
                            w for w, keys in client.run(executing).items() if any(k.startswith(prefix) for k in keys)
                        ]
                        worker = found[0] if found else None
                    time.sleep(0.05)
                # its rows are written, not committed: no one else sees them
                with probe.cursor() as cur:
                    where = "instrument_id = %s AND event_timestamp > %s"
                    cur.execute(f"SELECT count(*) FROM {table} WHERE {where}", (target, second[0]))
                    assert cur.fetchone()[0] == 0
                pid = client.run(os.getpid, workers=[worker])[worker]
                assert pid != os.getpid()
                os.kill(pid, signal.SIGKILL)
            finally:
                lock.rollback()  # the killed worker's backend goes on, finds its client gone and rolls back
            report = running.result(timeout=120)
    finally:
        lock.close()
        probe.close()

    assert pid not in set(client.run(os.getpid).values())
    assert _features(pg_url, session.schema) == _features(pg_url, other_schema)
    figures = ("instruments", "rows", "inserted", "updated", "resumed", "bars_read")
    assert [getattr(report, f) for f in figures] == [getattr(serial, f) for f in figures]
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*), count(DISTINCT (instrument_id, event_timestamp)) FROM {table}")
            total, distinct = cur.fetchone()
    finally:
        conn.close()
    assert total == distinct == len(_features(pg_url, other_schema)["rows"])


@pytest.mark.integration
def test_update_on_the_cluster_computes_its_feature_sets_there(
    pg_url: str,
    hdi_env: dict[str, str],
    session: HdiSession,
    other_schema: str,
    cluster: tuple[LocalCluster, Client],
    ip: TestingShell,
) -> None:
    """`hdi update --scheduler ...`, hdi_lab.update(executor="dask") and `%hdi_update --executor dask` compute a
    subscription's feature sets, after its chunks, on the same cluster: partitioned by instrument, equal to a
    serial update's."""
    import hdi_lab

    cl, client = cluster
    symbols = FEATURE_SYMBOLS[:4]
    watch = dict(schema="ohlcv-1d", symbols=symbols, since="2023-06-01", options={"features": "momentum_v1"})
    with make_session(pg_url, other_schema) as s:
        hdi_lab.watch("sample", name="eq", session=s, **watch)  # type: ignore[arg-type]
        local = hdi_lab.update(until="2023-12-01", session=s)
    hdi_lab.watch("sample", name="eq", session=session, **watch)  # type: ignore[arg-type]
    with get_task_stream(client=client) as stream:
        code, out, err = run_cli(["update", "--until", "2023-12-01", "--scheduler", cl.scheduler_address])
    assert (code, err) == (0, "") and "then momentum_v1 1d" in out
    keys = [str(t["key"]) for t in stream.data]
    assert sum(k.startswith("hdi-features-") for k in keys) == len(symbols)  # one partition per instrument
    assert any(k.startswith("hdi-chunk-") for k in keys)
    assert _features(pg_url, session.schema) == _features(pg_url, other_schema)
    [computed] = local.plans[0].after
    assert computed.instruments == len(symbols) and computed.inserted > 0

    # the API: new bars, their features resumed from the states, on the cluster too
    with get_task_stream(client=client) as stream:
        later = hdi_lab.update(until="2023-12-15", executor="dask", scheduler=client, session=session)
    [computed] = later.plans[0].after
    assert computed.resumed == len(symbols) and computed.inserted > 0
    assert sum(str(t["key"]).startswith("hdi-features-") for t in stream.data) == len(symbols)
    with make_session(pg_url, other_schema) as s:
        hdi_lab.update(until="2023-12-15", session=s)
    assert _features(pg_url, session.schema) == _features(pg_url, other_schema)

    # the magic
    with get_task_stream(client=client) as stream:
        done = ip.run_cell(f"%hdi_update --until 2023-12-29 --executor dask --scheduler {cl.scheduler_address}")
    [computed] = done.result.plans[0].after
    assert computed.resumed == len(symbols) and computed.inserted > 0
    assert sum(str(t["key"]).startswith("hdi-features-") for t in stream.data) == len(symbols)
    with make_session(pg_url, other_schema) as s:
        hdi_lab.update(until="2023-12-29", session=s)
    assert _features(pg_url, session.schema) == _features(pg_url, other_schema)
