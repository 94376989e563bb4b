"""Moved to :mod:`hdi_lab.dbn.writer`; this path keeps working as a re-export."""

from __future__ import annotations

from hdi_lab.dbn.writer import (
    FIXED_PRICE_SCALE,
    RECORD_CLASSES,
    RTYPES,
    UNDEF_PRICE,
    UNDEF_STAT_QUANTITY,
    UNDEF_TIMESTAMP,
    Interval,
    empty_records,
    encode_dbn,
    encode_metadata,
    record_dtype,
)

__all__ = [
    "FIXED_PRICE_SCALE",
    "RECORD_CLASSES",
    "RTYPES",
    "UNDEF_PRICE",
    "UNDEF_STAT_QUANTITY",
    "UNDEF_TIMESTAMP",
    "Interval",
    "empty_records",
    "encode_dbn",
    "encode_metadata",
    "record_dtype",
]
