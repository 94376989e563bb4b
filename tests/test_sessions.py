"""Session-aligned bars and the ``session`` column (issue 16), against independent computations.

The reference is pandas on exchange_calendars' own schedule (``helpers.xc_sessions``: a ``merge_asof`` on the
sessions' closes), never hdi_lab's calendars module: a session label per 1-minute bar, buckets from the
session's open, then a plain ``groupby``. The sample data covers the March 2024 US DST change (CME sessions
open at 23:00 UTC before it, 22:00 after), MLK day 2024-01-15 (Nasdaq closed, CME closing at 12:00 Chicago)
and the 2024-07-03 early close (Nasdaq at 13:00 New York).
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES
from helpers import (
    SAMPLE_CALENDARS,
    drop_schema,
    hdi_shell,
    make_session,
    sample_sessions,
    xc_schedule,
    xc_sessions,
)

import hdi_lab
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import empty_records, encode_dbn
from hdi_lab.errors import ValidationError
from hdi_lab.frontend.cli import main

pytestmark = pytest.mark.integration

#: (first session, end, symbols) of the windows the sample data covers whole (UTC days ingested wider); no
#: sample future is listed in July 2024; in January ES.c.0 is ESH4: one instrument under two symbols
WINDOWS = (
    ("2024-01-08", "2024-01-20", "ES.c.0,AAPL,ESH4"),
    ("2024-03-07", "2024-03-14", "ESH4,AAPL"),
    ("2024-07-01", "2024-07-06", "AAPL"),
)
BARS = ("open", "high", "low", "close", "volume")


@pytest.fixture(scope="module")
def db(pg_url: str) -> Iterator[HdiSession]:
    """One schema for the module: ESH4 (CME) and AAPL (Nasdaq) 1-minute and daily sample bars."""
    schema = f"t_sessions_{uuid.uuid4().hex[:8]}"
    s = make_session(pg_url, schema)
    try:
        for lo, hi in (("2024-01-05", "2024-01-21"), ("2024-03-06", "2024-03-15")):
            for schema_ in ("ohlcv-1m", "ohlcv-1d"):
                hdi_lab.ingest(provider="sample", schema=schema_, symbols=["ESH4"], start=lo, end=hi, session=s)
        hdi_lab.ingest(  # the same bars again (nothing inserted), and the continuous symbology
            provider="sample", schema="ohlcv-1m", symbols=["ES.c.0"], stype_in="continuous", start="2024-01-05",
            end="2024-01-21", session=s,
        )  # fmt: skip
        for lo, hi in (("2024-01-05", "2024-01-21"), ("2024-03-06", "2024-03-15"), ("2024-06-28", "2024-07-08")):
            for schema_ in ("ohlcv-1m", "ohlcv-1d"):
                hdi_lab.ingest(provider="sample", schema=schema_, symbols=["AAPL"], start=lo, end=hi, session=s)
        yield s
    finally:
        s.close()
        drop_schema(pg_url, schema)


def minute_bars(db: HdiSession, symbols: str, first: str, end: str) -> pd.DataFrame:
    """The stored 1-minute bars of the UTC days around the sessions ``[first, end)``."""
    lo = pd.Timestamp(first) - pd.Timedelta(days=2)
    hi = pd.Timestamp(end) + pd.Timedelta(days=1)
    return hdi_lab.query("ohlcv-1m", symbols, lo, hi, price_type="fixed", session=db)


def reference(bars: pd.DataFrame, interval: str, first: str, end: str, symbols: list[str]) -> pd.DataFrame:
    """Session bars by pandas: each bar's session from exchange_calendars, buckets from the session's open."""
    frame = bars.reset_index()
    frame["sess"] = sample_sessions(bars, pd.Timedelta("1min"))
    frame = frame[(frame["sess"] >= pd.Timestamp(first)) & (frame["sess"] < pd.Timestamp(end))]
    opens = pd.concat(
        [xc_schedule(code).assign(publisher_id=pub) for pub, code in SAMPLE_CALENDARS.items()], ignore_index=True
    ).rename(columns={"session": "sess"})
    opens["publisher_id"] = opens["publisher_id"].astype(frame["publisher_id"].dtype)
    frame = frame.merge(opens[["sess", "publisher_id", "open"]].rename(columns={"open": "sopen"}), how="left")
    assert frame["sopen"].notna().all()
    step = pd.Timedelta(interval)
    frame["bucket"] = (
        frame["sopen"]
        if step >= pd.Timedelta("1D")
        else frame["sopen"] + ((frame["ts_event"] - frame["sopen"]) // step) * step
    )
    out = (
        frame.groupby(["symbol", "instrument_id", "publisher_id", "bucket"], sort=False)
        .agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
            session=("sess", "first"),
        )
        .reset_index()
        .rename(columns={"bucket": "ts_event"})
    )
    out["order"] = out["symbol"].map({s: k for k, s in enumerate(symbols)})
    out = out.sort_values(["ts_event", "order", "instrument_id"], kind="stable").drop(columns="order")
    out = out.set_index("ts_event")[list(bars.columns)]
    return out.astype(bars.dtypes.to_dict())


@pytest.mark.parametrize("interval", ["1d", "4h", "1h", "30m"])
@pytest.mark.parametrize(("first", "end", "symbols"), WINDOWS)
def test_session_bars_equal_a_groupby_on_exchange_calendars_sessions(
    db: HdiSession, interval: str, first: str, end: str, symbols: str
) -> None:
    bars = minute_bars(db, symbols, first, end)
    got = hdi_lab.query(
        "ohlcv-1m", symbols, first, end, price_type="fixed", interval=interval, align="session", session=db
    )
    want = reference(bars, interval, first, end, symbols.split(","))
    assert len(want) >= 4 and set(want["symbol"]) == set(symbols.split(","))
    pd.testing.assert_frame_equal(got, want, obj=f"{interval} {first}")
    # a bucket never spans two sessions: each starts in its session, the last one ends at the close
    sched = pd.concat([xc_schedule(c).assign(publisher_id=p) for p, c in SAMPLE_CALENDARS.items()])
    sched = sched.rename(columns={"open": "s_open", "close": "s_close"})
    joined = got.reset_index().merge(sched.astype({"publisher_id": got["publisher_id"].dtype}), how="left")
    assert ((joined["ts_event"] >= joined["s_open"]) & (joined["ts_event"] < joined["s_close"])).all()
    # float prices are the fixed ones / 1e9
    floats = hdi_lab.query("ohlcv-1m", symbols, first, end, interval=interval, align="session", session=db)
    assert (floats["close"].to_numpy() == got["close"].to_numpy() / 1e9).all()


def test_dst_holiday_and_early_close(db: HdiSession) -> None:
    daily = hdi_lab.query("ohlcv-1m", "ESH4", "2024-03-07", "2024-03-14", interval="1d", align="session", session=db)
    # CME opens 17:00 Chicago the evening before: 23:00 UTC in winter, 22:00 UTC from the 2024-03-10 DST change
    assert [str(t) for t in daily.index.tz_localize(None)] == [
        "2024-03-06 23:00:00",
        "2024-03-07 23:00:00",
        "2024-03-10 22:00:00",
        "2024-03-11 22:00:00",
        "2024-03-12 22:00:00",
    ]
    assert [str(d.date()) for d in daily["session"]] == [
        "2024-03-07",
        "2024-03-08",
        "2024-03-11",
        "2024-03-12",
        "2024-03-13",
    ]
    # MLK day: CME closes at 12:00 Chicago (18:00 UTC); the last 4h bucket is cut there, Nasdaq is closed
    es = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-15", "2024-01-16", interval="4h", align="session", session=db)
    assert [str(t) for t in es.index.tz_localize(None)] == [
        "2024-01-14 23:00:00",
        "2024-01-15 03:00:00",
        "2024-01-15 07:00:00",
        "2024-01-15 11:00:00",
        "2024-01-15 15:00:00",
    ]
    minutes = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-15 15:00", "2024-01-15 23:00", session=db)
    in_mlk = minutes[minutes["session"] == pd.Timestamp("2024-01-15")]
    assert in_mlk.index.max() == pd.Timestamp("2024-01-15 17:59", tz="UTC")
    assert es["volume"].iloc[-1] == in_mlk["volume"].sum()
    aapl = hdi_lab.query("ohlcv-1m", "AAPL", "2024-01-12", "2024-01-18", interval="1d", align="session", session=db)
    assert [str(d.date()) for d in aapl["session"]] == ["2024-01-12", "2024-01-16", "2024-01-17"]
    # 2024-07-03: Nasdaq closes at 13:00 New York (17:00 UTC): the hourly buckets from 13:30 UTC end at 16:30
    hourly = hdi_lab.query("ohlcv-1m", "AAPL", "2024-07-03", "2024-07-04", interval="1h", align="session", session=db)
    assert [t.strftime("%H:%M") for t in hourly.index] == ["13:30", "14:30", "15:30", "16:30"]
    day = hdi_lab.query("ohlcv-1m", "AAPL", "2024-07-03 13:30", "2024-07-03 17:00", session=db)
    assert hourly["volume"].sum() == day["volume"].sum() and len(day) == 210
    # a CME bar at Sunday 23:00 UTC belongs to Monday's session
    sunday = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-07 23:00", "2024-01-07 23:02", session=db)
    assert len(sunday) == 2 and (sunday["session"] == pd.Timestamp("2024-01-08")).all()


def test_equity_daily_bars_from_minutes_equal_the_vendor_daily_bars(db: HdiSession) -> None:
    for first, end, _ in WINDOWS:
        vendor = hdi_lab.query("ohlcv-1d", "AAPL", first, end, price_type="fixed", session=db)
        utc = hdi_lab.query("ohlcv-1m", "AAPL", first, end, price_type="fixed", interval="1d", session=db)
        sess = hdi_lab.query(
            "ohlcv-1m", "AAPL", first, end, price_type="fixed", interval="1d", align="session", session=db
        )
        assert len(vendor) >= 4
        # the sample's daily bar is the UTC day, which holds the whole Nasdaq session: all three agree
        pd.testing.assert_frame_equal(utc, vendor)
        assert (vendor["session"].to_numpy() == vendor.index.tz_localize(None).normalize().to_numpy()).all()
        pd.testing.assert_frame_equal(sess.reset_index(drop=True), vendor.reset_index(drop=True))
        assert (sess.index.strftime("%H:%M").isin(["13:30", "14:30"])).all()  # stamped at the 09:30 open


def test_cme_daily_bars_are_utc_days_not_sessions(db: HdiSession) -> None:
    """Databento's (and the sample's) CME ohlcv-1d is the UTC day: it equals the UTC rollup, not the session
    rollup; over a whole week (Sunday evening to Friday) both hold the same volume."""
    vendor = hdi_lab.query("ohlcv-1d", "ESH4", "2024-01-07", "2024-01-13", price_type="fixed", session=db)
    utc = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-07", "2024-01-13", price_type="fixed", interval="1d", session=db)
    pd.testing.assert_frame_equal(utc, vendor)
    # the UTC day of Sunday (its last hour opens Monday's session) and Monday both belong to Monday
    assert [str(d.date()) for d in vendor["session"]][:2] == ["2024-01-08", "2024-01-08"]
    sess = hdi_lab.query(
        "ohlcv-1m", "ESH4", "2024-01-08", "2024-01-13", price_type="fixed", interval="1d", align="session", session=db
    )
    assert len(sess) == 5 and len(vendor) == 6
    assert not np.isin(sess["volume"].to_numpy(), vendor["volume"].to_numpy()).any()
    assert sess["volume"].sum() == vendor["volume"].sum()


def test_bars_outside_sessions_in_real_vendor_files(session: HdiSession) -> None:
    """Databento's own files: Nasdaq pre-market minutes belong to no session; a CME minute after midnight UTC on
    Monday 2020-12-28 belongs to that day's session, as do both daily bars."""
    for dataset in ("XNAS.ITCH", "GLBX.MDP3"):
        for schema in ("ohlcv-1m", "ohlcv-1d"):
            hdi_lab.ingest(provider="file", path=FIXTURES / dataset / f"test_data.{schema}.dbn.zst", session=session)
    nvda = hdi_lab.query("ohlcv-1m", "NVDA", "2020-12-28", "2020-12-29", session=session)
    assert len(nvda) == 4 and (nvda.index.hour == 9).all() and nvda["session"].isna().all()
    assert hdi_lab.query(
        "ohlcv-1m", "NVDA", "2020-12-28", "2020-12-29", interval="1d", align="session", session=session
    ).empty
    es = hdi_lab.query("ohlcv-1m", "ESH1", "2020-12-28", "2020-12-29", session=session)
    assert len(es) == 4 and (es["session"] == pd.Timestamp("2020-12-28")).all()
    for symbol in ("NVDA", "ESH1"):
        daily = hdi_lab.query("ohlcv-1d", symbol, "2020-12-28", "2020-12-29", session=session)
        assert list(daily["session"]) == [pd.Timestamp("2020-12-28")]


def _ice_bars(session: HdiSession, tmp: Path) -> None:
    """Three bars of a dataset without a built-in calendar (ICE Futures Europe), through a real DBN file."""
    stamps = pd.DatetimeIndex(["2024-01-08 07:00", "2024-01-08 23:30", "2024-01-09 10:00"], tz="UTC")
    rec = empty_records("ohlcv-1m", len(stamps))
    rec["publisher_id"], rec["instrument_id"], rec["ts_event"] = 57, 777, stamps.as_unit("ns").asi8
    for col in ("open", "high", "low", "close"):
        rec[col] = 80 * 1_000_000_000
    rec["volume"] = 3
    path = tmp / "brn.ohlcv-1m.dbn.zst"
    path.write_bytes(
        encode_dbn(
            dataset="IFEU.IMPACT",
            schema="ohlcv-1m",
            stype_in="raw_symbol",
            start=pd.Timestamp("2024-01-08", tz="UTC"),
            end=pd.Timestamp("2024-01-10", tz="UTC"),
            symbols=["BRN"],
            mappings={"BRN": [(dt.date(2024, 1, 8), dt.date(2024, 1, 10), 777)]},
            records=rec,
        )
    )
    assert hdi_lab.ingest(provider="file", path=path, session=session).inserted == 3


def test_a_dataset_without_a_calendar(session: HdiSession, pg_url: str, tmp_path: Path) -> None:
    """No calendar: the session column is the UTC date and session alignment says how to give one."""
    _ice_bars(session, tmp_path)
    got = hdi_lab.query("ohlcv-1m", "BRN", "2024-01-08", "2024-01-10", session=session)
    assert [str(d.date()) for d in got["session"]] == ["2024-01-08", "2024-01-08", "2024-01-09"]
    with pytest.raises(ValidationError, match=r"align='session' needs the sessions of IFEU.IMPACT.*HDI_CALENDARS"):
        hdi_lab.query("ohlcv-1m", "BRN", "2024-01-08", "2024-01-10", interval="1d", align="session", session=session)
    # the calendars setting gives it one (London: 08:00-16:30 local, so 07:00 and 23:30 UTC are outside)
    london = make_session(pg_url, session.schema, calendars="IFEU.IMPACT=XLON")
    try:
        got = hdi_lab.query("ohlcv-1m", "BRN", "2024-01-08", "2024-01-10", session=london)
        want = xc_sessions("XLON", pd.DatetimeIndex(got.index), pd.Timedelta("1min"))
        assert pd.DatetimeIndex(got["session"]).equals(pd.DatetimeIndex(want))
        assert [str(d.date()) if pd.notna(d) else None for d in got["session"]] == [None, None, "2024-01-09"]
        daily = hdi_lab.query(
            "ohlcv-1m", "BRN", "2024-01-08", "2024-01-10", interval="1d", align="session", session=london
        )
        assert len(daily) == 1 and daily.index[0] == pd.Timestamp("2024-01-09 08:00", tz="UTC")
    finally:
        london.close()


@pytest.mark.parametrize(
    ("schema", "align", "interval", "message"),
    [
        ("ohlcv-1m", "sessions", "1d", "align='sessions' is not valid: use one of utc, session"),
        ("trades", "session", None, "align='session' applies to bars only"),
        ("ohlcv-1d", "session", None, "cannot be re-aligned to sessions: query intraday bars"),
    ],
)
def test_bad_align_is_refused(db: HdiSession, schema: str, align: str, interval: str | None, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        hdi_lab.query(schema, "ESH4", "2024-01-08", "2024-01-09", interval=interval, align=align, session=db)


def test_columns_and_the_unrolled_session_query(db: HdiSession) -> None:
    full = hdi_lab.query("ohlcv-1m", "AAPL", "2024-01-08", "2024-01-10", session=db)
    assert list(full.columns)[-1] == "session" and str(full["session"].dtype) == "datetime64[ns]"
    assert list(hdi_lab.query("ohlcv-1m", "AAPL", "2024-01-08", "2024-01-10", columns=["close"], session=db)) == [
        "close"
    ]
    some = hdi_lab.query("ohlcv-1m", "AAPL", "2024-01-08", "2024-01-10", columns=["session", "close"], session=db)
    pd.testing.assert_frame_equal(some, full[["session", "close"]])
    # no interval: the stored bars of the sessions dated in the range, those outside every session left out
    es = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-08", "2024-01-09", align="session", session=db)
    assert es.index[0] == pd.Timestamp("2024-01-07 23:00", tz="UTC") and es.index[-1] < pd.Timestamp(
        "2024-01-08 23:00", tz="UTC"
    )
    assert (es["session"] == pd.Timestamp("2024-01-08")).all() and len(es) == 1380
    one = hdi_lab.query(
        "ohlcv-1m", "ESH4", "2024-01-08", "2024-01-09", interval="1d", align="session", columns=["volume"], session=db
    )
    assert list(one.columns) == ["volume"] and one["volume"].iloc[0] == es["volume"].sum()


def test_cli_and_magic_align_session(hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    with hdi_shell() as shell:
        shell.run_cell(
            "%hdi_ingest --provider sample --schema ohlcv-1m --symbols ESH4 --start 2024-01-07 --end 2024-01-10 --quiet"
        )
        frame = shell.run_cell("%hdi_query ohlcv-1m ESH4 2024-01-08 2024-01-10 --interval 1d --align session").result
        api = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-08", "2024-01-10", interval="1d", align="session")
        pd.testing.assert_frame_equal(frame, api)
        assert [str(t) for t in frame.index.tz_localize(None)] == ["2024-01-07 23:00:00", "2024-01-08 23:00:00"]
    out, err = io.StringIO(), io.StringIO()
    argv = ["query", "ohlcv-1m", "--symbols", "ESH4", "--start", "2024-01-08", "--end", "2024-01-10"]
    assert main([*argv, "--interval", "1d", "--align", "session", "--format", "csv"], out, err) == 0, err.getvalue()
    csv = pd.read_csv(io.StringIO(out.getvalue()))
    assert list(csv["ts_event"]) == ["2024-01-07 23:00:00+00:00", "2024-01-08 23:00:00+00:00"]
    assert list(csv["session"]) == ["2024-01-08", "2024-01-09"] and list(csv["volume"]) == list(api["volume"])
