"""DBN decoding and normalisation into canonical, fixed-dtype columns (vectorised numpy)."""

from __future__ import annotations

import datetime as dt
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import databento as db
import numpy as np
import pandas as pd

from hdi_lab.errors import DataFormatError
from hdi_lab.schemas import Schema
from hdi_lab.storage.copy import PG_EPOCH_US
from hdi_lab.storage.tables import INT64_MAX, UINT64_MAX, Table, dup_key

UNSUPPORTED = {
    "mbp-1": "mbp-1 (every top-of-book update) is not stored: hdi_lab keeps tbbo, the trade plus the "
    "book just before it; request schema tbbo instead",
}


@dataclass(frozen=True)
class Mapping:
    """A symbology interval: ``symbol`` (of ``stype``) means ``instrument_id`` on ``[d0, d1)``."""

    stype: str
    symbol: str
    d0: dt.date
    d1: dt.date
    instrument_id: int


@dataclass
class Decoded:
    """One batch of DBN records with the metadata that gives them meaning."""

    dataset: str
    schema: Schema
    stype_in: str
    start: pd.Timestamp
    end: pd.Timestamp
    records: np.ndarray
    mappings: list[Mapping] = field(default_factory=list)


def open_store(source: str | Path | bytes) -> db.DBNStore:
    """Open a DBN file or byte string, turning decoder failures into DataFormatError."""
    name = "input bytes" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise DataFormatError(f"{name} does not exist: give the path of a .dbn or .dbn.zst file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # from_bytes(io.BytesIO): from_bytes(bytes) repr()s its input, from_file leaves the file open
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
            store = db.DBNStore.from_bytes(io.BytesIO(data))
            _ = store.metadata
    except DataFormatError:
        raise
    except Exception as exc:  # the decoder raises BentoError, ValueError or OSError subclasses
        raise DataFormatError(
            f"{name} is not a readable DBN file ({_short(exc)}): hdi_lab reads Databento DBN "
            "files, plain or zstd-compressed (.dbn, .dbn.zst)"
        ) from exc
    return store


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def schema_of(store: db.DBNStore, name: str = "input") -> Schema:
    raw = store.schema
    if raw is None:
        raise DataFormatError(f"{name} mixes several schemas: split it by schema first")
    value = str(raw.value if hasattr(raw, "value") else raw)
    if value in UNSUPPORTED:
        raise DataFormatError(f"{name}: {UNSUPPORTED[value]}")
    try:
        return Schema(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Schema)
        raise DataFormatError(f"{name} holds schema {value!r}, which hdi_lab does not store; supported: {allowed}") from None


def mappings_of(store: db.DBNStore) -> list[Mapping]:
    meta = store.metadata
    stype = str(meta.stype_in.value if hasattr(meta.stype_in, "value") else meta.stype_in or "raw_symbol")
    out: list[Mapping] = []
    for symbol, intervals in store.mappings.items():
        for iv in intervals:
            try:
                iid = int(iv["symbol"])
            except (TypeError, ValueError):
                continue  # unresolved symbols carry an empty string
            out.append(Mapping(stype, symbol, iv["start_date"], iv["end_date"], iid))
    return out


def decode(store: db.DBNStore, name: str = "input", batch: int | None = None) -> Iterator[Decoded]:
    """Yield the store's records in batches; a truncated or corrupt stream raises DataFormatError."""
    schema = schema_of(store, name)
    meta = store.metadata
    stype = str(meta.stype_in.value if hasattr(meta.stype_in, "value") else meta.stype_in or "raw_symbol")
    start = pd.Timestamp(meta.start, unit="ns", tz="UTC")
    end = pd.Timestamp(meta.end, unit="ns", tz="UTC") if meta.end else pd.Timestamp.max.tz_localize("UTC")
    mappings = mappings_of(store)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            if batch is None:
                parts: Iterator[np.ndarray] = iter([store.to_ndarray(schema=schema.value)])
            else:
                parts = store.to_ndarray(schema=schema.value, count=batch)
            for i, records in enumerate(parts):
                records = records.reshape(-1)  # an empty store gives shape (0, 1)
                yield Decoded(store.dataset, schema, stype, start, end, records, mappings if i == 0 else [])
    except Exception as exc:
        raise DataFormatError(
            f"{name} is corrupt or truncated ({_short(exc)}): re-download or re-export the file; "
            "nothing from it was stored"
        ) from exc


@dataclass
class Columns:
    """Canonical columns for one table: numpy arrays with the table's dtypes and NULL masks."""

    table: Table
    values: dict[str, np.ndarray]
    nulls: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 0


def key_order(records: np.ndarray, schema: Schema) -> np.ndarray:
    """Permutation sorting records by the table key (PK loads ~1.7x faster on sorted input)."""
    keys = [records[k] for k in reversed(dup_key(schema) or ("instrument_id", "ts_event"))]
    return np.lexsort(keys)


def dup_index(records: np.ndarray, schema: Schema) -> np.ndarray:
    """Number the repeats of the same event key in vendor order (records already key-sorted)."""
    n = len(records)
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    same = np.ones(n - 1, dtype=bool)
    for k in dup_key(schema):
        col = records[k]
        same &= col[1:] == col[:-1]
    idx = np.arange(n)
    run_start = np.maximum.accumulate(np.where(np.concatenate(([False], same)), 0, idx))
    return (idx - run_start).astype(np.int16)


def normalise(records: np.ndarray, schema: Schema, table: Table) -> Columns:
    """DBN records (already key-sorted) -> canonical columns for ``table``."""
    values: dict[str, np.ndarray] = {}
    nulls: dict[str, np.ndarray] = {}
    for col in table.columns:
        if col.kind == "dup":
            values[col.name] = dup_index(records, schema)
            continue
        src = records[col.source]
        if col.kind == "ts":
            values[col.name] = (src // 1000).astype(np.int64) - PG_EPOCH_US
        elif col.kind == "char":
            values[col.name] = src.view(np.uint8)
        elif col.kind in ("price", "undef_i64"):
            values[col.name] = src.astype(np.int64, copy=False)
            if col.nullable:
                nulls[col.name] = src == INT64_MAX
        elif col.kind == "undef_u64":
            nulls[col.name] = src == np.uint64(UINT64_MAX)
            values[col.name] = src.astype(np.int64)
        else:
            values[col.name] = src.astype(_NP[col.pgtype], copy=False)
    return Columns(table, values, nulls)


_NP = {"int2": np.int16, "int4": np.int32, "int8": np.int64}


def record_to_json(record: np.void) -> dict[str, object]:
    """One DBN record as a JSON-able dict (integers exact, byte strings as latin-1 text)."""
    out: dict[str, object] = {}
    for name in record.dtype.names or ():
        v = record[name]
        out[name] = v.decode("latin-1") if isinstance(v, bytes) else v.item()
    return out


def records_from_json(rows: list[dict[str, object]], dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`record_to_json` for a list of records of one dtype."""
    arr = np.zeros(len(rows), dtype=dtype)
    for i, row in enumerate(rows):
        for name in dtype.names or ():
            v = row[name]
            arr[i][name] = v.encode("latin-1") if isinstance(v, str) else v
    return arr
