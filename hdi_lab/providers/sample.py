"""The offline ``sample`` provider: deterministic, realistic market data served as real DBN bytes.

Universe (instrument ids are stable; futures are listed from activation to expiration, the real CME
schedule of :func:`quarterly_listing`: listed when the contract five quarters earlier expires, expiring
the third Friday of the month at 09:30 New York time, i.e. 13:30 UTC in summer, 14:30 in winter):

======  =========  ===  =============  ====  =======  ===========================================
symbol  dataset    pub  instrument_id  tick  level    listed (UTC)
======  =========  ===  =============  ====  =======  ===========================================
ESH4    GLBX.MDP3  1    400001         0.25  ~4800    2022-12-16 14:30 .. 2024-03-15 13:30
ESM4    GLBX.MDP3  1    400002         0.25  ~4800    2023-03-17 13:30 .. 2024-06-21 13:30
NQH4    GLBX.MDP3  1    400003         0.25  ~16800   2022-12-16 14:30 .. 2024-03-15 13:30
NQM4    GLBX.MDP3  1    400004         0.25  ~16800   2023-03-17 13:30 .. 2024-06-21 13:30
ESU4    GLBX.MDP3  1    400005         0.25  ~4800    2023-06-16 13:30 .. 2024-09-20 13:30
ESZ4    GLBX.MDP3  1    400006         0.25  ~4800    2023-09-15 13:30 .. 2024-12-20 14:30
NQU4    GLBX.MDP3  1    400007         0.25  ~16800   2023-06-16 13:30 .. 2024-09-20 13:30
NQZ4    GLBX.MDP3  1    400008         0.25  ~16800   2023-09-15 13:30 .. 2024-12-20 14:30
AAPL    XNAS.ITCH  2    500001         0.01  ~185     always
MSFT    XNAS.ITCH  2    500002         0.01  ~375     always
NVDA    XNAS.ITCH  2    500003         0.01  ~500     always
======  =========  ===  =============  ====  =======  ===========================================

Parents ``ES.FUT``/``NQ.FUT`` map to their listed contracts; continuous ``ES.c.0``/``NQ.c.0`` map
to the front contract, which rolls the day before expiration (H4 -> M4 on 2024-03-14, M4 -> U4 on
2024-06-20, U4 -> Z4 on 2024-09-19; none after 2024-12-18). Sessions
follow the real exchange calendars (:mod:`hdi_lab.calendars`: holidays, early closes, DST).
Futures trade CME Globex (``CMES``) sessions, Sunday 17:00 Chicago time to Friday 16:00 with the
daily 16:00-17:00 halt (Chicago time; UTC 22:00-23:00 in winter, 21:00-22:00 in summer), holidays
closed or closing early (12:00 on MLK day), and expiring contracts stop at expiration on expiration
day; equities trade Nasdaq (``XNAS``) sessions, 09:30-16:00 New York time (14:30-21:00 UTC in
winter, 13:30-20:00 in summer), 13:00 on early-close days such as 2024-07-03, nothing on holidays
(2024-01-15, 2024-03-29). The intraday activity profile follows local time, so it moves with DST.
Days outside a calendar's range (2000 to a year ahead) have no data.

Futures roll like real quarterly futures (:data:`VOLUME_ROLL`, :data:`OI_ROLL`): the nearest contract
trades nearly all of its root's volume and holds its open interest, every other listed one trades 3% and
holds 2%; from 13 sessions before expiry the volume moves to the next contract (more in the next than in
the nearest from 8 sessions out), the open interest from 9 sessions out (more in the next from 4
sessions out). So on the prior session's data a volume rule rolls ~7 sessions before expiry, an
open-interest rule ~3 before, and a calendar rule (after the last full session) on expiration day, for
H4 -> M4, M4 -> U4 and U4 -> Z4 of both roots. Bars, trades and the statistics' cleared volume
(``stat_type`` 6, the UTC day's bar volume) follow the same split; open interest is ``stat_type`` 9.
Deferred contracts trade at a carry premium (``F = S * exp(carry * years to expiry)``: ES ~40 points
a quarter, NQ ~150), so a roll has a real price gap to back-adjust.

Every value is a pure function of (instrument, UTC day, schema), drawn from streams seeded by a
stable hash (blake2b / SHAKE-128, never ``hash()``), so records never depend on how a request is
chunked. A chunk keeps the records whose ``ts_event`` is in its ``[start, end)``. Bars of all
intervals come from one shared 5-second price path per product and day, so 1m/1h/1d agree.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import hashlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab.calendars import DAILY_HALTS, DATASET_CALENDARS, open_minutes, sessions
from hdi_lab.dbn import store_from_bytes
from hdi_lab.dbn.writer import (
    UNDEF_PRICE,
    UNDEF_STAT_QUANTITY,
    UNDEF_TIMESTAMP,
    Interval,
    Records,
    empty_records,
    encode_dbn,
)
from hdi_lab.errors import ValidationError
from hdi_lab.providers.base import CostEstimate, Fetch, LocalProvider, plan_chunks
from hdi_lab.schemas import (
    DAY_NS,
    SCHEMAS,
    Chunk,
    IngestRequest,
    Schema,
    SType,
    check_provided,
    parse_enum,
    parse_range,
    utc_days,
)

__all__ = [
    "CONTINUOUS",
    "DATASETS",
    "DAY_NS",
    "INSTRUMENTS",
    "MIN_NS",
    "NS",
    "OI_ROLL",
    "PARENTS",
    "PER_MIN",
    "ROOTS",
    "STEPS",
    "STEP_S",
    "VOLUME_ROLL",
    "Instrument",
    "Root",
    "SampleProvider",
    "clear_caches",
    "day_records",
    "day_times",
    "front",
    "mappings",
    "minute_mask",
    "quarterly_listing",
    "resolve",
    "symbol_table",
    "universe",
    "utc_days",
    "validate_symbols",
]

NS, MIN_NS = 1_000_000_000, 60_000_000_000
STEP_S = 5  # the shared intraday price path has one point every 5 seconds
STEPS = 86_400 // STEP_S
PER_MIN = 60 // STEP_S


@dataclass(frozen=True)
class Root:
    """A product (futures root or stock) and the parameters of its simulated market."""

    name: str
    dataset: str
    publisher_id: int
    kind: str  # "future" | "equity"
    price: float  # spot level
    vol: float  # daily volatility (fraction)
    tick: int  # fixed-point, 1e-9 units
    trades_per_min: float  # at activity 1
    volume_per_min: float  # at activity 1
    multiplier: int = 1
    carry: float = 0.0  # futures basis: F = S * exp(carry * years_to_expiry)
    tz: str = "America/New_York"  # the exchange's local time (activity profile, daily halt)
    halt: tuple[dt.time, dt.time] | None = None  # a daily trading halt in local time, [from, to)

    @property
    def calendar(self) -> str:
        """The exchange_calendars code whose sessions the product trades."""
        return DATASET_CALENDARS[self.dataset]


@dataclass(frozen=True)
class Instrument:
    """One tradable instrument of the sample universe."""

    symbol: str
    instrument_id: int
    root: Root
    activation: pd.Timestamp | None = None
    expiration: pd.Timestamp | None = None

    @property
    def dataset(self) -> str:
        return self.root.dataset

    def listed(self, day: dt.date) -> bool:
        """True if the instrument exists on UTC ``day``."""
        if self.activation is None or self.expiration is None:
            return True
        return self.activation.date() <= day <= self.expiration.date()


def _utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC").as_unit("ns")


_HALT_FROM, _HALT_TO, _HALT_TZ = DAILY_HALTS["CMES"]  # CME Globex's daily halt, 16:00-17:00 Chicago
_CME = (_HALT_TZ, (_HALT_FROM, _HALT_TO))
ROOTS: dict[str, Root] = {
    r.name: r
    for r in (
        Root("ES", "GLBX.MDP3", 1, "future", 4800.0, 0.011, 250_000_000, 60, 2500, 50, 0.035, *_CME),
        Root("NQ", "GLBX.MDP3", 1, "future", 16800.0, 0.014, 250_000_000, 45, 700, 20, 0.035, *_CME),
        Root("AAPL", "XNAS.ITCH", 2, "equity", 185.0, 0.014, 10_000_000, 80, 35_000),
        Root("MSFT", "XNAS.ITCH", 2, "equity", 375.0, 0.013, 10_000_000, 60, 15_000),
        Root("NVDA", "XNAS.ITCH", 2, "equity", 500.0, 0.028, 10_000_000, 110, 40_000),
    )
}


def quarterly_listing(year: int, month: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(activation, expiration) in UTC of the CME equity-index quarterly future of ``month`` ``year``.

    It expires on the third Friday of its month at 09:30 New York time (the Special Opening Quotation:
    13:30 UTC in summer, 14:30 in winter) and is listed when the contract five quarters before it
    expires (CME keeps five quarterly months listed), as Databento's definitions show (ESH1: activation
    2019-12-20 14:30, expiration 2021-03-19 13:30 UTC)."""

    def third_friday_0930(y: int, m: int) -> pd.Timestamp:
        first = dt.date(y, m, 1)
        day = first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)
        return pd.Timestamp(dt.datetime.combine(day, dt.time(9, 30), tzinfo=ZoneInfo("America/New_York")))

    before = year * 12 + month - 1 - 15  # five quarters earlier, as a month count
    activation = third_friday_0930(before // 12, before % 12 + 1)
    return activation.tz_convert("UTC").as_unit("ns"), third_friday_0930(year, month).tz_convert("UTC").as_unit("ns")


_H4, _M4, _U4, _Z4 = (quarterly_listing(2024, m) for m in (3, 6, 9, 12))
INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("ESH4", 400001, ROOTS["ES"], *_H4),
    Instrument("ESM4", 400002, ROOTS["ES"], *_M4),
    Instrument("NQH4", 400003, ROOTS["NQ"], *_H4),
    Instrument("NQM4", 400004, ROOTS["NQ"], *_M4),
    Instrument("ESU4", 400005, ROOTS["ES"], *_U4),
    Instrument("ESZ4", 400006, ROOTS["ES"], *_Z4),
    Instrument("NQU4", 400007, ROOTS["NQ"], *_U4),
    Instrument("NQZ4", 400008, ROOTS["NQ"], *_Z4),
    Instrument("AAPL", 500001, ROOTS["AAPL"]),
    Instrument("MSFT", 500002, ROOTS["MSFT"]),
    Instrument("NVDA", 500003, ROOTS["NVDA"]),
)
PARENTS: dict[str, str] = {"ES.FUT": "ES", "NQ.FUT": "NQ"}
CONTINUOUS: dict[str, str] = {"ES.c.0": "ES", "NQ.c.0": "NQ"}
DATASETS: tuple[str, ...] = ("GLBX.MDP3", "XNAS.ITCH")
_STYPES = (SType.RAW_SYMBOL, SType.PARENT, SType.CONTINUOUS, SType.INSTRUMENT_ID)

# --- symbology ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def front(root: str, day: dt.date) -> Instrument | None:
    """The front contract of ``root`` on ``day``: it rolls the day before expiration."""
    for inst in sorted((i for i in INSTRUMENTS if i.root.name == root), key=lambda i: str(i.expiration)):
        if inst.expiration is not None and inst.listed(day) and day < inst.expiration.date() - dt.timedelta(days=1):
            return inst
    return None


def symbol_table(stype: SType) -> dict[str, str]:
    """symbol -> dataset for every symbol the sample provider knows under ``stype``."""
    if stype is SType.RAW_SYMBOL:
        return {i.symbol: i.dataset for i in INSTRUMENTS}
    if stype is SType.INSTRUMENT_ID:
        return {str(i.instrument_id): i.dataset for i in INSTRUMENTS}
    names = PARENTS if stype is SType.PARENT else CONTINUOUS
    return {s: ROOTS[r].dataset for s, r in names.items()}


def resolve(symbol: str, stype: SType, day: dt.date) -> list[Instrument]:
    """The instruments ``symbol`` stands for on ``day`` (empty if none is listed then)."""
    if stype is SType.CONTINUOUS:
        inst = front(CONTINUOUS[symbol], day)
        return [] if inst is None else [inst]
    if stype is SType.PARENT:
        return [i for i in INSTRUMENTS if i.root.name == PARENTS[symbol] and i.listed(day)]
    key = "instrument_id" if stype is SType.INSTRUMENT_ID else "symbol"
    return [i for i in INSTRUMENTS if str(getattr(i, key)) == symbol and i.listed(day)]


def validate_symbols(symbols: Sequence[str], stype: SType) -> str:
    """Check ``symbols`` against the universe for ``stype``; return their (single) dataset.

    Raises ValidationError for an unknown symbol (naming the stype_in it belongs to, if any) or symbols
    of several datasets."""
    table = symbol_table(stype)
    for sym in symbols:
        if sym in table:
            continue
        for other in _STYPES:
            if other is not stype and sym in symbol_table(other):
                raise ValidationError(f"symbol {sym!r} is a {other} symbol, not a {stype} one: use stype_in={other}")
        raise ValidationError(
            f"unknown symbol {sym!r} for stype_in={stype}: the sample provider knows "
            f"{', '.join(sorted(table))} (see SampleProvider.universe())"
        )
    datasets = sorted({table[s] for s in symbols})
    if len(datasets) > 1:
        detail = "; ".join(f"{d}: {','.join(s for s in symbols if table[s] == d)}" for d in datasets)
        raise ValidationError(f"symbols span several datasets ({detail}): request one dataset at a time")
    return datasets[0]


def mappings(symbols: Sequence[str], stype: SType, days: Sequence[dt.date]) -> dict[str, list[Interval]]:
    """Databento-style mappings: symbol -> [(start_date, end_date exclusive, instrument_id)]."""
    out: dict[str, list[Interval]] = {}
    after = days[-1] + dt.timedelta(days=1)
    for sym in symbols:
        runs: list[Interval] = []
        since: dict[int, dt.date] = {}  # instrument_id -> first day of its current run
        for day in [*days, after]:
            ids = {i.instrument_id for i in resolve(sym, stype, day)} if day != after else set()
            runs += [(since.pop(iid), day, iid) for iid in [k for k in since if k not in ids]]
            since.update({iid: day for iid in ids if iid not in since})
        out[sym] = sorted(runs, key=lambda r: (r[0], int(r[2])))
    return out


# --- randomness and the shared price path ------------------------------------------------------

_EPOCH = dt.date(1970, 1, 1).toordinal()


def _day_ns(day: dt.date) -> int:
    return (day.toordinal() - _EPOCH) * DAY_NS


def _key(parts: tuple[object, ...]) -> bytes:
    return "|".join(map(str, parts)).encode()


def _rng(*parts: object) -> np.random.Generator:
    """A Generator seeded from a stable hash of ``parts`` (never Python's ``hash()``)."""
    seed = int.from_bytes(hashlib.blake2b(_key(parts), digest_size=16).digest(), "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))


def _bytes(n: int, *parts: object) -> npt.NDArray[np.uint8]:
    """``n`` pseudo-random bytes: SHAKE-128 of ``parts`` (the bars' hot path; no Generator setup)."""
    return np.frombuffer(hashlib.shake_128(_key(parts)).digest(n), np.uint8)


#: byte -> exp(0.45 z) at the byte's normal quantile: cheap lognormal noise for volumes
_LOGNORMAL = np.exp(0.45 * np.array([statistics.NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)]))
_RAMP = np.linspace(0.0, 1.0, STEPS + 1)


def _profile(kind: str) -> npt.NDArray[np.float64]:
    """Relative activity per minute of a winter UTC day (drives volume, trade rate and volatility)."""
    m = np.arange(1440)
    if kind == "future":
        cuts, levels = [810, 870, 900, 1200, 1260, 1320, 1380], [0.12, 0.4, 1.6, 1.0, 1.4, 0.25, 0.05]
    else:
        cuts, levels = [870, 900, 1230, 1260], [0.3, 2.0, 0.8, 1.8]
    return np.select([m < c for c in cuts], levels, 0.12 if kind == "future" else 0.3)


def _shifted(profile: npt.NDArray[np.float64], summer: bool) -> npt.NDArray[np.float64]:
    # DST moves the local day an hour earlier in UTC: the summer profile at m is the winter one at m + 60
    out = np.roll(profile, -60) if summer else profile
    out.flags.writeable = False
    return out


_PROFILES = {(k, summer): _shifted(_profile(k), summer) for k in ("future", "equity") for summer in (False, True)}
_STEP_VOL = {k: np.repeat(np.sqrt(p / p.sum() / PER_MIN), PER_MIN) for k, p in _PROFILES.items()}


def _local_ns(root: Root, day: dt.date, at: dt.time) -> int:
    """UTC nanoseconds of local time ``at`` on ``day`` in the exchange's time zone."""
    return int(dt.datetime.combine(day, at, tzinfo=ZoneInfo(root.tz)).timestamp()) * NS


def _summer(root: Root, day: dt.date) -> bool:
    """True when the exchange's local time is on DST at noon of ``day``."""
    return bool(dt.datetime.combine(day, dt.time(12), tzinfo=ZoneInfo(root.tz)).dst())


@functools.lru_cache(maxsize=4096)
def _open_minutes(root: Root, day: dt.date) -> npt.NDArray[np.bool_]:
    """Which minutes of UTC ``day`` lie in a session of the product's calendar, outside its daily halt."""
    try:
        mask = open_minutes(root.calendar, day)
    except ValidationError:  # beyond the calendar's range (2000 to a year ahead) the sample knows no session
        mask = np.zeros(1440, dtype=bool)
    if root.halt is not None:
        t = _day_ns(day) + np.arange(1440, dtype=np.int64) * MIN_NS
        # the local day's halt lies inside this UTC day (US exchanges: local afternoon = UTC evening)
        mask &= (t < _local_ns(root, day, root.halt[0])) | (t >= _local_ns(root, day, root.halt[1]))
    mask.flags.writeable = False
    return mask


@functools.lru_cache(maxsize=4096)
def _session(root: Root, day: dt.date) -> tuple[int, int] | None:
    """(open, close) in UTC nanoseconds of the session labelled ``day``, None when ``day`` has none."""
    try:
        found = sessions(root.calendar, day, day)
    except ValidationError:  # beyond the calendar's range: no session (as in _open_minutes)
        return None
    if found.empty:
        return None
    return int(found["open"].iloc[0].value), int(found["close"].iloc[0].value)


@functools.lru_cache(maxsize=1024)
def _previous_session(root: Root, day: dt.date) -> dt.date:
    """The session before ``day`` (the calendar's, within the last three weeks)."""
    found = sessions(root.calendar, day - dt.timedelta(days=21), day - dt.timedelta(days=1))
    return found["session"].iloc[-1].date()


@functools.lru_cache(maxsize=1024)
def minute_mask(inst: Instrument, day: dt.date) -> npt.NDArray[np.bool_]:
    """Which minutes of UTC ``day`` are in the instrument's trading session (read-only)."""
    mask = _open_minutes(inst.root, day)
    if inst.activation is not None and inst.expiration is not None:
        t = _day_ns(day) + np.arange(1440, dtype=np.int64) * MIN_NS
        mask = mask & (t >= inst.activation.value) & (t < inst.expiration.value)
        mask.flags.writeable = False
    return mask


@functools.lru_cache(maxsize=4096)
def _anchor(root: Root, day: dt.date) -> float:
    """Log spot price at 00:00 UTC of ``day``: slow cycles plus a little daily noise."""
    n = day.toordinal()
    ph = _rng(root.name, "phases").uniform(0, 2 * np.pi, 3)
    cyc = 0.03 * np.sin(2 * np.pi * n / 173 + ph[0]) + 0.02 * np.sin(2 * np.pi * n / 41 + ph[1])
    cyc += 0.01 * np.sin(2 * np.pi * n / 9 + ph[2])
    u = (int.from_bytes(_bytes(8, root.name, day, "anchor").tobytes(), "little") + 0.5) / 2**64
    return float(np.log(root.price) + cyc + 0.004 * statistics.NormalDist().inv_cdf(u))


@functools.lru_cache(maxsize=32)  # ~280 kB each
def _spot(root: Root, day: dt.date) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Spot price every 5 s over the day (STEPS + 1 points) and a (12, 1440) by-minute copy.

    A +-sigma random walk (sigma following the activity profile), bridged from this day's anchor
    to the next day's so consecutive days join up."""
    up = np.unpackbits(_bytes(STEPS // 8, root.name, day, "path")).view(bool)
    p0, p1 = np.exp(_anchor(root, day)), np.exp(_anchor(root, day + dt.timedelta(days=1)))
    step = _STEP_VOL[root.kind, _summer(root, day)] * (root.vol * (p0 + p1) / 2)
    path = np.empty(STEPS + 1)
    path[0] = 0.0
    np.cumsum(np.where(up, step, -step), out=path[1:])
    path += p0 + _RAMP * (p1 - p0 - path[-1])
    grid = np.ascontiguousarray(path[:-1].reshape(1440, PER_MIN).T)
    path.flags.writeable = grid.flags.writeable = False
    return path, grid


def _ticks(inst: Instrument, day: dt.date, spot: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The instrument's price in (float) ticks for spot prices ``spot`` (futures add carry)."""
    carry = 1.0
    if inst.expiration is not None:
        carry = float(np.exp(inst.root.carry * max((inst.expiration.date() - day).days, 0) / 365.25))
    return spot * (carry * 1e9 / inst.root.tick)


def _at(inst: Instrument, day: dt.date, seconds: npt.NDArray[np.integer | np.floating]) -> npt.NDArray[np.float64]:
    """Float ticks at ``seconds`` after midnight, interpolated on the 5 s path."""
    return _ticks(inst, day, np.interp(seconds / STEP_S, np.arange(STEPS + 1), _spot(inst.root, day)[0]))


# --- the roll: volume, then open interest, move from the expiring contract to the next -----------

#: Sessions before the nearest contract's expiration over which its volume moves to the next contract
#: (none moved 13 sessions out, all 4 out: level at 8.5) and its open interest follows (9 out to expiry:
#: level between 5 and 4 out), so a volume rule rolls before an open-interest rule, and both before the
#: calendar rule (after the last full session, i.e. on expiration day).
VOLUME_ROLL, OI_ROLL = (13, 4), (9, 0)
#: Further contracts trade 3% of the root's volume and hold 2% of its open interest each; 10% of the
#: expiring contract's open interest is still held at expiration (and cash settled).
_DEFERRED_VOLUME, _DEFERRED_OI, _EXPIRING_OI = 0.03, 0.02, 0.10
_OPEN_INTEREST = 900  # the nearest contract's open interest, in minutes of volume at activity 1


@functools.lru_cache(maxsize=4096)
def _chain(root: Root, day: dt.date) -> tuple[Instrument, ...]:
    """The root's contracts listed on ``day``, nearest expiration first."""
    listed = [i for i in INSTRUMENTS if i.root == root and i.expiration is not None and i.listed(day)]
    return tuple(sorted(listed, key=lambda i: str(i.expiration)))


@functools.lru_cache(maxsize=64)
def _last_month(root: Root, last: dt.date) -> tuple[dt.date, ...]:
    """The product's sessions in the 31 days up to and including ``last``."""
    return tuple(s.date() for s in sessions(root.calendar, last - dt.timedelta(days=31), last)["session"])


def _sessions_left(root: Root, day: dt.date, last: dt.date) -> int:
    """The product's sessions after ``day`` up to and including ``last`` (0 on ``last``); more than a
    month before ``last``, its calendar days instead (beyond every roll window either way)."""
    if (last - day).days > 31:
        return (last - day).days
    found = _last_month(root, last)
    return len(found) - bisect.bisect_right(found, day)


def _moved(window: tuple[int, int], left: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The fraction moved to the next contract ``left`` sessions before the nearest one expires: a
    smoothstep from 0 at ``window[0]`` sessions to 1 at ``window[1]``."""
    t = np.clip((window[0] - np.asarray(left, np.float64)) / (window[0] - window[1]), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _roll(inst: Instrument, day: dt.date) -> tuple[int, int | None]:
    """(rank of the listed future ``inst`` on ``day``, 0 for the nearest expiration; sessions after
    ``day`` until the nearest contract expires, None when the universe lists no contract after it to
    roll into)."""
    chain = _chain(inst.root, day)
    nearest = chain[0].expiration
    assert nearest is not None
    left = _sessions_left(inst.root, day, nearest.date()) if len(chain) > 1 else None
    return chain.index(inst), left


def _activity(inst: Instrument, day: dt.date) -> npt.NDArray[np.float64]:
    """Per-minute activity. A future's share of its root's volume follows the roll (:data:`VOLUME_ROLL`):
    the nearest contract trades all of it and the next one 3% until the roll, which moves the rest to
    the next; further contracts trade 3%. Minutes from the evening reopen on belong to the next session
    and take its share."""
    act = _PROFILES[inst.root.kind, _summer(inst.root, day)]
    if inst.expiration is None:
        return act
    rank, left = _roll(inst, day)
    if rank > 1:
        return act * _DEFERRED_VOLUME
    if left is None:  # no next contract: nothing to roll into
        return act
    assert inst.root.halt is not None
    reopen = (_local_ns(inst.root, day, inst.root.halt[1]) - _day_ns(day)) // MIN_NS
    moved = _moved(VOLUME_ROLL, np.where(np.arange(1440) < reopen, left, left - 1))
    if rank == 0:
        return act * (1.0 - (1.0 - _DEFERRED_VOLUME) * moved)
    return act * (_DEFERRED_VOLUME + (1.0 - _DEFERRED_VOLUME) * moved)


def _open_interest(inst: Instrument, session: dt.date) -> float:
    """The future's open interest at the close of ``session`` (before noise), following the roll
    (:data:`OI_ROLL`) like the volume."""
    rank, left = _roll(inst, session)
    full = inst.root.volume_per_min * _OPEN_INTEREST
    if rank > 1:
        return full * _DEFERRED_OI
    moved = 0.0 if left is None else float(_moved(OI_ROLL, left))
    if rank == 0:
        return full * (1.0 - (1.0 - _EXPIRING_OI) * moved)
    return full * (_DEFERRED_OI + (1.0 - _DEFERRED_OI) * moved)


# --- generators: every function returns the whole UTC day ---------------------------------------


def _stamp(rec: Records, inst: Instrument, ts: npt.NDArray[np.integer]) -> None:
    rec["publisher_id"], rec["instrument_id"], rec["ts_event"] = inst.root.publisher_id, inst.instrument_id, ts


@functools.lru_cache(maxsize=64)
def _minutes(inst: Instrument, day: dt.date) -> tuple[npt.NDArray[np.integer], ...]:
    """(open, high, low, close, volume) for all 1440 minutes; prices in ticks."""
    noise = _bytes(STEPS // 8 + 1440, inst.instrument_id, day, "minutes")
    bounce = np.unpackbits(noise[: STEPS // 8]).reshape(PER_MIN, 1440)  # trade at bid or ask
    px = _ticks(inst, day, _spot(inst.root, day)[1]).astype(np.int64) + bounce
    vol = (inst.root.volume_per_min * _activity(inst, day)) * _LOGNORMAL[noise[STEPS // 8 :]]
    return px[0], px.max(axis=0), px.min(axis=0), px[-1], np.maximum(np.rint(vol), 1).astype(np.uint64)


def _second_times(inst: Instrument, day: dt.date) -> npt.NDArray[np.int64]:
    """Seconds of the day that have a 1 s bar (i.e. at least one trade)."""
    lam = np.repeat(inst.root.trades_per_min * _activity(inst, day) * minute_mask(inst, day), 60)
    hit = _rng(inst.instrument_id, day, "ohlcv-1s", "layout").random(86_400) < -np.expm1(-lam / 20)
    return np.flatnonzero(hit)


def _second_bars(inst: Instrument, day: dt.date) -> tuple[npt.NDArray[np.integer], ...]:
    """(ts_event, open, high, low, close, volume) of the day's 1 s bars; prices in ticks."""
    secs = _second_times(inst, day)
    rng, n = _rng(inst.instrument_id, day, "ohlcv-1s", "values"), len(secs)
    o = np.maximum(np.rint(_at(inst, day, secs) + 0.4 * rng.standard_normal(n)), 1).astype(np.int64)
    c = np.maximum(np.rint(_at(inst, day, secs + 1) + 0.4 * rng.standard_normal(n)), 1).astype(np.int64)
    h = np.maximum(o, c) + rng.geometric(0.7, n) - 1
    lo = np.maximum(np.minimum(o, c) - rng.geometric(0.7, n) + 1, 1)
    v = rng.geometric(0.3, n) * (1 if inst.root.kind == "future" else 100)
    return _day_ns(day) + secs * NS, o, h, lo, c, v


def _bars(inst: Instrument, day: dt.date, schema: Schema) -> tuple[npt.NDArray[np.integer], ...]:
    """(ts_event, open, high, low, close, volume) of the day's bars; prices in ticks."""
    if schema is Schema.OHLCV_1S:
        return _second_bars(inst, day)
    day_ns = _day_ns(day)
    o, h, lo, c, v = _minutes(inst, day)
    idx = np.flatnonzero(minute_mask(inst, day))
    if schema is Schema.OHLCV_1M or not len(idx):
        return day_ns + idx * MIN_NS, o[idx], h[idx], lo[idx], c[idx], v[idx]
    group = idx // (schema.bar_seconds // 60)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], len(idx)] - 1
    return (
        day_ns + group[starts] * schema.bar_seconds * NS,
        o[idx][starts],
        np.maximum.reduceat(h[idx], starts),
        np.minimum.reduceat(lo[idx], starts),
        c[idx][ends],
        np.add.reduceat(v[idx], starts),
    )


def _trade_times(inst: Instrument, day: dt.date) -> npt.NDArray[np.int64]:
    """Sorted trade ts_event (ns): Poisson counts per minute, uniform inside the minute."""
    rng = _rng(inst.instrument_id, day, "trades", "times")
    counts = rng.poisson(inst.root.trades_per_min * _activity(inst, day) * minute_mask(inst, day))
    minute = np.repeat(np.arange(1440, dtype=np.int64), counts)
    offsets = rng.integers(0, MIN_NS - 1_000_000, len(minute))  # ts_recv stays inside the day
    return np.sort(_day_ns(day) + minute * MIN_NS + offsets)


def _trades(inst: Instrument, day: dt.date, schema: Schema) -> Records:
    """Trades (aggressor side, at the bid or ask); tbbo adds the BBO just before each trade."""
    ts = _trade_times(inst, day)
    rng, n, tick = _rng(inst.instrument_id, day, "trades", "values"), len(ts), inst.root.tick
    mid, future = _at(inst, day, (ts - _day_ns(day)) / NS), inst.root.kind == "future"
    spread = np.ones(n, np.int64) if future else np.minimum(rng.geometric(0.7, n), 5)
    bid = np.maximum(np.rint(mid - spread / 2).astype(np.int64), 1)
    ask, buy = bid + spread, rng.random(n) < 0.5
    if future:
        size = rng.geometric(0.45, n) * np.where(rng.random(n) < 0.03, rng.integers(5, 50, n), 1)
    else:
        size = np.where(rng.random(n) < 0.4, rng.integers(1, 100, n), 100 * rng.geometric(0.55, n))
    rec = empty_records(schema, n)
    _stamp(rec, inst, ts)
    rec["price"], rec["size"] = np.where(buy, ask, bid) * tick, size
    rec["action"], rec["side"], rec["depth"], rec["flags"] = b"T", np.where(buy, b"B", b"A"), 0, 0
    rec["ts_recv"] = ts + rng.integers(150_000, 450_000, n)
    rec["ts_in_delta"] = rng.integers(12_000, 30_000, n)
    rec["sequence"] = 1_000 + np.cumsum(rng.integers(1, 40, n))
    if schema is Schema.TBBO:
        book, lot = _rng(inst.instrument_id, day, "tbbo", "book"), 1 if future else 100
        rest = book.geometric(0.12, (2, n)) * lot
        bid_sz = np.where(buy, rest[0], size + rest[0] - lot)  # the side hit holds >= the trade
        ask_sz = np.where(buy, size + rest[1] - lot, rest[1])
        rec["bid_px_00"], rec["ask_px_00"] = bid * tick, ask * tick
        rec["bid_sz_00"], rec["ask_sz_00"] = bid_sz, ask_sz
        rec["bid_ct_00"] = np.clip(np.ceil(bid_sz / lot * book.uniform(0.3, 1.0, n)), 1, bid_sz)
        rec["ask_ct_00"] = np.clip(np.ceil(ask_sz / lot * book.uniform(0.3, 1.0, n)), 1, ask_sz)
    return rec


def _statistics(inst: Instrument, day: dt.date) -> Records:
    """Futures, on session days: session high/low and settlement (30 min before the daily halt or an
    early close, 21:15/21:30 UTC in winter; 15 min after expiration on expiration day), cleared volume
    and open interest of the previous session (11:00); and the opening price at the 17:00 Chicago
    reopen. Equities: opening and closing prices at the session's open and close. UNDEF price/quantity
    where unused."""
    root, day_ns, tick = inst.root, _day_ns(day), inst.root.tick
    rng, mask, session = _rng(inst.instrument_id, day, "statistics"), minute_mask(inst, day), _session(root, day)
    q_, t_ = UNDEF_STAT_QUANTITY, UNDEF_TIMESTAMP

    def px(minute: int) -> int:
        return int(np.rint(_at(inst, day, np.array([minute * 60]))[0])) * tick

    def minute_of(ns: int) -> int:
        return int((ns - day_ns) // MIN_NS)

    rows: list[tuple[int, int, int, int, int, int]] = []  # minute, stat_type, price, qty, ts_ref, flags
    if root.kind == "equity":
        if session is not None:
            first, close = minute_of(session[0]), minute_of(session[1])
            rows += [(first, 1, px(first), q_, t_, 255), (close, 11, px(close - 1), q_, t_, 255)]
    else:
        assert inst.expiration is not None and root.halt is not None
        if session is not None:
            settle = minute_of(min(session[1], _local_ns(root, day, root.halt[0]))) - 30
            if inst.expiration.date() == day:
                settle = minute_of(inst.expiration.value) + 15
            steps = np.flatnonzero(mask[: settle - 15]) * PER_MIN
            if len(steps):
                prices = _ticks(inst, day, _spot(root, day)[0][steps])
                hi, lo = int(np.rint(prices.max())) * tick, int(np.rint(prices.min())) * tick
                rows += [
                    (settle - 15, 5, hi, q_, t_, 255),
                    (settle - 15, 4, lo, q_, t_, 255),
                    (settle, 3, px(settle), q_, day_ns, 3),
                ]  # settlement: final | actual
            prev = _previous_session(root, day)
            if inst.listed(prev):
                cleared = int(_minutes(inst, prev)[4][minute_mask(inst, prev)].sum())
                oi = _open_interest(inst, prev) * rng.uniform(0.98, 1.02)
                rows += [
                    (660, 6, UNDEF_PRICE, cleared, _day_ns(prev), 255),
                    (660, 9, UNDEF_PRICE, int(oi), _day_ns(prev), 255),
                ]
        reopen = minute_of(_local_ns(root, day, root.halt[1]))
        if reopen < 1440 and mask[reopen]:
            rows.append((reopen, 1, px(reopen), q_, t_, 255))
    rows.sort(key=lambda r: r[0])
    n = len(rows)
    rec = empty_records(Schema.STATISTICS, n)
    if n:
        minute, stat, price, qty, ref, flags = (list(c) for c in zip(*rows, strict=True))
        ts = day_ns + np.array(minute, np.int64) * MIN_NS + np.sort(rng.integers(1_000_000, 900_000_000, n))
        _stamp(rec, inst, ts)
        rec["stat_type"], rec["price"], rec["quantity"] = stat, price, qty
        rec["ts_ref"], rec["stat_flags"] = np.array(ref, np.uint64), flags
        rec["ts_recv"] = ts + rng.integers(150_000, 450_000, n)
        rec["ts_in_delta"] = rng.integers(12_000, 30_000, n)
        rec["sequence"], rec["channel_id"], rec["update_action"] = 500 + np.arange(n) * 7, 0, 1
    return rec


def _definition(inst: Instrument, day: dt.date) -> Records:
    """The day's instrument definition, stamped 00:00 UTC (ts_event = ts_recv)."""
    rec, root, t0 = empty_records(Schema.DEFINITION, 1), inst.root, _day_ns(day)
    ref = float(_ticks(inst, day, np.exp(np.array(_anchor(root, day)))))
    fields: dict[str, object] = dict(
        publisher_id=root.publisher_id,
        instrument_id=inst.instrument_id,
        ts_event=t0,
        ts_recv=t0,
        min_price_increment=root.tick,
        raw_instrument_id=inst.instrument_id,
        currency=b"USD",
        raw_symbol=inst.symbol.encode(),
        match_algorithm=b"F",
        security_update_action=b"A",
        channel_id=0,
        user_defined_instrument=b"N",
    )
    if root.kind == "future":
        assert inst.activation is not None and inst.expiration is not None
        fields.update(
            display_factor=10_000_000,
            expiration=inst.expiration.value,
            activation=inst.activation.value,
            high_limit_price=int(ref * 1.07) * root.tick,
            low_limit_price=int(ref * 0.93) * root.tick,
            max_price_variation=24 * root.tick,
            unit_of_measure_qty=root.multiplier * NS,
            min_price_increment_amount=root.tick * root.multiplier // 100,
            market_depth=10,
            market_depth_implied=2,
            market_segment_id=64,
            max_trade_vol=3000,
            min_trade_vol=1,
            appl_id=310,
            maturity_year=inst.expiration.year,
            maturity_month=inst.expiration.month,
            group=root.name.encode(),
            exchange=b"XCME",
            asset=root.name.encode(),
            cfi=b"FFIXSX",
            security_type=b"FUT",
            unit_of_measure=b"IPNT",
            instrument_class=b"F",
            underlying_product=5,
        )
    else:
        fields.update(
            display_factor=NS,
            min_lot_size_round_lot=100,
            exchange=b"XNAS",
            asset=inst.symbol.encode(),
            cfi=b"ESVUFR",
            security_type=b"STK",
            instrument_class=b"K",
        )
    for name, value in fields.items():
        rec[name] = value
    return rec


def day_records(inst: Instrument, day: dt.date, schema: Schema) -> Records:
    """All of ``inst``'s records on UTC ``day`` for ``schema``, sorted by ts_event."""
    if not inst.listed(day):
        return empty_records(schema, 0)
    if schema is Schema.DEFINITION:
        return _definition(inst, day)
    if schema is Schema.STATISTICS:
        return _statistics(inst, day)
    if schema in (Schema.TRADES, Schema.TBBO):
        return _trades(inst, day, schema)
    ts, o, h, lo, c, v = _bars(inst, day, schema)
    rec = empty_records(schema, len(ts))
    _stamp(rec, inst, ts)
    for name, ticks in (("open", o), ("high", h), ("low", lo), ("close", c)):
        rec[name] = ticks * inst.root.tick
    rec["volume"] = v
    return rec


def day_times(inst: Instrument, day: dt.date, schema: Schema) -> npt.NDArray[np.int64]:
    """The ts_event of :func:`day_records` without computing prices (for exact counts)."""
    if not inst.listed(day):
        return np.empty(0, np.int64)
    if schema is Schema.OHLCV_1S:
        return _day_ns(day) + _second_times(inst, day) * NS
    if schema.is_bar:
        bars = np.unique(np.flatnonzero(minute_mask(inst, day)) // (schema.bar_seconds // 60))
        return _day_ns(day) + bars.astype(np.int64) * schema.bar_seconds * NS
    if schema in (Schema.TRADES, Schema.TBBO):
        return _trade_times(inst, day)
    return day_records(inst, day, schema)["ts_event"].astype(np.int64)


def clear_caches() -> None:
    """Forget every memoised symbology answer and price path (records are pure: they come back the same)."""
    memoised = (front, minute_mask, _open_minutes, _session, _previous_session, _anchor, _spot, _minutes)
    for cached in (*memoised, _chain, _last_month):
        cached.cache_clear()


# --- the provider ------------------------------------------------------------------------------


def universe() -> pd.DataFrame:
    """Every symbol the sample provider knows: one row per (symbol, stype)."""
    rows: list[dict[str, object]] = [
        dict(
            symbol=i.symbol,
            stype="raw_symbol",
            dataset=i.dataset,
            publisher_id=i.root.publisher_id,
            instrument_id=i.instrument_id,
            resolves_to=i.symbol,
            tick=i.root.tick / NS,
            expiration=None if i.expiration is None else i.expiration.date(),
        )
        for i in INSTRUMENTS
    ]
    for table, stype in ((PARENTS, "parent"), (CONTINUOUS, "continuous")):
        for sym, root in table.items():
            kids = ",".join(i.symbol for i in INSTRUMENTS if i.root.name == root)
            rows.append(
                dict(
                    symbol=sym,
                    stype=stype,
                    dataset=ROOTS[root].dataset,
                    publisher_id=ROOTS[root].publisher_id,
                    instrument_id=None,
                    resolves_to=kids if stype == "parent" else f"front of {kids}",
                    tick=ROOTS[root].tick / NS,
                    expiration=None,
                )
            )
    df = pd.DataFrame(rows)
    df["instrument_id"] = pd.array(df["instrument_id"].tolist(), dtype="Int64")
    return df


class SampleProvider(LocalProvider):
    """Offline provider of deterministic, realistic sample data (see the module docstring)."""

    name = "sample"

    def __init__(self, compress: bool = False) -> None:
        self.compress = compress  # zstd like Databento's downloads; off by default (pure overhead here)

    @staticmethod
    def universe() -> pd.DataFrame:
        """The known symbols (see :func:`universe`)."""
        return universe()

    def plan(self, request: IngestRequest) -> list[Chunk]:
        """Chunks of ``[start, end)`` (clipped to it), all symbols together: one per UTC day for
        ticks and 1s/1m bars, one per calendar month for the sparse schemas (1h/1d bars,
        statistics, definitions).

        Raises ValidationError on a missing or unknown schema or stype_in, no or unknown symbols, symbols
        of several datasets, a dataset they are not in, or a bad range."""
        if request.schema is None:
            raise ValidationError(f"schema is required: use one of {', '.join(SCHEMAS)}")
        schema = check_provided(parse_enum(Schema, request.schema, "schema"), self.name)
        stype = parse_enum(SType, request.stype_in, "stype_in")
        symbols = tuple(sorted(dict.fromkeys(request.symbols)))
        if not symbols:
            raise ValidationError(
                f"symbols are required for the sample provider: pick from {', '.join(universe()['symbol'])}"
            )
        start, end = parse_range(request.start, request.end)
        dataset = validate_symbols(symbols, stype)
        if request.dataset is not None and request.dataset.strip().upper() != dataset:
            raise ValidationError(
                f"dataset={request.dataset!r} does not match symbols {','.join(symbols)}, which are in "
                f"{dataset}: use dataset={dataset} or leave it out (sample datasets: {', '.join(DATASETS)})"
            )
        return plan_chunks(self.name, dataset, schema, stype, symbols, start, end)

    def _instruments(self, chunk: Chunk, day: dt.date) -> list[Instrument]:
        found = {i.instrument_id: i for s in chunk.symbols for i in resolve(s, SType(chunk.stype_in), day)}
        return [found[k] for k in sorted(found)]

    def records(self, chunk: Chunk) -> Records:
        """The chunk's records (numpy, DBN dtype), sorted by (ts_event, instrument_id)."""
        validate_symbols(chunk.symbols, SType(chunk.stype_in))
        schema, lo, hi = Schema(chunk.schema), chunk.start.value, chunk.end.value
        parts: list[Records] = []
        for day in utc_days(chunk.start, chunk.end):
            day_parts = []
            for inst in self._instruments(chunk, day):
                rec = day_records(inst, day, schema)
                ts = rec["ts_event"]
                clip = len(rec) and (ts[0] < lo or ts[-1] >= hi)
                day_parts.append(rec[(ts >= lo) & (ts < hi)] if clip else rec)
            if len(day_parts) > 1:
                recs = np.concatenate(day_parts)
                parts.append(recs[np.argsort(recs["ts_event"], kind="stable")])
            else:
                parts += day_parts
        return np.concatenate(parts) if parts else empty_records(schema, 0)

    def fetch(self, chunk: Chunk) -> Fetch:
        """Yield one DBNStore with the chunk's records and Databento-style symbology metadata."""
        records, days, stype = self.records(chunk), utc_days(chunk.start, chunk.end), SType(chunk.stype_in)
        hits = {s: sum(1 for d in days if resolve(s, stype, d)) for s in chunk.symbols}
        maps = {s: iv for s, iv in mappings(chunk.symbols, stype, days).items() if iv}
        data = encode_dbn(
            dataset=chunk.dataset,
            schema=chunk.schema,
            stype_in=stype,
            start=chunk.start,
            end=chunk.end,
            symbols=list(chunk.symbols),
            mappings=maps,
            records=records,
            compress=self.compress,
            partial=[s for s in chunk.symbols if 0 < hits[s] < len(days)],
            not_found=[s for s in chunk.symbols if hits[s] == 0],
        )
        yield store_from_bytes(data, f"sample {chunk.describe()}")

    def estimate(self, chunk: Chunk) -> CostEstimate:
        """Exact record count (from timestamps only, no prices) at no cost."""
        validate_symbols(chunk.symbols, SType(chunk.stype_in))
        schema, lo, hi, n = Schema(chunk.schema), chunk.start.value, chunk.end.value, 0
        for day in utc_days(chunk.start, chunk.end):
            for inst in self._instruments(chunk, day):
                ts = day_times(inst, day, schema)
                n += int(np.searchsorted(ts, hi) - np.searchsorted(ts, lo))
        size = n * empty_records(schema, 0).itemsize
        return CostEstimate(chunk=chunk, records=n, bytes=size, cost_usd=0.0)
