"""Feature sets over back-adjusted continuous futures (features.compute / read with adjust= and view=).

The data is real DBN written with hdi_lab.dbn.writer and ingested through the file provider into PostgreSQL: four
ES quarterly contracts of 2024 with daily bars on every CME session, each later contract at a premium of about
1.3% (contango), so a raw continuous series jumps at each roll. The expected values are computed here: the
contracts' bars read with plain ``hdi_lab.query``, chained by expiration and back-adjusted in the test, then
pandas-ta (talib=False) on the adjusted closes; the as-of view against features of the series cut after a bar.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import daily_bars, futures_dbn, futures_definitions, run_cli

import hdi_lab
from hdi_lab import calendars, features, indicators
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.features.continuous import series_id

pytestmark = pytest.mark.integration

DATASET = "GLBX.MDP3"
SET = "momentum_v1"
#: (symbol, instrument_id, expiration UTC)
CONTRACTS = (
    ("ESH4", 930001, "2024-03-15 13:30"),
    ("ESM4", 930002, "2024-06-21 13:30"),
    ("ESU4", 930003, "2024-09-20 13:30"),
    ("ESZ4", 930004, "2024-12-20 14:30"),
)
FIRST, LAST = "2024-01-02", "2024-12-31"
DAY = pd.Timedelta(days=1)
COLS = list(features.FEATURE_SETS[SET].columns)


def _exp(k: int) -> pd.Timestamp:
    return pd.Timestamp(CONTRACTS[k][2], tz="UTC")


def _price(k: int, i: int) -> float:
    """A tick-rounded close: a common path times a premium of 1.3% per later contract, plus noise."""
    base = 4800 + 80 * np.sin(i / 11) + 0.5 * i + 9 * np.sin(i * 1.7)
    return round(base * (1 + 0.013 * k) * 4) / 4 + ((i * 7 + k * 3) % 5) * 0.25


@pytest.fixture
def es(session: HdiSession, tmp_path: Path) -> HdiSession:
    """The four contracts' definitions and daily bars (00:00 UTC of each CME session, while listed)."""
    labels = [d.date() for d in calendars.sessions("CMES", FIRST, LAST)["session"]]
    defs = futures_definitions(CONTRACTS, "ES")
    bars = []
    for i, day in enumerate(labels):
        for k, (_, iid, _) in enumerate(CONTRACTS):
            if day <= _exp(k).date():
                c = _price(k, i)
                bars.append((pd.Timestamp(day, tz="UTC").value, iid, c - 1.5, c + 6.0, c - 7.25, c, 1000 + i + k))
    rec = daily_bars(bars)
    for name, schema, records in (("defs", "definition", defs), ("bars", "ohlcv-1d", rec)):
        report = hdi_lab.ingest(
            provider="file",
            path=futures_dbn(tmp_path, name, schema, records, CONTRACTS),
            session=session,
        )
        assert report.quarantined == 0 and report.inserted == len(records)
    return session


# --- the independent computation --------------------------------------------------------------------------


def _chained(session: HdiSession, end: str) -> tuple[pd.DataFrame, list[tuple[pd.Timestamp, float, float]]]:
    """The front contract's raw bars before ``end`` (each contract from the previous one's expiration date,
    its roll session, to its own), and the rolls: (first bar of the new contract, close of the old and of the
    new contract on the session before)."""
    parts, rolls = [], []
    hi = pd.Timestamp(end, tz="UTC")
    for k, (sym, _, _) in enumerate(CONTRACTS):
        raw = hdi_lab.query("ohlcv-1d", sym, "2023-12-01", "2025-01-01", dataset=DATASET, session=session)
        lo = pd.Timestamp(_exp(k - 1).date(), tz="UTC") if k else raw.index[0]
        own = raw[(raw.index >= lo) & (raw.index < pd.Timestamp(_exp(k).date(), tz="UTC")) & (raw.index < hi)]
        if own.empty:
            break
        if k:
            prev = hdi_lab.query("ohlcv-1d", CONTRACTS[k - 1][0], "2023-12-01", lo, session=session)
            rolls.append((lo, float(prev["close"].iloc[-1]), float(raw["close"][raw.index < lo].iloc[-1])))
        parts.append(own)
    return pd.concat(parts), rolls


def _adjust(bars: pd.DataFrame, rolls: list[tuple[pd.Timestamp, float, float]], how: str) -> pd.DataFrame:
    out = bars.copy()
    for at, p_from, p_to in rolls:  # every earlier bar moves by each later roll's gap
        before = out.index < at
        for c in ("open", "high", "low", "close"):
            if how == "ratio":
                out.loc[before, c] = out.loc[before, c] * (p_to / p_from)
            else:
                out.loc[before, c] = out.loc[before, c] + (p_to - p_from)
    return out


def _pandas_ta(bars: pd.DataFrame) -> pd.DataFrame:
    """Six of momentum_v1's columns with pandas-ta itself (talib=False) and numpy."""
    import pandas_ta as ta

    close, high, low = bars["close"], bars["high"], bars["low"]
    macd = ta.macd(close, 12, 26, 9, talib=False)
    return pd.DataFrame(
        {
            "rsi_14": ta.rsi(close, 14, talib=False),
            "sma_20": ta.sma(close, 20, talib=False),
            "ema_20": ta.ema(close, 20, talib=False),
            "macd_12_26_9": macd["MACD_12_26_9"],
            "atr_14": ta.atr(high, low, close, 14, talib=False),
            "logret_1": np.log(close / close.shift(1)),
        },
        index=bars.index,
    )


def _stored(session: HdiSession, how: str, view: str | None = None, end: str = "2025-01-01") -> pd.DataFrame:
    got = features.read(SET, "ES.c.0", "2023-12-01", end, adjust=how, view=view, session=session)
    return got.set_index("event_timestamp")


# --- research view ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["ratio", "difference"])
def test_research_view_equals_pandas_ta_on_the_adjusted_series(es: HdiSession, how: str) -> None:
    report = features.compute(SET, ["ES.c.0"], "1d", "2024-01-01", "2025-01-01", adjust=how, session=es)
    bars, rolls = _chained(es, "2025-01-01")
    assert len(rolls) == 3 and report.rows == report.inserted == len(bars) and report.instruments == 1
    assert report.table == f"features_momentum_v1_1d_{how}_research" and report.view == "research"
    want = _pandas_ta(_adjust(bars, rolls, how))
    got = _stored(es, how)
    assert got.index.equals(bars.index + DAY)  # stamped at each bar's close
    assert set(got["symbol"]) == {"ES.c.0"} and set(got["instrument_id"]) == {series_id(DATASET, "ES.c.0")}
    for col in want.columns:
        warm = indicators.column(col).warmup
        np.testing.assert_allclose(got[col].to_numpy()[warm + 30 :], want[col].to_numpy()[warm + 30 :], rtol=1e-9)
        assert got[col].iloc[:warm].isna().all()
    # the last contract keeps its raw prices: its SMA is the raw closes' mean
    last = bars.index >= rolls[-1][0]
    t = int(np.flatnonzero(last)[25])
    assert got["sma_20"].iloc[t] == pytest.approx(bars["close"].iloc[t - 19 : t + 1].mean(), rel=1e-12)


def test_no_roll_jump_in_research_momentum(es: HdiSession) -> None:
    """At each roll the research view's log return is the new contract's own move; the unadjusted series
    (adjust='none') shows the premium as a jump."""
    for how in ("ratio", "difference", "none"):
        features.compute(SET, ["ES.c.0"], "1d", "2024-01-01", "2025-01-01", adjust=how, session=es)
    bars, rolls = _chained(es, "2025-01-01")
    adjusted, raw = _stored(es, "ratio"), _stored(es, "none")
    difference = _stored(es, "difference")
    for at, p_from, p_to in rolls:
        row = at + DAY
        own = np.log(bars.loc[at, "close"] / p_to)  # the new contract's move from its previous close
        jump = np.log(bars.loc[at, "close"] / p_from)  # what the raw chain shows
        assert adjusted.loc[row, "logret_1"] == pytest.approx(own, abs=1e-12)
        assert raw.loc[row, "logret_1"] == pytest.approx(jump, abs=1e-12)
        assert abs(jump - own) > 0.01  # the premium the adjustment removes
        # the gap (~60 points) enters the raw chain's true range, a 14-bar Wilder average: ~+4 at the roll
        raw_step = raw.loc[row, "atr_14"] - raw.loc[row - DAY, "atr_14"]
        adjusted_step = difference.loc[row, "atr_14"] - difference.loc[row - DAY, "atr_14"]
        assert raw_step > adjusted_step + 1.5 and abs(p_to - p_from) > 50


def test_research_view_is_rewritten_when_a_new_roll_appears(es: HdiSession) -> None:
    first = features.compute(SET, "ES.c.0", "1d", "2024-01-01", "2024-03-01", adjust="ratio", session=es)
    assert first.rewritten == [] and first.rows == first.inserted
    before = _stored(es, "ratio")
    # more bars, same rolls (none yet): only the new bars are written, the stored ones stay as they were
    same = features.compute(SET, "ES.c.0", "1d", "2024-03-01", "2024-03-14", adjust="ratio", session=es)
    assert same.rewritten == [] and same.deleted == 0 and same.rows == same.inserted > 0
    kept = _stored(es, "ratio").loc[before.index]
    pd.testing.assert_frame_equal(kept, before)
    # ESH4 -> ESM4: every earlier value changes with the new adjustment, so the series is rewritten whole
    new = features.compute(SET, "ES.c.0", "1d", "2024-03-14", "2024-05-01", adjust="ratio", session=es)
    assert new.rewritten == ["ES.c.0"] and new.deleted == len(before) + same.rows
    assert "rewritten from the first bar" in str(new)
    bars, rolls = _chained(es, "2024-05-01")
    got = _stored(es, "ratio")
    assert got.index.equals(bars.index + DAY)
    want = _pandas_ta(_adjust(bars, rolls, "ratio"))
    np.testing.assert_allclose(got["ema_20"].to_numpy()[40:], want["ema_20"].to_numpy()[40:], rtol=1e-9)
    assert not np.allclose(got.loc[before.index, "ema_20"].to_numpy()[30:], before["ema_20"].to_numpy()[30:])
    # an end before a stored roll anchors on an earlier contract: rewritten again, nothing after the end kept
    back = features.compute(SET, "ES.c.0", "1d", "2024-02-01", "2024-03-01", adjust="ratio", session=es)
    assert back.rewritten == ["ES.c.0"]
    pd.testing.assert_frame_equal(_stored(es, "ratio"), before)
    registry = hdi_lab.sql("SELECT symbol, dataset, adjust, view, rolls FROM feature_series", session=es)
    assert registry[["symbol", "dataset", "adjust", "view"]].values.tolist() == [
        ["ES.c.0", DATASET, "ratio", "research"]
    ]
    assert registry["rolls"].iloc[0] == []


# --- as-of view -------------------------------------------------------------------------------------------


def test_as_of_value_at_t_equals_features_of_the_data_cut_at_t(es: HdiSession) -> None:
    report = features.compute(SET, "ES.c.0", "1d", "2024-01-01", "2025-01-01", adjust="ratio", view="as_of", session=es)
    assert report.table == "features_momentum_v1_1d_ratio_as_of" and report.view == "as_of"
    got = _stored(es, "ratio", "as_of")
    bars, rolls = _chained(es, "2025-01-01")
    assert got.index.equals(bars.index + DAY)
    origin = pd.Timestamp(_exp(0) - pd.Timedelta(days=400)).floor("D")
    checked = 0
    for at, _, _ in rolls:
        k = bars.index.get_loc(at)
        for t in bars.index[k - 3 : k + 3]:  # around each roll, the roll bar included
            cut = hdi_lab.continuous("ES.c.0", "ohlcv-1d", origin, t + DAY, adjust="ratio", session=es)
            assert cut.index[-1] == t
            want = indicators.compute(cut, COLS, short="nan").iloc[-1]
            np.testing.assert_allclose(got.loc[t + DAY, COLS].to_numpy(float), want.to_numpy(float), rtol=1e-12)
            checked += 1
    assert checked == 18
    # the last segment has the research view's values (the same adjustment); earlier ones do not
    features.compute(SET, "ES.c.0", "1d", "2024-01-01", "2025-01-01", adjust="ratio", session=es)
    research = _stored(es, "ratio")
    tail = got.index >= rolls[-1][0] + DAY
    pd.testing.assert_frame_equal(got.loc[tail, COLS], research.loc[tail, COLS])
    assert not np.allclose(got.loc[~tail, "sma_20"].dropna(), research.loc[~tail, "sma_20"].dropna())


def test_as_of_values_never_change_when_later_rolls_arrive(es: HdiSession) -> None:
    features.compute(SET, "ES.c.0", "1d", "2024-01-01", "2024-06-01", adjust="difference", view="as_of", session=es)
    early = hdi_lab.sql(
        f'SELECT * FROM "{es.schema}".features_momentum_v1_1d_difference_as_of ORDER BY event_timestamp', session=es
    )
    # day by day across the next two rolls, then all of it again
    days = [*pd.date_range("2024-06-01", "2024-09-30", freq="7D", tz="UTC"), pd.Timestamp("2024-10-01", tz="UTC")]
    for a, b in itertools.pairwise(days):
        r = features.compute(SET, "ES.c.0", "1d", a, b, adjust="difference", view="as_of", session=es)
        assert r.updated == 0 and r.rewritten == []
    again = features.compute(SET, "ES.c.0", "1d", "2024-01-01", "2024-10-01", adjust="difference", view="as_of",
                             session=es)  # fmt: skip
    assert again.inserted == again.updated == 0
    after = hdi_lab.sql(
        f'SELECT * FROM "{es.schema}".features_momentum_v1_1d_difference_as_of ORDER BY event_timestamp', session=es
    )
    pd.testing.assert_frame_equal(after.iloc[: len(early)], early)  # created too: never rewritten
    once = features.read(SET, "ES.c.0", "2024-01-01", "2024-10-02", adjust="difference", view="as_of", session=es)
    assert len(once) == len(after)


# --- identity, read, errors, front ends ------------------------------------------------------------------


def test_views_and_adjustments_are_stored_apart(es: HdiSession) -> None:
    for how, view in (("ratio", "research"), ("ratio", "as_of"), ("difference", None), ("none", "as_of")):
        features.compute(SET, "ES.c.0", "1d", "2024-01-01", "2024-09-01", adjust=how, view=view, session=es)
    listing = features.list_sets(session=es)
    mine = listing[listing["variant"].fillna("") != ""].sort_values("variant")
    assert mine["variant"].tolist() == ["difference_research", "none", "ratio_as_of", "ratio_research"]
    assert mine["table"].tolist() == [f"features_momentum_v1_1d_{v}" for v in mine["variant"]]
    registry = hdi_lab.sql("SELECT table_name, series_id, adjust, view FROM feature_series ORDER BY 1", session=es)
    assert set(registry["series_id"]) == {series_id(DATASET, "ES.c.0")} and series_id(DATASET, "ES.c.0") < 0
    assert registry[["adjust", "view"]].values.tolist() == [
        ["difference", "research"],
        ["none", "as_of"],
        ["ratio", "as_of"],
        ["ratio", "research"],
    ]
    # the per-instrument table is untouched, and a view never reads another's rows
    assert "features_momentum_v1_1d" not in set(listing["table"].dropna())
    a = features.read(SET, "ES.c.0", "2024-03-01", "2024-04-01", adjust="ratio", view="as_of", session=es)
    r = features.read(SET, "ES.c.0", "2024-03-01", "2024-04-01", adjust="ratio", session=es)
    assert len(a) == len(r) and not np.allclose(a["sma_20"], r["sma_20"])
    with pytest.raises(ValidationError, match=r"ES.c.0 has no features in features_momentum_v1_1d_difference_as_of"):
        features.read(SET, "ES.c.0", "2024-03-01", "2024-04-01", adjust="difference", view="as_of", session=es)


def test_clear_errors(es: HdiSession) -> None:
    args = (SET, "2024-01-01", "2024-06-01")
    with pytest.raises(ValidationError, match=r"applies to continuous symbols .* not 'ESH4'"):
        features.compute(args[0], "ESH4", "1d", *args[1:], adjust="ratio", session=es)
    with pytest.raises(ValidationError, match=r"view='as_of' applies to back-adjusted continuous series: pass adjust="):
        features.compute(args[0], "ES.c.0", "1d", *args[1:], view="as_of", session=es)
    with pytest.raises(ValidationError, match=r"view='asof' is not valid: use one of research, as_of"):
        features.compute(args[0], "ES.c.0", "1d", *args[1:], adjust="ratio", view="asof", session=es)
    with pytest.raises(ValidationError, match=r"adjust='log' is not valid"):
        features.compute(args[0], "ES.c.0", "1d", *args[1:], adjust="log", session=es)
    with pytest.raises(ValidationError, match=r"interval='5m' cannot be combined with adjust"):
        features.compute(args[0], "ES.c.0", "5m", *args[1:], adjust="ratio", session=es)
    with pytest.raises(ValidationError, match=r"unknown futures root 'NQ'"):
        features.compute(args[0], "NQ.c.0", "1d", *args[1:], adjust="ratio", session=es)
    with pytest.raises(ValidationError, match=r"no open interest is stored for ES"):
        features.compute(args[0], "ES.n.0", "1d", *args[1:], adjust="ratio", session=es)
    with pytest.raises(ValidationError, match=r"ES.c.0 has no features in features_momentum_v1_1d_ratio_research"):
        features.read(SET, "ES.c.0", "2024-01-01", "2024-06-01", adjust="ratio", session=es)


def test_hdi_features_compute_takes_adjust_and_view(es: HdiSession, hdi_env: dict[str, str]) -> None:
    code, out, err = run_cli(
        ["features", "compute", "--set", SET, "--symbols", "ES.c.0", "--start", "2024-01-01", "--end", "2024-07-01",
         "--adjust", "ratio", "--view", "as_of"]
    )  # fmt: skip
    assert code == 0, err
    assert "features_momentum_v1_1d_ratio_as_of" in out and "continuous series (ratio, as_of view)" in out
    want = features.compute(SET, "ES.c.0", "1d", "2024-01-01", "2024-07-01", adjust="ratio", view="as_of", session=es)
    assert want.inserted == want.updated == 0  # the CLI stored the same rows
    with pytest.raises(SystemExit):  # argparse's choices: a usage error
        run_cli(["features", "compute", "--set", SET, "--symbols", "ES.c.0", "--adjust", "ratio", "--view", "later"])
