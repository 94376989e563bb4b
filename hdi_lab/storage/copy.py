"""PostgreSQL binary COPY, built and parsed with numpy (no per-row Python).

Every supported type but ``text`` is fixed-width, so a row is a fixed numpy record (rows with texts of
the same byte lengths too); NULLs (length -1, no data) are removed with one boolean-mask compaction
over the row bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from hdi_lab.errors import StorageError

__all__ = [
    "HEADER",
    "PG_EPOCH_US",
    "TRAILER",
    "WIDTH",
    "columns",
    "copy_in",
    "copy_out",
    "copy_view",
    "decode",
    "encode",
    "row_dtype",
]

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds

WIDTH: dict[str, str] = {
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float4": ">f4",
    "float8": ">f8",
    "timestamptz": ">i8",
    "char": "u1",
    "bool": "u1",
}


def row_dtype(pgtypes: Sequence[str], text_widths: Sequence[int] = ()) -> np.dtype[np.void]:
    """The record of one row: the field count, then a (length, value) pair per column; a ``text``
    column takes its width from ``text_widths`` (in column order), an empty text has no value field."""
    fields: list[tuple[str, str]] = [("n", ">i2")]
    widths = iter(text_widths)
    for i, t in enumerate(pgtypes):
        if t != "text":
            fields += [(f"l{i}", ">i4"), (f"v{i}", WIDTH[t])]
            continue
        width = next(widths)
        fields += [(f"l{i}", ">i4")] + ([(f"v{i}", f"S{width}")] if width else [])
    return np.dtype(fields)


def encode(
    pgtypes: Sequence[str],
    values: Sequence[npt.NDArray[Any]],
    nulls: Mapping[int, npt.NDArray[np.bool_]] | None = None,
) -> bytes:
    """Encode columns into a binary COPY stream (header, rows, trailer).

    ``values[i]`` holds column i (timestamptz as PostgreSQL microseconds since 2000-01-01; ``text``
    as a numpy bytes array, ``S`` dtype, UTF-8); ``nulls[i]`` is an optional boolean mask of NULL
    rows for column i. Rows keep their order when every column is fixed-width; with ``text``
    columns they are written grouped by their texts' byte lengths (each group is a fixed record),
    rows with NULLs after the others of their group (row order is not kept).

    Raises KeyError for a type outside :data:`WIDTH` and ``text``.
    """
    text = [i for i, t in enumerate(pgtypes) if t == "text"]
    if not text:
        return _fixed(pgtypes, values, nulls)
    # every row built once with its texts at their widest, then each group of rows with the same text
    # widths taken out (whole records, memcpy-like) and narrowed (the padding bytes cut)
    lengths = [np.strings.str_len(values[i]) for i in text]
    group, widths = _width_groups(lengths)
    n = len(values[0])
    full = np.empty(n, dtype=row_dtype(pgtypes, [int(x.max()) if len(x) else 0 for x in lengths]))
    _fill(full, pgtypes, values, full.dtype)
    for i, length in zip(text, lengths, strict=True):
        full[f"l{i}"] = length
    masks = {i: m for i, m in (nulls or {}).items() if m.any()}
    for i, mask in masks.items():
        full[f"l{i}"][mask] = -1
    with_nulls = np.logical_or.reduce(list(masks.values())) if masks else np.zeros(n, dtype=bool)
    records = full.view(f"V{full.dtype.itemsize}")
    parts = [HEADER]
    for g, width in enumerate(widths):
        dtype = row_dtype(pgtypes, width)
        idx = np.flatnonzero(group == g) if len(widths) > 1 else np.arange(n)
        taken = (records[idx] if len(widths) > 1 else records).view(np.uint8).reshape(len(idx), full.dtype.itemsize)
        if dtype != full.dtype:
            taken = np.concatenate([taken[:, a:b] for a, b in _kept_bytes(full.dtype, dtype, text)], axis=1)
        rows = taken.reshape(-1).view(f"V{dtype.itemsize}")
        null_rows = with_nulls[idx]
        if not null_rows.any():
            parts.append(rows.tobytes())
            continue
        parts.append(rows[np.flatnonzero(~null_rows)].tobytes())
        # only the rows with NULLs go through the byte compaction (few: warm-up rows, say)
        parts.append(
            _compact(
                rows[np.flatnonzero(null_rows)].view(dtype), dtype, {i: m[idx][null_rows] for i, m in masks.items()}
            )
        )
    parts.append(TRAILER)
    return b"".join(parts)


def _width_groups(lengths: Sequence[npt.NDArray[np.integer[Any]]]) -> tuple[npt.NDArray[np.intp], list[list[int]]]:
    """Each row's group of equal text widths (numbered in width order) and the groups' widths."""
    dims = tuple(int(x.max()) + 1 if len(x) else 1 for x in lengths)
    key = np.ravel_multi_index(tuple(lengths), dims)  # small integers: counted, not sorted
    present = np.flatnonzero(np.bincount(key))
    number = np.zeros(int(present[-1]) + 1 if len(present) else 1, dtype=np.intp)
    number[present] = np.arange(len(present))
    widths = [[int(w) for w in ws] for ws in zip(*np.unravel_index(present, dims), strict=True)]
    return number[key], widths


def _kept_bytes(widest: np.dtype[np.void], dtype: np.dtype[np.void], text: Sequence[int]) -> list[tuple[int, int]]:
    """The byte ranges of a ``widest`` record that make a ``dtype`` record: all but each text's padding."""
    out: list[tuple[int, int]] = []
    pos = 0
    for i in text:
        start = widest.fields[f"l{i}"][1] + 4  # type: ignore[index]
        wide = widest.fields[f"v{i}"][0].itemsize if f"v{i}" in widest.fields else 0  # type: ignore[index, operator]
        narrow = dtype.fields[f"v{i}"][0].itemsize if f"v{i}" in dtype.fields else 0  # type: ignore[index, operator]
        out.append((pos, start + narrow))
        pos = start + wide
    out.append((pos, widest.itemsize))
    return [(a, b) for a, b in out if b > a]


def _fixed(
    pgtypes: Sequence[str], values: Sequence[npt.NDArray[Any]], nulls: Mapping[int, npt.NDArray[np.bool_]] | None
) -> bytes:
    """Fixed-width columns, rows in their order."""
    n = len(values[0]) if values else 0
    dtype = row_dtype(pgtypes)
    has_nulls = bool(nulls) and any(m.any() for m in nulls.values())  # type: ignore[union-attr]
    # without NULLs, build the rows in place between header and trailer: one buffer, one copy out
    buf = np.empty(len(HEADER) + n * dtype.itemsize + len(TRAILER), dtype=np.uint8)
    rows = buf[len(HEADER) : len(buf) - len(TRAILER)].view(dtype) if not has_nulls else np.empty(n, dtype=dtype)
    _fill(rows, pgtypes, values, dtype)
    if not has_nulls:
        buf[: len(HEADER)] = np.frombuffer(HEADER, dtype=np.uint8)
        buf[len(buf) - len(TRAILER) :] = np.frombuffer(TRAILER, dtype=np.uint8)
        return buf.tobytes()
    assert nulls is not None
    return HEADER + _compact(rows, dtype, nulls) + TRAILER


def _fill(
    rows: npt.NDArray[np.void],
    pgtypes: Sequence[str],
    values: Sequence[npt.NDArray[Any]],
    dtype: np.dtype[np.void],
    chunk: int = 16_384,
) -> None:
    """Write the columns into the records, a block of rows at a time (the columns, often views into
    one 2-D array, and the records stay in cache). Consecutive columns of one fixed type are written
    together as an array of (length, value) pairs: one cast for the block instead of one per column
    (numpy's per-field cast into unaligned big-endian fields is ~5x slower)."""
    rows["n"] = len(pgtypes)
    for a, b in _runs(pgtypes, values):
        off = dtype.fields[f"l{a}"][1]  # type: ignore[index]
        if f"v{a}" not in dtype.fields:  # type: ignore[operator]
            rows[f"l{a}"] = 0  # an empty text
            continue
        value = dtype.fields[f"v{a}"][0]  # type: ignore[index]
        pair = np.dtype([("l", ">i4"), ("v", value)])
        view = rows.view(
            np.dtype({"names": ["p"], "formats": [(pair, (b - a,))], "offsets": [off], "itemsize": dtype.itemsize})
        )["p"]
        view["l"] = value.itemsize
        for lo in range(0, len(rows), chunk):
            block = [v[lo : lo + chunk] for v in values[a:b]]
            view["v"][lo : lo + chunk] = block[0][:, None] if b - a == 1 else np.stack(block, axis=1)


def _runs(pgtypes: Sequence[str], values: Sequence[npt.NDArray[Any]]) -> list[tuple[int, int]]:
    """``[a, b)`` ranges of consecutive columns of one stored type whose values have one numpy dtype
    (stacking others would promote them: int64 with uint64 to float64); each text column alone."""
    out: list[tuple[int, int]] = []
    for i, t in enumerate(pgtypes):
        a = out[-1][0] if out else 0
        if (
            out
            and "text" not in (t, pgtypes[a])
            and WIDTH[pgtypes[a]] == WIDTH[t]
            and getattr(values[a], "dtype", None) == getattr(values[i], "dtype", None) is not None
        ):
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _compact(rows: npt.NDArray[np.void], dtype: np.dtype[np.void], nulls: Mapping[int, npt.NDArray[np.bool_]]) -> bytes:
    """The rows' bytes with NULLs as length -1 and no value bytes."""
    keep = np.ones((len(rows), dtype.itemsize), dtype=bool)
    for i, mask in nulls.items():
        if not mask.any():
            continue
        rows[f"l{i}"][mask] = -1
        if f"v{i}" not in dtype.fields:  # type: ignore[operator]
            continue  # an empty text: no value bytes to drop
        field, off = dtype.fields[f"v{i}"][:2]  # type: ignore[index]
        keep[np.ix_(mask, np.arange(off, off + field.itemsize))] = False
    return bytes(rows.view(np.uint8).reshape(len(rows), dtype.itemsize)[keep].tobytes())


def decode(buf: bytes | memoryview, pgtypes: Sequence[str]) -> npt.NDArray[np.void]:
    """Parse a binary COPY stream of non-NULL fixed-width columns into a numpy record array.

    The query must make every field non-NULL (e.g. ``COALESCE`` with a sentinel).

    Raises StorageError when ``buf`` is not binary COPY output, or holds NULL or variable-length fields
    or widths that do not match ``pgtypes``.
    """
    rows = _records(buf, pgtypes)
    for i, t in enumerate(pgtypes):
        if len(rows) and not (rows[f"l{i}"] == np.dtype(WIDTH[t]).itemsize).all():
            raise StorageError(f"COPY column {i} has NULL or unexpected widths")
    return rows


#: rows per block of :func:`columns`: a block's records stay in the CPU cache while each column is taken out
_BLOCK = 4096


def columns(buf: bytes | memoryview, pgtypes: Sequence[str]) -> list[npt.NDArray[Any]]:
    """:func:`decode`, each column as a contiguous native-endian array: the records are read once, a block at a
    time, checked and split while in cache (~3x faster than a pass over all rows per field, which is what
    sorting or converting the big-endian strided record fields does).

    Raises what :func:`decode` raises."""
    rows = _records(buf, pgtypes)
    n = len(rows)
    out = [np.empty(n, dtype=rows.dtype.fields[f"v{i}"][0].newbyteorder("=")) for i in range(len(pgtypes))]  # type: ignore[index]
    widths = [np.dtype(WIDTH[t]).itemsize for t in pgtypes]
    for lo in range(0, n, _BLOCK):
        block = rows[lo : lo + _BLOCK]
        for i, (width, col) in enumerate(zip(widths, out, strict=True)):
            if not (block[f"l{i}"] == width).all():
                raise StorageError(f"COPY column {i} has NULL or unexpected widths")
            col[lo : lo + _BLOCK] = block[f"v{i}"]
    return out


def _records(buf: bytes | memoryview, pgtypes: Sequence[str]) -> npt.NDArray[np.void]:
    mv = memoryview(buf)
    if len(mv) < 21 or bytes(mv[:11]) != HEADER[:11]:
        raise StorageError("COPY output is not in binary format")
    ext = int.from_bytes(mv[15:19], "big")
    start = 19 + ext
    body_len = len(mv) - start - 2
    dtype = row_dtype(pgtypes)
    if body_len % dtype.itemsize:
        raise StorageError("COPY output has variable-length or NULL fields; coalesce them in the query")
    return np.frombuffer(mv, dtype=dtype, offset=start, count=body_len // dtype.itemsize)


def copy_out(cursor: object, query: str) -> bytes:
    """Run ``COPY (query) TO STDOUT (FORMAT binary)`` and return the bytes."""
    return bytes(copy_view(cursor, query))


def copy_view(cursor: object, query: str) -> memoryview:
    """:func:`copy_out` without the final copy of the bytes (~30 ms a million bars): a view of the buffer."""
    sink = io.BytesIO()  # psycopg2 writes once per row: keep that call in C
    cursor.copy_expert(f"COPY ({query}) TO STDOUT (FORMAT binary)", sink, size=1 << 20)  # type: ignore[attr-defined]
    return sink.getbuffer()


def copy_in(cursor: object, table: str, columns: Sequence[str], payload: bytes) -> None:
    """Run ``COPY table (columns) FROM STDIN (FORMAT binary)`` with ``payload``.

    ``table`` and ``columns`` must already be quoted identifiers.
    """
    cols = ", ".join(columns)
    cursor.copy_expert(  # type: ignore[attr-defined]
        f"COPY {table} ({cols}) FROM STDIN (FORMAT binary)", io.BytesIO(payload), size=1 << 22
    )
