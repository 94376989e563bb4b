"""IB historical-data pacing: split ranges into IB's maximum request durations and schedule requests
so that no pacing rule is ever broken (instead of waiting for error 162).

The rules (IB "Historical Data Limitations"), all checked by :class:`Pacer` before each request:

- at most 60 requests in any 10-minute window;
- no identical request (same contract, exchange, tick type, bar size, end and duration) within 15 s;
- fewer than 6 requests for the same contract, exchange and tick type within 2 s;
- BID_ASK requests count double in the two counting rules above;
- at most 50 requests open at once;
- about 50 API messages per second overall.

Time comes from a :class:`Clock` (``now``/``sleep``), so tests and the planner run the same code on a
virtual clock. :func:`schedule` simulates a whole plan and gives each request its earliest start:
the last one is the plan's minimum wall time.

A :class:`Pacer` knows what its own process sent. On a cluster every worker's copy of the provider paces through a
:class:`SharedPacer` instead: the same rules over the requests *every* worker sent, read from and booked in a
shared :class:`~hdi_lab.providers.base.Ledger` (the database) under one lock, on the ledger's clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from hdi_lab.errors import ValidationError
from hdi_lab.providers.base import Ledger, LedgerEntry
from hdi_lab.schemas import Schema

__all__ = [
    "BAR_SIZES",
    "MAX_SECONDS",
    "Clock",
    "HistRequest",
    "Pacer",
    "Rules",
    "SharedPacer",
    "VirtualClock",
    "duration_string",
    "format_duration",
    "naive_seconds",
    "schedule",
    "split_range",
    "violations",
]

#: IB bar size setting per schema.
BAR_SIZES: dict[Schema, str] = {
    Schema.OHLCV_1S: "1 secs",
    Schema.OHLCV_5S: "5 secs",
    Schema.OHLCV_1M: "1 min",
    Schema.OHLCV_1H: "1 hour",
    Schema.OHLCV_1D: "1 day",
}

#: Longest duration (seconds) of one request per bar size, from IB's duration/bar-size table
#: (1 secs: 1800 S; 5 secs: 3600 S; 1 min: 1 D; 1 hour: 1 M; 1 day: 1 Y).
MAX_SECONDS: dict[Schema, int] = {
    Schema.OHLCV_1S: 1800,
    Schema.OHLCV_5S: 3600,
    Schema.OHLCV_1M: 86_400,
    Schema.OHLCV_1H: 30 * 86_400,
    Schema.OHLCV_1D: 365 * 86_400,
}


@dataclass(frozen=True)
class Rules:
    """IB's historical-data pacing rules; ``margin_s`` is added to every wait (clock skew, latency)."""

    window_s: float = 600.0
    window_max: int = 60
    identical_s: float = 15.0
    burst_s: float = 2.0
    burst_max: int = 5  # "fewer than 6"
    max_open: int = 50
    messages_per_s: int = 50
    bid_ask_weight: int = 2
    margin_s: float = 0.0


@dataclass(frozen=True)
class HistRequest:
    """One ``reqHistoricalData`` call (or ``reqHeadTimeStamp`` with ``bar_size="head"``, ``reqRealTimeBars`` with
    ``bar_size="realtime"``: IB counts real-time bar requests against the historical-data pacing limits)."""

    contract: str  # the contract's identity (conId or contract text)
    exchange: str
    what: str  # TRADES | MIDPOINT | BID_ASK
    bar_size: str
    end: pd.Timestamp
    duration: str

    @property
    def identity(self) -> tuple[str, ...]:
        return (self.contract, self.exchange, self.what, self.bar_size, str(self.end.value), self.duration)

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.contract, self.exchange, self.what)

    def weight(self, rules: Rules) -> int:
        return rules.bid_ask_weight if self.what == "BID_ASK" else 1


def duration_string(seconds: float, schema: Schema) -> str:
    """IB ``durationStr`` covering ``seconds``: seconds up to a day for intraday bars, else days."""
    secs = math.ceil(seconds)
    if schema is not Schema.OHLCV_1D and secs <= 86_400:
        return f"{max(secs, 1)} S"
    return f"{max(math.ceil(secs / 86_400), 1)} D"


def split_range(start: pd.Timestamp, end: pd.Timestamp, schema: Schema) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """``[start, end)`` cut into consecutive windows of at most IB's maximum duration for ``schema``.

    Raises ValidationError for a schema IB does not serve."""
    if schema not in MAX_SECONDS:
        raise ValidationError(
            f"schema={schema} is not available from IB: use one of {', '.join(s.value for s in MAX_SECONDS)}"
        )
    step = pd.Timedelta(seconds=MAX_SECONDS[schema])
    out = []
    lo = start
    while lo < end:
        hi = min(lo + step, end)
        out.append((lo, hi))
        lo = hi
    return out


class Clock:
    """Wall-clock time (monotonic) and sleeping; tests inject a virtual clock with the same methods."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock(Clock):
    """A clock that advances only when slept on (planner simulation, tests)."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._t += max(seconds, 0.0)


@dataclass(frozen=True)
class _Sent:
    t: float
    weight: int
    identity: tuple[str, ...]
    group: tuple[str, ...]


#: joins a request's identity and group fields into one ledger text (no field holds it)
_SEP = "\x1f"
_PENALTY = ("penalty",)


class Pacer:
    """Waits (on its clock) until a request may be sent without breaking any rule, then records it."""

    def __init__(self, rules: Rules | None = None, clock: Clock | None = None) -> None:
        self.rules = rules or Rules()
        self.clock = clock or Clock()
        self._sent: deque[_Sent] = deque()
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> int:
        return self._open

    def earliest(self, req: HistRequest, now: float) -> float:
        """The earliest time >= ``now`` at which ``req`` breaks no rule (given what was sent)."""
        r = self.rules
        w = req.weight(r)
        t = now
        while True:
            later = t
            later = max(later, _free_at(self._sent, t, r.window_s, r.window_max - w, lambda s: s.weight))
            later = max(
                later,
                _free_at(
                    [s for s in self._sent if s.group == req.group], t, r.burst_s, r.burst_max - w, lambda s: s.weight
                ),
            )
            later = max(later, _free_at(self._sent, t, 1.0, r.messages_per_s - 1, lambda s: 1))
            same = [s.t for s in self._sent if s.identity == req.identity]
            if same:
                later = max(later, max(same) + r.identical_s)
            if later <= t:
                return t
            t = later + r.margin_s

    def record(self, req: HistRequest, at: float) -> None:
        self._sent.append(_Sent(at, req.weight(self.rules), req.identity, req.group))
        horizon = at - max(self.rules.window_s, self.rules.identical_s) - 1
        while self._sent and self._sent[0].t < horizon:
            self._sent.popleft()

    def acquire(self, req: HistRequest) -> float:
        """Sleep until ``req`` may go, record it as sent and open; returns the send time.

        Raises RuntimeError when the most requests the rules allow are already open (a caller's bug)."""
        with self._lock:
            if self._open >= self.rules.max_open:
                raise RuntimeError(f"{self._open} requests are open: at most {self.rules.max_open} allowed")
            now = self.clock.now()
            at = self.earliest(req, now)
            if at > now:
                self.clock.sleep(at - now)
            at = max(at, self.clock.now())
            self.record(req, at)
            self._open += 1
            return at

    def release(self) -> None:
        with self._lock:
            self._open = max(self._open - 1, 0)

    def penalise(self, until: float) -> None:
        """After a pacing violation: fill the window so nothing is sent before ``until`` (on :attr:`clock`)."""
        with self._lock:
            self._sent.append(_Sent(until - self.rules.window_s, self.rules.window_max, _PENALTY, ("", "", "")))

    def hold(self, seconds: float) -> None:
        """After a pacing violation: send nothing for ``seconds`` from now."""
        self.penalise(self.clock.now() + seconds)


class SharedPacer(Pacer):
    """A :class:`Pacer` over the requests of every process that sends to one gateway (``scope``): each request is
    booked in ``ledger`` under the scope's lock when the rules allow it there and then, on the ledger's clock (the
    database's, the one clock workers on several machines share); else the pacer sleeps (on ``clock``) for what the
    rules say and asks again. A pacing violation holds every process back (:meth:`hold` books a full window).
    Requests of this process go one at a time."""

    def __init__(self, rules: Rules, clock: Clock, ledger: Ledger, scope: str) -> None:
        super().__init__(rules, clock)
        self.ledger, self.scope = ledger, scope

    @property
    def horizon_s(self) -> float:
        """How far back a request's rules look (older ledger entries are dropped)."""
        return max(self.rules.window_s, self.rules.identical_s) + 1.0

    def acquire(self, req: HistRequest) -> float:
        """Wait until ``req`` may go for every process of the scope, book it; returns its time on the ledger's
        clock.

        Raises RuntimeError when the most requests the rules allow are already open (a caller's bug), StorageError
        when the ledger fails."""
        with self._lock:
            if self._open >= self.rules.max_open:
                raise RuntimeError(f"{self._open} requests are open: at most {self.rules.max_open} allowed")
            booked: list[float] = []

            def decide(now: float, entries: list[LedgerEntry]) -> tuple[float, list[LedgerEntry]]:
                self._sent = deque(_Sent(t, w, tuple(i.split(_SEP)), tuple(g.split(_SEP))) for t, w, i, g in entries)
                at = self.earliest(req, now)
                if at > now:
                    return at - now, []
                booked.append(now)
                return 0.0, [(now, req.weight(self.rules), _SEP.join(req.identity), _SEP.join(req.group))]

            while not booked:
                wait = self.ledger.book(self.scope, self.horizon_s, decide)
                if not booked:
                    self.clock.sleep(wait)
            self._open += 1
            return booked[0]

    def hold(self, seconds: float) -> None:
        """After a pacing violation: no process of the scope sends anything for ``seconds`` from now.

        Raises StorageError when the ledger fails."""
        r = self.rules

        def penalty(now: float, entries: list[LedgerEntry]) -> tuple[float, list[LedgerEntry]]:
            return 0.0, [(now + seconds - r.window_s, r.window_max, _SEP.join(_PENALTY), "")]

        with self._lock:
            self.ledger.book(self.scope, self.horizon_s, penalty)

    def penalise(self, until: float) -> None:
        """:meth:`hold` until ``until`` on :attr:`clock`. Raises StorageError when the ledger fails."""
        self.hold(until - self.clock.now())


def _free_at(sent: Iterable[_Sent], t: float, window: float, allowed: int, weight: object) -> float:
    """Earliest time >= t at which the weight sent within the trailing ``window`` is <= ``allowed``."""
    inside = [s for s in sent if t - s.t < window]
    total = sum(weight(s) for s in inside)  # type: ignore[operator]
    if total <= allowed:
        return t
    excess = total - allowed
    for s in sorted(inside, key=lambda x: x.t):
        excess -= weight(s)  # type: ignore[operator]
        if excess <= 0:
            return s.t + window
    return t + window  # unreachable: dropping all of them frees the window


def schedule(requests: Sequence[HistRequest], rules: Rules | None = None) -> list[float]:
    """Earliest start (seconds from 0) of each request, in order, on a virtual clock: requests
    are assumed to answer instantly, so the last start is the plan's minimum wall time."""
    clock = VirtualClock()
    pacer = Pacer(rules, clock)
    starts = []
    for req in requests:
        starts.append(pacer.acquire(req))
        pacer.release()
    return starts


def violations(sent: Sequence[tuple[float, HistRequest]], rules: Rules | None = None) -> list[str]:
    """Every rule broken by requests sent at the given times (a brute-force check for tests)."""
    r = rules or Rules()
    out = []
    for i, (t, req) in enumerate(sent):
        before = [(u, q) for u, q in sent[:i] if u <= t]
        win = sum(q.weight(r) for u, q in before if t - u < r.window_s) + req.weight(r)
        if win > r.window_max:
            out.append(f"request {i} at {t:.3f}: {win} requests in {r.window_s:.0f} s")
        burst = sum(q.weight(r) for u, q in before if q.group == req.group and t - u < r.burst_s) + req.weight(r)
        if burst > r.burst_max:
            out.append(f"request {i} at {t:.3f}: {burst} requests for {req.group} in {r.burst_s:.0f} s")
        if any(q.identity == req.identity and t - u < r.identical_s for u, q in before):
            out.append(f"request {i} at {t:.3f}: identical request within {r.identical_s:.0f} s")
        msgs = sum(1 for u, _ in before if t - u < 1.0) + 1
        if msgs > r.messages_per_s:
            out.append(f"request {i} at {t:.3f}: {msgs} messages in 1 s")
    return out


def naive_seconds(n_requests: int, spacing_s: float = 10.0) -> float:
    """Wall time of the usual naive plan: one request every ``spacing_s`` seconds (600 s / 60)."""
    return max(n_requests - 1, 0) * spacing_s


def format_duration(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {sec:02d} s" if m else f"{sec} s")
