"""Two updates of one database at once (two threads, each with its own session and connection): every chunk is
fetched and logged once, no row twice, and a re-fetch both planned happens once (chunk locks; see
:mod:`hdi_lab.core.update`). Against the test PostgreSQL with the sample provider and the fake Databento gateway."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fake_databento import FakeDatabento

import hdi_lab
from hdi_lab.core.session import HdiSession
from hdi_lab.core.update import UpdateReport

pytestmark = pytest.mark.integration

GLBX = "GLBX.MDP3"


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hdi_lab.toml or pyproject table from the working directory."""
    monkeypatch.chdir(tmp_path)


def _together(session: HdiSession, run: Callable[[HdiSession], UpdateReport], n: int = 2) -> list[UpdateReport]:
    """``run`` in ``n`` threads at once, each with its own session of ``session``'s database; their reports."""
    start = threading.Barrier(n)
    reports: list[UpdateReport | None] = [None] * n
    errors: list[BaseException] = []

    def work(i: int) -> None:
        own = HdiSession(session.settings)
        try:
            own.connection()  # connected (and migrated) before the race starts
            start.wait(30)
            reports[i] = run(own)
        except Exception as exc:  # noqa: BLE001  # re-raised below, in the test's thread
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "an update did not finish"
    if errors:
        raise errors[0]
    return [r for r in reports if r is not None]


def _logged(session: HdiSession) -> dict[str, int]:
    frame = hdi_lab.sql("SELECT chunk_key, count(*) AS n FROM ingest_log GROUP BY 1", session=session)
    return dict(zip(frame["chunk_key"], frame["n"].astype(int), strict=True))


@pytest.mark.parametrize("symbols", ["ESH4", "ESH4,NQH4"])
def test_two_updates_at_once_fetch_and_store_each_chunk_once(session: HdiSession, symbols: str) -> None:
    hdi_lab.watch("sample", schema="ohlcv-1m", symbols=symbols, since="2024-01-02", name="es", session=session)
    reports = _together(session, lambda s: hdi_lab.update(until="2024-01-12", session=s))
    done = [c for r in reports for c in r.plans[0].report.chunks if not c.skipped]  # type: ignore[union-attr]
    keys = [c.chunk.key for c in done]
    assert len(keys) == len(set(keys)) == 10  # ten days, each loaded by one of the two
    assert set(_logged(session).values()) == {1}
    stored = hdi_lab.query("ohlcv-1m", symbols, "2024-01-02", "2024-01-12", session=session)
    assert (
        len(stored) == sum(c.inserted for c in done)
        and not stored.reset_index().duplicated(["symbol", "ts_event"]).any()
    )
    assert hdi_lab.update(until="2024-01-12", session=session).up_to_date


def test_a_revision_planned_by_two_updates_is_fetched_once(dbs: HdiSession, fake: FakeDatabento) -> None:
    hdi_lab.watch("databento", dataset=GLBX, schema="ohlcv-1m", symbols="ESH4", since="2024-03-12", session=dbs)
    hdi_lab.update(until="2024-03-15", session=dbs)
    old = hdi_lab.query("ohlcv-1m", "ESH4", "2024-03-13", "2024-03-14", dataset=GLBX, session=dbs)
    bars = fake.served_schemas.count("ohlcv-1m")

    def revise(records: np.ndarray) -> np.ndarray:
        if "close" not in (records.dtype.names or ()):
            return records
        out = records.copy()
        for price in ("open", "high", "low", "close"):
            out[price] += 250_000_000
        return out

    fake.revise = revise  # type: ignore[assignment]
    fake.set_condition("2024-03-13", "available", "2024-06-01")
    # both plan before either fetches: the barrier holds them until both planned
    planned = threading.Barrier(2)
    from hdi_lab.core import update as updater

    real_plan = updater.plan_update

    def plan_then_wait(*args: object, **kwargs: object) -> list[updater.SubscriptionPlan]:
        plans = real_plan(*args, **kwargs)  # type: ignore[arg-type]
        planned.wait(30)
        return plans

    mp = pytest.MonkeyPatch()
    mp.setattr(updater, "plan_update", plan_then_wait)
    try:
        reports = _together(dbs, lambda s: hdi_lab.update(until="2024-03-15", session=s))
    finally:
        mp.undo()
    assert all(r.plans[0].reasons and set(r.plans[0].reasons.values()) == {"revised"} for r in reports)
    results = [c for r in reports for c in r.plans[0].report.chunks]  # type: ignore[union-attr]
    assert sorted(c.skipped for c in results) == [False, True]  # one fetched the day, the other found it done
    assert fake.served_schemas.count("ohlcv-1m") == bars + 1
    stored = hdi_lab.query("ohlcv-1m", "ESH4", "2024-03-13", "2024-03-14", dataset=GLBX, session=dbs)
    assert len(stored) == len(old) and np.allclose(stored["close"].to_numpy(), old["close"].to_numpy() + 0.25)
    assert hdi_lab.update(until="2024-03-15", session=dbs).up_to_date
