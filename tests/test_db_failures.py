"""Database failures are one-line errors: a backend terminated mid-ingest, an unreachable server, a
read-only role, a schema that needs migrating. The shared test server is never stopped: backends are
terminated with ``pg_terminate_backend`` from another connection."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from helpers import hdi_shell, make_session, row_counts, run_cli, schema_at_version
from IPython.core.error import UsageError

import hdi_lab
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import StorageError
from hdi_lab.storage.db import migrations

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]
#: 10 daily chunks of sample trades, each taking a noticeable time (as in test_crash_resume)
INGEST = [
    "ingest",
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
]
SAMPLE = dict(provider="sample", schema="ohlcv-1m", symbols="ESH4", start="2024-01-02", end="2024-01-04")


def _admin(pg_url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def _client_ports(pid: int) -> list[int]:
    """The local TCP ports of process ``pid``'s sockets (its PostgreSQL connections), from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _terminate(pg_url: str, pid: int) -> int:
    """Terminate the backends serving process ``pid`` (only this test's connections: the server is shared)."""
    rows = _admin(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = ANY(%s)",
        (_client_ports(pid),),
    )
    return len(rows)


def _kill(pg_url: str, session: HdiSession) -> None:
    """Terminate the backend of this thread's connection of ``session``."""
    pid = session.connection().get_backend_pid()
    assert _admin(pg_url, "SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_backend_terminated_mid_ingest_is_one_line_and_resumes(
    pg_url: str, db_schema: str, hdi_env: dict[str, str], session: HdiSession, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDI_")} | hdi_env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hdi_lab.frontend.cli", *INGEST],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first chunk never committed"
            logged = _admin(pg_url, "SELECT to_regclass(%s) IS NOT NULL", (f'"{db_schema}".ingest_log',))[0][0]
            if logged and _admin(pg_url, f'SELECT count(*) FROM "{db_schema}".ingest_log')[0][0]:
                break
            time.sleep(0.01)
        assert _terminate(pg_url, proc.pid) >= 1
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, (out, err)
    line = _one_line(err)
    assert line.startswith("hdi: error: lost the connection to PostgreSQL ("), line  # wording: where it was cut
    said = re.search(
        r"completed chunks are kept; check the server \(hdi db status\) and re-run to resume "
        r"\((\d+) of 10 chunks were committed before this and are kept\)$",
        line,
    )
    assert said, line
    kept = row_counts(session)
    assert 1 <= kept["ingest_log"] == int(said.group(1)) < 10
    code, out, err = run_cli(INGEST)
    assert code == 0, err
    assert row_counts(session)["ingest_log"] == 10


def test_a_session_reconnects_after_its_backend_died(pg_url: str, session: HdiSession) -> None:
    hdi_lab.ingest(**SAMPLE, session=session)  # type: ignore[arg-type]
    _kill(pg_url, session)
    with pytest.raises(StorageError, match=r"^lost the connection to PostgreSQL \(.*re-run to resume$") as info:
        hdi_lab.sql("SELECT count(*) AS n FROM ohlcv_1m", session=session)
    assert len(str(info.value).splitlines()) == 1
    assert int(hdi_lab.sql("SELECT count(*) AS n FROM ohlcv_1m", session=session)["n"].iloc[0]) == 2 * 1380


def test_the_magic_reconnects_after_a_lost_connection(
    pg_url: str, hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    with hdi_shell() as ip:
        ip.run_cell("%hdi_status")
        _kill(pg_url, ip.magics_manager.registry["HdiMagics"].session)
        with pytest.raises(UsageError) as info:
            ip.run_cell("%hdi_status")
        text = str(info.value)
        assert text.startswith("StorageError: lost the connection to PostgreSQL") and len(text.splitlines()) == 2
        assert ip.run_cell("%hdi_status").result is not None  # the notebook keeps its session


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.setenv("HDI_DATABASE_URL", f"postgresql://u@127.0.0.1:{_closed_port()}/db")
    code, out, err = run_cli(INGEST)
    assert code == 1 and out == ""
    assert _one_line(err).startswith("hdi: error: cannot connect to PostgreSQL (connection to server at")
    with hdi_shell() as ip, pytest.raises(UsageError) as info:
        ip.run_cell(
            "%hdi_ingest --provider sample --schema trades --symbols ESH4 --start 2024-01-02 --end 2024-01-03 --quiet"
        )
    assert str(info.value).startswith("StorageError: cannot connect to PostgreSQL")
    assert len(str(info.value).splitlines()) == 2


# -- a read-only role ---------------------------------------------------------------------------------


@pytest.fixture
def readonly(pg_url: str) -> Iterator[tuple[str, str]]:
    """(role, URL) of a LOGIN role with no privilege of its own (the test server trusts local logins)."""
    role = f"ro_{uuid.uuid4().hex[:10]}"
    _admin(pg_url, f'CREATE ROLE "{role}" LOGIN')
    parts = urlsplit(pg_url)
    netloc = f"{role}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    try:
        yield role, urlunsplit(parts._replace(netloc=netloc))
    finally:
        _admin(pg_url, f'DROP OWNED BY "{role}"')
        _admin(pg_url, f'DROP ROLE "{role}"')


def test_a_read_only_role_reads_and_cannot_write(
    readonly: tuple[str, str], session: HdiSession, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    role, url = readonly
    stored = hdi_lab.ingest(**SAMPLE, session=session).inserted  # type: ignore[arg-type]
    s = session.schema
    _admin(pg_url, f'GRANT USAGE ON SCHEMA "{s}" TO "{role}"')
    _admin(pg_url, f'GRANT SELECT ON ALL TABLES IN SCHEMA "{s}" TO "{role}"')
    with make_session(url, s) as ro:
        frame = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-04", session=ro)
        assert len(frame) == stored
        assert int(hdi_lab.sql("SELECT count(*) AS n FROM ohlcv_1m", session=ro)["n"].iloc[0]) == stored
        later = {**SAMPLE, "start": "2024-01-04", "end": "2024-01-05"}
        with pytest.raises(
            StorageError,
            match=r"^PostgreSQL refused: ERROR:  permission denied for table .* "
            r"\(sqlstate 42501\): this role lacks the privilege",
        ) as info:
            hdi_lab.ingest(**later, session=ro)  # type: ignore[arg-type]
        assert len(str(info.value).splitlines()) == 1 and info.value.sqlstate == "42501"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HDI_DATABASE_URL", url)
    monkeypatch.setenv("HDI_DB_SCHEMA", s)
    code, out, err = run_cli(["status"])
    assert code == 0, err
    assert "ESH4" in out
    code, out, err = run_cli(
        [
            "ingest",
            "--provider",
            "sample",
            "--schema",
            "ohlcv-1m",
            "--symbols",
            "ESH4",
            "--start",
            "2024-01-04",
            "--end",
            "2024-01-05",
            "--quiet",
        ]
    )
    assert code == 1 and _one_line(err).startswith("hdi: error: PostgreSQL refused: ERROR:  permission denied")
    assert row_counts(session)["ohlcv_1m"] == stored


def test_a_read_only_role_is_told_when_the_schema_needs_migrating(
    readonly: tuple[str, str], session: HdiSession, pg_url: str
) -> None:
    role, url = readonly
    s = session.schema
    *_, at, newest = sorted(v for v, _, _ in migrations())  # the newest version and the one shipped before it
    schema_at_version(pg_url, s, at)  # what an older hdi_lab left
    _admin(pg_url, f'GRANT USAGE ON SCHEMA "{s}" TO "{role}"')
    _admin(pg_url, f'GRANT SELECT ON ALL TABLES IN SCHEMA "{s}" TO "{role}"')
    with make_session(url, s) as ro, pytest.raises(StorageError) as info:
        hdi_lab.sql("SELECT 1", session=ro)
    assert str(info.value) == (
        f"schema {s} is at version {at}, this hdi_lab needs {newest}: connect once as its owner to migrate"
    )
    with (
        make_session(url, f"{s}_missing") as ro,
        pytest.raises(
            StorageError,
            match=rf"^schema {s}_missing does not exist and this role may not create "
            "it: connect once as a role with CREATE on the database",
        ),
    ):
        hdi_lab.sql("SELECT 1", session=ro)
    with make_session(url, s) as ro, pytest.raises(StorageError, match="connect once as its owner"):
        ro.connection()
    session.close()
    with make_session(pg_url, s) as owner:  # the owner migrates it again
        owner.connection()
    assert _admin(pg_url, f'SELECT max(version) FROM "{s}".schema_migrations')[0][0] == newest
