"""DBN decoding: opening stores, reading records into numpy arrays, checking them, their symbology.

Turning records into storage columns is :mod:`hdi_lab.storage.normalise`."""

from __future__ import annotations

import collections
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import databento as db
import numpy as np
import pandas as pd
import zstandard
from databento_dbn import DBN_VERSION

from hdi_lab.dbn import vendor_warnings
from hdi_lab.dbn.writer import NOT_IN_DBN, RTYPES, Records, record_dtype
from hdi_lab.errors import DataFormatError, first_line
from hdi_lab.schemas import SCHEMAS, Schema

__all__ = [
    "UNSUPPORTED",
    "Decoded",
    "Mapping",
    "ZstdStream",
    "check_headers",
    "decode",
    "first_bad",
    "mappings_of",
    "open_store",
    "read_full",
    "record_layout",
    "record_to_json",
    "records_from_json",
    "schema_of",
    "store_from_bytes",
    "stream",
    "streamable",
    "stype_of",
    "truncated_message",
    "unfinished_zstd",
]

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
    records: Records
    mappings: list[Mapping] = field(default_factory=list)


class _Named(io.BytesIO):
    """A buffer whose repr is its source's name: the decoder puts ``repr(source)`` into its messages."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self._name = name

    def __repr__(self) -> str:
        return self._name


def store_from_bytes(data: bytes, name: str) -> db.DBNStore:
    """A DBN store over ``data``; the decoder's messages call it ``name`` (not ``<_io.BytesIO ...>``).

    A buffer, not ``bytes``: databento's MemoryDataSource keeps ``repr(source)``, i.e. the whole input.
    """
    return db.DBNStore.from_bytes(_Named(data, name))


def open_store(source: str | Path | bytes, name: str | None = None) -> db.DBNStore:
    """Open a DBN file or byte string.

    Raises DataFormatError when the path does not exist, or the input is truncated, not DBN, only partly
    readable or of an unknown DBN version."""
    name = name or ("input bytes" if isinstance(source, bytes) else str(source))
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise DataFormatError(f"{name} does not exist: give the path of a .dbn or .dbn.zst file")

    read_bytes: list[bytes] = []

    def read() -> db.DBNStore:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        read_bytes.append(data)
        store = store_from_bytes(data, Path(name).name)  # from_file leaves the file open
        _ = store.metadata
        return store

    try:
        store, notes = vendor_warnings.call(read)
    except Exception as exc:  # the decoder raises BentoError, ValueError or OSError subclasses
        if read_bytes and unfinished_zstd(read_bytes[0]):  # cut inside the header: say what happened
            raise DataFormatError(truncated_message(name)) from exc
        raise DataFormatError(
            f"{name} is not a readable DBN file ({_short(exc)}): hdi_lab reads Databento DBN "
            "files, plain or zstd-compressed (.dbn, .dbn.zst)"
        ) from exc
    if notes:  # the decoder warns about input it can only partly read
        raise DataFormatError(f"{name} is not a readable DBN file ({notes[0][:160]}): re-download or re-export it")
    version = int(store.metadata.version)
    if not 1 <= version <= DBN_VERSION:  # the decoder accepts version 0 and would read v3 layouts
        raise DataFormatError(
            f"{name} is not a readable DBN file (it says DBN version {version}; versions 1 to "
            f"{DBN_VERSION} exist): the file is corrupt; re-download or re-export it"
        )
    return store


def _short(exc: BaseException) -> str:
    return first_line(exc)[:160]


def schema_of(store: db.DBNStore, name: str = "input", expected: Schema | None = None) -> Schema:
    """The one schema ``store`` holds: its metadata's, or ``expected`` when that is a schema DBN cannot name
    (:data:`~hdi_lab.dbn.writer.NOT_IN_DBN`: ohlcv-5s) and the metadata names none (its records' rtype is then
    checked as they are read).

    Raises DataFormatError when it mixes schemas or holds one hdi_lab does not store."""
    raw = store.schema
    if raw is None and expected in NOT_IN_DBN:
        return expected
    if raw is None:
        raise DataFormatError(f"{name} mixes several schemas: split it by schema first")
    value = str(raw.value if hasattr(raw, "value") else raw)
    if value in UNSUPPORTED:
        raise DataFormatError(f"{name}: {UNSUPPORTED[value]}")
    try:
        return Schema(value)
    except ValueError:
        allowed = ", ".join(SCHEMAS)
        raise DataFormatError(
            f"{name} holds schema {value!r}, which hdi_lab does not store; supported: {allowed}"
        ) from None


def stype_of(meta: Any) -> str:
    """The metadata's input symbology type as text (raw_symbol when absent)."""
    raw = meta.stype_in
    return str(raw.value if raw is not None and hasattr(raw, "value") else raw or "raw_symbol")


def mappings_of(store: db.DBNStore) -> list[Mapping]:
    """The store's resolved symbology intervals (unresolved symbols are left out)."""
    meta = store.metadata
    stype = stype_of(meta)
    out: list[Mapping] = []
    for symbol, intervals in store.mappings.items():
        for iv in intervals:
            try:
                iid = int(iv["symbol"])
            except (TypeError, ValueError):
                continue  # unresolved symbols carry an empty string
            out.append(Mapping(stype, symbol, iv["start_date"], iv["end_date"], iid))
    return out


def decode(
    store: db.DBNStore, name: str = "input", batch: int | None = None, schema: Schema | None = None
) -> Iterator[Decoded]:
    """Yield the store's records in batches; a truncated or corrupt stream raises DataFormatError.

    ``schema`` is what the caller expects (a chunk's schema): it names the records of a stream whose metadata
    cannot (:func:`schema_of`); another schema in the metadata is still reported as it is.

    Records are read straight from the (decompressed) stream into numpy arrays, and a trailing
    partial record is an error here rather than a warning in the client: no global warnings
    state is touched, so decoding is safe while other threads download.
    """
    schema = schema_of(store, name, schema)
    meta = store.metadata
    stype = stype_of(meta)
    start = pd.Timestamp(meta.start, unit="ns", tz="UTC")
    end = pd.Timestamp(meta.end, unit="ns", tz="UTC") if meta.end else pd.Timestamp.max.tz_localize("UTC")
    mappings = mappings_of(store)
    try:
        for i, records in enumerate(_batches(store, schema, name, batch)):
            check_headers(records, schema, name)
            yield Decoded(store.dataset, schema, stype, start, end, records, mappings if i == 0 else [])
    except DataFormatError:
        raise
    except Exception as exc:
        raise DataFormatError(
            f"{name} is corrupt or truncated ({_short(exc)}): re-download or re-export the file; "
            "nothing from it was stored"
        ) from exc


def streamable(store: db.DBNStore, schema: Schema) -> bool:
    """Whether the store's records are read as they are stored (:func:`record_layout`), batch by batch:
    not DBN v1/v2 definitions and statistics, whose layouts changed in v3 and which the client upgrades."""
    return not (store.metadata.version < 3 and schema in (Schema.DEFINITION, Schema.STATISTICS))


def record_layout(store: db.DBNStore, schema: Schema) -> np.dtype[np.void]:
    """The numpy dtype of the store's records as they are stored (with ``ts_out`` when the metadata says so)."""
    dtype = record_dtype(schema)
    if store.metadata.ts_out:
        dtype = np.dtype([*dtype.descr, ("ts_out", "<u8")])
    return dtype


def _batches(store: db.DBNStore, schema: Schema, name: str, batch: int | None) -> Iterator[Records]:
    reader = stream(store, name)
    if not streamable(store, schema):  # let the client upgrade each record (they are few)
        plain = store_from_bytes(reader.read(), Path(name).name)
        yield np.frombuffer(b"".join(bytes(r) for r in plain), dtype=record_dtype(schema))
        return
    dtype = record_layout(store, schema)
    head = reader.read(8)
    if len(head) < 8 or head[:3] != b"DBN":
        raise DataFormatError(f"{name} is not a DBN stream")
    reader.read(int.from_bytes(head[4:8], "little"))  # the metadata, already decoded
    size = dtype.itemsize * batch if batch else -1
    first = True
    while True:
        buf = read_full(reader, size)
        if not buf:
            if first:
                yield np.empty(0, dtype=dtype)
            return
        first = False
        if len(buf) % dtype.itemsize:
            raise DataFormatError(
                f"{name} is truncated: it ends inside a record ({len(buf) % dtype.itemsize} stray bytes); "
                "re-download or re-export the file; nothing from it was stored"
            )
        yield np.frombuffer(buf, dtype=dtype)


def truncated_message(name: str) -> str:
    """What to tell the user about input ``name`` whose zstd stream ends inside a frame."""
    return (
        f"{name} is truncated: its zstd stream ends before the end of its frame (a cut download or an "
        "unfinished export); re-download or re-export it (re-run the ingest for an API download); "
        "nothing from it was stored"
    )


class _Unfinished(DataFormatError):
    """The input ended inside a zstd frame."""


class ZstdStream:
    """The decompressed bytes of a zstd stream of one or more frames, read as a file.

    zstandard's own stream reader reports a clean end of file when the input stops inside a frame
    (a crashed writer or a cut download flushed at a block boundary leaves whole records and no
    frame end), and drops buffered output after a short read. This reader decompresses once, frame
    after frame, and raises DataFormatError when the input ends before the last frame does.
    """

    READ_SIZE = 1 << 20  # compressed bytes per read
    WRITE_SIZE = 1 << 20  # zstandard's default (128 KiB) output pieces cost a second join

    def __init__(self, source: Any, name: str) -> None:
        self._source, self._name = source, name
        self._frame = self._new_frame()
        self._in_frame = False  # input was fed to a frame that has not ended yet
        self._parts: collections.deque[bytes] = collections.deque()
        self._pos = 0  # read position in the first part
        self._size = 0  # unread bytes in the parts
        self._eof = False

    def _new_frame(self) -> Any:
        return zstandard.ZstdDecompressor().decompressobj(write_size=self.WRITE_SIZE)

    def read(self, size: int = -1) -> bytes | memoryview:
        """Up to ``size`` bytes (all with -1); a slice of one decompressed piece is not copied."""
        while not self._eof and (size < 0 or self._size < size):
            self._fill()
        n = self._size if size < 0 else min(size, self._size)
        first = self._parts[0] if self._parts else b""
        if len(first) - self._pos >= n:
            out: bytes | memoryview = memoryview(first)[self._pos : self._pos + n]
            self._advance(n)
            return out
        buf = bytearray(n)
        got = 0
        while got < n:
            piece = memoryview(self._parts[0])[self._pos : self._pos + n - got]
            buf[got : got + len(piece)] = piece
            got += len(piece)
            self._advance(len(piece))
        return memoryview(buf)

    @property
    def truncated(self) -> bool:
        """Whether the input ended inside a frame (a read raised DataFormatError saying so)."""
        return self._eof and self._in_frame

    def leftover(self) -> bytes:
        """The decompressed bytes not read yet (after a read raised because the input was truncated:
        what the cut stream still gave)."""
        out = b"".join(bytes(p) for p in self._parts)[self._pos :]
        self._parts.clear()
        self._pos = self._size = 0
        return out

    def _advance(self, n: int) -> None:
        self._pos += n
        self._size -= n
        if self._parts and self._pos == len(self._parts[0]):
            self._parts.popleft()
            self._pos = 0

    def _fill(self) -> None:
        data = self._source.read(self.READ_SIZE)
        if not data:
            self._eof = True
            if self._in_frame:
                raise _Unfinished(truncated_message(self._name))
            return
        while data:
            out = self._frame.decompress(data)
            if out:
                self._parts.append(out)
                self._size += len(out)
            self._in_frame = not self._frame.eof
            if self._in_frame:
                return
            data = self._frame.unused_data  # the next frame starts here
            self._frame = self._new_frame()


def stream(store: db.DBNStore, name: str) -> Any:
    """The store's DBN bytes from the start, decompressed by :class:`ZstdStream` when zstd-compressed."""
    source = store._data_source.reader  # the undecoded bytes, rewound; databento has no public accessor
    return ZstdStream(source, name) if store.compression == db.Compression.ZSTD else source


def unfinished_zstd(data: bytes) -> bool:
    """Whether ``data`` is zstd whose last frame never ends (asked only after the decoder failed)."""
    try:
        ZstdStream(io.BytesIO(data), "").read()
    except _Unfinished:
        return True
    except Exception:  # noqa: BLE001  (not zstd, or corrupt: the decoder's own message says more)
        return False
    return False


def read_full(reader: Any, size: int) -> bytes | memoryview:
    """``size`` bytes (all with -1) or fewer only at the end: stream readers may return short reads (one piece
    is returned as read: not copied)."""
    if size < 0:
        return reader.read()
    parts, got = [], 0
    while got < size:
        part = reader.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def check_headers(records: Records, schema: Schema, name: str) -> None:
    """Every record must carry the schema's rtype and record length (the decoder does not check).

    Raises DataFormatError naming the first record that does not."""
    i = first_bad(records, schema)
    if i is not None:
        raise DataFormatError(
            f"{name} is corrupt: record {i} has rtype {int(records['rtype'][i])} and length "
            f"{int(records['length'][i]) * 4} bytes, not a {schema} record ({RTYPES[schema]}, "
            f"{records.dtype.itemsize} bytes); nothing from it was stored"
        )


def first_bad(records: Records, schema: Schema) -> int | None:
    """The index of the first record without the schema's rtype and record length, None when all have them."""
    if len(records) == 0:
        return None
    bad = (records["length"].astype(np.int64) * 4 != records.dtype.itemsize) | (records["rtype"] != RTYPES[schema])
    return int(np.argmax(bad)) if bad.any() else None


def record_to_json(record: np.void) -> dict[str, object]:
    """One DBN record as a JSON-able dict (integers exact, byte strings as latin-1 text)."""
    out: dict[str, object] = {}
    for name in record.dtype.names or ():
        v = record[name]
        out[name] = v.decode("latin-1") if isinstance(v, bytes) else v.item()
    return out


def records_from_json(rows: list[dict[str, object]], dtype: np.dtype[np.void]) -> Records:
    """Inverse of :func:`record_to_json` for a list of records of one dtype."""
    arr = np.zeros(len(rows), dtype=dtype)
    for i, row in enumerate(rows):
        for name in dtype.names or ():
            v = row[name]
            arr[i][name] = v.encode("latin-1") if isinstance(v, str) else v
    return arr
