"""The read cache: the rows of queried instrument-days kept as Arrow IPC files under the data home (and the days a
process read lately in its memory), so that a repeated read costs what a local columnar store costs.

**What is kept.** One file per market-data table, instrument and UTC day (``<home>/cache/<database>/<table>/
<instrument_id>/<YYYY-MM-DD>.arrow``): every row and column a read can give of that day, as decoded from the
server, with the *token* (the day's change version, see :mod:`hdi_lab.storage.versions`) it was read under. It is
filled by reads through :func:`hdi_lab.query` (and so ``hdi query``, ``%hdi_query``, the widgets and continuous
series: see :mod:`hdi_lab.storage.cached` for what is read whole and what is cached); rollups (``interval=``,
except session-aligned ones, which roll up cached bars), definitions, exports and feature computations read the
database directly.

**Never stale.** Every read first asks the database for the tokens of the days it wants (in the statement that
resolves its symbols) and takes a day only under its current token: anything written since (an ingest, an update,
a vendor revision, a live batch, a quarantine retry, a hand-written statement, a retention policy's horizon)
gives the day or the table a new token, in the transaction that writes. The database is the only truth; the
cache is a copy any process may delete at any time.

**Bounded.** At most ``cache_bytes`` (``HDI_CACHE_BYTES``, default 1 GiB) on disk: whenever a process has written
an eighth of it, it lists the folder and deletes the least recently used files (by modification time, refreshed
when a file is read) down to three quarters. Processes sharing the folder may overshoot the bound by an eighth
each between their checks. At most ``cache_memory_bytes`` (``HDI_CACHE_MEMORY_BYTES``, default 128 MiB) of days
read from files, and of reads of many cached days as put together (in time order, ready for a frame: repeated, such
a read takes no day at all), are also kept in the process's memory, the least recently used going first; a read
kept whole is taken only under the tokens of all its days. ``HDI_CACHE=off``
(setting ``cache``) reads without any of it.

**Safe to share.** Files are written by a background thread (a read does not wait for the disk; the thread looks
for work every 50 ms and ends after 10 s without any) to a temporary name and renamed into place, so a reader
sees a whole old file or a whole new one; a file that cannot be read (cut short, damaged, of another layout)
counts as missing and is rewritten; a file deleted while being read stays readable to its reader. Failing to
write (a full disk, a read-only home) never fails a read.
"""

from __future__ import annotations

import atexit
import collections
import datetime as dt
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, cast

import pyarrow as pa

from hdi_lab.storage.cached import Day, Later, Result

__all__ = ["ReadCache", "Usage"]

log = logging.getLogger(__name__)

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
#: a file read this long after it was last written or touched has its modification time refreshed (LRU order)
_TOUCH_SECONDS = 1.0
#: temporary files older than this are leftovers of a killed writer
_STALE_TMP_SECONDS = 3600.0
#: bytes of days put and not yet written beyond which :meth:`ReadCache.put` writes at once (the reader waits)
_PENDING_BYTES = 256 << 20
#: the writer thread ends after this long without work (and starts again with the next put)
_IDLE_SECONDS = 10.0
#: how often the writer thread looks for days to write
_POLL_SECONDS = 0.05


#: every cache of this process, flushed (briefly) at exit
_CACHES: weakref.WeakSet[ReadCache] = weakref.WeakSet()
#: how long the exit waits for the caches' writers
_EXIT_SECONDS = 2.0


class Usage(NamedTuple):
    """What the cache folder holds: ``files`` and their ``bytes``."""

    files: int
    bytes: int


class ReadCache:
    """The cache folder ``root``, bounded to ``max_bytes`` (see the module); thread-safe, and safe to share with
    other processes. Implements :class:`hdi_lab.storage.cached.DayStore`."""

    def __init__(self, root: Path, max_bytes: int, memory_bytes: int = 0) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self.max_bytes = int(max_bytes)
        self.memory_bytes = int(memory_bytes)
        # the days last read from files and the reads last put together, kept in memory (least recently used
        # first): day -> token, rows, bytes; result -> the tokens of its days, rows, bytes
        self._memory: collections.OrderedDict[Day | Result, tuple[str | tuple[str, ...], object, int]] = (
            collections.OrderedDict()
        )
        self._held = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._written = 0  # bytes written since the last trim
        self._folders: set[Path] = set()  # folders known to exist
        # the days put and not yet written, their bytes, the writer thread (of process _pid) and whether it writes
        self._queue: collections.deque[tuple[Later, int]] = collections.deque()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._busy = False
        self._hurry = False  # flush asks the writer to write now
        _CACHES.add(self)

    def __repr__(self) -> str:
        return f"ReadCache(root={str(self.root)!r}, max_bytes={self.max_bytes}, memory_bytes={self.memory_bytes})"

    def path(self, day: Day) -> Path:
        """The file of ``day``."""
        return Path(self._file(day))

    def _file(self, day: Day) -> str:
        date = dt.date.fromordinal(_EPOCH_ORDINAL + day.day).isoformat()
        return f"{self._root}/{day.identity}/{day.table}/{day.instrument_id}/{date}.arrow"

    def get(self, day: Day, token: str, schema: pa.Schema) -> pa.RecordBatch | None:
        """The rows of ``day`` cached under ``token`` with ``schema``, None when there is no such file or it cannot
        be read: from memory when this cache read it lately, else from its file (then kept in memory, and the file's
        place in the LRU order refreshed). Raises nothing."""
        with self._lock:
            kept = self._kept(day, token)
        if kept is not None:
            return cast(pa.RecordBatch, kept)
        return self._load(day, token, schema, self._file(day))

    def get_many(self, days: Sequence[Day], tokens: Sequence[str], schema: pa.Schema) -> list[pa.RecordBatch | None]:
        """:meth:`get` of each of ``days`` under its token (in order), the folder of each instrument listed once
        rather than every missing file probed. Raises nothing."""
        out: list[pa.RecordBatch | None] = [None] * len(days)
        rest: list[int] = []
        with self._lock:
            for i, (day, token) in enumerate(zip(days, tokens, strict=True)):
                kept = self._kept(day, token)
                if kept is not None:
                    out[i] = cast(pa.RecordBatch, kept)
                else:
                    rest.append(i)
        listed: dict[str, set[str]] = {}
        for i in rest:
            folder, name = self._file(days[i]).rsplit("/", 1)
            names = listed.get(folder)
            if names is None:
                try:
                    names = listed[folder] = set(os.listdir(folder))
                except OSError:  # no folder (nothing cached of this instrument), unreadable: misses
                    names = listed[folder] = set()
            if name in names:  # a file written after the listing is read next time
                out[i] = self._load(days[i], tokens[i], schema, f"{folder}/{name}")
        return out

    def _load(self, day: Day, token: str, schema: pa.Schema, file: str) -> pa.RecordBatch | None:
        """The rows of ``day`` from its ``file`` (then kept in memory), None when it is not there or not of
        ``token`` and ``schema``."""
        try:
            data = _read(file)
        except OSError:  # not cached (or unreadable): a miss
            return None
        try:
            reader = pa.ipc.open_file(pa.py_buffer(data))
            found = reader.schema
            if (found.metadata or {}).get(b"token") != token.encode() or not found.equals(schema):
                return None
            if reader.num_record_batches == 1:
                rows = reader.get_batch(0).replace_schema_metadata(None)
            else:  # none (an empty day), or another writer's batches
                batches = reader.read_all().combine_chunks().to_batches()
                rows = batches[0].replace_schema_metadata(None) if batches else pa.RecordBatch.from_pylist([], schema)
        except (pa.ArrowException, ValueError):  # cut short or damaged: a miss, rewritten by the read
            return None
        self._remember(day, token, rows, len(data))
        return rows

    def recall(self, result: Result, tokens: Sequence[str]) -> object | None:
        """What :meth:`keep` kept of ``result`` under these ``tokens``, None when nothing (see
        :class:`hdi_lab.storage.cached.DayStore`). Raises nothing."""
        with self._lock:
            return self._kept(result, tuple(tokens))

    def _kept(self, key: Day | Result, token: str | tuple[str, ...]) -> object | None:
        """What memory holds of ``key`` under ``token`` (then the most recently used), None when nothing; with the
        lock held."""
        kept = self._memory.get(key)
        if kept is None or kept[0] != token:
            return None
        self._memory.move_to_end(key)
        return kept[1]

    def keep(self, result: Result, tokens: Sequence[str], rows: object, size: int) -> None:
        """Keep ``rows`` (``size`` bytes) as ``result`` under ``tokens`` in memory, within ``memory_bytes`` (with
        the days). Raises nothing."""
        self._remember(result, tuple(tokens), rows, size)

    def _remember(self, key: Day | Result, token: str | tuple[str, ...], rows: object, size: int) -> None:
        """Keep ``rows`` (over ``size`` bytes) in memory, the least recently used going beyond ``memory_bytes``."""
        if size > self.memory_bytes:
            return
        with self._lock:
            old = self._memory.pop(key, None)
            self._held += size - (old[2] if old else 0)
            self._memory[key] = (token, rows, size)
            while self._held > self.memory_bytes:
                _, (_, _, gone) = self._memory.popitem(last=False)
                self._held -= gone

    def put(self, day: Day, token: str, rows: pa.RecordBatch) -> None:
        """Cache the ``rows`` of ``day`` under ``token``: queued for this cache's writer thread, which looks for
        work every :data:`_POLL_SECONDS` (the read neither waits for the disk nor wakes the writer, which would make
        it hand over the interpreter lock mid-read), or written at once when the writer is :data:`_PENDING_BYTES`
        behind. Raises nothing."""
        self.put_later(lambda: [(day, token, rows)], int(rows.nbytes))

    def put_later(self, days: Later, size: int) -> None:
        """Cache the days ``days()`` gives (``size`` bytes), called by the writer thread (so the reader neither
        splits nor writes them), as :meth:`put` does; at once when the writer is :data:`_PENDING_BYTES` behind.
        Raises nothing."""
        with self._lock:
            self._adopt()
            if self._pending + size <= _PENDING_BYTES:
                self._queue.append((days, size))
                self._pending += size
                if self._thread is None:
                    self._thread = threading.Thread(target=self._drain, name="hdi-read-cache", daemon=True)
                    self._thread.start()
                return
        self._store_all(days)

    def _store_all(self, days: Later) -> None:
        """:meth:`_store` every day ``days()`` gives; a failure to make them is logged (debug) and leaves the reads
        unaffected (they are read again next time)."""
        try:
            made = list(days())
        except (pa.ArrowException, ValueError) as exc:
            log.debug("read cache: could not split days to cache: %s", exc)
            return
        for day, token, rows in made:
            self._store(day, token, rows)

    def flush(self, timeout: float | None = None) -> bool:
        """Have the writer write every day handed to :meth:`put` now, and wait until it has (or ``timeout``
        seconds); whether it has. Raises nothing."""
        with self._lock:
            self._adopt()
            self._hurry = True
            self._changed.notify_all()
            return self._changed.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _adopt(self) -> None:
        """In a forked child (under the lock): the parent's writer and its queue are not this process's."""
        if self._pid != os.getpid():
            self._queue.clear()
            self._pending, self._thread, self._busy, self._pid = 0, None, False, os.getpid()

    def _drain(self) -> None:
        """The writer thread: every :data:`_POLL_SECONDS` (at once when :meth:`flush` asks), writes the days
        queued; ends after :data:`_IDLE_SECONDS` without work."""
        idle = 0.0
        while True:
            with self._lock:
                self._changed.wait_for(lambda: self._hurry, _POLL_SECONDS)
                self._hurry = False
                if not self._queue:
                    idle += _POLL_SECONDS
                    if idle >= _IDLE_SECONDS:
                        self._thread = None
                        return
                    continue
            idle = 0.0
            while True:
                with self._lock:
                    if not self._queue:
                        break
                    days, size = self._queue.popleft()
                    self._busy = True
                try:
                    self._store_all(days)
                finally:
                    with self._lock:
                        self._pending -= size
                        self._busy = False
                        self._changed.notify_all()

    def _store(self, day: Day, token: str, rows: pa.RecordBatch) -> None:
        """Write ``day`` (whole, then renamed into place); trim the folder when this cache has written an eighth
        of its bound since it last did. A failure to write is logged (debug) and leaves the reads unaffected."""
        path = self.path(day)
        table = pa.Table.from_batches([rows]).replace_schema_metadata({b"token": token.encode()})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            size = self._write(tmp, path, table)
        except (OSError, pa.ArrowException) as exc:
            log.debug("read cache: could not write %s: %s", path, exc)
            try:
                tmp.unlink(missing_ok=True)
            except OSError as gone:
                log.debug("read cache: could not remove %s: %s", tmp, gone)
            return
        with self._lock:
            self._written += size
            due = self._written * 8 >= self.max_bytes
            if due:
                self._written = 0
        if due:
            self.trim()

    def _write(self, tmp: Path, path: Path, table: pa.Table) -> int:
        folder = path.parent
        for attempt in range(2):
            if attempt or folder not in self._folders:
                folder.mkdir(parents=True, exist_ok=True)
                self._folders.add(folder)
            try:
                with pa.OSFile(str(tmp), "wb") as sink:
                    with pa.ipc.new_file(sink, table.schema) as writer:
                        writer.write_table(table)
                    size = int(sink.tell())
                break
            except FileNotFoundError:  # the folder was removed (clear, another process): make it again once
                self._folders.discard(folder)
                if attempt:
                    raise
        os.replace(tmp, path)
        return size

    def trim(self) -> int:
        """Delete the least recently used files until the folder holds at most three quarters of the bound, if it
        holds more than the bound; also temporary files a killed writer left. Returns the files deleted. Raises
        nothing."""
        files, total = self._listing()
        if total <= self.max_bytes:
            return 0
        removed = 0
        for _, size, name in sorted(files):
            if total * 4 <= self.max_bytes * 3:
                break
            try:
                os.unlink(name)
            except FileNotFoundError:  # another process trimmed it first
                pass
            except OSError as exc:
                log.debug("read cache: could not remove %s: %s", name, exc)
                continue
            total -= size
            removed += 1
        return removed

    def usage(self) -> Usage:
        """The files the folder holds and their size. Raises nothing."""
        files, total = self._listing()
        return Usage(len(files), total)

    def clear(self) -> int:
        """Delete every cached file (of every database) and forget the days kept in memory; returns how many files.
        Raises nothing."""
        with self._lock:
            self._memory.clear()
            self._held = 0
        files, _ = self._listing()
        removed = 0
        for _, _, name in files:
            try:
                os.unlink(name)
                removed += 1
            except OSError as exc:
                log.debug("read cache: could not remove %s: %s", name, exc)
        with self._lock:
            self._folders.clear()
        return removed

    def _listing(self) -> tuple[list[tuple[float, int, str]], int]:
        """(modification time, size, path) of every cached file, and their total size; temporary files of
        killed writers are deleted on the way."""
        files: list[tuple[float, int, str]] = []
        total = 0
        now = time.time()
        for folder, _, names in os.walk(self.root):
            for name in names:
                full = os.path.join(folder, name)
                try:
                    st = os.stat(full)
                    if name.endswith(".tmp"):
                        if now - st.st_mtime > _STALE_TMP_SECONDS:
                            os.unlink(full)
                        continue
                except OSError:  # gone meanwhile (another process trimmed or renamed it)
                    continue
                if name.endswith(".arrow"):
                    files.append((st.st_mtime, st.st_size, full))
                    total += st.st_size
        return files, total


def _read(path: str) -> bytes:
    """The bytes of the file at ``path``; its modification time is refreshed when older than
    :data:`_TOUCH_SECONDS` (its place in the LRU order).

    Raises OSError (no such file, unreadable)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        parts = [os.read(fd, st.st_size)]
        while sum(map(len, parts)) < st.st_size and parts[-1]:  # reads stop at ~2 GB
            parts.append(os.read(fd, st.st_size - sum(map(len, parts))))
        if time.time() - st.st_mtime > _TOUCH_SECONDS:
            os.utime(fd)
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _flush_at_exit() -> None:
    """Give the writers of this process's caches a moment to finish (what they do not write is read again)."""
    deadline = time.monotonic() + _EXIT_SECONDS
    for cache in list(_CACHES):
        cache.flush(max(0.0, deadline - time.monotonic()))


atexit.register(_flush_at_exit)
