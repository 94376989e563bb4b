"""Exchange calendars: which trading sessions a dataset has, and which session a bar belongs to.

Sessions come from `exchange_calendars <https://github.com/gerrymanoim/exchange_calendars>`_ (holidays,
early closes, daylight saving time). A session is labelled by its date; its ``open`` and ``close`` are
UTC times, the close exclusive: a bar whose ``ts_event`` (its start) lies in ``[open, close)`` belongs to
the session. CME Globex (``CMES``) opens at 17:00 Chicago time the evening before, so a bar at Sunday
18:00 Chicago belongs to Monday's session. :func:`bar_sessions` gives a bar of any length its session (the first
it overlaps: an hourly bar holding a 09:30 open, a daily bar stamped 00:00 UTC), for the ``session`` column of
bar queries and session-aligned rollups (:mod:`hdi_lab.core.sessions`).

Every dataset hdi_lab knows maps to a calendar where one exists (:data:`DATASET_CALENDARS`); IB datasets
map by the contract's exchange (:data:`IB_EXCHANGE_CALENDARS`). The ``calendars`` setting
(``HDI_CALENDARS="GLBX.MDP3=CMES,IB=XNYS,IB:SMART=XLON"``) overrides both.

exchange_calendars is imported on first use only (``import hdi_lab`` and ``%load_ext hdi_lab`` stay
light), and each calendar is built once per process: building one takes 0.15-0.4 s (the first import of
the library another 0.35-0.6 s); after that :func:`sessions` takes about 0.5 ms and :func:`sessions_of`
assigns 2.6 million minute stamps in about 0.1 s.

exchange_calendars' ``CMES`` runs 17:00-17:00 Chicago time without CME's daily 16:00-17:00 maintenance
halt, so :func:`minutes` of a regular CME session is 1440 as there. A real ES session has at most 1380 bars:
:data:`DAILY_HALTS` declares the halt, and ``minutes(..., halts=True)`` / ``sessions(..., halts=True)`` leave it
out (what :mod:`hdi_lab.core.gaps` expects). A bar in the halt still belongs to its session.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import threading
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab.config import Settings, load_settings, parse_calendars
from hdi_lab.errors import ConfigError, ValidationError

__all__ = [
    "DAILY_HALTS",
    "DATASET_CALENDARS",
    "FIRST_SESSION",
    "IB_EXCHANGE_CALENDARS",
    "NAT",
    "DateLike",
    "TimeLike",
    "bar_labels",
    "bar_sessions",
    "calendar_for",
    "follows_exchange",
    "minutes",
    "open_minutes",
    "session_closes",
    "session_of",
    "sessions",
    "sessions_of",
    "utc_ns",
]

#: a session date: ``"2024-01-15"``, a date, or a timestamp (its date)
DateLike: TypeAlias = str | dt.date | pd.Timestamp
#: an instant: a string or naive datetime/timestamp is UTC
TimeLike: TypeAlias = str | dt.datetime | pd.Timestamp | np.datetime64

#: the first session of every calendar built here (exchange_calendars' default is 20 years before today)
FIRST_SESSION = "2000-01-01"

_NASDAQ, _NYSE = "XNAS", "XNYS"
#: Databento dataset -> exchange_calendars code. US equity venues trade the NYSE/Nasdaq calendar (the
#: same holidays and hours); US options (OPRA) too, up to the 16:15 close of some index options.
DATASET_CALENDARS: dict[str, str] = {
    "GLBX.MDP3": "CMES",
    **dict.fromkeys(("XNAS.ITCH", "XNAS.BASIC", "XNAS.QBBO", "XNAS.NLS", "XBOS.ITCH", "XPSX.ITCH"), _NASDAQ),
    **dict.fromkeys(("FINN.NLS", "FINY.TRADES"), _NASDAQ),
    **dict.fromkeys(
        (
            "XNYS.PILLAR", "XNYS.BBO", "XNYS.TRADES", "XNYS.TRADESBBO", "ARCX.PILLAR", "XASE.PILLAR",
            "XCHI.PILLAR", "XCIS.PILLAR", "XCIS.BBO", "XCIS.TRADES", "XCIS.TRADESBBO", "BATS.PITCH",
            "BATY.PITCH", "EDGA.PITCH", "EDGX.PITCH", "MEMX.MEMOIR", "EPRL.DOM", "IEXG.TOPS", "DBEQ.BASIC",
            "EQUS.PLUS", "EQUS.ALL", "EQUS.SUMMARY", "EQUS.MINI", "EQUS.SIP", "OPRA.PILLAR",
        ),
        _NYSE,
    ),
    "IFUS.IMPACT": "IEPA",
    "XEUR.EOBI": "XEUR",
    "XEEE.EOBI": "XEEE",
    "XCBF.PITCH": "XCBF",
    "XTKS.FLEX": "XTKS",
}  # fmt: skip
#: IB contract exchange -> exchange_calendars code (``SMART`` is taken for US stocks: override
#: ``IB:SMART`` for others); ``IDEALPRO`` forex trades around the clock on weekdays
IB_EXCHANGE_CALENDARS: dict[str, str] = {
    **dict.fromkeys(("CME", "GLOBEX", "CBOT", "ECBOT", "NYMEX", "COMEX"), "CMES"),
    **dict.fromkeys(("NASDAQ", "ISLAND", "SMART"), _NASDAQ),
    **dict.fromkeys(("NYSE", "ARCA", "AMEX", "BATS", "IEX"), _NYSE),
    "CFE": "XCBF",
    "EUREX": "XEUR",
    "NYBOT": "IEPA",
    "IBIS": "XETR",
    "LSE": "XLON",
    "TSE": "XTSE",
    "TSEJ": "XTKS",
    "SEHK": "XHKG",
    "ASX": "XASX",
    "IDEALPRO": "24/5",
}
#: daily halts exchange_calendars leaves out: calendar -> (start, end, time zone), local wall-clock times on the
#: session's date, clipped to the session (an early close before the halt has none)
DAILY_HALTS: dict[str, tuple[dt.time, dt.time, str]] = {
    "CMES": (dt.time(16), dt.time(17), "America/Chicago"),  # CME Globex's daily maintenance halt
}
#: "not a time" in the int64 nanosecond arrays of :func:`bar_sessions` (numpy's NaT)
NAT = np.iinfo(np.int64).min
_IB = "IB"
_MINUTE = 60_000_000_000
_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Table:
    """One calendar's schedule as int64 nanoseconds (UTC), for vectorised lookups."""

    code: str
    labels: npt.NDArray[np.int64]  # session dates at 00:00
    opens: npt.NDArray[np.int64]
    closes: npt.NDArray[np.int64]
    break_starts: npt.NDArray[np.int64]  # NaT (int64 min) where the session has no break
    break_ends: npt.NDArray[np.int64]
    halt_starts: npt.NDArray[np.int64]  # the daily halt inside the session (DAILY_HALTS), NaT where none
    halt_ends: npt.NDArray[np.int64]


def follows_exchange(dataset: str) -> bool:
    """Whether the calendar of ``dataset``'s instruments depends on each one's exchange (IB datasets): what
    :func:`calendar_for` needs ``exchange`` for. Raises nothing."""
    key = dataset.strip().upper()
    return key == _IB or key.startswith(f"{_IB}.")


def calendar_for(dataset: str, exchange: str | None = None, settings: Settings | None = None) -> str:
    """The exchange_calendars code of ``dataset`` (for IB datasets: of the contract's ``exchange``).

    The ``calendars`` setting wins: for IB, ``IB:EXCHANGE`` (a stored 5-character exchange, e.g. ``GLOBE``, also
    by the name it is the start of, ``IB:GLOBEX``) before the dataset (``IB.MIDPOINT``) before ``IB``; for
    Databento, the dataset code.

    Raises ValidationError for a dataset (or IB exchange) without a known calendar, or an IB dataset
    without ``exchange``; ConfigError for a ``calendars`` setting that names an unknown calendar."""
    settings = settings or load_settings()
    source = settings.sources.get("calendars", "calendars")
    overrides = parse_calendars(settings.values.get("calendars"), source)
    key = dataset.strip().upper()
    ib = follows_exchange(key)
    venue = (exchange or "").strip().upper()
    # an IB definition record keeps 5 characters of the exchange (DBN's field): IDEAL is IDEALPRO
    names = [k for k in IB_EXCHANGE_CALENDARS if len(venue) == 5 and k.startswith(venue)] if ib else []
    full = names[0] if len(names) == 1 else venue
    exchanges = [f"{_IB}:{v}" for v in dict.fromkeys((venue, full))] if ib and venue else []
    candidates = [*exchanges, key, *([_IB] if ib else [])]
    for candidate in candidates:
        if candidate in overrides:
            return _known(overrides[candidate], f"calendars {candidate}={overrides[candidate]} from {source}")
    hint = f"set calendars / HDI_CALENDARS, e.g. HDI_CALENDARS='{key}=XNYS'"
    if not ib:
        if key in DATASET_CALENDARS:
            return DATASET_CALENDARS[key]
        raise ValidationError(f"dataset {dataset!r} has no known exchange calendar: {hint}")
    if not venue:
        raise ValidationError(f"an {dataset} contract's calendar follows its exchange: give exchange=, e.g. 'CME'")
    if venue in IB_EXCHANGE_CALENDARS:
        return IB_EXCHANGE_CALENDARS[venue]
    stems = {IB_EXCHANGE_CALENDARS[k] for k in names}
    if len(stems) == 1:
        return stems.pop()
    raise ValidationError(
        f"IB exchange {exchange!r} has no known exchange calendar: set calendars / HDI_CALENDARS, "
        f"e.g. HDI_CALENDARS='IB:{venue}=XNYS'"
    )


def sessions(calendar: str, start: DateLike, end: DateLike, *, halts: bool = False) -> pd.DataFrame:
    """The trading sessions from ``start`` to ``end`` (session dates, both included): columns ``session``
    (datetime64, the date at 00:00), ``open`` and ``close`` (UTC, the close exclusive) and ``minutes``
    (1-minute bars expected, see :func:`minutes`; ``halts=True`` leaves out the :data:`DAILY_HALTS`).
    Holidays are absent, early closes and DST are applied.

    Raises ValidationError when ``start`` is after ``end``, a date does not parse, or the range leaves the
    calendar's bounds; ConfigError for an unknown calendar code."""
    table, rows = _rows(calendar, start, end)
    return pd.DataFrame(
        {
            "session": pd.to_datetime(table.labels[rows]),
            "open": pd.to_datetime(table.opens[rows], utc=True),
            "close": pd.to_datetime(table.closes[rows], utc=True),
            "minutes": _minutes(table, rows, halts),
        }
    )


def session_closes(
    calendar: str, start: DateLike, end: DateLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The sessions from ``start`` to ``end`` (session dates, both included) as numpy arrays: (labels, closes) in
    UTC nanoseconds, labels at 00:00: :func:`sessions` without building a DataFrame (for hot paths).

    Raises ValidationError when ``start`` is after ``end``, a date does not parse, or the range leaves the
    calendar's bounds; ConfigError for an unknown calendar code."""
    table, rows = _rows(calendar, start, end)
    return table.labels[rows].copy(), table.closes[rows].copy()


def _rows(calendar: str, start: DateLike, end: DateLike) -> tuple[_Table, slice]:
    """The calendar's table and the rows of its sessions from ``start`` to ``end`` (both included).

    Raises what :func:`sessions` raises."""
    table = _table(calendar)
    lo, hi = _date_ns(start), _date_ns(end)
    if lo > hi:
        raise ValidationError(f"sessions: start {start} is after end {end}")
    _check_bounds(table, lo, hi)
    i, j = np.searchsorted(table.labels, [lo, hi + 1])
    return table, slice(int(i), int(j))


def minutes(calendar: str, session: DateLike, *, halts: bool = False) -> int:
    """The number of 1-minute bars a full ``session`` has: minutes from open to close, less a midday break
    (and with ``halts=True`` less the calendar's daily halt of :data:`DAILY_HALTS`, e.g. 1380 for CME's 1440).

    Raises ValidationError when ``session`` is not a session of ``calendar`` (a holiday, a weekend, outside
    the calendar's bounds); ConfigError for an unknown calendar code."""
    table = _table(calendar)
    label = _date_ns(session)
    _check_bounds(table, label, label)
    i = int(np.searchsorted(table.labels, label))
    if i >= len(table.labels) or table.labels[i] != label:
        raise ValidationError(f"{pd.Timestamp(label).date()} is not a trading session of {table.code}")
    return int(_minutes(table, slice(i, i + 1), halts)[0])


def open_minutes(calendar: str, day: DateLike) -> npt.NDArray[np.bool_]:
    """Which of the 1440 minutes of the UTC ``day`` (00:00, 00:01, ... 23:59) lie inside a session of
    ``calendar`` and outside its breaks: the minutes in which a 1-minute bar may start (for CMES these
    include the evening that opens the next day's session). Numpy only: about 10 us a day.

    Raises ValidationError when ``day`` does not parse or lies outside the calendar's sessions' dates;
    ConfigError for an unknown calendar code."""
    table, lo = _table(calendar), _date_ns(day)
    _check_bounds(table, lo, lo)
    hi = lo + 1440 * _MINUTE
    mask = np.zeros(1440, dtype=bool)

    def first_minute(ns: int) -> int:  # the first minute starting at or after ns, clipped to the day
        return int(min(max(-((lo - ns) // _MINUTE), 0), 1440))

    # sessions closing after the day starts and opening before it ends
    first, stop = np.searchsorted(table.closes, lo, side="right"), np.searchsorted(table.opens, hi)
    for k in range(int(first), int(stop)):
        mask[first_minute(table.opens[k]) : first_minute(table.closes[k])] = True
        if table.break_starts[k] != NAT:
            mask[first_minute(table.break_starts[k]) : first_minute(table.break_ends[k])] = False
    return mask


def session_of(calendar: str, ts: TimeLike) -> dt.date | None:
    """The trading session ``ts`` (a bar's start) belongs to, or None outside every session (or in a break).

    Raises ValidationError for a time that does not parse or lies outside the calendar's bounds;
    ConfigError for an unknown calendar code."""
    found = sessions_of(calendar, pd.DatetimeIndex([_instant(ts)]))
    return None if pd.isna(found.iloc[0]) else found.iloc[0].date()


def sessions_of(calendar: str, timestamps: pd.Series[Any] | pd.DatetimeIndex | npt.NDArray[Any]) -> pd.Series[Any]:
    """The trading session of each timestamp (vectorised :func:`session_of`): a datetime64 Series of session
    dates at 00:00, NaT outside every session, on the index of ``timestamps`` when it is a Series. Naive
    timestamps are UTC.

    Raises ValidationError for timestamps outside the calendar's bounds; ConfigError for an unknown
    calendar code."""
    table = _table(calendar)
    index = timestamps.index if isinstance(timestamps, pd.Series) else None
    ns = utc_ns(timestamps)
    known = ns != NAT
    labels = np.full(len(ns), NAT, dtype=np.int64)
    if known.any():
        _check_bounds(table, int(ns[known].min()), int(ns[known].max()), instants=True)
        # the last session opening at or before ts; ts belongs to it when before its close (and not in its break)
        i = np.searchsorted(table.opens, ns, side="right") - 1
        safe = np.clip(i, 0, None)
        inside = known & (i >= 0) & (ns < table.closes[safe])
        has_break = table.break_starts[safe] != NAT
        inside &= ~(has_break & (ns >= table.break_starts[safe]) & (ns < table.break_ends[safe]))
        labels[inside] = table.labels[safe[inside]]
    return pd.Series(labels.view("datetime64[ns]"), index=index, name="session")


def bar_sessions(
    calendar: str, starts: npt.NDArray[np.int64], length: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The trading session of each bar ``[start, start + length)`` (int64 nanoseconds, UTC): the first session
    the bar overlaps, i.e. the one its start lies in (breaks and halts inside a session count as the session),
    else the first one opening before the bar ends. So an hourly bar at 14:00 UTC belongs to the XNAS session
    opening at 14:30, a daily bar stamped 00:00 UTC to that date's XNAS session, and a CME bar at Sunday
    23:00 UTC (18:00 Chicago in winter) to Monday's. Returns ``(labels, opens, closes)``: the session's date
    at 00:00, its open and its (exclusive) close, :data:`NAT` for a bar that overlaps no session (pre- and
    post-market equity bars, holidays) or lies outside the calendar's bounds (:data:`FIRST_SESSION` to about
    a year ahead). Numpy only: about 35 ms a million bars.

    Raises ConfigError for an unknown calendar code."""
    table = _table(calendar)
    ns = np.asarray(starts, dtype=np.int64)
    i = np.searchsorted(table.closes, ns, side="right")  # the first session closing after the bar's start
    safe = np.clip(i, 0, len(table.closes) - 1)
    hit = (ns != NAT) & (i < len(table.closes)) & (table.opens[safe] < ns + length)

    def pick(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.where(hit, values[safe], NAT)

    return pick(table.labels), pick(table.opens), pick(table.closes)


def bar_labels(calendar: str, starts: npt.NDArray[np.int64], length: int) -> npt.NDArray[np.int64]:
    """The ``labels`` of :func:`bar_sessions` alone. When ``starts`` are in time order (a query's bars: the usual
    case) they are found per session rather than per bar: two searches of the bars at each session's close and
    open, then one fill (a few ms a million bars instead of ~35).

    Raises ConfigError for an unknown calendar code."""
    ns = np.asarray(starts, dtype=np.int64)
    n = len(ns)
    if n < 64 or ns[0] == NAT or not (ns[1:] >= ns[:-1]).all():  # NaT sorts first: none when the first is not
        return bar_sessions(calendar, ns, length)[0]
    table = _table(calendar)
    closes, count = table.closes, len(table.closes)
    # the bars whose first session closing after their start is j form one run: j from jlo to jhi (count: none)
    jlo, jhi = np.searchsorted(closes, [ns[0], ns[-1]], side="right").tolist()
    begin = np.empty(jhi - jlo + 1, dtype=np.int64)
    begin[0] = 0
    begin[1:] = np.searchsorted(ns, closes[jlo:jhi], side="left")
    end = np.append(begin[1:], n)
    j = np.arange(jlo, jhi + 1)
    real = j < count
    k = np.minimum(j, count - 1)
    # a bar of run j overlaps session j when it ends after the open: the run's bars from the first such one
    first = np.searchsorted(ns, table.opens[k] - length, side="right")
    cut = np.where(real, np.clip(first, begin, end), end)
    values = np.stack([np.full(len(j), NAT, dtype=np.int64), np.where(real, table.labels[k], NAT)], axis=1)
    counts = np.stack([cut - begin, end - cut], axis=1)
    return np.repeat(values.ravel(), counts.ravel())


def _minutes(table: _Table, rows: slice, halts: bool) -> npt.NDArray[np.int64]:
    span = table.closes[rows] - table.opens[rows]
    starts, ends = table.break_starts[rows], table.break_ends[rows]
    gap = np.where(starts != NAT, ends - starts, 0)
    if halts:
        has = table.halt_starts[rows] != NAT
        span = span - np.where(has, table.halt_ends[rows] - table.halt_starts[rows], 0)
    return ((span - gap) // _MINUTE).astype(np.int64)


def utc_ns(stamps: pd.Index[Any] | pd.Series[Any] | npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Nanoseconds since the epoch of ``stamps`` (UTC whatever their time zone; naive stamps are UTC), NaT as
    :data:`NAT`; without a copy when they are nanosecond stamps of a DatetimeIndex. Raises nothing."""
    index = pd.DatetimeIndex(stamps)
    return np.asarray((index if index.unit == "ns" else index.as_unit("ns")).values).view(np.int64)


def _date_ns(value: DateLike) -> int:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{value!r} is not a date: write e.g. 2024-01-15") from None
    if pd.isna(stamp):
        raise ValidationError(f"{value!r} is not a date: write e.g. 2024-01-15")
    return int(stamp.tz_localize(None).normalize().as_unit("ns").value)


def _instant(value: TimeLike) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{value!r} is not a time: write e.g. 2024-01-15T14:30Z") from None
    if pd.isna(stamp):
        raise ValidationError(f"{value!r} is not a time: write e.g. 2024-01-15T14:30Z")
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def _check_bounds(table: _Table, lo: int, hi: int, *, instants: bool = False) -> None:
    first, last = (table.opens[0], table.closes[-1] - 1) if instants else (table.labels[0], table.labels[-1])
    if lo < first or hi > last:
        fmt = (lambda v: str(pd.Timestamp(v, tz="UTC"))) if instants else (lambda v: str(pd.Timestamp(v).date()))
        raise ValidationError(
            f"{fmt(lo)}..{fmt(hi)} leaves the {table.code} calendar, which covers {fmt(first)}..{fmt(last)}"
        )


def _known(code: str, where: str) -> str:
    names = _names()
    if code in names:
        return code
    upper = {n.upper(): n for n in names}
    if code.upper() in upper:
        return upper[code.upper()]
    close = difflib.get_close_matches(code.upper(), list(upper), n=1)
    hint = f"did you mean {upper[close[0]]}? " if close else ""
    raise ConfigError(f"{where}: {code!r} is not an exchange_calendars code; {hint}e.g. CMES, XNAS, XNYS")


@functools.cache
def _names() -> frozenset[str]:
    import exchange_calendars as xc

    return frozenset(xc.get_calendar_names(include_aliases=True))


def _table(code: str) -> _Table:
    name = _known(code, "calendar")
    with _LOCK:  # one build per calendar even when threads ask at once (a build takes 0.15-0.4 s)
        return _build(name)


@functools.cache
def _build(name: str) -> _Table:
    import exchange_calendars as xc

    schedule = xc.get_calendar(name, start=FIRST_SESSION).schedule

    def ns(column: str) -> npt.NDArray[np.int64]:
        return utc_ns(schedule[column])

    labels, opens, closes = utc_ns(schedule.index), ns("open"), ns("close")
    halt_starts, halt_ends = _halts(name, pd.DatetimeIndex(schedule.index), opens, closes)
    return _Table(
        code=name,
        labels=labels,
        opens=opens,
        closes=closes,
        break_starts=ns("break_start"),
        break_ends=ns("break_end"),
        halt_starts=halt_starts,
        halt_ends=halt_ends,
    )


def _halts(
    name: str, labels: pd.DatetimeIndex, opens: npt.NDArray[np.int64], closes: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The calendar's :data:`DAILY_HALTS` on each session's date, clipped to the session; NaT where none."""
    nat = np.full(len(labels), NAT, dtype=np.int64)
    if name not in DAILY_HALTS:
        return nat, nat.copy()
    start, end, tz = DAILY_HALTS[name]
    days = labels.tz_localize(None).normalize()

    def at(t: dt.time) -> npt.NDArray[np.int64]:
        local = (days + pd.Timedelta(hours=t.hour, minutes=t.minute)).tz_localize(tz)
        return utc_ns(local)

    lo = np.clip(at(start), opens, closes)
    hi = np.clip(at(end), opens, closes)
    some = lo < hi
    return np.where(some, lo, nat), np.where(some, hi, nat)
