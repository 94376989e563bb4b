"""A multi-chunk ingest killed with SIGKILL keeps whole chunks only, and a re-run completes it exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
from helpers import drop_schema, make_session, row_counts

import hdi_lab
from hdi_lab.api import make_request
from hdi_lab.core.session import HdiSession
from hdi_lab.providers.sample import SampleProvider

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]
# 10 daily chunks of ESH4 trades (~35k trades per weekday, none on Saturday): each takes a noticeable time.
REQUEST = dict(provider="sample", schema="trades", symbols=["ESH4"], start="2024-01-01", end="2024-01-11")
CODE = f"import hdi_lab\nhdi_lab.ingest(**{REQUEST!r})\n"
#: a fingerprint of the stored trades: count and sums of every column
FINGERPRINT = (
    "SELECT count(*) AS n, sum(ts_event_ns::numeric) AS ts, sum(ts_recv_ns::numeric) AS recv, sum(price::numeric) "
    "AS px, sum(size) AS size, sum(sequence) AS seq, sum(dup_idx) AS dup, sum(ascii(side::text)) AS side, "
    'count(DISTINCT instrument_id) AS ids FROM "{s}".trades'
)


def _log_rows(pg_url: str, schema: str) -> int:
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f'"{schema}".ingest_log',))
            if cur.fetchone()[0] is None:
                return 0
            cur.execute(f'SELECT count(*) FROM "{schema}".ingest_log')
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _child_env(hdi_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDI_")}
    env.update(hdi_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    return env


def _fingerprint(session: HdiSession) -> dict[str, object]:
    return hdi_lab.sql(FINGERPRINT.format(s=session.schema), session=session).iloc[0].to_dict()


def test_sigkill_keeps_whole_chunks_and_rerun_completes(
    pg_url: str, db_schema: str, hdi_env: dict[str, str], session: HdiSession, tmp_path: Path
) -> None:
    chunks = SampleProvider().plan(make_request(**REQUEST))  # type: ignore[arg-type]
    expected_per_chunk = {c.key: SampleProvider().estimate(c).records for c in chunks}
    total = sum(expected_per_chunk.values())
    assert len(chunks) == 10 and total > 0

    proc = subprocess.Popen(
        [sys.executable, "-c", CODE],
        env=_child_env(hdi_env),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while _log_rows(pg_url, db_schema) == 0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first chunk never committed"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    s = session.schema
    log = hdi_lab.sql(
        f"SELECT l.id, l.chunk_key, l.fetched, l.inserted, l.duplicates, l.quarantined, "
        f'(SELECT count(*) FROM "{s}".trades t WHERE t.ts_event_ns >= (extract(epoch FROM l.start_ts) * 1e9)::bigint '
        f"AND t.ts_event_ns < (extract(epoch FROM l.end_ts) * 1e9)::bigint) AS stored "
        f'FROM "{s}".ingest_log l ORDER BY l.id',
        session=session,
    )
    logged = len(log)
    assert 1 <= logged < len(chunks), "killed after the first chunk and before the last"
    for row in log.itertuples():
        assert row.stored == row.inserted == row.fetched == expected_per_chunk[row.chunk_key], row
        assert row.duplicates == row.quarantined == 0
    assert log["chunk_key"].tolist() == [c.key for c in chunks[:logged]], "chunks commit in order"
    counts = row_counts(session)
    assert counts["trades"] == int(log["inserted"].sum()), "rows outside the logged chunks"
    assert counts["quarantine"] == 0

    resumed = hdi_lab.ingest(**REQUEST, session=session)  # type: ignore[arg-type]
    assert resumed.chunks_skipped == logged
    assert resumed.inserted == resumed.fetched == total - int(log["inserted"].sum())
    assert resumed.duplicates == 0

    clean_schema = f"{db_schema}_clean"
    try:
        with make_session(pg_url, clean_schema) as clean:
            one_go = hdi_lab.ingest(**REQUEST, session=clean)  # type: ignore[arg-type]
            assert one_go.inserted == total and one_go.chunks_skipped == 0
            assert row_counts(session)["trades"] == row_counts(clean)["trades"] == total
            assert _fingerprint(session) == _fingerprint(clean)
    finally:
        drop_schema(pg_url, clean_schema)
    assert row_counts(session)["ingest_log"] == len(chunks)


def test_rerun_of_a_complete_ingest_skips_every_chunk(session: HdiSession) -> None:
    request = {**REQUEST, "end": "2024-01-04"}
    first = hdi_lab.ingest(**request, session=session)  # type: ignore[arg-type]
    again = hdi_lab.ingest(**request, session=session)  # type: ignore[arg-type]
    assert again.chunks_skipped == len(again.chunks) == len(first.chunks) == 3
    assert again.fetched == again.inserted == 0
    assert row_counts(session)["trades"] == first.inserted
