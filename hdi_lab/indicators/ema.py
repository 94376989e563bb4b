"""Exponential moving average: alpha 2/(length+1), seeded with the SMA of the first ``length``
closes (pandas-ta ``ema``, talib=False); parameter ``length=20``. Resumes from its last value."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from hdi_lab.indicators.entry import Carried, FloatArray, Indicator, Panel, Param, Params, Resume, Series
from hdi_lab.indicators.kernels import panel_ema, saved, ta

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    return {"ema": ta().ema(b["close"], length=p["length"], talib=False)}


def _panel(p: Params, cols: Mapping[str, FloatArray], resume: Resume | None) -> tuple[dict[str, FloatArray], Carried]:
    ema = panel_ema(cols["close"], p["length"], resume=saved(resume, "ema"))
    return {"ema": ema}, {"ema": ema}


ENTRY = Indicator(
    "ema",
    (Param("length", 20),),
    ("ema",),
    ("close",),
    _run,
    lambda p: {"ema": p["length"] - 1},
    "exponential moving average",
    panel=Panel(_panel, state=("ema",)),
)
