"""Bollinger bands: SMA +- std * *population* standard deviation; parameters ``length=20 std=2``,
outputs ``bbl bbm bbu``.

ddof=0 is Bollinger's and TA-Lib's definition (pandas-ta's default is ddof=1); the deviation is
computed window by window (see *Deviations* in :mod:`hdi_lab.indicators`).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from hdi_lab.indicators.entry import Carried, FloatArray, Indicator, Panel, Param, Params, Resume, Series
from hdi_lab.indicators.kernels import panel_sma, sma_series, std_series, window_std

__all__ = ["ENTRY"]

_OUTPUTS = ("bbl", "bbm", "bbu")


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    # ta.bbands' own steps (mid = SMA, dev = standard deviation), with pandas-ta's SMA kernel
    # (kernels.sma_values) and the window-local deviation (kernels.window_std)
    mid = sma_series(b["close"], p["length"])
    dev = std_series(b["close"], p["length"], 0)
    return {"bbl": mid - p["std"] * dev, "bbm": mid, "bbu": mid + p["std"] * dev}


def _panel(p: Params, cols: Mapping[str, FloatArray], resume: Resume | None) -> tuple[dict[str, FloatArray], Carried]:
    close = cols["close"]
    mid = panel_sma(close, p["length"])
    dev = window_std(close, p["length"], 0)
    return {"bbl": mid - p["std"] * dev, "bbm": mid, "bbu": mid + p["std"] * dev}, {}


ENTRY = Indicator(
    "bbands",
    (Param("length", 20, 2), Param("std", 2.0, 0)),
    _OUTPUTS,
    ("close",),
    _run,
    lambda p: dict.fromkeys(_OUTPUTS, p["length"] - 1),
    "Bollinger bands",
    panel=Panel(_panel),
)
