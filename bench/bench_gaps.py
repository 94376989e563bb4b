"""Gaps over 100 instruments x 5 years of CME sessions: ``hdi_lab.gaps`` from the bar counts vs counting rows.

Setup (untimed), straight in SQL so that it fits in a minute or two: ``--gap-instruments`` instruments (default
100) with symbology, 1-minute bars on every CME session of ``--years`` years (default 5: ~1,260 sessions, 126k
instrument-sessions) one every ``--every`` minutes (default 30; 1 would be 174M rows, hours to store), and an
ingest log of one chunk per UTC day for all symbols, as a Databento daily plan writes it. A few days are left
out of the log (not_ingested) and a few instrument-sessions have no bars (empty); the partial threshold is
scaled to the thinned density (``0.5 / every``), so the other sessions are complete. The bars are written in
plain SQL, not by the loader, so their counts are built by ``hdi_lab.storage.counts.repair`` (untimed, printed).
Then VACUUM ANALYZE.

* gaps: ``hdi_lab.gaps("ohlcv-1m", <all symbols>, start, end, partial=0.5 / every)``: symbology, the ingest
  log merged per symbol (``range_agg``), the calendar's sessions, the bar counts of every instrument-day read
  in one binary COPY and summed per session window (prefix sums), the reasons. Target < 1 s. Its cost does not
  depend on the bar density: a count row (one per instrument and UTC day, 384 bytes) is the same at one bar a
  minute as at one bar every 30 minutes (run ``--every 10`` to see it).
* counted: the same call with the table marked stale, so that every window is counted in the bar table (one
  primary-key range count per instrument-session: what gaps did before the counts; it grows with the rows).
* baseline: ``SELECT instrument_id, <CME session date>, count(*) ... GROUP BY 1, 2`` over the same rows (one
  sequential pass, no calendar, no coverage): the ratio is baseline / gaps (higher is better).
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
from hdi_lab.storage import counts

BENCH = "gaps"
DATASET = "GLBX.MDP3"
FIRST = pd.Timestamp("2019-01-01")


def _setup(url: str, schema: str, instruments: int, years: int, every: int) -> tuple[list[str], str, str, int]:
    """Store the synthetic coverage; returns (symbols, start, end, bars stored)."""
    last = FIRST + pd.DateOffset(years=years) - pd.Timedelta(days=1)
    days = calendars.sessions("CMES", FIRST.date(), last.date(), halts=True)
    opens = [t.to_pydatetime() for t in days["open"]]
    # bars up to the 16:00 Chicago halt (the session's last hour)
    ends = [t.to_pydatetime() for t in days["close"] - pd.Timedelta(hours=1)]
    symbols = [f"SYM{i:03d}" for i in range(instruments)]
    sess = common.session(url, schema)
    sess.connection()  # migrates the schema
    sess.close()
    conn = psycopg2.connect(url)
    s = f'"{schema}"'
    with conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {s}.symbology (dataset, stype, symbol, d0, d1, instrument_id) "
            "SELECT %s, 'raw_symbol', sym, %s, %s, 1000 + n FROM unnest(%s::text[]) WITH ORDINALITY AS u(sym, n)",
            (DATASET, (FIRST - pd.Timedelta(days=31)).date(), (last + pd.Timedelta(days=31)).date(), symbols),
        )
        cur.execute(
            f"INSERT INTO {s}.ohlcv_1m (instrument_id, publisher_id, ts_event, open, high, low, close, volume) "
            "SELECT 1000 + i, 1, ts, 1, 1, 1, 1, 1 FROM generate_series(1, %s) AS i, "
            "unnest(%s::timestamptz[], %s::timestamptz[]) AS w(lo, hi), "
            "generate_series(w.lo, w.hi - interval '1 minute', make_interval(mins => %s)) AS ts",
            (instruments, opens, ends, every),
        )
        stored = cur.rowcount
        # empty: instrument 1001's sessions of one week (its days stay logged)
        cur.execute(
            f"DELETE FROM {s}.ohlcv_1m WHERE instrument_id = 1001 AND ts_event >= %s AND ts_event < %s",
            (
                pd.Timestamp("2020-03-08", tz="UTC").to_pydatetime(),
                pd.Timestamp("2020-03-14", tz="UTC").to_pydatetime(),
            ),
        )
        # the ingest log: one chunk per UTC day for every symbol, but three days never fetched
        cur.execute(
            f"INSERT INTO {s}.ingest_log (chunk_key, provider, dataset, schema, stype_in, symbols, start_ts, end_ts, "
            "fetched, inserted, updated, duplicates, quarantined, seconds) "
            "SELECT 'bench-' || d::date, 'databento', %s, 'ohlcv-1m', 'raw_symbol', %s, d, d + interval '1 day', "
            "0, 0, 0, 0, 0, 0 FROM generate_series(%s::timestamptz, %s::timestamptz, interval '1 day') AS d "
            "WHERE d::date NOT IN ('2021-06-15', '2021-06-16', '2022-11-02')",
            (DATASET, symbols, (FIRST - pd.Timedelta(days=1)).tz_localize("UTC"), last.tz_localize("UTC")),
        )
    conn.close()
    conn = psycopg2.connect(url)
    t0 = time.perf_counter()
    written = counts.repair(conn, schema, "ohlcv_1m")
    conn.close()
    print(f"[{BENCH}] setup: counts of {written:,} instrument-days rebuilt in {time.perf_counter() - t0:.1f}s")
    common.analyze(url, schema, "ohlcv_1m")
    common.analyze(url, schema, "bar_counts")
    return symbols, str(FIRST.date()), str((last + pd.Timedelta(days=1)).date()), stored


def run(args: argparse.Namespace) -> list[Row]:
    n_inst, years, every = args.gap_instruments, args.years, args.every
    partial = 0.5 / every
    rows: list[Row] = []
    with common.database(args.database_url) as url, common.fresh_schema(url, "bench_gaps") as sch:
        print(f"[{BENCH}] {common.server_summary(url)}; schema {sch}", flush=True)
        t0 = time.perf_counter()
        symbols, start, end, stored = _setup(url, sch, n_inst, years, every)
        print(
            f"[{BENCH}] setup: {stored:,} bars of {n_inst} instruments in {time.perf_counter() - t0:.1f}s", flush=True
        )
        sess = common.session(url, sch)
        calendars.sessions("CMES", start, start)  # the calendar is built once per process (0.15-0.4 s): not timed
        found: list[pd.DataFrame] = []

        def gaps() -> object:
            frame = hdi_lab.gaps("ohlcv-1m", symbols, start, end, dataset=DATASET, partial=partial, session=sess)
            found.append(frame)
            return frame

        conn = sess.connection()
        stale = f'"{sch}".bar_counts_stale'

        def counted() -> object:
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {stale} (bar_table) VALUES ('ohlcv_1m')")
            conn.commit()
            try:
                return hdi_lab.gaps("ohlcv-1m", symbols, start, end, dataset=DATASET, partial=partial, session=sess)
            finally:
                with conn.cursor() as cur:
                    cur.execute(f"DELETE FROM {stale}")
                conn.commit()

        def baseline() -> object:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT instrument_id, ((ts_event AT TIME ZONE 'America/Chicago') + interval '7 hours')::date, "
                    f'count(*) FROM "{sch}".ohlcv_1m GROUP BY 1, 2'
                )
                out = cur.fetchall()
            conn.commit()
            return out

        timing = common.interleaved(
            {"gaps": (gaps, None), "counted": (counted, None), "baseline": (baseline, None)}, args.repeat
        )
        found.append(counted())  # the frames must be equal
        if not found[-2].equals(found[-1]):
            print(f"[{BENCH}] WARNING: gaps from the counts differ from gaps counted in the table", flush=True)
        sess.close()
    frame = found[-2]
    windows = n_inst * len(calendars.sessions("CMES", start, str(pd.Timestamp(end) - pd.Timedelta(days=1))))
    reasons = frame["reason"].value_counts().to_dict()
    g, c, b = timing["gaps"].best, timing["counted"].best, timing["baseline"].best
    rows += [
        Row(BENCH, "baseline: count(*) GROUP BY instrument, session", f"{b:.2f}s", note=f"{stored:,} bars"),
        Row(BENCH, "hdi_lab.gaps counting the rows (counts stale)", f"{c:.2f}s", b / c, None, "gaps before the counts"),
        Row(
            BENCH,
            f"hdi_lab.gaps: {n_inst} instruments x {years} years",
            f"{g:.2f}s",
            b / g,
            None,
            f"{windows:,} instrument-sessions; gaps {reasons}",
        ),
        Row(
            BENCH,
            "hdi_lab.gaps < 1 s",
            f"{g:.2f}s",
            1.0 / g,
            1.0,
            f"bars every {every} min ({stored / max(windows, 1):.0f} a session, 1-minute: ~1380)",
        ),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    args_parser = common.parser(__doc__.splitlines()[0] if __doc__ else BENCH, repeat=3)
    args_parser.add_argument("--gap-instruments", type=int, default=100, help="instruments (default 100)")
    args_parser.add_argument("--years", type=int, default=5, help="years of CME sessions (default 5)")
    args_parser.add_argument("--every", type=int, default=30, help="one bar every N minutes (default 30)")
    args = args_parser.parse_args(argv)
    rows = run(args)
    common.print_table(rows, f"gaps: {args.gap_instruments} instruments x {args.years} years of CME sessions")
    common.write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
