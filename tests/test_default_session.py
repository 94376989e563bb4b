"""Calls without ``session=`` run on the default session of the current settings: reused between calls, a new
one when a setting changes, its dead connection replaced, one connection per thread (closed with the thread), and
never the parent's connection in a forked child."""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest

import hdi_lab
from hdi_lab.config import fingerprint, load_settings
from hdi_lab.core import session as sessions_module
from hdi_lab.core.session import HdiSession, close_default_sessions, default_session

pytestmark = pytest.mark.integration

SAMPLE = dict(provider="sample", schema="ohlcv-1m", symbols="ESH4", start="2024-01-02", end="2024-01-04")


def _pid() -> int:
    return int(hdi_lab.sql("SELECT pg_backend_pid() AS pid")["pid"].iloc[0])


def _alive(pg_url: str, pid: int) -> bool:
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            row = cur.fetchone()
            return bool(row and row[0])
    finally:
        conn.close()


def _gone(pg_url: str, pid: int) -> bool:
    """Whether backend ``pid`` has ended (it ends shortly after its client closed the socket)."""
    deadline = time.monotonic() + 10
    while _alive(pg_url, pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_calls_without_a_session_reuse_one_connection(hdi_env: dict[str, str]) -> None:
    hdi_lab.ingest(**SAMPLE)  # type: ignore[arg-type]
    first = _pid()
    frame = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-04")
    assert len(frame) == 2 * 1380
    assert _pid() == first  # the same connection: no new one, no second migration check
    with default_session() as own:
        assert own.schema == hdi_env["HDI_DB_SCHEMA"]
        assert own.connection().get_backend_pid() == first


def test_a_settings_change_gives_another_session(
    hdi_env: dict[str, str], pg_url: str, db_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hdi_lab.ingest(**SAMPLE)  # type: ignore[arg-type]
    first = _pid()
    other = f"{db_schema}_b"
    monkeypatch.setenv("HDI_DB_SCHEMA", other)
    try:
        assert hdi_lab.sql("SELECT current_schema() AS s")["s"].iloc[0] == other
        assert _pid() != first
        with pytest.raises(hdi_lab.ValidationError, match="unknown symbol"):  # not the first schema's data
            hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-04")
        # another URL to the same server is another connection too
        monkeypatch.setenv("HDI_DB_SCHEMA", db_schema)
        monkeypatch.setenv("HDI_DATABASE_URL", pg_url + ("&" if "?" in pg_url else "?") + "connect_timeout=9")
        third = _pid()
        assert third != first
        assert len(hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-04")) == 2 * 1380
        monkeypatch.setenv("HDI_DATABASE_URL", pg_url)  # back to the first settings: their session is kept
        assert _pid() == first
    finally:
        close_default_sessions()
        conn = psycopg2.connect(pg_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')
        conn.close()


def test_a_dead_connection_is_replaced_on_the_next_call(hdi_env: dict[str, str], pg_url: str) -> None:
    hdi_lab.ingest(**SAMPLE)  # type: ignore[arg-type]
    first = _pid()
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (first,))
        assert cur.fetchone() == (True,)
    admin.close()
    assert _gone(pg_url, first)
    frame = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-04")  # no error: a new connection
    assert len(frame) == 2 * 1380
    assert _pid() != first


def test_threads_get_their_own_connections_closed_with_them(hdi_env: dict[str, str], pg_url: str) -> None:
    hdi_lab.ingest(**SAMPLE)  # type: ignore[arg-type]
    main = _pid()
    barrier = threading.Barrier(2)

    def work(_: int) -> tuple[int, int]:
        barrier.wait()  # both threads at once: the default session is shared
        rows = len(hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-04"))
        return _pid(), rows

    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(work, range(2)))
    pids = {pid for pid, _ in done}
    assert [rows for _, rows in done] == [2 * 1380] * 2
    assert len(pids) == 2 and main not in pids
    gc.collect()
    assert all(_gone(pg_url, pid) for pid in pids)  # the threads ended: their connections closed
    assert _pid() == main


def _in_child(work: Callable[[], str]) -> str:
    """Run ``work`` in a forked child; what it returns, or its exception as text."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a process with threads
        child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, work().encode())
            code = 0
        except Exception as exc:  # noqa: BLE001  (reported to the parent, which fails the test)
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        said = fh.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, said
    return said


def test_a_forked_child_never_uses_or_closes_the_parents_connection(
    hdi_env: dict[str, str], pg_url: str, session: HdiSession
) -> None:
    hdi_lab.ingest(**SAMPLE)  # type: ignore[arg-type]
    parent = _pid()
    explicit = session.connection().get_backend_pid()

    def child() -> str:
        rows = len(hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-04"))
        mine = _pid()
        # the parent's explicit session: the child opens its own connection instead of sharing the parent's
        other = session.connection().get_backend_pid()
        session.close()
        # what the interpreter does at a normal exit: drop (and so deallocate) every inherited object
        sessions_module._CACHE.defaults.clear()
        gc.collect()
        return f"{mine} {other} {rows}"

    mine, other, rows = (int(x) for x in _in_child(child).split())
    assert rows == 2 * 1380 and mine != parent and other != explicit
    # the parent's connections are untouched (the child sent no Terminate on them): the same backends
    assert _pid() == parent
    assert session.connection().get_backend_pid() == explicit
    assert len(hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-04", session=session)) == 2 * 1380


def test_close_default_sessions_closes_their_connections(hdi_env: dict[str, str], pg_url: str) -> None:
    first = _pid()
    close_default_sessions()
    assert _gone(pg_url, first)
    assert _pid() != first


def test_idle_default_sessions_are_bounded(
    hdi_env: dict[str, str], pg_url: str, db_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    close_default_sessions()
    pids = []
    for k in range(sessions_module._KEEP + 2):
        monkeypatch.setenv("HDI_DATABASE_URL", f"{pg_url}{'&' if '?' in pg_url else '?'}connect_timeout={k + 3}")
        pids.append(_pid())
    assert len(set(pids)) == len(pids)
    # the least recently used beyond the kept ones were closed
    assert all(_gone(pg_url, pid) for pid in pids[:2])
    assert all(_alive(pg_url, pid) for pid in pids[2:])
    close_default_sessions()


@pytest.mark.unit
def test_the_settings_fingerprint_follows_variables_and_files(tmp_path: Path) -> None:
    env = {"HDI_DB_SCHEMA": "a", "HOME": str(tmp_path), "UNRELATED": "1"}
    base = fingerprint(env, tmp_path)
    assert fingerprint({**env, "UNRELATED": "2"}, tmp_path) == base
    assert fingerprint({**env, "HDI_DB_SCHEMA": "b"}, tmp_path) != base
    assert fingerprint({**env, "PGPASSWORD": "x"}, tmp_path) != base  # libpq reads it
    (tmp_path / "hdi_lab.toml").write_text('db_schema = "c"\n')
    with_file = fingerprint(env, tmp_path)
    assert with_file != base
    assert load_settings(environ={"HOME": str(tmp_path)}, cwd=tmp_path).db_schema == "c"
    (tmp_path / "hdi_lab.toml").write_text('db_schema = "dd"\n')
    assert fingerprint(env, tmp_path) != with_file  # a changed file (size, mtime) is another fingerprint
