"""``hdi_lab.update`` of an up-to-date subscription set (nothing to do): target < 2 s; its dry run of a 5-year
backfill plan: target < 5 s.

1. small (real): ``--subscriptions`` sample subscriptions of 1-minute bars (default 4: ESH4, NQH4, AAPL, MSFT),
   each brought current over ``--days`` days (default 90) by a first update. Timed: a second update, which plans
   every subscription's chunks, reads which are stored, asks the gaps of its sessions and finds nothing to do.
2. large (synthetic state): ``--large`` subscriptions (default 20) of the sample equities over ``--years`` years
   (default 5): every symbol set of AAPL, MSFT, NVDA in ohlcv-1m, ohlcv-1h and ohlcv-1d. Storing 5 years of
   1-minute bars through the sample provider would take hours, so the setup (untimed) writes what a completed
   backfill leaves, in SQL: the symbology, one ingest-log row per chunk the provider plans (its keys), and bars
   one every 15 minutes of each XNAS session, whose counts (``hdi_lab.storage.counts.repair``) are then scaled
   x16, as if at 1-minute density (16 a bucket; a full minute series has 15). Timed: an update that finds
   nothing to do; it reads the same counts rows as one over real 1-minute bars would.
3. dry run: ``hdi_lab.update(dry_run=True)`` of 4 sample subscriptions (AAPL, MSFT, NVDA 1-minute, AAPL
   1-hour) over ``--years`` years with nothing stored: every chunk planned and estimated, nothing fetched.
4. the same dry run of 2 Databento subscriptions (ESH4, NQH4 1-minute, with their definitions) through the local
   TLS fake gateway (tests/fake_databento.py): the vendor's estimates are asked per span of contiguous chunks
   (``hdi_lab.core.plan.estimate``), 2 x 2 requests per subscription instead of 2 per chunk.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psycopg2
import psycopg2.extras

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import common
from common import Row

import hdi_lab
from hdi_lab import calendars
from hdi_lab.core.session import HdiSession
from hdi_lab.providers.sample import SampleProvider
from hdi_lab.storage import counts

BENCH = "update"
SYMBOLS = ("ESH4", "NQH4", "AAPL", "MSFT")
SINCE = pd.Timestamp("2023-10-02", tz="UTC")
EQUITIES = ("AAPL", "MSFT", "NVDA")
LARGE_SINCE = pd.Timestamp("2019-01-02", tz="UTC")


def _symbol_sets() -> list[list[str]]:
    sets: list[list[str]] = []
    for k in (1, 2, 3):
        sets += [list(c) for c in itertools.combinations(EQUITIES, k)]
    return sets


def _up_to_date(sess: HdiSession, until: pd.Timestamp) -> Callable[[], object]:
    """The timed call: an update of every subscription, which must find nothing to do."""

    def again() -> object:
        report = hdi_lab.update(until=until, session=sess)
        if not report.up_to_date:
            raise AssertionError(f"not up to date:\n{report}")
        return report

    return again


def _dry_run(sess: HdiSession, until: pd.Timestamp, planned: list[int]) -> Callable[[], object]:
    """The timed call: a dry run of every subscription, each run's chunks appended to ``planned``."""

    def dry() -> object:
        report = hdi_lab.update(until=until, dry_run=True, session=sess)
        planned.append(sum(len(p.chunks) for p in report.plans))
        return report

    return dry


def _large_setup(url: str, sch: str, n: int, until: pd.Timestamp) -> int:
    """The state a completed backfill of ``n`` equity subscriptions leaves (see the module); returns the chunks
    logged."""
    sess = common.session(url, sch)
    wanted = [(schema, syms) for schema in ("ohlcv-1m", "ohlcv-1h", "ohlcv-1d") for syms in _symbol_sets()][:n]
    subs = [
        hdi_lab.watch("sample", schema=schema, symbols=syms, since=LARGE_SINCE, session=sess) for schema, syms in wanted
    ]
    provider = sess.provider("sample")
    chunks = [c for sub in subs for c in provider.plan(sub.request(until))]
    provider.close()
    sess.close()
    universe = SampleProvider.universe().set_index("symbol")
    days = calendars.sessions("XNAS", LARGE_SINCE.date(), (until - pd.Timedelta(days=1)).date(), halts=True)
    opens = [t.to_pydatetime() for t in days["open"]]
    closes = [t.to_pydatetime() for t in days["close"]]
    ids = [int(universe.loc[s, "instrument_id"]) for s in EQUITIES]
    conn = psycopg2.connect(url)
    s = f'"{sch}"'
    with conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {s}.symbology (dataset, stype, symbol, d0, d1, instrument_id) "
            "SELECT 'XNAS.ITCH', 'raw_symbol', sym, %s, %s, iid FROM unnest(%s::text[], %s::bigint[]) AS u(sym, iid)",
            ((LARGE_SINCE - pd.Timedelta(days=31)).date(), (until + pd.Timedelta(days=31)).date(), list(EQUITIES), ids),
        )
        psycopg2.extras.execute_values(
            cur,
            f"INSERT INTO {s}.ingest_log (chunk_key, provider, dataset, schema, stype_in, symbols, start_ts, end_ts, "
            "fetched, inserted, updated, duplicates, quarantined, seconds) VALUES %s",
            [
                (
                    c.key,
                    c.provider,
                    c.dataset,
                    c.schema.value,
                    c.stype_in.value,
                    list(c.symbols),
                    c.start.to_pydatetime(),
                    c.end.to_pydatetime(),
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                )
                for c in chunks
            ],
            page_size=5000,
        )
        for table in ("ohlcv_1m", "ohlcv_1h", "ohlcv_1d"):
            cur.execute(
                f"INSERT INTO {s}.{table} (instrument_id, publisher_id, ts_event, open, high, low, close, volume) "
                "SELECT i, 2, ts, 1, 1, 1, 1, 1 FROM unnest(%s::bigint[]) AS i, "
                "unnest(%s::timestamptz[], %s::timestamptz[]) AS w(lo, hi), "
                "generate_series(w.lo, w.hi - interval '1 minute', interval '15 minutes') AS ts",
                (ids, opens, closes),
            )
    counts.repair(conn, sch)
    with conn, conn.cursor() as cur:  # x16: as if one bar a minute
        for _ in range(4):
            cur.execute(f"UPDATE {s}.bar_counts SET counts = {s}.bar_counts_add(counts, counts)")
    conn.close()
    for table in ("ohlcv_1m", "ohlcv_1h", "ohlcv_1d", "bar_counts"):
        common.analyze(url, sch, table)
    return len(chunks)


def run_large(args: argparse.Namespace) -> list[Row]:
    until = LARGE_SINCE + pd.DateOffset(years=args.years)
    n = min(args.large, 3 * len(_symbol_sets()))
    with common.database(args.database_url) as url, common.fresh_schema(url, "bench_update_large") as sch:
        t0 = time.perf_counter()
        logged = _large_setup(url, sch, n, until)
        print(f"[{BENCH}] large setup: {n} subscriptions, {logged:,} chunks in {time.perf_counter() - t0:.1f}s")
        sess = common.session(url, sch)
        timing = common.best_of(_up_to_date(sess, until), args.repeat)
        sess.close()
    return [
        Row(
            BENCH,
            f"hdi_lab.update, nothing to do: {n} subscriptions x {args.years} years < 2 s",
            f"{timing.best:.2f}s",
            2.0 / timing.best,
            1.0,
            f"{logged:,} chunks logged; counts as if 1-minute",
        )
    ]


def run_dry(args: argparse.Namespace) -> list[Row]:
    until = LARGE_SINCE + pd.DateOffset(years=args.years)
    with common.database(args.database_url) as url, common.fresh_schema(url, "bench_update_dry") as sch:
        sess = common.session(url, sch)
        for schema, sym in (("ohlcv-1m", "AAPL"), ("ohlcv-1m", "MSFT"), ("ohlcv-1m", "NVDA"), ("ohlcv-1h", "AAPL")):
            hdi_lab.watch("sample", schema=schema, symbols=sym, since=LARGE_SINCE, session=sess)
        planned: list[int] = []
        timing = common.best_of(_dry_run(sess, until, planned), args.repeat)
        sess.close()
    return [
        Row(
            BENCH,
            f"hdi_lab.update dry run: 4 subscriptions x {args.years} years backfill < 5 s",
            f"{timing.best:.2f}s",
            5.0 / timing.best,
            5.0 / 5.0,
            f"{planned[-1]:,} chunks planned and estimated",
        )
    ]


def run_dry_databento(args: argparse.Namespace) -> list[Row]:
    from fake_databento import KEY, FakeDatabento

    from hdi_lab.config import load_settings

    until = LARGE_SINCE + pd.DateOffset(years=args.years)
    with (
        tempfile.TemporaryDirectory(prefix="hdi-bench-fake-") as tmp,
        common.database(args.database_url) as url,
        common.fresh_schema(url, "bench_update_dry_db") as sch,
    ):
        fake = FakeDatabento(Path(tmp))
        os.environ["REQUESTS_CA_BUNDLE"] = str(fake.ca_path)  # a bench process: the fake's CA trusted
        values = {"database_url": url, "db_schema": sch, "databento_api_key": KEY, "databento_gateway": fake.url}
        sess = HdiSession(load_settings(values, environ={}))
        for sym in ("ESH4", "NQH4"):
            hdi_lab.watch(
                "databento", dataset="GLBX.MDP3", schema="ohlcv-1m", symbols=sym, since=LARGE_SINCE, session=sess
            )
        planned: list[int] = []
        try:
            timing = common.best_of(_dry_run(sess, until, planned), args.repeat)
            asked = fake.count("metadata.get_cost") + fake.count("metadata.get_record_count")
        finally:
            sess.close()
            fake.close()
    return [
        Row(
            BENCH,
            f"hdi_lab.update dry run: 2 Databento subscriptions x {args.years} years < 5 s",
            f"{timing.best:.2f}s",
            5.0 / timing.best,
            1.0,
            f"{planned[-1]:,} chunks; {asked // args.repeat} vendor estimate requests a run (fake gateway)",
        )
    ]


def run(args: argparse.Namespace) -> list[Row]:
    n = min(args.subscriptions, len(SYMBOLS))
    until = SINCE + pd.Timedelta(days=args.days)
    with common.database(args.database_url) as url, common.fresh_schema(url, "bench_update") as sch:
        print(f"[{BENCH}] {common.server_summary(url)}; schema {sch}", flush=True)
        sess = common.session(url, sch)
        for sym in SYMBOLS[:n]:
            hdi_lab.watch("sample", schema="ohlcv-1m", symbols=sym, since=SINCE, session=sess)
        t0 = time.perf_counter()
        first = hdi_lab.update(until=until, session=sess)
        rows_stored = sum(p.report.inserted for p in first.plans if p.report is not None)
        print(f"[{BENCH}] setup: {rows_stored:,} bars in {time.perf_counter() - t0:.1f}s", flush=True)
        calendars.sessions("CMES", SINCE.date(), SINCE.date())  # the calendars are built once per process
        calendars.sessions("XNAS", SINCE.date(), SINCE.date())
        timing = common.best_of(_up_to_date(sess, until), args.repeat)
        sess.close()
    best = timing.best
    return [
        Row(
            BENCH,
            f"hdi_lab.update, nothing to do: {n} subscriptions x {args.days} days < 2 s",
            f"{best:.2f}s",
            2.0 / best,
            1.0,
            f"{rows_stored:,} bars stored",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0] if __doc__ else BENCH, repeat=3)
    p.add_argument("--subscriptions", type=int, default=4, help="subscriptions (default 4, at most 4)")
    p.add_argument("--days", type=int, default=90, help="days each subscription covers (default 90)")
    p.add_argument("--large", type=int, default=20, help="subscriptions of the large set (default 20, at most 21)")
    p.add_argument("--years", type=int, default=5, help="years of the large set and the dry run (default 5)")
    args = p.parse_args(argv)
    rows = run(args) + run_large(args) + run_dry(args) + run_dry_databento(args)
    common.print_table(rows, f"update: {args.subscriptions} subscriptions x {args.days} days, up to date")
    common.write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
