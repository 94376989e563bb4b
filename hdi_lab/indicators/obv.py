"""On-balance volume: the cumulative sum of sign(change) * volume from the second bar (pandas-ta
``obv``, talib=False); no parameters. No panel kernel: computed instrument by instrument."""

from __future__ import annotations

import pandas as pd

from hdi_lab.indicators.entry import Indicator, Params, Series
from hdi_lab.indicators.kernels import ta

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    return {"obv": ta().obv(b["close"], b["volume"], talib=False)}


ENTRY = Indicator("obv", (), ("obv",), ("close", "volume"), _run, lambda p: {"obv": 1}, "on-balance volume")
