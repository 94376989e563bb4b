"""Live streams through the one DBN path: a batch of record bytes received from a live gateway becomes a DBN
stream (a metadata header of its schema + the records) that :func:`hdi_lab.dbn.decoder.decode` reads like a file,
with the same checks (record lengths, rtypes, a stray partial record); a live symbol-mapping message becomes a
:class:`~hdi_lab.dbn.decoder.Mapping` as the historical metadata's mappings do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np

from hdi_lab.dbn.decoder import Decoded, Mapping, decode, store_from_bytes
from hdi_lab.dbn.writer import UNDEF_TIMESTAMP, Records, encode_metadata
from hdi_lab.schemas import DAY_NS, Schema

__all__ = ["decode_live", "live_mapping"]


def decode_live(
    dataset: str, schema: Schema, stype_in: str, start_ns: int, parts: Iterable[bytes], name: str
) -> Records:
    """The records of ``parts`` (the bytes of whole ``schema`` records, in stream order) as one array, decoded
    by :func:`hdi_lab.dbn.decoder.decode`.

    Raises DataFormatError when the bytes are not whole records of ``schema`` (a wrong rtype or length)."""
    head = encode_metadata(dataset=dataset, schema=schema, stype_in=stype_in, start=start_ns, end=None)
    store = store_from_bytes(b"".join((head, *parts)), name)
    out: list[Decoded] = list(decode(store, name, schema=schema))
    return out[0].records if len(out) == 1 else np.concatenate([d.records for d in out])


def live_mapping(stype_in: str, symbol: str, instrument_id: int, start_ts: int, end_ts: int, ts_event: int) -> Mapping:
    """The symbology interval a live symbol-mapping message states: ``symbol`` (of ``stype_in``) is
    ``instrument_id`` from the UTC day of ``start_ts`` (else of ``ts_event``) to the day ``end_ts`` falls in
    (exclusive; undefined: the day after the start). A session running past midnight extends it
    (see :func:`hdi_lab.core.live`)."""
    first = start_ts if 0 < start_ts != UNDEF_TIMESTAMP else ts_event
    d0 = _day(first)
    d1 = _day(end_ts - 1) + dt.timedelta(days=1) if 0 < end_ts != UNDEF_TIMESTAMP and end_ts > first else d0
    return Mapping(stype_in, symbol, d0, max(d1, d0 + dt.timedelta(days=1)), int(instrument_id))


def _day(ns: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(ns) // DAY_NS)
