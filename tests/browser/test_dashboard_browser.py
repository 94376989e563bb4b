"""notebooks/06_operations.ipynb served by Voila as a standalone page, rendered in headless Chromium.

Voila runs the notebook in a real kernel against the test database when the page is opened, then the page shows
its widgets without any code: the subscriptions table, the coverage heatmap (a plotly div) and the report's
status must be there, and a click on Refresh must round-trip through the kernel. Same tools and skips as
test_widgets_browser.py (Debian's chromium, the playwright package).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_servers import Server, artifact_dir, chromium, jupyter_env, require_browser_tools, serve, served_copy

import hdi_lab
from hdi_lab.core.session import HdiSession

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "06_operations.ipynb"
# Voila runs every cell (a little sample ingest included) before the page shows the widgets.
RENDER_TIMEOUT_MS = 120_000


@pytest.fixture
def voila(tmp_path: Path, pg_url: str, db_schema: str) -> Iterator[Server]:
    """Voila on a free port serving a temp copy of 06_operations.ipynb, its kernel on the test database."""
    require_browser_tools()
    root = served_copy(tmp_path, NOTEBOOK)
    hdi_home = tmp_path / "hdi-home"
    hdi_home.mkdir()
    env = jupyter_env(tmp_path, HDI_DATABASE_URL=pg_url, HDI_DB_SCHEMA=db_schema, HDI_HOME=str(hdi_home))
    token = "dashboard-test"

    def args(port: int) -> list[str]:
        return [NOTEBOOK.name, "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1", f"--token={token}"]

    # -m voila: the server, and so its kernel, run this interpreter
    with serve(
        "voila",
        args,
        cwd=root,
        env=env,
        log=tmp_path / "voila.log",
        ready="/static/voila/index.js",
        token=token,
        ready_with_token=False,
    ) as server:
        yield server


def test_dashboard_served_by_voila(
    voila: Server, tmp_path: Path, session: HdiSession, capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    artifacts = artifact_dir(tmp_path)
    shot = artifacts / "06_operations_voila.png"
    page_errors: list[str] = []
    with sync_playwright() as pw:
        browser = chromium(pw, tmp_path)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2000})
            page.on("pageerror", lambda exc: page_errors.append(f"pageerror: {exc}"))
            page.goto(f"{voila.base_url}/?token={voila.token}", wait_until="domcontentloaded")
            try:
                subs = page.locator(".hdi-subscriptions table")
                expect(subs).to_be_visible(timeout=RENDER_TIMEOUT_MS)
                expect(subs.locator("tbody tr")).to_have_count(2)
                expect(subs).to_contain_text("es_1m")
                expect(subs).to_contain_text("aapl_1m")
                expect(subs).to_contain_text("run `hdi update` / the scheduler")
                chart = page.locator(".js-plotly-plot")
                expect(chart).to_have_count(1)
                expect(chart.locator(".hm").first).to_be_attached()  # the heatmap's layer
                drawn = chart.evaluate("gd => [gd.data[0].type, gd.data[0].y, gd._fullLayout.title.text]")
                assert drawn == ["heatmap", ["ESH4 · 400001", "AAPL · 500001"], "coverage of the subscriptions"], drawn
                status = page.locator(".hdi-report-status")
                expect(status).to_contain_text("Report status:")
                assert status.get_attribute("data-status") in ("green", "amber", "red")
                expect(page.locator(".hdi-ingests table")).to_be_visible()
                expect(page.locator(".hdi-report-text")).to_contain_text("hdi operations report 2024-01-02")
                # A round trip through the live kernel: a subscription added here (same database) appears only
                # once Refresh has read everything again, and every section redraws without an error.
                hdi_lab.watch("sample", schema="ohlcv-1m", symbols="NQH4", since="2024-01-01", name="nq_1m",
                              session=session)  # fmt: skip
                page.locator("button.widget-button", has_text="Refresh").click()
                expect(page.locator(".hdi-subscriptions table tbody tr")).to_have_count(3, timeout=60_000)
                expect(page.locator(".hdi-subscriptions table")).to_contain_text("nq_1m")
                expect(page.locator("button.widget-button", has_text="Refresh")).to_be_enabled(timeout=60_000)
                expect(page.locator(".hdi-error")).to_have_count(0)
                expect(page.locator(".jupyter-widgets-error-widget")).to_have_count(0)
                # no code on the page (Voila strips the sources) and no failed cell
                expect(page.get_by_text("hdi_lab.watch(")).to_have_count(0)
                expect(page.get_by_text("Traceback")).to_have_count(0)
            except BaseException:
                page.screenshot(path=str(artifacts / "06_operations_voila_failure.png"), full_page=True)
                print(voila.log_tail())
                raise
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    with capsys.disabled():
        print(f"\nbrowser screenshot: {shot}")
    assert not page_errors, page_errors
