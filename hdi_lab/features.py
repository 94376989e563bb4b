"""Feature sets: versioned sets of indicator columns, computed per instrument over stored bars and stored.

>>> from hdi_lab import features
>>> features.compute("momentum_v1", symbols=["AAPL"], interval="1d", start="2024-01-01", end="2024-07-01")
>>> features.read("momentum_v1", symbols=["AAPL"], start="2024-01-01", end="2024-07-01")

**Storage.** One wide table per (set, interval) in the hdi_lab schema, :func:`table_name`
(``features_momentum_v1_1d``): ``instrument_id bigint, event_timestamp timestamptz, created
timestamptz, symbol text`` and one ``double precision`` column per feature, primary key
``(instrument_id, event_timestamp)`` and an index ``(instrument_id, event_timestamp DESC, created
DESC)`` for as-of joins (Feast). The registry table ``feature_sets`` records each set and interval
computed (columns, JSON definition, table, created/updated). Warm-up values are NULL (NaN in
frames).

**Point in time.** A feature's ``event_timestamp`` is the *close* of its bar (``ts_event`` of the
bar, its open, plus the interval): the moment its value became knowable. A daily bar of
2024-01-02 gives features stamped 2024-01-03 00:00 UTC. Values use that bar and earlier ones only.

**Ranges.** :func:`compute` writes the features of the bars whose ``ts_event`` (open) lies in
``[start, end)`` -- the same bars ``hdi_lab.query`` returns for that range; :func:`read` selects
on ``event_timestamp`` in ``[start, end)`` (what was knowable in that window).

**Incremental and exact.** Every value is the one a computation from the instrument's *first
stored bar* gives, bit for bit, however the range is split: computing day by day stores exactly
what one full computation stores (tested). Two ways get there (all instruments at once,
:mod:`hdi_lab.indicators`):

* *resumed* -- after each computation the state of every instrument after its last computed bar
  is saved, in the same transaction as the rows, in :func:`state_table_name`
  (``features_state_momentum_v1_1d``: ``instrument_id`` key, ``ts_event`` the open of that bar,
  ``bars`` its bars up to it, ``symbol``, ``layout``, ``state float8[]``: the recursive averages,
  see :func:`hdi_lab.indicators.compute_resumable`). When ``start`` follows that bar (no stored
  bar between them) and the instrument still has ``bars`` stored bars up to it, only its last
  :func:`hdi_lab.indicators.history` bars (34 for momentum_v1, for the windows) and the new ones
  are read -- one query for all instruments -- and the recursive indicators continue from the
  state. ``bench/bench_features.py`` measures it (one new day for 500 instruments).
* *from the first bar* -- everything else: no state yet (first computation, new instrument), a
  range that does not follow the saved bar (a re-run of the past), a backfill of bars older
  than the saved one (the count differs: the state is not used), more than one stored row per
  bar (several publishers: the count never matches), ``max_gap`` given (it checks the whole
  history), rolled-up intervals (5m, 15m) and sets with indicators that cannot resume
  (``trend_v1``: ADX, stochastic, OBV, VWAP, z-score). An instrument whose history still fits in
  the window is simply computed from its first bar out of the window read.

Bars added or corrected in the past change later features: re-run over the affected range
(``start`` at or before the first changed bar: that run recomputes from the first bar and saves
new states). A correction *in place* of a bar before the saved one is not detected by the count:
re-run from it before computing newer bars. States belong to the stored rows: without the feature
table they are not used, and the computation that creates it starts a new state table.

**Idempotent.** Rows are upserted: ``created`` is the time of the computation that last changed a
row; a re-run that yields the same values updates nothing (``IS DISTINCT FROM``), so ``created``
only moves when a value changed.

**Gaps.** Windows count bars, not time (see :mod:`hdi_lab.indicators`): a gap in the bars is
not filled. The report gives the largest gap between consecutive bars read; ``max_gap="3D"``
refuses instruments with a longer gap (ValidationError naming the instrument and the gap).

**Intervals.** ``1s``, ``1m``, ``1h`` and ``1d`` read the stored bar tables (``ohlcv_1d``...);
``5m`` and ``15m`` read bars rolled up from ``ohlcv-1m`` (``hdi_lab.query(..., interval=...)``,
buckets aligned on midnight UTC). A rolled-up bucket is only final once all its minutes are
stored: compute up to an ``end`` on a bucket boundary that has been ingested.

**Symbols.** Features belong to instruments. Compute with raw or parent symbols: a continuous
symbol (``ES.c.0``) only reads the days it maps to each contract, which is a shorter history than
the contract's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql as pgsql

from hdi_lab import indicators

from hdi_lab.core import retrieval
from hdi_lab.errors import ValidationError
from hdi_lab.indicators import Column
from hdi_lab.schemas import INTERVALS, check_interval, parse_range, parse_time, require_symbols
from hdi_lab.core.session import HdiSession, with_session
from hdi_lab.storage import copy
from hdi_lab.storage.db import one, transaction
from hdi_lab.storage.symbology import resolve

__all__ = ["FEATURE_SETS", "INTERVALS", "FeatureReport", "FeatureSet", "compute", "list_sets", "read",
           "state_table_name", "table_name"]

STORED = ("1s", "1m", "1h", "1d")
HISTORY_START = pd.Timestamp("1970-01-01", tz="UTC")


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned set of indicator columns. Change a set only by adding a new version."""

    name: str
    version: int
    columns: tuple[str, ...]
    description: str = ""

    @property
    def resolved(self) -> tuple[Column, ...]:
        return indicators.columns(self.columns)

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "description": self.description,
                "columns": [c.to_json() for c in self.resolved]}


FEATURE_SETS: dict[str, FeatureSet] = {s.name: s for s in (
    FeatureSet("momentum_v1", 1, ("rsi_14", "sma_20", "ema_20", "macd_12_26_9", "macds_12_26_9", "atr_14",
                                  "bbu_20_2", "bbl_20_2", "logret_1", "vol_20"),
               "momentum, trend and volatility for bar-level models"),
    FeatureSet("trend_v1", 1, ("ret_1", "adx_14", "dmp_14", "dmn_14", "stochk_14_3_3", "stochd_14_3_3", "obv",
                               "vwap_d", "zscore_20"),
               "directional movement, oscillators and volume"),
)}


def feature_set(name: str) -> FeatureSet:
    fs = FEATURE_SETS.get(name)
    if fs is None:
        raise ValidationError(f"feature set {name!r} is not known: use one of {', '.join(FEATURE_SETS)}")
    return fs


def _max_gap(value: str | pd.Timedelta) -> pd.Timedelta:
    """A positive duration such as ``4D`` or ``2h``."""
    try:
        gap = pd.Timedelta(value)
        ok = gap is not pd.NaT and gap > pd.Timedelta(0)
    except (ValueError, TypeError, OverflowError):
        ok = False
    if not ok:
        raise ValidationError(f"max_gap={value!r} is not a positive duration: give one like 4D, 2h or 90min")
    return gap


def table_name(set_name: str, interval: str) -> str:
    """The table holding ``set_name`` at ``interval`` (unqualified; it lives in the hdi_lab schema)."""
    return f"features_{feature_set(set_name).name}_{check_interval(interval)}"


@dataclass
class FeatureReport:
    """What :func:`compute` did."""

    feature_set: str
    interval: str
    table: str
    start: pd.Timestamp
    end: pd.Timestamp
    instruments: int = 0
    bars_read: int = 0
    resumed: int = 0  # instruments continued from their saved state (the others: from their first bar)
    rows: int = 0  # feature rows in [start, end)
    inserted: int = 0
    updated: int = 0
    largest_gap: pd.Timedelta | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated

    def __str__(self) -> str:
        gap = f"; largest gap between bars {self.largest_gap}" if self.largest_gap is not None else ""
        return (f"{self.feature_set} {self.interval} -> {self.table}: {self.rows:,} rows for {self.instruments} "
                f"instrument(s) in [{self.start}, {self.end}): {self.inserted:,} inserted, {self.updated:,} "
                f"updated, {self.unchanged:,} unchanged ({self.bars_read:,} bars read, {self.seconds:.2f} s){gap}")


# -- bars -----------------------------------------------------------------------------------


def _bars(session: HdiSession, interval: str, symbols: tuple[str, ...], end: pd.Timestamp,
          dataset: str | None, inputs: Sequence[str], start: pd.Timestamp = HISTORY_START) -> pd.DataFrame:
    """The stored bars of the symbols in ``[start, end)`` (by default every one before ``end``), with
    the price/volume columns ``inputs`` only (less for the server to send)."""
    columns = ["symbol", "instrument_id", *inputs]
    if interval in STORED:
        return retrieval.query(session, f"ohlcv-{interval}", symbols, start, end, dataset=dataset,
                               columns=columns)
    return retrieval.query(session, "ohlcv-1m", symbols, start, end, dataset=dataset, interval=interval,
                           columns=columns)


def _by_instrument(bars: pd.DataFrame) -> list[tuple[int, str, pd.DataFrame]]:
    """(instrument_id, symbol, its bars in time order) for each instrument; one row per timestamp."""
    if bars.empty:
        return []
    iid = bars["instrument_id"].to_numpy(np.int64)
    ts = pd.DatetimeIndex(bars.index).asi8
    order = np.lexsort([ts, iid])
    iid, ts = iid[order], ts[order]
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = (iid[1:] != iid[:-1]) | (ts[1:] != ts[:-1])  # one symbol mapping to it is enough
    order, iid = order[keep], iid[keep]
    frame = bars.iloc[order]
    bounds = np.flatnonzero(np.diff(iid)) + 1
    out = []
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(iid)], strict=True):
        part = frame.iloc[lo:hi]
        out.append((int(iid[lo]), str(part["symbol"].iloc[0]), part))
    return out


# -- compute --------------------------------------------------------------------------------


def compute(set_name: str, symbols: str | Sequence[str], interval: str = "1d", start: object = None,
            end: object = None, *, dataset: str | None = None, max_gap: str | pd.Timedelta | None = None,
            session: HdiSession | None = None) -> FeatureReport:
    """Compute ``set_name`` for the bars of ``symbols`` whose open lies in ``[start, end)`` and store it.

    ``start`` defaults to the first stored bar, ``end`` to now. Values are those of a computation
    from each instrument's first stored bar, bit for bit: resumed from the state saved by the
    previous computation when ``start`` follows it, else computed from the first bar (see the
    module docstring). Only rows in the range are written, idempotently. Returns a
    :class:`FeatureReport` (``resumed``: instruments continued from their state; ``largest_gap``
    is over the bars read, only the window for those).
    """
    fs = feature_set(set_name)
    check_interval(interval)
    syms = require_symbols(symbols, "e.g. AAPL or ESH4")
    lo = parse_time(start, "start") if start is not None else HISTORY_START
    hi = parse_time(end, "end") if end is not None else pd.Timestamp.now(tz="UTC").as_unit("ns")
    parse_range(lo, hi)
    gap_limit = _max_gap(max_gap) if max_gap is not None else None
    return with_session(session, lambda s: _compute(s, fs, syms, interval, lo, hi, dataset, gap_limit))


def _compute(session: HdiSession, fs: FeatureSet, syms: tuple[str, ...], interval: str, lo: pd.Timestamp,
             hi: pd.Timestamp, dataset: str | None, gap_limit: pd.Timedelta | None) -> FeatureReport:
    t0 = time.perf_counter()
    cols = fs.resolved
    inputs = tuple(dict.fromkeys(i for c in cols for i in c.inputs))
    report = FeatureReport(fs.name, interval, table_name(fs.name, interval), lo, hi)
    layout = indicators.state_layout(cols)
    context = indicators.history(cols)
    saved: dict[int, _Saved] = {}
    if layout is not None and interval in STORED and gap_limit is None and lo > HISTORY_START:
        saved = _saved_states(session, fs, interval, syms, lo, hi, dataset, layout, context)
    t_states = time.perf_counter()
    plain: list[tuple[int, str, pd.DataFrame, int]] = []  # from the instrument's first bar
    resumed: list[tuple[int, str, pd.DataFrame, _Saved]] = []  # context bars + new ones, from a state
    largest = 0
    slow: set[int] = set()
    seen: set[int] = set()

    def take(bars: pd.DataFrame, mode: str) -> None:
        """Sort the instruments of a read: ``full`` all from their first bar; ``window`` (the last
        bars before lo) by their saved state; ``slow`` the ones ``window`` could not resume."""
        nonlocal largest
        report.bars_read += len(bars)
        for iid, symbol, part in _by_instrument(bars):
            if mode == "slow" and iid not in slow:
                continue
            ts = pd.DatetimeIndex(part.index).asi8
            largest = max(largest, _largest_gap(iid, symbol, ts, gap_limit))
            if iid not in seen:
                seen.add(iid)
                report.instruments += 1
            first = int(np.searchsorted(ts, lo.value))
            if first == len(ts):
                continue
            if mode != "window":
                plain.append((iid, symbol, part, first))
                continue
            s = saved.get(iid)
            before = ts[:first]
            if s is None or len(before) == 0 or before[-1] != s.ts_ns or \
                    int((before >= s.lower_ns).sum()) != min(context, s.bars):
                slow.add(iid)  # no state, or the window read does not hold the bars it was saved after
            elif s.bars > context:
                resumed.append((iid, s.symbol, part.iloc[first - context:], s))
            elif len(before) == s.bars:  # its whole history is in the window: computed from its first bar
                plain.append((iid, symbol, part, first))
            else:
                slow.add(iid)

    if saved:  # the last `context` bars before lo of each instrument (a few more of some), then the new ones
        window = pd.Timestamp(min(s.lower_ns for s in saved.values()), tz="UTC")
        take(_bars(session, interval, syms, hi, dataset, inputs, window), "window")
        if slow:  # instruments without a usable state: today's full read, for them only
            take(_bars(session, interval, syms, hi, dataset, inputs), "slow")
    else:
        take(_bars(session, interval, syms, hi, dataset, inputs), "full")
    t1 = time.perf_counter()
    step_ns = INTERVALS[interval] * 1_000_000_000
    ids: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    sym_codes: list[np.ndarray] = []
    values: list[np.ndarray] = []
    codes: dict[str, int] = {}  # symbol -> its code in the rows (insertion order = labels)
    states: list[tuple[int, int, int, str, np.ndarray]] = []  # instrument, last bar (ns), bars, symbol, state

    def emit(iid: int, symbol: str, ts: np.ndarray, feats: np.ndarray) -> None:
        ids.append(np.full(len(ts), iid, dtype=np.int64))
        stamps.append(ts + step_ns)
        sym_codes.append(np.full(len(ts), codes.setdefault(symbol, len(codes)), dtype=np.int32))
        values.append(feats)

    frames = [part for _, _, part, _ in plain]
    if layout is not None:
        computed, after = indicators.compute_resumable(frames, cols)
    else:
        computed, after = indicators.compute_many(frames, cols), np.empty((len(frames), 0))
    for (iid, symbol, part, first), feats, state in zip(plain, computed, after, strict=True):
        ts = pd.DatetimeIndex(part.index).asi8
        emit(iid, symbol, ts[first:], feats[first:])
        states.append((iid, int(ts[-1]), len(ts), symbol, state))
    if resumed:
        computed, after = indicators.compute_resumable(
            [part for _, _, part, _ in resumed], cols, context=context, state=np.array([s.state for *_, s in resumed]))
        for (iid, symbol, part, s), feats, state in zip(resumed, computed, after, strict=True):
            ts = pd.DatetimeIndex(part.index).asi8
            emit(iid, symbol, ts[context:], feats[context:])
            states.append((iid, int(ts[-1]), s.bars + len(ts) - context, symbol, state))
    report.resumed = len(resumed)
    report.largest_gap = pd.Timedelta(largest) if largest else None
    t2 = time.perf_counter()
    if ids:
        rows = _Rows(np.concatenate(ids), np.concatenate(stamps), np.concatenate(sym_codes), list(codes),
                     np.concatenate(values))
        report.rows = len(rows.ids)
    else:
        rows = None
    created = pd.Timestamp.now(tz="UTC").floor("us")
    with transaction(session.connection()) as cur:
        table, new = _ensure_table(cur, session.schema, fs, interval)
        if rows is not None and new:
            _copy_rows(cur, session.schema, table, cols, rows, created)
            report.inserted = len(rows.ids)
        elif rows is not None:
            report.inserted, report.updated = _upsert(cur, session.schema, table, cols, rows, created)
        if new:
            _add_keys(cur, session.schema, table)
        if layout is not None:
            _save_states(cur, session.schema, state_table_name(fs.name, interval), new, layout, states)
    t3 = time.perf_counter()
    report.timings = {"states": t_states - t0, "read": t1 - t_states, "compute": t2 - t1, "store": t3 - t2}
    report.seconds = t3 - t0
    return report


def _largest_gap(iid: int, symbol: str, ts: np.ndarray, gap_limit: pd.Timedelta | None) -> int:
    """The longest time between consecutive bars ``ts`` (ns); refuses one over ``gap_limit``."""
    if len(ts) < 2:
        return 0
    diffs = np.diff(ts)
    k = int(np.argmax(diffs))
    if gap_limit is not None and diffs[k] > gap_limit.value:
        raise ValidationError(
            f"instrument {iid} ({symbol}) has no bars between {pd.Timestamp(ts[k], tz='UTC')} and "
            f"{pd.Timestamp(ts[k + 1], tz='UTC')}, a gap longer than max_gap={gap_limit}: ingest the "
            "missing bars or raise max_gap")
    return int(diffs[k])


# -- saved states ---------------------------------------------------------------------------


def state_table_name(set_name: str, interval: str) -> str:
    """The table of saved indicator states next to :func:`table_name` (``features_state_momentum_v1_1d``)."""
    return f"features_state_{feature_set(set_name).name}_{check_interval(interval)}"


@dataclass(frozen=True)
class _Saved:
    """An instrument's saved state, still valid for its stored bars."""

    ts_ns: int  # the open of the last bar it was computed after
    bars: int  # the instrument's bars up to and including that one
    lower_ns: int  # the open of the first of its last min(context, bars) bars
    symbol: str  # the symbol its rows are stored under
    state: tuple[float, ...]


def _saved_states(session: HdiSession, fs: FeatureSet, interval: str, syms: tuple[str, ...], lo: pd.Timestamp,
                  hi: pd.Timestamp, dataset: str | None, layout: tuple[str, ...],
                  context: int) -> dict[int, _Saved]:
    """The saved states of the instruments of ``syms`` in ``[lo, hi)`` that are before ``lo``, with the
    layout of this hdi_lab, and whose instrument still has as many stored bars up to the state's bar
    as when it was saved (a backfill of older bars invalidates it). One query for all instruments,
    which also finds where each one's last ``context`` bars start."""
    q = pgsql.Identifier
    schema = session.schema
    conn = session.connection()
    with transaction(conn) as cur:
        cur.execute("SELECT to_regclass(%s), to_regclass(%s)",
                    (q(schema, table_name(fs.name, interval)).as_string(conn),
                     q(schema, state_table_name(fs.name, interval)).as_string(conn)))
        if None in one(cur):
            return {}
        missing: list[str] = []
        ids = sorted({sp.instrument_id for sp in resolve(cur, schema, syms, lo, hi, dataset, missing)})
        if missing or not ids:
            return {}  # the full path reports unknown symbols
        st = q(schema, state_table_name(fs.name, interval)).as_string(conn)
        bars = q(schema, f"ohlcv_{interval}").as_string(conn)
        cur.execute(
            f"SELECT s.instrument_id, s.ts_event, s.bars, s.symbol, s.state, c.n, w.lower FROM {st} s "
            f"CROSS JOIN LATERAL (SELECT count(*) AS n FROM {bars} b WHERE b.instrument_id = s.instrument_id "
            "AND b.ts_event <= s.ts_event) c "
            f"CROSS JOIN LATERAL (SELECT min(x.ts_event) AS lower FROM (SELECT b.ts_event FROM {bars} b "
            "WHERE b.instrument_id = s.instrument_id AND b.ts_event <= s.ts_event ORDER BY b.ts_event DESC "
            "LIMIT %s) x) w WHERE s.instrument_id = ANY(%s) AND s.ts_event < %s AND s.layout = %s",
            (context, ids, lo.to_pydatetime(), ",".join(layout)))
        rows = cur.fetchall()
    out = {}
    for iid, ts, n_bars, symbol, state, n, lower in rows:
        undefined = bool(np.isnan(np.asarray(state, dtype=np.float64)).any())  # in warm-up: cannot resume
        if int(n) != int(n_bars) or lower is None or len(state) != len(layout) or (n_bars > context and undefined):
            continue  # (an instrument with no more bars than the window is read from its first bar anyway)
        out[int(iid)] = _Saved(pd.Timestamp(ts).value, int(n_bars), pd.Timestamp(lower).value, str(symbol),
                               tuple(float(v) for v in state))
    return out


def _save_states(cur: psycopg2.extensions.cursor, schema: str, name: str, new: bool, layout: tuple[str, ...],
                 states: Sequence[tuple[int, int, int, str, np.ndarray]]) -> None:
    """Upsert each instrument's state after its last computed bar; a new feature table starts a new
    state table (states belong to the stored rows)."""
    q = pgsql.Identifier
    t = q(schema, name).as_string(cur.connection)
    if new:
        cur.execute(f"DROP TABLE IF EXISTS {t}")
    cur.execute(f"CREATE TABLE IF NOT EXISTS {t} (instrument_id bigint PRIMARY KEY, ts_event timestamptz NOT NULL, "
                "bars bigint NOT NULL, symbol text NOT NULL, layout text NOT NULL, state float8[] NOT NULL)")
    if not states:
        return
    psycopg2.extras.execute_values(
        cur,
        f"INSERT INTO {t} (instrument_id, ts_event, bars, symbol, layout, state) VALUES %s "
        "ON CONFLICT (instrument_id) DO UPDATE SET ts_event = EXCLUDED.ts_event, bars = EXCLUDED.bars, "
        "symbol = EXCLUDED.symbol, layout = EXCLUDED.layout, state = EXCLUDED.state",
        [(iid, pd.Timestamp(ts, tz="UTC").to_pydatetime(), n, symbol, ",".join(layout),
          [float(v) for v in state]) for iid, ts, n, symbol, state in states],
        template="(%s, %s, %s, %s, %s, %s::float8[])", page_size=1000)


@dataclass(frozen=True)
class _Rows:
    ids: np.ndarray
    event_ns: np.ndarray
    sym: np.ndarray
    labels: list[str]
    values: np.ndarray  # (rows, columns) float64, NaN = NULL


# -- storage --------------------------------------------------------------------------------


def _ensure_table(cur: psycopg2.extensions.cursor, schema: str, fs: FeatureSet, interval: str) -> tuple[str, bool]:
    """The set's table, recorded in ``feature_sets``; refuses a changed definition.

    Returns (name, new). A new table is created without its keys: the caller loads it and then
    calls :func:`_add_keys` in the same transaction (building the indexes once, after a bulk
    load, is ~2.5x faster than maintaining them row by row). The advisory lock serialises
    computations of one table until commit.
    """
    name = table_name(fs.name, interval)
    q = pgsql.Identifier
    conn = cur.connection
    t = q(schema, name).as_string(conn)
    reg = q(schema, "feature_sets").as_string(conn)
    cols = [c.name for c in fs.resolved]
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('hdi_lab.features.' || %s || '.' || %s))", (schema, name))
    cur.execute(f"SELECT columns, version FROM {reg} WHERE name = %s AND interval = %s", (fs.name, interval))
    row = cur.fetchone()
    if row is not None and (list(row[0]) != cols or int(row[1]) != fs.version):
        raise ValidationError(
            f"{name} was stored with columns {list(row[0])} (version {row[1]}), which differ from this hdi_lab's "
            f"{fs.name} ({cols}, version {fs.version}): define a new version of the set instead of changing it")
    cur.execute("SELECT to_regclass(%s)", (t,))
    new = one(cur)[0] is None
    if new:
        feature_cols = ", ".join(f"{q(c).as_string(conn)} double precision" for c in cols)
        cur.execute(f"CREATE TABLE {t} (instrument_id bigint NOT NULL, event_timestamp timestamptz NOT NULL, "
                    f"created timestamptz NOT NULL, symbol text, {feature_cols})")
    cur.execute(
        f"INSERT INTO {reg} (name, version, interval, columns, definition, table_name) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (name, interval) DO UPDATE SET updated = now()",
        (fs.name, fs.version, interval, cols, json.dumps(fs.definition()), name))
    return name, new


def _add_keys(cur: psycopg2.extensions.cursor, schema: str, name: str) -> None:
    """The primary key (instrument_id, event_timestamp) and the as-of index of a new feature table."""
    q = pgsql.Identifier
    conn = cur.connection
    t = q(schema, name).as_string(conn)
    cur.execute(f"ALTER TABLE {t} ADD CONSTRAINT {q(name + '_pkey').as_string(conn)} "
                "PRIMARY KEY (instrument_id, event_timestamp)")
    cur.execute(f"CREATE INDEX {q(name + '_asof_idx').as_string(conn)} ON {t} "
                "(instrument_id, event_timestamp DESC, created DESC)")


def _payload(rows: _Rows, created: pd.Timestamp) -> bytes:
    """Binary COPY of (instrument_id, event_timestamp, created, symbol, features...), NaN as NULL.

    Laid out like :mod:`hdi_lab.storage.copy` (numpy records, big-endian), which handles
    fixed-width columns only: the symbol is text, so rows are built per symbol length, as a
    fixed head (ids, times, symbol) next to a block of (length, value) feature pairs; rows with
    NULLs drop their NULL values' bytes (length -1).
    """
    created_us = created.value // 1000 - copy.PG_EPOCH_US
    nfeat = rows.values.shape[1]
    encoded = [label.encode("utf-8") for label in rows.labels]
    widths = np.array([len(t) for t in encoded], dtype=np.int64)[rows.sym]
    pair_dtype = np.dtype([("l", ">i4"), ("v", ">f8")])
    parts = [copy.HEADER]
    for width in np.unique(widths):
        sel = widths == width
        n = int(sel.sum())
        head_fields = [("n", ">i2"), ("l0", ">i4"), ("v0", ">i8"), ("l1", ">i4"), ("v1", ">i8"), ("l2", ">i4"),
                       ("v2", ">i8"), ("l3", ">i4")] + ([("v3", f"S{width}")] if width else [])
        head = np.empty(n, dtype=np.dtype(head_fields))
        head["n"], head["l0"], head["l1"], head["l2"], head["l3"] = 4 + nfeat, 8, 8, 8, width
        head["v0"] = rows.ids[sel]
        head["v1"] = rows.event_ns[sel] // 1000 - copy.PG_EPOCH_US
        head["v2"] = created_us
        if width:
            head["v3"] = np.array(encoded, dtype=f"S{width}")[rows.sym[sel]]
        vals = rows.values[sel]
        pairs = np.empty(vals.shape, dtype=pair_dtype)
        pairs["l"] = 8
        pairs["v"] = vals
        nulls = np.isnan(vals)
        pairs["l"][nulls] = -1
        record = np.concatenate([head.view(np.uint8).reshape(n, -1), pairs.view(np.uint8).reshape(n, -1)], axis=1)
        with_nulls = nulls.any(axis=1)
        if not with_nulls.any():
            parts.append(record.tobytes())
            continue
        parts.append(record[~with_nulls].tobytes())
        keep = np.ones((int(with_nulls.sum()), record.shape[1]), dtype=bool)
        value_bytes = np.zeros((nfeat, 12), dtype=bool)
        value_bytes[:, 4:] = True  # the 8 value bytes after each 4-byte length
        drop = (nulls[with_nulls][:, :, None] & value_bytes[None]).reshape(len(keep), -1)
        keep[:, head.dtype.itemsize:] = ~drop
        parts.append(record[with_nulls][keep].tobytes())
    parts.append(copy.TRAILER)
    return b"".join(parts)


def _copy_rows(cur: psycopg2.extensions.cursor, schema: str, name: str, cols: Sequence[Column], rows: _Rows,
               created: pd.Timestamp) -> None:
    """COPY the rows straight into the table (none of their keys may be stored)."""
    q = pgsql.Identifier
    conn = cur.connection
    copy.copy_in(cur, q(schema, name).as_string(conn),
                 ["instrument_id", "event_timestamp", "created", "symbol", *(q(c.name).as_string(conn) for c in cols)],
                 _payload(rows, created))


def _upsert(cur: psycopg2.extensions.cursor, schema: str, name: str, cols: Sequence[Column], rows: _Rows,
            created: pd.Timestamp) -> tuple[int, int]:
    """Store the rows; returns (inserted, updated).

    When none of the keys' range is stored yet (a first computation, new bars), the rows are
    COPYed straight into the table. Otherwise they go through a staging table and ``INSERT ..
    ON CONFLICT DO UPDATE .. WHERE (old values) IS DISTINCT FROM (new values)``: new keys are
    inserted, changed values updated (with a new ``created``), identical rows left alone.
    """
    q = pgsql.Identifier
    conn = cur.connection
    target = q(schema, name).as_string(conn)
    feats = [q(c.name).as_string(conn) for c in cols]
    lo_ns, hi_ns = int(rows.event_ns.min()), int(rows.event_ns.max())
    cur.execute(f"SELECT EXISTS (SELECT 1 FROM {target} WHERE instrument_id = ANY(%s) AND event_timestamp "
                "BETWEEN %s AND %s)", (np.unique(rows.ids).tolist(), pd.Timestamp(lo_ns, tz="UTC").to_pydatetime(),
                                       pd.Timestamp(hi_ns, tz="UTC").to_pydatetime()))
    if not one(cur)[0]:
        cur.execute("SAVEPOINT hdi_features_direct")
        try:
            _copy_rows(cur, schema, name, cols, rows, created)
            cur.execute("RELEASE SAVEPOINT hdi_features_direct")
            return len(rows.ids), 0
        except psycopg2.errors.UniqueViolation:  # a concurrent computation stored some: merge instead
            cur.execute("ROLLBACK TO SAVEPOINT hdi_features_direct")
    stage = q(f"hdi_stage_{name}").as_string(conn)
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (instrument_id bigint, event_timestamp timestamptz, "
                f"sym integer, {', '.join(f + ' double precision' for f in feats)}) ON COMMIT DROP")
    cur.execute(f"TRUNCATE {stage}")
    nulls = np.isnan(rows.values)
    payload = copy.encode(
        ["int8", "timestamptz", "int4", *(["float8"] * len(cols))],
        [rows.ids, rows.event_ns // 1000 - copy.PG_EPOCH_US, rows.sym, *(rows.values[:, i] for i in range(len(cols)))],
        {3 + i: nulls[:, i] for i in range(len(cols)) if nulls[:, i].any()},
    )
    copy.copy_in(cur, stage, ["instrument_id", "event_timestamp", "sym", *feats], payload)
    new = ", ".join(f"EXCLUDED.{f}" for f in feats)
    old = ", ".join(f"{target}.{f}" for f in feats)
    cur.execute(
        f"WITH up AS (INSERT INTO {target} (instrument_id, event_timestamp, created, symbol, {', '.join(feats)}) "
        f"SELECT s.instrument_id, s.event_timestamp, %s, (%s::text[])[s.sym + 1], {', '.join('s.' + f for f in feats)} "
        f"FROM {stage} s ORDER BY s.instrument_id, s.event_timestamp "
        f"ON CONFLICT (instrument_id, event_timestamp) DO UPDATE SET created = EXCLUDED.created, "
        f"symbol = EXCLUDED.symbol, {', '.join(f'{f} = EXCLUDED.{f}' for f in feats)} "
        f"WHERE ({old}) IS DISTINCT FROM ({new}) RETURNING (xmax = 0) AS fresh) "
        "SELECT count(*) FILTER (WHERE fresh), count(*) FILTER (WHERE NOT fresh) FROM up",
        (created.to_pydatetime(), list(rows.labels)))
    ins, upd = one(cur)
    return int(ins), int(upd)


# -- reading --------------------------------------------------------------------------------


def read(set_name: str, symbols: str | Sequence[str], start: object, end: object, *, interval: str = "1d",
         columns: Sequence[str] | None = None, dataset: str | None = None,
         session: HdiSession | None = None) -> pd.DataFrame:
    """Stored features of ``symbols`` with ``event_timestamp`` in ``[start, end)``.

    Columns ``instrument_id``, ``symbol`` (the requested symbol that maps to the instrument),
    ``event_timestamp`` (UTC, the bar's close) and the feature columns (NaN during warm-up), one
    row per instrument and bar, ordered by instrument then time.
    """
    fs = feature_set(set_name)
    name = table_name(fs.name, interval)
    syms = require_symbols(symbols, "e.g. AAPL or ESH4")
    lo, hi = parse_range(start, end)
    wanted = [c.name for c in fs.resolved]
    if columns:
        unknown = [c for c in columns if c not in wanted]
        if unknown:
            raise ValidationError(f"{fs.name} has no column(s) {unknown}: choose from {wanted}")
        wanted = [c for c in wanted if c in columns]
    return with_session(session, lambda s: _read(s, name, syms, lo, hi, dataset, wanted))


def _read(session: HdiSession, name: str, syms: tuple[str, ...], lo: pd.Timestamp, hi: pd.Timestamp,
          dataset: str | None, wanted: list[str]) -> pd.DataFrame:
    conn = session.connection()
    q = pgsql.Identifier
    with transaction(conn) as cur:
        # the bars behind events in [lo, hi) opened up to one interval earlier: resolve over both
        spans = resolve(cur, session.schema, syms, lo - pd.Timedelta(days=1), hi, dataset)
        cur.execute("SELECT to_regclass(%s)", (q(session.schema, name).as_string(conn),))
        if one(cur)[0] is None:
            raise ValidationError(f"{name} does not exist yet: compute it first (hdi_lab.features.compute / "
                                  "hdi features compute)")
        owner: dict[int, str] = {}
        for sp in spans:
            owner.setdefault(sp.instrument_id, sp.symbol)
        feats = [q(c).as_string(conn) for c in wanted]
        text = cur.mogrify(
            f"SELECT instrument_id, event_timestamp, {', '.join(f'COALESCE({f}, %s)' for f in feats)} "
            f"FROM {q(session.schema, name).as_string(conn)} WHERE instrument_id = ANY(%s) "
            "AND event_timestamp >= %s AND event_timestamp < %s ORDER BY instrument_id, event_timestamp",
            [*([float("nan")] * len(feats)), list(owner), lo.to_pydatetime(), hi.to_pydatetime()],
        ).decode()
        raw = copy.decode(copy.copy_out(cur, text), ["int8", "timestamptz", *(["float8"] * len(feats))])
    iid = raw["v0"].astype(np.int64)
    known = np.array(list(owner), dtype=np.int64)
    labels = np.array(list(owner.values()), dtype=object)
    sort = np.argsort(known)
    codes = sort[np.searchsorted(known[sort], iid)]
    data: dict[str, Any] = {
        "instrument_id": iid,
        "symbol": pd.array(labels[codes], dtype="string"),
        "event_timestamp": pd.to_datetime((raw["v1"].astype(np.int64) + copy.PG_EPOCH_US) * 1000, unit="ns",
                                          utc=True),
    }
    for i, c in enumerate(wanted):
        data[c] = raw[f"v{i + 2}"].astype(np.float64)
    return pd.DataFrame(data)


def list_sets(session: HdiSession | None = None) -> pd.DataFrame:
    """Every defined set with, per interval computed, its table, rows, last event and last update."""
    def work(s: HdiSession) -> pd.DataFrame:
        conn = s.connection()
        with transaction(conn) as cur:
            cur.execute(f"SELECT name, interval, table_name, updated FROM "
                        f"{pgsql.Identifier(s.schema, 'feature_sets').as_string(conn)} ORDER BY name, interval")
            stored = cur.fetchall()
            rows = []
            for name, interval, table, updated in stored:
                cur.execute(f"SELECT count(*), max(event_timestamp) FROM "
                            f"{pgsql.Identifier(s.schema, table).as_string(conn)}")
                n, last = one(cur)
                rows.append((name, interval, table, int(n), last, updated))
        done = {r[0] for r in rows}
        out = [{"feature_set": n, "version": fs.version, "interval": iv, "table": t, "rows": cnt,
                "last_event": last, "updated": upd, "columns": ", ".join(fs.columns)}
               for n, iv, t, cnt, last, upd in rows if (fs := FEATURE_SETS.get(n)) is not None]
        out += [{"feature_set": fs.name, "version": fs.version, "interval": None, "table": None, "rows": 0,
                 "last_event": None, "updated": None, "columns": ", ".join(fs.columns)}
                for fs in FEATURE_SETS.values() if fs.name not in done]
        return pd.DataFrame(out, columns=["feature_set", "version", "interval", "table", "rows", "last_event",
                                          "updated", "columns"])
    return with_session(session, work)


def overlay(bars: pd.DataFrame, cols: str | Sequence[str]) -> pd.DataFrame:
    """``bars`` (a bar query result, possibly several instruments) with indicator columns added on the fly.

    Computed per instrument over the rows given (not stored); warm-up rows are NaN. Nothing is
    written and ``bars`` is not modified.
    """
    wanted = indicators.columns(cols) if isinstance(cols, str) else indicators.columns(list(cols))
    out = bars.copy()
    for c in wanted:
        out[c.name] = np.nan
    if bars.empty:
        return out
    keys = [k for k in ("symbol", "instrument_id") if k in bars.columns]
    groups = bars.groupby(keys, sort=False, observed=True).indices if keys else {None: np.arange(len(bars))}
    for pos in groups.values():
        feats = indicators.compute(bars.iloc[pos], wanted, short="nan")
        for c in wanted:
            out.iloc[pos, out.columns.get_loc(c.name)] = feats[c.name].to_numpy()  # type: ignore[index]
    return out
