"""Computing a feature set over stored bars and storing it: the instruments read are sorted by
:mod:`hdi_lab.features.resume` into jobs (resumed from a saved state, or from their first bar),
computed all at once (:mod:`hdi_lab.indicators`) and stored with their new states
(:mod:`hdi_lab.storage.features`). See :mod:`hdi_lab.features` for what is computed and when."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab import indicators
from hdi_lab.core.executors import DaskExecutor, executor_of
from hdi_lab.core.session import HdiSession, with_session
from hdi_lab.errors import ValidationError
from hdi_lab.features import continuous as series_of
from hdi_lab.features.bars import HISTORY_START, InstrumentBars, by_instrument, read_bars
from hdi_lab.features.resume import Action, decide, states_apply, usable_state, window_start
from hdi_lab.features.sets import FeatureSet, feature_set, feature_table, table_name, variant
from hdi_lab.schemas import (
    INTERVALS,
    Adjust,
    View,
    check_interval,
    parse_enum,
    parse_range,
    parse_time,
    require_symbols,
)
from hdi_lab.storage import features as stored_features
from hdi_lab.storage import symbology
from hdi_lab.storage.features import FeatureRows, SeriesWrite, StateRow, StoredState

__all__ = ["PARTITIONS", "FeatureProgress", "FeatureReport", "compute", "largest_gap", "parse_max_gap"]

#: how many partitions (groups of instruments, one task each) ``executor="dask"`` makes at most
PARTITIONS = 16
#: ``progress(done, total)``: partitions computed and stored so far, of ``total`` (one call with 0 first)
FeatureProgress = Callable[[int, int], None]


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
    # over back-adjusted continuous series (adjust=): the adjustment, the view, the rows deleted and the
    # series rewritten from their first bar because their rolls changed (research view)
    adjust: str | None = None
    view: str | None = None
    deleted: int = 0
    rewritten: list[str] = field(default_factory=list)

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated

    def __str__(self) -> str:
        gap = f"; largest gap between bars {self.largest_gap}" if self.largest_gap is not None else ""
        what = (
            "instrument(s)"
            if self.adjust is None
            else "continuous series (unadjusted)"
            if self.adjust == "none"
            else f"continuous series ({self.adjust}, {self.view} view)"
        )
        again = (
            f"; rewritten from the first bar (their rolls changed): {', '.join(self.rewritten)}, "
            f"{self.deleted:,} rows replaced"
            if self.rewritten
            else ""
        )
        return (
            f"{self.feature_set} {self.interval} -> {self.table}: {self.rows:,} rows for {self.instruments} "
            f"{what} in [{self.start}, {self.end}): {self.inserted:,} inserted, {self.updated:,} "
            f"updated, {self.unchanged:,} unchanged ({self.bars_read:,} bars read, {self.seconds:.2f} s){gap}{again}"
        )


def parse_max_gap(value: str | pd.Timedelta) -> pd.Timedelta:
    """A positive duration such as ``4D`` or ``2h``; raises ValidationError for anything else."""
    try:
        gap = pd.Timedelta(value)
        ok = gap is not pd.NaT and gap > pd.Timedelta(0)
    except (ValueError, TypeError, OverflowError):
        ok = False
    if not ok:
        raise ValidationError(f"max_gap={value!r} is not a positive duration: give one like 4D, 2h or 90min")
    return gap


def largest_gap(instrument: InstrumentBars, limit: pd.Timedelta | None) -> int:
    """The longest time (ns) between consecutive bars of the instrument.

    Raises ValidationError when it is longer than ``limit``.
    """
    ts = instrument.opens
    if len(ts) < 2:
        return 0
    diffs = np.diff(ts)
    k = int(np.argmax(diffs))
    if limit is not None and diffs[k] > limit.value:
        raise ValidationError(
            f"instrument {instrument.instrument_id} ({instrument.symbol}) has no bars between "
            f"{pd.Timestamp(ts[k], tz='UTC')} and {pd.Timestamp(ts[k + 1], tz='UTC')}, a gap longer than "
            f"max_gap={limit}: ingest the missing bars or raise max_gap"
        )
    return int(diffs[k])


def compute(
    set_name: str,
    symbols: str | Sequence[str],
    interval: str = "1d",
    start: object = None,
    end: object = None,
    *,
    dataset: str | None = None,
    max_gap: str | pd.Timedelta | None = None,
    adjust: str | None = None,
    view: str | None = None,
    instruments: Collection[int] | None = None,
    executor: str | None = None,
    scheduler: object = None,
    progress: FeatureProgress | None = None,
    session: HdiSession | None = None,
) -> FeatureReport:
    """Compute ``set_name`` for the bars of ``symbols`` whose open lies in ``[start, end)`` and store it.

    ``start`` defaults to the first stored bar, ``end`` to now. Values are those of a computation
    from each instrument's first stored bar, bit for bit: resumed from the state saved by the
    previous computation when ``start`` follows it, else computed from the first bar (see
    :mod:`hdi_lab.features`). Only rows in the range are written, idempotently. Returns a
    :class:`FeatureReport` (``resumed``: instruments continued from their state; ``largest_gap``
    is over the bars read, only the window for those). ``instruments`` (ids) limits the computation to
    those of the symbols' instruments (a continuous symbol's contracts whose bars changed, say; the contracts'
    own bars, without ``adjust``).

    ``adjust`` (``none``, ``difference``, ``ratio``) computes over the back-adjusted continuous series of
    continuous symbols (``ES.c.0``, ``ES.v.0``, ``ES.n.0``) instead, in the ``view`` ``research`` (default:
    one adjustment from the latest roll up to ``end``) or ``as_of`` (each bar with the rolls known at its
    time), stored in a table of its own per adjustment and view: see :mod:`hdi_lab.features.continuous`.

    ``executor="dask"`` computes on a Dask cluster (``scheduler="tcp://host:8786"`` or a ``distributed.Client``;
    default: ``HDI_DASK_SCHEDULER``), partitioned by instrument: the instruments of the symbols are split into at
    most :data:`PARTITIONS` groups, each a task computing and storing its group as this function does (its own
    session on its worker, its saved states), so the stored rows and states are those of a local run; the report
    adds up every partition and ``progress`` is called per partition stored. Not with ``adjust``.

    Raises ValidationError for an unknown set, interval or symbol, a bad range or ``max_gap``, a
    gap longer than ``max_gap``, a table stored with another definition of the set, or with ``adjust``:
    an unknown adjust or view (a view without adjust), a symbol that is not continuous, an interval
    rolled up from 1m bars, and what :func:`hdi_lab.core.continuous.continuous` raises; with ``executor``:
    ValidationError for a bad executor or scheduler (or ``adjust``), ClusterError and MissingDependency.
    """
    fs = feature_set(set_name)
    check_interval(interval)
    syms = require_symbols(symbols, "e.g. AAPL or ESH4")
    lo = parse_time(start, "start") if start is not None else HISTORY_START
    hi = parse_time(end, "end") if end is not None else pd.Timestamp.now(tz="UTC").as_unit("ns")
    parse_range(lo, hi)
    gap_limit = parse_max_gap(max_gap) if max_gap is not None else None
    var = variant(adjust, view)

    if var:
        how = parse_enum(Adjust, adjust, "adjust")
        seen = parse_enum(View, view, "view") if view is not None else View.RESEARCH
        series_of.check_symbols(syms, how, interval)

        def series(s: HdiSession) -> FeatureReport:
            if executor_of(executor, scheduler, s.settings) is not None:
                raise ValidationError(
                    "executor='dask' does not compute continuous series (adjust=): drop adjust or the executor"
                )
            return _SeriesComputation(s, fs, syms, interval, lo, hi, dataset, gap_limit, how, seen, var).run()

        return with_session(session, series)
    only = None if instruments is None else frozenset(int(i) for i in instruments)
    job = _Request(fs.name, syms, interval, lo, hi, dataset, gap_limit, only)

    def run(s: HdiSession) -> FeatureReport:
        target = executor_of(executor, scheduler, s.settings)
        if target is None:
            if progress is not None:
                progress(0, 1)
            report = job.run(s)
            if progress is not None:
                progress(1, 1)
            return report
        return _on_cluster(target, s, job, progress)

    return with_session(session, run)


@dataclass(frozen=True)
class _Request:
    """A computation's request, plain data: run here or sent to a worker with a group of instruments."""

    set_name: str
    syms: tuple[str, ...]
    interval: str
    lo: pd.Timestamp
    hi: pd.Timestamp
    dataset: str | None
    gap_limit: pd.Timedelta | None
    only: frozenset[int] | None

    def run(self, session: HdiSession) -> FeatureReport:
        fs = feature_set(self.set_name)
        args = (self.syms, self.interval, self.lo, self.hi, self.dataset, self.gap_limit, self.only)
        return _Computation(session, fs, *args).run()


def _partition(session: HdiSession, provider: object, job: _Request) -> FeatureReport:
    """A cluster task: one group of instruments computed and stored with the worker's session."""
    return job.run(session)


def _on_cluster(
    target: DaskExecutor, session: HdiSession, job: _Request, progress: FeatureProgress | None
) -> FeatureReport:
    """``job`` partitioned by instrument on the cluster; the report of every partition added up."""
    from hdi_lab.core import cluster  # Dask only when it runs (pip install 'hdi_lab[dask]')

    t0 = time.perf_counter()
    spans = symbology.lookup(session.connection(), session.schema, job.syms, HISTORY_START, job.hi, job.dataset)
    ids = sorted({sp.instrument_id for sp in spans if job.only is None or sp.instrument_id in job.only})
    groups = np.array_split(np.array(ids, dtype=np.int64), min(PARTITIONS, len(ids))) if ids else []
    parts = []
    for g in groups:  # each reads the symbols that map to its instruments only (raw symbols: its own)
        only = frozenset(int(i) for i in g)
        syms = tuple(dict.fromkeys(sp.symbol for sp in spans if sp.instrument_id in only))
        parts.append(dataclasses.replace(job, syms=syms, only=only))
    total = FeatureReport(job.set_name, job.interval, table_name(job.set_name, job.interval), job.lo, job.hi)
    if progress is not None:
        progress(0, len(parts))
    finished = cluster.map_unordered(target, session, None, _partition, parts, label="hdi-features")
    for done, (_, r) in enumerate(finished, start=1):
        total.instruments += r.instruments
        total.bars_read += r.bars_read
        total.resumed += r.resumed
        total.rows += r.rows
        total.inserted += r.inserted
        total.updated += r.updated
        if r.largest_gap is not None:
            total.largest_gap = max(total.largest_gap or r.largest_gap, r.largest_gap)
        for k, v in r.timings.items():
            total.timings[k] = total.timings.get(k, 0.0) + v
        if progress is not None:
            progress(done, len(parts))
    total.seconds = time.perf_counter() - t0
    return total


@dataclass(frozen=True)
class _Job:
    """One instrument to compute: ``bars`` are the bars it takes, rows are stored from ``bars[first]`` on."""

    bars: InstrumentBars
    first: int
    state: StoredState | None  # the state it resumes from (None: from its first bar)


@dataclass
class _Triage:
    """The instruments of the bars read, sorted by :func:`hdi_lab.features.resume.decide` into jobs."""

    lo_ns: int
    usable: dict[int, StoredState]
    context: int
    gap_limit: pd.Timedelta | None
    from_first: list[_Job] = field(default_factory=list)
    resumed: list[_Job] = field(default_factory=list)
    need_history: set[int] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)
    bars_read: int = 0
    largest: int = 0

    def take(self, bars: pd.DataFrame, whole_history: bool, only: set[int] | None = None) -> None:
        """Sort the instruments of a read (those of ``only`` if given): ``whole_history`` when it holds
        every bar before ``hi``, else the window read of the usable states."""
        self.bars_read += len(bars)
        for inst in by_instrument(bars):
            if only is not None and inst.instrument_id not in only:
                continue
            self.largest = max(self.largest, largest_gap(inst, self.gap_limit))
            self.seen.add(inst.instrument_id)
            state = self.usable.get(inst.instrument_id)
            decision = decide(inst.opens, self.lo_ns, state, self.context, whole_history)
            if decision.action is Action.READ_HISTORY:
                self.need_history.add(inst.instrument_id)
            elif decision.action is Action.RESUME:
                part = InstrumentBars(inst.instrument_id, inst.symbol, inst.bars.iloc[decision.begin :])
                self.resumed.append(_Job(part, decision.first - decision.begin, state))
            elif decision.action is Action.FROM_FIRST_BAR:
                self.from_first.append(_Job(inst, decision.first, None))


class _Output:
    """The rows and states a computation stores, collected job by job."""

    def __init__(self, step_ns: int) -> None:
        self.step_ns = step_ns
        self.ids: list[npt.NDArray[np.int64]] = []
        self.stamps: list[npt.NDArray[np.int64]] = []
        self.sym: list[npt.NDArray[np.int32]] = []
        self.values: list[npt.NDArray[np.float64]] = []
        self.codes: dict[str, int] = {}  # symbol -> its code in the rows (insertion order = labels)
        self.states: list[StateRow] = []

    def add(self, iid: int, symbol: str, ts: npt.NDArray[np.int64], feats: npt.NDArray[np.float64]) -> None:
        """Rows of the bars opening at ``ts``, stamped at their close."""
        self.ids.append(np.full(len(ts), iid, dtype=np.int64))
        self.stamps.append(ts + self.step_ns)
        self.sym.append(np.full(len(ts), self.codes.setdefault(symbol, len(self.codes)), dtype=np.int32))
        self.values.append(feats)

    def save(self, iid: int, last_ns: int, bars: int, symbol: str, state: npt.NDArray[np.float64]) -> None:
        """The instrument's state after its bar opening at ``last_ns``, its ``bars``-th."""
        self.states.append(StateRow(iid, last_ns, bars, symbol, tuple(float(v) for v in state)))

    def rows(self) -> FeatureRows | None:
        if not self.ids:
            return None
        return FeatureRows(
            np.concatenate(self.ids),
            np.concatenate(self.stamps),
            np.concatenate(self.sym),
            list(self.codes),
            np.concatenate(self.values),
        )


class _Base:
    """What both computations of :func:`compute` start from: the request, the set's columns and their inputs."""

    def __init__(
        self,
        session: HdiSession,
        fs: FeatureSet,
        syms: tuple[str, ...],
        interval: str,
        lo: pd.Timestamp,
        hi: pd.Timestamp,
        dataset: str | None,
        gap_limit: pd.Timedelta | None,
    ) -> None:
        self.session, self.fs, self.syms, self.interval = session, fs, syms, interval
        self.lo, self.hi, self.dataset, self.gap_limit = lo, hi, dataset, gap_limit
        self.cols = fs.resolved
        self.inputs = tuple(dict.fromkeys(i for c in self.cols for i in c.inputs))


class _Computation(_Base):
    """One call of :func:`compute`: read, sort, compute, store."""

    def __init__(
        self,
        session: HdiSession,
        fs: FeatureSet,
        syms: tuple[str, ...],
        interval: str,
        lo: pd.Timestamp,
        hi: pd.Timestamp,
        dataset: str | None,
        gap_limit: pd.Timedelta | None,
        only: frozenset[int] | None = None,
    ) -> None:
        super().__init__(session, fs, syms, interval, lo, hi, dataset, gap_limit)
        self.only = only  # the instruments to compute (None: every one of the symbols)
        self.layout = indicators.state_layout(self.cols)
        self.context = indicators.history(self.cols)
        self.table = feature_table(fs, interval)

    def run(self) -> FeatureReport:
        t0 = time.perf_counter()
        report = FeatureReport(self.fs.name, self.interval, table_name(self.fs.name, self.interval), self.lo, self.hi)
        usable = self._usable_states()
        t_states = time.perf_counter()
        triage = _Triage(self.lo.value, usable, self.context, self.gap_limit)
        if usable:  # the last `context` bars before lo of each instrument (a few more of some), then the new ones
            triage.take(self._bars(window_start(usable.values())), whole_history=False)
            if triage.need_history:  # instruments without a usable state: the full read, for them only
                triage.take(self._bars(HISTORY_START), whole_history=True, only=set(triage.need_history))
        else:
            triage.take(self._bars(HISTORY_START), whole_history=True)
        report.instruments, report.bars_read = len(triage.seen), triage.bars_read
        t1 = time.perf_counter()
        out = self._computed(triage)
        report.resumed = len(triage.resumed)
        report.largest_gap = pd.Timedelta(triage.largest) if triage.largest else None
        t2 = time.perf_counter()
        rows = out.rows()
        report.rows = len(rows.ids) if rows is not None else 0
        created = pd.Timestamp.now(tz="UTC").floor("us")
        states = (self.layout, out.states) if self.layout is not None else None
        report.inserted, report.updated = stored_features.store(
            self.session.connection(), self.session.schema, self.table, rows, created, states
        )
        t3 = time.perf_counter()
        report.timings = {"states": t_states - t0, "read": t1 - t_states, "compute": t2 - t1, "store": t3 - t2}
        report.seconds = t3 - t0
        return report

    def _usable_states(self) -> dict[int, StoredState]:
        applies = states_apply(self.layout is not None, self.interval, self.gap_limit is not None, self.lo)
        if not applies or self.layout is None:
            return {}
        stored = stored_features.stored_states(
            self.session.connection(),
            self.session.schema,
            self.table,
            self.syms,
            self.lo,
            self.hi,
            self.dataset,
            self.layout,
            self.context,
        )
        usable = (usable_state(s, len(self.layout), self.context) for s in stored)
        return {
            s.saved.instrument_id: s
            for s in usable
            if s is not None and (self.only is None or s.saved.instrument_id in self.only)
        }

    def _bars(self, start: pd.Timestamp) -> pd.DataFrame:
        bars = read_bars(self.session, self.interval, self.syms, start, self.hi, self.dataset, self.inputs)
        if self.only is None:
            return bars
        return bars[bars["instrument_id"].isin(self.only)]

    def _computed(self, triage: _Triage) -> _Output:
        out = _Output(INTERVALS[self.interval] * 1_000_000_000)
        frames = [job.bars.bars for job in triage.from_first]
        if self.layout is not None:
            computed, after = indicators.compute_resumable(frames, self.cols)
        else:
            computed, after = indicators.compute_many(frames, self.cols), np.empty((len(frames), 0))
        for job, feats, state in zip(triage.from_first, computed, after, strict=True):
            ts = job.bars.opens
            out.add(job.bars.instrument_id, job.bars.symbol, ts[job.first :], feats[job.first :])
            out.save(job.bars.instrument_id, int(ts[-1]), len(ts), job.bars.symbol, state)
        if triage.resumed:
            saved = [job.state.saved for job in triage.resumed if job.state is not None]
            computed, after = indicators.compute_resumable(
                [job.bars.bars for job in triage.resumed],
                self.cols,
                context=self.context,
                state=np.array([s.state for s in saved]),
            )
            for job, s, feats, state in zip(triage.resumed, saved, computed, after, strict=True):
                ts = job.bars.opens
                out.add(job.bars.instrument_id, s.symbol, ts[job.first :], feats[job.first :])
                out.save(job.bars.instrument_id, int(ts[-1]), s.bars + len(ts) - job.first, s.symbol, state)
        return out


class _SeriesComputation(_Base):
    """One call of :func:`compute` with ``adjust``: each continuous series read from its first bar, computed
    in its view and stored in the variant table (see :mod:`hdi_lab.features.continuous`)."""

    def __init__(
        self,
        session: HdiSession,
        fs: FeatureSet,
        syms: tuple[str, ...],
        interval: str,
        lo: pd.Timestamp,
        hi: pd.Timestamp,
        dataset: str | None,
        gap_limit: pd.Timedelta | None,
        adjust: Adjust,
        view: View,
        var: str,
    ) -> None:
        super().__init__(session, fs, syms, interval, lo, hi, dataset, gap_limit)
        self.adjust, self.view = adjust, view
        self.table = feature_table(fs, interval, var)

    def run(self) -> FeatureReport:
        t0 = time.perf_counter()
        report = FeatureReport(
            self.fs.name,
            self.interval,
            self.table.name,
            self.lo,
            self.hi,
            adjust=self.adjust.value,
            view=self.view.value,
        )
        step = INTERVALS[self.interval] * 1_000_000_000
        writes, largest = [], 0
        t_read = t_compute = 0.0
        for sym in self.syms:
            t1 = time.perf_counter()
            series = series_of.read_series(
                self.session, sym, self.interval, self.hi, self.dataset, self.inputs, self.adjust
            )
            t2 = time.perf_counter()
            largest = max(largest, largest_gap(series.instrument(), self.gap_limit))
            report.bars_read += len(series.bars)
            report.instruments += int(len(series.bars) > 0)
            opens, values = series_of.computed(series, self.cols, self.adjust, self.view, self.lo.value, step)
            out = _Output(step)
            if len(opens):
                out.add(series.id, sym, opens, values)
            t_read, t_compute = t_read + t2 - t1, t_compute + time.perf_counter() - t2
            writes.append(
                SeriesWrite(
                    series.id,
                    sym,
                    series.dataset,
                    self.adjust.value,
                    self.view.value,
                    series_of.roll_json(series.rolls),
                    out.rows(),
                    self.lo.value + step,
                    self.view is View.RESEARCH and self.adjust is not Adjust.NONE,
                )
            )
        t3 = time.perf_counter()
        created = pd.Timestamp.now(tz="UTC").floor("us")
        report.rows, report.inserted, report.updated, report.deleted, report.rewritten = stored_features.store_series(
            self.session.connection(), self.session.schema, self.table, writes, created
        )
        report.largest_gap = pd.Timedelta(largest) if largest else None
        t4 = time.perf_counter()
        report.timings = {"read": t_read, "compute": t_compute, "store": t4 - t3}
        report.seconds = t4 - t0
        return report
