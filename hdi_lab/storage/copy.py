"""PostgreSQL binary COPY, built and parsed with numpy (no per-row Python).

Every supported type is fixed-width, so a row is a fixed numpy record; NULLs (length -1, no
data) are removed with one boolean-mask compaction over the row bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

from hdi_lab.errors import StorageError

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


def row_dtype(pgtypes: Sequence[str]) -> np.dtype:
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for i, t in enumerate(pgtypes):
        fields += [(f"l{i}", ">i4"), (f"v{i}", WIDTH[t])]
    return np.dtype(fields)


def encode(
    pgtypes: Sequence[str],
    values: Sequence[np.ndarray],
    nulls: Mapping[int, np.ndarray] | None = None,
) -> bytes:
    """Encode columns into a binary COPY stream (header, rows, trailer).

    ``values[i]`` holds column i (timestamptz as PostgreSQL microseconds since 2000-01-01);
    ``nulls[i]`` is an optional boolean mask of NULL rows for column i.
    """
    n = len(values[0]) if values else 0
    dtype = row_dtype(pgtypes)
    has_nulls = bool(nulls) and any(m.any() for m in nulls.values())  # type: ignore[union-attr]
    # without NULLs, build the rows in place between header and trailer: one buffer, one copy out
    buf = np.empty(len(HEADER) + n * dtype.itemsize + len(TRAILER), dtype=np.uint8)
    rows = buf[len(HEADER):len(buf) - len(TRAILER)].view(dtype) if not has_nulls else np.empty(n, dtype=dtype)
    rows["n"] = len(pgtypes)
    for i, (t, v) in enumerate(zip(pgtypes, values, strict=True)):
        rows[f"l{i}"] = np.dtype(WIDTH[t]).itemsize
        rows[f"v{i}"] = v
    if not has_nulls:
        buf[:len(HEADER)] = np.frombuffer(HEADER, dtype=np.uint8)
        buf[len(buf) - len(TRAILER):] = np.frombuffer(TRAILER, dtype=np.uint8)
        return buf.tobytes()
    assert nulls is not None
    keep = np.ones((n, dtype.itemsize), dtype=bool)
    for i, mask in nulls.items():
        if not mask.any():
            continue
        rows[f"l{i}"][mask] = -1
        off = dtype.fields[f"v{i}"][1]  # type: ignore[index]
        width = np.dtype(WIDTH[pgtypes[i]]).itemsize
        keep[np.ix_(mask, np.arange(off, off + width))] = False
    body = rows.view(np.uint8).reshape(n, dtype.itemsize)[keep]
    return HEADER + body.tobytes() + TRAILER


def decode(buf: bytes | memoryview, pgtypes: Sequence[str]) -> np.ndarray:
    """Parse a binary COPY stream of non-NULL fixed-width columns into a numpy record array.

    The query must make every field non-NULL (e.g. ``COALESCE`` with a sentinel).
    """
    mv = memoryview(buf)
    if len(mv) < 21 or bytes(mv[:11]) != HEADER[:11]:
        raise StorageError("COPY output is not in binary format")
    ext = int.from_bytes(mv[15:19], "big")
    start = 19 + ext
    body_len = len(mv) - start - 2
    dtype = row_dtype(pgtypes)
    if body_len % dtype.itemsize:
        raise StorageError("COPY output has variable-length or NULL fields; coalesce them in the query")
    rows = np.frombuffer(mv, dtype=dtype, offset=start, count=body_len // dtype.itemsize)
    for i, t in enumerate(pgtypes):
        if len(rows) and not (rows[f"l{i}"] == np.dtype(WIDTH[t]).itemsize).all():
            raise StorageError(f"COPY column {i} has NULL or unexpected widths")
    return rows


def copy_out(cursor: object, query: str) -> bytes:
    """Run ``COPY (query) TO STDOUT (FORMAT binary)`` and return the bytes."""
    sink = io.BytesIO()  # psycopg2 writes once per row: keep that call in C
    cursor.copy_expert(f"COPY ({query}) TO STDOUT (FORMAT binary)", sink, size=1 << 20)  # type: ignore[attr-defined]
    return sink.getvalue()


def copy_in(cursor: object, table: str, columns: Sequence[str], payload: bytes) -> None:
    """Run ``COPY table (columns) FROM STDIN (FORMAT binary)`` with ``payload``.

    ``table`` and ``columns`` must already be quoted identifiers.
    """
    cols = ", ".join(columns)
    cursor.copy_expert(  # type: ignore[attr-defined]
        f"COPY {table} ({cols}) FROM STDIN (FORMAT binary)", io.BytesIO(payload), size=1 << 22
    )
