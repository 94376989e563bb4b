"""The ``hdi`` command line, run in-process through ``hdi_lab.frontend.cli.main(argv, out, err)``."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import fixture_files
from helpers import assert_nothing_written, col_ns, index_ns, read_store, row_counts, run_cli

import hdi_lab
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import UNDEF_PRICE

pytestmark = pytest.mark.integration

GLBX = {f.name.split(".")[1]: f for f in fixture_files() if f.parent.name == "GLBX.MDP3"}
QUERY = ["query", "trades", "--symbols", "ESH1", "--start", "2020-12-28", "--end", "2020-12-29"]


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hdi_lab.toml or pyproject table from the working directory."""
    monkeypatch.chdir(tmp_path)


def _ingest_trades() -> np.ndarray:
    code, _, err = run_cli(["ingest", "--quiet", str(GLBX["trades"])])
    assert code == 0, err
    return read_store(GLBX["trades"]).to_ndarray()


def _check_trades(frame: pd.DataFrame, expected: np.ndarray) -> None:
    assert len(frame) == len(expected)
    np.testing.assert_array_equal(index_ns(frame), expected["ts_event"].astype(np.int64))
    np.testing.assert_array_equal(col_ns(frame["ts_recv"]), expected["ts_recv"].astype(np.int64))
    assert (frame["price"].to_numpy() == expected["price"].astype(np.int64) / 1e9).all()
    np.testing.assert_array_equal(frame["size"].to_numpy(), expected["size"].astype(np.int64))
    np.testing.assert_array_equal(frame["sequence"].to_numpy(), expected["sequence"].astype(np.int64))
    assert list(frame["side"]) == [s.decode() for s in expected["side"]]
    assert (frame["symbol"] == "ESH1").all()
    assert (frame["instrument_id"] == expected["instrument_id"].astype(np.int64)).all()


def test_ingest_prints_report(hdi_env: dict[str, str], session: HdiSession) -> None:
    n = len(read_store(GLBX["trades"]).to_ndarray())
    code, out, err = run_cli(["ingest", str(GLBX["trades"])])
    assert code == 0, err
    assert re.search(
        rf"file trades: 1 chunks \(0 already done\), fetched {n}, inserted {n}, updated 0, "
        r"duplicates 0, quarantined 0",
        out,
    ), out
    assert row_counts(session)["trades"] == n
    code, out, _ = run_cli(["ingest", str(GLBX["trades"])])
    assert code == 0 and "(1 already done)" in out and "inserted 0" in out
    code, out, _ = run_cli(["ingest", "--force", str(GLBX["trades"])])
    assert code == 0 and f"inserted 0, updated 0, duplicates {n}" in out


def test_query_csv(hdi_env: dict[str, str], session: HdiSession, tmp_path: Path) -> None:
    expected = _ingest_trades()
    target = tmp_path / "f.csv"
    code, out, err = run_cli([*QUERY, "--format", "csv", "--output", str(target)])
    assert code == 0, err
    assert f"wrote {len(expected)} rows to {target}" in err
    frame = pd.read_csv(target, index_col="ts_event")
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index, utc=True), name="ts_event")
    frame["ts_recv"] = pd.to_datetime(frame["ts_recv"], utc=True)
    _check_trades(frame, expected)

    code, out, _ = run_cli([*QUERY, "--format", "csv", "--price-type", "fixed", "--columns", "price,size"])
    assert code == 0
    to_stdout = pd.read_csv(io.StringIO(out), index_col="ts_event")
    assert list(to_stdout.columns) == ["price", "size"]
    np.testing.assert_array_equal(to_stdout["price"].to_numpy(), expected["price"].astype(np.int64))
    # --columns is read as %hdi_query reads it (options.query): spaces and empty items left out
    code, spaced, err = run_cli([*QUERY, "--format", "csv", "--price-type", "fixed", "--columns", " price, ,size,"])
    assert code == 0, err
    assert spaced == out


def test_query_parquet(hdi_env: dict[str, str], session: HdiSession, tmp_path: Path) -> None:
    expected = _ingest_trades()
    target = tmp_path / "f.parquet"
    code, _, err = run_cli([*QUERY, "--format", "parquet", "--output", str(target)])
    assert code == 0, err
    frame = pd.read_parquet(target)
    assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == "UTC"
    _check_trades(frame, expected)
    api = hdi_lab.query("trades", ["ESH1"], "2020-12-28", "2020-12-29", session=session)
    pd.testing.assert_frame_equal(frame, api, check_index_type=False, check_dtype=False)

    code, _, err = run_cli([*QUERY, "--format", "parquet"])
    assert code == 1 and err.startswith("hdi: error: ") and "--output" in err


def test_query_table_format(hdi_env: dict[str, str], session: HdiSession) -> None:
    expected = _ingest_trades()
    code, out, _ = run_cli([*QUERY, "--limit", "2"])
    assert code == 0
    assert f"... {len(expected)} rows in all" in out
    assert "3702.75" in out and "ESH1" in out


def test_status_lists_tables_and_instruments(hdi_env: dict[str, str], session: HdiSession) -> None:
    code, out, _ = run_cli(["status"])
    assert code == 0 and "instruments: 0" in out and "no data yet" in out
    _ingest_trades()
    for schema in ("ohlcv-1m", "definition"):
        assert run_cli(["ingest", "--quiet", str(GLBX[schema])])[0] == 0
    code, out, err = run_cli(["status"])
    assert code == 0, err
    assert f"schema {session.schema}" in out
    assert "instruments: 1;" in out and "open quarantine entries: 0" in out
    coverage = out.split("coverage:")[1].split("recent ingests:")[0]
    for table in ("trades", "ohlcv_1m"):
        line = next(line for line in coverage.splitlines() if line.strip().startswith(table))
        assert "GLBX.MDP3" in line and "ESH1" in line and "5482" in line, line
        assert re.search(r"\b4\b", line), line  # rows
    recent = out.split("recent ingests:")[1]
    assert recent.count("GLBX.MDP3") == 3


def test_config_show_masks_password() -> None:
    code, out, err = run_cli(["--database-url", "postgresql://u:secretpw@host/db", "config", "show"])
    assert code == 0, err
    assert "secretpw" not in out + err
    line = next(line for line in out.splitlines() if line.startswith("database_url"))
    assert "postgresql://u:****@host/db" in line and "argument" in line


def test_config_show_masks_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HDI_DATABASE_URL", "postgresql://admin:hunter2secret@db.example:5432/market")
    code, out, _ = run_cli(["config", "show"])
    assert code == 0
    assert "hunter2secret" not in out
    assert "postgresql://admin:****@db.example:5432/market" in out and "env HDI_DATABASE_URL" in out


def test_ingest_dry_run_writes_nothing(hdi_env: dict[str, str], session: HdiSession) -> None:
    argv = [
        "ingest",
        "--provider",
        "sample",
        "--schema",
        "ohlcv-1m",
        "--symbols",
        "ESH4",
        "--start",
        "2024-01-02",
        "--end",
        "2024-01-05",
    ]
    code, out, err = run_cli([*argv, "--dry-run"])
    assert code == 0, err
    assert out.startswith("dry run: sample ohlcv-1m: 3 chunks")
    estimates = [int(n) for n in re.findall(r": ~(\d+) records", out)]
    assert len(estimates) == 3 and all(n > 0 for n in estimates)
    assert_nothing_written(session)

    code, out, err = run_cli([*argv, "--quiet"])
    assert code == 0, err
    total = sum(estimates)
    assert f"fetched {total}, inserted {total}" in out
    assert row_counts(session)["ohlcv_1m"] == total


def test_query_fixed_prices_keep_undef(hdi_env: dict[str, str], session: HdiSession) -> None:
    """statistics quantities/prices: UNDEF stays INT64_MAX with --price-type fixed, empty (NaN) as float."""
    path = GLBX["statistics"]
    expected = read_store(path).to_ndarray()
    assert run_cli(["ingest", str(path)])[0] == 0
    base = [
        "query",
        "statistics",
        "--symbols",
        "ESH1",
        "--start",
        "2020-12-28",
        "--end",
        "2020-12-29",
        "--format",
        "csv",
    ]
    code, out, _ = run_cli([*base, "--price-type", "fixed"])
    assert code == 0
    frame = pd.read_csv(io.StringIO(out))
    np.testing.assert_array_equal(frame["price"].to_numpy(), expected["price"].astype(np.int64))
    np.testing.assert_array_equal(frame["quantity"].to_numpy(), expected["quantity"].astype(np.int64))
    assert (expected["quantity"] == UNDEF_PRICE).all()  # the fixture's quantities are all undefined


@pytest.mark.parametrize(
    "argv",
    [
        [*QUERY, "--limit", "-5"],
        ["quarantine", "list", "--limit", "-1"],
        [
            "compare",
            "ohlcv-1m",
            "--left",
            "ESH4",
            "--right",
            "ESH4",
            "--start",
            "2024-01-02",
            "--end",
            "2024-01-03",
            "--limit",
            "-2",
        ],
    ],
    ids=["query", "quarantine-list", "compare"],
)
def test_negative_limit_is_refused(
    hdi_env: dict[str, str], session: HdiSession, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``head(-5)`` would show all rows but five; a negative SQL LIMIT is a database error."""
    with pytest.raises(SystemExit) as info:
        run_cli(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"argument --limit: -\d is negative: give 0 or more", err), err
