"""Volume-weighted average price, anchored; parameter ``anchor=d`` (d, w or m).

Typical price (h+l+c)/3 weighted by volume, cumulated within each UTC day/week/month (pandas-ta
``vwap``); from the second bar (pandas-ta needs two). No panel kernel: computed instrument by
instrument.
"""

from __future__ import annotations

import warnings

import pandas as pd

from hdi_lab.indicators.entry import Indicator, Param, Params, Series
from hdi_lab.indicators.kernels import ta

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    index = pd.DatetimeIndex(b.index)
    naive = index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index
    cols = {k: b[k].set_axis(naive) for k in ("high", "low", "close", "volume")}
    with warnings.catch_warnings():  # pandas-ta's vwap calls simplefilter(...) globally: keep it contained
        r = ta().vwap(cols["high"], cols["low"], cols["close"], cols["volume"], anchor=str(p["anchor"]).upper())
    return {"vwap": r.set_axis(b.index)}


ENTRY = Indicator(
    "vwap",
    (Param("anchor", "d", None, ("d", "w", "m")),),
    ("vwap",),
    ("high", "low", "close", "volume"),
    _run,
    lambda p: {"vwap": 1},
    "volume-weighted average price, anchored",
)
