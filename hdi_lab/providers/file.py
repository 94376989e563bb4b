"""Local DBN files (``.dbn`` or ``.dbn.zst``).

A file up to ``file_stream_bytes`` is one chunk, keyed by its content hash, read whole. A bigger one is
ingested streaming (:mod:`hdi_lab.dbn.periods`): planning indexes it once in batches, and it becomes one chunk
per UTC day (calendar month for :data:`~hdi_lab.providers.base.SPARSE` schemas) of its records' ``ts_event``,
each keyed by the hash of its own records and read back alone, in load batches. A cut or corrupt big file
loads its periods before the fault and fails with the fault's byte offset; once the file is fixed, a re-run
skips those periods (their content, hence their keys, is the same) and loads the rest.
"""

from __future__ import annotations

import hashlib
import stat
import threading
from pathlib import Path

import databento as db
import pandas as pd

from hdi_lab.config import OPTIONS, Settings
from hdi_lab.dbn import open_store, schema_of, streamable, stype_of
from hdi_lab.dbn.periods import FileIndex, index_file, read_header
from hdi_lab.errors import DataFormatError, ValidationError
from hdi_lab.providers.base import SPARSE, CostEstimate, Fetch, LocalProvider
from hdi_lab.schemas import Chunk, IngestRequest, Schema, SType, parse_enum

__all__ = ["DEFAULT_BATCH", "DEFAULT_STREAM_BYTES", "SUFFIXES", "FileProvider", "chunk_key", "expand", "period_key"]

_DEFAULTS = {o.name: o.default for o in OPTIONS}
#: records per read when no settings are given (the ``chunk_rows`` default)
DEFAULT_BATCH: int = _DEFAULTS["chunk_rows"]
#: files above this many bytes are ingested streaming when no settings are given (``file_stream_bytes``)
DEFAULT_STREAM_BYTES: int = _DEFAULTS["file_stream_bytes"]

SUFFIXES = (".dbn", ".dbn.zst")


def chunk_key(schema: object, data: bytes) -> str:
    """A file chunk's ingest-log key: its schema and the sha256 of exactly the bytes loaded."""
    return f"file:{schema}:{hashlib.sha256(data).hexdigest()}"


def period_key(schema: object, label: str, sha256: str) -> str:
    """A streamed file's period chunk key: its schema, period and the sha256 of the metadata block followed by
    the period's records (so a re-exported or re-compressed file with the same records has the same keys)."""
    return f"file:{schema}:{label}:{sha256}"


def expand(paths: tuple[str, ...]) -> list[Path]:
    """Files named directly, plus every DBN file inside named directories (sorted).

    Raises ValidationError for a path that does not exist, is not a file, or a folder without DBN files."""
    out: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and f.name.endswith(SUFFIXES))
            if not found:
                raise ValidationError(f"{p} holds no .dbn or .dbn.zst files")
            out += found
        elif path.is_file():
            out.append(path)
        elif path.exists():
            raise ValidationError(
                f"{p} is {_kind(path)}, not a file: copy the data into a .dbn or .dbn.zst file and ingest that"
            )
        else:
            raise ValidationError(f"{p} does not exist: give the path of a .dbn or .dbn.zst file or a folder")
    return out


def _kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, in words."""
    mode = path.stat().st_mode
    kinds = {
        stat.S_ISFIFO: "a named pipe (FIFO)",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError(
            f"{path} cannot be read ({exc.strerror or exc}): check its permissions and the disk, "
            "or leave it out of the ingest"
        ) from exc


class FileProvider(LocalProvider):
    """Reads DBN files exported from Databento (or written by hdi_lab)."""

    name = "file"

    def __init__(self, settings: Settings | None = None) -> None:
        self._batch = int(settings.chunk_rows) if settings is not None else DEFAULT_BATCH
        self._stream_bytes = int(settings.file_stream_bytes) if settings is not None else DEFAULT_STREAM_BYTES
        self._lock = threading.Lock()
        self._indexes: dict[str, FileIndex] = {}  # by resolved path
        self._faults: dict[str, str] = {}  # chunk key -> the message its fetch raises

    def plan(self, request: IngestRequest) -> list[Chunk]:
        """One chunk per file, keyed by its content hash and described by its header; a file over
        ``file_stream_bytes``: one chunk per period of its records (see the module docstring).

        Raises ValidationError without paths, with start/end, or when a file's schema or dataset is not the
        requested one; DataFormatError when a file is not readable DBN."""
        if not request.paths:
            raise ValidationError("the file provider needs at least one path: hdi ingest --provider file PATH")
        if request.start is not None or request.end is not None:
            raise ValidationError("a DBN file carries its own time range: drop start/end for the file provider")
        chunks = []
        for path in expand(request.paths):
            if not path.is_file():
                raise ValidationError(f"{path} does not exist: give the path of a .dbn or .dbn.zst file")
            if path.stat().st_size > self._stream_bytes:
                _, head = read_header(path, str(path))
                if streamable(head, schema_of(head, str(path))):
                    chunks += self._plan_stream(request, path, head)
                    continue
            data = _read(path)  # read once: the content hash keys the chunk, the header plans it
            store = open_store(data, str(path))
            schema = self._check(request, path, store)
            meta = store.metadata
            end = meta.end or meta.start + 1
            chunks.append(
                Chunk(
                    key=chunk_key(schema, data),
                    provider=self.name,
                    dataset=str(store.dataset),
                    schema=schema,
                    stype_in=parse_enum(SType, stype_of(meta), "stype_in"),
                    symbols=tuple(store.symbols or ()),
                    start=pd.Timestamp(meta.start, unit="ns", tz="UTC"),
                    end=pd.Timestamp(end, unit="ns", tz="UTC"),
                    path=str(path.resolve()),
                )
            )
        return chunks

    @staticmethod
    def _check(request: IngestRequest, path: Path, store: db.DBNStore) -> Schema:
        schema = schema_of(store, str(path))
        if request.schema is not None and request.schema != schema:
            raise ValidationError(f"{path} holds {schema}, not the requested {request.schema}")
        if request.dataset and request.dataset != store.dataset:
            raise ValidationError(f"{path} is from {store.dataset}, not the requested {request.dataset}")
        return schema

    def _index(self, path: Path, schema: Schema) -> FileIndex:
        resolved = str(path.resolve())
        index = index_file(path, str(path), monthly=schema in SPARSE, batch=self._batch)
        with self._lock:
            old = self._indexes.pop(resolved, None)
            self._indexes[resolved] = index
        if old is not None:
            old.close()
        return index

    def _plan_stream(self, request: IngestRequest, path: Path, head: db.DBNStore) -> list[Chunk]:
        schema = self._check(request, path, head)
        index = self._index(path, schema)
        meta = head.metadata
        whole = (
            pd.Timestamp(meta.start, unit="ns", tz="UTC"),
            pd.Timestamp(meta.end or meta.start + 1, unit="ns", tz="UTC"),
        )
        common = dict(
            bounds=whole,
            provider=self.name,
            dataset=str(head.dataset),
            schema=schema,
            stype_in=parse_enum(SType, stype_of(meta), "stype_in"),
            symbols=tuple(head.symbols or ()),
            path=str(path.resolve()),
        )
        chunks = [
            Chunk(
                key=period_key(schema, p.label, p.sha256),
                start=pd.Timestamp(p.start, unit="ns", tz="UTC"),
                end=pd.Timestamp(p.end, unit="ns", tz="UTC"),
                **common,  # type: ignore[arg-type]
            )
            for p in index.periods
        ]
        if index.fault is not None:  # the rest of the file, from the period the fault is in: it fails alone
            start, end = (chunks[-1].end if chunks else whole[0]), whole[1]
            key = f"file:{schema}:fault:{hashlib.sha256(index.header).hexdigest()}:{index.fault.offset}"
            self._faults[key] = index.fault.message
            chunks.append(Chunk(key=key, start=start, end=max(start, end), **common))  # type: ignore[arg-type]
        return chunks

    def fetch(self, chunk: Chunk) -> Fetch:
        """The bytes the chunk was planned for: the log key must describe what is loaded.

        Raises DataFormatError when the file was removed or changed since it was planned, or (a streamed
        file's last chunk) is cut or corrupt there."""
        assert chunk.path is not None
        path = Path(chunk.path)
        if not path.is_file():
            raise DataFormatError(
                f"{path} was removed while it was being ingested: nothing from it was stored; "
                "put it back or re-run hdi ingest without it"
            )
        if chunk.key.count(":") > 2:  # a streamed file's chunk (a whole file's key is file:SCHEMA:SHA256)
            yield self._period(path, chunk)
            return
        data = _read(path)
        key = chunk_key(chunk.schema, data)
        if key != chunk.key:
            planned, now = chunk.key.rsplit(":", 1)[-1], key.rsplit(":", 1)[-1]
            raise DataFormatError(
                f"{path} changed while it was being ingested (planned sha256 {planned[:16]}..., now {now[:16]}...): "
                "nothing from it was stored; re-run hdi ingest"
            )
        yield open_store(data, str(path))

    def _period(self, path: Path, chunk: Chunk) -> db.DBNStore:
        """The store of a streamed file's period chunk. Raises DataFormatError (see :meth:`fetch`)."""
        with self._lock:
            index = self._indexes.get(chunk.path or "")
            fault = self._faults.get(chunk.key)
        if fault is not None:
            raise DataFormatError(fault)
        if index is None:  # planned by another provider (another process): index the file here
            index = self._index(path, chunk.schema)
            if index.fault is not None and chunk.key.split(":")[2] == "fault":
                raise DataFormatError(index.fault.message)
        st = path.stat()
        keys = [period_key(chunk.schema, p.label, p.sha256) for p in index.periods]
        if (st.st_size, st.st_mtime_ns) != index.stat or chunk.key not in keys:
            raise DataFormatError(
                f"{path} changed while it was being ingested (it is not what was planned): nothing of this "
                "part was stored; re-run hdi ingest"
            )
        return index.store(keys.index(chunk.key), self._batch)

    def estimate(self, chunk: Chunk) -> CostEstimate:
        assert chunk.path is not None
        with self._lock:
            index = self._indexes.get(chunk.path)
        if index is not None:
            for p in index.periods:
                if period_key(chunk.schema, p.label, p.sha256) == chunk.key:
                    return CostEstimate(chunk, records=p.records, bytes=p.records * index.dtype.itemsize, cost_usd=0.0)
        size = Path(chunk.path).stat().st_size
        return CostEstimate(chunk, records=None, bytes=size, cost_usd=0.0)

    def close(self) -> None:
        """Close the files left open between the periods of streamed files. Raises nothing."""
        with self._lock:
            indexes, self._indexes = list(self._indexes.values()), {}
        for index in indexes:
            index.close()
