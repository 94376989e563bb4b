"""Local DBN files (``.dbn`` or ``.dbn.zst``): one chunk per file, keyed by its content hash."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pandas as pd

from hdi_lab.dbn import open_store, schema_of, stype_of
from hdi_lab.errors import DataFormatError, ValidationError
from hdi_lab.providers.base import CostEstimate, Fetch, LocalProvider
from hdi_lab.schemas import Chunk, IngestRequest, SType, parse_enum

__all__ = ["SUFFIXES", "FileProvider", "chunk_key", "expand"]

SUFFIXES = (".dbn", ".dbn.zst")


def chunk_key(schema: object, data: bytes) -> str:
    """A file chunk's ingest-log key: its schema and the sha256 of exactly the bytes loaded."""
    return f"file:{schema}:{hashlib.sha256(data).hexdigest()}"


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

    def plan(self, request: IngestRequest) -> list[Chunk]:
        """One chunk per file, keyed by its content hash and described by its DBN header.

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
            data = _read(path)  # read once: the content hash keys the chunk, the header plans it
            store = open_store(data, str(path))
            schema = schema_of(store, str(path))
            if request.schema is not None and request.schema != schema:
                raise ValidationError(f"{path} holds {schema}, not the requested {request.schema}")
            if request.dataset and request.dataset != store.dataset:
                raise ValidationError(f"{path} is from {store.dataset}, not the requested {request.dataset}")
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

    def fetch(self, chunk: Chunk) -> Fetch:
        """The bytes the chunk was planned for, read once: the log key must describe what is loaded.

        Raises DataFormatError when the file was removed or changed since it was planned."""
        assert chunk.path is not None
        path = Path(chunk.path)
        if not path.is_file():
            raise DataFormatError(
                f"{path} was removed while it was being ingested: nothing from it was stored; "
                "put it back or re-run hdi ingest without it"
            )
        data = _read(path)
        key = chunk_key(chunk.schema, data)
        if key != chunk.key:
            planned, now = chunk.key.rsplit(":", 1)[-1], key.rsplit(":", 1)[-1]
            raise DataFormatError(
                f"{path} changed while it was being ingested (planned sha256 {planned[:16]}..., now {now[:16]}...): "
                "nothing from it was stored; re-run hdi ingest"
            )
        yield open_store(data, str(path))

    def estimate(self, chunk: Chunk) -> CostEstimate:
        assert chunk.path is not None
        size = Path(chunk.path).stat().st_size
        return CostEstimate(chunk, records=None, bytes=size, cost_usd=0.0)
