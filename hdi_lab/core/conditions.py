"""Vendor revisions: which ingested days a later update must re-fetch.

Databento marks each day of a dataset ``available``, ``degraded``, ``pending`` or ``missing``, with the date
its data was last generated or modified. An ingest remembers what the vendor said of each day it covered
(:func:`seen` once per run, :func:`chunk_rows` per chunk); :func:`stale_days` compares that with what the
vendor says now. The decision itself is :func:`stale_reason`, pure:

- a day ingested while ``degraded``, ``pending`` or ``missing`` is stale once the vendor has something else
  for it (another condition or a newer last_modified_date): re-fetching what has not changed would bring the
  same bytes, at a cost;
- a day the vendor modified after the ingest (its last_modified_date newer than the one seen at ingest or,
  for ingests that recorded no condition, than the ingest's own date) is stale: a vendor correction;
- a day the vendor now calls ``pending`` or ``missing`` is never stale: there is nothing (new) to fetch yet.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import pandas as pd

from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ProviderError, ValidationError
from hdi_lab.providers.base import CONDITIONS, ConditionSource, Provider
from hdi_lab.schemas import Chunk, Schema, parse_enum, parse_range, require_symbols
from hdi_lab.storage import conditions as table

__all__ = ["REASONS", "STALE_COLUMNS", "chunk_rows", "decide", "seen", "stale_days", "stale_reason"]

log = logging.getLogger(__name__)

#: why a day is stale: ingested while degraded / pending / missing, or revised by the vendor since
REASONS = ("degraded", "pending", "missing", "revised")

#: the columns of :func:`stale_days` (and :func:`decide`)
STALE_COLUMNS = (
    "symbol",
    "day",
    "reason",
    "ingested_at",
    "ingested_condition",
    "ingested_last_modified",
    "condition",
    "last_modified_date",
)

#: conditions whose data may still change: a day ingested so is re-fetched once the vendor changes it
_UNSETTLED = ("degraded", "pending", "missing")
#: conditions of a day with nothing (new) to fetch now
_NOTHING = ("pending", "missing")


def stale_reason(
    ingested_condition: str | None,
    ingested_last_modified: dt.date | None,
    ingested_on: dt.date,
    condition: str | None,
    last_modified: dt.date | None,
) -> str | None:
    """Why a day ingested on ``ingested_on`` (seeing ``ingested_condition`` / ``ingested_last_modified``, None
    when the ingest recorded none) must be re-fetched now that the vendor says ``condition`` /
    ``last_modified`` (None: the vendor does not describe the day); None when it need not be.
    One of :data:`REASONS` otherwise (see the module docstring)."""
    if condition is None or condition in _NOTHING:
        return None
    if ingested_condition in _UNSETTLED:
        unchanged = condition == ingested_condition and last_modified == ingested_last_modified
        return None if unchanged else ingested_condition
    basis = ingested_last_modified if ingested_last_modified is not None else ingested_on
    if last_modified is not None and last_modified > basis:
        return "revised"
    return None


def _date(value: object) -> dt.date | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and pd.isna(value)):
        return None
    return pd.Timestamp(value).date()  # type: ignore[arg-type]


def decide(ingested: pd.DataFrame, vendor: pd.DataFrame) -> pd.DataFrame:
    """The stale rows (:data:`STALE_COLUMNS`, by symbol and day) of ``ingested`` (what
    :func:`hdi_lab.storage.conditions.ingested_days` returns) given the vendor's conditions now (``date``,
    ``condition``, ``last_modified_date``, as ``dataset_conditions`` returns them)."""
    now = {
        _date(d): (str(c), _date(m))
        for d, c, m in zip(vendor["date"], vendor["condition"], vendor["last_modified_date"], strict=True)
    }
    rows = []
    at = pd.to_datetime(ingested["ingested_at"], utc=True)
    for r, ingested_at in zip(ingested.itertuples(index=False), at, strict=True):
        day = _date(r.day)
        condition, modified = now.get(day, (None, None))
        then_modified = _date(r.last_modified_date)
        then = None if r.condition is None or pd.isna(r.condition) else str(r.condition)
        ingested_on = ingested_at.date()
        reason = stale_reason(then, then_modified, ingested_on, condition, modified)
        if reason is not None:
            rows.append((r.symbol, day, reason, ingested_at, then, then_modified, condition, modified))
    return pd.DataFrame(rows, columns=list(STALE_COLUMNS)).sort_values(["day", "symbol"], ignore_index=True)


def stale_days(
    session: HdiSession,
    dataset: str,
    schema: str,
    symbols: Sequence[str] | str,
    start: object,
    end: object,
    *,
    provider: ConditionSource | None = None,
) -> pd.DataFrame:
    """The days of ``[start, end)`` (UTC days) that an ingest of ``dataset``/``schema`` covered for
    ``symbols`` and that a later update must re-fetch, one row per symbol and day (:data:`STALE_COLUMNS`):
    why (``reason``, one of :data:`REASONS`), what the latest ingest of the day saw and what the vendor says
    now. Days never ingested are not listed (they are gaps, not revisions). ``provider`` defaults to the
    session's ``databento`` provider (made and closed here).

    Raises ValidationError for a bad schema, no symbols or a bad range; ConfigError without an API key;
    ProviderError when the vendor refuses or fails; StorageError when the database fails."""
    data_schema = parse_enum(Schema, schema, "schema")
    names = require_symbols(symbols)
    lo, hi = parse_range(start, end)
    first, last = lo.date(), (hi - pd.Timedelta(1, "ns")).date()
    ingested = table.ingested_days(session.connection(), session.schema, dataset, data_schema.value, names, first, last)
    if ingested.empty:
        return pd.DataFrame(columns=list(STALE_COLUMNS))
    days = pd.to_datetime(ingested["day"])
    if provider is None:
        owned = session.provider("databento")
        try:
            if not isinstance(owned, ConditionSource):  # pragma: no cover - databento is one
                raise ValidationError("the databento provider does not report dataset conditions")
            vendor = owned.dataset_conditions(dataset, days.min().date(), days.max().date())
        finally:
            owned.close()
    else:
        vendor = provider.dataset_conditions(dataset, days.min().date(), days.max().date())
    return decide(ingested, vendor)


def seen(provider: Provider, chunks: Sequence[Chunk]) -> dict[str, pd.DataFrame]:
    """What the vendor says now of the days ``chunks`` cover, per dataset (one request per dataset), to be
    stored with each chunk's ingest; empty for a provider without conditions. A failed request is logged and
    leaves its dataset out: the data is still ingested, and its days are then judged by the ingest's date."""
    if not isinstance(provider, ConditionSource) or not chunks:
        return {}
    out: dict[str, pd.DataFrame] = {}
    for dataset in dict.fromkeys(c.dataset for c in chunks):
        mine = [c for c in chunks if c.dataset == dataset]
        first = min(c.start for c in mine).date()
        last = max(c.end - pd.Timedelta(1, "ns") for c in mine).date()
        try:
            out[dataset] = provider.dataset_conditions(dataset, first, last)
        except (ProviderError, ValidationError) as exc:
            log.warning("dataset conditions of %s not recorded with this ingest: %s", dataset, exc)
    return out


def chunk_rows(conditions: pd.DataFrame | None, chunk: Chunk) -> list[tuple[dt.date, str, dt.date | None]]:
    """The (day, condition, last_modified_date) rows of ``conditions`` for the UTC days ``chunk`` covers."""
    if conditions is None or conditions.empty:
        return []
    first, last = chunk.start.date(), (chunk.end - pd.Timedelta(1, "ns")).date()
    rows: list[tuple[dt.date, str, dt.date | None]] = []
    for d, c, m in zip(conditions["date"], conditions["condition"], conditions["last_modified_date"], strict=True):
        day = _date(d)
        if day is not None and first <= day <= last and str(c) in CONDITIONS:
            rows.append((day, str(c), _date(m)))
    return rows
