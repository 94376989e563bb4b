"""DBN records -> canonical, fixed-dtype columns of a storage table (vectorised numpy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from hdi_lab.dbn import INT64_MAX, UINT64_MAX
from hdi_lab.schemas import Schema
from hdi_lab.storage.copy import PG_EPOCH_US
from hdi_lab.storage.tables import Table, dup_key

__all__ = ["Columns", "DupCounter", "key_order", "key_view", "normalise"]


@dataclass
class Columns:
    """Canonical columns for one table: numpy arrays with the table's dtypes and NULL masks."""

    table: Table
    values: dict[str, npt.NDArray[Any]]
    nulls: dict[str, npt.NDArray[Any]]

    def __len__(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 0


def key_order(records: npt.NDArray[Any], schema: Schema) -> npt.NDArray[Any]:
    """Permutation sorting records by the table key (PK loads ~1.7x faster on sorted input)."""
    keys = [records[k] for k in reversed(dup_key(schema) or ("instrument_id", "ts_event"))]
    return np.lexsort(keys)


def _runs(records: npt.NDArray[Any], fields: tuple[str, ...]) -> npt.NDArray[Any]:
    """Position of each record within its run of equal ``fields`` (records already key-sorted)."""
    n = len(records)
    same = np.ones(max(n - 1, 0), dtype=bool)
    for k in fields:
        col = records[k]
        same &= col[1:] == col[:-1]
    idx = np.arange(n)
    run_start = np.maximum.accumulate(np.where(np.concatenate(([False], same)), 0, idx))
    return idx - run_start


def key_view(arrays: Sequence[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """One opaque, comparable value per row for a tuple of key columns (for np.unique / np.isin)."""
    packed = np.empty(len(arrays[0]), dtype=[(f"k{i}", a.dtype.newbyteorder("=")) for i, a in enumerate(arrays)])
    for i, a in enumerate(arrays):
        packed[f"k{i}"] = a
    return packed.view(np.dtype((np.void, packed.dtype.itemsize)))


class DupCounter:
    """Numbers records sharing a table key (the key without ``dup_idx``) in vendor order.

    One counter spans all the batches of a chunk, so repeats split across batches still get
    distinct, deterministic numbers.
    """

    def __init__(self, schema: Schema) -> None:
        self.fields = dup_key(schema)
        self._keys: npt.NDArray[Any] | None = None  # sorted unique keys (void view) seen so far
        self._counts: npt.NDArray[Any] | None = None
        self._packed: np.dtype[Any] | None = None  # the keys' fields behind the void view

    def assign(self, records: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """dup_idx for key-sorted ``records`` of the next batch."""
        n = len(records)
        if not self.fields or n == 0:
            return np.zeros(n, dtype=np.int32)
        keys = key_view([records[f] for f in self.fields])
        self._packed = np.dtype([(f"k{i}", records[f].dtype.newbyteorder("=")) for i, f in enumerate(self.fields)])
        local = _runs(records, self.fields)
        uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        offset = np.zeros(len(uniq), dtype=np.int64)
        if self._keys is None or self._counts is None:
            self._keys, self._counts = uniq, counts
        else:
            # np.asarray: an array (numpy's stubs type this clip as a scalar)
            pos = np.asarray(np.clip(np.searchsorted(self._keys, uniq), 0, len(self._keys) - 1))
            hit = self._keys[pos] == uniq
            offset[hit] = self._counts[pos[hit]]
            merged, inv = np.unique(np.concatenate([self._keys, uniq]), return_inverse=True)
            self._keys = merged
            self._counts = np.bincount(inv, weights=np.concatenate([self._counts, counts])).astype(np.int64)
        return (local + offset[inverse.reshape(-1)]).astype(np.int32)

    def forget_before(self, ts_event: int) -> None:
        """Forget the keys whose ``ts_event`` (ns) is before ``ts_event``: a stream in time order (a live
        session) sends no more records of them, and the counter stays small."""
        if self._keys is None or self._counts is None or self._packed is None or "ts_event" not in self.fields:
            return
        times = self._keys.view(self._packed)[f"k{self.fields.index('ts_event')}"]
        keep = times >= ts_event
        if not keep.all():
            self._keys, self._counts = self._keys[keep], self._counts[keep]


def normalise(records: npt.NDArray[Any], table: Table, dup_idx: npt.NDArray[Any] | None = None) -> Columns:
    """DBN records -> canonical columns for ``table`` (``dup_idx`` from a :class:`DupCounter`)."""
    values: dict[str, npt.NDArray[Any]] = {}
    nulls: dict[str, npt.NDArray[Any]] = {}
    for col in table.columns:
        if col.kind == "dup":
            values[col.name] = dup_idx if dup_idx is not None else np.zeros(len(records), dtype=np.int32)
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
