"""The embedded PostgreSQL SIGKILLed in the middle of `hdi ingest`, then `hdi ingest` run again.

No database URL is configured, so the client starts the embedded server under ``HDI_HOME`` (a
temporary folder). The postmaster is killed while a chunk's COPY batches run: the client must fail
with one ``hdi: error:`` line (exit 1), and the re-run must start the server again (crash recovery)
and complete the ingest exactly. The server is stopped at the end, whatever happened.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psycopg2
import pytest
import rel_support as rs

from hdi_lab.api import make_request
from hdi_lab.providers.sample import SampleProvider
from hdi_lab.storage.embedded import EmbeddedServer

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

SCHEMA = "hdi"  # the default db_schema


def _log_rows_once_up(url: str) -> int:
    """Committed chunks; 0 while the client is still creating the hdi_lab database."""
    try:
        return rs.log_rows(url, SCHEMA)
    except psycopg2.OperationalError:
        return 0


def test_server_killed_mid_ingest_then_rerun_completes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = rs.child_env({"HDI_HOME": str(home), "HDI_CHUNK_ROWS": "2000"})
    server = EmbeddedServer(home)
    provider = SampleProvider()
    chunks = provider.plan(make_request(**rs.SAMPLE_REQUEST))
    total = sum(int(provider.estimate(c).records or 0) for c in chunks)
    try:
        with rs.spawned(rs.hdi("ingest", *rs.SAMPLE_ARGS), env, tmp_path) as proc:
            url = rs.poll(server.url, "the client to start the embedded server", proc)
            rs.poll(lambda: _log_rows_once_up(url) >= 2, "2 committed chunks", proc)
            rs.poll(lambda: rs.copying_in_transaction(url, SCHEMA), "a COPY inside a chunk", proc)
            pid = server.status().pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            _, killed_err = proc.communicate(timeout=rs.DEADLINE_S)
        killed_code = proc.returncode
        rs.poll(lambda: not server.status().running, "the killed server to be seen as stopped")

        resumed = rs.run(rs.hdi("ingest", *rs.SAMPLE_ARGS), env, tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        url = server.url()
        assert url is not None, "the re-run started the server again"
        kept = rs.check_trades_invariants(url, SCHEMA)
        assert kept == {"rows": total, "chunks": len(chunks)}
        assert "already done" in resumed.stdout and "(0 already done)" not in resumed.stdout, resumed.stdout

        # the killed client: one line saying what happened, exit 1 (checked last: the data matters most)
        assert killed_code == 1, killed_err
        rs.one_error_line(killed_err)
    finally:
        server.stop()
    assert not server.status().running
