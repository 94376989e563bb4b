"""Ingest 1M OHLCV-1m rows: hdi_lab (fresh, and forced re-ingest of duplicates) vs raw binary COPY
and vs SQLAlchemy Core ``insert().on_conflict_do_nothing()`` executemany.

Cases (all into a table shaped like ``ohlcv_1m``: same columns, same primary key):

a. ``hdi_lab.ingest(provider="file", path=<.dbn>)`` into an empty schema: plan (sha256 of the file),
   decode, validate, key-sort, normalise, COPY-encode, load, symbology, ingest log, commit.
b. the same call with ``force=True`` while every row is already stored (all duplicates).
c. baseline: ``hdi_lab.storage.copy.encode`` + ``copy_in`` of the same rows (already canonical
   columns, key-sorted) into a freshly truncated table with the PK, then commit. This is the
   floor for getting the rows into PostgreSQL; it is the baseline of both (a) and (b).
d. SQLAlchemy Core ``postgresql.insert(t).on_conflict_do_nothing()`` executemany of a 50k-row
   subset (Python dicts built before timing), extrapolated per row to the full size.

Before every timed run the target table is truncated (untimed) and a CHECKPOINT is taken, and
the cases are interleaved so that drift hits them alike. Best of ``--repeat`` runs is kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg2
from psycopg2 import sql as pgsql

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Row, rate

import hdi_lab
from hdi_lab.schemas import Schema
from hdi_lab.storage import copy
from hdi_lab.storage.tables import TABLES

BENCH = "ingest"
SA_ROWS = 50_000


def sqlalchemy_rows(records: np.ndarray) -> list[dict[str, object]]:
    """DBN records -> what a SQLAlchemy user would pass: dicts of Python ints and aware datetimes."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    ts = [epoch + dt.timedelta(microseconds=v // 1000) for v in records["ts_event"].tolist()]
    cols = {
        name: records[name].tolist()
        for name in ("instrument_id", "publisher_id", "open", "high", "low", "close", "volume")
    }
    return [
        {"instrument_id": i, "publisher_id": p, "ts_event": t, "open": o, "high": h, "low": lo, "close": c, "volume": v}
        for i, p, t, o, h, lo, c, v in zip(
            cols["instrument_id"],
            cols["publisher_id"],
            ts,
            cols["open"],
            cols["high"],
            cols["low"],
            cols["close"],
            cols["volume"],
            strict=True,
        )
    ]


def run(args: argparse.Namespace) -> list[Row]:
    return common.with_dbn_file(args, BENCH, _run)


def _run(args: argparse.Namespace, data: common.Dataset, path: Path) -> list[Row]:
    n = args.records
    print(f"[{BENCH}] wrote {path.stat().st_size / 1e6:.1f} MB DBN to {path}", flush=True)
    schema = Schema.OHLCV_1M
    table = TABLES[schema]
    # the baseline's input: canonical columns, key-sorted, prepared before timing
    cols = common.canonical_columns(data.records, schema)
    idx = {c.name: i for i, c in enumerate(table.columns)}
    pgtypes = [c.pgtype for c in table.columns]
    values = [cols.values[c.name] for c in table.columns]
    nulls = {idx[k]: m for k, m in cols.nulls.items()}
    sa_rows = sqlalchemy_rows(data.records[:SA_ROWS])

    rows: list[Row] = []
    with common.database(args.database_url) as url, common.fresh_schema(url, "bench_ingest") as sch:
        print(f"[{BENCH}] {common.server_summary(url)}; schema {sch}", flush=True)
        sess = common.session(url, sch)
        sess.connection()  # connect + migrate (untimed)
        admin = psycopg2.connect(url)

        def q(*names: str) -> str:
            return pgsql.Identifier(*names).as_string(admin)

        with admin.cursor() as cur:
            cur.execute(f"CREATE TABLE {q(sch, 'raw_ohlcv_1m')} (LIKE {q(sch, table.name)} INCLUDING ALL)")
            cur.execute(f"CREATE TABLE {q(sch, 'sa_ohlcv_1m')} (LIKE {q(sch, table.name)} INCLUDING ALL)")
        admin.commit()
        raw_target = q(sch, "raw_ohlcv_1m")
        names = [q(c) for c in table.column_names]

        def truncate(*tables: str) -> None:
            with admin.cursor() as cur:
                cur.execute("TRUNCATE " + ", ".join(q(sch, t) for t in tables) + " RESTART IDENTITY CASCADE")
            admin.commit()
            common.checkpoint(admin)

        def raw_copy() -> None:
            with admin.cursor() as cur:
                copy.copy_in(cur, raw_target, names, copy.encode(pgtypes, values, nulls))
            admin.commit()

        def hdi_fresh() -> hdi_lab.IngestReport:
            return hdi_lab.ingest(provider="file", path=str(path), session=sess)

        def hdi_force() -> hdi_lab.IngestReport:
            return hdi_lab.ingest(provider="file", path=str(path), session=sess, force=True)

        def expect(field: str) -> Callable[[hdi_lab.IngestReport], None]:
            def check(report: hdi_lab.IngestReport) -> None:
                got = sum(getattr(c, field) for c in report.chunks)
                if got != n or report.quarantined:
                    print(f"[{BENCH}] WARNING: expected {field}={n}, got {report.chunks}", flush=True)

            return check

        print(f"[{BENCH}] (a) hdi_lab fresh vs (c) raw COPY, interleaved x{args.repeat} ...", flush=True)
        t = common.interleaved(
            {
                "raw": (raw_copy, lambda: truncate("raw_ohlcv_1m")),
                "hdi": (hdi_fresh, lambda: truncate(table.name, "ingest_log", "quarantine", "symbology", "bar_counts")),
            },
            args.repeat,
            checks={"hdi": expect("inserted")},
        )
        raw_t, fresh_t = t["raw"], t["hdi"]
        print(f"[{BENCH}]   raw COPY      {raw_t}\n[{BENCH}]   hdi fresh     {fresh_t}", flush=True)

        # the table now holds every row (from the last fresh run): all duplicates from here on
        common.checkpoint(admin)
        print(f"[{BENCH}] (b) hdi_lab re-ingest force=True (all duplicates) x{args.repeat} ...", flush=True)
        force_t = common.best_of(
            hdi_force, args.repeat, setup=lambda: common.checkpoint(admin), check=expect("duplicates")
        )
        print(f"[{BENCH}]   hdi re-ingest {force_t}", flush=True)

        print(f"[{BENCH}] (d) SQLAlchemy on_conflict_do_nothing executemany, {len(sa_rows):,} rows ...", flush=True)
        import sqlalchemy as sa
        from sqlalchemy.dialects import postgresql

        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
        md = sa.MetaData(schema=sch)
        sat = sa.Table(
            "sa_ohlcv_1m",
            md,
            sa.Column("instrument_id", sa.BigInteger, primary_key=True),
            sa.Column("ts_event", sa.DateTime(timezone=True), primary_key=True),
            sa.Column("publisher_id", sa.SmallInteger, primary_key=True),
            *(sa.Column(c, sa.BigInteger, nullable=False) for c in ("open", "high", "low", "close", "volume")),
        )
        stmt = postgresql.insert(sat).on_conflict_do_nothing()

        def sa_insert() -> None:
            with engine.begin() as c:
                c.execute(stmt, sa_rows)

        sa_t = common.best_of(sa_insert, max(1, min(args.repeat, 2)), setup=lambda: truncate("sa_ohlcv_1m"))
        print(f"[{BENCH}]   SQLAlchemy    {sa_t}", flush=True)
        engine.dispose()

        if args.profile:
            print(f"\n[{BENCH}] cProfile of (a) hdi fresh:", flush=True)
            truncate(table.name, "ingest_log", "quarantine", "symbology")
            common.profile(hdi_fresh)
            print(f"\n[{BENCH}] cProfile of (b) hdi re-ingest force=True:", flush=True)
            common.profile(hdi_force)

        admin.close()
        sess.close()

    raw_rate = n / raw_t.best
    fresh_rate = n / fresh_t.best
    force_rate = n / force_t.best
    sa_rate = len(sa_rows) / sa_t.best
    rows += [
        Row(BENCH, "(c) raw binary COPY fresh [baseline]", rate(n, raw_t.best), note=f"{raw_t.best:.2f}s"),
        Row(
            BENCH,
            "(a) hdi_lab ingest fresh / raw COPY",
            rate(n, fresh_t.best),
            fresh_rate / raw_rate,
            0.8,
            f"{fresh_t.best:.2f}s",
        ),
        Row(
            BENCH,
            "(b) hdi_lab re-ingest force (dups) / raw COPY",
            rate(n, force_t.best),
            force_rate / raw_rate,
            0.8,
            f"{force_t.best:.2f}s; worst {max(force_t.times):.2f}s",
        ),
        Row(
            BENCH,
            "(d) SQLAlchemy on_conflict executemany [baseline]",
            f"{sa_rate:,.0f} rows/s",
            note=f"{len(sa_rows):,} rows in {sa_t.best:.2f}s; 1M extrapolated {n / sa_rate:.0f}s",
        ),
        Row(BENCH, "(a) hdi_lab fresh / SQLAlchemy (extrapolated)", rate(n, fresh_t.best), fresh_rate / sa_rate, 40),
        Row(BENCH, "(b) hdi_lab re-ingest / SQLAlchemy (extrapolated)", rate(n, force_t.best), force_rate / sa_rate),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    return common.bench_main(argv, __doc__ or "", run, lambda a: f"ingest: {a.records:,} OHLCV-1m rows", repeat=5)


if __name__ == "__main__":
    raise SystemExit(main())
