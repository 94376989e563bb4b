"""Vendor revisions for real: the fake gateway's ``metadata.get_dataset_condition`` read by the real ``databento``
client, the conditions kept with each ingest in PostgreSQL, and the days a later update must re-fetch."""

from __future__ import annotations

import datetime as dt

import databento as db
import pandas as pd
import pytest
from fake_databento import KEY, FakeDatabento, Fault

import hdi_lab
from hdi_lab.core.conditions import STALE_COLUMNS, stale_days
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import AuthError, ProviderError, UnavailableError, ValidationError
from hdi_lab.providers.databento.provider import DatabentoProvider

pytestmark = pytest.mark.integration
GLBX = "GLBX.MDP3"
D = dt.date


def _provider(s: HdiSession) -> DatabentoProvider:
    p = s.provider("databento")
    assert isinstance(p, DatabentoProvider)
    return p


def _ingest(s: HdiSession, **kw: object) -> hdi_lab.IngestReport:
    args: dict[str, object] = dict(
        provider="databento", dataset=GLBX, schema="ohlcv-1m", symbols=["ESH4"], start="2024-03-12", end="2024-03-15"
    )
    args.update(kw)
    return hdi_lab.ingest(session=s, **args)  # type: ignore[arg-type]


def _seen(s: HdiSession) -> list[tuple[str, D, str, D | None]]:
    """(schema, day, condition, last_modified_date) kept with each ingest."""
    frame = hdi_lab.sql(
        "SELECT l.schema, c.day, c.condition, c.last_modified_date FROM ingest_conditions c "
        "JOIN ingest_log l ON l.id = c.ingest_id ORDER BY l.schema, c.day, l.id",
        session=s,
    )
    return [(r.schema, r.day, r.condition, r.last_modified_date) for r in frame.itertuples()]


# --- the gateway, as the real client reads it ---------------------------------------------------


def test_gateway_serves_dataset_conditions_as_the_real_api(fake: FakeDatabento) -> None:
    client = db.Historical(key=KEY, gateway=fake.url)
    fake.set_condition("2024-03-13", "degraded", "2024-03-20")
    fake.set_condition("2024-03-14", "missing", "2024-03-20")  # the vendor gives no date for a missing day
    got = client.metadata.get_dataset_condition(GLBX, start_date="2024-03-12", end_date=D(2024, 3, 15))
    assert got == [
        {"date": "2024-03-12", "condition": "available", "last_modified_date": "2024-03-13"},
        {"date": "2024-03-13", "condition": "degraded", "last_modified_date": "2024-03-20"},
        {"date": "2024-03-14", "condition": "missing", "last_modified_date": None},
        {"date": "2024-03-15", "condition": "available", "last_modified_date": "2024-03-16"},
    ]
    endpoint, params = fake.calls[-1]
    assert endpoint == "metadata.get_dataset_condition"
    assert params == {"dataset": GLBX, "start_date": "2024-03-12", "end_date": "2024-03-15"}
    # without dates: the whole available range; a range reaching outside it is clipped to it
    everything = client.metadata.get_dataset_condition(GLBX)
    assert (everything[0]["date"], everything[-1]["date"]) == ("2018-01-01", "2024-12-31")
    assert len(everything) == (D(2024, 12, 31) - D(2018, 1, 1)).days + 1
    tail = client.metadata.get_dataset_condition(GLBX, start_date="2024-12-30", end_date="2025-03-01")
    assert [r["date"] for r in tail] == ["2024-12-30", "2024-12-31"]


# --- the provider: a frame, through the Caller --------------------------------------------------


def test_provider_returns_the_conditions_as_a_frame(dbs: HdiSession, fake: FakeDatabento) -> None:
    fake.set_condition("2024-03-13", "pending")
    fake.faults.append(Fault("metadata.get_dataset_condition", status=503))  # retried
    frame = _provider(dbs).dataset_conditions(GLBX, D(2024, 3, 12), D(2024, 3, 14))
    assert list(frame.columns) == ["date", "condition", "last_modified_date"]
    assert list(frame["date"]) == list(pd.to_datetime(["2024-03-12", "2024-03-13", "2024-03-14"]))
    assert list(frame["condition"]) == ["available", "pending", "available"]
    assert frame["last_modified_date"].iloc[0] == pd.Timestamp("2024-03-13")
    assert pd.isna(frame["last_modified_date"].iloc[1])
    assert fake.count("metadata.get_dataset_condition") == 2


def test_provider_conditions_errors_are_one_line_without_the_key(dbs: HdiSession, fake: FakeDatabento) -> None:
    p = _provider(dbs)
    fake.faults.append(Fault("metadata.get_dataset_condition", status=422, detail=f"bad dataset for key {KEY}"))
    with pytest.raises(ProviderError) as refused:
        p.dataset_conditions(GLBX, D(2024, 3, 12), D(2024, 3, 14))
    assert "metadata.get_dataset_condition" in str(refused.value)
    assert "\n" not in str(refused.value) and KEY not in str(refused.value) and "****" in str(refused.value)
    fake.faults += [Fault("metadata.get_dataset_condition", status=500) for _ in range(3)]
    with pytest.raises(UnavailableError, match="after 3 tries"):
        p.dataset_conditions(GLBX, D(2024, 3, 12), D(2024, 3, 14))
    with pytest.raises(ValidationError, match="is after end"):
        p.dataset_conditions(GLBX, D(2024, 3, 14), D(2024, 3, 12))
    with pytest.raises(ValidationError, match="not a Databento dataset"):
        p.dataset_conditions("NOPE.DATA", D(2024, 3, 12), D(2024, 3, 14))
    wrong = HdiSession(dbs.settings.replace(databento_api_key="db-WrongKey000000000000000"))
    try:
        with pytest.raises(AuthError):
            _provider(wrong).dataset_conditions(GLBX, D(2024, 3, 12), D(2024, 3, 14))
    finally:
        wrong.close()


# --- kept with each ingest ----------------------------------------------------------------------


def test_an_ingest_keeps_the_conditions_it_saw(dbs: HdiSession, fake: FakeDatabento) -> None:
    fake.set_condition("2024-03-13", "degraded", "2024-03-14")
    _ingest(dbs)
    assert fake.count("metadata.get_dataset_condition") == 1  # once per run, not per chunk
    bars = [(d, c, m) for sch, d, c, m in _seen(dbs) if sch == "ohlcv-1m"]
    assert bars == [
        (D(2024, 3, 12), "available", D(2024, 3, 13)),
        (D(2024, 3, 13), "degraded", D(2024, 3, 14)),
        (D(2024, 3, 14), "available", D(2024, 3, 15)),
    ]
    # a re-run skips the committed chunks and keeps what they saw
    fake.set_condition("2024-03-13", "available", "2024-03-25")
    _ingest(dbs)
    assert [(d, c) for sch, d, c, _ in _seen(dbs) if sch == "ohlcv-1m"][1] == (D(2024, 3, 13), "degraded")


def test_an_ingest_goes_on_when_the_conditions_cannot_be_had(dbs: HdiSession, fake: FakeDatabento) -> None:
    fake.faults += [Fault("metadata.get_dataset_condition", status=500) for _ in range(3)]
    report = _ingest(dbs, end="2024-03-13")
    assert report.inserted > 0
    assert _seen(dbs) == []


# --- the days a later update must re-fetch ------------------------------------------------------


def test_stale_days_after_a_degraded_day_is_fixed_and_a_day_is_revised(dbs: HdiSession, fake: FakeDatabento) -> None:
    fake.set_condition("2024-03-13", "degraded", "2024-03-14")
    _ingest(dbs)
    assert stale_days(dbs, GLBX, "ohlcv-1m", ["ESH4"], "2024-03-12", "2024-03-15").empty  # nothing changed yet

    fake.set_condition("2024-03-13", "available", "2024-03-20")  # the vendor fixed the degraded day
    fake.set_condition("2024-03-12", "available", "2024-04-02")  # and corrected another one
    out = stale_days(dbs, GLBX, "ohlcv-1m", ["ESH4"], "2024-03-12", "2024-03-15")
    assert list(out.columns) == list(STALE_COLUMNS)
    assert [(r.symbol, r.day, r.reason) for r in out.itertuples()] == [
        ("ESH4", D(2024, 3, 12), "revised"),
        ("ESH4", D(2024, 3, 13), "degraded"),
    ]  # 2024-03-14 is unchanged: not stale
    fixed = out.iloc[1]
    assert (fixed.ingested_condition, fixed.ingested_last_modified) == ("degraded", D(2024, 3, 14))
    assert (fixed.condition, fixed.last_modified_date) == ("available", D(2024, 3, 20))

    # only the asked days, schema and symbols; days never ingested are gaps, not revisions
    assert list(stale_days(dbs, GLBX, "ohlcv-1m", "ESH4", "2024-03-13", "2024-03-14")["day"]) == [D(2024, 3, 13)]
    assert stale_days(dbs, GLBX, "ohlcv-1h", ["ESH4"], "2024-03-12", "2024-03-15").empty
    assert stale_days(dbs, GLBX, "ohlcv-1m", ["NQH4"], "2024-03-12", "2024-03-15").empty
    assert stale_days(dbs, GLBX, "ohlcv-1m", ["ESH4"], "2024-03-20", "2024-03-22").empty

    # re-ingesting the stale days (forced, as a later update will) makes them current again
    _ingest(dbs, start="2024-03-12", end="2024-03-14", force=True)
    assert stale_days(dbs, GLBX, "ohlcv-1m", ["ESH4"], "2024-03-12", "2024-03-15").empty


def test_stale_days_of_ingests_that_kept_no_condition(dbs: HdiSession, fake: FakeDatabento) -> None:
    """An ingest from before conditions were kept is judged by its own date: the vendor's last_modified_date
    of data from 2024 is older than an ingest made today, unless the vendor revises the day later."""
    _ingest(dbs)
    hdi_lab.sql("DELETE FROM ingest_conditions", session=dbs)
    assert stale_days(dbs, GLBX, "ohlcv-1m", ["ESH4"], "2024-03-12", "2024-03-15").empty
    later = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=2)).strftime("%Y-%m-%d")
    fake.set_condition("2024-03-14", "available", later)
    out = stale_days(dbs, GLBX, "ohlcv-1m", ["ESH4"], "2024-03-12", "2024-03-15")
    assert [(r.day, r.reason, r.ingested_condition) for r in out.itertuples()] == [(D(2024, 3, 14), "revised", None)]


def test_stale_days_refuses_a_bad_request(dbs: HdiSession) -> None:
    with pytest.raises(ValidationError, match="schema"):
        stale_days(dbs, GLBX, "ohlcv-7m", ["ESH4"], "2024-03-12", "2024-03-15")
    with pytest.raises(ValidationError, match="symbols is required"):
        stale_days(dbs, GLBX, "ohlcv-1m", [], "2024-03-12", "2024-03-15")
    with pytest.raises(ValidationError, match="must be before end"):
        stale_days(dbs, GLBX, "ohlcv-1m", ["ESH4"], "2024-03-15", "2024-03-12")
