"""The catalogue: every indicator's entry, in order, and the tables derived from the entries.

Adding an indicator is adding one entry: a module of this package defining its ``ENTRY`` (see
:class:`~hdi_lab.indicators.entry.Indicator`), listed in :data:`MODULES`. Nothing else below is
written by hand.
"""

from __future__ import annotations

from types import ModuleType

from hdi_lab.indicators import adx, atr, bbands, ema, logret, macd, obv, ret, rsi, sma, stoch, vol, vwap, zscore
from hdi_lab.indicators.entry import Indicator

__all__ = ["CATALOGUE", "ENTRIES", "MODULES", "OUTPUTS", "PANEL", "STATE_SLOTS"]

#: one module per indicator (its docstring gives its convention), in the order
#: :func:`~hdi_lab.indicators.describe` and error messages list them
MODULES: tuple[ModuleType, ...] = (ret, logret, sma, ema, rsi, macd, bbands, atr, adx, stoch, obv, vwap, vol, zscore)

#: every indicator's entry, in catalogue order
ENTRIES: tuple[Indicator, ...] = tuple(m.ENTRY for m in MODULES)

#: indicator name -> entry
CATALOGUE: dict[str, Indicator] = {i.name: i for i in ENTRIES}

#: output name -> indicator name
OUTPUTS: dict[str, str] = {o: i.name for i in ENTRIES for o in i.outputs}

#: indicators :func:`~hdi_lab.indicators.compute_many` runs on the panel (for the parameters their
#: :attr:`Panel.when <hdi_lab.indicators.entry.Panel.when>` accepts); the others run instrument by instrument
PANEL: tuple[str, ...] = tuple(i.name for i in ENTRIES if i.panel is not None)

#: the recursive averages of each resumable indicator: its state is their last values
STATE_SLOTS: dict[str, tuple[str, ...]] = {
    i.name: i.panel.state for i in ENTRIES if i.panel is not None and i.panel.state
}
