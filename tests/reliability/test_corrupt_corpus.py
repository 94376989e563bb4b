"""The corrupt-file corpus, generated from the shared Databento fixtures (never copied into the project).

Every variant is ingested through the API and through ``hdi ingest`` into a fresh schema. A file that is
not whole, valid DBN fails with ``DataFormatError`` naming it (CLI: one ``hdi: error:`` line, exit 1) and
stores nothing: no row, no ingest-log row, no quarantine row. A file whose records decode but break a
rule stores the others and quarantines those with the rule and a reason. Never a traceback, never a
silently partial load.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zstandard
from conftest import fixture_files
from helpers import assert_nothing_written, decompressed, make_session, row_counts, run_cli

import hdi_lab
from hdi_lab.dbn import INT64_MAX
from hdi_lab.dbn.writer import record_dtype
from hdi_lab.errors import DataFormatError, HdiError
from hdi_lab.schemas import Schema

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

FIXTURES = {
    s: next(f for f in fixture_files(s) if f.parent.name == "GLBX.MDP3") for s in ("trades", "ohlcv-1m", "definition")
}
TRADES_ZST = FIXTURES["trades"].read_bytes()
TRADES = decompressed(FIXTURES["trades"])  # 4 trades of 48 bytes after the metadata
BARS = decompressed(FIXTURES["ohlcv-1m"])  # 4 one-minute bars of 56 bytes
DEFINITION = decompressed(FIXTURES["definition"])  # 1 instrument definition


def _header(raw: bytes) -> int:
    """Length of the metadata block: 8-byte prefix plus the length it gives."""
    return 8 + int.from_bytes(raw[4:8], "little")


H = _header(TRADES)
REC = record_dtype(Schema.TRADES).itemsize
#: 8,000 trades (the fixture's 4, tiled): its zstd stream is longer than one 128 KiB zstd block
BIG = TRADES[:H] + TRADES[H:] * 2000
BAR = record_dtype(Schema.OHLCV_1M).itemsize


def zst(raw: bytes) -> bytes:
    """A complete zstd frame (with checksum, as Databento writes)."""
    return zstandard.ZstdCompressor(write_checksum=True).compress(raw)


def block_flushed(raw: bytes) -> bytes:
    """A zstd stream flushed at a block boundary and never finished, as a crashed writer leaves it."""
    c = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    return c.compress(raw) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


def flip(raw: bytes, offset: int, value: int | None = None) -> bytes:
    """``raw`` with the byte at ``offset`` inverted (or set to ``value``)."""
    out = bytearray(raw)
    out[offset] = out[offset] ^ 0xFF if value is None else value
    return bytes(out)


def with_records(raw: bytes, schema: Schema, change: Callable[[np.ndarray], None]) -> bytes:
    """``raw`` with its records decoded, changed in place by ``change``, and encoded again."""
    h = _header(raw)
    records = np.frombuffer(raw[h:], dtype=record_dtype(schema)).copy()
    change(records)
    return raw[:h] + records.tobytes()


def _set(field: str, value: int, index: int = 1) -> Callable[[np.ndarray], None]:
    def change(records: np.ndarray) -> None:
        records[field][index] = value

    return change


def _swap_high_low(records: np.ndarray) -> None:
    records["high"][2], records["low"][2] = records["low"][2], records["high"][2]


@dataclass(frozen=True)
class Case:
    name: str  # the file name: the suffix decides plain or zstd to the user, never to the decoder
    data: bytes
    quarantined: dict[str, int] | None = None  # rule -> count; None: the whole file is refused
    stored: int = 0  # rows kept when records are quarantined (or when the file is valid)
    schema: str | None = None  # --schema asked for


def corpus() -> dict[str, Case]:
    t = "t.trades.dbn"
    return {
        # truncated plain DBN: inside the prefix, the metadata, a record; a cut at a record boundary is a
        # valid shorter stream (plain DBN has no end marker), so it is not in this list
        **{f"plain-cut-at-{n}": Case(t, TRADES[:n]) for n in (3, 8, 40, H - 1)},
        **{f"plain-cut-record-{k}+{b}": Case(t, TRADES[: H + k * REC + b]) for k, b in ((0, 1), (0, 47), (2, 20))},
        # zstd: the file cut short at many offsets (frame header, first block, checksum)
        **{f"zst-cut-at-{n}": Case(t + ".zst", TRADES_ZST[:n]) for n in (4, 12, len(TRADES_ZST) // 2)},
        "zst-cut-checksum": Case(t + ".zst", TRADES_ZST[:-4]),
        "zst-cut-last-byte": Case(t + ".zst", TRADES_ZST[:-1]),
        # a complete zstd frame around a plain stream cut inside the metadata / a record
        "zst-frame-of-cut-metadata": Case(t + ".zst", zst(TRADES[:100])),
        "zst-frame-of-cut-record": Case(t + ".zst", zst(TRADES[: H + REC + 30])),
        # a zstd stream flushed at a block boundary between records, the frame never finished
        **{f"zst-block-flushed-{k}-records": Case(t + ".zst", block_flushed(TRADES[: H + k * REC])) for k in (0, 2, 4)},
        # ... past the first 128 KiB block, so the metadata decodes and only the records' reader meets the end
        **{
            f"zst-big-block-flushed-{k}-records": Case(t + ".zst", block_flushed(BIG[: H + k * REC]))
            for k in (3000, 8000)
        },
        "zst-big-cut-checksum": Case(t + ".zst", zst(BIG)[:-4]),
        # flipped bytes
        "magic": Case(t, flip(TRADES, 0)),
        "version-0": Case(t, flip(TRADES, 3, 0)),
        "version-9": Case(t, flip(TRADES, 3, 9)),
        "metadata-length-huge": Case(t, flip(TRADES, 7)),
        "metadata-length-short": Case(t, TRADES[:4] + (H - 8 - 16).to_bytes(4, "little") + TRADES[8:]),
        "metadata-schema": Case(t, flip(TRADES, 24)),
        "record-length-0": Case(t, flip(TRADES, H + REC, 0)),
        "record-length-short": Case(t, flip(TRADES, H + REC, REC // 4 - 2)),
        "record-length-long": Case(t, flip(TRADES, H + 2 * REC, 0xFF)),
        "record-rtype-ohlcv": Case(t, flip(TRADES, H + 2 * REC + 1, 0x21)),
        "record-rtype-mbo": Case(t, flip(TRADES, H + 3 * REC + 1, 0xA0)),
        "zst-payload-byte": Case(t + ".zst", flip(TRADES_ZST, len(TRADES_ZST) // 2)),
        "zst-checksum-byte": Case(t + ".zst", flip(TRADES_ZST, len(TRADES_ZST) - 1)),
        "zst-bars-payload-byte": Case("b.ohlcv-1m.dbn.zst", flip(zst(BARS), len(zst(BARS)) // 2)),
        # not DBN at all
        "empty-zst": Case(t + ".zst", b""),
        "empty-plain": Case(t, b""),
        "text": Case(t, b"ts_event,price,size\n2024-01-02T14:30:00Z,4800.25,1\n"),
        "text-as-zst": Case(t + ".zst", b"ts_event,price,size\n2024-01-02T14:30:00Z,4800.25,1\n"),
        "zeros": Case(t, bytes(4096)),
        "gzip-as-zst": Case(t + ".zst", gzip.compress(TRADES)),
        "gzip-as-plain": Case(t, gzip.compress(TRADES)),
        # wrong assembly of valid parts
        "two-files-plain": Case(t, TRADES + TRADES),
        "two-files-zst": Case(t + ".zst", TRADES_ZST + TRADES_ZST),
        "trailing-garbage-zst": Case(t + ".zst", TRADES_ZST + b"garbage"),
        "trailing-bytes-plain": Case(t, TRADES + b"\x00" * 5),
        "trades-metadata-bar-records": Case(t, TRADES[:H] + BARS[_header(BARS) :]),
        "definition-cut-in-record": Case("d.definition.dbn.zst", zst(DEFINITION[:-100])),
        "definition-renamed-as-trades": Case("test_data.trades.dbn.zst", zst(DEFINITION), schema="trades"),
        # records that decode but are invalid: quarantined with their rule, the others stored
        "trade-price-zero": Case(t, with_records(TRADES, Schema.TRADES, _set("price", 0)), {"price_nonpositive": 1}, 3),
        "trade-price-undefined": Case(
            t + ".zst", zst(with_records(TRADES, Schema.TRADES, _set("price", INT64_MAX))), {"price_undefined": 1}, 3
        ),
        "trade-size-zero": Case(t, with_records(TRADES, Schema.TRADES, _set("size", 0, 3)), {"size_nonpositive": 1}, 3),
        "trade-outside-range": Case(
            t, with_records(TRADES, Schema.TRADES, _set("ts_recv", 2**62)), {"ts_outside_request": 1}, 3
        ),
        "trade-unknown-instrument": Case(
            t, with_records(TRADES, Schema.TRADES, _set("instrument_id", 4_000_000_000)), {"unknown_instrument": 1}, 3
        ),
        "bar-high-below-low": Case(
            "b.ohlcv-1m.dbn", with_records(BARS, Schema.OHLCV_1M, _swap_high_low), {"ohlc_inconsistent": 1}, 3
        ),
        "bar-misaligned": Case(
            "b.ohlcv-1m.dbn.zst", zst(with_records(BARS, Schema.OHLCV_1M, _set("ts_event", 1))), {"ts_misaligned": 1}, 3
        ),
    }


CORPUS = corpus()


def _quarantine_rows(session: hdi_lab.HdiSession) -> list[tuple[str, str]]:
    df = hdi_lab.sql(f'SELECT rule, reason FROM "{session.schema}".quarantine ORDER BY id', session=session)
    return list(zip(df["rule"], df["reason"], strict=True))


@pytest.mark.parametrize("case_id", list(CORPUS))
def test_corrupt_file(case_id: str, pg_url: str, db_schema: str, hdi_env: dict[str, str], tmp_path: Path) -> None:
    case = CORPUS[case_id]
    path = tmp_path / case.name
    path.write_bytes(case.data)
    argv = ["ingest", str(path), "--quiet", *(["--schema", case.schema] if case.schema else [])]
    with make_session(pg_url, db_schema) as session:
        if case.quarantined is None:
            error = DataFormatError if case.schema is None else HdiError
            with pytest.raises(error) as info:
                hdi_lab.ingest(provider="file", path=path, schema=case.schema, session=session)
            assert path.name in str(info.value) and "Traceback" not in str(info.value)
            assert_nothing_written(session)
            code, out, err = run_cli(argv)
            assert code == 1, (out, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("hdi: error: ") and path.name in lines[0], err
            assert_nothing_written(session)
            return
        report = hdi_lab.ingest(provider="file", path=path, session=session)
        assert (report.fetched, report.inserted, report.quarantined) == (
            case.stored + sum(case.quarantined.values()),
            case.stored,
            sum(case.quarantined.values()),
        )
        rows = _quarantine_rows(session)
        assert sorted(rule for rule, _ in rows) == sorted(r for r, n in case.quarantined.items() for _ in range(n))
        assert all(reason.strip() for _, reason in rows)
        counts = row_counts(session)
        assert counts["ingest_log"] == 1
        assert counts[Schema(path.name.split(".")[1]).value.replace("-", "_")] == case.stored


def test_corpus_is_broad() -> None:
    assert len(CORPUS) >= 40
