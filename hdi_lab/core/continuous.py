"""Continuous futures: a root's stored contracts chained by a roll rule, back-adjusted on read.

Raw contract data stays the truth; the continuous series is derived from it each time it is read:

1. **Contracts** come from the stored definitions (schema ``definition``): every instrument of class ``F``
   whose ``asset`` is the root, with its expiration and activation (Databento, IB ``FUT`` contracts, the
   sample provider alike; IB's definitions carry the last trade date as expiration, at 00:00 UTC).
2. **Sessions** come from the dataset's exchange calendar (:mod:`hdi_lab.calendars`; GLBX.MDP3 is CME
   Globex, ``CMES``). Session *s* owns the time from the previous session's close to its own close, so every
   bar belongs to one session (a daily bar stamped 00:00 UTC to the session closing that day).
3. **The roll rule** picks the front contract of each session using only what was known at the previous
   session's close (no look-ahead), and never rolls back to an earlier expiry:

   - ``calendar``: the contract expiring first, held until ``offset`` sessions before its roll session;
     with ``offset=0`` it rolls on the session after its last full session (the last session closing
     before its expiration: ESH4, expiring 2024-03-15 13:30 UTC, rolls on 2024-03-15).
   - ``volume``: the contract with the highest volume in the previous session (its bars of the schema read).
   - ``open_interest``: the contract with the highest open interest known at the previous session's close
     (the latest ``statistics`` record with stat_type 9 received before it).

   For every rule a contract is never held from its calendar roll session on (``offset`` included), ties
   keep the earlier expiry, and ``rank=k`` is the k-th contract listed after the rule's front, in
   expiration order (``rank=0`` the front itself).
4. **Adjustment** is backward from the latest contract of the requested range, whose prices stay raw. The
   gap at a roll is measured between both contracts' closes on the last session before the roll (each
   contract's last bar starting before the roll session). ``difference`` adds the sum of the later gaps
   (``to_price - from_price``): OHLC keep their order, and prices may become zero or negative far back.
   ``ratio`` multiplies by the product of the later ratios (``to_price / from_price``): prices stay positive.
   Volumes are never adjusted.

**Research view vs as-of view.** A backward-adjusted history changes whenever a later roll enters the range
(its last segment is re-anchored on the newest contract): fine for research on a fixed range, wrong for a
point-in-time feature. The as-of view of time *t* is the series computed with ``end=t`` (only rolls known at
*t* are applied); the roll decisions themselves never change when later sessions are appended. Roll decisions
start at ``start``: the volume and open-interest rules' no-roll-back state begins there.

>>> continuous(session, "ES.c.0", "ohlcv-1d", "2024-01-01", "2024-07-01", adjust="ratio")
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab import calendars
from hdi_lab.core import sessions
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import Adjust, Roll, Schema, parse_enum, parse_range, require_symbols, whole_number
from hdi_lab.storage import continuous as store
from hdi_lab.storage.read import PriceType, check_price_type
from hdi_lab.storage.symbology import Span
from hdi_lab.storage.tables import TABLES

__all__ = [
    "ROLL_COLUMNS",
    "ContinuousSpec",
    "Plan",
    "RollRecord",
    "adjust_prices",
    "check_adjustable",
    "continuous",
    "is_continuous",
    "parse_root",
    "plan",
    "query",
    "roll_frame",
    "rolls",
]

#: a continuous symbol: ROOT.RULE.RANK, RULE c (calendar), v (volume) or n (open interest)
_CONTINUOUS = re.compile(r"^(?P<root>[A-Za-z0-9]+)\.(?P<rule>[cvn])\.(?P<rank>\d+)$")
_PARENT = re.compile(r"^(?P<root>[A-Za-z0-9]+)\.FUT$")
_ROOT = re.compile(r"^[A-Za-z0-9]+$")
_RULES = {"c": Roll.CALENDAR, "v": Roll.VOLUME, "n": Roll.OPEN_INTEREST}
_PRICES = ("open", "high", "low", "close")
#: how far before ``start`` open interest is looked for (it is published once a session)
_OI_LOOKBACK_NS = 45 * 86_400 * 10**9
#: the roll table's columns, in order
ROLL_COLUMNS = (
    "session",
    "from_instrument",
    "to_instrument",
    "from_price",
    "to_price",
    "difference",
    "ratio",
    "from_symbol",
    "to_symbol",
    "ts_roll",
)


@dataclass(frozen=True)
class RollRecord:
    """One roll: on ``session`` (its first instant ``ts_roll``) the series moves from one contract to the
    next; ``from_price`` / ``to_price`` are both contracts' closes before it (NaN where one has no bar)."""

    session: dt.date
    from_instrument: int
    to_instrument: int
    from_price: float
    to_price: float
    difference: float
    ratio: float
    from_symbol: str
    to_symbol: str
    ts_roll: pd.Timestamp


@dataclass(frozen=True)
class ContinuousSpec:
    """A validated request for a continuous series (see :func:`continuous`)."""

    root: str
    schema: Schema
    start: pd.Timestamp
    end: pd.Timestamp
    rank: int
    roll: Roll
    offset: int
    adjust: Adjust
    dataset: str | None


@dataclass(frozen=True)
class Plan:
    """Which contract each part of ``[start, end)`` reads (``spans``, labelled with the contract's raw symbol),
    and the rolls between them with their prices (``fixed``: the same as int64 1e-9, None where missing)."""

    spec: ContinuousSpec
    dataset: str
    calendar: str
    spans: tuple[Span, ...]
    rolls: tuple[RollRecord, ...]
    fixed: tuple[tuple[int | None, int | None], ...]


def parse_root(text: object, roll: str | Roll = Roll.CALENDAR, rank: object = 0) -> tuple[str, Roll, int]:
    """(root, roll rule, rank) of ``ES``, ``ES.FUT`` or a continuous symbol (``ES.c.0``, ``ES.v.1``,
    ``ES.n.0``: its letter picks the rule, its number the rank).

    Raises ValidationError for anything else, an unknown ``roll``, a bad ``rank``, or a ``roll`` / ``rank``
    that contradicts the continuous symbol's."""
    rule = parse_enum(Roll, roll, "roll")
    n = whole_number(rank, "rank")
    raw = str(text).strip() if text is not None else ""
    if m := _CONTINUOUS.match(raw):
        letter, k = _RULES[m["rule"]], int(m["rank"])
        if rule not in (Roll.CALENDAR, letter):
            raise ValidationError(f"{raw!r} rolls by {letter} (its letter {m['rule']!r}) but roll={rule.value!r}")
        if n not in (0, k):
            raise ValidationError(f"{raw!r} is rank {k} but rank={n}: give one of them")
        return m["root"], letter, k
    if m := _PARENT.match(raw):
        return m["root"], rule, n
    if _ROOT.match(raw):
        return raw, rule, n
    raise ValidationError(
        f"root={text!r} is not a futures root: write ES, ES.FUT or a continuous symbol (ES.c.0 by calendar, "
        "ES.v.0 by volume, ES.n.0 by open interest)"
    )


def is_continuous(symbol: object) -> bool:
    """Whether ``symbol`` is a continuous symbol hdi_lab rolls (``ES.c.0``, ``ES.v.1``, ``ES.n.0``)."""
    return isinstance(symbol, str) and _CONTINUOUS.match(symbol.strip()) is not None


def _spec(
    root: object,
    schema: str | Schema,
    start: object,
    end: object,
    rank: object,
    roll: str | Roll,
    offset: object,
    adjust: str | Adjust,
    dataset: str | None,
) -> ContinuousSpec:
    sch = parse_enum(Schema, schema, "schema")
    if not sch.is_bar:
        raise ValidationError(f"continuous series are built from bars: schema={sch.value!r} is not ohlcv-*")
    name, rule, k = parse_root(root, roll, rank)
    lo, hi = parse_range(start, end)
    how = parse_enum(Adjust, adjust, "adjust")
    ds = dataset.strip().upper() if dataset else None
    return ContinuousSpec(name, sch, lo, hi, k, rule, whole_number(offset, "offset"), how, ds)


def _calendar(session: HdiSession, dataset: str, exchanges: Sequence[object]) -> str:
    """The calendar of the contracts' dataset (IB: of their most common exchange)."""
    venues = Counter(str(e).strip().upper() for e in exchanges if e)
    venue = venues.most_common(1)[0][0] if venues else None
    return calendars.calendar_for(dataset, venue, session.settings)


def _sessions(
    code: str, lo: pd.Timestamp, hi: pd.Timestamp, offset: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Session labels and closes (UTC ns) from three weeks before ``lo`` to well after ``hi`` (enough sessions
    after it that every contract expiring later rolls after the range, ``offset`` included)."""
    first = max(lo.date() - dt.timedelta(days=21), dt.date.fromisoformat(calendars.FIRST_SESSION))
    try:
        return calendars.session_closes(code, first, hi.date() + dt.timedelta(days=14 + 2 * offset))
    except ValidationError:  # near the calendar's end (a year ahead): up to the range's end only
        return calendars.session_closes(code, first, hi.date())


def _choose(eligible: npt.NDArray[np.bool_], score: npt.NDArray[Any] | None) -> npt.NDArray[np.int64]:
    """The front contract (column) of each session (row), -1 where none is eligible: the eligible contract
    with the highest ``score`` (ties: the earliest expiry), the earliest expiry without a score; never a
    column before the one held on an earlier session."""
    n = eligible.shape[0]
    has: npt.NDArray[np.bool_] = np.asarray(eligible.any(axis=1), dtype=bool)
    if score is None:
        first = np.where(has, np.argmax(eligible, axis=1), -1)
        valid = first[has]
        if np.all(valid[1:] >= valid[:-1]):  # the usual case: expiries listed in order
            return first.astype(np.int64)
    held = np.full(n, -1, dtype=np.int64)
    h = -1
    for i, some in enumerate(has.tolist()):
        if not some:
            continue
        cand = np.flatnonzero(eligible[i])
        cand = cand[cand >= h]
        if len(cand) == 0:
            continue
        h = int(cand[0] if score is None else cand[int(np.argmax(score[i, cand]))])
        held[i] = h
    return held


def _ranked(eligible: npt.NDArray[np.bool_], front: npt.NDArray[np.int64], rank: int) -> npt.NDArray[np.int64]:
    """The column ``rank`` places after ``front`` among each session's eligible contracts, -1 where none."""
    if rank == 0:
        return front
    cols = np.arange(eligible.shape[1])
    after = eligible & (cols[None, :] >= front[:, None]) & (front[:, None] >= 0)
    cum = np.cumsum(after, axis=1)
    has = cum[:, -1] > rank if eligible.shape[1] else np.zeros(len(front), dtype=bool)
    return np.where(has, np.argmax(cum > rank, axis=1), -1).astype(np.int64)


def plan(session: HdiSession, spec: ContinuousSpec) -> Plan:
    """The contracts and rolls of ``spec`` (no bars are read but the closes around each roll).

    Raises ValidationError (an unknown root or none of its contracts listed in the range, contracts in
    several datasets without ``dataset``, a dataset without a calendar, no open interest stored for
    ``open_interest``, a ``rank`` above the contracts listed together), ConfigError and StorageError."""
    conn, schema = session.connection(), session.schema
    root, lo, hi = spec.root, spec.start, spec.end
    where = f" in {spec.dataset}" if spec.dataset else ""
    found = store.contracts(conn, schema, root, spec.dataset)
    if found.empty:
        known = store.futures_roots(conn, schema)
        raise ValidationError(
            f"unknown futures root {root!r}{where}: no {root} futures definitions are stored (instrument class F, "
            f"asset {root}); ingest its definitions first, e.g. hdi ingest --schema definition --symbols {root}.FUT "
            "--stype-in parent --start ... --end ... (Databento), its FUT contracts (IB) or the sample data; "
            + (f"stored roots: {', '.join(known)}" if known else "no futures definitions are stored yet")
        )
    datasets = sorted(set(found["dataset"]))
    if len(datasets) > 1:
        raise ValidationError(
            f"{root} futures are stored in several datasets ({', '.join(datasets)}): pass dataset=, "
            f"e.g. dataset={datasets[0]!r}"
        )
    dataset = datasets[0]
    code = _calendar(session, dataset, found["exchange"].tolist())
    labels, closes = _sessions(code, lo, hi, spec.offset)
    starts = np.concatenate([[min(lo.value, int(closes[0])) - 1], closes[:-1]]) if len(closes) else closes
    inside = np.flatnonzero((closes > lo.value) & (starts < hi.value))
    if len(inside) == 0:
        raise ValidationError(f"no trading session of {code} lies in [{lo}, {hi}): widen the range")
    js = np.arange(inside[0], inside[-1] + 1)
    exp, act = found["expiration"].to_numpy(np.int64), found["activation"].to_numpy(np.int64)
    roll_at = np.searchsorted(closes, exp, side="right") - 1 + 1 - spec.offset  # the session after the last full one
    eligible = (js[:, None] < roll_at[None, :]) & ((act[None, :] < 0) | (act[None, :] < closes[js][:, None]))
    used = np.flatnonzero(eligible.any(axis=0))
    if len(used) == 0:
        first, last = found.iloc[0], found.iloc[-1]
        raise ValidationError(
            f"no {root} contract{where} is listed and before its roll in [{lo.date()}, {hi.date()}): the stored ones "
            f"({first.raw_symbol} .. {last.raw_symbol}) expire {pd.Timestamp(int(first.expiration), tz='UTC').date()} "
            f".. {pd.Timestamp(int(last.expiration), tz='UTC').date()}; ingest the definitions of the contracts "
            "that trade in this range"
        )
    found, eligible = found.iloc[used].reset_index(drop=True), eligible[:, used]
    ids = found["instrument_id"].tolist()
    table = TABLES[spec.schema].name
    score: npt.NDArray[Any] | None = None
    if spec.roll is Roll.VOLUME:  # the volume of the session before each decision
        bidx = np.arange(max(int(js[0]) - 2, 0), int(js[-1]))
        score = np.zeros(eligible.shape, dtype=np.int64)
        if len(bidx) >= 2:
            volumes = store.session_volumes(conn, schema, table, dataset, ids, closes[bidx])
            k = js - 1 - int(bidx[0])
            score = np.where((k >= 1)[:, None], volumes[np.clip(k, 0, len(bidx) - 1)], 0)
    elif spec.roll is Roll.OPEN_INTEREST:  # the open interest known at the previous session's close
        known_at = starts[js]
        oi = store.open_interest(conn, schema, dataset, ids, int(known_at[0]) - _OI_LOOKBACK_NS, int(known_at[-1]))
        if oi.empty:
            raise ValidationError(
                f"no open interest is stored for {root} contracts ({', '.join(found['raw_symbol'])}) before "
                f"{hi.date()}: roll='open_interest' reads the statistics schema (stat_type 9); ingest the "
                f"statistics schema, e.g. hdi ingest --schema statistics --symbols {root}.FUT --stype-in parent "
                f"--start {lo.date()} --end {hi.date()}"
            )
        score = np.zeros(eligible.shape, dtype=np.int64)
        for col, iid in enumerate(ids):
            mine = oi[oi["instrument_id"] == iid]
            if mine.empty:
                continue
            pos = np.searchsorted(mine["ts_recv_ns"].to_numpy(), known_at, side="left") - 1
            score[:, col] = np.where(pos >= 0, mine["quantity"].to_numpy()[np.clip(pos, 0, None)], 0)
    front = _choose(eligible, score)
    held = _ranked(eligible, front, spec.rank)
    if not (held >= 0).any():
        together = int(eligible.sum(axis=1).max())
        raise ValidationError(
            f"rank={spec.rank} is too high: at most {together} {root} contract(s) are listed together in "
            f"[{lo.date()}, {hi.date()}) (rank 0 is the front): use rank <= {together - 1} or ingest the "
            "definitions of later contracts"
        )
    symbols = found["raw_symbol"].tolist()
    rows = np.flatnonzero(held >= 0)  # the sessions (rows of js) with a contract
    cols = held[rows]
    # a run of one contract ends where the contract changes or a session without one interrupts it
    starts_run = np.ones(len(rows), dtype=bool)
    starts_run[1:] = (cols[1:] != cols[:-1]) | (rows[1:] != rows[:-1] + 1)
    heads = np.flatnonzero(starts_run)
    tails = np.append(heads[1:] - 1, len(rows) - 1)
    spans: list[Span] = []
    for h, t in zip(heads.tolist(), tails.tolist(), strict=True):
        col = int(cols[h])
        a = max(lo.value, int(starts[js[rows[h]]]))
        b = min(hi.value, int(closes[js[rows[t]]]))
        spans.append(Span(symbols[col], dataset, ids[col], pd.Timestamp(a, tz="UTC"), pd.Timestamp(b, tz="UTC")))
    moved = np.flatnonzero(cols[1:] != cols[:-1]) + 1  # rolls: the contract changes (across gaps too)
    changes = [(int(js[rows[k]]), int(cols[k - 1]), int(cols[k])) for k in moved.tolist()]
    before = [int(starts[j]) for j, _, _ in changes]
    prices = store.last_closes(
        conn,
        schema,
        table,
        dataset,
        [ids[c] for _, c, _ in changes] + [ids[c] for _, _, c in changes],
        before + before,
    )
    n = len(changes)
    fixed = tuple(zip(prices[:n], prices[n:], strict=True))
    rolls = []
    for (j, c_from, c_to), (p_from, p_to) in zip(changes, fixed, strict=True):
        fp = np.nan if p_from is None else p_from / 1e9
        tp = np.nan if p_to is None else p_to / 1e9
        rolls.append(
            RollRecord(
                session=pd.Timestamp(int(labels[j])).date(),
                from_instrument=int(ids[c_from]),
                to_instrument=int(ids[c_to]),
                from_price=fp,
                to_price=tp,
                difference=tp - fp,
                ratio=tp / fp if fp else np.nan,
                from_symbol=symbols[c_from],
                to_symbol=symbols[c_to],
                ts_roll=pd.Timestamp(int(starts[j]), tz="UTC"),
            )
        )
    return Plan(spec, dataset, code, tuple(spans), tuple(rolls), fixed)


def roll_frame(records: Sequence[RollRecord]) -> pd.DataFrame:
    """The roll table as a DataFrame (columns :data:`ROLL_COLUMNS`; ``session`` as datetime64 dates)."""
    frame = pd.DataFrame(
        {name: [getattr(r, name) for r in records] for name in ROLL_COLUMNS},
        columns=list(ROLL_COLUMNS),
    )
    frame["session"] = pd.to_datetime(frame["session"]).astype("datetime64[ns]")
    for name in ("from_instrument", "to_instrument"):
        frame[name] = frame[name].astype(np.int64)
    for name in ("from_price", "to_price", "difference", "ratio"):
        frame[name] = frame[name].astype(np.float64)
    for name in ("from_symbol", "to_symbol"):
        frame[name] = frame[name].astype(object)
    frame["ts_roll"] = pd.to_datetime(frame["ts_roll"], utc=True).astype("datetime64[ns, UTC]")
    return frame


def check_adjustable(
    rolls: Sequence[RollRecord], adjust: Adjust, schema: str | Schema, symbol: str | None = None
) -> None:
    """Check that ``adjust`` can adjust a series of ``schema`` bars at ``rolls`` (``symbol``: the series, for
    the message).

    Raises ValidationError for a roll without a close of both contracts before it, or (``ratio``) with one that
    is not positive."""
    if adjust is Adjust.NONE:
        return
    of = f"{symbol} " if symbol else ""
    for r in rolls:
        if math.isnan(r.from_price) or math.isnan(r.to_price):
            missing = r.from_symbol if math.isnan(r.from_price) else r.to_symbol
            raise ValidationError(
                f"cannot adjust {of}at the {r.from_symbol} -> {r.to_symbol} roll on {r.session}: {missing} has no "
                f"{schema} bar before it; ingest that contract's bars or use adjust='none'"
            )
        if adjust is Adjust.RATIO and (r.from_price <= 0 or r.to_price <= 0):
            raise ValidationError(
                f"adjust='ratio' needs positive prices but the {of}{r.from_symbol} -> {r.to_symbol} roll on "
                f"{r.session} is at {r.from_price} -> {r.to_price}: use adjust='difference'"
            )


def adjust_prices(
    frame: pd.DataFrame,
    records: Sequence[RollRecord],
    adjust: str | Adjust,
    fixed: Sequence[tuple[int | None, int | None]] | None = None,
) -> pd.DataFrame:
    """A copy of ``frame`` (bars indexed by ``ts_event``) back-adjusted at ``records``: the rows from the
    last roll on stay raw; earlier rows get the sum of the later rolls' differences added (``difference``)
    or are multiplied by the product of their ratios (``ratio``). Volumes and other columns are unchanged.
    With ``fixed`` (int64 1e-9 roll prices) and integer prices, ``difference`` is exact in fixed point.

    Raises ValidationError for an unknown ``adjust``."""
    how = parse_enum(Adjust, adjust, "adjust")
    out = frame.copy()
    if how is Adjust.NONE or not records:
        return out
    at = np.array([r.ts_roll.value for r in records], dtype=np.int64)
    seg = np.searchsorted(at, calendars.utc_ns(out.index), side="right")
    cols = [c for c in _PRICES if c in out.columns]
    integer = bool(cols) and all(pd.api.types.is_integer_dtype(out[c]) for c in cols)
    if how is Adjust.DIFFERENCE:
        if integer and fixed is not None:
            gaps = np.array([int(b or 0) - int(a or 0) for a, b in fixed], dtype=np.int64)
            add: npt.NDArray[Any] = np.concatenate([np.cumsum(gaps[::-1])[::-1], np.zeros(1, np.int64)])
        else:
            gaps_f = np.array([r.difference for r in records], dtype=np.float64)
            add = np.concatenate([np.cumsum(gaps_f[::-1])[::-1], [0.0]])
        for c in cols:
            out[c] = out[c].to_numpy() + add[seg]
    else:
        ratios = np.array([r.ratio for r in records], dtype=np.float64)
        mult = np.concatenate([np.cumprod(ratios[::-1])[::-1], [1.0]])
        for c in cols:
            out[c] = out[c].to_numpy(np.float64) * mult[seg]
    return out


def _frame(
    session: HdiSession, p: Plan, label: str | None, price_type: PriceType, columns: Sequence[str] | None
) -> pd.DataFrame:
    spec = p.spec
    check_price_type(price_type)
    if price_type == "fixed" and spec.adjust is Adjust.RATIO:
        raise ValidationError("adjust='ratio' gives float prices: use price_type='float' (or adjust='difference')")
    check_adjustable(p.rolls, spec.adjust, spec.schema)
    spans = [Span(label, s.dataset, s.instrument_id, s.lo, s.hi) for s in p.spans] if label else list(p.spans)
    syms = tuple(dict.fromkeys(s.symbol for s in spans)) or ((label,) if label else ())
    # the read of every bar query: the session column built into the frame, ``columns`` checked and read alone
    frame = sessions.bars(session, spec.schema, spans, syms, spec.start, spec.end, price_type, None, columns)
    frame = adjust_prices(frame, p.rolls, spec.adjust, p.fixed)
    return frame[list(columns)] if columns else frame


def continuous(
    session: HdiSession,
    root: str,
    schema: str | Schema,
    start: object,
    end: object,
    *,
    rank: int = 0,
    roll: str | Roll = Roll.CALENDAR,
    offset: int = 0,
    adjust: str | Adjust = Adjust.NONE,
    dataset: str | None = None,
    price_type: PriceType = "float",
) -> pd.DataFrame:
    """The continuous series of ``root``'s bars in ``[start, end)`` (see the module docstring for the rules),
    indexed by ``ts_event``, with each row's contract in ``symbol`` and ``instrument_id``. The roll table is
    ``frame.attrs["rolls"]`` (a tuple of :class:`RollRecord`; ``pd.DataFrame(...)`` or :func:`roll_frame`
    turns it into a table) and the request ``frame.attrs["continuous"]``.

    Raises ValidationError (a bad root, schema, range, rank, offset, roll, adjust or price type; see
    :func:`plan`; a roll without prices to adjust by), ConfigError and StorageError."""
    p = plan(session, _spec(root, schema, start, end, rank, roll, offset, adjust, dataset))
    frame = _frame(session, p, None, price_type, None)
    frame.attrs["rolls"] = p.rolls
    frame.attrs["continuous"] = _describe(p)
    return frame


def _describe(p: Plan) -> dict[str, object]:
    s = p.spec
    return {
        "root": s.root,
        "dataset": p.dataset,
        "calendar": p.calendar,
        "roll": s.roll.value,
        "rank": s.rank,
        "offset": s.offset,
        "adjust": s.adjust.value,
    }


def rolls(
    session: HdiSession,
    root: str,
    schema: str | Schema,
    start: object,
    end: object,
    *,
    rank: int = 0,
    roll: str | Roll = Roll.CALENDAR,
    offset: int = 0,
    adjust: str | Adjust = Adjust.NONE,
    dataset: str | None = None,
) -> pd.DataFrame:
    """The roll table of :func:`continuous` with the same arguments (columns :data:`ROLL_COLUMNS`), without
    reading the bars. Raises what :func:`plan` raises (ValidationError, ConfigError, StorageError)."""
    return roll_frame(plan(session, _spec(root, schema, start, end, rank, roll, offset, adjust, dataset)).rolls)


def query(
    session: HdiSession,
    schema: str | Schema,
    symbols: str | Sequence[str],
    start: object,
    end: object,
    *,
    adjust: str | Adjust,
    dataset: str | None = None,
    price_type: PriceType = "float",
    columns: Sequence[str] | None = None,
    interval: str | None = None,
) -> pd.DataFrame:
    """:func:`hdi_lab.core.retrieval.query` of continuous symbols (``ES.c.0``, ``ES.v.0``, ``ES.n.0``) rolled
    by hdi_lab's rules and adjusted by ``adjust`` (``none`` too): ``symbol`` holds the requested symbol,
    ``instrument_id`` the contract; ``frame.attrs["rolls"]`` maps each symbol to its rolls.

    Raises ValidationError (a symbol that is not continuous, ``interval`` given, what :func:`continuous`
    raises), ConfigError and StorageError."""
    how = parse_enum(Adjust, adjust, "adjust")
    if interval is not None:
        raise ValidationError(
            f"interval={interval!r} cannot be combined with adjust yet: query the bar schema of that interval "
            "(e.g. ohlcv-1h, ohlcv-1d) with adjust"
        )
    frames, table = [], {}
    for sym in require_symbols(symbols):
        if not _CONTINUOUS.match(sym):
            raise ValidationError(
                f"adjust={how.value!r} applies to continuous symbols (ES.c.0, ES.v.0, ES.n.0), not {sym!r}: "
                "leave adjust out to read it as stored"
            )
        p = plan(session, _spec(sym, schema, start, end, 0, Roll.CALENDAR, 0, how, dataset))
        frames.append(_frame(session, p, sym, price_type, columns))
        table[sym] = p.rolls
    frame = frames[0] if len(frames) == 1 else pd.concat(frames).sort_index(kind="stable")
    frame.attrs["rolls"] = table
    return frame
