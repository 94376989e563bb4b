"""Three `hdi ingest` processes at once on overlapping requests, into one fresh schema (so their
migrations race too), with and without ``--force``: every process exits 0 and the tables end exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import rel_support as rs
from conftest import fixture_files
from helpers import DATA_TABLES, make_session, read_store, row_counts

from hdi_lab.api import make_request
from hdi_lab.providers.sample import SampleProvider
from hdi_lab.schemas import Schema

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

#: overlapping day ranges of ESH4 trades: the third covers both others
RANGES = [("2024-01-02", "2024-01-04"), ("2024-01-03", "2024-01-05"), ("2024-01-02", "2024-01-05")]


def _glbx(schema: str) -> Path:
    return next(f for f in fixture_files(schema) if f.parent.name == "GLBX.MDP3")


def _xnas(schema: str) -> Path:
    return next(f for f in fixture_files(schema) if f.parent.name == "XNAS.ITCH")


#: overlapping sets of fixture files: the third is the union of the first two
FILES = [
    [_glbx("trades"), _glbx("ohlcv-1m")],
    [_glbx("ohlcv-1m"), _xnas("trades")],
    [_glbx("trades"), _glbx("ohlcv-1m"), _xnas("trades")],
]


def _run_three(argvs: list[list[str]], env: dict[str, str], cwd: Path) -> None:
    """Start all three, then wait for each: all must exit 0 without an error line."""
    with rs.spawned(argvs[0], env, cwd) as a, rs.spawned(argvs[1], env, cwd) as b, rs.spawned(argvs[2], env, cwd) as c:
        for proc in (a, b, c):
            out, err = proc.communicate(timeout=rs.DEADLINE_S)
            assert proc.returncode == 0, f"{proc.args!r}: exit {proc.returncode}\n{out}\n{err}"
            assert "error" not in (out + err).lower(), out + err


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_three_overlapping_sample_ingests(pg_url: str, db_schema: str, tmp_path: Path, force: bool) -> None:
    env = rs.child_env({"HDI_DATABASE_URL": pg_url, "HDI_DB_SCHEMA": db_schema, "HDI_CHUNK_ROWS": "10000"})
    extra = ["--force"] if force else []
    _run_three(
        [
            rs.hdi(
                "ingest",
                "--provider",
                "sample",
                "--schema",
                "trades",
                "--symbols",
                "ESH4",
                "--start",
                lo,
                "--end",
                hi,
                "--quiet",
                *extra,
            )
            for lo, hi in RANGES
        ],
        env,
        tmp_path,
    )
    provider = SampleProvider()
    chunks = provider.plan(
        make_request("sample", schema="trades", symbols="ESH4", start="2024-01-02", end="2024-01-05")
    )
    expected = sum(int(provider.estimate(c).records or 0) for c in chunks)
    kept = rs.check_trades_invariants(pg_url, db_schema)
    assert kept == {"rows": expected, "chunks": len(chunks)}
    logs = rs.fetch(pg_url, f'SELECT count(*), count(DISTINCT chunk_key) FROM "{db_schema}".ingest_log')[0]
    # without --force each day is loaded once and skipped by the others; with it, by every run covering it
    assert logs == ((len(chunks), len(chunks)) if not force else (2 + 2 + 3, len(chunks)))


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_three_overlapping_file_ingests(pg_url: str, db_schema: str, tmp_path: Path, force: bool) -> None:
    env = rs.child_env({"HDI_DATABASE_URL": pg_url, "HDI_DB_SCHEMA": db_schema})
    extra = ["--force"] if force else []
    _run_three([rs.hdi("ingest", *map(str, files), "--quiet", *extra) for files in FILES], env, tmp_path)
    expected = dict.fromkeys(DATA_TABLES, 0)
    for path in FILES[2]:
        expected[Schema(path.name.split(".")[1]).value.replace("-", "_")] += len(list(read_store(path)))
    with make_session(pg_url, db_schema) as session:
        counts = row_counts(session)
    assert counts["quarantine"] == 0
    assert {t: counts[t] for t in DATA_TABLES if t not in ("instruments", "symbology")} == {
        t: n for t, n in expected.items() if t not in ("instruments", "symbology")
    }
    keys = rs.fetch(pg_url, f'SELECT count(*), count(DISTINCT chunk_key) FROM "{db_schema}".ingest_log')[0]
    assert keys == ((3, 3) if not force else (7, 3))
    for table in ("trades", "ohlcv_1m"):
        n, distinct = rs.fetch(pg_url, f'SELECT count(*), count(DISTINCT t) FROM "{db_schema}".{table} t')[0]
        assert n == distinct, f"{table}: {n - distinct} rows stored twice"
