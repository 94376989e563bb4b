"""The query core: symbols resolved as of each date, rows read by binary COPY into a DataFrame."""

from __future__ import annotations

import decimal
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hdi_lab.core import sessions
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import Schema, parse_enum, parse_range, require_symbols
from hdi_lab.storage import aggregates, read, symbology
from hdi_lab.storage.read import PriceType
from hdi_lab.storage.symbology import Span

__all__ = ["PriceType", "plain", "query", "sql"]


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
) -> pd.DataFrame:
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

    Raises ValidationError (a bad schema, interval, align, range, price type or column; no symbols; a symbol
    neither stored nor found by auto-discovery; a dataset without a calendar under session alignment; with
    ``adjust``, what the continuous query raises, and ``align="session"`` with it),
    ConfigError (an unknown calendar in the ``calendars`` setting), StorageError, and ProviderError when
    auto-discovery asks Databento and it fails.
    """
    if adjust is not None:  # continuous futures rolled and back-adjusted on read
        from hdi_lab.core import continuous

        if align != "utc":
            raise ValidationError(
                f"align={align!r} cannot be combined with adjust yet: the continuous series' bars carry their "
                "session column; roll them up by it (frame.groupby('session'))"
            )

        return continuous.query(
            session, schema, symbols, start, end, adjust=adjust, dataset=dataset, price_type=price_type,
            columns=columns, interval=interval,
        )  # fmt: skip
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
    if price_type not in ("float", "fixed"):
        raise ValidationError(f"price_type={price_type!r} is not valid: use float or fixed")
    missing: list[str] = []
    spans = _resolve(session, syms, lo, hi, dataset, missing)
    if missing:  # auto-discovery when a Databento key is configured; else the unknown-symbol error
        from hdi_lab.core import discovery

        if discovery.can_discover(session, dataset):
            discovery.discover(session, tuple(missing), lo, hi, dataset)
        spans = _resolve(session, syms, lo, hi, dataset)
    if sch.is_bar:  # with the session column, aligned on midnight UTC or on sessions
        frame = sessions.bars(
            session, sch, spans, syms, lo, hi, price_type, seconds, columns, align=align, dataset=dataset
        )
    else:
        frame = read.query(session.connection(), session.schema, sch, spans, syms, lo, hi, price_type, seconds, columns)
    if columns:
        unknown = [c for c in columns if c not in frame.columns]
        if unknown:
            raise ValidationError(f"unknown column(s) {unknown} for {sch}: choose from {list(frame.columns)}")
        frame = frame[list(columns)]
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
