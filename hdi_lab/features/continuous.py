"""Feature sets over back-adjusted continuous futures: ``compute("momentum_v1", ["ES.c.0"], adjust="ratio")``.

The series is the one :func:`hdi_lab.core.continuous.continuous` derives from the stored contracts (the symbol's
letter picks the roll rule: ``ES.c.0`` calendar, ``ES.v.0`` volume, ``ES.n.0`` open interest), read from the root's
first listed contract on, so indicators see no roll jump. Two views of a back-adjusted history:

* **research** (the default): the whole series adjusted once, backward from the latest roll up to ``end``; its
  last contract keeps raw prices. Every value uses that one adjustment, which is only known at ``end``: a new
  roll changes every earlier value (by a factor for ``ratio``, a shift for ``difference``). The variant table
  therefore holds one snapshot per series, recorded with its roll table (``feature_series``): a computation whose
  rolls differ from the stored ones (a new roll, a revised close, an ``end`` before a stored roll) rewrites the
  series from its first bar to ``end``; with the same rolls it writes the bars of ``[start, end)`` only.
  Right for research on a fixed history, wrong as a point-in-time feature.
* **as_of**: the value of each bar uses the adjustment known at its ``event_timestamp`` (the bar's close, when
  the value became knowable): the series cut there (``continuous(..., end=event_timestamp)``), with the rolls
  decided by then, backward-adjusted from the contract they lead to. A roll is decided at the previous
  session's close, so a contract's last daily bar (stamped 00:00 UTC, closing after that) already carries it.
  This is exactly what a computation run at that instant gives; a stored value never changes when later bars or
  rolls arrive, so it is point in time. Between two rolls the adjustment is fixed: one computation per segment.

``adjust="none"`` (raw contracts chained by the rule) has one view: the roll decisions never change when later
sessions arrive. The rows of a series are stored under :func:`series_id` (a negative id derived from the dataset
and the symbol, never an instrument's) and the continuous symbol, in a table of their own per adjustment and
view (:func:`hdi_lab.features.sets.variant`), so two views never mix. Series are computed from their first bar
every time (no saved indicator states).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab import calendars, indicators
from hdi_lab.core.continuous import (
    RollRecord,
    adjust_prices,
    check_adjustable,
    continuous,
    is_continuous,
    parse_root,
)
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.features.bars import STORED, InstrumentBars
from hdi_lab.indicators import Column
from hdi_lab.schemas import Adjust, View
from hdi_lab.storage import continuous as contracts_store

__all__ = [
    "ContinuousSeries",
    "check_symbols",
    "computed",
    "origin",
    "read_series",
    "roll_json",
    "segments",
    "series_id",
]

#: the calendars hdi_lab knows start in 2000: roll decisions are made from here at the earliest
_EARLIEST = pd.Timestamp("2000-01-10", tz="UTC")


def series_id(dataset: str, symbol: str) -> int:
    """The id a continuous series' feature rows are stored under: negative (instrument ids are not), stable
    across databases and runs (56 bits of blake2b of ``dataset:symbol``)."""
    digest = hashlib.blake2b(f"{dataset}:{symbol}".encode(), digest_size=7).digest()
    return -(int.from_bytes(digest, "big") + 1)


def check_symbols(symbols: Sequence[str], adjust: Adjust, interval: str) -> None:
    """Raises ValidationError unless every symbol is a continuous symbol and ``interval`` a stored bar table."""
    for sym in symbols:
        if not is_continuous(sym):
            raise ValidationError(
                f"adjust={adjust.value!r} applies to continuous symbols (ES.c.0, ES.v.0, ES.n.0), not {sym!r}: "
                "leave adjust out to compute per instrument"
            )
    if interval not in STORED:
        raise ValidationError(
            f"interval={interval!r} cannot be combined with adjust: continuous series are read from the stored "
            f"bars of {', '.join(STORED)}"
        )


@dataclass(frozen=True)
class ContinuousSeries:
    """A continuous symbol's raw bars from its first one (one per timestamp, the contract in
    ``instrument_id``) and its rolls."""

    symbol: str
    dataset: str
    bars: pd.DataFrame
    rolls: tuple[RollRecord, ...]

    @property
    def id(self) -> int:
        return series_id(self.dataset, self.symbol)

    def instrument(self) -> InstrumentBars:
        """The series as one instrument's bars (gap checks)."""
        return InstrumentBars(self.id, self.symbol, self.bars)


def origin(session: HdiSession, symbol: str, dataset: str | None, hi: pd.Timestamp) -> pd.Timestamp:
    """Where a series' roll decisions start: the first listing of the root's stored contracts (their
    activation, else a year and a half before their expiration), not before the calendars start."""
    root, _, _ = parse_root(symbol)
    found = contracts_store.contracts(session.connection(), session.schema, root, dataset)
    if found.empty:
        return _EARLIEST  # the continuous read says what is missing
    act, exp = found["activation"].to_numpy(np.int64), found["expiration"].to_numpy(np.int64)
    listed = np.where(act >= 0, act, exp - int(550 * 86_400e9))
    first = pd.Timestamp(int(listed.min()), tz="UTC").floor("D")
    return min(max(first, _EARLIEST), hi - pd.Timedelta(days=1))


def read_series(
    session: HdiSession,
    symbol: str,
    interval: str,
    hi: pd.Timestamp,
    dataset: str | None,
    inputs: Sequence[str],
    adjust: Adjust,
) -> ContinuousSeries:
    """The raw series of ``symbol`` from its first bar up to ``hi`` (bars opening before it).

    Raises ValidationError (what :func:`hdi_lab.core.continuous.continuous` raises; a roll without a close
    of both contracts before it, or not positive for ``ratio``)."""
    lo = origin(session, symbol, dataset, hi)
    frame = continuous(session, symbol, f"ohlcv-{interval}", lo, hi, dataset=dataset)
    frame = frame[~frame.index.duplicated(keep="first")]  # several publishers: one bar per timestamp
    rolls: tuple[RollRecord, ...] = frame.attrs["rolls"]
    ds = str(frame.attrs["continuous"]["dataset"])
    check_adjustable(rolls, adjust, f"ohlcv-{interval}", symbol)
    bars = frame[["instrument_id", *inputs]]
    return ContinuousSeries(symbol, ds, bars, rolls)


def segments(events_ns: npt.NDArray[np.int64], rolls: Sequence[RollRecord]) -> npt.NDArray[np.int64]:
    """For each bar (its event, the close, ns), how many rolls were known then: rolls whose first instant
    (``ts_roll``) is before it, as in a read ending there. The as-of view adjusts the bar by exactly those."""
    at = np.array([r.ts_roll.value for r in rolls], dtype=np.int64)
    return np.searchsorted(at, events_ns, side="left").astype(np.int64)


def computed(
    series: ContinuousSeries, cols: Sequence[Column], adjust: Adjust, view: View, lo_ns: int, step_ns: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(bar opens, feature values) of the series: every bar for the research view (and ``none``); for the as-of
    view the bars of the roll segments holding a bar opening at or after ``lo_ns`` (earlier values never
    change), each segment computed from the first bar with the rolls known at its bars' events (open +
    ``step_ns``)."""
    bars = series.bars.drop(columns="instrument_id")
    opens = calendars.utc_ns(bars.index)
    if len(opens) == 0:
        return opens, np.empty((0, len(cols)))
    if view is View.RESEARCH or adjust is Adjust.NONE or not series.rolls:
        adjusted = adjust_prices(bars, series.rolls, adjust)
        return opens, indicators.compute_many([adjusted], cols)[0]
    seg = segments(opens + step_ns, series.rolls)
    wanted = np.unique(seg[opens >= lo_ns]).tolist()
    ends = [int(np.searchsorted(seg, k, side="right")) for k in wanted]
    frames = [adjust_prices(bars.iloc[:end], series.rolls[:k], adjust) for k, end in zip(wanted, ends, strict=True)]
    values = indicators.compute_many(frames, cols)
    keep = [np.flatnonzero(seg[:end] == k) for k, end in zip(wanted, ends, strict=True)]
    if not keep:
        return opens[:0], np.empty((0, len(cols)))
    return (
        np.concatenate([opens[rows] for rows in keep]),
        np.concatenate([v[rows] for v, rows in zip(values, keep, strict=True)]),
    )


def roll_json(rolls: Sequence[RollRecord]) -> list[dict[str, Any]]:
    """The roll table as JSON values (what ``feature_series.rolls`` records; NaN prices as null)."""

    def num(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    return [
        {
            "session": str(r.session),
            "ts_roll": r.ts_roll.isoformat(),
            "from_instrument": int(r.from_instrument),
            "to_instrument": int(r.to_instrument),
            "from_symbol": r.from_symbol,
            "to_symbol": r.to_symbol,
            "from_price": num(r.from_price),
            "to_price": num(r.to_price),
        }
        for r in rolls
    ]
