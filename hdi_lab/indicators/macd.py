"""Moving average convergence/divergence (pandas-ta ``macd``, talib=False); parameters ``fast=12
slow=26 signal=9``, outputs ``macd macdh macds``.

EMA(fast) - EMA(slow) (EMAs as in :mod:`hdi_lab.indicators.ema`); signal = EMA(signal) of the MACD line from its
first value; macdh = macd - macds. Resumes from its three EMAs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from hdi_lab.errors import ValidationError
from hdi_lab.indicators.entry import Carried, FloatArray, Indicator, Panel, Param, Params, Resume, Series
from hdi_lab.indicators.kernels import panel_ema, saved, ta

__all__ = ["ENTRY"]


def _pick(frame: pd.DataFrame, prefixes: Mapping[str, str]) -> dict[str, Series]:
    """Outputs of a multi-column pandas-ta result, found by their column-name prefix."""
    out = {}
    for output, prefix in prefixes.items():
        matches = [c for c in frame.columns if str(c).startswith(prefix)]
        out[output] = frame[matches[0]]
    return out


def _run(b: pd.DataFrame, p: Params) -> dict[str, Series]:
    t = ta()
    close = b["close"]
    if len(close) >= p["slow"] + p["signal"] - 1:
        r = t.macd(close, fast=p["fast"], slow=p["slow"], signal=p["signal"], talib=False)
        return _pick(r, {"macd": "MACD_", "macdh": "MACDh_", "macds": "MACDs_"})
    # too short for the signal line, which ta.macd refuses: its MACD line, computed as it does
    line = t.ema(close, length=p["fast"], talib=False) - t.ema(close, length=p["slow"], talib=False)
    nothing = pd.Series(np.nan, index=close.index)
    return {"macd": line, "macdh": nothing, "macds": nothing}


def _panel(p: Params, cols: Mapping[str, FloatArray], resume: Resume | None) -> tuple[dict[str, FloatArray], Carried]:
    close = cols["close"]
    fast, slow, signal = p["fast"], p["slow"], p["signal"]
    f, s = panel_ema(close, fast, resume=saved(resume, "fast")), panel_ema(close, slow, resume=saved(resume, "slow"))
    line = f - s
    sig = panel_ema(line, signal, first=slow - 1, resume=saved(resume, "signal"))
    return {"macd": line, "macds": sig, "macdh": line - sig}, {"fast": f, "slow": s, "signal": sig}


def _check(p: Params) -> None:
    if p["fast"] >= p["slow"]:
        raise ValidationError(f"macd fast={p['fast']} must be shorter than slow={p['slow']}")


ENTRY = Indicator(
    "macd",
    (Param("fast", 12), Param("slow", 26), Param("signal", 9)),
    ("macd", "macdh", "macds"),
    ("close",),
    _run,
    lambda p: {"macd": p["slow"] - 1, "macdh": p["slow"] + p["signal"] - 2, "macds": p["slow"] + p["signal"] - 2},
    "moving average convergence/divergence",
    panel=Panel(_panel, state=("fast", "slow", "signal")),
    check=_check,
)
