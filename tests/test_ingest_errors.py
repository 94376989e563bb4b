"""Bad input is refused with the right HdiError, a message naming the problem, and nothing half-written."""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from conftest import fixture_files
from helpers import (
    assert_nothing_written,
    decompressed,
    make_session,
    read_store,
    row_counts,
    run_cli,
    table_exists,
)

import hdi_lab
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import DataFormatError, IngestError, ValidationError
from hdi_lab.frontend.cli import main

pytestmark = pytest.mark.integration

TRADES = fixture_files("trades")[0]  # EQUS.MINI, 4 TradeMsg records of 48 bytes
GLBX_TRADES = next(f for f in fixture_files("trades") if f.parent.name == "GLBX.MDP3")
RECORD = 48
HOSTILE = "x'); drop table trades;--"
SAMPLE = dict(provider="sample", schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-03")


@pytest.fixture
def small_batches(pg_url: str, db_schema: str) -> Iterator[HdiSession]:
    """A session loading 2 records per batch, so a bad tail is found after a first batch was written."""
    with make_session(pg_url, db_schema, chunk_rows=2) as s:
        yield s


def _plain(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- bad files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, RECORD // 2, RECORD + 7], ids=["1-byte", "half-record", "record-and-a-bit"])
def test_truncated_dbn(small_batches: HdiSession, tmp_path: Path, cut: int) -> None:
    raw = decompressed(TRADES)
    path = _plain(tmp_path, "truncated.trades.dbn", raw[:-cut])
    with pytest.raises(DataFormatError, match="truncated") as info:
        hdi_lab.ingest(provider="file", path=path, session=small_batches)
    assert path.name in str(info.value)
    assert_nothing_written(small_batches)


def test_truncated_inside_metadata(session: HdiSession, tmp_path: Path) -> None:
    path = _plain(tmp_path, "header.dbn", decompressed(TRADES)[:40])
    with pytest.raises(DataFormatError, match="not a readable DBN file") as info:
        hdi_lab.ingest(provider="file", path=path, session=session)
    assert path.name in str(info.value)
    assert_nothing_written(session)


def test_truncated_zstd_stream(small_batches: HdiSession, tmp_path: Path) -> None:
    raw = decompressed(TRADES)
    comp = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(raw[:-10])
    path = _plain(tmp_path, "cut.trades.dbn.zst", comp)
    with pytest.raises(DataFormatError, match="truncated"):
        hdi_lab.ingest(provider="file", path=path, session=small_batches)
    assert_nothing_written(small_batches)


def _header_len(raw: bytes) -> int:
    return 8 + int.from_bytes(raw[4:8], "little")


def _unfinished_frame(raw: bytes) -> bytes:
    """``raw`` zstd-compressed and flushed at a block boundary, the frame never ended (a crashed writer)."""
    comp = zstandard.ZstdCompressor().compressobj()
    return comp.compress(raw) + comp.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


# 4,000 of the fixture's real trades (192 KB): past zstd's 128 KB block, so the header decodes and the
# reader used to return the flushed records as if the file ended there
LARGE = 1_000


@pytest.mark.parametrize(
    ("repeat", "k"),
    [(1, 0), (1, 2), (LARGE, 3_000), (LARGE, 4 * LARGE - 1)],
    ids=["header-only", "2-of-4", "3000-of-4000", "3999-of-4000"],
)
def test_unfinished_zstd_frame_is_truncated(pg_url: str, db_schema: str, tmp_path: Path, repeat: int, k: int) -> None:
    """Whole records then a block flush and no frame end: an error, nothing stored (was: k records loaded)."""
    raw = decompressed(GLBX_TRADES)
    head = _header_len(raw)
    stream = raw[:head] + raw[head:] * repeat
    path = _plain(tmp_path, "unfinished.trades.dbn.zst", _unfinished_frame(stream[: head + k * RECORD]))
    with make_session(pg_url, db_schema, chunk_rows=max(2, k // 3)) as session:  # a few batches load first
        with pytest.raises(DataFormatError, match="truncated") as info:
            hdi_lab.ingest(provider="file", path=path, session=session)
        assert path.name in str(info.value) and "re-download" in str(info.value)
        assert_nothing_written(session)


def test_unfinished_zstd_frame_in_the_cli_is_one_line(
    hdi_env: dict[str, str], session: HdiSession, tmp_path: Path
) -> None:
    raw = decompressed(GLBX_TRADES)
    head = _header_len(raw)
    path = _plain(
        tmp_path, "unfinished.trades.dbn.zst", _unfinished_frame(raw[:head] + raw[head:] * LARGE)
    )  # the default batch size
    code, out, err = run_cli(["ingest", str(path)])
    assert code == 1 and out == ""
    assert err.startswith("hdi: error: ") and "truncated" in err and err.count("\n") == 1, err
    assert_nothing_written(session)


@pytest.mark.parametrize("frames", [2, 3])
def test_concatenated_zstd_frames_load_every_record(small_batches: HdiSession, tmp_path: Path, frames: int) -> None:
    """Several complete frames are one valid stream (zstd allows it): every record of every frame loads."""
    raw = decompressed(GLBX_TRADES)
    head = _header_len(raw)
    stream = raw[:head] + raw[head:] * 3  # 12 records
    cuts = [*[0, head + RECORD // 2, head + 5 * RECORD + 7, len(stream)][:frames], len(stream)]
    data = b"".join(
        zstandard.ZstdCompressor(write_checksum=True).compress(stream[a:b]) for a, b in itertools.pairwise(cuts)
    )
    path = _plain(tmp_path, "frames.trades.dbn.zst", data)
    report = hdi_lab.ingest(provider="file", path=path, session=small_batches)
    assert report.fetched == 12 and report.inserted + report.quarantined == 12
    assert row_counts(small_batches)["trades"] == report.inserted > 0


def test_corrupted_compressed_bytes(small_batches: HdiSession, tmp_path: Path) -> None:
    """A flipped byte in the zstd payload fails the frame checksum of Databento's file."""
    data = bytearray(TRADES.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path = _plain(tmp_path, "flipped.trades.dbn.zst", bytes(data))
    with pytest.raises(DataFormatError) as info:
        hdi_lab.ingest(provider="file", path=path, session=small_batches)
    assert path.name in str(info.value)
    assert_nothing_written(small_batches)


@pytest.mark.parametrize("version", [0, 9])  # DBN versions 1 to 3 exist; the decoder accepts 0
def test_corrupted_metadata_version(session: HdiSession, tmp_path: Path, version: int) -> None:
    raw = bytearray(decompressed(TRADES))
    raw[3] = version  # DBN version byte
    path = _plain(tmp_path, "version.dbn", bytes(raw))
    with pytest.raises(DataFormatError, match="not a readable DBN file"):
        hdi_lab.ingest(provider="file", path=path, session=session)
    assert_nothing_written(session)


@pytest.mark.parametrize("field", ["length", "rtype"])
def test_corrupted_record_header(small_batches: HdiSession, tmp_path: Path, field: str) -> None:
    """The 3rd record's header says it is not a 48-byte trade: the stream is corrupt, nothing is stored."""
    raw = bytearray(decompressed(TRADES))
    first = len(raw) - 4 * RECORD
    offset = first + 2 * RECORD + (0 if field == "length" else 1)
    raw[offset] = 0xFF if field == "length" else 0xA0  # length 0xFF*4 bytes / rtype MBO
    path = _plain(tmp_path, f"bad-{field}.trades.dbn", bytes(raw))
    with pytest.raises(DataFormatError) as info:
        hdi_lab.ingest(provider="file", path=path, session=small_batches)
    assert path.name in str(info.value)
    assert_nothing_written(small_batches)


def test_text_file(session: HdiSession, tmp_path: Path) -> None:
    path = _plain(tmp_path, "prices.dbn", b"ts_event,price\n2024-01-02T00:00:00Z,4800.25\n")
    with pytest.raises(DataFormatError, match="not a readable DBN file") as info:
        hdi_lab.ingest(provider="file", path=path, session=session)
    assert str(path) in str(info.value)
    assert "compression format of prices.dbn" in str(info.value) and "BytesIO" not in str(info.value)
    assert_nothing_written(session)


def test_empty_file(session: HdiSession, tmp_path: Path) -> None:
    path = _plain(tmp_path, "empty.dbn.zst", b"")
    with pytest.raises(DataFormatError, match="empty"):
        hdi_lab.ingest(provider="file", path=path, session=session)
    assert_nothing_written(session)


def test_missing_path(session: HdiSession, tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "data.dbn.zst"
    with pytest.raises(ValidationError, match="does not exist") as info:
        hdi_lab.ingest(provider="file", path=path, session=session)
    assert str(path) in str(info.value)
    assert_nothing_written(session)


def test_file_with_other_schema_than_requested(session: HdiSession) -> None:
    with pytest.raises(ValidationError, match="not the requested tbbo"):
        hdi_lab.ingest(provider="file", path=TRADES, schema="tbbo", session=session)
    with pytest.raises(ValidationError, match="start/end"):
        hdi_lab.ingest(provider="file", path=TRADES, start="2023-03-28", end="2023-03-29", session=session)
    assert_nothing_written(session)


def _three_files(folder: Path) -> tuple[Path, Path, Path]:
    """A good file, a truncated one (found bad only when fetched) and another good one, in that order."""
    folder.mkdir()
    return (
        _plain(folder, "a_good.trades.dbn", decompressed(GLBX_TRADES)),
        _plain(folder, "b_bad.trades.dbn", decompressed(TRADES)[:-5]),
        _plain(folder, "c_good.trades.dbn", decompressed(TRADES)),
    )


def _logged(session: HdiSession) -> list[str]:
    log = hdi_lab.sql(f'SELECT source FROM "{session.schema}".ingest_log ORDER BY id', session=session)
    return list(log["source"])


def test_folder_with_one_bad_file_loads_the_others_and_reports_each(small_batches: HdiSession, tmp_path: Path) -> None:
    """Chunks are files: each good one commits whole (also those after the bad one), the truncated one
    leaves nothing, and the run fails saying what was and was not loaded."""
    good, bad, later = _three_files(tmp_path / "drop")
    with pytest.raises(IngestError, match="b_bad") as info:
        hdi_lab.ingest(provider="file", path=tmp_path / "drop", session=small_batches)
    message = str(info.value)
    assert message.startswith("1 of 3 files failed: ") and "truncated" in message
    assert message.endswith(
        "; the other 2 were loaded; fix or remove the failed file and re-run (what is stored is skipped)"
    )
    assert isinstance(info.value, DataFormatError) and isinstance(info.value.__cause__, DataFormatError)
    report = info.value.report
    assert [c.outcome.split(":")[0] for c in report.chunks] == ["loaded", "failed", "loaded"]
    assert report.failed[0].chunk.path == str(bad.resolve()) and report.failed[0].inserted == 0
    n = len(read_store(good).to_ndarray()) + len(read_store(later).to_ndarray())
    assert report.inserted == n and "1 failed" in str(report)
    counts = row_counts(small_batches)
    assert counts["trades"] == n and counts["ingest_log"] == 2 and counts["quarantine"] == 0
    assert _logged(small_batches) == [str(good.resolve()), str(later.resolve())]
    with pytest.raises(IngestError) as again:  # a re-run says the others are stored already
        hdi_lab.ingest(provider="file", path=tmp_path / "drop", session=small_batches)
    assert "the other 2 are stored (0 loaded now, 2 already done)" in str(again.value)
    bad.unlink()
    report = hdi_lab.ingest(provider="file", path=tmp_path / "drop", session=small_batches)
    assert report.chunks_skipped == 2 and row_counts(small_batches)["trades"] == n


def test_mixed_schema_files_are_labelled_with_every_schema(session: HdiSession, tmp_path: Path) -> None:
    bars = next(f for f in fixture_files("ohlcv-1m") if f.parent.name == "GLBX.MDP3")
    report = hdi_lab.ingest(provider="file", path=[GLBX_TRADES, bars], session=session)
    assert report.schema == "trades+ohlcv-1m" and str(report).startswith("file trades+ohlcv-1m: 2 chunks")
    assert row_counts(session)["trades"] > 0 and row_counts(session)["ohlcv_1m"] > 0


def test_cli_folder_with_one_bad_file_prints_each_outcome(
    hdi_env: dict[str, str], session: HdiSession, tmp_path: Path
) -> None:
    good, bad, later = _three_files(tmp_path / "drop")
    code, out, err = run_cli(["ingest", "--quiet", str(tmp_path / "drop")])
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("file trades: 3 chunks (0 already done, 1 failed), fetched ")
    assert lines[1].startswith(f"  loaded: {good.resolve()}: fetched ")
    assert lines[2].startswith(f"  failed: {bad.resolve()}: ") and "truncated" in lines[2]
    assert lines[3].startswith(f"  loaded: {later.resolve()}: fetched ")
    assert err.count("\n") == 1 and err.startswith("hdi: error: 1 of 3 files failed: ")
    assert err.rstrip().endswith(
        "the other 2 were loaded; fix or remove the failed file and re-run (what is stored is skipped)"
    )
    assert row_counts(session)["ingest_log"] == 2


# --- bad requests ------------------------------------------------------------------------------


def test_unknown_schema(session: HdiSession) -> None:
    with pytest.raises(ValidationError, match="ohlcv-5m") as info:
        hdi_lab.ingest(**{**SAMPLE, "schema": "ohlcv-5m"}, session=session)
    assert "ohlcv-1m" in str(info.value)  # lists the valid ones
    with pytest.raises(ValidationError, match="ohlcv-5m"):
        hdi_lab.query("ohlcv-5m", ["ESH4"], "2024-01-02", "2024-01-03", session=session)
    assert_nothing_written(session)


@pytest.mark.parametrize(("start", "end"), [("2024-01-05", "2024-01-02"), ("2024-01-02", "2024-01-02")])
def test_start_not_before_end(session: HdiSession, start: str, end: str) -> None:
    with pytest.raises(ValidationError, match="must be before end"):
        hdi_lab.ingest(**{**SAMPLE, "start": start, "end": end}, session=session)
    with pytest.raises(ValidationError, match="must be before end"):
        hdi_lab.query("ohlcv-1m", ["ESH4"], start, end, session=session)
    assert_nothing_written(session)


def test_unparseable_time(session: HdiSession) -> None:
    with pytest.raises(ValidationError, match="not a date"):
        hdi_lab.ingest(**{**SAMPLE, "start": "yesterday-ish"}, session=session)
    assert_nothing_written(session)


@pytest.mark.parametrize(
    ("start", "end"), [("1600-01-01", "2024-01-03"), ("0001-01-01", "9999-12-31"), ("2024-01-02", "2262-04-12")]
)
def test_time_outside_nanosecond_range(session: HdiSession, start: str, end: str) -> None:
    """pandas cannot hold these as nanoseconds: a ValidationError naming the value, not OutOfBoundsDatetime."""
    bad = start if start < "1677" else end
    with pytest.raises(ValidationError, match=f"={bad!r} is outside the range of nanosecond timestamps"):
        hdi_lab.ingest(**{**SAMPLE, "start": start, "end": end}, session=session)
    with pytest.raises(ValidationError, match="outside the range of nanosecond timestamps"):
        hdi_lab.query("ohlcv-1m", ["ESH4"], start, end, session=session)
    assert_nothing_written(session)


def test_unknown_symbol_on_sample_ingest(session: HdiSession) -> None:
    with pytest.raises(ValidationError, match="unknown symbol 'NOPE'"):
        hdi_lab.ingest(**{**SAMPLE, "symbols": ["ESH4", "NOPE"]}, session=session)
    assert_nothing_written(session)


def test_unknown_symbol_on_query(session: HdiSession) -> None:
    hdi_lab.ingest(provider="file", path=GLBX_TRADES, session=session)
    before = row_counts(session)
    with pytest.raises(ValidationError, match=r"unknown symbol.*'NOPE'") as info:
        hdi_lab.query("trades", ["ESH1", "NOPE"], "2020-12-28", "2020-12-29", session=session)
    assert "ESH1" not in str(info.value).split("unknown symbol")[1].split(" for ")[0]
    assert row_counts(session) == before


def test_hostile_symbol_is_just_unknown(session: HdiSession) -> None:
    hdi_lab.ingest(provider="file", path=GLBX_TRADES, session=session)
    before = row_counts(session)
    with pytest.raises(ValidationError, match="unknown symbol") as info:
        hdi_lab.query("trades", [HOSTILE], "2020-12-28", "2020-12-29", session=session)
    assert HOSTILE in str(info.value)
    with pytest.raises(ValidationError, match="unknown symbol"):
        hdi_lab.ingest(**{**SAMPLE, "symbols": [HOSTILE]}, session=session)
    assert table_exists(session, "trades")
    assert row_counts(session) == before
    assert len(hdi_lab.query("trades", ["ESH1"], "2020-12-28", "2020-12-29", session=session)) == before["trades"]


# --- the same through the CLI ------------------------------------------------------------------


def _cli_cases(tmp: Path) -> list[tuple[list[str], str]]:
    raw = decompressed(TRADES)
    truncated = _plain(tmp, "truncated.trades.dbn", raw[: -RECORD // 2])
    text = _plain(tmp, "notes.dbn", b"just some text\n")
    mbp1 = fixture_files("mbp-1")[0]
    q = ["query", "trades", "--start", "2020-12-28", "--end", "2020-12-29", "--symbols"]
    return [
        (["ingest", str(truncated)], "truncated"),
        (["ingest", str(text)], "not a readable DBN file"),
        (["ingest", str(tmp / "missing.dbn.zst")], "does not exist"),
        (["ingest", str(mbp1)], "tbbo"),
        (
            [
                "ingest",
                "--provider",
                "sample",
                "--schema",
                "ohlcv-1m",
                "--symbols",
                "NOPE",
                "--start",
                "2024-01-02",
                "--end",
                "2024-01-03",
            ],
            "unknown symbol 'NOPE'",
        ),
        (
            [
                "ingest",
                "--provider",
                "sample",
                "--schema",
                "ohlcv-1m",
                "--symbols",
                "ESH4",
                "--start",
                "2024-01-05",
                "--end",
                "2024-01-02",
            ],
            "must be before end",
        ),
        ([*q, "NOPE"], "unknown symbol"),
        ([*q, HOSTILE], "unknown symbol"),
        (
            ["query", "trades", "--symbols", "ESH1", "--start", "2020-12-29", "--end", "2020-12-28"],
            "must be before end",
        ),
        (["quarantine", "show", "12345"], "12345"),
        (
            ["query", "trades", "--symbols", "ESH1", "--start", "1600-01-01", "--end", "2020-12-29"],
            "start='1600-01-01' is outside the range of nanosecond timestamps",
        ),
        (
            [
                "ingest",
                "--provider",
                "sample",
                "--schema",
                "ohlcv-1m",
                "--symbols",
                "ESH4",
                "--start",
                "0001-01-01",
                "--end",
                "9999-12-31",
            ],
            "start='0001-01-01' is outside the range of nanosecond timestamps",
        ),
        (
            ["features", "compute", "--set", "momentum_v1", "--symbols", "ESH1", "--max-gap", "garbage"],
            "max_gap='garbage' is not a positive duration",
        ),
        (["ingest", str(_fifo(tmp))], "is a named pipe (FIFO), not a file"),
        (["ingest", "/proc/self/mem"], "/proc/self/mem cannot be read (Input/output error)"),
        (["ingest", str(WRITE_ONLY)], "cannot be read (Permission denied)"),
        ([*q, "ESH1", "--format", "csv", "--output", str(tmp / "nowhere" / "t.csv")], "does not exist"),
        ([*q, "ESH1", "--format", "parquet", "--output", str(tmp / "nowhere" / "t.parquet")], "does not exist"),
        ([*q, "ESH1", "--format", "csv", "--output", str(tmp)], "is a directory"),
        ([*q, "ESH1", "--format", "parquet", "--output", str(tmp)], "is a directory"),
        ([*q, "ESH1", "--format", "csv", "--output", "/sys/kernel/notes"], "cannot be written (Permission denied)"),
        ([*q, "ESH1", "--format", "parquet", "--output", "/proc/version"], "cannot be written"),
        ([*q, "ESH1", "--format", "csv", "--output", "/dev/full"], "cannot be written (No space left on device)"),
    ]


def _fifo(tmp: Path) -> Path:
    path = tmp / "pipe.trades.dbn"
    os.mkfifo(path)
    return path


#: a file even root cannot read (sysfs refuses reads of write-only attributes to everyone)
WRITE_ONLY = next(iter(sorted(Path("/sys/bus").glob("*/drivers_probe"))), Path("/sys/bus/pci/rescan"))

CLI_IDS = [
    "truncated",
    "text",
    "missing",
    "mbp-1",
    "sample-unknown-symbol",
    "sample-start-after-end",
    "query-unknown-symbol",
    "query-hostile-symbol",
    "query-start-after-end",
    "quarantine-show-missing",
    "query-start-1600",
    "ingest-year-1-to-9999",
    "features-max-gap-garbage",
    "ingest-fifo",
    "ingest-eio",
    "ingest-permission-denied",
    "csv-missing-dir",
    "parquet-missing-dir",
    "csv-onto-dir",
    "parquet-onto-dir",
    "csv-read-only-file",
    "parquet-eio",
    "csv-disk-full",
]


@pytest.mark.parametrize("case", range(len(CLI_IDS)), ids=CLI_IDS)
def test_cli_errors_are_one_line(hdi_env: dict[str, str], session: HdiSession, tmp_path: Path, case: int) -> None:
    hdi_lab.ingest(provider="file", path=GLBX_TRADES, session=session)
    before = row_counts(session)
    argv, needle = _cli_cases(tmp_path)[case]
    code, out, err = run_cli(argv)
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hdi: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert row_counts(session) == before
    assert table_exists(session, "trades")


def test_cli_unknown_schema_is_an_argument_error(
    hdi_env: dict[str, str], session: HdiSession, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse refuses a schema outside the choices before hdi_lab runs (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        main(
            [
                "ingest",
                "--provider",
                "sample",
                "--schema",
                "ohlcv-5m",
                "--symbols",
                "ESH4",
                "--start",
                "2024-01-02",
                "--end",
                "2024-01-03",
            ],
            io.StringIO(),
            io.StringIO(),
        )
    assert info.value.code == 2
    assert "invalid choice: 'ohlcv-5m'" in capsys.readouterr().err
    assert_nothing_written(session)
