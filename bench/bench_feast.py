"""Feast training frames at every feature-table size, materialization and online reads: hdi_lab's
offline store (``hdi_lab.feast_store.HdiOfflineStore``, as-of query) vs Feast's stock PostgreSQL
offline store, on the same registry, table and entity frames.

Setup (untimed), per table size (``--sizes``, default 1k, 100k and 1M feature rows): that many rows
of the ``momentum_v1`` columns (instruments x up to 2000 days: 1 x 1000, 50 x 2000, 500 x 2000) in
hdi_lab's feature-table layout (``features_momentum_v1_1d``: primary key ``(instrument_id,
event_timestamp)``, index ``(instrument_id, event_timestamp DESC, created DESC)``), loaded by binary
COPY and ``VACUUM ANALYZE``d, in its own schema; the repo's own declarations (entity ``instrument``,
view ``momentum_v1_1d`` with its 5-day TTL, service ``momentum_v1``) applied to a temporary registry.

* training frame, 100k entity rows (random instruments, random times over the data, 10% exactly
  on feature timestamps): ``FeatureStore.get_historical_features(...).to_df()`` with each store,
  interleaved (stock, hdi_lab, stock, hdi_lab, hdi_lab: stock ``min(--repeat, 2)`` times, it takes
  8-40 s a call here); best and median; the frames must be identical (sorted by row; the stock store
  returns the entity times rewritten as naive microseconds, so ``event_timestamp`` is compared as
  UTC nanoseconds). Target: >= 20x at every size.
* materialize (largest size): ``FeatureStore.materialize`` of the whole table into the sqlite online
  store (Feast pulls the latest row per instrument).
* online (largest size): ``get_online_features`` of the service for 1 and 100 instruments, 200 runs
  each, p50/p99.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Row

from hdi_lab import features
from hdi_lab.featurestore import repo as feast_repo
from hdi_lab.storage import copy

if TYPE_CHECKING:
    from feast import FeatureStore

BENCH = "feast"
DAYS = 2000
ONLINE_REPS = 200
ENTITY_ROWS = 100_000
COLUMNS = features.FEATURE_SETS["momentum_v1"].columns
T0 = pd.Timestamp("2015-01-02", tz="UTC")


def load_table(url: str, schema: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` daily feature rows (instruments x DAYS) in hdi_lab's layout; returns (ids, event ns)."""
    instruments = max(n // DAYS, 1)
    ids = np.repeat(np.arange(1, instruments + 1, dtype=np.int64) * 1000 + 17, DAYS)[:n]
    event_ns = np.tile(T0.value + np.arange(DAYS, dtype=np.int64) * 86_400_000_000_000, instruments)[:n]
    rng = np.random.default_rng(11)
    created_us = event_ns // 1000 + rng.integers(0, 3_600_000_000, n)
    values = rng.normal(size=(n, len(COLUMNS)))
    values[rng.random(values.shape) < 0.01] = np.nan
    name = f'"{schema}".features_momentum_v1_1d'
    conn = psycopg2.connect(url, options="-c timezone=UTC")
    with conn, conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
        cols = ", ".join(f"{c} double precision" for c in COLUMNS)
        cur.execute(
            f"CREATE TABLE {name} (instrument_id bigint NOT NULL, event_timestamp timestamptz NOT NULL, "
            f"created timestamptz NOT NULL, {cols}, PRIMARY KEY (instrument_id, event_timestamp))"
        )
        nan = np.isnan(values)
        payload = copy.encode(
            ["int8", "timestamptz", "timestamptz", *(["float8"] * len(COLUMNS))],
            [
                ids,
                event_ns // 1000 - copy.PG_EPOCH_US,
                created_us - copy.PG_EPOCH_US,
                *(values[:, i] for i in range(len(COLUMNS))),
            ],
            {3 + i: nan[:, i] for i in range(len(COLUMNS))},
        )
        copy.copy_in(cur, name, ["instrument_id", "event_timestamp", "created", *COLUMNS], payload)
        cur.execute(f"CREATE INDEX ON {name} (instrument_id, event_timestamp DESC, created DESC)")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"VACUUM ANALYZE {name}")
    conn.close()
    return ids, event_ns


def stores(url: str, schema: str, tmp: Path) -> tuple[FeatureStore, FeatureStore]:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    u = urlsplit(url)

    def config(offline_type: str) -> RepoConfig:
        return RepoConfig(
            project="bench",
            provider="local",
            registry=str(tmp / "registry.db"),
            online_store={"type": "sqlite", "path": str(tmp / "online.db")},
            offline_store={
                "type": offline_type,
                "host": u.hostname,
                "port": u.port or 5432,
                "database": u.path.lstrip("/") or "postgres",
                "user": u.username or "postgres",
                "password": u.password or "",
                "db_schema": schema,
                "sslmode": "prefer",
            },
            entity_key_serialization_version=3,
        )

    decl = feast_repo.declarations()
    hdi = FeatureStore(config=config("hdi_lab.feast_store.HdiOfflineStore"), repo_path=str(tmp))
    hdi.apply([decl["instrument"], decl["momentum_v1_1d"], decl["momentum_v1_1d_service"]])
    stock = FeatureStore(config=config("postgres"), repo_path=str(tmp))
    return hdi, stock


def entity_frame(rng: np.random.Generator, k: int, ids: np.ndarray, event_ns: np.ndarray) -> pd.DataFrame:
    on_rows = rng.integers(0, len(ids), k // 10)  # exactly on a feature timestamp
    rand_ids = rng.choice(np.unique(ids), k - len(on_rows))
    rand_ns = T0.value + rng.integers(-5 * 86_400_000_000, DAYS * 86_400_000_000, len(rand_ids)) * 1000
    return pd.DataFrame(
        {
            "instrument_id": np.concatenate([ids[on_rows], rand_ids]),
            "event_timestamp": pd.to_datetime(np.concatenate([event_ns[on_rows], rand_ns]), unit="ns", utc=True),
            "row_id": np.arange(k, dtype=np.int64),
        }
    )


def same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    a, b = (f.sort_values("row_id").reset_index(drop=True) for f in (a, b))
    for f in (a, b):
        ts = f["event_timestamp"]
        f["event_timestamp"] = (ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts).astype("datetime64[ns, UTC]")
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    except AssertionError as exc:
        print(f"[{BENCH}] WARNING: frames differ: {str(exc)[:300]}", flush=True)
        return False
    return True


def training_frames(url: str, tmp: Path, size: int, k: int, repeat: int, rng: np.random.Generator) -> list[Row]:
    """One table size: stock and hdi_lab interleaved on the same 100k entity rows."""
    with common.fresh_schema(url, "bench_feast") as sch:
        t, (ids, event_ns) = common.timed(lambda: load_table(url, sch, size))
        print(f"[{BENCH}] {size:,} feature rows ({len(np.unique(ids))} instruments) loaded in {t:.1f}s", flush=True)
        hdi, stock = stores(url, sch, tmp / str(size))
        service = hdi.get_feature_service("momentum_v1")
        entities = entity_frame(rng, k, ids, event_ns)
        out: dict[str, pd.DataFrame] = {}
        timing = {"stock": common.Timing([]), "hdi": common.Timing([])}
        for store in (hdi, stock):  # warm-up (imports, registry cache)
            store.get_historical_features(entity_df=entities.head(100), features=service).to_df()
        for i in range(repeat):
            for name, store in (("stock", stock), ("hdi", hdi)):
                if name == "stock" and i >= min(repeat, 2):
                    continue
                t, out[name] = common.timed(
                    lambda s=store: s.get_historical_features(entity_df=entities, features=service).to_df()
                )
                timing[name].times.append(t)
        identical = same(out["hdi"], out["stock"])
        filled = int(out["hdi"]["rsi_14"].notna().sum())
        ratio = timing["stock"].best / timing["hdi"].best
        median = timing["stock"].median / timing["hdi"].median
        print(
            f"[{BENCH}]   hdi_lab {timing['hdi']}\n[{BENCH}]   stock   {timing['stock']}\n"
            f"[{BENCH}]   {size:,} rows: {ratio:.1f}x (best), {median:.1f}x (median); identical: {identical}; "
            f"rows with values: {filled:,}",
            flush=True,
        )
        label = f"{size // 1000}k" if size < 1_000_000 else f"{size / 1e6:g}M"
        return [
            Row(
                BENCH,
                f"training frame {k // 1000}k over {label} rows: stock store [baseline]",
                f"{timing['stock'].best:.2f}s",
                note=f"median {timing['stock'].median:.2f}s",
            ),
            Row(
                BENCH,
                f"training frame {k // 1000}k over {label} rows: hdi_lab / stock",
                f"{timing['hdi'].best:.2f}s",
                ratio,
                20,
                f"median {timing['hdi'].median:.2f}s ({median:.1f}x); identical={identical}",
            ),
        ]


def run(args: argparse.Namespace) -> list[Row]:
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # Feast's own datetime helpers
    rows: list[Row] = []
    rng = np.random.default_rng(5)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with common.database(args.database_url) as url, tempfile.TemporaryDirectory(prefix="hdi-bench-feast-") as tmp:
        print(f"[{BENCH}] {common.server_summary(url)}", flush=True)
        for size in sizes:
            rows += training_frames(url, Path(tmp), size, ENTITY_ROWS, args.repeat, rng)
        if args.skip_online:
            return rows
        with common.fresh_schema(url, "bench_feast") as sch:
            ids, event_ns = load_table(url, sch, sizes[-1])
            hdi, _ = stores(url, sch, Path(tmp) / "online")
            service = hdi.get_feature_service("momentum_v1")
            lo = pd.Timestamp(int(event_ns.min()), tz="UTC").to_pydatetime()
            hi = (pd.Timestamp(int(event_ns.max()), tz="UTC") + pd.Timedelta(seconds=1)).to_pydatetime()
            print(f"[{BENCH}] materialize {len(ids):,} rows into sqlite ...", flush=True)
            t, _ = common.timed(lambda: hdi.materialize(lo, hi, feature_views=["momentum_v1_1d"]))
            rows.append(
                Row(
                    BENCH,
                    f"materialize {len(ids) / 1e6:g}M rows -> sqlite online",
                    f"{t:.2f}s",
                    note=f"{common.rate(len(ids), t)} scanned, {len(np.unique(ids))} instruments written",
                )
            )
            uniq = [int(i) for i in np.unique(ids)]
            for n in (1, 100):
                entity_rows = [{"instrument_id": i} for i in uniq[:n]]
                for _ in range(10):
                    hdi.get_online_features(features=service, entity_rows=entity_rows)
                times = []
                for _ in range(ONLINE_REPS):
                    t, _ = common.timed(
                        lambda r=entity_rows: hdi.get_online_features(features=service, entity_rows=r).to_dict()
                    )
                    times.append(t * 1000)
                p50, p99 = common.percentile(times, 50), common.percentile(times, 99)
                print(f"[{BENCH}] online {n} instrument(s): p50 {p50:.2f} ms p99 {p99:.2f} ms", flush=True)
                rows.append(
                    Row(
                        BENCH,
                        f"online read, {n} instrument(s), sqlite: p50 / p99",
                        f"{p50:.2f} / {p99:.2f} ms",
                        note=f"{ONLINE_REPS} runs, to_dict()",
                    )
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--sizes", default="1000,100000,1000000", help="feature-table sizes (rows), comma-separated")
    own.add_argument("--skip-online", action="store_true", help="only the training frames")
    extra, rest = own.parse_known_args(argv)

    def go(args: argparse.Namespace) -> list[Row]:
        args.sizes, args.skip_online = extra.sizes, extra.skip_online
        return run(args)

    return common.bench_main(
        rest, __doc__ or "", go, lambda a: f"feast: {extra.sizes} feature rows, {ENTITY_ROWS:,} entity rows", repeat=3
    )


if __name__ == "__main__":
    raise SystemExit(main())
