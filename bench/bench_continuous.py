"""Continuous futures: ``hdi_lab.continuous`` vs plain queries of the same rows (20 years daily, 1 year 1-minute).

Setup (untimed), straight in SQL: 80 quarterly ES-like contracts (H/M/U/Z of 2005-2024, expiring on the third
Friday at 13:30 UTC, listed a year before) with their definitions in the instrument master and a daily bar
(00:00 UTC) on every CME session each is listed; for 2024 also 1-minute bars of every minute of the CME
sessions while each contract is in its last ``--minute-days`` days (default 100: two contracts overlap, so
every roll has both contracts' closes). Then VACUUM ANALYZE.

* daily: ``hdi_lab.continuous(root, "ohlcv-1d", 2005-01-01, 2025-01-01, adjust="ratio")`` (calendar roll, 80
  contracts, ~79 rolls), warm (best of ``--repeat`` after one untimed run). Target < 50 ms. Its baseline is the
  plain ``hdi_lab.query`` of the same rows, one query per contract segment (what a user would run by hand).
* 1-minute: ``hdi_lab.continuous(root, "ohlcv-1m", 2024-01-01, 2025-01-01, adjust=...)`` against the plain
  ``hdi_lab.query`` of the same rows (one query per segment, over the segment's exact window), interleaved:
  the ratio is baseline / continuous (target >= 0.67x, i.e. continuous < 1.5x the plain query). The volume
  rule, which sums every listed contract's volume per session, is reported too (no target).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Row

import hdi_lab
from hdi_lab import calendars
from hdi_lab.core.session import HdiSession

BENCH = "continuous"
DATASET = "GLBX.MDP3"
ROOT = "ES"
MONTHS = {3: "H", 6: "M", 9: "U", 12: "Z"}


def _third_friday(year: int, month: int) -> pd.Timestamp:
    first = pd.Timestamp(year=year, month=month, day=1)
    return first + pd.Timedelta(days=(4 - first.weekday()) % 7 + 14)


def _contracts(first_year: int, last_year: int) -> list[tuple[str, int, pd.Timestamp, pd.Timestamp]]:
    """(symbol, instrument_id, activation, expiration) of the quarterly contracts, H of first_year .. H after."""
    out = []
    for year in range(first_year, last_year + 2):
        for month, code in MONTHS.items():
            if year == last_year + 1 and month > 3:
                break
            exp = (_third_friday(year, month) + pd.Timedelta(hours=13, minutes=30)).tz_localize("UTC")
            out.append((f"{ROOT}{code}{year % 100:02d}", 700_000 + len(out), exp - pd.Timedelta(days=365), exp))
    return out


def _setup(url: str, schema: str, minute_days: int) -> tuple[int, int, int]:
    """Definitions, daily bars (2005-2024) and 2024's 1-minute bars; returns (contracts, daily, minute rows)."""
    contracts = _contracts(2005, 2024)
    sess = common.session(url, schema)
    sess.connection()  # migrates the schema (publishers included)
    sess.close()
    days = calendars.sessions("CMES", "2004-01-01", "2025-03-31")
    labels = [d.to_pydatetime().replace(tzinfo=None).date() for d in days["session"]]
    conn = psycopg2.connect(url)
    s = f'"{schema}"'
    with conn, conn.cursor() as cur:
        for k, (sym, iid, act, exp) in enumerate(contracts):
            cur.execute(
                f"INSERT INTO {s}.instruments (publisher_id, instrument_id, ts_recv_ns, ts_recv, ts_event_ns, dataset, "
                "raw_symbol, instrument_class, security_type, asset, exchange, currency, expiration, activation, "
                "min_price_increment, record) VALUES (1, %s, %s, %s, %s, %s, %s, 'F', 'FUT', %s, 'XCME', 'USD', %s, "
                "%s, 250000000, '{}'::jsonb)",
                (iid, act.value, act.to_pydatetime(), act.value, DATASET, sym, ROOT, exp.to_pydatetime(),
                 act.to_pydatetime()),
            )  # fmt: skip
            listed = [d for d in labels if act.date() <= d <= exp.date()]
            cur.execute(
                f"INSERT INTO {s}.ohlcv_1d (instrument_id, publisher_id, ts_event, open, high, low, close, volume) "
                "SELECT %s, 1, d::timestamp AT TIME ZONE 'UTC', p - 1000000000, p + 2000000000, p - 3000000000, p, "
                "100000 + n FROM unnest(%s::date[]) WITH ORDINALITY AS u(d, n), "
                "LATERAL (SELECT (1000 + 10 * %s + n %% 40)::int8 * 1000000000 AS p) AS price",
                (iid, listed, k),
            )
        cur.execute(f"SELECT count(*) FROM {s}.ohlcv_1d")
        daily = int(cur.fetchone()[0])  # type: ignore[index]
        # 2024's 1-minute bars: each contract over its last `minute_days` days, every minute of the sessions
        year = days[(days["session"] >= "2024-01-01") & (days["session"] < "2025-03-31")]
        opens = [t.to_pydatetime() for t in year["open"]]
        closes = [t.to_pydatetime() for t in year["close"]]
        for k, (_, iid, _, exp) in enumerate(contracts):
            if exp.year < 2024 or exp > pd.Timestamp("2025-03-31", tz="UTC"):
                continue
            lo = (exp - pd.Timedelta(days=minute_days)).to_pydatetime()
            cur.execute(
                f"INSERT INTO {s}.ohlcv_1m (instrument_id, publisher_id, ts_event, open, high, low, close, volume) "
                "SELECT %s, 1, ts, p, p + 250000000, p - 250000000, p, 10 + (extract(minute FROM ts))::int8 "
                "FROM unnest(%s::timestamptz[], %s::timestamptz[]) AS w(lo, hi), "
                "generate_series(w.lo, w.hi - interval '1 minute', interval '1 minute') AS ts, "
                "LATERAL (SELECT (4000 + 10 * %s)::int8 * 1000000000 + (extract(epoch FROM ts)::int8 %% 400) "
                "* 250000000 AS p) AS price WHERE ts >= %s AND ts < %s",
                (iid, opens, closes, k, lo, exp.to_pydatetime()),
            )
        cur.execute(f"SELECT count(*) FROM {s}.ohlcv_1m")
        minute = int(cur.fetchone()[0])  # type: ignore[index]
    conn.close()
    common.analyze(url, schema, "ohlcv_1d")
    common.analyze(url, schema, "ohlcv_1m")
    return len(contracts), daily, minute


def _plain(sess: HdiSession, schema: str, segments: list[tuple[str, pd.Timestamp, pd.Timestamp]]) -> int:
    """The plain queries of the same rows: one ``hdi_lab.query`` per segment (symbol, lo, hi); rows read."""
    return sum(len(hdi_lab.query(schema, sym, lo, hi, dataset=DATASET, session=sess)) for sym, lo, hi in segments)


def _segments(frame: pd.DataFrame) -> list[tuple[str, pd.Timestamp, pd.Timestamp]]:
    """(symbol, first ts, last ts + 1 ns) of each contract segment of a continuous frame."""
    change = frame["instrument_id"].ne(frame["instrument_id"].shift())
    starts = [*frame.index[change], None]
    syms = list(frame["symbol"][change])
    out = []
    for sym, a, b in zip(syms, starts[:-1], starts[1:], strict=True):
        last = frame.index[frame.index < b][-1] if b is not None else frame.index[-1]
        out.append((sym, a, last + pd.Timedelta(1, "ns")))
    return out


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with common.database(args.database_url) as url, common.fresh_schema(url, "bench_continuous") as sch:
        print(f"[{BENCH}] {common.server_summary(url)}; schema {sch}", flush=True)
        t0 = time.perf_counter()
        n_contracts, n_daily, n_minute = _setup(url, sch, args.minute_days)
        print(
            f"[{BENCH}] setup: {n_contracts} contracts, {n_daily:,} daily and {n_minute:,} 1-minute bars "
            f"in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        sess = common.session(url, sch)
        calendars.sessions("CMES", "2024-01-02", "2024-01-02")  # the calendar is built once per process: untimed

        # --- 20 years of daily bars ---
        daily = ("ohlcv-1d", "2005-01-01", "2025-01-01")
        warm = hdi_lab.continuous(ROOT, *daily, adjust="ratio", session=sess)
        segs = _segments(warm)
        timing = common.interleaved(
            {
                "continuous": (lambda: hdi_lab.continuous(ROOT, *daily, adjust="ratio", session=sess), None),
                "plain": (lambda: _plain(sess, "ohlcv-1d", segs), None),
            },
            args.repeat,
        )
        c, p = timing["continuous"].best, timing["plain"].best
        rolls = len(warm.attrs["rolls"])
        rows += [
            Row(BENCH, "daily: plain query per segment", f"{p * 1000:.1f}ms", note=f"{len(segs)} queries"),
            Row(
                BENCH,
                "daily: continuous 20 years, ratio, warm",
                f"{c * 1000:.1f}ms",
                p / c,
                None,
                f"{len(warm):,} bars, {rolls} rolls, median {timing['continuous'].median * 1000:.1f}ms",
            ),
            Row(BENCH, "daily: continuous < 50 ms", f"{c * 1000:.1f}ms", 0.05 / c, 1.0),
        ]

        # --- 1 year of 1-minute bars ---
        minute = ("ohlcv-1m", "2024-01-01", "2025-01-01")
        warm_m = hdi_lab.continuous(ROOT, *minute, adjust="ratio", session=sess)
        segs_m = _segments(warm_m)
        assert _plain(sess, "ohlcv-1m", segs_m) == len(warm_m)
        cases = {
            "plain": (lambda: _plain(sess, "ohlcv-1m", segs_m), None),
            "none": (lambda: hdi_lab.continuous(ROOT, *minute, session=sess), None),
            "ratio": (lambda: hdi_lab.continuous(ROOT, *minute, adjust="ratio", session=sess), None),
            "volume": (lambda: hdi_lab.continuous(ROOT, *minute, roll="volume", adjust="ratio", session=sess), None),
        }
        timing = common.interleaved(cases, args.repeat)
        base = timing["plain"].best
        rows.append(
            Row(
                BENCH,
                "1-minute: plain query per segment",
                f"{base:.3f}s",
                note=f"{len(warm_m):,} rows, {len(segs_m)} queries",
            )
        )
        for name, label in (("none", "calendar, none"), ("ratio", "calendar, ratio"), ("volume", "volume, ratio")):
            t = timing[name].best
            rows.append(
                Row(
                    BENCH,
                    f"1-minute: continuous 1 year, {label}",
                    f"{t:.3f}s",
                    base / t,
                    None if name == "volume" else 1 / 1.5,
                    f"{t / base:.2f}x the plain query",
                )
            )
        sess.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0] if __doc__ else BENCH, repeat=5)
    p.add_argument("--minute-days", type=int, default=100, help="days of 1-minute bars before each expiry (100)")
    args = p.parse_args(argv)
    rows = run(args)
    common.print_table(rows, "continuous futures: 20 years daily, 1 year of 1-minute bars")
    common.write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
