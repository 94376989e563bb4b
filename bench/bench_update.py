"""``hdi_lab.update`` of an up-to-date subscription set (nothing to do): target < 2 s.

Setup (untimed): ``--subscriptions`` sample subscriptions of 1-minute bars (default 4: ESH4, NQH4, AAPL, MSFT),
each brought current over ``--days`` days (default 90) by a first update. Timed: a second update, which plans
every subscription's chunks, reads which are stored, asks the gaps of its sessions and finds nothing to do.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Row

import hdi_lab
from hdi_lab import calendars

BENCH = "update"
SYMBOLS = ("ESH4", "NQH4", "AAPL", "MSFT")
SINCE = pd.Timestamp("2023-10-02", tz="UTC")


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

        def again() -> object:
            report = hdi_lab.update(until=until, session=sess)
            if not report.up_to_date:
                raise AssertionError(f"not up to date:\n{report}")
            return report

        timing = common.best_of(again, args.repeat)
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
    args = p.parse_args(argv)
    rows = run(args)
    common.print_table(rows, f"update: {args.subscriptions} subscriptions x {args.days} days, up to date")
    common.write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
