"""ipywidgets front ends: :class:`IngestForm`, :class:`QueryExplorer` and :class:`Coverage`.

Like the magics and the CLI they only build a request, call the core and render its result:
``IngestForm`` validates its fields with :func:`hdi_lab.api.make_request` and runs
:func:`hdi_lab.core.ingestion.run`; ``QueryExplorer`` reads with :func:`hdi_lab.core.retrieval.query` and
lists symbols with :func:`hdi_lab.core.catalog.search_symbols`; ``Coverage`` draws
:func:`hdi_lab.core.gaps.coverage` as a heatmap and lists the gaps.

The handlers are plain methods (``IngestForm.request()/preview()/run()``,
``QueryExplorer.refresh()/load()``) that return their result and raise ``HdiError`` on bad
input. Buttons call them through a guard that shows any exception in red in the panel's
``output`` and keeps it in ``last_error``: ipywidgets would otherwise only log an exception
raised in a callback (ipywidgets#2949). plotly is imported on the first chart only.

>>> from hdi_lab.frontend.widgets import IngestForm, QueryExplorer
>>> IngestForm(session)        # a cell ending with the object displays the form
>>> QueryExplorer(session)
>>> Coverage(session)
"""

from __future__ import annotations

import html
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from hdi_lab.api import make_request
from hdi_lab.core import catalog, gaps, ingestion, retrieval
from hdi_lab.core.continuous import is_continuous
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import HdiError, IngestError
from hdi_lab.extras import require
from hdi_lab.frontend import charts, options
from hdi_lab.frontend.display import RootWidget
from hdi_lab.schemas import IngestReport, IngestRequest, Progress, Schema

if TYPE_CHECKING:
    import plotly.graph_objects as go

w = require("ipywidgets")

__all__ = ["BAR_SCHEMAS", "Coverage", "IngestForm", "QueryExplorer", "error_text"]

_WIDE = {"description_width": "90px"}
_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


def _bar_label(schema: str) -> str:
    """``"1 minute"`` for ``"ohlcv-1m"``: how the explorer's interval picker names a bar schema."""
    length = schema.removeprefix("ohlcv-")
    n, unit = length[:-1], _UNITS[length[-1]]
    return f"{n} {unit}" if n == "1" else f"{n} {unit}s"


#: the explorer's interval picker: (label, bar schema)
BAR_SCHEMAS = tuple((_bar_label(schema), schema) for schema in options.BAR_SCHEMAS)


def _show(output: Any, html_text: str, plain: str) -> None:
    """Replace what ``output`` shows (set directly, so it works with or without a kernel)."""
    output.outputs = (
        {"output_type": "display_data", "metadata": {}, "data": {"text/plain": plain, "text/html": html_text}},
    )


def error_text(exc: BaseException) -> str:
    """The message a panel shows for ``exc``: an HdiError's message, else its type and message."""
    if isinstance(exc, HdiError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (chunks committed before the interrupt are kept)"
    return f"{type(exc).__name__}: {exc}"


def _error_html(exc: BaseException) -> str:
    body = f'<div class="hdi-error" style="color:#c62828"><b>Error:</b> {html.escape(error_text(exc))}</div>'
    if isinstance(exc, IngestError):  # some files failed: every file's outcome under the message
        body += exc.report._repr_html_()
    if not isinstance(exc, HdiError | KeyboardInterrupt):  # an unexpected failure: keep its traceback at hand
        tb = "".join(traceback.format_exception(exc))
        body += f"<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details>"
    return body


def _table_html(frame: pd.DataFrame, **kwargs: Any) -> str:
    with pd.option_context("display.max_columns", 40, "display.max_colwidth", 100):
        return str(frame.to_html(border=0, **kwargs))


class _Panel(RootWidget):
    """Shared plumbing: the root container, self-display, guarded button callbacks."""

    output: Any
    _root: Any
    _buttons: tuple[Any, ...] = ()

    def __init__(self) -> None:
        self.last_error: BaseException | None = None
        self.output = w.Output(layout=w.Layout(width="100%"))

    def message(self) -> str:
        """The plain text the output area shows (the last report, status or error)."""
        return "\n".join(str(o.get("data", {}).get("text/plain", "")) for o in self.output.outputs)

    def show_error(self, exc: BaseException) -> None:
        self.last_error = exc
        _show(self.output, _error_html(exc), f"Error: {error_text(exc)}")

    def _guard(self, action: Callable[[], object]) -> Callable[[Any], None]:
        """A button callback running ``action`` that shows, and never re-raises, its exception."""

        def callback(_button: Any = None) -> None:
            self.last_error = None
            for b in self._buttons:
                b.disabled = True
            try:
                action()
            except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 (a callback shows every error, raises none)
                self.show_error(exc)
            finally:
                for b in self._buttons:
                    b.disabled = False

        return callback


class IngestForm(_Panel):
    """A form that ingests market data through the core (sample data or local DBN files).

    Widgets (attributes): ``provider``, ``dataset``, ``schema``, ``symbols``, ``stype_in``,
    ``start``, ``end`` (DatePickers, UTC days, end exclusive), ``path``, ``force``,
    ``preview_button``, ``run_button``, ``progress`` (IntProgress over chunks),
    ``progress_label`` and ``output``. ``report`` holds the last IngestReport.
    """

    def __init__(self, session: HdiSession) -> None:
        super().__init__()
        self.session = session
        self.report: IngestReport | None = None
        self.provider = w.Dropdown(options=list(options.PROVIDERS), value="sample", description="provider", style=_WIDE)
        self.dataset = w.Text(
            value="", placeholder="auto (from the symbols or file)", description="dataset", style=_WIDE
        )
        self.schema = w.Dropdown(
            options=[("(from the file)", ""), *((s, s) for s in options.SCHEMAS)],
            value=Schema.OHLCV_1M.value,
            description="schema",
            style=_WIDE,
        )
        self.symbols = w.Text(value="", placeholder="ESH4, NQH4 or ES.c.0", description="symbols", style=_WIDE)
        self.stype_in = w.Dropdown(
            options=list(options.STYPES), value=options.OPTIONS["stype_in"].default, description="stype_in", style=_WIDE
        )
        self.start = w.DatePicker(description="start (UTC)", style=_WIDE)
        self.end = w.DatePicker(description="end (excl.)", style=_WIDE)
        self.path = w.Text(
            value="",
            placeholder="data.dbn.zst or a folder of DBN files",
            description="path",
            style=_WIDE,
            layout=w.Layout(width="420px"),
        )
        self.force = w.Checkbox(value=False, description="force (re-load completed chunks)", indent=False)
        self.allow_cost = w.Checkbox(value=False, description="allow cost above the configured limit", indent=False)
        self.preview_button = w.Button(
            description="Preview",
            icon="search",
            tooltip="Dry run: plan the chunks and estimate records; writes nothing",
        )
        self.run_button = w.Button(
            description="Run", icon="download", button_style="primary", tooltip="Ingest into the database"
        )
        self.progress = w.IntProgress(value=0, min=0, max=1, description="chunks", style=_WIDE)
        self.progress_label = w.Label(value="")
        self._buttons = (self.preview_button, self.run_button)
        self.preview_button.on_click(self._guard(self.preview))
        self.run_button.on_click(self._guard(self.run))
        self.provider.observe(self._provider_changed, names="value")
        self._market_fields = (self.symbols, self.stype_in, self.start, self.end)
        self._root = w.VBox(
            [
                w.HBox([self.provider, self.dataset]),
                w.HBox([self.schema, self.stype_in]),
                self.symbols,
                w.HBox([self.start, self.end]),
                self.path,
                w.HBox([self.force, self.allow_cost]),
                w.HBox([self.preview_button, self.run_button]),
                w.HBox([self.progress, self.progress_label]),
                self.output,
            ]
        )
        self._provider_changed()

    def _provider_changed(self, _change: object = None) -> None:
        is_file = self.provider.value == "file"
        for f in self._market_fields:
            f.layout.display = "none" if is_file else None
        self.path.layout.display = None if is_file else "none"

    def request(self, *, dry_run: bool = False) -> IngestRequest:
        """The IngestRequest for the current field values; raises HdiError on bad input."""
        common: dict[str, Any] = dict(
            schema=self.schema.value or None,
            dataset=self.dataset.value.strip() or None,
            force=bool(self.force.value),
            dry_run=dry_run,
            allow_cost=bool(self.allow_cost.value),
        )
        if self.provider.value == "file":
            return make_request("file", path=self.path.value.strip() or None, **common)
        return make_request(
            self.provider.value,
            symbols=self.symbols.value,
            stype_in=self.stype_in.value,
            start=self.start.value,
            end=self.end.value,
            **common,
        )

    def preview(self) -> IngestReport:
        """Dry run: plan the chunks and estimate their records (writes nothing); shows and returns the report."""
        report = ingestion.run(self.request(dry_run=True), self.session)
        self.report = report
        _show(self.output, _report_html(report), str(report))
        return report

    def run(self) -> IngestReport:
        """Ingest with live progress; shows and returns the report."""
        request = self.request()
        self.progress.value = 0
        self.progress.max = 1
        self.progress.bar_style = ""
        self.progress_label.value = "planning…"
        _show(self.output, "<i>running…</i>", "running…")
        try:
            report = ingestion.run(request, self.session, progress=self._on_progress)
        except BaseException as exc:
            self.progress.bar_style = "danger"
            self.progress_label.value = f"failed after {self.progress.value} of {self.progress.max} chunks"
            if isinstance(exc, IngestError):
                self.report = exc.report
                self.progress_label.value = f"{len(exc.report.failed)} of {len(exc.report.chunks)} chunks failed"
            raise
        if not report.chunks:  # nothing to do: show the bar complete all the same
            self.progress.value = self.progress.max
        self.progress.bar_style = "success"
        self.progress_label.value = f"{len(report.chunks)} chunks, {report.fetched:,} rows in {report.seconds:.2f} s"
        self.report = report
        _show(self.output, _report_html(report), str(report))
        return report

    def _on_progress(self, p: Progress) -> None:
        self.progress.max = max(p.total, 1)
        self.progress.value = p.done
        self.progress_label.value = f"{p.done}/{p.total} chunks, {p.rows:,} rows"


def _report_html(report: IngestReport) -> str:
    """A heading over the report's own notebook display (summary and chunks)."""
    if report.dry_run:
        cost = "no cost estimate" if report.cost_usd is None else f"estimated cost ${report.cost_usd:,.2f}"
        head = (
            f"<b>Preview (dry run, nothing written)</b>: {len(report.chunks)} chunks, "
            f"~{report.fetched:,} records estimated, {cost}"
        )
    else:
        head = f"<b>Ingest finished</b>: {html.escape(str(report))}"
    return f"<div class='hdi-report'>{head}{report._repr_html_()}</div>"


class QueryExplorer(_Panel):
    """Explore stored bars: a candlestick + volume chart with SMA/EMA overlays and a table.

    Widgets (attributes): ``symbol`` (Combobox filled from the catalog), ``refresh_button``,
    ``schema`` (bar interval), ``start``/``end`` (DatePickers, UTC days, end exclusive),
    ``adjust`` (Dropdown: as stored, or a back-adjustment of :data:`hdi_lab.schemas.ADJUSTS`; enabled for
    continuous symbols such as ``ES.c.0``, which it then reads rolled by hdi_lab's rules, as
    ``hdi_lab.query(..., adjust=...)``), ``sma``/``ema`` (Checkboxes), ``window`` (IntText), ``indicators``
    (Text: more price-scale overlays by column name, e.g. ``bbu_20_2, bbl_20_2``; every overlay is computed by
    :mod:`hdi_lab.indicators`, over the adjusted prices when adjusted), ``load_button``, ``chart`` (a Box
    holding ``figure``, a plotly FigureWidget created on the first load), ``table`` (HTML with
    the first and last rows) and ``output``. ``frame`` holds the last loaded DataFrame and
    ``symbols_frame`` the last catalog listing.
    """

    def __init__(self, session: HdiSession, *, rows: int = 5, max_points: int = 200_000, refresh: bool = True) -> None:
        super().__init__()
        self.session = session
        self.rows = rows
        self.max_points = max_points
        self.frame: pd.DataFrame | None = None
        self.figure: go.FigureWidget | None = None
        self.symbols_frame = pd.DataFrame(
            columns=["symbol", "stype", "dataset", "instrument_id", "raw_symbol", "first", "last"]
        )
        self.symbol = w.Combobox(
            value="",
            options=[],
            placeholder="symbol, e.g. ESH4",
            description="symbol",
            ensure_option=False,
            style=_WIDE,
        )
        self.refresh_button = w.Button(
            icon="refresh", tooltip="Refresh the symbol list from the database", layout=w.Layout(width="40px")
        )
        self.schema = w.Dropdown(options=BAR_SCHEMAS, value=Schema.OHLCV_1M.value, description="interval", style=_WIDE)
        self.start = w.DatePicker(description="start (UTC)", style=_WIDE)
        self.end = w.DatePicker(description="end (excl.)", style=_WIDE)
        self.adjust = w.Dropdown(
            options=[("as stored", ""), *((a, a) for a in options.ADJUSTS)],
            value="",
            description="adjust",
            disabled=True,
            tooltip="continuous symbols (ES.c.0, ES.v.0, ES.n.0): rolled by hdi_lab's rules and back-adjusted",
            style=_WIDE,
        )
        self.sma = w.Checkbox(value=False, description="SMA", indent=False, layout=w.Layout(width="70px"))
        self.ema = w.Checkbox(value=False, description="EMA", indent=False, layout=w.Layout(width="70px"))
        self.indicators = w.Text(
            value="",
            placeholder="more overlays, e.g. bbu_20_2, bbl_20_2",
            description="indicators",
            style=_WIDE,
            layout=w.Layout(width="420px"),
        )
        self.window = w.IntText(
            value=20, description="window", style={"description_width": "60px"}, layout=w.Layout(width="140px")
        )
        self.load_button = w.Button(description="Load", icon="line-chart", button_style="primary")
        self.chart = w.Box(layout=w.Layout(width="100%"))
        self.table = w.HTML(value="")
        self._buttons = (self.refresh_button, self.load_button)
        self.refresh_button.on_click(self._guard(self.refresh))
        self.load_button.on_click(self._guard(self.load))
        self.symbol.observe(self._symbol_changed, names="value")
        self._root = w.VBox(
            [
                w.HBox([self.symbol, self.refresh_button, self.schema]),
                w.HBox([self.start, self.end, self.adjust]),
                w.HBox([self.sma, self.ema, self.window, self.indicators, self.load_button]),
                self.output,
                self.chart,
                self.table,
            ]
        )
        if refresh:
            self._guard(self.refresh)(None)  # a failure (no database yet) shows in the panel

    def refresh(self) -> list[str]:
        """Refill the symbol picker from the catalog; returns the symbols."""
        found = catalog.search_symbols(self.session, "")
        self.symbols_frame = found
        symbols = sorted(dict.fromkeys(str(s) for s in found["symbol"]))
        self.symbol.options = symbols
        if not self.symbol.value and symbols:
            self.symbol.value = symbols[0]
        return symbols

    def _symbol_changed(self, _change: object = None) -> None:
        """Offer the adjustment for continuous symbols only; fill empty dates with the range the catalog knows
        for the chosen symbol."""
        self.adjust.disabled = not is_continuous(self.symbol.value)
        known = self.symbols_frame[self.symbols_frame["symbol"] == self.symbol.value]
        first, last = pd.Timestamp(known["first"].min()), pd.Timestamp(known["last"].max())
        if self.start.value is None and self.end.value is None and first is not pd.NaT and last is not pd.NaT:
            self.start.value, self.end.value = first.date(), last.date()

    def overlay_names(self) -> tuple[str, ...]:
        return tuple(name for name, box in (("sma", self.sma), ("ema", self.ema)) if box.value)

    def load(self) -> pd.DataFrame:
        """Query the bars, redraw the chart and the table; returns the DataFrame (as ``hdi_lab.query``)."""
        symbol = str(self.symbol.value).strip()
        adjust = self.adjust.value or None if is_continuous(symbol) else None
        frame = retrieval.query(
            self.session, self.schema.value, symbol, self.start.value, self.end.value, adjust=adjust
        )
        shown, note = charts.one_series(frame)
        if adjust is not None:
            rolls = frame.attrs["rolls"].get(symbol, ())
            note = (
                (note + "; " if note else "")
                + f"{adjust}-adjusted at {len(rolls)} roll(s)"
                + "".join(f", {r.session} {r.from_symbol} -> {r.to_symbol}" for r in rolls)
            )
        if len(shown) > self.max_points:
            note = (note + "; " if note else "") + (
                f"the chart shows the last {self.max_points:,} of {len(shown):,} bars: narrow the range "
                "or pick a longer interval"
            )
            shown = shown.iloc[-self.max_points :]
        lines = charts.overlays(shown["close"], self.overlay_names(), int(self.window.value))
        if self.indicators.value.strip() and len(shown):
            from hdi_lab import indicators

            extra = indicators.compute(shown, self.indicators.value, short="nan")
            lines.update({name: extra[name] for name in extra.columns})
        if self.figure is None:
            self.figure = charts.new_figure()
            self.chart.children = (self.figure,)
        title = f"{symbol} {self.schema.value}" + (f" ({adjust}-adjusted)" if adjust else "")
        charts.draw(self.figure, shown, lines, title=title)
        self.frame = frame
        self.table.value = self._table(frame)
        status = f"{len(frame):,} rows of {symbol} {self.schema.value}" + (f" ({note})" if note else "")
        _show(self.output, f"<div class='hdi-status'>{html.escape(status)}</div>", status)
        return frame

    def _table(self, frame: pd.DataFrame) -> str:
        if frame.empty:
            return "<i>no rows in this range</i>"
        n = self.rows
        if len(frame) <= 2 * n:
            return _table_html(frame)
        return (
            f"<b>first {n}</b>{_table_html(frame.head(n))}<b>last {n}</b>{_table_html(frame.tail(n))}"
            f"<i>{len(frame):,} rows in all</i>"
        )


class Coverage(_Panel):
    """What is stored per trading session: a heatmap (instrument x session, colour = present / expected bars,
    closed sessions blank) and the table of gaps (see :func:`hdi_lab.gaps`).

    Widgets (attributes): ``symbols`` (Text, comma-separated), ``schema``, ``dataset`` (Text, empty: the one the
    symbols are stored in), ``stype_in``, ``start``/``end`` (DatePickers, session dates, end exclusive),
    ``partial`` (the fraction below which a bar session is partial), ``load_button``, ``chart`` (a Box holding
    ``figure``, created on the first load), ``table`` (HTML, the gaps) and ``output``. ``frame`` holds the last
    coverage frame (every session), ``gaps`` its missing sessions.
    """

    def __init__(self, session: HdiSession, *, rows: int = 50) -> None:
        super().__init__()
        self.session = session
        self.rows = rows
        self.frame: pd.DataFrame | None = None
        self.gaps: pd.DataFrame | None = None
        self.figure: go.FigureWidget | None = None
        self.symbols = w.Text(value="", placeholder="symbols, e.g. ESH4,NQH4", description="symbols", style=_WIDE)
        self.schema = w.Dropdown(
            options=options.SCHEMAS, value=Schema.OHLCV_1M.value, description="schema", style=_WIDE
        )
        self.dataset = w.Text(value="", placeholder="e.g. GLBX.MDP3", description="dataset", style=_WIDE)
        self.stype_in = w.Dropdown(
            options=options.STYPES, value=options.OPTIONS["stype_in"].default, description="stype_in", style=_WIDE
        )
        self.start = w.DatePicker(description="start", style=_WIDE)
        self.end = w.DatePicker(description="end (excl.)", style=_WIDE)
        self.partial = w.BoundedFloatText(
            value=gaps.PARTIAL, min=0.0, max=1.0, step=0.05, description="partial <", style=_WIDE
        )
        self.load_button = w.Button(description="Coverage", icon="th", button_style="primary")
        self.chart = w.Box(layout=w.Layout(width="100%"))
        self.table = w.HTML(value="")
        self._buttons = (self.load_button,)
        self.load_button.on_click(self._guard(self.load))
        self._root = w.VBox(
            [
                w.HBox([self.symbols, self.schema]),
                w.HBox([self.dataset, self.stype_in]),
                w.HBox([self.start, self.end]),
                w.HBox([self.partial, self.load_button]),
                self.output,
                self.chart,
                self.table,
            ]
        )

    def load(self) -> pd.DataFrame:
        """Compute the coverage, redraw the heatmap and the gaps table; returns the gaps (as ``hdi_lab.gaps``).

        Raises what :func:`hdi_lab.core.gaps.coverage` raises (the button shows it in the panel)."""
        frame = gaps.coverage(
            self.session,
            self.schema.value,
            self.symbols.value,
            self.start.value,
            self.end.value,
            dataset=self.dataset.value.strip() or None,
            stype_in=self.stype_in.value,
            partial=float(self.partial.value),
        )
        missing = gaps.missing(frame)
        heat = charts.coverage_heatmap(frame, title=f"{self.symbols.value} {self.schema.value}", widget=True)
        first = self.figure is None
        self.figure = charts.redraw(self.figure, heat)
        if first:
            self.chart.children = (self.figure,)
        self.frame, self.gaps = frame, missing
        shown = missing.head(self.rows).assign(session=missing["session"].head(self.rows).dt.date)
        more = f"<i>{len(missing):,} gaps in all</i>" if len(missing) > self.rows else ""
        self.table.value = _table_html(shown, index=False) + more if len(missing) else "<i>no gaps</i>"
        status = f"{len(frame):,} sessions, {len(missing):,} gaps"
        _show(self.output, f"<div class='hdi-status'>{html.escape(status)}</div>", status)
        return missing
