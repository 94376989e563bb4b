"""Live indicators into the Feast online store (issue 18): a live session's feature updates written into the
feature repo's online store, read back with Feast's ``get_online_features`` while the session runs; the real
``databento.Live`` client against the local fake gateway, a real PostgreSQL, real Feast (sqlite online store
under a temporary data home)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_databento_live import FakeLiveGateway, live_session
from helpers import make_session

import hdi_lab
from hdi_lab import features
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.featurestore import repo as feast_repo
from hdi_lab.featurestore.publish import online_features
from hdi_lab.schemas import Schema, SType

pytestmark = pytest.mark.integration

DAY = ("2024-03-01", "2024-03-02")
WINDOW = ("2024-03-01 14:30", "2024-03-01 14:40")  # 600 bars of ES.c.0
ES = dict(dataset="GLBX.MDP3", symbols="ES.c.0", stype_in="continuous")
COLUMNS = list(features.FEATURE_SETS["momentum_v1"].columns)


@pytest.fixture
def fsession(pg_url: str, db_schema: str, tmp_path: Path) -> Iterator[HdiSession]:
    s = make_session(pg_url, db_schema, home=tmp_path / "home")  # Feast's registry and online store in there
    yield s
    s.close()


def stored_at(session: HdiSession, ts: pd.Timestamp) -> pd.Series:
    """The stored momentum_v1 1s row of ES.c.0 stamped ``ts``."""
    rows = features.read("momentum_v1", "ES.c.0", DAY[0], "2024-03-02 00:00:01", interval="1s", session=session)
    return rows.set_index("event_timestamp").loc[ts, COLUMNS]


def wait_until(check: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def test_the_online_store_serves_the_live_values_within_the_session(fsession: HdiSession) -> None:
    with FakeLiveGateway(window=WINDOW, rate=300, block=8) as gw:  # paced: the session runs for seconds
        bars = gw.records(Schema.OHLCV_1S, SType.CONTINUOUS, ["ES.c.0"])
        iid = int(bars["instrument_id"][0])
        last = pd.Timestamp(int(bars["ts_event"].max()) + 1_000_000_000, tz="UTC")  # the last bar's close
        with live_session(fsession, gw) as s:
            handle = hdi_lab.live("databento", schema="ohlcv-1s", features="momentum_v1", online=True, session=s, **ES)
            # while it streams: Feast's online read answers with a value the session computed, as stored
            wait_until(lambda: any(w.rows for w in handle.online.writes) or not handle.running)
            mid = online_features([iid], "momentum_v1", "1s", session=s)
            at = mid.loc[0, "event_timestamp"]
            assert pd.Timestamp(WINDOW[0], tz="UTC") < at <= last, mid
            np.testing.assert_array_equal(mid.loc[0, COLUMNS].to_numpy(float), stored_at(s, at).to_numpy(float))
            # every bar received and its indicators written: the online store holds the last bar's values
            wait_until(lambda: handle.status().records >= len(bars) or not handle.running)
            assert handle.features.flush(60) and handle.online.flush(60)
            now = online_features([iid], "momentum_v1", "1s", session=s)
            assert handle.running and now.loc[0, "event_timestamp"] == last, now
            np.testing.assert_array_equal(now.loc[0, COLUMNS].to_numpy(float), stored_at(s, last).to_numpy(float))
            final = handle.stop()
    assert final.state == "stopped" and final.inserted == len(bars), final
    online = handle.online
    assert online.errors == [] and handle.features.errors == []
    first = next(w for w in online.writes if w.rows)
    assert first.applied and first.view == "momentum_v1_1s" and first.instruments == (iid,)
    assert sum(w.applied for w in online.writes) == 1  # the view was registered once, by the first write
    assert sum(w.rows for w in online.writes) < len(bars)  # writes merged while one ran: the latest row counts
    # the plain Feast SDK reads the same from the repo's store
    store = feast_repo.open_store(fsession)
    got = store.get_online_features(
        features=store.get_feature_service("momentum_v1_1s"), entity_rows=[{"instrument_id": iid}]
    ).to_dict()
    assert got["sma_20"] == [now.loc[0, "sma_20"]]


def test_a_failing_online_store_is_reported_and_the_session_carries_on(fsession: HdiSession, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(feast_repo.default_repo(), repo)
    (tmp_path / "not-a-folder").write_text("")
    yaml = repo / "feature_store.yaml"
    yaml.write_text(yaml.read_text().replace("${HDI_FEAST_HOME}/online.db", str(tmp_path / "not-a-folder" / "db")))
    broken = HdiSession(fsession.settings.replace(feast_repo=repo))
    with FakeLiveGateway(window=WINDOW, rate=2_000) as gw:
        bars = gw.records(Schema.OHLCV_1S, SType.CONTINUOUS, ["ES.c.0"])
        with live_session(broken, gw) as s:
            handle = hdi_lab.live("databento", schema="ohlcv-1s", features="momentum_v1", session=s, **ES)
            assert handle.online is not None  # on by default: the feast_repo setting names a repo
            wait_until(lambda: handle.status().records >= len(bars) or not handle.running)
            st = handle.stop()
    broken.close()
    assert st.state == "stopped" and st.inserted == len(bars) and st.error is None, st
    assert handle.features.errors == [] and sum(u.rows for u in handle.features.updates) == len(bars)
    errors = handle.online.errors
    assert errors and all(w.rows == 0 for w in handle.online.writes)
    assert "not-a-folder" in (errors[0].error or ""), errors[0]  # Feast cannot create the store there
    # reported once in the session's notes (a lasting failure is not repeated), with the view it concerns
    notes = [n for n in st.notes if n.startswith("online store: writing momentum_v1_1s failed")]
    assert len(notes) == 1, st.notes


def test_online_is_on_by_default_only_when_feast_is_set_up(fsession: HdiSession, tmp_path: Path) -> None:
    assert not feast_repo.in_use(fsession)  # a fresh data home: nothing published
    home = Path(feast_repo.feast_env(fsession)["HDI_FEAST_HOME"])
    home.mkdir(parents=True)
    (home / "registry.db").write_bytes(b"")  # what a publish (feast apply) leaves
    assert feast_repo.in_use(fsession)
    with make_session("postgresql://u@h/d", "other", home=tmp_path / "home") as other:  # another schema: not set up
        assert not feast_repo.in_use(other)
    with make_session("postgresql://u@h/d", "other", feast_repo=feast_repo.default_repo()) as configured:
        assert feast_repo.in_use(configured)


def test_online_without_features_is_a_clear_error(fsession: HdiSession) -> None:
    with pytest.raises(ValidationError, match=r"online=True writes live indicators.*give features="):
        hdi_lab.live("databento", schema="ohlcv-1s", online=True, session=fsession, **ES)


@pytest.mark.unit
def test_hdi_live_start_takes_online_and_no_online() -> None:
    from hdi_lab.frontend.cli import build_parser

    base = ["live", "start", "--dataset", "GLBX.MDP3", "--schema", "ohlcv-1s", "--symbols", "ES.c.0"]
    parser = build_parser()
    assert parser.parse_args(base).online is None
    assert parser.parse_args([*base, "--online"]).online is True
    assert parser.parse_args([*base, "--no-online"]).online is False
