"""Live indicators (issue 18): feature sets advanced per closed bar of a live session, through the incremental
resume path; the real ``databento.Live`` client against the local fake gateway, a real PostgreSQL."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from fake_databento_live import FakeLiveGateway, Fault, live_session

import hdi_lab
from hdi_lab import features
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.features.live import LiveFeatures, parse_sets
from hdi_lab.schemas import Schema, SType

DAY = ("2024-03-01", "2024-03-02")
ES = dict(dataset="GLBX.MDP3", symbols="ES.c.0", stype_in="continuous")


@pytest.mark.unit
def test_feature_sets_are_checked() -> None:
    assert parse_sets("momentum_v1, momentum_v1") == ("momentum_v1",)
    with pytest.raises(ValidationError, match="nosuch"):
        parse_sets(["nosuch_v1"])


@pytest.mark.integration
def test_features_need_a_bar_schema(session: HdiSession) -> None:
    with pytest.raises(ValidationError, match="need bars: add one of ohlcv-1s, ohlcv-5s, ohlcv-1m to schema"):
        hdi_lab.live("databento", schema="trades", features=["momentum_v1"], session=session, **ES)
    with pytest.raises(ValidationError, match="nosuch_v1"):
        hdi_lab.live("databento", schema="ohlcv-1s", features="nosuch_v1", session=session, **ES)


@pytest.mark.integration
def test_live_indicators_equal_a_batch_computation_over_the_same_bars(session: HdiSession) -> None:
    with FakeLiveGateway(window=DAY, rate=20_000) as gw:  # paced: many commits, each advancing the indicators
        bars = gw.records(Schema.OHLCV_1S, SType.CONTINUOUS, ["ES.c.0"])
        gw.faults = [Fault(drop_after=len(bars) // 2)]  # a reconnect with intraday replay half way
        with live_session(session, gw) as s:
            handle = hdi_lab.live(
                "databento",
                schema="ohlcv-1s",
                features=["momentum_v1"],
                session=s,
                heartbeat_interval_s=1,
                backoff=0.05,
                **ES,
            )
            deadline = time.monotonic() + 120
            while handle.status().records < len(bars) and handle.running and time.monotonic() < deadline:
                time.sleep(0.05)
            st = handle.stop()
    assert st.state == "stopped" and st.reconnects == 1, st
    assert (st.records, st.inserted) == (len(bars), len(bars)), st
    live = handle.features
    assert live.errors == []
    updates = live.updates
    assert len(updates) > 2 and sum(u.resumed for u in updates) >= len(updates) - 1  # the first from the first bar
    assert sum(u.rows for u in updates) == len(bars)  # each bar computed once
    stored = features.read("momentum_v1", "ES.c.0", DAY[0], "2024-03-02 00:00:01", interval="1s", session=session)
    assert len(stored) == len(bars)
    # closes of the bars: each feature row is stamped at its bar's close
    want = bars["ts_event"].astype(np.int64) + 1_000_000_000
    assert np.array_equal(np.sort(pd.DatetimeIndex(stored["event_timestamp"]).as_unit("ns").asi8), np.sort(want))
    assert stored["sma_20"].notna().sum() == len(bars) - 19
    # a batch computation of the whole history over the same bars stores exactly what the live updates stored
    report = features.compute("momentum_v1", "ES.c.0", "1s", session=session)
    assert (report.rows, report.resumed, report.inserted, report.updated) == (len(bars), 0, 0, 0), report
    again = features.read("momentum_v1", "ES.c.0", DAY[0], "2024-03-02 00:00:01", interval="1s", session=session)
    assert again.equals(stored)


@pytest.mark.integration
def test_bars_closed_rejects_an_interval_that_is_not_stored(session: HdiSession) -> None:
    live = LiveFeatures(["momentum_v1"], ["ES.c.0"], session=session)
    try:
        with pytest.raises(ValidationError, match="5m"):
            live.bars_closed("5m", [1], [0])
        live.bars_closed("1s", [], [])
        assert live.flush(5) and live.updates == []
    finally:
        live.close()


@pytest.mark.integration
def test_bars_recovered_from_quarantine_advance_the_live_indicators(session: HdiSession) -> None:
    with FakeLiveGateway(window=DAY, rate=20_000) as gw:
        bars = gw.records(Schema.OHLCV_1S, SType.CONTINUOUS, ["ES.c.0"])
        gw.faults = [Fault(map_after=500)]  # the first 500 bars arrive before the mapping that makes ESH4 known
        with live_session(session, gw) as s:
            handle = hdi_lab.live("databento", schema="ohlcv-1s", features="momentum_v1", session=s, **ES)
            deadline = time.monotonic() + 120
            while handle.status().records < len(bars) and handle.running and time.monotonic() < deadline:
                time.sleep(0.05)
            st = handle.stop()
    assert st.state == "stopped" and st.quarantined > 0 and st.recovered == st.quarantined, st
    assert st.inserted + st.recovered == len(bars), st
    live = handle.features
    assert live.errors == [] and sum(u.rows for u in live.updates) == len(bars)  # the recovered bars too, once
    report = features.compute("momentum_v1", "ES.c.0", "1s", session=session)
    assert (report.rows, report.inserted, report.updated) == (len(bars), 0, 0), report
