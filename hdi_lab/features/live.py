"""Live indicators: feature sets advanced per closed bar while a live session stores bars.

A live session (:func:`hdi_lab.live` with ``features=["momentum_v1"]``) hands every committed batch of bars
(``ohlcv-1s`` -> interval ``1s``, ``ohlcv-5s`` (IB's real-time bars) -> ``5s``, ``ohlcv-1m`` -> ``1m``) to
:meth:`LiveFeatures.bars_closed`; a background thread then runs :func:`hdi_lab.features.compute` over just those
bars, per instrument, from the bar after the one its state was saved at: the incremental resume path
(:mod:`hdi_lab.features.resume`), so each update reads the last ``history`` bars and the new ones, continues the
recursive indicators from the saved state and stores the rows and the new state in one transaction. The rows stored
are those of a batch computation over the same bars, bit for bit (tested). Batches that arrive while an update
runs are merged into the next update, so a slow database makes updates larger, never late by more than one update.

Each update is logged as a :class:`LiveUpdate` (:attr:`LiveFeatures.updates`, the last 100,000): what was
computed and when it was stored (``time.time()``), which is what the latency of live indicators is measured
against (bench/bench_live.py). Subscribers (:meth:`LiveFeatures.subscribe`) follow the updates: a live chart's
indicators, and the Feast online store (:mod:`hdi_lab.featurestore.live`, ``hdi_lab.live(..., online=True)``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab.core.session import HdiSession
from hdi_lab.errors import HdiError, ValidationError
from hdi_lab.features.bars import STORED
from hdi_lab.features.compute import compute
from hdi_lab.features.sets import feature_set
from hdi_lab.schemas import INTERVALS

__all__ = ["LIVE_INTERVALS", "Backlog", "LiveFeatures", "LiveUpdate", "parse_sets"]

log = logging.getLogger(__name__)

#: the bar schemas a live session stores whose closed bars advance live indicators, and their intervals
LIVE_INTERVALS: dict[str, str] = {"ohlcv-1s": "1s", "ohlcv-5s": "5s", "ohlcv-1m": "1m"}


def parse_sets(sets: str | Sequence[str] | None) -> tuple[str, ...]:
    """The feature set names of ``features=`` (a comma-separated string or a list), each checked.

    Raises ValidationError for an unknown set."""
    names = [s.strip() for s in sets.split(",")] if isinstance(sets, str) else [str(s).strip() for s in sets or ()]
    return tuple(dict.fromkeys(feature_set(n).name for n in names if n))


@dataclass(frozen=True)
class LiveUpdate:
    """One update of a feature set: the bars of ``instrument_id`` opening in ``[start, end)`` computed and stored
    (``rows``; ``resumed``: continued from the saved state, else computed from the first bar), stored at
    ``done_at`` (``time.time()``) after ``seconds``; ``error`` if it failed."""

    feature_set: str
    interval: str
    instrument_id: int
    start: pd.Timestamp
    end: pd.Timestamp
    rows: int
    resumed: bool
    done_at: float
    seconds: float
    error: str | None = None


class Backlog:
    """What a live helper's thread has to do: work handed to it (``_pending``, under ``_cv``), whether the thread is
    at it (``_busy``) and whether it ends once nothing is left (``_closing``); waiting for it (:meth:`flush`) and
    ending it (:meth:`close`). The helper's ``_run`` takes the work and keeps the flags."""

    _cv: threading.Condition
    _pending: dict[Any, Any]
    _busy: bool
    _closing: bool
    _thread: threading.Thread

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed so far is done (or failed); returns whether it was within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._pending or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout: float | None = 60.0) -> None:
        """Do what is pending, then end the thread. Raises nothing."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join(timeout)


class LiveFeatures(Backlog):
    """Feature sets kept up to date with the bars a live session stores (see the module docstring).

    ``symbols`` (of ``dataset``) are the session's: the bars are read through their stored symbology, as
    :func:`hdi_lab.features.compute` reads them. The updates run on a thread of their own (with its own
    connection of ``session``); :meth:`close` waits for the pending ones and ends it.
    """

    def __init__(
        self,
        sets: Sequence[str],
        symbols: Sequence[str],
        *,
        session: HdiSession,
        dataset: str | None = None,
        on_update: Callable[[LiveUpdate], None] | None = None,
    ) -> None:
        """Raises ValidationError for no or an unknown feature set."""
        self.sets = parse_sets(sets)
        if not self.sets:
            raise ValidationError("features= names no feature set: give one or more, e.g. features=['momentum_v1']")
        self.symbols, self.dataset = tuple(symbols), dataset
        self.session = session
        self._listeners: tuple[Callable[[LiveUpdate], None], ...] = () if on_update is None else (on_update,)
        self._cv = threading.Condition()
        self._pending: dict[tuple[str, int], tuple[int, int]] = {}  # (interval, instrument) -> (first, last open)
        self._closing = False
        self._busy = False
        self._updates: deque[LiveUpdate] = deque(maxlen=100_000)
        self._thread = threading.Thread(target=self._run, name="hdi-live-features", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"LiveFeatures({', '.join(self.sets)}; {len(self._updates)} updates)"

    def subscribe(self, callback: Callable[[LiveUpdate], None]) -> None:
        """Call ``callback`` (on the features' thread) with every update from now on (a live chart's
        indicators). A callback that raises is logged, the updates carry on. Raises nothing."""
        with self._cv:
            self._listeners = (*self._listeners, callback)

    @property
    def updates(self) -> list[LiveUpdate]:
        """The updates so far (the last 100,000), oldest first."""
        with self._cv:
            return list(self._updates)

    @property
    def errors(self) -> list[LiveUpdate]:
        """The updates that failed."""
        return [u for u in self.updates if u.error is not None]

    def bars_closed(self, interval: str, instrument_ids: npt.ArrayLike, opens_ns: npt.ArrayLike) -> None:
        """Closed bars were stored: ``interval`` bars of ``instrument_ids`` opening at ``opens_ns`` (int ns).
        Thread-safe; returns at once (the update runs on the features' thread).

        Raises ValidationError for an interval that is not a stored bar interval."""
        if interval not in STORED:
            raise ValidationError(f"interval={interval!r}: live indicators follow stored bars ({', '.join(STORED)})")
        ids = np.asarray(instrument_ids, dtype=np.int64)
        opens = np.asarray(opens_ns, dtype=np.int64)
        if not len(ids):
            return
        with self._cv:
            for iid in np.unique(ids).tolist():
                mine = opens[ids == iid]
                lo, hi = int(mine.min()), int(mine.max())
                key = (interval, int(iid))
                if key in self._pending:
                    old = self._pending[key]
                    lo, hi = min(lo, old[0]), max(hi, old[1])
                self._pending[key] = (lo, hi)
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closing:
                    self._cv.wait()
                if not self._pending:
                    self._cv.notify_all()
                    return
                work, self._pending = self._pending, {}
                self._busy = True
            try:
                for (interval, iid), (lo, hi) in sorted(work.items(), key=lambda kv: kv[1][0]):
                    for name in self.sets:
                        self._update(name, interval, iid, lo, hi)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _update(self, name: str, interval: str, iid: int, lo: int, hi: int) -> None:
        start = pd.Timestamp(lo, tz="UTC")
        end = pd.Timestamp(hi + INTERVALS[interval] * 1_000_000_000, tz="UTC")
        t0 = time.perf_counter()
        try:
            report = compute(
                name,
                self.symbols,
                interval,
                start,
                end,
                dataset=self.dataset,
                instruments=[iid],
                session=self.session,
            )
            update = LiveUpdate(
                name, interval, iid, start, end, report.rows, report.resumed > 0, time.time(), time.perf_counter() - t0
            )
        except Exception as exc:  # the thread carries on: the failure is in the update's error
            text = str(exc) if isinstance(exc, HdiError) else f"{type(exc).__name__}: {exc}"
            log.exception("live features %s %s of instrument %d failed: %s", name, interval, iid, text)
            update = LiveUpdate(name, interval, iid, start, end, 0, False, time.time(), time.perf_counter() - t0, text)
        with self._cv:
            self._updates.append(update)
            listeners = self._listeners
        for callback in listeners:
            try:
                callback(update)
            except Exception:
                log.exception("live features: on_update failed")
