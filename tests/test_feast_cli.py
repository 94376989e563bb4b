"""The `feast` CLI and the plain Feast SDK on a fresh setup, as the README tells a user to run them:
``eval "$(hdi features env)"; cd feature_repo && feast apply / materialize / serve``, in a real shell
(subprocesses), against the test database (no password) and against the embedded server (a
password, read through the libpq password file ``hdi features env`` writes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hdi_lab.featurestore import repo as feast_repo
from hdi_lab.storage.embedded import EmbeddedServer

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent  # the venv's `hdi` and `feast`
SAMPLE = "hdi ingest --provider sample --schema ohlcv-1d --symbols AAPL,MSFT --start 2023-03-01 --end 2024-02-01"
COMPUTE = "hdi features compute --set momentum_v1 --symbols AAPL,MSFT"


@pytest.fixture
def user(tmp_path: Path) -> dict[str, str]:
    """A user's environment: hdi_lab's home and $HOME in tmp_path (no ~/.pgpass), the venv on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HDI_", "PG"))}
    env.update(HOME=str(tmp_path), HDI_HOME=str(tmp_path / "hdi"), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    shutil.copytree(feast_repo.default_repo(), tmp_path / "feature_repo")
    return env


def sh(script: str, env: dict[str, str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``script`` in bash after ``eval "$(hdi features env)"``, from ``cwd``."""
    proc = subprocess.run(
        ["bash", "-c", f'set -e; eval "$(hdi features env)"; {script}'],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,  # checked below, with the script's output in the message
    )
    if check:
        assert proc.returncode == 0, f"{script}\n{proc.stdout}\n{proc.stderr}"
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def feast_serve(env: dict[str, str], repo: Path) -> Iterator[str]:
    """``feast serve`` on a free port (its own process group, stopped even when the test fails): its URL."""
    port, log = free_port(), repo.parent / "feast-serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", f'eval "$(hdi features env)"; exec feast serve -h 127.0.0.1 -p {port}'],
            env=env,
            cwd=repo,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"feast serve did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def post_json(url: str, body: object) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_feast_cli_apply_materialize_serve_on_a_fresh_setup(
    user: dict[str, str], pg_url: str, db_schema: str, tmp_path: Path
) -> None:
    user.update(HDI_DATABASE_URL=pg_url, HDI_DB_SCHEMA=db_schema)
    repo = tmp_path / "feature_repo"
    sh(f"{SAMPLE} >/dev/null && {COMPUTE} >/dev/null", user, tmp_path)
    env = sh("hdi features env", user, tmp_path).stdout
    assert "export HDI_FEAST_PG_PASSWORD=''" in env and "PGPASSFILE" not in env  # the test server has none

    # the registry folder is created by `hdi features env`; only the computed table gets a view
    first = sh("feast apply", user, repo).stdout
    assert "Created feature view momentum_v1_1d" in first and "Created feature service momentum_v1" in first
    assert "trend_v1" not in first and "momentum_v1_1h" not in first
    assert "No changes to registry" in sh("feast apply", user, repo).stdout

    # every registered view (no -v) materializes; a re-apply afterwards changes nothing
    done = sh("feast materialize 2023-01-01T00:00:00 2024-03-01T00:00:00", user, repo)
    assert "momentum_v1_1d" in done.stdout
    again = sh("feast apply", user, repo).stdout
    assert "No changes to registry" in again and "Updated" not in again
    sh("feast materialize-incremental 2024-03-02T00:00:00", user, repo)

    with feast_serve(user, repo) as url:
        body = post_json(
            f"{url}/get-online-features",
            {"feature_service": "momentum_v1", "entities": {"instrument_id": [500001, 500002, 7]}},
        )
    names = body["metadata"]["feature_names"]  # type: ignore[index]
    results = dict(zip(names, body["results"], strict=True))  # type: ignore[call-overload]
    assert results["instrument_id"]["values"] == [500001, 500002, 7]
    rsi = results["rsi_14"]
    assert rsi["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert all(isinstance(v, float) for v in rsi["values"][:2]) and rsi["values"][2] is None


SDK = """
import pandas as pd
from feast import FeatureStore
store = FeatureStore(repo_path=".")
entities = pd.DataFrame({"instrument_id": [500001, 500002],
                         "event_timestamp": pd.to_datetime(["2024-01-10", "2024-01-20"], utc=True)})
frame = store.get_historical_features(entity_df=entities,
                                      features=store.get_feature_service("momentum_v1")).to_df()
online = store.get_online_features(features=store.get_feature_service("momentum_v1"),
                                   entity_rows=[{"instrument_id": 500001}]).to_dict()
print(int(frame["rsi_14"].notna().sum()), online["rsi_14"][0] is not None)
"""


def test_feast_cli_and_sdk_on_the_embedded_server(user: dict[str, str], tmp_path: Path) -> None:
    """The README's default: the embedded server, whose password only hdi_lab knows."""
    repo = tmp_path / "feature_repo"
    try:
        sh(f"{SAMPLE} >/dev/null && {COMPUTE} >/dev/null", user, tmp_path)
        password = (tmp_path / "hdi" / "postgres" / "password").read_text().strip()
        env = sh("hdi features env", user, tmp_path).stdout
        assert password and password not in env  # never printed
        assert "export HDI_FEAST_PG_PASSWORD=''" in env
        pgpass = Path(next(ln for ln in env.splitlines() if ln.startswith("export PGPASSFILE=")).split("=", 1)[1])
        assert pgpass.parent == Path(
            next(ln for ln in env.splitlines() if ln.startswith("export HDI_FEAST_HOME=")).split("=", 1)[1]
        )
        assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600 and password in pgpass.read_text()

        assert "Created feature view momentum_v1_1d" in sh("feast apply", user, repo).stdout
        sh("feast materialize 2023-01-01T00:00:00 2024-03-01T00:00:00", user, repo)  # reads the tables: logs in
        rows, online = sh(f"python -c '{SDK}'", user, repo).stdout.split()
        assert (int(rows), online) == (2, "True")
        # without the password file Feast's psycopg has no password: the file is what makes it work
        failed = sh("unset PGPASSFILE; feast materialize-incremental 2024-03-03T00:00:00", user, repo, check=False)
        assert failed.returncode != 0 and "no password supplied" in failed.stderr
        assert password not in failed.stdout + failed.stderr
    finally:
        EmbeddedServer(tmp_path / "hdi").stop()


@pytest.mark.unit
def test_the_wheel_ships_the_feature_repo(tmp_path: Path) -> None:
    """A wheel (not an editable install) holds every module and the feature repo, which is then the
    default repo and a valid Feast repo (feature_store.yaml, the offline store class importable)."""
    import importlib.util
    import zipfile

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (root / name).exists():
            shutil.copy(root / name, src / name)
    for folder in ("hdi_lab", "feature_repo"):
        shutil.copytree(root / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("hdi_lab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(root).as_posix() for p in (root / "hdi_lab").rglob("*.py")}
    assert modules <= names, modules - names
    repo_files = {"feature_store.yaml", ".feastignore", "definitions.py", "workflow.py", "README.md"}
    assert {f"hdi_lab/feature_repo/{f}" for f in repo_files} <= names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what `pip install --target` lays out for a pure wheel
    code = (
        "import hdi_lab.featurestore.repo as r, hdi_lab.featurestore.offline_store as s; "
        "p = r.default_repo(); print(p); y = (p / 'feature_store.yaml').read_text(); "
        "print(s.STORE_TYPE in y)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDI_")}
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert out == [str(site / "hdi_lab" / "feature_repo"), "True"]
