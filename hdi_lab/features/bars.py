"""The stored bars a feature computation reads, split per instrument."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab.core.session import HdiSession
from hdi_lab.schemas import INTERVALS, Schema
from hdi_lab.storage import read, symbology

__all__ = ["HISTORY_START", "STORED", "InstrumentBars", "by_instrument", "read_bars"]

#: intervals read from a stored bar table; the others are rolled up from ohlcv-1m
STORED = ("1s", "5s", "1m", "1h", "1d")
#: the start of every instrument's history: a read from there holds all its bars
HISTORY_START = pd.Timestamp("1970-01-01", tz="UTC")


def read_bars(
    session: HdiSession,
    interval: str,
    symbols: tuple[str, ...],
    start: pd.Timestamp,
    end: pd.Timestamp,
    dataset: str | None,
    inputs: Sequence[str],
) -> pd.DataFrame:
    """The stored bars of the symbols opening in ``[start, end)`` (``5m`` and ``15m`` rolled up from
    ``ohlcv-1m``), indexed by ``ts_event``, with ``symbol``, ``instrument_id`` and the price/volume
    columns ``inputs`` only (less for the server to send).

    Raises ValidationError for an unknown symbol.
    """
    columns = ["symbol", "instrument_id", *inputs]
    if interval in STORED:
        sch, seconds = Schema(f"ohlcv-{interval}"), None
    else:
        sch, seconds = Schema.OHLCV_1M, INTERVALS[interval]
    conn = session.connection()
    spans = symbology.lookup(conn, session.schema, symbols, start, end, dataset)
    frame = read.query(conn, session.schema, sch, spans, symbols, start, end, "float", seconds, columns)
    return frame[columns]


@dataclass(frozen=True)
class InstrumentBars:
    """One instrument's bars in time order, one per timestamp."""

    instrument_id: int
    symbol: str  # the symbol of its first bar read
    bars: pd.DataFrame

    @functools.cached_property  # read once per instrument and step of a computation: built once
    def opens(self) -> npt.NDArray[np.int64]:
        """The bars' ``ts_event`` (ns)."""
        return pd.DatetimeIndex(self.bars.index).asi8  # type: ignore[attr-defined]  # pandas-stubs lacks asi8 (the int64 view)


def by_instrument(bars: pd.DataFrame) -> list[InstrumentBars]:
    """Each instrument's bars of a read, in time order; one row per timestamp (several symbols mapping
    to an instrument, or several publishers, give several rows: one is enough)."""
    if bars.empty:
        return []
    iid = bars["instrument_id"].to_numpy(np.int64)
    ts = pd.DatetimeIndex(bars.index).asi8  # type: ignore[attr-defined]  # pandas-stubs lacks asi8 (the int64 view)
    order = np.lexsort([ts, iid])
    iid, ts = iid[order], ts[order]
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = (iid[1:] != iid[:-1]) | (ts[1:] != ts[:-1])
    order, iid = order[keep], iid[keep]
    frame = bars.iloc[order]
    bounds = np.flatnonzero(np.diff(iid)) + 1
    out = []
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(iid)], strict=True):
        part = frame.iloc[lo:hi]
        out.append(InstrumentBars(int(iid[lo]), str(part["symbol"].iloc[0]), part))
    return out
