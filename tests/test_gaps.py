"""Gaps against a real PostgreSQL: bars written as DBN files (hdi_lab.dbn.writer) and ingested through the file
provider, so the ingest log covers exactly each file's range and the data does not depend on the sample provider."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import hdi_shell, run_cli

import hdi_lab
from hdi_lab import calendars
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import empty_records, encode_dbn
from hdi_lab.errors import ValidationError

pytestmark = pytest.mark.integration

DATASET, SYMBOL, IID = "GLBX.MDP3", "ESH4", 4242
HOUR = pd.Timedelta(hours=1)


def _full(session: str) -> pd.DatetimeIndex:
    """Every minute of a regular CME session: from its open (the evening before) to the 16:00 Chicago halt."""
    day = calendars.sessions("CMES", session, session).iloc[0]
    return pd.date_range(day["open"], day["close"] - HOUR, freq="1min", inclusive="left")


def _ingest(
    session: HdiSession,
    tmp: Path,
    start: str,
    end: str,
    stamps: pd.DatetimeIndex,
    name: str,
    *,
    schema: str = "ohlcv-1m",
    dataset: str = DATASET,
    symbol: str = SYMBOL,
) -> None:
    """A DBN file of ``symbol``'s bars at ``stamps`` covering ``[start, end)``, ingested."""
    rec = empty_records(schema, len(stamps))
    rec["publisher_id"], rec["instrument_id"] = 1, IID
    rec["ts_event"] = stamps.as_unit("ns").asi8
    for col in ("open", "high", "low", "close"):
        rec[col] = 4_800 * 1_000_000_000
    rec["volume"] = 1
    lo, hi = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    path = tmp / f"{name}.{schema}.dbn.zst"
    path.write_bytes(
        encode_dbn(
            dataset=dataset,
            schema=schema,
            stype_in="raw_symbol",
            start=lo,
            end=hi,
            symbols=[symbol],
            mappings={symbol: [(dt.date(2023, 12, 1), dt.date(2024, 6, 1), IID)]},
            records=rec,
        )
    )
    report = hdi_lab.ingest(provider="file", path=path, session=session)
    assert report.inserted == len(stamps) and report.quarantined == 0


@pytest.fixture
def january(session: HdiSession, tmp_path: Path) -> HdiSession:
    """Sessions 2024-01-02..05 ingested (full, full less 80 illiquid minutes, empty, partial), 01-08 with its
    Sunday evening hour from two daily files, 01-09 on never ingested."""
    illiquid = _full("2024-01-03").delete(np.arange(100, 900, 10))  # 80 minutes without a trade
    week = _full("2024-01-02").append(illiquid).append(_full("2024-01-05")[:100])
    _ingest(session, tmp_path, "2024-01-01", "2024-01-06", week, "week1")
    monday = _full("2024-01-08")
    assert monday[0] == pd.Timestamp("2024-01-07 23:00", tz="UTC")  # Sunday 17:00 Chicago
    # as Databento's daily chunks: Sunday's (its last hour opens Monday's session), then Monday's
    _ingest(session, tmp_path, "2024-01-07", "2024-01-08", monday[:60], "sunday")
    _ingest(session, tmp_path, "2024-01-08", "2024-01-09", monday[60:], "monday")
    return session


def _as_tuples(frame: pd.DataFrame) -> list[tuple[str, str, int, int]]:
    return [(str(r.session.date()), r.reason, int(r.expected), int(r.present)) for r in frame.itertuples(index=False)]


def test_gaps_reasons_over_calendar_sessions(january: HdiSession) -> None:
    found = hdi_lab.gaps("ohlcv-1m", SYMBOL, "2024-01-02", "2024-01-12", session=january)
    assert list(found.columns) == ["symbol", "instrument_id", "session", "reason", "expected", "present"]
    assert set(found["symbol"]) == {SYMBOL} and set(found["instrument_id"]) == {IID}
    # 01-02, 01-03 (80 illiquid minutes are not a gap) and 01-08 (its Sunday hour counted) are complete;
    # the weekend is no session; 01-09 opens on 01-08 at 23:00 UTC, after the second file ends
    assert _as_tuples(found) == [
        ("2024-01-04", "empty", 1380, 0),
        ("2024-01-05", "partial", 1380, 100),
        ("2024-01-09", "not_ingested", 1380, 0),
        ("2024-01-10", "not_ingested", 1380, 0),
        ("2024-01-11", "not_ingested", 1380, 0),
    ]


def test_coverage_counts_every_session_and_the_threshold_is_a_parameter(january: HdiSession) -> None:
    from hdi_lab.core.gaps import coverage, gaps

    every = coverage(january, "ohlcv-1m", SYMBOL, "2024-01-02", "2024-01-09")
    assert [str(d.date()) for d in every["session"]] == [
        "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08",
    ]  # fmt: skip
    assert every["present"].tolist() == [1380, 1300, 0, 100, 1380]
    assert every["reason"].tolist() == [None, None, "empty", "partial", None]
    # stricter: 95% of the session's bars; off: only empty and not ingested sessions
    strict = gaps(january, "ohlcv-1m", SYMBOL, "2024-01-02", "2024-01-09", partial=0.95)
    assert strict["reason"].tolist() == ["partial", "empty", "partial"]
    assert gaps(january, "ohlcv-1m", SYMBOL, "2024-01-02", "2024-01-09", partial=0)["reason"].tolist() == ["empty"]
    with pytest.raises(ValidationError, match="partial"):
        gaps(january, "ohlcv-1m", SYMBOL, "2024-01-02", "2024-01-09", partial=2)


def test_a_cme_sunday_bar_belongs_to_monday(january: HdiSession) -> None:
    from hdi_lab.core.gaps import coverage

    every = coverage(january, "ohlcv-1m", SYMBOL, "2024-01-08", "2024-01-09")
    assert every["present"].tolist() == [1380]  # 60 of them on Sunday (UTC), all counted for Monday
    sunday = hdi_lab.query("ohlcv-1m", SYMBOL, "2024-01-07", "2024-01-08", session=january)
    assert len(sunday) == 60


def test_a_holiday_is_never_a_gap(session: HdiSession, tmp_path: Path) -> None:
    """Good Friday 2024-03-29: CME is closed, nothing is stored, and it is no gap."""
    bars = _full("2024-03-28").append(_full("2024-04-01"))
    _ingest(session, tmp_path, "2024-03-27", "2024-04-02", bars, "easter")
    assert hdi_lab.gaps("ohlcv-1m", SYMBOL, "2024-03-28", "2024-04-02", session=session).empty
    from hdi_lab.core.gaps import coverage

    sessions = coverage(session, "ohlcv-1m", SYMBOL, "2024-03-28", "2024-04-02")["session"]
    assert [str(d.date()) for d in sessions] == ["2024-03-28", "2024-04-01"]


def test_unknown_symbols_and_datasets(january: HdiSession) -> None:
    with pytest.raises(ValidationError, match="give dataset"):
        hdi_lab.gaps("ohlcv-1m", "NQH4", "2024-01-02", "2024-01-04", session=january)
    # with the dataset, a symbol never ingested misses every session
    found = hdi_lab.gaps("ohlcv-1m", "NQH4", "2024-01-02", "2024-01-04", dataset=DATASET, session=january)
    assert found["reason"].tolist() == ["not_ingested"] * 2 and found["instrument_id"].isna().all()
    # another schema: nothing ingested
    trades = hdi_lab.gaps("trades", SYMBOL, "2024-01-02", "2024-01-04", dataset=DATASET, session=january)
    assert trades["reason"].tolist() == ["not_ingested"] * 2 and trades["expected"].isna().all()


def test_hdi_gaps_cli(january: HdiSession, hdi_env: dict[str, str]) -> None:
    argv = ["gaps", "ohlcv-1m", "--symbols", SYMBOL, "--start", "2024-01-02", "--end", "2024-01-09"]
    code, out, err = run_cli([*argv, "--format", "csv"])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "symbol,instrument_id,session,reason,expected,present"
    assert lines[1:] == [f"{SYMBOL},{IID},2024-01-04,empty,1380,0", f"{SYMBOL},{IID},2024-01-05,partial,1380,100"]
    code, out, err = run_cli(argv)
    assert code == 0 and "partial" in out and "2 gaps" in out
    code, out, err = run_cli([*argv[:-1], "2024-01-04"])
    assert code == 0 and "no gaps" in out
    with pytest.raises(SystemExit) as exit_:
        run_cli([*argv, "--stype-in", "bogus"])
    assert exit_.value.code == 2


def test_hdi_gaps_magic(january: HdiSession, hdi_env: dict[str, str]) -> None:
    with hdi_shell() as shell:
        shell.run_cell(f"%hdi_gaps ohlcv-1m {SYMBOL} 2024-01-02 2024-01-09 -o g")
        found = shell.user_ns["g"]
        assert found["reason"].tolist() == ["empty", "partial"]
        shell.run_cell(f"%hdi_gaps ohlcv-1m {SYMBOL} 2024-01-02 2024-01-09 --partial 0.99 -o g")
        assert shell.user_ns["g"]["reason"].tolist() == ["partial", "empty", "partial"]


@pytest.mark.parametrize(("text", "ok"), [("0", True), ("0.25", True), ("1", True), ("1.5", False), ("x", False)])
def test_partial_option_takes_a_fraction(text: str, ok: bool) -> None:
    import argparse

    from hdi_lab.frontend import options

    if ok:
        assert options.fraction(text) == float(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=r"fraction|from 0 to 1"):
            options.fraction(text)


def test_partial_help_states_the_core_default() -> None:
    from hdi_lab.core.gaps import PARTIAL
    from hdi_lab.frontend import options

    assert f"default {PARTIAL}" in str(options.OPTIONS["partial"].help)


def test_coverage_heatmap_instrument_by_session_closed_days_blank(january: HdiSession) -> None:
    from hdi_lab.core.gaps import coverage
    from hdi_lab.frontend import charts

    frame = coverage(january, "ohlcv-1m", SYMBOL, "2024-01-02", "2024-01-09")
    values, reasons = charts.coverage_matrix(frame)
    assert list(values.index) == [f"{SYMBOL} · {IID}"]
    assert [str(d.date()) for d in values.columns] == [f"2024-01-0{d}" for d in range(2, 9)]
    row = values.iloc[0]
    assert row["2024-01-02"] == 1.0 and row["2024-01-03"] == pytest.approx(1300 / 1380)
    assert row["2024-01-04"] == 0.0 and row["2024-01-05"] == pytest.approx(100 / 1380)
    assert row[["2024-01-06", "2024-01-07"]].isna().all()  # the weekend: no session, blank
    assert reasons.iloc[0]["2024-01-04"] == "empty" and reasons.iloc[0]["2024-01-02"] == ""
    fig = charts.coverage_heatmap(frame, title="ESH4")
    heat = fig.data[0]
    assert heat.type == "heatmap" and list(heat.y) == [f"{SYMBOL} · {IID}"] and len(heat.x) == 7
    assert np.isnan(np.asarray(heat.z, dtype=float)[0, 4])


def test_coverage_widget_draws_the_heatmap_and_lists_the_gaps(january: HdiSession) -> None:
    from hdi_lab.frontend.widgets import Coverage

    panel = Coverage(january)
    panel.symbols.value = SYMBOL
    panel.start.value, panel.end.value = dt.date(2024, 1, 2), dt.date(2024, 1, 12)
    panel.load_button.click()
    assert panel.last_error is None
    assert panel.gaps is not None and panel.gaps["reason"].tolist() == ["empty", "partial", *["not_ingested"] * 3]
    assert panel.figure is not None and panel.figure.data[0].type == "heatmap"
    assert "5 gaps" in panel.message() and "not_ingested" in panel.table.value
    panel.partial.value = 0.0
    panel.load_button.click()  # the second load redraws the same figure
    assert panel.gaps is not None and "partial" not in panel.gaps["reason"].tolist()
    panel.symbols.value = ""
    panel.load_button.click()
    assert panel.last_error is not None and "symbols is required" in panel.message()


def test_ib_sessions_follow_each_contracts_exchange(session: HdiSession) -> None:
    """IB datasets have no calendar of their own: a stock on SMART trades the Nasdaq calendar (no session on
    MLK day), a CME future the CME one (halted at 12:00 Chicago that day)."""
    found = hdi_lab.gaps(
        "ohlcv-1m", "AAPL:STK:SMART,ES:CONTFUT:CME", "2024-01-12", "2024-01-17", dataset="IB", session=session
    )
    by_symbol = {
        sym: [(str(r.session.date()), int(r.expected)) for r in rows.itertuples()]
        for sym, rows in found.groupby("symbol")
    }
    assert by_symbol == {
        "AAPL:STK:SMART": [("2024-01-12", 390), ("2024-01-16", 390)],
        "ES:CONTFUT:CME": [("2024-01-12", 1380), ("2024-01-15", 1140), ("2024-01-16", 1380)],
    }
    assert set(found["reason"]) == {"not_ingested"}
    with pytest.raises(ValidationError, match="IB contract"):
        hdi_lab.gaps("ohlcv-1m", "AAPL", "2024-01-12", "2024-01-17", dataset="IB", session=session)


def test_tick_schemas_need_one_row_a_session(session: HdiSession, tmp_path: Path) -> None:
    """Trades have no expected count: a covered session with a trade is complete, one without is empty."""
    n = 5
    rec = empty_records("trades", n)
    rec["publisher_id"], rec["instrument_id"] = 1, IID
    rec["ts_event"] = pd.Timestamp("2024-01-03 15:00", tz="UTC").value + np.arange(n) * 1_000_000
    rec["ts_recv"] = rec["ts_event"] + 100
    rec["price"], rec["size"], rec["sequence"] = 4_800 * 1_000_000_000, 1, np.arange(n)
    rec["action"], rec["side"] = b"T", b"A"
    path = tmp_path / "trades.dbn.zst"
    lo, hi = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-05", tz="UTC")
    path.write_bytes(
        encode_dbn(
            dataset=DATASET,
            schema="trades",
            stype_in="raw_symbol",
            start=lo,
            end=hi,
            symbols=[SYMBOL],
            mappings={SYMBOL: [(lo.date(), hi.date(), IID)]},
            records=rec,
        )
    )
    assert hdi_lab.ingest(provider="file", path=path, session=session).inserted == n
    from hdi_lab.core.gaps import coverage

    every = coverage(session, "trades", SYMBOL, "2024-01-02", "2024-01-05")
    assert every["reason"].tolist() == ["empty", None, "empty"]
    assert every["present"].tolist() == [0, 1, 0] and every["expected"].isna().all()


def test_sessions_not_closed_yet_are_no_gaps(session: HdiSession) -> None:
    today = pd.Timestamp.now(tz="UTC").normalize()
    week = hdi_lab.gaps(
        "ohlcv-1m", "AAPL", today - pd.Timedelta(days=7), today + pd.Timedelta(days=7), dataset="XNAS.ITCH",
        session=session,
    )  # fmt: skip
    closes = calendars.sessions("XNAS", week["session"].min(), week["session"].max())["close"]
    assert len(week) >= 3 and (closes <= pd.Timestamp.now(tz="UTC")).all()
    assert week["session"].max() <= today.tz_localize(None)


def test_daily_and_hourly_bars_of_an_equity_session(session: HdiSession, tmp_path: Path) -> None:
    """Daily bars start at midnight UTC, before the 14:30 open: they count for the session of their date; an
    hourly bar starting 14:00 holds the open. MLK day (2024-01-15) is no Nasdaq session."""
    days = pd.DatetimeIndex(["2024-01-12", "2024-01-16"], tz="UTC")
    kw = {"dataset": "XNAS.ITCH", "symbol": "AAPL"}
    _ingest(session, tmp_path, "2024-01-12", "2024-01-19", days, "daily", schema="ohlcv-1d", **kw)
    hours = pd.date_range("2024-01-12 14:00", "2024-01-12 20:00", freq="1h", tz="UTC")  # 7 bars, 14:00..20:00
    _ingest(session, tmp_path, "2024-01-12", "2024-01-13", hours, "hourly", schema="ohlcv-1h", **kw)
    from hdi_lab.core.gaps import coverage

    daily = coverage(session, "ohlcv-1d", "AAPL", "2024-01-12", "2024-01-19")
    assert [(str(r.session.date()), r.reason, r.expected, r.present) for r in daily.itertuples()] == [
        ("2024-01-12", None, 1, 1),
        ("2024-01-16", None, 1, 1),
        ("2024-01-17", "empty", 1, 0),
        ("2024-01-18", "empty", 1, 0),
    ]
    hourly = coverage(session, "ohlcv-1h", "AAPL", "2024-01-12", "2024-01-13")
    assert (hourly["expected"].tolist(), hourly["present"].tolist(), hourly["reason"].tolist()) == ([7], [7], [None])
    with pytest.raises(ValidationError, match="definitions"):
        coverage(session, "definition", "AAPL", "2024-01-12", "2024-01-13")
