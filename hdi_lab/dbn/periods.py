"""Big DBN files in bounded memory: an index of a file's records by period, then each period read back alone.

A DBN file is a metadata block followed by fixed-size records (the whole zstd-compressed for ``.dbn.zst``).
:func:`index_file` reads the file once, batch by batch, and keeps per period (UTC day, or calendar month) of
the records' ``ts_event`` only what plans it: its record runs (index ranges in the file), its record count and
the sha256 of the metadata block followed by its records in file order (the period's content, whatever the
compression). :meth:`FileIndex.store` then gives a period as a ``databento.DBNStore`` whose records are read
from the file when decoded (:func:`hdi_lab.dbn.decode`, the one decode path), at most ``batch`` records at a
time: an uncompressed file is read at the runs' offsets; a compressed one is decompressed once, front to back,
across the periods read in order (records of a later period met on the way, as near midnight in files ordered
by ``ts_recv``, are kept in a temporary file until their period is read).

A file that is truncated (its zstd frame or its last record unfinished) or holds a record that is not of its
schema indexes up to that point: :attr:`FileIndex.fault` says where (byte offset in the DBN stream), and only
the periods before the one it happened in are complete (records are in time order in Databento's files).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import databento as db
import numpy as np
import numpy.typing as npt
import zstandard
from databento.common.dbnstore import DataSource

from hdi_lab.dbn.decoder import ZstdStream, first_bad, open_store, read_full, record_layout, schema_of
from hdi_lab.errors import DataFormatError
from hdi_lab.schemas import Schema

__all__ = ["Fault", "FileIndex", "Period", "index_file", "read_header"]

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: a file's metadata range of more periods than this gets chunks only for the periods holding records
_MAX_EMPTY_PERIODS = 10_000


@dataclass(frozen=True)
class Period:
    """One period of a file: ``[start, end)`` ns (the period clipped to the file's metadata range), its
    ``label`` (``2024-01-02``, or ``2024-01`` for a month), its record count and content hash."""

    label: str
    start: int
    end: int
    records: int
    sha256: str


@dataclass(frozen=True)
class Fault:
    """Where a file stops being readable DBN: ``message`` names the file, the record and its byte offset."""

    message: str
    offset: int  # in the (decompressed) DBN stream
    record: int  # index of the first record not read


def _open(path: Path, name: str) -> tuple[IO[bytes], Any, bool]:
    """The open file, a reader of its DBN bytes (decompressing when it is zstd) and whether it is compressed."""
    try:
        f = open(path, "rb")  # noqa: SIM115  (closed by the caller)
    except OSError as exc:
        raise DataFormatError(
            f"{name} cannot be read ({exc.strerror or exc}): check its permissions and the disk"
        ) from exc
    compressed = f.read(4) == _ZSTD_MAGIC
    f.seek(0)
    return f, (ZstdStream(f, name) if compressed else f), compressed


def _header(reader: Any, name: str) -> bytes:
    head = read_full(reader, 8)
    if len(head) < 8 or bytes(head[:3]) != b"DBN":
        raise DataFormatError(
            f"{name} is not a readable DBN file (it does not start with a DBN header): hdi_lab reads Databento "
            "DBN files, plain or zstd-compressed (.dbn, .dbn.zst)"
        )
    body = read_full(reader, int.from_bytes(head[4:8], "little"))
    return bytes(head) + bytes(body)


def read_header(path: Path, name: str) -> tuple[bytes, db.DBNStore]:
    """The file's metadata block (uncompressed) and a store over it alone (no records), read without the rest.

    Raises DataFormatError when the file is not readable DBN or its header is cut."""
    f, reader, _ = _open(path, name)
    with f:
        try:
            header = _header(reader, name)
        except DataFormatError:
            raise
        except Exception as exc:  # zstandard raises its own errors on corrupt input
            raise DataFormatError(
                f"{name} is not a readable DBN file ({str(exc)[:160]}): hdi_lab reads Databento DBN files, "
                "plain or zstd-compressed (.dbn, .dbn.zst)"
            ) from exc
    return header, open_store(header, name)


@dataclass
class _Runs:
    """Contiguous record ranges ``[start, stop)`` of one period each, in file order."""

    start: npt.NDArray[np.int64]
    stop: npt.NDArray[np.int64]
    period: npt.NDArray[np.int64]  # index into FileIndex.periods


class FileIndex:
    """What :func:`index_file` learnt of a file; :meth:`store` reads one period back."""

    def __init__(
        self,
        path: Path,
        name: str,
        header: bytes,
        store: db.DBNStore,
        periods: list[Period],
        runs: _Runs,
        fault: Fault | None,
        stat: tuple[int, int],
    ) -> None:
        self.path, self.name, self.header, self.periods, self.fault, self.stat = (
            path,
            name,
            header,
            periods,
            fault,
            stat,
        )
        self.schema: Schema = schema_of(store, name)
        self.dtype = record_layout(store, self.schema)
        self._runs = runs
        self._lock = threading.Lock()
        self._idle: _Cursor | None = None  # the cursor left where the last period read stopped

    def runs_of(self, i: int) -> list[tuple[int, int]]:
        """Period ``i``'s record runs ``[start, stop)``, in file order."""
        sel = self._runs.period == i
        return list(zip(self._runs.start[sel].tolist(), self._runs.stop[sel].tolist(), strict=True))

    def records(self, i: int, batch: int) -> Iterator[bytes | memoryview]:
        """Period ``i``'s records in file order, at most ``batch`` records at a time.

        Raises DataFormatError when the file no longer holds what was indexed."""
        with self._lock:
            cursor, self._idle = self._idle, None
        if cursor is None or not cursor.can_serve(i):
            if cursor is not None:
                cursor.close()
            cursor = _Cursor(self)
        try:
            yield from cursor.serve(i, batch)
        finally:
            if not cursor.done:
                with self._lock:
                    if self._idle is None:
                        self._idle, cursor = cursor, None
            if cursor is not None:
                cursor.close()

    def store(self, i: int, batch: int) -> db.DBNStore:
        """Period ``i`` as a DBN store: the metadata block, then its records read from the file when decoded.

        Decoding raises DataFormatError when the records read do not hash to what was indexed (the file changed)."""
        return db.DBNStore(_PeriodSource(self, i, batch))

    def close(self) -> None:
        """Close the file a read left open for the next period. Raises nothing."""
        with self._lock:
            cursor, self._idle = self._idle, None
        if cursor is not None:
            cursor.close()


def index_file(path: Path, name: str, *, monthly: bool, batch: int) -> FileIndex:
    """Read the file once, ``batch`` records at a time, and index its records by period of ``ts_event`` (UTC
    days, or calendar months when ``monthly``), clipped into the metadata's ``[start, end)`` (records outside it
    belong to its first or last period, whose validation quarantines them).

    Raises DataFormatError when the header is not readable DBN (a fault after the header is :attr:`FileIndex.fault`)."""
    st = path.stat()
    header, store = read_header(path, name)
    schema = schema_of(store, name)
    dtype = record_layout(store, schema)
    size = dtype.itemsize
    meta = store.metadata
    lo = int(meta.start)
    hi = int(meta.end or meta.start + 1) - 1  # the last nanosecond of the range
    unit = "M" if monthly else "D"
    hashers: dict[int, Any] = {}
    counts: dict[int, int] = {}
    starts: list[npt.NDArray[np.int64]] = []
    pids: list[npt.NDArray[np.int64]] = []
    n = 0
    last: int | None = None  # period of the last record read
    fault: Fault | None = None
    f, reader, compressed = _open(path, name)
    with f:
        read_full(reader, len(header))
        while fault is None:
            unfinished = False
            try:
                buf = read_full(reader, size * batch)
            except DataFormatError:
                if not (compressed and reader.truncated):
                    raise
                buf, unfinished = reader.leftover(), True
            except zstandard.ZstdError as exc:  # corrupt compressed data
                fault = _fault(name, len(header), n, size, f"its zstd data is corrupt: {str(exc)[:120]}")
                break
            whole = len(buf) // size
            records = np.frombuffer(buf, dtype=dtype, count=whole)
            bad = first_bad(records, schema)
            if bad is not None:
                rec = records[bad]
                fault = _fault(
                    name,
                    len(header),
                    n + bad,
                    size,
                    f"record {n + bad:,} has rtype {int(rec['rtype'])} and length {int(rec['length']) * 4} bytes, "
                    f"not a {schema} record",
                )
                records = records[:bad]
            elif unfinished:
                fault = _fault(name, len(header), n + whole, size, "its zstd frame is unfinished (a cut download)")
            elif len(buf) % size:
                fault = _fault(
                    name, len(header), n + whole, size, f"it ends inside a record ({len(buf) % size} stray bytes)"
                )
            if len(records):
                ts = np.clip(records["ts_event"].astype(np.int64), lo, hi)
                pid = _to_periods(ts, unit)
                cut = np.flatnonzero(pid[1:] != pid[:-1]) + 1
                run_starts = np.concatenate([[0], cut]).astype(np.int64)
                run_stops = np.concatenate([cut, [len(records)]]).astype(np.int64)
                view = memoryview(buf)
                for a, b, p in zip(run_starts.tolist(), run_stops.tolist(), pid[run_starts].tolist(), strict=True):
                    h = hashers.get(p)
                    if h is None:
                        h = hashers[p] = hashlib.sha256(header)
                    h.update(view[a * size : b * size])
                    counts[p] = counts.get(p, 0) + b - a
                starts.append(run_starts + n)
                pids.append(pid[run_starts])
                last = int(pid[-1])
                n += len(records)
            if len(buf) < size * batch:
                break
    complete_below = None if fault is None else (last if last is not None else np.iinfo(np.int64).min)
    periods, runs = _periods(header, unit, lo, hi, counts, hashers, starts, pids, n, complete_below)
    return FileIndex(path, name, header, store, periods, runs, fault, (st.st_size, st.st_mtime_ns))


def _fault(name: str, header: int, record: int, size: int, what: str) -> Fault:
    offset = header + record * size
    return Fault(
        f"{name} is corrupt or truncated at byte {offset:,} of its DBN data (record {record:,}): {what}; "
        "nothing from the period of the last record before it on was stored (the periods before are loaded "
        "on their own); re-download or re-export the file and re-run (what is stored is skipped)",
        offset,
        record,
    )


def _to_periods(ns: npt.NDArray[np.int64], unit: str) -> npt.NDArray[np.int64]:
    """Period numbers (days or months since 1970) of nanosecond timestamps."""
    return ns.astype("datetime64[ns]").astype(f"datetime64[{unit}]").astype(np.int64)


def _bounds(p: int, unit: str) -> tuple[str, int, int]:
    """Period ``p``'s label and ``[start, end)`` in ns."""
    days = np.array([p, p + 1], dtype=np.int64).astype(f"datetime64[{unit}]")
    a, b = days.astype("datetime64[ns]").astype(np.int64).tolist()
    return str(days[0]), a, b


def _periods(
    header: bytes,
    unit: str,
    lo: int,
    hi: int,
    counts: dict[int, int],
    hashers: dict[int, Any],
    starts: list[npt.NDArray[np.int64]],
    pids: list[npt.NDArray[np.int64]],
    n: int,
    complete_below: int | None,
) -> tuple[list[Period], _Runs]:
    """The complete periods (every period of ``[lo, hi]``, plus any holding records) and their merged runs."""
    first, last = _to_periods(np.array([lo, hi], dtype=np.int64), unit).tolist()
    ids = set(counts)
    if last - first < _MAX_EMPTY_PERIODS:
        ids.update(range(first, last + 1))
    if complete_below is not None:
        ids = {p for p in ids if p < complete_below}
    ordered = sorted(ids)
    empty = hashlib.sha256(header).hexdigest()
    periods = []
    for p in ordered:
        label, a, b = _bounds(p, unit)
        h = hashers.get(p)
        periods.append(Period(label, max(a, lo), min(b, hi + 1), counts.get(p, 0), h.hexdigest() if h else empty))
    position = {p: i for i, p in enumerate(ordered)}
    if starts:
        start = np.concatenate(starts)
        pid = np.concatenate(pids)
        keep = np.concatenate([[True], pid[1:] != pid[:-1]])  # merge runs continued across batches
        start, pid = start[keep], pid[keep]
        stop = np.concatenate([start[1:], [n]]).astype(np.int64)
        inside = np.isin(pid, np.array(ordered, dtype=np.int64))
        idx = np.array([position.get(int(p), -1) for p in pid[inside].tolist()], dtype=np.int64)
        runs = _Runs(start[inside], stop[inside], idx)
    else:
        none = np.zeros(0, dtype=np.int64)
        runs = _Runs(none, none, none)
    return periods, runs


class _Cursor:
    """One pass over a file's records, front to back, serving periods in order (see the module docstring)."""

    def __init__(self, index: FileIndex) -> None:
        self._index = index
        self._size = index.dtype.itemsize
        self._file, self._reader, self._compressed = _open(index.path, index.name)
        self._runs = index._runs
        self._p = 0  # next record to read
        self._r = 0  # first run that ends after _p
        self._pending = set(range(len(index.periods)))  # periods not served yet
        self._spools: dict[int, IO[bytes]] = {}  # a pending period's records met before it was served
        if self._compressed:
            read_full(self._reader, len(index.header))
        else:
            self._file.seek(len(index.header))

    @property
    def done(self) -> bool:
        return not self._pending

    def can_serve(self, i: int) -> bool:
        return i in self._pending

    def serve(self, i: int, batch: int) -> Iterator[bytes | memoryview]:
        for j in [j for j in self._pending if j < i]:  # periods skipped (already stored): never spool them
            self._drop(j)
        self._pending.discard(i)
        spool = self._spools.pop(i, None)
        if spool is not None:
            with spool:
                spool.seek(0)
                while piece := spool.read(batch * self._size):
                    yield piece
        for a, b in self._index.runs_of(i):
            if b <= self._p:
                continue  # spooled
            self._advance(a, batch)
            while self._p < b:
                k = min(batch, b - self._p)
                yield self._read(k)
                self._p += k
        if not self._pending:
            self.close()

    def _drop(self, j: int) -> None:
        self._pending.discard(j)
        spool = self._spools.pop(j, None)
        if spool is not None:
            spool.close()

    def _advance(self, target: int, batch: int) -> None:
        """Move to record ``target``, keeping the records of pending periods passed over in their spools."""
        runs = self._runs
        while self._p < target:
            while self._r < len(runs.stop) and runs.stop[self._r] <= self._p:
                self._r += 1
            if self._r == len(runs.stop) or runs.start[self._r] >= target:
                self._skip(target - self._p, batch)
                return
            r = self._r
            if runs.start[r] > self._p:
                self._skip(int(runs.start[r]) - self._p, batch)
            end = min(int(runs.stop[r]), target)
            period = int(runs.period[r])
            if period in self._pending:
                spool = self._spools.get(period)
                if spool is None:
                    spool = self._spools[period] = tempfile.TemporaryFile()  # noqa: SIM115
                while self._p < end:
                    k = min(batch, end - self._p)
                    spool.write(self._read(k))
                    self._p += k
            else:
                self._skip(end - self._p, batch)

    def _skip(self, k: int, batch: int) -> None:
        if not self._compressed:
            self._file.seek(k * self._size, io.SEEK_CUR)
        else:
            left = k
            while left:
                m = min(batch, left)
                self._read(m)
                left -= m
        self._p += k

    def _read(self, k: int) -> bytes | memoryview:
        want = k * self._size
        data = read_full(self._reader, want)
        if len(data) != want:
            raise DataFormatError(
                f"{self._index.name} changed while it was being ingested (it ends before record "
                f"{self._p + len(data) // self._size:,}, which it held when planned): re-run hdi ingest"
            )
        return data

    def close(self) -> None:
        for j in list(self._spools):
            self._drop(j)
        self._pending.clear()
        self._file.close()


class _PeriodReader:
    """The DBN bytes of one period, read as a file: the metadata block, then the period's records.

    Rewinding to the start is what databento's store does while it opens; rewinding after records were read
    starts them again. At the end the records read must hash to what was indexed."""

    def __init__(self, index: FileIndex, i: int, batch: int) -> None:
        self._index, self._i, self._batch = index, i, batch
        self._records: Iterator[bytes | memoryview] | None = None
        self._pos = 0  # in the header while < len(header)
        self._buf: memoryview = memoryview(b"")
        self._hash: Any = None
        self._ended = False

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if offset != 0 or whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a period of a DBN file can only be rewound")
        self.close()
        self._pos, self._buf, self._hash, self._ended = 0, memoryview(b""), None, False
        return 0

    def read(self, size: int = -1) -> bytes | memoryview:
        """Up to ``size`` bytes (all with -1); a whole piece read from the file is returned without a copy."""
        header = self._index.header
        parts: list[bytes | memoryview] = []
        got = 0
        if self._pos < len(header):
            out = header[self._pos : self._pos + size] if size >= 0 else header[self._pos :]
            self._pos += len(out)
            if size >= 0 and len(out) == size:
                return out
            parts.append(out)
            got = len(out)
        while size < 0 or got < size:
            if not len(self._buf) and not self._more():
                break
            take = self._buf if size < 0 else self._buf[: size - got]
            self._buf = self._buf[len(take) :]
            parts.append(take)
            got += len(take)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _more(self) -> bool:
        if self._ended:
            return False
        if self._records is None:
            self._records = self._index.records(self._i, self._batch)
            self._hash = hashlib.sha256(self._index.header)
        piece = next(self._records, None)
        if piece is None:
            self._ended = True
            self.close()
            self._check()
            return False
        self._hash.update(piece)
        self._buf = memoryview(piece)
        return True

    def _check(self) -> None:
        period = self._index.periods[self._i]
        if self._hash.hexdigest() != period.sha256:
            raise DataFormatError(
                f"{self._index.name} changed while it was being ingested (its {period.label} records no longer "
                f"hash to sha256 {period.sha256[:16]}...): nothing of that period was stored; re-run hdi ingest"
            )

    def close(self) -> None:
        if self._records is not None:
            gen, self._records = self._records, None
            with contextlib.suppress(Exception):
                gen.close()  # type: ignore[attr-defined]


class _PeriodSource(DataSource):
    """A databento data source over one period of an indexed file (see :class:`_PeriodReader`)."""

    def __init__(self, index: FileIndex, i: int, batch: int) -> None:
        self._index = index
        self._reader = _PeriodReader(index, i, batch)
        self._nbytes = len(index.header) + index.periods[i].records * index.dtype.itemsize

    @property
    def name(self) -> str:
        return self._index.name

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def reader(self) -> Any:
        self._reader.seek(0)
        return self._reader
