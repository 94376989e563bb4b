"""Indicators over one instrument's bar frame: each entry's pandas-ta computation, warm-ups masked."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from hdi_lab.errors import ValidationError
from hdi_lab.indicators.catalogue import CATALOGUE
from hdi_lab.indicators.entry import FloatArray, ParamValue, param_text
from hdi_lab.indicators.naming import Column, as_columns, make_column

__all__ = ["check_bars", "compute", "describe"]


def check_bars(bars: pd.DataFrame, needed: Sequence[str]) -> None:
    """Check that ``bars`` can be computed on: columns ``needed`` present, finite, one instrument in order.

    Raises:
        ValidationError: a column is missing, a value is missing or infinite, or the index is not
            ascending and unique.
    """
    missing = [c for c in needed if c not in bars.columns]
    if missing:
        raise ValidationError(f"bars have no column(s) {', '.join(missing)}: indicators need {', '.join(needed)}")
    if not bars.index.is_monotonic_increasing or not bars.index.is_unique:
        raise ValidationError(
            "bars must be one instrument in ascending time order with no duplicate timestamps: "
            "sort and split by instrument_id first"
        )
    for c in needed:
        values = bars[c].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            at = bars.index[int(np.argmax(bad))]
            raise ValidationError(
                f"bars have a missing or infinite {c} at {at} ({int(bad.sum())} rows): drop or "
                "fill them before computing indicators"
            )


def compute(
    bars: pd.DataFrame, cols: str | Iterable[str | Column], *, short: Literal["raise", "nan"] = "raise"
) -> pd.DataFrame:
    """Indicator columns for one instrument's ``bars`` (a new frame on the same index).

    ``cols``: names (``"rsi_14,sma_20"``) or :class:`Column` objects. Leading warm-up rows are
    NaN; a frame too short for a column raises ValidationError (``short="nan"``: all NaN).

    Raises:
        ValidationError: a column is not valid, the bars cannot be computed on (see :func:`check_bars`),
            or (``short="raise"``) they are too few for a column.
        MissingDependency: pandas-ta is not installed.
    """
    wanted = as_columns(cols)
    if short not in ("raise", "nan"):
        raise ValidationError(f"short={short!r} is not valid: use raise or nan")
    needed = tuple(dict.fromkeys(i for c in wanted for i in c.inputs))
    check_bars(bars, needed)
    n = len(bars)
    inputs = pd.DataFrame({c: bars[c].astype(np.float64) for c in needed}, index=bars.index)  # copies
    result: dict[str, FloatArray] = {}
    groups: dict[tuple[str, tuple[tuple[str, ParamValue], ...]], list[Column]] = {}
    for c in wanted:
        groups.setdefault((c.indicator, c.params), []).append(c)
    short_ones = [c for c in wanted if n <= c.warmup]
    if short_ones and short == "raise":
        longest = max(c.warmup for c in short_ones)
        names = ", ".join(c.name for c in short_ones)
        raise ValidationError(
            f"{names} needs at least {longest + 1} bars, got {n}: widen the range or shorten the window"
        )
    for (indicator, params), members in groups.items():
        if all(n <= c.warmup for c in members):
            for c in members:
                result[c.name] = np.full(n, np.nan)
            continue
        outputs = CATALOGUE[indicator].run(inputs, dict(params))
        for c in members:
            series = outputs.get(c.output)
            if series is None:
                raise ValidationError(f"pandas-ta returned no {c.name} for {n} bars")
            values = series.to_numpy(dtype=np.float64, copy=True)
            values[: c.warmup] = np.nan
            values[np.isinf(values)] = np.nan  # a division by zero is undefined, not a number
            result[c.name] = values
    return pd.DataFrame({c.name: result[c.name] for c in wanted}, index=bars.index)


def describe() -> pd.DataFrame:
    """The catalogue as a table: indicator, parameters with defaults, outputs, inputs, an example
    column and its warm-up (leading NaN bars)."""
    rows = [
        {
            "indicator": i.name,
            "params": ", ".join(f"{p.name}={param_text(p.default)}" for p in i.params),
            "outputs": ", ".join(i.outputs),
            "inputs": ", ".join(i.inputs),
            "example": make_column(i.name).name,
            "warmup": make_column(i.name).warmup,
            "description": i.doc,
        }
        for i in CATALOGUE.values()
    ]
    return pd.DataFrame(rows)
