"""The provider protocol.

A provider turns an :class:`~hdi_lab.schemas.IngestRequest` into chunks and fetches each chunk
as DBN (a ``databento.DBNStore``): the common currency of every provider, whether the bytes come
from a file, the Databento API, the offline sample generator or converted IB bars. Decoding
happens in :mod:`hdi_lab.dbn`, normalisation and writing in :mod:`hdi_lab.storage`.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

import databento as db
import numpy as np
import pandas as pd

from hdi_lab.errors import ValidationError
from hdi_lab.schemas import DAY_NS, Chunk, IngestRequest, Schema, SType

__all__ = [
    "CONDITIONS",
    "MAX_CHUNKS",
    "SPARSE",
    "ConditionSource",
    "CostEstimate",
    "CostSource",
    "DownloadLimited",
    "DownloadSlots",
    "Fetch",
    "Ledger",
    "LedgerEntry",
    "LedgerPaced",
    "LocalProvider",
    "Provider",
    "RangeSource",
    "SpanEstimator",
    "plan_chunks",
]

#: what ``Provider.fetch`` returns: a generator, which the core closes to release what a fetch holds
#: (a download's temporary file) when it stops early
Fetch: TypeAlias = Generator[db.DBNStore, None, None]

#: a factory of the context held around one download (a slot of a limit shared by several processes)
DownloadSlots: TypeAlias = Callable[[], AbstractContextManager[object]]

#: an entry of a :class:`Ledger`: (time on the ledger's clock in seconds, weight, identity, group)
LedgerEntry: TypeAlias = tuple[float, int, str, str]

#: schemas planned one chunk per calendar month (the others: one per UTC day)
SPARSE = (Schema.OHLCV_1H, Schema.OHLCV_1D, Schema.STATISTICS, Schema.DEFINITION)

#: a vendor's condition of a dataset's day (Databento's ``metadata.get_dataset_condition``), best first
CONDITIONS = ("available", "degraded", "pending", "missing")

#: the most chunks one request may plan (~27 years of day chunks): a range beyond is most likely a typo
MAX_CHUNKS = 10_000


@dataclass(frozen=True)
class CostEstimate:
    """What a dry run reports for one chunk."""

    chunk: Chunk
    records: int | None = None
    bytes: int | None = None
    cost_usd: float | None = None
    start_s: float | None = None  # earliest start (s after the run starts) under the provider's pacing


def _fmt(ts: pd.Timestamp) -> str:
    frac = ts.value % 1_000_000_000
    return (
        f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}"
        + (f".{frac:09d}" if frac else "")
        + "Z"
    )


def plan_chunks(
    provider: str,
    dataset: str,
    schema: Schema,
    stype: SType,
    symbols: tuple[str, ...],
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> list[Chunk]:
    """Day chunks (dense schemas) or month chunks (:data:`SPARSE` ones) covering ``[start, end)``,
    clipped to it, all symbols together; keys are stable, so a re-run skips committed chunks.

    Raises ValidationError when the range would plan more than :data:`MAX_CHUNKS` chunks."""
    first, last = start.floor("D"), (end - pd.Timedelta(1, "ns")).floor("D")
    per = "calendar month" if schema in SPARSE else "UTC day"
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    n = months if schema in SPARSE else (last.date() - first.date()).days + 1
    if n > MAX_CHUNKS:
        raise ValidationError(
            f"[{start.date()}, {end.date()}) of {schema} would be {n:,} chunks (one per {per}), more than the "
            f"{MAX_CHUNKS:,} one request may plan: check start and end, or ingest the range in parts"
        )
    if schema in SPARSE:
        bounds: list[pd.Timestamp] = []
        t = first
        while t <= last:
            bounds.append(t)
            try:
                t = (t + pd.offsets.MonthBegin(1)).floor("D")
            except (OverflowError, ValueError):  # past the last nanosecond timestamp (2262): end closes the chunk
                t = end
                break
        bounds.append(t)
    else:  # day bounds in integer nanoseconds: a 5-year plan is 1,826 of them
        firsts = first.value + DAY_NS * np.arange(n + 1, dtype=np.int64)
        bounds = [pd.Timestamp(int(v), tz="UTC") for v in firsts[:-1]]
        # the day after the last (past 2262 the end closes the chunk)
        bounds.append(pd.Timestamp(int(firsts[-1]), tz="UTC") if firsts[-1] > firsts[-2] else end)
    chunks = []
    for a, b in itertools.pairwise(bounds):
        lo, hi = max(start, a), min(end, b)
        if lo < hi:
            key = f"{provider}:{dataset}:{schema}:{stype}:{','.join(symbols)}:{_fmt(lo)}:{_fmt(hi)}"
            chunks.append(
                Chunk(
                    key=key,
                    provider=provider,
                    dataset=dataset,
                    schema=schema,
                    stype_in=stype,
                    symbols=symbols,
                    start=lo,
                    end=hi,
                )
            )
    return chunks


@runtime_checkable
class Provider(Protocol):
    """What the ingest core needs from a data source."""

    name: str

    def plan(self, request: IngestRequest) -> list[Chunk]:
        """Split a request into independent chunks. Raises ValidationError on a bad request."""
        ...

    def fetch(self, chunk: Chunk) -> Fetch:
        """Yield the chunk's records as one or more DBN stores (metadata carries symbology).

        Raises DataFormatError when the data cannot be read, ProviderError when the vendor fails."""
        ...

    def check_cost(self, chunks: list[Chunk], allow: bool) -> float | None:
        """The estimated cost of fetching ``chunks`` (None when free or unknown).

        Raises CostLimitError above the configured limit unless ``allow``.
        """
        ...

    def estimate(self, chunk: Chunk) -> CostEstimate:
        """Estimate a chunk's size without fetching it (for dry runs)."""
        ...

    def take_warnings(self, chunk: Chunk) -> list[str]:
        """Warnings the vendor sent while fetching ``chunk`` (e.g. partial symbol resolution)."""
        ...

    def close(self) -> None:
        """Release connections held for the run (the core calls it when it made the provider)."""
        ...


@runtime_checkable
class ConditionSource(Protocol):
    """A provider whose vendor says, per day, how complete and how recent a dataset's data is."""

    def dataset_conditions(self, dataset: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """One row per day of ``[start, end]`` (both inclusive) the vendor describes: ``date``,
        ``condition`` (one of :data:`CONDITIONS`) and ``last_modified_date`` (NaT when missing).

        Raises ProviderError when the vendor refuses or fails."""
        ...


@runtime_checkable
class SpanEstimator(Protocol):
    """A provider whose vendor estimates many chunks in one request (dry runs of long plans)."""

    def estimate_span(self, chunks: Sequence[Chunk]) -> CostEstimate:
        """The estimate of fetching ``chunks`` (contiguous, one dataset, schema, stype and symbol list) together,
        with one request for their whole span; the estimate's chunk is the first.

        Raises what :meth:`Provider.estimate` raises."""
        ...


@runtime_checkable
class CostSource(Protocol):
    """A provider whose vendor prices what fetching a chunk costs."""

    def cost_of(self, chunk: Chunk, records: int) -> float | None:
        """The estimated cost (USD) of the fetch of ``chunk`` just made, which brought ``records`` records; None
        when it could not be had (the ingest logs it with the chunk). Raises nothing."""
        ...


@runtime_checkable
class DownloadLimited(Protocol):
    """A provider whose vendor limits how many downloads run at once: an executor running chunks in several
    processes (Dask workers) gives each process's copy slots of one shared limit."""

    def max_downloads(self) -> int:
        """How many downloads may run at once across every process of a run."""
        ...

    def limit_downloads(self, slots: DownloadSlots) -> None:
        """Hold one of ``slots`` around each download from now on."""
        ...


@runtime_checkable
class Ledger(Protocol):
    """What every process talking to one vendor account agrees on, wherever it runs (the database:
    :mod:`hdi_lab.core.ledger`): the requests sent lately, per scope (a gateway), and which connection ids are
    taken."""

    def book(
        self,
        scope: str,
        horizon_s: float,
        decide: Callable[[float, list[LedgerEntry]], tuple[float, list[LedgerEntry]]],
    ) -> float:
        """Call ``decide(now, entries)`` with the ledger's clock and ``scope``'s entries of the last ``horizon_s``
        seconds while holding the scope's lock (the other processes wait their turn); add the entries it returns
        and return the wait it returns (seconds; 0 when it booked).

        Raises StorageError when the ledger fails."""
        ...

    def lease(self, scope: str, candidates: Sequence[int]) -> int | None:
        """Take the first of ``candidates`` (connection ids) no other process holds in ``scope``, held until
        :meth:`release` or until this process ends; None when every one is held.

        Raises StorageError when the ledger fails."""
        ...

    def release(self, scope: str, value: int) -> None:
        """Give back a connection id :meth:`lease` gave. Raises StorageError when the ledger fails."""
        ...

    def close(self) -> None:
        """Give back every lease and close the ledger's connection."""
        ...


@runtime_checkable
class LedgerPaced(Protocol):
    """A provider whose vendor paces every request and allows one connection per id across all the processes of
    an account (IB): an executor running chunks in several processes (Dask workers) hands each process's copy one
    :class:`Ledger` of them all, instead of the copy's own pacing and fixed id."""

    def share_ledger(self, ledger: Ledger) -> None:
        """Pace every request and lease every connection id through ``ledger`` from now on."""
        ...


@runtime_checkable
class RangeSource(Protocol):
    """A provider whose vendor says which time range of a dataset it holds."""

    def available_range(self, dataset: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """The dataset's available ``[start, end)`` (UTC), None when the vendor gives none.

        Raises ProviderError when the vendor refuses or fails."""
        ...


class LocalProvider:
    """The protocol's vendor-facing parts for data read or made on this machine: free, no vendor
    warnings, nothing held open."""

    def check_cost(self, chunks: list[Chunk], allow: bool) -> None:
        """Nothing to check: local data costs nothing."""

    def close(self) -> None:
        """Nothing to release."""

    def take_warnings(self, chunk: Chunk) -> list[str]:
        """None: local data has no vendor warnings."""
        return []
