"""The fake TWS gateway's live streams (issue 18, IB part): real-time 5-second bars and keepUpToDate 1-minute
bars, received by the real ``ib_async`` client. (hdi_lab's IB live feed is not built yet: these are its fake.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pandas as pd
import pytest
from fake_ib import UNIVERSE, FakeIbGateway, bar

pytestmark = pytest.mark.integration

ESH4 = next(c for c in UNIVERSE if c.local_symbol == "ESH4")


@pytest.fixture
def ib() -> Iterator[tuple[object, FakeIbGateway]]:
    ib_async = pytest.importorskip("ib_async")
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
