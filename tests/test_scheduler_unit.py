"""The scheduler's schedules (:func:`hdi_lab.core.scheduler.trigger_of`, ``schedule_of``): a subscription's
``cron`` option, else 30 minutes after its calendar's regular close, in the calendar's time zone."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest

from hdi_lab.core.scheduler import schedule_of, trigger_of
from hdi_lab.core.subscriptions import Subscription
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import Schema, SType

pytestmark = pytest.mark.unit


def _sub(dataset: str = "GLBX.MDP3", **options: Any) -> Subscription:
    return Subscription(
        1, "es", "databento", dataset, Schema("ohlcv-1m"), SType("raw_symbol"), ("ESH4",), dt.date(2024, 1, 2),
        pd.Timestamp("2024-01-02", tz="UTC"), options,
    )  # fmt: skip


def _next(sub: Subscription, after: str) -> pd.Timestamp:
    fire = trigger_of(sub).get_next_fire_time(None, pd.Timestamp(after, tz="UTC").to_pydatetime())
    return pd.Timestamp(fire).tz_convert("UTC")


def test_the_default_runs_30_minutes_after_the_close_in_the_calendars_time_zone() -> None:
    assert schedule_of(_sub()) == "30 16 * * mon-fri America/Chicago"  # CME's trading day ends at the 16:00 halt
    assert schedule_of(_sub("XNAS.ITCH")) == "30 16 * * mon-fri America/New_York"
    # daylight saving time moves the UTC time: 21:30 UTC in winter, 20:30 UTC in summer
    assert _next(_sub("XNAS.ITCH"), "2024-01-05 12:00") == pd.Timestamp("2024-01-05 21:30", tz="UTC")
    assert _next(_sub("XNAS.ITCH"), "2024-07-05 12:00") == pd.Timestamp("2024-07-05 20:30", tz="UTC")
    # Friday's run, then Monday's: no weekend runs
    assert _next(_sub(), "2024-01-05 23:00") == pd.Timestamp("2024-01-08 22:30", tz="UTC")


def test_a_dataset_without_a_calendar_runs_daily_after_utc_midnight() -> None:
    assert schedule_of(_sub("NOPE.DATA")) == "30 0 * * * UTC"


def test_the_cron_option_wins_with_five_or_six_fields() -> None:
    assert schedule_of(_sub(cron="0 22 * * mon-fri")) == "0 22 * * mon-fri UTC"
    assert _next(_sub(cron="0 22 * * mon-fri"), "2024-01-05 12:00") == pd.Timestamp("2024-01-05 22:00", tz="UTC")
    assert schedule_of(_sub(cron="*/5 * * * * *")) == "*/5 * * * * * UTC"
    assert _next(_sub(cron="*/5 * * * * *"), "2024-01-05 12:00:01") == pd.Timestamp("2024-01-05 12:00:05", tz="UTC")


@pytest.mark.parametrize(("cron", "message"), [("0 22 * *", "has 4 fields"), ("99 * * * *", "is not valid")])
def test_a_bad_cron_option_is_a_one_line_error(cron: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        trigger_of(_sub(cron=cron))
    with pytest.raises(ValidationError, match="subscription 1 \\(es\\)"):
        schedule_of(_sub(cron=cron))
