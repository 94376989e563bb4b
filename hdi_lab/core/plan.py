"""The chunk plan of one ingest request: its chunks, which of them are already stored, what a dry run
reports. Everything but :func:`make_plan` (which asks the provider and the database) is pure."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from hdi_lab.core.session import HdiSession
from hdi_lab.providers.base import Provider
from hdi_lab.schemas import Chunk, ChunkResult, IngestRequest
from hdi_lab.storage import load
from hdi_lab.storage.db import transaction

__all__ = ["Plan", "estimate", "make_plan", "schema_label"]


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

    Raises what the provider's ``estimate`` raises (HdiError subclasses: a vendor refusing the query).
    """
    out = []
    for chunk in plan.chunks:
        if plan.skips(chunk):
            out.append(ChunkResult(chunk, skipped=True))
            continue
        est = provider.estimate(chunk)
        out.append(
            ChunkResult(
                chunk,
                fetched=int(est.records or 0),
                est_bytes=est.bytes,
                cost_usd=est.cost_usd,
                est_start_s=est.start_s,
            )
        )
    return out
