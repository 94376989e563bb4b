"""IB pacing planner, contract texts and price conversion (no network, no database)."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from hdi_lab.config import load_settings
from hdi_lab.errors import ConfigError, ValidationError
from hdi_lab.providers.ib.client import load_library
from hdi_lab.providers.ib.contracts import (
    IbInstrument,
    definition_record,
    fixed,
    front_segments,
    parse_contract,
)
from hdi_lab.providers.ib.pacing import (
    HistRequest,
    Pacer,
    Rules,
    VirtualClock,
    duration_string,
    schedule,
    split_range,
    violations,
)
from hdi_lab.providers.ib.provider import IbProvider, fixed_prices
from hdi_lab.schemas import IngestRequest, Schema, parse_time

pytestmark = pytest.mark.unit

T0 = pd.Timestamp("2024-01-02", tz="UTC")


def req(
    contract: str = "1",
    what: str = "TRADES",
    end: pd.Timestamp = T0,
    duration: str = "86400 S",
    exchange: str = "SMART",
) -> HistRequest:
    return HistRequest(contract, exchange, what, "1 min", end, duration)


@pytest.mark.parametrize("seed", range(6))
def test_random_long_schedules_never_break_a_rule(seed: int) -> None:
    """Property: whatever the mix (few or many contracts, BID_ASK, repeats), the schedule breaks nothing."""
    rng = random.Random(seed)
    n_contracts = rng.choice([1, 2, 5, 40])
    reqs = []
    for _ in range(400):
        day = rng.randrange(30 if rng.random() < 0.7 else 3)  # few distinct ends: many identical requests
        reqs.append(
            req(
                str(rng.randrange(n_contracts)),
                rng.choice(["TRADES", "MIDPOINT", "BID_ASK"]),
                T0 + pd.Timedelta(days=day),
                exchange=rng.choice(["SMART", "CME"]),
            )
        )
    rules = Rules(margin_s=rng.choice([0.0, 0.25]))
    starts = schedule(reqs, rules)
    assert starts == sorted(starts)
    assert violations(list(zip(starts, reqs, strict=True)), rules) == []
    # and the check itself catches a schedule that sends everything at once
    assert violations([(0.0, r) for r in reqs], rules)


def test_window_of_60_per_10_minutes_is_used_fully() -> None:
    starts = schedule([req(str(i)) for i in range(121)], Rules())
    # 50 messages in the first second, 10 in the next; as each expires 600 s later its slot frees up
    assert starts[:60] == [0.0] * 50 + [1.0] * 10
    assert starts[60:120] == [600.0] * 50 + [601.0] * 10 and starts[120] == 1200.0


def test_bid_ask_counts_double() -> None:
    starts = schedule([req(str(i), "BID_ASK") for i in range(31)], Rules())
    assert starts[29] == 0.0 and starts[30] == 600.0
    burst = schedule([req("1", "BID_ASK", T0 + pd.Timedelta(days=i)) for i in range(3)], Rules())
    assert burst == [0.0, 0.0, 2.0]  # 2 + 2 <= 5, a third would make 6 in 2 s


def test_identical_requests_15_s_apart_and_burst_of_5_per_2_s() -> None:
    assert schedule([req(), req()], Rules()) == [0.0, 15.0]
    same_contract = [req("7", end=T0 + pd.Timedelta(days=i)) for i in range(11)]
    assert schedule(same_contract, Rules()) == [0.0] * 5 + [2.0] * 5 + [4.0]
    other_exchange = schedule(
        [req("7", end=T0 + pd.Timedelta(days=i), exchange=ex) for i in range(5) for ex in ("SMART", "CME")], Rules()
    )
    assert other_exchange == [0.0] * 10


def test_messages_per_second() -> None:
    rules = Rules(window_max=10**6)
    starts = schedule([req(str(i)) for i in range(101)], rules)
    assert starts[49] == 0.0 and starts[50] == 1.0 and starts[100] == 2.0


def test_pacer_sleeps_on_its_clock_and_honours_a_penalty() -> None:
    clock = VirtualClock(100.0)
    pacer = Pacer(Rules(), clock)
    assert pacer.acquire(req()) == 100.0
    pacer.release()
    assert pacer.acquire(req()) == 115.0 and clock.now() == 115.0
    pacer.release()
    pacer.penalise(clock.now() + 60)
    assert pacer.acquire(req("2")) == 175.0
    pacer.release()
    assert pacer.open == 0


@pytest.mark.parametrize(
    ("schema", "days", "windows", "longest"),
    [
        (Schema.OHLCV_1S, 1, 48, "1800 S"),
        (Schema.OHLCV_5S, 1, 24, "3600 S"),
        (Schema.OHLCV_1M, 365, 365, "86400 S"),
        (Schema.OHLCV_1H, 365, 13, "30 D"),
        (Schema.OHLCV_1D, 800, 3, "365 D"),
    ],
)
def test_split_range_covers_the_range_in_ib_max_durations(
    schema: Schema, days: int, windows: int, longest: str
) -> None:
    start = pd.Timestamp("2023-01-01 00:00:30", tz="UTC")
    end = start + pd.Timedelta(days=days)
    parts = split_range(start, end, schema)
    assert len(parts) == windows and parts[0][0] == start and parts[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    assert duration_string((parts[0][1] - parts[0][0]).total_seconds(), schema) == longest


def test_parse_contract_forms_and_errors() -> None:
    es = parse_contract(" ES:FUT:CME:USD:202403 ")
    assert (es.symbol, es.sec_type, es.exchange, es.currency, es.expiry, es.text) == (
        "ES",
        "FUT",
        "CME",
        "USD",
        "202403",
        "ES:FUT:CME:USD:202403",
    )
    assert parse_contract("aapl:stk").exchange == "SMART" and parse_contract("AAPL:STK").currency == "USD"
    assert parse_contract("EUR:CASH::USD").exchange == "IDEALPRO"
    cont = parse_contract("ES:CONTFUT:CME")
    assert cont.continuous and cont.stype == "continuous"
    lib = load_library("ib_async")
    chain = cont.ib_contract(lib)
    assert (chain.secType, chain.includeExpired, chain.lastTradeDateOrContractMonth) == ("FUT", True, "")
    for bad, match in [
        ("ES", "SYMBOL:SECTYPE"),
        ("ES:OPT:CME", "not supported"),
        ("ES:FUT:CME", "needs an expiry"),
        ("ES:CONTFUT", "needs an exchange"),
        ("EUR:CASH:IDEALPRO", "quote currency"),
        ("AAPL:STK:SMART:USD:2024", "only for FUT"),
        ("ES:FUT:CME:USD:2024-03", "YYYYMM"),
    ]:
        with pytest.raises(ValidationError, match=match):
            parse_contract(bad)


def test_fixed_point_prices_round_on_the_decimal_text() -> None:
    assert fixed(4712.25) == 4_712_250_000_000
    assert fixed(1.1) == 1_100_000_000 and fixed(0.1 + 0.2) == 300_000_000  # 0.30000000000000004
    assert fixed(-2.5e-10) == -0 and fixed(1.00005) == 1_000_050_000 and fixed("7.0000000005") == 7_000_000_001
    rng = np.random.default_rng(3)
    texts = [f"{v:.{d}f}" for v, d in zip(rng.uniform(0, 999_999, 5000), rng.integers(0, 7, 5000), strict=True)]
    want = np.array([int(Decimal(t) * 10**9) for t in texts], dtype=np.int64)
    np.testing.assert_array_equal(fixed_prices(np.array([float(t) for t in texts])), want)
    big = np.array([12_345_678.125, 98_765_432.5])
    np.testing.assert_array_equal(fixed_prices(big), [12_345_678_125_000_000, 98_765_432_500_000_000])


def _inst(con_id: int, last: str) -> IbInstrument:
    return IbInstrument(con_id, "ES", "FUT", "CME", "", "USD", last, "50", f"ES{con_id}", "ES", 0.25)


def test_front_segments_roll_the_day_after_expiry() -> None:
    chain = [_inst(3, "20240621"), _inst(1, "20231215"), _inst(2, "20240315")]
    segs = front_segments(chain, dt.date(2023, 12, 1), dt.date(2024, 4, 1))
    assert [(a, b, i.con_id) for a, b, i in segs] == [
        (dt.date(2023, 12, 1), dt.date(2023, 12, 16), 1),
        (dt.date(2023, 12, 16), dt.date(2024, 3, 16), 2),
        (dt.date(2024, 3, 16), dt.date(2024, 4, 1), 3),
    ]
    assert front_segments(chain, dt.date(2024, 7, 1), dt.date(2024, 8, 1)) == []


def test_definition_record_carries_the_ib_identity() -> None:
    inst = IbInstrument(12087792, "EUR", "CASH", "IDEALPRO", "", "USD", "", "", "EUR.USD", "EUR.USD", 0.00005)
    rec = definition_record(inst, publisher_id=32001, ts_ns=T0.value)[0]
    assert (rec["publisher_id"], rec["instrument_id"], rec["ts_recv"]) == (32001, 12087792, T0.value)
    assert (rec["raw_symbol"], rec["security_type"], rec["exchange"], rec["currency"], rec["instrument_class"]) == (
        b"EUR.USD",
        b"CASH",
        b"IDEAL",
        b"USD",
        b"X",
    )
    assert rec["min_price_increment"] == 50_000 and inst.text == "EUR:CASH:IDEALPRO:USD"


def test_plan_is_offline_interleaved_and_stable() -> None:
    p = IbProvider(load_settings({}, environ={}))
    request = IngestRequest(
        provider="ib",
        schema=Schema.OHLCV_1H,
        dataset="ib.bid_ask",
        symbols=("AAPL:STK", "ES:CONTFUT:CME"),
        start=parse_time("2024-01-01", "start"),
        end=parse_time("2024-03-01", "end"),
    )
    chunks = p.plan(request)
    assert [c.schema for c in chunks[:2]] == [Schema.DEFINITION] * 2 and all(c.companion for c in chunks[:2])
    bars = chunks[2:]
    assert [c.symbols[0] for c in bars] == ["AAPL:STK", "ES:CONTFUT:CME"] * 2  # two 30-day windows
    assert {c.dataset for c in chunks} == {"IB.BID_ASK"} and bars[1].stype_in == "continuous"
    assert [c.key for c in p.plan(request)] == [c.key for c in chunks]
    est = p.estimate(bars[0])
    weekdays = int(np.busday_count("2024-01-01", "2024-01-31"))
    assert est.records == weekdays * 24 and est.start_s == 0.0 and est.cost_usd == 0.0
    for bad, match in [
        ({"schema": Schema.TRADES}, "not available from the ib provider"),
        ({"dataset": "GLBX.MDP3"}, "not an IB dataset"),
        ({"symbols": ()}, "symbols are required"),
    ]:
        with pytest.raises(ValidationError, match=match):
            p.plan(IngestRequest(**{**request.__dict__, **bad}))


def test_library_choice() -> None:
    assert load_library("auto").__name__ == "ib_async"
    assert load_library("IB_INSYNC").__name__ == "ib_insync"
    with pytest.raises(ConfigError, match="ib_library='ibapi' is not valid"):
        load_library("ibapi")
    assert load_settings({}, environ={"HDI_IB_LIBRARY": "ib_insync"}).ib_library == "ib_insync"
