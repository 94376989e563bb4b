"""Simple return: ``close / close[t-length] - 1`` (pandas-ta ``percent_return``); parameter ``length=1``."""

from __future__ import annotations

import pandas as pd

from hdi_lab.indicators.entry import Indicator, Param, Params, Series
from hdi_lab.indicators.kernels import ta

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    return {"ret": ta().percent_return(b["close"], length=p["length"])}


ENTRY = Indicator(
    "ret", (Param("length", 1),), ("ret",), ("close",), _run, lambda p: {"ret": p["length"]}, "simple return"
)
