"""The one ingestion core: plan -> fetch -> decode/normalise -> validate -> quarantine -> load -> log.

Each chunk commits its rows, its quarantined records and its ingest-log row in one transaction,
so a crash keeps every committed chunk and leaves no half chunk; a re-run skips completed chunks
unless ``force`` is set (which re-loads them without duplicates).
A chunk whose symbology or definitions make an instrument known also loads, in its transaction, the
records quarantined earlier because that instrument was unknown (:func:`reload_quarantined`).

Files are independent inputs: a file whose bytes are bad (:data:`CHUNK_ERRORS`: truncated,
corrupt) fails alone, the run goes on with the other files, then raises :class:`IngestError`
carrying the report of every file's outcome. Any other failure (a vendor's chunk after its
retries, the provider or the database failing) would likely fail the chunks after it too: it
stops the run, its message saying how many chunks were committed before it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeAlias

import databento as db
import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab import dbn
from hdi_lab.core import conditions as vendor_conditions
from hdi_lab.core.executors import DaskExecutor
from hdi_lab.core.plan import Plan, estimate, make_plan, schema_label
from hdi_lab.core.session import HdiSession
from hdi_lab.core.validate import UNKNOWN_INSTRUMENT, validate
from hdi_lab.dbn.writer import record_dtype
from hdi_lab.errors import DataFormatError, HdiError, IngestError
from hdi_lab.providers.base import CostSource, Fetch, Provider
from hdi_lab.schemas import Chunk, ChunkResult, IngestReport, IngestRequest, Progress, Schema
from hdi_lab.storage import conditions as condition_table
from hdi_lab.storage import load, normalise, quarantine, settle
from hdi_lab.storage.db import transaction
from hdi_lab.storage.tables import TABLES

__all__ = [
    "CHUNK_ERRORS",
    "ChunkWork",
    "ProgressFn",
    "Reloaded",
    "chunk_task",
    "ingest_chunk",
    "load_records",
    "on_cluster",
    "recover_known",
    "reload_quarantined",
    "run",
]

ProgressFn: TypeAlias = Callable[[Progress], None]
#: a chunk to run: (chunk, force, the vendor conditions of its dataset, ``planned_at`` (see :func:`ingest_chunk`))
ChunkWork: TypeAlias = tuple[Chunk, bool, "pd.DataFrame | None", int | None]
log = logging.getLogger(__name__)

#: errors that belong to one file's bytes: the file fails, the other files are still ingested
CHUNK_ERRORS = (DataFormatError,)


def run(
    request: IngestRequest,
    session: HdiSession,
    *,
    provider: Provider | None = None,
    progress: ProgressFn | None = None,
    executor: Executor | DaskExecutor | None = None,
) -> IngestReport:
    """Ingest ``request``; returns the report.

    Chunks are independent: ``executor`` (default: in order, in this thread) may run them
    elsewhere, but every chunk still writes through its own transaction. A :class:`DaskExecutor` runs
    them as tasks of a Dask cluster (:mod:`hdi_lab.core.cluster`): progress comes as they finish, the
    report lists them in plan order.

    Raises ValidationError (a bad request), CostLimitError (over the cost limit without ``allow_cost``),
    IngestError (some files failed: its report says which; the others are stored), DataFormatError (the one
    chunk's bytes are bad), StorageError, ProviderError or another HdiError that stopped the run (its message
    says how many chunks were committed before it); with a DaskExecutor also ClusterError (the cluster cannot be
    reached or lost a chunk's worker too often) and MissingDependency (``pip install 'hdi_lab[dask]'``).
    """
    if provider is None:  # a provider made here is closed here (the IB one holds a connection for the run)
        owned = session.provider(request.provider)
        try:
            return run(request, session, provider=owned, progress=progress, executor=executor)
        finally:
            owned.close()
    t0 = time.perf_counter()
    plan = make_plan(request, session, provider)
    chunks = plan.chunks
    report = IngestReport(provider=provider.name, schema=schema_label(request, chunks), dry_run=request.dry_run)
    if request.dry_run:  # estimate what a real run would fetch; chunks already done are skipped
        report.chunks.extend(estimate(plan, provider))
        report.seconds = time.perf_counter() - t0
        return report

    provider.check_cost(plan.todo, request.allow_cost)
    seen = vendor_conditions.seen(provider, plan.todo)  # what the vendor says of the days now, kept with each chunk

    failures: dict[str, HdiError] = {}

    def one(chunk: Chunk) -> ChunkResult:
        if plan.skips(chunk):
            return ChunkResult(chunk, skipped=True)
        return _attempt(failures, session, provider, chunk, force=request.force, conditions=seen.get(chunk.dataset))

    if progress is not None:
        progress(Progress(done=0, total=len(chunks), rows=0))
    results: Iterable[ChunkResult]
    if isinstance(executor, DaskExecutor):
        results = _on_cluster(executor, session, provider, plan, request.force, failures, seen)
    elif executor is not None:
        results = executor.map(one, chunks)
    else:
        results = _in_order(session, provider, plan, request.force, failures, seen)
    rows = 0
    try:
        for i, result in enumerate(results, 1):
            report.chunks.append(result)
            rows += result.fetched
            log.info("chunk %d/%d %s: %s", i, len(chunks), result.chunk.describe(), result.outcome)
            if progress is not None:
                progress(Progress(done=i, total=len(chunks), rows=rows, chunk=result))
    except HdiError as exc:
        _note_committed(exc, report, len(chunks))
        raise
    finally:
        order = {c.key: i for i, c in enumerate(chunks)}
        report.chunks.sort(key=lambda r: order[r.chunk.key])  # a cluster reports them as they finish
        report.seconds = time.perf_counter() - t0
    if failures:
        if len(chunks) == 1:  # the one chunk's own error says it all
            raise next(iter(failures.values()))
        raise IngestError(report.failure_message(), report) from next(iter(failures.values()))
    return report


def _attempt(
    failures: dict[str, HdiError],
    session: HdiSession,
    provider: Provider,
    chunk: Chunk,
    *,
    force: bool,
    conditions: pd.DataFrame | None,
    stores: Iterable[db.DBNStore] | None = None,
    planned_at: int | None = None,
    run_id: str | None = None,
) -> ChunkResult:
    """Run one chunk (:func:`ingest_chunk`); bad bytes of a file (:data:`CHUNK_ERRORS`) become the chunk's failed
    result, its error kept in ``failures``."""
    try:
        return ingest_chunk(
            session, provider, chunk, force=force, stores=stores, conditions=conditions, planned_at=planned_at,
            run_id=run_id,
        )  # fmt: skip
    except CHUNK_ERRORS as exc:
        if chunk.path is None:  # a vendor's chunk: the next ones would likely fail alike
            raise
        log.warning("chunk %s failed, nothing of it stored: %s", chunk.describe(), exc)
        failures[chunk.key] = exc
        return ChunkResult(chunk, error=str(exc))


def chunk_task(
    session: HdiSession, provider: Provider | None, work: ChunkWork, *, run_id: str
) -> tuple[ChunkResult, HdiError | None]:
    """One chunk as a cluster task of run ``run_id`` runs it (:func:`hdi_lab.core.cluster.map_unordered`):
    ingested in its own transaction; a file's bad bytes make a failed result and its error, as in a local run.
    A retry of a task whose first attempt committed (its worker died before the result reached the caller)
    reports what that attempt logged, not a skip (see :func:`hdi_lab.storage.load.logged_result`).

    Raises what :func:`ingest_chunk` raises but a file chunk's :data:`CHUNK_ERRORS`, and StorageError."""
    assert provider is not None, "an ingest task runs with the run's provider"
    chunk, force, conditions, planned_at = work
    failures: dict[str, HdiError] = {}
    result = _attempt(
        failures, session, provider, chunk, force=force, conditions=conditions, planned_at=planned_at, run_id=run_id
    )
    if result.skipped:
        with transaction(session.connection()) as cur:
            result = load.logged_result(cur, session.schema, chunk, run_id) or result
    return result, failures.get(chunk.key)


def _on_cluster(
    executor: DaskExecutor,
    session: HdiSession,
    provider: Provider,
    plan: Plan,
    force: bool,
    failures: dict[str, HdiError],
    seen: dict[str, pd.DataFrame],
) -> Iterator[ChunkResult]:
    """The chunks as tasks of a Dask cluster, yielded as they finish (skipped ones first)."""
    for chunk in plan.chunks:
        if plan.skips(chunk):
            yield ChunkResult(chunk, skipped=True)
    work: list[ChunkWork] = [(c, force, seen.get(c.dataset), None) for c in plan.todo]
    for result, error in on_cluster(executor, session, provider, work):
        if error is not None:
            failures[result.chunk.key] = error
        yield result


def on_cluster(
    executor: DaskExecutor, session: HdiSession, provider: Provider, work: Sequence[ChunkWork]
) -> Iterator[tuple[ChunkResult, HdiError | None]]:
    """Chunks as tasks of a Dask cluster (:func:`chunk_task` each), yielded as they finish; companion chunks
    (definitions) all first, as in a local run: the data's instruments are known when it is validated.

    Raises MissingDependency, what :func:`hdi_lab.core.cluster.map_unordered` raises and what a chunk raises."""
    from hdi_lab.core import cluster  # MissingDependency without Dask

    task = functools.partial(chunk_task, run_id=uuid.uuid4().hex)  # the run's id, logged with its chunks
    for wave in ([w for w in work if w[0].companion], [w for w in work if not w[0].companion]):
        if wave:
            for _, out in cluster.map_unordered(executor, session, provider, task, wave):
                yield out


def _note_committed(exc: HdiError, report: IngestReport, total: int) -> None:
    """Extend the message of the error that stopped the run by what the run committed before it."""
    kept = sum(1 for c in report.chunks if not c.skipped and c.error is None)
    if kept:
        exc.args = (f"{exc} ({kept} of {total} chunks were committed before this and are kept)", *exc.args[1:])


class _Prefetch:
    """A chunk's DBN stores, the first one fetched on a background thread (its download)."""

    def __init__(self, pool: ThreadPoolExecutor, stores: Fetch) -> None:
        self._stores = stores
        self._first: Future[db.DBNStore | None] = pool.submit(next, stores, None)

    def __iter__(self) -> Iterator[db.DBNStore]:
        first = self._first.result()  # re-raises the fetch's error, in the chunk it belongs to
        if first is not None:
            yield first
            yield from self._stores

    def close(self) -> None:
        """Release what the fetch holds (temporary files), after waiting for a running download."""
        if not self._first.cancel():
            with contextlib.suppress(Exception):  # the error belongs to a chunk that will not be loaded now
                self._first.result()
        self._stores.close()


def _in_order(
    session: HdiSession,
    provider: Provider,
    plan: Plan,
    force: bool,
    failures: dict[str, HdiError],
    seen: dict[str, pd.DataFrame],
) -> Iterator[ChunkResult]:
    """Chunks one after another; the next chunk downloads while the current one is validated and loaded."""
    following = plan.following()
    with ThreadPoolExecutor(1, thread_name_prefix="hdi-fetch") as pool:
        ahead: dict[str, _Prefetch] = {}
        try:
            for chunk in plan.chunks:
                if plan.skips(chunk):
                    yield ChunkResult(chunk, skipped=True)
                    continue
                current = ahead.pop(chunk.key, None) or _Prefetch(pool, provider.fetch(chunk))
                nxt = following.get(chunk.key)
                if nxt is not None:
                    ahead[nxt.key] = _Prefetch(pool, provider.fetch(nxt))
                try:
                    result = _attempt(
                        failures,
                        session,
                        provider,
                        chunk,
                        force=force,
                        stores=current,
                        conditions=seen.get(chunk.dataset),
                    )
                finally:
                    current.close()
                yield result
        finally:
            for pending in ahead.values():
                pending.close()


def ingest_chunk(
    session: HdiSession,
    provider: Provider,
    chunk: Chunk,
    *,
    force: bool = False,
    stores: Iterable[db.DBNStore] | None = None,
    conditions: pd.DataFrame | None = None,
    planned_at: int | None = None,
    run_id: str | None = None,
) -> ChunkResult:
    """Fetch (unless ``stores`` already holds the chunk's fetch), validate and load one chunk in one transaction,
    with its ingest-log row (naming ``run_id``, a cluster run) and the vendor's ``conditions`` of its days (see
    :func:`hdi_lab.core.conditions.seen`).
    The chunk's lock is held throughout: a concurrent ingest of the same chunk waits, then skips it when it is
    stored (not forced), or when forced with ``planned_at`` (the last ingest-log id when its plan was made) and
    another run logged the chunk since (an update planned the same re-fetch twice: once is enough).

    Raises DataFormatError (bad bytes, or another schema than planned), StorageError, or what the provider's
    fetch raises; nothing of the chunk is stored then.
    """
    t0 = time.perf_counter()
    schema_name = session.schema
    conn = session.connection()
    counts = dict(fetched=0, inserted=0, updated=0, duplicates=0, quarantined=0)
    bad_rows: list[load.BadRow] = []
    scope = _Scope()
    brought: dict[str, set[int]] = {}  # dataset -> instruments the chunk's symbology or definitions make known
    dups = normalise.DupCounter(chunk.schema)
    batch = int(session.settings.chunk_rows)
    with transaction(conn) as cur:
        load.lock_chunk(cur, chunk.key)
        if not force and load.completed(cur, schema_name, [chunk.key]):
            return ChunkResult(chunk, skipped=True)
        if force and planned_at is not None and settle.logged_since(cur, schema_name, chunk.key, planned_at):
            return ChunkResult(chunk, skipped=True)
        name = chunk.path or chunk.describe()
        notes: list[str] = []
        for store in provider.fetch(chunk) if stores is None else stores:
            notes += _not_found(store, chunk)
            for part in dbn.decode(store, name, batch=batch, schema=chunk.schema):
                if part.schema != chunk.schema:
                    raise DataFormatError(f"{name}: provider returned {part.schema}, expected {chunk.schema}")
                load.upsert_symbology(cur, schema_name, part.dataset, part.mappings)
                _load_part(cur, schema_name, chunk, part, dups, counts, bad_rows, scope)
                _note_instruments(brought, chunk, part)
        _keep_fixed(cur, schema_name, chunk, scope, bad_rows)
        deleted = _delete_stale(cur, schema_name, chunk, scope)
        _supersede(cur, schema_name, chunk, scope, bad_rows)
        # after the deletes: records recovered inside the chunk's own range must not be deleted again
        recovered = len(recover_known(cur, schema_name, brought, name).resolved)
        vendor = provider.take_warnings(chunk)
        notes += [] if notes else vendor  # the metadata's not_found already says what HTTP 206 says
        cost = provider.cost_of(chunk, counts["fetched"]) if isinstance(provider, CostSource) else None
        held = _held(chunk, scope)
        seconds = time.perf_counter() - t0
        result = ChunkResult(
            chunk,
            fetched=counts["fetched"],
            inserted=counts["inserted"],
            updated=counts["updated"],
            duplicates=counts["duplicates"],
            quarantined=counts["quarantined"],
            deleted=deleted,
            recovered=recovered,
            seconds=seconds,
            warnings=tuple(dict.fromkeys(notes)),
            changed=dict(sorted(scope.coverage.changed.items())),
            cost_usd=cost,
            held=held,
        )
        log_id = load.insert_log(cur, schema_name, result, force, run_id)
        condition_table.insert_conditions(cur, schema_name, log_id, vendor_conditions.chunk_rows(conditions, chunk))
        load.insert_quarantine(cur, schema_name, log_id, chunk, bad_rows)
    return result


class _Scope:
    """What a chunk's data covers: what its loads read and stored, its instruments and publishers."""

    def __init__(self) -> None:
        self.coverage = load.Coverage()
        self.mapped: set[tuple[int, dt.date, dt.date]] = set()  # (instrument_id, first day, day after)
        self.instruments: set[int] = set()  # of the data
        self.publishers: set[int] = set()
        self.dataset: str | None = None


def _keep_fixed(cur: load.Cursor, schema_name: str, chunk: Chunk, scope: _Scope, bad_rows: list[load.BadRow]) -> None:
    """Keep the rows a quarantine retry loaded for records this data still rejects: the user's fix of a
    record stands while the vendor sends it unchanged (its entry stays resolved)."""
    if chunk.schema is Schema.DEFINITION or scope.dataset is None or not bad_rows:
        return
    fixed = quarantine.fixed_records(
        cur, schema_name, scope.dataset, chunk.schema.value, [(r.record, r.dup_idx) for r in bad_rows]
    )
    if not fixed:
        return
    records = dbn.records_from_json([r for r, _ in fixed], record_dtype(chunk.schema))
    dup_idx = np.array([d for _, d in fixed], dtype=np.int32)
    scope.coverage.keep(load.key_values(normalise.normalise(records, TABLES[chunk.schema], dup_idx)))


def _supersede(cur: load.Cursor, schema_name: str, chunk: Chunk, scope: _Scope, bad_rows: list[load.BadRow]) -> None:
    """Open quarantine entries of the chunk's range whose record its data no longer sends are superseded."""
    if chunk.schema is Schema.DEFINITION or scope.dataset is None:
        return
    quarantine.supersede(
        cur,
        schema_name,
        scope.dataset,
        chunk.schema.value,
        _spans(chunk, scope),
        (chunk.start.value, chunk.end.value),
        [(r.record, r.dup_idx) for r in bad_rows],
    )


def _delete_stale(cur: load.Cursor, schema_name: str, chunk: Chunk, scope: _Scope) -> int:
    """Delete the stored rows of the chunk's range that its data no longer has (a vendor revision removed
    them, or they now fail validation); the chunk's range then holds exactly its valid data."""
    if chunk.schema is Schema.DEFINITION or scope.dataset is None:
        return 0
    return load.delete_stale(
        cur,
        schema_name,
        TABLES[chunk.schema],
        scope.coverage,
        _spans(chunk, scope),
        scope.dataset,
        sorted(scope.publishers),
    )


def _held(chunk: Chunk, scope: _Scope) -> dict[int, int] | None:
    """The rows the chunk's range holds after it per instrument of its data or its symbols (none for
    definitions): logged with it, so an update can tell that nothing changed there since (see
    :mod:`hdi_lab.core.update`). Counted from the rows its loads stored or kept, which are exactly what its range
    holds once the stale rows are deleted (no query: a count over a fresh range costs a heap fetch per row)."""
    if chunk.schema is Schema.DEFINITION:
        return None
    held = dict.fromkeys(sorted(scope.instruments | {iid for iid, _, _ in scope.mapped}), 0)
    at = TABLES[chunk.schema].key.index("instrument_id")
    for keys in scope.coverage.kept:
        ids, counts = np.unique(keys[at], return_counts=True)
        for iid, n in zip(ids.tolist(), counts.tolist(), strict=True):
            held[int(iid)] = held.get(int(iid), 0) + int(n)
    return held


def _spans(chunk: Chunk, scope: _Scope) -> list[load.Span]:
    """The chunk's instruments on their time ranges: a symbol's instrument on the days it maps to it (a
    continuous symbol's contracts each on their own days), an unmapped instrument of the data on the
    chunk's whole range; always within the chunk's ``[start, end)``."""
    lo, hi = chunk.start.value, chunk.end.value
    spans = [
        (iid, max(lo, pd.Timestamp(d0, tz="UTC").value), min(hi, pd.Timestamp(d1, tz="UTC").value))
        for iid, d0, d1 in scope.mapped
    ]
    mapped = {iid for iid, _, _ in scope.mapped}
    return spans + [(iid, lo, hi) for iid in scope.instruments - mapped]


def _note_instruments(brought: dict[str, set[int]], chunk: Chunk, part: dbn.Decoded) -> None:
    ids = brought.setdefault(part.dataset, set())
    ids.update(m.instrument_id for m in part.mappings)
    if chunk.schema is Schema.DEFINITION:
        ids.update(np.unique(part.records["instrument_id"]).tolist())


def recover_known(cur: load.Cursor, schema_name: str, brought: dict[str, set[int]], name: str) -> Reloaded:
    """Retry the open entries quarantined as of an unknown instrument that ``name`` (a chunk, a live session's
    batch) made known (``brought``: dataset -> instrument ids), through :func:`reload_quarantined`, in the
    caller's transaction (they land with it or not at all); returns what was resolved and loaded.

    Raises StorageError."""
    out = Reloaded(0, 0, [], [])
    for dataset, ids in brought.items():
        if not ids:
            continue
        rows = quarantine.lock_open_of_instruments(cur, schema_name, UNKNOWN_INSTRUMENT, dataset, sorted(ids))
        if rows:
            out = out + reload_quarantined(
                cur, schema_name, rows, f"retried automatically when {name} made its instrument known"
            )
    if out.resolved:
        log.info("%s: %d quarantined records of instruments it made known were loaded", name, len(out.resolved))
    return out


@dataclass(frozen=True)
class Reloaded:
    """What :func:`reload_quarantined` did: entries resolved (their records loaded, or found already stored)
    and entries that stayed open, each with the rule it still breaks and why."""

    loaded: int
    duplicates: int
    resolved: list[int]
    stayed: list[tuple[int, str, str]]  # (entry id, rule, reason)
    #: (dataset, schema, the records of the resolved entries: loaded now or found stored), per group retried
    records: tuple[tuple[str, Schema, npt.NDArray[np.void]], ...] = ()

    def __add__(self, other: Reloaded) -> Reloaded:
        return Reloaded(
            self.loaded + other.loaded,
            self.duplicates + other.duplicates,
            self.resolved + other.resolved,
            self.stayed + other.stayed,
            self.records + other.records,
        )


def reload_quarantined(cur: load.Cursor, schema_name: str, rows: Sequence[tuple[Any, ...]], how: str) -> Reloaded:
    """Re-validate quarantined records with the ingest's validators (against their entry's request and the
    instruments known now); load the valid ones and resolve their entries, their reason starting with ``how``.
    Entries still invalid stay open with the rule and reason they break now.

    ``rows`` are locked open entries as :func:`hdi_lab.storage.quarantine.lock_open` returns them.
    Raises StorageError.
    """
    loaded = dups = 0
    resolved: list[int] = []
    stayed: list[tuple[int, str, str]] = []
    found: list[tuple[str, Schema, npt.NDArray[np.void]]] = []
    groups: dict[tuple[str, str, Any, Any], list[tuple[int, dict[str, Any], int]]] = {}
    for qid, ds, sch, rec, dup, lo, hi in rows:
        groups.setdefault((ds, sch, lo, hi), []).append((qid, rec, dup))
    for (ds, sch, lo, hi), items in groups.items():
        schema = Schema(sch)
        records = dbn.records_from_json([r for _, r, _ in items], record_dtype(schema))
        ids_arr = np.array([q for q, _, _ in items])
        dup_idx = np.array([d for _, _, d in items], dtype=np.int32)
        known = None
        if schema is not Schema.DEFINITION:
            known = load.known_instruments(cur, schema_name, ds, np.unique(records["instrument_id"]).astype(np.int64))
        rej = validate(records, schema, pd.Timestamp(lo).value, pd.Timestamp(hi).value, known)
        good = np.ones(len(records), dtype=bool)
        good[rej.index] = False
        bad = [
            (int(ids_arr[j]), rule, reason) for j, rule, reason in zip(rej.index, rej.rules, rej.reasons, strict=True)
        ]
        if bad:
            quarantine.set_reasons(cur, schema_name, bad)
        counts = dict(inserted=0, updated=0, duplicates=0)
        load_records(cur, schema_name, schema, ds, records[good], counts, dup_idx[good])
        done = ids_arr[good].tolist()
        quarantine.mark_resolved(cur, schema_name, done, how)
        loaded += counts["inserted"] + counts["updated"]
        dups += counts["duplicates"]
        resolved += done
        stayed += bad
        if done:
            found.append((ds, schema, records[good]))
    return Reloaded(loaded, dups, resolved, stayed, tuple(found))


def _not_found(store: db.DBNStore, chunk: Chunk) -> list[str]:
    """A warning for the symbols the DBN metadata lists as not found (the rest is ingested)."""
    missing = list(getattr(store.metadata, "not_found", None) or [])
    if not missing:
        return []
    return [
        (
            f"symbol(s) {', '.join(missing)} not found in {chunk.dataset} {chunk.schema} for "
            f"stype_in={chunk.stype_in}; the others were ingested (check the spelling, the stype_in and the dataset)"
        )
    ]


def _load_part(
    cur: load.Cursor,
    schema_name: str,
    chunk: Chunk,
    part: dbn.Decoded,
    dups: normalise.DupCounter,
    counts: dict[str, int],
    bad_rows: list[load.BadRow],
    scope: _Scope,
) -> None:
    records = part.records
    counts["fetched"] += len(records)
    scope.dataset = part.dataset
    scope.mapped.update((m.instrument_id, m.d0, m.d1) for m in part.mappings)
    if len(records) == 0:
        return
    known = None
    dup_idx = None
    if chunk.schema is not Schema.DEFINITION:
        scope.instruments.update(np.unique(records["instrument_id"]).tolist())
        scope.publishers.update(np.unique(records["publisher_id"]).tolist())
        records = records[normalise.key_order(records, chunk.schema)]
        dup_idx = dups.assign(records)  # before validation: a quarantined record keeps its number
        ids = np.unique(records["instrument_id"]).astype(np.int64)
        mapped = np.array([m.instrument_id for m in part.mappings], dtype=np.int64)
        missing = np.setdiff1d(ids, mapped)
        known = np.union1d(mapped, load.known_instruments(cur, schema_name, part.dataset, missing))
    lo, hi = chunk.request
    rejected = validate(records, chunk.schema, lo.value, hi.value, known)
    if len(rejected.index):
        for j, rule, reason in zip(rejected.index, rejected.rules, rejected.reasons, strict=True):
            bad_rows.append(
                load.BadRow(rule, reason, dbn.record_to_json(records[j]), int(dup_idx[j]) if dup_idx is not None else 0)
            )
        keep = np.ones(len(records), dtype=bool)
        keep[rejected.index] = False
        records = records[keep]
        dup_idx = dup_idx[keep] if dup_idx is not None else None
        counts["quarantined"] += len(rejected.index)
    load_records(cur, schema_name, chunk.schema, part.dataset, records, counts, dup_idx, scope.coverage)


def load_records(
    cur: load.Cursor,
    schema_name: str,
    schema: Schema,
    dataset: str,
    records: npt.NDArray[np.void],
    counts: dict[str, int],
    dup_idx: npt.NDArray[np.integer[Any]] | None = None,
    coverage: load.Coverage | None = None,
) -> None:
    """Write valid, key-sorted DBN records of one schema; adds to counts' inserted/updated/duplicates.

    ``coverage``, if given, records what the loads read and stored (for :func:`~hdi_lab.storage.load.delete_stale`).

    Raises StorageError when the database refuses the rows.
    """
    if schema is Schema.DEFINITION:
        ins, upd = load.load_definitions(cur, schema_name, dataset, records)
    else:
        cols = normalise.normalise(records, TABLES[schema], dup_idx)
        ins, upd = load.load_market(cur, schema_name, cols, coverage)
    counts["inserted"] += ins
    counts["updated"] += upd
    counts["duplicates"] += len(records) - ins - upd
