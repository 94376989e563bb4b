"""Rolling z-score of the close: (close - SMA) / sample std (ddof=1, window by window, see
*Deviations* in :mod:`hdi_lab.indicators`); parameter ``length=20``. No panel kernel: computed
instrument by instrument, not resumable."""

from __future__ import annotations

import pandas as pd

from hdi_lab.indicators.entry import Indicator, Param, Params, Series
from hdi_lab.indicators.kernels import sma_series, std_series

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    # ta.zscore's own steps, with pandas-ta's SMA kernel and the window-local deviation; a flat
    # window has no z-score (pandas-ta would divide a rounding residue by zero: +-inf or noise)
    spread = std_series(b["close"], p["length"], 1)
    z = (b["close"] - sma_series(b["close"], p["length"])) / spread
    return {"zscore": z.where(spread > 0)}


ENTRY = Indicator(
    "zscore",
    (Param("length", 20, 2),),
    ("zscore",),
    ("close",),
    _run,
    lambda p: {"zscore": p["length"] - 1},
    "rolling z-score of the close",
)
