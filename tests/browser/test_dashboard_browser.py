"""notebooks/06_operations.ipynb served by Voila as a standalone page, rendered in headless Chromium.

Voila runs the notebook in a real kernel against the test database when the page is opened, then the page shows
its widgets without any code: the subscriptions table, the coverage heatmap (a plotly div) and the report's
status must be there, and a click on Refresh must round-trip through the kernel. Same tools and skips as
test_widgets_browser.py (Debian's chromium, the playwright package).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_widgets_browser import (  # the browser plumbing the widgets test declares
    _HTTP,
    CHROMIUM,
    CHROMIUM_ARGS,
    SERVER_START_TIMEOUT,
    Lab,
    _free_port,
    _kill_server,
    _require_browser_tools,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "06_operations.ipynb"
# Voila runs every cell (a little sample ingest included) before the page shows the widgets.
RENDER_TIMEOUT_MS = 120_000
ARTIFACTS = os.environ.get("HDI_BROWSER_ARTIFACTS")  # read at import: clean_environ removes HDI_* later


@pytest.fixture
def voila(tmp_path: Path, pg_url: str, db_schema: str) -> Iterator[Lab]:
    """Voila on a free port serving a temp copy of 06_operations.ipynb, its kernel on the test database."""
    _require_browser_tools()
    home = tmp_path / "jupyter"
    dirs = {
        name: home / sub
        for name, sub in (
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_DATA_DIR", "data"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("IPYTHONDIR", "ipython"),
        )
    }
    for d in dirs.values():
        d.mkdir(parents=True)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    hdi_home = tmp_path / "hdi-home"
    hdi_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HDI_", "JUPYTER", "IPYTHONDIR"))}
    env.update({k: str(v) for k, v in dirs.items()})
    env.update(HDI_DATABASE_URL=pg_url, HDI_DB_SCHEMA=db_schema, HDI_HOME=str(hdi_home), PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port, token = _free_port(), "dashboard-test"
    log = tmp_path / "voila.log"
    # -m voila: the server, and so its kernel, run this interpreter
    cmd = [
        sys.executable,
        "-m",
        "voila",
        NOTEBOOK.name,
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        f"--token={token}",
    ]
    base_url = f"http://127.0.0.1:{port}"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Lab(base_url, token, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"voila exited with {proc.returncode}:\n{server.log_tail()}", pytrace=False)
            try:
                with _HTTP.open(f"{base_url}/static/voila/index.js", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"voila not up after {SERVER_START_TIMEOUT:.0f} s:\n{server.log_tail()}", pytrace=False)
            time.sleep(0.25)
        yield server
    finally:
        _kill_server(proc, base_url, token)


def test_dashboard_served_by_voila(voila: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    artifacts = Path(ARTIFACTS) if ARTIFACTS else tmp_path
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "06_operations_voila.png"
    page_errors: list[str] = []
    with sync_playwright() as pw:
        home = tmp_path / "chromium-home"
        browser_env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=browser_env)
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
                # A round trip through the live kernel: Refresh redraws every section without an error.
                page.locator("button.widget-button", has_text="Refresh").click()
                expect(page.locator("button.widget-button", has_text="Refresh")).to_be_enabled(timeout=60_000)
                expect(page.locator(".hdi-error")).to_have_count(0)
                expect(page.locator(".hdi-subscriptions table tbody tr")).to_have_count(2)
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
