"""The daily operations report: what was ingested, what is missing, and whether the day's data looks right.

:func:`report` gathers, for a window of UTC days (one day by default):

* the ingests finished in it (chunks, rows fetched / inserted / updated / deleted / duplicate / quarantined,
  duration, estimated cost) per provider, dataset and schema, and per day, and per subscription (its request's
  chunks, with the definitions fetched along),
* the gaps left per subscription (:func:`hdi_lab.core.gaps.coverage` over each subscription of
  :mod:`hdi_lab.core.subscriptions`, sessions dated in the window),
* quarantine entries by rule (open ones, and those created in the window by status),
* the vendor's day conditions seen by the ingests (``degraded``, ``pending``, ``missing`` days),
* data-quality findings over the window's 1-minute bars and TBBO quotes, from the pure checks below (the
  price jumps of the window's first bars judged against the bars of the day before).

Each finding has a severity (``info``, ``amber``, ``red``); the report's :attr:`Report.status` is the worst
severity (``green`` without amber or red findings) with the reasons, and :attr:`Report.exit_code` 0 / 1 / 2
lets cron alert. Thresholds are the fields of :class:`Thresholds`, whose defaults are documented there.
The estimated cost is the vendor's estimate of each chunk fetched, logged with it (Databento's
``metadata.get_cost``): None ("n/a") where no chunk of a group has one (sample, file and IB data; ingests logged
before schema version 11), the sum of the known ones otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hdi_lab import calendars
from hdi_lab.core import gaps as gap_finder
from hdi_lab.core import subscriptions
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import HdiError, ValidationError
from hdi_lab.schemas import Schema, parse_time, whole_number
from hdi_lab.storage import report as stored

__all__ = [
    "CHECKS",
    "FINDING_COLUMNS",
    "SEVERITIES",
    "STATUSES",
    "Report",
    "Thresholds",
    "bars_outside_sessions",
    "crossed_quotes",
    "missing_minutes",
    "ohlc_anomalies",
    "price_jumps",
    "publisher_disagreement",
    "report",
    "stale_prices",
    "status_of",
    "window",
    "zero_volume",
]

#: the columns of every check's findings (``ts_event`` the first bar concerned, ``count`` how many)
FINDING_COLUMNS = ("check", "severity", "dataset", "instrument_id", "publisher_id", "ts_event", "count", "detail")
#: finding severities, mildest first
SEVERITIES = ("info", "amber", "red")
#: report statuses, best first; the exit code of ``hdi report`` is the index
STATUSES = ("green", "amber", "red")
#: what findings are about, in report order: gaps, open quarantine, vendor conditions, then the quality checks
CHECKS = (
    "gap",
    "quarantine",
    "vendor_condition",
    "missing_minutes",
    "outside_session",
    "ohlc",
    "price_jump",
    "zero_volume",
    "stale_price",
    "crossed_quote",
    "locked_quote",
    "publisher_disagreement",
)
_KEYS = ["dataset", "instrument_id", "publisher_id"]
_PRICE = 1e-9  # stored prices are int64 fixed-point
_CONTEXT = pd.Timedelta(days=1)  # bars read before the window for the price jumps' recent returns


@dataclass(frozen=True)
class Thresholds:
    """The thresholds of the quality checks (one declaration; every front end passes these on).

    * ``jump_sigmas`` (6.0): a close-to-close log return beyond this many standard deviations of the
      ``jump_window`` (60) returns before it is a price jump; at least ``jump_min_returns`` (20) of them needed;
      returns between bars more than ``jump_max_gap`` (30) minutes apart (overnight, a halt) are left out.
    * ``stale_bars`` (30): this many consecutive bars with the same close are a stale price.
    * ``missing_share`` (0.2): missing minutes inside a session (between an instrument's first and last bar of
      it) are ``amber`` beyond this share of those minutes, ``info`` below (Databento sends no bar for a
      minute without a trade: some are normal).
    * ``disagreement`` (0.001): publishers of one instrument whose closes of one minute differ by more than
      this fraction of their median disagree.
    """

    jump_sigmas: float = 6.0
    jump_window: int = 60
    jump_min_returns: int = 20
    jump_max_gap: int = 30
    stale_bars: int = 30
    missing_share: float = 0.2
    disagreement: float = 0.001

    def __post_init__(self) -> None:
        """Raises ValidationError for a threshold out of range."""
        for name in ("jump_sigmas", "missing_share", "disagreement"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValidationError(f"{name}={value!r} is not valid: give a number >= 0")
        for name in ("jump_window", "jump_min_returns", "jump_max_gap", "stale_bars"):
            whole_number(getattr(self, name), name, 2)
        if self.jump_min_returns > self.jump_window:
            raise ValidationError("jump_min_returns must not exceed jump_window")

    @classmethod
    def parse(cls, items: Sequence[str]) -> Thresholds:
        """Thresholds from ``NAME=VALUE`` texts (``["jump_sigmas=8", "stale_bars=60"]``), the others default.

        Raises ValidationError for an unknown name, a text without ``=``, or a value that is no number of the
        field's kind or is out of range."""
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        given: dict[str, int | float] = {}
        for item in items:
            name, sep, text = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in types:
                raise ValidationError(f"{item!r} is not NAME=VALUE with NAME one of {', '.join(types)}")
            try:
                given[name] = int(text) if types[name] == "int" else float(text)
            except ValueError:
                raise ValidationError(f"{item!r}: {text!r} is not a {types[name]}") from None
        return cls(**given)  # type: ignore[arg-type]  # each value's kind is its field's


def _findings(
    check: str, severity: str | pd.Series, rows: pd.DataFrame, count: Any = 1, detail: Any = ""
) -> pd.DataFrame:
    if rows.empty:
        return pd.DataFrame(columns=list(FINDING_COLUMNS))
    frame = pd.DataFrame(
        {
            "check": check,
            "severity": severity,
            "dataset": rows["dataset"].to_numpy(),
            "instrument_id": rows["instrument_id"].to_numpy(np.int64),
            "publisher_id": rows["publisher_id"].to_numpy(np.int64),
            "ts_event": pd.DatetimeIndex(rows["ts_event"]),
            "count": count,
            "detail": detail,
        }
    )
    frame["count"] = frame["count"].astype(np.int64)
    return frame[list(FINDING_COLUMNS)].reset_index(drop=True)


def _prices(bars: pd.DataFrame, column: str) -> pd.Series:
    return bars[column].astype(np.float64) * _PRICE


def ohlc_anomalies(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars whose prices contradict each other (``red``): a price <= 0, high below open, close or low, low above
    open or close. ``bars`` has the columns of :data:`hdi_lab.storage.report.BAR_COLUMNS`. Raises nothing."""
    o, h, lo, c = (bars[col].astype(np.int64) for col in ("open", "high", "low", "close"))
    bad = (
        (np.minimum(np.minimum(o, h), np.minimum(lo, c)) <= 0)
        | (h < np.maximum(np.maximum(o, c), lo))
        | (lo > np.minimum(o, c))
    )
    rows = bars[bad.to_numpy()]
    detail = [
        f"open {a:g} high {b:g} low {x:g} close {d:g}"
        for a, b, x, d in zip(*(_prices(rows, col) for col in ("open", "high", "low", "close")), strict=True)
    ]
    return _findings("ohlc", "red", rows, detail=detail)


def zero_volume(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars with no volume (``amber``: a bar is sent for a minute with trades). Raises nothing."""
    rows = bars[bars["volume"].astype(np.int64).to_numpy() == 0]
    return _findings("zero_volume", "amber", rows, detail="volume 0")


def price_jumps(bars: pd.DataFrame, thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    """Bars whose close-to-close log return (per dataset, instrument and publisher) exceeds
    ``thresholds.jump_sigmas`` standard deviations of the ``jump_window`` returns before it (``amber``); returns
    across more than ``thresholds.jump_max_gap`` minutes are left out.
    Raises nothing."""
    parts = []
    for _, group in bars.groupby(_KEYS, sort=False):
        close = _prices(group, "close").to_numpy()
        if len(close) < 2 or (close <= 0).any():
            continue
        ret = pd.Series(np.diff(np.log(close)))
        # a return across a pause (overnight, a halt) is no minute's move: neither judged nor a yardstick
        pause = np.diff(pd.DatetimeIndex(group["ts_event"])) > pd.Timedelta(minutes=thresholds.jump_max_gap)
        ret[pause] = np.nan
        sd = ret.rolling(thresholds.jump_window, min_periods=thresholds.jump_min_returns).std().shift(1)
        hit = ((ret.abs() > thresholds.jump_sigmas * sd) & (sd > 0)).to_numpy()
        if hit.any():
            idx = np.flatnonzero(hit)
            rows = group.iloc[idx + 1]
            detail = [f"return {r:+.4%} = {abs(r) / s:.1f} sd" for r, s in zip(ret[idx], sd[idx], strict=True)]
            parts.append(_findings("price_jump", "amber", rows, detail=detail))
    return _concat(parts)


def stale_prices(bars: pd.DataFrame, thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    """Runs of at least ``thresholds.stale_bars`` consecutive bars (per dataset, instrument and publisher) with
    one close (``amber``), one finding per run at its first bar with its length. Raises nothing."""
    parts = []
    for _, group in bars.groupby(_KEYS, sort=False):
        close = group["close"].to_numpy(np.int64)
        starts = np.flatnonzero(np.r_[True, close[1:] != close[:-1]])
        lengths = np.diff(np.r_[starts, len(close)])
        long = lengths >= thresholds.stale_bars
        if long.any():
            rows = group.iloc[starts[long]]
            detail = [f"close {p:g} for {n} bars" for p, n in zip(_prices(rows, "close"), lengths[long], strict=True)]
            parts.append(_findings("stale_price", "amber", rows, count=lengths[long], detail=detail))
    return _concat(parts)


def crossed_quotes(quotes: pd.DataFrame) -> pd.DataFrame:
    """TBBO quotes with the bid above the ask (``crossed_quote``, ``red``) or equal to it (``locked_quote``,
    ``amber``), one finding per dataset, instrument, publisher and kind at its first quote with the count.
    ``quotes`` has :data:`hdi_lab.storage.report.QUOTE_COLUMNS`. Raises nothing."""
    bid, ask = quotes["bid_px"].astype(np.int64), quotes["ask_px"].astype(np.int64)
    parts = []
    for check, severity, mask in (("crossed_quote", "red", bid > ask), ("locked_quote", "amber", bid == ask)):
        rows = quotes[mask.to_numpy()]
        if rows.empty:
            continue
        first = rows.groupby(_KEYS, sort=True, dropna=False).agg(
            ts_event=("ts_event", "min"), count=("ts_event", "size"), bid=("bid_px", "first"), ask=("ask_px", "first")
        )
        first = first.reset_index()
        detail = [f"bid {b * _PRICE:g} ask {a * _PRICE:g}" for b, a in zip(first["bid"], first["ask"], strict=True)]
        parts.append(_findings(check, severity, first, count=first["count"].to_numpy(), detail=detail))
    return _concat(parts)


def publisher_disagreement(bars: pd.DataFrame, thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    """Minutes in which publishers of one instrument (same dataset and instrument id) report closes differing
    by more than ``thresholds.disagreement`` of their median (``amber``), one finding per instrument at its
    first such minute with the count. Raises nothing."""
    close = _prices(bars, "close")
    keyed = bars.assign(_close=close)
    by = keyed.groupby(["dataset", "instrument_id", "ts_event"], sort=True, dropna=False)["_close"]
    spread = pd.DataFrame({"n": by.size(), "lo": by.min(), "hi": by.max(), "mid": by.median()})
    bad = spread[(spread["n"] > 1) & ((spread["hi"] - spread["lo"]) > thresholds.disagreement * spread["mid"].abs())]
    if bad.empty:
        return pd.DataFrame(columns=list(FINDING_COLUMNS))
    bad = bad.reset_index()
    first = bad.groupby(["dataset", "instrument_id"], sort=True, dropna=False).agg(
        ts_event=("ts_event", "min"), count=("ts_event", "size"), lo=("lo", "first"), hi=("hi", "first")
    )
    first = first.reset_index().assign(publisher_id=-1)  # several publishers: none in particular
    detail = [f"closes {lo:g} to {hi:g}" for lo, hi in zip(first["lo"], first["hi"], strict=True)]
    return _findings("publisher_disagreement", "amber", first, count=first["count"].to_numpy(), detail=detail)


def bars_outside_sessions(bars: pd.DataFrame, calendar_of: Callable[[str], str | None]) -> pd.DataFrame:
    """Bars starting outside every session (or in a break) of their dataset's calendar (``amber``), one finding
    per dataset, instrument and publisher at its first such bar with the count. ``calendar_of(dataset)`` is the
    calendar code, None to skip the dataset. Raises ConfigError for an unknown calendar code."""
    parts = []
    for dataset, group in bars.groupby("dataset", sort=True):
        code = calendar_of(str(dataset))
        if code is None:
            continue
        outside = calendars.sessions_of(code, pd.DatetimeIndex(group["ts_event"])).isna().to_numpy()
        rows = group[outside]
        if rows.empty:
            continue
        first = rows.groupby(_KEYS, sort=True).agg(ts_event=("ts_event", "min"), count=("ts_event", "size"))
        first = first.reset_index()
        parts.append(
            _findings("outside_session", "amber", first, count=first["count"].to_numpy(), detail=f"calendar {code}")
        )
    return _concat(parts)


def missing_minutes(
    bars: pd.DataFrame, calendar_of: Callable[[str], str | None], thresholds: Thresholds = Thresholds()
) -> pd.DataFrame:
    """1-minute bars missing inside sessions: per dataset, instrument, publisher and session, the calendar's
    open minutes between the first and the last bar of the session without a bar. ``amber`` beyond
    ``thresholds.missing_share`` of those minutes, else ``info``; a session without any bar is a gap (see
    :mod:`hdi_lab.core.gaps`), not a finding here. Raises ConfigError for an unknown calendar code."""
    rows: list[dict[str, Any]] = []
    masks: dict[tuple[str, dt.date], np.ndarray[Any, np.dtype[np.bool_]]] = {}
    for (dataset, iid, pid), group in bars.groupby(_KEYS, sort=True):
        code = calendar_of(str(dataset))
        if code is None:
            continue
        stamps = pd.DatetimeIndex(group["ts_event"]).floor("min")
        labels = calendars.sessions_of(code, stamps).to_numpy()
        for label in pd.unique(labels[~pd.isna(labels)]):
            mine = stamps[labels == label].unique()
            first, last = mine.min(), mine.max()
            expected = 0
            for day in pd.date_range(first.normalize(), last.normalize(), freq="D"):
                key = (code, day.date())
                if key not in masks:
                    masks[key] = calendars.open_minutes(code, day.date())
                minute = day + pd.to_timedelta(np.flatnonzero(masks[key]), unit="min")
                expected += int(((minute >= first) & (minute <= last)).sum())
            missing = expected - len(mine)
            if missing > 0:
                share = missing / expected
                rows.append(
                    {
                        "dataset": dataset,
                        "instrument_id": iid,
                        "publisher_id": pid,
                        "ts_event": first,
                        "count": missing,
                        "severity": "amber" if share > thresholds.missing_share else "info",
                        "detail": f"session {pd.Timestamp(label).date()}: {missing} of {expected} minutes "
                        f"({share:.1%})",
                    }
                )
    if not rows:
        return pd.DataFrame(columns=list(FINDING_COLUMNS))
    frame = pd.DataFrame(rows)
    return _findings(
        "missing_minutes", frame["severity"], frame, count=frame["count"].to_numpy(), detail=frame["detail"]
    )


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=list(FINDING_COLUMNS))
    if len(parts) == 1:
        return parts[0].reset_index(drop=True)
    # as objects: findings without an instrument or a time (all-NA columns) would make pandas guess dtypes
    frame = pd.concat([p.astype(object) for p in parts], ignore_index=True)
    frame["ts_event"] = pd.to_datetime(frame["ts_event"], utc=True)
    frame["count"] = frame["count"].astype(np.int64)
    return frame


def status_of(findings: pd.DataFrame) -> tuple[str, tuple[str, ...]]:
    """The status (:data:`STATUSES`) the findings give, and its reasons: one line per check and severity that is
    amber or red (``"red: ohlc x2"``), worst first. Raises nothing."""
    serious = findings[findings["severity"].isin(["amber", "red"])]
    if serious.empty:
        return "green", ()
    counts = serious.groupby(["severity", "check"], sort=False)["count"].sum().reset_index()
    counts["rank"] = [-SEVERITIES.index(sev) for sev in counts["severity"]]
    counts = counts.sort_values(["rank", "check"], kind="stable")
    reasons = tuple(
        f"{sev}: {check} x{int(n)}"
        for sev, check, n in zip(counts["severity"], counts["check"], counts["count"], strict=True)
    )
    worst = "red" if (serious["severity"] == "red").any() else "amber"
    return worst, reasons


def window(date: object = None, start: object = None, end: object = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The report's ``[start, end)`` (UTC midnights): ``date``'s day, or ``start`` to ``end`` (whole days, the end
    exclusive; ``end`` defaults to the day after ``start``), by default today (UTC).

    Raises ValidationError for both a date and a range, an end without a start, a value that is no date, or an
    empty range."""
    if date is not None and (start is not None or end is not None):
        raise ValidationError("give a date or a start and end, not both")
    if start is None and end is not None:
        raise ValidationError("give the start of the range too")
    if start is None:
        lo = (pd.Timestamp.now(tz="UTC") if date is None else parse_time(date, "date")).normalize()
        return lo, lo + pd.Timedelta(days=1)
    lo = parse_time(start, "start").normalize()
    if end is None:
        return lo, lo + pd.Timedelta(days=1)
    hi = parse_time(end, "end")
    hi = hi.normalize() + (pd.Timedelta(days=1) if hi != hi.normalize() else pd.Timedelta(0))
    if hi <= lo:
        raise ValidationError(f"the range {lo.date()} to {hi.date()} is empty: the end is exclusive")
    return lo, hi


@dataclass(frozen=True)
class Report:
    """A daily operations report (see the module). Frames are empty, with their columns, when there is
    nothing to say."""

    start: pd.Timestamp
    end: pd.Timestamp
    thresholds: Thresholds
    ingests: pd.DataFrame  # storage.report.INGEST_COLUMNS per day, provider, dataset, schema
    coverage: pd.DataFrame  # subscription, dataset + gaps.COLUMNS: every session of every subscription
    quarantine: pd.DataFrame  # storage.report.QUARANTINE_COLUMNS
    conditions: pd.DataFrame  # storage.report.CONDITION_COLUMNS
    findings: pd.DataFrame  # FINDING_COLUMNS
    status: str
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = ()
    # storage.report.SUBSCRIPTION_COLUMNS: the window's ingests per subscription
    subscriptions: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=list(stored.SUBSCRIPTION_COLUMNS))
    )

    def __repr__(self) -> str:
        days = f"{self.start.date()} to {(self.end - pd.Timedelta(days=1)).date()}"
        return f"<Report {days}: {self.status}, {len(self.findings)} findings>"

    @property
    def exit_code(self) -> int:
        """0 green, 1 amber, 2 red."""
        return STATUSES.index(self.status)

    @property
    def gaps(self) -> pd.DataFrame:
        """The missing sessions of :attr:`coverage`."""
        return gap_finder.missing(self.coverage)

    @property
    def cost_usd(self) -> float | None:
        """The estimated cost of the window's ingests: the sum of the known estimates, None when none is known."""
        known = pd.to_numeric(self.ingests["cost_usd"], errors="coerce").dropna() if len(self.ingests) else ()
        return float(sum(known)) if len(known) else None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, a stable schema (``schema_version`` 1, keys only ever added): start, end,
        status, exit_code, reasons, notes, thresholds, ingests (totals, ``cost_usd`` among them, and rows),
        gaps, quarantine, conditions, findings (counts per check and rows), subscriptions (the ingests per
        subscription); timestamps as ISO 8601 strings, missing values (an unknown cost) as null."""
        totals: dict[str, Any] = {
            col: _plain(self.ingests[col].sum()) if not self.ingests.empty else 0
            for col in ("chunks", "fetched", "inserted", "updated", "deleted", "duplicates", "quarantined", "seconds")
        }
        totals["cost_usd"] = self.cost_usd
        serious = self.findings.groupby("check")["count"].sum() if not self.findings.empty else pd.Series(dtype=int)
        return {
            "schema_version": 1,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "status": self.status,
            "exit_code": self.exit_code,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "thresholds": dataclasses.asdict(self.thresholds),
            "ingests": {"totals": totals, "rows": _records(self.ingests)},
            "gaps": _records(self.gaps),
            "quarantine": _records(self.quarantine),
            "conditions": _records(self.conditions),
            "findings": {
                "counts": {check: int(serious.get(check, 0)) for check in CHECKS},
                "rows": _records(self.findings),
            },
            "subscriptions": _records(self.subscriptions),
        }


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _calendar_lookup(session: HdiSession, notes: list[str]) -> Callable[[str], str | None]:
    known: dict[str, str | None] = {}

    def calendar_of(dataset: str) -> str | None:
        if dataset not in known:
            try:
                known[dataset] = calendars.calendar_for(dataset, settings=session.settings)
            except ValidationError as exc:  # IB: the calendar is per contract, unknown from a bar
                known[dataset] = None
                notes.append(f"session checks skipped for {dataset}: {exc}")
        return known[dataset]

    return calendar_of


def _coverage(session: HdiSession, lo: pd.Timestamp, hi: pd.Timestamp, notes: list[str]) -> pd.DataFrame:
    parts = []
    for sub in subscriptions.list_all(session):
        if sub.since >= hi.date():
            continue
        start = max(lo, pd.Timestamp(sub.since, tz="UTC"))
        try:
            found = gap_finder.coverage(
                session, sub.schema, sub.symbols, start, hi, dataset=sub.dataset, stype_in=sub.stype_in
            )
        except HdiError as exc:  # one subscription's calendar or symbols must not hide the rest of the report
            notes.append(f"gaps of {sub.label} not computed: {exc}")
            continue
        parts.append(found.assign(subscription=sub.name or str(sub.id), dataset=sub.dataset))
    columns = ["subscription", "dataset", *gap_finder.COLUMNS]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def _gap_findings(coverage: pd.DataFrame) -> pd.DataFrame:
    missing = gap_finder.missing(coverage)
    if missing.empty:
        return pd.DataFrame(columns=list(FINDING_COLUMNS))
    return pd.DataFrame(
        {
            "check": "gap",
            "severity": "amber",
            "dataset": missing["dataset"].to_numpy(),
            "instrument_id": missing["instrument_id"].astype("Int64").to_numpy(),
            "publisher_id": pd.array([pd.NA] * len(missing), dtype="Int64"),
            "ts_event": pd.DatetimeIndex(missing["session"]).tz_localize("UTC"),
            "count": 1,
            "detail": (
                "subscription "
                + missing["subscription"].astype(str)
                + ": "
                + missing["symbol"].astype(str)
                + " "
                + pd.DatetimeIndex(missing["session"]).strftime("%Y-%m-%d")
                + " "
                + missing["reason"].astype(str)
            ).to_numpy(),
        }
    )[list(FINDING_COLUMNS)]


def _state_findings(quarantine: pd.DataFrame, conditions: pd.DataFrame) -> list[pd.DataFrame]:
    out = []
    open_ = quarantine[quarantine["open"].astype(np.int64) > 0]
    if not open_.empty:
        out.append(
            pd.DataFrame(
                {
                    "check": "quarantine",
                    "severity": "amber",
                    "count": open_["open"].astype(np.int64).to_numpy(),
                    "detail": ("rule " + open_["rule"].astype(str) + ": open entries").to_numpy(),
                }
            )
        )
    bad = conditions[conditions["condition"] != "available"]
    if not bad.empty:
        out.append(
            pd.DataFrame(
                {
                    "check": "vendor_condition",
                    "severity": "amber",
                    "dataset": bad["dataset"].to_numpy(),
                    "ts_event": pd.DatetimeIndex(pd.to_datetime(bad["day"])).tz_localize("UTC"),
                    "count": 1,
                    "detail": (bad["schema"].astype(str) + " " + bad["condition"].astype(str)).to_numpy(),
                }
            )
        )
    return [f.reindex(columns=list(FINDING_COLUMNS)) for f in out]


def report(
    session: HdiSession,
    date: object = None,
    *,
    start: object = None,
    end: object = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
) -> Report:
    """The operations report of ``date``'s UTC day (default today), or of the days ``start`` to ``end``.

    Raises ValidationError (a bad date or range, a bad threshold), ConfigError (an unknown calendar in the
    ``calendars`` setting) and StorageError."""
    limits = thresholds if isinstance(thresholds, Thresholds) else Thresholds(**dict(thresholds or {}))
    lo, hi = window(date, start, end)
    conn, schema = session.connection(), session.schema
    notes: list[str] = []
    calendar_of = _calendar_lookup(session, notes)
    ingests = stored.ingests(conn, schema, lo, hi)
    if ingests.empty:
        notes.append("nothing was ingested in this window")
    coverage = _coverage(session, lo, hi, notes)
    quarantine = stored.quarantine(conn, schema, lo, hi)
    conditions = stored.conditions(conn, schema, lo.date(), (hi - pd.Timedelta(days=1)).date())
    # the day before gives the first bars of the window their recent returns (price jumps only)
    recent = stored.bars(conn, schema, Schema.OHLCV_1M.table, lo - _CONTEXT, hi)
    bars = recent[recent["ts_event"] >= lo].reset_index(drop=True)
    jumps = price_jumps(recent, limits)
    jumps = jumps[pd.to_datetime(jumps["ts_event"], utc=True) >= lo]
    quotes = stored.quotes(conn, schema, lo, hi)
    findings = _concat(
        [
            _gap_findings(coverage),
            *_state_findings(quarantine, conditions),
            missing_minutes(bars, calendar_of, limits),
            bars_outside_sessions(bars, calendar_of),
            ohlc_anomalies(bars),
            jumps,
            zero_volume(bars),
            stale_prices(bars, limits),
            crossed_quotes(quotes),
            publisher_disagreement(bars, limits),
        ]
    )
    status, reasons = status_of(findings)
    return Report(
        lo,
        hi,
        limits,
        ingests,
        coverage,
        quarantine,
        conditions,
        findings,
        status,
        reasons,
        tuple(notes),
        stored.subscription_ingests(conn, schema, lo, hi),
    )
