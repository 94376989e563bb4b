"""The IPython front end (``%load_ext hdi_lab``) in a TestingShell against the test database.

The shell's ``run_cell`` re-raises what the cell raised (jupysql's ``_testing.py``), so tests
assert return values and error types and texts; the extension's session reads HDI_DATABASE_URL
and HDI_DB_SCHEMA from the environment (``hdi_env``) on its first use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import FIXTURES, ROOT
from helpers import TestingShell, decompressed, read_store, row_counts
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import hdi_lab
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ConfigError, HdiError, StorageError, ValidationError
from hdi_lab.frontend.display import ConfigView, StatusView
from hdi_lab.frontend.magics import HdiMagics
from hdi_lab.schemas import IngestReport

pytestmark = pytest.mark.integration

SAMPLE = "--provider sample --schema ohlcv-1m --symbols ESH4 --start 2024-01-02 --end 2024-01-05"
SAMPLE_ROWS = 3 * 1380  # ESH4 trades 23 hours a day
TRADES = FIXTURES / "GLBX.MDP3" / "test_data.trades.dbn.zst"
EVIL = "x'); drop table ohlcv_1m;--"


def magics(shell: InteractiveShell) -> HdiMagics:
    m = shell.magics_manager.registry["HdiMagics"]
    assert isinstance(m, HdiMagics)
    return m


def run(shell: TestingShell, cell: str) -> Any:
    """The value of the cell's last expression."""
    return shell.run_cell(cell).result


def ingest_sample(shell: TestingShell, extra: str = "--quiet") -> IngestReport:
    report = run(shell, f"%hdi_ingest {SAMPLE} {extra}")
    assert isinstance(report, IngestReport)
    return report


def usage_error(shell: TestingShell, cell: str) -> UsageError:
    with pytest.raises(UsageError) as info:
        shell.run_cell(cell)
    return info.value


# -- loading ------------------------------------------------------------------------------


def test_load_twice_changes_nothing_and_reads_nothing(ip: TestingShell) -> None:
    m = magics(ip)
    assert m._session is None  # no settings read, no connection, no embedded server at load time
    ip.run_cell("%load_ext hdi_lab")
    hdi_lab.load_ipython_extension(ip)
    assert magics(ip) is m
    assert [c for c in ip.configurables if isinstance(c, HdiMagics)] == [m]
    assert {"hdi_ingest", "hdi_query", "hdi_status", "hdi_config", "hdi_symbols"} <= set(
        ip.magics_manager.magics["line"]
    )
    assert "hdi_query" in ip.magics_manager.magics["cell"]


def test_config_traitlets(ip: TestingShell) -> None:
    m = magics(ip)
    assert (m.verbose, m.display_rows, m.progress) == (False, 20, True)
    ip.run_cell("%config HdiMagics.verbose = True")
    ip.run_cell("%config HdiMagics.display_rows = 7")
    assert (m.verbose, m.display_rows) == (True, 7)
    cfg = run(ip, "%hdi_config")
    assert cfg["HdiMagics.display_rows"] == "7"
    assert ("HdiMagics.verbose", "True", "%config / ipython_config") in cfg.rows
    assert ("HdiMagics.progress", "True", "default") in cfg.rows


def test_unload_closes_connections_and_unregisters(ip: TestingShell, session: HdiSession) -> None:
    ingest_sample(ip)
    m = magics(ip)
    conn = m.session.connection()
    run(ip, "%hdi_query ohlcv-1m ESH4 2024-01-02 2024-01-03")
    html = ip.display_formatter.formatters["text/html"]
    assert pd.DataFrame in html.type_printers
    ip.run_cell("%unload_ext hdi_lab")
    assert conn.closed
    assert "HdiMagics" not in ip.magics_manager.registry and m not in ip.configurables
    assert "hdi_query" not in ip.magics_manager.magics["line"]
    assert "hdi_query" not in ip.magics_manager.magics["cell"]
    assert pd.DataFrame not in html.type_printers
    ip.run_cell("%load_ext hdi_lab")  # a fresh extension works again
    assert magics(ip) is not m
    assert len(run(ip, "%hdi_query ohlcv-1m ESH4 2024-01-02 2024-01-03")) == 1380


def test_load_ext_imports_nothing_heavy_and_connects_nowhere(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from traitlets.config import Config\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "c = Config(); c.HistoryManager.enabled = False\n"
        "ip = InteractiveShell(config=c)\n"
        "ip.run_line_magic('load_ext', 'hdi_lab')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDI_") and k != "VIRTUAL_ENV"}
    env.update(
        HDI_DATABASE_URL="postgresql://nobody@127.0.0.1:9/nowhere", HDI_IB_PORT="not-a-port", PYTHONPATH=str(ROOT)
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr  # neither the bad setting nor the dead server mattered
    modules = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "hdi_lab.frontend.magics" in modules
    heavy = {
        "feast",
        "ipywidgets",
        "tqdm.auto",
        "tqdm.notebook",
        "hdi_lab.storage.embedded",
        "pandas_ta",
        "pandas",
        "numpy",
        "databento",
        "psycopg2",
        "ib_async",
        "ib_insync",
        "plotly",
        # the change's dependencies: Arrow/Polars output, the Dask executor, exchange calendars, the scheduler
        "pyarrow",
        "polars",
        "dask",
        "distributed",
        "exchange_calendars",
        "sqlalchemy",
        "apscheduler",
    }
    assert not heavy & modules


def test_settings_are_read_on_first_use(ip: TestingShell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HDI_IB_PORT", "not-a-port")  # after %load_ext: picked up on first use
    err = usage_error(ip, "%hdi_config")
    assert str(err).startswith("ConfigError: ib_port='not-a-port'")
    assert isinstance(err.__cause__, ConfigError)


# -- %hdi_ingest ----------------------------------------------------------------------------


def test_ingest_sample_returns_report_with_progress(
    ip: TestingShell, session: HdiSession, capsys: pytest.CaptureFixture[str]
) -> None:
    report = ingest_sample(ip, extra="-o rep")
    assert ip.user_ns["rep"] is report
    assert (report.provider, report.schema, report.dry_run) == ("sample", "ohlcv-1m", False)
    assert (len(report.chunks), report.fetched, report.inserted, report.quarantined) == (3, SAMPLE_ROWS, SAMPLE_ROWS, 0)
    assert row_counts(session)["ohlcv_1m"] == SAMPLE_ROWS
    err = capsys.readouterr().err
    assert "hdi_ingest: 100%" in err and "3/3" in err  # tqdm.auto's text bar outside Jupyter

    html = report._repr_html_()
    assert html.startswith("<table>") and "<b>sample ohlcv-1m</b>" in html
    assert f"<td style='text-align:right'>{SAMPLE_ROWS}</td>" in html and ">inserted</th>" in html
    data, _ = ip.display_formatter.format(report)
    assert data["text/html"] == html and data["text/plain"] == str(report)


def test_ingest_rerun_force_quiet_and_dry_run(
    ip: TestingShell, session: HdiSession, capsys: pytest.CaptureFixture[str]
) -> None:
    ingest_sample(ip)
    assert "hdi_ingest:" not in capsys.readouterr().err  # --quiet: no bar
    again = ingest_sample(ip)
    assert (again.chunks_skipped, again.inserted) == (3, 0)
    forced = ingest_sample(ip, "--quiet --force")
    assert (forced.chunks_skipped, forced.inserted, forced.duplicates) == (0, 0, SAMPLE_ROWS)

    before = row_counts(session)
    dry = run(
        ip,
        "%hdi_ingest --provider sample --schema ohlcv-1m --symbols ESH4,NQH4 --start 2024-01-08 "
        "--end 2024-01-10 --dry-run",
    )
    assert dry.dry_run and len(dry.chunks) == 2 and dry.fetched > 0
    assert row_counts(session) == before
    html = dry._repr_html_()
    assert "<b>dry run: sample ohlcv-1m</b>" in html and "planned chunk" in html
    assert "GLBX.MDP3 ohlcv-1m ESH4,NQH4 [2024-01-08 00:00, 2024-01-09 00:00)" in html


def test_ingest_dataset_and_stype_in(ip: TestingShell) -> None:
    report = run(
        ip,
        "%hdi_ingest --provider sample --dataset GLBX.MDP3 --schema ohlcv-1h --symbols ES.c.0 "
        "--stype-in continuous --start 2024-03-13 --end 2024-03-15 --quiet",
    )
    assert report.inserted == 46 and report.schema == "ohlcv-1h"
    df = run(ip, "%hdi_query ohlcv-1h ES.c.0 2024-03-13 2024-03-15")
    assert sorted(set(df["instrument_id"])) == [400001, 400002]  # rolls H4 -> M4 on 2024-03-14
    err = usage_error(
        ip,
        "%hdi_ingest --provider sample --dataset XNAS.ITCH --schema ohlcv-1m --symbols ESH4 "
        "--start 2024-01-02 --end 2024-01-03",
    )
    assert "does not match symbols ESH4, which are in GLBX.MDP3" in str(err)


def test_ingest_file_provider(ip: TestingShell, session: HdiSession, tmp_path: Path) -> None:
    n = len(read_store(TRADES).to_ndarray())
    dry = run(ip, f"%hdi_ingest --dry-run {TRADES}")
    assert dry.dry_run and row_counts(session)["trades"] == 0
    spaced = tmp_path / "my data" / TRADES.name
    spaced.parent.mkdir()
    shutil.copy(TRADES, spaced)
    report = run(ip, f"%hdi_ingest --provider file '{spaced}'")  # quotes are removed, as in a shell
    assert (report.provider, report.schema, report.inserted) == ("file", "trades", n)
    assert row_counts(session)["trades"] == n
    assert run(ip, f"%hdi_ingest '{TRADES}'").chunks_skipped == 1
    forced = run(ip, f"%hdi_ingest --force '{TRADES}'")
    assert (forced.inserted, forced.duplicates) == (0, n)
    df = run(ip, "%hdi_query trades ESH1 2020-12-28 2020-12-29")
    pd.testing.assert_frame_equal(df, hdi_lab.query("trades", "ESH1", "2020-12-28", "2020-12-29", session=session))


# -- %hdi_query -----------------------------------------------------------------------------


def test_line_query_equals_the_core(ip: TestingShell, session: HdiSession) -> None:
    ingest_sample(ip)
    ip.run_cell("df = %hdi_query ohlcv-1m ESH4 2024-01-02 2024-01-05")
    expected = hdi_lab.query("ohlcv-1m", ["ESH4"], "2024-01-02", "2024-01-05", session=session)
    pd.testing.assert_frame_equal(ip.user_ns["df"], expected)
    assert len(expected) == SAMPLE_ROWS

    out = run(
        ip,
        "%hdi_query ohlcv-1m ESH4 2024-01-03 2024-01-04 --dataset GLBX.MDP3 --price-type fixed "
        "--columns open,close -o fixed",
    )
    assert ip.user_ns["fixed"] is out
    pd.testing.assert_frame_equal(
        out,
        hdi_lab.query(
            "ohlcv-1m",
            "ESH4",
            "2024-01-03",
            "2024-01-04",
            dataset="GLBX.MDP3",
            price_type="fixed",
            columns=["open", "close"],
            session=session,
        ),
    )
    assert list(out.columns) == ["open", "close"] and out["open"].dtype == "int64"


def test_returned_frames_display_truncated(ip: TestingShell) -> None:
    ingest_sample(ip)
    ip.run_cell("%config HdiMagics.display_rows = 6")
    df = run(ip, "%hdi_query ohlcv-1m ESH4 2024-01-02 2024-01-05")
    data, _ = ip.display_formatter.format(df)
    assert sum(line.startswith("2024-") for line in data["text/plain"].splitlines()) == 6
    assert "[4140 rows x 9 columns]" in data["text/plain"]  # the bars' columns and their session
    html = data["text/html"]
    assert html.count("<th>2024-") == 6 and "4140 rows \N{MULTIPLICATION SIGN} 9 columns" in html
    other, _ = ip.display_formatter.format(df.copy())  # a frame of the user's own: pandas' defaults
    assert sum(line.startswith("2024-") for line in other["text/plain"].splitlines()) == 10
    assert pd.get_option("display.max_rows") == 60  # options were only set while rendering


def test_cell_query_binds_variables(ip: TestingShell, session: HdiSession) -> None:
    ingest_sample(ip)
    ip.user_ns.update(sym="ESH4", lo=pd.Timestamp("2024-01-03", tz="UTC"), hi="2024-01-04")
    cell = (
        "%%hdi_query -o counts\n"
        "SELECT count(*) AS n, min(ts_event) AS first  -- :not_bound {{nor_this}}\n"
        "FROM ohlcv_1m WHERE instrument_id = (SELECT DISTINCT instrument_id FROM symbology WHERE symbol = :sym)\n"
        "AND ts_event >= {{lo}} AND ts_event < :hi::timestamptz\n"
    )
    out = run(ip, cell)
    assert ip.user_ns["counts"] is out
    assert int(out["n"].iloc[0]) == 1380
    assert out["first"].iloc[0] == pd.Timestamp("2024-01-03", tz="UTC")
    likes = run(ip, "%%hdi_query\nSELECT DISTINCT symbol FROM symbology WHERE symbol LIKE 'ES%' AND ':sym' <> ''")
    assert list(likes["symbol"]) == ["ESH4"]


def test_cell_query_injection_attempt_is_data(ip: TestingShell, session: HdiSession) -> None:
    ingest_sample(ip)
    ip.user_ns["evil"] = EVIL
    out = run(ip, "%%hdi_query\nSELECT :evil AS a, {{evil}} AS b, '50%' AS pct, 1::int AS one")
    assert out.to_dict("records") == [{"a": EVIL, "b": EVIL, "pct": "50%", "one": 1}]
    n = run(ip, "%%hdi_query\nSELECT count(*) AS n FROM ohlcv_1m WHERE ts_event::text = :evil")
    assert int(n["n"].iloc[0]) == 0
    assert row_counts(session)["ohlcv_1m"] == SAMPLE_ROWS  # the table is still there, untouched


def test_cell_query_array_slices_are_sql(ip: TestingShell) -> None:
    ip.user_ns.update(n=99, k=2)
    frame = run(
        ip,
        "%%hdi_query\nSELECT arr[:n] AS head, arr[2:] AS tail\n"
        "FROM (VALUES (ARRAY[1, 2, 3], 1)) AS t(arr, n) WHERE n < :k",
    )
    assert [list(v) for v in frame["head"]] == [[1]]  # the column n, not the notebook's n = 99
    assert [list(v) for v in frame["tail"]] == [[2, 3]]


def test_cell_query_errors(ip: TestingShell) -> None:
    err = usage_error(ip, "%%hdi_query\nSELECT :nope")
    assert "SQL parameter :nope refers to 'nope', which is not defined" in str(err)
    assert isinstance(err.__cause__, ValidationError)
    err = usage_error(ip, "%%hdi_query\nSELECT {{len(x)}}")
    assert "takes a name only" in str(err)
    err = usage_error(ip, "%%hdi_query ohlcv-1m\nSELECT 1")
    assert "only -o/--out NAME and --verbose go on its line" in str(err)
    err = usage_error(ip, "%%hdi_query -o x\n  \n")
    assert "the cell is empty" in str(err)


def test_line_query_time_out_of_range_is_one_line(ip: TestingShell) -> None:
    err = usage_error(ip, "%hdi_query ohlcv-1m ESH4 0001-01-01 9999-12-31")
    assert str(err).splitlines()[0] == (
        "ValidationError: start='0001-01-01' is outside the range of nanosecond "
        "timestamps (1677-09-22 to 2262-04-11): give a date within it"
    )
    assert isinstance(err.__cause__, ValidationError)
    err = usage_error(
        ip, "%hdi_ingest --provider sample --schema ohlcv-1m --symbols ESH4 --start 1600-01-01 --end 2024-01-03 --quiet"
    )
    assert "start='1600-01-01' is outside the range" in str(err)


def test_ingest_with_a_bad_file_is_one_line_and_loads_the_others(
    ip: TestingShell, session: HdiSession, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    raw = decompressed(TRADES)
    (folder / "a.trades.dbn").write_bytes(raw)
    (folder / "b.trades.dbn").write_bytes(raw[:-5])
    (folder / "c.trades.dbn").write_bytes(decompressed(FIXTURES / "XNAS.ITCH" / "test_data.trades.dbn.zst"))
    err = usage_error(ip, f"%hdi_ingest --quiet {folder}")
    first = str(err).splitlines()[0]
    assert first.startswith("IngestError: 1 of 3 files failed: ") and "b.trades.dbn" in first
    assert first.endswith(
        "the other 2 were loaded; fix or remove the failed file and re-run (what is stored is skipped)"
    )
    assert row_counts(session)["ingest_log"] == 2


def test_negative_limits_are_refused(ip: TestingShell) -> None:
    assert "--limit: -1 is negative: give 0 or more" in str(usage_error(ip, "%hdi_symbols --limit -1"))
    assert "--recent: -3 is negative" in str(usage_error(ip, "%hdi_status --recent -3"))


# -- %hdi_status, %hdi_config, %hdi_symbols -------------------------------------------------


def test_status(ip: TestingShell, session: HdiSession) -> None:
    ingest_sample(ip)
    st = run(ip, "%hdi_status -o st")
    assert isinstance(st, StatusView) and ip.user_ns["st"] is st
    assert st.server.version and st.db_schema == session.schema and not st.embedded
    cov = st.coverage.set_index("table").loc["ohlcv_1m"]
    assert (cov["symbols"], int(cov["rows"])) == ("ESH4", SAMPLE_ROWS)
    assert len(st.recent) == 3
    text = repr(st)
    assert text.startswith(f"server: PostgreSQL {st.server.version}") and f"schema {session.schema}" in text
    assert "coverage:" in text and "recent ingests:" in text
    html = st._repr_html_()
    assert "<h4>Coverage</h4>" in html and "<td>ESH4</td>" in html
    data, _ = ip.display_formatter.format(st)
    assert data["text/plain"] == text
    assert len(run(ip, "%hdi_status --recent 1").recent) == 1


def test_config_masks_the_password(
    ip: TestingShell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HDI_DATABASE_URL", "postgresql://hdi:s3cretpw@db.example:5432/x")
    cfg = run(ip, "%hdi_config")
    assert isinstance(cfg, ConfigView)
    assert ("database_url", "postgresql://hdi:****@db.example:5432/x", "env HDI_DATABASE_URL") in cfg.rows
    assert cfg["db_schema"] == os.environ["HDI_DB_SCHEMA"]
    data, _ = ip.display_formatter.format(cfg)
    shown = repr(cfg) + cfg._repr_html_() + "".join(data.values()) + "".join(capsys.readouterr())
    assert "****" in shown and "s3cretpw" not in shown


def test_symbols(ip: TestingShell) -> None:
    ingest_sample(ip)
    found = run(ip, "%hdi_symbols es")
    assert list(found["symbol"]) == ["ESH4"] and found["instrument_id"].iloc[0] == 400001
    assert list(found.columns) == ["symbol", "stype", "dataset", "instrument_id", "raw_symbol", "first", "last"]
    assert run(ip, "%hdi_symbols NOPE").empty
    assert len(run(ip, "%hdi_symbols --limit 5 -o syms")) == 1 and "syms" in ip.user_ns


# -- errors ---------------------------------------------------------------------------------

ERRORS = [
    (
        "%hdi_query ohlcv-1m ESH4 2024-01-05 2024-01-02",
        ValidationError,
        "start (2024-01-05T00:00:00+00:00) must be before end",
    ),
    ("%hdi_query ohlcv-1m NOPE4 2024-01-02 2024-01-05", ValidationError, "unknown symbol(s) 'NOPE4'"),
    (
        "%hdi_ingest --provider sample --schema ohlcv-1m --symbols NOPE4 --start 2024-01-02 --end 2024-01-03",
        ValidationError,
        "NOPE4",
    ),
    ("%%hdi_query\nSELEC 1", StorageError, 'SQL failed: ERROR:  syntax error at or near "SELEC"'),
]


@pytest.mark.parametrize(("cell", "kind", "text"), ERRORS)
def test_hdi_errors_are_short_usage_errors(
    ip: TestingShell, capsys: pytest.CaptureFixture[str], cell: str, kind: type[HdiError], text: str
) -> None:
    ingest_sample(ip)
    capsys.readouterr()
    err = usage_error(ip, cell)
    assert str(err).startswith(f"{kind.__name__}: ") and text in str(err)
    assert str(err).endswith("(add --verbose for the traceback)") and len(str(err).splitlines()) == 2
    assert type(err) is UsageError and isinstance(err.__cause__, kind) and err.error_type == kind.__name__
    shown = capsys.readouterr().err
    assert shown.startswith(f"UsageError: {kind.__name__}: ") and "Traceback" not in shown


@pytest.mark.parametrize(("cell", "kind", "text"), ERRORS)
def test_verbose_shows_the_traceback(
    ip: TestingShell, capsys: pytest.CaptureFixture[str], cell: str, kind: type[HdiError], text: str
) -> None:
    ingest_sample(ip)
    first, _, rest = cell.partition("\n")
    capsys.readouterr()
    with pytest.raises(kind, match=re.escape(text)):
        ip.run_cell(f"{first} --verbose\n{rest}")
    shown = "".join(capsys.readouterr())
    assert "Traceback (most recent call last)" in shown and "UsageError" not in shown


def test_verbose_traitlet_shows_the_traceback(ip: TestingShell) -> None:
    ip.run_cell("%config HdiMagics.verbose = True")
    with pytest.raises(ValidationError, match="must be before end"):
        ip.run_cell("%hdi_query ohlcv-1m ESH4 2024-01-05 2024-01-02")


@pytest.mark.parametrize(
    ("cell", "text"),
    [
        ("%hdi_query ohlcv-2m ESH4 2024-01-02 2024-01-05", "argument SCHEMA: invalid choice: 'ohlcv-2m'"),
        ("%hdi_ingest --provider sample --schema ohlcv-2m", "argument --schema: invalid choice: 'ohlcv-2m'"),
        ("%hdi_ingest --provider nope", "argument --provider: invalid choice: 'nope'"),
        ("%hdi_ingest --bogus", "unrecognized arguments: --bogus"),
        ("%hdi_query", "the following arguments are required: SCHEMA, SYMBOLS, START, END"),
        ("%hdi_query ohlcv-1m ESH4 2024-01-02", "the following arguments are required: END"),
        ("%hdi_query ohlcv-1m 'ESH4 2024-01-02 2024-01-05", "No closing quotation"),
        ("%hdi_query ohlcv-1m ESH4 2024-01-02 2024-01-05 -o 1x", "-o/--out '1x' is not a Python variable name"),
        ("%hdi_status --recent many", "argument --recent: 'many' is not a whole number: give 0 or more"),
        ("%hdi_config extra", "unrecognized arguments: extra"),
        ("%hdi_symbols -h", "unrecognized arguments: -h"),
    ],
)
def test_bad_arguments_are_argparse_messages(ip: TestingShell, cell: str, text: str) -> None:
    err = usage_error(ip, cell)  # a UsageError, never SystemExit
    magic = cell.split(maxsplit=1)[0]
    assert str(err).startswith(f"usage: {magic} ") and f"\n{magic}: error: {text}" in str(err)
    assert magics(ip)._session is None  # rejected before anything was read or connected
