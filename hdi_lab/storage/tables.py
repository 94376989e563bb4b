"""Column specifications of the market-data tables: the single source for COPY layouts.

Each column names its PostgreSQL type, the DBN field it comes from and how it is converted.
``tests/test_storage.py`` checks these specs against the live tables built by the migrations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from hdi_lab.schemas import Schema

__all__ = ["TABLES", "Column", "Kind", "Table", "dup_key"]

Kind: TypeAlias = Literal["int", "ts", "ns", "price", "char", "undef_i64", "undef_u64", "dup"]


@dataclass(frozen=True)
class Column:
    name: str
    pgtype: str  # int2 | int4 | int8 | timestamptz | char
    source: str  # DBN field
    kind: Kind = "int"
    nullable: bool = False  # NULL where the vendor sends its UNDEF sentinel


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    time_column: str  # timestamptz column partitioning and filtering by time
    ns_column: str | None  # exact nanosecond column for ticks

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


_ID = (Column("instrument_id", "int8", "instrument_id"), Column("publisher_id", "int2", "publisher_id"))

_BAR = (
    *_ID,
    Column("ts_event", "timestamptz", "ts_event", "ts"),
    Column("open", "int8", "open", "price"),
    Column("high", "int8", "high", "price"),
    Column("low", "int8", "low", "price"),
    Column("close", "int8", "close", "price"),
    Column("volume", "int8", "volume"),
)

_TICK_TIME = (
    Column("ts_event", "timestamptz", "ts_event", "ts"),
    Column("ts_event_ns", "int8", "ts_event", "ns"),
    Column("dup_idx", "int4", "", "dup"),
    Column("ts_recv_ns", "int8", "ts_recv", "ns"),
)

_TRADE = (
    *_ID,
    *_TICK_TIME,
    *(
        Column("price", "int8", "price", "price", nullable=True),
        Column("size", "int8", "size"),
        Column("action", "char", "action", "char"),
        Column("side", "char", "side", "char"),
        Column("flags", "int2", "flags"),
        Column("depth", "int2", "depth"),
        Column("ts_in_delta", "int4", "ts_in_delta"),
        Column("sequence", "int8", "sequence"),
    ),
)

_BOOK = (
    Column("bid_px_00", "int8", "bid_px_00", "price", nullable=True),
    Column("ask_px_00", "int8", "ask_px_00", "price", nullable=True),
    Column("bid_sz_00", "int8", "bid_sz_00"),
    Column("ask_sz_00", "int8", "ask_sz_00"),
    Column("bid_ct_00", "int8", "bid_ct_00"),
    Column("ask_ct_00", "int8", "ask_ct_00"),
)

_STAT = (
    *_ID,
    *_TICK_TIME,
    *(
        Column("ts_ref_ns", "int8", "ts_ref", "undef_u64", nullable=True),
        Column("price", "int8", "price", "price", nullable=True),
        Column("quantity", "int8", "quantity", "undef_i64", nullable=True),
        Column("sequence", "int8", "sequence"),
        Column("ts_in_delta", "int4", "ts_in_delta"),
        Column("stat_type", "int2", "stat_type"),
        Column("channel_id", "int4", "channel_id"),
        Column("update_action", "int2", "update_action"),
        Column("stat_flags", "int2", "stat_flags"),
    ),
)

_TICK_KEY = ("instrument_id", "ts_event", "ts_event_ns", "dup_idx", "publisher_id")
_DUP_KEY = {  # the key without dup_idx; dup_idx numbers records sharing it, in vendor order
    Schema.TRADES: ("instrument_id", "publisher_id", "ts_event"),
    Schema.TBBO: ("instrument_id", "publisher_id", "ts_event"),
    Schema.STATISTICS: ("instrument_id", "publisher_id", "ts_event", "stat_type"),
}

TABLES: dict[Schema, Table] = {
    **{
        s: Table(s.table, _BAR, ("instrument_id", "ts_event", "publisher_id"), "ts_event", None)
        for s in Schema
        if s.is_bar
    },
    Schema.TRADES: Table("trades", _TRADE, _TICK_KEY, "ts_event", "ts_event_ns"),
    Schema.TBBO: Table("tbbo", _TRADE + _BOOK, _TICK_KEY, "ts_event", "ts_event_ns"),
    Schema.STATISTICS: Table(
        "statistics", _STAT, (*_TICK_KEY[:4], "stat_type", "publisher_id"), "ts_event", "ts_event_ns"
    ),
}


def dup_key(schema: Schema) -> tuple[str, ...]:
    return _DUP_KEY.get(schema, ())
