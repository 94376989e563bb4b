"""Average true range; parameter ``length=14``.

True range with TR[0] = high - low (:func:`~hdi_lab.indicators.kernels.true_range`), seeded with
the mean of the first ``length`` TRs, then Wilder's RMA (pandas-ta ``rma``); the first value is at
bar ``length`` (pandas-ta prints one at ``length - 1`` but only for frames of ``length + 1`` bars
or more). Resumes from its last value.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from hdi_lab.indicators.entry import Carried, FloatArray, Indicator, Panel, Param, Params, Resume, Series
from hdi_lab.indicators.kernels import panel_rma, saved, seed_mean, ta, true_range

__all__ = ["ENTRY"]


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    n = p["length"]
    tr = true_range(b)
    seeded = tr.copy()
    seeded.iloc[: n - 1] = np.nan
    seeded.iloc[n - 1] = tr.iloc[:n].mean()  # as ta.atr does (presma)
    return {"atr": ta().rma(seeded, length=n)}


def _panel(p: Params, cols: Mapping[str, FloatArray], resume: Resume | None) -> tuple[dict[str, FloatArray], Carried]:
    n = p["length"]
    close, high, low = cols["close"], cols["high"], cols["low"]
    prev = np.full_like(close, np.nan)
    prev[1:] = close[:-1]
    tr = np.fmax(np.fmax(high - low, np.abs(high - prev)), np.abs(low - prev))
    if resume is not None:
        atr = panel_rma(tr, n, saved(resume, "atr"))
    else:
        seeded = np.array(tr, order="F", copy=True)
        if len(tr) >= n:
            seeded[: n - 1] = np.nan
            seeded[n - 1] = seed_mean(tr, n)
        atr = panel_rma(seeded, n)
    return {"atr": atr}, {"atr": atr}


ENTRY = Indicator(
    "atr",
    (Param("length", 14),),
    ("atr",),
    ("high", "low", "close"),
    _run,
    lambda p: {"atr": p["length"]},
    "average true range",
    panel=Panel(_panel, state=("atr",)),
)
