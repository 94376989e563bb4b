"""Query 1M stored OHLCV-1m rows back: ``hdi_lab.query`` vs ``pandas.read_sql`` of the equivalent
SELECT through a SQLAlchemy engine; plus a 1-instrument, 1-week query repeated 50 times.

Setup (untimed): the rows are ingested with ``hdi_lab.ingest(provider="file")`` into a fresh
schema, then ``VACUUM ANALYZE`` (the steady state autovacuum would reach; both sides see it).

* full: ``hdi_lab.query("ohlcv-1m", symbols=<all>, start, end, session=...)`` -> 1M-row DataFrame
  (symbol as of each date, float prices, ts_event index) vs ``pandas.read_sql`` of the same rows
  (same symbol resolution via a join on the ``symbology`` table, same order, ``ts_event`` index;
  prices left as int64 fixed point, so the baseline does slightly less work).
* full vs ADBC (when ``adbc-driver-postgresql`` is installed, a dev dependency): ADBC running hdi_lab's own
  plan, i.e. the same SELECT (``hdi_lab.storage.read.statement``: one primary-key range scan per span, JIT off as
  hdi_lab runs it) fetched as an Arrow table, sorted client-side like hdi_lab (time, span) and converted to pandas:
  target hdi_lab within 1.2x (ratio >= 0.83).
* small: 1 instrument x 1 week (~6.6k rows), 200 interleaved runs after 3 warm-ups: p50 / p95 in ms of
  ``hdi_lab.query`` with ``session=``, without it (the default session, as the README shows it) and read_sql;
  every call reads from the server (no result cache). Targets: without session within 10% of with (ratio >=
  0.9), p50 < 5 ms.
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
from hdi_lab.core.session import HdiSession

BENCH = "query"
SMALL_REPS = 200


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
    with (
        common.database(args.database_url) as url,
        common.fresh_schema(url, "bench_query") as sch,
        # what calls without session= use (the server path: the read cache is bench_cache's)
        common.environment(HDI_DATABASE_URL=url, HDI_DB_SCHEMA=sch, HDI_CACHE="off"),
    ):
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

        def hdi_default(syms: list[str], a: pd.Timestamp, b: pd.Timestamp) -> pd.DataFrame:
            return hdi_lab.query("ohlcv-1m", symbols=syms, start=a, end=b)  # the default session

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
        cases: dict[str, tuple[Callable[[], object], None]] = {
            "hdi": (lambda: hdi_query(syms, lo, hi), None),
            "sql": (lambda: read_sql(syms, lo, hi), None),
        }
        closers: list[Callable[[], None]] = []
        adbc = _adbc(url, sess, syms, lo, hi, closers)
        if adbc is not None:
            cases["adbc"] = (adbc, None)
        else:
            print(f"[{BENCH}] adbc-driver-postgresql is not installed: no ADBC baseline", flush=True)
        print(f"[{BENCH}] full query ({n:,} rows), interleaved x{args.repeat} ...", flush=True)
        full = common.interleaved(
            cases,
            args.repeat,
            checks={"hdi": expect(n, "hdi_lab.query"), "sql": expect(n, "read_sql"), "adbc": expect(n, "ADBC")},
        )
        for name, timing in full.items():
            print(f"[{BENCH}]   {name:13s} {timing}", flush=True)

        print(
            f"[{BENCH}] small query ({one}, {w_lo.date()}..{w_hi.date()}, {n_small:,} rows) x{SMALL_REPS} ...",
            flush=True,
        )
        small_cases = {
            "hdi": (lambda: hdi_query([one], w_lo, w_hi), None),
            "default": (lambda: hdi_default([one], w_lo, w_hi), None),
            "sql": (lambda: read_sql([one], w_lo, w_hi), None),
        }
        for _ in range(3):  # warm-up
            for fn, _setup in small_cases.values():
                fn()
        small = common.interleaved(
            small_cases,
            SMALL_REPS,
            checks={k: expect(n_small, k) for k in small_cases},
        )
        ms = {k: np.asarray(v.times) * 1000 for k, v in small.items()}
        p = {k: (common.percentile(v, 50), common.percentile(v, 95)) for k, v in ms.items()}
        print(f"[{BENCH}]   hdi_lab.query session= p50 {p['hdi'][0]:.1f} ms p95 {p['hdi'][1]:.1f} ms", flush=True)
        print(f"[{BENCH}]   hdi_lab.query (default) p50 {p['default'][0]:.1f} ms p95 {p['default'][1]:.1f} ms")
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
        for close in closers:
            close()

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
            6,
            f"{full['hdi'].best:.2f}s",
        ),
    ]
    if "adbc" in full:
        a = full["adbc"].best
        rows += [
            Row(BENCH, "full: ADBC, hdi_lab's plan [baseline]", common.rate(n, a), note=f"{a:.2f}s"),
            Row(
                BENCH,
                "full: hdi_lab.query / ADBC",
                common.rate(n, full["hdi"].best),
                a / full["hdi"].best,
                0.83,
                f"{full['hdi'].best:.2f}s vs {a:.2f}s (target: within 1.2x)",
            ),
        ]
    rows += [
        Row(
            BENCH,
            "1 instr x 1 week: read_sql p50/p95 [baseline]",
            f"{p['sql'][0]:.1f} / {p['sql'][1]:.1f} ms",
            note=f"{n_small:,} rows, {SMALL_REPS} runs",
        ),
        Row(
            BENCH,
            "1 instr x 1 week: hdi_lab.query session= p50/p95",
            f"{p['hdi'][0]:.1f} / {p['hdi'][1]:.1f} ms",
            p["sql"][0] / p["hdi"][0],
            note="ratio = read_sql p50 / hdi p50; target p50 < 5 ms",
        ),
        Row(
            BENCH,
            "1 instr x 1 week: hdi_lab.query (no session=) p50/p95",
            f"{p['default'][0]:.1f} / {p['default'][1]:.1f} ms",
            p["hdi"][0] / p["default"][0],
            0.9,
            "ratio = with session p50 / without p50",
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


def _adbc(
    url: str, sess: HdiSession, syms: list[str], lo: pd.Timestamp, hi: pd.Timestamp, closers: list[Callable[[], None]]
) -> Callable[[], pd.DataFrame] | None:
    """ADBC running hdi_lab's plan for the full query (see the module), or None without the driver."""
    try:
        import adbc_driver_postgresql.dbapi as adbc
    except ImportError:
        return None
    from hdi_lab.core import retrieval
    from hdi_lab.schemas import Schema
    from hdi_lab.storage import read

    syms_t = tuple(syms)
    spans = retrieval.resolve(sess, syms_t, lo, hi, None)
    text = read.statement(sess.connection(), sess.schema, Schema.OHLCV_1M, spans)
    several = len(spans) > 1

    conn = adbc.connect(url)
    with conn.cursor() as cur:
        cur.execute("SET jit = off")  # as hdi_lab runs a read this long
    conn.commit()
    closers.append(conn.close)

    def run() -> pd.DataFrame:
        with conn.cursor() as cur:
            cur.execute(text)
            table = cur.fetch_arrow_table()
        conn.commit()
        ts = table.column("ts_event").to_numpy()
        keys = [table.column(0).to_numpy(), ts] if several else [ts]  # time, then span (its symbol, instrument)
        table = table.take(np.lexsort(keys))
        return table.to_pandas().set_index("ts_event")

    return run


def main(argv: list[str] | None = None) -> int:
    return common.bench_main(argv, __doc__ or "", run, lambda a: f"query: {a.records:,} OHLCV-1m rows stored", repeat=5)


if __name__ == "__main__":
    raise SystemExit(main())
