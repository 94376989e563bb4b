"""The scheduler (``hdi scheduler run|status``) for real: APScheduler with its job store in the test PostgreSQL,
``hdi scheduler run`` in subprocesses updating a sample-provider subscription on a fast (six-field) cron."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_databento import KEY, FakeDatabento, Fault
from helpers import run_cli

import hdi_lab
from hdi_lab.core import scheduler
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import StorageError

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]
UNTIL = "2024-01-06"  # four sample sessions from 2024-01-02: every run after the first has nothing to do
RUN = [sys.executable, "-m", "hdi_lab.frontend.cli", "scheduler", "run", "--until", UNTIL, "--backoff", "0.1"]


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hdi_lab.toml or pyproject table from the working directory."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def start(hdi_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], Path]]]:
    """Start ``hdi scheduler run`` (plus ``extra`` arguments) in a subprocess logging to a file; every one still
    running at the end is killed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDI_")}
    env.update(hdi_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    started: list[subprocess.Popen[bytes]] = []

    def launch(*extra: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"scheduler-{len(started)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen([*RUN, *extra], env=env, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc, log

    yield launch
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_for(what: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def _chunks(session: HdiSession) -> list[tuple[str, int]]:
    """Each completed chunk of the ingest log with how many times it was ingested."""
    found = hdi_lab.sql(
        "SELECT chunk_key, count(*) AS n FROM ingest_log GROUP BY chunk_key ORDER BY chunk_key",
        session=session,
    )
    return [(str(k), int(n)) for k, n in zip(found["chunk_key"], found["n"], strict=True)]


def _runs(log: Path) -> int:
    return log.read_text().count("scheduled update done")


def _watch(session: HdiSession, cron: str = "*/2 * * * * *") -> None:
    hdi_lab.watch(
        "sample", schema="ohlcv-1m", symbols="ESH4", since="2024-01-02", name="es", options={"cron": cron},
        session=session,
    )  # fmt: skip


def test_a_scheduler_updates_a_second_refuses_and_sigterm_stops_it(
    session: HdiSession, start: Callable[..., tuple[subprocess.Popen[bytes], Path]]
) -> None:
    _watch(session)
    proc, log = start()
    _wait_for(lambda: _runs(log) >= 2, proc, log)  # the first run ingests, the next ones find nothing to do
    chunks = _chunks(session)
    assert len(chunks) == 4 and all(n == 1 for _, n in chunks), chunks
    assert "subscription 1 (es) scheduled" in log.read_text()

    second, second_log = start()
    assert second.wait(60) == 1
    assert (
        second_log.read_text()
        .strip()
        .splitlines()[-1]
        .startswith("hdi: error: another scheduler is running on this database")
    )

    code, out, err = run_cli(["scheduler", "status"])
    assert code == 0, err
    assert out.startswith("scheduler: running\n")
    [row] = [line for line in out.splitlines() if line.startswith("subscription-1 ")]
    assert "*/2 * * * * * UTC" in row and re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", row), out

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()
    assert "scheduler stopped" in log.read_text()
    code, out, _ = run_cli(["scheduler", "status"])
    assert out.startswith("scheduler: not running\n")


def test_a_waiting_scheduler_takes_over(
    session: HdiSession, start: Callable[..., tuple[subprocess.Popen[bytes], Path]]
) -> None:
    _watch(session)
    first, first_log = start()
    _wait_for(lambda: _runs(first_log) >= 1, first, first_log)
    waiting, waiting_log = start("--wait")
    time.sleep(2)
    assert waiting.poll() is None and _runs(waiting_log) == 0
    first.send_signal(signal.SIGINT)
    assert first.wait(60) == 0, first_log.read_text()
    _wait_for(lambda: _runs(waiting_log) >= 1, waiting, waiting_log)
    waiting.send_signal(signal.SIGTERM)
    assert waiting.wait(60) == 0


def test_sigkill_and_restart_does_not_run_anything_twice(
    session: HdiSession, start: Callable[..., tuple[subprocess.Popen[bytes], Path]]
) -> None:
    _watch(session)
    proc, log = start()
    # killed as soon as the first run committed a chunk: maybe mid-update, maybe between chunks
    _wait_for(lambda: len(_chunks(session)) >= 1, proc, log)
    proc.kill()
    proc.wait()
    again, again_log = start()
    _wait_for(lambda: _runs(again_log) >= 2, again, again_log)
    chunks = _chunks(session)
    assert len(chunks) == 4 and all(n == 1 for _, n in chunks), chunks  # each chunk ingested once
    again.send_signal(signal.SIGTERM)
    assert again.wait(60) == 0, again_log.read_text()


# --- in-process: retries against the fake Databento gateway ----------------------------------------------


def _run_until(session: HdiSession, done: Callable[[], bool], **kwargs: Any) -> None:
    """Run the scheduler in a thread until ``done()`` (at most 60 s), then stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(session, stop), kwargs=kwargs)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not done() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()


def test_a_failed_update_is_retried_with_backoff_and_resumes(
    session: HdiSession, fake: FakeDatabento, caplog: pytest.LogCaptureFixture
) -> None:
    dbs = HdiSession(
        session.settings.replace(
            databento_api_key=KEY, databento_gateway=fake.url, databento_backoff=0.01, databento_retries=2
        )
    )
    try:
        hdi_lab.watch(
            "databento", dataset="GLBX.MDP3", schema="ohlcv-1m", symbols="ESH4", since="2024-03-12",
            options={"cron": "* * * * * *"}, session=dbs,
        )  # fmt: skip
        # the third chunk fails, after the provider's own retries: the scheduler's retry resumes there
        fake.faults += [Fault("timeseries.get_range", status=500, after=2 if i == 0 else 0) for i in range(3)]
        caplog.set_level(logging.INFO, logger="hdi_lab")
        _run_until(dbs, lambda: "scheduled update done" in caplog.text, until="2024-03-15", retries=2, backoff=0.05)
        assert "update failed (" in caplog.text and "retrying in 0.1 s" in caplog.text
        chunks = _chunks(dbs)  # the definitions fetched along, and three days of bars: each once
        assert len(chunks) == 4 and all(n == 1 for _, n in chunks), chunks
    finally:
        dbs.close()


def test_a_refused_update_is_not_retried(session: HdiSession, caplog: pytest.LogCaptureFixture) -> None:
    _watch(session, cron="* * * * * *")
    caplog.set_level(logging.INFO, logger="hdi_lab")
    # an until before the subscription's since: nothing to do; a bad cron (stored before adding checked it, as
    # an older hdi_lab did): not scheduled, said once
    hdi_lab.watch(
        "sample", schema="ohlcv-1m", symbols="NQH4", since="2024-01-02", name="nq", options={"cron": "1 * * * *"},
        session=session,
    )  # fmt: skip
    hdi_lab.sql("UPDATE subscriptions SET options = '{\"cron\": \"61 * * * *\"}' WHERE name = 'nq'", session=session)
    _run_until(session, lambda: "scheduled update done" in caplog.text, until=UNTIL, retries=3, backoff=0.05)
    assert "subscription 2 (nq) is not scheduled: subscription 2 (nq): cron '61 * * * *' is not valid" in caplog.text
    assert "retrying" not in caplog.text


def test_a_scheduler_that_loses_its_lock_stops(session: HdiSession) -> None:
    _watch(session, cron="0 0 1 1 *")  # never due while the test runs
    stop, failed = threading.Event(), []

    def target() -> None:
        try:
            scheduler.run(session, stop, refresh=0.2)
        except StorageError as exc:
            failed.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not scheduler.active(session):
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.1)
        # the lock's connection dies (a server restart, a network cut): the lock is gone with it
        # (this schema's scheduler lock only: other tests on the server hold advisory locks of their own)
        hdi_lab.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = "
            "hashtext('hdi_lab.scheduler')::oid AND objid = hashtext(%(schema)s)::oid",
            {"schema": session.schema},
            session=session,
        )
        thread.join(30)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and len(failed) == 1
    assert str(failed[0]).startswith("lost the connection to PostgreSQL")


def test_the_dashboard_shows_each_jobs_next_run(session: HdiSession, caplog: pytest.LogCaptureFixture) -> None:
    """Once a scheduler stored its jobs, the operations dashboard's next-run column is each job's next run."""
    from hdi_lab.frontend.dashboard import Operations

    hdi_lab.watch("sample", schema="ohlcv-1d", symbols="AAPL", since="2024-01-02", name="aapl", session=session)
    with caplog.at_level(logging.INFO):
        _run_until(session, lambda: "subscription 1 (aapl) scheduled" in caplog.text, until="2024-01-03")
    (job,) = scheduler.jobs(session)
    assert job.next_run is not None
    page = Operations(session, start="2024-01-02", end="2024-01-03")
    assert list(page.table["next_run"]) == [job.next_run.strftime("%Y-%m-%d %H:%M UTC")]
