"""The Feast feature repo end to end: publish (compute, apply, materialize), training frames, online
reads with staleness, the environment-variable checks, and the PostgreSQL online store by config.

Every test gives its session a temporary data home, so Feast's registry and sqlite online store
are written there (never into the repo or the user's home).
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import hdi_shell, make_session

import hdi_lab
from hdi_lab import features
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ConfigError, ValidationError
from hdi_lab.featurestore import repo as feast_repo
from hdi_lab.featurestore.publish import online_features, publish, training_frame

pytestmark = pytest.mark.integration

SYMBOLS = ["AAPL", "MSFT", "NVDA"]
REPO = feast_repo.default_repo()


@pytest.fixture
def fsession(pg_url: str, db_schema: str, tmp_path: Path) -> HdiSession:
    s = make_session(pg_url, db_schema, home=tmp_path / "home")
    hdi_lab.ingest(
        provider="sample", schema="ohlcv-1d", symbols=SYMBOLS, start="2023-03-01", end="2024-02-01", session=s
    )
    yield s
    s.close()


def latest_offline(session: HdiSession, ids: list[int]) -> pd.DataFrame:
    stored = features.read("momentum_v1", SYMBOLS, "2000-01-01", "2100-01-01", session=session)
    last = stored.sort_values("event_timestamp").groupby("instrument_id").tail(1)
    return last.set_index("instrument_id").loc[ids]


def repo_with_online_store(tmp_path: Path, kind: str) -> Path:
    """A copy of the feature repo whose online store is the commented-out ``# <kind> instead`` block."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    text = (repo / "feature_store.yaml").read_text()
    head, _, tail = text.partition("online_store:")
    lines = tail.split(f"# {kind} instead")[1].splitlines()[1:]
    block = [line.replace("#   ", "", 1) for line in itertools.takewhile(lambda ln: ln.startswith("  #   "), lines)]
    store = "\n".join(block)
    (repo / "feature_store.yaml").write_text(f"{head}online_store:\n{store}\nentity_key_serialization_version: 3\n")
    return repo


def assert_online_equals_latest_offline(session: HdiSession, ids: list[int], repo: Path) -> None:
    online = online_features(ids, "momentum_v1", repo=repo, session=session)
    offline = latest_offline(session, ids)
    cols = list(features.FEATURE_SETS["momentum_v1"].columns)
    np.testing.assert_array_equal(online[cols].to_numpy(), offline[cols].to_numpy())


def test_publish_is_idempotent_and_online_equals_latest_offline(fsession: HdiSession) -> None:
    first = publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2024-02-01", session=fsession)
    assert first.service == "momentum_v1" and first.view == "momentum_v1_1d"
    assert first.computed is not None and first.computed.inserted == first.computed.rows > 600
    assert {"hdi_lab", "instrument", "momentum_v1", "momentum_v1_1d"} <= set(first.applied)
    assert not any(n.startswith("trend_v1") for n in first.applied)  # its tables are not computed
    assert first.materialize == "window" and len(first.instrument_ids) == 3 and first.online_rows == 3
    assert "momentum_v1" in str(first) and "<table>" in first._repr_html_()

    again = publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2024-02-01", session=fsession)
    assert again.computed is not None and (again.computed.inserted, again.computed.updated) == (0, 0)
    store = feast_repo.open_store(fsession)
    assert [v.name for v in store.list_feature_views()] == ["momentum_v1_1d"]
    assert [s.name for s in store.list_feature_services()] == ["momentum_v1"]
    trend = publish("trend_v1", SYMBOLS, "1d", "2023-03-01", "2024-02-01", session=fsession)  # same process
    assert "trend_v1_1d" in trend.applied
    assert sorted(v.name for v in feast_repo.open_store(fsession).list_feature_views()) == [
        "momentum_v1_1d",
        "trend_v1_1d",
    ]

    online = online_features(first.instrument_ids, "momentum_v1", session=fsession)
    offline = latest_offline(fsession, first.instrument_ids)
    cols = list(features.FEATURE_SETS["momentum_v1"].columns)
    assert list(online.columns) == ["instrument_id", *cols, "event_timestamp", "age", "status"]
    np.testing.assert_array_equal(online[cols].to_numpy(), offline[cols].to_numpy())
    assert list(online["event_timestamp"]) == list(offline["event_timestamp"])


def test_training_frame_is_point_in_time(fsession: HdiSession) -> None:
    publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2024-02-01", session=fsession)
    stored = features.read("momentum_v1", SYMBOLS, "2000-01-01", "2100-01-01", session=fsession)
    rng = np.random.default_rng(4)
    pick = stored.sample(300, random_state=4)
    # on a feature's own timestamp (ties), just before it, and a random time later
    at = np.concatenate(
        [
            pick["event_timestamp"],
            pick["event_timestamp"] - pd.Timedelta(microseconds=1),
            pick["event_timestamp"] + pd.to_timedelta(rng.integers(0, 86_400 * 8, 300), unit="s"),
        ]
    )
    entities = pd.DataFrame(
        {
            "instrument_id": np.tile(pick["instrument_id"].to_numpy(), 3),
            "event_timestamp": at,
            "label": rng.normal(size=900),
        },
        index=pd.RangeIndex(100, 1000),
    )
    frame = training_frame(entities, "momentum_v1", session=fsession)
    assert frame.index.equals(entities.index) and frame["label"].equals(entities["label"])
    ttl = pd.Timedelta(feast_repo.TTL["1d"])
    for i, row in frame.iterrows():  # brute force: latest stored row at or before t, within the TTL
        hist = stored[
            (stored["instrument_id"] == row["instrument_id"])
            & (stored["event_timestamp"] <= row["event_timestamp"])
            & (stored["event_timestamp"] >= row["event_timestamp"] - ttl)
        ]
        want = hist["rsi_14"].iloc[-1] if len(hist) else np.nan
        assert (np.isnan(want) and np.isnan(row["rsi_14"])) or want == row["rsi_14"], i
    assert frame["sma_20"].notna().sum() > 600


def test_incremental_publish_and_stale_online_values(fsession: HdiSession) -> None:
    first = publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2023-12-01", session=fsession)
    later = publish("momentum_v1", SYMBOLS, "1d", "2023-12-01", "2024-02-01", session=fsession)
    assert (first.materialize, later.materialize) == ("window", "incremental")
    ids = later.instrument_ids
    offline = latest_offline(fsession, ids)
    last = offline["event_timestamp"].max()
    ttl = pd.Timedelta(feast_repo.TTL["1d"])
    fresh = online_features(ids, "momentum_v1", now=last + pd.Timedelta(hours=1), session=fsession)
    assert list(fresh["status"]) == ["fresh"] * 3
    assert list(fresh["event_timestamp"]) == list(offline["event_timestamp"])
    stale = online_features([*ids, 12345], "momentum_v1", now=last + ttl + pd.Timedelta(seconds=1), session=fsession)
    assert list(stale["status"]) == ["stale"] * 3 + ["missing"]
    assert stale["rsi_14"].iloc[:3].notna().all()  # Feast serves them regardless of the TTL
    blanked = online_features(
        ids, "momentum_v1", now=last + ttl + pd.Timedelta(seconds=1), drop_stale=True, session=fsession
    )
    assert blanked["rsi_14"].isna().all()
    edge = online_features(ids, "momentum_v1", now=last + ttl, session=fsession)  # TTL bound is inclusive
    assert list(edge["status"]) == ["fresh"] * 3


def test_daily_publish_materializes_only_the_new_day(fsession: HdiSession) -> None:
    """A publish of one more day after a first publish reads and writes only that day's rows."""
    import sqlite3

    first = publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2024-01-30", session=fsession)
    assert first.materialize == "window"
    online_db = Path(feast_repo.feast_env(fsession)["HDI_FEAST_HOME"]) / "online.db"
    with contextlib.closing(sqlite3.connect(online_db)) as db, db:  # count every row Feast writes from now on
        db.executescript("""
            CREATE TABLE written (n INTEGER);
            CREATE TRIGGER w_insert AFTER INSERT ON hdi_lab_momentum_v1_1d BEGIN INSERT INTO written VALUES (1); END;
            CREATE TRIGGER w_update AFTER UPDATE ON hdi_lab_momentum_v1_1d BEGIN INSERT INTO written VALUES (1); END;
        """)
    day = publish("momentum_v1", ["AAPL"], "1d", "2024-01-30", "2024-01-31", session=fsession)
    assert day.computed is not None and day.computed.rows == 1
    assert day.materialize == "incremental" and day.window_start == first.window_end
    view = feast_repo.open_store(fsession).get_feature_view("momentum_v1_1d")
    intervals = [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in view.materialization_intervals]
    assert intervals[-1] == (first.window_end, day.window_end) and len(intervals) == 2
    with contextlib.closing(sqlite3.connect(online_db)) as db:
        written = db.execute("SELECT count(*) FROM written").fetchone()[0]
    assert written == len(features.FEATURE_SETS["momentum_v1"].columns)  # one instrument's one row
    assert_online_equals_latest_offline(fsession, first.instrument_ids, REPO)


def test_incremental_materialization_after_now(fsession: HdiSession) -> None:
    """Rows newer than the last materialization (a live daily append) take the incremental path."""
    publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2024-02-01", session=fsession)
    store = feast_repo.open_store(fsession)
    view = store.get_feature_view("momentum_v1_1d")
    done = max(iv[1] for iv in view.materialization_intervals)
    future = pd.Timestamp(done) + pd.Timedelta(days=3)
    conn = fsession.connection()
    with conn, conn.cursor() as cur:  # a bar closing after the last materialization, as tomorrow's would
        cur.execute(
            f'INSERT INTO "{fsession.schema}".features_momentum_v1_1d (instrument_id, event_timestamp, '
            "created, symbol, rsi_14) VALUES (500001, %s, now(), 'AAPL', 42.5)",
            (future.to_pydatetime(),),
        )
    report = publish("momentum_v1", None, "1d", future - pd.Timedelta(days=1), future, compute=False, session=fsession)
    assert report.materialize == "incremental"
    online = online_features([500001], "momentum_v1", now=future, session=fsession)
    assert online["rsi_14"].iloc[0] == 42.5 and online["event_timestamp"].iloc[0] == future.floor("s")


def test_missing_environment_variable_is_named(
    fsession: HdiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    yaml = REPO / "feature_store.yaml"
    env = feast_repo.feast_env(fsession)
    feast_repo.check_env(yaml, env)  # complete: passes
    for name in feast_repo.VARIABLES.keys() - {"HDI_FEAST_REDIS"}:  # Redis: only in the Redis block (its own test)
        partial = {k: v for k, v in env.items() if k != name}
        with pytest.raises(ConfigError, match=name):
            feast_repo.check_env(yaml, partial)
    # a user running Feast (the `feast` CLI) without HDI_FEAST_PG_HOST: the offline store names it
    from feast import FeatureStore

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HDI_FEAST_PG_PASSWORD", "s3cret-Pw")
    monkeypatch.delenv("HDI_FEAST_PG_HOST")
    with pytest.raises(ConfigError, match="HDI_FEAST_PG_HOST is not set") as caught:
        FeatureStore(repo_path=str(REPO)).config.offline_store  # noqa: B018 - reading the property is what raises
    assert "s3cret" not in str(caught.value)  # the error never carries the other values


def test_declarations_match_feature_sets() -> None:
    decl = feast_repo.declarations()
    assert decl["instrument"].join_key == "instrument_id"
    for fs in features.FEATURE_SETS.values():
        for interval in features.INTERVALS:
            view = decl[f"{fs.name}_{interval}"]
            assert [f.name for f in view.features] == list(fs.columns)
            assert all(str(f.dtype) == "Float64" for f in view.features)
            assert view.batch_source.get_table_query_string() == features.table_name(fs.name, interval)
            assert view.ttl == feast_repo.TTL[interval]
            assert view.tags["version"] == str(fs.version)
    assert decl["momentum_v1_1d_service"].name == "momentum_v1"


# Feast's PostgreSQL online store keeps its psycopg connection open until garbage collection
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function BaseConnection.__del__:pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.filterwarnings("ignore:<psycopg.Connection object at .* was deleted while still open:ResourceWarning")
def test_postgres_online_store_by_config(fsession: HdiSession, tmp_path: Path) -> None:
    repo = repo_with_online_store(tmp_path, "PostgreSQL")
    report = publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2024-02-01", repo=repo, session=fsession)
    assert report.online_store == "postgres" and report.online_rows == 3
    assert_online_equals_latest_offline(fsession, report.instrument_ids, repo)
    gc.collect()  # Feast's leftover connections go now, under this test's warning filters


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server (Debian's package) on a free port: ``host:port``."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required in CI (apt-get install redis-server)")
        pytest.skip("no redis-server: apt-get install redis-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_online_store_by_config(fsession: HdiSession, tmp_path: Path, redis_server: str) -> None:
    repo = repo_with_online_store(tmp_path, "Redis")
    with pytest.raises(ConfigError, match="HDI_FEAST_REDIS is not set"):  # feast_redis unset
        publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2024-02-01", repo=repo, session=fsession)
    with HdiSession(fsession.settings.replace(feast_redis=redis_server)) as s:
        report = publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2024-02-01", repo=repo, session=s)
        assert report.online_store == "redis" and report.online_rows == 3
        assert_online_equals_latest_offline(s, report.instrument_ids, repo)
        again = publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2024-02-01", repo=repo, session=s)
        assert again.online_rows == 3 and again.computed is not None and again.computed.inserted == 0


def test_cli_publish_and_env(
    fsession: HdiSession, hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hdi_lab.frontend.cli import main

    monkeypatch.setenv("HDI_HOME", str(tmp_path / "home"))
    out, err = io.StringIO(), io.StringIO()
    rc = main(
        [
            "features",
            "publish",
            "--set",
            "momentum_v1",
            "--symbols",
            "AAPL,MSFT",
            "--interval",
            "1d",
            "--start",
            "2023-06-01",
            "--end",
            "2024-02-01",
        ],
        out=out,
        err=err,
    )
    assert rc == 0, err.getvalue()
    assert "published momentum_v1 1d" in out.getvalue() and "2 of 2 instrument(s) online" in out.getvalue()
    out = io.StringIO()
    assert main(["features", "env"], out=out, err=err) == 0
    assert "export HDI_FEAST_PG_SCHEMA=" in out.getvalue() and "export HDI_FEAST_PG_PASSWORD=''" in out.getvalue()
    rc = main(["features", "publish", "--set", "nope_v9", "--symbols", "AAPL"], out=out, err=err)
    assert rc == 1 and "nope_v9" in err.getvalue()


def test_publish_validates_arguments(fsession: HdiSession) -> None:
    with pytest.raises(ValidationError, match="symbols is required"):
        publish("momentum_v1", None, "1d", session=fsession)
    with pytest.raises(ValidationError, match="interval"):
        publish("momentum_v1", ["AAPL"], "2d", session=fsession)
    with pytest.raises(ValidationError, match="does not exist yet"):
        publish("trend_v1", None, "1h", compute=False, session=fsession)


def test_magic_publishes_and_reports_errors(
    fsession: HdiSession, hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.core.error import UsageError

    from hdi_lab.featurestore.publish import PublishReport

    monkeypatch.setenv("HDI_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    with hdi_shell() as shell:
        result = shell.run_line_magic(
            "hdi_publish", "momentum_v1 --symbols AAPL --start 2023-06-01 --end 2024-02-01 -o rep"
        )
        assert isinstance(result, PublishReport) and shell.user_ns["rep"] is result
        assert result.online_rows == 1 and result.computed is not None and result.computed.rows > 100
        with pytest.raises(UsageError, match="ValidationError: feature set 'nope_v1' is not known"):
            shell.run_line_magic("hdi_publish", "nope_v1 --symbols AAPL")


def test_loading_hdi_lab_does_not_import_feast() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hdi_lab, hdi_lab.frontend.magics, hdi_lab.frontend.cli, hdi_lab.featurestore.publish, "
        "hdi_lab.featurestore.repo; "
        "assert 'feast' not in sys.modules, 'feast imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_feast_errors_become_hdi_errors(fsession: HdiSession, tmp_path: Path) -> None:
    from hdi_lab.errors import StorageError

    publish("momentum_v1", ["AAPL"], "1d", "2023-06-01", "2024-01-01", session=fsession)
    entities = pd.DataFrame({"instrument_id": [500001], "event_timestamp": [pd.Timestamp("2023-12-01", tz="UTC")]})
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    yaml = repo / "feature_store.yaml"
    original = yaml.read_text()
    yaml.write_text(original.replace("sslmode: ${HDI_FEAST_PG_SSLMODE}", "sslmode: require"))  # no TLS here
    with pytest.raises(StorageError, match="Feast's database call failed"):
        training_frame(entities, "momentum_v1", repo=repo, session=fsession)
    yaml.write_text(
        original.replace(
            "  path: ${HDI_FEAST_HOME}/online.db", "  path: ${HDI_FEAST_HOME}/online.db\n  no_such_option: 1"
        )
    )
    with pytest.raises(ConfigError, match=re.escape("feature_store.yaml is not valid for Feast")):
        online_features([500001], "momentum_v1", repo=repo, session=fsession)


# -- process-wide state: a Jupyter kernel runs other threads (prefetch, widget callbacks) ------------------------

PROBE = '''"""Records, while `feast apply` runs this repo's files, what the process looks like."""
import json
import os
import sys
from pathlib import Path

Path(__file__).with_name("probe.json").write_text(json.dumps({
    "cwd": os.getcwd(), "path": list(sys.path), "registered": __name__ in sys.modules,
    "bytecode": sys.dont_write_bytecode, "stdout": id(sys.stdout), "stderr": id(sys.stderr)}))
'''


class WatchedEnviron(type(os.environ)):  # type: ignore[misc]
    """os.environ itself (same data), remembering every write."""

    writes: list[str]

    def __setitem__(self, key: str, value: str) -> None:
        self.writes.append(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.writes.append(key)
        super().__delitem__(key)


def test_publish_changes_no_process_wide_state(
    fsession: HdiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Publishing leaves the environment, the working directory, sys.path, sys.modules, the bytecode
    switch and sys.stdout/stderr alone, while the repo's files run as well as afterwards."""
    import sys

    import feast.metrics  # noqa: F401  (Feast's own import-time os.environ write, once per process: see load_config)

    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    (repo / "probe.py").write_text(PROBE)
    watched = object.__new__(WatchedEnviron)
    watched.__dict__.update(os.environ.__dict__)
    watched.writes = []
    monkeypatch.setattr(os, "environ", watched)
    before = {
        "cwd": os.getcwd(),
        "path": list(sys.path),
        "bytecode": sys.dont_write_bytecode,
        "stdout": id(sys.stdout),
        "stderr": id(sys.stderr),
    }
    environ = dict(os.environ)

    report = publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2024-02-01", repo=repo, session=fsession)
    assert report.online_rows == 3

    during = json.loads((repo / "probe.json").read_text())
    assert during.pop("registered") is False  # the repo's files are run, not imported into sys.modules
    assert during == before
    assert watched.writes == [] and dict(os.environ) == environ
    assert {
        "cwd": os.getcwd(),
        "path": list(sys.path),
        "bytecode": sys.dont_write_bytecode,
        "stdout": id(sys.stdout),
        "stderr": id(sys.stderr),
    } == before
    assert not [m for m in list(sys.modules.values()) if str(getattr(m, "__file__", None) or "").startswith(str(repo))]
    assert not list(repo.glob("**/__pycache__"))  # no bytecode written into the repo
    out, err = capsys.readouterr()
    assert out == "" and err == ""  # Feast's materialize banner and progress bars are not printed


def test_other_threads_output_is_not_swallowed_by_publish(
    fsession: HdiSession, capsys: pytest.CaptureFixture[str]
) -> None:
    """A thread printing while publish runs (a prefetch, a widget callback) keeps every line."""
    import threading

    stop = threading.Event()
    printed: list[int] = []

    def chatter() -> None:
        while not stop.is_set():
            print(f"tick {len(printed)}")
            printed.append(len(printed))
            time.sleep(0.001)

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        publish("momentum_v1", SYMBOLS, "1d", "2023-03-01", "2024-02-01", session=fsession)
    finally:
        stop.set()
        thread.join()
    out = capsys.readouterr().out.splitlines()
    assert len(printed) > 10 and out == [f"tick {i}" for i in printed]


def test_load_config_builds_the_config_in_memory(tmp_path: Path) -> None:
    """feature_store.yaml's variables come from the mapping given (never os.environ); values need no
    YAML quoting (a password with quotes, colons and hashes is kept as is)."""
    password = 'it\'s: #1 "secret" $x'
    env = {name: "5432" if name.endswith("PORT") else f"v_{name.lower()}" for name in feast_repo.VARIABLES}
    env |= {"HDI_FEAST_PG_PASSWORD": password, "HDI_FEAST_HOME": str(tmp_path)}
    import feast.metrics  # noqa: F401  (Feast's own import-time os.environ write, once per process: see load_config)

    environ = dict(os.environ)
    config = feast_repo.load_config(REPO, env)
    assert dict(os.environ) == environ
    offline = config.offline_store
    assert (offline.password, offline.host, offline.port) == (password, "v_hdi_feast_pg_host", 5432)
    assert config.registry.path == f"{tmp_path}/registry.db" and config.repo_path == REPO
    with pytest.raises(ConfigError, match="HDI_FEAST_PG_USER is not set"):
        feast_repo.load_config(REPO, {k: v for k, v in env.items() if k != "HDI_FEAST_PG_USER"})
    bad = tmp_path / "repo"
    bad.mkdir()
    (bad / "feature_store.yaml").write_text("project: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        feast_repo.load_config(bad, env)
    (bad / "feature_store.yaml").write_text(
        "project: p\nprovider: local\nregistry: r.db\nentity_key_serialization_version: a-secret\n"
    )
    with pytest.raises(ConfigError, match="not valid for Feast") as caught:
        feast_repo.load_config(bad, env)
    assert "secret" not in str(caught.value)
