"""The ipywidgets front ends: plain handlers, live progress, charts, and errors shown in the widget."""

from __future__ import annotations

import datetime as dt
import html
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import fixture_files
from helpers import ALL_TABLES, assert_nothing_written, decompressed, row_counts

import hdi_lab
from hdi_lab.api import make_request
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import IngestError, ValidationError
from hdi_lab.frontend import charts
from hdi_lab.frontend.widgets import IngestForm, QueryExplorer

pytestmark = pytest.mark.integration

REQUEST: dict[str, Any] = dict(schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-05")
JAN2, JAN5 = dt.date(2024, 1, 2), dt.date(2024, 1, 5)
ERROR_STYLE = "color:#c62828"


def shown_html(panel: IngestForm | QueryExplorer) -> str:
    return "".join(str(o["data"].get("text/html", "")) for o in panel.output.outputs)


def filled_form(
    session: HdiSession, symbols: str = "ESH4", start: dt.date | None = JAN2, end: dt.date | None = JAN5
) -> IngestForm:
    form = IngestForm(session)
    form.provider.value = "sample"
    form.schema.value = "ohlcv-1m"
    form.symbols.value = symbols
    form.stype_in.value = "raw_symbol"
    form.start.value, form.end.value = start, end
    return form


def ingest_sample(session: HdiSession) -> None:
    hdi_lab.ingest(provider="sample", **REQUEST, session=session)


def explorer_on(session: HdiSession, symbol: str) -> QueryExplorer:
    """A QueryExplorer over the ingested sample, set to ``symbol`` from Jan 2 to Jan 5."""
    ingest_sample(session)
    explorer = QueryExplorer(session)
    explorer.symbol.value = symbol
    explorer.start.value, explorer.end.value = JAN2, JAN5
    return explorer


# --- IngestForm -------------------------------------------------------------------------------


def test_request_is_make_request(session: HdiSession) -> None:
    form = filled_form(session)
    assert form.request() == make_request("sample", **REQUEST)
    assert form.request(dry_run=True) == make_request("sample", **REQUEST, dry_run=True)
    form.force.value = True
    form.dataset.value = " GLBX.MDP3 "
    assert form.request() == make_request("sample", dataset="GLBX.MDP3", force=True, **REQUEST)


def test_file_provider_shows_path_and_builds_a_file_request(session: HdiSession) -> None:
    form = filled_form(session)
    form.provider.value = "file"
    assert form.path.layout.display is None and form.symbols.layout.display == "none"
    form.schema.value = ""
    form.path.value = "/data/x.dbn.zst"
    assert form.request() == make_request("file", path="/data/x.dbn.zst")
    form.provider.value = "sample"
    assert form.path.layout.display == "none" and form.symbols.layout.display is None


def test_preview_estimates_and_writes_nothing(session: HdiSession) -> None:
    form = filled_form(session)
    report = form.preview()
    assert report.dry_run and len(report.chunks) == 3
    assert all(c.fetched > 0 for c in report.chunks)
    assert form.report is report and form.last_error is None
    assert_nothing_written(session)
    shown = shown_html(form)
    assert "dry run, nothing written" in shown and "est_records" in shown
    for c in report.chunks:
        assert html.escape(c.chunk.describe()) in shown
    assert form.message() == str(report)
    # the estimate is exact for the sample provider: a run fetches what the preview announced
    assert form.run().fetched == report.fetched


def test_run_ingests_with_live_progress(session: HdiSession) -> None:
    form = filled_form(session)
    seen: list[tuple[int, int]] = []
    form.progress.observe(lambda ch: seen.append((ch["new"], form.progress.max)), names="value")
    report = form.run()
    frame = hdi_lab.query("ohlcv-1m", ["ESH4"], "2024-01-02", "2024-01-05", session=session)
    assert len(frame) == report.inserted == report.fetched > 0
    assert seen == [(1, 3), (2, 3), (3, 3)]  # one update per chunk, from the core's progress callback
    assert form.progress.value == form.progress.max == 3 and form.progress.bar_style == "success"
    assert f"{report.fetched:,} rows" in form.progress_label.value
    shown = shown_html(form)
    assert "Ingest finished" in shown and f"inserted {report.inserted}" in shown
    assert form.message() == str(report) and form.last_error is None
    # a rerun skips every completed chunk and still completes the bar
    again = form.run()
    assert again.chunks_skipped == 3 and again.inserted == 0
    assert form.progress.value == form.progress.max == 3


@pytest.mark.parametrize(
    ("symbols", "start", "end", "expected"),
    [
        ("ESH4", JAN5, JAN2, "must be before end"),
        ("ZZZ9", JAN2, JAN5, "ZZZ9"),
        ("", JAN2, JAN5, "symbols are required"),
        ("ESH4", None, JAN5, "start is required"),
    ],
)
def test_run_button_shows_bad_input_and_writes_nothing(
    session: HdiSession, symbols: str, start: dt.date | None, end: dt.date, expected: str
) -> None:
    form = filled_form(session, symbols, start, end)
    form.run_button.click()  # ipywidgets would only log an exception: the form must show it
    assert isinstance(form.last_error, ValidationError)
    assert expected in str(form.last_error)
    shown = shown_html(form)
    assert ERROR_STYLE in shown and html.escape(str(form.last_error)) in shown
    assert form.message() == f"Error: {form.last_error}"
    assert not form.run_button.disabled and not form.preview_button.disabled
    assert_nothing_written(session)
    # the next good click clears the error
    form.symbols.value, form.start.value, form.end.value = "ESH4", JAN2, JAN5
    form.preview_button.click()
    assert form.last_error is None and ERROR_STYLE not in shown_html(form)


def test_a_bad_file_among_others_shows_each_outcome(session: HdiSession, tmp_path: Any) -> None:
    trades = fixture_files("trades")
    (tmp_path / "a.trades.dbn").write_bytes(decompressed(trades[0]))
    (tmp_path / "b.trades.dbn").write_bytes(decompressed(trades[1])[:-5])
    form = IngestForm(session)
    form.provider.value = "file"
    form.schema.value = "trades"
    form.path.value = str(tmp_path)
    form._guard(form.run)(None)
    assert isinstance(form.last_error, IngestError) and form.report is form.last_error.report
    assert form.message().startswith("Error: 1 of 2 files failed: ")
    assert form.progress_label.value == "1 of 2 chunks failed" and form.progress.bar_style == "danger"
    page = html.unescape(shown_html(form))  # the message, then every chunk's outcome
    assert "b.trades.dbn is truncated" in page and ">error</th>" in page and "<details open>" in page
    assert row_counts(session)["ingest_log"] == 1


def test_unexpected_errors_show_type_and_traceback(session: HdiSession) -> None:
    form = filled_form(session)
    form._guard(lambda: 1 / 0)(None)
    assert isinstance(form.last_error, ZeroDivisionError)
    assert form.message() == "Error: ZeroDivisionError: division by zero"
    assert "<details><summary>traceback</summary>" in shown_html(form)


def test_panels_display_themselves(session: HdiSession) -> None:
    form = IngestForm(session)
    bundle = form._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == form.widget.model_id
    explorer = QueryExplorer(session, refresh=False)
    view = explorer._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == explorer.widget.model_id


def test_import_and_construction_do_not_import_plotly() -> None:
    code = (
        "import sys, hdi_lab.frontend.widgets as w; from hdi_lab.core.session import HdiSession; "
        "w.QueryExplorer(HdiSession(), refresh=False); w.IngestForm(HdiSession()); "
        "assert 'plotly' not in sys.modules, 'plotly imported'"
    )
    done = subprocess.run(  # the exit code is asserted below, with stderr in the message
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


# --- QueryExplorer ----------------------------------------------------------------------------


def test_symbol_picker_lists_ingested_symbols_after_refresh(session: HdiSession) -> None:
    explorer = QueryExplorer(session)
    assert explorer.last_error is None and explorer.symbol.options == ()
    ingest_sample(session)
    explorer.refresh_button.click()
    assert explorer.last_error is None
    assert "ESH4" in explorer.symbol.options
    assert explorer.symbol.value == "ESH4"  # the only symbol is picked, with the range the catalog knows
    assert explorer.start.value is not None and explorer.start.value <= JAN2
    assert explorer.end.value is not None and explorer.end.value >= JAN5


def test_load_draws_candles_volume_and_sma(session: HdiSession) -> None:
    explorer = explorer_on(session, "ESH4")
    explorer.sma.value, explorer.window.value = True, 10
    frame = explorer.load()
    expected = hdi_lab.query("ohlcv-1m", ["ESH4"], "2024-01-02", "2024-01-05", session=session)
    pd.testing.assert_frame_equal(frame, expected)
    assert explorer.frame is frame and explorer.last_error is None

    fig = explorer.figure
    assert fig is not None and explorer.chart.children == (fig,)
    assert [t.type for t in fig.data] == ["candlestick", "bar", "scatter"]
    candles, volume, sma = fig.data
    assert len(candles.x) == len(volume.x) == len(frame)
    # what the widget sends to the browser: UTC times as ISO strings ending in Z (not naive datetimes,
    # which the kernel sends with its local offset, nor datetime64[ns], sent as epoch nanoseconds)
    sent = fig.to_plotly_json()["data"][0]["x"]
    assert list(sent) == list(frame.index.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert fig.layout.xaxis.type == fig.layout.xaxis2.type == "date"
    np.testing.assert_array_equal(candles.close, frame["close"].to_numpy())
    np.testing.assert_array_equal(volume.y, frame["volume"].to_numpy(np.float64))
    assert volume.yaxis == "y2" and volume.xaxis == "x2" and fig.layout.xaxis.matches == "x2"
    assert sma.name == "SMA(10)"
    np.testing.assert_allclose(sma.y, frame["close"].rolling(10).mean().to_numpy(), equal_nan=True)
    assert "first 5" in explorer.table.value and f"{len(frame):,} rows in all" in explorer.table.value
    assert f"{len(frame):,} rows of ESH4" in explorer.message()

    # overlays off, EMA on: the same figure is redrawn with the new traces
    explorer.sma.value, explorer.ema.value = False, True
    explorer.load_button.click()
    redrawn_in_place = explorer.figure is fig
    assert explorer.last_error is None and redrawn_in_place
    assert [t.name for t in fig.data] == ["OHLC", "volume", "EMA(10)"]


# The explorer in a real kernel whose local time zone is not UTC: the chart's times must reach the
# front end as the bars' UTC times, with no "Interpreting naive datetime as local" warning.
KERNEL_CODE = """
import warnings
warnings.simplefilter("always")  # show every warning, whatever the kernel's default filters
import datetime as dt
from hdi_lab.core.session import HdiSession
from hdi_lab.frontend.widgets import QueryExplorer
explorer = QueryExplorer(HdiSession(), refresh=False)
explorer.symbol.value = "ESH4"
explorer.start.value, explorer.end.value = dt.date(2024, 1, 2), dt.date(2024, 1, 5)
display(explorer)
explorer.load()
explorer.session.close()
assert explorer.last_error is None
"""


def run_in_kernel(code: str, env: dict[str, str]) -> tuple[str, list[dict[str, Any]], list[str]]:
    """Run ``code`` in a new ipykernel; returns its reply status, its comm messages' data (as the
    front end receives them: packed by the kernel's session, unpacked here) and its stderr text."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        msg_id = kc.execute(code)
        comms: list[dict[str, Any]] = []
        stderr: list[str] = []
        while True:
            msg = kc.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind in ("comm_open", "comm_msg"):
                comms.append(content["data"])
            elif kind == "stream" and content["name"] == "stderr":
                stderr.append(content["text"])
            elif kind == "error":
                stderr.append("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = kc.get_shell_msg(timeout=30)
        return str(reply["content"]["status"]), comms, stderr
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_chart_times_reach_the_front_end_as_utc_under_a_local_time_zone(
    session: HdiSession, pg_url: str, db_schema: str
) -> None:
    ingest_sample(session)
    bars = hdi_lab.query("ohlcv-1m", ["ESH4"], "2024-01-02", "2024-01-05", session=session)
    env = {**os.environ, "TZ": "America/New_York", "HDI_DATABASE_URL": pg_url, "HDI_DB_SCHEMA": db_schema}
    status, comms, stderr = run_in_kernel(KERNEL_CODE, env)
    assert status == "ok", stderr
    added = [
        trace
        for data in comms
        for trace in ((data.get("state") or {}).get("_py2js_addTraces") or {}).get("trace_data", [])
    ]
    assert [t["name"] for t in added] == ["OHLC", "volume"]
    for trace in added:
        sent = pd.Series(trace["x"])
        assert sent.str.endswith("Z").all(), sent.head(2).tolist()  # wall time = UTC in the browser
        pd.testing.assert_index_equal(pd.DatetimeIndex(pd.to_datetime(sent, utc=True)), bars.index, check_names=False)
    assert not [text for text in stderr if "Warning" in text], stderr


def test_load_unknown_symbol_shows_the_error(session: HdiSession) -> None:
    explorer = explorer_on(session, "ZZZ9")
    explorer.load_button.click()
    assert isinstance(explorer.last_error, ValidationError)
    assert "unknown symbol(s) 'ZZZ9'" in str(explorer.last_error)
    assert ERROR_STYLE in shown_html(explorer) and html.escape(str(explorer.last_error)) in shown_html(explorer)
    assert explorer.figure is None and explorer.frame is None
    assert row_counts(session, ALL_TABLES)["ohlcv_1m"] > 0  # the stored data is untouched


def test_bad_window_is_shown(session: HdiSession) -> None:
    explorer = explorer_on(session, "ESH4")
    explorer.ema.value, explorer.window.value = True, 0
    explorer.load_button.click()
    assert isinstance(explorer.last_error, ValidationError) and "window=0" in explorer.message()


def test_overlays_are_pure_and_follow_the_documented_conventions() -> None:
    close = pd.Series([10.0, 11.0, 12.0, 11.0, 13.0, 14.0], index=pd.RangeIndex(6))
    before = close.copy()
    sma = charts.sma(close, 3)
    ema = charts.ema(close, 3)
    pd.testing.assert_series_equal(close, before)  # the input is never written
    np.testing.assert_allclose(sma, close.rolling(3).mean(), equal_nan=True)
    alpha, want = 0.5, [np.nan, np.nan, 11.0]
    for x in close.iloc[3:]:
        want.append(alpha * x + (1 - alpha) * want[-1])
    np.testing.assert_allclose(ema.to_numpy(), want, equal_nan=True)
    with pytest.raises(ValidationError, match="longer than the 6 bars"):
        charts.ema(close, 7)
    assert charts.overlays(close.iloc[:0], ("sma",), 20) == {}


def test_explorer_offers_the_adjustment_for_continuous_symbols(session: HdiSession) -> None:
    """The adjust choice (as stored, or one of hdi_lab.schemas.ADJUSTS) is enabled for continuous symbols only,
    and loads what hdi_lab.query(..., adjust=...) returns: the sample's ES across the ESH4 -> ESM4 roll."""
    from hdi_lab.frontend import options

    for schema in ("definition", "ohlcv-1d"):
        hdi_lab.ingest(provider="sample", schema=schema, symbols="ES.FUT", stype_in="parent", start="2024-02-01",
                       end="2024-04-01", session=session)  # fmt: skip
    # the provider's own mapping of ES.c.0, what "as stored" reads
    hdi_lab.ingest(provider="sample", schema="ohlcv-1d", symbols="ES.c.0", stype_in="continuous", start="2024-02-01",
                   end="2024-04-01", session=session)  # fmt: skip
    explorer = QueryExplorer(session)
    assert explorer.adjust.options == (("as stored", ""), *((a, a) for a in options.ADJUSTS))
    assert explorer.adjust.value == "" and explorer.adjust.disabled
    explorer.symbol.value = "ESH4"
    assert explorer.adjust.disabled  # a contract: nothing to roll
    explorer.symbol.value = "ES.c.0"
    assert not explorer.adjust.disabled
    explorer.schema.value = "ohlcv-1d"
    explorer.start.value, explorer.end.value = dt.date(2024, 2, 1), dt.date(2024, 4, 1)
    explorer.adjust.value = "ratio"
    explorer.load_button.click()
    assert explorer.last_error is None and explorer.frame is not None
    want = hdi_lab.query("ohlcv-1d", "ES.c.0", "2024-02-01", "2024-04-01", adjust="ratio", session=session)
    pd.testing.assert_frame_equal(explorer.frame, want)
    assert set(want["instrument_id"]) == {400001, 400002}  # both contracts, ESH4's prices adjusted
    fig = explorer.figure
    assert fig is not None and fig.layout.title.text == "ES.c.0 ohlcv-1d (ratio-adjusted)"
    np.testing.assert_array_equal(fig.data[0].close, want["close"].to_numpy())
    assert "ratio-adjusted at 1 roll(s), 2024-03-15 ESH4 -> ESM4" in explorer.message()
    # as stored: the symbology's contracts, unadjusted (the raw jump at the roll)
    explorer.adjust.value = ""
    explorer.load_button.click()
    assert explorer.last_error is None
    pd.testing.assert_frame_equal(
        explorer.frame, hdi_lab.query("ohlcv-1d", "ES.c.0", "2024-02-01", "2024-04-01", session=session)
    )
