"""Resolving user symbols (raw, parent, continuous) to instrument ids as of each date."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import psycopg2.extensions

from hdi_lab.errors import ValidationError
from hdi_lab.storage.cursor import quote, transaction

__all__ = ["Span", "lookup", "resolve"]


@dataclass(frozen=True)
class Span:
    """``symbol`` means (``dataset``, ``instrument_id``) on ``[lo, hi)``."""

    symbol: str
    dataset: str
    instrument_id: int
    lo: pd.Timestamp
    hi: pd.Timestamp


def _day(d: dt.date) -> pd.Timestamp:
    return pd.Timestamp(d).tz_localize("UTC")


def resolve(
    cur: psycopg2.extensions.cursor,
    schema: str,
    symbols: tuple[str, ...],
    start: pd.Timestamp,
    end: pd.Timestamp,
    dataset: str | None = None,
    missing: list[str] | None = None,
) -> list[Span]:
    """Spans for every symbol over ``[start, end)``; unknown symbols raise ValidationError.

    With ``missing`` given, unknown symbols are appended to it instead of raising.
    Stored symbology intervals (from each DBN file's metadata) and, for raw symbols, the
    instrument master (an instrument is its raw symbol until it expires).
    """
    s = quote(cur.connection, schema)
    cur.execute(
        f"SELECT symbol, dataset, instrument_id, d0, d1 FROM {s}.symbology "
        "WHERE symbol = ANY(%s) AND d0 < %s AND d1 > %s AND (%s::text IS NULL OR dataset = %s) "
        "ORDER BY symbol, d0",
        (list(symbols), (end.ceil("D")).date(), start.floor("D").date(), dataset, dataset),
    )
    spans: list[Span] = []
    for sym, ds, iid, d0, d1 in cur.fetchall():
        lo, hi = max(start, _day(d0)), min(end, _day(d1))
        if lo < hi:
            spans.append(Span(sym, ds, int(iid), lo, hi))
    # Raw symbols also resolve through the instrument master: an instrument listed under the
    # symbol is valid until it expires (covers data loaded by parent or continuous requests).
    cur.execute(
        f"SELECT raw_symbol, dataset, instrument_id, max(expiration) FROM {s}.instruments "
        "WHERE raw_symbol = ANY(%s) AND (%s::text IS NULL OR dataset = %s) "
        "GROUP BY raw_symbol, dataset, instrument_id",
        (list(symbols), dataset, dataset),
    )
    for sym, ds, iid, expiration in cur.fetchall():
        hi = min(end, pd.Timestamp(expiration)) if expiration is not None else end
        if start < hi:
            spans.append(Span(sym, ds, int(iid), start, hi))
    unknown = [x for x in symbols if x not in {sp.symbol for sp in spans}]
    if unknown and missing is not None:
        missing += unknown
    elif unknown:
        raise ValidationError(
            f"unknown symbol(s) {', '.join(map(repr, unknown))}"
            + (f" in {dataset}" if dataset else "")
            + f" for [{start.date()}, {end.date()}): no symbology or definitions are stored for them; "
            "ingest them first (hdi ingest / %hdi_ingest) or search the known ones "
            "(hdi status / %hdi_symbols)"
        )
    return _merge(spans)


def lookup(
    conn: psycopg2.extensions.connection,
    schema: str,
    symbols: tuple[str, ...],
    start: pd.Timestamp,
    end: pd.Timestamp,
    dataset: str | None = None,
    missing: list[str] | None = None,
) -> list[Span]:
    """:func:`resolve` in a transaction of its own."""
    with transaction(conn) as cur:
        return resolve(cur, schema, symbols, start, end, dataset, missing)


def _merge(spans: list[Span]) -> list[Span]:
    """Merge overlapping or touching spans of the same (symbol, dataset, instrument)."""
    out: list[Span] = []
    for sp in sorted(spans, key=lambda x: (x.symbol, x.dataset, x.instrument_id, x.lo)):
        last = out[-1] if out else None
        if (
            last
            and (last.symbol, last.dataset, last.instrument_id) == (sp.symbol, sp.dataset, sp.instrument_id)
            and sp.lo <= last.hi
        ):
            out[-1] = Span(sp.symbol, sp.dataset, sp.instrument_id, last.lo, max(last.hi, sp.hi))
        else:
            out.append(sp)
    return out
