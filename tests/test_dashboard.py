"""The operations dashboard (hdi_lab.frontend.dashboard): its subscription table from plain frames, and the whole
page against a real PostgreSQL with sample data (subscriptions, heatmap, ingests, quarantine, report)."""

from __future__ import annotations

import pandas as pd
import pytest

import hdi_lab
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.frontend.dashboard import NEXT_RUN, SUBSCRIPTION_COLUMNS, Operations, subscription_status

SUBS = pd.DataFrame(
    {
        "id": [1, 2, 3],
        "name": ["es", None, "nq"],
        "provider": ["sample"] * 3,
        "dataset": ["GLBX.MDP3", "XNAS.ITCH", "GLBX.MDP3"],
        "schema": ["ohlcv-1m"] * 3,
        "symbols": ["ESH4", "AAPL,NVDA", "NQH4"],
        "since": [pd.Timestamp("2024-01-02").date()] * 3,
    }
)
LOG = pd.DataFrame(
    {
        "finished_at": pd.to_datetime(["2024-02-01 10:00", "2024-02-02 10:00", "2024-02-03 10:00"], utc=True),
        "provider": ["sample"] * 3,
        "dataset": ["GLBX.MDP3", "XNAS.ITCH", "XNAS.ITCH"],
        "schema": ["ohlcv-1m", "ohlcv-1m", "ohlcv-1h"],
        "symbols": ["ESH4", "NVDA", "AAPL"],
    }
)
COVERAGE = pd.DataFrame(
    {"subscription": ["es", "es", "2"], "reason": ["empty", None, "not_ingested"], "symbol": ["ESH4", "ESH4", "AAPL"]}
)


@pytest.mark.unit
def test_subscription_status_last_update_gaps_and_status() -> None:
    table = subscription_status(SUBS, LOG, COVERAGE)
    assert tuple(table.columns) == SUBSCRIPTION_COLUMNS
    assert list(table["subscription"]) == ["es", "2", "nq"]  # the name, else the id
    assert table["last_update"].iloc[0] == pd.Timestamp("2024-02-01 10:00", tz="UTC")
    # AAPL's ohlcv-1h ingest is another schema: only NVDA's minute bars count for subscription 2
    assert table["last_update"].iloc[1] == pd.Timestamp("2024-02-02 10:00", tz="UTC")
    assert pd.isna(table["last_update"].iloc[2])
    assert list(table["gaps"]) == [1, 1, 0]
    assert list(table["status"]) == ["1 gaps", "1 gaps", "never updated"]
    assert set(table["next_run"]) == {NEXT_RUN}


@pytest.mark.unit
def test_subscription_status_shows_the_schedulers_next_run() -> None:
    table = subscription_status(
        SUBS, LOG, COVERAGE, {int(SUBS["id"].iloc[1]): pd.Timestamp("2024-03-01 22:30", tz="UTC")}
    )
    assert list(table["next_run"]) == [NEXT_RUN, "2024-03-01 22:30 UTC", NEXT_RUN]


@pytest.mark.unit
def test_subscription_status_of_nothing() -> None:
    empty_log = LOG.iloc[:0]
    table = subscription_status(SUBS, empty_log, COVERAGE.iloc[:0])
    assert list(table["status"]) == ["never updated"] * 3
    assert list(table["gaps"]) == [0, 0, 0]
    assert subscription_status(SUBS.iloc[:0], LOG, COVERAGE).empty


@pytest.mark.integration
def test_operations_page_shows_every_section(session: HdiSession) -> None:
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols="AAPL", since="2024-01-02", name="aapl", session=session)
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols="NVDA", since="2024-01-02", name="nvda", session=session)
    hdi_lab.update("aapl", until="2024-01-06", session=session)  # nvda never updated
    page = Operations(session, start="2024-01-02", end="2024-01-06")
    assert page.table is not None and page.report is not None
    rows = page.table.set_index("subscription")
    assert rows.loc["aapl", "status"] == "current" and rows.loc["aapl", "gaps"] == 0
    assert rows.loc["nvda", "status"] == "never updated" and rows.loc["nvda", "gaps"] == 4
    assert page.report.status == "amber"  # nvda's sessions are gaps
    assert f"data-status='{page.report.status}'" in page.status.value
    assert "<td>aapl</td>" in page.subscriptions.value and "never" in page.subscriptions.value
    assert page.figure is not None
    heat = page.figure.data[0]
    assert heat.type == "heatmap" and list(heat.y) == ["AAPL · 500001", "NVDA · ?"]
    assert page.figure.layout.title.text == "coverage of the subscriptions"
    assert "hdi-ingests" in page.ingests.value and "XNAS.ITCH" in page.ingests.value
    assert "nothing quarantined" in page.quarantine.value
    assert "hdi operations report 2024-01-02 to 2024-01-05" in page.report_text.value

    # Refresh reads again: nvda brought current, the page follows, the same figure redrawn
    figure = page.figure
    hdi_lab.update("nvda", until="2024-01-06", session=session)
    page.refresh_button.click()
    assert page.last_error is None and page.error.value == ""
    assert page.report.status == "green"
    assert page.table.set_index("subscription").loc["nvda", "status"] == "current"
    assert page.figure is figure and list(page.figure.data[0].y) == ["AAPL · 500001", "NVDA · 500003"]


@pytest.mark.integration
def test_operations_page_without_subscriptions_and_bad_dates(session: HdiSession) -> None:
    page = Operations(session, start="2024-01-02", end="2024-01-03")
    assert page.table is not None and page.table.empty
    assert "no subscriptions" in page.subscriptions.value
    assert page.figure is None and "hdi-no-coverage" in page.chart.children[0].value
    assert "no ingests yet" in page.ingests.value
    with pytest.raises(ValidationError):
        Operations(session, start="2024-01-03", end="2024-01-02")
    page.start, page.end = "2024-01-03", "2024-01-02"
    page.refresh_button.click()  # the button shows the error in the page, raises nothing
    assert isinstance(page.last_error, ValidationError)
    assert "hdi-error" in page.error.value
