"""Record validation: vectorised rules; each bad record gets the first rule it breaks and a reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from hdi_lab.dbn import INT64_MAX
from hdi_lab.schemas import Schema

__all__ = ["UNKNOWN_INSTRUMENT", "Reason", "Rejected", "Rule", "rules_for", "validate"]

Reason: TypeAlias = Callable[[np.void], str]

#: the rule of a record whose instrument has no symbology or definition yet: its entry is retried
#: automatically when an ingest brings them
UNKNOWN_INSTRUMENT = "unknown_instrument"


@dataclass(frozen=True)
class Rejected:
    """Indices of rejected records with the rule and a human reason for each."""

    index: npt.NDArray[Any]
    rules: list[str]
    reasons: list[str]


@dataclass(frozen=True)
class Rule:
    name: str
    check: Callable[[npt.NDArray[Any]], npt.NDArray[Any]]  # -> bool mask of BAD records
    reason: Reason


def _px(v: int) -> str:
    return "UNDEF_PRICE" if v == INT64_MAX else f"{v / 1e9:.9g}"


def _bar_rules(seconds: int) -> list[Rule]:
    step = seconds * 1_000_000_000
    ohlc = ("open", "high", "low", "close")
    return [
        Rule(
            "price_undefined",
            lambda r: np.any([r[c] == INT64_MAX for c in ohlc], axis=0),
            lambda x: "bar has an undefined price: " + ", ".join(f"{c}={_px(int(x[c]))}" for c in ohlc),
        ),
        Rule(
            "price_nonpositive",
            lambda r: np.any([r[c] <= 0 for c in ohlc], axis=0),
            lambda x: "bar prices must be > 0: " + ", ".join(f"{c}={_px(int(x[c]))}" for c in ohlc),
        ),
        Rule(
            "ohlc_inconsistent",
            lambda r: (
                (r["high"] < np.maximum(np.maximum(r["open"], r["close"]), r["low"]))
                | (r["low"] > np.minimum(r["open"], r["close"]))
            ),
            lambda x: "need low <= open, close <= high: " + ", ".join(f"{c}={_px(int(x[c]))}" for c in ohlc),
        ),
        Rule(
            "ts_misaligned",
            lambda r: (r["ts_event"] % np.uint64(step)) != 0,
            lambda x: f"ts_event {int(x['ts_event'])} ns is not aligned to the {seconds}-second bar interval",
        ),
    ]


_TRADE_RULES = [
    Rule("price_undefined", lambda r: r["price"] == INT64_MAX, lambda x: "trade price is UNDEF_PRICE"),
    Rule("price_nonpositive", lambda r: r["price"] <= 0, lambda x: f"trade price {_px(int(x['price']))} is not > 0"),
    Rule("size_nonpositive", lambda r: r["size"] == 0, lambda x: "trade size is 0"),
]


def rules_for(schema: Schema) -> list[Rule]:
    """The record rules of ``schema`` (bars, trades; none for the others). Raises nothing."""
    if schema.is_bar:
        return _bar_rules(schema.bar_seconds)
    if schema in (Schema.TRADES, Schema.TBBO):
        return list(_TRADE_RULES)
    return []


def validate(
    records: npt.NDArray[Any],
    schema: Schema,
    start_ns: int,
    end_ns: int,
    known_ids: npt.NDArray[Any] | None,
) -> Rejected:
    """Check records against the schema's rules, the request's ``[start, end)`` and known instruments
    (``None``: not checked). Raises nothing: a bad record is rejected, with its rule and reason."""
    n = len(records)
    first = np.full(n, -1, dtype=np.int32)
    rules = rules_for(schema)
    # Databento filters requests on ts_recv where a schema has it, else on ts_event.
    tcol = "ts_recv" if "ts_recv" in (records.dtype.names or ()) else "ts_event"
    lo, hi = np.uint64(max(start_ns, 0)), np.uint64(end_ns)
    rules = [
        *rules,
        Rule(
            "ts_outside_request",
            lambda r: (r[tcol] < lo) | (r[tcol] >= hi),
            lambda x: f"{tcol} {int(x[tcol])} ns is outside the requested [{start_ns}, {end_ns}) ns",
        ),
    ]
    if known_ids is not None:
        rules.append(
            Rule(
                UNKNOWN_INSTRUMENT,
                lambda r: ~np.isin(r["instrument_id"], known_ids),
                lambda x: (
                    f"instrument_id {int(x['instrument_id'])} has no symbology or definition; "
                    "ingest its definitions, then retry"
                ),
            )
        )
    for i, rule in enumerate(rules):
        if n == 0:
            break
        bad = rule.check(records) & (first < 0)
        first[bad] = i
    idx = np.flatnonzero(first >= 0)
    return Rejected(
        idx,
        [rules[first[j]].name for j in idx],
        [rules[first[j]].reason(records[j]) for j in idx],
    )
