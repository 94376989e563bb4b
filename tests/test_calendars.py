"""Exchange calendars against the real exchange_calendars library and real 2024 dates (no database)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import exchange_calendars as xc
import numpy as np
import pandas as pd
import pytest

from hdi_lab.calendars import (
    DATASET_CALENDARS,
    IB_EXCHANGE_CALENDARS,
    NAT,
    bar_labels,
    bar_sessions,
    calendar_for,
    minutes,
    open_minutes,
    session_of,
    sessions,
    sessions_of,
    utc_ns,
)
from hdi_lab.config import Settings, load_settings, parse_calendars
from hdi_lab.errors import ConfigError, ValidationError
from hdi_lab.providers.databento.provider import DATASETS

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


def settings(tmp_path: Path, calendars: str | None = None) -> Settings:
    env = {"HDI_CALENDARS": calendars} if calendars else {}
    return load_settings(environ=env, cwd=tmp_path)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def days(frame: pd.DataFrame) -> list[str]:
    return [str(d.date()) for d in frame["session"]]


# -- equities: holidays, early closes, DST -------------------------------------------------------------------


def test_mlk_day_and_good_friday_are_closed_on_xnas() -> None:
    assert days(sessions("XNAS", "2024-01-12", "2024-01-16")) == ["2024-01-12", "2024-01-16"]
    assert days(sessions("XNAS", "2024-03-27", "2024-04-01")) == ["2024-03-27", "2024-03-28", "2024-04-01"]
    assert session_of("XNAS", "2024-01-15T15:00Z") is None
    assert session_of("XNAS", "2024-03-29T15:00Z") is None
    with pytest.raises(ValidationError, match="2024-01-15 is not a trading session of XNAS"):
        minutes("XNAS", "2024-01-15")


def test_early_close_on_2024_07_03_is_13_00_new_york() -> None:
    frame = sessions("XNAS", "2024-07-02", "2024-07-05").set_index("session")
    assert list(frame.index.strftime("%Y-%m-%d")) == ["2024-07-02", "2024-07-03", "2024-07-05"]  # July 4 closed
    assert frame.loc["2024-07-03", "open"] == utc("2024-07-03 13:30")
    assert frame.loc["2024-07-03", "close"] == utc("2024-07-03 17:00")
    assert frame.loc["2024-07-03", "minutes"] == minutes("XNAS", "2024-07-03") == 210
    assert session_of("XNAS", utc("2024-07-03 16:59")) == pd.Timestamp("2024-07-03").date()
    assert session_of("XNAS", utc("2024-07-03 17:00")) is None  # the close is exclusive


def test_winter_and_summer_hours_follow_new_york_dst() -> None:
    frame = sessions("XNAS", "2024-03-08", "2024-07-16").set_index("session")
    winter, spring, summer = frame.loc["2024-03-08"], frame.loc["2024-03-11"], frame.loc["2024-07-16"]
    assert (winter["open"], winter["close"]) == (utc("2024-03-08 14:30"), utc("2024-03-08 21:00"))
    assert (spring["open"], spring["close"]) == (utc("2024-03-11 13:30"), utc("2024-03-11 20:00"))  # DST from 03-10
    assert (summer["open"], summer["close"]) == (utc("2024-07-16 13:30"), utc("2024-07-16 20:00"))
    assert minutes("XNAS", "2024-01-16") == minutes("XNAS", "2024-07-16") == 390
    assert session_of("XNAS", "2024-01-16 14:29") is None  # naive = UTC: a minute before the winter open
    assert session_of("XNAS", "2024-01-16 14:30") == pd.Timestamp("2024-01-16").date()
    assert session_of("XNAS", "2024-07-16 13:30") == pd.Timestamp("2024-07-16").date()
    assert session_of("XNYS", "2024-07-16 20:00") is None


# -- CME Globex ---------------------------------------------------------------------------------------------


def test_the_cme_sunday_evening_session_belongs_to_monday() -> None:
    monday = pd.Timestamp("2024-01-22").date()
    assert session_of("CMES", utc("2024-01-21 23:00")) == monday  # Sunday 17:00 Chicago (CST)
    assert session_of("CMES", pd.Timestamp("2024-01-21 18:30", tz="America/Chicago")) == monday
    assert session_of("CMES", utc("2024-01-21 22:59")) is None  # the weekend
    assert session_of("CMES", utc("2024-07-14 22:00")) == pd.Timestamp("2024-07-15").date()  # CDT: 22:00 UTC
    assert session_of("CMES", utc("2024-01-19 22:59")) == pd.Timestamp("2024-01-19").date()  # Friday's last bar
    assert session_of("CMES", utc("2024-01-19 23:00")) is None


def test_cme_holiday_schedule() -> None:
    """What exchange_calendars 4.13 says of CME Globex in 2024: MLK day, July 4 and Christmas Eve are sessions
    halted at 12:00 Chicago; Good Friday and Christmas are closed."""
    frame = sessions("CMES", "2024-01-12", "2024-12-27").set_index("session")
    mlk = frame.loc["2024-01-15"]
    assert (mlk["open"], mlk["close"], mlk["minutes"]) == (utc("2024-01-14 23:00"), utc("2024-01-15 18:00"), 1140)
    assert frame.loc["2024-07-04", "close"] == utc("2024-07-04 17:00")  # 12:00 CDT
    assert frame.loc["2024-12-24", "close"] == utc("2024-12-24 18:00")
    assert pd.Timestamp("2024-03-29") not in frame.index  # Good Friday
    assert pd.Timestamp("2024-12-25") not in frame.index
    assert frame.loc["2024-12-26", "open"] == utc("2024-12-25 23:00")  # reopens Christmas evening
    # a regular session runs 17:00-17:00 Chicago in exchange_calendars (no 16:00-17:00 maintenance halt)
    assert frame.loc["2024-01-16", "minutes"] == minutes("CMES", "2024-01-16") == 1440
    assert session_of("CMES", utc("2024-01-15 18:30")) is None  # between the early halt and the evening open


# -- vectorised assignment, checked against the library's own minute lookup -----------------------------------


@pytest.mark.parametrize("code", ["XNAS", "CMES", "XTKS"])
def test_sessions_of_agrees_with_exchange_calendars_minute_by_minute(code: str) -> None:
    cal = xc.get_calendar(code, start="2000-01-01")
    stamps = pd.date_range("2024-03-27", "2024-04-03", freq="7min", tz="UTC")  # Easter, DST in Europe/US
    got = sessions_of(code, stamps)
    for ts, label in zip(stamps, got, strict=True):
        if cal.is_trading_minute(ts):
            assert label == cal.minute_to_session(ts, direction="none").tz_localize(None), ts
        else:
            assert pd.isna(label), ts


def test_sessions_of_keeps_the_index_and_maps_nat_and_closed_times_to_nat() -> None:
    stamps = pd.Series(
        pd.to_datetime(["2024-01-14 22:59", "2024-01-14 23:00", "2024-01-15 17:59", "2024-01-15 18:00", None]),
        index=list("abcde"),
    )
    got = sessions_of("CMES", stamps)
    assert list(got.index) == list("abcde") and got.dtype == np.dtype("datetime64[ns]")
    assert [None if pd.isna(v) else str(v.date()) for v in got] == [None, "2024-01-15", "2024-01-15", None, None]
    assert sessions_of("XNAS", np.array([], dtype="datetime64[ns]")).empty


def test_minutes_match_the_library_and_subtract_a_lunch_break() -> None:
    for code, day in [("XNAS", "2024-01-16"), ("XNAS", "2024-11-29"), ("CMES", "2024-07-04"), ("XTKS", "2024-01-16")]:
        expected = len(xc.get_calendar(code, start="2000-01-01").session_minutes(day))
        assert minutes(code, day) == expected, (code, day)
    assert minutes("XNAS", "2024-11-29") == 210  # the day after Thanksgiving
    assert minutes("XTKS", "2024-01-16") == 300  # 09:00-15:30 Tokyo less the 11:30-12:30 break
    assert session_of("XTKS", "2024-01-16 02:45") is None  # inside that break


@pytest.mark.parametrize("code", ["CMES", "XNAS", "XHKG"])
def test_open_minutes_agree_with_sessions_of_minute_by_minute(code: str) -> None:
    # XHKG has a lunch break; CMES sessions straddle UTC days
    for day in ("2024-01-14", "2024-01-15", "2024-03-10", "2024-03-29", "2024-07-03", "2024-07-04", "2024-12-24"):
        stamps = pd.date_range(day, periods=1440, freq="min", tz="UTC")
        expected = sessions_of(code, stamps).notna().to_numpy()
        assert (open_minutes(code, day) == expected).all(), (code, day)
    assert open_minutes("XNAS", "2024-07-03").sum() == minutes("XNAS", "2024-07-03") == 210


def test_open_minutes_refuse_days_outside_the_calendar() -> None:
    with pytest.raises(ValidationError, match="leaves the XNAS calendar"):
        open_minutes("XNAS", "1999-12-31")
    with pytest.raises(ValidationError, match="is not a date"):
        open_minutes("XNAS", "someday")


def test_ranges_outside_the_calendar_and_bad_dates_are_refused() -> None:
    with pytest.raises(ValidationError, match="leaves the XNAS calendar"):
        sessions("XNAS", "1999-12-01", "2000-02-01")
    with pytest.raises(ValidationError, match="is after end"):
        sessions("XNAS", "2024-02-01", "2024-01-01")
    with pytest.raises(ValidationError, match="is not a date"):
        sessions("XNAS", "yesterday-ish", "2024-01-01")
    with pytest.raises(ValidationError, match="leaves the CMES calendar"):
        sessions_of("CMES", pd.DatetimeIndex(["1990-01-02 15:00"]))


# -- which calendar ----------------------------------------------------------------------------------------------


def test_datasets_map_to_real_calendars(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert calendar_for("GLBX.MDP3", settings=s) == "CMES"
    assert calendar_for("xnas.itch", settings=s) == "XNAS"
    assert calendar_for("XNYS.PILLAR", settings=s) == "XNYS"
    names = set(xc.get_calendar_names(include_aliases=True))
    assert set(DATASET_CALENDARS) <= set(DATASETS)  # only datasets hdi_lab knows
    assert set(DATASET_CALENDARS.values()) | set(IB_EXCHANGE_CALENDARS.values()) <= names
    with pytest.raises(ValidationError, match=r"no known exchange calendar: set calendars / HDI_CALENDARS"):
        calendar_for("CCCY.CGIF", settings=s)


def test_ib_maps_by_the_contracts_exchange(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert calendar_for("IB", "CME", settings=s) == "CMES"
    assert calendar_for("IB", "globex", settings=s) == "CMES"
    assert calendar_for("IB.MIDPOINT", "ISLAND", settings=s) == "XNAS"
    assert calendar_for("IB", "SMART", settings=s) == "XNAS"
    assert calendar_for("IB", "NYSE", settings=s) == "XNYS"
    # the definition record keeps DBN's 5 characters of the exchange: a unique prefix of a known one
    assert calendar_for("IB", "IDEAL", settings=s) == "24/5"
    assert calendar_for("IB", "GLOBE", settings=s) == "CMES"
    assert calendar_for("IB", "NASDA", settings=s) == "XNAS"
    with pytest.raises(ValidationError, match="give exchange="):
        calendar_for("IB", settings=s)
    with pytest.raises(ValidationError, match="HDI_CALENDARS='IB:MOON=XNYS'"):
        calendar_for("IB", "MOON", settings=s)


def test_the_calendars_setting_overrides(tmp_path: Path) -> None:
    s = settings(tmp_path, "GLBX.MDP3=us_futures, IB=XNYS, IB:SMART=xlon, CCCY.CGIF=24/7")
    assert calendar_for("GLBX.MDP3", settings=s) == "us_futures"
    assert calendar_for("IB", "CME", settings=s) == "XNYS"  # IB beats the built-in exchange map
    assert calendar_for("IB.BID_ASK", "SMART", settings=s) == "XLON"  # IB:EXCHANGE beats IB; codes any case
    assert calendar_for("XNAS.ITCH", settings=s) == "XNAS"  # untouched
    assert calendar_for("CCCY.CGIF", settings=s) == "24/7"
    # a stored 5-character exchange (DBN's field) takes the override of the IB name it starts, and its own
    s = settings(tmp_path, "IB:GLOBEX=XNYS, IB:IDEAL=XLON")
    assert calendar_for("IB", "GLOBE", settings=s) == "XNYS"
    assert calendar_for("IB", "GLOBEX", settings=s) == "XNYS"
    assert calendar_for("IB", "IDEAL", settings=s) == "XLON"
    assert calendar_for("IB", "NYMEX", settings=s) == "CMES"
    assert days(sessions("24/7", "2024-01-13", "2024-01-14")) == ["2024-01-13", "2024-01-14"]
    with pytest.raises(ConfigError, match=r"'XNYSE' is not an exchange_calendars code; did you mean XNYS\?"):
        calendar_for("XNAS.ITCH", settings=settings(tmp_path, "XNAS.ITCH=XNYSE"))
    with pytest.raises(ConfigError, match="is not an exchange_calendars code"):
        sessions("NOPE", "2024-01-02", "2024-01-03")


def test_a_malformed_calendars_setting_fails_with_one_line(tmp_path: Path) -> None:
    for bad, match in [
        ("GLBX.MDP3:CMES", "entry 'GLBX.MDP3:CMES' from env HDI_CALENDARS is not DATASET=CALENDAR"),
        ("GLBX.MDP3=CMES,GLBX.MDP3=XNYS", "names GLBX.MDP3 twice"),
        ("=CMES", "is not DATASET=CALENDAR"),
    ]:
        with pytest.raises(ConfigError, match=match) as err:
            settings(tmp_path, bad)
        assert "\n" not in str(err.value)
    (tmp_path / "hdi_lab.toml").write_text('calendars = "IB=XNYS"\n')
    assert parse_calendars(load_settings(environ={}, cwd=tmp_path).calendars) == {"IB": "XNYS"}
    assert parse_calendars(None) == {}


def test_importing_hdi_lab_and_the_calendars_module_does_not_load_exchange_calendars() -> None:
    code = "import json, sys, hdi_lab, hdi_lab.calendars\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if m.startswith("exchange_calendars")]


def test_the_cme_daily_halt_is_left_out_of_expected_minutes() -> None:
    """exchange_calendars' CMES has no 16:00-17:00 Chicago halt: ``halts=True`` takes it out (1380 bars at most),
    in both seasons, and not from an early close that ends before it; other calendars declare none."""
    from hdi_lab.calendars import DAILY_HALTS

    assert DAILY_HALTS["CMES"][:2] == (dt.time(16), dt.time(17))
    assert minutes("CMES", "2024-01-16", halts=True) == 1380  # CST
    assert minutes("CMES", "2024-07-16", halts=True) == 1380  # CDT
    assert minutes("CMES", "2024-01-15", halts=True) == minutes("CMES", "2024-01-15") == 1140  # MLK: 12:00 close
    frame = sessions("CMES", "2024-01-12", "2024-01-16", halts=True)
    assert frame["minutes"].tolist() == [1380, 1140, 1380]
    assert minutes("XNYS", "2024-01-16", halts=True) == minutes("XNYS", "2024-01-16") == 390


# -- bars of any length: the first session they overlap --------------------------------------------------------


def _bars(*stamps: str) -> np.ndarray:
    return pd.DatetimeIndex(stamps).as_unit("ns").asi8


def test_bar_sessions_give_each_bar_the_first_session_it_overlaps() -> None:
    minute, hour, day = (pd.Timedelta(x).value for x in ("1min", "1h", "1D"))
    labels, opens, closes = bar_sessions(
        "XNAS", _bars("2024-01-08 14:29", "2024-01-08 14:30", "2024-01-08 20:59", "2024-01-08 21:00"), minute
    )
    assert [str(pd.Timestamp(v).date()) if v != NAT else None for v in labels] == [
        None, "2024-01-08", "2024-01-08", None,
    ]  # fmt: skip
    assert pd.Timestamp(opens[1], tz="UTC") == utc("2024-01-08 14:30") and closes[2] == utc("2024-01-08 21:00").value
    # an hourly bar at 14:00 UTC holds the 14:30 open; a daily bar at 00:00 UTC holds its date's session
    labels, _, _ = bar_sessions("XNAS", _bars("2024-01-08 14:00", "2024-01-08 13:00"), hour)
    assert labels[0] == pd.Timestamp("2024-01-08").value and labels[1] == NAT
    labels, _, _ = bar_sessions("XNAS", _bars("2024-01-08", "2024-01-15", "2024-01-13"), day)
    assert labels[0] == pd.Timestamp("2024-01-08").value and labels[1] == labels[2] == NAT  # MLK, a Saturday
    # CME: Sunday 23:00 UTC (17:00 Chicago) is Monday's; a UTC-day bar of Sunday too (its last hour)
    labels, _, _ = bar_sessions("CMES", _bars("2024-01-07 22:59", "2024-01-07 23:00", "2024-01-15 18:00"), minute)
    assert labels[0] == NAT and labels[1] == pd.Timestamp("2024-01-08").value and labels[2] == NAT
    labels, _, _ = bar_sessions("CMES", _bars("2024-01-07", "2024-01-08", "2024-01-12"), day)
    assert [str(pd.Timestamp(v).date()) for v in labels] == ["2024-01-08", "2024-01-08", "2024-01-12"]
    # outside the calendar's bounds and NaT: no session (no error)
    labels, _, _ = bar_sessions("XNAS", np.array([_bars("1990-01-02 15:00")[0], NAT, _bars("2200-01-02")[0]]), minute)
    assert (labels == NAT).all()


@pytest.mark.parametrize("code", ["XNAS", "CMES", "XTKS"])
@pytest.mark.parametrize("length", ["5s", "1min", "1h", "1D"])
def test_bar_labels_of_bars_in_time_order_are_bar_sessions_labels(code: str, length: str) -> None:
    """The per-session path (bars in time order) gives each bar what :func:`bar_sessions` gives it: random
    sorted bars with repeats (several instruments), over holidays, weekends and the calendar's bounds."""
    rng = np.random.default_rng(17)
    step = pd.Timedelta(length).value
    for lo, days in [("2024-03-20", 20), ("2023-12-20", 30), ("1990-01-01", 800), ("2025-06-01", 900)]:
        start = pd.Timestamp(lo).value
        stamps = np.sort(start + rng.integers(0, days * 86_400, 3_000) * 1_000_000_000 // step * step)
        stamps = np.sort(np.concatenate([stamps, stamps[:500]]))
        assert np.array_equal(bar_labels(code, stamps, step), bar_sessions(code, stamps, step)[0])
    unsorted = stamps[::-1].copy()  # not in time order, and with NaT: the per-bar path
    unsorted[3] = NAT
    assert np.array_equal(bar_labels(code, unsorted, step), bar_sessions(code, unsorted, step)[0])


@pytest.mark.parametrize("code", ["XNAS", "CMES", "XTKS"])
def test_bar_sessions_of_minutes_agree_with_exchange_calendars(code: str) -> None:
    """Minute bars: the library's session of each trading minute (a break counts as its session here)."""
    cal = xc.get_calendar(code, start="2000-01-01")
    stamps = pd.date_range("2024-03-27", "2024-04-03", freq="7min", tz="UTC")
    labels, _, _ = bar_sessions(code, stamps.asi8, pd.Timedelta("1min").value)
    for ts, label in zip(stamps, labels, strict=True):
        if cal.is_trading_minute(ts):
            want = cal.minute_to_session(ts, direction="none").value
        elif cal.is_break_minute(ts):  # a lunch break (XTKS) lies inside its session
            want = cal.minute_to_session(ts, direction="previous").value
        else:
            want = None
        assert (label if label != NAT else None) == want, ts


def test_utc_ns_is_epoch_nanoseconds_whatever_the_zone_unit_or_container() -> None:
    stamps = pd.DatetimeIndex(["2024-03-10 06:59:59.123456789", "2024-03-10 07:00", None], tz="UTC")
    want = [1710053999123456789, 1710054000000000000, NAT]
    for value in (
        stamps,
        stamps.tz_convert("America/Chicago"),
        stamps.tz_localize(None),
        pd.Series(stamps.tz_convert("Asia/Tokyo")),
        stamps.tz_localize(None).to_numpy(),
    ):
        assert utc_ns(value).tolist() == want
    micro = stamps.as_unit("us")
    assert utc_ns(micro).tolist() == [1710053999123456000, 1710054000000000000, NAT]
