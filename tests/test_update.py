"""Updates (``hdi update``, ``hdi_lab.update``, ``%hdi_update``) for real: subscriptions in the test PostgreSQL
brought current with the sample provider and the fake Databento gateway (dataset conditions, a vendor revision)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_databento import FakeDatabento, Fault
from fake_ib import FakeIbGateway
from helpers import TestingShell, run_cli

import hdi_lab
from hdi_lab.core import update as updater
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import CostLimitError, ProviderError, ValidationError
from hdi_lab.providers.ib.pacing import VirtualClock

pytestmark = pytest.mark.integration

GLBX = "GLBX.MDP3"


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hdi_lab.toml or pyproject table from the working directory."""
    monkeypatch.chdir(tmp_path)


def _bars(s: HdiSession, symbol: str, start: str, end: str, dataset: str = GLBX) -> pd.DataFrame:
    return hdi_lab.query("ohlcv-1m", symbol, start, end, dataset=dataset, session=s)


def _drop_day(s: HdiSession, day: str) -> None:
    """Remove one UTC day: its bars and the ingest-log rows (with what hangs on them) of its chunks."""
    lo, hi = pd.Timestamp(day, tz="UTC"), pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)
    logs = "SELECT id FROM ingest_log WHERE start_ts >= %(lo)s AND end_ts <= %(hi)s"
    for sql in (
        "DELETE FROM ohlcv_1m WHERE ts_event >= %(lo)s AND ts_event < %(hi)s",
        f"DELETE FROM ingest_conditions WHERE ingest_id IN ({logs})",
        f"DELETE FROM quarantine WHERE ingest_id IN ({logs})",
        "DELETE FROM ingest_log WHERE start_ts >= %(lo)s AND end_ts <= %(hi)s",
    ):
        hdi_lab.sql(sql, {"lo": lo, "hi": hi}, session=s)


# --- the sample provider ---------------------------------------------------------------------------------


def test_a_new_subscription_backfills_then_an_update_does_nothing(session: HdiSession) -> None:
    sub = hdi_lab.watch("sample", schema="ohlcv-1m", symbols="ESH4", since="2024-01-02", name="es", session=session)
    report = hdi_lab.update(until="2024-01-06", session=session)
    [p] = report.plans
    assert p.subscription == sub and not report.dry_run
    assert [(c.start.date().isoformat(), p.reasons[c.key]) for c in p.chunks] == [
        ("2024-01-02", "new"),
        ("2024-01-03", "new"),
        ("2024-01-04", "new"),
        ("2024-01-05", "new"),
    ]
    assert p.report is not None and p.report.inserted > 0 and p.report.inserted == p.report.fetched
    stored = _bars(session, "ESH4", "2024-01-02", "2024-01-06")
    assert len(stored) == p.report.inserted
    assert "update fetched 4 chunks" in str(report) and "es" in str(report)
    row = report.frame().iloc[0]
    assert (row["id"], row["chunks"], row["new"], row["inserted"]) == (sub.id, 4, 4, len(stored))

    again = hdi_lab.update("es", until="2024-01-06", session=session)
    assert again.up_to_date and again.plans[0].chunks == [] and again.plans[0].report is None
    assert str(again).startswith("1 subscriptions up to date: nothing to do")
    assert "subscription 1 (es) ohlcv-1m ESH4 to 2024-01-06: up to date" in str(again)

    # a later until brings the new sessions only
    later = hdi_lab.update(sub.id, until="2024-01-09", session=session)
    assert [c.start.date().isoformat() for c in later.plans[0].chunks] == ["2024-01-06", "2024-01-07", "2024-01-08"]


def test_a_deleted_day_is_fetched_again(session: HdiSession) -> None:
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols="ESH4,NQH4", since="2024-01-02", session=session)
    hdi_lab.update(until="2024-01-06", session=session)
    before = _bars(session, "ESH4,NQH4", "2024-01-02", "2024-01-06")
    _drop_day(session, "2024-01-03")
    assert len(_bars(session, "ESH4,NQH4", "2024-01-03", "2024-01-04")) == 0
    report = hdi_lab.update(until="2024-01-06", session=session)
    [p] = report.plans
    assert [(c.start.date().isoformat(), p.reasons[c.key]) for c in p.chunks] == [("2024-01-03", "new")]
    pd.testing.assert_frame_equal(_bars(session, "ESH4,NQH4", "2024-01-02", "2024-01-06"), before)
    assert hdi_lab.update(until="2024-01-06", session=session).up_to_date


def test_an_empty_session_is_fetched_again_with_force(session: HdiSession) -> None:
    """Covered by the ingest log but without rows (e.g. deleted by hand): a gap, re-fetched with force."""
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols="ESH4", since="2024-01-02", session=session)
    hdi_lab.update(until="2024-01-06", session=session)
    before = _bars(session, "ESH4", "2024-01-02", "2024-01-06")
    hdi_lab.sql(
        "DELETE FROM ohlcv_1m WHERE ts_event >= '2024-01-03T23:00Z' AND ts_event < '2024-01-04T22:00Z'", session=session
    )
    report = hdi_lab.update(until="2024-01-06", session=session)
    [p] = report.plans
    assert {p.reasons[c.key] for c in p.chunks} == {"empty"}
    assert {c.start.date().isoformat() for c in p.chunks} >= {"2024-01-03", "2024-01-04"}
    assert p.forced == set(p.reasons)
    pd.testing.assert_frame_equal(_bars(session, "ESH4", "2024-01-02", "2024-01-06"), before)
    assert hdi_lab.update(until="2024-01-06", session=session).up_to_date


def test_dry_run_plans_without_storing_and_unknown_names_are_errors(session: HdiSession) -> None:
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols="ESH4", since="2024-01-02", name="es", session=session)
    dry = hdi_lab.update("es", until="2024-01-04", dry_run=True, session=session)
    assert dry.dry_run and len(dry.plans[0].chunks) == 2
    assert dry.plans[0].report is not None and dry.plans[0].report.fetched > 0
    assert "update would fetch 2 chunks" in str(dry)
    assert hdi_lab.sql("SELECT count(*) AS n FROM ohlcv_1m", session=session)["n"].iloc[0] == 0
    with pytest.raises(ValidationError, match="no subscription 'nq'"):
        hdi_lab.update("nq", session=session)
    with pytest.raises(ValidationError, match="until"):
        hdi_lab.update(until="not a date", session=session)
    assert str(hdi_lab.update(session=hdi_lab.HdiSession(session.settings.replace(db_schema="x_empty")))).startswith(
        "no subscriptions"
    )


def test_no_subscriptions_and_until_defaults_to_today(session: HdiSession) -> None:
    sub = hdi_lab.watch("sample", schema="ohlcv-1m", symbols="ESH4", since="2024-01-02", session=session)
    provider = session.provider("sample")
    assert updater.until_of(provider, sub) == pd.Timestamp.now(tz="UTC").floor("D")
    assert updater.until_of(provider, sub, "2024-02-01") == pd.Timestamp("2024-02-01", tz="UTC")


# --- Databento: conditions, revisions, cost --------------------------------------------------------------


def _revise_day(day: str) -> object:
    """A vendor correction of ``day``'s bars: every price a tick (0.25) higher, the day's last bar removed."""
    lo, hi = pd.Timestamp(day, tz="UTC").value, (pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)).value

    def revise(records: np.ndarray) -> np.ndarray:
        if "close" not in (records.dtype.names or ()):
            return records
        out = records.copy()
        inside = (out["ts_event"] >= lo) & (out["ts_event"] < hi)
        for price in ("open", "high", "low", "close"):
            out[price][inside] += 250_000_000
        last = np.flatnonzero(inside)[-1:]
        return np.delete(out, last)

    return revise


def test_a_revised_databento_day_is_fetched_again_and_its_rows_equal_the_new_data(
    dbs: HdiSession, fake: FakeDatabento
) -> None:
    sub = hdi_lab.watch("databento", dataset=GLBX, schema="ohlcv-1m", symbols="ESH4", since="2024-03-12", session=dbs)
    first = hdi_lab.update(until="2024-03-15", session=dbs)
    assert first.plans[0].report is not None and first.plans[0].report.inserted > 0
    old = _bars(dbs, "ESH4", "2024-03-13", "2024-03-14")
    assert hdi_lab.update(until="2024-03-15", session=dbs).up_to_date  # the vendor says nothing new

    fake.revise = _revise_day("2024-03-13")  # type: ignore[assignment]
    fake.set_condition("2024-03-13", "available", "2024-06-01")
    report = hdi_lab.update(sub.id, until="2024-03-15", session=dbs)
    [p] = report.plans
    assert {c.start.date().isoformat() for c in p.chunks} == {"2024-03-13"}
    assert set(p.reasons.values()) == {"revised"} and p.forced == set(p.reasons)
    assert p.report is not None and p.report.deleted == 1 and p.report.updated == len(old) - 1
    assert p.report.quarantined == 0

    assert fake.served_schemas[-1] == "ohlcv-1m"  # the day's bars only: the definitions were not re-fetched
    new = fake.served[-1]
    stored = _bars(dbs, "ESH4", "2024-03-13", "2024-03-14")
    assert len(stored) == len(new) == len(old) - 1
    assert np.allclose(stored["close"].to_numpy(), new["close"] / 1e9)
    assert np.allclose(stored["close"].to_numpy(), old["close"].to_numpy()[:-1] + 0.25)
    # the revision landed: the next update has nothing to do
    assert hdi_lab.update(until="2024-03-15", session=dbs).up_to_date


def test_a_degraded_day_is_fetched_again_once_the_vendor_fixes_it(dbs: HdiSession, fake: FakeDatabento) -> None:
    hdi_lab.watch("databento", dataset=GLBX, schema="ohlcv-1m", symbols="ESH4", since="2024-03-12", session=dbs)
    fake.set_condition("2024-03-14", "degraded", "2024-03-15")
    hdi_lab.update(until="2024-03-15", session=dbs)
    assert hdi_lab.update(until="2024-03-15", session=dbs).up_to_date  # still degraded: nothing new to fetch
    fake.set_condition("2024-03-14", "available", "2024-03-20")
    [p] = hdi_lab.update(until="2024-03-15", session=dbs).plans
    assert {c.start.date().isoformat() for c in p.chunks} == {"2024-03-14"}
    assert set(p.reasons.values()) == {"degraded"}
    assert hdi_lab.update(until="2024-03-15", session=dbs).up_to_date


def test_a_failed_update_keeps_what_it_committed_and_resumes(dbs: HdiSession, fake: FakeDatabento) -> None:
    hdi_lab.watch("databento", dataset=GLBX, schema="ohlcv-1m", symbols="ESH4", since="2024-03-12", session=dbs)
    # the third chunk fails, after its retries
    fake.faults += [Fault("timeseries.get_range", status=500, after=2 if i == 0 else 0) for i in range(3)]
    with pytest.raises(ProviderError, match=r"updating subscription 1: .* re-run the update to resume"):
        hdi_lab.update(until="2024-03-15", session=dbs)
    kept = hdi_lab.sql("SELECT count(*) AS n FROM ingest_log", session=dbs)["n"].iloc[0]
    assert kept == 2
    [p] = hdi_lab.update(until="2024-03-15", session=dbs).plans
    assert len(p.chunks) == 2 and p.report is not None and p.report.inserted > 0  # the rest, nothing twice
    assert hdi_lab.update(until="2024-03-15", session=dbs).up_to_date


def test_databento_until_defaults_to_the_available_range(dbs: HdiSession) -> None:
    sub = hdi_lab.watch("databento", dataset=GLBX, schema="ohlcv-1m", symbols="ESH4", since="2024-03-12", session=dbs)
    provider = dbs.provider("databento")
    assert updater.until_of(provider, sub) == pd.Timestamp("2025-01-01", tz="UTC")


def test_dry_run_shows_the_cost_and_the_run_refuses_above_the_limit(dbs: HdiSession, fake: FakeDatabento) -> None:
    hdi_lab.watch("databento", dataset=GLBX, schema="ohlcv-1m", symbols="ESH4", since="2024-03-12", session=dbs)
    hdi_lab.watch("databento", dataset=GLBX, schema="ohlcv-1m", symbols="NQH4", since="2024-03-12", session=dbs)
    dry = hdi_lab.update(until="2024-03-14", dry_run=True, session=dbs)
    assert dry.cost_usd is not None and dry.cost_usd > 0
    assert f"estimated ${dry.cost_usd:,.2f}" in str(dry)
    assert fake.count("timeseries.get_range") == 0

    each = max(p.report.cost_usd or 0.0 for p in dry.plans if p.report is not None)
    cheap = HdiSession(dbs.settings.replace(databento_max_cost_usd=each * 1.5))  # each alone passes, not both
    try:
        with pytest.raises(CostLimitError, match="update of 2 subscriptions is above the limit"):
            hdi_lab.update(until="2024-03-14", session=cheap)
        assert fake.count("timeseries.get_range") == 0
        done = hdi_lab.update(until="2024-03-14", allow_cost=True, session=cheap)
        assert all(p.report is not None and p.report.inserted > 0 for p in done.plans)
    finally:
        cheap.close()


# --- hdi update, %hdi_update -----------------------------------------------------------------------------


def test_cli_update(hdi_env: dict[str, str], session: HdiSession) -> None:
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols="ESH4", since="2024-01-02", name="es", session=session)
    code, out, err = run_cli(["update", "es", "--until", "2024-01-04", "--dry-run"])
    assert code == 0, err
    assert out.startswith("update would fetch 2 chunks")
    assert "2024-01-02" in out and "(new): ~" in out
    code, out, err = run_cli(["update", "--until", "2024-01-04"])
    assert code == 0, err
    assert out.startswith("update fetched 2 chunks") and "inserted" in out
    code, out, _ = run_cli(["update", "--until", "2024-01-04"])
    assert (code, out.splitlines()[0]) == (0, "1 subscriptions up to date: nothing to do")
    code, out, err = run_cli(["update", "nq"])
    assert (code, out) == (1, "") and err.startswith("hdi: error: no subscription 'nq'")


def test_magic_update(ip: TestingShell, session: HdiSession) -> None:
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols="ESH4", since="2024-01-02", name="es", session=session)
    dry = ip.run_cell("%hdi_update es --until 2024-01-04 --dry-run -o plan").result
    assert isinstance(dry, updater.UpdateReport) and dry.dry_run and ip.user_ns["plan"] is dry
    done = ip.run_cell("%hdi_update --until 2024-01-04").result
    assert done.plans[0].report.inserted > 0
    assert ip.run_cell("%hdi_update --until 2024-01-04").result.up_to_date


# --- IB: through the IB provider and its pacing ------------------------------------------------------------


@pytest.fixture
def ib(session: HdiSession) -> Iterator[tuple[HdiSession, FakeIbGateway]]:
    gw = FakeIbGateway(clock=VirtualClock(1000.0))
    gw.start()
    s = HdiSession(
        session.settings.replace(
            ib_host="127.0.0.1", ib_port=gw.port, ib_client_id=7, ib_library="ib_async", ib_timeout=5.0
        )
    )
    yield s, gw
    s.close()
    gw.stop()


def test_an_ib_subscription_is_updated_through_the_ib_provider(ib: tuple[HdiSession, FakeIbGateway]) -> None:
    s, gw = ib
    es = "ES:FUT:CME:USD:202403"
    hdi_lab.watch("ib", schema="ohlcv-1d", symbols=es, since="2023-11-01", name="es_ib", session=s)
    report = hdi_lab.update(until="2024-01-06", session=s)
    [p] = report.plans
    assert set(p.reasons.values()) == {"new"} and p.report is not None and p.report.inserted > 0
    assert gw.violations == []
    stored = hdi_lab.query("ohlcv-1d", es, "2023-11-01", "2024-01-06", dataset="IB", session=s)
    assert len(stored) == p.report.inserted
    sent = len(gw.sent)
    assert hdi_lab.update(until="2024-01-06", session=s).up_to_date
    assert len(gw.sent) == sent  # nothing asked of IB again
