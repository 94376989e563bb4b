"""The query core: symbols resolved as of each date, rows read by binary COPY into a DataFrame."""

from __future__ import annotations

import decimal
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from hdi_lab import extras
from hdi_lab.core import sessions
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import Output, Schema, parse_enum, parse_range, require_symbols
from hdi_lab.storage import aggregates, read, symbology
from hdi_lab.storage.read import PriceType
from hdi_lab.storage.symbology import Span
from hdi_lab.storage.tables import TABLES
from hdi_lab.storage.versions import Observed

__all__ = ["PriceType", "convert", "plain", "query", "resolve", "session_column", "sql"]


def query(
    session: HdiSession,
    schema: str | Schema,
    symbols: str | Sequence[str],
    start: object,
    end: object,
    *,
    dataset: str | None = None,
    price_type: PriceType = "float",
    columns: Sequence[str] | None = None,
    interval: str | None = None,
    align: str = "utc",
    adjust: str | None = None,
    output: str | Output = Output.PANDAS,
) -> pd.DataFrame | Any:  # Any: a pyarrow.Table or polars.DataFrame (output=), so pandas callers keep their type
    """Rows of ``schema`` for ``symbols`` in ``[start, end)`` (UTC), indexed by ``ts_event`` (ns).

    Prices are floats (``price_type="fixed"`` keeps int64 1e-9 fixed-point with UNDEF_PRICE as
    in DBN). The ``symbol`` column holds the requested symbol as of each row's date, so a
    continuous symbol shows the contract it meant on each day in ``instrument_id``.

    ``interval`` (bars only, e.g. ``"5m"``, ``"15m"``, ``"1h"``, ``"1d"``) rolls the bars up: the
    frame is shaped like the bars query, ``ts_event`` is each bucket's start (aligned on midnight
    UTC); buckets starting in ``[start, end)`` are returned whole. A TimescaleDB continuous
    aggregate serves it when one exists (see :mod:`hdi_lab.storage.aggregates`), else it is
    computed (``time_bucket`` / ``date_bin``).

    Bars end with a ``session`` column, the date of each bar's trading session (the exchange calendar of its
    dataset). ``align="session"`` returns the sessions whose dates are in ``[start, end)`` instead, and with
    ``interval`` buckets from each session's open (``"1d"``: one bar per session, stamped at its open); bars
    outside every session are left out. See :mod:`hdi_lab.core.sessions`.

    ``adjust`` (``none``, ``difference`` or ``ratio``) reads continuous symbols (``ES.c.0``, ``ES.v.0``,
    ``ES.n.0``) with hdi_lab's roll rules and back-adjustment instead of the stored symbology: see
    :func:`hdi_lab.core.continuous.query`.

    ``output="arrow"`` returns a ``pyarrow.Table``, ``"polars"`` a Polars DataFrame, built from the decoded
    columns without a pandas frame in between (except under ``align="session"`` or ``adjust``, which build one):
    ``ts_event`` (``timestamp[ns, tz=UTC]``) is the first column, then the frame's columns with the same values
    and types (see :func:`convert`).

    Raises ValidationError (a bad schema, interval, align, range, price type, output or column; no symbols; a
    symbol neither stored nor found by auto-discovery; a dataset without a calendar under session alignment; with
    ``adjust``, what the continuous query raises, and ``align="session"`` with it), ConfigError (an unknown
    calendar in the ``calendars`` setting), StorageError, MissingDependency (``output="polars"`` without Polars),
    and ProviderError when
    auto-discovery asks Databento and it fails.
    """
    out = parse_enum(Output, output, "output")
    if adjust is not None:  # continuous futures rolled and back-adjusted on read
        from hdi_lab.core import continuous

        if align != "utc":
            raise ValidationError(
                f"align={align!r} cannot be combined with adjust yet: the continuous series' bars carry their "
                "session column; roll them up by it (frame.groupby('session'))"
            )
        return convert(continuous.query(
            session, schema, symbols, start, end, adjust=adjust, dataset=dataset, price_type=price_type,
            columns=columns, interval=interval,
        ), out)  # fmt: skip
    sch = parse_enum(Schema, schema, "schema")
    seconds = None
    if interval is not None:
        if not sch.is_bar:
            raise ValidationError(f"interval={interval!r} applies to bars only (ohlcv-*), not {sch}")
        seconds = aggregates.parse_interval(interval, sch.bar_seconds)
        seconds = None if seconds == sch.bar_seconds else seconds
    align = sessions.check_align(align, sch, seconds)
    syms = require_symbols(symbols)
    lo, hi = parse_range(start, end)
    read.check_price_type(price_type)
    observed = None
    if session.cache is not None and seconds is None and align == "utc" and sch is not Schema.DEFINITION:
        spans, observed = _resolve_observing(session, sch, syms, lo, hi, dataset)
    else:
        spans = resolve(session, syms, lo, hi, dataset)
    conn = session.connection()
    if out is not Output.PANDAS and align == "utc":  # Arrow straight from the decoded columns
        labelled, asked = sessions.split_columns(columns)
        labelled = labelled and sch.is_bar
        if labelled and asked:  # what the session label needs
            asked = list(dict.fromkeys([*asked, "publisher_id", "instrument_id"]))
        table = read.query_arrow(
            conn,
            session.schema,
            sch,
            spans,
            syms,
            lo,
            hi,
            price_type,
            seconds,
            asked,
            lookups=session.lookups,
            cache=session.cache,
            observed=observed,
        )
        if labelled:
            table = table.append_column(sessions.COLUMN, session_column(session, table, seconds or sch.bar_seconds))
        if columns:
            read.check_columns(columns, table.column_names[1:], sch)
            table = table.select(["ts_event", *columns])
        return convert(table, out)
    if sch.is_bar:  # with the session column, aligned on midnight UTC or on sessions
        frame = sessions.bars(
            session,
            sch,
            spans,
            syms,
            lo,
            hi,
            price_type,
            seconds,
            columns,
            align=align,
            dataset=dataset,
            observed=observed,
        )
    else:
        frame = read.query(
            conn,
            session.schema,
            sch,
            spans,
            syms,
            lo,
            hi,
            price_type,
            seconds,
            columns,
            lookups=session.lookups,
            cache=session.cache,
            observed=observed,
        )
    if columns:
        read.check_columns(columns, list(frame.columns), sch)
        frame = frame[list(columns)]
    return convert(frame, out)


def session_column(session: HdiSession, table: pa.Table, seconds: int) -> pa.Array:
    """The :data:`hdi_lab.core.sessions.COLUMN` of a table of bars lasting ``seconds`` (``ts_event``,
    ``publisher_id``, ``instrument_id``), as the pandas path gives it: timestamp[ns] at 00:00, null outside every
    session.

    Raises ConfigError (an unknown calendar in the ``calendars`` setting) and StorageError."""
    keys = pd.DataFrame(
        {c: table[c].to_numpy() for c in ("publisher_id", "instrument_id")},
        index=pd.DatetimeIndex(table["ts_event"].to_numpy()),
    )
    return pa.array(sessions.label(session, keys, seconds * 1_000_000_000).to_numpy(), from_pandas=True)


def resolve(
    session: HdiSession, syms: tuple[str, ...], lo: pd.Timestamp, hi: pd.Timestamp, dataset: str | None
) -> list[Span]:
    """The spans of ``syms`` over ``[lo, hi)``: what each symbol means (dataset, instrument) on which dates. A
    symbol not stored is auto-discovered when a Databento key is configured.

    Raises ValidationError (a symbol neither stored nor found), StorageError, ProviderError (discovery)."""
    missing: list[str] = []
    spans = _resolve(session, syms, lo, hi, dataset, missing)
    if missing:  # auto-discovery when a Databento key is configured; else the unknown-symbol error
        from hdi_lab.core import discovery

        if discovery.can_discover(session, dataset):
            discovery.discover(session, tuple(missing), lo, hi, dataset)
        spans = _resolve(session, syms, lo, hi, dataset)
    return spans


def _resolve_observing(
    session: HdiSession, sch: Schema, syms: tuple[str, ...], lo: pd.Timestamp, hi: pd.Timestamp, dataset: str | None
) -> tuple[list[Span], Observed | None]:
    """:func:`resolve`, and with it (one round trip) the versions of the days a cached read of ``sch`` asks; a
    symbol not stored goes the way of :func:`resolve` (auto-discovery or its error), without them.

    Raises what :func:`resolve` raises."""
    missing: list[str] = []
    conn = session.connection()
    found = symbology.lookup_observing(
        conn, session.schema, TABLES[sch].name, syms, lo, hi, dataset, missing, session.lookups.prepared(conn)
    )
    return (resolve(session, syms, lo, hi, dataset), None) if missing else found


def convert(frame: pd.DataFrame | pa.Table, output: str | Output) -> pd.DataFrame | Any:
    """A query result as ``output``: a DataFrame indexed by ``ts_event`` stays one (``pandas``) or becomes a
    ``pyarrow.Table`` with ``ts_event`` as its first column (``arrow``); an Arrow table becomes a Polars frame
    without a copy (``polars``); ``frame.attrs`` (the roll table of ``adjust``: see :func:`hdi_lab.rolls`) does not
    carry over. Raises ValidationError (an unknown output), MissingDependency (no Polars)."""
    out = parse_enum(Output, output, "output")
    if isinstance(frame, pd.DataFrame):
        if out is Output.PANDAS:
            return frame
        flat = frame.reset_index()  # a new frame: the caller's keeps its attrs (adjust's roll table stays there)
        flat.attrs = {}
        table = pa.Table.from_pandas(flat, preserve_index=False).replace_schema_metadata(None)
        fields = [f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f for f in table.schema]
        frame = table.cast(pa.schema(fields))  # str columns as string, as the Arrow path builds them
    if out is Output.PANDAS:
        return frame.to_pandas().set_index("ts_event")
    if out is Output.POLARS:
        return extras.require("polars").from_arrow(frame)
    return frame


def _resolve(
    session: HdiSession,
    syms: tuple[str, ...],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    dataset: str | None,
    missing: list[str] | None = None,
) -> list[Span]:
    return symbology.lookup(session.connection(), session.schema, syms, lo, hi, dataset, missing)


def sql(session: HdiSession, text: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> pd.DataFrame:
    """Run SQL with bound parameters (``%(name)s`` or ``%s``) against the hdi_lab schema.

    Raises StorageError with the server's first line (bad SQL, a missing parameter, no privilege).
    """
    conn = session.connection()
    if isinstance(params, Mapping):
        params = {k: plain(v) for k, v in params.items()}
    elif params is not None:
        params = [plain(v) for v in params]
    frame = read.sql(conn, text, params)
    # numeric results (sum(bigint), price / 1e9) arrive as Decimal objects: give analysts floats
    for name in frame.columns:
        if frame[name].dtype != object:
            continue
        values = frame[name].dropna()
        if len(values) and isinstance(values.iloc[0], decimal.Decimal):
            frame[name] = frame[name].astype("float64")
    return frame


def plain(value: Any) -> Any:
    """numpy scalars and arrays (and containers of them) as Python values psycopg2 can send. Raises nothing."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    return value
