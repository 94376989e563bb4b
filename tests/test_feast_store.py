"""hdi_lab's Feast offline store (as-of training frames) against Feast's stock PostgreSQL store and a
brute-force pandas point-in-time join, on randomised entity frames with timestamp ties, TTL edges
and created-timestamp tie-breaks.

Feature tables are written here directly in the layout of hdi_lab's feature tables (or without the
primary key, to create rows tied on event timestamp). Parity with the stock store covers single-key
views: with two join keys the stock store concatenates keys without a separator (a bug this store
does not copy), checked against the brute force only.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import psycopg2
import psycopg2.extras
import pytest
from feast import Entity, FeatureStore, FeatureView, Field
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.repo_config import RepoConfig
from feast.types import Float64
from feast.value_type import ValueType

pytestmark = [
    pytest.mark.integration,
    # Feast reads the schema of an entity frame given as SQL with pandas.read_sql over psycopg 3
    pytest.mark.filterwarnings("ignore:pandas only supports SQLAlchemy connectable:UserWarning"),
]


T0 = pd.Timestamp("2024-01-01", tz="UTC")
FEATURES = ("f1", "f2")


# -- setup helpers ----------------------------------------------------------------------------


def store_config(pg_url: str, schema: str, tmp: Path, offline_type: str, **offline: Any) -> RepoConfig:
    u = urlsplit(pg_url)
    return RepoConfig(
        project="parity",
        provider="local",
        registry=str(tmp / "registry.db"),
        online_store={"type": "sqlite", "path": str(tmp / "online.db")},
        offline_store={
            "type": offline_type,
            "host": u.hostname,
            "port": u.port or 5432,
            "database": u.path.lstrip("/"),
            "user": u.username or "postgres",
            "password": u.password or "",
            "db_schema": schema,
            "sslmode": "prefer",
            **offline,
        },
        entity_key_serialization_version=3,
    )


def stores(
    pg_url: str, schema: str, tmp: Path, objects: list[Any], **offline: Any
) -> tuple[FeatureStore, FeatureStore]:
    """(hdi_lab store, stock store) over one registry holding ``objects``."""
    hdi = FeatureStore(
        config=store_config(pg_url, schema, tmp, "hdi_lab.feast_store.HdiOfflineStore", **offline), repo_path=str(tmp)
    )
    hdi.apply(objects)
    stock = FeatureStore(config=store_config(pg_url, schema, tmp, "postgres", **offline), repo_path=str(tmp))
    return hdi, stock


def write_table(
    pg_url: str,
    schema: str,
    name: str,
    rows: pd.DataFrame,
    keys: tuple[str, ...] = ("instrument_id",),
    primary_key: bool = True,
) -> None:
    """A feature table in hdi_lab's layout (optionally without the primary key, to allow ties)."""
    conn = psycopg2.connect(pg_url, options="-c timezone=UTC")
    cols = ", ".join(f'"{k}" bigint NOT NULL' for k in keys)
    feats = ", ".join(f'"{f}" double precision' for f in FEATURES)
    key = ", ".join(f'"{k}"' for k in keys)
    pk = f", PRIMARY KEY ({key}, event_timestamp)" if primary_key else ""
    with conn, conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        cur.execute(
            f'CREATE TABLE "{schema}"."{name}" ({cols}, event_timestamp timestamptz NOT NULL, '
            f"created timestamptz{' NOT NULL' if primary_key else ''}, symbol text, {feats}{pk})"
        )
        cur.execute(f'CREATE INDEX ON "{schema}"."{name}" ({key}, event_timestamp DESC, created DESC)')
        data = rows[[*keys, "event_timestamp", "created", "symbol", *FEATURES]]
        values = [
            tuple(None if (isinstance(v, float) and np.isnan(v)) or v is pd.NaT else v for v in r)
            for r in data.astype(object).itertuples(index=False, name=None)
        ]
        psycopg2.extras.execute_values(cur, f'INSERT INTO "{schema}"."{name}" VALUES %s', values)
        cur.execute(f'ANALYZE "{schema}"."{name}"')
    conn.close()


def random_features(
    rng: np.random.Generator, n: int, instruments: list[int], *, ties: float = 0.0, null_created: float = 0.0
) -> pd.DataFrame:
    """About ``n`` feature rows on an hourly grid (so timestamps tie across instruments); a share
    ``ties`` of them repeated for the same (instrument, ts) with another created timestamp and other
    values; a share ``null_created`` with a NULL created timestamp."""
    pairs = pd.DataFrame(
        {"instrument_id": rng.choice(instruments, n).astype(np.int64), "hour": rng.integers(0, 24 * 60, n)}
    ).drop_duplicates()
    if ties:
        pairs = pd.concat([pairs, pairs.sample(frac=ties, random_state=int(rng.integers(1 << 31)))])
    frame = pairs.assign(event_timestamp=T0 + pd.to_timedelta(pairs["hour"], unit="h")).drop(columns="hour")
    frame["created"] = frame["event_timestamp"] + pd.to_timedelta(
        rng.permutation(len(frame)) * 1_000_003, unit="us"
    )  # distinct: no tie on (ts, created)
    frame["symbol"] = [f"S{i}" for i in frame["instrument_id"]]
    for f in FEATURES:
        frame[f] = rng.normal(size=len(frame))
    frame.loc[rng.random(len(frame)) < 0.05, "f2"] = np.nan  # NULL feature values pass through
    if null_created:
        frame.loc[rng.random(len(frame)) < null_created, "created"] = pd.NaT
    return frame.reset_index(drop=True)


def random_entities(
    rng: np.random.Generator, n: int, features: pd.DataFrame, instruments: list[int], ttl: dt.timedelta | None
) -> pd.DataFrame:
    """Entity rows: random times, exactly on feature timestamps (ties), exactly at the TTL edge and
    one microsecond past it, before any data, unknown instruments, and duplicated rows."""
    k = n // 6
    pick = features.sample(n=4 * k, replace=True, random_state=int(rng.integers(1 << 31)))
    edge = ttl or dt.timedelta(days=2)
    parts = [
        pd.DataFrame(
            {
                "instrument_id": rng.choice([*instruments, 999_999], k),
                "event_timestamp": T0 + pd.to_timedelta(rng.integers(-86_400, 70 * 86_400, k), unit="s"),
            }
        ),
        pick.iloc[:k][["instrument_id", "event_timestamp"]],
        pick.iloc[k : 2 * k][["instrument_id", "event_timestamp"]].assign(
            event_timestamp=lambda d: d["event_timestamp"] + edge
        ),
        pick.iloc[2 * k : 3 * k][["instrument_id", "event_timestamp"]].assign(
            event_timestamp=lambda d: d["event_timestamp"] + edge + pd.Timedelta(microseconds=1)
        ),
        pick.iloc[3 * k : 4 * k][["instrument_id", "event_timestamp"]].assign(
            event_timestamp=lambda d: d["event_timestamp"] - pd.Timedelta(microseconds=1)
        ),
    ]
    frame = pd.concat(parts, ignore_index=True)
    frame = pd.concat([frame, frame.sample(n=k, random_state=1)], ignore_index=True)  # duplicate entity rows
    frame["instrument_id"] = frame["instrument_id"].astype(np.int64)
    frame["row_id"] = np.arange(len(frame), dtype=np.int64)  # an extra column, passed through
    return frame


def brute_force(
    entities: pd.DataFrame,
    features: pd.DataFrame,
    ttl: dt.timedelta | None,
    keys: tuple[str, ...] = ("instrument_id",),
    filter_created: bool = False,
    prefix: str = "",
) -> pd.DataFrame:
    """Feast's point-in-time rule, row by row: latest event_timestamp <= t (>= t - ttl), ties broken
    by the latest created timestamp; rows with a NULL created timestamp never qualify."""
    feats = features[features["created"].notna()]
    groups = {k: g.sort_values(["event_timestamp", "created"]) for k, g in feats.groupby(list(keys))}
    out = {f"{prefix}{f}": np.full(len(entities), np.nan) for f in FEATURES}
    for i, row in enumerate(entities.itertuples(index=False)):
        key = tuple(getattr(row, k) for k in keys)
        g = groups.get(key)
        if g is None:
            continue
        t = row.event_timestamp
        ok = g["event_timestamp"] <= t
        if ttl:
            ok &= g["event_timestamp"] >= t - pd.Timedelta(seconds=int(ttl.total_seconds()))
        if filter_created:
            ok &= g["created"] <= t
        hit = g[ok]
        if len(hit):
            for f in FEATURES:
                out[f"{prefix}{f}"][i] = hit[f].iloc[-1]
    return entities.assign(**out)


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.sort_values("row_id").reset_index(drop=True)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    return frame


def view(name: str, table: str, entity: Entity, ttl: dt.timedelta | None, created: bool = True) -> FeatureView:
    source = PostgreSQLSource(
        name=f"{name}_src",
        table=table,
        timestamp_field="event_timestamp",
        created_timestamp_column="created" if created else "",
    )
    return FeatureView(
        name=name, entities=[entity], ttl=ttl, source=source, schema=[Field(name=f, dtype=Float64) for f in FEATURES]
    )


def instrument() -> Entity:
    return Entity(name="instrument", join_keys=["instrument_id"], value_type=ValueType.INT64)


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(canonical(a), canonical(b), check_dtype=False, check_exact=True)


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("ttl", [dt.timedelta(days=2), dt.timedelta(hours=5, seconds=30, milliseconds=700), None])
def test_training_frame_equals_stock_store_and_brute_force(
    pg_url: str, db_schema: str, tmp_path: Path, seed: int, ttl: dt.timedelta | None
) -> None:
    rng = np.random.default_rng(seed)
    instruments = [11, 12, 123, 1_000_017, *range(20, 56)]
    feats = random_features(rng, 1500, instruments)
    write_table(pg_url, db_schema, "features_parity_1h", feats)
    ent = instrument()
    fv = view("parity_1h", "features_parity_1h", ent, ttl)
    hdi, stock = stores(pg_url, db_schema, tmp_path, [ent, fv])
    entities = random_entities(rng, 600, feats, instruments, ttl)
    refs = [f"parity_1h:{f}" for f in FEATURES]
    got = hdi.get_historical_features(entity_df=entities, features=refs).to_df()
    want = stock.get_historical_features(entity_df=entities, features=refs).to_df()
    assert list(got.columns) == list(want.columns) == ["instrument_id", "event_timestamp", "row_id", *FEATURES]
    assert len(got) == len(entities)
    assert_same(got, want)
    assert_same(got, brute_force(entities, feats, ttl))
    assert 0 < got["f1"].notna().sum() < len(entities)  # found and missing values both occur


def test_created_timestamp_tie_breaks_and_null_created(pg_url: str, db_schema: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    instruments = list(range(1, 21))
    feats = random_features(rng, 1500, instruments, ties=0.3, null_created=0.05)
    assert feats.duplicated(["instrument_id", "event_timestamp"]).sum() > 100  # real ties to break
    write_table(pg_url, db_schema, "features_ties_1h", feats, primary_key=False)
    ent = instrument()
    fv = view("ties_1h", "features_ties_1h", ent, dt.timedelta(days=1))
    hdi, stock = stores(pg_url, db_schema, tmp_path, [ent, fv])
    entities = random_entities(rng, 600, feats, instruments, dt.timedelta(days=1))
    refs = [f"ties_1h:{f}" for f in FEATURES]
    for filter_created in (False, True):
        got = hdi.get_historical_features(
            entity_df=entities, features=refs, filter_by_created_timestamp=filter_created
        ).to_df()
        want = stock.get_historical_features(
            entity_df=entities, features=refs, filter_by_created_timestamp=filter_created
        ).to_df()
        assert_same(got, want)
        assert_same(got, brute_force(entities, feats, dt.timedelta(days=1), filter_created=filter_created))


def test_two_views_full_feature_names_and_sql_entity_frames(pg_url: str, db_schema: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    instruments = list(range(7, 37))
    daily = random_features(rng, 800, instruments)
    hourly = random_features(rng, 1500, instruments)
    write_table(pg_url, db_schema, "features_a_1d", daily)
    write_table(pg_url, db_schema, "features_b_1h", hourly)
    ent = instrument()
    a = view("a_1d", "features_a_1d", ent, dt.timedelta(days=3))
    b = view("b_1h", "features_b_1h", ent, None)
    entities = random_entities(rng, 600, hourly, instruments, dt.timedelta(days=3))
    refs = [f"a_1d:{f}" for f in FEATURES] + [f"b_1h:{f}" for f in FEATURES]
    expected = brute_force(
        brute_force(entities, daily, dt.timedelta(days=3), prefix="a_1d__"), hourly, None, prefix="b_1h__"
    )
    for mode in ("temp_table", "embed_query"):
        hdi, stock = stores(pg_url, db_schema, tmp_path / mode, [ent, a, b], entity_select_mode=mode)
        got = hdi.get_historical_features(entity_df=entities, features=refs, full_feature_names=True).to_df()
        assert_same(got, expected)
        assert_same(
            got, stock.get_historical_features(entity_df=entities, features=refs, full_feature_names=True).to_df()
        )
        # the entity frame as SQL (a table the caller already has)
        conn = psycopg2.connect(pg_url, options="-c timezone=UTC")
        with conn, conn.cursor() as cur:
            cur.execute(
                f'CREATE TABLE IF NOT EXISTS "{db_schema}".labels '
                "(instrument_id bigint, event_timestamp timestamptz, row_id bigint)"
            )
            cur.execute(f'TRUNCATE "{db_schema}".labels')
            psycopg2.extras.execute_values(
                cur,
                f'INSERT INTO "{db_schema}".labels VALUES %s',
                list(entities.astype(object).itertuples(index=False, name=None)),
            )
        conn.close()
        query = "SELECT instrument_id, event_timestamp, row_id FROM labels"
        got_sql = hdi.get_historical_features(entity_df=query, features=refs, full_feature_names=True).to_df()
        assert_same(got_sql, expected)


def test_two_join_keys_are_not_concatenated(pg_url: str, db_schema: str, tmp_path: Path) -> None:
    """Keys (1, 23) and (12, 3) are different rows (the stock store would mix them up)."""
    rng = np.random.default_rng(3)
    feats = random_features(rng, 400, [1, 12])
    feats["venue_id"] = np.where(feats["instrument_id"] == 1, 23, 3).astype(np.int64)
    write_table(pg_url, db_schema, "features_kv_1h", feats, keys=("instrument_id", "venue_id"))
    inst = instrument()
    venue = Entity(name="venue", join_keys=["venue_id"], value_type=ValueType.INT64)
    source = PostgreSQLSource(
        name="kv_src", table="features_kv_1h", timestamp_field="event_timestamp", created_timestamp_column="created"
    )
    fv = FeatureView(
        name="kv_1h",
        entities=[inst, venue],
        ttl=None,
        source=source,
        schema=[Field(name=f, dtype=Float64) for f in FEATURES],
    )
    hdi, _ = stores(pg_url, db_schema, tmp_path, [inst, venue, fv])
    entities = random_entities(rng, 300, feats, [1, 12], None).drop(columns="instrument_id")
    entities = entities.merge(feats[["instrument_id", "venue_id"]].drop_duplicates(), how="cross")
    entities["row_id"] = np.arange(len(entities), dtype=np.int64)
    entities = entities[["instrument_id", "venue_id", "event_timestamp", "row_id"]]
    got = hdi.get_historical_features(entity_df=entities, features=[f"kv_1h:{f}" for f in FEATURES]).to_df()
    assert_same(got, brute_force(entities, feats, None, keys=("instrument_id", "venue_id")))


NS_OFFSETS = {"t-1us": -1000, "t-500ns": -500, "t-499ns": -499, "t-1ns": -1, "t": 0, "t+1ns": 1}
TTL_OFFSETS = {"ttl-1ns": -1, "ttl": 0, "ttl+1ns": 1, "ttl+499ns": 499, "ttl+1us": 1000}


def nanosecond_entities(feats: pd.DataFrame, ttl: dt.timedelta) -> pd.DataFrame:
    """For each feature row at t: entity rows at t-1us, t-500ns, t-499ns, t-1ns, t, t+1ns, and at
    t + ttl -1ns / +0 / +1ns / +499ns / +1us (the TTL edge), all in ``datetime64[ns, UTC]``."""
    t = feats["event_timestamp"].astype("datetime64[ns, UTC]")
    parts = [
        pd.DataFrame(
            {"instrument_id": feats["instrument_id"], "event_timestamp": t + pd.Timedelta(ns, "ns"), "case": case}
        )
        for case, ns in NS_OFFSETS.items()
    ]
    parts += [
        pd.DataFrame(
            {
                "instrument_id": feats["instrument_id"],
                "event_timestamp": t + pd.Timedelta(ttl) + pd.Timedelta(ns, "ns"),
                "case": case,
            }
        )
        for case, ns in TTL_OFFSETS.items()
    ]
    frame = pd.concat(parts, ignore_index=True)
    frame["row_id"] = np.arange(len(frame), dtype=np.int64)
    return frame


def test_nanosecond_entity_times_never_see_the_future(pg_url: str, db_schema: str, tmp_path: Path) -> None:
    """An entity time 1-999 ns before a feature row does not get it (it was rounded up to the row's
    microsecond); the TTL bound is exact at nanoseconds too; the caller's timestamps come back as given."""
    rng = np.random.default_rng(13)
    instruments = list(range(1, 6))
    feats = random_features(rng, 300, instruments)
    # feature times off the whole second (microseconds), so rounding shows at every offset
    feats["event_timestamp"] += pd.to_timedelta(rng.integers(0, 1_000_000, len(feats)), unit="us")
    feats = feats.drop_duplicates(["instrument_id", "event_timestamp"]).reset_index(drop=True)
    ttl = dt.timedelta(hours=2)
    write_table(pg_url, db_schema, "features_ns_1h", feats)
    ent = instrument()
    fv = view("ns_1h", "features_ns_1h", ent, ttl)
    hdi, stock = stores(pg_url, db_schema, tmp_path, [ent, fv])
    entities = nanosecond_entities(feats, ttl)
    refs = [f"ns_1h:{f}" for f in FEATURES]
    got = hdi.get_historical_features(entity_df=entities, features=refs).to_df()
    want = brute_force(entities.drop(columns="case"), feats, ttl)
    cols = ["row_id", *FEATURES]
    pd.testing.assert_frame_equal(got[cols].sort_values("row_id").reset_index(drop=True), want[cols], check_exact=True)
    assert_same(got.drop(columns="case"), want)
    # the row at t itself is seen from t and t+1ns only
    own = got.merge(
        feats[["instrument_id", "event_timestamp", "f1"]]
        .rename(columns={"f1": "own"})
        .assign(event_timestamp=lambda d: d["event_timestamp"].astype("datetime64[ns, UTC]")),
        how="left",
    )
    sees_own = own["own"].notna() & (own["f1"] == own["own"])
    assert set(own.loc[sees_own, "case"]) == {"t"}
    assert not (
        got.loc[got["case"].isin(["t-1ns", "t-499ns", "t-500ns", "t-1us"]), "f1"]
        == own.loc[got["case"].isin(["t-1ns", "t-499ns", "t-500ns", "t-1us"]), "own"]
    ).any()
    # the caller's timestamps, unchanged (dtype, unit, zone, values), in the caller's order
    assert got["event_timestamp"].dtype == entities["event_timestamp"].dtype
    pd.testing.assert_series_equal(
        got.sort_values("row_id")["event_timestamp"].reset_index(drop=True), entities["event_timestamp"]
    )
    # the stock store truncates entity times to microseconds (psycopg 3): exact for "at or before t",
    # wrong for the TTL bound at t + ttl + 1..999 ns (it keeps a row that is ttl + 1 ns old)
    # (and returns them truncated: only the features are compared)
    stock_df = stock.get_historical_features(entity_df=entities, features=refs).to_df()
    exact = sorted(set(NS_OFFSETS) | set(TTL_OFFSETS) - {"ttl+1ns", "ttl+499ns"})
    for frame in (got, stock_df, want.assign(case=entities["case"])):
        assert len(frame) == len(entities)
    pd.testing.assert_frame_equal(
        got.loc[got["case"].isin(exact), cols].sort_values("row_id").reset_index(drop=True),
        stock_df.loc[stock_df["case"].isin(exact), cols].sort_values("row_id").reset_index(drop=True),
        check_exact=True,
    )


def test_string_and_naive_entity_timestamps(pg_url: str, db_schema: str, tmp_path: Path) -> None:
    """Entity times as ISO 8601 strings (with nanoseconds) or naive datetimes (UTC, as Feast reads them)
    give the same frame as tz-aware ones; unparsable strings are a one-line ValidationError."""
    from hdi_lab.errors import ValidationError

    rng = np.random.default_rng(21)
    instruments = list(range(1, 6))
    feats = random_features(rng, 300, instruments)
    write_table(pg_url, db_schema, "features_str_1h", feats)
    ent = instrument()
    fv = view("str_1h", "features_str_1h", ent, dt.timedelta(days=1))
    hdi, _ = stores(pg_url, db_schema, tmp_path, [ent, fv])
    entities = nanosecond_entities(feats, dt.timedelta(days=1)).drop(columns="case")
    refs = [f"str_1h:{f}" for f in FEATURES]
    want = brute_force(entities, feats, dt.timedelta(days=1))
    text = entities.assign(
        event_timestamp=entities["event_timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
        + entities["event_timestamp"].dt.nanosecond.map("{:03d}".format)
        + "+00:00"
    )
    got = hdi.get_historical_features(entity_df=text, features=refs).to_df()
    assert list(got.sort_values("row_id")["event_timestamp"]) == list(text["event_timestamp"])  # strings, as given
    assert_same(got, want)
    naive = entities.assign(event_timestamp=entities["event_timestamp"].dt.tz_localize(None))
    assert_same(hdi.get_historical_features(entity_df=naive, features=refs).to_df(), want)
    bad = entities.head(3).assign(event_timestamp=["2024-01-01", "yesterday-ish", "2024-01-02"])
    with pytest.raises(ValidationError, match="'event_timestamp' holds values that are not timestamps"):
        hdi.get_historical_features(entity_df=bad, features=refs).to_df()


def test_pull_queries_and_time_range_mode_equal_stock(pg_url: str, db_schema: str, tmp_path: Path) -> None:
    """Materialization's reads and the no-entity-frame mode: the stock queries, fetched faster, same tables."""
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
        PostgreSQLOfflineStore,
    )

    from hdi_lab.featurestore.offline_store import HdiOfflineStore

    rng = np.random.default_rng(8)
    feats = random_features(rng, 800, list(range(1, 11)))
    write_table(pg_url, db_schema, "features_pull_1h", feats)
    ent = instrument()
    fv = view("pull_1h", "features_pull_1h", ent, dt.timedelta(days=2))
    hdi, stock = stores(pg_url, db_schema, tmp_path, [ent, fv])
    lo, hi = T0.to_pydatetime(), (T0 + pd.Timedelta(days=30)).to_pydatetime()
    for pull in ("pull_all_from_table_or_query", "pull_latest_from_table_or_query"):
        args = (fv.batch_source, ["instrument_id"], list(FEATURES), "event_timestamp", "created", lo, hi)
        got = getattr(HdiOfflineStore, pull)(hdi.config, *args).to_arrow()
        want = getattr(PostgreSQLOfflineStore, pull)(stock.config, *args).to_arrow()
        order = [("instrument_id", "ascending"), ("event_timestamp", "ascending")]
        assert got.num_rows > 0 and got.sort_by(order).equals(want.sort_by(order)), pull
    refs = [f"pull_1h:{f}" for f in FEATURES]
    got_df = hdi.get_historical_features(features=refs, start_date=lo, end_date=hi).to_df()
    want_df = stock.get_historical_features(features=refs, start_date=lo, end_date=hi).to_df()
    key = ["instrument_id", "event_timestamp"]
    pd.testing.assert_frame_equal(
        got_df.sort_values(key).reset_index(drop=True), want_df.sort_values(key).reset_index(drop=True)
    )


def test_variable_width_features_take_the_row_path(pg_url: str, db_schema: str, tmp_path: Path) -> None:
    """A text feature (no fixed width) is fetched as the stock job fetches: same frame as the stock store."""
    from feast.types import String

    rng = np.random.default_rng(4)
    feats = random_features(rng, 400, list(range(1, 6)))
    write_table(pg_url, db_schema, "features_txt_1h", feats)
    ent = instrument()
    source = PostgreSQLSource(
        name="txt_src", table="features_txt_1h", timestamp_field="event_timestamp", created_timestamp_column="created"
    )
    fv = FeatureView(
        name="txt_1h",
        entities=[ent],
        ttl=dt.timedelta(days=1),
        source=source,
        schema=[Field(name="f1", dtype=Float64), Field(name="symbol", dtype=String)],
    )
    hdi, stock = stores(pg_url, db_schema, tmp_path, [ent, fv])
    entities = random_entities(rng, 300, feats, list(range(1, 6)), dt.timedelta(days=1))
    refs = ["txt_1h:f1", "txt_1h:symbol"]
    got = hdi.get_historical_features(entity_df=entities, features=refs).to_df()
    assert got["symbol"].notna().any() and got["symbol"].isna().any()
    assert_same(got, stock.get_historical_features(entity_df=entities, features=refs).to_df())
