"""Average directional index; parameter ``length=14``, outputs ``adx dmp dmn``.

Wilder's DMI from the second bar, each average a pandas-ta RMA seeded with its first value:
dmp/dmn = 100 * RMA(+DM/-DM) / RMA(TR); adx = RMA of DX = 100 * |dmp - dmn| / (dmp + dmn) from bar
``length`` (ta.adx/ta.atr/ta.true_range are not used: see
:func:`~hdi_lab.indicators.kernels.true_range`). No panel kernel: computed instrument by
instrument, not resumable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hdi_lab.indicators.entry import Indicator, Param, Params, Series
from hdi_lab.indicators.kernels import ta, true_range

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    t = ta()
    n = p["length"]
    up = b["high"].diff()
    down = -b["low"].diff()
    plus = up.where((up > down) & (up > 0), 0.0).where(up.notna())
    minus = down.where((down > up) & (down > 0), 0.0).where(down.notna())
    tr = true_range(b).where(up.notna())  # from the second bar, like the moves
    atr = t.rma(tr, length=n)
    dmp = 100 * t.rma(plus, length=n) / atr
    dmn = 100 * t.rma(minus, length=n) / atr
    dx = 100 * (dmp - dmn).abs() / (dmp + dmn)
    tail = dx.iloc[n:]
    adx = t.rma(tail, length=n).reindex(b.index) if len(tail) >= n else pd.Series(np.nan, index=b.index)
    return {"adx": adx, "dmp": dmp, "dmn": dmn}


ENTRY = Indicator(
    "adx",
    (Param("length", 14, 2),),
    ("adx", "dmp", "dmn"),
    ("high", "low", "close"),
    _run,
    lambda p: {"adx": 2 * p["length"] - 1, "dmp": p["length"], "dmn": p["length"]},
    "average directional index",
)
