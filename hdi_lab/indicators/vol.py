"""Rolling volatility: the sample standard deviation (ddof=1) of the last ``length`` 1-bar log
returns, window by window (see *Deviations* in :mod:`hdi_lab.indicators`); parameter ``length=20``."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from hdi_lab.indicators.entry import Carried, FloatArray, Indicator, Panel, Param, Params, Resume, Series
from hdi_lab.indicators.kernels import panel_logret, std_series, ta, window_std

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    return {"vol": std_series(ta().log_return(b["close"], length=1), p["length"], 1)}


def _panel(p: Params, cols: Mapping[str, FloatArray], resume: Resume | None) -> tuple[dict[str, FloatArray], Carried]:
    return {"vol": window_std(panel_logret(cols["close"]), p["length"], 1)}, {}


ENTRY = Indicator(
    "vol",
    (Param("length", 20, 2),),
    ("vol",),
    ("close",),
    _run,
    lambda p: {"vol": p["length"]},
    "rolling volatility of log returns",
    panel=Panel(_panel),
)
