"""Feature sets: ``hdi_lab.features.compute("momentum_v1")`` over 1M daily bars (500 instruments x
2000 days), against the pure pandas-ta compute time of the same indicators; plus an incremental
update of one new day for all 500 instruments.

Setup (untimed): synthetic daily bars (geometric random walks, business days) are COPYed straight
into ``ohlcv_1d`` of a fresh schema, with one symbology row per instrument, then ``VACUUM ANALYZE``.

* baseline: the pandas-ta calls behind ``momentum_v1`` (``ta.rsi``, ``ta.sma``, ``ta.ema``,
  ``ta.macd``, ``ta.atr``, ``ta.bbands(ddof=0)``, ``ta.log_return``, ``ta.stdev``) on each
  instrument's bars, already in memory as float frames: the compute floor.
* full: ``features.compute`` from an empty feature table: read every bar (``hdi_lab.query``),
  compute per instrument (``hdi_lab.indicators``: warm-up masks, checks), binary COPY to a staging
  table and ``INSERT .. ON CONFLICT .. WHERE IS DISTINCT FROM``. Target: storage and orchestration
  add < 50% to the baseline (ratio baseline / full >= 0.67).
* incremental: one new bar per instrument is stored, then ``features.compute(start=<new day>)``.
  Every instrument resumes from the state the full run saved after its last bar (see
  hdi_lab.features): one query checks the states (bar counts) and finds the windows, then only
  the last 34 bars of each instrument and the new one are read (17,500 bars instead of 1M), the
  recursive indicators continue from the states, 500 rows and 500 states are written. Bit-exact
  with the full computation (tests/test_features.py). Before each run the new day's rows are
  deleted and the states the full run saved are put back. Target < 2 s (ratio 2 s / measured
  >= 1); the report must show all 500 instruments resumed.

The std deviations are now window-local (hdi_lab.indicators, *Deviations*); the baseline still
calls ``ta.stdev`` (pandas' rolling variance), as the pandas-ta floor.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2.extensions

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Row

from hdi_lab import features
from hdi_lab.dbn import Mapping
from hdi_lab.storage import copy, load
from hdi_lab.storage.db import transaction

BENCH = "features"
SET = "momentum_v1"
DATASET, PUBLISHER = "XNAS.ITCH", 2
FIRST_ID = 700_000


def generate(instruments: int, days: int, seed: int = 11) -> tuple[list[str], pd.DatetimeIndex, dict[str, np.ndarray]]:
    """Fixed-point daily OHLCV for ``instruments`` x ``days`` business days (days + 1 generated: the
    last day is held back for the incremental case)."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2016-01-04", periods=days + 1, tz="UTC")
    level = rng.uniform(20, 500, instruments)[:, None]
    close = level * np.exp(np.cumsum(rng.normal(0, 0.015, (instruments, days + 1)), axis=1))
    opn = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    wick = np.abs(rng.normal(0, 0.006, close.shape)) * close
    high, low = np.maximum(opn, close) + wick, np.minimum(opn, close) - wick
    tick = 10_000_000  # 0.01
    fixed = {
        k: (np.round(v * 1e9 / tick) * tick).astype(np.int64)
        for k, v in (("open", opn), ("high", high), ("low", low), ("close", close))
    }
    fixed["volume"] = rng.integers(10_000, 5_000_000, close.shape).astype(np.int64)
    symbols = [f"S{i:04d}" for i in range(instruments)]
    return symbols, index, fixed


def store_bars(
    cur: psycopg2.extensions.cursor, schema: str, index: pd.DatetimeIndex, data: dict[str, np.ndarray], cols: slice
) -> int:
    """COPY the bars of days ``cols`` (all instruments) into ohlcv_1d."""
    n_inst = data["close"].shape[0]
    days = index[cols]
    ts_us = days.asi8 // 1000 - copy.PG_EPOCH_US
    iid = np.repeat(np.arange(FIRST_ID, FIRST_ID + n_inst, dtype=np.int64), len(days))
    ts = np.tile(ts_us, n_inst)
    values = [
        iid,
        np.full(len(iid), PUBLISHER, dtype=np.int16),
        ts,
        *(data[k][:, cols].reshape(-1) for k in ("open", "high", "low", "close", "volume")),
    ]
    payload = copy.encode(["int8", "int2", "timestamptz", "int8", "int8", "int8", "int8", "int8"], values)
    names = ["instrument_id", "publisher_id", "ts_event", "open", "high", "low", "close", "volume"]
    copy.copy_in(cur, f'"{schema}".ohlcv_1d', names, payload)
    return len(iid)


def baseline(frames: list[pd.DataFrame]) -> None:
    import pandas_ta as ta

    for f in frames:
        c = f["close"]
        ta.rsi(c, length=14, talib=False)
        ta.sma(c, length=20, talib=False)
        ta.ema(c, length=20, talib=False)
        ta.macd(c, fast=12, slow=26, signal=9, talib=False)
        ta.atr(f["high"], f["low"], c, length=14, talib=False)
        ta.bbands(c, length=20, lower_std=2, upper_std=2, ddof=0, talib=False)
        ta.stdev(ta.log_return(c, length=1), length=20, ddof=1, talib=False)


def run(args: argparse.Namespace) -> list[Row]:
    instruments = 500
    days = max(args.records // instruments, 40)
    symbols, index, data = generate(instruments, days)
    rows: list[Row] = []
    with common.database(args.database_url) as url, common.fresh_schema(url, "bench_features") as sch:
        print(f"[{BENCH}] {common.server_summary(url)}; schema {sch}", flush=True)
        sess = common.session(url, sch)
        conn = sess.connection()
        t0 = time.perf_counter()
        with transaction(conn) as cur:
            n = store_bars(cur, sch, index, data, slice(0, days))
            maps = [
                Mapping("raw_symbol", s, index[0].date(), (index[-1] + pd.Timedelta(days=1)).date(), FIRST_ID + i)
                for i, s in enumerate(symbols)
            ]
            load.upsert_symbology(cur, sch, DATASET, maps)
        common.analyze(url, sch, "ohlcv_1d")
        print(
            f"[{BENCH}] setup: stored {n:,} daily bars ({instruments} x {days}) in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        start, end = index[0], index[days]  # every stored bar; index[days] is the held-back new day

        frames = [
            pd.DataFrame(
                {
                    k: data[k][i, :days] / (1.0 if k == "volume" else 1e9)
                    for k in ("open", "high", "low", "close", "volume")
                },
                index=index[:days],
            )
            for i in range(instruments)
        ]
        baseline(frames[:2])  # import and first-call costs outside the timing

        reports: list[features.FeatureReport] = []
        table = features.table_name(SET, "1d")

        def truncate() -> None:
            with transaction(conn) as cur:
                cur.execute(f'DROP TABLE IF EXISTS "{sch}"."{table}"')
                cur.execute(f'DELETE FROM "{sch}".feature_sets')
            common.checkpoint(conn)

        def full() -> None:
            reports.append(features.compute(SET, symbols, "1d", start, end, session=sess))

        repeat = args.repeat
        timings = common.interleaved({"baseline": (lambda: baseline(frames), None), "full": (full, truncate)}, repeat)
        base, tot = timings["baseline"], timings["full"]
        last = reports[-1]
        assert last.rows == n and last.inserted == n, last
        split = ", ".join(f"{k} {v:.2f}s" for k, v in last.timings.items())
        print(f"[{BENCH}] baseline {base}; full {tot} ({split})", flush=True)
        rows.append(Row(BENCH, "pandas-ta only (baseline)", f"{base.best:.2f} s", note=f"{n:,} bars"))
        rows.append(
            Row(
                BENCH,
                "compute + store momentum_v1",
                f"{tot.best:.2f} s",
                base.best / tot.best,
                1 / 1.5,
                f"{tot.best / base.best:.2f}x the pandas-ta time; last run: {split}",
            )
        )

        # incremental: one new bar per instrument
        with transaction(conn) as cur:
            store_bars(cur, sch, index, data, slice(days, days + 1))
        new_lo, new_hi = index[days], index[days] + pd.Timedelta(days=1)
        states = features.state_table_name(SET, "1d")
        with transaction(conn) as cur:  # the states saved by the last full run, after the last stored day
            cur.execute(f'CREATE TABLE "{sch}".saved_states AS SELECT * FROM "{sch}"."{states}"')

        def forget_new_day() -> None:
            with transaction(conn) as cur:
                cur.execute(f'DELETE FROM "{sch}"."{table}" WHERE event_timestamp >= %s', (new_hi.to_pydatetime(),))
                cur.execute(f'DELETE FROM "{sch}"."{states}"')
                cur.execute(f'INSERT INTO "{sch}"."{states}" SELECT * FROM "{sch}".saved_states')

        inc_reports: list[features.FeatureReport] = []

        def incremental() -> None:
            inc_reports.append(features.compute(SET, symbols, "1d", new_lo, new_hi, session=sess))

        inc = common.best_of(incremental, repeat, setup=forget_new_day)
        if args.profile:
            forget_new_day()
            common.profile(incremental)
        r = inc_reports[-1]
        assert r.rows == r.inserted == r.resumed == instruments, r
        split = ", ".join(f"{k} {v:.2f}s" for k, v in r.timings.items())
        print(f"[{BENCH}] incremental {inc} ({split})", flush=True)
        rows.append(
            Row(
                BENCH,
                f"incremental: 1 new day x {instruments}",
                f"{inc.best:.2f} s",
                2.0 / inc.best,
                1.0,
                f"target < 2 s; resumed from saved states, {r.bars_read:,} bars read; last run: {split}",
            )
        )
        sess.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    return common.bench_main(
        argv, __doc__ or "", run, lambda a: f"features: momentum_v1 on {a.records:,} daily bars", repeat=2
    )


if __name__ == "__main__":
    raise SystemExit(main())
