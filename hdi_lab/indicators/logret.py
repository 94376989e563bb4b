"""Log return: ``ln(close / close[t-length])`` (pandas-ta ``log_return``); parameter ``length=1``.

On the panel for ``length=1`` only (the return volatility's step); other lengths run instrument
by instrument and cannot be resumed.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from hdi_lab.indicators.entry import Carried, FloatArray, Indicator, Panel, Param, Params, Resume, Series
from hdi_lab.indicators.kernels import panel_logret, ta

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    return {"logret": ta().log_return(b["close"], length=p["length"])}


def _panel(p: Params, cols: Mapping[str, FloatArray], resume: Resume | None) -> tuple[dict[str, FloatArray], Carried]:
    return {"logret": panel_logret(cols["close"])}, {}


ENTRY = Indicator(
    "logret",
    (Param("length", 1),),
    ("logret",),
    ("close",),
    _run,
    lambda p: {"logret": p["length"]},
    "log return",
    panel=Panel(_panel, when=lambda p: p["length"] == 1),
)
