"""hdi_lab.indicators against textbook formulas written here in plain Python loops (not pandas-ta).

The references implement the conventions documented in hdi_lab.indicators (EMA seeded with an
SMA, RSI seeded with the first change, population deviation for Bollinger bands, ATR seeded with
the mean of the first TRs, sample deviation for volatility and z-score). Values agree to 1e-9
relative (plus 1e-12 of the price level for quantities that cross zero, e.g. MACD); warm-up NaNs
must match exactly.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES
from helpers import read_store

from hdi_lab import indicators
from hdi_lab.errors import ValidationError
from hdi_lab.indicators import column, compute

pytestmark = pytest.mark.unit

NAN = math.nan


def bars(n: int = 400, seed: int = 7, flat: tuple[int, int] | None = (200, 230)) -> pd.DataFrame:
    """Deterministic daily OHLCV bars (geometric random walk) with one flat stretch (no moves)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
    flat = flat if flat and flat[1] <= n else None
    if flat:
        close[flat[0] : flat[1]] = close[flat[0]]
    opn = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 0.006, n)) * close
    high = np.maximum(opn, close) + spread
    low = np.minimum(opn, close) - spread
    if flat:
        high[flat[0] : flat[1]] = low[flat[0] : flat[1]] = close[flat[0] : flat[1]]
    volume = rng.integers(100, 10_000, n).astype(np.float64)
    # intraday timestamps a few per day, so the daily VWAP anchor has several bars per group
    index = pd.date_range("2023-01-02 14:30", periods=n, freq="3h", tz="UTC")
    return pd.DataFrame({"open": opn, "high": high, "low": low, "close": close, "volume": volume}, index=index)


# -- references -----------------------------------------------------------------------------


def ref_sma(x: list[float], n: int) -> list[float]:
    return [NAN if t < n - 1 else sum(x[t - n + 1 : t + 1]) / n for t in range(len(x))]


def ref_ema(x: list[float], n: int, first: int = 0) -> list[float]:
    """EMA from index ``first`` (earlier values NaN), seeded with the SMA of its first n values."""
    a = 2 / (n + 1)
    out = [NAN] * len(x)
    seed_at = first + n - 1
    if seed_at >= len(x):
        return out
    e = sum(x[first : seed_at + 1]) / n
    out[seed_at] = e
    for t in range(seed_at + 1, len(x)):
        e = a * x[t] + (1 - a) * e
        out[t] = e
    return out


def ref_wilder(x: list[float], n: int, first: int, seed: float) -> list[float]:
    out = [NAN] * len(x)
    v = seed
    out[first] = v
    for t in range(first + 1, len(x)):
        v = v + (x[t] - v) / n
        out[t] = v
    return out


def ref_rsi(c: list[float], n: int) -> list[float]:
    gains = [NAN] + [max(c[t] - c[t - 1], 0.0) for t in range(1, len(c))]
    losses = [NAN] + [max(c[t - 1] - c[t], 0.0) for t in range(1, len(c))]
    g = ref_wilder(gains, n, 1, gains[1])  # seeded with the first change
    lo = ref_wilder(losses, n, 1, losses[1])
    out = []
    for t in range(len(c)):
        total = g[t] + lo[t]
        out.append(NAN if t < n or total == 0 else 100 * g[t] / total)
    return out


def ref_std(x: list[float], ddof: int) -> float:
    m = sum(x) / len(x)
    return math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - ddof))


def ref_bbands(c: list[float], n: int, k: float) -> tuple[list[float], list[float]]:
    upper, lower = [], []
    for t in range(len(c)):
        if t < n - 1:
            upper.append(NAN)
            lower.append(NAN)
            continue
        w = c[t - n + 1 : t + 1]
        m, s = sum(w) / n, ref_std(w, 0)
        upper.append(m + k * s)
        lower.append(m - k * s)
    return upper, lower


def ref_atr(h: list[float], lo: list[float], c: list[float], n: int) -> list[float]:
    tr = [h[0] - lo[0]] + [max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])) for t in range(1, len(c))]
    out = ref_wilder(tr, n, n - 1, sum(tr[:n]) / n)
    out[n - 1] = NAN  # first value at bar n (documented)
    return out


def ref_logret(c: list[float]) -> list[float]:
    return [NAN] + [math.log(c[t] / c[t - 1]) for t in range(1, len(c))]


def ref_vol(c: list[float], n: int) -> list[float]:
    r = ref_logret(c)
    return [NAN if t < n else ref_std(r[t - n + 1 : t + 1], 1) for t in range(len(c))]


def ref_macd(c: list[float], fast: int, slow: int, signal: int) -> tuple[list[float], list[float]]:
    f, s = ref_ema(c, fast), ref_ema(c, slow)
    line = [a - b for a, b in zip(f, s, strict=True)]
    return line, ref_ema(line, signal, first=slow - 1)


def ref_obv(c: list[float], v: list[float]) -> list[float]:
    out, total = [NAN], 0.0
    for t in range(1, len(c)):
        total += (c[t] > c[t - 1]) * v[t] - (c[t] < c[t - 1]) * v[t]
        out.append(total)
    return out


def ref_zscore(c: list[float], n: int) -> list[float]:
    out = []
    for t in range(len(c)):
        if t < n - 1:
            out.append(NAN)
            continue
        w = c[t - n + 1 : t + 1]
        s = ref_std(w, 1)
        out.append(NAN if s == 0 else (c[t] - sum(w) / n) / s)
    return out


def ref_stoch(h: list[float], lo: list[float], c: list[float], k: int, d: int, sk: int) -> tuple[list[float], ...]:
    raw = []
    for t in range(len(c)):
        if t < k - 1:
            raw.append(NAN)
            continue
        hh, ll = max(h[t - k + 1 : t + 1]), min(lo[t - k + 1 : t + 1])
        raw.append(NAN if hh == ll else 100 * (c[t] - ll) / (hh - ll))
    pk = ref_sma(raw, sk)
    return pk, ref_sma(pk, d)


def ref_adx(h: list[float], lo: list[float], c: list[float], n: int) -> tuple[list[float], ...]:
    size = len(c)
    plus, minus, tr = [NAN], [NAN], [NAN]
    for t in range(1, size):
        up, down = h[t] - h[t - 1], lo[t - 1] - lo[t]
        plus.append(up if up > down and up > 0 else 0.0)
        minus.append(down if down > up and down > 0 else 0.0)
        tr.append(max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])))
    p_avg, m_avg, t_avg = (ref_wilder(x, n, 1, x[1]) for x in (plus, minus, tr))
    dmp = [100 * p_avg[t] / t_avg[t] if t >= 1 else NAN for t in range(size)]
    dmn = [100 * m_avg[t] / t_avg[t] if t >= 1 else NAN for t in range(size)]
    dx = [100 * abs(dmp[t] - dmn[t]) / (dmp[t] + dmn[t]) if t >= 1 else NAN for t in range(size)]
    adx = ref_wilder(dx, n, n, dx[n])
    mask = [NAN if t < n else 0.0 for t in range(size)]
    return (
        [NAN if t < 2 * n - 1 else v for t, v in enumerate(adx)],
        [v + m for v, m in zip(dmp, mask, strict=True)],
        [v + m for v, m in zip(dmn, mask, strict=True)],
    )


def ref_vwap(frame: pd.DataFrame) -> list[float]:
    out, day, pv, vol = [], None, 0.0, 0.0  # first bar NaN: documented warm-up of 1
    for ts, row in frame.iterrows():
        if ts.date() != day:
            day, pv, vol = ts.date(), 0.0, 0.0
        pv += (row["high"] + row["low"] + row["close"]) / 3 * row["volume"]
        vol += row["volume"]
        out.append(pv / vol)
    out[0] = NAN
    return out


def references(f: pd.DataFrame) -> dict[str, list[float]]:
    c, h, lo = f["close"].tolist(), f["high"].tolist(), f["low"].tolist()
    v = f["volume"].astype(float).tolist()
    macd, macds = ref_macd(c, 12, 26, 9)
    bbu, bbl = ref_bbands(c, 20, 2.0)
    stochk, stochd = ref_stoch(h, lo, c, 14, 3, 3)
    adx, dmp, dmn = ref_adx(h, lo, c, 14)
    return {
        "adx_14": adx,
        "dmp_14": dmp,
        "dmn_14": dmn,
        "rsi_14": ref_rsi(c, 14),
        "sma_20": ref_sma(c, 20),
        "ema_20": ref_ema(c, 20),
        "macd_12_26_9": macd,
        "macds_12_26_9": macds,
        "macdh_12_26_9": [a - b for a, b in zip(macd, macds, strict=True)],
        "atr_14": ref_atr(h, lo, c, 14),
        "bbu_20_2": bbu,
        "bbl_20_2": bbl,
        "logret_1": ref_logret(c),
        "vol_20": ref_vol(c, 20),
        "ret_1": [NAN] + [c[t] / c[t - 1] - 1 for t in range(1, len(c))],
        "obv": ref_obv(c, v),
        "zscore_20": ref_zscore(c, 20),
        "stochk_14_3_3": stochk,
        "stochd_14_3_3": stochd,
        "vwap_d": ref_vwap(f),
        "sma_5": ref_sma(c, 5),
        "bbu_10_1p5": ref_bbands(c, 10, 1.5)[0],
    }


# -- tests ----------------------------------------------------------------------------------


def test_values_match_textbook_references() -> None:
    f = bars()
    want = references(f)
    got = compute(f, list(want))
    assert list(got.columns) == list(want)
    scale = float(f["close"].abs().max())
    for name, ref in want.items():
        r = np.asarray(ref, dtype=np.float64)
        g = got[name].to_numpy()
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r), err_msg=f"{name}: NaN positions")
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12 * scale, equal_nan=True, err_msg=name)
        assert int(np.isnan(g[: column(name).warmup]).sum()) == column(name).warmup, name


def test_flat_prices_give_nan_not_garbage() -> None:
    f = bars()
    got = compute(f, "rsi_14,stochk_14_3_3,zscore_20")
    flat = slice(200 + 20, 230)  # windows entirely inside the flat stretch
    assert got["rsi_14"].iloc[200 + 14 : 230].notna().all()  # RSI keeps its earlier averages (decaying)
    assert got["stochk_14_3_3"].iloc[flat].isna().all()  # highest == lowest: undefined
    assert got["zscore_20"].iloc[flat].isna().all()  # zero deviation: undefined
    assert got["stochk_14_3_3"].iloc[240:].notna().all()


def test_momentum_v1_names_and_warmups() -> None:
    names = [
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
    cols = indicators.columns(names)
    assert [c.name for c in cols] == names
    assert {c.name: c.warmup for c in cols} == {
        "rsi_14": 14,
        "sma_20": 19,
        "ema_20": 19,
        "macd_12_26_9": 25,
        "macds_12_26_9": 33,
        "atr_14": 14,
        "bbu_20_2": 19,
        "bbl_20_2": 19,
        "logret_1": 1,
        "vol_20": 20,
    }
    assert indicators.min_bars(cols) == 34
    assert column("rsi").name == "rsi_14" and column("BBU_20_2.0".replace(".0", "")).name == "bbu_20_2"
    assert indicators.make_column("bbands", "bbu", length=10, std=1.5).name == "bbu_10_1p5"
    assert column("bbu_10_1p5").params == (("length", 10), ("std", 1.5))
    table = indicators.describe()
    assert {
        "ret",
        "logret",
        "sma",
        "ema",
        "rsi",
        "macd",
        "bbands",
        "atr",
        "adx",
        "stoch",
        "obv",
        "vwap",
        "vol",
        "zscore",
    } <= set(table["indicator"])


ALL = [indicators.make_column(i, o).name for i in indicators.CATALOGUE for o in indicators.CATALOGUE[i].outputs]


def test_no_look_ahead_prefixes_are_bit_exact() -> None:
    """A value never changes when later bars are appended, changed or removed (bit for bit)."""
    f = bars(300)
    full = compute(f, ALL, short="nan")
    changed = f.copy()
    changed.iloc[150:, :] = changed.iloc[150:, :] * 1.7  # rewrite the future
    after = compute(changed, ALL, short="nan")
    pd.testing.assert_frame_equal(after.iloc[:150], full.iloc[:150], check_exact=True)
    for k in (*range(1, 64), 149):
        part = compute(f.iloc[:k], ALL, short="nan")
        pd.testing.assert_frame_equal(part, full.iloc[:k], check_exact=True, obj=f"first {k} bars")


def test_input_frame_is_not_modified() -> None:
    f = bars(120)
    before = f.copy(deep=True)
    compute(f, ALL)
    pd.testing.assert_frame_equal(f, before, check_exact=True)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("foo_3", "indicator 'foo'.*not known: use one of ret, logret"),
        ("rsi_x", r"rsi parameter length='x' is not valid: use a whole number"),
        ("sma_0", "must be >= 1"),
        ("rsi_14_3", "too many parameters: rsi takes length"),
        ("vwap_q", "anchor='q' is not valid: use one of d, w, m"),
        ("macd_26_12_9", "fast=26 must be shorter than slow=12"),
        ("rsi-14; drop table x", "not valid: write <output>_<params>"),
    ],
)
def test_unknown_indicator_or_parameter_is_a_clear_error(spec: str, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        column(spec)


def test_bad_keyword_or_empty_list_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="rsi has no parameter lenght: its parameters are length"):
        indicators.make_column("rsi", lenght=14)
    with pytest.raises(ValidationError, match="no indicator columns"):
        indicators.columns(" , ")


def test_too_few_bars_raise_or_give_nan() -> None:
    f = bars(30, flat=None)
    with pytest.raises(ValidationError, match=r"^macds_12_26_9 needs at least 34 bars, got 30"):
        compute(f, "macd_12_26_9,macds_12_26_9")
    got = compute(f, "macd_12_26_9,macds_12_26_9,sma_20", short="nan")
    assert got["macds_12_26_9"].isna().all() and got["sma_20"].notna().sum() == 11
    with pytest.raises(ValidationError, match="short='x' is not valid"):
        compute(f, "sma_5", short="x")  # type: ignore[arg-type]
    # a real Databento file: 4 one-minute bars
    real = read_store(FIXTURES / "GLBX.MDP3" / "test_data.ohlcv-1m.dbn.zst").to_df(map_symbols=False)
    with pytest.raises(ValidationError, match="sma_20 needs at least 20 bars, got 4"):
        compute(real, "sma_20")
    np.testing.assert_allclose(
        compute(real, "ret_1")["ret_1"].iloc[1:], (real["close"] / real["close"].shift() - 1).iloc[1:], rtol=1e-12
    )


def test_bad_bars_are_refused() -> None:
    f = bars(60, flat=None)
    with pytest.raises(ValidationError, match=r"no column.*volume"):
        compute(f.drop(columns="volume"), "obv")
    holes = f.copy()
    holes.iloc[10, holes.columns.get_loc("close")] = np.nan
    with pytest.raises(ValidationError, match="missing or infinite close at 2023-01-03 20:30"):
        compute(holes, "sma_5")
    with pytest.raises(ValidationError, match="ascending time order"):
        compute(f.iloc[::-1], "sma_5")
    with pytest.raises(ValidationError, match="ascending time order"):
        compute(pd.concat([f, f]).sort_index(), "sma_5")


def test_vwap_leaves_the_warning_filters_alone() -> None:
    import warnings

    before = list(warnings.filters)
    compute(bars(50, flat=None), "vwap_d")
    assert warnings.filters == before


def test_many_instruments_at_once_equal_one_by_one_bit_exact() -> None:
    """compute_many (one panel for all instruments) == compute per instrument, bit for bit."""
    frames = [
        bars(400, seed=1),
        bars(260, seed=2, flat=(100, 130)),
        bars(35, seed=3, flat=None),
        bars(20, seed=4, flat=None),
        bars(1, seed=5, flat=None),
        bars(120, seed=6, flat=None) * 1e-3,
    ]
    many = indicators.compute_many(frames, ALL)
    for f, got in zip(frames, many, strict=True):
        want = compute(f, ALL, short="nan")
        pd.testing.assert_frame_equal(pd.DataFrame(got, index=f.index, columns=want.columns), want, check_exact=True)


def test_a_market_that_never_moved_has_no_rsi_and_warns_nothing() -> None:
    """No gain and no loss from the first bar: RSI is 0/0, NaN in the panel as in pandas-ta, without numpy's
    'invalid value' warning (warnings are errors here)."""
    frame = bars(60, flat=(0, 60))
    (got,) = indicators.compute_many([frame], ["rsi_14"])
    want = compute(frame, ["rsi_14"], short="nan")
    assert np.isnan(got).all()
    pd.testing.assert_frame_equal(pd.DataFrame(got, index=frame.index, columns=want.columns), want, check_exact=True)


# -- resuming from a saved state ------------------------------------------------------------

MOMENTUM = [
    "rsi_14",
    "sma_20",
    "ema_20",
    "macd_12_26_9",
    "macds_12_26_9",
    "macdh_12_26_9",
    "atr_14",
    "bbu_20_2",
    "bbm_20_2",
    "bbl_20_2",
    "logret_1",
    "vol_20",
    "ema_5",
    "bbu_10_1p5",
]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(((a == b) | (np.isnan(a) & np.isnan(b))).all())


def test_ewm_resumes_from_its_previous_output_bit_exact() -> None:
    """pandas ewm(adjust=False) keeps only its previous output: [output[t-1], x[t], ...] continues it."""
    rng = np.random.default_rng(3)
    x = 50 * np.exp(np.cumsum(rng.normal(0, 0.03, 1500)))
    for kwargs in ({"span": 20}, {"span": 9}, {"alpha": 1.0 / 14}):
        full = pd.Series(x).ewm(adjust=False, **kwargs).mean().to_numpy()
        for t in (1, 2, 33, 500, 1499):
            part = pd.Series(np.r_[full[t - 1], x[t:]]).ewm(adjust=False, **kwargs).mean().to_numpy()
            assert same(part[1:], full[t:]), (kwargs, t)


def test_resumed_computation_equals_the_full_one_bit_exact() -> None:
    """compute_resumable from the state after bar t-1 and the last history() bars gives, for the new bars,
    the values and the state of the computation from the first bar (EMA, RSI, MACD, ATR, windows)."""
    frames = [bars(500, seed=s, flat=(100 + 20 * s, 150 + 20 * s)) for s in range(1, 5)] + [bars(500, seed=9) * 1e-4]
    full, after_all = indicators.compute_resumable(frames, MOMENTUM)
    layout = indicators.state_layout(MOMENTUM)
    assert layout is not None and after_all.shape == (5, len(layout)) and not np.isnan(after_all).any()
    assert "rsi_14.up" in layout and "macd_12_26_9.signal" in layout and "atr_14.atr" in layout
    w = indicators.history(MOMENTUM)
    assert w == 34
    for cut in (w, w + 1, 97, 130, 311, 499):
        _, state = indicators.compute_resumable([f.iloc[:cut] for f in frames], MOMENTUM)
        for step in (1, 2, 25):
            got, after = indicators.compute_resumable(
                [f.iloc[cut - w : cut + step] for f in frames], MOMENTUM, context=w, state=state
            )
            _, want_after = indicators.compute_resumable([f.iloc[: cut + step] for f in frames], MOMENTUM)
            for j in range(len(frames)):
                assert same(got[j][w:], full[j][cut : cut + step]), (cut, step, j)
            assert same(after, want_after), (cut, step)
    # the same through compute(): one instrument alone
    one_by_one = compute(frames[0], MOMENTUM, short="nan").to_numpy()
    assert same(full[0], one_by_one)


def test_window_indicators_do_not_depend_on_where_the_series_starts() -> None:
    """SMA, Bollinger bands, volatility and z-score use their window only: the same bits from any start
    (pandas' rolling variance would differ in the last bits)."""
    f = bars(400, seed=11)
    cols = ["sma_20", "bbu_20_2", "bbl_20_2", "vol_20", "zscore_20", "logret_1", "stochk_14_3_3"]
    full = compute(f, cols, short="nan")
    for k in (1, 2, 3, 7, 50, 123, 300):
        part = compute(f.iloc[k:], cols, short="nan")
        for c in cols:
            w = column(c).warmup
            assert same(part[c].to_numpy()[w:], full[c].to_numpy()[k + w :]), (c, k)


def test_resuming_needs_resumable_columns_and_enough_context() -> None:
    trend = ["ret_1", "adx_14", "obv", "zscore_20"]
    assert indicators.state_layout(trend) is None
    assert indicators.state_layout("sma_20,bbu_20_2") == ()
    frames = [bars(100, flat=None)]
    with pytest.raises(ValidationError, match="cannot be resumed"):
        indicators.compute_resumable(frames, trend)
    _, state = indicators.compute_resumable(frames, "rsi_14,ema_20")
    assert indicators.history("rsi_14,ema_20") == 20
    with pytest.raises(ValidationError, match="context=5 is too short: these columns need 20 bars"):
        indicators.compute_resumable(frames, "rsi_14,ema_20", context=5, state=state)


def test_pandas_options_are_left_as_they_were() -> None:
    """pandas-ta turns copy-on-write on for the whole process when imported; computing an indicator through
    hdi_lab leaves the caller's pandas options as they were (a fresh interpreter: pandas-ta not imported yet)."""
    code = (
        "import pandas as pd\n"
        "from hdi_lab import indicators\n"
        "close = [1.0, 2.0, 3.0, 4.0, 5.0]\n"
        "frame = pd.DataFrame({'open': close, 'high': close, 'low': close, 'close': close, 'volume': close},\n"
        "                     index=pd.date_range('2024-01-02', periods=5, freq='min', tz='UTC'))\n"
        "indicators.compute(frame, 'sma_2,rsi_2')\n"
        "import pandas_ta\n"  # imported by hdi_lab above, not by this line
        "print(pd.options.mode.copy_on_write)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
