"""Shared by the reliability tier: the real ``hdi`` CLI in child processes, polling, and the storage invariants.

Every child process is started through :func:`spawned`, which SIGKILLs it (and waits) when the test
ends, passed or failed. Waits poll with generous deadlines (the CI machine may have 2 busy cores).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg2

PROJECT = Path(__file__).resolve().parents[2]
#: a kill point, a commit or a server start may take this long on a loaded 2-core machine
DEADLINE_S = 120.0


#: 10 daily chunks of ESH4 trades (~35k trades per weekday, none on Saturday), from the offline sample provider
SAMPLE_ARGS = (
    "--provider",
    "sample",
    "--schema",
    "trades",
    "--symbols",
    "ESH4",
    "--start",
    "2024-01-01",
    "--end",
    "2024-01-11",
    "--quiet",
)
SAMPLE_REQUEST: dict[str, Any] = dict(
    provider="sample", schema="trades", symbols=["ESH4"], start="2024-01-01", end="2024-01-11"
)


def hdi(*args: str) -> list[str]:
    """argv of the real ``hdi`` command (the installed entry point's module) in a child interpreter."""
    return [sys.executable, "-m", "hdi_lab.frontend.cli", *args]


def child_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This environment without any HDI_* variable, plus ``settings``, with the project importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDI_") and k != "DATABENTO_API_KEY"}
    env.update(settings)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def spawned(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process that is killed and reaped when the block ends, whatever happened in it."""
    proc = subprocess.Popen(
        list(argv), env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=DEADLINE_S)


def run(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = DEADLINE_S
) -> subprocess.CompletedProcess[str]:
    """Run to completion (killed at the timeout): exit code, stdout and stderr as text."""
    return subprocess.run(  # the exit code is the caller's to assert
        list(argv), env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def poll[T](
    probe: Callable[[], T | None], what: str, proc: subprocess.Popen[str] | None = None, timeout: float = DEADLINE_S
) -> T:
    """The first truthy ``probe()``; fails if ``proc`` exits first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.005)


def fetch(url: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Rows of one query on a connection of its own (autocommit: sees every committed change)."""
    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, tuple(params))
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def log_rows(url: str, schema: str) -> int:
    """Committed ingest-log rows (0 while the schema is not created yet)."""
    if fetch(url, "SELECT to_regclass(%s)", (f'"{schema}".ingest_log',))[0][0] is None:
        return 0
    return int(fetch(url, f'SELECT count(*) FROM "{schema}".ingest_log')[0][0])


def copying_in_transaction(url: str, schema: str) -> bool:
    """A backend is inside a transaction whose latest statement is a COPY into ``schema``: mid-chunk."""
    rows = fetch(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE xact_start IS NOT NULL "
        "AND query LIKE %s AND pid <> pg_backend_pid()",
        (f'COPY "{schema}".%',),
    )
    return bool(rows[0][0])


def one_error_line(stderr: str) -> str:
    """The only line of ``stderr``, which must be an ``hdi: error:`` line (no traceback, no second line)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hdi: error: "), f"not one `hdi: error:` line:\n{stderr}"
    return lines[0]


def check_trades_invariants(url: str, schema: str) -> dict[str, int]:
    """Whole chunks only: every ingest-log row has exactly its rows, every row belongs to a logged chunk,
    no key and no record is stored twice, nothing is quarantined. Returns {"rows": n, "chunks": n}."""
    s = f'"{schema}"'
    n, keys, records = fetch(
        url,
        f"SELECT count(*), count(DISTINCT (instrument_id, publisher_id, ts_event_ns, "
        f"dup_idx)), count(DISTINCT (instrument_id, publisher_id, ts_event_ns, "
        f"ts_recv_ns, sequence)) FROM {s}.trades",
    )[0]
    assert n == keys, f"{n - keys} duplicate keys"
    assert n == records, f"{n - records} records stored twice under different dup_idx"
    logged = fetch(
        url,
        f"""
        SELECT l.chunk_key, l.fetched, l.inserted, (SELECT count(*) FROM {s}.trades t
            WHERE t.ts_event >= l.start_ts AND t.ts_event < l.end_ts) AS stored
        FROM {s}.ingest_log l ORDER BY l.id""",
    )
    by_key: dict[str, list[tuple[int, int, int]]] = {}
    for key, fetched, inserted, stored in logged:
        by_key.setdefault(key, []).append((int(fetched), int(inserted), int(stored)))
    for key, runs in by_key.items():  # a --force run logs the chunk again, inserting nothing new
        stored = runs[0][2]
        assert sum(r[1] for r in runs) == stored and all(r[0] == stored for r in runs), (
            f"a log row without (all) its rows: {key} (fetched, inserted, stored): {runs}"
        )
    orphans = fetch(
        url,
        f"SELECT count(*) FROM {s}.trades t WHERE NOT EXISTS (SELECT 1 FROM {s}.ingest_log l "
        "WHERE t.ts_event >= l.start_ts AND t.ts_event < l.end_ts)",
    )[0][0]
    assert orphans == 0, f"{orphans} rows outside every logged chunk"
    assert fetch(url, f"SELECT count(*) FROM {s}.quarantine")[0][0] == 0
    return {"rows": int(n), "chunks": len(by_key)}


def fingerprint(url: str, schema: str) -> tuple[Any, ...]:
    """Count and sums of every column of the stored trades: equal fingerprints, equal tables (in practice)."""
    return fetch(
        url,
        f"SELECT count(*), sum(ts_event_ns::numeric), sum(ts_recv_ns::numeric), sum(price::numeric), "
        f"sum(size), sum(sequence), sum(dup_idx), sum(ascii(side::text)), "
        f'count(DISTINCT instrument_id) FROM "{schema}".trades',
    )[0]
