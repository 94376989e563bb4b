"""Technical indicators over bars: pure frame -> frame functions built on pandas-ta.

A *column* names one indicator output with its parameters, ``<output>_<param>_<param>...``
(parameters in their order, all of them; ``2.5`` is written ``2p5``): ``rsi_14``,
``macds_12_26_9``, ``bbu_20_2``. A bare output (``rsi``) means the default parameters and is
returned under its full name (``rsi_14``). :func:`compute` takes a bar frame (columns ``open``,
``high``, ``low``, ``close``, ``volume`` as needed, one instrument, ascending unique index) and
returns a new frame with one column per requested name, on the same index. Nothing is read or
written and the input is never modified.

The indicators and their conventions (pandas-ta 0.4.71b0, talib=False) are listed at the end, one
module each (``hdi_lab.indicators.rsi``, ...); :func:`describe` gives them as a table with their
parameters (in column-name order), outputs and warm-ups.

**NaN policy.** Each output has a warm-up: the number of leading bars with no value
(:attr:`Column.warmup`: ``rsi_14`` 14, ``sma_20`` 19, ``macds_12_26_9`` 33, ``vol_20`` 20, ...;
``indicators.describe()`` lists them). A value never depends on how many bars follow it: a
frame of exactly ``warmup + 1`` bars gives the same last value as a longer one.
Those rows are always NaN, even where pandas-ta would print an immature number (its RSI starts
at the second bar). A frame shorter than ``warmup + 1`` bars raises :class:`ValidationError`
(``short="nan"`` returns all-NaN columns instead, which is what feature sets store for a newly
listed instrument). After the warm-up a value is NaN only where the formula is undefined (e.g.
RSI over bars that never move, a z-score or stochastic over a flat window; infinities become
NaN). Missing input values (NaN) raise ValidationError: fill or drop them first.

**Bars, not time.** Windows count bars: the bar after a gap (weekend, halt, missing minute) is
simply the next bar. :mod:`hdi_lab.features` reports gaps and can refuse them (``max_gap``).

**No look-ahead.** Every value at bar ``t`` uses bars ``<= t`` only, and is computed by a forward
pass over the whole frame, so appending bars never changes earlier values (tested bit-exact).

**Deviations (a convention of hdi_lab, not pandas-ta's).** The standard deviations behind
``bbands``, ``vol`` and ``zscore`` are computed from each window alone, in a fixed order: the
window's sum front to back, mean = sum / length, then the squared deviations summed front to
back, divided by ``length - ddof``; a flat window (no change between its values) is exactly 0.
pandas-ta's ``ta.stdev`` runs pandas' rolling variance, an online add/remove algorithm whose last
bits depend on where the series starts; the values here differ from it in the last bits at most
(tests check them against textbook formulas at 1e-9 relative) but are the same bits whatever
bar the frame starts at, like the SMA (pandas-ta's convolution kernel, window-local too) and the
rolling min/max of ``stoch``.

**Resuming.** The recursive averages (EMA, the RMAs of RSI and ATR, MACD's three EMAs) are
pandas ``ewm(adjust=False)`` runs, whose whole state is their previous output: continued from
the saved outputs of bar ``t - 1`` they give, from bar ``t`` on, the bits of the run from the
first bar. :func:`compute_resumable` returns those states and resumes from them with only the
last :func:`history` bars (for the windows); feature sets use it to compute new bars without
reading an instrument's whole history (:mod:`hdi_lab.features`). ADX, stochastic, OBV, VWAP,
z-score and returns of other lengths are not resumable (:func:`state_layout` is None).

**The code.** One module per indicator owns its entry (:class:`~hdi_lab.indicators.entry.Indicator`):
its parameters and outputs, its pandas-ta computation on one instrument, its numpy kernel on a panel
of instruments and the state slots that kernel resumes from. :mod:`~hdi_lab.indicators.catalogue`
lists the modules and derives ``CATALOGUE``, ``OUTPUTS``, ``PANEL`` and ``STATE_SLOTS`` from them;
:mod:`~hdi_lab.indicators.naming` parses column names, :mod:`~hdi_lab.indicators.frame` computes one
instrument, :mod:`~hdi_lab.indicators.panel` many at once (and resumes), on the shared steps of
:mod:`~hdi_lab.indicators.kernels`.
"""

from __future__ import annotations

import textwrap

from hdi_lab.indicators.catalogue import CATALOGUE, MODULES, OUTPUTS, PANEL, STATE_SLOTS
from hdi_lab.indicators.entry import Carried, Indicator, Panel, Param, ParamValue, Resume, Run, Series
from hdi_lab.indicators.frame import compute, describe
from hdi_lab.indicators.naming import Column, column, columns, make_column, min_bars
from hdi_lab.indicators.panel import compute_many, compute_resumable, history, state_layout

__all__ = [
    "CATALOGUE",
    "OUTPUTS",
    "PANEL",
    "STATE_SLOTS",
    "Carried",
    "Column",
    "Indicator",
    "Panel",
    "Param",
    "ParamValue",
    "Resume",
    "Run",
    "Series",
    "column",
    "columns",
    "compute",
    "compute_many",
    "compute_resumable",
    "describe",
    "history",
    "make_column",
    "min_bars",
    "state_layout",
]

if __doc__ is not None:  # not under python -OO
    # each indicator's convention is declared once, in its module's docstring; help(indicators) shows them all
    __doc__ += (
        "\n**The indicators.**\n\n"
        + "\n\n".join(
            f"``{m.ENTRY.name}`` (:mod:`{m.__name__}`)\n" + textwrap.indent((m.__doc__ or "").strip(), "    ")
            for m in MODULES
        )
        + "\n"
    )
