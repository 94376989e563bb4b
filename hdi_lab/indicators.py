"""Technical indicators over bars: pure frame -> frame functions built on pandas-ta.

A *column* names one indicator output with its parameters, ``<output>_<param>_<param>...``
(parameters in the order listed below, all of them; ``2.5`` is written ``2p5``): ``rsi_14``,
``macds_12_26_9``, ``bbu_20_2``. A bare output (``rsi``) means the default parameters and is
returned under its full name (``rsi_14``). :func:`compute` takes a bar frame (columns ``open``,
``high``, ``low``, ``close``, ``volume`` as needed, one instrument, ascending unique index) and
returns a new frame with one column per requested name, on the same index. Nothing is read or
written and the input is never modified.

==========  ===========================  ============================  =====================================
indicator   parameters (order)           outputs                       convention (pandas-ta 0.4.71b0, talib=False)
==========  ===========================  ============================  =====================================
ret         length=1                     ret                           close / close[t-length] - 1
logret      length=1                     logret                        ln(close / close[t-length])
sma         length=20                    sma                           mean of the last ``length`` closes
ema         length=20                    ema                           alpha 2/(length+1), seeded with the SMA
                                                                       of the first ``length`` closes
rsi         length=14                    rsi                           Wilder: RMA (alpha 1/length) of gains and
                                                                       losses, seeded with the *first change*
                                                                       (pandas-ta; TA-Lib seeds with an SMA);
                                                                       100 * gain / (gain + loss)
macd        fast=12 slow=26 signal=9     macd macdh macds              EMA(fast) - EMA(slow) (EMAs as above);
                                                                       signal = EMA(signal) of the MACD line
                                                                       from its first value; macdh = macd - macds
bbands      length=20 std=2              bbl bbm bbu                   SMA +- std * *population* standard
                                                                       deviation (ddof=0, Bollinger's and
                                                                       TA-Lib's definition; pandas-ta's default
                                                                       is ddof=1), computed window by window
                                                                       (see *Deviations* below)
atr         length=14                    atr                           true range with TR[0] = high - low,
                                                                       seeded with the mean of the first
                                                                       ``length`` TRs, then Wilder's RMA; the
                                                                       first value is at bar ``length`` (pandas-ta
                                                                       prints one at ``length - 1`` but only for
                                                                       frames of ``length + 1`` bars or more)
adx         length=14                    adx dmp dmn                   Wilder's DMI from the second bar, each
                                                                       average a pandas-ta RMA seeded with its
                                                                       first value: dmp/dmn = 100 * RMA(+DM/-DM)
                                                                       / RMA(TR); adx = RMA of DX = 100 *
                                                                       |dmp - dmn| / (dmp + dmn) from bar length
                                                                       (ta.adx/ta.atr/ta.true_range are not used:
                                                                       see _true_range)
stoch       k=14 d=3 smooth_k=3          stochk stochd                 %K = SMA(smooth_k) of 100 * (close - LL)
                                                                       / (HH - LL) over ``k`` bars; %D = SMA(d);
                                                                       NaN where HH = LL (pandas-ta's ``stoch``
                                                                       shifts every range by epsilon then, past
                                                                       ones included: not used)
obv         (none)                       obv                           cumulative sum of sign(change) * volume
                                                                       from the second bar
vwap        anchor=d (d, w or m)         vwap                          typical price (h+l+c)/3 weighted by volume,
                                                                       cumulated within each UTC day/week/month;
                                                                       from the second bar (pandas-ta needs two)
vol         length=20                    vol                           sample standard deviation (ddof=1) of
                                                                       the last ``length`` 1-bar log returns
                                                                       (window by window, see below)
zscore      length=20                    zscore                        (close - SMA) / sample std (ddof=1,
                                                                       window by window, see below)
==========  ===========================  ============================  =====================================

**NaN policy.** Each output has a warm-up: the number of leading bars with no value
(:attr:`Column.warmup`: ``rsi_14`` 14, ``sma_20`` 19, ``macds_12_26_9`` 33, ``vol_20`` 20, ...;
``indicators.describe()`` lists them). A value never depends on how many bars follow it: a
frame of exactly ``warmup + 1`` bars gives the same last value as a longer one.
Those rows are always NaN, even where pandas-ta would print an immature number (its RSI starts
at the second bar). A frame shorter than ``warmup + 1`` bars raises :class:`ValidationError`
(``short="nan"`` returns all-NaN columns instead, which is what feature sets store for a newly
listed instrument). After the warm-up a value is NaN only where the formula is undefined (e.g.
RSI over bars that never move, a z-score or stochastic over a flat window; infinities become NaN). Missing input values (NaN) raise ValidationError: fill or drop
them first.

**Bars, not time.** Windows count bars: the bar after a gap (weekend, halt, missing minute) is
simply the next bar. :mod:`hdi_lab.features` reports gaps and can refuse them (``max_gap``).

**No look-ahead.** Every value at bar ``t`` uses bars ``<= t`` only, and is computed by a forward
pass over the whole frame, so appending bars never changes earlier values (tested bit-exact).

**Deviations (a convention of hdi_lab, not pandas-ta's).** The standard deviations behind
``bbands``, ``vol`` and ``zscore`` are computed from each window alone, in a fixed order: the
window's sum front to back, mean = sum / length, then the squared deviations summed front to
back, divided by ``length - ddof``; a flat window (no change between its values) is exactly 0.
pandas-ta's ``ta.stdev`` runs pandas' rolling variance, an online add/remove algorithm whose last
bits depend on where the series starts; the values here differ from it in the last bits at most
(tests check them against textbook formulas at 1e-9 relative) but are the same bits whatever
bar the frame starts at, like the SMA (pandas-ta's convolution kernel, window-local too) and the
rolling min/max of ``stoch``.

**Resuming.** The recursive averages (EMA, the RMAs of RSI and ATR, MACD's three EMAs) are
pandas ``ewm(adjust=False)`` runs, whose whole state is their previous output: continued from
the saved outputs of bar ``t - 1`` they give, from bar ``t`` on, the bits of the run from the
first bar. :func:`compute_resumable` returns those states and resumes from them with only the
last :func:`history` bars (for the windows); feature sets use it to compute new bars without
reading an instrument's whole history (:mod:`hdi_lab.features`). ADX, stochastic, OBV, VWAP,
z-score and returns of other lengths are not resumable (:func:`state_layout` is None).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from hdi_lab.errors import ValidationError
from hdi_lab.extras import require

ParamValue = int | float | str


@dataclass(frozen=True)
class Param:
    name: str
    default: ParamValue
    minimum: float | None = 1
    choices: tuple[str, ...] = ()


Series = pd.Series
Run = Callable[[pd.DataFrame, Mapping[str, Any]], dict[str, Series]]


@dataclass(frozen=True)
class Indicator:
    """One catalogue entry: a pandas-ta call and the outputs it yields."""

    name: str
    params: tuple[Param, ...]
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    run: Run
    warmup: Callable[[Mapping[str, Any]], dict[str, int]]
    doc: str


@dataclass(frozen=True)
class Column:
    """One output of one indicator with all its parameters: ``column("rsi_14")``."""

    name: str
    indicator: str
    output: str
    params: tuple[tuple[str, ParamValue], ...]

    @property
    def warmup(self) -> int:
        """Leading bars without a value."""
        spec = CATALOGUE[self.indicator]
        return spec.warmup(dict(self.params))[self.output]

    @property
    def inputs(self) -> tuple[str, ...]:
        return CATALOGUE[self.indicator].inputs

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "indicator": self.indicator, "output": self.output,
                "params": dict(self.params), "warmup": self.warmup}


def _ta() -> Any:
    return require("pandas_ta", "ta")


# -- the catalogue --------------------------------------------------------------------------


def _pick(frame: pd.DataFrame, prefixes: Mapping[str, str]) -> dict[str, Series]:
    """Outputs of a multi-column pandas-ta result, found by their column-name prefix."""
    out = {}
    for output, prefix in prefixes.items():
        matches = [c for c in frame.columns if str(c).startswith(prefix)]
        out[output] = frame[matches[0]]
    return out


def _ret(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    return {"ret": _ta().percent_return(b["close"], length=p["length"])}


def _logret(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    return {"logret": _ta().log_return(b["close"], length=p["length"])}


def _nb_sma(x: np.ndarray, n: int) -> np.ndarray:
    """pandas-ta's SMA kernel (what ``ta.sma`` runs), always in its long-input regime.

    ``nb_sma`` convolves with the two inputs swapped when the series is longer than the window,
    which changes the summation order: a series of exactly ``n`` bars would get a last value
    differing in the last bit from the same bar in a longer series. One NaN appended keeps every
    value independent of how many bars follow it.
    """
    _ta()
    from pandas_ta.overlap.sma import nb_sma

    x = np.ascontiguousarray(x, dtype=np.float64)
    if len(x) == n:
        return np.asarray(nb_sma(np.append(x, np.nan), n))[:-1]
    return np.asarray(nb_sma(x, n))


def _sma_series(x: Series, n: int) -> Series:
    return pd.Series(_nb_sma(x.to_numpy(np.float64), n), index=x.index)


def _sma(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    return {"sma": _sma_series(b["close"], p["length"])}


def _ema(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    return {"ema": _ta().ema(b["close"], length=p["length"], talib=False)}


def _rsi(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    return {"rsi": _ta().rsi(b["close"], length=p["length"], talib=False)}


def _macd(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    ta = _ta()
    close = b["close"]
    if len(close) >= p["slow"] + p["signal"] - 1:
        r = ta.macd(close, fast=p["fast"], slow=p["slow"], signal=p["signal"], talib=False)
        return _pick(r, {"macd": "MACD_", "macdh": "MACDh_", "macds": "MACDs_"})
    # too short for the signal line, which ta.macd refuses: its MACD line, computed as it does
    line = ta.ema(close, length=p["fast"], talib=False) - ta.ema(close, length=p["slow"], talib=False)
    nothing = pd.Series(np.nan, index=close.index)
    return {"macd": line, "macdh": nothing, "macds": nothing}


def _window_std(x: np.ndarray, n: int, ddof: int) -> np.ndarray:
    """Standard deviation over the last ``n`` rows, down axis 0 (1-D series or a panel).

    Window-local: each value is computed from its own ``n`` values only, in a fixed order (sum
    of the window front to back, mean = sum / n, then the squared deviations summed front to
    back), so it is the same bits wherever the series starts (pandas' rolling variance is an
    online add/remove algorithm whose last bits depend on the first row). A flat window (all
    values equal) gives exactly 0. Rows before the first full window, and windows holding NaN,
    are NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    m = len(x) - n + 1
    if m <= 0:
        return out
    if x.ndim == 1:
        out[n - 1:] = _window_std_block(x, n, ddof)
        return out
    step = max(1, 32_768 // len(x))  # a few columns at a time, so the passes stay in the CPU cache
    for j in range(0, x.shape[1], step):
        out[n - 1:, j:j + step] = _window_std_block(x[:, j:j + step], n, ddof)
    return out


def _window_std_block(x: np.ndarray, n: int, ddof: int) -> np.ndarray:
    """:func:`_window_std` from row ``n - 1`` on (elementwise along the columns: the same values
    for a column alone or in a panel)."""
    m = len(x) - n + 1
    total = x[:m].copy()
    for k in range(1, n):
        total += x[k:k + m]
    mean = total / n
    squares = np.subtract(x[:m], mean)
    np.multiply(squares, squares, out=squares)
    d = total  # reused as scratch
    for k in range(1, n):
        np.subtract(x[k:k + m], mean, out=d)
        np.multiply(d, d, out=d)
        squares += d
    squares /= n - ddof
    # a flat window (no change between its values) has exactly no deviation: count the changes
    # with an integer running sum, exact wherever the series starts
    changes = np.zeros(x.shape, dtype=np.int64)
    np.cumsum(x[1:] != x[:-1], axis=0, out=changes[1:])
    flat = changes[n - 1:] == changes[:m]
    squares[flat] = 0.0
    return np.sqrt(squares)


def _std_series(x: Series, n: int, ddof: int) -> Series:
    return pd.Series(_window_std(x.to_numpy(np.float64), n, ddof), index=x.index)


def _bbands(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    # ta.bbands' own steps (mid = SMA, dev = standard deviation), with the SMA kernel of _nb_sma and
    # the window-local deviation of _window_std
    mid = _sma_series(b["close"], p["length"])
    dev = _std_series(b["close"], p["length"], 0)
    return {"bbl": mid - p["std"] * dev, "bbm": mid, "bbu": mid + p["std"] * dev}


def _true_range(b: pd.DataFrame) -> Series:
    """max(high - low, |high - previous close|, |low - previous close|); TR[0] = high - low.

    Not ta.true_range: it adds epsilon to *every* range as soon as any bar (also a later one) has
    high == low, so a future bar could change past values.
    """
    prev = b["close"].shift(1)
    ranges = pd.concat([b["high"] - b["low"], (b["high"] - prev).abs(), (b["low"] - prev).abs()], axis=1)
    return ranges.max(axis=1)


def _atr(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    n = p["length"]
    tr = _true_range(b)
    seeded = tr.copy()
    seeded.iloc[:n - 1] = np.nan
    seeded.iloc[n - 1] = tr.iloc[:n].mean()  # as ta.atr does (presma)
    return {"atr": _ta().rma(seeded, length=n)}


def _adx(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    ta = _ta()
    n = p["length"]
    up = b["high"].diff()
    down = -b["low"].diff()
    plus = up.where((up > down) & (up > 0), 0.0).where(up.notna())
    minus = down.where((down > up) & (down > 0), 0.0).where(down.notna())
    tr = _true_range(b).where(up.notna())  # from the second bar, like the moves
    atr = ta.rma(tr, length=n)
    dmp = 100 * ta.rma(plus, length=n) / atr
    dmn = 100 * ta.rma(minus, length=n) / atr
    dx = 100 * (dmp - dmn).abs() / (dmp + dmn)
    tail = dx.iloc[n:]
    adx = ta.rma(tail, length=n).reindex(b.index) if len(tail) >= n else pd.Series(np.nan, index=b.index)
    return {"adx": adx, "dmp": dmp, "dmn": dmn}


def _stoch(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    # Not ta.stoch: its non_zero_range adds epsilon to *every* range as soon as any window (also a
    # later one) is flat, so a future bar could change past values. Here a flat window is undefined (NaN).
    lowest = b["low"].rolling(p["k"]).min()
    highest = b["high"].rolling(p["k"]).max()
    span = (highest - lowest).where(highest > lowest)
    raw = 100 * (b["close"] - lowest) / span
    k = _sma_series(raw.iloc[p["k"] - 1:], p["smooth_k"]).reindex(b.index)
    tail = k.iloc[p["k"] + p["smooth_k"] - 2:]
    if len(tail) < p["d"]:  # long enough for %K only
        return {"stochk": k, "stochd": pd.Series(np.nan, index=b.index)}
    return {"stochk": k, "stochd": _sma_series(tail, p["d"]).reindex(b.index)}


def _obv(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    return {"obv": _ta().obv(b["close"], b["volume"], talib=False)}


def _vwap(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    index = pd.DatetimeIndex(b.index)
    naive = index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index
    cols = {k: b[k].set_axis(naive) for k in ("high", "low", "close", "volume")}
    with warnings.catch_warnings():  # pandas-ta's vwap calls simplefilter(...) globally: keep it contained
        r = _ta().vwap(cols["high"], cols["low"], cols["close"], cols["volume"], anchor=str(p["anchor"]).upper())
    return {"vwap": r.set_axis(b.index)}


def _vol(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    ta = _ta()
    return {"vol": _std_series(ta.log_return(b["close"], length=1), p["length"], 1)}


def _zscore(b: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Series]:
    # ta.zscore's own steps, with the SMA kernel of _nb_sma and the window-local deviation; a flat
    # window has no z-score
    # (pandas-ta would divide a rounding residue by zero: +-inf or noise)
    spread = _std_series(b["close"], p["length"], 1)
    z = (b["close"] - _sma_series(b["close"], p["length"])) / spread
    return {"zscore": z.where(spread > 0)}


_C = ("close",)
_HLC = ("high", "low", "close")
_L = Param("length", 20)

CATALOGUE: dict[str, Indicator] = {i.name: i for i in (
    Indicator("ret", (Param("length", 1),), ("ret",), _C, _ret, lambda p: {"ret": p["length"]}, "simple return"),
    Indicator("logret", (Param("length", 1),), ("logret",), _C, _logret, lambda p: {"logret": p["length"]},
           "log return"),
    Indicator("sma", (_L,), ("sma",), _C, _sma, lambda p: {"sma": p["length"] - 1}, "simple moving average"),
    Indicator("ema", (_L,), ("ema",), _C, _ema, lambda p: {"ema": p["length"] - 1}, "exponential moving average"),
    Indicator("rsi", (Param("length", 14),), ("rsi",), _C, _rsi, lambda p: {"rsi": p["length"]},
           "relative strength index"),
    Indicator("macd", (Param("fast", 12), Param("slow", 26), Param("signal", 9)), ("macd", "macdh", "macds"), _C,
           _macd, lambda p: {"macd": p["slow"] - 1, "macdh": p["slow"] + p["signal"] - 2,
                             "macds": p["slow"] + p["signal"] - 2}, "moving average convergence/divergence"),
    Indicator("bbands", (Param("length", 20, 2), Param("std", 2.0, 0)), ("bbl", "bbm", "bbu"), _C, _bbands,
           lambda p: dict.fromkeys(("bbl", "bbm", "bbu"), p["length"] - 1), "Bollinger bands"),
    Indicator("atr", (Param("length", 14),), ("atr",), _HLC, _atr, lambda p: {"atr": p["length"]},
           "average true range"),
    Indicator("adx", (Param("length", 14, 2),), ("adx", "dmp", "dmn"), _HLC, _adx,
           lambda p: {"adx": 2 * p["length"] - 1, "dmp": p["length"], "dmn": p["length"]},
           "average directional index"),
    Indicator("stoch", (Param("k", 14), Param("d", 3), Param("smooth_k", 3)), ("stochk", "stochd"), _HLC, _stoch,
           lambda p: {"stochk": p["k"] + p["smooth_k"] - 2, "stochd": p["k"] + p["smooth_k"] + p["d"] - 3},
           "stochastic oscillator"),
    Indicator("obv", (), ("obv",), ("close", "volume"), _obv, lambda p: {"obv": 1}, "on-balance volume"),
    Indicator("vwap", (Param("anchor", "d", None, ("d", "w", "m")),), ("vwap",), (*_HLC, "volume"), _vwap,
           lambda p: {"vwap": 1}, "volume-weighted average price, anchored"),
    Indicator("vol", (Param("length", 20, 2),), ("vol",), _C, _vol, lambda p: {"vol": p["length"]},
           "rolling volatility of log returns"),
    Indicator("zscore", (Param("length", 20, 2),), ("zscore",), _C, _zscore, lambda p: {"zscore": p["length"] - 1},
           "rolling z-score of the close"),
)}

#: output name -> indicator name
OUTPUTS: dict[str, str] = {o: i.name for i in CATALOGUE.values() for o in i.outputs}


# -- column names ---------------------------------------------------------------------------


def _fmt(value: ParamValue) -> str:
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).replace(".", "p")


def _value(indicator: str, p: Param, raw: object) -> ParamValue:
    """A parameter value checked against its kind and bounds (text from a column name is accepted)."""
    where = f"{indicator} parameter {p.name}"
    if p.choices:
        text = str(raw).lower()
        if text not in p.choices:
            raise ValidationError(f"{where}={raw!r} is not valid: use one of {', '.join(p.choices)}")
        return text
    try:
        if isinstance(p.default, int):
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value: int | float = int(raw)  # type: ignore[call-overload]
        else:
            value = float(raw.replace("p", ".")) if isinstance(raw, str) else float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        kind = "a whole number" if isinstance(p.default, int) else "a number"
        raise ValidationError(f"{where}={raw!r} is not valid: use {kind}, e.g. {_fmt(p.default)}") from None
    if p.minimum is not None and value < p.minimum:
        raise ValidationError(f"{where}={raw!r} is not valid: it must be >= {_fmt(p.minimum)}")
    return value


def make_column(indicator: str, output: str | None = None, **params: object) -> Column:
    """The column for ``indicator`` (its first output unless ``output`` is given) with named params."""
    spec = CATALOGUE.get(indicator)
    if spec is None:
        raise ValidationError(f"indicator {indicator!r} is not known: use one of {', '.join(CATALOGUE)}")
    out = output or spec.outputs[0]
    if out not in spec.outputs:
        raise ValidationError(f"{indicator} has no output {out!r}: use one of {', '.join(spec.outputs)}")
    names = [p.name for p in spec.params]
    unknown = [k for k in params if k not in names]
    if unknown:
        allowed = ", ".join(names) if names else "none"
        raise ValidationError(f"{indicator} has no parameter {', '.join(unknown)}: its parameters are {allowed}")
    values = tuple((p.name, _value(indicator, p, params.get(p.name, p.default))) for p in spec.params)
    if indicator == "macd" and values[0][1] >= values[1][1]:  # type: ignore[operator]
        raise ValidationError(f"macd fast={values[0][1]} must be shorter than slow={values[1][1]}")
    name = "_".join([out, *(_fmt(v) for _, v in values)])
    return Column(name, indicator, out, values)


_NAME = re.compile(r"^[a-z]+(_[0-9a-z]+)*$")


def column(spec: str | Column) -> Column:
    """Parse a column name such as ``rsi_14``, ``macds_12_26_9``, ``bbu_20_2`` or ``sma``."""
    if isinstance(spec, Column):
        return spec
    text = str(spec).strip().lower()
    if not _NAME.match(text):
        raise ValidationError(f"indicator column {spec!r} is not valid: write <output>_<params>, e.g. rsi_14")
    head, *args = text.split("_")
    indicator = OUTPUTS.get(head)
    if indicator is None:
        raise ValidationError(f"indicator {head!r} (in {spec!r}) is not known: use one of {', '.join(OUTPUTS)}")
    params = CATALOGUE[indicator].params
    if len(args) > len(params):
        order = "_".join(p.name for p in params) or "no parameters"
        raise ValidationError(f"{spec!r} has too many parameters: {head} takes {order}")
    return make_column(indicator, head, **{p.name: a for p, a in zip(params, args, strict=False)})


def columns(specs: str | Iterable[str | Column]) -> tuple[Column, ...]:
    """Parse a comma-separated string or a sequence of names; duplicates are dropped."""
    items = [s for s in specs.split(",") if s.strip()] if isinstance(specs, str) else list(specs)
    if not items:
        raise ValidationError("no indicator columns given: e.g. rsi_14,sma_20")
    return tuple({c.name: c for c in map(column, items)}.values())


def min_bars(cols: Iterable[Column]) -> int:
    """Bars needed before every column has its first value."""
    return max((c.warmup for c in cols), default=0) + 1


# -- computing ------------------------------------------------------------------------------


def _check_bars(bars: pd.DataFrame, needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in bars.columns]
    if missing:
        raise ValidationError(f"bars have no column(s) {', '.join(missing)}: indicators need {', '.join(needed)}")
    if not bars.index.is_monotonic_increasing or not bars.index.is_unique:
        raise ValidationError("bars must be one instrument in ascending time order with no duplicate timestamps: "
                              "sort and split by instrument_id first")
    for c in needed:
        values = bars[c].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            at = bars.index[int(np.argmax(bad))]
            raise ValidationError(f"bars have a missing or infinite {c} at {at} ({int(bad.sum())} rows): drop or "
                                  "fill them before computing indicators")


def compute(bars: pd.DataFrame, cols: str | Iterable[str | Column], *,
            short: Literal["raise", "nan"] = "raise") -> pd.DataFrame:
    """Indicator columns for one instrument's ``bars`` (a new frame on the same index).

    ``cols``: names (``"rsi_14,sma_20"``) or :class:`Column` objects. Leading warm-up rows are
    NaN; a frame too short for a column raises ValidationError (``short="nan"``: all NaN).
    """
    wanted = columns(cols) if isinstance(cols, str) else tuple(column(c) for c in cols)
    if short not in ("raise", "nan"):
        raise ValidationError(f"short={short!r} is not valid: use raise or nan")
    needed = tuple(dict.fromkeys(i for c in wanted for i in c.inputs))
    _check_bars(bars, needed)
    n = len(bars)
    inputs = pd.DataFrame({c: bars[c].astype(np.float64) for c in needed}, index=bars.index)  # copies
    result: dict[str, np.ndarray] = {}
    groups: dict[tuple[str, tuple[tuple[str, ParamValue], ...]], list[Column]] = {}
    for c in wanted:
        groups.setdefault((c.indicator, c.params), []).append(c)
    short_ones = [c for c in wanted if n <= c.warmup]
    if short_ones and short == "raise":
        longest = max(c.warmup for c in short_ones)
        names = ", ".join(c.name for c in short_ones)
        raise ValidationError(f"{names} needs at least {longest + 1} bars, got {n}: widen the range or shorten "
                              "the window")
    for (indicator, params), members in groups.items():
        if all(n <= c.warmup for c in members):
            for c in members:
                result[c.name] = np.full(n, np.nan)
            continue
        outputs = CATALOGUE[indicator].run(inputs, dict(params))
        for c in members:
            series = outputs.get(c.output)
            if series is None:
                raise ValidationError(f"pandas-ta returned no {c.name} for {n} bars")
            values = series.to_numpy(dtype=np.float64, copy=True)
            values[:c.warmup] = np.nan
            values[np.isinf(values)] = np.nan  # a division by zero is undefined, not a number
            result[c.name] = values
    return pd.DataFrame({c.name: result[c.name] for c in wanted}, index=bars.index)


def describe() -> pd.DataFrame:
    """The catalogue as a table: indicator, parameters with defaults, outputs, inputs, an example
    column and its warm-up (leading NaN bars)."""
    rows = [{"indicator": i.name, "params": ", ".join(f"{p.name}={_fmt(p.default)}" for p in i.params),
             "outputs": ", ".join(i.outputs), "inputs": ", ".join(i.inputs),
             "example": make_column(i.name).name, "warmup": make_column(i.name).warmup, "description": i.doc} for i in CATALOGUE.values()]
    return pd.DataFrame(rows)


# -- many instruments at once ---------------------------------------------------------------
#
# The same formulas on a panel (one column per instrument, its bars from row 0, NaN below its
# last bar), so a feature set over 500 instruments makes a few pandas calls instead of a few
# thousand. Every step is the one :func:`compute` takes on one instrument -- the same pandas ewm
# kernels column by column, pandas-ta's own numba SMA, the elementwise window deviation, seeds
# taken with ``Series.mean`` on the same values -- and tests/test_indicators.py checks the result
# against :func:`compute` bit for bit, and resumed runs against full ones.


def _seed_mean(panel: np.ndarray, n: int, first: int = 0) -> np.ndarray:
    """``Series.mean()`` of rows ``first .. first+n-1`` of every column (the pandas-ta presma seed).

    pandas' mean of NaN-free floats is numpy's (pairwise) sum divided by the count; summing the
    Fortran-ordered panel along its columns gives the same sums (checked by the bit-exact test).
    Columns holding NaN there are shorter than the window: their values are masked anyway.
    """
    return np.asarray(panel[first:first + n].sum(axis=0) / n)


def _resumed(x: np.ndarray, at: int, state: np.ndarray) -> np.ndarray:
    """``x`` with rows before ``at`` dropped (NaN) and row ``at`` replaced by the saved state.

    ``ewm(adjust=False)`` keeps nothing but its previous output (its old weight is reset to 1
    after every observation), so running it over ``[state, x[at+1], ...]`` gives, from row
    ``at + 1`` on, the same bits as the run over the whole series (tested).
    """
    seeded = np.array(x, order="F", copy=True)
    seeded[:at] = np.nan
    seeded[at] = state
    return seeded


def _p_ema(x: np.ndarray, n: int, first: int = 0, resume: tuple[int, np.ndarray] | None = None) -> np.ndarray:
    """ta.ema(presma=True) of every column, over rows ``first..`` (earlier rows NaN); or, with
    ``resume=(at, state)``, continued after row ``at`` from the EMA values ``state`` there."""
    if resume is not None:
        return pd.DataFrame(_resumed(x, *resume)).ewm(span=n, adjust=False).mean().to_numpy()
    out = np.full_like(x, np.nan)
    body = x[first:]
    if len(body) < n:
        return out
    seeded = np.array(body, order="F", copy=True)
    seeded[:n - 1] = np.nan
    seeded[n - 1] = _seed_mean(body, n)
    out[first:] = pd.DataFrame(seeded).ewm(span=n, adjust=False).mean().to_numpy()
    return out


def _p_rma(x: np.ndarray, n: int, resume: tuple[int, np.ndarray] | None = None) -> np.ndarray:
    if resume is not None:
        x = _resumed(x, *resume)
    return pd.DataFrame(x).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy()


def _p_sma(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    if len(x) >= n:
        for j in range(x.shape[1]):
            out[:, j] = _nb_sma(x[:, j], n)
    return out


def _p_diff(x: np.ndarray) -> np.ndarray:
    out = np.full_like(x, np.nan)
    out[1:] = x[1:] - x[:-1]
    return out


def _p_logret(x: np.ndarray) -> np.ndarray:
    r = np.full_like(x, np.nan)
    r[1:] = x[1:] / x[:-1]
    return np.log(r)


#: the recursive averages of each resumable indicator: its state is their last values
_STATE_SLOTS: dict[str, tuple[str, ...]] = {"ema": ("ema",), "rsi": ("up", "down"), "macd": ("fast", "slow", "signal"),
                                            "atr": ("atr",)}

Carried = dict[str, np.ndarray]
Resume = tuple[int, Mapping[str, np.ndarray]]


def _panel_outputs(indicator: str, p: Mapping[str, Any], cols: Mapping[str, np.ndarray],
                   resume: Resume | None = None) -> tuple[dict[str, np.ndarray], Carried]:
    """The outputs of one indicator on the panel, and its recursive averages (``_STATE_SLOTS``).

    ``resume=(at, {slot: values})``: every column's bars from row ``at + 1`` on are new, the ones
    up to ``at`` already computed, and the averages at row ``at`` are given; outputs from row
    ``at + 1`` on then equal the run from each instrument's first bar, bit for bit (window
    indicators only look at their window, which the rows up to ``at`` must cover).
    """
    close = cols["close"]

    def state(slot: str) -> tuple[int, np.ndarray] | None:
        return None if resume is None else (resume[0], resume[1][slot])

    if indicator == "sma":
        return {"sma": _p_sma(close, p["length"])}, {}
    if indicator == "ema":
        ema = _p_ema(close, p["length"], resume=state("ema"))
        return {"ema": ema}, {"ema": ema}
    if indicator == "logret" and p["length"] == 1:
        return {"logret": _p_logret(close)}, {}
    if indicator == "vol":
        return {"vol": _window_std(_p_logret(close), p["length"], 1)}, {}
    if indicator == "rsi":
        change = _p_diff(close)
        gain, loss = change.copy(), change.copy()
        gain[gain < 0] = 0
        loss[loss > 0] = 0
        up, down = _p_rma(gain, p["length"], state("up")), _p_rma(loss, p["length"], state("down"))
        return {"rsi": 100.0 * up / (up + np.abs(down))}, {"up": up, "down": down}
    if indicator == "macd":
        fast, slow, signal = p["fast"], p["slow"], p["signal"]
        f, s = _p_ema(close, fast, resume=state("fast")), _p_ema(close, slow, resume=state("slow"))
        line = f - s
        sig = _p_ema(line, signal, first=slow - 1, resume=state("signal"))
        return {"macd": line, "macds": sig, "macdh": line - sig}, {"fast": f, "slow": s, "signal": sig}
    if indicator == "bbands":
        mid = _p_sma(close, p["length"])
        dev = _window_std(close, p["length"], 0)
        return {"bbl": mid - p["std"] * dev, "bbm": mid, "bbu": mid + p["std"] * dev}, {}
    if indicator == "atr":
        n = p["length"]
        high, low = cols["high"], cols["low"]
        prev = np.full_like(close, np.nan)
        prev[1:] = close[:-1]
        tr = np.fmax(np.fmax(high - low, np.abs(high - prev)), np.abs(low - prev))
        if resume is not None:
            atr = _p_rma(tr, n, state("atr"))
        else:
            seeded = np.array(tr, order="F", copy=True)
            if len(tr) >= n:
                seeded[:n - 1] = np.nan
                seeded[n - 1] = _seed_mean(tr, n)
            atr = _p_rma(seeded, n)
        return {"atr": atr}, {"atr": atr}
    raise KeyError(indicator)


#: indicators :func:`compute_many` runs on the panel; the others run instrument by instrument
PANEL = ("sma", "ema", "logret", "vol", "rsi", "macd", "bbands", "atr")


def _on_panel(indicator: str, params: Mapping[str, Any]) -> bool:
    return indicator in PANEL and not (indicator == "logret" and params["length"] != 1)


def _groups(wanted: Sequence[Column]) -> dict[tuple[str, tuple[tuple[str, ParamValue], ...]], list[int]]:
    groups: dict[tuple[str, tuple[tuple[str, ParamValue], ...]], list[int]] = {}
    for k, c in enumerate(wanted):
        groups.setdefault((c.indicator, c.params), []).append(k)
    return groups


def _wanted(cols: str | Iterable[str | Column]) -> tuple[Column, ...]:
    return columns(cols) if isinstance(cols, str) else tuple(column(c) for c in cols)


def state_layout(cols: str | Iterable[str | Column]) -> tuple[str, ...] | None:
    """Names of the saved state values of ``cols`` (``"rsi_14.up"``...), in the order
    :func:`compute_resumable` uses; None when a column cannot be resumed (e.g. ADX, OBV: not on
    the panel)."""
    names: list[str] = []
    for indicator, params in _groups(_wanted(cols)):
        if not _on_panel(indicator, dict(params)):
            return None
        key = "_".join([indicator, *(_fmt(v) for _, v in params)])
        names += [f"{key}.{slot}" for slot in _STATE_SLOTS.get(indicator, ())]
    return tuple(names)


def history(cols: str | Iterable[str | Column]) -> int:
    """Bars before the first new bar that :func:`compute_resumable` needs (``context``).

    One more than the longest warm-up of the indicators involved (all their outputs): that covers
    every window (a warm-up is the window less one bar; volatility's includes the return's bar)
    and the previous close of a change or true range, and the state saved after that many bars
    is fully defined.
    """
    need = 2
    for indicator, params in _groups(_wanted(cols)):
        need = max(need, max(CATALOGUE[indicator].warmup(dict(params)).values()) + 1)
    return need


def compute_many(frames: Sequence[pd.DataFrame], cols: str | Iterable[str | Column]) -> list[np.ndarray]:
    """:func:`compute` with ``short="nan"`` for many instruments' bar frames at once.

    Returns one ``(len(frame), len(cols))`` float array per frame, equal bit for bit to
    ``compute(frame, cols, short="nan").to_numpy()``.
    """
    return _many(frames, _wanted(cols))[0]


def compute_resumable(frames: Sequence[pd.DataFrame], cols: str | Iterable[str | Column], *, context: int = 0,
                      state: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`compute_many` that also returns the state after each frame's last bar, or resumes from one.

    Without ``state``: every frame holds an instrument's bars from its first one; returns the
    arrays of :func:`compute_many` and a ``(len(frames), len(state_layout(cols)))`` array of the
    recursive averages after each frame's last bar (NaN while undefined).

    With ``state`` (one row per frame, as returned): each frame's first ``context`` rows are the
    last bars already computed (``context >= history(cols)``; the state is the one after the
    last of them) followed by new bars. The rows of the new bars equal, bit for bit, what the
    computation from the instrument's first bar gives (the context rows are not meaningful);
    the returned state is the one after each frame's last bar. Only for columns with a
    :func:`state_layout`; the instruments must have had more than ``context`` bars before.
    """
    wanted = _wanted(cols)
    layout = state_layout(wanted)
    if layout is None:
        raise ValidationError(f"{', '.join(c.name for c in wanted)} cannot be resumed: compute from the first bar")
    if state is None:
        return _many(frames, wanted, layout=layout)
    if context < history(wanted):
        raise ValidationError(f"context={context} is too short: these columns need {history(wanted)} bars")
    if any(len(f) < context for f in frames):
        raise ValidationError(f"every frame needs its {context} context bars first")
    state = np.asarray(state, dtype=np.float64).reshape(len(frames), len(layout))
    return _many(frames, wanted, layout=layout, resume=(context - 1, state))


def _many(frames: Sequence[pd.DataFrame], wanted: tuple[Column, ...], layout: tuple[str, ...] = (),
          resume: tuple[int, np.ndarray] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    needed = tuple(dict.fromkeys(i for c in wanted for i in c.inputs))
    lengths = np.array([len(f) for f in frames], dtype=np.int64)
    out = [np.full((n, len(wanted)), np.nan) for n in lengths]
    states = np.full((len(frames), len(layout)), np.nan)
    if not frames:
        return out, states
    rows = int(lengths.max())
    panel = {}
    inside = np.arange(rows)[:, None] < lengths[None, :]
    for name in needed:
        x = np.full((rows, len(frames)), np.nan, order="F")
        for j, f in enumerate(frames):
            if name not in f.columns:
                _check_bars(f, needed)  # raises, naming the missing column
            x[:len(f), j] = f[name].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = inside & ~np.isfinite(x)
        if bad.any():
            _check_bars(frames[int(np.argmax(bad.any(axis=0)))], needed)  # raises, naming the bar
        panel[name] = x
    for f in frames:
        if not f.index.is_monotonic_increasing or not f.index.is_unique:
            _check_bars(f, needed)
    slot = {name: i for i, name in enumerate(layout)}
    last = np.maximum(lengths - 1, 0)
    every = np.arange(len(frames))
    stacked = np.full((len(frames), rows, len(wanted)), np.nan)  # instrument, bar, column
    elsewhere: list[int] = []
    for (indicator, params), members in _groups(wanted).items():
        p = dict(params)
        if not _on_panel(indicator, p):
            elsewhere += members
            continue
        key = "_".join([indicator, *(_fmt(v) for _, v in params)])
        given = None
        if resume is not None:
            given = (resume[0], {s: resume[1][:, slot[f"{key}.{s}"]] for s in _STATE_SLOTS.get(indicator, ())})
        values, carried = _panel_outputs(indicator, p, panel, given)
        for k in members:
            c = wanted[k]
            v = values[c.output].T.copy()
            v[:, :c.warmup] = np.nan  # with resume: context rows only (context > every warm-up)
            v[np.isinf(v)] = np.nan
            stacked[:, :, k] = v
        if layout:
            for s, series in carried.items():
                states[:, slot[f"{key}.{s}"]] = series[last, every]
    for j, n in enumerate(lengths):
        out[j] = stacked[j, :n].copy()
    if elsewhere:
        subset = [wanted[k] for k in elsewhere]
        for j, f in enumerate(frames):
            out[j][:, elsewhere] = compute(f, subset, short="nan").to_numpy(np.float64)
    states[lengths == 0] = np.nan
    return out, states
