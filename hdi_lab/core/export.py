"""Export stored rows as files other tools read as they are: Hive-partitioned Parquet, Arrow IPC or CSV.

``OUT/date=YYYY-MM-DD/symbol=SYMBOL/part-0.parquet`` (``.arrow``, ``.csv``): one file per UTC day of ``ts_event`` and
requested symbol. Each file holds the rows :func:`hdi_lab.query` returns for that symbol and day, with
``ts_event`` as a column:

- ``ts_event`` and ``ts_recv`` as ``timestamp[ns, tz=UTC]`` (exact nanoseconds);
- every price twice: ``close`` as float64 (UNDEF_PRICE as NaN, as ``query`` shows it) and ``close_fixed`` as the
  exact int64 fixed-point value (1e-9 units, UNDEF_PRICE kept), as stored;
- the symbology and instrument columns: ``symbol`` (the symbol asked for, e.g. ``ES.c.0``, also inside the file so
  its type never depends on a reader's guess from the path) and ``instrument_id`` (the contract it meant that
  day), ``publisher_id``.

The ``date`` and ``symbol`` partition values come from the path: the symbol percent-encoded (``A/B`` ->
``symbol=A%2FB``; ``ES.c.0`` and ``BRK.B`` unchanged), which DuckDB, Polars and pyarrow decode. A symbol that looks
like a number (an ``instrument_id`` request) is typed as one by DuckDB's and pyarrow's partition inference: read
such a dataset with :func:`partitioning` (pyarrow) or ``hive_types={'symbol': 'VARCHAR'}`` (DuckDB).

Bounded memory: rows are read and written one UTC day at a time. Atomic: every file is first written to a
staging folder beside ``OUT`` (never inside it, so readers of ``OUT`` see no file being written) and moved into
place only once the whole export has been written, one ``rename`` per partition; a failed or interrupted export
leaves ``OUT`` as it was (and no staging folder). Idempotent: exporting the same request again replaces its
partitions (the day-and-symbol partitions of the range and symbols, in that format), and removes those that no
longer have rows. A partition holds the rows of its day *within [start, end)*: export whole days to keep whole
days.

CSV files carry ISO 8601 UTC timestamps with nanoseconds (``2024-01-02T14:30:00.000000123Z``) and floats in
their shortest exact form.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from hdi_lab.core import retrieval, sessions
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import ExportFormat, Progress, Schema, parse_enum, parse_range, require_symbols
from hdi_lab.storage import read
from hdi_lab.storage.symbology import Span

__all__ = ["ExportProgress", "ExportReport", "export", "partition_path", "partitioning"]

#: called once before the first day (``done`` 0) and after each day is written (``rows`` so far)
ExportProgress = Callable[[Progress], None]

_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: ``rows`` in ``files`` partitions under ``path``; ``removed`` partitions of the
    request that no longer have rows (a re-export); ``days`` with rows."""

    path: Path
    format: ExportFormat
    schema: Schema
    rows: int
    files: int
    removed: int
    days: int
    seconds: float

    def __str__(self) -> str:
        removed = f", {self.removed} emptied partitions removed" if self.removed else ""
        rate = f", {self.rows / self.seconds:,.0f} rows/s" if self.seconds > 0 else ""
        return (
            f"exported {self.rows:,} {self.schema} rows to {self.files} {self.format} partition(s) on "
            f"{self.days} day(s) in {self.path}{removed} ({self.seconds:.2f} s{rate})"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython shows the summary line
        p.text(str(self))


def partition_path(day: dt.date, symbol: str) -> str:
    """``date=YYYY-MM-DD/symbol=...``: the partition folder of ``day`` and ``symbol``, relative to the output.

    The symbol is percent-encoded except letters, digits and ``_.-~`` (``A/B`` -> ``A%2FB``), as Hive, pyarrow,
    DuckDB and Polars decode it. Raises nothing."""
    return f"date={day.isoformat()}/symbol={urllib.parse.quote(symbol, safe='')}"


def _file(day: dt.date, symbol: str, fmt: ExportFormat) -> str:
    """The file of ``day`` and ``symbol`` in ``fmt``, relative to the output."""
    return f"{partition_path(day, symbol)}/part-0.{fmt.value}"


def partitioning() -> Any:
    """The ``pyarrow.dataset`` partitioning of an export: ``date`` as date32, ``symbol`` as string whatever the
    values look like. ``pyarrow.dataset.dataset(path, partitioning=partitioning())``. Raises nothing."""
    import pyarrow.dataset as ds

    return ds.partitioning(pa.schema([("date", pa.date32()), ("symbol", pa.string())]), flavor="hive")


def export(
    session: HdiSession,
    schema: str | Schema,
    symbols: str | Sequence[str],
    start: object,
    end: object,
    path: str | os.PathLike[str],
    *,
    format: str | ExportFormat = ExportFormat.PARQUET,  # noqa: A002  (the word users write: hdi export --format)
    dataset: str | None = None,
    progress: ExportProgress | None = None,
) -> ExportReport:
    """Write the stored rows of ``schema`` for ``symbols`` in ``[start, end)`` under the folder ``path``, one
    file per UTC day and symbol (see the module's documentation for the layout, columns and guarantees).

    Raises ValidationError (a bad schema, format, range or symbol; the definition schema; ``path`` is a file or
    a file is in the way of a partition; nothing stored for the request; a file that cannot be written),
    StorageError, MissingDependency, and ProviderError when auto-discovery asks Databento and it fails.
    """
    began = time.perf_counter()
    fmt = parse_enum(ExportFormat, format, "format")
    sch = parse_enum(Schema, schema, "schema")
    if sch is Schema.DEFINITION:
        raise ValidationError(
            "definitions are not exported: export market data (bars, trades, tbbo, statistics) and read "
            "definitions with query('definition', ...)"
        )
    syms = require_symbols(symbols)
    lo, hi = parse_range(start, end)
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ValidationError(f"output {out} is a file: give a folder (the partitions date=.../symbol=... go in it)")
    spans = retrieval.resolve(session, syms, lo, hi, dataset)
    staging = _staging(out)
    try:
        written: dict[str, int] = {}
        days, total = 0, len(list(_day_range(lo, hi)))
        if progress is not None:
            progress(Progress(0, total, 0))
        for i, (day, table) in enumerate(_days(session, sch, spans, syms, lo, hi)):
            counts = _write_day(table, day, syms, staging, fmt)
            written.update(counts)
            days += bool(counts)
            if progress is not None:
                progress(Progress(i + 1, total, sum(written.values())))
        rows = sum(written.values())
        if not rows:
            raise ValidationError(
                f"nothing stored for {sch} {', '.join(syms)} in [{lo.isoformat()}, {hi.isoformat()}): "
                "ingest it first (hdi ingest / %hdi_ingest; hdi status shows what is stored)"
            )
        stale = [
            rel
            for d in _day_range(lo, hi)
            for sym in syms
            if (rel := _file(d, sym, fmt)) not in written and (out / rel).is_file()
        ]
        _check_targets(out, [*written, *stale])
        for rel in written:  # the whole export is written: move it in, one rename per partition
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)
        for rel in stale:
            (out / rel).unlink()
            _remove_empty(out, (out / rel).parent)
    except OSError as exc:
        reason = exc.strerror or str(exc).splitlines()[0]
        where = f" ({exc.filename})" if exc.filename else ""
        raise ValidationError(f"export to {out} failed: {reason}{where}: choose another folder") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportReport(out, fmt, sch, rows, len(written), len(stale), days, time.perf_counter() - began)


def _staging(out: Path) -> Path:
    """A new folder beside ``out`` (in its nearest existing ancestor), on the same file system so that a
    rename moves each file in; readers of ``out`` never see it."""
    base = out.absolute().parent
    while not base.exists():
        base = base.parent
    staging = base / f".{out.name or 'export'}.hdi-export-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ValidationError(f"cannot write beside {out} ({reason}: {base}): choose another folder") from exc
    return staging


def _day_range(lo: pd.Timestamp, hi: pd.Timestamp) -> Iterator[dt.date]:
    day = lo.floor("D")
    while day < hi:
        yield day.date()
        day += _DAY


def _days(
    session: HdiSession,
    sch: Schema,
    spans: list[Span],
    syms: tuple[str, ...],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
) -> Iterator[tuple[dt.date, pa.Table | None]]:
    """Each UTC day's rows as one Arrow table (float and fixed prices; None: no symbol listed that day), read
    day by day: memory holds a day."""
    for day in _day_range(lo, hi):
        day_lo = max(lo, pd.Timestamp(day, tz="UTC"))
        day_hi = min(hi, day_lo.floor("D") + _DAY)
        clipped = [
            Span(sp.symbol, sp.dataset, sp.instrument_id, max(sp.lo, day_lo), min(sp.hi, day_hi))
            for sp in spans
            if sp.lo < day_hi and sp.hi > day_lo
        ]
        table = read.query_arrow(
            session.connection(), session.schema, sch, clipped, syms, day_lo, day_hi, "float", None, None,
            fixed_too=True,
        ) if clipped else None  # fmt: skip
        if table is not None and sch.is_bar:  # each bar's trading session, as a query gives it
            table = table.append_column(sessions.COLUMN, retrieval.session_column(session, table, sch.bar_seconds))
        yield day, table


def _write_day(
    table: pa.Table | None, day: dt.date, syms: tuple[str, ...], staging: Path, fmt: ExportFormat
) -> dict[str, int]:
    """Write each symbol's rows of ``table`` (in query order) to its partition under ``staging``; returns the
    relative path of each file written and its rows."""
    if table is None or not table.num_rows:
        return {}
    import pyarrow.compute as pc

    codes = pc.index_in(table.column("symbol"), value_set=pa.array(syms, type=pa.string())).to_numpy()
    order = np.argsort(codes, kind="stable")  # by symbol, each symbol's rows kept in query order
    counts = np.bincount(codes, minlength=len(syms))
    table = table.take(pa.array(order))
    written: dict[str, int] = {}
    offset = 0
    for i, sym in enumerate(syms):
        n = int(counts[i])
        if n:
            rel = _file(day, sym, fmt)
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            part = table.slice(offset, n)
            _write(part.replace_schema_metadata(_metadata(day, sym)), target, fmt)
            written[rel] = n
        offset += n
    return written


def _metadata(day: dt.date, symbol: str) -> dict[str, str]:
    return {"hdi_lab": json.dumps({"date": day.isoformat(), "symbol": symbol, "price_scale": 1e-9})}


def _write(table: pa.Table, target: Path, fmt: ExportFormat) -> None:
    if fmt is ExportFormat.PARQUET:
        import pyarrow.parquet as pq

        pq.write_table(table, target, compression="zstd")
    elif fmt is ExportFormat.ARROW:
        from pyarrow import feather

        feather.write_feather(table, target, compression="uncompressed")
    else:
        import pyarrow.compute as pc
        from pyarrow import csv

        for i, field in enumerate(table.schema):  # ISO 8601 UTC with nanoseconds: 2024-01-02T14:30:00.000000123Z
            if pa.types.is_timestamp(field.type):
                table = table.set_column(i, field.name, pc.strftime(table.column(i), format="%Y-%m-%dT%H:%M:%SZ"))
        csv.write_csv(table, target)


def _check_targets(out: Path, files: Sequence[str]) -> None:
    """Refuse before moving anything when a file stands where a partition folder (or a folder where a
    partition file) goes: the export then changes nothing."""
    checked: set[Path] = set()
    for rel in files:
        target = out / rel
        if target.exists() and not target.is_file():
            raise ValidationError(f"{target} is not a file: move it away and export again")
        for folder in [out, *(out / p for p in _prefixes(rel))]:
            if folder not in checked:
                checked.add(folder)
                if folder.exists() and not folder.is_dir():
                    raise ValidationError(f"{folder} is a file where a partition folder goes: move it away")


def _prefixes(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _remove_empty(out: Path, folder: Path) -> None:
    """Remove ``folder`` and its parents up to ``out`` while they are empty."""
    while folder != out and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
