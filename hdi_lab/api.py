"""The Python API: ``hdi_lab.ingest`` / ``hdi_lab.query`` / ``hdi_lab.sql`` build requests for the core."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hdi_lab.core import ingestion, retrieval
from hdi_lab.core.retrieval import PriceType
from hdi_lab.core.session import HdiSession, with_session
from hdi_lab.schemas import IngestReport, IngestRequest, Schema, SType, parse_enum, parse_range, parse_symbols

__all__ = ["ingest", "make_request", "query", "sql"]


def make_request(
    provider: str,
    *,
    schema: str | Schema | None = None,
    symbols: str | Sequence[str] | None = None,
    start: object = None,
    end: object = None,
    dataset: str | None = None,
    stype_in: str | SType = SType.RAW_SYMBOL,
    path: str | Path | Sequence[str | Path] | None = None,
    force: bool = False,
    dry_run: bool = False,
    allow_cost: bool = False,
) -> IngestRequest:
    """Validate user arguments into an :class:`IngestRequest` (shared by every front end)."""
    paths: tuple[str, ...] = ()
    if path is not None:
        paths = (str(path),) if isinstance(path, str | Path) else tuple(str(p) for p in path)
    lo = hi = None
    if start is not None or end is not None:
        lo, hi = parse_range(start, end)
    return IngestRequest(
        provider=provider,
        schema=parse_enum(Schema, schema, "schema") if schema else None,
        dataset=dataset,
        symbols=parse_symbols(symbols),
        stype_in=parse_enum(SType, stype_in, "stype_in"),
        start=lo,
        end=hi,
        paths=paths,
        force=force,
        dry_run=dry_run,
        allow_cost=allow_cost,
    )


def ingest(
    provider: str = "file",
    *,
    session: HdiSession | None = None,
    progress: ingestion.ProgressFn | None = None,
    **request: Any,
) -> IngestReport:
    """Ingest market data and return the :class:`IngestReport`.

    ``hdi_lab.ingest(provider="file", path="x.dbn.zst")`` or ``hdi_lab.ingest(provider="sample",
    schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-05")``. Chunks already
    ingested are skipped unless ``force=True``; ``dry_run=True`` only plans and estimates.
    """
    req = make_request(provider, **request)
    return with_session(session, lambda s: ingestion.run(req, s, progress=progress))


def query(
    schema: str | Schema,
    symbols: str | Sequence[str],
    start: object,
    end: object,
    *,
    dataset: str | None = None,
    price_type: PriceType = "float",
    columns: Sequence[str] | None = None,
    interval: str | None = None,
    session: HdiSession | None = None,
) -> pd.DataFrame:
    """Stored rows for ``symbols`` in ``[start, end)`` as a DataFrame indexed by ``ts_event``.

    ``interval="5m"`` (bars only) rolls bars up into 5-minute buckets, likewise 15m, 1h, 1d...
    """
    return with_session(
        session,
        lambda s: retrieval.query(
            s, schema, symbols, start, end, dataset=dataset, price_type=price_type, columns=columns, interval=interval
        ),
    )


def sql(
    text: str,
    params: Mapping[str, Any] | Sequence[Any] | None = None,
    *,
    session: HdiSession | None = None,
) -> pd.DataFrame:
    """Run SQL with bound parameters against the hdi_lab database."""
    return with_session(session, lambda s: retrieval.sql(s, text, params))
