"""Stochastic oscillator; parameters ``k=14 d=3 smooth_k=3``, outputs ``stochk stochd``.

%K = SMA(smooth_k) of 100 * (close - LL) / (HH - LL) over ``k`` bars; %D = SMA(d); NaN where
HH = LL (pandas-ta's ``stoch`` shifts every range by epsilon then, past ones included: not used).
No panel kernel: computed instrument by instrument, not resumable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hdi_lab.indicators.entry import Indicator, Param, Params, Series
from hdi_lab.indicators.kernels import sma_series

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    # Not ta.stoch: its non_zero_range adds epsilon to *every* range as soon as any window (also a
    # later one) is flat, so a future bar could change past values. Here a flat window is undefined (NaN).
    lowest = b["low"].rolling(p["k"]).min()
    highest = b["high"].rolling(p["k"]).max()
    span = (highest - lowest).where(highest > lowest)
    raw = 100 * (b["close"] - lowest) / span
    k = sma_series(raw.iloc[p["k"] - 1 :], p["smooth_k"]).reindex(b.index)
    tail = k.iloc[p["k"] + p["smooth_k"] - 2 :]
    if len(tail) < p["d"]:  # long enough for %K only
        return {"stochk": k, "stochd": pd.Series(np.nan, index=b.index)}
    return {"stochk": k, "stochd": sma_series(tail, p["d"]).reindex(b.index)}


ENTRY = Indicator(
    "stoch",
    (Param("k", 14), Param("d", 3), Param("smooth_k", 3)),
    ("stochk", "stochd"),
    ("high", "low", "close"),
    _run,
    lambda p: {"stochk": p["k"] + p["smooth_k"] - 2, "stochd": p["k"] + p["smooth_k"] + p["d"] - 3},
    "stochastic oscillator",
)
