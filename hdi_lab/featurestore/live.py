"""The Feast online store kept current by live indicators: each stored update of a live feature set
(:class:`hdi_lab.features.live.LiveFeatures`) is followed by a write of its instruments' latest feature rows into
the online store of hdi_lab's feature repo, so ``get_online_features`` (and
:func:`hdi_lab.featurestore.publish.online_features`) serves the live values within the session.

``hdi_lab.live(..., features=["momentum_v1"], online=True)`` (``--online``) turns it on; by default it is on when
Feast is set up for the database (:func:`hdi_lab.featurestore.repo.in_use`: the ``feast_repo`` setting, or a
registry a publish created), so a published set's online values do not go stale while a session computes newer
ones.

What is written is what was stored: the latest row of each updated instrument, read back from the feature table
(one primary-key lookup each), through Feast's ``FeatureStore.write_to_online_store`` into the view named for the
set and interval (:func:`hdi_lab.featurestore.repo.view_name`, e.g. ``momentum_v1_1s``). A view not registered yet
(the table did not exist before the session's first update) is registered first by applying the repo, as a
publish does. A row whose features are all empty (the first bar) is not written: Feast refuses it.

The writes run on a thread of their own, behind the indicators: a slow online store delays neither the session's
commits nor the indicator updates. Work is merged per view and instrument while a write runs (only the latest
row counts), so a slow store makes writes larger, never a backlog. Opening the store (importing Feast, ~3-4 s)
happens when the thread starts, before the first update.

A failed write is logged, kept in :attr:`LiveOnline.errors` (and handed to ``on_write``), and retried with the next
update (and once more at close); the session and its indicators carry on. Each write is logged as an
:class:`OnlineWrite` (:attr:`LiveOnline.writes`, the last 100,000) with the time it returned (``time.time()``),
which the latency of the online store is measured against (bench/bench_live.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from hdi_lab import features
from hdi_lab.errors import HdiError, ValidationError
from hdi_lab.features.live import Backlog, LiveFeatures, LiveUpdate
from hdi_lab.featurestore import repo as feast_repo
from hdi_lab.storage.features import latest_rows

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = ["LiveOnline", "OnlineWrite"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnlineWrite:
    """One write into the online store: the latest rows of ``instruments`` in ``view`` (``rows`` written, the
    latest at ``event_timestamp``), returned at ``done_at`` (``time.time()``) after ``seconds``; ``applied``: the
    repo was applied first (the view was not registered); ``error`` if it failed (nothing written)."""

    view: str
    instruments: tuple[int, ...]
    rows: int
    event_timestamp: pd.Timestamp | None
    done_at: float
    seconds: float
    applied: bool = False
    error: str | None = None


class LiveOnline(Backlog):
    """Writes the live updates of ``live`` into the Feast online store (see the module docstring).

    ``repo``: the feature repo (default: the ``feast_repo`` setting, else hdi_lab's). The writes use ``live``'s
    session (a connection of their thread's own); :meth:`close` writes what is pending and ends the thread.
    A failure is logged when its message differs from the last one's (a lasting failure is reported once; every
    failed write is in :attr:`errors`), and handed to :meth:`report_to`'s callback.
    """

    def __init__(
        self,
        live: LiveFeatures,
        *,
        repo: str | Path | None = None,
    ) -> None:
        self.session, self.repo = live.session, repo
        self._report: Callable[[str], None] | None = None
        self._held: list[str] = []  # failures before :meth:`report_to`
        self._cv = threading.Condition()
        self._pending: dict[tuple[str, str], set[int]] = {}  # (set, interval) -> instruments updated
        self._retry: dict[tuple[str, str], set[int]] = {}  # what failed: written again with the next update
        self._closing = False
        self._busy = False
        self._writes: deque[OnlineWrite] = deque(maxlen=100_000)
        self._store: FeatureStore | None = None
        self._registered: set[str] = set()
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="hdi-live-online", daemon=True)
        self._thread.start()
        live.subscribe(self._updated)

    def __repr__(self) -> str:
        return f"LiveOnline({len(self._writes)} writes, {len(self.errors)} failed)"

    @property
    def writes(self) -> list[OnlineWrite]:
        """The writes so far (the last 100,000), oldest first."""
        with self._cv:
            return list(self._writes)

    @property
    def errors(self) -> list[OnlineWrite]:
        """The writes that failed."""
        return [w for w in self.writes if w.error is not None]

    def report_to(self, callback: Callable[[str], None]) -> None:
        """Hand each failure reported (see the class) to ``callback`` from now on (on the writes' thread), and
        those reported before (here). Raises nothing."""
        with self._cv:
            self._report, held, self._held = callback, self._held, []
        for text in held:
            self._tell(callback, text)

    # -- the writer's thread -----------------------------------------------------------------------

    def _updated(self, update: LiveUpdate) -> None:
        """A live update was stored (the features' thread): its instrument's latest row is to be written."""
        if update.error is not None or not update.rows:
            return
        with self._cv:
            self._pending.setdefault((update.feature_set, update.interval), set()).add(update.instrument_id)
            self._cv.notify_all()

    def _run(self) -> None:
        try:
            self._open()  # Feast's import and the repo's configuration, before the first update needs them
        except Exception as exc:  # noqa: BLE001  (reported by the first write, which opens it again)
            log.warning("live online store: opening the Feast store failed (%s); retried with the first write", exc)
        while True:
            with self._cv:
                while not self._pending and not self._closing:
                    self._cv.wait()
                if not self._pending and not (self._closing and self._retry):
                    self._cv.notify_all()
                    return
                work = self._retry
                for key, ids in self._pending.items():
                    work.setdefault(key, set()).update(ids)
                self._pending, self._retry = {}, {}
                self._busy = True
            try:
                for (set_name, interval), ids in work.items():
                    if not self._write(set_name, interval, ids):
                        with self._cv:
                            self._retry.setdefault((set_name, interval), set()).update(ids)
            finally:
                with self._cv:
                    self._busy = False
                    if self._closing and not self._pending:
                        self._retry = {}  # tried once more at close: what fails now stays in the errors
                    self._cv.notify_all()

    def _open(self) -> FeatureStore:
        if self._store is None:
            self._store = feast_repo.open_store(self.session, self.repo)
        return self._store

    def _write(self, set_name: str, interval: str, ids: set[int]) -> bool:
        """Write the latest rows of ``ids``; returns whether it succeeded (the write is logged either way)."""
        view = feast_repo.view_name(set_name, interval)
        t0 = time.perf_counter()
        applied = False
        rows, latest = 0, None
        error = None
        try:
            store = self._open()
            applied = self._register(store, view)
            fs = features.feature_set(set_name)
            table = features.table_name(fs.name, interval)
            frame = latest_rows(self.session.connection(), self.session.schema, table, sorted(ids), fs.columns)
            frame = frame[frame[list(fs.columns)].notna().any(axis=1)]  # all empty (a first bar): Feast refuses it
            if len(frame):
                with feast_repo.feast_errors():
                    store.write_to_online_store(view, frame, allow_registry_cache=True)
                rows, latest = len(frame), pd.Timestamp(frame["event_timestamp"].max())
        except Exception as exc:  # noqa: BLE001  (the session carries on: the failure is the write's error, logged)
            error = str(exc) if isinstance(exc, HdiError) else f"{type(exc).__name__}: {exc}"
            self._registered = set()  # the next write reads the registry again (another process may have changed it)
        write = OnlineWrite(
            view, tuple(sorted(ids)), rows, latest, time.time(), time.perf_counter() - t0, applied, error
        )
        with self._cv:
            self._writes.append(write)
        if error is not None and error != self._last_error:  # a lasting failure is reported once
            log.error("live online store: writing %s failed: %s", view, error)
            text = f"online store: writing {view} failed: {error}"
            with self._cv:
                callback = self._report
                if callback is None:
                    self._held.append(text)
            if callback is not None:
                self._tell(callback, text)
        self._last_error = error
        return error is None

    @staticmethod
    def _tell(callback: Callable[[str], None], text: str) -> None:
        try:
            callback(text)
        except Exception:
            log.exception("live online store: reporting a failure failed")

    def _register(self, store: FeatureStore, view: str) -> bool:
        """Apply the repo when ``view`` is not registered yet (its table was created by this session's first
        update); returns whether it applied.

        Raises ValidationError when the repo does not declare the view after applying, and what
        :func:`hdi_lab.featurestore.repo.apply` raises."""
        if view in self._registered:
            return False
        with feast_repo.feast_errors():
            store.refresh_registry()  # write_to_online_store reads the views from the store's cached registry
            self._registered = {v.name for v in store.list_feature_views()}
            if view in self._registered:
                return False
            feast_repo.apply(store)
            store.refresh_registry()
            self._registered = {v.name for v in store.list_feature_views()}
        if view not in self._registered:
            raise ValidationError(
                f"the feature repo {store.repo_path} declares no feature view {view!r}: use hdi_lab's feature_repo "
                "(or a copy of it) as HDI_FEAST_REPO"
            )
        return True
