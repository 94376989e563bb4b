"""Continuous futures (hdi_lab.continuous / rolls / query(adjust=)) against an independent computation.

The data is real DBN written with hdi_lab.dbn.writer and ingested through the file provider into PostgreSQL:
four ES quarterly contracts (H4, M4, U4, Z4) of 2024 with daily bars on every CME session, volumes that
cross (with a one-session flicker before the lasting cross) and open interest (statistics, stat_type 9) that
crosses at another session (then flickers back). The expected series, roll table and adjustments are
computed here from the raw contracts' bars and statistics read with plain ``hdi_lab.query``, session by
session, with the exchange calendar's sessions.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import daily_bars, futures_dbn, futures_definitions

import hdi_lab
from hdi_lab import calendars
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import UNDEF_PRICE, empty_records
from hdi_lab.errors import ValidationError

pytestmark = pytest.mark.integration

DATASET = "GLBX.MDP3"
#: (symbol, instrument_id, expiration UTC)
CONTRACTS = (
    ("ESH4", 910001, "2024-03-15 13:30"),
    ("ESM4", 910002, "2024-06-21 13:30"),
    ("ESU4", 910003, "2024-09-20 13:30"),
    ("ESZ4", 910004, "2024-12-20 14:30"),
)
FIRST, LAST = "2024-01-02", "2024-12-31"  # sessions with bars
CROSS, FLICKER = 5, 9  # volume: the next contract leads from CROSS sessions before expiry, and once at FLICKER
NS = 1_000_000_000


def _sessions() -> pd.DataFrame:
    return calendars.sessions("CMES", FIRST, LAST)


def _exp(k: int) -> pd.Timestamp:
    return pd.Timestamp(CONTRACTS[k][2], tz="UTC")


def _left(k: int, day: dt.date, labels: list[dt.date]) -> int:
    """Sessions from ``day`` to contract k's expiration session (0 on it)."""
    return labels.index(_exp(k).date()) - labels.index(day)


def _front(day: dt.date) -> int:
    return next(k for k in range(len(CONTRACTS)) if day <= _exp(k).date())


def _volume(k: int, day: dt.date, labels: list[dt.date]) -> int:
    f = _front(day)
    if k == f:
        n = _left(k, day, labels)
        return 300_000 if n == FLICKER else (1_000_000 if n > CROSS else 200_000)
    return 500_000 if k == f + 1 else 20_000 + k


def _oi(k: int, day: dt.date, labels: list[dt.date]) -> int:
    f = _front(day)
    if k == f:
        n = _left(k, day, labels)
        return {4: 1_000_000, 3: 1_000_000, 2: 3_000_000}.get(n, 2_000_000 if n > 4 else 100_000)
    return 1_500_000 if k == f + 1 else 10_000 + k


def _price(k: int, i: int) -> float:
    """A tick-rounded close: a common path plus a contract premium that varies by session."""
    base = 4800 + 60 * np.sin(i / 9) + 0.4 * i
    return round((base + 11 * k + ((i * 7 + k * 3) % 5) * 0.75) * 4) / 4


@pytest.fixture
def cycle(session: HdiSession, tmp_path: Path) -> HdiSession:
    """The four contracts' definitions, daily bars and open interest, ingested through the file provider."""
    labels = [d.date() for d in _sessions()["session"]]
    defs = futures_definitions(CONTRACTS, "ES")
    bars, stats = [], []
    for i, day in enumerate(labels):
        t = pd.Timestamp(day, tz="UTC").value  # Databento's daily bars: 00:00 UTC, inside the CME session
        for k, (_, iid, _) in enumerate(CONTRACTS):
            if day > _exp(k).date():
                continue
            c = _price(k, i)
            bars.append((t, iid, c - 1.5, c + 3.0, c - 4.25, c, _volume(k, day, labels)))
            stats.append((t + 11 * 3600 * NS, iid, _oi(k, day, labels)))
    rec = daily_bars(bars)
    st = empty_records("statistics", len(stats))
    st["publisher_id"], st["stat_type"], st["update_action"], st["price"] = 1, 9, 1, UNDEF_PRICE
    st["ts_event"] = [s[0] for s in stats]
    st["ts_recv"] = st["ts_event"] + 1_000_000
    st["instrument_id"] = [s[1] for s in stats]
    st["quantity"] = [s[2] for s in stats]
    for name, schema, records in (("defs", "definition", defs), ("bars", "ohlcv-1d", rec), ("oi", "statistics", st)):
        report = hdi_lab.ingest(
            provider="file",
            path=futures_dbn(tmp_path, name, schema, records, CONTRACTS),
            session=session,
        )
        assert report.quarantined == 0 and report.inserted == len(records)
    return session


# --- the independent computation --------------------------------------------------------------------------


def _raw(session: HdiSession, start: str, end: str) -> dict[int, pd.DataFrame]:
    """Every contract's bars, read with plain hdi_lab.query."""
    out = {}
    for sym, iid, _ in CONTRACTS:
        frame = hdi_lab.query("ohlcv-1d", sym, start, end, dataset=DATASET, session=session)
        assert set(frame["instrument_id"]) <= {iid}
        out[iid] = frame
    return out


def _expected(
    session: HdiSession, start: str, end: str, *, roll: str = "calendar", rank: int = 0, offset: int = 0
) -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """(bars with symbol/instrument_id, rolls) computed session by session from the raw contracts."""
    lo, hi = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    cal = calendars.sessions("CMES", lo.date() - dt.timedelta(days=30), hi.date() + dt.timedelta(days=60))
    closes = [c.value for c in cal["close"]]
    labels = [d.date() for d in cal["session"]]
    raw = _raw(session, "2023-12-01", "2025-01-01")
    stats = {
        iid: hdi_lab.query("statistics", sym, "2023-12-01", "2025-01-01", dataset=DATASET, session=session)
        for sym, iid, _ in CONTRACTS
    }
    ids = [iid for _, iid, _ in CONTRACTS]
    syms = {iid: sym for sym, iid, _ in CONTRACTS}
    # the roll session of each contract: `offset` sessions before the session after its last full session
    last_full = {iid: max(j for j, c in enumerate(closes) if c <= _exp(k).value) for k, iid in enumerate(ids)}
    activation = {iid: (_exp(k) - pd.Timedelta(days=400)).value for k, iid in enumerate(ids)}

    def window(j: int) -> tuple[int, int]:
        return closes[j - 1], closes[j]

    def score(iid: int, j: int) -> float:
        if roll == "volume":
            a, b = window(j - 1)
            f = raw[iid]
            ts = f.index.asi8
            return float(f["volume"][(ts >= a) & (ts < b)].sum())
        s = stats[iid]
        known = s[pd.DatetimeIndex(s["ts_recv"]).asi8 < closes[j - 1]]
        return float(known["quantity"].iloc[-1]) if len(known) else 0.0

    held_before = -1
    rows, chosen = [], []
    for j in range(1, len(closes)):
        a, b = window(j)
        if b <= lo.value or a >= hi.value:
            continue
        ok = [
            n
            for n, iid in enumerate(ids)
            if j < last_full[iid] + 1 - offset and activation[iid] < closes[j] and n >= held_before
        ]
        if not ok:
            continue
        if roll == "calendar":
            front = ok[0]
        else:
            best = max(score(ids[n], j) for n in ok)
            front = next(n for n in ok if score(ids[n], j) == best)
        held_before = front
        after = [n for n in ok if n >= front]
        if rank >= len(after):
            continue
        iid = ids[after[rank]]
        chosen.append((j, iid))
        f = raw[iid]
        ts = f.index.asi8
        part = f[(ts >= max(a, lo.value)) & (ts < min(b, hi.value))].copy()
        part["symbol"] = syms[iid]
        rows.append(part)
    bars = pd.concat(rows)
    rolls = []
    for (_, prev), (j, iid) in itertools.pairwise(chosen):
        if iid == prev:
            continue
        at = closes[j - 1]
        p_from = raw[prev]["close"][raw[prev].index.asi8 < at].iloc[-1]
        p_to = raw[iid]["close"][raw[iid].index.asi8 < at].iloc[-1]
        rolls.append(
            dict(
                session=pd.Timestamp(labels[j]),
                from_instrument=prev,
                to_instrument=iid,
                from_price=p_from,
                to_price=p_to,
                difference=p_to - p_from,
                ratio=p_to / p_from,
                at=at,
            )
        )
    return bars, rolls


def _adjusted(bars: pd.DataFrame, rolls: list[dict[str, object]], how: str) -> pd.DataFrame:
    out = bars.copy()
    ts = out.index.asi8
    for r in rolls:  # each roll moves every earlier bar by its own gap (backward from the last contract)
        before = ts < int(r["at"])  # type: ignore[call-overload]
        for c in ("open", "high", "low", "close"):
            if how == "difference":
                out.loc[before, c] = out.loc[before, c] + float(r["difference"])  # type: ignore[arg-type]
            else:
                out.loc[before, c] = out.loc[before, c] * float(r["ratio"])  # type: ignore[arg-type]
    return out


COLUMNS = ["symbol", "instrument_id", "open", "high", "low", "close", "volume"]


def _compare(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got.index.equals(want.index)
    assert got["symbol"].tolist() == want["symbol"].tolist()
    assert got["instrument_id"].tolist() == want["instrument_id"].tolist()
    np.testing.assert_array_equal(got["volume"].to_numpy(), want["volume"].to_numpy())  # never adjusted
    for c in ("open", "high", "low", "close"):
        np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=1e-12, atol=1e-9)


def _compare_rolls(table: pd.DataFrame, rolls: list[dict[str, object]]) -> None:
    assert table["session"].tolist() == [r["session"] for r in rolls]
    assert table["from_instrument"].tolist() == [r["from_instrument"] for r in rolls]
    assert table["to_instrument"].tolist() == [r["to_instrument"] for r in rolls]
    for c in ("from_price", "to_price", "difference", "ratio"):
        np.testing.assert_allclose(table[c].to_numpy(), [float(r[c]) for r in rolls], rtol=1e-12)  # type: ignore[arg-type]
    assert table["ts_roll"].tolist() == [pd.Timestamp(int(r["at"]), tz="UTC") for r in rolls]  # type: ignore[call-overload]


# --- every rule x adjustment ------------------------------------------------------------------------------


@pytest.mark.parametrize("roll", ["calendar", "volume", "open_interest"])
@pytest.mark.parametrize("adjust", ["none", "difference", "ratio"])
def test_every_rule_and_adjustment_equals_the_independent_computation(
    cycle: HdiSession, roll: str, adjust: str
) -> None:
    start, end = "2024-01-02", "2024-12-20"
    bars, rolls = _expected(cycle, start, end, roll=roll)
    assert len(rolls) == 3  # H4 -> M4 -> U4 -> Z4
    got = hdi_lab.continuous("ES", "ohlcv-1d", start, end, roll=roll, adjust=adjust, session=cycle)
    want = _adjusted(bars, rolls, adjust) if adjust != "none" else bars
    _compare(got, want)
    # the last segment is the raw contract's prices
    last = got.index >= pd.Timestamp(int(rolls[-1]["at"]), tz="UTC")  # type: ignore[call-overload]
    pd.testing.assert_frame_equal(got.loc[last, COLUMNS], bars.loc[last, COLUMNS], check_dtype=False)
    # OHLC stay consistent after adjustment
    assert (got["low"] <= got[["open", "close"]].min(axis=1)).all()
    assert (got["high"] >= got[["open", "close"]].max(axis=1)).all()
    table = hdi_lab.rolls("ES", "ohlcv-1d", start, end, roll=roll, adjust=adjust, session=cycle)
    _compare_rolls(table, rolls)
    pd.testing.assert_frame_equal(hdi_lab.core.continuous.roll_frame(got.attrs["rolls"]), table)
    assert got.attrs["continuous"]["roll"] == roll and got.attrs["continuous"]["calendar"] == "CMES"


def test_roll_days_of_each_rule(cycle: HdiSession) -> None:
    """The designed crossings: calendar on the expiration session (the session after the last full one),
    volume the session after the flicker (and never back), open interest after its cross (not back either)."""

    def days(roll: str, offset: int = 0) -> list[str]:
        table = hdi_lab.rolls("ES", "ohlcv-1d", "2024-01-02", "2024-07-01", roll=roll, offset=offset, session=cycle)
        return [str(d.date()) for d in table["session"]]

    labels = [d.date() for d in _sessions()["session"]]
    expiry = labels.index(dt.date(2024, 3, 15))
    assert days("calendar") == ["2024-03-15", "2024-06-21"]
    assert days("calendar", offset=3) == [str(labels[expiry - 3]), "2024-06-18"]
    # volume: the next contract led once, FLICKER sessions before expiry: the roll is on the session after
    assert days("volume")[0] == str(labels[expiry - FLICKER + 1])
    # open interest: crossed 4 sessions before expiry (published that day, so known at its close)
    assert days("open_interest")[0] == str(labels[expiry - 4 + 1])


def test_rank_one_is_the_next_contract(cycle: HdiSession) -> None:
    bars, rolls = _expected(cycle, "2024-01-02", "2024-09-01", rank=1)
    got = hdi_lab.continuous("ES.c.1", "ohlcv-1d", "2024-01-02", "2024-09-01", adjust="difference", session=cycle)
    _compare(got, _adjusted(bars, rolls, "difference"))
    assert got["symbol"].iloc[0] == "ESM4" and got["symbol"].iloc[-1] == "ESZ4"


def test_continuous_symbols_pick_the_rule_and_query_adjusts(cycle: HdiSession) -> None:
    for sym, roll in (("ES.c.0", "calendar"), ("ES.v.0", "volume"), ("ES.n.0", "open_interest")):
        want = hdi_lab.continuous(
            "ES", "ohlcv-1d", "2024-02-01", "2024-04-01", roll=roll, adjust="ratio", session=cycle
        )
        got = hdi_lab.query("ohlcv-1d", sym, "2024-02-01", "2024-04-01", adjust="ratio", session=cycle)
        assert set(got["symbol"]) == {sym}  # query keeps the requested symbol; the contract is in instrument_id
        pd.testing.assert_frame_equal(got.drop(columns="symbol"), want.drop(columns="symbol"))
        assert got.attrs["rolls"] == {sym: want.attrs["rolls"]}
    fixed = hdi_lab.query(
        "ohlcv-1d", "ES.c.0", "2024-02-01", "2024-04-01", adjust="difference", price_type="fixed", session=cycle
    )
    floats = hdi_lab.query("ohlcv-1d", "ES.c.0", "2024-02-01", "2024-04-01", adjust="difference", session=cycle)
    np.testing.assert_array_equal(fixed["close"].to_numpy() / 1e9, floats["close"].to_numpy())
    cols = hdi_lab.query(
        "ohlcv-1d", "ES.c.0", "2024-02-01", "2024-04-01", adjust="none", columns=["close"], session=cycle
    )
    assert list(cols.columns) == ["close"]
    for how in ("none", "difference"):  # the columns read alone are the full series' columns
        full = hdi_lab.query("ohlcv-1d", "ES.c.0", "2024-02-01", "2024-04-01", adjust=how, session=cycle)
        some = hdi_lab.query(
            "ohlcv-1d", "ES.c.0", "2024-02-01", "2024-04-01", adjust=how, columns=["close", "session"], session=cycle
        )
        pd.testing.assert_frame_equal(some, full[["close", "session"]])
    with pytest.raises(ValidationError, match=r"unknown column\(s\) \['nope'\] for ohlcv-1d"):
        hdi_lab.query("ohlcv-1d", "ES.c.0", "2024-02-01", "2024-04-01", adjust="none", columns=["nope"], session=cycle)


def test_sample_data_h4_to_m4(session: HdiSession) -> None:
    """The sample provider's ES contracts (hourly bars): the calendar roll on ESH4's expiration session, the
    gap from both contracts' last hourly closes before it, ratio-adjusted history."""
    for schema in ("definition", "ohlcv-1h"):
        hdi_lab.ingest(provider="sample", schema=schema, symbols="ES.FUT", stype_in="parent", start="2024-03-01",
                       end="2024-03-22", session=session)  # fmt: skip
    got = hdi_lab.continuous("ES.c.0", "ohlcv-1h", "2024-03-04", "2024-03-21", adjust="ratio", session=session)
    h4 = hdi_lab.query("ohlcv-1h", "ESH4", "2024-03-04", "2024-03-21", session=session)
    m4 = hdi_lab.query("ohlcv-1h", "ESM4", "2024-03-04", "2024-03-21", session=session)
    cal = calendars.sessions("CMES", "2024-03-14", "2024-03-15")
    at = cal["close"].iloc[0]  # ESH4's last full session closes 2024-03-14; ESM4 from then on
    assert (got.index < at).sum() and set(got.loc[got.index < at, "symbol"]) == {"ESH4"}
    assert set(got.loc[got.index >= at, "symbol"]) == {"ESM4"}
    ratio = m4["close"][m4.index < at].iloc[-1] / h4["close"][h4.index < at].iloc[-1]
    before = h4[h4.index < at]
    np.testing.assert_allclose(
        got.loc[got.index < at, "close"].to_numpy(), before["close"].to_numpy() * ratio, rtol=1e-12
    )
    after = m4[m4.index >= at]
    np.testing.assert_array_equal(got.loc[got.index >= at, "close"].to_numpy(), after["close"].to_numpy())
    table = got.attrs["rolls"]
    assert [(r.session, r.from_symbol, r.to_symbol) for r in table] == [(dt.date(2024, 3, 15), "ESH4", "ESM4")]


# --- no look-ahead, never back ----------------------------------------------------------------------------


@pytest.mark.parametrize("roll", ["calendar", "volume", "open_interest"])
def test_appending_later_sessions_never_changes_earlier_decisions(cycle: HdiSession, roll: str) -> None:
    start = "2024-02-01"
    full = hdi_lab.continuous("ES", "ohlcv-1d", start, "2024-12-20", roll=roll, session=cycle)
    full_rolls = hdi_lab.rolls("ES", "ohlcv-1d", start, "2024-12-20", roll=roll, session=cycle)
    cuts = [
        "2024-03-06",
        "2024-03-08",
        "2024-03-11",
        "2024-03-13",
        "2024-03-15",
        "2024-05-01",
        "2024-06-14",
        "2024-09-16",
    ]
    for cut in cuts:
        part = hdi_lab.continuous("ES", "ohlcv-1d", start, cut, roll=roll, session=cycle)
        head = full[full.index < pd.Timestamp(cut, tz="UTC")]
        assert part.index.equals(head.index), cut
        assert part["instrument_id"].tolist() == head["instrument_id"].tolist(), (roll, cut)
        early = full_rolls[full_rolls["ts_roll"] < pd.Timestamp(cut, tz="UTC")].reset_index(drop=True)
        pd.testing.assert_frame_equal(hdi_lab.rolls("ES", "ohlcv-1d", start, cut, roll=roll, session=cycle), early)


@pytest.mark.parametrize("roll", ["volume", "open_interest"])
def test_never_rolls_back_to_an_earlier_expiry(cycle: HdiSession, roll: str) -> None:
    got = hdi_lab.continuous("ES", "ohlcv-1d", "2024-01-02", "2024-12-20", roll=roll, session=cycle)
    order = {iid: k for k, (_, iid, _) in enumerate(CONTRACTS)}
    held = [order[i] for i in got["instrument_id"]]
    assert held == sorted(held) and len(set(held)) == 4
    # the data says "back": after the volume flicker ESH4 leads again for FLICKER - CROSS - 1 sessions, and
    # ESH4's open interest leads again 2 sessions before expiry; the series stays on ESM4 all the same
    h4 = hdi_lab.query("ohlcv-1d", "ESH4", "2024-03-01", "2024-03-16", session=cycle)
    m4 = hdi_lab.query("ohlcv-1d", "ESM4", "2024-03-01", "2024-03-16", session=cycle)
    assert (h4["volume"] > m4["volume"].reindex(h4.index)).sum() > 0
    first_m4 = got.index[got["symbol"] == "ESM4"][0]
    assert (got.loc[first_m4 : pd.Timestamp("2024-06-01", tz="UTC"), "symbol"] == "ESM4").all()


# --- IB contracts (definitions with the last trade date as expiration) -------------------------------------


def test_ib_futures_roll_on_their_last_trade_date(session: HdiSession) -> None:
    from fake_ib import UNIVERSE, FakeIbGateway

    from hdi_lab.core import ingestion
    from hdi_lab.providers.ib.pacing import Rules, VirtualClock
    from hdi_lab.providers.ib.provider import IbProvider
    from hdi_lab.schemas import IngestRequest, Schema, parse_time

    clock = VirtualClock(1000.0)
    fake = FakeIbGateway(clock=clock)
    fake.start()
    settings = session.settings.replace(
        ib_host="127.0.0.1", ib_port=fake.port, ib_client_id=5, ib_library="ib_async", ib_timeout=5.0
    )
    prov = IbProvider(settings, clock=clock, rules=Rules(margin_s=0.5))
    try:
        # the front contracts (CONTFUT stores each while it is the front), then ESH4 whole: its bars before
        # the roll measure the gap
        for symbol in ("ES:CONTFUT:CME", "ES:FUT:CME:USD:202403"):
            req = IngestRequest(
                provider="ib",
                schema=Schema.OHLCV_1D,
                symbols=(symbol,),
                start=parse_time("2023-12-01", "start"),
                end=parse_time("2024-01-31", "end"),
            )
            ingestion.run(req, session, provider=prov)
    finally:
        prov.close()
        fake.stop()
    by_local = {c.local_symbol: c for c in UNIVERSE}
    z3, h4 = by_local["ESZ3"], by_local["ESH4"]
    got = hdi_lab.continuous(
        "ES", "ohlcv-1d", "2023-12-01", "2024-01-31", dataset="IB", adjust="difference", session=session
    )
    table = hdi_lab.rolls("ES", "ohlcv-1d", "2023-12-01", "2024-01-31", dataset="IB", session=session)
    # ESZ3's last trade date 2023-12-15 is stored as its expiration (00:00 UTC): its last full session is
    # 2023-12-14, so it rolls on 2023-12-15 (CME's session of that date opens 2023-12-14 23:00 UTC)
    assert [str(d.date()) for d in table["session"]] == ["2023-12-15"]
    assert table[["from_instrument", "to_instrument"]].values.tolist() == [[z3.con_id, h4.con_id]]
    at = table["ts_roll"].iloc[0]
    raw_z3 = hdi_lab.query("ohlcv-1d", "ESZ3", "2023-12-01", "2024-01-31", dataset="IB", session=session)
    raw_h4 = hdi_lab.query("ohlcv-1d", "ESH4", "2023-12-01", "2024-01-31", dataset="IB", session=session)
    gap = raw_h4["close"][raw_h4.index < at].iloc[-1] - raw_z3["close"][raw_z3.index < at].iloc[-1]
    assert table["difference"].iloc[0] == pytest.approx(gap)
    want = pd.concat([raw_z3[raw_z3.index < at].assign(close=lambda f: f["close"] + gap), raw_h4[raw_h4.index >= at]])
    np.testing.assert_allclose(got["close"].to_numpy(), want["close"].to_numpy(), rtol=1e-12)
    assert got["instrument_id"].tolist() == want["instrument_id"].tolist()


# --- clear errors -----------------------------------------------------------------------------------------


def test_clear_errors(cycle: HdiSession) -> None:
    args = ("ohlcv-1d", "2024-01-02", "2024-06-01")
    with pytest.raises(ValidationError, match=r"not a futures root: write ES, ES.FUT"):
        hdi_lab.continuous("ES.x.0", *args, session=cycle)
    with pytest.raises(ValidationError, match=r"unknown futures root 'NQ'.*ingest its definitions.*stored roots: ES"):
        hdi_lab.continuous("NQ", *args, session=cycle)
    with pytest.raises(ValidationError, match=r"no ES contract .*listed.*ESH4 \.\. ESZ4"):
        hdi_lab.continuous("ES", "ohlcv-1d", "2025-03-01", "2025-04-01", session=cycle)
    with pytest.raises(
        ValidationError, match=r"roll='weekly' is not valid: use one of calendar, volume, open_interest"
    ):
        hdi_lab.continuous("ES", *args, roll="weekly", session=cycle)
    with pytest.raises(ValidationError, match=r"adjust='log' is not valid: use one of none, difference, ratio"):
        hdi_lab.continuous("ES", *args, adjust="log", session=cycle)
    with pytest.raises(ValidationError, match=r"rank=4 is too high: at most 4 ES contract\(s\).*rank <= 3"):
        hdi_lab.continuous("ES", *args, rank=4, session=cycle)
    with pytest.raises(ValidationError, match=r"offset=-1 is not valid"):
        hdi_lab.continuous("ES", *args, offset=-1, session=cycle)
    with pytest.raises(ValidationError, match=r"rolls by volume .* roll='open_interest'"):
        hdi_lab.continuous("ES.v.0", *args, roll="open_interest", session=cycle)
    with pytest.raises(ValidationError, match=r"built from bars"):
        hdi_lab.continuous("ES", "trades", "2024-01-02", "2024-06-01", session=cycle)
    with pytest.raises(ValidationError, match=r"applies to continuous symbols .* not 'ESH4'"):
        hdi_lab.query("ohlcv-1d", "ESH4", "2024-01-02", "2024-06-01", adjust="ratio", session=cycle)
    with pytest.raises(ValidationError, match=r"adjust='ratio' gives float prices"):
        hdi_lab.query(
            "ohlcv-1d", "ES.c.0", "2024-01-02", "2024-06-01", adjust="ratio", price_type="fixed", session=cycle
        )


def test_open_interest_needs_the_statistics_schema(session: HdiSession) -> None:
    hdi_lab.ingest(provider="sample", schema="definition", symbols="ES.FUT", stype_in="parent", start="2024-03-01",
                   end="2024-03-05", session=session)  # fmt: skip
    with pytest.raises(ValidationError, match=r"no open interest is stored for ES .*ingest the statistics schema"):
        hdi_lab.continuous("ES.n.0", "ohlcv-1d", "2024-03-01", "2024-03-05", session=session)
    with pytest.raises(ValidationError, match=r"ESH4 has no ohlcv-1d bar before it; ingest that contract's bars"):
        hdi_lab.continuous("ES", "ohlcv-1d", "2024-03-01", "2024-03-20", adjust="ratio", session=session)
    assert hdi_lab.continuous("ES", "ohlcv-1d", "2024-03-01", "2024-03-20", session=session).empty  # no bars stored


# --- front ends -------------------------------------------------------------------------------------------


def test_hdi_query_magic_and_cli_take_adjust(
    cycle: HdiSession, hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import hdi_shell, run_cli

    want = hdi_lab.query("ohlcv-1d", "ES.c.0", "2024-03-01", "2024-04-01", adjust="ratio", session=cycle)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    with hdi_shell() as shell:
        got = shell.run_cell("%hdi_query ohlcv-1d ES.c.0 2024-03-01 2024-04-01 --adjust ratio").result
        pd.testing.assert_frame_equal(got, want)
        with pytest.raises(Exception, match="adjust"):  # IPython's UsageError: argparse's choices
            shell.run_cell("%hdi_query ohlcv-1d ES.c.0 2024-03-01 2024-04-01 --adjust log")
    code, out, err = run_cli(
        ["query", "ohlcv-1d", "--symbols", "ES.c.0", "--start", "2024-03-01", "--end", "2024-04-01",
         "--adjust", "difference", "--format", "csv"]
    )  # fmt: skip
    assert code == 0, err
    csv = pd.read_csv(io.StringIO(out), index_col=0)
    diff = hdi_lab.query("ohlcv-1d", "ES.c.0", "2024-03-01", "2024-04-01", adjust="difference", session=cycle)
    np.testing.assert_allclose(csv["close"].to_numpy(), diff["close"].to_numpy(), rtol=1e-12)
    assert csv["instrument_id"].tolist() == diff["instrument_id"].tolist()
    code, _, err = run_cli(
        ["query", "ohlcv-1d", "--symbols", "ESH4", "--start", "2024-03-01", "--end", "2024-04-01", "--adjust", "ratio"]
    )
    assert code != 0 and "applies to continuous symbols" in err


def test_a_bad_price_type_is_refused_with_and_without_adjust(cycle: HdiSession) -> None:
    with pytest.raises(ValidationError, match=r"price_type='cents' is not valid: use float or fixed"):
        hdi_lab.query("ohlcv-1d", "ESH4", "2024-02-01", "2024-02-05", price_type="cents", session=cycle)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"price_type='cents' is not valid: use float or fixed"):
        hdi_lab.continuous("ES", "ohlcv-1d", "2024-02-01", "2024-04-01", price_type="cents", session=cycle)  # type: ignore[arg-type]


def test_a_roll_without_a_close_cannot_be_adjusted(session: HdiSession, tmp_path: Path) -> None:
    """ESH4 has no bars: its roll to ESM4 has no gap, so adjusting refuses, the continuous read and the feature
    series alike, naming the contract; unadjusted, the roll is listed without its price."""
    from hdi_lab.features.continuous import read_series
    from hdi_lab.schemas import Adjust

    days = calendars.sessions("CMES", "2024-03-01", "2024-03-27")["session"]
    bars = [(pd.Timestamp(d, tz="UTC").value, 910002, 5000.0, 5003.0, 4996.0, 5001.0, 10) for d in days]
    for name, schema, records in (
        ("defs", "definition", futures_definitions(CONTRACTS[:2], "ES")),
        ("bars", "ohlcv-1d", daily_bars(bars)),  # ESM4's only
    ):
        path = futures_dbn(tmp_path, name, schema, records, CONTRACTS[:2])
        assert hdi_lab.ingest(provider="file", path=path, session=session).inserted == len(records)
    raw = hdi_lab.continuous("ES", "ohlcv-1d", "2024-03-01", "2024-03-28", session=session)
    (roll,) = raw.attrs["rolls"]
    assert (roll.from_symbol, roll.to_symbol, str(roll.session)) == ("ESH4", "ESM4", "2024-03-15")
    assert np.isnan(roll.from_price) and roll.to_price == 5001.0
    for how in ("difference", "ratio"):
        with pytest.raises(
            ValidationError, match=r"cannot adjust at the ESH4 -> ESM4 roll on 2024-03-15: ESH4 has no "
        ):
            hdi_lab.continuous("ES", "ohlcv-1d", "2024-03-01", "2024-03-28", adjust=how, session=session)
        with pytest.raises(ValidationError, match=r"cannot adjust ES.c.0 at the ESH4 -> ESM4 roll on 2024-03-15: ESH4"):
            read_series(session, "ES.c.0", "1d", pd.Timestamp("2024-03-28", tz="UTC"), None, ["close"], Adjust(how))
