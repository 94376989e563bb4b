"""Charts for the widgets: price overlays (pure pandas), a candlestick + volume ``FigureWidget`` and the coverage
heatmap of :func:`hdi_lab.core.gaps.coverage` (instrument x session, colour = present / expected bars).

plotly is imported only inside :func:`new_figure` / :func:`draw`, so importing this module (or
:mod:`hdi_lab.frontend.widgets`) stays cheap. Overlay conventions (chosen to match pandas-ta's defaults,
computed by :mod:`hdi_lab.indicators`, the one implementation of every indicator):

* SMA: ``sma_<window>``, the mean of the last ``window`` closes (the first ``window - 1`` values are NaN).
* EMA: ``ema_<window>``, ``alpha = 2 / (window + 1)``, seeded with the SMA of the first ``window``
  closes at bar ``window - 1``; the first ``window - 1`` values are NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from hdi_lab.errors import ValidationError
from hdi_lab.extras import require

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "OVERLAYS",
    "coverage_heatmap",
    "coverage_matrix",
    "draw",
    "ema",
    "iso_times",
    "new_figure",
    "one_series",
    "overlays",
    "redraw",
    "sma",
]

#: Overlay names :func:`overlays` accepts.
OVERLAYS = ("sma", "ema")


def _check_window(close: pd.Series, window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValidationError(f"window={window!r} is not valid: use a whole number of bars >= 1, e.g. 20")
    if len(close) < window:
        raise ValidationError(
            f"window={window} is longer than the {len(close)} bars loaded: shorten the window or widen the range"
        )


def _indicator(close: pd.Series, name: str, window: int) -> pd.Series:
    from hdi_lab import indicators

    _check_window(close, window)
    col = indicators.make_column(name, length=int(window))
    out = indicators.compute(close.astype(np.float64).to_frame("close"), [col])
    return out[col.name]


def sma(close: pd.Series, window: int) -> pd.Series:
    """Simple moving average of ``close`` over ``window`` bars (a new Series; the input is untouched)."""
    return _indicator(close, "sma", window)


def ema(close: pd.Series, window: int) -> pd.Series:
    """Exponential moving average of ``close``, seeded with the first window's SMA (see the module docstring)."""
    return _indicator(close, "ema", window)


def overlays(close: pd.Series, names: tuple[str, ...], window: int) -> dict[str, pd.Series]:
    """The requested overlays of ``close`` by display name (``SMA(20)``); empty input gives none.

    Raises ValidationError for a name not in :data:`OVERLAYS`, or a window that is not a whole number >= 1 or is
    longer than ``close``."""
    if len(close) == 0:
        return {}
    funcs = {"sma": sma, "ema": ema}
    out: dict[str, pd.Series] = {}
    for name in names:
        if name not in funcs:
            raise ValidationError(f"overlay={name!r} is not known: use one of {', '.join(OVERLAYS)}")
        out[f"{name.upper()}({window})"] = funcs[name](close, window)
    return out


def one_series(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Rows a single candlestick series can show, and a note when some were left out.

    A parent symbol (``ES.FUT``) or several symbols give several rows per timestamp; the chart
    then shows the (symbol, instrument) with the most rows.
    """
    if frame.index.is_unique or "instrument_id" not in frame:
        return frame, ""
    sizes = frame.groupby(["symbol", "instrument_id"], sort=True, observed=True).size()
    symbol, iid = cast(tuple[str, int], sizes.idxmax())
    keep = (frame["symbol"] == symbol).to_numpy() & (frame["instrument_id"] == iid).to_numpy()
    note = (
        f"the result holds several instruments per timestamp: the chart shows {symbol} "
        f"(instrument {iid}, {int(keep.sum())} of {len(frame)} rows); the table shows all rows"
    )
    return frame[keep], note


def iso_times(times: pd.Index) -> np.ndarray[Any, np.dtype[np.object_]]:
    """The UTC times as ISO 8601 strings ending in ``Z`` (naive times are taken as UTC): a chart's x.

    Strings reach the browser unchanged, whatever the kernel's time zone: naive datetimes would be
    sent with the kernel's *local* offset (jupyter_client's serialiser, with a DeprecationWarning)
    and datetime64[ns] arrays as integers (epoch ns). Whole seconds are written without a fraction
    (every bar), else to the microsecond. An object array: plotly copies it per trace by reference.
    """
    index = pd.DatetimeIndex(times)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    values = index.to_numpy()
    whole = bool((values.astype("datetime64[s]") == values).all())
    return np.datetime_as_string(values, unit="s" if whole else "us", timezone="UTC").astype(object)


def new_figure(height: int = 560) -> go.FigureWidget:
    """An empty candlestick (row 1) + volume (row 2) ``FigureWidget`` with a shared x axis."""
    go_ = require("plotly.graph_objects")
    subplots = require("plotly.subplots")
    base = subplots.make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.03)
    fig = go_.FigureWidget(base)
    fig.update_layout(
        height=height,
        margin=dict(l=50, r=20, t=40, b=30),
        showlegend=True,
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
        xaxis_rangeslider_visible=False,
        hovermode="x unified",
    )
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="volume", row=2, col=1)
    fig.update_xaxes(type="date")  # the times travel as ISO strings (see iso_times)
    fig.update_xaxes(title_text="UTC", row=2, col=1)
    return fig


def draw(fig: go.FigureWidget, frame: pd.DataFrame, lines: dict[str, pd.Series], title: str = "") -> None:
    """Replace ``fig``'s traces with candles and volume of ``frame`` plus one line per overlay."""
    go_ = require("plotly.graph_objects")
    x = iso_times(frame.index)
    traces: list[tuple[Any, int]] = [
        (
            go_.Candlestick(
                x=x,
                open=frame["open"].to_numpy(),
                high=frame["high"].to_numpy(),
                low=frame["low"].to_numpy(),
                close=frame["close"].to_numpy(),
                name="OHLC",
            ),
            1,
        ),
        (
            go_.Bar(
                x=x, y=frame["volume"].to_numpy(np.float64), name="volume", marker_color="rgba(100, 110, 140, 0.6)"
            ),
            2,
        ),
    ]
    for name, series in lines.items():
        traces.append(
            (go_.Scatter(x=x, y=series.to_numpy(np.float64), mode="lines", name=name, line=dict(width=1.4)), 1)
        )
    with fig.batch_update():
        fig.data = ()
        fig.update_layout(title_text=title)
    fig.add_traces([t for t, _ in traces], rows=[r for _, r in traces], cols=[1] * len(traces))


def coverage_matrix(coverage: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The heatmap of a :func:`hdi_lab.core.gaps.coverage` frame as (values, reasons): one row per symbol and
    instrument (``"ESH4 · 4242"``, ``"?"`` where the symbol meant none), one column per calendar day from the
    first session to the last. A value is present / expected bars (at most 1; for ticks 1 when any row is
    stored, else 0); a day that is no session (closed by the calendar) is NaN, drawn blank. ``reasons`` holds
    each session's gap reason ("" when complete), NaN on closed days. Raises nothing."""
    if coverage.empty:
        return pd.DataFrame(dtype=np.float64), pd.DataFrame(dtype=object)
    iid = coverage["instrument_id"].astype("string").fillna("?")
    row = coverage["symbol"].astype(str) + " · " + iid
    expected = coverage["expected"].to_numpy(dtype=np.float64, na_value=np.nan)
    present = coverage["present"].to_numpy(np.float64)
    ratio = np.where(
        np.isnan(expected), (present > 0).astype(np.float64), present / np.where(expected > 0, expected, 1)
    )
    cells = pd.DataFrame(
        {
            "row": row.to_numpy(),
            "session": pd.DatetimeIndex(coverage["session"]),
            "value": np.minimum(ratio, 1.0),
            "reason": coverage["reason"].fillna("").to_numpy(dtype=object),
        }
    )
    days = pd.date_range(cells["session"].min(), cells["session"].max(), freq="D")
    order = list(dict.fromkeys(cells["row"]))
    values = cells.pivot(index="row", columns="session", values="value").reindex(index=order, columns=days)
    reasons = cells.pivot(index="row", columns="session", values="reason").reindex(index=order, columns=days)
    return values, reasons


def coverage_heatmap(coverage: pd.DataFrame, *, title: str = "", widget: bool = False) -> go.Figure:
    """A plotly heatmap of :func:`coverage_matrix`: red (nothing) to green (every expected bar), closed days
    blank, the gap reason in the hover text. ``widget=True`` returns a ``FigureWidget`` (for ipywidgets).

    Raises MissingDependency without plotly (the ``notebook`` extra)."""
    go_ = require("plotly.graph_objects")
    values, reasons = coverage_matrix(coverage)
    x = list(pd.DatetimeIndex(values.columns).strftime("%Y-%m-%d"))
    heat = go_.Heatmap(
        z=values.to_numpy(np.float64),
        x=x,
        y=list(values.index),
        zmin=0.0,
        zmax=1.0,
        colorscale=[[0.0, "#c62828"], [0.5, "#f9a825"], [1.0, "#2e7d32"]],
        colorbar=dict(title="present / expected"),
        customdata=reasons.fillna("closed").to_numpy(dtype=object),
        hovertemplate="%{y}<br>%{x}: %{z:.0%}<br>%{customdata}<extra></extra>",
        hoverongaps=False,
        xgap=1,
        ygap=1,
    )
    figure = go_.Figure(data=[heat])
    figure.update_layout(
        title_text=title,
        height=max(220, 60 + 28 * len(values.index)),
        margin=dict(l=120, r=20, t=40, b=40),
        xaxis=dict(type="category" if len(x) <= 1 else "date", title_text="session"),
        yaxis=dict(autorange="reversed"),
    )
    # Built as a Figure first: the layout of a FigureWidget changed before any view shows it never reaches
    # the page (a FigureWidget made from a whole figure starts with it).
    return go_.FigureWidget(figure) if widget else figure


def redraw(figure: Any, new: Any) -> Any:
    """The figure to show ``new`` in: ``figure`` (a ``FigureWidget`` already on the page) given ``new``'s traces
    and layout in one batch update, so the page keeps its widget; ``new`` itself when there is none yet."""
    if figure is None:
        return new
    with figure.batch_update():
        figure.data = ()
        figure.add_traces(list(new.data))
        figure.layout = new.layout
    return figure
