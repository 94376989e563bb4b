"""Every output of ``hdi`` and of the magics, scanned for the test's secrets.

A recognisable fake Databento key and a database password are set, then a broad set of commands runs:
the real CLI in a child process (stdout, stderr, tracebacks and every log record at DEBUG), and the
magics in an IPython shell (results, their displays, printed output, reprs, log records). Neither
secret may appear anywhere: not whole, not percent-encoded, not as a long piece of the key.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import pytest
import rel_support as rs
from conftest import fixture_files
from helpers import decompressed, drop_schema, hdi_shell

from hdi_lab.config import load_settings
from hdi_lab.dbn.writer import record_dtype
from hdi_lab.schemas import Schema

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

KEY = "db-SECRETKEYabcdef1234567890"
PASSWORD = "S3cr3tPassw0rd"
#: a second password that needs percent-encoding in a URL (and has an `@` that some parsers split on)
ODD_PASSWORD = "S3cr/t@Pw0rd%x"
SECRETS = (KEY, PASSWORD, ODD_PASSWORD)


def forbidden() -> list[str]:
    """Each secret, its percent-encoded forms, and every 8-character piece of the key (a masked key
    may show its last 3 characters, never more)."""
    out = {s for secret in SECRETS for s in (secret, quote(secret, safe=""), quote(secret))}
    out |= {KEY[i : i + 8] for i in range(len(KEY) - 7)}
    out |= {PASSWORD[i : i + 8] for i in range(len(PASSWORD) - 7)}
    return sorted(out)


def leaks(text: str) -> list[str]:
    """What of the secrets ``text`` shows, described (never quoted: the report must not leak either)."""
    found = [s for s in forbidden() if s in text]
    out = []
    for label, secret in (("the API key", KEY), ("the password", PASSWORD), ("the odd password", ODD_PASSWORD)):
        pieces = [s for s in found if s in secret or s in (quote(secret, safe=""), quote(secret))]
        if pieces:
            whole = secret in found or any(s in found for s in (quote(secret, safe=""), quote(secret)))
            out.append(f"{label} ({'whole' if whole else f'{len(pieces)} pieces'})")
    return out


def _port(pg_url: str) -> int:
    port = urlsplit(pg_url).port
    assert port is not None
    return port


def _bad_trades_file(tmp_path: Path) -> Path:
    """The GLBX trades fixture with one zero-price trade (so quarantine list/show have an entry)."""
    raw = decompressed(next(f for f in fixture_files("trades") if f.parent.name == "GLBX.MDP3"))
    h = 8 + int.from_bytes(raw[4:8], "little")
    records = np.frombuffer(raw[h:], dtype=record_dtype(Schema.TRADES)).copy()
    records["price"][1] = 0
    path = tmp_path / "bad.trades.dbn"
    path.write_bytes(raw[:h] + records.tobytes())
    return path


def cli_cases(port: int, bad_file: Path) -> dict[str, list[str]]:
    """name -> argv of `hdi`, run in this order (the ingests come first, so later commands have data)."""
    host = f"127.0.0.1:{port}"
    odd = quote(ODD_PASSWORD, safe="")
    sample = [
        "--provider",
        "sample",
        "--schema",
        "ohlcv-1m",
        "--symbols",
        "ESH4",
        "--start",
        "2024-01-02",
        "--end",
        "2024-01-03",
        "--quiet",
    ]
    return {
        "ingest-sample": ["ingest", *sample],
        "ingest-dry-run": ["ingest", *sample[:-5], "--start", "2024-01-02", "--end", "2024-01-05", "--dry-run"],
        "ingest-file-quarantine": ["ingest", str(bad_file), "--quiet"],
        "ingest-databento-unreachable": [
            "ingest",
            "--provider",
            "databento",
            "--dataset",
            "GLBX.MDP3",
            "--schema",
            "trades",
            "--symbols",
            "ESH4",
            "--start",
            "2024-01-02",
            "--end",
            "2024-01-03",
            "--quiet",
        ],
        "config-show": ["config", "show"],
        "status": ["status"],
        "db-info": ["db", "info"],
        "db-status": ["db", "status"],
        "query": ["query", "ohlcv-1m", "--symbols", "ESH4", "--start", "2024-01-02", "--end", "2024-01-03"],
        "query-csv": [
            "query",
            "ohlcv-1m",
            "--symbols",
            "ESH4",
            "--start",
            "2024-01-02",
            "--end",
            "2024-01-03",
            "--format",
            "csv",
        ],
        "quarantine-list": ["quarantine", "list", "--status", "all"],
        "quarantine-show": ["quarantine", "show", "1"],
        "quarantine-retry": ["quarantine", "retry"],
        "features-env": ["features", "env"],
        "features-list": ["features", "list"],
        "error-unknown-symbol": [
            "query",
            "ohlcv-1m",
            "--symbols",
            "NOPE",
            "--start",
            "2024-01-02",
            "--end",
            "2024-01-03",
        ],
        "error-bad-dates": ["query", "ohlcv-1m", "--symbols", "ESH4", "--start", "2024-13-45", "--end", "2024-01-03"],
        "error-ancient-dates": ["ingest", *sample[:-5], "--start", "1600-01-01", "--end", "1600-01-02"],
        "error-unreachable-server": ["--database-url", f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x", "status"],
        "error-unreachable-config-show": [
            "--database-url",
            f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x",
            "config",
            "show",
        ],
        "error-wrong-database": ["--database-url", f"postgresql://postgres:{PASSWORD}@{host}/no_such_db", "status"],
        "encoded-password-config-show": [
            "--database-url",
            f"postgresql://postgres:{odd}@{host}/postgres",
            "config",
            "show",
        ],
        "encoded-password-status": ["--database-url", f"postgresql://postgres:{odd}@{host}/postgres", "status"],
        "raw-at-in-password-config-show": [
            "--database-url",
            f"postgresql://postgres:pre@{PASSWORD}@{host}/postgres",
            "config",
            "show",
        ],
        "raw-at-in-password-status": [
            "--database-url",
            f"postgresql://postgres:pre@{PASSWORD}@{host}/postgres",
            "status",
        ],
        "bad-percent-escape-status": [
            "--database-url",
            f"postgresql://postgres:{PASSWORD}%zz@{host}/postgres",
            "status",
        ],
        "query-param-password-config-show": [
            "--database-url",
            f"postgresql://postgres@{host}/postgres?password={PASSWORD}",
            "config",
            "show",
        ],
        "query-param-password-status": [
            "--database-url",
            f"postgresql://postgres@{host}/postgres?password={PASSWORD}",
            "status",
        ],
        "keyword-dsn-config-show": [
            "--database-url",
            f"host=127.0.0.1 port={port} user=postgres password={PASSWORD} dbname=postgres",
            "config",
            "show",
        ],
        "keyword-dsn-status": [
            "--database-url",
            f"host=127.0.0.1 port={port} user=postgres password={PASSWORD} dbname=postgres",
            "status",
        ],
        "keyword-dsn-unreachable": [
            "--database-url",
            f"host=127.0.0.1 port=1 user=postgres password={PASSWORD} dbname=x",
            "status",
        ],
        "not-a-url": ["--database-url", f"not a url {PASSWORD}", "status"],
    }


#: The child: DEBUG logging of every logger to stderr, then each command through hdi_lab.frontend.cli.main, in order.
#: A command that escapes main() (a raw traceback) is printed as the user would see it, and the loop goes on.
RUNNER = r"""
import io, json, logging, sys, traceback
logging.getLogger().setLevel(logging.DEBUG)
from hdi_lab.frontend.cli import main
results = {}
for name, argv in json.loads(sys.stdin.read()).items():
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    logging.getLogger().addHandler(handler)
    try:
        code = main(argv, out, err)
    except BaseException:
        code, err = "traceback", io.StringIO(err.getvalue() + traceback.format_exc())
    finally:
        logging.getLogger().removeHandler(handler)
    results[name] = {"code": code, "out": out.getvalue(), "err": err.getvalue()}
print("\n@@RESULTS@@" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def cli_results(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """Every CLI case's exit code, stdout and stderr (with its log records), from one child process."""
    tmp = tmp_path_factory.mktemp("secrets")
    port = _port(pg_url)
    schema = f"t_rel_secrets_{uuid.uuid4().hex[:8]}"
    cases = cli_cases(port, _bad_trades_file(tmp))
    env = rs.child_env(
        {
            "HDI_DATABASE_URL": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres",
            "HDI_DB_SCHEMA": schema,
            "HDI_DATABENTO_API_KEY": KEY,
            "HDI_DATABENTO_GATEWAY": "http://127.0.0.1:1",  # nothing listens: the key's request fails at once
            "HDI_DATABENTO_RETRIES": "0",
            "HDI_HOME": str(tmp / "home"),
        }
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", RUNNER],
            input=json.dumps(cases),
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=rs.DEADLINE_S * 2,
            check=False,  # the exit code is asserted below, after the output it explains
        )
        assert "@@RESULTS@@" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
        results: dict[str, dict[str, Any]] = json.loads(done.stdout.split("@@RESULTS@@")[-1])
        assert done.returncode == 0 and not leaks(done.stderr), done.stderr
        yield results
    finally:
        drop_schema(pg_url, schema)


@pytest.mark.parametrize("case", list(cli_cases(5432, Path("f"))))
def test_cli_output_has_no_secret(cli_results: dict[str, dict[str, Any]], case: str) -> None:
    result = cli_results[case]
    text = result["out"] + result["err"]
    assert not leaks(text), f"`hdi` {case} shows {leaks(text)}:\n{text}"
    assert result["code"] != "traceback", f"`hdi` {case} escaped with a traceback:\n{result['err']}"


def test_the_cli_cases_did_their_work(cli_results: dict[str, dict[str, Any]]) -> None:
    """The scan means something only if the commands ran: data stored, entries listed, errors raised."""
    assert cli_results["ingest-sample"]["code"] == 0 and "inserted" in cli_results["ingest-sample"]["out"]
    assert cli_results["quarantine-list"]["code"] == 0 and "price_nonpositive" in cli_results["quarantine-list"]["out"]
    assert cli_results["query"]["code"] == 0 and "ESH4" in cli_results["query"]["out"]
    assert "database_url" in cli_results["config-show"]["out"] and "****" in cli_results["config-show"]["out"]
    for case in ("error-unknown-symbol", "error-unreachable-server", "ingest-databento-unreachable"):
        assert cli_results[case]["code"] == 1, cli_results[case]


# --- the magics -------------------------------------------------------------------------------------

MAGICS = [
    "%hdi_config",
    "%hdi_ingest --provider sample --schema ohlcv-1m --symbols ESH4 --start 2024-01-02 --end 2024-01-03 --quiet",
    "%hdi_ingest --provider sample --schema ohlcv-1m --symbols ESH4 --start 2024-01-02 --end 2024-01-05 --dry-run",
    "%hdi_status",
    "%hdi_query ohlcv-1m ESH4 2024-01-02 2024-01-03",
    "%%hdi_query\nSELECT current_user AS who, current_setting('application_name') AS app",
    "%hdi_symbols es",
]
ERROR_MAGICS = [
    "%hdi_query ohlcv-1m NOPE 2024-01-02 2024-01-03",
    "%hdi_query ohlcv-1m ESH4 2024-13-45 2024-01-03",
    (
        "%hdi_ingest --provider databento --dataset GLBX.MDP3 --schema trades --symbols ESH4 --start 2024-01-02 "
        "--end 2024-01-03 --quiet"
    ),
    "%%hdi_query\nSELECT * FROM no_such_table",
]
REPRS: dict[str, Callable[[Any], str]] = {
    "repr(settings)": lambda s: repr(s.settings),
    "str(settings)": lambda s: str(s.settings),
    "repr(session)": repr,
    "str(session)": str,
    "repr(load_settings())": lambda s: repr(load_settings()),
    "settings.masked()": lambda s: repr(s.settings.masked()),
}


@pytest.fixture
def secret_env(pg_url: str, db_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HDI_DATABASE_URL", f"postgresql://postgres:{PASSWORD}@127.0.0.1:{_port(pg_url)}/postgres")
    monkeypatch.setenv("HDI_DB_SCHEMA", db_schema)
    monkeypatch.setenv("HDI_DATABENTO_API_KEY", KEY)
    monkeypatch.setenv("HDI_DATABENTO_GATEWAY", "http://127.0.0.1:1")
    monkeypatch.setenv("HDI_DATABENTO_RETRIES", "0")
    monkeypatch.setenv("HDI_HOME", str(tmp_path / "home"))


def _shown(shell: Any, value: object) -> str:
    """Everything a notebook could show of ``value``: every display format, plus repr and str."""
    if value is None:
        return ""
    data, _ = shell.display_formatter.format(value)
    return "".join(map(str, data.values())) + repr(value) + str(value)


def test_magics_outputs_have_no_secret(
    secret_env: None, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: dict[str, str] = {}
    with hdi_shell() as shell:
        for cell in MAGICS:
            seen[cell] = _shown(shell, shell.run_cell(cell).result)
        for cell in ERROR_MAGICS:
            with pytest.raises(Exception) as info:  # noqa: PT011 - any error: only its text is checked for secrets
                shell.run_cell(cell)
            seen[cell] = f"{type(info.value).__name__}: {info.value}"
    seen["printed"] = "".join(capsys.readouterr())
    seen["log records"] = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    found = {name: leaks(text) for name, text in seen.items() if leaks(text)}
    assert not found, f"secrets shown by the magics: {found}"
    assert "inserted" in seen[MAGICS[1]] and "ESH4" in seen[MAGICS[4]], "the magics did not run"


def test_settings_and_session_reprs_have_no_secret(secret_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    """What a notebook shows of the objects themselves: the magics' session, its settings, load_settings()."""
    seen: dict[str, str] = {}
    with hdi_shell() as shell:
        shell.run_cell("%hdi_status")
        session = shell.magics_manager.registry["HdiMagics"].session
        for name, show in REPRS.items():
            seen[name] = show(session)
        seen["display(settings)"] = _shown(shell, session.settings)
        seen["display(session)"] = _shown(shell, session)
        print(session)
        print(session.settings)
    seen["printed"] = "".join(capsys.readouterr())
    found = {name: leaks(text) for name, text in seen.items() if leaks(text)}
    assert not found, f"secrets shown: {found}"
