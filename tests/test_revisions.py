"""Revisions land: re-ingesting a chunk whose data changed leaves its stored rows equal to the new data.

Real DBN bytes (hdi_lab.dbn.writer.encode_dbn) ingested into a real PostgreSQL: a file, then a revised
file for the same range with some rows changed, some removed and some added.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_session

import hdi_lab
from hdi_lab.core import quarantine
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import empty_records, encode_dbn
from hdi_lab.errors import DataFormatError
from hdi_lab.schemas import IngestReport

pytestmark = pytest.mark.integration

DATASET = "GLBX.MDP3"
PUBLISHER = 1  # GLBX.MDP3.GLBX
OTHER_DATASET, OTHER_PUBLISHER = "XNAS.ITCH", 2  # XNAS.ITCH.XNAS: instrument ids of another dataset
DAY = pd.Timestamp("2024-01-02", tz="UTC")
MORNING, NOON, NIGHT = DAY, DAY + pd.Timedelta(hours=12), DAY + pd.Timedelta(hours=24)
A, B, C = 9001, 9002, 9003  # A and B in the revised chunk, C in another chunk of the same range
MIN = 60_000_000_000
PX = 1_000_000_000
SYMBOLS = {A: "TESTA", B: "TESTB", C: "TESTC"}


def _bars(ids: list[int], start: pd.Timestamp, minutes: list[int], publisher: int = PUBLISHER) -> np.ndarray:
    """One bar per instrument and minute after ``start`` (sorted by time, then instrument)."""
    rec = empty_records("ohlcv-1m", len(ids) * len(minutes))
    rec["publisher_id"] = publisher
    rec["instrument_id"] = np.tile(ids, len(minutes))
    m = np.repeat(minutes, len(ids))
    rec["ts_event"] = start.value + m * MIN
    o = 4800 * PX + m * 250_000_000 + rec["instrument_id"].astype(np.int64) * PX
    rec["open"], rec["high"], rec["low"], rec["close"] = o, o + PX, o - PX, o + 500_000_000
    rec["volume"] = m + 10
    return rec


def _write(
    path: Path,
    schema: str,
    rec: np.ndarray,
    start: pd.Timestamp,
    end: pd.Timestamp,
    ids: list[int],
    dataset: str = DATASET,
    compress: bool = True,
) -> Path:
    day = (DAY.date(), (DAY + pd.Timedelta(days=1)).date())
    path.write_bytes(
        encode_dbn(
            dataset=dataset,
            schema=schema,
            stype_in="raw_symbol",
            start=start,
            end=end,
            symbols=[SYMBOLS[i] for i in ids],
            mappings={SYMBOLS[i]: [(*day, i)] for i in ids},
            records=rec,
            compress=compress,
        )
    )
    return path


def _bar_rows(rec: np.ndarray) -> list[tuple[int, ...]]:
    return sorted(
        tuple(
            int(r[c]) for c in ("instrument_id", "publisher_id", "ts_event", "open", "high", "low", "close", "volume")
        )
        for r in rec
    )


def _stored_bars(session: HdiSession, where: str = "TRUE") -> list[tuple[int, ...]]:
    frame = hdi_lab.sql(
        "SELECT instrument_id, publisher_id, (EXTRACT(EPOCH FROM ts_event) * 1000000)::bigint * 1000 AS ts, "
        f'open, high, low, close, volume FROM "{session.schema}".ohlcv_1m WHERE {where}',
        session=session,
    )
    return sorted(tuple(int(v) for v in row) for row in frame.itertuples(index=False))


def _log(session: HdiSession) -> pd.DataFrame:
    return hdi_lab.sql(
        f'SELECT inserted, updated, duplicates, deleted, quarantined FROM "{session.schema}".ingest_log ORDER BY id',
        session=session,
    )


def _counts(report: IngestReport) -> tuple[int, int, int, int, int]:
    return report.inserted, report.updated, report.duplicates, report.deleted, report.quarantined


def _revise(old: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """``old`` with 3 bars changed, 4 removed and 2 added; returns (new, changed, removed, added)."""
    new = old.copy()
    new["close"][[1, 5, 9]] += 250_000_000  # changed
    new["volume"][9] += 1
    keep = np.ones(len(new), dtype=bool)
    keep[[0, 2, 7, len(new) - 1]] = False  # removed (the first and the last of the range among them)
    added = _bars([A, B], MORNING, [200])  # two new minutes
    new = np.concatenate([new[keep], added])
    return new[np.lexsort([new["instrument_id"], new["ts_event"]])], 3, 4, len(added)


@pytest.mark.parametrize("chunk_rows", [1_000_000, 7], ids=["one-batch", "many-batches"])
def test_revised_bars_replace_the_chunk(pg_url: str, db_schema: str, tmp_path: Path, chunk_rows: int) -> None:
    old = _bars([A, B], MORNING, list(range(60, 80)))
    neighbour_time = _bars([A, B], NOON, list(range(10)))  # same instruments, the next chunk's range
    neighbour_ids = _bars([C], MORNING, list(range(60, 80)))  # same range, an instrument of another chunk
    other_dataset = _bars([A], MORNING, list(range(60, 80)), publisher=OTHER_PUBLISHER)  # same ids, other dataset
    with make_session(pg_url, db_schema, chunk_rows=chunk_rows) as session:
        for rec, start, end, ids, name, ds in [
            (old, MORNING, NOON, [A, B], "old", DATASET),
            (neighbour_time, NOON, NIGHT, [A, B], "noon", DATASET),
            (neighbour_ids, MORNING, NOON, [C], "c", DATASET),
            (other_dataset, MORNING, NOON, [A], "xnas", OTHER_DATASET),
        ]:
            path = _write(tmp_path / f"{name}.ohlcv-1m.dbn.zst", "ohlcv-1m", rec, start, end, ids, ds)
            hdi_lab.ingest(provider="file", path=path, session=session)
        untouched = _bar_rows(np.concatenate([neighbour_time, neighbour_ids, other_dataset]))
        assert _stored_bars(session) == sorted(_bar_rows(old) + untouched)

        new, changed, removed, added = _revise(old)
        revised = _write(tmp_path / "revised.ohlcv-1m.dbn.zst", "ohlcv-1m", new, MORNING, NOON, [A, B])
        report = hdi_lab.ingest(provider="file", path=revised, force=True, session=session)
        assert _counts(report) == (added, changed, len(new) - added - changed, removed, 0)
        assert _stored_bars(session) == sorted(_bar_rows(new) + untouched)  # the chunk equals the new file
        assert f"deleted {removed}" in str(report) and report.summary()["deleted"] == removed
        assert _log(session).iloc[-1].tolist() == [added, changed, len(new) - added - changed, removed, 0]

        again = hdi_lab.ingest(provider="file", path=revised, force=True, session=session)
        assert _counts(again) == (0, 0, len(new), 0, 0)  # nothing changes: all duplicates
        assert _stored_bars(session) == sorted(_bar_rows(new) + untouched)


def test_a_failure_mid_chunk_rolls_the_revision_back(pg_url: str, db_schema: str, tmp_path: Path) -> None:
    old = _bars([A, B], MORNING, list(range(60, 80)))
    with make_session(pg_url, db_schema, chunk_rows=5) as session:  # several batches load before the failure
        hdi_lab.ingest(
            provider="file",
            path=_write(tmp_path / "old.dbn.zst", "ohlcv-1m", old, MORNING, NOON, [A, B]),
            session=session,
        )
        before, log = _stored_bars(session), _log(session)
        new, *_ = _revise(old)
        path = _write(tmp_path / "revised.dbn", "ohlcv-1m", new, MORNING, NOON, [A, B], compress=False)
        path.write_bytes(path.read_bytes()[:-7])  # a partial last record
        with pytest.raises(DataFormatError):
            hdi_lab.ingest(provider="file", path=path, force=True, session=session)
        assert _stored_bars(session) == before  # nothing of the revision: no update, no insert, no delete
        assert _log(session).equals(log)


def test_a_bar_that_now_fails_validation_is_deleted_and_quarantined(session: HdiSession, tmp_path: Path) -> None:
    old = _bars([A], MORNING, list(range(60, 70)))
    hdi_lab.ingest(
        provider="file", path=_write(tmp_path / "old.dbn.zst", "ohlcv-1m", old, MORNING, NOON, [A]), session=session
    )
    new = old.copy()
    new["high"][3], new["low"][3] = new["low"][3], new["high"][3]  # the vendor's revision is inconsistent
    path = _write(tmp_path / "revised.dbn.zst", "ohlcv-1m", new, MORNING, NOON, [A])
    report = hdi_lab.ingest(provider="file", path=path, force=True, session=session)
    assert _counts(report) == (0, 0, 9, 1, 1)
    assert _stored_bars(session) == _bar_rows(np.delete(new, 3))  # not stored as valid any more
    entries = hdi_lab.sql(f'SELECT rule, status FROM "{session.schema}".quarantine', session=session)
    assert entries.values.tolist() == [["ohlc_inconsistent", "open"]]


SAME_NS = MORNING.value + 3600 * PX + 123


def _trades(sizes: list[int], ns: list[int]) -> np.ndarray:
    rec = empty_records("trades", len(sizes))
    rec["publisher_id"], rec["instrument_id"] = PUBLISHER, A
    rec["ts_event"] = ns
    rec["ts_recv"] = rec["ts_event"] + 250_000
    rec["price"], rec["size"] = 4800 * PX, sizes
    rec["action"], rec["side"], rec["sequence"] = b"T", b"B", np.arange(len(sizes)) + 100
    return rec


def _trade_rows(rec: np.ndarray) -> list[tuple[int, ...]]:
    """(ts_event_ns, dup_idx, price, size, sequence): dup_idx numbers trades of one nanosecond in file order."""
    seen: Counter[int] = Counter()
    out = []
    for r in rec:
        t = int(r["ts_event"])
        out.append((t, seen[t], int(r["price"]), int(r["size"]), int(r["sequence"])))
        seen[t] += 1
    return sorted(out)


def _stored_trades(session: HdiSession) -> list[tuple[int, ...]]:
    frame = hdi_lab.sql(
        f'SELECT ts_event_ns, dup_idx, price, size, sequence FROM "{session.schema}".trades', session=session
    )
    return sorted(tuple(int(v) for v in row) for row in frame.itertuples(index=False))


@pytest.mark.parametrize("chunk_rows", [1_000_000, 2], ids=["one-batch", "many-batches"])
def test_revised_trades_with_dup_idx_replace_the_chunk(
    pg_url: str, db_schema: str, tmp_path: Path, chunk_rows: int
) -> None:
    with make_session(pg_url, db_schema, chunk_rows=chunk_rows) as session:
        ns = [SAME_NS - PX, SAME_NS, SAME_NS, SAME_NS, SAME_NS + PX]
        old = _trades([1, 2, 3, 4, 5], ns)
        hdi_lab.ingest(
            provider="file", path=_write(tmp_path / "old.dbn.zst", "trades", old, MORNING, NOON, [A]), session=session
        )
        assert _stored_trades(session) == _trade_rows(old)

        # the vendor drops the second trade of the nanosecond: the third becomes dup_idx 1; a size changes; one is new
        new = _trades([1, 2, 4, 9, 6], [SAME_NS - PX, SAME_NS, SAME_NS, SAME_NS + PX, SAME_NS + 2 * PX])
        new["sequence"] = [100, 101, 103, 104, 105]
        path = _write(tmp_path / "revised.dbn.zst", "trades", new, MORNING, NOON, [A])
        report = hdi_lab.ingest(provider="file", path=path, force=True, session=session)
        assert _stored_trades(session) == _trade_rows(new)
        # inserted: the new last trade; updated: dup_idx 1 (now the old third) and the changed size; deleted: dup_idx 2
        assert _counts(report) == (1, 2, 2, 1, 0)
        again = hdi_lab.ingest(provider="file", path=path, force=True, session=session)
        assert _counts(again) == (0, 0, 5, 0, 0)
        assert _stored_trades(session) == _trade_rows(new)


def test_an_open_entry_the_revision_corrects_is_superseded(session: HdiSession, tmp_path: Path) -> None:
    old = _bars([A], MORNING, list(range(60, 70)))
    old["high"][3], old["low"][3] = old["low"][3], old["high"][3]  # bad in the first version
    old["volume"][5] = 0  # bad in both versions, byte-identical
    old["high"][5] = old["low"][5] - 1
    path = _write(tmp_path / "old.dbn.zst", "ohlcv-1m", old, MORNING, NOON, [A])
    assert hdi_lab.ingest(provider="file", path=path, session=session).quarantined == 2
    new = old.copy()
    new["high"][3], new["low"][3] = old["low"][3], old["high"][3]  # the vendor's correction
    path = _write(tmp_path / "revised.dbn.zst", "ohlcv-1m", new, MORNING, NOON, [A])
    report = hdi_lab.ingest(provider="file", path=path, force=True, session=session)
    assert _counts(report) == (1, 0, 8, 0, 1)
    assert _stored_bars(session) == _bar_rows(np.delete(new, 5))
    entries = hdi_lab.sql(f'SELECT status FROM "{session.schema}".quarantine ORDER BY id', session=session)
    assert entries["status"].tolist() == ["superseded", "open"]  # the old record of bar 3 is never loaded again
    assert quarantine.retry(session).retried == 1  # bar 5, still bad
    assert _stored_bars(session) == _bar_rows(np.delete(new, 5))


def test_a_continuous_chunk_replaces_each_contract_on_its_own_days(session: HdiSession, tmp_path: Path) -> None:
    """A continuous symbol maps to A on day 1, B on day 2: B's day-1 rows (another chunk's) stay."""
    day2 = DAY + pd.Timedelta(days=1)
    b_day1 = _bars([B], MORNING, list(range(60, 70)))
    hdi_lab.ingest(
        provider="file", path=_write(tmp_path / "b.dbn.zst", "ohlcv-1m", b_day1, DAY, day2, [B]), session=session
    )

    def continuous(rec: np.ndarray, name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(
            encode_dbn(
                dataset=DATASET,
                schema="ohlcv-1m",
                stype_in="continuous",
                start=DAY,
                end=DAY + pd.Timedelta(days=2),
                symbols=["TST.c.0"],
                mappings={
                    "TST.c.0": [(DAY.date(), day2.date(), A), (day2.date(), (day2 + pd.Timedelta(days=1)).date(), B)]
                },
                records=rec,
            )
        )
        return path

    old = np.concatenate([_bars([A], MORNING, list(range(100, 110))), _bars([B], day2, list(range(100, 110)))])
    hdi_lab.ingest(provider="file", path=continuous(old, "old.dbn.zst"), session=session)
    new = np.delete(old, [4, 14])  # one bar of each contract removed
    report = hdi_lab.ingest(provider="file", path=continuous(new, "new.dbn.zst"), force=True, session=session)
    assert _counts(report) == (0, 0, 18, 2, 0)
    assert _stored_bars(session) == sorted(_bar_rows(new) + _bar_rows(b_day1))


def test_bars_removed_between_two_batches_are_deleted(pg_url: str, db_schema: str, tmp_path: Path) -> None:
    """Batches of 6 bars: the removed minutes 63-65 lie between the time ranges the two batches read."""
    old = _bars([A, B], MORNING, list(range(60, 69)))
    with make_session(pg_url, db_schema, chunk_rows=6) as session:
        path = _write(tmp_path / "old.dbn.zst", "ohlcv-1m", old, MORNING, NOON, [A, B])
        hdi_lab.ingest(provider="file", path=path, session=session)
        new = _bars([A, B], MORNING, [60, 61, 62, 66, 67, 68])
        path = _write(tmp_path / "new.dbn.zst", "ohlcv-1m", new, MORNING, NOON, [A, B])
        report = hdi_lab.ingest(provider="file", path=path, force=True, session=session)
        assert _counts(report) == (0, 0, 12, 6, 0)
        assert _stored_bars(session) == _bar_rows(new)
