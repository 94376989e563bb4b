"""What one indicator is: a catalogue entry.

An :class:`Indicator` owns everything about one indicator: its parameters, outputs and inputs, its
warm-ups, its pandas-ta computation on one instrument's bars (``run``) and, when it has one, its
numpy kernel on a panel of instruments with the state slots that kernel resumes from
(:class:`Panel`). The tables of :mod:`hdi_lab.indicators.catalogue` are derived from the entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import pandas as pd

if TYPE_CHECKING:  # numpy.typing is not loaded at run time: importing the indicators stays as light as it was
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "Carried",
    "FloatArray",
    "Indicator",
    "Panel",
    "PanelKernel",
    "Param",
    "ParamValue",
    "Params",
    "Resume",
    "Run",
    "Series",
    "Warmup",
    "label",
    "param_text",
]

ParamValue: TypeAlias = int | float | str
#: an indicator's parameter values by name (every parameter present, already checked)
Params: TypeAlias = Mapping[str, Any]
Series: TypeAlias = pd.Series
FloatArray: TypeAlias = "npt.NDArray[np.float64]"
#: the pandas-ta computation on one instrument's bars: output name -> values on the bars' index
Run: TypeAlias = Callable[[pd.DataFrame, Params], dict[str, Series]]
#: output name -> leading bars without a value
Warmup: TypeAlias = Callable[[Params], dict[str, int]]
#: a panel kernel's recursive averages by state slot (values on every row of the panel)
Carried: TypeAlias = dict[str, FloatArray]
#: ``(at, {slot: values})``: the state slots' values at row ``at`` of the panel, one per column
Resume: TypeAlias = tuple[int, Mapping[str, FloatArray]]
#: the computation on a panel (one column per instrument, its bars from row 0, NaN below its last
#: bar): ``(params, inputs by name, resume or None) -> (outputs by name, carried by state slot)``
PanelKernel: TypeAlias = Callable[
    [Params, Mapping[str, FloatArray], Resume | None], tuple[dict[str, FloatArray], Carried]
]


@dataclass(frozen=True)
class Param:
    name: str
    default: ParamValue
    minimum: float | None = 1
    choices: tuple[str, ...] = ()


def _always(params: Params) -> bool:
    return True


@dataclass(frozen=True)
class Panel:
    """An indicator's numpy kernel on a panel of instruments.

    ``state``: the slots of its recursive averages (the values :func:`~hdi_lab.indicators.compute_resumable`
    saves and resumes from; empty for window indicators, which resume from their window alone).
    ``when``: the parameters the kernel handles (others run instrument by instrument).

    The kernel must equal ``run`` bit for bit (tests/test_indicators.py), and with ``resume`` continue
    the run from the first bar bit for bit: the same pandas ewm kernels, pandas-ta's numba SMA and
    the elementwise window deviation as ``run``, seeds taken on the same values.
    """

    kernel: PanelKernel
    state: tuple[str, ...] = ()
    when: Callable[[Params], bool] = _always


@dataclass(frozen=True)
class Indicator:
    """One catalogue entry: a pandas-ta call and the outputs it yields, and its panel kernel if any."""

    name: str
    params: tuple[Param, ...]
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    run: Run
    warmup: Warmup
    doc: str
    panel: Panel | None = None
    #: checks across parameters (each is checked alone by its :class:`Param`); raises ValidationError
    check: Callable[[Params], None] | None = None

    def on_panel(self, params: Params) -> bool:
        """Whether these parameters run on the panel (and can be resumed)."""
        return self.panel is not None and self.panel.when(params)

    def state_slots(self, params: Params) -> tuple[str, ...]:
        """The state slots of these parameters on the panel (empty when not on it)."""
        return self.panel.state if self.panel is not None and self.panel.when(params) else ()


def param_text(value: ParamValue) -> str:
    """A parameter value as written in a column name: ``14``, ``2`` for 2.0, ``1p5`` for 1.5, ``d``."""
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).replace(".", "p")


def label(head: str, values: Iterable[ParamValue]) -> str:
    """``head`` followed by the parameter values, ``_``-separated: a column name (``rsi_14``) from an
    output, a state key (``macd_12_26_9``) from an indicator."""
    return "_".join([head, *(param_text(v) for v in values)])
