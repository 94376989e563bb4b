"""Live sessions: a vendor's live stream into the same tables, through the same decode -> validate -> load path.

:func:`start` registers the session (table ``live_sessions``), connects the provider's feed and runs two threads:

* the **supervisor** watches the connection: a gateway that closes or fails, or sends nothing (no record, no
  heartbeat) for ``heartbeat_timeout`` seconds, is reconnected after everything received so far is committed,
  each schema replayed (intraday replay, ``start=``) from the last ``ts_event`` the session stored for it;
* the **writer** takes what the feed's callback put into the bounded buffer and commits it in small batches (at
  most ``flush_s`` after a batch's first record, or ``max_batch`` records): each schema's record bytes decoded
  by :func:`hdi_lab.dbn.live.decode_live` (the one DBN path), numbered for duplicate keys, validated
  (:func:`hdi_lab.core.validate.validate`; rejected records go to quarantine with their rule and reason) and
  loaded by :func:`hdi_lab.core.ingestion.load_records`, i.e. ``storage.load.load_market`` with the natural keys
  of the historical path: a record stored live and again by a historical ingest of the same day is one row.
  Symbol mappings of the stream are stored as symbology intervals as the historical metadata's are, extended
  day by day while the session runs. The registry row advances in the same transaction.

Records replayed after a reconnect that the session had already received are recognised by their position in
the stream (the index time, ``ts_recv`` where the schema has it, and how many records of that time were
received) and counted as ``replayed``, before duplicate keys are numbered, so a replay never renumbers them; a
new session that replays what an earlier one stored finds the rows stored (duplicates).

A record whose instrument the session does not know yet (it arrived before the stream's symbol mapping or
definition of its instrument, and the database knows it from neither) is quarantined as ``unknown_instrument``,
like the historical path's. The batch that makes the instrument known (its mapping, its definition, or its rows
found stored by another writer) retries those entries in its own transaction through the quarantine's retry path
(:func:`hdi_lab.core.ingestion.recover_known`, as a historical chunk bringing definitions does): they are loaded
with their original duplicate numbers, so nothing is lost or stored twice, and handed to ``on_commit`` with the
batch (live indicators and charts see them). At the session's end its entries still open are retried once more
(an instrument made known meanwhile by another writer). The status and the registry row count them as
``recovered``; the entries are resolved with a reason saying which session retried them.

The buffer between the client's callback and the writer is bounded: when it is full the callback waits, so the
client stops reading and TCP pushes back on the gateway. A slow database never makes a record be dropped.

A session ends on :meth:`LiveHandle.stop`, on ``hdi live stop`` (read from its registry row), or when it fails
(the gateway refused the key, reconnecting failed ``max_reconnects`` times in a row, the database failed): what was
received is committed first, and the row records how it ended.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab.core.ingestion import Reloaded, load_records, recover_known, reload_quarantined
from hdi_lab.core.session import LIVE_PROVIDERS, HdiSession
from hdi_lab.core.validate import UNKNOWN_INSTRUMENT, validate
from hdi_lab.dbn import INT64_MAX, Mapping, record_to_json
from hdi_lab.dbn.live import decode_live
from hdi_lab.dbn.writer import Records
from hdi_lab.errors import AuthError, HdiError, ProviderError, ValidationError
from hdi_lab.providers.databento.live import DatabentoFeed
from hdi_lab.providers.ib.live import IbFeed
from hdi_lab.providers.ib.provider import validate_dataset as validate_ib_dataset
from hdi_lab.providers.live import Item, LiveBuffer, Note
from hdi_lab.schemas import SCHEMAS, Chunk, Schema, SType, check_provided, parse_enum, parse_symbols, parse_time
from hdi_lab.storage import live as registry
from hdi_lab.storage import load, normalise, read
from hdi_lab.storage import quarantine as quarantined
from hdi_lab.storage.db import transaction

__all__ = [
    "LIVE_SCHEMAS",
    "SUMMARY_COLUMNS",
    "LiveCommit",
    "LiveHandle",
    "LiveRequest",
    "LiveStatus",
    "make_request",
    "request_stop",
    "sessions",
    "start",
    "summary",
]

log = logging.getLogger(__name__)

#: the schemas a live session stores (mbp-1 is not stored: tbbo is the trade with the book before it)
LIVE_SCHEMAS: tuple[str, ...] = SCHEMAS
#: a record sharing a duplicate key (instrument, publisher, ts_event) with an earlier one arrives within this
#: many ns of the latest ts_event seen; older keys are forgotten
_DUP_HORIZON_NS = 500_000_000


@dataclass(frozen=True)
class LiveRequest:
    """What a live session streams: ``schemas`` of ``symbols`` (``stype_in``) of ``dataset``, replayed from
    ``start`` (intraday replay) or from now (``None``)."""

    provider: str
    dataset: str
    schemas: tuple[Schema, ...]
    symbols: tuple[str, ...]
    stype_in: SType
    start: pd.Timestamp | None = None

    def describe(self) -> str:
        since = f" from {self.start:%Y-%m-%d %H:%M:%S}" if self.start is not None else ""
        return (
            f"{self.provider} {self.dataset} {','.join(self.schemas)} {','.join(self.symbols)} ({self.stype_in}){since}"
        )


def make_request(
    provider: str,
    *,
    dataset: str | None,
    schema: str | Sequence[str] | None,
    symbols: str | Sequence[str] | None,
    stype_in: str = "raw_symbol",
    start: object = None,
    default_dataset: str | None = None,
) -> LiveRequest:
    """Validate a live request's arguments.

    Raises ValidationError for a provider without a live feed, no dataset (for ib: not an IB one), no or
    unknown schemas or one the provider does not have (ohlcv-5s: ib only), no symbols, an unknown stype_in or a
    start that is not a time."""
    name = str(provider or "").strip().lower()
    if name not in LIVE_PROVIDERS:
        raise ValidationError(f"provider={provider!r} has no live feed here: use one of {', '.join(LIVE_PROVIDERS)}")
    if name == "ib":  # IB's datasets (IB when left out), not the Databento default
        ds = validate_ib_dataset(dataset)
    else:
        ds = str(dataset or default_dataset or "").strip().upper()
        if not ds:
            raise ValidationError("dataset is required for a live session: e.g. --dataset GLBX.MDP3")
    names = [s.strip() for s in schema.split(",")] if isinstance(schema, str) else list(schema or [])
    if not [n for n in names if n]:
        raise ValidationError(f"schema is required: one or more of {', '.join(LIVE_SCHEMAS)}, e.g. trades,ohlcv-1s")
    schemas = tuple(dict.fromkeys(check_provided(parse_enum(Schema, n, "schema"), name) for n in names if n))
    syms = parse_symbols(symbols)
    if not syms:
        raise ValidationError("symbols are required for a live session: e.g. --symbols ES.c.0 --stype-in continuous")
    stype = parse_enum(SType, stype_in, "stype_in")
    when = None if start is None or start == "" else parse_time(start, "start")
    return LiveRequest(name, ds, schemas, syms, stype, when)


@dataclass(frozen=True)
class LiveStatus:
    """A session's state and counts (what :meth:`LiveHandle.status` and ``hdi live status`` show)."""

    id: int
    state: str  # connecting | streaming | reconnecting | failing (the writer failed) | stopping | stopped | failed
    request: LiveRequest
    records: int = 0  # received (stored, duplicates, quarantined)
    inserted: int = 0
    updated: int = 0
    duplicates: int = 0
    quarantined: int = 0
    recovered: int = 0  # quarantined as of an unknown instrument, then loaded once the session knew it
    replayed: int = 0  # received again after a reconnect, recognised and skipped
    reconnects: int = 0
    batches: int = 0
    last_ts_event: pd.Timestamp | None = None
    buffered: int = 0
    backpressure_waits: int = 0  # times the feed waited for room in the buffer (a slow writer)
    buffer_high_water: int = 0  # most records held in the buffer at once (at most its capacity)
    error: str | None = None
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        last = "-" if self.last_ts_event is None else f"{self.last_ts_event:%Y-%m-%d %H:%M:%S.%f}"
        text = (
            f"live session {self.id} {self.state}: {self.request.describe()}; records {self.records}, inserted "
            f"{self.inserted}, updated {self.updated}, duplicates {self.duplicates}, quarantined {self.quarantined}, "
            f"recovered {self.recovered}, replayed {self.replayed}, reconnects {self.reconnects}, batches "
            f"{self.batches}, last ts_event {last}"
        )
        return text + (f"; error: {self.error}" if self.error else "")


@dataclass(frozen=True)
class LiveCommit:
    """One committed batch, handed to ``on_commit`` (a live chart, live indicators): the valid records stored
    (or found stored) per schema, the symbology intervals stored, when the commit returned (``time.time()``)."""

    session_id: int
    dataset: str
    records: dict[Schema, Records]
    mappings: list[Mapping]
    committed_at: float

    def bars(self, schema: str | Schema) -> pd.DataFrame:
        """The batch's bars of ``schema`` (``ohlcv-1s``...) as ``hdi_lab.query`` shows them: indexed by
        ``ts_event`` (the open, UTC), ``instrument_id``, float ``open high low close``, ``volume``; empty when the
        batch holds none. Raises ValidationError for a schema that is not a bar schema."""
        sch = parse_enum(Schema, schema, "schema")
        if not sch.is_bar:
            bars = ", ".join(s for s in Schema if s.is_bar)
            raise ValidationError(f"schema={schema!r} holds no bars: use one of {bars}")
        rec = self.records.get(sch)
        cols = ["instrument_id", "open", "high", "low", "close", "volume"]
        if rec is None or not len(rec):
            return pd.DataFrame(
                {c: pd.Series(dtype=np.float64 if c not in ("instrument_id", "volume") else np.int64) for c in cols},
                index=pd.DatetimeIndex([], tz="UTC", name="ts_event"),
            )
        frame = pd.DataFrame(
            {
                "instrument_id": rec["instrument_id"].astype(np.int64),
                **{c: read.float_prices(rec[c]) for c in ("open", "high", "low", "close")},
                "volume": rec["volume"].astype(np.int64),
            },
            index=pd.DatetimeIndex(pd.to_datetime(rec["ts_event"].astype(np.int64), utc=True), name="ts_event"),
        )
        return frame.sort_index(kind="stable")


@dataclass
class _SchemaState:
    """What the writer knows of one schema's stream."""

    dups: normalise.DupCounter
    last_ts: int | None = None  # greatest ts_event received and committed
    cursor: tuple[int, int] | None = None  # (index time of the last record received, records received at it)
    skip: tuple[int, int] | None = None  # after a reconnect: the cursor the replay must pass first


@dataclass
class _Shared:
    counts: registry.Progress = field(default_factory=registry.Progress)  # the session's totals
    state: str = "connecting"
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    last_ts: int | None = None


class LiveHandle:
    """A running live session (see the module docstring). ``stop()`` ends it gracefully."""

    def __init__(
        self,
        session: HdiSession,
        request: LiveRequest,
        session_id: int,
        feed: DatabentoFeed | IbFeed,
        buffer: LiveBuffer,
        *,
        owns_session: bool,
        heartbeat_timeout: float,
        flush_s: float,
        max_batch: int,
        max_reconnects: int,
        backoff: float,
        on_commit: Callable[[LiveCommit], None] | None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.id = session_id
        #: the live indicators (:class:`hdi_lab.features.live.LiveFeatures`) of ``hdi_lab.live(features=...)``
        self.features: Any = None
        #: their writes into the Feast online store (:class:`hdi_lab.featurestore.live.LiveOnline`), if on
        self.online: Any = None
        self.request = request
        self._session, self._owns = session, owns_session
        self._feed, self._buffer = feed, buffer
        self._timeout, self._flush_s, self._max_batch = heartbeat_timeout, flush_s, max_batch
        self._max_reconnects, self._backoff = max_reconnects, backoff
        self._on_commit, self._on_close = on_commit, on_close
        self._listeners: tuple[Callable[[LiveCommit], None], ...] = ()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._feed_closed = threading.Event()
        self._lock = threading.Lock()
        self._committed = threading.Condition(self._lock)
        self._items_done = 0
        self._shared = _Shared()
        self._states = {s: _SchemaState(normalise.DupCounter(s)) for s in request.schemas}
        self._mapped: dict[str, Mapping] = {}  # symbol -> its current interval (extended day by day)
        self._known: set[int] = set()
        self._pending_reconnects = 0
        self._quarantine_chunks = {
            s: Chunk(
                f"live-{session_id}-{s}",
                request.provider,
                request.dataset,
                s,
                request.stype_in,
                request.symbols,
                pd.Timestamp(0, tz="UTC"),
                pd.Timestamp("2262-04-11", tz="UTC"),
            )
            for s in request.schemas
        }
        self._writer = threading.Thread(target=self._write_loop, name=f"hdi-live-{session_id}-writer", daemon=True)
        self._supervisor = threading.Thread(target=self._supervise, name=f"hdi-live-{session_id}", daemon=True)

    def __repr__(self) -> str:
        return f"LiveHandle(id={self.id}, state={self._shared.state!r}, {self.request.describe()})"

    def __enter__(self) -> LiveHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        self._writer.start()
        self._supervisor.start()

    # -- the public side ---------------------------------------------------------------------------

    def status(self) -> LiveStatus:
        """The session's state and counts now. Raises nothing."""
        with self._lock:
            c, sh = self._shared.counts, self._shared
            return LiveStatus(
                id=self.id,
                state=sh.state,
                request=self.request,
                **{k: getattr(c, k) for k in registry.COUNTERS},
                last_ts_event=None if sh.last_ts is None else pd.Timestamp(sh.last_ts, tz="UTC"),
                buffered=len(self._buffer),
                backpressure_waits=self._buffer.waits,
                buffer_high_water=self._buffer.high_water,
                error=sh.error,
                notes=tuple(sh.notes[-20:]),
            )

    def subscribe(self, callback: Callable[[LiveCommit], None]) -> None:
        """Call ``callback`` (on the writer's thread, after ``on_commit``) with every batch committed from now on
        (a live chart). Thread-safe; a callback that raises is logged, the session carries on. Raises nothing."""
        with self._lock:
            self._listeners = (*self._listeners, callback)

    def note(self, text: str) -> None:
        """Add ``text`` to the session's notes (``status().notes``): what follows the session (the online store)
        reports there. Raises nothing."""
        self._note(text)

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def stop(self, timeout: float = 60.0) -> LiveStatus:
        """End the session: close the connection, commit everything received, mark the session stopped;
        returns its final status. Raises nothing (a failure is in the status)."""
        self._stop.set()
        self._done.wait(timeout)
        return self.status()

    def wait(self, timeout: float | None = None) -> LiveStatus:
        """Wait until the session ends (stopped elsewhere, or failed); returns its status. Raises nothing."""
        self._done.wait(timeout)
        return self.status()

    # -- the supervisor ----------------------------------------------------------------------------

    def _set_state(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self._shared.state = state
            if error is not None:
                self._shared.error = error

    def _note(self, text: str) -> None:
        log.info("live session %d: %s", self.id, text)
        with self._lock:
            self._shared.notes.append(text)

    def _supervise(self) -> None:
        error: str | None = None
        try:
            error = self._connect_loop()
        except Exception as exc:
            log.exception("live session %d failed", self.id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._set_state("stopping")
            self._feed.shutdown()
            self._feed_closed.set()
            self._writer.join()
            if self._on_close is not None:
                try:
                    self._on_close()
                except Exception:
                    log.exception("live session %d: on_close failed", self.id)
            error = error or self._shared.error
            status = "failed" if error else "stopped"
            self._set_state(status, error)
            try:
                registry.close(self._session.connection(), self._session.schema, self.id, status, error)
            except HdiError as exc:
                log.error("live session %d: its end could not be recorded: %s", self.id, exc)
            finally:
                if self._owns:
                    self._session.close()
                self._done.set()

    def _connect_loop(self) -> str | None:
        """Connect, watch, reconnect until stopped; returns the error that ended the session (None: stopped)."""
        starts: dict[Schema, int | None] = {
            s: None if self.request.start is None else int(self.request.start.value) for s in self.request.schemas
        }
        failures = 0
        while not self._stop.is_set():
            try:
                self._feed.connect(starts)
            except AuthError as exc:
                return str(exc)
            except ProviderError as exc:
                failures += 1
                if failures > self._max_reconnects:
                    return f"{exc} ({failures} attempts)"
                self._note(f"connecting failed ({exc}); retrying")
                self._stop.wait(min(self._backoff * 2 ** (failures - 1), 30.0))
                continue
            self._set_state("streaming")
            why = self._watch()
            if self._stop.is_set() or self._shared.error:
                break
            failures = 0
            self._set_state("reconnecting")
            self._note(f"connection lost ({why}); reconnecting with intraday replay")
            self._drained()
            with self._lock:
                self._pending_reconnects += 1
                self._shared.counts.reconnects += 1
                starts = self._resume_starts(starts)
        return self._shared.error

    def _watch(self) -> str:
        """Wait while the connection is up; returns why it ended (for the log)."""
        while not self._stop.is_set() and not self._shared.error:
            if not self._feed.connected():
                return self._feed.close() or "the gateway closed the connection"
            silent = self._feed.silent_for()
            if silent > self._timeout and len(self._buffer) < self._buffer.capacity:
                self._feed.close(abort=True)
                return f"nothing received for {silent:.1f} s, heartbeats included"
            self._stop.wait(0.05)
        self._feed.close()  # graceful: what the client received is delivered before it closes
        return "stopped"

    def _drained(self) -> None:
        """Wait until the writer committed everything the feed put into the buffer."""
        with self._committed:
            while self._items_done < self._feed.items and not self._shared.error:
                self._committed.wait(0.1)

    def _resume_starts(self, previous: dict[Schema, int | None]) -> dict[Schema, int | None]:
        """Each schema's replay start: its last ts_event committed (else where it started before, else the
        first connection's session start); its cursor is armed to recognise what a feed that replays (Databento)
        sends again (the IB feed resumes after what it put, per contract)."""
        out: dict[Schema, int | None] = {}
        for s, st in self._states.items():
            out[s] = st.last_ts if st.last_ts is not None else previous.get(s) or self._feed.metadata_start
            st.skip = st.cursor if self._feed.replays else None
        return out

    # -- the writer ----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        pending: list[Item] = []
        first_at = 0.0
        beat = time.monotonic()
        conn = None
        try:
            conn = self._session.connection()
            while True:
                finishing = self._feed_closed.is_set()
                wait = self._flush_s if not pending else max(0.0, first_at + self._flush_s - time.monotonic())
                got = self._buffer.take(self._max_batch - len(pending), 0.0 if finishing else min(wait, 0.25))
                if got and not pending:
                    first_at = time.monotonic()
                pending += got
                now = time.monotonic()
                due = len(pending) >= self._max_batch or (pending and now - first_at >= self._flush_s)
                idle = not pending and now - beat >= 1.0
                if due or idle or (finishing and pending) or (pending and not len(self._buffer) and self._waiting()):
                    self._commit(conn, pending)
                    pending, beat = [], now
                if finishing and not pending and not len(self._buffer):
                    self._sweep(conn)
                    break
        except Exception as exc:
            log.exception("live session %d: writing failed", self.id)
            self._set_state("failing", f"{type(exc).__name__}: {exc}" if not isinstance(exc, HdiError) else str(exc))
            self._buffer.close()
            with self._committed:
                self._committed.notify_all()

    def _waiting(self) -> bool:
        """Whether the supervisor waits for the writer (a reconnect): commit now, do not wait for the flush."""
        return self._shared.state == "reconnecting"

    def _commit(self, conn: Any, items: list[Item]) -> None:
        """Decode, validate and load one batch, its symbology and quarantine, and advance the registry row, in
        one transaction. The records quarantined earlier as of an instrument the batch makes known (its symbol
        mappings, definitions, or another writer's rows found in the database) are retried in it too."""
        parts: dict[Schema, list[bytes]] = {}
        mappings: list[Mapping] = []
        for schema, payload in items:
            if schema is not None:
                parts.setdefault(schema, []).append(payload)  # type: ignore[arg-type]
            elif isinstance(payload, Note):
                self._note(payload.text)
            elif isinstance(payload, Mapping):
                mappings.append(payload)
        c = registry.Progress()  # what this batch adds
        stored: dict[Schema, Records] = {}
        fresh: set[int] = set()  # instruments the batch made known to the session
        name = f"live session {self.id}"
        req = self.request
        with transaction(conn) as cur:
            new_maps = self._symbology(cur, mappings, fresh)
            # definitions first: the instruments they define are known to the batch's other records
            decoded = {
                s: decode_live(req.dataset, s, str(req.stype_in), 0, parts[s], f"{name} {s}")
                for s in sorted(parts, key=lambda s: s is not Schema.DEFINITION)
            }
            new_maps += self._extend(cur, decoded)
            last: int | None = None
            for schema, received in decoded.items():
                st = self._states[schema]
                records, replayed = _skip_replayed(st, received)
                c.replayed += replayed
                c.records += len(records)
                if not len(records):
                    continue
                top = int(records["ts_event"].max())
                st.last_ts = top if st.last_ts is None else max(st.last_ts, top)
                last = st.last_ts if last is None else max(last, st.last_ts)
                stored[schema] = self._load(cur, schema, records, c, fresh)
            if fresh:
                self._recovered(recover_known(cur, self._session.schema, {req.dataset: fresh}, name), c, stored)
            c.reconnects, c.batches = self._pending_reconnects, 1 if items else 0
            c.last_ts_event = None if last is None else pd.Timestamp(last, tz="UTC").to_pydatetime(warn=False)
            stop = registry.advance(cur, self._session.schema, self.id, c)
        self._account(c, last, len(items))
        if stop and not self._stop.is_set():
            self._note("stop requested (hdi live stop)")
            self._stop.set()
        self._hand_on(stored, new_maps)

    def _sweep(self, conn: Any) -> None:
        """At the end, once everything received is committed: retry once more the session's records still
        quarantined as of an unknown instrument (made known since by another writer, e.g. an ingest whose own
        retry ran before this session's entries were committed)."""
        c = registry.Progress()
        stored: dict[Schema, Records] = {}
        keys = [chunk.key for chunk in self._quarantine_chunks.values()]
        with transaction(conn) as cur:
            rows = quarantined.lock_open_of_chunks(cur, self._session.schema, UNKNOWN_INSTRUMENT, keys)
            if not rows:
                return
            how = f"retried automatically at the end of live session {self.id}: its instrument is known now"
            self._recovered(reload_quarantined(cur, self._session.schema, rows, how), c, stored)
            if not c.recovered:
                return
            c.reconnects = self._pending_reconnects
            registry.advance(cur, self._session.schema, self.id, c)
        self._account(c, None, 0)
        self._note(f"{c.recovered} quarantined record(s) of instruments known now loaded at the end")
        self._hand_on(stored, [])

    def _recovered(self, done: Reloaded, c: registry.Progress, stored: dict[Schema, Records]) -> None:
        """Count what a retry of quarantined records resolved; the records of the session's schemas join the
        batch handed to ``on_commit`` (live indicators and charts see them as stored now)."""
        c.recovered += len(done.resolved)
        for dataset, schema, records in done.records:
            if dataset != self.request.dataset or schema not in self._states or not len(records):
                continue
            stored[schema] = np.concatenate([stored[schema], records]) if schema in stored else records

    def _account(self, c: registry.Progress, last: int | None, items: int) -> None:
        """Add a committed transaction's counts to the session's totals."""
        with self._committed:
            self._pending_reconnects = 0
            t = self._shared.counts
            for k in registry.COUNTERS:
                if k != "reconnects":  # the totals count a reconnect when it happens, the row at the next commit
                    setattr(t, k, getattr(t, k) + getattr(c, k))
            if last is not None:
                self._shared.last_ts = last if self._shared.last_ts is None else max(self._shared.last_ts, last)
            self._items_done += items
            self._committed.notify_all()

    def _hand_on(self, stored: dict[Schema, Records], new_maps: list[Mapping]) -> None:
        """Hand what a transaction stored to ``on_commit`` and the subscribers."""
        if not stored and not new_maps:
            return
        commit = LiveCommit(self.id, self.request.dataset, stored, new_maps, time.time())
        for callback in (self._on_commit, *self._listeners):
            if callback is None:
                continue
            try:
                callback(commit)
            except Exception:
                log.exception("live session %d: on_commit failed", self.id)

    def _symbology(self, cur: Any, mappings: list[Mapping], fresh: set[int]) -> list[Mapping]:
        """Store the stream's mappings (as the historical metadata's intervals are stored); ``fresh`` gains the
        instruments they make known."""
        if not mappings:
            return []
        for m in mappings:
            self._mapped[m.symbol] = m  # a new instrument for the symbol (a roll) ends the previous one's extension
            self._learn([m.instrument_id], fresh)
        load.upsert_symbology(cur, self._session.schema, self.request.dataset, mappings)
        return mappings

    def _extend(self, cur: Any, decoded: dict[Schema, Records]) -> list[Mapping]:
        """Extend the current intervals to the days the batch's records of their instruments reach."""
        reach: dict[int, dt.date] = {}
        for records in decoded.values():
            if not len(records):
                continue
            ids, ts = records["instrument_id"], records["ts_event"]
            for iid in np.unique(ids).tolist():
                day = pd.Timestamp(int(ts[ids == iid].max()), tz="UTC").date()
                reach[int(iid)] = max(day, reach.get(int(iid), day))
        grown = []
        for symbol, m in list(self._mapped.items()):
            until = reach.get(m.instrument_id)
            if until is not None and until >= m.d1:
                longer = Mapping(m.stype, m.symbol, m.d0, until + dt.timedelta(days=1), m.instrument_id)
                self._mapped[symbol] = longer
                grown.append(longer)
        if grown:
            load.upsert_symbology(cur, self._session.schema, self.request.dataset, grown)
        return grown

    def _learn(self, ids: Sequence[int], fresh: set[int]) -> None:
        """The session knows instruments ``ids`` now; ``fresh`` gains those it did not know."""
        for iid in ids:
            if int(iid) not in self._known:
                self._known.add(int(iid))
                fresh.add(int(iid))

    def _load(self, cur: Any, schema: Schema, records: Records, c: registry.Progress, fresh: set[int]) -> Records:
        """Number, validate, quarantine and load one schema's records; returns the valid ones. ``fresh`` gains
        the instruments the session learns of: found in the database (stored by another writer since), or
        defined by the records (definitions)."""
        name = self._session.schema
        req = self.request
        dup_idx = None
        known = None
        if schema is not Schema.DEFINITION:
            records = records[normalise.key_order(records, schema)]
            st = self._states[schema]
            dup_idx = st.dups.assign(records)
            st.dups.forget_before(int(records["ts_event"].max()) - _DUP_HORIZON_NS)
            ids = np.unique(records["instrument_id"]).astype(np.int64)
            missing = np.setdiff1d(ids, np.array(sorted(self._known), dtype=np.int64))
            self._learn(load.known_instruments(cur, name, req.dataset, missing).tolist(), fresh)
            known = np.array(sorted(self._known), dtype=np.int64)
        rejected = validate(records, schema, 0, INT64_MAX, known)
        if len(rejected.index):
            bad = [
                load.BadRow(rule, reason, record_to_json(records[j]), int(dup_idx[j]) if dup_idx is not None else 0)
                for j, rule, reason in zip(rejected.index, rejected.rules, rejected.reasons, strict=True)
            ]
            load.insert_quarantine(cur, name, None, self._quarantine_chunks[schema], bad)
            keep = np.ones(len(records), dtype=bool)
            keep[rejected.index] = False
            records = records[keep]
            dup_idx = dup_idx[keep] if dup_idx is not None else None
            c.quarantined += len(rejected.index)
        counts = dict(inserted=0, updated=0, duplicates=0)
        load_records(cur, name, schema, req.dataset, records, counts, dup_idx)
        c.inserted += counts["inserted"]
        c.updated += counts["updated"]
        c.duplicates += counts["duplicates"]
        if schema is Schema.DEFINITION:
            self._learn(np.unique(records["instrument_id"]).tolist(), fresh)
        return records


def _index_times(records: Records) -> npt.NDArray[Any]:
    return records["ts_recv" if "ts_recv" in (records.dtype.names or ()) else "ts_event"]


def _skip_replayed(st: _SchemaState, records: Records) -> tuple[Records, int]:
    """Drop the records a replay sends again (before ``st.skip``); advance ``st.cursor``. Returns (the rest,
    how many were dropped)."""
    if not len(records):
        return records, 0
    idx = _index_times(records).astype(np.uint64)
    dropped = 0
    if st.skip is not None:
        t, n = st.skip
        at = idx == np.uint64(t)
        drop = (idx < np.uint64(t)) | (at & (np.cumsum(at) <= n))
        dropped = int(drop.sum())
        # until a record past the cursor arrives, the replay may still send records received before
        st.skip = None if (idx > np.uint64(t)).any() else (t, max(n - int(at.sum()), 0))
        records, idx = records[~drop], idx[~drop]
    if len(idx):
        last = int(idx[-1])
        same = int((idx == np.uint64(last)).sum())
        if st.cursor is not None and st.cursor[0] == last:
            same += st.cursor[1]
        st.cursor = (last, same)
    return records, dropped


def start(
    request: LiveRequest,
    session: HdiSession | None = None,
    *,
    heartbeat_interval_s: int = 10,
    heartbeat_timeout: float | None = None,
    flush_s: float = 0.1,
    max_batch: int = 5_000,
    buffer_size: int = 100_000,
    max_reconnects: int = 10,
    backoff: float = 1.0,
    on_commit: Callable[[LiveCommit], None] | None = None,
    on_close: Callable[[], None] | None = None,
) -> LiveHandle:
    """Start a live session (see the module docstring) in background threads; returns its handle.

    ``heartbeat_interval_s`` is asked of the gateway; silence longer than ``heartbeat_timeout`` (default twice
    the interval plus 5 s) is a dead connection. Batches commit at most ``flush_s`` after their first record.
    ``on_commit`` is called on the writer's thread with each committed batch; ``on_close`` once the writer has
    committed everything, before the session is marked ended (what follows the session, e.g. live indicators,
    finishes its work there).

    Raises ConfigError (no API key, a bad gateway setting), StorageError (the registry row cannot be written),
    ValidationError for bad settings. Connection failures after the start are the session's (see its status).
    """
    if flush_s <= 0 or max_batch < 1 or buffer_size < 1:
        raise ValidationError(
            f"flush_s ({flush_s}), max_batch ({max_batch}) and buffer_size ({buffer_size}) must be > 0"
        )
    owns = session is None
    session = session or HdiSession()
    try:
        buffer = LiveBuffer(buffer_size)
        feed: DatabentoFeed | IbFeed
        if request.provider == "ib":
            feed = IbFeed(
                session.settings, buffer, dataset=request.dataset, schemas=request.schemas, symbols=request.symbols
            )
        else:
            feed = DatabentoFeed(
                session.settings,
                buffer,
                dataset=request.dataset,
                schemas=request.schemas,
                symbols=request.symbols,
                stype_in=str(request.stype_in),
                heartbeat_interval_s=heartbeat_interval_s,
            )
        try:
            session_id = registry.insert(
                session.connection(),
                session.schema,
                provider=request.provider,
                dataset=request.dataset,
                schemas=[str(s) for s in request.schemas],
                stype_in=str(request.stype_in),
                symbols=request.symbols,
                replay_start=None if request.start is None else request.start.to_pydatetime(warn=False),
                host=socket.gethostname(),
                pid=os.getpid(),
            )
        except BaseException:
            feed.shutdown()
            raise
    except BaseException:
        if owns:
            session.close()
        raise
    handle = LiveHandle(
        session,
        request,
        session_id,
        feed,
        buffer,
        owns_session=owns,
        heartbeat_timeout=heartbeat_timeout if heartbeat_timeout is not None else 2.0 * heartbeat_interval_s + 5.0,
        flush_s=flush_s,
        max_batch=max_batch,
        max_reconnects=max_reconnects,
        backoff=backoff,
        on_commit=on_commit,
        on_close=on_close,
    )
    handle._start()
    return handle


def sessions(session: HdiSession, limit: int = 50) -> pd.DataFrame:
    """The registry, newest first, with a ``state`` column: ``running``, ``lost`` (a row left running whose
    process has not written it for over a minute: killed), ``stopped`` or ``failed``. Raises StorageError."""
    frame = registry.frame(session.connection(), session.schema, limit)
    if frame.empty:
        return frame.assign(state=pd.Series(dtype=object))
    now = pd.Timestamp.now(tz="UTC")
    beat = pd.to_datetime(frame["heartbeat_at"], utc=True)
    lost = (frame["status"] == "running") & (now - beat > pd.Timedelta(minutes=1))
    state = frame["status"].where(~lost, "lost")
    return frame.drop(columns="status").assign(state=state)[["id", "state", *frame.columns[2:]]]


#: what ``hdi status`` and the operations dashboard show of each live session
SUMMARY_COLUMNS = (
    "id",
    "state",
    "provider",
    "dataset",
    "schemas",
    "symbols",
    "started_at",
    "ended_at",
    "records",
    "inserted",
    "duplicates",
    "quarantined",
    "recovered",
    "reconnects",
    "last_ts_event",
    "error",
)


def summary(session: HdiSession, limit: int = 5) -> pd.DataFrame:
    """The ``limit`` newest live sessions, :data:`SUMMARY_COLUMNS` of :func:`sessions`. Raises StorageError."""
    frame = sessions(session, limit)
    if frame.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    return frame.loc[:, list(SUMMARY_COLUMNS)]


def request_stop(session: HdiSession, ids: Sequence[int] | None = None) -> list[int]:
    """Ask running sessions (``ids``, or every running one) to stop; each stops gracefully within about a
    second. Returns the ids asked. Raises ValidationError for an id that is not a running session,
    StorageError."""
    asked = registry.request_stop(session.connection(), session.schema, ids)
    missing = sorted(set(ids or ()) - set(asked))
    if missing:
        raise ValidationError(
            f"live session(s) {', '.join(map(str, missing))} not running: see `hdi live status`"
            + (f" (stop was asked of {', '.join(map(str, asked))})" if asked else "")
        )
    return asked
