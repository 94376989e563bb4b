"""Shared fixtures: a real PostgreSQL (HDI_TEST_DATABASE_URL or a throwaway Debian server), one schema per test."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from fake_databento import KEY, FakeDatabento
from helpers import TEST_HOME, TestingShell, drop_schema, hdi_shell, make_session

from hdi_lab.core.session import HdiSession

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "databento"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HDI_* or vendor key from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("HDI_") or name == "DATABENTO_API_KEY":
            monkeypatch.delenv(name, raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_debian_postgres(tmp: Path) -> tuple[str, list[str]]:
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb:
        raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql) and no HDI_TEST_DATABASE_URL")
    bindir = Path(initdb[-1]).parent
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(tmp, "postgres")
    data, port = tmp / "data", _free_port()
    subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        check=True,
        capture_output=True,
    )
    opts = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={tmp} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log"), "-w", "-o", opts, "start"],
        check=True,
        capture_output=True,
    )
    stop = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a real PostgreSQL for this test session."""
    url = os.environ.get("HDI_TEST_DATABASE_URL")
    stop: list[str] | None = None
    tmp = None
    if not url:
        tmp = Path(tempfile.mkdtemp(prefix="hdi-pg-"))
        try:
            url, stop = _start_debian_postgres(tmp)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL is required in CI and could not be started: {exc}")
            pytest.skip(f"no PostgreSQL available: {exc}")
    try:
        psycopg2.connect(url).close()
    except psycopg2.OperationalError as exc:
        pytest.fail(f"cannot connect to the test PostgreSQL: {exc}")
    yield url
    if stop:
        subprocess.run(stop, check=False, capture_output=True)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def db_schema(pg_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schema(pg_url, name)


@pytest.fixture
def session(pg_url: str, db_schema: str) -> Iterator[HdiSession]:
    s = make_session(pg_url, db_schema)
    yield s
    s.close()


@pytest.fixture
def hdi_env(pg_url: str, db_schema: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment pointing hdi_lab (and child processes) at the test database and schema."""
    env = {"HDI_DATABASE_URL": pg_url, "HDI_DB_SCHEMA": db_schema, "HDI_HOME": str(TEST_HOME)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def other_schema(pg_url: str) -> Iterator[str]:
    """A second schema: the serial run a cluster run is compared with."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schema(pg_url, name)


@pytest.fixture
def cluster() -> Iterator[tuple[Any, Any]]:
    """A real Dask ``LocalCluster`` of 2 worker processes (2 threads each) and a client of it (Dask loads here
    only). The workers inherit the environment of their start (a fake gateway's CA bundle)."""
    import logging

    from distributed import Client, LocalCluster

    # dashboard_address ":0": the scheduler's HTTP server (metrics) binds a free port even with the dashboard off;
    # on its default, 8787, a second cluster on the machine warns (an error under filterwarnings=error)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
        ) as cl,
        Client(cl, set_as_default=False) as client,
    ):
        yield cl, client


def fixture_files(schema: str | None = None) -> list[Path]:
    files = sorted(FIXTURES.glob("*/test_data.*.dbn.zst"))
    if schema:
        files = [f for f in files if f.name == f"test_data.{schema}.dbn.zst"]
    return files


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--live",
        action="store_true",
        default=False,
        help="run `live` tests against the real vendors (needs their keys)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`live` tests call real vendors: they are skipped (with this reason) unless --live is given."""
    if config.getoption("--live"):
        return
    skip = pytest.mark.skip(reason="live test: calls a real vendor; run with --live and a real API key")
    for item in items:
        if item.get_closest_marker("live") is not None:
            item.add_marker(skip)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDatabento]:
    """The local TLS Databento gateway (tests/fake_databento.py), trusted by the real client."""
    gw = FakeDatabento(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(gw.ca_path))
    yield gw
    gw.close()


def databento_session(session: HdiSession, fake: FakeDatabento, **overrides: object) -> HdiSession:
    """A session of ``session``'s database whose Databento provider talks to ``fake`` (quick retries)."""
    values: dict[str, object] = dict(
        databento_api_key=KEY,
        databento_gateway=fake.url,
        databento_backoff=0.01,
        databento_retries=2,
        databento_max_cost_usd=1000.0,
    )
    values.update(overrides)
    return HdiSession(session.settings.replace(**values))


@pytest.fixture
def dbs(session: HdiSession, fake: FakeDatabento) -> Iterator[HdiSession]:
    """:func:`databento_session` with the defaults, closed after the test."""
    s = databento_session(session, fake)
    yield s
    s.close()


@pytest.fixture
def ip(hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestingShell]:
    """An IPython shell with hdi_lab's magics loaded, on the test database (``hdi_env``), in an empty folder."""
    monkeypatch.chdir(tmp_path)  # no hdi_lab.toml / [tool.hdi_lab] from the working directory
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)  # IPython warns about a mismatched virtualenv
    with hdi_shell() as shell:
        yield shell
