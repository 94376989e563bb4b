"""The daily operations report (:mod:`hdi_lab.core.report`) rendered as text, JSON or a self-contained HTML page
(plotly's JavaScript inlined once: the page opens in a browser without a kernel or a network)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from hdi_lab.core.report import CHECKS, SEVERITIES, Report
from hdi_lab.errors import ValidationError
from hdi_lab.extras import require
from hdi_lab.frontend.charts import coverage_heatmap
from hdi_lab.frontend.options import REPORT_FORMATS

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["COLORS", "FORMATS", "render", "render_html", "render_json", "render_text", "write"]

#: the formats of ``hdi report --format`` (declared with the options)
FORMATS = REPORT_FORMATS
#: the colour each report status and finding severity is drawn in
COLORS = {"green": "#2e7d32", "amber": "#f9a825", "red": "#c62828", "info": "#607d8b"}
_SHOWN = 50  # findings listed in the text report (the JSON and HTML have them all)


def render(report: Report, fmt: str) -> str:
    """``report`` in ``fmt`` (:data:`FORMATS`).

    Raises ValueError for an unknown format; MissingDependency without plotly for html."""
    if fmt == "text":
        return render_text(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown report format {fmt!r}: one of {', '.join(FORMATS)}")


def write(text: str, path: str | Path) -> Path:
    """Write a rendered report to ``path`` (UTF-8); returns the path.

    Raises ValidationError when the file cannot be written (a directory, a missing folder, no permission)."""
    target = Path(path)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"{target} cannot be written: {exc.strerror or exc}") from None
    return target


def render_json(report: Report) -> str:
    """The report's :meth:`~hdi_lab.core.report.Report.to_dict` as indented JSON."""
    return json.dumps(report.to_dict(), indent=2, sort_keys=False)


def _days(report: Report) -> str:
    last = (report.end - pd.Timedelta(days=1)).date()
    first = report.start.date()
    return str(first) if first == last else f"{first} to {last}"


def _cost(value: object) -> str:
    """A cost in USD as the report shows it: ``$0.36``, ``n/a`` when unknown."""
    if not isinstance(value, int | float) or math.isnan(value):  # None, pandas' missing values, NaN
        return "n/a"
    return f"${float(value):,.2f}"


def _costs(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its ``cost_usd`` column shown as :func:`_cost` does."""
    if frame.empty or "cost_usd" not in frame:
        return frame
    return frame.assign(cost_usd=[_cost(v) for v in frame["cost_usd"]])


def _table(frame: pd.DataFrame) -> str:
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        return frame.to_string(index=False) if len(frame) else "(none)"


def render_text(report: Report) -> str:
    """The report as plain text, for a terminal or a mail from cron."""
    data = report.to_dict()
    lines = [f"hdi operations report {_days(report)} (UTC): {report.status.upper()}"]
    lines += [f"  {r}" for r in report.reasons]
    lines += [f"  note: {n}" for n in report.notes]
    t = data["ingests"]["totals"]
    ingested = (
        f"Ingested: {t['chunks']} chunks, {t['fetched']} rows fetched, {t['inserted']} inserted, {t['updated']} "
        f"updated, {t['deleted']} deleted, {t['duplicates']} duplicates, {t['quarantined']} quarantined in "
        f"{t['seconds']:.1f} s, estimated cost {_cost(t['cost_usd'])}"
    )
    counted = ", ".join(f"{k} {v}" for k, v in data["findings"]["counts"].items() if v)
    lines += [
        "",
        ingested,
        _table(_costs(report.ingests)),
        "",
        "Ingested per subscription",
        _table(_costs(report.subscriptions)),
        "",
        f"Gaps left per subscription: {len(report.gaps)}",
        _table(report.gaps.assign(session=pd.DatetimeIndex(report.gaps["session"]).date)),
        "",
        "Quarantine by rule",
        _table(report.quarantine),
        "",
        "Vendor conditions",
        _table(report.conditions),
        "",
        f"Findings: {counted or 'none'}",
    ]
    shown = report.findings.head(_SHOWN)
    lines.append(_table(shown))
    if len(shown) < len(report.findings):
        lines.append(f"... {len(report.findings)} findings in all (--format json or html lists them all)")
    return "\n".join(lines) + "\n"


def _rows_per_day(report: Report) -> go.Figure:
    go_ = require("plotly.graph_objects")
    frame = report.ingests
    per_day = (
        frame.assign(rows=frame["inserted"].astype("int64") + frame["updated"].astype("int64"))
        .groupby(["day", "dataset"], sort=True)["rows"]
        .sum()
        .reset_index()
        if len(frame)
        else pd.DataFrame(columns=["day", "dataset", "rows"])
    )
    fig = go_.Figure(
        [
            go_.Bar(x=[str(d) for d in part["day"]], y=part["rows"].tolist(), name=str(ds))
            for ds, part in per_day.groupby("dataset", sort=True)
        ]
    )
    fig.update_layout(title_text="rows ingested per day", barmode="stack", height=320, xaxis=dict(type="category"))
    return fig


def _findings_chart(report: Report) -> go.Figure:
    go_ = require("plotly.graph_objects")
    counts = report.findings.groupby(["check", "severity"])["count"].sum() if len(report.findings) else pd.Series()
    fig = go_.Figure(
        [
            go_.Bar(
                x=list(CHECKS),
                y=[int(counts.get((c, sev), 0)) for c in CHECKS],
                name=sev,
                marker_color=COLORS[sev],
            )
            for sev in SEVERITIES
        ]
    )
    fig.update_layout(title_text="quality findings", barmode="stack", height=320)
    return fig


def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p>(none)</p>"
    return frame.to_html(index=False, escape=True, border=0, classes="t", na_rep="")


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page: status and reasons, the tables, and three plotly charts
    (coverage heatmap of the subscriptions, rows per day, quality findings) with plotly's JavaScript inline.

    Raises MissingDependency without plotly (the ``notebook`` extra)."""
    figures = [_rows_per_day(report), _findings_chart(report)]
    if len(report.coverage):
        figures.insert(0, coverage_heatmap(report.coverage, title="coverage of the subscriptions"))
    plots = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"hdi-plot-{i}", config={"responsive": True})
        for i, fig in enumerate(figures)
    ]
    esc = html.escape
    color = COLORS[report.status]
    sections = [
        (f"Ingested (estimated cost {_cost(report.cost_usd)})", _html_table(_costs(report.ingests))),
        ("Ingested per subscription", _html_table(_costs(report.subscriptions))),
        ("Gaps left per subscription", _html_table(report.gaps)),
        ("Quarantine by rule", _html_table(report.quarantine)),
        ("Vendor conditions", _html_table(report.conditions)),
        ("Quality findings", _html_table(report.findings)),
    ]
    body = [
        f"<h1>hdi operations report {esc(_days(report))} (UTC)</h1>",
        f'<p class="status" style="background:{color}">{esc(report.status.upper())}</p>',
        "<ul>" + "".join(f"<li>{esc(r)}</li>" for r in report.reasons + report.notes) + "</ul>",
        *plots,
        *(f"<h2>{esc(title)}</h2>{table}" for title, table in sections),
    ]
    style = (
        "body{font-family:sans-serif;margin:2em}.status{color:#fff;display:inline-block;padding:.3em 1em;"
        "font-weight:bold}table.t{border-collapse:collapse;font-size:90%}table.t td,table.t th{padding:2px 8px;"
        "border-bottom:1px solid #ddd}"
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>hdi operations report '
        f"{esc(_days(report))}</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
