"""Shared benchmark helpers: database URL / embedded server, fresh schemas, synthetic OHLCV-1m
records encoded as real DBN, a best-of-N timer and the result table.

Benchmarks print *ratios against baselines measured in the same run*; targets are reported as
MET / MISSED, never asserted, and every benchmark exits 0 once it has run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hdi_lab.config import load_settings
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import empty_records, encode_dbn
from hdi_lab.schemas import Schema
from hdi_lab.storage import normalise
from hdi_lab.storage.tables import TABLES

ROOT = Path(__file__).resolve().parents[1]

URL_ENV = "HDI_BENCH_DATABASE_URL"
MIN_NS = 60_000_000_000
DAY_NS = 86_400_000_000_000


# -- command line ---------------------------------------------------------------------------


def parser(description: str, *, records: int = 1_000_000, repeat: int = 3) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--database-url", default=None, help=f"PostgreSQL URL (default ${URL_ENV}, else a temporary embedded server)"
    )
    p.add_argument("--records", type=int, default=records, help=f"records to generate (default {records:,})")
    p.add_argument("--repeat", type=int, default=repeat, help=f"timed repetitions, best is kept (default {repeat})")
    p.add_argument("--instruments", type=int, default=10, help="instruments in the synthetic data (default 10)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this path (used by run_all)")
    p.add_argument("--profile", action="store_true", help="cProfile the hdi_lab side once and print the top")
    return p


# -- database -------------------------------------------------------------------------------


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    """``url``, else $HDI_BENCH_DATABASE_URL, else a throwaway embedded server (stopped at the end)."""
    url = url or os.environ.get(URL_ENV)
    if url:
        yield url
        return
    from hdi_lab.storage.embedded import EmbeddedServer

    home = Path(tempfile.mkdtemp(prefix="hdi-bench-"))
    server = EmbeddedServer(home)
    print(f"[bench] no --database-url / ${URL_ENV}: starting the embedded server in {home}", flush=True)
    try:
        yield server.start()
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block (a benchmark script's own process), restoring them after."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def fresh_schema(url: str, prefix: str = "bench") -> Iterator[str]:
    """A new, unused schema name; the schema (whoever created it) is dropped at the end."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.close()


def session(url: str, schema: str, **extra: object) -> HdiSession:
    """An hdi_lab session on ``schema`` (migrated on first connection), ignoring the caller's HDI_* env; without
    the read cache unless ``extra`` says otherwise (the benchmarks measure the database path; bench_cache the
    cache)."""
    return HdiSession(load_settings({"database_url": url, "db_schema": schema, "cache": False, **extra}, environ={}))


def checkpoint(conn: psycopg2.extensions.connection) -> None:
    """CHECKPOINT so that one timed run does not pay for the previous run's dirty pages."""
    old = conn.autocommit
    conn.commit()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
    except psycopg2.Error:
        pass  # not a superuser: skip
    finally:
        conn.autocommit = old


def store_file(url: str, schema: str, path: Path) -> tuple[HdiSession, float, int]:
    """Ingest a DBN file with hdi_lab into ``schema`` and VACUUM ANALYZE it for querying.

    Returns (session, seconds, rows inserted)."""
    import hdi_lab

    sess = session(url, schema)
    t0 = time.perf_counter()
    report = hdi_lab.ingest(provider="file", path=str(path), session=sess)
    seconds = time.perf_counter() - t0
    analyze(url, schema, "ohlcv_1m")
    return sess, seconds, report.inserted


def analyze(url: str, schema: str, bars_table: str) -> None:
    """VACUUM ANALYZE the bars table and ANALYZE symbology after a bulk load (untimed setup)."""
    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'VACUUM ANALYZE "{schema}".{bars_table}')
        cur.execute(f'ANALYZE "{schema}".symbology')
    admin.close()


def bench_main(
    argv: list[str] | None,
    doc: str,
    run: Callable[[argparse.Namespace], list[Row]],
    title: Callable[[argparse.Namespace], str],
    **defaults: int,
) -> int:
    """Shared ``main``: parse the common options, run, print the table, write JSON."""
    args = parser(doc.splitlines()[0], **defaults).parse_args(argv)
    rows = run(args)
    print_table(rows, title(args))
    write_json(args.json, rows)
    return 0


def server_summary(url: str) -> str:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
            cur.execute("SHOW fsync")
            fsync = cur.fetchone()[0]
            cur.execute("SHOW synchronous_commit")
            sync = cur.fetchone()[0]
            cur.execute("SHOW shared_buffers")
            sb = cur.fetchone()[0]
    finally:
        conn.close()
    return f"PostgreSQL {version.split()[0]} (fsync={fsync}, synchronous_commit={sync}, shared_buffers={sb})"


# -- synthetic OHLCV-1m data ----------------------------------------------------------------

# (symbol, price level, tick in 1e-9 fixed point, daily log-vol, typical volume per minute)
_UNIVERSE = [
    ("ESM4", 4800.0, 250_000_000, 0.011, 1500),
    ("NQM4", 16800.0, 250_000_000, 0.014, 500),
    ("YMM4", 37500.0, 1_000_000_000, 0.010, 150),
    ("RTYM4", 2000.0, 100_000_000, 0.016, 200),
    ("CLM4", 72.0, 10_000_000, 0.022, 900),
    ("GCM4", 2050.0, 100_000_000, 0.009, 300),
    ("ZNM4", 111.0, 15_625_000, 0.004, 1200),
    ("ZBM4", 121.0, 31_250_000, 0.007, 400),
    ("6EM4", 1.10, 50_000, 0.005, 800),
    ("SIN4", 23.5, 5_000_000, 0.018, 120),
]


@dataclasses.dataclass
class Dataset:
    """Synthetic OHLCV-1m bars: DBN records (ts-ordered, as Databento sends them) plus metadata."""

    records: np.ndarray
    symbols: list[str]
    instrument_ids: list[int]
    dataset: str
    start_ns: int
    end_ns: int

    def mappings(self) -> dict[str, list[tuple[dt.date, dt.date, int]]]:
        d0 = dt.datetime.fromtimestamp(self.start_ns / 1e9, dt.UTC).date()
        d1 = dt.datetime.fromtimestamp((self.end_ns - 1) / 1e9, dt.UTC).date() + dt.timedelta(days=1)
        return {s: [(d0, d1, i)] for s, i in zip(self.symbols, self.instrument_ids, strict=True)}

    def dbn_bytes(self, *, compress: bool = False) -> bytes:
        return encode_dbn(
            dataset=self.dataset,
            schema=Schema.OHLCV_1M,
            stype_in="raw_symbol",
            start=self.start_ns,
            end=self.end_ns,
            symbols=self.symbols,
            mappings=self.mappings(),
            records=self.records,
            compress=compress,
        )

    def write(self, folder: Path, *, compress: bool = False) -> Path:
        path = folder / ("bars.ohlcv-1m.dbn.zst" if compress else "bars.ohlcv-1m.dbn")
        path.write_bytes(self.dbn_bytes(compress=compress))
        return path

    def ts_range(self) -> tuple[np.datetime64, np.datetime64]:
        return np.datetime64(self.start_ns, "ns"), np.datetime64(self.end_ns, "ns")

    def middle_week(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """One week (Monday to Monday) in the middle of the data: the small-query window."""
        lo = pd.Timestamp(self.start_ns, unit="ns", tz="UTC")
        hi = pd.Timestamp(self.end_ns, unit="ns", tz="UTC")
        mid = (lo + (hi - lo) / 2).normalize()
        w_lo = max(mid - pd.Timedelta(days=mid.day_of_week), lo.normalize())
        return w_lo, w_lo + pd.Timedelta(days=7)


def with_dbn_file(
    args: argparse.Namespace, bench: str, work: Callable[[argparse.Namespace, Dataset, Path], list[Row]]
) -> list[Row]:
    """Generate ``args.records`` OHLCV-1m bars, write them as a DBN file in a temp folder, run ``work``."""
    print(f"[{bench}] generating {args.records:,} OHLCV-1m records over {args.instruments} instruments", flush=True)
    data = generate_ohlcv(args.records, args.instruments)
    with tempfile.TemporaryDirectory(prefix=f"hdi-bench-{bench}-") as tmp:
        return work(args, data, data.write(Path(tmp)))


def session_minutes(start_ns: int, count: int) -> np.ndarray:
    """The first ``count`` CME-Globex-like minutes from ``start_ns`` (a Sunday 00:00 UTC):
    Sun 23:00 -> Fri 22:00 UTC with a daily 22:00-23:00 break."""
    days = count // (23 * 60) * 7 // 5 + 14
    t = start_ns + np.arange(days * 1440, dtype=np.int64) * MIN_NS
    minute = (t // MIN_NS) % 1440
    weekday = ((t // DAY_NS) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    open_ = (minute < 22 * 60) | (minute >= 23 * 60)
    open_ &= weekday != 5  # Saturday
    open_ &= ~((weekday == 6) & (minute < 23 * 60))  # Sunday before 23:00
    open_ &= ~((weekday == 4) & (minute >= 22 * 60))  # Friday after 22:00
    out = t[open_]
    assert len(out) >= count
    return out[:count]


def generate_ohlcv(n: int = 1_000_000, instruments: int = 10, seed: int = 7) -> Dataset:
    """``n`` realistic, OHLC-consistent 1-minute bars over ``instruments`` futures (vectorised).

    Each instrument follows a geometric random walk on its tick grid; ~4% of minutes have no bar
    (no trade), so instruments do not share an identical grid; open = previous close +- a tick or two;
    high/low extend max/min(open, close) by a few ticks; volume is log-normal. Records are in
    (ts_event, instrument_id) order, like a Databento multi-symbol file.
    """
    if not 1 <= instruments <= len(_UNIVERSE):
        raise ValueError(f"instruments must be 1..{len(_UNIVERSE)}")
    rng = np.random.default_rng(seed)
    start_ns = int(np.datetime64("2024-01-07T00:00", "ns").astype(np.int64))  # a Sunday
    counts = [n // instruments + (1 if i < n % instruments else 0) for i in range(instruments)]
    grid = session_minutes(start_ns, int(max(counts) / 0.96) + 10)
    recs = empty_records(Schema.OHLCV_1M, n)
    pos = 0
    ids = []
    for i, (_sym, level, tick, vol, vpm) in enumerate(_UNIVERSE[:instruments]):
        m = counts[i]
        iid = 42_000_000 + 1_000 * i + 17
        ids.append(iid)
        ts = np.sort(rng.choice(len(grid), size=m, replace=False))
        sigma = vol / np.sqrt(1380)
        path = level * np.exp(np.cumsum(rng.normal(0.0, sigma, m)))
        close = np.maximum(np.round(path * 1e9 / tick).astype(np.int64), 10) * tick
        gap = rng.integers(-1, 2, m) * tick * (rng.random(m) < 0.3)
        open_ = np.concatenate(([close[0]], close[:-1])) + gap
        open_ = np.maximum(open_, tick)
        wick = np.abs(rng.normal(0.0, sigma * 0.6, (2, m))) * path * 1e9 // tick
        high = np.maximum(open_, close) + wick[0].astype(np.int64) * tick
        low = np.maximum(np.minimum(open_, close) - wick[1].astype(np.int64) * tick, tick)
        sl = slice(pos, pos + m)
        recs["publisher_id"][sl] = 1  # GLBX.MDP3
        recs["instrument_id"][sl] = iid
        recs["ts_event"][sl] = grid[ts].astype(np.uint64)
        recs["open"][sl] = open_
        recs["high"][sl] = high
        recs["low"][sl] = low
        recs["close"][sl] = close
        recs["volume"][sl] = np.maximum(rng.lognormal(np.log(vpm), 0.8, m), 1).astype(np.uint64)
        pos += m
    recs = recs[np.lexsort((recs["instrument_id"], recs["ts_event"]))]
    end_ns = int(recs["ts_event"].max()) + MIN_NS
    syms = [u[0] for u in _UNIVERSE[:instruments]]
    return Dataset(recs, syms, ids, "GLBX.MDP3", start_ns, end_ns)


def canonical_columns(records: np.ndarray, schema: Schema) -> normalise.Columns:
    """What ``hdi_lab.core.ingestion`` does between decoding and COPY-encoding a batch of market records:
    key sort, duplicate numbering and normalisation into the table's columns."""
    records = records[normalise.key_order(records, schema)]
    return normalise.normalise(records, TABLES[schema], normalise.DupCounter(schema).assign(records))


# -- timing ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    times: list[float]

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def __str__(self) -> str:
        return f"best {self.best:.3f}s (runs: {', '.join(f'{t:.3f}' for t in self.times)})"


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def best_of(
    fn: Callable[[], object],
    repeat: int,
    setup: Callable[[], object] | None = None,
    check: Callable[[object], None] | None = None,
) -> Timing:
    """Run ``setup`` (untimed) then ``fn`` (timed) ``repeat`` times; ``check`` sees each result."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t, out = timed(fn)
        if check is not None:
            check(out)
        times.append(t)
    return Timing(times)


def interleaved(
    cases: dict[str, tuple[Callable[[], object], Callable[[], object] | None]],
    repeat: int,
    checks: dict[str, Callable[[object], None]] | None = None,
) -> dict[str, Timing]:
    """Like :func:`best_of` for several cases, alternating them (A B A B ...) so that drift in the
    machine or the server hits all cases alike."""
    out: dict[str, Timing] = {k: Timing([]) for k in cases}
    for _ in range(repeat):
        for name, (fn, setup) in cases.items():
            if setup is not None:
                setup()
            t, res = timed(fn)
            if checks and name in checks:
                checks[name](res)
            out[name].times.append(t)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# -- results --------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    bench: str
    case: str
    value: str  # measured figure, formatted
    ratio: float | None = None  # measured / baseline (higher is better)
    target: float | None = None  # ratio target (>=)
    note: str = ""

    @property
    def status(self) -> str:
        if self.ratio is None or self.target is None:
            return ""
        return "MET" if self.ratio >= self.target else "MISSED"


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} rows/s"


def print_table(rows: Sequence[Row], title: str = "Summary") -> None:
    head = ("bench", "case", "measured", "ratio", "target", "status", "note")
    body = [
        (
            r.bench,
            r.case,
            r.value,
            "" if r.ratio is None else f"{r.ratio:.2f}x",
            "" if r.target is None else f">= {r.target:g}x",
            r.status,
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = "+".join("-" * (w + 2) for w in widths)
    print(f"\n== {title} ==")
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print(line)
    for b in body:
        print(" | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)))
    print(flush=True)


def write_json(path: str | None, rows: Sequence[Row]) -> None:
    if path:
        Path(path).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))


def read_json(path: str | Path) -> list[Row]:
    return [Row(**d) for d in json.loads(Path(path).read_text())]


def profile(fn: Callable[[], object], top: int = 25) -> None:
    """cProfile one call of ``fn`` and print the functions with the most cumulative time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(top)
