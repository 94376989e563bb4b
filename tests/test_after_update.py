"""What runs after an update, for real: a subscription's feature sets recomputed from the first changed bar
(new bars, a revised bar), the Feast online store (sqlite) loaded when it says publish, and nothing without
options. The sample provider and the test PostgreSQL; the repo's feature repo with a temporary data home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import TestingShell, make_session, run_cli

import hdi_lab
from hdi_lab import after_update, features
from hdi_lab.core import subscriptions
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.featurestore.publish import PublishReport, online_features

pytestmark = pytest.mark.integration

SYMBOLS = ["AAPL", "MSFT"]


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hdi_lab.toml or pyproject table from the working directory."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def hsession(pg_url: str, db_schema: str, tmp_path: Path) -> Iterator[HdiSession]:
    s = make_session(pg_url, db_schema, home=tmp_path / "home")
    yield s
    s.close()


def _stored(s: HdiSession) -> pd.DataFrame:
    frame = features.read("momentum_v1", SYMBOLS, "2000-01-01", "2100-01-01", session=s)
    cols = [c for c in frame.columns if c not in ("symbol", "created_timestamp")]
    return frame[cols].sort_values(["instrument_id", "event_timestamp"]).reset_index(drop=True)


def _from_scratch(s: HdiSession) -> pd.DataFrame:
    """The feature rows of a computation from every instrument's first bar (what the stored rows must equal)."""
    features.compute("momentum_v1", SYMBOLS, "1d", session=s)
    return _stored(s)


def test_features_follow_new_and_revised_bars(hsession: HdiSession) -> None:
    s = hsession
    hdi_lab.watch(
        "sample",
        schema="ohlcv-1d",
        symbols=SYMBOLS,
        since="2023-06-01",
        name="eq",
        options={"features": "momentum_v1"},
        session=s,
    )
    first = hdi_lab.update(until="2023-12-01", session=s)
    [p] = first.plans
    assert set(p.changed) and min(p.changed.values()) == pd.Timestamp("2023-06-01", tz="UTC")
    [computed] = p.after
    assert isinstance(computed, features.FeatureReport) and computed.inserted > 0 and computed.instruments == 2
    assert "then momentum_v1 1d" in str(first)
    stored = _stored(s)
    assert stored["event_timestamp"].max() == pd.Timestamp("2023-12-01", tz="UTC")  # the last bar's close

    # new bars: features from the first new bar on, resumed from the saved states
    later = hdi_lab.update(until="2023-12-15", session=s)
    [computed] = later.plans[0].after
    assert isinstance(computed, features.FeatureReport)
    assert computed.start == pd.Timestamp("2023-12-01", tz="UTC") and computed.resumed == 2
    assert computed.inserted == computed.rows > 0 and computed.updated == 0
    after_new = _stored(s)
    assert after_new["event_timestamp"].max() == pd.Timestamp("2023-12-15", tz="UTC")
    old = after_new[after_new["event_timestamp"] <= stored["event_timestamp"].max()].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, stored)

    # a revised bar before the saved states: the stored bar is wrong, its features were computed from it; a
    # re-ingest of its day (its ingest-log row gone) brings the vendor's bar back and recomputes from it
    day = pd.Timestamp("2023-11-01", tz="UTC")
    hdi_lab.sql(
        "UPDATE ohlcv_1d SET close = close * 2 WHERE ts_event >= %(lo)s AND ts_event < %(hi)s "
        "AND instrument_id = (SELECT min(instrument_id) FROM ohlcv_1d)",  # one instrument only
        {"lo": day, "hi": day + pd.Timedelta(days=1)},
        session=s,
    )
    wrong = _from_scratch(s)
    assert not wrong.equals(after_new)
    hdi_lab.sql(
        "DELETE FROM ingest_log WHERE start_ts <= %(day)s AND end_ts > %(day)s",  # the chunk holding the day
        {"day": day},
        session=s,
    )
    revised = hdi_lab.update(until="2023-12-15", session=s)
    [p] = revised.plans
    assert p.report is not None and p.report.updated == 1 and p.report.inserted == 0
    assert list(p.changed.values()) == [day]
    [computed] = p.after
    assert isinstance(computed, features.FeatureReport)
    assert computed.start == day and computed.resumed == 0 and computed.updated > 0
    assert computed.instruments == 1  # the changed one only
    pd.testing.assert_frame_equal(_stored(s), after_new)  # equal to the features of the right bars again

    # nothing changed: nothing runs after
    again = hdi_lab.update(until="2023-12-15", session=s)
    assert again.up_to_date and again.plans[0].after == []


def test_publish_loads_the_online_store_with_the_latest_values(hsession: HdiSession) -> None:
    s = hsession
    hdi_lab.watch(
        "sample",
        schema="ohlcv-1d",
        symbols=SYMBOLS,
        since="2023-06-01",
        options={"features": ["momentum_v1"], "interval": "1d", "publish": True},
        session=s,
    )
    for until in ("2023-12-01", "2023-12-15"):
        report = hdi_lab.update(until=until, session=s)
        computed, published = report.plans[0].after
        assert isinstance(computed, features.FeatureReport) and isinstance(published, PublishReport)
        assert published.online_rows == 2 and published.computed is None
        ids = sorted(published.instrument_ids)
        online = online_features(ids, "momentum_v1", session=s)
        latest = _stored(s).groupby("instrument_id").tail(1).set_index("instrument_id").loc[ids]
        cols = [c for c in latest.columns if c != "event_timestamp"]
        np.testing.assert_array_equal(online[cols].to_numpy(), latest[cols].to_numpy())
        assert list(online["event_timestamp"]) == list(latest["event_timestamp"])
        assert latest["event_timestamp"].max() == pd.Timestamp(until, tz="UTC")


def test_without_options_nothing_runs_after(hsession: HdiSession) -> None:
    s = hsession
    hdi_lab.watch("sample", schema="ohlcv-1d", symbols=SYMBOLS, since="2023-06-01", session=s)
    report = hdi_lab.update(until="2023-07-01", session=s)
    [p] = report.plans
    assert p.changed and p.after == [] and "then" not in str(report)
    assert hdi_lab.sql("SELECT to_regclass('features_momentum_v1_1d') AS t", session=s)["t"].iloc[0] is None
    dry = hdi_lab.update(until="2023-08-01", dry_run=True, session=s)
    assert dry.plans[0].changed == {} and dry.plans[0].after == []


def test_options_are_checked(hsession: HdiSession) -> None:
    for bad, message in [
        ({"features": ["no_such_set"]}, "no_such_set"),
        ({"features": [1]}, "list of feature-set names"),
        ({"features": ["momentum_v1"], "interval": "7m"}, "interval='7m' is not valid"),
        ({"publish": True}, "publish=true needs features"),
        ({"features": ["momentum_v1"], "publish": "yes"}, "give true or false"),
    ]:
        with pytest.raises(ValidationError, match=message):
            hdi_lab.watch(
                "sample", schema="ohlcv-1d", symbols="AAPL", since="2024-01-02", options=bad, session=hsession
            )
    assert subscriptions.check_options({"features": "momentum_v1, trend_v1", "publish": False, "x": 1}) == {
        "features": ["momentum_v1", "trend_v1"],
        "x": 1,
    }
    assert after_update.start_of(pd.Timestamp("2024-01-02 14:31", tz="UTC"), "1h") == pd.Timestamp(
        "2024-01-02 14:00", tz="UTC"
    )


def test_cli_watch_add_with_features_and_publish(hdi_env: dict[str, str], session: HdiSession) -> None:
    add = ["watch", "add", "--provider", "sample", "--schema", "ohlcv-1d", "--since", "2023-06-01"]
    code, _, err = run_cli([*add, "--symbols", "AAPL", "--features", "momentum_v1", "--interval", "1d", "--publish"])
    assert code == 0, err
    [sub] = subscriptions.list_all(session)
    assert sub.options == {"features": ["momentum_v1"], "interval": "1d", "publish": True}
    assert (sub.feature_sets, sub.feature_interval, sub.publishes) == (("momentum_v1",), "1d", True)
    code, _, err = run_cli([*add, "--symbols", "MSFT", "--features", "nope"])
    assert code != 0 and "nope" in err


def test_a_chunk_reports_the_first_row_it_changed_per_instrument(session: HdiSession) -> None:
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols=SYMBOLS, since="2024-01-03", session=session)
    [p] = hdi_lab.update(until="2024-01-04", session=session).plans
    first = hdi_lab.sql("SELECT instrument_id, min(ts_event) AS ts FROM ohlcv_1m GROUP BY 1", session=session)
    assert p.changed == {int(i): pd.Timestamp(t) for i, t in zip(first["instrument_id"], first["ts"], strict=True)}
    # one minute of one instrument wrong, another minute of it gone: the re-ingest restores both
    [iid, other] = sorted(p.changed)
    bar, gone = pd.Timestamp("2024-01-03 16:00", tz="UTC"), pd.Timestamp("2024-01-03 18:30", tz="UTC")
    hdi_lab.sql("UPDATE ohlcv_1m SET close = close + 1 WHERE instrument_id = %s AND ts_event = %s", [iid, bar],
                session=session)  # fmt: skip
    hdi_lab.sql("DELETE FROM ohlcv_1m WHERE instrument_id = %s AND ts_event = %s", [iid, gone], session=session)
    hdi_lab.sql("DELETE FROM ingest_log", session=session)
    [p] = hdi_lab.update(until="2024-01-04", session=session).plans
    assert p.report is not None and (p.report.inserted, p.report.updated, p.report.deleted) == (1, 1, 0)
    assert p.changed == {iid: bar} and other not in p.changed
    # a stored row the vendor does not send is deleted by the re-ingest: a change from that row on
    extra = pd.Timestamp("2024-01-03 03:00", tz="UTC")
    names = (
        "SELECT string_agg(quote_ident(column_name), ', ') AS c FROM information_schema.columns WHERE "
        "table_schema = current_schema() AND table_name = 'ohlcv_1m' AND column_name <> 'ts_event'"
    )
    cols = hdi_lab.sql(names, session=session)["c"].iloc[0]
    hdi_lab.sql(f"INSERT INTO ohlcv_1m (ts_event, {cols}) SELECT %s, {cols} FROM ohlcv_1m "
                "WHERE instrument_id = %s AND ts_event = %s", [extra, other, bar], session=session)  # fmt: skip
    hdi_lab.sql("DELETE FROM ingest_log", session=session)
    [p] = hdi_lab.update(until="2024-01-04", session=session).plans
    assert p.report is not None and (p.report.inserted, p.report.updated, p.report.deleted) == (0, 0, 1)
    assert p.changed == {other: extra}


def test_magic_watch_with_features_then_update(ip: TestingShell, session: HdiSession) -> None:
    ip.run_cell(
        "%hdi_watch add --provider sample --schema ohlcv-1d --symbols AAPL --since 2023-06-01 --features momentum_v1"
    )
    [sub] = subscriptions.list_all(session)
    assert sub.options == {"features": ["momentum_v1"]}
    done = ip.run_cell("%hdi_update --until 2023-08-01").result
    [computed] = done.plans[0].after
    assert isinstance(computed, features.FeatureReport) and computed.inserted > 0
    assert "then momentum_v1 1d" in str(done)


def _es_features(s: HdiSession) -> pd.DataFrame:
    frame = features.read("momentum_v1", ["ES.c.0"], "2000-01-01", "2100-01-01", session=s)
    cols = [c for c in frame.columns if c not in ("symbol", "created_timestamp")]
    return frame[cols].sort_values(["instrument_id", "event_timestamp"]).reset_index(drop=True)


def test_a_continuous_subscription_recomputes_the_contracts_that_changed(hsession: HdiSession) -> None:
    """ES.c.0 (stype_in continuous) maps to the front contract: ESH4, then ESM4 from 2024-03-14 on (the sample
    provider rolls the day before expiration). Each update recomputes, from its first changed bar, the feature
    sets of the contracts whose bars it changed, and the result equals a computation from scratch."""
    s = hsession
    esh4, esm4 = 400001, 400002
    hdi_lab.watch(
        "sample", schema="ohlcv-1d", symbols="ES.c.0", stype_in="continuous", since="2023-06-01", name="es_c",
        options={"features": ["momentum_v1"]}, session=s,
    )  # fmt: skip
    [p] = hdi_lab.update(until="2024-03-01", session=s).plans
    assert p.changed == {esh4: pd.Timestamp("2023-06-01", tz="UTC")}
    [computed] = p.after
    assert isinstance(computed, features.FeatureReport) and computed.instruments == 1 and computed.inserted > 0
    before_roll = _es_features(s)
    assert set(before_roll["instrument_id"]) == {esh4}

    # the roll: ESH4's last days and ESM4's first ones; each contract from its own first changed bar
    [p] = hdi_lab.update(until="2024-03-21", session=s).plans
    assert p.changed == {esh4: pd.Timestamp("2024-03-01", tz="UTC"), esm4: pd.Timestamp("2024-03-14", tz="UTC")}
    [computed] = p.after
    assert isinstance(computed, features.FeatureReport)
    assert computed.start == pd.Timestamp("2024-03-01", tz="UTC") and computed.instruments == 2
    assert computed.resumed == 1  # ESH4 resumed from its saved state; ESM4 has none: from its first bar
    assert computed.updated == 0 and computed.inserted == computed.rows > 0
    after_roll = _es_features(s)
    first = after_roll.groupby("instrument_id")["event_timestamp"].min()
    assert first[esm4] == pd.Timestamp("2024-03-15", tz="UTC")  # the close of ESM4's first bar as the front
    old = after_roll[after_roll["event_timestamp"] <= before_roll["event_timestamp"].max()].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before_roll)  # nothing before the changes was touched
    features.compute("momentum_v1", ["ES.c.0"], "1d", session=s)  # from every contract's first bar
    pd.testing.assert_frame_equal(_es_features(s), after_roll)

    # a revision of one of ESH4's old bars: ESH4 alone, from that bar
    day = pd.Timestamp("2023-11-01", tz="UTC")
    hdi_lab.sql(
        "UPDATE ohlcv_1d SET close = close * 2, high = high * 2 WHERE instrument_id = %(iid)s "
        "AND ts_event >= %(lo)s AND ts_event < %(hi)s",
        {"iid": esh4, "lo": day, "hi": day + pd.Timedelta(days=1)},
        session=s,
    )
    features.compute("momentum_v1", ["ES.c.0"], "1d", session=s)  # the features of the wrong bar
    assert not _es_features(s).equals(after_roll)
    hdi_lab.sql("DELETE FROM ingest_log WHERE start_ts <= %(day)s AND end_ts > %(day)s", {"day": day}, session=s)
    [p] = hdi_lab.update(until="2024-03-21", session=s).plans
    assert p.changed == {esh4: day}
    [computed] = p.after
    assert isinstance(computed, features.FeatureReport)
    assert computed.start == day and computed.instruments == 1 and computed.updated > 0
    pd.testing.assert_frame_equal(_es_features(s), after_roll)  # the vendor's bar back, its features too
