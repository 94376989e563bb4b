"""Big DBN files ingested streaming (``file_stream_bytes``): one chunk per period, read back in load batches.

Every file here is ingested both ways into separate schemas: whole (one chunk, the file in memory) and
streaming (a threshold of 0 bytes, tiny load batches), and the stored rows must be the same exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import fixture_files
from helpers import decompressed, drop_schema, file_schema, make_session, read_store, row_counts

import hdi_lab
from hdi_lab import dbn
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.periods import index_file
from hdi_lab.dbn.writer import empty_records, encode_dbn, record_dtype
from hdi_lab.errors import DataFormatError, IngestError
from hdi_lab.schemas import Progress, Schema
from hdi_lab.storage.tables import TABLES

DAY = pd.Timestamp("2024-01-04", tz="UTC")  # a Thursday: the file's range holds a weekend with no records
DAYS = 6
DAY_NS = 86_400_000_000_000
BATCH = 7  # records per load batch when streaming: the files hold hundreds of records per day
IID = {"ESH4": 101, "NQH4": 102}


def _trades(rng: np.random.Generator, per_day: int = 300) -> np.ndarray:
    """Trades of two instruments over DAYS days, in ts_recv order as Databento writes them: records whose
    ts_event is just before midnight arrive after the first ones of the next day. Some share a ts_event
    (told apart by dup_idx), one has an unmapped instrument, one a price of 0, one happened before the
    file's start and one is received after the file's end (quarantined)."""
    parts = []
    for d in range(DAYS):
        if (DAY + pd.Timedelta(days=d)).dayofweek >= 5:
            continue
        t0 = DAY.value + d * 86_400_000_000_000
        ts = np.sort(t0 + rng.integers(0, 86_400_000_000_000, per_day))
        ts = np.concatenate([ts, [t0 + 86_399_999_999_000] * 3])  # three trades in the day's last microsecond
        parts.append(ts)
    ts_event = np.concatenate(parts)
    n = len(ts_event)
    rec = empty_records("trades", n)
    rec["ts_event"] = ts_event
    rec["ts_recv"] = ts_event + rng.integers(0, 5_000, n)  # up to 5 us late: midnight stragglers
    rec["publisher_id"] = 1
    rec["instrument_id"] = np.where(rng.random(n) < 0.5, IID["ESH4"], IID["NQH4"])
    rec["price"] = rng.integers(4_000, 4_100, n) * 1_000_000_000
    rec["size"] = rng.integers(1, 20, n)
    rec["sequence"] = np.arange(n)
    rec["action"], rec["side"] = b"T", np.where(rng.random(n) < 0.5, b"A", b"B")
    rec["instrument_id"][10] = 999  # no mapping, no definition: unknown instrument
    rec["price"][20] = 0
    rec["ts_event"][30] = DAY.value - 1  # before the file's start (received in its range: stored)
    rec["ts_recv"][40] = DAY.value + DAYS * 86_400_000_000_000  # received after the file's end
    return rec[np.argsort(rec["ts_recv"], kind="stable")]


def _bars(rng: np.random.Generator) -> np.ndarray:
    """Hourly bars over two calendar months (a sparse schema: one chunk per month)."""
    start = pd.Timestamp("2024-01-30", tz="UTC").value
    n = 24 * 5
    rec = empty_records("ohlcv-1h", n)
    rec["ts_event"] = start + np.arange(n) * 3_600_000_000_000
    rec["publisher_id"], rec["instrument_id"] = 1, IID["ESH4"]
    close = rng.integers(4_000, 4_100, n) * 1_000_000_000
    rec["open"], rec["close"], rec["high"], rec["low"] = close, close, close + 10**9, close - 10**9
    rec["volume"] = rng.integers(1, 1000, n)
    return rec


def _write(path: Path, schema: str, rec: np.ndarray, compress: bool) -> Path:
    first = pd.Timestamp(int(rec["ts_event"].max()), tz="UTC").floor("D")
    start = DAY if schema == "trades" else pd.Timestamp("2024-01-30", tz="UTC")
    end = (first + pd.Timedelta(days=1)) if schema != "trades" else DAY + pd.Timedelta(days=DAYS)
    d0, d1 = start.date(), end.date()
    path.write_bytes(
        encode_dbn(
            dataset="GLBX.MDP3",
            schema=schema,
            stype_in="raw_symbol",
            start=start,
            end=end,
            symbols=list(IID),
            mappings={s: [(d0, d1, iid)] for s, iid in IID.items()},
            records=rec,
            compress=compress,
        )
    )
    return path


@pytest.fixture
def streaming(pg_url: str, db_schema: str) -> Iterator[HdiSession]:
    """A session of its own schema that streams every file, ``BATCH`` records per load batch."""
    s = make_session(pg_url, db_schema + "_s", file_stream_bytes=0, chunk_rows=BATCH)
    yield s
    s.close()
    drop_schema(pg_url, db_schema + "_s")


def _stored(session: HdiSession, schema: Schema) -> pd.DataFrame:
    """Every stored row of ``schema``'s table, in key order."""
    name, key = (
        ("instruments", "instrument_id, ts_recv_ns")
        if schema is Schema.DEFINITION
        else (
            TABLES[schema].name,
            ", ".join(TABLES[schema].key),
        )
    )
    return hdi_lab.sql(f'SELECT * FROM "{session.schema}"."{name}" ORDER BY {key}', session=session).reset_index(
        drop=True
    )


def _quarantined(session: HdiSession) -> list[tuple[object, ...]]:
    """The quarantined records (the reason names the chunk's range, which differs between the two ways)."""
    df = hdi_lab.sql(
        f'SELECT rule, record::text AS record, dup_idx, status FROM "{session.schema}".quarantine ORDER BY 2, 1',
        session=session,
    )
    return list(df.itertuples(index=False, name=None))


def _same_storage(a: HdiSession, b: HdiSession, schema: Schema) -> None:
    pd.testing.assert_frame_equal(_stored(a, schema), _stored(b, schema), check_exact=True)
    assert _quarantined(a) == _quarantined(b)
    sym = 'SELECT stype, symbol, d0, d1, instrument_id FROM "{}".symbology ORDER BY 1, 2, 3'
    pd.testing.assert_frame_equal(
        hdi_lab.sql(sym.format(a.schema), session=a), hdi_lab.sql(sym.format(b.schema), session=b)
    )


CASES = [("trades", True), ("trades", False), ("ohlcv-1h", True)]


@pytest.mark.integration
@pytest.mark.parametrize(("schema", "compress"), CASES, ids=["trades.dbn.zst", "trades.dbn", "ohlcv-1h.dbn.zst"])
def test_streamed_file_stores_exactly_what_the_whole_file_path_stores(
    session: HdiSession, streaming: HdiSession, tmp_path: Path, schema: str, compress: bool
) -> None:
    rng = np.random.default_rng(17)
    rec = _trades(rng) if schema == "trades" else _bars(rng)
    path = _write(tmp_path / f"big.{schema}.dbn{'.zst' if compress else ''}", schema, rec, compress)

    whole = hdi_lab.ingest(provider="file", path=path, session=session)
    streamed = hdi_lab.ingest(provider="file", path=path, session=streaming)
    assert len(whole.chunks) == 1
    if schema == "trades":  # one chunk per UTC day of the range, the weekend's two empty
        assert [c.chunk.start.date() for c in streamed.chunks] == [
            (DAY + pd.Timedelta(days=d)).date() for d in range(DAYS)
        ]
        assert sorted(c.fetched for c in streamed.chunks)[:2] == [0, 0]
        assert whole.quarantined >= 3  # and the last day's trades received after the file's end
    else:  # a sparse schema: one chunk per calendar month
        assert [c.chunk.key.split(":")[2] for c in streamed.chunks] == ["2024-01", "2024-02"]
    assert len(rec) > 10 * BATCH
    counts = ("fetched", "inserted", "updated", "duplicates", "quarantined", "deleted")
    assert [getattr(streamed, c) for c in counts] == [getattr(whole, c) for c in counts]
    assert whole.fetched == len(rec)
    _same_storage(session, streaming, Schema(schema))

    again = hdi_lab.ingest(provider="file", path=path, session=streaming)
    assert again.chunks_skipped == len(again.chunks) == len(streamed.chunks) and again.fetched == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    "path",
    [f for f in fixture_files() if file_schema(f) != "mbp-1"],
    ids=lambda p: p.parent.name + ":" + file_schema(p),
)
def test_real_fixture_streamed_equals_whole(session: HdiSession, streaming: HdiSession, path: Path) -> None:
    """Databento's own files through the streaming path store what the whole-file path stores."""
    whole = hdi_lab.ingest(provider="file", path=path, session=session)
    streamed = hdi_lab.ingest(provider="file", path=path, session=streaming)
    assert streamed.fetched == whole.fetched == len(read_store(path).to_ndarray())
    assert (streamed.inserted, streamed.quarantined) == (whole.inserted, whole.quarantined)
    _same_storage(session, streaming, Schema(file_schema(path)))


@pytest.mark.unit
@pytest.mark.parametrize("compress", [True, False], ids=["dbn.zst", "dbn"])
def test_periods_are_read_in_batches_never_whole(tmp_path: Path, compress: bool) -> None:
    """The index pass and every period read hold at most a batch of records; each period comes back as the
    file's records of that day, in file order (midnight stragglers included)."""
    rec = _trades(np.random.default_rng(3))
    path = _write(tmp_path / f"t.trades.dbn{'.zst' if compress else ''}", "trades", rec, compress)
    index = index_file(path, str(path), monthly=False, batch=BATCH)
    try:
        assert index.fault is None
        size = record_dtype("trades").itemsize
        lo, hi = DAY.value, (DAY + pd.Timedelta(days=DAYS)).value - 1
        day_of = np.clip(rec["ts_event"].astype(np.int64), lo, hi) // 86_400_000_000_000
        for i, period in enumerate(index.periods):
            pieces = list(index.records(i, BATCH))
            assert all(0 < len(p) <= BATCH * size for p in pieces)
            got = np.frombuffer(b"".join(pieces), dtype=rec.dtype)
            expected = rec[day_of == pd.Timestamp(period.label).value // 86_400_000_000_000]
            assert got.tobytes() == expected.tobytes() and period.records == len(expected)
            parts = [p.records for p in dbn.decode(index.store(i, BATCH), str(path), batch=BATCH)]
            assert all(len(p) <= BATCH for p in parts)
            assert np.concatenate(parts).tobytes() == expected.tobytes()
        assert sum(p.records for p in index.periods) == len(rec) > 20 * BATCH
        # out of order (a period read twice) starts the file again instead of giving wrong records
        again = np.frombuffer(b"".join(index.records(0, BATCH)), dtype=rec.dtype)
        assert again.tobytes() == rec[day_of == day_of.min()].tobytes()
    finally:
        index.close()


def _cut(data: bytes, compress: bool, at: float) -> bytes:
    return data[: int(len(data) * at)] if compress else data[: int(len(data) * at) + 5]  # +5: inside a record


@pytest.mark.integration
@pytest.mark.parametrize("compress", [True, False], ids=["dbn.zst", "dbn"])
def test_truncated_file_keeps_its_days_before_the_cut_and_resumes_once_fixed(
    session: HdiSession, streaming: HdiSession, tmp_path: Path, compress: bool
) -> None:
    rec = _trades(np.random.default_rng(5), per_day=2000)  # zstd blocks hold 128 KiB: several of them
    path = _write(tmp_path / f"cut.trades.dbn{'.zst' if compress else ''}", "trades", rec, compress)
    good = path.read_bytes()
    path.write_bytes(_cut(good, compress, 0.7))
    index = index_file(path, str(path), monthly=False, batch=BATCH)
    index.close()
    assert index.fault is not None and 2 <= len(index.periods) < DAYS

    with pytest.raises(IngestError) as info:
        hdi_lab.ingest(provider="file", path=path, session=streaming)
    msg = str(info.value)
    assert str(path) in msg and f"at byte {index.fault.offset:,}" in msg and "re-download" in msg
    if not compress:  # the plain file ends inside the record after the last whole one
        header = 8 + int.from_bytes(good[4:8], "little")
        assert (
            index.fault.offset
            == header + (len(_cut(good, False, 0.7)) - header) // rec.dtype.itemsize * rec.dtype.itemsize
        )
    report = info.value.report
    assert [c.error is None for c in report.chunks] == [True] * len(index.periods) + [False]
    kept_until = index.periods[-1].end
    stored = _stored(streaming, Schema.TRADES)
    read = np.arange(len(rec)) < index.fault.record
    valid = (rec["instrument_id"] != 999) & (rec["price"] > 0) & (rec["ts_recv"] < DAY.value + DAYS * DAY_NS)
    assert len(stored) == int((read & valid & (rec["ts_event"] < kept_until)).sum())
    assert row_counts(streaming)["ingest_log"] == len(index.periods)

    path.write_bytes(good)  # re-downloaded
    resumed = hdi_lab.ingest(provider="file", path=path, session=streaming)
    # the first day's trade received at the file's very end was cut off: that day's content, hence its key,
    # changed, and it is loaded again (its other rows as duplicates); the other days before the cut are skipped
    assert resumed.chunks_skipped == len(index.periods) - 1
    first = resumed.chunks[0]
    assert (first.inserted, first.duplicates + first.quarantined) == (0, first.fetched)
    hdi_lab.ingest(provider="file", path=path, session=session)  # the whole file in memory, in one go
    _same_storage(session, streaming, Schema.TRADES)


@pytest.mark.integration
def test_corrupt_record_mid_file_names_its_byte_offset(streaming: HdiSession, tmp_path: Path) -> None:
    rec = _trades(np.random.default_rng(7), per_day=2000)
    bad = len(rec) * 3 // 4
    rec["rtype"][bad] = 0x21
    path = _write(tmp_path / "bad.trades.dbn.zst", "trades", rec, True)
    header = 8 + int.from_bytes(decompressed(path)[4:8], "little")
    with pytest.raises(IngestError) as info:
        hdi_lab.ingest(provider="file", path=path, session=streaming)
    offset = header + bad * rec.dtype.itemsize
    assert f"at byte {offset:,} of its DBN data (record {bad:,})" in str(info.value)
    assert "has rtype 33" in str(info.value)
    day_of_bad = pd.Timestamp(int(rec["ts_event"][bad - 1]), tz="UTC").floor("D")
    logged = hdi_lab.sql(f'SELECT max(end_ts) AS e FROM "{streaming.schema}".ingest_log', session=streaming)
    assert logged["e"].iloc[0] <= day_of_bad


@pytest.mark.integration
def test_file_changed_between_its_days_stores_only_what_was_planned(streaming: HdiSession, tmp_path: Path) -> None:
    """A streamed file rewritten after its first day was loaded: the days read after are refused (their records
    no longer hash to their keys) unless read before the change; what is stored is exactly the planned content."""
    rec = _trades(np.random.default_rng(9), per_day=3000)
    path = _write(tmp_path / "changing.trades.dbn", "trades", rec, False)
    other = rec.copy()
    other["size"] += 1

    def rewrite(event: Progress) -> None:
        if event.done == 1:
            _write(path, "trades", other, False)

    with pytest.raises(IngestError, match="changed while it was being ingested") as info:
        hdi_lab.ingest(provider="file", path=path, session=streaming, progress=rewrite)
    loaded = [c for c in info.value.report.chunks if c.error is None]
    assert 1 <= len(loaded) < DAYS
    stored = _stored(streaming, Schema.TRADES)
    assert len(stored) == sum(c.inserted for c in loaded)
    original = dict(zip(rec["sequence"].tolist(), rec["size"].tolist(), strict=True))
    assert [original[q] for q in stored["sequence"]] == stored["size"].tolist()


@pytest.mark.unit
def test_truncated_header_is_refused_whole(tmp_path: Path) -> None:
    rec = _trades(np.random.default_rng(1))
    path = _write(tmp_path / "head.trades.dbn", "trades", rec, False)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataFormatError, match=r"head\.trades\.dbn"):
        index_file(path, str(path), monthly=False, batch=BATCH)
