"""Sessions the vendor has no (more) data for settle: an update fetches them once, not at every run (the rule is
:mod:`hdi_lab.core.update`'s), against the fake Databento gateway and the sample provider in a real PostgreSQL;
the rule itself as a pure function."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_databento import FakeDatabento

import hdi_lab
from hdi_lab.core import update as updater
from hdi_lab.core.session import HdiSession
from hdi_lab.schemas import Chunk, Schema, SType
from hdi_lab.storage.settle import Latest

GLBX = "GLBX.MDP3"


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hdi_lab.toml or pyproject table from the working directory."""
    monkeypatch.chdir(tmp_path)


def _days(chunks: list[Chunk]) -> list[str]:
    return [c.start.date().isoformat() for c in chunks]


def _bar_fetches(fake: FakeDatabento) -> int:
    return fake.served_schemas.count("ohlcv-1m")


@pytest.mark.integration
def test_sessions_after_expiry_are_fetched_once_until_the_vendor_revises_them(
    dbs: HdiSession, fake: FakeDatabento
) -> None:
    """ESH4 expires on 2024-03-15: the vendor has nothing for it on the sessions after."""
    hdi_lab.watch("databento", dataset=GLBX, schema="ohlcv-1m", symbols="ESH4", since="2024-03-13", session=dbs)
    first = hdi_lab.update(until="2024-03-21", session=dbs)
    assert set(first.plans[0].reasons.values()) == {"new"}
    gaps = hdi_lab.gaps("ohlcv-1m", "ESH4", "2024-03-14", "2024-03-21", dataset=GLBX, session=dbs)
    assert gaps[["session", "reason"]].astype(str).values.tolist() == [
        ["2024-03-18", "empty"],
        ["2024-03-19", "empty"],
        ["2024-03-20", "empty"],
    ]
    fetched = _bar_fetches(fake)
    second = hdi_lab.update(until="2024-03-21", session=dbs)
    [p] = second.plans
    assert second.up_to_date and p.chunks == []
    # the UTC days of those sessions (a CME session opens the evening before its date)
    assert _days(p.settled) == ["2024-03-17", "2024-03-18", "2024-03-19", "2024-03-20"]
    assert "up to date; 4 settled (the vendor has no more data)" in str(second)
    assert _bar_fetches(fake) == fetched  # nothing asked of the vendor again
    assert hdi_lab.update(until="2024-03-21", session=dbs).plans[0].settled == p.settled

    # a vendor revision of a settled day is fetched all the same
    fake.set_condition("2024-03-19", "available", "2024-06-01")
    [p] = hdi_lab.update(until="2024-03-21", session=dbs).plans
    assert (_days(p.chunks), set(p.reasons.values())) == (["2024-03-19"], {"revised"})
    assert _bar_fetches(fake) == fetched + 1
    assert hdi_lab.update(until="2024-03-21", session=dbs).up_to_date


@pytest.mark.integration
def test_a_day_not_yet_available_is_not_settled(dbs: HdiSession, fake: FakeDatabento) -> None:
    """Settling needs the vendor to have called the day available: a degraded day with an empty session is
    asked again (the vendor may still fill it) until the vendor says available."""
    hdi_lab.watch("databento", dataset=GLBX, schema="ohlcv-1m", symbols="ESH4", since="2024-03-14", session=dbs)
    fake.set_condition("2024-03-18", "degraded", "2024-03-19")
    hdi_lab.update(until="2024-03-20", session=dbs)
    fetched = _bar_fetches(fake)
    [p] = hdi_lab.update(until="2024-03-20", session=dbs).plans
    assert "2024-03-18" in _days(p.chunks) and "2024-03-18" not in _days(p.settled)
    assert p.reasons[p.chunks[_days(p.chunks).index("2024-03-18")].key] == "empty"
    assert _bar_fetches(fake) == fetched + len(p.chunks)
    fake.set_condition("2024-03-18", "available", "2024-03-19")
    [p] = hdi_lab.update(until="2024-03-20", session=dbs).plans
    assert "2024-03-18" in _days(p.chunks)  # ingested while degraded: the vendor's change is fetched once
    [p] = hdi_lab.update(until="2024-03-20", session=dbs).plans
    assert p.chunks == [] and "2024-03-18" in _days(p.settled)


@pytest.mark.integration
def test_a_contract_not_listed_yet_settles_without_vendor_conditions(session: HdiSession) -> None:
    """The sample provider (no dataset conditions): ESM4 is listed from 2023-03-17 on; before, its symbol maps to
    no instrument and its sessions are empty at the vendor."""
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols="ESM4", since="2023-03-13", name="esm4", session=session)
    hdi_lab.update(until="2023-03-22", session=session)
    gaps = hdi_lab.gaps("ohlcv-1m", "ESM4", "2023-03-14", "2023-03-22", session=session)
    assert gaps[["session", "reason"]].astype(str).values.tolist() == [
        ["2023-03-14", "empty"],
        ["2023-03-15", "empty"],
        ["2023-03-16", "empty"],
        ["2023-03-17", "partial"],  # listed at 14:30 UTC
    ]
    assert gaps["instrument_id"].isna().sum() == 3
    [p] = hdi_lab.update(until="2023-03-22", session=session).plans
    assert _days(p.settled) == ["2023-03-13", "2023-03-14", "2023-03-15"]
    # the UTC days of the partial session 2023-03-17 (opening the evening before) are fetched once more
    assert [(d, p.reasons[c.key]) for d, c in zip(_days(p.chunks), p.chunks, strict=True)] == [
        ("2023-03-16", "empty"),  # it holds the empty session 2023-03-16 too
        ("2023-03-17", "partial"),
    ]
    assert p.report is not None and p.report.inserted == p.report.updated == p.report.deleted == 0
    [p] = hdi_lab.update(until="2023-03-22", session=session).plans
    assert p.chunks == [] and _days(p.settled) == ["2023-03-13", "2023-03-14", "2023-03-15", "2023-03-16", "2023-03-17"]


@pytest.mark.integration
def test_rows_removed_by_hand_are_fetched_again_despite_the_rule(session: HdiSession) -> None:
    """The range held rows when it was ingested: an empty session now is no vendor's doing."""
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols="ESH4", since="2024-01-02", session=session)
    hdi_lab.update(until="2024-01-06", session=session)
    before = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-06", session=session)
    hdi_lab.sql(
        "DELETE FROM ohlcv_1m WHERE ts_event >= '2024-01-04T00:00Z' AND ts_event < '2024-01-05T00:00Z'", session=session
    )
    [p] = hdi_lab.update(until="2024-01-06", session=session).plans
    assert "2024-01-04" in _days(p.chunks) and p.settled == []
    after = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-06", session=session)
    pd.testing.assert_frame_equal(after, before)


def _thin(day: str) -> object:
    """The vendor has only the first 5 hours of ``day`` (UTC) of bars: its session is partial."""
    lo = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=5)
    hi = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)

    def thin(records: np.ndarray) -> np.ndarray:
        if "close" not in (records.dtype.names or ()):
            return records
        drop = (records["ts_event"] >= lo.value) & (records["ts_event"] < hi.value)
        return records[~drop]

    return thin


@pytest.mark.integration
def test_a_partial_session_is_fetched_again_once(dbs: HdiSession, fake: FakeDatabento) -> None:
    hdi_lab.watch("databento", dataset=GLBX, schema="ohlcv-1m", symbols="ESH4", since="2024-03-11", session=dbs)
    fake.revise = _thin("2024-03-13")  # type: ignore[assignment]
    hdi_lab.update(until="2024-03-15", session=dbs)
    gaps = hdi_lab.gaps("ohlcv-1m", "ESH4", "2024-03-12", "2024-03-15", dataset=GLBX, session=dbs)
    assert gaps[["session", "reason"]].astype(str).values.tolist() == [["2024-03-13", "partial"]]
    fetched = _bar_fetches(fake)
    [p] = hdi_lab.update(until="2024-03-15", session=dbs).plans  # once: the vendor may have filled it since
    assert _days(p.chunks) == ["2024-03-12", "2024-03-13"] and set(p.reasons.values()) == {"partial"}
    assert p.report is not None and (p.report.inserted, p.report.updated, p.report.deleted) == (0, 0, 0)
    assert _bar_fetches(fake) == fetched + 2
    [p] = hdi_lab.update(until="2024-03-15", session=dbs).plans  # that changed nothing: settled
    assert p.chunks == [] and _days(p.settled) == ["2024-03-12", "2024-03-13"]
    assert _bar_fetches(fake) == fetched + 2


# --- the rule ------------------------------------------------------------------------------------------------

_DAY = Chunk(
    key="k",
    provider="databento",
    dataset=GLBX,
    schema=Schema.OHLCV_1M,
    stype_in=SType.RAW_SYMBOL,
    symbols=("ESH4",),
    start=pd.Timestamp("2024-03-18", tz="UTC"),
    end=pd.Timestamp("2024-03-19", tz="UTC"),
)


def _latest(**changes: object) -> Latest:
    values: dict[str, object] = dict(
        chunk_key="k",
        ingest_id=1,
        finished_at=pd.Timestamp("2024-03-19 06:00", tz="UTC"),
        forced=False,
        changed=True,
        held={400001: 0},
        available=frozenset({dt.date(2024, 3, 18)}),
    )
    values.update(changes)
    return Latest(**values)  # type: ignore[arg-type]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("reasons", "now", "latest", "conditions", "expected"),
    [
        ({"empty"}, {400001: 0}, _latest(), True, True),
        ({"empty"}, {}, _latest(), True, True),  # the symbol maps to no instrument: nothing to compare
        ({"empty"}, {400001: 0}, None, True, False),  # never ingested
        ({"empty"}, {400001: 0}, _latest(held=None), True, False),  # logged before the rows were counted
        ({"empty"}, {400001: 0}, _latest(finished_at=pd.Timestamp("2024-03-18 23:00", tz="UTC")), True, False),
        ({"empty"}, {400001: 0}, _latest(available=frozenset()), True, False),  # not (yet) available
        ({"empty"}, {400001: 0}, _latest(available=frozenset()), False, True),  # no conditions reported
        ({"empty"}, {400001: 0}, _latest(held={400001: 1380}), True, False),  # rows removed since
        ({"empty"}, {400001: 2}, _latest(held={}), True, False),  # rows added since
        ({"partial"}, {400001: 600}, _latest(held={400001: 600}), True, False),  # never re-fetched
        ({"partial"}, {400001: 600}, _latest(held={400001: 600}, forced=True), True, False),  # that changed rows
        ({"partial"}, {400001: 600}, _latest(held={400001: 600}, forced=True, changed=False), True, True),
        ({"empty", "partial"}, {400001: 600}, _latest(held={400001: 600}), True, False),
    ],
)
def test_the_settle_rule(
    reasons: set[str], now: dict[int, int], latest: Latest | None, conditions: bool, expected: bool
) -> None:
    assert updater.settled(_DAY, reasons, now, latest, conditions=conditions) is expected
