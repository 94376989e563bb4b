"""A live chart: the explorer's candlesticks (:func:`hdi_lab.frontend.charts.new_figure`) appending as a live
session's bars close, with the live indicators of the session's feature sets drawn over them.

>>> handle = hdi_lab.live("databento", dataset="GLBX.MDP3", schema="ohlcv-1s", symbols="ES.c.0",
...                       stype_in="continuous", features=["momentum_v1"])
>>> LiveChart(handle)                     # a cell ending with the chart displays it

The chart subscribes to the handle (:meth:`hdi_lab.core.live.LiveHandle.subscribe`): each committed batch's bars
are appended on the session's writer thread, and each update of the live indicators
(:meth:`hdi_lab.features.live.LiveFeatures.subscribe`) reads the stored feature rows of its bars on the features'
thread. Both change the ``FigureWidget`` from a background thread: every change of the chart's state and of the
figure is made under one lock, inside one ``batch_update`` (one message to the browser per change), so the two
threads and the notebook's own thread never interleave half-updated traces (tested). The chart keeps the last
``max_bars`` bars of one instrument (``instrument_id``, else the first one whose bars arrive).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hdi_lab import features
from hdi_lab.core.live import LiveCommit, LiveHandle
from hdi_lab.errors import HdiError, ValidationError
from hdi_lab.extras import require
from hdi_lab.features.live import LIVE_INTERVALS, LiveUpdate
from hdi_lab.frontend import charts
from hdi_lab.frontend.display import RootWidget
from hdi_lab.schemas import INTERVALS

if TYPE_CHECKING:
    import plotly.graph_objects as go

w = require("ipywidgets")

__all__ = ["LiveChart"]

_COLUMNS = ["open", "high", "low", "close", "volume"]


class LiveChart(RootWidget):
    """Candlesticks + volume of a live session's bars, appended as they close, with live indicators.

    ``schema``: the bars drawn (default: the session's first of ``ohlcv-1s`` / ``ohlcv-1m``); ``indicators``:
    columns of the session's feature set (``features=`` of :func:`hdi_lab.live`; the first set, or
    ``feature_set``) drawn over the candles, none without live features. Attributes: ``figure`` (the plotly
    ``FigureWidget``), ``status`` (an HTML line), ``bars`` (the bars shown), ``lines`` (the indicator values
    of those bars), ``errors`` (what failed while updating, newest last).

    Raises ValidationError when the session stores no bars, or for indicators not in the feature set.
    """

    def __init__(
        self,
        handle: LiveHandle,
        *,
        schema: str | None = None,
        instrument_id: int | None = None,
        max_bars: int = 300,
        indicators: Sequence[str] = ("sma_20", "ema_20"),
        feature_set: str | None = None,
        height: int = 480,
    ) -> None:
        bar_schemas = [str(s) for s in handle.request.schemas if str(s) in LIVE_INTERVALS]
        chosen = schema or (bar_schemas[0] if bar_schemas else None)
        if chosen is None or chosen not in bar_schemas:
            raise ValidationError(
                f"the live session stores no {schema or 'bars'} to chart (schemas {', '.join(handle.request.schemas)}):"
                f" start it with one of {', '.join(LIVE_INTERVALS)} in schema"
            )
        if max_bars < 1:
            raise ValidationError(f"max_bars={max_bars} must be >= 1")
        self.handle, self.schema, self.interval = handle, chosen, LIVE_INTERVALS[chosen]
        self.instrument_id, self.max_bars = instrument_id, max_bars
        live = handle.features
        self.feature_set = feature_set or (live.sets[0] if live is not None else None)
        self.indicators = tuple(indicators) if live is not None else ()
        if self.indicators:
            known = [c.name for c in features.feature_set(str(self.feature_set)).resolved]
            unknown = [c for c in self.indicators if c not in known]
            if unknown:
                raise ValidationError(
                    f"indicators {', '.join(unknown)} are not columns of {self.feature_set}: use some of "
                    f"{', '.join(known)}"
                )
        self._lock = threading.Lock()
        self.bars = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in _COLUMNS}).set_axis(
            pd.DatetimeIndex([], tz="UTC", name="ts_event")
        )
        self.lines = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in self.indicators}).set_axis(
            pd.DatetimeIndex([], tz="UTC", name="ts_event")
        )
        self.errors: list[str] = []
        self.draws = 0  # figure updates made
        self.draw_threads: set[str] = set()  # the threads that made them
        self.figure: go.FigureWidget = charts.new_figure(height)
        charts.draw(self.figure, self.bars, {c: self.lines[c] for c in self.indicators}, title=self._title())
        self.status = w.HTML(value="<i>waiting for the first bar</i>")
        self._root = w.VBox([self.status, self.figure])
        handle.subscribe(self.on_commit)
        if self.indicators and live is not None:
            live.subscribe(self.on_features)

    def _title(self) -> str:
        what = f" instrument {self.instrument_id}" if self.instrument_id is not None else ""
        return f"{', '.join(self.handle.request.symbols)}{what} {self.schema} (live session {self.handle.id})"

    # -- the session's side (background threads) --------------------------------------------------

    def on_commit(self, commit: LiveCommit) -> None:
        """Append the batch's closed bars (the session calls it on its writer thread). Raises nothing."""
        try:
            bars = commit.bars(self.schema)
            if bars.empty:
                return
            with self._lock:
                if self.instrument_id is None:
                    self.instrument_id = int(bars["instrument_id"].iloc[0])
                mine = bars.loc[bars["instrument_id"].to_numpy() == self.instrument_id, _COLUMNS]
                if mine.empty:
                    return
                joined = pd.concat([self.bars, mine.astype(np.float64)])
                joined = joined[~joined.index.duplicated(keep="last")].sort_index()
                self.bars = joined.iloc[-self.max_bars :]
                self._redraw()
        except Exception as exc:  # noqa: BLE001 (a callback of the session: it shows its error, raises none)
            self._failed(exc)

    def on_features(self, update: LiveUpdate) -> None:
        """Read the indicators of an update's bars (the live features call it on their thread). Raises nothing."""
        if update.error is not None or update.interval != self.interval or update.feature_set != self.feature_set:
            return
        if self.instrument_id is not None and update.instrument_id != self.instrument_id:
            return
        live = self.handle.features
        try:
            step = pd.Timedelta(seconds=INTERVALS[self.interval])
            rows = features.read(
                str(self.feature_set),
                self.handle.request.symbols,
                update.start + step,
                update.end + step,
                interval=self.interval,
                columns=list(self.indicators),
                dataset=self.handle.request.dataset,
                session=live.session,
            )
            rows = rows[rows["instrument_id"].to_numpy() == update.instrument_id]
            opens = pd.DatetimeIndex(rows["event_timestamp"]).tz_convert("UTC") - step
            got = pd.DataFrame(rows[list(self.indicators)].to_numpy(np.float64), index=opens, columns=self.indicators)
            with self._lock:
                joined = pd.concat([self.lines, got.rename_axis("ts_event")])
                joined = joined[~joined.index.duplicated(keep="last")].sort_index()
                self.lines = joined.iloc[-4 * self.max_bars :]
                self._redraw()
        except Exception as exc:  # noqa: BLE001 (a callback of the features: it shows its error, raises none)
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        text = str(exc) if isinstance(exc, HdiError) else f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.errors.append(text)
            self.status.value = f'<span style="color:#c62828"><b>Error:</b> {html.escape(text)}</span>'

    def _redraw(self) -> None:
        """Put the state into the figure: one batch_update (called with the lock held)."""
        bars = self.bars
        x = charts.iso_times(bars.index)
        lines = self.lines.reindex(bars.index)
        with self.figure.batch_update():
            candles, volume, *overlays = self.figure.data
            candles.x, volume.x = x, x
            candles.open, candles.high = bars["open"].to_numpy(), bars["high"].to_numpy()
            candles.low, candles.close = bars["low"].to_numpy(), bars["close"].to_numpy()
            volume.y = bars["volume"].to_numpy(np.float64)
            for trace, name in zip(overlays, self.indicators, strict=True):
                trace.x, trace.y = x, lines[name].to_numpy(np.float64)
            self.figure.layout.title.text = self._title()
        self.draws += 1
        self.draw_threads.add(threading.current_thread().name)
        last = f"{bars.index[-1]:%Y-%m-%d %H:%M:%S} UTC" if len(bars) else "-"
        known = self.lines.dropna(how="all")
        ind = f"; {self.feature_set} to {known.index[-1]:%H:%M:%S}" if len(known) else ""
        self.status.value = html.escape(f"{len(bars)} bars shown, last bar opens {last}{ind}")

    def snapshot(self) -> dict[str, Any]:
        """The figure as sent to the browser (``to_plotly_json``), taken under the chart's lock. Raises nothing."""
        with self._lock:
            return dict(self.figure.to_plotly_json())
