"""Real Databento DBN fixture files -> PostgreSQL -> hdi_lab.query, compared with the decoder's records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, fixture_files
from helpers import (
    assert_nothing_written,
    col_ns,
    drop_schema,
    file_schema,
    index_ns,
    make_session,
    metadata_mapping,
    read_store,
    row_counts,
)

import hdi_lab
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import UNDEF_PRICE, empty_records, encode_dbn
from hdi_lab.errors import DataFormatError
from hdi_lab.schemas import DAY_NS, Progress, Schema
from hdi_lab.storage.tables import TABLES

pytestmark = pytest.mark.integration

MARKET = [f for f in fixture_files() if file_schema(f) not in ("mbp-1", "definition")]
DEFINITIONS = fixture_files("definition")
SUPPORTED = MARKET + DEFINITIONS
MBP1 = fixture_files("mbp-1")


def _id(path: Path) -> str:
    return f"{path.parent.name}:{file_schema(path)}"


def test_fixture_inventory() -> None:
    """The README's 25 files: 3 datasets x (ohlcv-1s/1m/1h/1d, trades, tbbo, definition, mbp-1) + GLBX statistics."""
    assert len(MARKET) == 19 and len(DEFINITIONS) == 3 and len(MBP1) == 3, (
        f"expected the Databento fixtures under {FIXTURES}: the parametrised tests run once per file, "
        "so a missing set must fail here, not skip"
    )


def _check_market_frame(path: Path, fixed: pd.DataFrame, flt: pd.DataFrame) -> None:
    """``fixed`` / ``flt`` (query results) hold exactly the file's records, in the file's order."""
    store = read_store(path)
    expected = store.to_ndarray()
    schema = Schema(file_schema(path))
    table = TABLES[schema]
    symbol = store.symbols[0]
    iid = metadata_mapping(store)[symbol][0][2]

    assert len(fixed) == len(flt) == len(expected)
    assert fixed.index.name == "ts_event"
    np.testing.assert_array_equal(index_ns(fixed), expected["ts_event"].astype(np.int64))
    np.testing.assert_array_equal(index_ns(flt), expected["ts_event"].astype(np.int64))
    assert (fixed["symbol"] == symbol).all() and (flt["symbol"] == symbol).all()
    assert (fixed["instrument_id"].to_numpy() == iid).all()
    np.testing.assert_array_equal(fixed["instrument_id"].to_numpy(), expected["instrument_id"].astype(np.int64))

    for col in table.columns:
        if col.kind == "dup" or col.source == "ts_event":
            continue
        src = expected[col.source]
        if col.source == "ts_recv":
            np.testing.assert_array_equal(col_ns(fixed["ts_recv"]), src.astype(np.int64))
        elif col.source == "ts_ref":
            np.testing.assert_array_equal(fixed["ts_ref"].to_numpy(), src)
        elif col.kind == "char":
            assert list(fixed[col.name]) == [v.decode() for v in src], col.name
        elif col.kind == "price":
            got = fixed[col.name].to_numpy()
            assert got.dtype == np.int64, col.name
            np.testing.assert_array_equal(got, src.astype(np.int64), err_msg=col.name)
            as_float = flt[col.name].to_numpy()
            undef = src == UNDEF_PRICE
            assert np.isnan(as_float[undef]).all(), col.name
            np.testing.assert_array_equal(as_float[~undef], src[~undef].astype(np.int64) / 1e9, err_msg=col.name)
        else:
            np.testing.assert_array_equal(
                fixed[col.name].to_numpy().astype(np.int64), src.astype(np.int64), err_msg=col.name
            )
            np.testing.assert_array_equal(
                flt[col.name].to_numpy().astype(np.int64), src.astype(np.int64), err_msg=col.name
            )


def _query_file(session: HdiSession, path: Path, price_type: str = "fixed", end_extra_ns: int = 0) -> pd.DataFrame:
    store = read_store(path)
    meta = store.metadata
    return hdi_lab.query(
        file_schema(path),
        symbols=[store.symbols[0]],
        start=meta.start,
        end=meta.end + end_extra_ns,
        price_type=price_type,
        session=session,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("path", MARKET, ids=_id)
def test_market_file_round_trip(session: HdiSession, path: Path) -> None:
    expected = read_store(path).to_ndarray()
    report = hdi_lab.ingest(provider="file", path=path, session=session)
    assert (report.fetched, report.inserted, report.updated, report.duplicates, report.quarantined) == (
        len(expected),
        len(expected),
        0,
        0,
        0,
    )
    assert len(report.chunks) == 1 and report.chunks_skipped == 0
    _check_market_frame(path, _query_file(session, path), _query_file(session, path, "float"))
    counts = row_counts(session)
    assert counts[TABLES[Schema(file_schema(path))].name] == len(expected)
    assert counts["ingest_log"] == 1 and counts["quarantine"] == 0


@pytest.mark.parametrize("path", DEFINITIONS, ids=_id)
def test_definition_file_round_trip(session: HdiSession, path: Path) -> None:
    store = read_store(path)
    expected = store.to_ndarray()
    symbol = store.symbols[0]
    report = hdi_lab.ingest(provider="file", path=path, session=session)
    assert (report.fetched, report.inserted, report.quarantined) == (len(expected), len(expected), 0)

    meta = store.metadata
    fixed = hdi_lab.query(
        "definition", symbols=[symbol], start=meta.start, end=meta.end, price_type="fixed", session=session
    )
    flt = hdi_lab.query("definition", symbols=[symbol], start=meta.start, end=meta.end, session=session)
    assert len(fixed) == len(flt) == len(expected)
    np.testing.assert_array_equal(index_ns(fixed), expected["ts_event"].astype(np.int64))
    assert list(fixed["symbol"]) == [symbol] * len(expected)
    assert list(fixed["raw_symbol"]) == [r.decode() for r in expected["raw_symbol"]]
    for name in (
        "instrument_id",
        "publisher_id",
        "ts_recv",
        "min_price_increment",
        "display_factor",
        "expiration",
        "activation",
        "high_limit_price",
        "low_limit_price",
        "contract_multiplier",
        "raw_instrument_id",
        "channel_id",
    ):
        np.testing.assert_array_equal(fixed[name].to_numpy(), expected[name], err_msg=name)
    for name in ("min_price_increment", "high_limit_price", "low_limit_price"):
        src = expected[name]
        undef = src == UNDEF_PRICE
        got = flt[name].to_numpy()
        assert np.isnan(got[undef]).all()
        np.testing.assert_array_equal(got[~undef], src[~undef] / 1e9, err_msg=name)

    stored = hdi_lab.sql(
        f'SELECT instrument_id, raw_symbol, dataset, ts_recv_ns FROM "{session.schema}".instruments', session=session
    )
    assert stored.to_dict("records") == [
        {
            "instrument_id": int(r["instrument_id"]),
            "raw_symbol": symbol,
            "dataset": store.dataset,
            "ts_recv_ns": int(r["ts_recv"]),
        }
        for r in expected
    ]


@pytest.mark.parametrize("path", MBP1, ids=_id)
def test_mbp1_rejected_with_hint_to_tbbo(session: HdiSession, path: Path) -> None:
    with pytest.raises(DataFormatError, match="tbbo") as info:
        hdi_lab.ingest(provider="file", path=path, session=session)
    assert "mbp-1" in str(info.value)
    assert_nothing_written(session)


@pytest.mark.parametrize("path", SUPPORTED, ids=_id)
def test_reingest_skips_and_force_reloads_without_duplicates(session: HdiSession, path: Path) -> None:
    n = len(read_store(path).to_ndarray())
    first = hdi_lab.ingest(provider="file", path=path, session=session)
    assert first.inserted == n
    before = row_counts(session)

    again = hdi_lab.ingest(provider="file", path=path, session=session)
    assert again.chunks_skipped == 1 and len(again.chunks) == 1
    assert (again.fetched, again.inserted, again.updated, again.duplicates) == (0, 0, 0, 0)
    assert row_counts(session) == before

    forced = hdi_lab.ingest(provider="file", path=path, session=session, force=True)
    assert forced.chunks_skipped == 0
    assert (forced.fetched, forced.inserted, forced.updated, forced.quarantined) == (n, 0, 0, 0)
    assert forced.duplicates == forced.fetched
    after = row_counts(session)
    assert after["ingest_log"] == before["ingest_log"] + 1
    assert {k: v for k, v in after.items() if k != "ingest_log"} == {
        k: v for k, v in before.items() if k != "ingest_log"
    }
    log = hdi_lab.sql(
        f'SELECT forced, fetched, inserted, duplicates FROM "{session.schema}".ingest_log ORDER BY id', session=session
    )
    assert log.to_dict("records") == [
        {"forced": False, "fetched": n, "inserted": n, "duplicates": 0},
        {"forced": True, "fetched": n, "inserted": 0, "duplicates": n},
    ]
    if path in MARKET:
        _check_market_frame(path, _query_file(session, path), _query_file(session, path, "float"))


@pytest.mark.parametrize("path", MARKET, ids=_id)
def test_overlapping_file_counts_inserted_and_duplicates(session: HdiSession, path: Path, tmp_path: Path) -> None:
    """A different file (same records + the same records one day later) inserts only the new ones."""
    store = read_store(path)
    original = store.to_ndarray()
    meta = store.metadata
    hdi_lab.ingest(provider="file", path=path, session=session)

    extra = original.copy()
    for name in ("ts_event", "ts_recv"):
        if name in (extra.dtype.names or ()):
            extra[name] += np.uint64(DAY_NS)
    combined = np.concatenate([original, extra])
    mappings = {
        s: [(d0, d1 + pd.Timedelta(days=1).to_pytimedelta(), iid) for d0, d1, iid in ivs]
        for s, ivs in metadata_mapping(store).items()
    }
    bigger = tmp_path / f"overlap.{file_schema(path)}.dbn.zst"
    bigger.write_bytes(
        encode_dbn(
            dataset=store.dataset,
            schema=file_schema(path),
            stype_in="raw_symbol",
            start=meta.start,
            end=meta.end + DAY_NS,
            symbols=list(store.symbols),
            mappings=mappings,
            records=combined,
        )
    )

    report = hdi_lab.ingest(provider="file", path=bigger, session=session)
    assert report.chunks_skipped == 0, "a file with other content is a new chunk"
    n = len(original)
    assert (report.fetched, report.inserted, report.updated, report.duplicates, report.quarantined) == (
        2 * n,
        n,
        0,
        n,
        0,
    )
    frame = _query_file(session, path, end_extra_ns=DAY_NS)
    np.testing.assert_array_equal(index_ns(frame), combined["ts_event"].astype(np.int64))
    assert row_counts(session)[TABLES[Schema(file_schema(path))].name] == 2 * n


@pytest.mark.parametrize("path", MARKET, ids=_id)
def test_one_record_load_batches_store_the_same_rows(pg_url: str, db_schema: str, path: Path) -> None:
    """``chunk_rows`` (records per load batch) must not change what is stored.

    EQUS.MINI trades/tbbo hold two records with the same ts_event (records 3 and 4, told apart
    only by ``dup_idx``): with ``chunk_rows=1`` they fall into different batches.
    """
    expected = read_store(path).to_ndarray()
    with make_session(pg_url, db_schema, chunk_rows=1) as small:
        report = hdi_lab.ingest(provider="file", path=path, session=small)
        assert (report.fetched, report.inserted, report.updated, report.duplicates) == (
            len(expected),
            len(expected),
            0,
            0,
        )
        _check_market_frame(path, _query_file(small, path), _query_file(small, path, "float"))


def test_all_fixtures_together_then_query_each(session: HdiSession) -> None:
    """Every supported file in one ingest call (one chunk per file); each comes back unchanged."""
    report = hdi_lab.ingest(provider="file", path=SUPPORTED, session=session)
    assert len(report.chunks) == len(SUPPORTED)
    assert report.fetched == report.inserted == sum(len(read_store(p).to_ndarray()) for p in SUPPORTED)
    for path in MARKET:
        _check_market_frame(path, _query_file(session, path), _query_file(session, path, "float"))


def test_query_in_another_schema_sees_nothing(session: HdiSession, pg_url: str) -> None:
    path = fixture_files("trades")[0]
    hdi_lab.ingest(provider="file", path=path, session=session)
    other = session.schema + "_b"
    try:
        with make_session(pg_url, other) as s2:
            assert_nothing_written(s2)
    finally:
        drop_schema(pg_url, other)


def test_same_timestamp_trades_keep_vendor_order(session: HdiSession, tmp_path: Path) -> None:
    """Thousands of trades sharing a nanosecond come back in file order (dup_idx keeps them apart)."""
    n = 3000
    rec = empty_records("trades", n)
    t0 = pd.Timestamp("2024-01-02 10:00", tz="UTC").value
    rec["publisher_id"], rec["instrument_id"] = 1, 7
    rec["ts_event"] = t0 + (np.arange(n) // 1000) * 1000  # three timestamps, 1000 trades each
    rec["ts_recv"] = rec["ts_event"] + 100
    rec["price"] = (4000 + np.arange(n) % 7) * 1_000_000_000
    rec["size"], rec["sequence"] = np.arange(n) + 1, np.arange(n)
    rec["action"], rec["side"] = b"T", np.where(np.arange(n) % 2, b"B", b"A")
    day = pd.Timestamp("2024-01-02", tz="UTC")
    path = tmp_path / "same_ts.trades.dbn.zst"
    path.write_bytes(
        encode_dbn(
            dataset="GLBX.MDP3",
            schema="trades",
            stype_in="raw_symbol",
            start=day,
            end=day + pd.Timedelta(days=1),
            symbols=["XTEST"],
            mappings={"XTEST": [(day.date(), (day + pd.Timedelta(days=1)).date(), 7)]},
            records=rec,
        )
    )
    report = hdi_lab.ingest(provider="file", path=path, session=session)
    assert (report.fetched, report.inserted, report.duplicates) == (n, n, 0)
    frame = hdi_lab.query("trades", ["XTEST"], day, day + pd.Timedelta(days=1), price_type="fixed", session=session)
    np.testing.assert_array_equal(frame["sequence"].to_numpy(), rec["sequence"].astype(np.int64))
    np.testing.assert_array_equal(frame["size"].to_numpy(), rec["size"].astype(np.int64))
    np.testing.assert_array_equal(index_ns(frame), rec["ts_event"].astype(np.int64))
    assert list(frame["side"]) == [s.decode() for s in rec["side"]]


def test_file_replaced_during_an_ingest_is_refused_and_loads_after_restoring(
    session: HdiSession, tmp_path: Path
) -> None:
    """The ingest-log key must describe exactly the bytes loaded: a file replaced between planning and
    loading fails (nothing of it stored, no log row); restored, a re-run stores every original row."""
    sources = {f.parent.name: f for f in fixture_files("trades")}  # EQUS.MINI, GLBX.MDP3, XNAS.ITCH
    folder = tmp_path / "in"
    folder.mkdir()
    files = [folder / f"{i}-{name}.trades.dbn.zst" for i, name in enumerate(sorted(sources))]
    for f, name in zip(files, sorted(sources), strict=True):
        f.write_bytes(sources[name].read_bytes())
    original = files[2].read_bytes()
    expected = sum(len(read_store(f).to_ndarray()) for f in files)

    def swap(event: Progress) -> None:
        if event.done == 1:  # the first file is loaded, the third not yet read
            files[2].write_bytes(files[0].read_bytes())

    with pytest.raises(DataFormatError, match="changed while it was being ingested") as info:
        hdi_lab.ingest(provider="file", path=folder, session=session, progress=swap)
    assert files[2].name in str(info.value) and "re-run" in str(info.value)
    logged = hdi_lab.sql("SELECT source FROM ingest_log ORDER BY id", session=session)["source"].tolist()
    assert logged == [str(files[0].resolve()), str(files[1].resolve())]
    assert row_counts(session)["quarantine"] == 0

    files[2].write_bytes(original)
    report = hdi_lab.ingest(provider="file", path=folder, session=session)
    assert report.chunks_skipped == 2 and report.inserted == len(read_store(files[2]).to_ndarray())
    assert row_counts(session)["trades"] == expected
    assert row_counts(session)["quarantine"] == 0
