"""Typed records shared by every layer: schemas, requests, chunks and reports."""

from __future__ import annotations

import datetime as dt
import enum
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias, get_args

from hdi_lab.errors import ValidationError

if TYPE_CHECKING:  # pandas is imported on first use: `%load_ext hdi_lab` must stay fast
    import pandas as pd

__all__ = [
    "ADJUSTS",
    "ALIGNS",
    "DAY_NS",
    "EXPORT_FORMATS",
    "INTERVALS",
    "ONLY_FROM",
    "OUTPUTS",
    "PRICE_TYPES",
    "ROLLS",
    "SCHEMAS",
    "TIME_RANGE",
    "VIEWS",
    "Adjust",
    "Chunk",
    "ChunkResult",
    "ExportFormat",
    "IngestReport",
    "IngestRequest",
    "Output",
    "PriceType",
    "Progress",
    "Roll",
    "SType",
    "Schema",
    "View",
    "check_interval",
    "check_provided",
    "parse_enum",
    "parse_range",
    "parse_symbols",
    "parse_time",
    "require_symbols",
    "utc_date",
    "utc_days",
    "whole_number",
]

#: nanoseconds in a day (a UTC day: the unit of day chunks, symbology dates and daily bars)
DAY_NS = 86_400_000_000_000
#: prices as floats, or int64 fixed-point (1e-9) with UNDEF_PRICE as in DBN
PriceType: TypeAlias = Literal["float", "fixed"]
#: the values of :data:`PriceType`
PRICE_TYPES: tuple[str, ...] = get_args(PriceType)


class Schema(enum.StrEnum):
    """The market-data schemas hdi_lab stores (Databento's names)."""

    OHLCV_1S = "ohlcv-1s"
    OHLCV_5S = "ohlcv-5s"  # IB's 5-second bars (real-time and historical); Databento has none: see ONLY_FROM
    OHLCV_1M = "ohlcv-1m"
    OHLCV_1H = "ohlcv-1h"
    OHLCV_1D = "ohlcv-1d"
    TRADES = "trades"
    TBBO = "tbbo"
    STATISTICS = "statistics"
    DEFINITION = "definition"

    @property
    def table(self) -> str:
        """The table that holds this schema's rows."""
        return "instruments" if self is Schema.DEFINITION else self.value.replace("-", "_")

    @property
    def is_bar(self) -> bool:
        return self.value.startswith("ohlcv-")

    @property
    def bar_seconds(self) -> int:
        """Bar length in seconds (bars only)."""
        return {"1s": 1, "5s": 5, "1m": 60, "1h": 3600, "1d": 86400}[self.value.split("-")[1]]


#: every schema's name, in the enum's order: what the front ends offer and the errors list
SCHEMAS: tuple[str, ...] = tuple(s.value for s in Schema)

#: the schemas only some providers serve, and which (the others refuse them, naming these)
ONLY_FROM: dict[Schema, tuple[str, ...]] = {Schema.OHLCV_5S: ("ib",)}


def check_provided(schema: Schema, provider: str) -> Schema:
    """``schema`` when ``provider`` serves it (every provider serves the schemas not in :data:`ONLY_FROM`).

    Raises ValidationError naming the providers that have it otherwise."""
    who = ONLY_FROM.get(schema)
    if who is None or provider in who:
        return schema
    hint = ""
    if schema.is_bar:  # a finer bar schema the provider has, rolled up at query time
        finer = [s for s in Schema if s.is_bar and s not in ONLY_FROM and s.bar_seconds < schema.bar_seconds]
        if finer:
            hint = f"; or ingest {finer[-1]} and query it with interval='{schema.value.removeprefix('ohlcv-')}'"
    raise ValidationError(
        f"schema={schema} is not available from the {provider} provider: only the {' or '.join(who)} provider has "
        f"it (--provider {who[0]}){hint}"
    )


class SType(enum.StrEnum):
    """How requested symbols are interpreted."""

    RAW_SYMBOL = "raw_symbol"
    PARENT = "parent"
    CONTINUOUS = "continuous"
    INSTRUMENT_ID = "instrument_id"


class Roll(enum.StrEnum):
    """How a continuous future picks its contract on each session (see :mod:`hdi_lab.core.continuous`)."""

    CALENDAR = "calendar"  # front by expiration, ``offset`` sessions before the last trade session
    VOLUME = "volume"  # the highest prior-session volume
    OPEN_INTEREST = "open_interest"  # the highest prior-session open interest (statistics schema)


#: every roll rule's name: what the front ends offer and the errors list
ROLLS: tuple[str, ...] = tuple(r.value for r in Roll)


class Adjust(enum.StrEnum):
    """How a continuous future's prices are back-adjusted at its rolls."""

    NONE = "none"  # raw prices of each contract
    DIFFERENCE = "difference"  # add the later rolls' price gaps
    RATIO = "ratio"  # multiply by the later rolls' price ratios


#: every adjustment's name: what the front ends offer and the errors list
ADJUSTS: tuple[str, ...] = tuple(a.value for a in Adjust)


class Output(enum.StrEnum):
    """What ``query`` returns: a pandas DataFrame, a ``pyarrow.Table`` or a Polars DataFrame."""

    PANDAS = "pandas"
    ARROW = "arrow"
    POLARS = "polars"


#: every query output's name: what the errors list
OUTPUTS: tuple[str, ...] = tuple(o.value for o in Output)


class ExportFormat(enum.StrEnum):
    """The file format of an export: one file per (date, symbol) partition."""

    PARQUET = "parquet"
    ARROW = "arrow"  # Arrow IPC files (Feather v2)
    CSV = "csv"


#: every export format's name: what the front ends offer and the errors list
EXPORT_FORMATS: tuple[str, ...] = tuple(f.value for f in ExportFormat)


class View(enum.StrEnum):
    """Which back-adjustment a value computed over an adjusted continuous series uses (feature sets)."""

    RESEARCH = "research"  # one adjustment, from the latest roll of the computed range: changes at a new roll
    AS_OF = "as_of"  # each bar with the adjustment known at its time: a stored value never changes later


#: every view's name: what the front ends offer and the errors list
VIEWS: tuple[str, ...] = tuple(v.value for v in View)


def parse_enum[E: enum.Enum](kind: type[E], value: object, param: str) -> E:
    """Coerce ``value`` to ``kind`` or raise an error naming ``param`` and the allowed values."""
    if isinstance(value, kind):
        return value
    try:
        return kind(str(value).strip().lower())
    except ValueError:
        allowed = ", ".join(str(m.value) for m in kind)
        raise ValidationError(f"{param}={value!r} is not valid: use one of {allowed}") from None


#: what a nanosecond timestamp (DBN, pandas) can hold, as stated in messages
TIME_RANGE = "1677-09-22 to 2262-04-11"


def parse_time(value: object, param: str) -> pd.Timestamp:
    """Parse a date or timestamp into a tz-aware UTC nanosecond ``Timestamp``.

    Raises ValidationError (naming ``param``) when ``value`` is missing, not a date or timestamp, or outside
    :data:`TIME_RANGE`."""
    import pandas as pd

    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValidationError(f"{param} is required: give a date like 2024-01-02 or an ISO timestamp")
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ValidationError(
            f"{param}={value!r} is not a date or timestamp: use a form like 2024-01-02 or 2024-01-02T14:30:00Z"
        ) from exc
    if ts is pd.NaT:
        raise ValidationError(f"{param}={value!r} is not a date or timestamp")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    try:
        return ts.as_unit("ns")
    except (OverflowError, ValueError):  # pandas' OutOfBoundsDatetime is a ValueError
        raise ValidationError(
            f"{param}={value!r} is outside the range of nanosecond timestamps ({TIME_RANGE}): give a date within it"
        ) from None


def parse_range(start: object, end: object) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Parse a half-open ``[start, end)`` range and check that start < end.

    Raises ValidationError when either bound does not parse (:func:`parse_time`) or start is not before end."""
    s, e = parse_time(start, "start"), parse_time(end, "end")
    if s >= e:
        raise ValidationError(
            f"start ({s.isoformat()}) must be before end ({e.isoformat()}): the range is [start, end)"
        )
    return s, e


#: bar interval -> seconds: the intervals feature sets are computed at (1s/5s/1m/1h/1d are stored tables, 5s holding
#: IB's 5-second bars; 5m/15m are rolled up from ohlcv-1m). The one list of feature interval names: the CLI's and the
#: magics' help show it.
INTERVALS: dict[str, int] = {"1s": 1, "5s": 5, "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86_400}
#: how bar queries bucket and select (``align=``): on midnight UTC (the default) or on the exchange's trading
#: sessions (:mod:`hdi_lab.core.sessions`)
ALIGNS: tuple[str, ...] = ("utc", "session")


def check_interval(interval: str) -> str:
    """``interval`` if it is one of :data:`INTERVALS`; raises :class:`ValidationError` otherwise."""
    if interval not in INTERVALS:
        raise ValidationError(f"interval={interval!r} is not valid: use one of {', '.join(INTERVALS)}")
    return interval


def require_symbols(symbols: str | Sequence[str] | None, hint: str = "e.g. ESH4 or ES.c.0") -> tuple[str, ...]:
    """:func:`parse_symbols` of ``symbols``.

    Raises ValidationError when none are given (``hint`` ends the message)."""
    syms = parse_symbols(symbols)
    if not syms:
        raise ValidationError(f"symbols is required: give one or more symbols, {hint}")
    return syms


def parse_symbols(symbols: str | Sequence[str] | None) -> tuple[str, ...]:
    """Split a comma-separated string or a sequence into a tuple of stripped symbols."""
    if symbols is None:
        return ()
    items = symbols.split(",") if isinstance(symbols, str) else list(symbols)
    return tuple(dict.fromkeys(str(s).strip() for s in items if str(s).strip()))


@dataclass(frozen=True)
class IngestRequest:
    """What to ingest. Front ends build one and pass it to :func:`hdi_lab.core.ingestion.run`."""

    provider: str
    schema: Schema | None = None
    dataset: str | None = None
    symbols: tuple[str, ...] = ()
    stype_in: SType = SType.RAW_SYMBOL
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    paths: tuple[str, ...] = ()
    force: bool = False
    dry_run: bool = False
    allow_cost: bool = False  # run even when the estimated cost exceeds the configured limit


@dataclass(frozen=True)
class Chunk:
    """One independent, idempotent unit of ingestion."""

    key: str
    provider: str
    dataset: str
    schema: Schema
    stype_in: SType
    symbols: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp
    path: str | None = None
    companion: bool = False  # fetched along with the requested data (the instruments' definitions)
    # the [start, end) its records are validated against when not its own: a period of a streamed file is
    # checked against the file's whole range (its records near midnight may be received the next day)
    bounds: tuple[pd.Timestamp, pd.Timestamp] | None = None

    @property
    def request(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """The ``[start, end)`` the chunk's records must fall in (:attr:`bounds`, else its own)."""
        return self.bounds or (self.start, self.end)

    def describe(self) -> str:
        what = self.path or ",".join(self.symbols)
        return f"{self.dataset} {self.schema} {what} [{self.start:%Y-%m-%d %H:%M}, {self.end:%Y-%m-%d %H:%M})"


@dataclass(frozen=True)
class ChunkResult:
    """Counts for one chunk, as written to the ingest log."""

    chunk: Chunk
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    duplicates: int = 0
    quarantined: int = 0
    deleted: int = 0  # stored rows of the chunk's range that its (revised) data no longer has
    recovered: int = 0  # quarantined records (of earlier chunks) whose instrument this chunk made known, now loaded
    seconds: float = 0.0
    skipped: bool = False
    est_bytes: int | None = None  # dry runs: the provider's size estimate
    cost_usd: float | None = None  # the vendor's estimated cost of the chunk (dry runs and runs; None: unknown)
    est_start_s: float | None = None  # dry runs: earliest start under the provider's pacing (IB)
    warnings: tuple[str, ...] = ()  # e.g. symbols the provider could not resolve (partial resolution)
    error: str | None = None  # why the chunk failed (nothing of it was stored)
    # instrument id -> ts_event (ns) of the first of its rows the chunk inserted, updated or deleted (none: empty)
    changed: dict[int, int] = field(default_factory=dict)
    # instrument id -> rows the chunk's range held right after it (its data's and its symbols' instruments)
    held: dict[int, int] | None = None

    @property
    def outcome(self) -> str:
        """One line: what became of the chunk (loaded, already done, or failed and why)."""
        what = self.chunk.path or self.chunk.describe()
        if self.error is not None:
            return f"failed: {what}: {self.error}"
        if self.skipped:
            return f"already done: {what}"
        return (
            f"loaded: {what}: fetched {self.fetched}, inserted {self.inserted}, updated {self.updated}, "
            f"duplicates {self.duplicates}, quarantined {self.quarantined}, deleted {self.deleted}"
            + (f", recovered from quarantine {self.recovered}" if self.recovered else "")
        )


@dataclass
class IngestReport:
    """The outcome of an ingest: counts summed over chunks."""

    provider: str
    schema: str
    chunks: list[ChunkResult] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    def _sum(self, name: str) -> int:
        """Total over the requested data's chunks (companion definitions are counted in ``definitions``)."""
        return int(sum(getattr(c, name) for c in self.chunks if not c.chunk.companion))

    @property
    def definitions(self) -> int:
        """Instrument definitions stored (new or changed) along with the requested data."""
        return int(sum(c.inserted + c.updated for c in self.chunks if c.chunk.companion))

    @property
    def fetched(self) -> int:
        return self._sum("fetched")

    @property
    def inserted(self) -> int:
        return self._sum("inserted")

    @property
    def updated(self) -> int:
        return self._sum("updated")

    @property
    def duplicates(self) -> int:
        return self._sum("duplicates")

    @property
    def deleted(self) -> int:
        return self._sum("deleted")

    @property
    def quarantined(self) -> int:
        return self._sum("quarantined")

    @property
    def recovered(self) -> int:
        """Quarantine entries resolved because the ingest made their instrument known (companions included)."""
        return int(sum(c.recovered for c in self.chunks))

    @property
    def chunks_skipped(self) -> int:
        return sum(1 for c in self.chunks if c.skipped)

    @property
    def failed(self) -> list[ChunkResult]:
        """Chunks that failed (nothing of them was stored)."""
        return [c for c in self.chunks if c.error is not None]

    def failure_message(self) -> str:
        """One line for a run with failed chunks: how many, the first reason, what was stored, what to do."""
        failed = self.failed
        paths = [c.chunk.path for c in self.chunks]
        unit = "files" if all(paths) and len(set(paths)) == len(paths) else "chunks"  # a big file has several
        others = len(self.chunks) - len(failed)
        before = self.chunks_skipped
        stored = (
            f"the other {others} were loaded"
            if before == 0
            else f"the other {others} are stored ({others - before} loaded now, {before} already done)"
        )
        more = f" (and {len(failed) - 1} more, listed in the report)" if len(failed) > 1 else ""
        return (
            f"{len(failed)} of {len(self.chunks)} {unit} failed: {failed[0].error}{more}; "
            f"{stored if others else 'nothing was loaded'}; fix or remove the failed "
            f"{unit[:-1] if len(failed) == 1 else unit} and re-run (what is stored is skipped)"
        )

    @property
    def warnings(self) -> list[str]:
        """Distinct warnings of all chunks (e.g. unresolved symbols), in order of appearance."""
        return list(dict.fromkeys(w for c in self.chunks for w in c.warnings))

    @property
    def cost_usd(self) -> float | None:
        """The estimated cost of the chunks (a dry run's, or what a run fetched), None when the provider gives
        none."""
        costs = [c.cost_usd for c in self.chunks if c.cost_usd is not None]
        return float(sum(costs)) if costs else None

    @property
    def min_duration_s(self) -> float | None:
        """Dry runs of paced providers (IB): the earliest time the last chunk can start."""
        starts = [c.est_start_s for c in self.chunks if c.est_start_s is not None]
        return max(starts) if starts else None

    @property
    def rows_per_second(self) -> float:
        return self.fetched / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, object]:
        if self.dry_run:
            return {
                "provider": self.provider,
                "schema": self.schema,
                "chunks": len(self.chunks),
                "chunks_skipped": self.chunks_skipped,
                "est_records": self.fetched,
                "est_cost_usd": self.cost_usd,
                **({"min_duration_s": round(self.min_duration_s, 1)} if self.min_duration_s is not None else {}),
                "seconds": round(self.seconds, 3),
            }
        return {
            "provider": self.provider,
            "schema": self.schema,
            "chunks": len(self.chunks),
            "chunks_skipped": self.chunks_skipped,
            **({"chunks_failed": len(self.failed)} if self.failed else {}),
            "fetched": self.fetched,
            "inserted": self.inserted,
            "updated": self.updated,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "deleted": self.deleted,
            **({"definitions": self.definitions} if any(c.chunk.companion for c in self.chunks) else {}),
            **({"recovered": self.recovered} if self.recovered else {}),
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_second),
        }

    def __str__(self) -> str:
        s = self.summary()
        if self.dry_run:
            cost = "n/a" if self.cost_usd is None else f"${self.cost_usd:,.2f}"
            paced = self.min_duration_s
            wait = "" if paced is None else f", minimum duration {_duration(paced)} under the provider's pacing rules"
            return (
                f"dry run: {s['provider']} {s['schema']}: {s['chunks']} chunks ({self.chunks_skipped} already "
                f"done), ~{s['est_records']} records to fetch, "
                f"estimated cost {cost}{wait}; nothing was written"
            )
        failed = f", {s['chunks_failed']} failed" if "chunks_failed" in s else ""
        return (
            f"{s['provider']} {s['schema']}: {s['chunks']} chunks ({s['chunks_skipped']} already done{failed}), "
            f"fetched {s['fetched']}, inserted {s['inserted']}, updated {s['updated']}, "
            f"duplicates {s['duplicates']}, quarantined {s['quarantined']}, deleted {s['deleted']}"
            + (f", definitions {s['definitions']}" if "definitions" in s else "")
            + (f", recovered from quarantine {s['recovered']}" if "recovered" in s else "")
            + f" in {s['seconds']} s "
            f"({s['rows_per_s']} rows/s)"
        ) + "".join(f"\nwarning: {w}" for w in self.warnings)

    def _repr_pretty_(self, p: object, cycle: bool) -> None:
        """IPython's text display: the one-line summary (the dataclass repr lists every chunk)."""
        p.text(str(self))  # type: ignore[attr-defined]

    def _repr_html_(self) -> str:
        """Notebook display: a one-row summary table, then the chunks (open for a dry run's plan)."""
        from html import escape

        s = self.summary()
        title = f"{'dry run: ' if self.dry_run else ''}{s.pop('provider')} {s.pop('schema')}"
        cell = "style='text-align:right'"
        head = "".join(f"<th {cell}>{escape(k)}</th>" for k in s)
        row = "".join(f"<td {cell}>{escape(str(v))}</td>" for v in s.values())
        out = (
            f"<table><caption style='text-align:left'><b>{escape(title)}</b></caption>"
            f"<thead><tr>{head}</tr></thead><tbody><tr>{row}</tr></tbody></table>"
        )
        if not self.chunks:
            return out
        shown = self.chunks[:20]
        rows: list[tuple[object, ...]]
        if self.dry_run:
            cols = ["planned chunk", "skipped", "records (estimate)"]
            rows = [(c.chunk.describe(), c.skipped, f"~{c.fetched}") for c in shown]
        else:
            cols = [
                "chunk",
                "skipped",
                "fetched",
                "inserted",
                "updated",
                "duplicates",
                "quarantined",
                "deleted",
                "seconds",
            ]
            rows = [
                (
                    c.chunk.describe(),
                    c.skipped,
                    c.fetched,
                    c.inserted,
                    c.updated,
                    c.duplicates,
                    c.quarantined,
                    c.deleted,
                    round(c.seconds, 3),
                )
                for c in shown
            ]
            if self.failed:
                cols.append("error")
                rows = [(*r, c.error or "") for r, c in zip(rows, shown, strict=True)]
        head = f"<th style='text-align:left'>{escape(cols[0])}</th>" + "".join(f"<th {cell}>{k}</th>" for k in cols[1:])
        body = "".join(
            f"<tr><td style='text-align:left'>{escape(str(r[0]))}</td>"
            + "".join(f"<td {cell}>{escape(str(v))}</td>" for v in r[1:])
            + "</tr>"
            for r in rows
        )
        more = f"<p>... {len(self.chunks) - len(shown)} more chunks</p>" if len(self.chunks) > len(shown) else ""
        opened = " open" if self.dry_run or self.failed else ""
        return (
            out + f"<details{opened}><summary>{len(self.chunks)} chunks</summary><table><thead><tr>{head}"
            f"</tr></thead><tbody>{body}</tbody></table>{more}</details>"
        )


@dataclass(frozen=True)
class Progress:
    """A progress event for front ends: one when the plan is made (``chunk`` None, ``done`` 0),
    then one per finished chunk."""

    done: int
    total: int
    rows: int
    chunk: ChunkResult | None = None


def _duration(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    return f"{h} h {rem // 60:02d} min" if h else f"{rem // 60} min {rem % 60:02d} s"


def utc_date(ts: pd.Timestamp) -> dt.date:
    return ts.tz_convert("UTC").date()


def utc_days(start: pd.Timestamp, end: pd.Timestamp) -> list[dt.date]:
    """The UTC days that ``[start, end)`` touches (integer arithmetic: updates ask it of every chunk they plan)."""
    first, last = start.value // DAY_NS, (end.value - 1) // DAY_NS
    epoch = dt.date(1970, 1, 1)
    return [epoch + dt.timedelta(days=d) for d in range(first, last + 1)]


def whole_number(value: object, name: str, minimum: int = 0) -> int:
    """``value`` as an int when it is a whole number (an ``int`` or numpy integer, not a bool) >= ``minimum``.

    Raises ValidationError naming ``name`` otherwise."""
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        n = None
    if n is None or n < minimum:
        raise ValidationError(f"{name}={value!r} is not valid: give a whole number >= {minimum}")
    return n
