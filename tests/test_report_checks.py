"""The operations report's quality checks as pure functions over frames, its status and its window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hdi_lab.core import report
from hdi_lab.core.report import FINDING_COLUMNS, Thresholds
from hdi_lab.errors import ValidationError

pytestmark = pytest.mark.unit

PX = 1_000_000_000
T0 = pd.Timestamp("2024-01-03 14:30", tz="UTC")


def _bars(closes: list[float], *, publisher: int = 2, iid: int = 7, start: pd.Timestamp = T0) -> pd.DataFrame:
    c = (np.asarray(closes) * PX).astype(np.int64)
    return pd.DataFrame(
        {
            "dataset": "XNAS.ITCH",
            "instrument_id": iid,
            "publisher_id": publisher,
            "ts_event": pd.date_range(start, periods=len(c), freq="1min"),
            "open": c,
            "high": c + PX // 100,
            "low": c - PX // 100,
            "close": c,
            "volume": 10,
        }
    )


def _walk(n: int, seed: int = 1) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(100 * np.exp(np.cumsum(rng.normal(0, 0.001, n))))


def test_clean_bars_have_no_findings() -> None:
    bars = _bars(_walk(200))
    for found in (
        report.ohlc_anomalies(bars),
        report.zero_volume(bars),
        report.price_jumps(bars),
        report.stale_prices(bars),
        report.publisher_disagreement(bars),
    ):
        assert found.empty and list(found.columns) == list(FINDING_COLUMNS)


def test_ohlc_anomalies() -> None:
    bars = _bars(_walk(5))
    bars.loc[1, "high"] = bars.loc[1, "low"] - 1  # high below low
    bars.loc[3, "low"] = bars.loc[3, "close"] + 1  # low above close
    bars.loc[4, ["open", "low"]] = 0  # a price <= 0
    found = report.ohlc_anomalies(bars)
    assert found["ts_event"].tolist() == bars["ts_event"].iloc[[1, 3, 4]].tolist()
    assert set(found["severity"]) == {"red"} and set(found["check"]) == {"ohlc"}


def test_zero_volume() -> None:
    bars = _bars(_walk(5))
    bars.loc[2, "volume"] = 0
    found = report.zero_volume(bars)
    assert found[["check", "severity", "instrument_id", "count"]].values.tolist() == [["zero_volume", "amber", 7, 1]]


def test_price_jumps_by_sigmas_of_recent_returns() -> None:
    closes = _walk(120)
    closes[100:] = [c * 1.02 for c in closes[100:]]  # one 2% step: about 20 sd of 0.1% returns
    found = report.price_jumps(_bars(closes))
    assert found["ts_event"].tolist() == [T0 + pd.Timedelta(minutes=100)]
    assert "sd" in found["detail"].iloc[0]
    assert report.price_jumps(_bars(closes), Thresholds(jump_sigmas=50)).empty
    # too few returns before it: no judgement
    assert report.price_jumps(_bars(closes[85:])).empty


def test_stale_prices_runs() -> None:
    closes = _walk(100)
    closes[10:45] = [closes[10]] * 35
    closes[60:70] = [closes[60]] * 10
    found = report.stale_prices(_bars(closes))
    assert found[["ts_event", "count"]].values.tolist() == [[T0 + pd.Timedelta(minutes=10), 35]]
    assert len(report.stale_prices(_bars(closes), Thresholds(stale_bars=10))) == 2


def test_crossed_and_locked_quotes() -> None:
    quotes = pd.DataFrame(
        {
            "dataset": "XNAS.ITCH",
            "instrument_id": [7, 7, 7, 8],
            "publisher_id": 2,
            "ts_event": pd.date_range(T0, periods=4, freq="1s"),
            "bid_px": [101 * PX, 100 * PX, 102 * PX, 50 * PX],
            "ask_px": [100 * PX, 100 * PX, 101 * PX, 50 * PX],
        }
    )
    found = report.crossed_quotes(quotes)
    rows = found[["check", "severity", "instrument_id", "count"]].values.tolist()
    assert rows == [["crossed_quote", "red", 7, 2], ["locked_quote", "amber", 7, 1], ["locked_quote", "amber", 8, 1]]
    assert found["ts_event"].iloc[0] == T0


def test_publisher_disagreement() -> None:
    closes = _walk(10)
    other = [c * (1.01 if 3 <= i < 6 else 1.0) for i, c in enumerate(closes)]
    bars = pd.concat([_bars(closes), _bars(other, publisher=3)], ignore_index=True)
    found = report.publisher_disagreement(bars)
    assert found[["instrument_id", "count"]].values.tolist() == [[7, 3]]
    assert found["ts_event"].iloc[0] == T0 + pd.Timedelta(minutes=3)
    assert report.publisher_disagreement(bars, Thresholds(disagreement=0.02)).empty


def test_session_checks_follow_the_calendar() -> None:
    # Nasdaq on 2024-01-03: 14:30-21:00 UTC; bars 14:30-15:29 less ten, and one at 22:00
    bars = _bars(_walk(60)).drop(index=range(20, 30)).reset_index(drop=True)
    bars = pd.concat([bars, _bars([100.0], start=pd.Timestamp("2024-01-03 22:00", tz="UTC"))], ignore_index=True)
    outside = report.bars_outside_sessions(bars, lambda ds: "XNAS")
    assert outside[["ts_event", "count"]].values.tolist() == [[pd.Timestamp("2024-01-03 22:00", tz="UTC"), 1]]
    missing = report.missing_minutes(bars, lambda ds: "XNAS")
    assert missing[["count", "severity"]].values.tolist() == [[10, "info"]]  # 10 of 60 minutes
    assert report.missing_minutes(bars, lambda ds: "XNAS", Thresholds(missing_share=0.1))["severity"].tolist() == [
        "amber"
    ]
    assert report.missing_minutes(bars, lambda ds: None).empty  # no calendar: skipped


def test_status_and_reasons() -> None:
    none = pd.DataFrame(columns=list(FINDING_COLUMNS))
    assert report.status_of(none) == ("green", ())
    bars = _bars(_walk(5))
    bars.loc[1, "volume"] = 0
    bars.loc[2, "high"] = 0
    info = report.missing_minutes(bars.drop(index=3), lambda ds: "XNAS")
    assert report.status_of(info) == ("green", ())  # info findings do not change the status
    both = pd.concat([report.zero_volume(bars), report.ohlc_anomalies(bars)], ignore_index=True)
    assert report.status_of(both) == ("red", ("red: ohlc x1", "amber: zero_volume x1"))


def test_window() -> None:
    day = pd.Timestamp("2024-01-03", tz="UTC")
    assert report.window("2024-01-03") == (day, day + pd.Timedelta(days=1))
    assert report.window(start="2024-01-03", end="2024-01-05") == (day, day + pd.Timedelta(days=2))
    assert report.window(start="2024-01-03") == (day, day + pd.Timedelta(days=1))
    assert report.window(start="2024-01-03", end="2024-01-04 12:00")[1] == day + pd.Timedelta(days=2)
    lo, hi = report.window()
    assert hi - lo == pd.Timedelta(days=1) and lo == pd.Timestamp.now(tz="UTC").normalize()
    for bad in (dict(date="2024-01-03", start="2024-01-01"), dict(end="2024-01-03"), dict(date="nope")):
        with pytest.raises(ValidationError):
            report.window(**bad)
    with pytest.raises(ValidationError, match="date='nope' is not a date or timestamp"):
        report.window("nope")
    with pytest.raises(ValidationError, match="date is required"):  # an empty text is no day (was a crash)
        report.window("")
    with pytest.raises(ValidationError, match="empty"):
        report.window(start="2024-01-03", end="2024-01-03")


@pytest.mark.parametrize(
    "bad", [dict(jump_sigmas=-1), dict(stale_bars=1), dict(jump_window=10, jump_min_returns=20), dict(disagreement="x")]
)
def test_thresholds_are_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Thresholds(**bad)  # type: ignore[arg-type]


def test_thresholds_parse() -> None:
    assert Thresholds.parse(["jump_sigmas=8", "stale-bars=60"]) == Thresholds(jump_sigmas=8.0, stale_bars=60)
    assert Thresholds.parse([]) == Thresholds()
    for bad in (["bogus=1"], ["jump_sigmas"], ["stale_bars=1.5"], ["stale_bars=1"], ["disagreement=x"]):
        with pytest.raises(ValidationError):
            Thresholds.parse(bad)


def test_a_return_across_a_pause_is_no_jump() -> None:
    closes = _walk(120)
    closes[100:] = [c * 1.02 for c in closes[100:]]
    bars = _bars(closes)
    bars.loc[100:, "ts_event"] += pd.Timedelta(hours=17)  # overnight between bar 99 and 100
    assert report.price_jumps(bars).empty
    assert len(report.price_jumps(bars, Thresholds(jump_max_gap=24 * 60))) == 1
