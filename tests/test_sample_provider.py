"""The DBN encoder and the offline sample provider."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import itertools
import re
from pathlib import Path

import databento as db
import databento_dbn as dbn
import numpy as np
import pandas as pd
import pytest

from hdi_lab.dbn import writer as dbn_writer
from hdi_lab.dbn.writer import RTYPES, UNDEF_PRICE, empty_records, encode_dbn, record_dtype
from hdi_lab.errors import ValidationError
from hdi_lab.providers import sample
from hdi_lab.providers.base import Provider
from hdi_lab.providers.sample import SampleProvider
from hdi_lab.schemas import ONLY_FROM, Chunk, IngestRequest, Schema, SType

pytestmark = pytest.mark.unit

FIXTURES = Path("/work/shared/fixtures/databento")
ES_H, ES_M, NQ_H, ES_U, ES_Z, AAPL = 400001, 400002, 400003, 400005, 400006, 500001
BARS = [Schema.OHLCV_1S, Schema.OHLCV_1M, Schema.OHLCV_1H, Schema.OHLCV_1D]
#: the schemas Databento (and so the sample provider) serves: all but ohlcv-5s, IB's 5-second bars
DATABENTO_SCHEMAS = [s for s in Schema if s not in ONLY_FROM]


def utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC").as_unit("ns")


def request(
    schema: Schema,
    symbols: tuple[str, ...],
    start: str,
    end: str,
    stype_in: SType = SType.RAW_SYMBOL,
    dataset: str | None = None,
) -> IngestRequest:
    return IngestRequest(
        provider="sample",
        schema=schema,
        symbols=symbols,
        stype_in=stype_in,
        start=utc(start),
        end=utc(end),
        dataset=dataset,
    )


def one_chunk(chunks: list[Chunk]) -> Chunk:
    """All planned chunks merged into one multi-day chunk."""
    return dataclasses.replace(chunks[0], start=chunks[0].start, end=chunks[-1].end, key="merged")


def fetch(provider: SampleProvider, chunk: Chunk) -> tuple[db.DBNStore, np.ndarray]:
    stores = list(provider.fetch(chunk))
    assert len(stores) == 1
    return stores[0], stores[0].to_ndarray().reshape(-1)  # an empty store gives shape (0, 1)


def fetch_all(provider: SampleProvider, chunks: list[Chunk]) -> np.ndarray:
    return np.concatenate([fetch(provider, c)[1] for c in chunks])


# --- the encoder -------------------------------------------------------------------------------


def crafted(schema: Schema, n: int = 5) -> np.ndarray:
    rec = empty_records(schema, n)
    rec["publisher_id"], rec["instrument_id"] = 1, ES_H
    rec["ts_event"] = utc("2024-01-02").value + np.arange(n) * 1_000_000_000
    names = rec.dtype.names or ()
    for field in ("open", "high", "low", "close", "price"):
        if field in names:
            rec[field] = 4_800_250_000_000
    if "raw_symbol" in names:
        rec["raw_symbol"] = b"ESH4"
    return rec


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("schema", DATABENTO_SCHEMAS)
def test_encode_dbn_round_trips_records_and_metadata(schema: Schema, compress: bool) -> None:
    rec = crafted(schema)
    jan = [dt.date(2024, 1, d) for d in (2, 3, 4)]
    maps = {"ES.c.0": [(jan[0], jan[1], ES_H), (jan[1], jan[2], ES_M)]}
    data = encode_dbn(
        dataset="GLBX.MDP3",
        schema=schema,
        stype_in=SType.CONTINUOUS,
        start=utc("2024-01-02"),
        end=utc("2024-01-04"),
        symbols=["ES.c.0"],
        mappings=maps,
        records=rec,
        compress=compress,
    )
    assert data[:4] == (b"\x28\xb5\x2f\xfd" if compress else b"DBN\x03")
    store = db.DBNStore.from_bytes(io.BytesIO(data))
    out = store.to_ndarray()
    assert out.dtype == rec.dtype == record_dtype(schema)
    assert out.tobytes() == rec.tobytes()
    meta = store.metadata
    assert (meta.version, meta.dataset, str(meta.schema)) == (3, "GLBX.MDP3", schema.value)
    assert str(meta.stype_in) == "continuous"
    assert str(meta.stype_out) == "instrument_id"
    assert (meta.start, meta.end) == (utc("2024-01-02").value, utc("2024-01-04").value)
    assert meta.symbols == ["ES.c.0"]
    assert meta.mappings == {
        "ES.c.0": [
            {"start_date": dt.date(2024, 1, 2), "end_date": dt.date(2024, 1, 3), "symbol": str(ES_H)},
            {"start_date": dt.date(2024, 1, 3), "end_date": dt.date(2024, 1, 4), "symbol": str(ES_M)},
        ]
    }


def test_five_second_bars_travel_as_dbn_that_names_no_schema() -> None:
    """DBN has no 5-second schema: ohlcv-5s streams say none (DBN's "mixed"), their records carry rtype 0x11
    (DBN's generic OHLCV), and the decoder is told the schema; the real databento client reads them unchanged."""
    from hdi_lab.dbn import decode, store_from_bytes
    from hdi_lab.dbn.live import decode_live
    from hdi_lab.errors import DataFormatError

    rec = empty_records(Schema.OHLCV_5S, 3)
    rec["instrument_id"], rec["ts_event"] = 265598, [5_000_000_000 * k for k in range(3)]
    rec["open"], rec["high"], rec["low"], rec["close"], rec["volume"] = 1, 3, 1, 2, [10, 11, 12]
    data = encode_dbn(
        dataset="IB", schema=Schema.OHLCV_5S, stype_in="raw_symbol", start=0, end=15 * 10**9, symbols=["AAPL"],
        mappings={}, records=rec,
    )  # fmt: skip
    store = db.DBNStore.from_bytes(io.BytesIO(data))
    read = list(store)  # the client's record objects: OHLCV messages
    assert store.metadata.schema is None and [type(r) for r in read] == [dbn.OHLCVMsg] * 3
    assert b"".join(bytes(r) for r in read) == rec.tobytes() and RTYPES[Schema.OHLCV_5S] == 0x11
    assert [(d.schema, d.records.tobytes()) for d in decode(store, "x", schema=Schema.OHLCV_5S)] == [
        (Schema.OHLCV_5S, rec.tobytes())
    ]
    with pytest.raises(DataFormatError, match="mixes several schemas"):  # not told, or told another schema
        list(decode(store_from_bytes(data, "x"), "x", schema=Schema.OHLCV_1M))
    assert decode_live("IB", Schema.OHLCV_5S, "raw_symbol", 0, [rec.tobytes()], "live").tobytes() == rec.tobytes()
    with pytest.raises(DataFormatError, match=r"record 0 has rtype 32 .* not a ohlcv-5s record"):  # a 1s bar
        decode_live("IB", Schema.OHLCV_5S, "raw_symbol", 0, [empty_records(Schema.OHLCV_1S, 1).tobytes()], "live")


@pytest.mark.parametrize("schema", DATABENTO_SCHEMAS)
def test_encoder_round_trips_generated_records(schema: Schema) -> None:
    chunk = SampleProvider().plan(request(schema, ("ESH4", "ESM4"), "2024-01-08", "2024-01-09"))[0]
    rec = SampleProvider().records(chunk)
    assert len(rec) > 0
    data = encode_dbn(
        dataset="GLBX.MDP3",
        schema=schema,
        stype_in="raw_symbol",
        start=chunk.start,
        end=chunk.end,
        symbols=["ESH4", "ESM4"],
        mappings={},
        records=rec,
    )
    assert db.DBNStore.from_bytes(io.BytesIO(data)).to_ndarray().tobytes() == rec.tobytes()


@pytest.mark.parametrize("schema", DATABENTO_SCHEMAS)
def test_record_layout_matches_databento(schema: Schema) -> None:
    rec = empty_records(schema, 3)
    assert rec.dtype.itemsize == dbn_writer.RECORD_CLASSES[schema].size_hint
    assert set(rec["length"]) == {rec.dtype.itemsize // 4}
    assert set(rec["rtype"]) == {RTYPES[schema]}
    fixtures = sorted(FIXTURES.glob(f"*/test_data.{schema.value}.dbn.zst"))
    assert fixtures, f"no Databento fixture for {schema} under {FIXTURES} (every schema has one)"
    # not DBNStore.from_file: it leaves the file open (a ResourceWarning, an error here)
    real = db.DBNStore.from_bytes(io.BytesIO(fixtures[0].read_bytes())).to_ndarray()
    assert real.dtype == rec.dtype
    assert set(real["rtype"]) == {RTYPES[schema]}
    assert set(real["length"]) == {rec.dtype.itemsize // 4}


def test_empty_records_use_databento_sentinels() -> None:
    defn = empty_records(Schema.DEFINITION, 1)[0]
    for field in ("min_price_increment", "high_limit_price", "strike_price", "leg_price"):
        assert defn[field] == UNDEF_PRICE
    assert defn["expiration"] == defn["activation"] == dbn.UNDEF_TIMESTAMP
    stat = empty_records(Schema.STATISTICS, 1)[0]
    assert stat["price"] == UNDEF_PRICE and stat["quantity"] == dbn.UNDEF_STAT_QUANTITY
    assert stat["ts_ref"] == dbn.UNDEF_TIMESTAMP
    bar = empty_records(Schema.OHLCV_1M, 1)[0]
    assert bar["open"] == bar["volume"] == bar["instrument_id"] == 0


def test_encoder_can_write_garbage_on_purpose() -> None:
    data = encode_dbn(
        dataset="GLBX.MDP3",
        schema=Schema.TRADES,
        stype_in="raw_symbol",
        start=utc("2024-01-02"),
        end=utc("2024-01-03"),
        symbols=["ESH4"],
        mappings={},
        records=b"\x01\x02\x03",
        compress=False,
    )
    assert data.endswith(b"\x01\x02\x03")


# --- planning and errors -----------------------------------------------------------------------


def test_is_a_provider() -> None:
    assert isinstance(SampleProvider(), Provider)
    assert SampleProvider.name == "sample"


def test_plan_one_chunk_per_utc_day_with_deterministic_keys() -> None:
    chunks = SampleProvider().plan(request(Schema.OHLCV_1M, ("NQH4", "ESH4"), "2024-01-02", "2024-01-05"))
    assert [c.key for c in chunks] == [
        f"sample:GLBX.MDP3:ohlcv-1m:raw_symbol:ESH4,NQH4:2024-01-0{d}T00:00:00Z:2024-01-0{d + 1}T00:00:00Z"
        for d in (2, 3, 4)
    ]
    assert all(c.dataset == "GLBX.MDP3" and c.symbols == ("ESH4", "NQH4") for c in chunks)


def test_plan_clips_partial_days() -> None:
    chunks = SampleProvider().plan(request(Schema.TRADES, ("AAPL",), "2024-01-02T15:00", "2024-01-04T10:30"))
    assert [(c.start, c.end) for c in chunks] == [
        (utc("2024-01-02T15:00"), utc("2024-01-03")),
        (utc("2024-01-03"), utc("2024-01-04")),
        (utc("2024-01-04"), utc("2024-01-04T10:30")),
    ]
    assert chunks[0].key.endswith(":2024-01-02T15:00:00Z:2024-01-03T00:00:00Z")


def test_unknown_symbol_names_it_and_lists_known_ones() -> None:
    with pytest.raises(ValidationError, match="ESH5") as err:
        SampleProvider().plan(request(Schema.OHLCV_1M, ("ESH4", "ESH5"), "2024-01-02", "2024-01-03"))
    assert "ESH4" in str(err.value) and "AAPL" in str(err.value)


@pytest.mark.parametrize(
    ("symbol", "given", "right"),
    [
        ("ES.FUT", SType.RAW_SYMBOL, "parent"),
        ("ES.c.0", SType.RAW_SYMBOL, "continuous"),
        ("ESH4", SType.PARENT, "raw_symbol"),
    ],
)
def test_symbol_of_another_stype_suggests_it(symbol: str, given: SType, right: str) -> None:
    with pytest.raises(ValidationError, match=f"stype_in={right}"):
        SampleProvider().plan(request(Schema.OHLCV_1M, (symbol,), "2024-01-02", "2024-01-03", stype_in=given))


def test_dataset_is_inferred_and_checked() -> None:
    provider = SampleProvider()
    chunk = provider.plan(request(Schema.TRADES, ("AAPL",), "2024-01-02", "2024-01-03"))[0]
    assert chunk.dataset == "XNAS.ITCH"
    with pytest.raises(ValidationError, match="span several datasets"):
        provider.plan(request(Schema.TRADES, ("AAPL", "ESH4"), "2024-01-02", "2024-01-03"))
    with pytest.raises(ValidationError, match=re.escape("use dataset=XNAS.ITCH")):
        provider.plan(request(Schema.TRADES, ("AAPL",), "2024-01-02", "2024-01-03", dataset="GLBX.MDP3"))


def test_plan_requires_schema_symbols_and_range() -> None:
    provider = SampleProvider()
    with pytest.raises(ValidationError, match="schema is required"):
        provider.plan(
            IngestRequest(provider="sample", symbols=("ESH4",), start=utc("2024-01-02"), end=utc("2024-01-03"))
        )
    with pytest.raises(ValidationError, match="symbols are required"):
        provider.plan(request(Schema.TRADES, (), "2024-01-02", "2024-01-03"))
    with pytest.raises(ValidationError, match="start is required"):
        provider.plan(IngestRequest(provider="sample", schema=Schema.TRADES, symbols=("ESH4",)))


def test_universe_lists_symbols_and_ids() -> None:
    uni = SampleProvider.universe()
    raw = uni[uni["stype"] == "raw_symbol"].set_index("symbol")["instrument_id"].to_dict()
    assert raw == {
        "ESH4": 400001,
        "ESM4": 400002,
        "NQH4": 400003,
        "NQM4": 400004,
        "ESU4": 400005,
        "ESZ4": 400006,
        "NQU4": 400007,
        "NQZ4": 400008,
        "AAPL": 500001,
        "MSFT": 500002,
        "NVDA": 500003,
    }
    assert {"ES.FUT", "NQ.FUT", "ES.c.0", "NQ.c.0"} <= set(uni["symbol"])


# --- determinism and chunking ------------------------------------------------------------------


@pytest.mark.parametrize("schema", [Schema.OHLCV_1M, Schema.TRADES, Schema.STATISTICS, Schema.DEFINITION])
def test_records_do_not_depend_on_chunking(schema: Schema) -> None:
    provider = SampleProvider()
    chunks = provider.plan(request(schema, ("ESH4", "NQH4"), "2024-01-02", "2024-01-05"))
    per_day = fetch_all(provider, chunks)
    _, whole = fetch(provider, one_chunk(chunks))
    assert len(whole) > 0 and whole.tobytes() == per_day.tobytes()
    # a lone symbol gets exactly its own rows of the two-symbol request
    alone = fetch_all(provider, provider.plan(request(schema, ("ESH4",), "2024-01-02", "2024-01-05")))
    assert alone.tobytes() == whole[whole["instrument_id"] == ES_H].tobytes()


def test_partial_day_chunks_partition_the_day() -> None:
    provider = SampleProvider()
    full = fetch_all(provider, provider.plan(request(Schema.TBBO, ("AAPL",), "2024-01-03", "2024-01-04")))
    parts = [
        fetch(provider, c)[1]
        for r in (("2024-01-03", "2024-01-03T15:07:31.5"), ("2024-01-03T15:07:31.5", "2024-01-04"))
        for c in provider.plan(request(Schema.TBBO, ("AAPL",), *r))
    ]
    assert all(len(p) for p in parts)
    assert np.concatenate(parts).tobytes() == full.tobytes()


def test_output_is_deterministic_across_instances_and_caches() -> None:
    chunk = SampleProvider().plan(request(Schema.OHLCV_1S, ("ESH4",), "2024-01-03", "2024-01-04"))[0]
    first = SampleProvider().records(chunk)
    sample.clear_caches()
    assert SampleProvider().records(chunk).tobytes() == first.tobytes()


@pytest.mark.parametrize("schema", DATABENTO_SCHEMAS)
def test_estimate_is_exact_and_free(schema: Schema) -> None:
    provider = SampleProvider()
    for chunk in provider.plan(request(schema, ("ES.FUT",), "2024-03-14T12:00", "2024-03-16", SType.PARENT)):
        est = provider.estimate(chunk)
        assert est.cost_usd == 0.0
        assert est.records == len(fetch(provider, chunk)[1])


# --- symbology ---------------------------------------------------------------------------------


def test_continuous_rolls_from_h4_to_m4_on_march_14() -> None:
    provider = SampleProvider()
    chunks = provider.plan(request(Schema.OHLCV_1M, ("ES.c.0",), "2024-03-12", "2024-03-16", SType.CONTINUOUS))
    store, rec = fetch(provider, one_chunk(chunks))
    assert store.metadata.mappings == {
        "ES.c.0": [
            {"start_date": dt.date(2024, 3, 12), "end_date": dt.date(2024, 3, 14), "symbol": str(ES_H)},
            {"start_date": dt.date(2024, 3, 14), "end_date": dt.date(2024, 3, 16), "symbol": str(ES_M)},
        ]
    }
    roll = utc("2024-03-14").value
    assert set(rec["instrument_id"][rec["ts_event"] < roll]) == {ES_H}
    assert set(rec["instrument_id"][rec["ts_event"] >= roll]) == {ES_M}
    day_store, _ = fetch(provider, chunks[2])
    assert day_store.metadata.mappings["ES.c.0"] == [
        {"start_date": dt.date(2024, 3, 14), "end_date": dt.date(2024, 3, 15), "symbol": str(ES_M)}
    ]


def test_parent_maps_to_every_listed_contract() -> None:
    provider = SampleProvider()
    store, rec = fetch(
        provider, provider.plan(request(Schema.OHLCV_1M, ("ES.FUT",), "2024-01-02", "2024-01-03", SType.PARENT))[0]
    )
    listed = (ES_H, ES_M, ES_U, ES_Z)  # five quarters are listed; the sample has the four of 2024
    assert store.metadata.mappings["ES.FUT"] == [
        {"start_date": dt.date(2024, 1, 2), "end_date": dt.date(2024, 1, 3), "symbol": str(iid)} for iid in listed
    ]
    assert set(rec["instrument_id"]) == set(listed)
    front, *deferred = (np.sum(rec["volume"][rec["instrument_id"] == i]) for i in listed)
    assert all(front > 10 * back for back in deferred)  # the deferred contracts trade thinly


def test_metadata_describes_the_chunk() -> None:
    provider = SampleProvider(compress=True)
    chunk = provider.plan(request(Schema.TRADES, ("NVDA", "AAPL"), "2024-01-02T14:00", "2024-01-03"))[0]
    store, _ = fetch(provider, chunk)
    meta = store.metadata
    assert (meta.dataset, str(meta.schema), str(meta.stype_in), str(meta.stype_out)) == (
        "XNAS.ITCH",
        "trades",
        "raw_symbol",
        "instrument_id",
    )
    assert (meta.start, meta.end) == (chunk.start.value, chunk.end.value)
    assert meta.symbols == ["AAPL", "NVDA"]
    assert meta.mappings["AAPL"] == [
        {"start_date": dt.date(2024, 1, 2), "end_date": dt.date(2024, 1, 3), "symbol": str(AAPL)}
    ]


def test_expired_contract_is_not_found() -> None:
    provider = SampleProvider()
    chunk = provider.plan(request(Schema.TRADES, ("ESH4", "ESM4"), "2024-04-01", "2024-04-02"))[0]
    store, rec = fetch(provider, chunk)
    assert store.metadata.not_found == ["ESH4"] and "ESH4" not in store.metadata.mappings
    assert set(rec["instrument_id"]) == {ES_M}


# --- realism and validity ----------------------------------------------------------------------


@pytest.mark.parametrize("schema", BARS)
@pytest.mark.parametrize(("symbols", "tick"), [(("ESH4", "NQH4"), 250_000_000), (("AAPL", "NVDA"), 10_000_000)])
def test_bars_are_consistent_on_the_tick_grid_and_aligned(schema: Schema, symbols: tuple[str, ...], tick: int) -> None:
    provider = SampleProvider()
    chunks = provider.plan(request(schema, symbols, "2024-01-05", "2024-01-09"))  # Fri..Mon, over a weekend
    bars = fetch_all(provider, chunks)
    assert len(bars) > 0
    o, h, lo, c = (bars[f] for f in ("open", "high", "low", "close"))
    assert (lo > 0).all() and (lo <= np.minimum(o, c)).all() and (h >= np.maximum(o, c)).all()
    assert all((bars[f] % tick == 0).all() for f in ("open", "high", "low", "close"))
    assert (bars["volume"] > 0).all()
    assert (bars["ts_event"] % (schema.bar_seconds * 1_000_000_000) == 0).all()
    keys = list(zip(bars["ts_event"].tolist(), bars["instrument_id"].tolist(), strict=True))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert (bars["ts_event"] >= chunks[0].start.value).all()
    assert (bars["ts_event"] < chunks[-1].end.value).all()


def test_price_levels_are_realistic() -> None:
    provider = SampleProvider()
    for sym, lo, hi in (("ESH4", 4300, 5300), ("NQH4", 15000, 18600), ("AAPL", 150, 220), ("NVDA", 400, 600)):
        bars = fetch_all(provider, provider.plan(request(Schema.OHLCV_1D, (sym,), "2024-01-01", "2024-03-01")))
        assert lo < bars["close"].min() / 1e9 and bars["close"].max() / 1e9 < hi, sym


def test_sessions_and_weekends() -> None:
    provider = SampleProvider()
    es = fetch_all(provider, provider.plan(request(Schema.OHLCV_1M, ("ESH4",), "2024-01-05", "2024-01-09")))
    minute = (es["ts_event"] // 60_000_000_000) % 1440
    assert not ((minute >= 22 * 60) & (minute < 23 * 60)).any()  # daily break
    days = pd.to_datetime(es["ts_event"].astype(np.int64), utc=True).day_of_week
    assert 5 not in set(days)  # Saturday
    assert set(minute[days == 6]) == set(range(23 * 60, 24 * 60))  # Sunday evening open
    aapl = fetch_all(provider, provider.plan(request(Schema.OHLCV_1M, ("AAPL",), "2024-01-05", "2024-01-09")))
    am = (aapl["ts_event"] // 60_000_000_000) % 1440
    assert am.min() == 14 * 60 + 30 and am.max() == 20 * 60 + 59
    sat = provider.plan(request(Schema.TRADES, ("AAPL",), "2024-01-06", "2024-01-07"))
    assert len(sat) == 1 and len(fetch(provider, sat[0])[1]) == 0


def test_coarser_bars_aggregate_the_minutes() -> None:
    provider = SampleProvider()
    one_day = ("2024-01-03", "2024-01-04")
    m = fetch_all(provider, provider.plan(request(Schema.OHLCV_1M, ("ESH4",), *one_day)))
    d = fetch_all(provider, provider.plan(request(Schema.OHLCV_1D, ("ESH4",), *one_day)))
    assert d["volume"][0] == m["volume"].sum()
    assert d["high"][0] == m["high"].max() and d["low"][0] == m["low"].min()
    assert d["open"][0] == m["open"][0] and d["close"][0] == m["close"][-1]


@pytest.mark.parametrize("symbols", [("ESH4",), ("MSFT",)])
def test_tbbo_is_trades_plus_the_bbo(symbols: tuple[str, ...]) -> None:
    provider = SampleProvider()
    trades = fetch_all(provider, provider.plan(request(Schema.TRADES, symbols, "2024-01-03", "2024-01-04")))
    tbbo = fetch_all(provider, provider.plan(request(Schema.TBBO, symbols, "2024-01-03", "2024-01-04")))
    assert len(trades) > 1000
    for field in trades.dtype.names or ():
        if field not in ("length", "rtype"):
            assert (trades[field] == tbbo[field]).all(), field
    assert (tbbo["size"] > 0).all() and set(tbbo["action"]) == {b"T"} and set(tbbo["side"]) <= {b"A", b"B"}
    assert (tbbo["bid_px_00"] < tbbo["ask_px_00"]).all()
    hit = np.where(tbbo["side"] == b"B", tbbo["ask_px_00"], tbbo["bid_px_00"])
    assert (tbbo["price"] == hit).all()
    assert (tbbo["ts_recv"] > tbbo["ts_event"]).all()
    assert (tbbo["bid_ct_00"] >= 1).all() and (tbbo["bid_ct_00"] <= tbbo["bid_sz_00"]).all()


def test_statistics_are_plausible() -> None:
    provider = SampleProvider()
    st = fetch_all(provider, provider.plan(request(Schema.STATISTICS, ("ESH4",), "2024-01-08", "2024-01-09")))
    by_type = {int(t): st[st["stat_type"] == t] for t in set(st["stat_type"])}
    assert {1, 3, 4, 5, 6, 9} <= set(by_type)
    for t in (1, 3, 4, 5):
        assert (by_type[t]["quantity"] == dbn.UNDEF_STAT_QUANTITY).all()
        assert (by_type[t]["price"] % 250_000_000 == 0).all()
    for t in (6, 9):
        assert (by_type[t]["price"] == UNDEF_PRICE).all() and (by_type[t]["quantity"] > 0).all()
    assert by_type[5]["price"][0] >= by_type[4]["price"][0]
    assert (np.diff(st["ts_event"].astype(np.int64)) >= 0).all()


def test_definitions_one_per_instrument_per_day() -> None:
    provider = SampleProvider()
    chunks = provider.plan(request(Schema.DEFINITION, ("ES.FUT",), "2024-01-06", "2024-01-08", SType.PARENT))
    defs = fetch_all(provider, chunks)
    assert len(defs) == 2 * 4 and (defs["ts_recv"] % 86_400_000_000_000 == 0).all()
    esh4 = defs[defs["raw_symbol"] == b"ESH4"][0]
    assert esh4["instrument_id"] == ES_H and esh4["instrument_class"] == b"F"
    assert esh4["min_price_increment"] == 250_000_000 and esh4["currency"] == b"USD"
    assert esh4["expiration"] == utc("2024-03-15T13:30").value and esh4["asset"] == b"ES"
    stock = fetch_all(provider, provider.plan(request(Schema.DEFINITION, ("NVDA",), "2024-01-02", "2024-01-03")))
    assert stock["instrument_class"][0] == b"K" and stock["min_price_increment"][0] == 10_000_000


def test_sparse_schemas_are_chunked_by_month_dense_ones_by_day() -> None:
    provider = SampleProvider()
    daily = provider.plan(request(Schema.OHLCV_1D, ("ESH4",), "2024-01-15", "2024-03-10"))
    assert [(c.start.date().isoformat(), c.end.date().isoformat()) for c in daily] == [
        ("2024-01-15", "2024-02-01"),
        ("2024-02-01", "2024-03-01"),
        ("2024-03-01", "2024-03-10"),
    ]
    assert len(provider.plan(request(Schema.OHLCV_1M, ("ESH4",), "2024-01-15", "2024-03-10"))) == 55
    # a month chunk holds exactly the bars of its days taken one day at a time
    whole = np.concatenate([provider.records(c) for c in daily])
    days = pd.date_range("2024-01-15", "2024-03-10", freq="D", tz="UTC")
    one_by_one = np.concatenate(
        [provider.records(dataclasses.replace(daily[0], start=lo, end=hi)) for lo, hi in itertools.pairwise(days)]
    )
    assert len(whole) > 30 and (whole == one_by_one).all()


# --- the exchange calendars --------------------------------------------------------------------


def minute_bars(symbol: str, start: str, end: str) -> pd.DatetimeIndex:
    provider = SampleProvider()
    bars = fetch_all(provider, provider.plan(request(Schema.OHLCV_1M, (symbol,), start, end)))
    return pd.DatetimeIndex(pd.to_datetime(bars["ts_event"].astype(np.int64), utc=True))


def runs(stamps: pd.DatetimeIndex) -> list[tuple[str, str]]:
    """Contiguous runs of minute bars as (first bar, end of the last bar) in UTC."""
    if not len(stamps):
        return []
    breaks = np.flatnonzero(np.diff(stamps.asi8) != 60_000_000_000)
    starts, ends = np.r_[0, breaks + 1], np.r_[breaks, len(stamps) - 1]
    fmt = "%m-%d %H:%M"
    return [
        (stamps[a].strftime(fmt), (stamps[b] + pd.Timedelta(minutes=1)).strftime(fmt))
        for a, b in zip(starts, ends, strict=True)
    ]


@pytest.mark.parametrize("holiday", ["2024-01-15", "2024-03-29", "2024-07-04"])  # MLK day, Good Friday, July 4
def test_no_equity_bars_or_trades_on_holidays(holiday: str) -> None:
    provider = SampleProvider()
    end = str((pd.Timestamp(holiday) + pd.Timedelta(days=1)).date())
    for schema in (Schema.OHLCV_1M, Schema.OHLCV_1S, Schema.TRADES, Schema.STATISTICS):
        assert len(fetch_all(provider, provider.plan(request(schema, ("AAPL", "MSFT"), holiday, end)))) == 0


def test_equity_hours_follow_dst_and_early_closes() -> None:
    # 09:30-16:00 New York: EST (UTC-5) in January, EDT (UTC-4) from 2024-03-10; 13:00 close on July 3
    assert runs(minute_bars("AAPL", "2024-01-16", "2024-01-17")) == [("01-16 14:30", "01-16 21:00")]
    assert runs(minute_bars("AAPL", "2024-04-01", "2024-04-02")) == [("04-01 13:30", "04-01 20:00")]
    assert runs(minute_bars("NVDA", "2024-07-02", "2024-07-06")) == [
        ("07-02 13:30", "07-02 20:00"),
        ("07-03 13:30", "07-03 17:00"),
        ("07-05 13:30", "07-05 20:00"),
    ]
    provider = SampleProvider()
    st = fetch_all(provider, provider.plan(request(Schema.STATISTICS, ("AAPL",), "2024-07-03", "2024-07-04")))
    stamps = pd.to_datetime(st["ts_event"].astype(np.int64), utc=True).floor("min")
    assert list(zip(st["stat_type"], stamps.strftime("%H:%M"), strict=True)) == [(1, "13:30"), (11, "17:00")]


def test_cme_sessions_halt_and_holidays() -> None:
    # CME Globex: Sunday 17:00 Chicago opens Monday's session, a daily 16:00-17:00 CT halt (22:00-23:00 UTC in
    # winter, 21:00-22:00 in summer), MLK day closes at 12:00 CT and reopens at 17:00 for Tuesday
    assert runs(minute_bars("ESH4", "2024-01-12", "2024-01-17")) == [
        ("01-12 00:00", "01-12 22:00"),
        ("01-14 23:00", "01-15 18:00"),
        ("01-15 23:00", "01-16 22:00"),
        ("01-16 23:00", "01-17 00:00"),
    ]
    # DST from 2024-03-10; Good Friday 2024-03-29 closed from Thursday's 16:00 CT halt to Sunday 17:00 CT
    assert runs(minute_bars("ESM4", "2024-03-28", "2024-04-02")) == [
        ("03-28 00:00", "03-28 21:00"),
        ("03-31 22:00", "04-01 21:00"),
        ("04-01 22:00", "04-02 00:00"),
    ]
    assert (
        len(
            minute_bars("ESM4", "2023-12-25", "2023-12-26").intersection(
                pd.date_range("2023-12-25", "2023-12-25 17:00", freq="min", tz="UTC")
            )
        )
        == 0
    )  # Christmas: reopens 17:00 CT (23:00 UTC)


@pytest.mark.parametrize(("symbol", "calendar"), [("AAPL", "XNAS"), ("ESM4", "CMES")])
def test_every_bar_lies_in_a_session_and_full_sessions_are_complete(symbol: str, calendar: str) -> None:
    from hdi_lab.calendars import sessions, sessions_of

    stamps = minute_bars(symbol, "2023-12-18", "2024-06-18")
    found = sessions_of(calendar, stamps)
    assert found.notna().all()
    per_session = found.value_counts()
    expected = sessions(calendar, "2023-12-19", "2024-06-17")
    assert len(expected) > 100
    for row in expected.itertuples():
        # the session's minutes, less CME's daily 16:00-17:00 Chicago halt (the calendar does not know it)
        minutes = pd.date_range(row.open, row.close, freq="min", inclusive="left")
        halted = minutes.tz_convert("America/Chicago").hour == 16 if calendar == "CMES" else np.zeros(len(minutes))
        assert per_session[row.session] == len(minutes) - int(np.sum(halted)), row.session


def test_a_sunday_evening_bar_belongs_to_mondays_session() -> None:
    from hdi_lab.calendars import session_of

    first = minute_bars("ESM4", "2024-04-07", "2024-04-08")[0]
    assert first == utc("2024-04-07 22:00")  # 17:00 CDT
    assert session_of("CMES", first) == dt.date(2024, 4, 8)


# --- the 2024 quarterly cycle ------------------------------------------------------------------


def test_listing_rule_reproduces_databentos_definition() -> None:
    """The real ESH1 definition (vendor bytes): listed 2019-12-20 14:30 UTC (ESZ9's expiry, 09:30 EST),
    expiring 2021-03-19 13:30 UTC (09:30 EDT)."""
    data = (FIXTURES / "GLBX.MDP3" / "test_data.definition.dbn.zst").read_bytes()
    real = db.DBNStore.from_bytes(io.BytesIO(data)).to_ndarray()[0]
    assert real["raw_symbol"] == b"ESH1"
    activation, expiration = sample.quarterly_listing(2021, 3)
    assert (activation.value, expiration.value) == (int(real["activation"]), int(real["expiration"]))


@pytest.mark.parametrize(
    ("symbol", "iid", "activation", "expiration"),
    [
        ("ESH4", ES_H, "2022-12-16 14:30", "2024-03-15 13:30"),
        ("ESM4", ES_M, "2023-03-17 13:30", "2024-06-21 13:30"),
        ("ESU4", ES_U, "2023-06-16 13:30", "2024-09-20 13:30"),
        ("ESZ4", ES_Z, "2023-09-15 13:30", "2024-12-20 14:30"),  # December: 09:30 EST
        ("NQU4", 400007, "2023-06-16 13:30", "2024-09-20 13:30"),
        ("NQZ4", 400008, "2023-09-15 13:30", "2024-12-20 14:30"),
    ],
)
def test_contracts_trade_from_activation_to_expiration(symbol: str, iid: int, activation: str, expiration: str) -> None:
    provider = SampleProvider()
    first = minute_bars(symbol, activation[:10], str((utc(activation) + pd.Timedelta(days=1)).date()))
    assert first[0] == utc(activation)
    last = minute_bars(symbol, expiration[:10], str((utc(expiration) + pd.Timedelta(days=3)).date()))
    assert last[-1] == utc(expiration) - pd.Timedelta(minutes=1)
    defs = fetch_all(provider, provider.plan(request(Schema.DEFINITION, (symbol,), activation[:10], "2025-01-01")))
    assert set(defs["instrument_id"].tolist()) == {iid} and set(defs["raw_symbol"].tolist()) == {symbol.encode()}
    assert set(defs["activation"].tolist()) == {utc(activation).value}
    assert set(defs["expiration"].tolist()) == {utc(expiration).value}
    days = pd.to_datetime(defs["ts_event"].astype(np.int64), utc=True)
    assert (days.min(), days.max()) == (utc(activation).normalize(), utc(expiration).normalize())
    maturity = set(zip(defs["maturity_year"].tolist(), defs["maturity_month"].tolist(), strict=True))
    assert maturity == {(2024, {"H": 3, "M": 6, "U": 9, "Z": 12}[symbol[2]])}


def test_continuous_front_runs_through_the_2024_cycle() -> None:
    provider = SampleProvider()
    chunk = one_chunk(
        provider.plan(request(Schema.DEFINITION, ("NQ.c.0",), "2024-01-01", "2025-01-01", SType.CONTINUOUS))
    )
    store, rec = fetch(provider, chunk)
    ids = ("400003", "400004", "400007", "400008")  # NQH4, NQM4, NQU4, NQZ4: each rolls the day before expiry
    edges = [dt.date.fromisoformat(d) for d in ("2024-01-01", "2024-03-14", "2024-06-20", "2024-09-19", "2024-12-19")]
    assert store.metadata.mappings["NQ.c.0"] == [
        {"start_date": a, "end_date": b, "symbol": iid}
        for (a, b), iid in zip(itertools.pairwise(edges), ids, strict=True)
    ]
    assert store.metadata.partial == ["NQ.c.0"]  # no front after NQZ4's roll: the universe ends with 2024
    assert [str(i) for i in dict.fromkeys(rec["instrument_id"].tolist())] == list(ids)
