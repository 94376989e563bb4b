"""The operations dashboard: :class:`Operations`, one ipywidgets page of what keeps the database current.

It shows the subscriptions (last update, next run, status), the coverage heatmap of every subscription, the
recent ingests, the live sessions, the open quarantine and the daily operations report, all read through the
core (:func:`hdi_lab.core.report.report`, :func:`hdi_lab.core.catalog.status`, :func:`hdi_lab.core.live.summary`,
:func:`hdi_lab.core.quarantine.list_entries`). ``notebooks/06_operations.ipynb`` displays it;
``voila notebooks/06_operations.ipynb`` serves it as a standalone web page.

>>> from hdi_lab.frontend.dashboard import Operations
>>> Operations(session, start="2024-01-02", end="2024-01-06")   # a cell ending with it shows the page
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from hdi_lab.core import catalog, live, quarantine, subscriptions
from hdi_lab.core import report as reporter
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import MissingDependency
from hdi_lab.extras import require
from hdi_lab.frontend import charts
from hdi_lab.frontend import report as report_view
from hdi_lab.frontend.display import RootWidget
from hdi_lab.frontend.widgets import error_text

if TYPE_CHECKING:
    import plotly.graph_objects as go

w = require("ipywidgets")

__all__ = ["LOG_ROWS", "NEXT_RUN", "STATUS_COLORS", "SUBSCRIPTION_COLUMNS", "Operations", "subscription_status"]

#: what the "next run" column says of a subscription no scheduler has a job for yet (``hdi scheduler run``
#: stores each job's next run in the database; until one does, updates run when someone runs them)
NEXT_RUN = "run `hdi update` / the scheduler"
#: the colour each report status is drawn in
STATUS_COLORS = {status: report_view.COLORS[status] for status in reporter.STATUSES}
SUBSCRIPTION_COLUMNS = (
    "subscription",
    "provider",
    "dataset",
    "schema",
    "symbols",
    "since",
    "last_update",
    "next_run",
    "gaps",
    "status",
)
# How many ingest-log rows the last update of each subscription is looked up in.
LOG_ROWS = 1000


def subscription_status(
    subs: pd.DataFrame, log: pd.DataFrame, coverage: pd.DataFrame, next_runs: Mapping[int, pd.Timestamp] | None = None
) -> pd.DataFrame:
    """One row per subscription (a :func:`hdi_lab.watches` frame) with SUBSCRIPTION_COLUMNS.

    ``next_run`` is the scheduler's next run of the subscription (``next_runs``: subscription id -> UTC time, what
    :func:`hdi_lab.core.scheduler.jobs` holds), else :data:`NEXT_RUN`.

    ``last_update`` is the newest ``finished_at`` of the ingest ``log`` rows (``catalog.status().recent``) of its
    provider, dataset and schema that name one of its symbols (NaT when none); ``gaps`` counts the missing
    sessions of the subscription in ``coverage`` (a report's coverage, its ``subscription`` column the name or
    id); ``status`` is ``current``, ``N gaps`` or ``never updated``. Raises nothing."""
    rows = []
    for sub in subs.itertuples(index=False):
        label = sub.name if isinstance(sub.name, str) and sub.name else str(sub.id)
        symbols = set(str(sub.symbols).split(","))
        if log.empty:
            mine = log
        else:
            same = (log["provider"] == sub.provider) & (log["dataset"] == sub.dataset) & (log["schema"] == sub.schema)
            named = pd.Series([bool(symbols & set(str(t).split(","))) for t in log["symbols"]], index=log.index)
            mine = log[same & named]
        last = pd.Timestamp(mine["finished_at"].max()) if len(mine) else pd.NaT
        n_gaps = int(((coverage["subscription"] == label) & coverage["reason"].notna()).sum()) if len(coverage) else 0
        status = "never updated" if pd.isna(last) else (f"{n_gaps} gaps" if n_gaps else "current")
        when = (next_runs or {}).get(int(cast(int, sub.id)))
        nxt = NEXT_RUN if when is None else _when(when)
        rows.append((label, sub.provider, sub.dataset, sub.schema, sub.symbols, sub.since, last, nxt, n_gaps, status))
    return pd.DataFrame(rows, columns=list(SUBSCRIPTION_COLUMNS))


def _table(frame: pd.DataFrame, css: str, empty: str) -> str:
    if frame.empty:
        return f"<div class='{css}'><i>{html.escape(empty)}</i></div>"
    with pd.option_context("display.max_columns", 40, "display.max_colwidth", 80):
        return f"<div class='{css}'>{frame.to_html(border=0, index=False)}</div>"


def _heading(text: str) -> Any:
    return w.HTML(f"<h3 style='margin:12px 0 4px'>{html.escape(text)}</h3>")


class Operations(RootWidget):
    """The dashboard (see the module). ``start``/``end`` (end exclusive) or ``date`` choose the report's days,
    like :func:`hdi_lab.report`; ``recent`` is how many ingests the recent-ingests table lists.

    Widgets (attributes): ``status`` (HTML, the report's status and reasons), ``subscriptions`` (HTML table),
    ``chart`` (a Box holding ``figure``, the coverage heatmap), ``ingests``, ``live`` (the newest live sessions),
    ``quarantine`` and ``report_text``
    (HTML), ``refresh_button`` and ``error`` (HTML, the last refresh's error). ``report`` holds the last
    :class:`hdi_lab.core.report.Report`, ``table`` the subscriptions frame."""

    def __init__(
        self,
        session: HdiSession,
        date: object = None,
        *,
        start: object = None,
        end: object = None,
        recent: int = 10,
    ) -> None:
        self.session = session
        self.date, self.start, self.end, self.recent = date, start, end, recent
        self.report: reporter.Report | None = None
        self.table: pd.DataFrame | None = None
        self.figure: go.FigureWidget | None = None
        self.last_error: BaseException | None = None
        self.status = w.HTML(value="")
        self.error = w.HTML(value="")
        self.subscriptions = w.HTML(value="")
        self.chart = w.Box(layout=w.Layout(width="100%"))
        self.ingests = w.HTML(value="")
        self.live = w.HTML(value="")
        self.quarantine = w.HTML(value="")
        self.report_text = w.HTML(value="")
        self.refresh_button = w.Button(description="Refresh", icon="refresh", button_style="primary")
        self.refresh_button.on_click(self._on_refresh)
        self._root = w.VBox(
            [
                w.HBox([w.HTML("<h2 style='margin:4px 16px 4px 0'>hdi_lab operations</h2>"), self.refresh_button]),
                self.status,
                self.error,
                _heading("Subscriptions"),
                self.subscriptions,
                _heading("Coverage"),
                self.chart,
                _heading("Recent ingests"),
                self.ingests,
                _heading("Live sessions"),
                self.live,
                _heading("Quarantine (open)"),
                self.quarantine,
                _heading("Daily report"),
                self.report_text,
            ],
            layout=w.Layout(width="100%"),
        )
        self.refresh()

    def _on_refresh(self, _button: Any = None) -> None:
        # ipywidgets would only log an exception raised in a callback (ipywidgets#2949): show it instead.
        self.refresh_button.disabled = True
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 (a callback shows every error, raises none)
            self.last_error = exc
            self.error.value = (
                f"<div class='hdi-error' style='color:#c62828'><b>Error:</b> {html.escape(error_text(exc))}</div>"
            )
        finally:
            self.refresh_button.disabled = False

    def refresh(self) -> reporter.Report:
        """Read everything again and redraw every section; returns the report.

        Raises what :func:`hdi_lab.core.report.report` raises (ValidationError for a bad date or range,
        ConfigError, StorageError); the Refresh button shows it in the page instead."""
        found = reporter.report(self.session, self.date, start=self.start, end=self.end)
        state = catalog.status(self.session, recent=LOG_ROWS)
        subs = subscriptions.frame(subscriptions.list_all(self.session))
        table = subscription_status(subs, state.recent, found.coverage, _next_runs(self.session))
        open_entries = quarantine.list_entries(self.session, limit=self.recent)
        sessions = live.summary(self.session, self.recent)
        self.report, self.table, self.last_error = found, table, None
        self.error.value = ""
        self.status.value = _status_html(found)
        self.subscriptions.value = _table(
            table.assign(last_update=table["last_update"].map(_when)), "hdi-subscriptions", "no subscriptions"
        )
        self._draw(found.coverage)
        self.ingests.value = _table(
            _recent(state.recent, self.recent), "hdi-ingests", "no ingests yet (run `hdi ingest` or `hdi update`)"
        )
        self.live.value = _table(sessions, "hdi-live", "no live sessions (`hdi live start`, `hdi_lab.live(...)`)")
        self.quarantine.value = _table(
            open_entries, "hdi-quarantine", f"nothing quarantined ({state.quarantine_open} open entries)"
        )
        text = report_view.render_text(found)
        self.report_text.value = f"<pre class='hdi-report-text' style='font-size:12px'>{html.escape(text)}</pre>"
        return found

    def _draw(self, coverage: pd.DataFrame) -> None:
        if coverage.empty:
            self.chart.children = (w.HTML("<i class='hdi-no-coverage'>no subscription has sessions in these days</i>"),)
            self.figure = None
            return
        heat = charts.coverage_heatmap(coverage, title="coverage of the subscriptions", widget=True)
        self.figure = charts.redraw(self.figure, heat)
        self.chart.children = (self.figure,)


def _next_runs(session: HdiSession) -> dict[int, pd.Timestamp]:
    """Each scheduled subscription's next run, from the scheduler's job store; none without the ``scheduler``
    extra. Raises StorageError."""
    from hdi_lab.core import scheduler

    try:
        jobs = scheduler.jobs(session)
    except MissingDependency:
        return {}
    return {j.subscription.id: j.next_run for j in jobs if j.next_run is not None}


def _when(value: Any) -> str:
    return "never" if pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M UTC")


def _recent(log: pd.DataFrame, rows: int) -> pd.DataFrame:
    columns: Sequence[str] = ("finished_at", "provider", "dataset", "schema", "symbols", "start_ts", "end_ts")
    counts = [c for c in ("inserted", "updated", "deleted", "duplicates", "quarantined", "seconds") if c in log]
    return log.head(rows).loc[:, [*columns, *counts]]


def _status_html(found: reporter.Report) -> str:
    color = STATUS_COLORS.get(found.status, "#555")
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in found.reasons)
    days = f"{found.start.date()} to {(found.end - pd.Timedelta(days=1)).date()}"
    return (
        f"<div class='hdi-report-status' data-status='{found.status}' style='border-left:6px solid {color};"
        f"padding:4px 10px'><b>Report status: <span style='color:{color}'>{found.status}</span></b>"
        f" ({html.escape(days)})<ul style='margin:2px 0'>{reasons}</ul></div>"
    )
