"""Simple moving average: the mean of the last ``length`` closes (pandas-ta's SMA kernel, window-local:
the same bits wherever the series starts); parameter ``length=20``."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from hdi_lab.indicators.entry import Carried, FloatArray, Indicator, Panel, Param, Params, Resume, Series
from hdi_lab.indicators.kernels import panel_sma, sma_series

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    return {"sma": sma_series(b["close"], p["length"])}


def _panel(p: Params, cols: Mapping[str, FloatArray], resume: Resume | None) -> tuple[dict[str, FloatArray], Carried]:
    return {"sma": panel_sma(cols["close"], p["length"])}, {}


ENTRY = Indicator(
    "sma",
    (Param("length", 20),),
    ("sma",),
    ("close",),
    _run,
    lambda p: {"sma": p["length"] - 1},
    "simple moving average",
    panel=Panel(_panel),
)
