"""Market-data reads through a cache of instrument-days: what a read of ranges takes from the cache, what it reads
from the table (and caches), and how it puts the rows together.

The unit is one table, instrument and UTC day (:class:`Day`): all its rows, every publisher's, every column a read
can give, in key order (time, then the rest of the key). A read splits each of its ranges into days and takes the
tokens of those days (:func:`hdi_lab.storage.versions.observe`, or read with the symbols' resolution: one
statement, before any row is read); a day cached under its current token is taken from the :class:`DayStore`, the
others are read from the table in one COPY (each run of consecutive missing days of an instrument as one range
scan), cached, and cut to the range. Days are cached only when the read covers them whole, except on bar tables of
a minute or longer (at most 1,440 bars a day per publisher), where a partly covered day is read whole; the part of
a day a read does not cache (the first or last hours of a range of ticks or of bars shorter than a minute, days
older than a retention policy's horizon) is read as it is asked. The rows given back are what
:func:`hdi_lab.storage.scan.fetch` gives for the same ranges (values, range index), each range's rows in key order,
in arrays that may be views of what the store keeps (the caller copies what it gives away).

A read whose every piece lies in a cached day (:attr:`Plan.complete`) is decided by the tokens of those days: the
reader may keep its rows as put together (a :class:`Result`, in the store's memory) and take them again under the
same tokens (:meth:`DayStore.recall`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from hdi_lab.schemas import DAY_NS
from hdi_lab.storage import copy, scan, versions
from hdi_lab.storage.scan import Range
from hdi_lab.storage.tables import TABLES, Table

__all__ = ["Day", "DayStore", "Later", "Plan", "Result", "fetch", "layout", "plan"]

#: bar tables whose partly covered days are read and cached whole (bars of a minute or longer)
_WHOLE_DAYS = frozenset(t.name for s, t in TABLES.items() if s.is_bar and s.bar_seconds >= 60)
_DAY_US = DAY_NS // 1000


class Day(NamedTuple):
    """One cached unit: the rows of ``table``'s ``instrument_id`` on UTC ``day`` (days since 1970-01-01) in the
    schema whose :attr:`hdi_lab.storage.versions.Observed.identity` is ``identity``."""

    identity: str
    table: str
    instrument_id: int
    day: int


class Result(NamedTuple):
    """A read's rows as put together, kept in memory whole (see :meth:`DayStore.keep`): of ``table`` in the
    schema ``identity``; ``key`` is what else decides them (the ranges, the columns)."""

    identity: str
    table: str
    key: Hashable


#: days to cache, made when the store writes them: (day, token, rows) each
Later = Callable[[], Iterable[tuple[Day, str, pa.RecordBatch]]]


class DayStore(Protocol):
    """Where cached days live (:class:`hdi_lab.core.cache.ReadCache`)."""

    def get(self, day: Day, token: str, schema: pa.Schema) -> pa.RecordBatch | None:
        """The rows of ``day`` cached under ``token`` with this Arrow ``schema``, None when it has none (never
        cached, another token, a damaged file)."""

    def get_many(self, days: Sequence[Day], tokens: Sequence[str], schema: pa.Schema) -> list[pa.RecordBatch | None]:
        """:meth:`get` of each of ``days`` under its token (in order)."""

    def put(self, day: Day, token: str, rows: pa.RecordBatch) -> None:
        """Cache the rows of ``day`` under ``token``."""

    def put_later(self, days: Later, size: int) -> None:
        """Cache the days ``days()`` gives (``size`` bytes), called when the store writes them rather than by
        the reader: the reader hands over a run of days whole, the writer splits it."""

    def recall(self, result: Result, tokens: Sequence[str]) -> object | None:
        """What :meth:`keep` kept of ``result`` under ``tokens`` (the tokens of every day it lies in), None when
        nothing is kept under them."""

    def keep(self, result: Result, tokens: Sequence[str], rows: object, size: int) -> None:
        """Keep ``rows`` (``size`` bytes) in memory as ``result`` under ``tokens``, within the memory bound."""


@functools.cache
def layout(table: str) -> pa.Schema:
    """The Arrow schema of a cached day of ``table``: the columns a read can fetch, as decoded (native numbers)."""
    t = next(t for t in TABLES.values() if t.name == table)
    return pa.schema(
        [
            (c.name, pa.from_numpy_dtype(np.dtype(copy.WIDTH[c.pgtype]).newbyteorder("=")))
            for c in scan.fetched(t, scan.out_columns(t))
        ]
    )


class _Piece(NamedTuple):
    """The part of range ``k`` on one day: the instrument's rows on ``[lo, hi)`` (ns), within ``day``."""

    k: int
    instrument_id: int
    day: int
    lo: int
    hi: int


class Plan(NamedTuple):
    """What a read of ``table`` takes from the cache: its pieces (a range's part of one day), the versions ``seen``,
    the (instrument, day) pairs it caches (``fresh``) and their ``tokens``, the pieces read as asked (``direct``:
    not in a cached day)."""

    table: Table
    pieces: list[_Piece]
    seen: versions.Observed
    fresh: list[tuple[int, int]]
    tokens: list[str]
    direct: list[_Piece]

    @property
    def complete(self) -> bool:
        """Whether every piece lies in a cached day: the tokens then decide all the read's rows."""
        return not self.direct


def plan(
    cur: Any, schema: str, t: Table, ranges: Sequence[Range], observed: versions.Observed | None = None
) -> Plan | None:
    """How a read of ``ranges`` uses the cache. ``observed``: the versions already read (with the symbols'
    resolution, before any row), else read here. None when nothing of them can be cached (read them directly
    then), or the table has no epoch row."""
    pieces = [
        _Piece(k, iid, d, max(lo, d * DAY_NS), min(hi, (d + 1) * DAY_NS))
        for k, (iid, lo, hi) in enumerate(ranges)
        if lo < hi
        for d in range(lo // DAY_NS, (hi - 1) // DAY_NS + 1)
    ]
    whole = t.name in _WHOLE_DAYS
    wanted = sorted({(p.instrument_id, p.day) for p in pieces if whole or p.hi - p.lo == DAY_NS})
    if not wanted:
        return None
    seen = observed if observed is not None and observed.covers(wanted) else None
    seen = seen or versions.observe(cur, schema, t.name, wanted)
    if seen is None:
        return None
    fresh = [key for key in wanted if seen.horizon is None or key[1] * DAY_NS >= seen.horizon]
    if not fresh:
        return None
    cachable = set(fresh)
    direct = [p for p in pieces if (p.instrument_id, p.day) not in cachable]
    return Plan(t, pieces, seen, fresh, [seen.token(key) for key in fresh], direct)


def fetch(
    cur: Any, schema: str, planned: Plan, store: DayStore
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.intp]]:
    """The rows of the ``planned`` read as :func:`hdi_lab.storage.scan.fetch` gives them (every column a read can
    give), through ``store``: range after range, each range's rows in key order. The arrays may be (read-only)
    views of what the store keeps or is about to write: the caller copies what it gives away."""
    t, pieces, seen, fresh, direct = planned.table, planned.pieces, planned.seen, planned.fresh, planned.direct
    shape = layout(t.name)
    found = store.get_many([Day(seen.identity, t.name, *key) for key in fresh], planned.tokens, shape)
    days = {key: got for key, got in zip(fresh, found, strict=True) if got is not None}
    missing = [key for key in fresh if key not in days]
    runs = _runs(missing)
    reads = [(iid, d0 * DAY_NS, (d1 + 1) * DAY_NS) for iid, d0, d1 in runs]
    reads += [(p.instrument_id, p.lo, p.hi) for p in direct]
    got: list[dict[str, npt.NDArray[Any]]] = []  # the rows of each run, in key order
    run_of: dict[tuple[int, int], int] = {}  # (instrument, day) -> its run
    exact: dict[tuple[int, int], pa.RecordBatch] = {}
    if reads:
        arrays, index = scan.fetch(cur, schema, t, reads, scan.fetched(t, scan.out_columns(t)))
        groups = _groups(index, len(reads))
        for rows, (iid, d0, d1) in zip(groups, runs, strict=False):
            ordered = _in_order(t, arrays if len(reads) == 1 else {n: v[rows] for n, v in arrays.items()})
            run_of.update(((iid, d), len(got)) for d in range(d0, d1 + 1))
            got.append(ordered)
            # made into days and cached by the store's writer: the reader only hands the run over (never to be
            # changed: the caller copies what it gives away)
            size = sum(int(v.nbytes) for v in ordered.values())
            store.put_later(functools.partial(_days, t, seen, iid, d0, d1, ordered, shape), size)
        for rows, p in zip(groups[len(runs) :], direct, strict=True):
            exact[(p.k, p.day)] = _batch({n: v[rows] for n, v in arrays.items()}, shape)
    if not days and not direct:  # all read now (a cold read): the runs' rows as they came
        return _from_runs(t, pieces, run_of, got, shape)
    fetched = [_batch(rows, shape) for rows in got]
    parts: list[pa.RecordBatch | None] = [None] * len(pieces)
    in_runs: dict[int, list[int]] = {}  # run -> its pieces
    for i, p in enumerate(pieces):
        key = (p.instrument_id, p.day)
        if key in days:
            parts[i] = _cut(t, days[key], p)
        elif key in run_of:
            in_runs.setdefault(run_of[key], []).append(i)
        else:
            parts[i] = exact[(p.k, p.day)]
    for r, members in in_runs.items():  # the pieces of a run cut from it with one search
        run = fetched[r]
        edges = [_edge(t, x) for i in members for x in (pieces[i].lo, pieces[i].hi)]
        at = np.searchsorted(_times(t, run), edges).tolist()
        for j, i in enumerate(members):
            parts[i] = run.slice(at[2 * j], at[2 * j + 1] - at[2 * j])
    ready = cast(list[pa.RecordBatch], parts)  # every piece has its part now
    index = np.repeat(np.array([p.k for p in pieces], dtype=np.intp), [part.num_rows for part in ready])
    table = pa.Table.from_batches(ready, schema=shape)  # one concatenation per column, in C++
    # several chunks: concatenated into a new array; one: a view of it
    return {n: table.column(n).to_numpy() for n in shape.names}, index


def _batch(arrays: Mapping[str, npt.NDArray[Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Columns as a record batch of ``schema`` (no copy)."""
    return pa.RecordBatch.from_arrays([pa.array(arrays[f.name], type=f.type) for f in schema], schema=schema)


def _runs(keys: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Sorted (instrument, day) pairs as runs of consecutive days: (instrument, first day, last day)."""
    out: list[tuple[int, int, int]] = []
    for iid, d in keys:
        if out and out[-1][0] == iid and out[-1][2] == d - 1:
            out[-1] = (iid, out[-1][1], d)
        else:
            out.append((iid, d, d))
    return out


def _groups(index: npt.NDArray[np.intp], n: int) -> list[npt.NDArray[np.intp] | slice]:
    """The positions of the rows of each of ``n`` ranges (by ``index``), in the order they came: slices (views,
    no copies) when the ranges came one after the other, as the statements give them."""
    if n == 1:
        return [slice(None)]
    if not (index[1:] < index[:-1]).any():
        edges = np.searchsorted(index, np.arange(n + 1)).tolist()
        return [slice(a, b) for a, b in itertools.pairwise(edges)]
    order = np.argsort(index, kind="stable")
    edges = np.searchsorted(index[order], np.arange(n + 1))
    return [order[a:b] for a, b in itertools.pairwise(edges)]


def _time(t: Table, rows: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """What orders rows in time: ticks' nanoseconds, bars' microseconds since 2000."""
    return rows[t.ns_column or t.time_column]


def _in_order(t: Table, rows: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """``rows`` in key order: time, then the rest of the key (a range scan gives them so: checked)."""
    keys = [_time(t, rows), *(rows[k] for k in scan.ties(t))]
    if scan.ordered(keys):
        return rows
    order = np.lexsort(keys[::-1])
    return {n: v[order] for n, v in rows.items()}


def _day_edge(t: Table, day: int) -> int:
    """The start of ``day`` in the units of :func:`_time`."""
    return day * DAY_NS if t.ns_column else day * _DAY_US - copy.PG_EPOCH_US


def _edge(t: Table, ns: int) -> int:
    """The first time at or after ``ns`` (nanoseconds) in the units of :func:`_time`: bars are whole
    microseconds, so ts*1000 >= ns <=> ts >= ceil(ns/1000)."""
    return ns if t.ns_column else -(-ns // 1000) - copy.PG_EPOCH_US


def _times(t: Table, rows: pa.RecordBatch) -> npt.NDArray[Any]:
    return rows.column(t.ns_column or t.time_column).to_numpy()


def _by_day(t: Table, rows: pa.RecordBatch, first: int, last: int) -> list[tuple[int, pa.RecordBatch]]:
    """Rows of days ``first`` to ``last`` (in key order) split by day."""
    edges = np.searchsorted(_times(t, rows), [_day_edge(t, d) for d in range(first, last + 2)])
    return [(first + i, rows.slice(a, b - a)) for i, (a, b) in enumerate(itertools.pairwise(edges.tolist()))]


def _days(
    t: Table,
    seen: versions.Observed,
    iid: int,
    first: int,
    last: int,
    rows: Mapping[str, npt.NDArray[Any]],
    shape: pa.Schema,
) -> list[tuple[Day, str, pa.RecordBatch]]:
    """The days of a run of ``iid``'s rows (days ``first`` to ``last``, in key order) with their tokens: what the
    store's writer caches."""
    days = _by_day(t, _batch(rows, shape), first, last)
    return [(Day(seen.identity, t.name, iid, d), seen.token((iid, d)), one) for d, one in days]


def _from_runs(
    t: Table,
    pieces: Sequence[_Piece],
    run_of: Mapping[tuple[int, int], int],
    runs: Sequence[Mapping[str, npt.NDArray[Any]]],
    shape: pa.Schema,
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.intp]]:
    """What :func:`fetch` gives when every piece lies in a run just read: each piece's rows cut from its run (one
    search a run), the pieces following on in a run taken as one slice (a view of the run when there is one)."""
    of_run = [run_of[(p.instrument_id, p.day)] for p in pieces]
    bounds: list[list[int]] = []  # each run's pieces' row bounds, in order
    for r in range(len(runs)):
        edges = [_edge(t, x) for p, pr in zip(pieces, of_run, strict=True) if pr == r for x in (p.lo, p.hi)]
        bounds.append(np.searchsorted(_time(t, runs[r]), edges).tolist())
    slices: list[tuple[int, int, int]] = []  # (run, first row, end)
    counts: list[int] = []
    taken = [0] * len(runs)
    for r in of_run:
        a, b = bounds[r][2 * taken[r]], bounds[r][2 * taken[r] + 1]
        taken[r] += 1
        counts.append(b - a)
        if slices and slices[-1][0] == r and slices[-1][2] == a:
            slices[-1] = (r, slices[-1][1], b)
        else:
            slices.append((r, a, b))
    out = {
        n: np.concatenate([runs[r][n][a:b] for r, a, b in slices]) if len(slices) > 1 else
        runs[slices[0][0]][n][slices[0][1] : slices[0][2]]
        for n in shape.names
    }  # fmt: skip
    return out, np.repeat(np.array([p.k for p in pieces], dtype=np.intp), counts)


def _cut(t: Table, rows: pa.RecordBatch, p: _Piece) -> pa.RecordBatch:
    """The rows of a whole cached day (in key order) on the piece's ``[lo, hi)``."""
    if p.hi - p.lo == DAY_NS:
        return rows
    a, b = np.searchsorted(_times(t, rows), [_edge(t, p.lo), _edge(t, p.hi)]).tolist()
    return rows.slice(a, b - a)
