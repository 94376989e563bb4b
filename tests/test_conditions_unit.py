"""Vendor revisions, the decision alone: which ingested days are stale, and the vendor's answer as a frame."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import pytest

from hdi_lab.core.conditions import STALE_COLUMNS, chunk_rows, decide, stale_reason
from hdi_lab.errors import DataFormatError
from hdi_lab.providers.databento.provider import conditions_frame
from hdi_lab.schemas import Chunk, Schema, SType

pytestmark = pytest.mark.unit

D = dt.date
INGESTED_ON = D(2024, 3, 20)


@pytest.mark.parametrize(
    ("then", "then_modified", "now", "now_modified", "expected"),
    [
        # ingested while degraded / pending / missing: re-fetched once the vendor has something else
        ("degraded", D(2024, 3, 13), "available", D(2024, 3, 25), "degraded"),
        ("degraded", D(2024, 3, 13), "available", D(2024, 3, 13), "degraded"),  # fixed, date unchanged
        ("degraded", D(2024, 3, 13), "degraded", D(2024, 3, 25), "degraded"),  # still degraded, regenerated
        ("pending", None, "available", D(2024, 3, 21), "pending"),
        ("pending", None, "degraded", D(2024, 3, 21), "pending"),
        ("missing", None, "available", D(2024, 3, 21), "missing"),
        # ... but not while the vendor says exactly what it said then: the same bytes would come back
        ("degraded", D(2024, 3, 13), "degraded", D(2024, 3, 13), None),
        ("pending", None, "pending", None, None),
        # a vendor correction: modified after what the ingest saw
        ("available", D(2024, 3, 13), "available", D(2024, 3, 14), "revised"),
        ("available", D(2024, 3, 13), "degraded", D(2024, 3, 14), "revised"),
        # unchanged, or older
        ("available", D(2024, 3, 13), "available", D(2024, 3, 13), None),
        ("available", D(2024, 3, 13), "available", D(2024, 3, 12), None),
        # nothing (new) to fetch now
        ("available", D(2024, 3, 13), "pending", D(2024, 3, 25), None),
        ("available", D(2024, 3, 13), "missing", None, None),
        ("degraded", D(2024, 3, 13), "missing", None, None),
        ("degraded", D(2024, 3, 13), None, None, None),  # the vendor does not describe the day
        # an ingest that recorded no condition: judged by its own date
        (None, None, "available", D(2024, 3, 21), "revised"),
        (None, None, "available", INGESTED_ON, None),  # same day: not provably after the ingest
        (None, None, "available", D(2024, 3, 13), None),
        (None, None, "degraded", D(2024, 3, 21), "revised"),
    ],
)
def test_stale_reason(
    then: str | None, then_modified: D | None, now: str | None, now_modified: D | None, expected: str | None
) -> None:
    assert stale_reason(then, then_modified, INGESTED_ON, now, now_modified) == expected


def _ingested(*rows: tuple[str, str, str | None, str | None, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (sym, D.fromisoformat(day), 1, pd.Timestamp(at, tz="UTC"), cond, D.fromisoformat(m) if m else None)
            for sym, day, cond, m, at in rows
        ],
        columns=["symbol", "day", "ingest_id", "ingested_at", "condition", "last_modified_date"],
    )


def test_decide_per_symbol_and_day() -> None:
    ingested = _ingested(
        ("ESH4", "2024-03-12", "available", "2024-03-13", "2024-03-20 10:00"),
        ("ESH4", "2024-03-13", "degraded", "2024-03-14", "2024-03-20 10:00"),
        ("NQH4", "2024-03-13", "available", "2024-03-14", "2024-03-22 10:00"),  # ingested after the fix
        ("ESH4", "2024-03-14", None, None, "2024-03-20 23:30"),
        ("ESH4", "2024-03-15", "available", "2024-03-16", "2024-03-20 10:00"),  # the vendor skips this day
    )
    vendor = conditions_frame(
        [
            {"date": "2024-03-12", "condition": "available", "last_modified_date": "2024-03-13"},
            {"date": "2024-03-13", "condition": "available", "last_modified_date": "2024-03-14"},
            {"date": "2024-03-14", "condition": "available", "last_modified_date": "2024-03-21"},
        ],
        "GLBX.MDP3",
    )
    out = decide(ingested, vendor)
    assert list(out.columns) == list(STALE_COLUMNS)
    assert [(r.symbol, r.day, r.reason) for r in out.itertuples()] == [
        ("ESH4", D(2024, 3, 13), "degraded"),
        ("ESH4", D(2024, 3, 14), "revised"),
    ]
    first = out.iloc[0]
    assert (first.ingested_condition, first.condition) == ("degraded", "available")
    assert first.ingested_last_modified == D(2024, 3, 14)
    assert first.last_modified_date == D(2024, 3, 14)
    assert decide(ingested.iloc[:0], vendor).empty


def test_conditions_frame_is_the_vendors_answer_by_date() -> None:
    frame = conditions_frame(
        [
            {"date": "2024-03-13", "condition": "missing", "last_modified_date": None},
            {"date": "2024-03-12", "condition": "degraded", "last_modified_date": "2024-03-15"},
        ],
        "GLBX.MDP3",
    )
    assert list(frame.columns) == ["date", "condition", "last_modified_date"]
    assert list(frame["date"]) == [pd.Timestamp("2024-03-12"), pd.Timestamp("2024-03-13")]
    assert list(frame["condition"]) == ["degraded", "missing"]
    assert frame["last_modified_date"].iloc[0] == pd.Timestamp("2024-03-15")
    assert pd.isna(frame["last_modified_date"].iloc[1])
    assert conditions_frame([], "GLBX.MDP3").empty


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        ({"detail": "oops"}, "did not answer a list"),
        ([{"date": "2024-03-12"}], "did not answer a list"),
        ([{"date": "2024-03-12", "condition": "excellent", "last_modified_date": None}], "unknown condition"),
    ],
)
def test_conditions_frame_refuses_another_answer(answer: object, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        conditions_frame(answer, "GLBX.MDP3")


def test_chunk_rows_are_the_days_a_chunk_covers() -> None:
    vendor = conditions_frame(
        [
            {"date": f"2024-03-{d:02d}", "condition": c, "last_modified_date": m}
            for d, c, m in [(11, "available", "2024-03-12"), (12, "degraded", "2024-03-13"), (13, "missing", None)]
        ],
        "GLBX.MDP3",
    )
    day = Chunk(
        key="k",
        provider="databento",
        dataset="GLBX.MDP3",
        schema=Schema.OHLCV_1M,
        stype_in=SType.RAW_SYMBOL,
        symbols=("ESH4",),
        start=pd.Timestamp("2024-03-12", tz="UTC"),
        end=pd.Timestamp("2024-03-13", tz="UTC"),
    )
    assert chunk_rows(vendor, day) == [(D(2024, 3, 12), "degraded", D(2024, 3, 13))]
    two = dataclasses.replace(day, end=pd.Timestamp("2024-03-14 00:00:01", tz="UTC"))
    assert chunk_rows(vendor, two) == [(D(2024, 3, 12), "degraded", D(2024, 3, 13)), (D(2024, 3, 13), "missing", None)]
    assert chunk_rows(None, day) == []
