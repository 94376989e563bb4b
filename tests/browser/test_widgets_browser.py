"""notebooks/03_widgets.ipynb in a real JupyterLab driven by headless Chromium: the widgets are LIVE.

Saved widget state renders "disconnected" views and proves nothing, so this test runs every cell in
a real kernel and then does round trips from the page: it types into widgets and clicks their
buttons, and waits for the kernel's callbacks to change the page (the panels' output areas, the
plotly chart's traces). See ../shared/DESIGN.md, "Widgets in a real browser (measured)".

Needs Debian's ``/usr/bin/chromium`` (``apt-get install chromium``) and the ``playwright`` Python
package (never ``playwright install``: its browser download does not work here). Missing either, the
test skips, or fails when ``CI`` is set. The screenshot goes to ``$HDI_BROWSER_ARTIFACTS`` (else
pytest's tmp_path) and its path is printed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_servers import Server, artifact_dir, chromium, jupyter_env, poll, require_browser_tools, serve, served_copy

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "03_widgets.ipynb"
RUN_ALL_TIMEOUT = 120.0
ROUND_TRIP_TIMEOUT_MS = 30_000
# The kernel and the browser run in a time zone other than UTC: the chart must still show UTC times.
LOCAL_TZ = "America/New_York"


@pytest.fixture
def lab(tmp_path: Path, pg_url: str, db_schema: str) -> Iterator[Server]:
    """JupyterLab on a free port, serving a temp copy of 03_widgets.ipynb, its config in temp dirs."""
    require_browser_tools()
    dirs = {"JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces"}
    env = jupyter_env(tmp_path, dirs, HDI_DATABASE_URL=pg_url, HDI_DB_SCHEMA=db_schema, TZ=LOCAL_TZ)
    # Every cell attached to the DOM (no windowing), and no news/update toasts or requests.
    settings = Path(env["JUPYTERLAB_SETTINGS_DIR"])
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"})
    )
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    root = served_copy(tmp_path, NOTEBOOK)
    token = secrets.token_hex(16)

    # -m jupyterlab, not `jupyter lab` (whose jupyter-lab script may name another interpreter): the server,
    # and so the kernel (jupyter_client starts a "python" kernel with the server's interpreter), run this one.
    def args(port: int) -> list[str]:
        return [
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            "--LabApp.expose_app_in_browser=True",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]

    with serve(
        "jupyterlab", args, cwd=root, env=env, log=tmp_path / "jupyter.log", ready="/api/status", token=token
    ) as server:
        yield server


# JupyterLab's state, read in the page: the notebook panel, its kernel, and every code cell.
NOTEBOOK_STATE_JS = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code').map(c => {
    const outputs = c.model.outputs.toJSON();
    return {count: c.model.executionCount,
            running: (c.promptNode && c.promptNode.textContent || '').includes('*'),
            errors: outputs.filter(o => o.output_type === 'error')
                           .map(o => o.ename + ': ' + o.evalue)};
  });
  return {kernel: kernel ? kernel.status : null, cells: cells};
}"""


def test_widgets_are_live_in_jupyterlab(lab: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    artifacts = artifact_dir(tmp_path)
    shot = artifacts / "03_widgets_browser.png"
    page_errors: list[str] = []

    def report() -> str:
        state = page.evaluate(NOTEBOOK_STATE_JS)
        return f"notebook state {json.dumps(state)}\npage errors {page_errors}\njupyter log tail:\n{lab.log_tail(2000)}"

    with sync_playwright() as pw:
        browser = chromium(pw, tmp_path, TZ=LOCAL_TZ)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2000})
            page.on("pageerror", lambda exc: page_errors.append(f"pageerror: {exc}"))
            page.on(
                "console",
                lambda msg: page_errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None,
            )
            page.goto(f"{lab.base_url}/lab/tree/{NOTEBOOK.name}?token={lab.token}", wait_until="domcontentloaded")
            try:
                _run_and_check(page, expect, report)
            except BaseException:
                page.screenshot(path=str(artifacts / "03_widgets_browser_failure.png"), full_page=True)
                raise
            page.screenshot(path=str(shot), full_page=True)
            page.locator(".jp-Cell .js-plotly-plot").first.screenshot(path=str(artifacts / "03_widgets_chart.png"))
        finally:
            browser.close()
    with capsys.disabled():
        print(f"\nbrowser screenshot: {shot}")
        for line in page_errors:  # console errors do not fail the test; page errors (uncaught) do
            print(f"browser {line[:300]}")
    assert not [e for e in page_errors if "pageerror" in e], page_errors


def _run_and_check(page: Any, expect: Any, report: Callable[[], str]) -> None:
    def state() -> dict[str, Any] | None:
        return page.evaluate(NOTEBOOK_STATE_JS)  # type: ignore[no-any-return]

    def kernel_idle() -> bool:
        s = state()
        return bool(s and s["kernel"] == "idle" and s["cells"])

    poll("the notebook's kernel to be idle", kernel_idle, 60, report)
    # Not awaited (execute() resolves only when every cell has run): the poll below bounds the wait.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

    def all_run() -> bool:
        s = state()
        if not s or s["kernel"] != "idle":
            return False
        errors = [e for c in s["cells"] for e in c["errors"]]
        if errors:
            pytest.fail(f"a cell raised: {errors}\n{report()}", pytrace=False)
        return all(c["count"] is not None and not c["running"] for c in s["cells"])

    poll("every cell to run", all_run, RUN_ALL_TIMEOUT, report)

    # The two panels, found by their buttons; each panel's output area is its .widget-output.
    form = page.locator(".jp-Cell").filter(has=page.locator("button.widget-button", has_text="Preview"))
    explorer = page.locator(".jp-Cell").filter(has=page.locator("button.widget-button", has_text="Load"))
    expect(form).to_have_count(1)
    expect(explorer).to_have_count(1)
    form_output = form.locator(".widget-output")
    progress_label = form.locator(".widget-hprogress + .widget-label")  # the Label next to the IntProgress
    explorer_output = explorer.locator(".widget-output")

    # Rendered by the notebook's code: the ingest form (dropdowns, a complete progress bar) and the chart.
    expect(form.locator(".widget-dropdown select").first).to_be_visible()
    assert form.locator(".widget-dropdown select").count() >= 3  # provider, schema, stype_in
    expect(form.locator(".widget-hprogress")).to_be_visible()
    # The notebook's last click on Run failed on purpose: a red, empty bar and its label.
    expect(form.locator(".widget-hprogress .progress-bar")).to_have_class("progress-bar progress-bar-danger")
    expect(progress_label).to_contain_text("failed after 0 of 1 chunks")
    chart = explorer.locator(".js-plotly-plot")
    expect(chart).to_have_count(1)
    expect(chart.locator("g.trace.boxes path").first).to_be_attached()  # candlesticks
    expect(chart.locator(".legendtext")).to_have_text(["OHLC", "volume", "SMA(5)", "EMA(5)"])
    expect(chart.locator(".gtitle")).to_have_text("AAPL ohlcv-1h")
    # The last cells left an error in each panel (bad symbols on purpose).
    expect(form_output.locator(".hdi-error")).to_be_visible()
    expect(explorer_output.locator(".hdi-error")).to_contain_text("ZZZZ")

    # Round trip 1: click Preview in the page; the kernel's callback replaces the form's error with a report.
    form.locator("button.widget-button", has_text="Preview").click()
    expect(form_output.locator(".hdi-report")).to_contain_text(
        "Preview (dry run, nothing written)", timeout=ROUND_TRIP_TIMEOUT_MS
    )
    expect(form_output.locator(".hdi-error")).to_have_count(0)

    # Round trip 2: click Run; every chunk is already loaded, so the bar fills and turns green.
    form.locator("button.widget-button", has_text="Run").click()
    expect(progress_label).to_contain_text("4 chunks, 0 rows in", timeout=ROUND_TRIP_TIMEOUT_MS)
    expect(form.locator(".widget-hprogress .progress-bar")).to_have_class("progress-bar progress-bar-success")
    expect(form.locator(".widget-hprogress .progress-bar")).to_be_visible()
    expect(form_output.locator(".hdi-report")).to_contain_text("Ingest finished")

    # Round trip 3: type a symbol, untick SMA and click Load; the kernel queries and redraws the chart.
    symbol = explorer.locator(".widget-text input[list]")  # the Combobox
    symbol.fill("NVDA")
    symbol.press("Enter")
    explorer.locator(".widget-checkbox", has_text="SMA").locator("input").uncheck()
    window = explorer.locator(".widget-text", has_text="window").locator("input")
    window.fill("10")
    window.press("Enter")
    schema = explorer.locator(".widget-dropdown", has_text="interval").locator("select")
    schema.select_option(label="1 minute")
    explorer.locator("button.widget-button", has_text="Load").click()
    expect(explorer_output.locator(".hdi-status")).to_have_text(
        "1,560 rows of NVDA ohlcv-1m", timeout=ROUND_TRIP_TIMEOUT_MS
    )
    expect(chart.locator(".gtitle")).to_have_text("NVDA ohlcv-1m", timeout=ROUND_TRIP_TIMEOUT_MS)
    expect(chart.locator(".legendtext")).to_have_text(["OHLC", "volume", "EMA(10)"])
    expect(chart.locator("g.trace.boxes path").first).to_be_attached()
    expect(explorer.locator(".widget-html")).to_contain_text("1,560 rows in all")
    # The first bar, 14:30 UTC, as plotly.js reads it (ms since the epoch, UTC), in a New York kernel and
    # browser; and no "Interpreting naive datetime as local" warning in any cell's output.
    first_x = chart.evaluate("gd => [gd.data[0].x[0], gd._fullLayout.xaxis.d2c(gd.data[0].x[0])]")
    assert first_x == ["2024-01-02T14:30:00Z", 1704205800000], first_x
    expect(page.get_by_text("Interpreting naive datetime")).to_have_count(0)

    # Live, not saved state: no error or disconnected widget views anywhere.
    expect(page.locator(".jupyter-widgets-error-widget")).to_have_count(0)
    expect(page.locator(".jupyter-widgets-disconnected")).to_have_count(0)

    form.scroll_into_view_if_needed()
    page.evaluate("""() => {  // the form's cell at the top of the notebook's viewport for the screenshot
      const cell = [...document.querySelectorAll('.jp-Cell')].find(c => c.querySelector('.widget-hprogress'));
      cell.scrollIntoView({block: 'start'});
    }""")
