"""The chunk plan of one ingest request: its chunks, which of them are already stored, what a dry run
reports. Everything but :func:`make_plan` (which asks the provider and the database) is pure."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hdi_lab.core.session import HdiSession
from hdi_lab.providers.base import CostEstimate, Provider, SpanEstimator
from hdi_lab.schemas import Chunk, ChunkResult, IngestRequest
from hdi_lab.storage import load
from hdi_lab.storage.db import transaction

__all__ = ["SPAN_AFTER", "Plan", "estimate", "make_plan", "schema_label"]

#: a dry run of more chunks to fetch than this is estimated per span of contiguous chunks (see :func:`estimate`)
SPAN_AFTER = 31


@dataclass(frozen=True)
class Plan:
    """The chunks of a request in order, and the keys of those a run skips (committed before)."""

    chunks: tuple[Chunk, ...]
    done: frozenset[str] = frozenset()

    def skips(self, chunk: Chunk) -> bool:
        """Whether a run skips ``chunk`` (its ingest committed before, and the run is not forced)."""
        return chunk.key in self.done

    @property
    def todo(self) -> list[Chunk]:
        """The chunks a run fetches, in order."""
        return [c for c in self.chunks if not self.skips(c)]

    def following(self) -> dict[str, Chunk]:
        """The chunk fetched after each chunk to fetch, by key: the one to download while it is loaded."""
        return {c.key: nxt for c, nxt in itertools.pairwise(self.todo)}


def schema_label(request: IngestRequest, chunks: Sequence[Chunk]) -> str:
    """The report's schema: the requested one, else the schemas the chunks hold (a folder of files may mix
    schemas) joined by ``+``, companions (definitions fetched along) left out. Raises nothing."""
    if request.schema:
        return request.schema.value
    return "+".join(dict.fromkeys(c.schema.value for c in chunks if not c.companion))


def make_plan(request: IngestRequest, session: HdiSession, provider: Provider) -> Plan:
    """Plan ``request`` with ``provider`` and mark the chunks already ingested (none when ``force``).

    Raises ValidationError (a bad request, from the provider) and StorageError (the database).
    """
    chunks = tuple(provider.plan(request))
    with transaction(session.connection()) as cur:  # connects (and migrates) even when forced: fails early
        done = set() if request.force else load.completed(cur, session.schema, [c.key for c in chunks])
    return Plan(chunks, frozenset(done))


def estimate(plan: Plan, provider: Provider) -> list[ChunkResult]:
    """What a dry run reports per chunk: the provider's estimate, or skipped for a chunk already stored.

    A plan of more than :data:`SPAN_AFTER` chunks to fetch is estimated per span where the provider can
    (:class:`~hdi_lab.providers.base.SpanEstimator`): each run of contiguous chunks of one request in one
    vendor request (a 5-year daily plan: two requests instead of 3,652), the span's records, bytes and cost
    spread over its chunks by their length (the totals are the vendor's; a chunk's share is approximate, which its
    first chunk's warning says).

    Raises what the provider's ``estimate`` raises (HdiError subclasses: a vendor refusing the query).
    """
    todo = plan.todo
    spans = provider if isinstance(provider, SpanEstimator) and len(todo) > SPAN_AFTER else None
    shares: dict[str, ChunkResult] = {}
    if spans is not None:
        for run in _runs(todo):
            shares.update(_spread(run, spans.estimate_span(run)))
    out = []
    for chunk in plan.chunks:
        if plan.skips(chunk):
            out.append(ChunkResult(chunk, skipped=True))
        elif spans is not None:
            out.append(shares[chunk.key])
        else:
            est = provider.estimate(chunk)
            out.append(
                ChunkResult(
                    chunk, fetched=int(est.records or 0), est_bytes=est.bytes, cost_usd=est.cost_usd,
                    est_start_s=est.start_s,
                )
            )  # fmt: skip
    return out


def _runs(todo: Sequence[Chunk]) -> list[list[Chunk]]:
    """The chunks to fetch in runs of contiguous chunks of one request (dataset, schema, stype, symbols)."""
    runs: list[list[Chunk]] = []
    for chunk in todo:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and last.end == chunk.start
            and (last.dataset, last.schema, last.stype_in, last.symbols)
            == (chunk.dataset, chunk.schema, chunk.stype_in, chunk.symbols)
        ):
            runs[-1].append(chunk)
        else:
            runs.append([chunk])
    return runs


def _spread(run: list[Chunk], est: CostEstimate) -> dict[str, ChunkResult]:
    """The span estimate ``est`` of ``run`` shared by its chunks in proportion to their length (records by
    largest remainder, so that they add up)."""
    weights = np.array([(c.end - c.start).value for c in run], dtype=np.float64)
    weights /= weights.sum()
    records = int(est.records or 0)
    share = weights * records
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(counts - share)[: records - int(counts.sum())]] += 1
    note = (
        f"estimated with the {len(run)} chunks of [{run[0].start.date()}, {run[-1].end.date()}) together; "
        "each chunk's share is by its length"
    )
    out = {}
    for i, chunk in enumerate(run):
        out[chunk.key] = ChunkResult(
            chunk,
            fetched=int(counts[i]),
            est_bytes=None if est.bytes is None else round(float(est.bytes * weights[i])),
            cost_usd=None if est.cost_usd is None else est.cost_usd * float(weights[i]),
            warnings=(note,) if i == 0 and len(run) > 1 else (),
        )
    return out
