"""Updates: bring subscriptions current (``hdi update``, ``hdi_lab.update``, ``%hdi_update``).

An update of a subscription ingests, from its ``since`` up to ``until`` (default: the end of the dataset's
available range when the vendor says it, else the start of today, UTC):

* ``new``: the chunks no completed ingest holds (never fetched, or deleted since: their ingest-log row gone);
* ``empty`` / ``partial``: the chunks of the sessions :func:`hdi_lab.core.gaps.gaps` reports covered but
  empty or partial, re-fetched with force, unless *settled* (below);
* the days :func:`hdi_lab.core.conditions.stale_days` reports (``degraded``, ``pending``, ``missing``,
  ``revised``), re-fetched with force so the vendor's revision lands.

**Settled sessions.** A vendor may simply have no data for a symbol on a session (an illiquid contract, one not
listed yet or expired) or only part of it: re-fetching would bring the same bytes at every update, at a cost.
A chunk holding an ``empty`` session is not fetched again when its latest ingest

1. began after the chunk's range ended (so every minute of the session that the chunk holds had passed),
2. saw the vendor call each UTC day of the chunk ``available`` (providers that report dataset conditions;
   others skip this), and
3. left the chunk's range holding, for each instrument of the gap sessions, exactly the rows it holds now
   (``ingest_log.held``): nothing was removed since, so what the range lacks is what the vendor sent none of.
   A symbol that maps to no instrument on the session (not listed yet, expired) has nothing to compare.

A ``partial`` session also needs that latest ingest to be a forced re-fetch that changed nothing (inserted,
updated or deleted no row): a partial session is fetched again once, and settles when that brought nothing.
Rows removed since (by hand, or a failed restore) change the count and the chunk is fetched again; a vendor
revision of a settled day (a later ``last_modified_date``) is a ``revised`` day and is fetched whatever the
rule says. Ingests logged before schema version 11 recorded no ``held`` and settle after one re-fetch. To fetch
a settled range anyway, ingest it with force (``hdi ingest ... --force``). Each plan lists its settled chunks
(:attr:`SubscriptionPlan.settled`).

**Concurrent updates.** Each chunk is fetched and loaded under its advisory lock (see
:func:`hdi_lab.core.ingestion.ingest_chunk`): of two updates running at once, the second waits for the chunk,
then skips it (a new chunk now stored, or a forced re-fetch another update logged after this one planned).

Every subscription's chunks form one plan: the dry run estimates each chunk and the total cost; a run first
checks the cost of the whole plan against the limit (refused above it unless ``allow_cost``), then ingests
chunk by chunk exactly as an ingest does (each chunk one transaction), so an update is resumable and a
second one has nothing to do.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from hdi_lab.core import conditions, ingestion, plan, subscriptions
from hdi_lab.core import gaps as gap_finder
from hdi_lab.core.executors import DaskExecutor
from hdi_lab.core.session import HdiSession
from hdi_lab.core.subscriptions import Subscription
from hdi_lab.errors import CostLimitError, HdiError, ValidationError
from hdi_lab.providers.base import ConditionSource, Provider, RangeSource
from hdi_lab.schemas import Chunk, ChunkResult, IngestReport, Schema, parse_time, utc_days
from hdi_lab.storage import load, settle
from hdi_lab.storage.db import transaction
from hdi_lab.storage.settle import Latest
from hdi_lab.storage.tables import TABLES

__all__ = [
    "REASONS",
    "SubscriptionPlan",
    "UpdateReport",
    "plan_subscription",
    "plan_update",
    "select",
    "settled",
    "until_of",
    "update",
]

log = logging.getLogger(__name__)

#: why a chunk is in an update's plan: not stored yet, a gap session, or a vendor condition of its day
REASONS = ("new", "empty", "partial", *conditions.REASONS)


@dataclass
class SubscriptionPlan:
    """One subscription's part of an update: its chunks to fetch (why, and which are forced) and the result."""

    subscription: Subscription
    until: pd.Timestamp
    chunks: list[Chunk] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # chunk key -> one of REASONS
    notes: list[str] = field(default_factory=list)  # what could not be judged (e.g. no calendar: no gap check)
    settled: list[Chunk] = field(default_factory=list)  # gap chunks not fetched again: the vendor has no more
    planned_at: int = 0  # the last ingest-log id when the plan was made (see ingestion.ingest_chunk)
    report: IngestReport | None = None
    # what ran after the update for the instruments it changed (feature computations, publishes: their reports)
    after: list[object] = field(default_factory=list)

    @property
    def changed(self) -> dict[int, pd.Timestamp]:
        """The instruments whose stored rows the run changed, each with where its changes may start (UTC)."""
        first: dict[int, int] = {}
        for result in self.report.chunks if self.report is not None and not self.report.dry_run else ():
            for iid, ns in result.changed.items():
                first[iid] = min(ns, first.get(iid, ns))
        return {iid: pd.Timestamp(ns, tz="UTC") for iid, ns in sorted(first.items())}

    @property
    def forced(self) -> set[str]:
        """The keys of the chunks re-fetched with force (stored before: a gap or a vendor revision)."""
        return {k for k, r in self.reasons.items() if r != "new"}

    def counts(self) -> dict[str, int]:
        """How many chunks per reason, in :data:`REASONS` order."""
        found = list(self.reasons.values())
        return {r: found.count(r) for r in REASONS if r in found}

    def describe(self) -> str:
        """One line: the subscription, what was planned and, after a run, what was done."""
        sub = self.subscription
        head = f"{sub.label} {sub.schema} {','.join(sub.symbols)} to {self.until.date()}"
        settled = f"; {len(self.settled)} settled (the vendor has no more data)" if self.settled else ""
        notes = settled + "".join(f"; {n}" for n in self.notes)
        if not self.chunks:
            return f"{head}: up to date{notes}"
        why = ", ".join(f"{n} {r}" for r, n in self.counts().items())
        line = f"{head}: {len(self.chunks)} chunks ({why})"
        rep = self.report
        if rep is None:
            return line + notes
        if rep.dry_run:
            cost = "" if rep.cost_usd is None else f", ~${rep.cost_usd:,.2f}"
            return f"{line}: ~{rep.fetched:,} records{cost}{notes}"
        then = "".join(f"\n    then {a}" for a in self.after)
        return (
            f"{line}: {rep.fetched:,} fetched, {rep.inserted:,} inserted, {rep.updated:,} updated, "
            f"{rep.deleted:,} deleted, {rep.chunks_skipped} skipped{notes}{then}"
        )


@dataclass(repr=False)
class UpdateReport:
    """What an update planned and did, per subscription."""

    plans: list[SubscriptionPlan]
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def up_to_date(self) -> bool:
        """Whether there was nothing to fetch."""
        return not any(p.chunks for p in self.plans)

    @property
    def cost_usd(self) -> float | None:
        """The total estimated cost of the chunks planned (dry run) or fetched (run); None when no provider
        gives one."""
        costs = [p.report.cost_usd for p in self.plans if p.report is not None and p.report.cost_usd is not None]
        return float(sum(costs)) if costs else None

    def frame(self) -> pd.DataFrame:
        """One row per subscription: id, name, until, chunks, one column per reason, and (after a run)
        fetched, inserted, updated, deleted, cost_usd; (after a dry run) est_records, cost_usd."""
        rows = []
        for p in self.plans:
            row: dict[str, object] = {
                "id": p.subscription.id,
                "name": p.subscription.name,
                "until": p.until,
                "chunks": len(p.chunks),
                **{r: p.counts().get(r, 0) for r in REASONS},
            }
            rep = p.report
            if self.dry_run:
                row.update(est_records=rep.fetched if rep else 0, cost_usd=rep.cost_usd if rep else None)
            else:
                for name in ("fetched", "inserted", "updated", "deleted"):
                    row[name] = getattr(rep, name) if rep else 0
                row["cost_usd"] = rep.cost_usd if rep else None
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:  # what a notebook shows for %hdi_update's result
        return str(self)

    def __str__(self) -> str:
        if not self.plans:
            return "no subscriptions: nothing to update (hdi watch add ...)"
        if self.up_to_date:
            head = f"{len(self.plans)} subscriptions up to date: nothing to do"
        else:
            n = sum(len(p.chunks) for p in self.plans)
            verb = "would fetch" if self.dry_run else "fetched"
            cost = "" if self.cost_usd is None else f", estimated ${self.cost_usd:,.2f}"
            head = f"update {verb} {n} chunks{cost} in {self.seconds:.1f} s"
        return "\n".join([head, *(f"  {p.describe()}" for p in self.plans)])


def select(session: HdiSession, which: Sequence[int | str] = ()) -> list[Subscription]:
    """The subscriptions named by id or name in ``which`` (all when empty), by id.

    Raises ValidationError naming an unknown one, StorageError."""
    every = subscriptions.list_all(session)
    if not which:
        return every
    chosen = {sub.id: sub for sub in (subscriptions.find(every, w) for w in which)}
    return [chosen[k] for k in sorted(chosen)]


def until_of(provider: Provider, sub: Subscription, until: object = None) -> pd.Timestamp:
    """Where an update of ``sub`` ends: ``until`` when given, else the start (UTC) of the last day the dataset's
    available range ends in (a vendor that says it: complete days only, so a day is planned as one chunk,
    whose key a later update finds stored), else the start of today (UTC).

    Raises ValidationError for a bad ``until``; what the provider raises asking the range."""
    if until is not None:
        return parse_time(until, "until")
    if isinstance(provider, RangeSource):
        available = provider.available_range(sub.dataset)
        if available is not None:
            return available[1].floor("D")
    return pd.Timestamp.now(tz="UTC").floor("D")


@dataclass
class _Gap:
    """The gap sessions touching one UTC day: their reasons and instruments (None: the symbol maps to none)."""

    reasons: set[str] = field(default_factory=set)
    instruments: set[int | None] = field(default_factory=set)

    @property
    def reason(self) -> str:
        return "empty" if "empty" in self.reasons else "partial"


def _gap_days(session: HdiSession, sub: Subscription, end: pd.Timestamp, notes: list[str]) -> dict[dt.date, _Gap]:
    """The UTC days of sessions that are ``empty`` or ``partial`` (``not_ingested`` ones are new chunks).
    Sessions that cannot be judged (a dataset without a known calendar) add a note and no day."""
    try:
        found = gap_finder.gaps(
            session, sub.schema, list(sub.symbols), sub.since, end, dataset=sub.dataset, stype_in=sub.stype_in
        )
    except ValidationError as exc:
        log.warning("%s: empty or partial sessions not checked: %s", sub.label, exc)
        notes.append(f"empty or partial sessions not checked: {exc}")
        return {}
    days: dict[dt.date, _Gap] = {}
    for session_day, reason, iid in zip(found["session"], found["reason"], found["instrument_id"], strict=True):
        if reason == "not_ingested":
            continue
        day = pd.Timestamp(session_day).date()
        # a session's bars may start the UTC day before its date (CME opens the evening before)
        for d in (day - dt.timedelta(days=1), day):
            gap = days.setdefault(d, _Gap())
            gap.reasons.add(str(reason))
            gap.instruments.add(None if pd.isna(iid) else int(iid))
    return days


def settled(
    chunk: Chunk,
    reasons: set[str],
    held_now: dict[int, int],
    latest: Latest | None,
    *,
    conditions: bool,
) -> bool:
    """Whether a chunk holding gap sessions (``reasons``: ``empty``, ``partial``) is settled: not fetched again
    (the rule is the module's). ``held_now`` is the rows the chunk's range holds now for the gap sessions'
    instruments, ``latest`` its latest ingest, ``conditions`` whether the provider reports dataset conditions.
    Raises nothing."""
    if latest is None or latest.held is None or latest.finished_at < chunk.end:
        return False
    if conditions and not set(utc_days(chunk.start, chunk.end)) <= latest.available:
        return False
    if any(latest.held.get(iid, 0) != n for iid, n in held_now.items()):
        return False
    return "partial" not in reasons or (latest.forced and not latest.changed)


def _settled(
    session: HdiSession, provider: Provider, sub: Subscription, candidates: dict[str, tuple[Chunk, _Gap]]
) -> set[str]:
    """The keys of the gap ``candidates`` (key -> chunk and its gap) that are settled (see :func:`settled`)."""
    if not candidates:
        return set()
    conn = session.connection()
    last = settle.latest(conn, session.schema, list(candidates))
    ranges = [
        (key, iid, chunk.start.value, chunk.end.value)
        for key, (chunk, gap) in candidates.items()
        for iid in sorted(i for i in gap.instruments if i is not None)
    ]
    counts = settle.held_now(conn, session.schema, TABLES[sub.schema], [r[1:] for r in ranges])
    now: dict[str, dict[int, int]] = {key: {} for key in candidates}
    for (key, iid, _, _), n in zip(ranges, counts, strict=True):
        now[key][iid] = n
    reports = isinstance(provider, ConditionSource)
    return {
        key
        for key, (chunk, gap) in candidates.items()
        if settled(chunk, gap.reasons, now[key], last.get(key), conditions=reports)
    }


def _stale(session: HdiSession, provider: Provider, sub: Subscription, end: pd.Timestamp) -> dict[dt.date, str]:
    if not isinstance(provider, ConditionSource):
        return {}
    found = conditions.stale_days(
        session, sub.dataset, sub.schema, list(sub.symbols), sub.since, end, provider=provider
    )
    return {pd.Timestamp(d).date(): str(r) for d, r in zip(found["day"], found["reason"], strict=True)}


def plan_subscription(
    session: HdiSession, provider: Provider, sub: Subscription, until: object = None
) -> SubscriptionPlan:
    """What an update of ``sub`` fetches (see the module).

    Raises ValidationError (a bad until, or a range the provider refuses), ConfigError, ProviderError,
    StorageError."""
    end = until_of(provider, sub, until)
    out = SubscriptionPlan(sub, end)
    if end <= parse_time(sub.since, "since"):
        return out
    out.planned_at = settle.last_log_id(session.connection(), session.schema)
    chunks = provider.plan(sub.request(end))
    with transaction(session.connection()) as cur:
        done = load.completed(cur, session.schema, [c.key for c in chunks])
    gap_days = {} if sub.schema is Schema.DEFINITION else _gap_days(session, sub, end, out.notes)
    stale = _stale(session, provider, sub, end)
    reasons: dict[str, str] = {}
    candidates: dict[str, tuple[Chunk, _Gap]] = {}  # gap chunks, unless settled
    for chunk in chunks:
        days = utc_days(chunk.start, chunk.end)
        if chunk.key not in done:
            reasons[chunk.key] = "new"
        elif chunk.companion:  # definitions fetched along: the gaps and conditions judged are the data's
            continue
        elif any(d in stale for d in days):  # a vendor revision is fetched whatever the gaps say
            reasons[chunk.key] = next(stale[d] for d in days if d in stale)
        elif any(d in gap_days for d in days):
            gap = _Gap()
            for d in days:
                if d in gap_days:
                    gap.reasons |= gap_days[d].reasons
                    gap.instruments |= gap_days[d].instruments
            candidates[chunk.key] = (chunk, gap)
            reasons[chunk.key] = gap.reason
    calm = _settled(session, provider, sub, candidates)
    for chunk in chunks:
        if chunk.key in calm:
            out.settled.append(chunk)
        elif chunk.key in reasons:
            out.chunks.append(chunk)
            out.reasons[chunk.key] = reasons[chunk.key]
    return out


def plan_update(
    session: HdiSession, providers: Callable[[str], Provider], subs: Sequence[Subscription], until: object = None
) -> list[SubscriptionPlan]:
    """The one plan of an update of ``subs``: each subscription's chunks (``providers`` gives the provider
    of a name). Raises what :func:`plan_subscription` raises."""
    return [plan_subscription(session, providers(s.provider), s, until) for s in subs]


def _check_cost(session: HdiSession, plans: list[SubscriptionPlan], providers: Callable[[str], Provider]) -> None:
    """Refuse the whole plan above ``databento_max_cost_usd``: each subscription's chunks are costed by its
    provider (which refuses them alone above the limit), and their sum must be under it too."""
    total = 0.0
    for p in plans:
        if p.chunks:
            cost = providers(p.subscription.provider).check_cost(p.chunks, False)
            total += cost or 0.0
    limit = session.settings.databento_max_cost_usd
    if limit is not None and total > float(limit):
        raise CostLimitError(
            f"estimated cost ${total:,.2f} of the update of {len(plans)} subscriptions is above the limit "
            f"databento_max_cost_usd=${float(limit):,.2f}: update fewer subscriptions, give an earlier --until, "
            "raise HDI_DATABENTO_MAX_COST_USD, or override with allow_cost=True (--allow-cost); --dry-run shows "
            "the cost"
        )


def update(
    session: HdiSession,
    which: Sequence[int | str] = (),
    *,
    until: object = None,
    dry_run: bool = False,
    allow_cost: bool = False,
    executor: DaskExecutor | None = None,
) -> UpdateReport:
    """Bring the subscriptions ``which`` (ids or names; all when empty) current; returns what was planned and
    done per subscription (see the module).

    Raises ValidationError (an unknown subscription, a bad until, a range the provider refuses),
    CostLimitError (the plan costs more than the limit, without ``allow_cost``), ConfigError, ProviderError,
    DataFormatError and StorageError (a failed chunk stops the update; the chunks committed before it are kept
    and a re-run resumes); with ``executor`` (chunks on a Dask cluster) also ClusterError and MissingDependency."""
    t0 = time.perf_counter()
    subs = select(session, which)
    made: dict[str, Provider] = {}

    def providers(name: str) -> Provider:
        if name not in made:
            made[name] = session.provider(name)
        return made[name]

    try:
        plans = plan_update(session, providers, subs, until)
        report = UpdateReport(plans, dry_run=dry_run)
        if dry_run:
            for p in plans:
                if p.chunks:
                    prov = providers(p.subscription.provider)
                    rep = IngestReport(provider=prov.name, schema=p.subscription.schema.value, dry_run=True)
                    rep.chunks.extend(plan.estimate(plan.Plan(tuple(p.chunks)), prov))
                    p.report = rep
        elif not report.up_to_date:
            if not allow_cost:
                _check_cost(session, plans, providers)
            for p in plans:
                if p.chunks:
                    try:
                        p.report = _run(session, providers(p.subscription.provider), p, executor)
                    except HdiError as exc:
                        _note_committed(exc, p, plans)
                        raise
    finally:
        for prov in made.values():
            prov.close()
    report.seconds = time.perf_counter() - t0
    return report


def _note_committed(exc: HdiError, failed: SubscriptionPlan, plans: list[SubscriptionPlan]) -> None:
    """Extend the message of the error that stopped the update by where it stopped and what it kept."""
    done = [p for p in plans if p.report is not None]
    kept = f"; the {len(done)} subscriptions before it were brought current and are kept" if done else ""
    where = f"updating {failed.subscription.label}: its chunks committed before this are kept{kept}"
    exc.args = (f"{exc} ({where}; re-run the update to resume)", *exc.args[1:])


def _run(session: HdiSession, provider: Provider, p: SubscriptionPlan, executor: DaskExecutor | None) -> IngestReport:
    """Ingest one subscription's chunks in order (on a Dask cluster: as they finish), each in its own transaction
    (forced ones re-loaded)."""
    t0 = time.perf_counter()
    rep = IngestReport(provider=provider.name, schema=p.subscription.schema.value)
    seen = conditions.seen(provider, p.chunks)
    forced = p.forced
    work: list[ingestion.ChunkWork] = [(c, c.key in forced, seen.get(c.dataset), p.planned_at) for c in p.chunks]
    results: Iterable[ChunkResult] = (
        (r for r, _ in ingestion.on_cluster(executor, session, provider, work))
        if executor is not None
        else (
            ingestion.ingest_chunk(session, provider, c, force=f, conditions=cond, planned_at=at)
            for c, f, cond, at in work
        )
    )
    for result in results:
        rep.chunks.append(result)
        chunk = result.chunk
        log.info("%s %s (%s): %s", p.subscription.label, chunk.describe(), p.reasons[chunk.key], result.outcome)
    order = {c.key: i for i, c in enumerate(p.chunks)}
    rep.chunks.sort(key=lambda r: order[r.chunk.key])
    rep.seconds = time.perf_counter() - t0
    return rep
