"""Bar counts kept at ingest (hdi_lab.storage.counts): always equal to the rows, and gaps from them equal to gaps
counted in the bar tables.

Every check compares the stored ``bar_counts`` bytes with a count of the rows written here in SQL (not through
hdi_lab's counting code), and ``coverage`` from the counts with ``coverage`` counted in the bar tables (the table
marked stale forces that path). Data: the sample provider, real Databento DBN fixtures, DBN files written with
``encode_dbn`` (a revision that updates, deletes and adds bars; a forced re-ingest), a quarantine retry, two
concurrent loads of one instrument-day on two real connections, hand-written SQL and migration 10 on data
stored before it.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest
from conftest import FIXTURES
from helpers import make_session, schema_at_version

import hdi_lab
from hdi_lab.core import gaps as gap_finder
from hdi_lab.core import quarantine
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import empty_records, encode_dbn
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import Schema
from hdi_lab.storage import counts, load, normalise
from hdi_lab.storage.tables import TABLES

pytestmark = pytest.mark.integration

BAR_TABLES = ("ohlcv_1s", "ohlcv_5s", "ohlcv_1m", "ohlcv_1h", "ohlcv_1d")
DATASET, PUBLISHER = "GLBX.MDP3", 1
DAY = pd.Timestamp("2024-01-03", tz="UTC")
MIN = 60_000_000_000
PX = 1_000_000_000
A, B = 9101, 9102
SYMBOLS = {A: "CNTA", B: "CNTB"}


def _stored_counts(session: HdiSession) -> dict[tuple[str, int, int], int]:
    """(table, instrument, 15-minute bucket since 1970) -> bars, decoded from the stored bar_counts bytes."""
    frame = hdi_lab.sql(
        f"SELECT bar_table, instrument_id, day - date '1970-01-01' AS day, counts FROM \"{session.schema}\".bar_counts",
        session=session,
    )
    out: dict[tuple[str, int, int], int] = {}
    for table, iid, day, blob in frame.itertuples(index=False):
        values = np.frombuffer(bytes(blob), dtype=">i4")
        assert len(values) == 96
        for slot in np.flatnonzero(values):
            out[(str(table), int(iid), int(day) * 96 + int(slot))] = int(values[slot])
    return out


def _row_counts(session: HdiSession) -> dict[tuple[str, int, int], int]:
    """The same, counted from the rows of the bar tables."""
    text = " UNION ALL ".join(
        f"SELECT '{t}' AS t, instrument_id, floor(extract(epoch FROM ts_event) / 900)::bigint AS b, count(*) AS n "
        f'FROM "{session.schema}".{t} GROUP BY 2, 3'
        for t in BAR_TABLES
    )
    frame = hdi_lab.sql(text, session=session)
    return {(str(t), int(i), int(b)): int(n) for t, i, b, n in frame.itertuples(index=False)}


def _stale(session: HdiSession) -> set[str]:
    frame = hdi_lab.sql(f'SELECT bar_table FROM "{session.schema}".bar_counts_stale', session=session)
    return set(frame["bar_table"])


def assert_counts_match(session: HdiSession) -> None:
    """The counts equal the rows, nothing is stale, and nothing counts for less than zero."""
    assert _stale(session) == set()
    stored = _stored_counts(session)
    assert all(n > 0 for n in stored.values()), {k: n for k, n in stored.items() if n < 0}
    assert stored == _row_counts(session)


def assert_coverage_from_counts_is_exact(session: HdiSession, schema: str, symbols: list[str], **kw: object) -> None:
    """``coverage`` from the counts equals ``coverage`` counted in the bar table (forced by a stale mark)."""
    fast = gap_finder.coverage(session, schema, symbols, **kw)  # type: ignore[arg-type]
    assert (fast["present"] > 0).any()
    table = Schema(schema).table
    hdi_lab.sql(f'INSERT INTO "{session.schema}".bar_counts_stale (bar_table) VALUES (%s)', [table], session=session)
    try:
        exact = gap_finder.coverage(session, schema, symbols, **kw)  # type: ignore[arg-type]
    finally:
        hdi_lab.sql(f'DELETE FROM "{session.schema}".bar_counts_stale WHERE bar_table = %s', [table], session=session)
    pd.testing.assert_frame_equal(fast, exact)


def _bars(ids: list[int], start: pd.Timestamp, minutes: list[int]) -> np.ndarray:
    rec = empty_records("ohlcv-1m", len(ids) * len(minutes))
    rec["publisher_id"] = PUBLISHER
    rec["instrument_id"] = np.tile(ids, len(minutes))
    m = np.repeat(minutes, len(ids))
    rec["ts_event"] = start.value + m * MIN
    o = 4800 * PX + m * 250_000_000
    rec["open"], rec["high"], rec["low"], rec["close"] = o, o + PX, o - PX, o
    rec["volume"] = m + 1
    return rec[np.lexsort([rec["instrument_id"], rec["ts_event"]])]


def _dbn(path: Path, rec: np.ndarray, start: pd.Timestamp, end: pd.Timestamp, ids: list[int]) -> Path:
    day = (start.date(), (end + pd.Timedelta(days=1)).date())
    path.write_bytes(
        encode_dbn(
            dataset=DATASET,
            schema="ohlcv-1m",
            stype_in="raw_symbol",
            start=start,
            end=end,
            symbols=[SYMBOLS[i] for i in ids],
            mappings={SYMBOLS[i]: [(*day, i)] for i in ids},
            records=rec,
        )
    )
    return path


def test_sample_ingest_and_forced_reingest_keep_counts_exact(session: HdiSession) -> None:
    for symbols in (["ESH4", "NQH4"], ["AAPL"]):
        request = dict(schema="ohlcv-1m", symbols=symbols, start="2024-01-02", end="2024-01-10")
        first = hdi_lab.ingest(provider="sample", **request, session=session)  # type: ignore[arg-type]
        assert first.inserted > 0
        assert_counts_match(session)
        again = hdi_lab.ingest(provider="sample", **request, force=True, session=session)  # type: ignore[arg-type]
        assert again.inserted == 0 and again.duplicates == first.inserted  # no double counting
        assert_counts_match(session)
    for syms, ds in ((["ESH4", "NQH4"], "GLBX.MDP3"), (["AAPL"], "XNAS.ITCH")):
        assert_coverage_from_counts_is_exact(
            session, "ohlcv-1m", syms, start="2024-01-01", end="2024-01-12", dataset=ds
        )


@pytest.mark.parametrize("chunk_rows", [1_000_000, 7], ids=["one-batch", "many-batches"])
def test_a_revision_that_updates_deletes_and_adds_bars(
    pg_url: str, db_schema: str, tmp_path: Path, chunk_rows: int
) -> None:
    start, end = DAY, DAY + pd.Timedelta(days=1)
    old = _bars([A, B], start + pd.Timedelta(hours=14), list(range(0, 240, 3)))
    with make_session(pg_url, db_schema, chunk_rows=chunk_rows) as session:
        hdi_lab.ingest(provider="file", path=_dbn(tmp_path / "old.dbn.zst", old, start, end, [A, B]), session=session)
        assert_counts_match(session)
        new = old.copy()
        new["close"][[1, 4]] += PX  # updated: same keys, counts unchanged
        keep = np.ones(len(new), dtype=bool)
        keep[[0, 2, 30, 31, 32, len(new) - 1]] = False  # deleted: a bucket loses some, another all
        added = _bars([A], start + pd.Timedelta(hours=20), [1, 2, 3])  # inserted in a bucket not stored yet
        new = np.concatenate([new[keep], added])
        new = new[np.lexsort([new["instrument_id"], new["ts_event"]])]
        path = _dbn(tmp_path / "new.dbn.zst", new, start, end, [A, B])
        report = hdi_lab.ingest(provider="file", path=path, force=True, session=session)
        assert (report.inserted, report.updated, report.deleted) == (3, 2, 6)
        assert_counts_match(session)
        assert sum(_stored_counts(session).values()) == len(new)
        forced = hdi_lab.ingest(provider="file", path=path, force=True, session=session)
        assert (forced.inserted, forced.updated, forced.deleted) == (0, 0, 0)
        assert_counts_match(session)
        assert_coverage_from_counts_is_exact(
            session, "ohlcv-1m", list(SYMBOLS.values()), start="2024-01-01", end="2024-01-06", dataset=DATASET
        )


def test_databento_fixtures_of_every_bar_schema(session: HdiSession, tmp_path: Path) -> None:
    for ds in ("GLBX.MDP3", "XNAS.ITCH", "EQUS.MINI"):
        for path in sorted((FIXTURES / ds).glob("test_data.ohlcv-*.dbn.zst")):
            copied = shutil.copy(path, tmp_path / f"{ds}.{path.name}")
            hdi_lab.ingest(provider="file", path=copied, session=session)
    assert {t for t, _, _ in _stored_counts(session)} == set(BAR_TABLES) - {"ohlcv_5s"}  # Databento has no 5s bars
    assert_counts_match(session)
    symbols = hdi_lab.sql(
        f"SELECT DISTINCT symbol FROM \"{session.schema}\".symbology WHERE dataset = 'GLBX.MDP3'", session=session
    )["symbol"].tolist()
    for schema in ("ohlcv-1m", "ohlcv-1h", "ohlcv-1d", "ohlcv-1s"):
        fast = gap_finder.coverage(session, schema, symbols, "2020-12-01", "2021-01-31", dataset="GLBX.MDP3")
        hdi_lab.sql(
            f'INSERT INTO "{session.schema}".bar_counts_stale VALUES (%s)', [Schema(schema).table], session=session
        )
        exact = gap_finder.coverage(session, schema, symbols, "2020-12-01", "2021-01-31", dataset="GLBX.MDP3")
        pd.testing.assert_frame_equal(fast, exact)
        assert fast["present"].sum() > 0, schema


def test_a_quarantine_retry_counts_the_bars_it_loads(session: HdiSession, tmp_path: Path) -> None:
    start, end = DAY, DAY + pd.Timedelta(days=1)
    rec = _bars([A], start + pd.Timedelta(hours=15), list(range(10)))
    rec["high"][4], rec["low"][4] = rec["low"][4], rec["high"][4]  # rejected: high < low
    report = hdi_lab.ingest(provider="file", path=_dbn(tmp_path / "q.dbn.zst", rec, start, end, [A]), session=session)
    assert report.quarantined == 1
    entry = int(hdi_lab.sql(f'SELECT id FROM "{session.schema}".quarantine', session=session)["id"].iloc[0])
    record = quarantine.show(session, entry)["record"]
    hdi_lab.sql(  # the user's fix: high and low swapped back
        f'UPDATE "{session.schema}".quarantine SET record = jsonb_set(jsonb_set(record, %s, to_jsonb(%s::bigint)), '
        "%s, to_jsonb(%s::bigint)) WHERE id = %s",
        ("{high}", int(record["low"]), "{low}", int(record["high"]), entry),
        session=session,
    )
    retried = quarantine.retry(session)
    assert retried.loaded == 1
    assert sum(_stored_counts(session).values()) == 10
    assert_counts_match(session)


def _columns(rec: np.ndarray) -> normalise.Columns:
    return normalise.normalise(rec, TABLES[Schema.OHLCV_1M], None)


@pytest.mark.parametrize("overlap", [False, True], ids=["other-minutes", "same-minutes-too"])
def test_concurrent_loads_of_one_instrument_day_lose_no_count(pg_url: str, db_schema: str, overlap: bool) -> None:
    """Two transactions on two connections load minutes of the same instrument and day (the same count row,
    buckets shared too); the second waits for the first's count row and adds to what it committed. With
    overlapping minutes the second's COPY fails on the key once the first commits and its rows go through the
    ``ON CONFLICT`` fallback, which counts only the rows it inserted."""
    with make_session(pg_url, db_schema) as session:
        session.connection()  # migrated
        first = _bars([A], DAY + pd.Timedelta(hours=14), list(range(0, 60, 2)))
        second = _bars([A], DAY + pd.Timedelta(hours=14), list(range(0 if overlap else 1, 60, 1 if overlap else 2)))
        conns = [psycopg2.connect(pg_url) for _ in range(2)]
        try:
            one, two = (c.cursor() for c in conns)
            assert load.load_market(one, db_schema, _columns(first)) == (30, 0)  # not committed yet
            done: list[object] = []

            def other() -> None:
                done.append(load.load_market(two, db_schema, _columns(second)))
                conns[1].commit()

            thread = threading.Thread(target=other)
            thread.start()
            waited = False
            for _ in range(200):  # the other load must be waiting on the first's lock
                with psycopg2.connect(pg_url) as probe, probe.cursor() as cur:
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                        (conns[1].info.backend_pid,),
                    )
                    waited = cur.fetchone()[0] == 1  # type: ignore[index]
                probe.close()
                if waited:
                    break
                time.sleep(0.05)
            assert waited and not done
            conns[0].commit()
            thread.join(30)
            assert done == [(30, 0)]
        finally:
            for c in conns:
                c.close()
        assert sum(_stored_counts(session).values()) == 60
        assert_counts_match(session)


def test_hand_written_sql_marks_the_table_stale_until_repair(session: HdiSession, tmp_path: Path) -> None:
    start, end = DAY, DAY + pd.Timedelta(days=1)
    rec = _bars([A, B], start + pd.Timedelta(hours=15), list(range(60)))
    hdi_lab.ingest(provider="file", path=_dbn(tmp_path / "a.dbn.zst", rec, start, end, [A, B]), session=session)
    assert_counts_match(session)
    hdi_lab.sql(
        f'DELETE FROM "{session.schema}".ohlcv_1m WHERE instrument_id = {A} AND ts_event < %s',
        [(start + pd.Timedelta(hours=15, minutes=40)).to_pydatetime()],
        session=session,
    )
    assert _stale(session) == {"ohlcv_1m"}
    frame = gap_finder.coverage(session, "ohlcv-1m", list(SYMBOLS.values()), "2024-01-03", "2024-01-04")
    assert dict(zip(frame["instrument_id"], frame["present"], strict=True)) == {A: 20, B: 60}  # the rows, counted
    assert counts.repair(session.connection(), session.schema, "ohlcv_1m") > 0
    assert_counts_match(session)
    assert_coverage_from_counts_is_exact(
        session, "ohlcv-1m", list(SYMBOLS.values()), start="2024-01-03", end="2024-01-04"
    )
    hdi_lab.sql(f'TRUNCATE "{session.schema}".ohlcv_1m', session=session)
    assert _stale(session) == {"ohlcv_1m"}
    counts.repair(session.connection(), session.schema, "ohlcv_1m")
    assert_counts_match(session)
    assert _stored_counts(session) == {}
    with pytest.raises(ValidationError, match="has no bar counts"):
        counts.repair(session.connection(), session.schema, "trades")


def test_repair_of_a_range_rebuilds_only_that_range(session: HdiSession, tmp_path: Path) -> None:
    start, end = DAY, DAY + pd.Timedelta(days=2)
    rec = np.concatenate(
        [
            _bars([A], start + pd.Timedelta(hours=15), list(range(30))),
            _bars([A], start + pd.Timedelta(hours=39), list(range(30))),
        ]
    )
    hdi_lab.ingest(provider="file", path=_dbn(tmp_path / "a.dbn.zst", rec, start, end, [A]), session=session)
    before = _stored_counts(session)
    hdi_lab.sql(f'DELETE FROM "{session.schema}".bar_counts', session=session)
    assert counts.repair(session.connection(), session.schema, "ohlcv_1m", "2024-01-04", "2024-01-05") == 1
    assert _stored_counts(session) == {
        k: n for k, n in before.items() if k[2] // 96 == DAY.value // 86_400_000_000_000 + 1
    }
    counts.repair(session.connection(), session.schema)
    assert _stored_counts(session) == before
    with pytest.raises(ValidationError, match="start='soon' is not a date or timestamp"):
        counts.repair(session.connection(), session.schema, "ohlcv_1m", "soon")


def test_migration_10_counts_the_bars_stored_before_it(pg_url: str, db_schema: str, tmp_path: Path) -> None:
    schema_at_version(pg_url, db_schema, 9)
    conn = psycopg2.connect(pg_url)
    with conn, conn.cursor() as cur:  # bars stored by an hdi_lab before version 10
        cur.execute(
            f'INSERT INTO "{db_schema}".ohlcv_1m SELECT i, 1, t, 1, 1, 1, 1, 1 FROM unnest(%s::bigint[]) AS i, '
            "generate_series(%s::timestamptz, %s::timestamptz, interval '7 minutes') AS t",
            ([A, B], DAY.to_pydatetime(), (DAY + pd.Timedelta(days=3)).to_pydatetime()),
        )
        cur.execute(
            f'INSERT INTO "{db_schema}".ohlcv_1d SELECT {A}, 1, t, 1, 1, 1, 1, 1 '
            "FROM generate_series(%s::timestamptz, %s::timestamptz, interval '1 day') AS t",
            (DAY.to_pydatetime(), (DAY + pd.Timedelta(days=30)).to_pydatetime()),
        )
    conn.close()
    with make_session(pg_url, db_schema) as session:
        session.connection()  # migrates to the current version
        assert len(_stored_counts(session)) > 0
        assert_counts_match(session)


def test_deltas_follow_the_counting_rule() -> None:
    pg_epoch_us = 946_684_800_000_000
    ts = np.array([0, 899_999_999, 900_000_000, 86_399_999_999, 86_400_000_000], dtype=np.int64) - pg_epoch_us
    ids = np.array([7, 7, 7, 7, 7])
    iid, day, rows = counts.deltas(ids[::-1], ts[::-1], -1)  # unsorted input is sorted
    assert iid.tolist() == [7, 7] and day.tolist() == [0, 1]
    assert rows[0, 0] == -2 and rows[0, 1] == -1 and rows[0, 95] == -1 and rows[1, 0] == -1 and rows.sum() == -5


@pytest.mark.parametrize("spread_days", [3, 20 * 365], ids=["dense", "sparse-over-decades"])
def test_deltas_equal_a_plain_count_per_bucket(spread_days: int) -> None:
    rng = np.random.default_rng(5)
    n = 5000
    ids = rng.integers(1, 4, n)
    ts = rng.integers(0, spread_days * 86_400_000_000, n) - 946_684_800_000_000 + 1_600_000_000_000_000
    iid, day, rows = counts.deltas(ids, ts)
    got = {
        (int(i), int(d) * 96 + s): int(r[s]) for i, d, r in zip(iid, day, rows, strict=True) for s in np.flatnonzero(r)
    }
    bucket = (ts + 946_684_800_000_000) // 900_000_000
    keys, n_per = np.unique(np.stack([ids, bucket]), axis=1, return_counts=True)
    assert got == {(int(i), int(b)): int(c) for (i, b), c in zip(keys.T, n_per, strict=True)}
    assert rows.sum() == n and (rows.any(axis=1)).all()
