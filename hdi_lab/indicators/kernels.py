"""The numeric steps indicators share, on one instrument's series and on a panel of instruments.

A panel holds one column per instrument, its bars from row 0, NaN below its last bar. Every panel
step is the one the series computation takes -- the same pandas ewm kernels column by column,
pandas-ta's own numba SMA, the elementwise window deviation, seeds taken with ``Series.mean`` on the
same values -- so a panel column equals the instrument computed alone, bit for bit.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pandas as pd

from hdi_lab.extras import require
from hdi_lab.indicators.entry import FloatArray, Resume, Series

__all__ = [
    "panel_diff",
    "panel_ema",
    "panel_logret",
    "panel_rma",
    "panel_sma",
    "saved",
    "seed_mean",
    "sma_series",
    "sma_values",
    "std_series",
    "ta",
    "true_range",
    "window_std",
]


def ta() -> ModuleType:
    """pandas-ta, imported on first use.

    Importing pandas-ta turns pandas' copy-on-write mode on for the whole process (``pandas_ta.core`` sets
    ``pd.options.mode.copy_on_write = True``): the option is put back as the caller had it, so frames the user
    holds do not change behaviour (e.g. ``to_numpy()`` becoming read-only) because hdi_lab computed an indicator.

    Raises:
        MissingDependency: pandas-ta is not installed (``pip install 'hdi_lab[ta]'``).
    """
    cow = pd.options.mode.copy_on_write
    try:
        return require("pandas_ta", "ta")
    finally:
        if pd.options.mode.copy_on_write != cow:
            pd.options.mode.copy_on_write = cow


# -- windows: the same bits wherever the series starts ---------------------------------------


def sma_values(x: FloatArray, n: int) -> FloatArray:
    """pandas-ta's SMA kernel (what ``ta.sma`` runs), always in its long-input regime.

    ``nb_sma`` convolves with the two inputs swapped when the series is longer than the window,
    which changes the summation order: a series of exactly ``n`` bars would get a last value
    differing in the last bit from the same bar in a longer series. One NaN appended keeps every
    value independent of how many bars follow it.

    Raises:
        MissingDependency: pandas-ta is not installed.
    """
    ta()
    from pandas_ta.overlap.sma import nb_sma

    x = np.ascontiguousarray(x, dtype=np.float64)
    if len(x) == n:
        return np.asarray(nb_sma(np.append(x, np.nan), n))[:-1]
    return np.asarray(nb_sma(x, n))


def sma_series(x: Series, n: int) -> Series:
    return pd.Series(sma_values(x.to_numpy(np.float64), n), index=x.index)


def window_std(x: FloatArray, n: int, ddof: int) -> FloatArray:
    """Standard deviation over the last ``n`` rows, down axis 0 (1-D series or a panel).

    Window-local: each value is computed from its own ``n`` values only, in a fixed order (sum
    of the window front to back, mean = sum / n, then the squared deviations summed front to
    back), so it is the same bits wherever the series starts (pandas' rolling variance is an
    online add/remove algorithm whose last bits depend on the first row). A flat window (all
    values equal) gives exactly 0. Rows before the first full window, and windows holding NaN,
    are NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    m = len(x) - n + 1
    if m <= 0:
        return out
    if x.ndim == 1:
        out[n - 1 :] = _window_std_block(x, n, ddof)
        return out
    step = max(1, 32_768 // len(x))  # a few columns at a time, so the passes stay in the CPU cache
    for j in range(0, x.shape[1], step):
        out[n - 1 :, j : j + step] = _window_std_block(x[:, j : j + step], n, ddof)
    return out


def _window_std_block(x: FloatArray, n: int, ddof: int) -> FloatArray:
    """:func:`window_std` from row ``n - 1`` on (elementwise along the columns: the same values
    for a column alone or in a panel)."""
    m = len(x) - n + 1
    total = x[:m].copy()
    for k in range(1, n):
        total += x[k : k + m]
    mean = total / n
    squares = np.subtract(x[:m], mean)
    np.multiply(squares, squares, out=squares)
    d = total  # reused as scratch
    for k in range(1, n):
        np.subtract(x[k : k + m], mean, out=d)
        np.multiply(d, d, out=d)
        squares += d
    squares /= n - ddof
    # a flat window (no change between its values) has exactly no deviation: count the changes
    # with an integer running sum, exact wherever the series starts
    changes = np.zeros(x.shape, dtype=np.int64)
    np.cumsum(x[1:] != x[:-1], axis=0, out=changes[1:])
    flat = changes[n - 1 :] == changes[:m]
    squares[flat] = 0.0
    return np.sqrt(squares)


def std_series(x: Series, n: int, ddof: int) -> Series:
    return pd.Series(window_std(x.to_numpy(np.float64), n, ddof), index=x.index)


def true_range(b: pd.DataFrame) -> Series:
    """max(high - low, |high - previous close|, |low - previous close|); TR[0] = high - low.

    Not ta.true_range: it adds epsilon to *every* range as soon as any bar (also a later one) has
    high == low, so a future bar could change past values.
    """
    prev = b["close"].shift(1)
    ranges = pd.concat([b["high"] - b["low"], (b["high"] - prev).abs(), (b["low"] - prev).abs()], axis=1)
    return ranges.max(axis=1)


# -- the panel --------------------------------------------------------------------------------


def saved(resume: Resume | None, slot: str) -> tuple[int, FloatArray] | None:
    """``(at, values)`` of one state slot of ``resume`` (None: not resuming)."""
    return None if resume is None else (resume[0], resume[1][slot])


def seed_mean(panel: FloatArray, n: int, first: int = 0) -> FloatArray:
    """``Series.mean()`` of rows ``first .. first+n-1`` of every column (the pandas-ta presma seed).

    pandas' mean of NaN-free floats is numpy's (pairwise) sum divided by the count; summing the
    Fortran-ordered panel along its columns gives the same sums (checked by the bit-exact test).
    Columns holding NaN there are shorter than the window: their values are masked anyway.
    """
    return np.asarray(panel[first : first + n].sum(axis=0) / n)


def _resumed(x: FloatArray, at: int, state: FloatArray) -> FloatArray:
    """``x`` with rows before ``at`` dropped (NaN) and row ``at`` replaced by the saved state.

    ``ewm(adjust=False)`` keeps nothing but its previous output (its old weight is reset to 1
    after every observation), so running it over ``[state, x[at+1], ...]`` gives, from row
    ``at + 1`` on, the same bits as the run over the whole series (tested).
    """
    seeded = np.array(x, order="F", copy=True)
    seeded[:at] = np.nan
    seeded[at] = state
    return seeded


def panel_ema(x: FloatArray, n: int, first: int = 0, resume: tuple[int, FloatArray] | None = None) -> FloatArray:
    """ta.ema(presma=True) of every column, over rows ``first..`` (earlier rows NaN); or, with
    ``resume=(at, state)``, continued after row ``at`` from the EMA values ``state`` there."""
    if resume is not None:
        return pd.DataFrame(_resumed(x, *resume)).ewm(span=n, adjust=False).mean().to_numpy()
    out = np.full_like(x, np.nan)
    body = x[first:]
    if len(body) < n:
        return out
    seeded = np.array(body, order="F", copy=True)
    seeded[: n - 1] = np.nan
    seeded[n - 1] = seed_mean(body, n)
    out[first:] = pd.DataFrame(seeded).ewm(span=n, adjust=False).mean().to_numpy()
    return out


def panel_rma(x: FloatArray, n: int, resume: tuple[int, FloatArray] | None = None) -> FloatArray:
    """ta.rma (Wilder's average, alpha 1/n, seeded with the first value) of every column; or, with
    ``resume=(at, state)``, continued after row ``at`` from the values ``state`` there."""
    if resume is not None:
        x = _resumed(x, *resume)
    return pd.DataFrame(x).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy()


def panel_sma(x: FloatArray, n: int) -> FloatArray:
    """:func:`sma_values` of every column.

    Raises:
        MissingDependency: pandas-ta is not installed.
    """
    out = np.full_like(x, np.nan)
    if len(x) >= n:
        for j in range(x.shape[1]):
            out[:, j] = sma_values(x[:, j], n)
    return out


def panel_diff(x: FloatArray) -> FloatArray:
    """The change from the previous row (NaN on row 0)."""
    out = np.full_like(x, np.nan)
    out[1:] = x[1:] - x[:-1]
    return out


def panel_logret(x: FloatArray) -> FloatArray:
    """ln(x / previous x) (NaN on row 0)."""
    r = np.full_like(x, np.nan)
    r[1:] = x[1:] / x[:-1]
    return np.log(r)
