"""IB real-time 5-second bars (issue 18, IB part): ``reqRealTimeBars`` of the fake TWS gateway (tests/fake_ib.py)
received by the real ``ib_async`` and ``ib_insync`` clients, then stored as ``ohlcv-5s`` by hdi_lab's IB live feed
(:mod:`hdi_lab.providers.ib.live`) into a real PostgreSQL: as they arrive, the gap of a disconnect backfilled by
paced historical ``5 secs`` requests, equal to what a later historical ingest finds, rolling up to the minute bars."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fake_ib import UNIVERSE, FakeIbGateway, bar

import hdi_lab
from hdi_lab.core import ingestion
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.providers.ib.provider import IbProvider
from hdi_lab.schemas import IngestRequest, Schema, parse_time

pytestmark = pytest.mark.integration

AAPL = next(c for c in UNIVERSE if c.symbol == "AAPL")
SYMBOL = "AAPL:STK:SMART"
T0 = pd.Timestamp("2024-02-01 15:00", tz="UTC")  # the fake's server time: a Thursday afternoon
NS = 1_000_000_000


@pytest.fixture(params=["ib_async", "ib_insync"])
def lib(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the fake gateway's real-time bars, through the bare clients ---------------------------------------------------


@pytest.fixture
def client(lib: str) -> Iterator[tuple[Any, FakeIbGateway]]:
    import importlib

    module = importlib.import_module(lib)  # dev dependencies (hdi_lab[ib], [ib-insync]): missing, the test fails
    loop = asyncio.new_event_loop()  # the clients' synchronous API runs on the thread's event loop
    asyncio.set_event_loop(loop)
    gw = FakeIbGateway(today=T0)
    gw.start()
    ib = module.IB()
    ib.connect("127.0.0.1", gw.port, clientId=12, timeout=5)
    yield ib, gw
    ib.disconnect()
    loop.run_until_complete(asyncio.sleep(0.05))  # the transport finishes closing before the loop does
    gw.stop()
    asyncio.set_event_loop(None)
    loop.close()


def test_real_time_bars_are_the_historical_five_second_bars_and_roll_up_to_the_minute(
    client: tuple[Any, FakeIbGateway], lib: str
) -> None:
    ib, gw = client
    module = __import__(lib)
    contract = module.Stock(conId=AAPL.con_id, exchange="SMART")
    live = ib.reqRealTimeBars(contract, 5, "TRADES", False)
    for _ in range(300):
        ib.sleep(0.02)
        if len(live) >= 24:
            break
    ib.cancelRealTimeBars(live)
    got = list(live)[:24]
    assert [int(b.time.timestamp()) for b in got] == [int(T0.timestamp()) + 5 * k for k in range(24)]
    end = (T0 + pd.Timedelta(minutes=2)).to_pydatetime()
    hist = ib.reqHistoricalData(contract, end, "120 S", "5 secs", "TRADES", False, 2)
    assert [(int(b.date.timestamp()), b.open, b.high, b.low, b.close, b.volume) for b in hist] == [
        (int(b.time.timestamp()), b.open_, b.high, b.low, b.close, b.volume) for b in got
    ]
    minutes = ib.reqHistoricalData(contract, end, "120 S", "1 min", "TRADES", False, 2)
    assert len(minutes) == 2
    for m, five in zip(minutes, (got[:12], got[12:]), strict=True):
        rolled = (five[0].open_, max(b.high for b in five), min(b.low for b in five), five[-1].close)
        assert (m.open, m.high, m.low, m.close) == rolled
        assert m.volume == sum(b.volume for b in five)
    # IB counts real-time requests against the historical-data pacing rules: the fake does, and nothing broke them
    assert [q.bar_size for _, q in gw.sent] == ["realtime", "5 secs", "1 min"] and gw.violations == []
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, *rest: errors.append((req_id, code))
    bid = ib.reqRealTimeBars(contract, 5, "BID_ASK", False)  # IB streams TRADES, MIDPOINT, BID, ASK only
    ib.sleep(0.2)
    assert len(bid) == 0 and errors == [(bid.reqId, 321)]


# -- hdi_lab's IB live feed: ohlcv-5s into the same tables -----------------------------------------------------------


@pytest.fixture
def ib_session(session: HdiSession, lib: str) -> Iterator[tuple[HdiSession, FakeIbGateway]]:
    gw = FakeIbGateway(today=T0)
    gw.start()
    s = HdiSession(
        session.settings.replace(ib_host="127.0.0.1", ib_port=gw.port, ib_client_id=7, ib_library=lib, ib_timeout=5.0)
    )
    yield s, gw
    s.close()
    gw.stop()


def wait_for(handle: Any, n: int) -> None:
    for _ in range(1000):
        if handle.status().inserted >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} bars stored: {handle.status()}")


def stored(s: HdiSession, schema: str = "ohlcv-5s", **kw: Any) -> pd.DataFrame:
    frame = hdi_lab.query(schema, SYMBOL, "2024-02-01", "2024-02-02", dataset="IB", session=s, **kw)
    return frame.drop(columns=["symbol", "session"])


def expected(times_s: list[int], step: int = 5) -> pd.DataFrame:
    """The fake's bars at ``times_s`` as a query returns them."""
    rows = [(float(x) for x in bar(AAPL, "TRADES", t, step)) for t in times_s]
    o, h, lo, c, v = (list(col) for col in zip(*rows, strict=True))
    return pd.DataFrame(
        {
            "instrument_id": np.full(len(times_s), AAPL.con_id, dtype=np.int64),
            "publisher_id": np.full(len(times_s), 32000, dtype=np.int16),
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": np.array(v, dtype=np.int64),
        },
        index=pd.DatetimeIndex(pd.to_datetime(np.array(times_s, dtype=np.int64) * NS, utc=True), name="ts_event"),
    )


def ingest(s: HdiSession, prov: IbProvider, schema: Schema, start: pd.Timestamp, end: pd.Timestamp) -> Any:
    request = IngestRequest(
        provider="ib", schema=schema, symbols=(SYMBOL,), start=parse_time(start, "start"), end=parse_time(end, "end")
    )
    return ingestion.run(request, s, provider=prov)


def test_live_five_second_bars_are_stored_as_they_arrive_and_history_then_changes_nothing(
    ib_session: tuple[HdiSession, FakeIbGateway], tmp_path: Path
) -> None:
    s, gw = ib_session
    handle = hdi_lab.live("ib", schema="ohlcv-5s", symbols=SYMBOL, session=s)
    wait_for(handle, 40)
    status = handle.stop()
    assert status.state == "stopped" and status.quarantined == 0 and status.error is None, status
    got = stored(s)
    n = len(got)
    assert n == status.inserted >= 40
    t0 = int(T0.timestamp())
    # every real-time bar once, from the server's now on (no replay asked), as the fake's 5-second bars
    pd.testing.assert_frame_equal(got, expected([t0 + 5 * k for k in range(n)]), check_dtype=False)
    assert [q.bar_size for _, q in gw.sent] == ["realtime"] and gw.violations == []
    # the loader counted them for gaps (bar_counts, 15-minute buckets), as in every bar table
    blobs = hdi_lab.sql(
        f"SELECT counts FROM \"{s.schema}\".bar_counts WHERE bar_table = 'ohlcv_5s' AND instrument_id = %s",
        [AAPL.con_id],
        session=s,
    )["counts"]
    assert sum(int(np.frombuffer(bytes(b), dtype=">i4").sum()) for b in blobs) == n
    assert hdi_lab.sql(f'SELECT * FROM "{s.schema}".bar_counts_stale', session=s).empty
    # what loops over the bar schemas takes them too: gaps (from those counts), export
    gaps = hdi_lab.gaps("ohlcv-5s", SYMBOL, "2024-02-01", "2024-02-02", dataset="IB", session=s)
    assert gaps["present"].tolist() == [n] and gaps["expected"].tolist() == [6.5 * 720]  # 5 s bars of XNAS' day
    exported = hdi_lab.export("ohlcv-5s", SYMBOL, "2024-02-01", "2024-02-02", tmp_path / "x", dataset="IB", session=s)
    assert (exported.schema, exported.rows, exported.files) == (Schema.OHLCV_5S, n, 1)
    # a historical ingest of the same span (barSizeSetting="5 secs") finds every bar stored, identical
    last = T0 + pd.Timedelta(seconds=5 * n)
    minutes = n // 12
    whole = T0 + pd.Timedelta(minutes=minutes)
    with IbProvider(s.settings) as prov:  # one provider: one pacer for its requests
        report = ingest(s, prov, Schema.OHLCV_5S, T0, last)
        assert (report.inserted, report.updated, report.duplicates, report.quarantined) == (0, 0, n, 0), report
        ingest(s, prov, Schema.OHLCV_1M, T0, whole)
    assert [q.bar_size for _, q in gw.sent] == ["realtime", "head", "5 secs", "1 min"] and gw.violations == []
    # rolled up to minutes (interval="1m"), the whole minutes equal IB's 1-minute bars of the same minutes
    assert minutes >= 3
    rolled = stored(s, interval="1m").loc[: whole - pd.Timedelta(1, "ns")]
    pd.testing.assert_frame_equal(rolled, stored(s, "ohlcv-1m"), check_dtype=False)
    pd.testing.assert_frame_equal(rolled, expected([t0 + 60 * k for k in range(minutes)], 60), check_dtype=False)


def test_a_disconnect_mid_stream_is_backfilled_from_history_without_duplicates(
    ib_session: tuple[HdiSession, FakeIbGateway],
) -> None:
    s, gw = ib_session
    gw.hist_delay = 0.2  # real-time bars arrive while the history is asked: they wait for it
    replay = T0 - pd.Timedelta(minutes=1)  # start=: the minute before now comes from history too
    handle = hdi_lab.live("ib", schema="ohlcv-5s", symbols=SYMBOL, start=replay, session=s, backoff=0.05)
    wait_for(handle, 30)
    gw.go_down()  # the connection drops mid-stream
    time.sleep(0.3)  # its streaming threads have seen it go down
    sent = max(t for kind, _, t in gw.live_sent if kind == "realtime")
    gw.today = pd.Timestamp(sent + 5 + 60, unit="s", tz="UTC")  # a minute passes while the client is away
    gw.start()  # back on the same port
    for _ in range(500):
        st = handle.status()
        if st.reconnects >= 1 and st.state == "streaming":
            break
        time.sleep(0.02)
    resumed = int(gw.today.timestamp())
    for _ in range(500):  # real-time bars after the gap arrive
        if stored(s).index[-1].value >= (resumed + 50) * NS:
            break
        time.sleep(0.02)
    status = handle.stop()
    assert status.reconnects >= 1 and status.state == "stopped" and status.error is None, status
    got = stored(s)
    first = int(replay.timestamp())
    n = len(got)
    # every 5-second bar once, from the replay start through the gap to the bars streamed after it
    pd.testing.assert_frame_equal(got, expected([first + 5 * k for k in range(n)]), check_dtype=False)
    assert got.index[-1].value > resumed * NS and status.inserted == n and status.duplicates == 0, status
    # the replay and the gap came from paced historical 5-second requests ending at the server's now of each
    # connection; real-time bars were asked twice; no pacing rule was broken
    history = [q for _, q in gw.sent if q.bar_size == "5 secs"]
    assert [(q.end, q.duration) for q in history[:1]] == [(T0, "60 S")] and len(history) == 2
    gap = history[1]  # from the bar after the last one stored (received before the drop) to the server's now
    assert gap.end == gw.today and int(gap.end.timestamp()) - int(gap.duration.split()[0]) <= sent + 5
    assert sum(q.bar_size == "realtime" for _, q in gw.sent) == 2 and gw.violations == []


def test_a_real_time_subscription_ib_refuses_later_is_noted_in_the_session(
    ib_session: tuple[HdiSession, FakeIbGateway],
) -> None:
    s, gw = ib_session
    gw.inject = {1: (354, "Requested market data is not subscribed.")}  # the first paced request: the real-time one
    handle = hdi_lab.live("ib", schema="ohlcv-5s", symbols=SYMBOL, session=s)
    try:
        for _ in range(300):  # the feed looks at IB's errors about once a second
            if handle.status().notes:
                break
            time.sleep(0.02)
    finally:
        status = handle.stop()
    want = "IB error 354 for the ohlcv-5s bars of AAPL:STK:SMART: Requested market data is not subscribed."
    assert want in status.notes and status.inserted == 0, status


def test_live_five_second_bars_advance_features_through_the_magic(
    ib_session: tuple[HdiSession, FakeIbGateway], hdi_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import hdi_shell

    from hdi_lab import features
    from hdi_lab.core.live import LiveHandle

    s, gw = ib_session
    for name, value in {
        "HDI_IB_HOST": "127.0.0.1",
        "HDI_IB_PORT": str(gw.port),
        "HDI_IB_CLIENT_ID": "8",
        "HDI_IB_LIBRARY": s.settings.ib_library,
    }.items():
        monkeypatch.setenv(name, value)
    with hdi_shell() as ip:
        ip.run_cell(f"h = %hdi_live start --provider ib --schema ohlcv-5s --symbols {SYMBOL} --features momentum_v1")
        handle = ip.user_ns["h"]
        assert isinstance(handle, LiveHandle) and handle.request.schemas == (Schema.OHLCV_5S,)
        wait_for(handle, 30)
        ip.run_cell("final = %hdi_live stop")
        final = ip.user_ns["final"]
    assert final.state == "stopped" and final.error is None, final
    assert handle.features.errors == [] and handle.features.updates
    assert {u.interval for u in handle.features.updates} == {"5s"}
    # one row per stored 5-second bar, stamped at its close; a batch computation over the same bars stores exactly
    # what the live updates stored
    day = ("2024-02-01", "2024-02-02")
    live_rows = features.read("momentum_v1", SYMBOL, *day, interval="5s", dataset="IB", session=s)
    closes = stored(s).index + pd.Timedelta(seconds=5)
    assert len(live_rows) == final.inserted and (pd.DatetimeIndex(live_rows["event_timestamp"]) == closes).all()
    report = features.compute("momentum_v1", SYMBOL, "5s", dataset="IB", session=s)
    assert (report.rows, report.resumed, report.inserted, report.updated) == (final.inserted, 0, 0, 0), report
    assert features.read("momentum_v1", SYMBOL, *day, interval="5s", dataset="IB", session=s).equals(live_rows)


def test_five_second_bars_are_ib_only_and_refused_clearly_elsewhere(
    session: HdiSession, hdi_env: dict[str, str]
) -> None:
    import re

    from helpers import run_cli

    only = "schema=ohlcv-5s is not available from the {} provider: only the ib provider has it (--provider ib)"
    with pytest.raises(ValidationError, match="^" + re.escape(only.format("sample"))):
        hdi_lab.ingest(provider="sample", schema="ohlcv-5s", symbols="ESH4", start="2024-01-02", end="2024-01-03")
    with pytest.raises(ValidationError, match="from the databento provider: only the ib provider has it"):
        hdi_lab.live("databento", dataset="GLBX.MDP3", schema="trades,ohlcv-5s", symbols="ES.c.0", session=session)
    argv = ["ingest", "--provider", "databento", "--dataset", "GLBX.MDP3", "--schema", "ohlcv-5s", "--symbols", "ESH4"]
    code, _, err = run_cli([*argv, "--start", "2024-01-02", "--end", "2024-01-03"])
    assert code != 0 and err.strip().count("\n") == 0, err
    assert err.startswith("hdi: error: " + only.format("databento")) and "interval='5s'" in err, err
    with pytest.raises(ValidationError, match=r"IB\.BID_ASK has no real-time bars"):
        hdi_lab.live("ib", dataset="IB.BID_ASK", schema="ohlcv-5s", symbols=SYMBOL, session=session)
    with pytest.raises(ValidationError, match="not streamed by the ib live feed: use ohlcv-5s and/or ohlcv-1m"):
        hdi_lab.live("ib", schema="ohlcv-1s", symbols=SYMBOL, session=session)
