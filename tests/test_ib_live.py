"""IB live (issue 18, IB part): the fake TWS gateway's live streams (real-time 5-second bars, keepUpToDate 1-minute
bars) received by the real ``ib_async`` client, then hdi_lab's IB live feed (:mod:`hdi_lab.providers.ib.live`)
storing closed 1-minute bars through them into a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pandas as pd
import pytest
from fake_ib import UNIVERSE, FakeIbGateway, bar

pytestmark = pytest.mark.integration

ESH4 = next(c for c in UNIVERSE if c.local_symbol == "ESH4")


@pytest.fixture
def ib() -> Iterator[tuple[object, FakeIbGateway]]:
    import ib_async  # a dev dependency (hdi_lab[ib]): missing, the test fails rather than skips

    loop = asyncio.new_event_loop()  # the client's synchronous API runs on the thread's event loop
    asyncio.set_event_loop(loop)
    gw = FakeIbGateway(today=pd.Timestamp("2024-02-01 15:00", tz="UTC"))
    gw.start()
    client = ib_async.IB()
    client.connect("127.0.0.1", gw.port, clientId=11, timeout=5)
    yield client, gw
    client.disconnect()
    loop.run_until_complete(asyncio.sleep(0.05))  # the transport finishes closing before the loop does
    gw.stop()
    asyncio.set_event_loop(None)
    loop.close()


def contract() -> object:
    import ib_async

    return ib_async.Future(conId=ESH4.con_id, exchange=ESH4.exchange)


def test_realtime_bars_stream_five_second_bars_until_cancelled(ib: tuple[object, FakeIbGateway]) -> None:
    client, gw = ib
    bars = client.reqRealTimeBars(contract(), 5, "TRADES", False)  # type: ignore[attr-defined]
    for _ in range(200):
        client.sleep(0.02)  # type: ignore[attr-defined]
        if len(bars) >= 10:
            break
    assert len(bars) >= 10
    t0 = int(gw.today.timestamp())
    for k, b in enumerate(list(bars)[:10]):
        start = t0 + 5 * k
        assert int(b.time.timestamp()) == start
        o, h, lo, c, v = bar(ESH4, "TRADES", start, 5)
        assert (b.open_, b.high, b.low, b.close, b.volume) == (float(o), float(h), float(lo), float(c), float(v))
    client.cancelRealTimeBars(bars)  # type: ignore[attr-defined]
    client.sleep(0.1)  # type: ignore[attr-defined]
    n = len(gw.live_sent)
    client.sleep(0.2)  # type: ignore[attr-defined]
    assert len(gw.live_sent) == n  # cancelled: nothing more sent
    assert all(kind == "realtime" for kind, _, _ in gw.live_sent)


def test_keep_up_to_date_answers_history_then_updates_the_forming_bar(ib: tuple[object, FakeIbGateway]) -> None:
    client, gw = ib
    bars = client.reqHistoricalData(  # type: ignore[attr-defined]
        contract(), "", "3600 S", "1 min", "TRADES", False, 2, keepUpToDate=True
    )
    history = len(bars)
    assert history == 60 and int(bars[-1].date.timestamp()) == int(gw.today.timestamp()) - 60
    for _ in range(200):
        client.sleep(0.02)  # type: ignore[attr-defined]
        if len(bars) >= history + 5:
            break
    assert len(bars) >= history + 5
    # each new bar arrived forming, then was replaced by its whole: the bars closed equal the fake's 1-minute bars
    for b in list(bars)[history : history + 4]:
        o, h, lo, c, v = bar(ESH4, "TRADES", int(b.date.timestamp()), 60)
        assert (b.open, b.high, b.low, b.close, b.volume) == (float(o), float(h), float(lo), float(c), float(v))
    stamps = [int(b.date.timestamp()) for b in bars]
    assert stamps == sorted(set(stamps))  # one bar per minute: updates replaced the forming bar
    client.cancelHistoricalData(bars)  # type: ignore[attr-defined]
    client.sleep(0.1)  # type: ignore[attr-defined]
    n = len(gw.live_sent)
    client.sleep(0.2)  # type: ignore[attr-defined]
    assert len(gw.live_sent) == n


# -- hdi_lab's IB live feed: keep-up-to-date 1-minute bars into the same tables ------------------------------------

AAPL = next(c for c in UNIVERSE if c.symbol == "AAPL")


@pytest.fixture
def ib_session(session: object) -> Iterator[tuple[object, FakeIbGateway]]:
    from hdi_lab.core.session import HdiSession

    gw = FakeIbGateway(today=pd.Timestamp("2024-02-01 15:00", tz="UTC"))
    gw.start()
    s = HdiSession(
        session.settings.replace(  # type: ignore[attr-defined]
            ib_host="127.0.0.1", ib_port=gw.port, ib_client_id=7, ib_library="ib_async", ib_timeout=5.0
        )
    )
    yield s, gw
    s.close()
    gw.stop()


def stored_bars(s: object) -> pd.DataFrame:
    import hdi_lab

    return hdi_lab.query(  # type: ignore[attr-defined]
        "ohlcv-1m", "AAPL:STK:SMART", "2024-02-01", "2024-02-02", dataset="IB", session=s
    )


def wait_for(handle: object, n: int) -> None:
    for _ in range(500):
        if handle.status().inserted >= n:  # type: ignore[attr-defined]
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} bars stored: {handle.status()}")  # type: ignore[attr-defined]


def expected_rows(t0: int, n: int) -> list[tuple[int, float, float, float, float, int]]:
    out = []
    for k in range(n):
        o, h, lo, c, v = bar(AAPL, "TRADES", t0 + 60 * k, 60)
        out.append(((t0 + 60 * k) * 10**9, float(o), float(h), float(lo), float(c), int(v)))
    return out


def test_ib_live_stores_closed_minute_bars_and_a_later_historical_ingest_changes_nothing(
    ib_session: tuple[object, FakeIbGateway],
) -> None:
    import hdi_lab
    from hdi_lab.core import ingestion
    from hdi_lab.providers.ib.provider import IbProvider
    from hdi_lab.schemas import IngestRequest, Schema, parse_time

    s, gw = ib_session
    t_first = int(gw.today.timestamp()) - 120  # the first subscription reaches back two minutes
    handle = hdi_lab.live("ib", schema="ohlcv-1m", symbols=["AAPL:STK:SMART"], session=s)  # type: ignore[attr-defined]
    wait_for(handle, 8)
    status = handle.stop()
    assert status.state == "stopped" and status.quarantined == 0, status
    frame = stored_bars(s).reset_index()
    got = [
        (int(r.ts_event.value), r.open, r.high, r.low, r.close, int(r.volume))
        for r in frame.itertuples()  # type: ignore[attr-defined]
    ]
    assert len(got) == status.inserted >= 8
    # each minute stored once, closed (the whole bar, not the forming one), as the fake's 1-minute bar
    assert got == expected_rows(t_first, len(got))
    # a historical IB ingest of the same minutes finds every bar stored, identical
    end = pd.Timestamp(got[-1][0] + 60 * 10**9, tz="UTC")
    with IbProvider(s.settings) as prov:  # type: ignore[attr-defined]
        report = ingestion.run(
            IngestRequest(
                provider="ib",
                schema=Schema.OHLCV_1M,
                symbols=("AAPL:STK:SMART",),
                start=parse_time(pd.Timestamp(t_first, unit="s", tz="UTC"), "start"),
                end=parse_time(end, "end"),
            ),
            s,  # type: ignore[arg-type]
            provider=prov,
        )
    assert (report.inserted, report.updated) == (0, 0), report
    assert report.duplicates >= len(got)


def test_ib_live_reconnects_and_stores_the_missed_minutes_once(ib_session: tuple[object, FakeIbGateway]) -> None:
    import hdi_lab

    s, gw = ib_session
    t_first = int(gw.today.timestamp()) - 120
    handle = hdi_lab.live(  # type: ignore[attr-defined]
        "ib", schema="ohlcv-1m", symbols="AAPL:STK:SMART", session=s, backoff=0.05
    )
    wait_for(handle, 5)
    gw.go_down()  # the connection drops; the gateway comes back on the same port
    time.sleep(0.3)  # its accepting thread has seen it go down
    gw.start()
    for _ in range(500):
        if handle.status().reconnects >= 1 and handle.status().state == "streaming":
            break
        time.sleep(0.02)
    before = handle.status().inserted
    wait_for(handle, before + 5)
    status = handle.stop()
    assert status.reconnects >= 1 and status.state == "stopped", status
    frame = stored_bars(s).reset_index()
    stamps = [int(t.value) for t in frame["ts_event"]]
    assert stamps == sorted(set(stamps))  # every minute once
    assert stamps[0] == t_first * 10**9 and len(stamps) == status.inserted
    assert [(t, o) for t, o, *_ in expected_rows(t_first, len(stamps))] == [
        (t, float(o)) for t, o in zip(stamps, frame["open"], strict=True)
    ]


def test_ib_live_refuses_what_it_cannot_stream(ib_session: tuple[object, FakeIbGateway]) -> None:
    import hdi_lab
    from hdi_lab.errors import ValidationError

    s, _ = ib_session
    with pytest.raises(ValidationError, match="not streamed by the ib live feed"):
        hdi_lab.live("ib", schema="ohlcv-1s", symbols="AAPL:STK:SMART", session=s)  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="not CONTFUT"):
        hdi_lab.live("ib", schema="ohlcv-1m", symbols="ES:CONTFUT:CME", session=s)  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="not an IB dataset"):
        hdi_lab.live("ib", dataset="GLBX.MDP3", schema="ohlcv-1m", symbols="AAPL:STK:SMART", session=s)  # type: ignore[attr-defined]
