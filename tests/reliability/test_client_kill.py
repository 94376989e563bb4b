"""`hdi ingest` SIGKILLed at several points of a multi-chunk, multi-batch ingest, then run again.

tests/test_crash_resume.py kills an API ingest after its first chunk; here the real CLI is killed at
chunk boundaries and inside a chunk (while its COPY batches run, ``HDI_CHUNK_ROWS`` small), and the
re-run must leave exactly what one clean run leaves: same rows, no duplicate, whole chunks only.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import rel_support as rs
from helpers import drop_schema

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

#: 2,000 records per COPY batch: every ~35k-trade day chunk is ~17 batches in one transaction
CHUNK_ROWS = "2000"


@pytest.fixture(scope="module")
def clean_run(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, ...]]:
    """The fingerprint of one uninterrupted `hdi ingest` of the same request."""
    schema = f"t_rel_clean_{uuid.uuid4().hex[:8]}"
    try:
        env = rs.child_env({"HDI_DATABASE_URL": pg_url, "HDI_DB_SCHEMA": schema, "HDI_CHUNK_ROWS": CHUNK_ROWS})
        done = rs.run(rs.hdi("ingest", *rs.SAMPLE_ARGS), env, tmp_path_factory.mktemp("clean"))
        assert done.returncode == 0, done.stderr
        assert rs.check_trades_invariants(pg_url, schema)["chunks"] == 10
        yield rs.fingerprint(pg_url, schema)
    finally:
        drop_schema(pg_url, schema)


@pytest.mark.parametrize(
    ("logged", "mid_chunk"),
    [(0, True), (3, False), (6, True)],
    ids=["inside-first-chunk", "after-3-chunks", "inside-chunk-7"],
)
def test_sigkill_then_resume_equals_a_clean_run(
    pg_url: str, db_schema: str, tmp_path: Path, clean_run: tuple[object, ...], logged: int, mid_chunk: bool
) -> None:
    env = rs.child_env({"HDI_DATABASE_URL": pg_url, "HDI_DB_SCHEMA": db_schema, "HDI_CHUNK_ROWS": CHUNK_ROWS})
    with rs.spawned(rs.hdi("ingest", *rs.SAMPLE_ARGS), env, tmp_path) as proc:
        rs.poll(lambda: rs.log_rows(pg_url, db_schema) >= logged, f"{logged} committed chunks", proc)
        if mid_chunk:
            rs.poll(lambda: rs.copying_in_transaction(pg_url, db_schema), "a COPY inside a chunk", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=rs.DEADLINE_S)
    assert proc.returncode == -signal.SIGKILL

    # the killed client's backend rolls back when it sees the closed socket; wait until it is gone
    rs.poll(lambda: not rs.copying_in_transaction(pg_url, db_schema), "the killed client's transaction to end")
    kept = rs.check_trades_invariants(pg_url, db_schema)
    assert logged <= kept["chunks"] < 10, kept

    resumed = rs.run(rs.hdi("ingest", *rs.SAMPLE_ARGS), env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"10 chunks ({kept['chunks']} already done)" in resumed.stdout, resumed.stdout
    assert rs.check_trades_invariants(pg_url, db_schema)["chunks"] == 10
    assert rs.fingerprint(pg_url, db_schema) == clean_run
