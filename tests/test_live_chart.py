"""The live chart (issue 18): candlesticks appending as a live session's bars close, live indicators over them;
the real ``databento.Live`` client against the local fake gateway, a real PostgreSQL, updates from the session's
background threads while the notebook's thread reads the figure."""

from __future__ import annotations

import base64
import threading
import time

import numpy as np
import pandas as pd
import pytest
from fake_databento_live import FakeLiveGateway, live_session

import hdi_lab
from hdi_lab import features
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.frontend.livechart import LiveChart
from hdi_lab.schemas import Schema, SType

pytestmark = pytest.mark.integration

DAY = ("2024-03-01", "2024-03-02")
ES = dict(dataset="GLBX.MDP3", symbols="ES.c.0", stype_in="continuous")


def points(values: object) -> int:
    """How many values a trace array holds as sent to the browser (a list, or plotly's typed-array encoding)."""
    if isinstance(values, dict):
        return len(base64.b64decode(values["bdata"])) // np.dtype(values["dtype"]).itemsize
    return len(values)  # type: ignore[arg-type]


def test_chart_appends_bars_and_indicators_from_the_session_threads(session: HdiSession) -> None:
    with FakeLiveGateway(window=DAY, rate=20_000, block=64) as gw:
        n = len(gw.records(Schema.OHLCV_1S, SType.CONTINUOUS, ["ES.c.0"]))
        with live_session(session, gw) as s:
            handle = hdi_lab.live(
                "databento", schema="trades,ohlcv-1s", features=["momentum_v1"], session=s, heartbeat_interval_s=1, **ES
            )
            chart = LiveChart(handle, max_bars=200, indicators=("sma_20", "ema_20"))
            seen: list[int] = []
            done = threading.Event()

            def watch() -> None:  # the notebook's thread reading the figure while the session's threads change it
                while not done.is_set():
                    fig = chart.snapshot()
                    candles = fig["data"][0]
                    sizes = {points(candles[k]) for k in ("x", "open", "high", "low", "close")}
                    sizes |= {points(t[k]) for t in fig["data"][1:] for k in ("x", "y")}
                    assert len(sizes) == 1, sizes  # never a half-updated trace
                    seen.append(sizes.pop())
                    time.sleep(0.01)

            reader = threading.Thread(target=watch)
            reader.start()
            deadline = time.monotonic() + 120
            while handle.status().records < n and handle.running and time.monotonic() < deadline:
                time.sleep(0.05)
            st = handle.stop()
            done.set()
            reader.join()
    assert st.state == "stopped", st
    assert chart.errors == [] and handle.features.errors == []
    assert max(seen) == 200 and chart.draws > 5
    # drawn from the writer's and the features' threads, never the test's
    assert {t.rsplit("-", 1)[-1] for t in chart.draw_threads} == {"writer", "features"}
    # the candles are the last 200 stored bars of the session's instrument
    want = hdi_lab.query("ohlcv-1s", "ES.c.0", *DAY, session=session).iloc[-200:]
    fig = chart.figure
    candles, volume, sma, ema = fig.data
    assert [t.name for t in fig.data] == ["OHLC", "volume", "sma_20", "ema_20"]
    assert list(candles.x) == list(want.index.strftime("%Y-%m-%dT%H:%M:%SZ"))
    np.testing.assert_array_equal(candles.close, want["close"].to_numpy())
    np.testing.assert_array_equal(candles.high, want["high"].to_numpy())
    np.testing.assert_array_equal(volume.y, want["volume"].to_numpy(np.float64))
    # the indicator lines are the stored live features of those bars (stamped at the bar's close)
    stored = features.read("momentum_v1", "ES.c.0", *DAY, interval="1s", session=session).iloc[-200:]
    opens = pd.DatetimeIndex(stored["event_timestamp"]) - pd.Timedelta(seconds=1)
    assert list(opens.strftime("%Y-%m-%dT%H:%M:%SZ")) == list(candles.x)
    np.testing.assert_array_equal(sma.y, stored["sma_20"].to_numpy())
    np.testing.assert_array_equal(ema.y, stored["ema_20"].to_numpy())
    assert "200 bars shown" in chart.status.value and "momentum_v1 to" in chart.status.value


def test_chart_needs_bars_and_known_indicators(session: HdiSession) -> None:
    with FakeLiveGateway(window=DAY) as gw, live_session(session, gw) as s:
        handle = hdi_lab.live("databento", schema="trades", session=s, heartbeat_interval_s=1, **ES)
        try:
            with pytest.raises(ValidationError, match="stores no bars to chart"):
                LiveChart(handle)
        finally:
            handle.stop()
        handle = hdi_lab.live(
            "databento", schema="ohlcv-1s", features="momentum_v1", session=s, heartbeat_interval_s=1, **ES
        )
        try:
            with pytest.raises(ValidationError, match="nosuch are not columns of momentum_v1"):
                LiveChart(handle, indicators=["nosuch"])
            assert LiveChart(handle, indicators=["rsi_14"]).indicators == ("rsi_14",)
        finally:
            handle.stop()
