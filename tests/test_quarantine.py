"""Records failing validation go to the quarantine table; fixed or completed records load on retry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import psycopg2.extras
import pytest
from helpers import definition_file, index_ns, make_session, row_counts, run_cli, schema_at_version

import hdi_lab
from hdi_lab import dbn
from hdi_lab.core import quarantine
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import UNDEF_PRICE, empty_records, encode_dbn
from hdi_lab.storage.db import migrations, quote, transaction

pytestmark = pytest.mark.integration

DATASET = "GLBX.MDP3"
PUBLISHER = 1  # GLBX.MDP3.GLBX
DAY = pd.Timestamp("2024-01-02", tz="UTC")
START, END = DAY, DAY + pd.Timedelta(hours=12)  # the file's metadata range
GOOD_ID, STRAY_ID = 9001, 9999
MIN = 60_000_000_000
PX = 1_000_000_000

#: bad record -> (rule it breaks, text its reason must contain)
BAD = {
    "high_below_low": ("ohlc_inconsistent", "low <= open, close <= high"),
    "nonpositive": ("price_nonpositive", "> 0"),
    "undef": ("price_undefined", "UNDEF_PRICE"),
    "misaligned": ("ts_misaligned", "not aligned"),
    "outside": ("ts_outside_request", "outside the requested"),
    "stray": ("unknown_instrument", str(STRAY_ID)),
}


def _bars() -> tuple[np.ndarray, dict[str, int]]:
    """5 good 1-minute bars of instrument 9001 plus one bad bar per rule; returns (records, bad name -> index)."""
    names = ["good"] * 5 + list(BAD)
    rec = empty_records("ohlcv-1m", len(names))
    rec["publisher_id"], rec["instrument_id"] = PUBLISHER, GOOD_ID
    rec["ts_event"] = START.value + (np.arange(len(names)) + 60) * MIN  # from 01:00, one per minute
    o = 4800 * PX + np.arange(len(names)) * 250_000_000
    rec["open"], rec["high"], rec["low"], rec["close"] = o, o + PX, o - PX, o + 500_000_000
    rec["volume"] = np.arange(len(names)) + 10
    idx = {n: i for i, n in enumerate(names) if n != "good"}
    i = idx["high_below_low"]
    rec["high"][i], rec["low"][i] = rec["low"][i], rec["high"][i]
    rec["low"][idx["nonpositive"]] = 0
    rec["close"][idx["undef"]] = UNDEF_PRICE
    rec["ts_event"][idx["misaligned"]] += 30 * PX
    rec["ts_event"][idx["outside"]] = END.value + 5 * MIN
    rec["instrument_id"][idx["stray"]] = STRAY_ID
    return rec, idx


def _write(tmp_path: Path) -> tuple[Path, np.ndarray, dict[str, int]]:
    rec, idx = _bars()
    path = tmp_path / "bars.ohlcv-1m.dbn.zst"
    path.write_bytes(
        encode_dbn(
            dataset=DATASET,
            schema="ohlcv-1m",
            stype_in="raw_symbol",
            start=START,
            end=END,
            symbols=["TESTA"],
            mappings={"TESTA": [(DAY.date(), (DAY + pd.Timedelta(days=1)).date(), GOOD_ID)]},
            records=rec,
        )
    )
    return path, rec, idx


def _definition_file(tmp_path: Path) -> Path:
    """A definition (and symbology TESTB -> 9999) for the stray instrument."""
    return definition_file(
        tmp_path / "stray.definition.dbn.zst", instrument_id=STRAY_ID, symbol="TESTB", start=START, end=END,
        received_ns=START.value + PX,
    )  # fmt: skip


def _entries(session: HdiSession) -> pd.DataFrame:
    return hdi_lab.sql(
        f"SELECT id, rule, reason, status, record, dataset, schema, req_start, req_end "
        f'FROM "{session.schema}".quarantine ORDER BY id',
        session=session,
    )


def _query(session: HdiSession, symbol: str = "TESTA") -> pd.DataFrame:
    return hdi_lab.query("ohlcv-1m", [symbol], START, END + pd.Timedelta(hours=1), price_type="fixed", session=session)


def test_bad_records_are_quarantined_and_good_ones_load(
    session: HdiSession, hdi_env: dict[str, str], tmp_path: Path
) -> None:
    path, rec, idx = _write(tmp_path)
    report = hdi_lab.ingest(provider="file", path=path, session=session)
    assert (report.fetched, report.inserted, report.quarantined) == (len(rec), 5, len(BAD))

    good = np.ones(len(rec), bool)
    good[list(idx.values())] = False
    frame = _query(session)
    np.testing.assert_array_equal(index_ns(frame), rec["ts_event"][good].astype(np.int64))
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(frame[col].to_numpy(), rec[col][good].astype(np.int64))
    np.testing.assert_array_equal(frame["volume"].to_numpy(), rec["volume"][good].astype(np.int64))

    entries = _entries(session)
    assert len(entries) == len(BAD)
    assert (entries["status"] == "open").all()
    assert (entries["dataset"] == DATASET).all() and (entries["schema"] == "ohlcv-1m").all()
    assert (pd.DatetimeIndex(entries["req_start"]) == START).all()
    assert (pd.DatetimeIndex(entries["req_end"]) == END).all()
    by_rule = {r.rule: r for r in entries.itertuples()}
    assert set(by_rule) == {rule for rule, _ in BAD.values()}
    for name, (rule, text) in BAD.items():
        entry = by_rule[rule]
        assert text in entry.reason, (rule, entry.reason)
        assert entry.record == dbn.record_to_json(rec[idx[name]]), rule  # the original record, exact

    code, out, err = run_cli(["quarantine", "list"])
    assert code == 0, err
    for rule, _ in BAD.values():
        assert rule in out
    code, out, _ = run_cli(["quarantine", "show", str(by_rule["unknown_instrument"].id)])
    assert code == 0 and str(STRAY_ID) in out
    code, out, _ = run_cli(["status"])
    assert code == 0 and f"open quarantine entries: {len(BAD)}" in out


def test_force_reingest_does_not_duplicate_entries(session: HdiSession, tmp_path: Path) -> None:
    path, rec, _ = _write(tmp_path)
    hdi_lab.ingest(provider="file", path=path, session=session)
    before = row_counts(session)
    again = hdi_lab.ingest(provider="file", path=path, session=session, force=True)
    assert (again.fetched, again.inserted, again.duplicates, again.quarantined) == (len(rec), 0, 5, len(BAD))
    after = row_counts(session)
    assert after["quarantine"] == before["quarantine"] == len(BAD)
    assert after["ohlcv_1m"] == before["ohlcv_1m"] == 5
    assert after["ingest_log"] == before["ingest_log"] + 1


def test_fix_by_sql_then_retry(session: HdiSession, hdi_env: dict[str, str], tmp_path: Path) -> None:
    path, rec, idx = _write(tmp_path)
    hdi_lab.ingest(provider="file", path=path, session=session)
    entries = _entries(session)
    target = int(entries.loc[entries["rule"] == "ohlc_inconsistent", "id"].iloc[0])
    bad = rec[idx["high_below_low"]]
    fixed_high, fixed_low = int(bad["low"]), int(bad["high"])  # swap back: low < open, close < high
    hdi_lab.sql(
        f'UPDATE "{session.schema}".quarantine SET record = jsonb_set(jsonb_set(record, %s, to_jsonb(%s::bigint)), '
        "%s, to_jsonb(%s::bigint)) WHERE id = %s",
        ("{high}", fixed_high, "{low}", fixed_low, target),
        session=session,
    )

    result = quarantine.retry(session)
    assert (result.retried, result.loaded, result.duplicates, result.still_bad) == (len(BAD), 1, 0, len(BAD) - 1)

    entries = _entries(session).set_index("id")
    assert entries.loc[target, "status"] == "resolved"
    still_open = entries[entries["status"] == "open"]
    assert set(still_open["rule"]) == {rule for rule, _ in BAD.values()} - {"ohlc_inconsistent"}
    resolved_at = hdi_lab.sql(
        f'SELECT resolved_at FROM "{session.schema}".quarantine WHERE id = %s', (target,), session=session
    )["resolved_at"].iloc[0]
    assert resolved_at is not None

    frame = _query(session)
    ts = int(bad["ts_event"])
    row = frame[index_ns(frame) == ts]
    assert len(row) == 1
    assert (int(row["high"].iloc[0]), int(row["low"].iloc[0])) == (fixed_high, fixed_low)
    assert (int(row["open"].iloc[0]), int(row["close"].iloc[0]), int(row["volume"].iloc[0])) == (
        int(bad["open"]),
        int(bad["close"]),
        int(bad["volume"]),
    )
    assert len(frame) == 6

    again = quarantine.retry(session)  # nothing new to load; the resolved one is not retried
    assert (again.retried, again.loaded, again.still_bad) == (len(BAD) - 1, 0, len(BAD) - 1)

    code, out, _ = run_cli(["quarantine", "list", "--status", "resolved"])
    assert code == 0 and "ohlc_inconsistent" in out and "ts_misaligned" not in out
    code, out, _ = run_cli(["quarantine", "retry"])
    assert code == 1 and f"still failing {len(BAD) - 1}" in out


def test_unknown_instrument_loads_after_its_definition(session: HdiSession, tmp_path: Path) -> None:
    path, rec, idx = _write(tmp_path)
    hdi_lab.ingest(provider="file", path=path, session=session)
    stray = rec[idx["stray"]]
    before = quarantine.retry(session)
    assert before.loaded == 0 and before.still_bad == len(BAD)

    definition = hdi_lab.ingest(provider="file", path=_definition_file(tmp_path), session=session)
    assert definition.inserted == 1
    assert definition.recovered == 1  # the ingest that brings the definition retries the entry itself

    result = quarantine.retry(session)
    assert (result.loaded, result.still_bad) == (0, len(BAD) - 1)
    entries = _entries(session)
    assert entries.loc[entries["rule"] == "unknown_instrument", "status"].tolist() == ["resolved"]
    assert (entries.loc[entries["rule"] != "unknown_instrument", "status"] == "open").all()

    frame = _query(session, "TESTB")
    assert len(frame) == 1
    assert index_ns(frame).tolist() == [int(stray["ts_event"])]
    assert frame["instrument_id"].tolist() == [STRAY_ID] and frame["symbol"].tolist() == ["TESTB"]
    for col in ("open", "high", "low", "close", "volume"):
        assert int(frame[col].iloc[0]) == int(stray[col]), col
    assert len(_query(session)) == 5  # TESTA still holds only its good bars


def test_retry_by_id_rejects_unknown_ids(session: HdiSession, tmp_path: Path) -> None:
    path, _, _ = _write(tmp_path)
    hdi_lab.ingest(provider="file", path=path, session=session)
    with pytest.raises(hdi_lab.ValidationError, match="no open quarantine entries"):
        quarantine.retry(session, [987654])
    assert row_counts(session)["quarantine"] == len(BAD)
    assert (_entries(session)["status"] == "open").all()


def test_fixed_trade_sharing_a_timestamp_with_a_stored_one_loads(session: HdiSession, tmp_path: Path) -> None:
    """Two trades at the same nanosecond, the second with size 0: after fixing it, retry must store it
    next to the first (not drop it as a 'duplicate' of the first)."""
    rec = empty_records("trades", 3)
    rec["publisher_id"], rec["instrument_id"] = PUBLISHER, GOOD_ID
    t = START.value + 3600 * PX + 123_456_789
    rec["ts_event"] = [t, t, t + PX]
    rec["ts_recv"] = rec["ts_event"] + 250_000
    rec["price"] = [4800 * PX, 4800 * PX + 250_000_000, 4801 * PX]
    rec["size"] = [3, 0, 2]
    rec["action"], rec["side"], rec["sequence"] = b"T", [b"B", b"A", b"B"], [100, 101, 102]
    path = tmp_path / "same-ns.trades.dbn.zst"
    path.write_bytes(
        encode_dbn(
            dataset=DATASET,
            schema="trades",
            stype_in="raw_symbol",
            start=START,
            end=END,
            symbols=["TESTA"],
            mappings={"TESTA": [(DAY.date(), (DAY + pd.Timedelta(days=1)).date(), GOOD_ID)]},
            records=rec,
        )
    )
    report = hdi_lab.ingest(provider="file", path=path, session=session)
    assert (report.inserted, report.quarantined) == (2, 1)
    entries = _entries(session)
    assert entries["rule"].tolist() == ["size_nonpositive"]
    assert entries["record"].iloc[0] == dbn.record_to_json(rec[1])

    hdi_lab.sql(
        f'UPDATE "{session.schema}".quarantine SET record = jsonb_set(record, %s, to_jsonb(%s::bigint))',
        ("{size}", 7),
        session=session,
    )
    result = quarantine.retry(session)
    assert (result.retried, result.loaded, result.duplicates, result.still_bad) == (1, 1, 0, 0)

    frame = hdi_lab.query("trades", ["TESTA"], START, END, price_type="fixed", session=session)
    assert frame["sequence"].tolist() == [100, 101, 102]
    assert frame["size"].tolist() == [3, 7, 2]
    assert frame["side"].tolist() == ["B", "A", "B"]
    assert frame["price"].tolist() == rec["price"].astype(np.int64).tolist()
    np.testing.assert_array_equal(index_ns(frame), rec["ts_event"].astype(np.int64))


# --- one entry per rejected record (identical records, re-runs, upgrades) -----------------------------

SAME_NS = START.value + 3600 * PX + 123_456_789


def _identical_bad_trades(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A good trade, then three byte-identical trades of size 0 at one nanosecond (dup_idx 0, 1, 2)."""
    rec = empty_records("trades", 4)
    rec["publisher_id"], rec["instrument_id"] = PUBLISHER, GOOD_ID
    rec["ts_event"] = [SAME_NS - PX, SAME_NS, SAME_NS, SAME_NS]
    rec["ts_recv"] = rec["ts_event"] + 250_000
    rec["price"], rec["size"] = 4800 * PX, [3, 0, 0, 0]
    rec["action"], rec["side"], rec["sequence"] = b"T", b"B", [100, 101, 101, 101]
    path = tmp_path / "identical.trades.dbn.zst"
    path.write_bytes(
        encode_dbn(
            dataset=DATASET,
            schema="trades",
            stype_in="raw_symbol",
            start=START,
            end=END,
            symbols=["TESTA"],
            mappings={"TESTA": [(DAY.date(), (DAY + pd.Timedelta(days=1)).date(), GOOD_ID)]},
            records=rec,
        )
    )
    return path, rec


def _trades(session: HdiSession) -> pd.DataFrame:
    return hdi_lab.query("trades", ["TESTA"], START, END, price_type="fixed", session=session)


def test_identical_rejected_records_are_each_kept_and_restored(
    session: HdiSession, hdi_env: dict[str, str], tmp_path: Path
) -> None:
    path, rec = _identical_bad_trades(tmp_path)
    report = hdi_lab.ingest(provider="file", path=path, session=session)
    assert (report.inserted, report.quarantined) == (1, 3)
    entries = hdi_lab.sql(
        f'SELECT id, dup_idx, record, status FROM "{session.schema}".quarantine ORDER BY dup_idx', session=session
    )
    assert entries["dup_idx"].tolist() == [0, 1, 2]  # was: one entry, the other two dropped
    assert all(r == dbn.record_to_json(rec[1]) for r in entries["record"])

    for argv in (["ingest", str(path)], ["ingest", "--force", str(path)]):  # re-runs add no entry
        code, _, err = run_cli(argv)
        assert code == 0, err
        assert row_counts(session)["quarantine"] == 3

    hdi_lab.sql(
        f'UPDATE "{session.schema}".quarantine SET record = jsonb_set(record, %s, to_jsonb(%s::bigint))',
        ("{size}", 7),
        session=session,
    )
    result = quarantine.retry(session)
    assert (result.retried, result.loaded, result.duplicates, result.still_bad) == (3, 3, 0, 0)
    frame = _trades(session)
    assert frame["size"].tolist() == [3, 7, 7, 7]
    np.testing.assert_array_equal(index_ns(frame), rec["ts_event"].astype(np.int64))

    code, _, err = run_cli(["ingest", "--force", str(path)])  # the original, still bad, file again
    assert code == 0, err
    entries = hdi_lab.sql(f'SELECT status FROM "{session.schema}".quarantine', session=session)
    assert entries["status"].tolist() == ["resolved"] * 3  # was: the fixed records' entries re-opened
    assert quarantine.retry(session).retried == 0
    assert _trades(session)["size"].tolist() == [3, 7, 7, 7]


def test_upgrade_to_fingerprints_keeps_every_entry(pg_url: str, db_schema: str, tmp_path: Path) -> None:
    """A version-5 schema whose quarantine holds entries sharing one record (one resolved, one re-opened by a
    forced re-ingest, one under another rule) upgrades without losing a row; the resolved one keeps the
    record's identity, so a re-ingest adds only the records that version 5 had dropped."""
    path, rec = _identical_bad_trades(tmp_path)
    record = psycopg2.extras.Json(dbn.record_to_json(rec[1]))
    schema_at_version(pg_url, db_schema, 5)
    conn = psycopg2.connect(pg_url)
    try:
        s = quote(conn, db_schema)
        with transaction(conn) as cur:
            rows = [("size_nonpositive", "resolved"), ("size_nonpositive", "open"), ("unknown_instrument", "open")]
            for rule, status in rows:
                cur.execute(
                    f"INSERT INTO {s}.quarantine (chunk_key, dataset, schema, rule, reason, record, dup_idx, "
                    "req_start, req_end, status) VALUES ('old', %s, 'trades', %s, 'r', %s, 0, %s, %s, %s)",
                    (DATASET, rule, record, START.to_pydatetime(), END.to_pydatetime(), status),
                )
    finally:
        conn.close()

    with make_session(pg_url, db_schema) as session:
        before = hdi_lab.sql(
            f'SELECT id, rule, status, fingerprint FROM "{session.schema}".quarantine ORDER BY id', session=session
        )
        assert before[["rule", "status"]].values.tolist() == [list(r) for r in rows]
        assert before["fingerprint"].is_unique and before["fingerprint"].notna().all()
        canonical = before["fingerprint"].iloc[0]  # the resolved entry holds the record's identity
        assert all(f.startswith(canonical + ":") for f in before["fingerprint"].iloc[1:])

        report = hdi_lab.ingest(provider="file", path=path, session=session)
        assert report.quarantined == 3
        after = hdi_lab.sql(
            f'SELECT dup_idx, status FROM "{session.schema}".quarantine WHERE id > %s ORDER BY id',
            (int(before["id"].max()),),
            session=session,
        )
        assert after.values.tolist() == [[1, "open"], [2, "open"]]
        versions = hdi_lab.sql(f'SELECT max(version) AS v FROM "{session.schema}".schema_migrations', session=session)[
            "v"
        ].iloc[0]
        assert versions == max(v for v, _, _ in migrations())
