"""The chunk plan (core.plan): which chunks a run fetches, which it skips, what it downloads ahead, the
report's schema and a dry run's estimates. Pure: no database, no vendor."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from hdi_lab.core.plan import Plan, estimate, schema_label
from hdi_lab.providers.base import CostEstimate, Fetch, LocalProvider, plan_chunks
from hdi_lab.schemas import Chunk, ChunkResult, IngestRequest, Schema, SType

pytestmark = pytest.mark.unit


def days(n: int, schema: Schema = Schema.OHLCV_1M) -> tuple[Chunk, ...]:
    start = pd.Timestamp("2024-01-01", tz="UTC")
    return tuple(
        plan_chunks("sample", "GLBX.MDP3", schema, SType.RAW_SYMBOL, ("ESH4",), start, start + pd.Timedelta(days=n))
    )


class Estimating(LocalProvider):
    """Estimates a chunk as its day of the month in records; fetching is not part of a plan."""

    name = "estimating"

    def plan(self, request: IngestRequest) -> list[Chunk]:
        return list(days(3))

    def fetch(self, chunk: Chunk) -> Fetch:
        raise AssertionError("a plan never fetches")

    def estimate(self, chunk: Chunk) -> CostEstimate:
        return CostEstimate(chunk, records=chunk.start.day, bytes=100 * chunk.start.day, cost_usd=0.5, start_s=1.0)


def test_a_plan_fetches_the_chunks_not_done_in_order_and_downloads_the_next_ahead() -> None:
    chunks = days(4)
    plan = Plan(chunks, frozenset({chunks[1].key}))
    assert plan.todo == [chunks[0], chunks[2], chunks[3]]
    assert [plan.skips(c) for c in chunks] == [False, True, False, False]
    # the chunk after a done one is the next one to fetch, and the last one has none ahead
    assert plan.following() == {chunks[0].key: chunks[2], chunks[2].key: chunks[3]}


def test_a_plan_with_nothing_done_or_everything_done() -> None:
    chunks = days(2)
    assert Plan(chunks).todo == list(chunks) and Plan(chunks).following() == {chunks[0].key: chunks[1]}
    done = Plan(chunks, frozenset(c.key for c in chunks))
    assert done.todo == [] and done.following() == {}
    assert Plan(()).todo == [] and Plan(()).following() == {}


def test_the_report_schema_is_the_requested_one_or_the_schemas_of_the_files() -> None:
    bars, trades = days(1), days(1, Schema.TRADES)
    definitions = tuple(replace(c, companion=True) for c in days(1, Schema.DEFINITION))
    assert schema_label(IngestRequest(provider="sample", schema=Schema.OHLCV_1M), bars + definitions) == "ohlcv-1m"
    files = IngestRequest(provider="file")
    assert schema_label(files, trades + bars + trades + definitions) == "trades+ohlcv-1m"  # companions left out
    assert schema_label(files, ()) == ""


def test_a_dry_run_estimates_the_chunks_to_fetch_and_skips_the_others() -> None:
    chunks = days(3)
    results = estimate(Plan(chunks, frozenset({chunks[0].key})), Estimating())
    assert results[0] == ChunkResult(chunks[0], skipped=True)
    assert results[1:] == [
        ChunkResult(c, fetched=c.start.day, est_bytes=100 * c.start.day, cost_usd=0.5, est_start_s=1.0)
        for c in chunks[1:]
    ]
