"""Gaps: the trading sessions of requested symbols whose data is missing from the database.

Sessions come from the dataset's exchange calendar (:mod:`hdi_lab.calendars`, with the daily halts it
declares): a session the calendar has closed (a holiday, a weekend) is never a gap, nor one that has not closed
yet. A session of a symbol is

* ``not_ingested`` when no completed ingest of the schema (the ingest log) covers its whole window
  ``[open, close)`` for that symbol (requested with the same ``stype_in``),
* ``empty`` when ingests cover it but no row of the symbol's instrument lies in the window (bars: from the open
  floored to the bar interval; daily bars, stamped at midnight UTC: the session's date),
* ``partial`` (bar schemas only) when fewer bars than ``partial`` (default :data:`PARTIAL`, a half) of the
  session's expected bars are stored. Databento sends no bar for a minute without a trade, so minutes
  missing here and there are not gaps (they go to the quality report): only a session that lost a large
  part of its bars is.

``expected`` is the number of bars a full session has (its minutes, less the calendar's breaks and halts, in
the schema's bar interval); ticks have none (``<NA>``). ``present`` is the bars stored in the window; for ticks
1 when any row is, else 0 (counting millions of ticks a session is not needed to tell). A CME session opens the
evening before its date (Sunday 17:00 Chicago for Monday): those bars count for Monday. IB data follows each
contract's exchange (``AAPL:STK:SMART`` the Nasdaq calendar, ``ES:CONTFUT:CME`` CME's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab import calendars
from hdi_lab.config import Settings
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import DAY_NS, Schema, SType, parse_enum, parse_range, require_symbols
from hdi_lab.storage import gaps as stored
from hdi_lab.storage import symbology
from hdi_lab.storage.symbology import Span

__all__ = ["COLUMNS", "PARTIAL", "REASONS", "coverage", "gaps", "missing"]

#: the columns of :func:`gaps` and :func:`coverage`
COLUMNS = ("symbol", "instrument_id", "session", "reason", "expected", "present")
#: why a session is a gap, in the order they are decided
REASONS = ("not_ingested", "empty", "partial")
#: a bar session with fewer bars than this fraction of its expected bars is ``partial`` (0 turns it off)
PARTIAL = 0.5


def gaps(
    session: HdiSession,
    schema: str | Schema,
    symbols: str | Sequence[str],
    start: object,
    end: object,
    *,
    dataset: str | None = None,
    stype_in: str | SType = SType.RAW_SYMBOL,
    partial: float = PARTIAL,
) -> pd.DataFrame:
    """The missing sessions of ``symbols`` with session dates in ``[start, end)``: one row per symbol (and
    instrument) and session, :data:`COLUMNS`, by symbol and session (see the module for the reasons).

    Raises what :func:`coverage` raises."""
    return missing(coverage(session, schema, symbols, start, end, dataset=dataset, stype_in=stype_in, partial=partial))


def missing(frame: pd.DataFrame) -> pd.DataFrame:
    """The gaps of a :func:`coverage` frame: its sessions with a reason, numbered from 0."""
    return frame[frame["reason"].notna()].reset_index(drop=True)


def coverage(
    session: HdiSession,
    schema: str | Schema,
    symbols: str | Sequence[str],
    start: object,
    end: object,
    *,
    dataset: str | None = None,
    stype_in: str | SType = SType.RAW_SYMBOL,
    partial: float = PARTIAL,
) -> pd.DataFrame:
    """Every session of ``symbols`` with its date in ``[start, end)``, :data:`COLUMNS` (``reason`` is None for a
    complete one): what :func:`gaps` keeps the missing of, and what the coverage heatmap draws.

    Without ``dataset`` it is the one the symbols are stored or were ingested in.

    Raises ValidationError (a bad schema, stype_in, range, ``partial`` outside [0, 1]; no symbols; no dataset
    given and none or several known for the symbols; a dataset, or an IB contract's exchange, without a known
    calendar; an IB symbol that is no contract; the definition schema), ConfigError (an unknown calendar in the
    ``calendars`` setting) and StorageError."""
    sch = parse_enum(Schema, schema, "schema")
    if sch is Schema.DEFINITION:
        raise ValidationError("definitions are not market data by session: ask gaps of a bar or tick schema")
    stype = parse_enum(SType, stype_in, "stype_in")
    syms = require_symbols(symbols)
    lo, hi = parse_range(start, end)
    if isinstance(partial, bool) or not isinstance(partial, int | float) or not 0 <= partial <= 1:
        raise ValidationError(f"partial={partial!r} is not valid: give a fraction of the expected bars, 0 to 1")
    conn = session.connection()
    logged = stored.covered(
        conn, session.schema, data_schema=sch.value, stype_in=stype.value, symbols=syms, dataset=dataset
    )
    first, last = lo.normalize(), (hi - pd.Timedelta(1, "ns")).normalize()
    spans = symbology.lookup(conn, session.schema, syms, first, last + pd.Timedelta(days=1), dataset, missing=[])
    ds = _dataset(dataset, spans, logged, syms)
    schedules: dict[str, _Schedule] = {}
    now = pd.Timestamp.now(tz="UTC")  # a session not closed yet cannot be complete: it is no gap (yet)
    log_sym, log_ds = logged["symbol"].to_numpy(), logged["dataset"].to_numpy()
    log_start, log_end = calendars.utc_ns(logged["start"]), calendars.utc_ns(logged["end"])
    cols: dict[str, list[npt.NDArray[Any]]] = {c: [] for c in ("symbol", "session", "covered", "bars", "o", "c", "i")}
    for sym in syms:
        code = _calendar(ds, sym, session.settings)
        if code not in schedules:
            schedules[code] = _schedule(code, first, last, now, sch)
        sched = schedules[code]
        rows, iids = _instruments(sched.labels, [sp for sp in spans if sp.symbol == sym and sp.dataset == ds])
        opens, closes = sched.opens[rows], sched.closes[rows]
        mine = (log_sym == sym) & (log_ds == ds)
        cols["symbol"].append(np.full(len(rows), sym, dtype=object))
        cols["session"].append(sched.sessions[rows])
        cols["covered"].append(_covered(log_start[mine], log_end[mine], opens, closes))
        cols["bars"].append(sched.bars[rows])
        cols["o"].append(opens)
        cols["c"].append(closes)
        cols["i"].append(iids)
    whole = {k: np.concatenate(v) for k, v in cols.items()}
    iid_all = whole["i"].astype(np.int64)
    frame = pd.DataFrame(
        {
            "symbol": whole["symbol"],
            "instrument_id": pd.arrays.IntegerArray(np.where(iid_all < 0, 0, iid_all), iid_all < 0),
            "session": whole["session"],
            "covered": whole["covered"].astype(bool),
            # ticks have no expected count
            "expected": pd.arrays.IntegerArray(whole["bars"].astype(np.int64), np.full(len(iid_all), not sch.is_bar)),
            "_open": whole["o"].astype(np.int64),
            "_close": whole["c"].astype(np.int64),
            "_iid": iid_all,
        }
    )
    known = frame["_iid"].to_numpy() >= 0
    counts = np.zeros(len(frame), dtype=np.int64)
    iids, opens, closes = (frame[c].to_numpy()[known] for c in ("_iid", "_open", "_close"))
    if sch.is_bar:  # from the bar counts kept at ingest
        counts[known] = stored.bars(conn, session.schema, sch.table, iids, opens, closes)
    else:
        counts[known] = stored.present(conn, session.schema, sch.table, iids, opens, closes, exists_only=True)
    frame["present"] = counts
    frame["reason"] = _reasons(frame, sch.is_bar, partial)
    return frame[list(COLUMNS)].sort_values(["symbol", "session", "instrument_id"], kind="stable", ignore_index=True)


class _Schedule(NamedTuple):
    """A calendar's closed sessions in the range, as the windows of one schema."""

    sessions: npt.NDArray[Any]  # session dates, as the calendar gives them
    labels: npt.NDArray[np.int64]  # session dates, int64 ns
    opens: npt.NDArray[np.int64]
    closes: npt.NDArray[np.int64]
    bars: npt.NDArray[np.int64]  # expected bars (bar schemas), minutes (ticks: masked)


def _schedule(code: str, first: pd.Timestamp, last: pd.Timestamp, now: pd.Timestamp, sch: Schema) -> _Schedule:
    days = calendars.sessions(code, first.date(), last.date(), halts=True)
    days = days[days["close"] <= now].reset_index(drop=True)
    opens, closes = _windows(days, sch)
    minutes = days["minutes"].to_numpy(np.int64)
    bars = -(-minutes * 60 // sch.bar_seconds) if sch.is_bar else minutes
    return _Schedule(days["session"].to_numpy(), calendars.utc_ns(days["session"]), opens, closes, bars)


def _windows(days: pd.DataFrame, sch: Schema) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The ``[start, end)`` (int64 ns UTC) in which each session's rows are stored: the session, from its open
    floored to the bar interval (an hourly bar starting 14:00 holds a 14:30 open); for daily bars, which start at
    midnight UTC, the session's date."""
    opens, closes = calendars.utc_ns(days["open"]), calendars.utc_ns(days["close"])
    if not sch.is_bar:
        return opens, closes
    bar = sch.bar_seconds * 1_000_000_000
    if bar >= DAY_NS:
        labels = calendars.utc_ns(days["session"])
        return labels, labels + DAY_NS
    return opens - opens % bar, closes


def _reasons(frame: pd.DataFrame, bars: bool, partial: float) -> list[str | None]:
    present = frame["present"].to_numpy()
    expected = frame["expected"].to_numpy(dtype=np.float64, na_value=0.0)
    short = (present < partial * expected) if bars else np.zeros(len(frame), dtype=bool)
    reason = np.select([~frame["covered"].to_numpy(dtype=bool), present == 0, short], list(REASONS), default="")
    return [r or None for r in reason.tolist()]


def _calendar(dataset: str, symbol: str, settings: Settings) -> str:
    """The calendar of ``symbol``'s sessions: the dataset's, for IB the contract's exchange's (the symbol is
    ``SYMBOL:SECTYPE[:EXCHANGE...]``)."""
    key = dataset.strip().upper()
    if key == "IB" or key.startswith("IB."):
        from hdi_lab.providers.ib.contracts import parse_contract

        return calendars.calendar_for(dataset, parse_contract(symbol).exchange, settings)
    return calendars.calendar_for(dataset, settings=settings)


def _dataset(dataset: str | None, spans: list[Span], logged: pd.DataFrame, syms: tuple[str, ...]) -> str:
    if dataset is not None:
        return dataset
    known = sorted({sp.dataset for sp in spans} | set(logged["dataset"]))
    if len(known) == 1:
        return known[0]
    which = ", ".join(syms)
    if not known:
        raise ValidationError(
            f"nothing is stored or ingested for {which} in this schema: give dataset=, e.g. GLBX.MDP3"
        )
    raise ValidationError(f"{which} are known in several datasets ({', '.join(known)}): give dataset=")


def _instruments(
    labels: npt.NDArray[np.int64], spans: list[Span]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """(session row, instrument id) for every instrument the symbol means on a session's date; -1 for a session
    it means none on."""
    rows: list[npt.NDArray[np.intp]] = []
    iids: list[npt.NDArray[np.int64]] = []
    seen = np.zeros(len(labels), dtype=bool)
    for sp in spans:
        lo, hi = calendars.utc_ns(pd.DatetimeIndex([sp.lo, sp.hi]))
        on = np.flatnonzero((labels >= lo) & (labels < hi))
        seen[on] = True
        rows.append(on)
        iids.append(np.full(len(on), sp.instrument_id, dtype=np.int64))
    none = np.flatnonzero(~seen)
    rows.append(none)
    iids.append(np.full(len(none), -1, dtype=np.int64))
    row, iid = np.concatenate(rows), np.concatenate(iids)
    order = np.argsort(row, kind="stable")
    return row[order], iid[order]


def _covered(
    starts: npt.NDArray[np.int64],
    ends: npt.NDArray[np.int64],
    opens: npt.NDArray[np.int64],
    closes: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    """Whether one of the ranges ``[starts, ends)`` (merged and sorted, see
    :func:`hdi_lab.storage.gaps.covered`) covers each window ``[opens, closes)``."""
    if len(starts) == 0:
        return np.zeros(len(opens), dtype=bool)
    k = np.searchsorted(starts, opens, side="right") - 1
    return (k >= 0) & (ends[np.clip(k, 0, None)] >= closes)
