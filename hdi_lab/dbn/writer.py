"""A small DBN (version 3) encoder: metadata header + fixed-size records, optionally zstd-compressed.

The header is ``databento_dbn.Metadata(...).encode()`` and the records are numpy structured arrays
whose dtype is the record class's ``_dtypes``, so the bytes are exactly what Databento writes and
``databento.DBNStore.from_bytes`` reads them back unchanged. Records are written as given (no
validation), which lets tests craft wrong or corrupt files on purpose.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import databento_dbn as dbn
import numpy as np
import numpy.typing as npt
import pandas as pd
import zstandard

from hdi_lab.schemas import Schema, SType

__all__ = [
    "FIXED_PRICE_SCALE",
    "NOT_IN_DBN",
    "RECORD_CLASSES",
    "RTYPES",
    "UNDEF_PRICE",
    "UNDEF_STAT_QUANTITY",
    "UNDEF_TIMESTAMP",
    "Interval",
    "Records",
    "empty_records",
    "encode_dbn",
    "encode_metadata",
    "record_dtype",
]

UNDEF_PRICE: int = dbn.UNDEF_PRICE
UNDEF_TIMESTAMP: int = dbn.UNDEF_TIMESTAMP
UNDEF_STAT_QUANTITY: int = dbn.UNDEF_STAT_QUANTITY
FIXED_PRICE_SCALE: int = dbn.FIXED_PRICE_SCALE

#: Record class per schema (tbbo records are MBP-1 records).
RECORD_CLASSES: dict[Schema, Any] = {
    Schema.OHLCV_1S: dbn.OHLCVMsg,
    Schema.OHLCV_5S: dbn.OHLCVMsg,
    Schema.OHLCV_1M: dbn.OHLCVMsg,
    Schema.OHLCV_1H: dbn.OHLCVMsg,
    Schema.OHLCV_1D: dbn.OHLCVMsg,
    Schema.TRADES: dbn.TradeMsg,
    Schema.TBBO: dbn.MBP1Msg,
    Schema.STATISTICS: dbn.StatMsg,
    Schema.DEFINITION: dbn.InstrumentDefMsg,
}

#: ``rtype`` per schema, as in Databento's files (checked against the fixtures); ohlcv-5s: see :data:`NOT_IN_DBN`.
RTYPES: dict[Schema, int] = {
    Schema.OHLCV_1S: 0x20,
    Schema.OHLCV_5S: 0x11,
    Schema.OHLCV_1M: 0x21,
    Schema.OHLCV_1H: 0x22,
    Schema.OHLCV_1D: 0x23,
    Schema.TRADES: 0x00,
    Schema.TBBO: 0x01,
    Schema.STATISTICS: 0x18,
    Schema.DEFINITION: 0x13,
}

#: hdi_lab schemas DBN has no schema for: IB's 5-second bars (ohlcv-5s). Their DBN streams say no schema in the
#: metadata (DBN's "mixed"), the reader is told which (:func:`hdi_lab.dbn.decoder.decode`'s ``schema``), and their
#: OHLCV records carry rtype 0x11, DBN's generic OHLCV rtype (``OHLCV_DEPRECATED``), which Databento no longer sends
#: and which no other schema uses: the decoder's rtype check still tells them from every other record.
NOT_IN_DBN: frozenset[Schema] = frozenset({Schema.OHLCV_5S})

#: One mapping interval: [start_date, end_date) -> instrument_id.
Interval: TypeAlias = tuple[dt.date, dt.date, int | str]

#: DBN records: a numpy structured array of one schema's :func:`record_dtype`.
Records: TypeAlias = npt.NDArray[np.void]


@dataclass
class _MappingInterval:  # satisfies databento_dbn.MappingInterval
    start_date: dt.date
    end_date: dt.date
    symbol: str


@dataclass
class _SymbolMapping:  # satisfies databento_dbn.SymbolMapping
    raw_symbol: str
    intervals: Sequence[dbn.MappingInterval]


def record_dtype(schema: Schema | str) -> np.dtype[np.void]:
    """The numpy dtype of ``schema``'s DBN v3 records (packed, like Databento's)."""
    cls = RECORD_CLASSES[Schema(schema)]
    dtype = np.dtype(cls._dtypes)
    assert dtype.itemsize == cls.size_hint, (schema, dtype.itemsize, cls.size_hint)
    return dtype


def _seed_record(schema: Schema) -> bytes:
    """One record built by databento_dbn itself, so unset fields hold Databento's sentinels."""
    lib: Any = dbn  # its stubs type enum members (Action.TRADE, ...) as str
    common = {"publisher_id": 0, "instrument_id": 0, "ts_event": 0}
    if schema.is_bar:
        return bytes(lib.OHLCVMsg(rtype=RTYPES[schema], open=0, high=0, low=0, close=0, volume=0, **common))
    if schema in (Schema.TRADES, Schema.TBBO):
        cls = lib.TradeMsg if schema is Schema.TRADES else lib.MBP1Msg
        return bytes(
            cls(
                price=UNDEF_PRICE,
                size=0,
                action=lib.Action.TRADE,
                side=lib.Side.NONE,
                depth=0,
                ts_recv=0,
                flags=0,
                **common,
            )
        )
    if schema is Schema.STATISTICS:
        return bytes(
            lib.StatMsg(
                ts_recv=0,
                ts_ref=UNDEF_TIMESTAMP,
                price=UNDEF_PRICE,
                quantity=UNDEF_STAT_QUANTITY,
                stat_type=lib.StatType.OPENING_PRICE,
                **common,
            )
        )
    return bytes(
        lib.InstrumentDefMsg(
            ts_recv=0,
            min_price_increment=UNDEF_PRICE,
            display_factor=0,
            raw_symbol="",
            asset="",
            security_type="",
            instrument_class=lib.InstrumentClass.FUTURE,
            security_update_action=lib.SecurityUpdateAction.ADD,
            **common,
        )
    )


@functools.cache
def _template(schema: Schema) -> Records:
    rec = np.frombuffer(_seed_record(schema), dtype=record_dtype(schema)).copy()
    names = rec.dtype.names or ()
    for name in ("action", "side", "instrument_class"):  # required constructor args: leave blank
        if name in names:
            rec[name] = b""
    if "stat_type" in names:
        rec["stat_type"] = 0
    rec["length"] = rec.dtype.itemsize // 4
    rec["rtype"] = RTYPES[schema]
    return rec


def empty_records(schema: Schema | str, n: int) -> Records:
    """``n`` blank records of ``schema``: ``length``/``rtype`` set, numbers zero, and unset prices,
    timestamps and quantities at Databento's sentinels (UNDEF_PRICE = INT64_MAX, ...) where
    databento_dbn itself uses them (mbp-1 BBO, statistics, definition fields)."""
    return np.repeat(_template(Schema(schema)), n)


def _ns(ts: pd.Timestamp | int) -> int:
    if isinstance(ts, (int, np.integer)):
        return int(ts)
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.as_unit("ns").value)


def _mappings(mappings: Mapping[str, Sequence[Interval]]) -> list[_SymbolMapping]:
    return [
        _SymbolMapping(raw, [_MappingInterval(s, e, str(sym)) for s, e, sym in intervals])
        for raw, intervals in mappings.items()
    ]


def encode_metadata(
    *,
    dataset: str,
    schema: Schema | str | None,
    stype_in: SType | str | None,
    start: pd.Timestamp | int,
    end: pd.Timestamp | int | None,
    symbols: Sequence[str] = (),
    mappings: Mapping[str, Sequence[Interval]] | None = None,
    stype_out: SType | str = SType.INSTRUMENT_ID,
    partial: Sequence[str] = (),
    not_found: Sequence[str] = (),
    limit: int | None = None,
) -> bytes:
    """The DBN v3 metadata header (``b"DBN\\x03"`` + length + body), encoded by databento_dbn; a schema of
    :data:`NOT_IN_DBN` is written as none (DBN's "mixed")."""
    if schema is not None and Schema(schema) in NOT_IN_DBN:
        schema = None
    meta = dbn.Metadata(
        dataset=dataset,
        start=_ns(start),
        stype_in=None if stype_in is None else dbn.SType.from_str(str(stype_in)),
        stype_out=dbn.SType.from_str(str(stype_out)),
        schema=None if schema is None else dbn.Schema.from_str(str(schema)),
        symbols=list(symbols),
        partial=list(partial),
        not_found=list(not_found),
        mappings=_mappings(mappings or {}),
        end=None if end is None else _ns(end),
        limit=limit,
        ts_out=False,
    )
    return bytes(meta.encode())


def encode_dbn(
    *,
    dataset: str,
    schema: Schema | str | None,
    stype_in: SType | str | None,
    start: pd.Timestamp | int,
    end: pd.Timestamp | int | None,
    symbols: Sequence[str],
    mappings: Mapping[str, Sequence[Interval]],
    records: Records | bytes,
    compress: bool = True,
    stype_out: SType | str = SType.INSTRUMENT_ID,
    partial: Sequence[str] = (),
    not_found: Sequence[str] = (),
    limit: int | None = None,
    level: int = 3,
) -> bytes:
    """Encode a DBN v3 stream: metadata then ``records`` (written as-is), zstd-compressed if asked.

    ``mappings`` maps each raw/parent/continuous symbol to ``(start_date, end_date, instrument_id)``
    intervals (end exclusive), as in Databento's metadata.
    """
    head = encode_metadata(
        dataset=dataset,
        schema=schema,
        stype_in=stype_in,
        start=start,
        end=end,
        symbols=symbols,
        mappings=mappings,
        stype_out=stype_out,
        partial=partial,
        not_found=not_found,
        limit=limit,
    )
    body = records if isinstance(records, bytes) else memoryview(np.ascontiguousarray(records)).cast("B")
    raw = b"".join((head, body))
    return zstandard.ZstdCompressor(level=level).compress(raw) if compress else raw
