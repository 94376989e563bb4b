"""Trading sessions on bar queries: the ``session`` column and session-aligned rollups (``align="session"``).

**The ``session`` column.** Every bar query (``ohlcv-*``, with or without ``interval``) ends with a ``session``
column: the date (datetime64 at 00:00) of the trading session each bar belongs to, from the exchange calendar of
its dataset (:mod:`hdi_lab.calendars`: GLBX.MDP3 -> CMES, XNAS.ITCH -> XNAS; IB rows by their contract's exchange,
from the stored definition). A bar belongs to the first session it overlaps (:func:`hdi_lab.calendars.bar_sessions`):
a CME bar at Sunday 23:00 UTC belongs to Monday; an hourly XNAS bar at 14:00 UTC holds the 14:30 open and belongs
to that day; a daily bar (stamped 00:00 UTC) belongs to its date's session — for CME the UTC day of a Sunday
(its last hour opens Monday's session) belongs to Monday, as does Monday's. A bar that overlaps no session
(pre- and post-market equity bars, a bar between an early close and the next open) has ``NaT``. A dataset
without a known calendar (and no ``calendars`` setting for it) gets the UTC date of each bar: queries never
fail for want of a calendar, and ``HDI_CALENDARS`` gives one. ``columns=`` leaves it out unless it names it.

**Session alignment.** ``align="session"`` (``align="utc"``, midnight UTC, is the default) selects *sessions*:
every session whose date lies in ``[start, end)`` (a session is identified by its date at 00:00), read whole from
the stored bars of one more UTC day on each side. With ``interval``, bars roll up from each session's open: ``1d``
gives one bar per session stamped at the session's open (CME: 17:00 Chicago the evening before, 22:00/23:00 UTC;
XNAS: 09:30 New York), ``4h``, ``1h``... bucket from the open, so a bucket never spans two sessions and the last
one of a session ends at its close. OHLC: first open, highest high, lowest low, last close; volume: summed;
one bar per symbol, instrument and publisher (a continuous symbol whose contract changes during a session, since
symbology maps by UTC day, gives one bar per contract there). Bars outside every session (see above) are left
out. Without ``interval`` it returns the stored bars of those sessions. Stored bars are bucketed by their start
(a bar holding the open, e.g. an hourly 14:00 bar of a 14:30 session, goes to the first bucket): exact for 1s, 5s
and 1m bars, approximate for hourly bars of sessions that do not open on the hour. Daily bars cannot be re-aligned
(ask ``ohlcv-1m`` with ``interval="1d"``). It is computed with numpy from the fetched bars, never from a
TimescaleDB continuous aggregate, and needs each dataset's calendar (no UTC fallback: it raises).

Daily session bars equal the vendor's ``ohlcv-1d`` where the vendor's day is the session: for US equities
(XNAS sessions lie inside the UTC day) the session and UTC rollups of 1-minute bars are equal. Databento's (and
the sample provider's) ``ohlcv-1d`` of CME futures is the UTC day, 00:00-24:00 UTC, which holds the end of one
session and the first hour(s) of the next: CME session bars differ from it (same volume over a whole week).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab import calendars
from hdi_lab.calendars import NAT
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import ALIGNS, DAY_NS, Schema
from hdi_lab.storage import read, symbology
from hdi_lab.storage.read import PriceType
from hdi_lab.storage.symbology import Span
from hdi_lab.storage.versions import Observed

__all__ = ["COLUMN", "bars", "check_align", "label", "split_columns"]

#: the name of the session column of bar queries
COLUMN = "session"
_NS = 1_000_000_000


def split_columns(columns: Sequence[str] | None) -> tuple[bool, list[str] | None]:
    """Whether a bar query with ``columns`` shows the :data:`COLUMN` column (all columns, or named), and the
    columns to ask the read for (the others; None: all). Raises nothing."""
    return not columns or COLUMN in columns, None if not columns else [c for c in columns if c != COLUMN]


def check_align(align: str, sch: Schema, seconds: int | None) -> str:
    """``align`` when it is one of :data:`hdi_lab.schemas.ALIGNS` and applies to ``sch`` (bars of a day or less;
    session alignment re-buckets intraday bars only).

    Raises ValidationError otherwise."""
    value = str(align).strip().lower() if isinstance(align, str) else align
    if value not in ALIGNS:
        raise ValidationError(f"align={align!r} is not valid: use one of {', '.join(ALIGNS)}")
    if value == "session" and not sch.is_bar:
        raise ValidationError(f"align='session' applies to bars only (ohlcv-*), not {sch}")
    if value == "session" and sch.bar_seconds >= 86_400:
        raise ValidationError(
            f"{sch} bars are the vendor's UTC days and cannot be re-aligned to sessions: query intraday bars, "
            "e.g. ohlcv-1m with interval='1d', align='session' (their session column gives each day's session)"
        )
    return str(value)


def bars(
    session: HdiSession,
    sch: Schema,
    spans: list[Span],
    syms: tuple[str, ...],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    price_type: PriceType,
    seconds: int | None,
    columns: Sequence[str] | None,
    *,
    align: str = "utc",
    dataset: str | None = None,
    observed: Observed | None = None,
) -> pd.DataFrame:
    """The bars of ``spans`` (see :func:`hdi_lab.core.retrieval.query`) with the :data:`COLUMN` column, aligned
    on midnight UTC or on sessions (see the module); ``observed``: the versions of the spans' days, read with
    them (for the read cache, see :func:`hdi_lab.storage.read.query`).

    Raises ValidationError (a bad column; a dataset without a calendar under session alignment), ConfigError
    (an unknown calendar in the ``calendars`` setting) and StorageError."""
    wanted, asked = split_columns(columns)
    if align != "session":
        length = (seconds or sch.bar_seconds) * _NS

        def column(
            ts: npt.NDArray[np.int64], codes: npt.NDArray[np.intp], pairs: npt.NDArray[np.int64]
        ) -> dict[str, Any]:
            labels, _, _ = _sessions_of(session, ts, codes, pairs, length, strict=False, opens_too=False)
            return {COLUMN: labels.view("datetime64[ns]")}

        return read.query(
            session.connection(),
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
            extra=column if wanted else None,
            cache=session.cache,
            observed=observed,
        )
    # whole sessions: the bars of one more UTC day each side (every calendar's session D lies in [D-1, D+2))
    wlo, whi = lo.normalize() - pd.Timedelta(days=1), hi.ceil("D") + pd.Timedelta(days=1)
    wide = symbology.lookup(session.connection(), session.schema, syms, wlo, whi, dataset, missing=[])
    frame = read.query(
        session.connection(),
        session.schema,
        sch,
        wide,
        syms,
        wlo,
        whi,
        price_type,
        None,
        None,
        lookups=session.lookups,
        cache=session.cache,
    )
    labels, opens, pairs = _sessions(session, frame, sch.bar_seconds * _NS, strict=True)
    rows = np.flatnonzero((labels != NAT) & (labels >= lo.value) & (labels < hi.value))  # in time order
    if seconds is None:
        out = frame.iloc[rows].copy()
        out[COLUMN] = labels[rows].view("datetime64[ns]")
    else:
        # one group per (symbol, publisher, instrument): the pair alone unless an instrument has several symbols
        group = pairs
        if len({(sp.symbol, sp.instrument_id) for sp in wide}) > len({sp.instrument_id for sp in wide}):
            group = pairs * len(syms) + pd.factorize(frame["symbol"])[0]
        bucket = _buckets(calendars.utc_ns(frame.index)[rows], opens[rows], seconds)
        out = _rollup(frame, syms, rows, group[rows], bucket, labels[rows])
    return out  # the query keeps ``columns`` of it


def label(session: HdiSession, frame: pd.DataFrame, length: int) -> pd.Series:
    """The session date of each bar of ``frame`` (a bars query: ``ts_event`` index, ``publisher_id`` and
    ``instrument_id`` columns) whose bars last ``length`` nanoseconds; datetime64, NaT outside every session,
    the UTC date where the dataset has no calendar (see the module).

    Raises ConfigError (an unknown calendar in the ``calendars`` setting) and StorageError."""
    labels, _, _ = _sessions(session, frame, length, strict=False)
    return pd.Series(labels.view("datetime64[ns]"), index=frame.index, name=COLUMN)


def _sessions(
    session: HdiSession, frame: pd.DataFrame, length: int, *, strict: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """(session date, session open) of each bar, int64 ns (NAT outside every session), and the code of its
    (publisher, instrument) pair. Without a calendar: the UTC date (and its midnight as the open), or with
    ``strict`` a ValidationError naming the dataset."""
    codes, pairs = read.owner_pairs(frame["publisher_id"].to_numpy(), frame["instrument_id"].to_numpy())
    return _sessions_of(session, calendars.utc_ns(frame.index), codes, pairs, length, strict)


def _sessions_of(
    session: HdiSession,
    ts: npt.NDArray[np.int64],
    codes: npt.NDArray[np.intp],
    pairs: npt.NDArray[np.int64],
    length: int,
    strict: bool,
    opens_too: bool = True,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """:func:`_sessions` of bars starting at ``ts`` (int64 ns) whose (publisher, instrument) pairs are
    ``pairs[codes]`` (see :data:`hdi_lab.storage.read.Extra`); without ``opens_too`` the opens are left out (an
    empty array)."""
    labels = np.full(len(ts), NAT, dtype=np.int64)
    opens = labels.copy() if opens_too else np.zeros(0, dtype=np.int64)
    if not len(ts):
        return labels, opens, np.zeros(0, dtype=np.intp)
    lookups = session.lookups  # the session's caches: usually no statement at all
    conn = session.connection()
    pair_list = read.pair_ids(pairs)
    datasets = lookups.datasets(conn, sorted({pub for pub, _ in pair_list}))
    wanted = [(datasets[pub], iid) for pub, iid in pair_list if calendars.follows_exchange(datasets.get(pub, ""))]
    exchanges = lookups.exchanges(conn, wanted) if wanted else {}
    by_calendar: dict[str | None, list[int]] = {}
    for k, (pub, iid) in enumerate(pair_list):
        ds = datasets.get(pub)
        ex = exchanges.get((ds, iid)) if ds is not None else None
        by_calendar.setdefault(_calendar(session, ds, ex, strict), []).append(k)
    for code, members in by_calendar.items():
        rows = np.isin(codes, members) if len(by_calendar) > 1 else slice(None)
        if code is None:
            labels[rows] = ts[rows] - ts[rows] % DAY_NS
            if opens_too:
                opens[rows] = labels[rows]
        elif opens_too:
            labels[rows], opens[rows], _ = calendars.bar_sessions(code, ts[rows], length)
        else:  # the labels alone: found per session when the bars are in time order (a query's are)
            labels[rows] = calendars.bar_labels(code, ts[rows], length)
    return labels, opens, codes


def _calendar(session: HdiSession, dataset: str | None, exchange: str | None, strict: bool) -> str | None:
    if dataset is None:
        if strict:
            raise ValidationError("align='session': a bar's publisher is not in the publishers table")
        return None
    try:
        return calendars.calendar_for(dataset, exchange, session.settings)
    except ValidationError as exc:
        if strict:
            raise ValidationError(f"align='session' needs the sessions of {dataset}: {exc}") from None
        return None


def _buckets(ts: npt.NDArray[np.int64], opens: npt.NDArray[np.int64], seconds: int) -> npt.NDArray[np.int64]:
    """Each bar's bucket start: its session's open plus whole ``seconds`` (a bar starting before the open, which
    holds it, goes to the first bucket); one bucket per session for a day."""
    if seconds >= 86_400:
        return opens
    step = seconds * _NS
    return opens + np.maximum(ts - opens, 0) // step * step


def _rollup(
    frame: pd.DataFrame,
    syms: tuple[str, ...],
    rows: npt.NDArray[np.intp],
    group: npt.NDArray[np.intp],
    bucket: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int64],
) -> pd.DataFrame:
    """One bar per group and bucket of the ``rows`` of ``frame`` (in time order; ``group``, ``bucket`` and
    ``labels`` of each), in the order of a bars query (time, symbol as requested, instrument)."""
    small = np.int16 if len(group) == 0 or group.max() < 2**15 else np.int64  # int16: numpy's radix sort
    by = np.argsort(group.astype(small), kind="stable")  # keeps time order inside each group
    order, g, b = rows[by], group[by], bucket[by]
    if len(order):
        starts = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (b[1:] != b[:-1])])
        last = np.r_[starts[1:], len(order)] - 1
    else:
        starts = last = np.zeros(0, dtype=np.intp)
    first_row, last_row = order[starts], order[last]
    out_ts, out_labels = b[starts], labels[by][starts]
    sym = pd.Categorical(frame["symbol"].array.take(first_row), categories=list(syms)).codes
    final = np.lexsort((frame["instrument_id"].to_numpy()[first_row], sym, out_ts))
    cols: dict[str, object] = {}
    for name in frame.columns:
        values = frame[name].array if name == "symbol" else frame[name].to_numpy()
        if name in ("high", "low", "volume"):
            ufunc = {"high": np.maximum, "low": np.minimum, "volume": np.add}[name]
            v = ufunc.reduceat(values[order], starts) if len(starts) else values[:0]
            cols[name] = np.asarray(v)[final].astype(frame[name].dtype, copy=False)
        else:  # open: the first bar's; close: the last's; symbol, instrument_id, publisher_id: one per group
            cols[name] = values.take((last_row if name == "close" else first_row)[final])
    index = pd.DatetimeIndex(pd.to_datetime(out_ts[final], unit="ns", utc=True), name="ts_event")
    out = pd.DataFrame(cols, index=index)
    out[COLUMN] = out_labels[final].view("datetime64[ns]")
    return out
