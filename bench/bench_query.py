"""Query 1M stored OHLCV-1m rows back: ``hdi_lab.query`` vs ``pandas.read_sql`` of the equivalent
SELECT through a SQLAlchemy engine; plus a 1-instrument, 1-week query repeated 50 times.

Setup (untimed): the rows are ingested with ``hdi_lab.ingest(provider="file")`` into a fresh
schema, then ``VACUUM ANALYZE`` (the steady state autovacuum would reach; both sides see it).

* full: ``hdi_lab.query("ohlcv-1m", symbols=<all>, start, end, session=...)`` -> 1M-row DataFrame
  (symbol as of each date, float prices, ts_event index) vs ``pandas.read_sql`` of the same rows
  (same symbol resolution via a join on the ``symbology`` table, same order, ``ts_event`` index;
  prices left as int64 fixed point, so the baseline does slightly less work).
* small: 1 instrument x 1 week (~6.6k rows), 50 timed runs after 3 warm-ups: p50 / p95 in ms,
  for both hdi_lab and read_sql.
* session rollups (issue 16): ``query(..., interval="1d" | "1h", align="session")`` (numpy on the fetched
  1-minute bars, CME sessions) vs ``align="utc"`` (the server's ``date_bin`` / ``time_bucket`` rollup) of the
  same rows, interleaved: target within 2x (ratio >= 0.5). Also the cost of the ``session`` column on the full
  query (``columns=`` without it vs the default).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Row

import hdi_lab

BENCH = "query"
SMALL_REPS = 50


def run(args: argparse.Namespace) -> list[Row]:
    return common.with_dbn_file(args, BENCH, _run)


def _run(args: argparse.Namespace, data: common.Dataset, path: Path) -> list[Row]:
    n = args.records
    lo = pd.Timestamp(data.start_ns, unit="ns", tz="UTC")
    hi = pd.Timestamp(data.end_ns, unit="ns", tz="UTC")
    w_lo, w_hi = data.middle_week()
    one = data.symbols[0]
    iid = data.instrument_ids[0]
    r = data.records
    n_small = int(((r["instrument_id"] == iid) & (r["ts_event"] >= w_lo.value) & (r["ts_event"] < w_hi.value)).sum())

    rows: list[Row] = []
    with common.database(args.database_url) as url, common.fresh_schema(url, "bench_query") as sch:
        print(f"[{BENCH}] {common.server_summary(url)}; schema {sch}", flush=True)
        sess, t, stored = common.store_file(url, sch, path)
        print(f"[{BENCH}] setup: ingested {stored:,} rows in {t:.1f}s", flush=True)

        import sqlalchemy as sa

        engine = sa.create_engine(
            url.replace("postgresql://", "postgresql+psycopg2://", 1), connect_args={"options": "-c timezone=UTC"}
        )
        text = sa.text(
            f"SELECT s.symbol, t.instrument_id, t.publisher_id, t.ts_event, t.open, t.high, t.low, t.close, "
            f't.volume FROM "{sch}".ohlcv_1m t JOIN "{sch}".symbology s ON s.instrument_id = t.instrument_id '
            "AND t.ts_event >= s.d0 AND t.ts_event < s.d1 "
            "WHERE s.symbol = ANY(:syms) AND t.ts_event >= :lo AND t.ts_event < :hi "
            "ORDER BY t.ts_event, s.symbol, t.instrument_id"
        )

        def hdi_query(syms: list[str], a: pd.Timestamp, b: pd.Timestamp) -> pd.DataFrame:
            return hdi_lab.query("ohlcv-1m", symbols=syms, start=a, end=b, session=sess)

        def read_sql(syms: list[str], a: pd.Timestamp, b: pd.Timestamp) -> pd.DataFrame:
            with engine.connect() as c:
                return pd.read_sql(
                    text,
                    c,
                    params={"syms": syms, "lo": a.to_pydatetime(), "hi": b.to_pydatetime()},
                    index_col="ts_event",
                )

        def expect(k: int, who: str) -> Callable[[pd.DataFrame], None]:
            def check(df: pd.DataFrame) -> None:
                if len(df) != k:
                    print(f"[{BENCH}] WARNING: {who} returned {len(df):,} rows, expected {k:,}", flush=True)

            return check

        syms = list(data.symbols)
        print(f"[{BENCH}] full query ({n:,} rows), interleaved x{args.repeat} ...", flush=True)
        full = common.interleaved(
            {"hdi": (lambda: hdi_query(syms, lo, hi), None), "sql": (lambda: read_sql(syms, lo, hi), None)},
            args.repeat,
            checks={"hdi": expect(n, "hdi_lab.query"), "sql": expect(n, "read_sql")},
        )
        print(f"[{BENCH}]   hdi_lab.query {full['hdi']}\n[{BENCH}]   read_sql      {full['sql']}", flush=True)

        print(
            f"[{BENCH}] small query ({one}, {w_lo.date()}..{w_hi.date()}, {n_small:,} rows) x{SMALL_REPS} ...",
            flush=True,
        )
        for _ in range(3):  # warm-up
            hdi_query([one], w_lo, w_hi)
            read_sql([one], w_lo, w_hi)
        small = common.interleaved(
            {"hdi": (lambda: hdi_query([one], w_lo, w_hi), None), "sql": (lambda: read_sql([one], w_lo, w_hi), None)},
            SMALL_REPS,
            checks={"hdi": expect(n_small, "hdi_lab.query"), "sql": expect(n_small, "read_sql")},
        )
        ms = {k: np.asarray(v.times) * 1000 for k, v in small.items()}
        p = {k: (common.percentile(v, 50), common.percentile(v, 95)) for k, v in ms.items()}
        print(f"[{BENCH}]   hdi_lab.query p50 {p['hdi'][0]:.1f} ms p95 {p['hdi'][1]:.1f} ms", flush=True)
        print(f"[{BENCH}]   read_sql      p50 {p['sql'][0]:.1f} ms p95 {p['sql'][1]:.1f} ms", flush=True)

        print(f"[{BENCH}] rollups of all rows: align=session vs align=utc, interleaved x{args.repeat} ...", flush=True)
        rollups: dict[str, common.Timing] = {}
        for interval in ("1d", "1h"):

            def rollup(align: str, interval: str = interval) -> pd.DataFrame:
                return hdi_lab.query("ohlcv-1m", syms, lo, hi, interval=interval, align=align, session=sess)

            timed = common.interleaved(
                {"utc": (lambda: rollup("utc"), None), "session": (lambda: rollup("session"), None)}, args.repeat
            )
            rollups[f"{interval} utc"], rollups[f"{interval} session"] = timed["utc"], timed["session"]
            print(f"[{BENCH}]   {interval}: utc {timed['utc']}\n[{BENCH}]   {interval}: session {timed['session']}")
        bare = ["symbol", "instrument_id", "publisher_id", "open", "high", "low", "close", "volume"]
        cols = common.interleaved(
            {
                "with": (lambda: hdi_query(syms, lo, hi), None),
                "without": (lambda: hdi_lab.query("ohlcv-1m", syms, lo, hi, columns=bare, session=sess), None),
            },
            args.repeat,
        )
        print(f"[{BENCH}]   full with session {cols['with']}\n[{BENCH}]   full without {cols['without']}")

        if args.profile:
            print(f"\n[{BENCH}] cProfile of the session rollup:", flush=True)
            common.profile(
                lambda: hdi_lab.query("ohlcv-1m", syms, lo, hi, interval="1d", align="session", session=sess), 30
            )
            print(f"\n[{BENCH}] cProfile of the full hdi_lab.query:", flush=True)
            common.profile(lambda: hdi_query(syms, lo, hi), 30)
            print(f"\n[{BENCH}] cProfile of the full read_sql:", flush=True)
            common.profile(lambda: read_sql(syms, lo, hi), 15)

        engine.dispose()
        sess.close()

    hr, sr = n / full["hdi"].best, n / full["sql"].best
    rows += [
        Row(
            BENCH, "full: pandas.read_sql [baseline]", common.rate(n, full["sql"].best), note=f"{full['sql'].best:.2f}s"
        ),
        Row(
            BENCH,
            "full: hdi_lab.query / read_sql",
            common.rate(n, full["hdi"].best),
            hr / sr,
            5,
            f"{full['hdi'].best:.2f}s",
        ),
        Row(
            BENCH,
            "1 instr x 1 week: read_sql p50/p95 [baseline]",
            f"{p['sql'][0]:.1f} / {p['sql'][1]:.1f} ms",
            note=f"{n_small:,} rows, {SMALL_REPS} runs",
        ),
        Row(
            BENCH,
            "1 instr x 1 week: hdi_lab.query p50/p95",
            f"{p['hdi'][0]:.1f} / {p['hdi'][1]:.1f} ms",
            p["sql"][0] / p["hdi"][0],
            note="ratio = read_sql p50 / hdi p50",
        ),
    ]
    for interval in ("1d", "1h"):
        utc, ses = rollups[f"{interval} utc"].best, rollups[f"{interval} session"].best
        rows += [
            Row(BENCH, f"rollup {interval}: align=utc [baseline]", common.rate(n, utc), note=f"{utc:.2f}s"),
            Row(BENCH, f"rollup {interval}: align=session / utc", common.rate(n, ses), utc / ses, 0.5, f"{ses:.2f}s"),
        ]
    w, wo = cols["with"].best, cols["without"].best
    rows.append(
        Row(BENCH, "full: with / without the session column", common.rate(n, w), wo / w, note=f"{w:.2f}s vs {wo:.2f}s")
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    return common.bench_main(argv, __doc__ or "", run, lambda a: f"query: {a.records:,} OHLCV-1m rows stored", repeat=5)


if __name__ == "__main__":
    raise SystemExit(main())
