"""Many instruments at once, and resuming from a saved state.

The entries' panel kernels run on one panel for all instruments (one column per instrument, its
bars from row 0, NaN below its last bar), so a feature set over 500 instruments makes a few pandas
calls instead of a few thousand; the indicators without one (or with parameters their kernel does
not take) run instrument by instrument through :func:`~hdi_lab.indicators.compute`.
tests/test_indicators.py checks the result against :func:`~hdi_lab.indicators.compute` bit for bit,
and resumed runs against full ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from hdi_lab.errors import ValidationError
from hdi_lab.indicators.catalogue import CATALOGUE
from hdi_lab.indicators.entry import FloatArray, ParamValue, label
from hdi_lab.indicators.frame import check_bars, compute
from hdi_lab.indicators.naming import Column, as_columns

__all__ = ["compute_many", "compute_resumable", "history", "state_layout"]

_Group = tuple[str, tuple[tuple[str, ParamValue], ...]]


def _groups(wanted: Sequence[Column]) -> dict[_Group, list[int]]:
    groups: dict[_Group, list[int]] = {}
    for k, c in enumerate(wanted):
        groups.setdefault((c.indicator, c.params), []).append(k)
    return groups


def _key(indicator: str, params: tuple[tuple[str, ParamValue], ...]) -> str:
    """The prefix of an indicator's state names: ``macd_12_26_9`` (``macd_12_26_9.signal``)."""
    return label(indicator, (v for _, v in params))


def state_layout(cols: str | Iterable[str | Column]) -> tuple[str, ...] | None:
    """Names of the saved state values of ``cols`` (``"rsi_14.up"``...), in the order
    :func:`compute_resumable` uses; None when a column cannot be resumed (e.g. ADX, OBV: not on
    the panel).

    Raises:
        ValidationError: a column is not valid.
    """
    names: list[str] = []
    for indicator, params in _groups(as_columns(cols)):
        entry = CATALOGUE[indicator]
        if not entry.on_panel(dict(params)):
            return None
        key = _key(indicator, params)
        names += [f"{key}.{slot}" for slot in entry.state_slots(dict(params))]
    return tuple(names)


def history(cols: str | Iterable[str | Column]) -> int:
    """Bars before the first new bar that :func:`compute_resumable` needs (``context``).

    One more than the longest warm-up of the indicators involved (all their outputs): that covers
    every window (a warm-up is the window less one bar; volatility's includes the return's bar)
    and the previous close of a change or true range, and the state saved after that many bars
    is fully defined.

    Raises:
        ValidationError: a column is not valid.
    """
    need = 2
    for indicator, params in _groups(as_columns(cols)):
        need = max(need, max(CATALOGUE[indicator].warmup(dict(params)).values()) + 1)
    return need


def compute_many(frames: Sequence[pd.DataFrame], cols: str | Iterable[str | Column]) -> list[FloatArray]:
    """:func:`~hdi_lab.indicators.compute` with ``short="nan"`` for many instruments' bar frames at once.

    Returns one ``(len(frame), len(cols))`` float array per frame, equal bit for bit to
    ``compute(frame, cols, short="nan").to_numpy()``.

    Raises:
        ValidationError: a column is not valid, or a frame cannot be computed on (see
            :func:`~hdi_lab.indicators.frame.check_bars`).
        MissingDependency: pandas-ta is not installed.
    """
    return _many(frames, as_columns(cols))[0]


def compute_resumable(
    frames: Sequence[pd.DataFrame],
    cols: str | Iterable[str | Column],
    *,
    context: int = 0,
    state: FloatArray | None = None,
) -> tuple[list[FloatArray], FloatArray]:
    """:func:`compute_many` that also returns the state after each frame's last bar, or resumes from one.

    Without ``state``: every frame holds an instrument's bars from its first one; returns the
    arrays of :func:`compute_many` and a ``(len(frames), len(state_layout(cols)))`` array of the
    recursive averages after each frame's last bar (NaN while undefined).

    With ``state`` (one row per frame, as returned): each frame's first ``context`` rows are the
    last bars already computed (``context >= history(cols)``; the state is the one after the
    last of them) followed by new bars. The rows of the new bars equal, bit for bit, what the
    computation from the instrument's first bar gives (the context rows are not meaningful);
    the returned state is the one after each frame's last bar. Only for columns with a
    :func:`state_layout`; the instruments must have had more than ``context`` bars before.

    Raises:
        ValidationError: a column cannot be resumed (no :func:`state_layout`), ``context`` is shorter
            than :func:`history` or than a frame, or as :func:`compute_many`.
        MissingDependency: pandas-ta is not installed.
    """
    wanted = as_columns(cols)
    layout = state_layout(wanted)
    if layout is None:
        raise ValidationError(f"{', '.join(c.name for c in wanted)} cannot be resumed: compute from the first bar")
    if state is None:
        return _many(frames, wanted, layout=layout)
    if context < history(wanted):
        raise ValidationError(f"context={context} is too short: these columns need {history(wanted)} bars")
    if any(len(f) < context for f in frames):
        raise ValidationError(f"every frame needs its {context} context bars first")
    state = np.asarray(state, dtype=np.float64).reshape(len(frames), len(layout))
    return _many(frames, wanted, layout=layout, resume=(context - 1, state))


def _many(
    frames: Sequence[pd.DataFrame],
    wanted: tuple[Column, ...],
    layout: tuple[str, ...] = (),
    resume: tuple[int, FloatArray] | None = None,
) -> tuple[list[FloatArray], FloatArray]:
    needed = tuple(dict.fromkeys(i for c in wanted for i in c.inputs))
    lengths = np.array([len(f) for f in frames], dtype=np.int64)
    out = [np.full((n, len(wanted)), np.nan) for n in lengths]
    states = np.full((len(frames), len(layout)), np.nan)
    if not frames:
        return out, states
    rows = int(lengths.max())
    panel = {}
    inside = np.arange(rows)[:, None] < lengths[None, :]
    for name in needed:
        x = np.full((rows, len(frames)), np.nan, order="F")
        for j, f in enumerate(frames):
            if name not in f.columns:
                check_bars(f, needed)  # raises, naming the missing column
            x[: len(f), j] = f[name].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = inside & ~np.isfinite(x)
        if bad.any():
            check_bars(frames[int(np.argmax(bad.any(axis=0)))], needed)  # raises, naming the bar
        panel[name] = x
    for f in frames:
        if not f.index.is_monotonic_increasing or not f.index.is_unique:
            check_bars(f, needed)
    slot = {name: i for i, name in enumerate(layout)}
    last = np.maximum(lengths - 1, 0)
    every = np.arange(len(frames))
    stacked = np.full((len(frames), rows, len(wanted)), np.nan)  # instrument, bar, column
    elsewhere: list[int] = []
    for (indicator, params), members in _groups(wanted).items():
        p = dict(params)
        entry = CATALOGUE[indicator]
        if entry.panel is None or not entry.on_panel(p):
            elsewhere += members
            continue
        key = _key(indicator, params)
        given = None
        if resume is not None:
            given = (resume[0], {s: resume[1][:, slot[f"{key}.{s}"]] for s in entry.panel.state})
        values, carried = entry.panel.kernel(p, panel, given)
        for k in members:
            c = wanted[k]
            v = values[c.output].T.copy()
            v[:, : c.warmup] = np.nan  # with resume: context rows only (context > every warm-up)
            v[np.isinf(v)] = np.nan
            stacked[:, :, k] = v
        if layout:
            for s, series in carried.items():
                states[:, slot[f"{key}.{s}"]] = series[last, every]
    for j, n in enumerate(lengths):
        out[j] = stacked[j, :n].copy()
    if elsewhere:
        subset = [wanted[k] for k in elsewhere]
        for j, f in enumerate(frames):
            out[j][:, elsewhere] = compute(f, subset, short="nan").to_numpy(np.float64)
    states[lengths == 0] = np.nan
    return out, states
