"""Quarantine auto-recovery: records of an unknown instrument load with the ingest that makes it known (in its
transaction), and ``retry --auto`` retries every open entry whose rule now passes, the others staying open."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import definition_file, index_ns, make_session, row_counts, run_cli

import hdi_lab
from hdi_lab.core import quarantine
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import UNDEF_PRICE, empty_records, encode_dbn

pytestmark = pytest.mark.integration

DATASET = "GLBX.MDP3"
PUBLISHER = 1  # GLBX.MDP3.GLBX
DAY = pd.Timestamp("2024-01-02", tz="UTC")
START, END = DAY, DAY + pd.Timedelta(hours=12)
NEXT_DAY = (DAY + pd.Timedelta(days=1)).date()
KNOWN_ID, STRAY_ID = 9001, 9999
MIN = 60_000_000_000
PX = 1_000_000_000


def _bars(n: int, instrument_id: int, first_minute: int) -> np.ndarray:
    rec = empty_records("ohlcv-1m", n)
    rec["publisher_id"], rec["instrument_id"] = PUBLISHER, instrument_id
    rec["ts_event"] = START.value + (np.arange(n) + first_minute) * MIN
    o = 4800 * PX + np.arange(n) * 250_000_000
    rec["open"], rec["high"], rec["low"], rec["close"] = o, o + PX, o - PX, o + 500_000_000
    rec["volume"] = np.arange(n) + 10
    return rec


def _bar_file(path: Path, rec: np.ndarray, symbol: str, instrument_id: int, days: int = 0) -> Path:
    """An ohlcv-1m file whose symbology maps ``symbol`` to ``instrument_id`` (the records may hold others),
    over the first day's [START, END), or ``days`` later."""
    shift = pd.Timedelta(days=days)
    path.write_bytes(
        encode_dbn(
            dataset=DATASET,
            schema="ohlcv-1m",
            stype_in="raw_symbol",
            start=START + shift,
            end=END + shift,
            symbols=[symbol],
            mappings={symbol: [((DAY + shift).date(), (DAY + shift).date() + dt.timedelta(days=1), instrument_id)]},
            records=rec,
        )
    )
    return path


def _stray_bars(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """3 bars of TESTA (known through the file's symbology) and 2 of instrument 9999, which nothing maps."""
    rec = np.concatenate([_bars(3, KNOWN_ID, 60), _bars(2, STRAY_ID, 70)])
    return _bar_file(tmp_path / "testa.ohlcv-1m.dbn.zst", rec, "TESTA", KNOWN_ID), rec[3:]


def _definition_file(tmp_path: Path, version: int = 0) -> Path:
    """A definition (and symbology TESTB -> 9999) for the stray instrument; ``version`` n is received n s later."""
    return definition_file(
        tmp_path / f"testb{version or ''}.definition.dbn.zst", instrument_id=STRAY_ID, symbol="TESTB", start=START,
        end=END, received_ns=START.value + (1 + version) * PX,
    )  # fmt: skip


def _entries(session: HdiSession) -> pd.DataFrame:
    return hdi_lab.sql(
        f'SELECT id, rule, reason, status, resolved_at FROM "{session.schema}".quarantine ORDER BY id',
        session=session,
    )


def _stored_of(session: HdiSession, instrument_id: int) -> int:
    """Bars stored of ``instrument_id`` (a query by symbol refuses a symbol nothing maps yet)."""
    frame = hdi_lab.sql(
        f'SELECT count(*) AS n FROM "{session.schema}".ohlcv_1m WHERE instrument_id = %s',
        (instrument_id,),
        session=session,
    )
    return int(frame["n"].iloc[0])


def _query(session: HdiSession, symbol: str) -> pd.DataFrame:
    return hdi_lab.query("ohlcv-1m", [symbol], START, END, price_type="fixed", session=session)


def _assert_bars(frame: pd.DataFrame, rec: np.ndarray) -> None:
    np.testing.assert_array_equal(index_ns(frame), rec["ts_event"].astype(np.int64))
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(frame[col].to_numpy(), rec[col].astype(np.int64), err_msg=col)


def test_definitions_arriving_load_the_quarantined_bars_of_their_instrument(
    session: HdiSession, hdi_env: dict[str, str], tmp_path: Path
) -> None:
    bars, stray = _stray_bars(tmp_path)
    first = hdi_lab.ingest(provider="file", path=bars, session=session)
    assert (first.inserted, first.quarantined, first.recovered) == (3, 2, 0)
    entries = _entries(session)
    assert entries["rule"].tolist() == ["unknown_instrument"] * 2 and (entries["status"] == "open").all()
    assert _stored_of(session, STRAY_ID) == 0

    definitions = _definition_file(tmp_path)
    code, out, err = run_cli(["ingest", str(definitions)])
    assert code == 0, err
    assert "recovered from quarantine 2" in out

    _assert_bars(_query(session, "TESTB"), stray)
    assert _query(session, "TESTB")["instrument_id"].tolist() == [STRAY_ID] * 2
    entries = _entries(session)
    assert (entries["status"] == "resolved").all() and entries["resolved_at"].notna().all()
    for reason in entries["reason"]:
        assert reason.startswith(f"retried automatically when {definitions} made its instrument known")
        assert "quarantined as: instrument_id 9999 has no symbology or definition" in reason
    assert len(_query(session, "TESTA")) == 3

    counts = row_counts(session)
    for argv in (["ingest", str(definitions)], ["ingest", "--force", str(definitions)]):
        code, out, err = run_cli(argv)  # re-runs: nothing left to recover, nothing duplicates
        assert code == 0, err
        assert "recovered" not in out
    again = hdi_lab.ingest(provider="file", path=bars, session=session, force=True)
    assert (again.inserted, again.duplicates, again.quarantined, again.recovered) == (0, 5, 0, 0)
    after = row_counts(session)
    assert after["ohlcv_1m"] == counts["ohlcv_1m"] == 5
    assert after["quarantine"] == counts["quarantine"] == 2
    assert after["instruments"] == counts["instruments"] == 1
    assert after["ingest_log"] == counts["ingest_log"] + 2
    assert (_entries(session)["status"] == "resolved").all()
    _assert_bars(_query(session, "TESTB"), stray)


def test_symbology_arriving_with_bars_loads_the_quarantined_ones(session: HdiSession, tmp_path: Path) -> None:
    """A bar file of the next day mapping TESTB -> 9999 makes the instrument known: the earlier day's bars load
    with it. (A file over the same range would be a revision of that range for 9999: the earlier bars, which it
    does not send, would be superseded, not loaded.)"""
    bars, stray = _stray_bars(tmp_path)
    hdi_lab.ingest(provider="file", path=bars, session=session)
    later = _bars(2, STRAY_ID, 200 + 24 * 60)
    next_day = _bar_file(tmp_path / "testb.ohlcv-1m.dbn.zst", later, "TESTB", STRAY_ID, days=1)
    report = hdi_lab.ingest(provider="file", path=next_day, session=session)
    assert (report.inserted, report.quarantined, report.recovered) == (2, 0, 2)
    assert "recovered from quarantine 2" in str(report) and "recovered from quarantine 2" in report.chunks[0].outcome
    stored = hdi_lab.sql(  # both days of instrument 9999 (TESTB maps to it on the second day only)
        "SELECT ts_event, open, high, low, close, volume FROM ohlcv_1m WHERE instrument_id = %(i)s ORDER BY ts_event",
        {"i": STRAY_ID},
        session=session,
    ).set_index("ts_event")
    _assert_bars(stored, np.concatenate([stray, later]))
    assert (_entries(session)["status"] == "resolved").all()


def test_recovery_lands_with_its_chunk_or_not_at_all(session: HdiSession, tmp_path: Path) -> None:
    """The chunk bringing the definitions fails after its recovery (its ingest-log row is refused): neither its
    definitions nor the recovered bars are stored, the entries stay open; the re-run stores both."""
    bars, stray = _stray_bars(tmp_path)
    hdi_lab.ingest(provider="file", path=bars, session=session)
    s = session.schema
    hdi_lab.sql(
        f'CREATE FUNCTION "{s}".refuse() RETURNS trigger LANGUAGE plpgsql AS '
        "$$ BEGIN RAISE EXCEPTION 'ingest log refused by the test'; END $$",
        session=session,
    )
    hdi_lab.sql(
        f'CREATE TRIGGER refuse BEFORE INSERT ON "{s}".ingest_log FOR EACH ROW EXECUTE FUNCTION "{s}".refuse()',
        session=session,
    )
    before = row_counts(session)
    with pytest.raises(hdi_lab.HdiError, match="ingest log refused by the test"):
        hdi_lab.ingest(provider="file", path=_definition_file(tmp_path), session=session)
    assert row_counts(session) == before
    assert (_entries(session)["status"] == "open").all()
    assert _stored_of(session, STRAY_ID) == 0

    hdi_lab.sql(f'DROP TRIGGER refuse ON "{s}".ingest_log', session=session)
    report = hdi_lab.ingest(provider="file", path=_definition_file(tmp_path), session=session)
    assert (report.inserted, report.recovered) == (1, 2)
    _assert_bars(_query(session, "TESTB"), stray)
    assert (_entries(session)["status"] == "resolved").all()


def test_concurrent_chunks_making_one_instrument_known_recover_its_records_once(
    pg_url: str, db_schema: str, session: HdiSession, tmp_path: Path
) -> None:
    bars, stray = _stray_bars(tmp_path)
    hdi_lab.ingest(provider="file", path=bars, session=session)
    files = [_definition_file(tmp_path, v) for v in range(4)]

    def ingest(path: Path) -> int:
        with make_session(pg_url, db_schema) as own:
            return hdi_lab.ingest(provider="file", path=path, session=own).recovered

    with ThreadPoolExecutor(len(files)) as pool:
        recovered = list(pool.map(ingest, files))
    assert sorted(recovered) == [0, 0, 0, 2]  # one chunk recovered both; the others found them resolved
    _assert_bars(_query(session, "TESTB"), stray)
    assert row_counts(session)["ohlcv_1m"] == 5
    assert (_entries(session)["status"] == "resolved").all()


# --- retry --auto -------------------------------------------------------------------------------------------

#: bad bar -> the rule it breaks
RULES = {
    "high_below_low": "ohlc_inconsistent",
    "nonpositive": "price_nonpositive",
    "undef": "price_undefined",
    "misaligned": "ts_misaligned",
    "stray": "unknown_instrument",
}


def _bad_bars(tmp_path: Path) -> tuple[Path, np.ndarray, dict[str, int]]:
    """2 good bars of TESTA, then one bad bar per rule of :data:`RULES`, and a second misaligned one."""
    names = ["good", "good", *RULES, "misaligned2"]
    rec = _bars(len(names), KNOWN_ID, 60)
    idx = {n: i for i, n in enumerate(names) if n != "good"}
    i = idx["high_below_low"]
    rec["high"][i], rec["low"][i] = rec["low"][i], rec["high"][i]
    rec["low"][idx["nonpositive"]] = 0
    rec["close"][idx["undef"]] = UNDEF_PRICE
    rec["ts_event"][idx["misaligned"]] += 30 * PX
    rec["ts_event"][idx["misaligned2"]] += 15 * PX
    rec["instrument_id"][idx["stray"]] = STRAY_ID
    return _bar_file(tmp_path / "bad.ohlcv-1m.dbn.zst", rec, "TESTA", KNOWN_ID), rec, idx


def test_retry_auto_loads_every_entry_whose_rule_now_passes(
    session: HdiSession, hdi_env: dict[str, str], tmp_path: Path
) -> None:
    path, rec, idx = _bad_bars(tmp_path)
    assert hdi_lab.ingest(provider="file", path=path, session=session).quarantined == 6
    s = session.schema
    ids = _entries(session).set_index("rule")["id"]
    # two entries whose rule now passes: a record fixed by hand, and an instrument whose symbology was stored
    # outside an ingest (as for entries quarantined before auto-recovery, their definitions loaded since)
    bad = rec[idx["high_below_low"]]
    hdi_lab.sql(
        f'UPDATE "{s}".quarantine SET record = jsonb_set(jsonb_set(record, %s, to_jsonb(%s::bigint)), '
        "%s, to_jsonb(%s::bigint)) WHERE id = %s",
        ("{high}", int(bad["low"]), "{low}", int(bad["high"]), int(ids["ohlc_inconsistent"])),
        session=session,
    )
    hdi_lab.sql(
        f'INSERT INTO "{s}".symbology (dataset, stype, symbol, d0, d1, instrument_id) '
        "VALUES (%s, 'raw_symbol', 'TESTB', %s, %s, %s)",
        (DATASET, DAY.date(), NEXT_DAY, STRAY_ID),
        session=session,
    )

    code, out, err = run_cli(["quarantine", "retry", "--auto"])
    assert code == 0, err  # entries that stay open are expected: --auto is a routine, not a fix's check
    assert "retried 6: loaded 2, already stored 0, still failing 4" in out
    assert "stayed open: 2 ts_misaligned, e.g. ts_event" in out
    for rule in ("price_nonpositive", "price_undefined"):
        assert f"stayed open: 1 {rule}, e.g. " in out
    assert "ohlc_inconsistent" not in out and "unknown_instrument" not in out

    entries = _entries(session).set_index("id")
    resolved = entries[entries["status"] == "resolved"]
    assert sorted(resolved["rule"]) == ["ohlc_inconsistent", "unknown_instrument"]
    assert all(r.startswith("resolved by retry --auto: its rule now passes; quarantined as: ") for r in resolved.reason)
    still = entries[entries["status"] == "open"]
    assert sorted(still["rule"]) == ["price_nonpositive", "price_undefined", "ts_misaligned", "ts_misaligned"]
    assert not still["reason"].str.startswith("resolved").any()

    testa = _query(session, "TESTA")
    assert len(testa) == 3 and int(bad["ts_event"]) in index_ns(testa).tolist()
    _assert_bars(_query(session, "TESTB"), rec[[idx["stray"]]])

    counts, reasons = row_counts(session), _entries(session)
    again = quarantine.retry(session, auto=True)  # a re-run loads nothing and changes nothing
    assert (again.retried, again.loaded, again.duplicates, again.still_bad) == (4, 0, 0, 4)
    assert [(st.rule, st.count) for st in again.stayed] == [
        ("ts_misaligned", 2),
        ("price_nonpositive", 1),
        ("price_undefined", 1),
    ]
    assert "UNDEF_PRICE" in {st.rule: st.reason for st in again.stayed}["price_undefined"]
    assert row_counts(session) == counts
    pd.testing.assert_frame_equal(_entries(session), reasons)

    with pytest.raises(hdi_lab.ValidationError, match="give no entry ids"):
        quarantine.retry(session, [int(still.index[0])], auto=True)
    code, _, err = run_cli(["quarantine", "retry", "--auto", str(int(still.index[0]))])
    assert code == 1 and "give no entry ids" in err
    code, out, _ = run_cli(["quarantine", "retry"])  # without --auto, entries still failing are a failure
    assert code == 1 and "still failing 4" in out
    assert row_counts(session) == counts
