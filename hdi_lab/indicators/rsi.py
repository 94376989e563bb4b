"""Relative strength index (pandas-ta ``rsi``, talib=False); parameter ``length=14``.

Wilder: RMA (alpha 1/length) of gains and losses, seeded with the *first change* (pandas-ta;
TA-Lib seeds with an SMA); 100 * gain / (gain + loss). Resumes from the two averages.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from hdi_lab.indicators.entry import Carried, FloatArray, Indicator, Panel, Param, Params, Resume, Series
from hdi_lab.indicators.kernels import panel_diff, panel_rma, saved, ta

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    return {"rsi": ta().rsi(b["close"], length=p["length"], talib=False)}


def _panel(p: Params, cols: Mapping[str, FloatArray], resume: Resume | None) -> tuple[dict[str, FloatArray], Carried]:
    change = panel_diff(cols["close"])
    gain, loss = change.copy(), change.copy()
    gain[gain < 0] = 0
    loss[loss > 0] = 0
    up, down = panel_rma(gain, p["length"], saved(resume, "up")), panel_rma(loss, p["length"], saved(resume, "down"))
    with np.errstate(invalid="ignore"):  # a flat window (no gain, no loss) has no RSI: NaN, as pandas-ta's
        rsi = 100.0 * up / (up + np.abs(down))
    return {"rsi": rsi}, {"up": up, "down": down}


ENTRY = Indicator(
    "rsi",
    (Param("length", 14),),
    ("rsi",),
    ("close",),
    _run,
    lambda p: {"rsi": p["length"]},
    "relative strength index",
    panel=Panel(_panel, state=("up", "down")),
)
