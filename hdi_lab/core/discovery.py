"""Auto-discovery: a query for symbols with no stored symbology fetches them from Databento.

When a Databento key is configured, :func:`discover` resolves the symbols (``symbology.resolve``)
in the query's dataset (else the ``databento_dataset`` setting), ingests their definitions (schema
``definition``, with the symbology mappings from the DBN metadata) through the ingest core, and
lets the query proceed. Without a key or a dataset nothing is fetched and the query's error stands.
"""

from __future__ import annotations

import logging

import pandas as pd

from hdi_lab.core import ingestion
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import IngestReport, IngestRequest, Schema, SType

__all__ = ["can_discover", "discover"]

log = logging.getLogger(__name__)


def can_discover(session: HdiSession, dataset: str | None) -> bool:
    """True if a Databento key and a Databento dataset (the query's, else the setting) are configured.
    Raises nothing."""
    from hdi_lab.providers.databento.provider import DATASETS

    s = session.settings
    ds = (dataset or s.databento_dataset or "").strip().upper()
    return bool(s.databento_api_key) and ds in DATASETS


def discover(
    session: HdiSession, symbols: tuple[str, ...], start: pd.Timestamp, end: pd.Timestamp, dataset: str | None = None
) -> list[IngestReport]:
    """Fetch and store definitions and symbology of ``symbols`` over ``[start, end)`` (whole UTC days).

    Raises ValidationError naming the symbols Databento does not know either (or a dataset it does not
    offer), ProviderError (Databento refused or failed) and what :func:`hdi_lab.core.ingestion.run` raises.
    """
    from hdi_lab.providers.databento.provider import DatabentoProvider, symbol_stype, validate_dataset

    ds = validate_dataset(dataset, session.settings.databento_dataset)
    provider = session.provider("databento")
    assert isinstance(provider, DatabentoProvider)
    lo, hi = start.floor("D"), end.ceil("D")
    by_stype: dict[SType, list[str]] = {}
    for sym in symbols:
        by_stype.setdefault(symbol_stype(sym), []).append(sym)
    reports, missing = [], []
    for stype, syms in by_stype.items():
        answer = provider.resolve(ds, tuple(syms), stype, lo.date(), hi.date())
        result = answer.get("result") or {}
        found = tuple(s for s in syms if result.get(s))
        missing += [s for s in syms if s not in found]
        if not found:
            continue
        log.info("auto-discovery: fetching %s definitions of %s", ds, ",".join(found))
        request = IngestRequest(
            provider=provider.name,
            schema=Schema.DEFINITION,
            dataset=ds,
            symbols=found,
            stype_in=stype,
            start=lo,
            end=hi,
        )
        reports.append(ingestion.run(request, session, provider=provider))
    if missing:
        raise ValidationError(
            f"unknown symbol(s) {', '.join(map(repr, missing))}: Databento does not know them in {ds} for "
            f"[{lo.date()}, {hi.date()}): check the spelling, the dataset (dataset=...) and the dates"
        )
    return reports
