"""Feature sets against the real database: storage layout, point-in-time stamps, exact incremental
computation, idempotent re-runs, gaps, bad input, and the CLI / magic / widget front ends."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import hdi_shell, run_cli

import hdi_lab
from hdi_lab import features, indicators
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError

pytestmark = pytest.mark.integration

SET = "momentum_v1"
COLS = [
    "rsi_14",
    "sma_20",
    "ema_20",
    "macd_12_26_9",
    "macds_12_26_9",
    "atr_14",
    "bbu_20_2",
    "bbl_20_2",
    "logret_1",
    "vol_20",
]
DAY = pd.Timedelta(days=1)


def ingest(session: HdiSession, start: str, end: str, symbols: tuple[str, ...] = ("AAPL", "MSFT")) -> None:
    hdi_lab.ingest(provider="sample", schema="ohlcv-1d", symbols=list(symbols), start=start, end=end, session=session)


def stored(session: HdiSession, table: str = "features_momentum_v1_1d") -> pd.DataFrame:
    """Every row of a feature table (created included), in key order."""
    return hdi_lab.sql(
        f'SELECT * FROM "{session.schema}"."{table}" ORDER BY instrument_id, event_timestamp', session=session
    )


def test_compute_stores_point_in_time_rows_with_reference_values(session: HdiSession) -> None:
    ingest(session, "2023-01-01", "2023-07-01")
    report = features.compute(
        SET, symbols=["AAPL", "MSFT"], interval="1d", start="2023-01-01", end="2023-07-01", session=session
    )
    bars = hdi_lab.query("ohlcv-1d", ["AAPL", "MSFT"], "2023-01-01", "2023-07-01", session=session)
    assert report.rows == report.inserted == len(bars) and report.instruments == 2 and report.updated == 0
    assert report.table == features.table_name(SET, "1d") == "features_momentum_v1_1d"
    assert hdi_lab.features is features and list(features.FEATURE_SETS[SET].columns) == COLS

    got = features.read(SET, ["AAPL", "MSFT"], "2023-01-01", "2023-08-01", session=session)
    assert list(got.columns) == ["instrument_id", "symbol", "event_timestamp", *COLS]
    aapl_bars = bars[bars["symbol"] == "AAPL"]
    aapl = got[got["symbol"] == "AAPL"].reset_index(drop=True)
    # point in time: stamped at the bar's close (open + 1 day), never at its open
    assert (aapl["event_timestamp"].to_numpy() == (aapl_bars.index + DAY).to_numpy()).all()
    assert set(got["instrument_id"]) == {500001, 500002}
    # the same numbers as the pure functions, bit for bit, and warm-up rows NULL (NaN)
    want = indicators.compute(aapl_bars, COLS, short="nan").reset_index(drop=True)
    pd.testing.assert_frame_equal(aapl[COLS], want, check_exact=True)
    assert aapl["rsi_14"].iloc[:14].isna().all() and aapl["rsi_14"].iloc[14:].notna().all()
    # a textbook check on stored values: SMA(20) and the 20-bar sample deviation of log returns
    close = aapl_bars["close"].to_numpy()
    t = 60
    assert aapl["sma_20"].iloc[t] == pytest.approx(close[t - 19 : t + 1].mean(), rel=1e-9)
    logret = np.log(close[1:] / close[:-1])
    assert aapl["vol_20"].iloc[t] == pytest.approx(logret[t - 20 : t].std(ddof=1), rel=1e-9)
    nulls = hdi_lab.sql(
        f'SELECT count(*) AS n FROM "{session.schema}".features_momentum_v1_1d WHERE macds_12_26_9 IS NULL',
        session=session,
    )
    assert int(nulls["n"].iloc[0]) == 2 * 33  # warm-up stored as NULL, not NaN

    # read selects on event_timestamp: the bar of day D is knowable at D+1 00:00
    first_bar = aapl_bars.index[0]
    edge = features.read(SET, "AAPL", first_bar, first_bar + DAY, session=session)
    assert edge.empty
    edge = features.read(SET, "AAPL", first_bar + DAY, first_bar + 2 * DAY, session=session)
    assert edge["event_timestamp"].tolist() == [first_bar + DAY]


def test_storage_layout_and_registry(session: HdiSession) -> None:
    ingest(session, "2023-03-01", "2023-04-01", ("AAPL",))
    features.compute(SET, "AAPL", "1d", session=session)  # start/end default: all stored bars
    cols = hdi_lab.sql(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'features_momentum_v1_1d' ORDER BY ordinal_position",
        [session.schema],
        session=session,
    )
    assert cols["column_name"].tolist() == ["instrument_id", "event_timestamp", "created", "symbol", *COLS]
    assert cols["data_type"].tolist() == [
        "bigint",
        "timestamp with time zone",
        "timestamp with time zone",
        "text",
        *(["double precision"] * len(COLS)),
    ]
    assert cols["is_nullable"].tolist()[:3] == ["NO", "NO", "NO"]
    idx = hdi_lab.sql(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = "
        "'features_momentum_v1_1d' ORDER BY indexname",
        [session.schema],
        session=session,
    )
    defs = " | ".join(idx["indexdef"])
    assert "(instrument_id, event_timestamp DESC, created DESC)" in defs
    assert "(instrument_id, event_timestamp)" in defs  # the primary key
    reg = hdi_lab.sql("SELECT * FROM feature_sets", session=session)
    assert reg[["name", "version", "interval", "table_name"]].values.tolist() == [
        ["momentum_v1", 1, "1d", "features_momentum_v1_1d"]
    ]
    assert list(reg["columns"].iloc[0]) == COLS
    definition = reg["definition"].iloc[0]
    assert [c["name"] for c in definition["columns"]] == COLS
    assert definition["columns"][0] == {
        "name": "rsi_14",
        "indicator": "rsi",
        "output": "rsi",
        "params": {"length": 14},
        "warmup": 14,
    }
    listing = features.list_sets(session=session)
    row = listing[(listing["feature_set"] == SET) & (listing["interval"] == "1d")].iloc[0]
    assert row["rows"] == 23 and row["table"] == "features_momentum_v1_1d"
    assert set(stored(session)["symbol"]) == {"AAPL"}
    assert set(features.FEATURE_SETS) <= set(listing["feature_set"])


def test_incremental_day_by_day_equals_full_recompute_bit_exact(session: HdiSession) -> None:
    ingest(session, "2023-01-01", "2023-05-01")
    features.compute(SET, ["AAPL", "MSFT"], "1d", "2023-01-01", "2023-05-01", session=session)
    # new bars arrive; compute only them, one day at a time (each run re-reads the history)
    ingest(session, "2023-05-01", "2023-05-20")
    days = pd.date_range("2023-05-01", "2023-05-20", freq="D", tz="UTC")
    for lo, hi in itertools.pairwise(days):
        features.compute(SET, ["AAPL", "MSFT"], "1d", lo, hi, session=session)
    incremental = stored(session)
    hdi_lab.sql(f'TRUNCATE "{session.schema}".features_momentum_v1_1d', session=session)
    full = features.compute(SET, ["AAPL", "MSFT"], "1d", "2023-01-01", "2023-05-20", session=session)
    assert full.inserted == len(incremental)
    recomputed = stored(session)
    pd.testing.assert_frame_equal(
        incremental.drop(columns="created"), recomputed.drop(columns="created"), check_exact=True
    )


def test_rerun_is_idempotent_and_a_corrected_bar_changes_only_later_rows(session: HdiSession) -> None:
    ingest(session, "2023-01-01", "2023-04-01", ("AAPL",))
    first = features.compute(SET, "AAPL", "1d", "2023-01-01", "2023-04-01", session=session)
    before = stored(session)
    again = features.compute(SET, "AAPL", "1d", "2023-01-01", "2023-04-01", session=session)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, first.rows)
    pd.testing.assert_frame_equal(stored(session), before, check_exact=True)  # created untouched: no churn

    # the vendor corrects one bar: features before it stay as they were (no look-ahead), later ones move
    hdi_lab.sql(
        f'UPDATE "{session.schema}".ohlcv_1d SET close = close + 1000000000, '
        "high = high + 1000000000 WHERE ts_event = '2023-02-15'",
        session=session,
    )
    fixed = features.compute(SET, "AAPL", "1d", "2023-01-01", "2023-04-01", session=session)
    after = stored(session)
    cut = pd.Timestamp("2023-02-16", tz="UTC")  # the corrected bar's close
    earlier = before["event_timestamp"] < cut
    pd.testing.assert_frame_equal(after[earlier.to_numpy()], before[earlier.to_numpy()], check_exact=True)
    moved = (after["created"] != before["created"]).to_numpy()
    assert fixed.updated == int(moved.sum()) == int((~earlier).sum()) and fixed.inserted == 0
    assert after.loc[moved, "sma_20"].ne(before.loc[moved, "sma_20"]).iloc[:20].all()


def test_future_bars_never_change_stored_past_features(session: HdiSession) -> None:
    ingest(session, "2023-01-01", "2023-03-01", ("MSFT",))
    features.compute(SET, "MSFT", "1d", session=session)
    past = stored(session)
    ingest(session, "2023-03-01", "2023-06-01", ("MSFT",))
    report = features.compute(SET, "MSFT", "1d", "2023-01-01", "2023-06-01", session=session)
    assert report.updated == 0 and report.inserted > 0
    now = stored(session)
    pd.testing.assert_frame_equal(now.iloc[: len(past)], past, check_exact=True)


def test_gaps_are_reported_and_can_be_refused(session: HdiSession) -> None:
    ingest(session, "2023-01-01", "2023-03-01", ("AAPL",))
    hdi_lab.sql(
        f'DELETE FROM "{session.schema}".ohlcv_1d WHERE ts_event >= %s AND ts_event < %s',
        ["2023-02-01", "2023-02-13"],
        session=session,
    )
    report = features.compute(SET, "AAPL", "1d", session=session)
    assert report.largest_gap == pd.Timedelta(days=13)  # Tue 31 Jan -> Mon 13 Feb
    assert "largest gap between bars 13 days" in str(report)
    with pytest.raises(
        ValidationError,
        match=r"instrument 500001 \(AAPL\) has no bars between "
        r"2023-01-31 00:00:00\+00:00 and 2023-02-13.*max_gap=4 days",
    ):
        features.compute(SET, "AAPL", "1d", max_gap="4D", session=session)
    # windows count bars: the bar after the gap follows the one before it
    bars = hdi_lab.query("ohlcv-1d", "AAPL", "2023-01-01", "2023-03-01", session=session)
    got = features.read(SET, "AAPL", "2023-01-01", "2023-03-02", session=session)
    np.testing.assert_allclose(got["sma_20"].to_numpy(), bars["close"].rolling(20).mean().to_numpy(), rtol=1e-12)


def test_bad_input_is_refused(session: HdiSession) -> None:
    ingest(session, "2023-01-01", "2023-02-01", ("AAPL",))
    with pytest.raises(ValidationError, match="feature set 'momentum_v9' is not known: use one of momentum_v1"):
        features.compute("momentum_v9", "AAPL", session=session)
    with pytest.raises(ValidationError, match="interval='2d' is not valid: use one of 1s, 5s, 1m, 5m"):
        features.compute(SET, "AAPL", "2d", session=session)
    with pytest.raises(ValidationError, match="unknown symbol"):
        features.compute(SET, "ZZZZ", "1d", session=session)
    with pytest.raises(ValidationError, match="symbols is required"):
        features.compute(SET, [], "1d", session=session)
    with pytest.raises(ValidationError, match="features_momentum_v1_1d does not exist yet: compute it first"):
        features.read(SET, "AAPL", "2023-01-01", "2023-02-01", session=session)
    with pytest.raises(ValidationError, match="has no column"):
        features.read(SET, "AAPL", "2023-01-01", "2023-02-01", columns=["rsi_99"], session=session)
    # fewer bars than the windows: rows are stored, the values are NULL until each warm-up ends
    report = features.compute(SET, "AAPL", "1d", session=session)
    got = features.read(SET, "AAPL", "2023-01-01", "2023-03-01", session=session)
    # January 2023 has 22 weekdays; Nasdaq closed on Jan 2 (New Year observed) and Jan 16 (MLK day): 20 sessions
    assert report.rows == len(got) == 20
    # sma_20 is known from the 20th bar on: 20 - 19 = 1 value
    assert got["macds_12_26_9"].isna().all() and got["sma_20"].notna().sum() == 1
    hdi_lab.sql(f'UPDATE "{session.schema}".feature_sets SET columns = %s', [["rsi_14"]], session=session)
    with pytest.raises(ValidationError, match="stored with columns"):
        features.compute(SET, "AAPL", "1d", session=session)


def test_resampled_interval_reads_rolled_up_bars(session: HdiSession) -> None:
    hdi_lab.ingest(
        provider="sample", schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-04", session=session
    )
    report = features.compute(SET, "ESH4", "15m", "2024-01-02", "2024-01-04", session=session)
    bars = hdi_lab.query("ohlcv-1m", "ESH4", "1970-01-01", "2024-01-04", interval="15m", session=session)
    assert report.table == "features_momentum_v1_15m" and report.rows == len(bars)
    got = features.read(SET, "ESH4", "2024-01-01", "2024-01-05", interval="15m", session=session)
    assert (got["event_timestamp"].to_numpy() == (bars.index + pd.Timedelta(minutes=15)).to_numpy()).all()
    want = indicators.compute(bars, COLS, short="nan").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[COLS], want, check_exact=True)


# -- front ends -----------------------------------------------------------------------------


def test_cli_features_compute_and_list(session: HdiSession, hdi_env: dict[str, str]) -> None:
    ingest(session, "2023-01-01", "2023-03-01", ("AAPL",))
    code, out, err = run_cli(
        [
            "features",
            "compute",
            "--set",
            SET,
            "--symbols",
            "AAPL",
            "--interval",
            "1d",
            "--start",
            "2023-01-01",
            "--end",
            "2023-03-01",
        ]
    )
    assert code == 0, err
    # Jan + Feb 2023: 22 + 20 weekdays, less Nasdaq's Jan 2 (New Year observed), Jan 16 (MLK) and Feb 20
    # (Presidents' Day) holidays: 39 daily bars
    assert "momentum_v1 1d -> features_momentum_v1_1d: 39 rows for 1 instrument(s)" in out and "39 inserted" in out
    code, out, err = run_cli(
        ["features", "compute", "--set", SET, "--symbols", "AAPL", "--start", "2023-01-01", "--end", "2023-03-01"]
    )
    assert code == 0 and "0 inserted, 0 updated, 39 unchanged" in out
    code, out, err = run_cli(["features", "list"])
    assert code == 0 and "features_momentum_v1_1d" in out and "trend_v1" in out
    code, out, err = run_cli(["features", "compute", "--set", "nope", "--symbols", "AAPL"])
    assert code == 1 and "hdi: error: feature set 'nope' is not known" in err


def test_magic_query_adds_indicator_columns(session: HdiSession, hdi_env: dict[str, str]) -> None:
    ingest(session, "2023-01-01", "2023-04-01")
    with hdi_shell() as shell:
        df = shell.run_line_magic("hdi_query", "ohlcv-1d AAPL,MSFT 2023-01-01 2023-04-01 --indicators rsi_14,sma_20")
        bars = hdi_lab.query("ohlcv-1d", ["AAPL", "MSFT"], "2023-01-01", "2023-04-01", session=session)
        assert list(df.columns) == [*bars.columns, "rsi_14", "sma_20"]
        pd.testing.assert_frame_equal(df[bars.columns], bars)
        for sym in ("AAPL", "MSFT"):  # per instrument, never across instruments
            part = bars[bars["symbol"] == sym]
            want = indicators.compute(part, "rsi_14,sma_20")
            pd.testing.assert_frame_equal(df.loc[df["symbol"] == sym, ["rsi_14", "sma_20"]], want, check_exact=True)
        from IPython.core.error import UsageError

        with pytest.raises(UsageError, match=r"indicator 'nope' .* is not known"):
            shell.run_line_magic("hdi_query", "ohlcv-1d AAPL 2023-01-01 2023-04-01 --indicators nope_3")
        with pytest.raises(UsageError, match="--indicators needs bars"):
            shell.run_line_magic("hdi_query", "trades AAPL 2023-01-01 2023-04-01 --indicators rsi_14")


def test_widget_overlays_come_from_indicators(session: HdiSession) -> None:
    from hdi_lab.frontend.widgets import QueryExplorer

    ingest(session, "2023-01-01", "2023-04-01", ("AAPL",))
    explorer = QueryExplorer(session)
    explorer.symbol.value = "AAPL"
    explorer.schema.value = "ohlcv-1d"
    explorer.start.value, explorer.end.value = pd.Timestamp("2023-01-01").date(), pd.Timestamp("2023-04-01").date()
    explorer.sma.value, explorer.window.value = True, 10
    explorer.indicators.value = "bbu_20_2, bbl_20_2"
    frame = explorer.load()
    assert explorer.figure is not None
    names = [t.name for t in explorer.figure.data]
    assert names == ["OHLC", "volume", "SMA(10)", "bbu_20_2", "bbl_20_2"]
    want: Any = indicators.compute(frame, "sma_10,bbu_20_2,bbl_20_2")
    np.testing.assert_array_equal(explorer.figure.data[2].y, want["sma_10"].to_numpy())
    np.testing.assert_array_equal(explorer.figure.data[3].y, want["bbu_20_2"].to_numpy())
    explorer.indicators.value = "rsi_x"
    explorer.load_button.click()
    assert isinstance(explorer.last_error, ValidationError) and "rsi parameter length='x'" in explorer.message()


# -- resuming from saved states -------------------------------------------------------------

RANDOM = {"RA": 800_001, "RB": 800_002, "RC": 800_003, "RD": 800_004}
RDAYS = pd.date_range("2022-01-03", periods=300, freq="D", tz="UTC")


def random_bars(seed: int = 5) -> dict[str, dict[str, np.ndarray]]:
    """Fixed-point daily OHLCV random walks for RANDOM over RDAYS; RB has a flat stretch."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, sym in enumerate(RANDOM):
        close = rng.uniform(5, 500) * np.exp(np.cumsum(rng.normal(0, 0.02, len(RDAYS))))
        if sym == "RB":
            close[150:185] = close[150]
        opn = np.r_[close[0], close[:-1]]
        wick = np.abs(rng.normal(0, 0.01, len(RDAYS))) * close * (k % 3)
        tick = 1_000_000
        out[sym] = {
            name: (np.round(v * 1e9 / tick) * tick).astype(np.int64)
            for name, v in (
                ("open", opn),
                ("high", np.maximum(opn, close) + wick),
                ("low", np.minimum(opn, close) - wick),
                ("close", close),
            )
        }
        out[sym]["volume"] = rng.integers(100, 100_000, len(RDAYS)).astype(np.int64)
    return out


def put_bars(session: HdiSession, data: dict[str, dict[str, np.ndarray]], sym: str, days: slice) -> None:
    """COPY the bars of ``sym`` on RDAYS[days] into ohlcv_1d (publisher 2, XNAS.ITCH)."""
    from hdi_lab.storage import copy
    from hdi_lab.storage.db import transaction

    idx = np.arange(len(RDAYS))[days]
    ts = RDAYS[idx].asi8 // 1000 - copy.PG_EPOCH_US
    values = [
        np.full(len(idx), RANDOM[sym], dtype=np.int64),
        np.full(len(idx), 2, dtype=np.int16),
        ts,
        *(data[sym][k][idx] for k in ("open", "high", "low", "close", "volume")),
    ]
    with transaction(session.connection()) as cur:
        copy.copy_in(
            cur,
            f'"{session.schema}".ohlcv_1d',
            ["instrument_id", "publisher_id", "ts_event", "open", "high", "low", "close", "volume"],
            copy.encode(["int8", "int2", "timestamptz", "int8", "int8", "int8", "int8", "int8"], values),
        )


def test_resumed_increments_equal_full_recompute_bit_exact(session: HdiSession) -> None:
    """Day-by-day (and multi-day) increments resumed from saved states store what one full computation
    stores, bit for bit: with an instrument still in warm-up when its state is saved (RC, listed late)
    and one whose state a backfill of older bars invalidates (RD)."""
    from hdi_lab.dbn import Mapping
    from hdi_lab.storage import load
    from hdi_lab.storage.db import transaction

    data = random_bars()
    syms = list(RANDOM)
    with transaction(session.connection()) as cur:
        load.upsert_symbology(
            cur,
            session.schema,
            "XNAS.ITCH",
            [Mapping("raw_symbol", s, RDAYS[0].date(), (RDAYS[-1] + DAY).date(), iid) for s, iid in RANDOM.items()],
        )
    for sym, days in (("RA", slice(0, 250)), ("RB", slice(0, 250)), ("RC", slice(230, 250)), ("RD", slice(100, 250))):
        put_bars(session, data, sym, days)
    first = features.compute(SET, syms, "1d", RDAYS[0], RDAYS[250], session=session)
    assert first.resumed == 0 and first.inserted == 250 * 2 + 20 + 150
    states = hdi_lab.sql(
        f'SELECT instrument_id, bars, ts_event, state FROM "{session.schema}".'
        f'"{features.state_table_name(SET, "1d")}" ORDER BY instrument_id',
        session=session,
    )
    assert states["bars"].tolist() == [250, 250, 20, 150]
    assert (states["ts_event"] == RDAYS[249]).all()
    assert np.isnan(states["state"].iloc[2]).sum() > 0  # RC: still in warm-up (no MACD signal yet)

    reports = {}
    edges = [*range(250, 280), 283, 290, 291, 300]  # one day at a time, then several
    for lo, hi in itertools.pairwise(edges):
        if lo == 270:
            put_bars(session, data, "RD", slice(40, 100))  # older bars arrive: RD's state no longer holds
        for sym in syms:
            put_bars(session, data, sym, slice(lo, hi))
        reports[lo] = features.compute(SET, syms, "1d", RDAYS[lo], RDAYS[hi] if hi < 300 else None, session=session)
        assert reports[lo].inserted == 4 * (hi - lo) and reports[lo].updated == 0
    # RC: from its first bar while its history fits the window (20 + 14 bars), resumed after that
    assert reports[250].resumed == 3 and reports[264].resumed == 3 and reports[265].resumed == 4
    assert reports[250].bars_read < 4 * 40  # the windows, not the history
    assert reports[270].resumed == 3 and reports[270].bars_read > 800  # RD: invalidated, read from its first bar
    assert reports[271].resumed == 4 and reports[291].resumed == 4
    incremental = stored(session)

    hdi_lab.sql(f'TRUNCATE "{session.schema}".features_momentum_v1_1d', session=session)
    full = features.compute(SET, syms, "1d", RDAYS[0], RDAYS[-1] + DAY, session=session)
    assert full.resumed == 0
    recomputed = stored(session)
    key = ["instrument_id", "event_timestamp"]
    both = incremental.drop(columns="created").merge(
        recomputed.drop(columns="created"), on=key, how="left", suffixes=("", "_full"), validate="1:1"
    )
    assert len(both) == len(incremental) == len(recomputed) - 60  # RD's backfilled days were never computed
    before_backfill = ((both["instrument_id"] == RANDOM["RD"]) & (both["event_timestamp"] <= RDAYS[270])).to_numpy()
    check = both[~before_backfill]
    for c in ["symbol", *COLS]:
        np.testing.assert_array_equal(check[c].to_numpy(), check[f"{c}_full"].to_numpy(), err_msg=c)
    # RD's rows stored before the backfill came from its shorter history: they differ (as documented)
    old = both[before_backfill]
    assert (old["ema_20"] != old["ema_20_full"]).any()

    # re-runs are idempotent: nothing changes, from a saved state or not
    back = features.compute(SET, syms, "1d", RDAYS[0], RDAYS[290], session=session)  # states after day 289
    assert (back.inserted, back.updated, back.resumed) == (0, 0, 0)
    again = features.compute(SET, syms, "1d", RDAYS[290], RDAYS[-1] + DAY, session=session)
    assert (again.inserted, again.updated, again.resumed) == (0, 0, 4) and again.unchanged == 4 * 10
    pd.testing.assert_frame_equal(stored(session), recomputed, check_exact=True)  # created untouched too
