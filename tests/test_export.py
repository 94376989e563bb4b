"""Exports and query(output=) against a real PostgreSQL: Hive-partitioned files read back by DuckDB, Polars and
pyarrow equal ``hdi_lab.query`` exactly (values, types, time zone); atomic and idempotent writes; clear errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import psycopg2
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from conftest import fixture_files
from helpers import hdi_shell, run_cli
from pyarrow import csv

import hdi_lab
from hdi_lab.core import export as exporter
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import empty_records, encode_dbn
from hdi_lab.errors import HdiError, StorageError, ValidationError
from hdi_lab.schemas import Progress

pytestmark = pytest.mark.integration

BARS = ("ESH4", "ES.c.0")  # the continuous symbol rolls H4 -> M4 on 2024-03-14
TICKS = ("BRK.B", "A/B")  # characters readers must get back from the path
START, END = "2024-03-13", "2024-03-16"


def _ticks(session: HdiSession, tmp: Path) -> None:
    """Trades of BRK.B and A/B on 2024-03-13 and 14 with odd nanoseconds, written as DBN and ingested."""
    n = 6
    rec = empty_records("trades", 2 * n)
    rec["publisher_id"] = 2
    rec["instrument_id"] = np.repeat([7001, 7002], n)
    day = np.tile(np.arange(n) % 2, 2) * 86_400 * 10**9
    rec["ts_event"] = pd.Timestamp("2024-03-13 14:30", tz="UTC").value + day + np.arange(2 * n) * 1_000_003 + 7
    rec["ts_recv"] = rec["ts_event"] + 123
    rec["price"] = 412_345_678_901 + np.arange(2 * n) * 10_000_000  # 412.345678901: a 1e-9 price floats round
    rec["size"], rec["sequence"] = np.arange(1, 2 * n + 1), np.arange(2 * n)
    rec["action"], rec["side"] = b"T", np.array([b"A", b"B", b"N"] * 4)
    path = tmp / "ticks.trades.dbn.zst"
    path.write_bytes(
        encode_dbn(
            dataset="XNAS.ITCH",
            schema="trades",
            stype_in="raw_symbol",
            start=pd.Timestamp(START, tz="UTC"),
            end=pd.Timestamp(END, tz="UTC"),
            symbols=list(TICKS),
            mappings={
                "BRK.B": [(dt.date(2024, 3, 13), dt.date(2024, 3, 16), 7001)],
                "A/B": [(dt.date(2024, 3, 13), dt.date(2024, 3, 16), 7002)],
            },
            records=rec,
        )
    )
    report = hdi_lab.ingest(provider="file", path=path, session=session)
    assert report.inserted == 2 * n and report.quarantined == 0


@pytest.fixture
def stored(session: HdiSession, tmp_path: Path) -> HdiSession:
    """Sample 1-minute bars of ESH4/ESM4 and ES.c.0 across its roll, ticks of BRK.B and A/B, the real GLBX
    statistics fixture (UNDEF prices, quantities and uint64 ts_ref)."""
    hdi_lab.ingest(
        provider="sample", schema="ohlcv-1m", symbols=["ESH4", "ESM4"], start=START, end=END, session=session
    )
    hdi_lab.ingest(
        provider="sample", schema="ohlcv-1m", symbols="ES.c.0", stype_in="continuous", start=START, end=END,
        session=session,
    )  # fmt: skip
    _ticks(session, tmp_path)
    hdi_lab.ingest(provider="file", path=[str(p) for p in fixture_files("statistics")], session=session)
    return session


# -- what query returns, and what a reader returns, as comparable columns --------------------------------------


def _expected(session: HdiSession, schema: str, symbols: Any, start: str, end: str) -> pd.DataFrame:
    """``query``'s rows with ts_event as a column and each price's fixed-point value as ``<price>_fixed``, from
    two independent queries (float and fixed)."""
    floats = hdi_lab.query(schema, symbols, start, end, session=session).reset_index()
    fixed = hdi_lab.query(schema, symbols, start, end, price_type="fixed", session=session).reset_index()
    out: dict[str, pd.Series] = {}
    for c in floats.columns:
        out[c] = floats[c]
        if floats[c].dtype == np.float64 and fixed[c].dtype == np.int64:
            out[f"{c}_fixed"] = fixed[c]
    return pd.DataFrame(out)


def _arrow_type(s: pd.Series) -> pa.DataType:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        assert str(s.dtype.tz) == "UTC" and s.dtype.unit == "ns"
        return pa.timestamp("ns", tz="UTC")
    if isinstance(s.dtype, pd.StringDtype):
        return pa.string()
    return pa.from_numpy_dtype(s.dtype)


def _plain(values: dict[str, Any]) -> pd.DataFrame:
    """Columns as plain numpy (timestamps as int64 ns, strings as objects), rows sorted by every column."""
    cols: dict[str, Any] = {}
    for name, v in values.items():
        if isinstance(v, pa.ChunkedArray | pa.Array):
            arr = v.cast(pa.int64()).fill_null(np.iinfo(np.int64).min) if pa.types.is_timestamp(v.type) else v
            cols[name] = arr.to_numpy(zero_copy_only=False)
        elif isinstance(v.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(v.dtype):
            cols[name] = pd.DatetimeIndex(v).asi8  # NaT: int64 min, as the Arrow nulls above
        else:
            cols[name] = v.to_numpy(dtype=object if isinstance(v.dtype, pd.StringDtype) else v.dtype)
    frame = pd.DataFrame(cols)
    return frame.sort_values(list(frame.columns), kind="stable").reset_index(drop=True)


def _same(table: pa.Table, want: pd.DataFrame, reader: str) -> None:
    """``table`` (a reader's result, as Arrow) holds exactly ``want``'s rows, columns and types, plus ``date``."""
    for c in want.columns:
        assert table.schema.field(c).type == _arrow_type(want[c]), (reader, c, table.schema.field(c).type)
    got = _plain({c: table.column(c) for c in want.columns})
    pd.testing.assert_frame_equal(got, _plain({c: want[c] for c in want.columns}), check_exact=True, obj=reader)
    days = pd.to_datetime(table.column("ts_event").to_numpy(), utc=True).date
    dates = table.column("date").to_pylist()
    assert [pd.Timestamp(d).date() for d in dates] == list(days), reader


def _read_all(out: Path) -> dict[str, pa.Table]:
    """The export under ``out`` as DuckDB, Polars and pyarrow read it, each as plainly as its docs show."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    by_duckdb = pa.table(con.sql(f"SELECT * FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true)"))
    con.close()
    polars = pl.read_parquet(f"{out}/**/*.parquet", hive_partitioning=True)
    return {
        "duckdb": by_duckdb,
        "polars": polars.to_arrow().cast(_polars_as_arrow(polars)),
        "pyarrow": ds.dataset(out, format="parquet", partitioning="hive").to_table(),
        "pyarrow+partitioning": ds.dataset(out, format="parquet", partitioning=exporter.partitioning()).to_table(),
    }


def _polars_as_arrow(frame: pl.DataFrame) -> pa.Schema:
    """Polars' own types checked, then its Arrow export (large/view strings) cast to the plain Arrow types."""
    fields = []
    for name, dtype in frame.schema.items():
        if dtype == pl.String:
            fields.append(pa.field(name, pa.string()))
        elif dtype == pl.Datetime("ns", "UTC"):
            fields.append(pa.field(name, pa.timestamp("ns", tz="UTC")))
        elif name == "session":  # the bars' trading date: naive, at 00:00, as the query gives it
            assert dtype == pl.Datetime("ns"), dtype
            fields.append(pa.field(name, pa.timestamp("ns")))
        else:
            assert not isinstance(dtype, pl.Datetime), (name, dtype)  # no other unit or time zone
            fields.append(pa.field(name, frame.select(name).to_arrow().schema.field(0).type))
    return pa.schema(fields)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- parquet read back exactly ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "symbols", "start", "end"),
    [
        ("ohlcv-1m", BARS, START, END),
        ("trades", TICKS, START, END),
        ("statistics", "ESH1", "2020-12-27", "2020-12-30"),
    ],
)
def test_parquet_is_read_back_exactly_by_duckdb_polars_and_pyarrow(
    stored: HdiSession, tmp_path: Path, schema: str, symbols: Any, start: str, end: str
) -> None:
    out = tmp_path / "export"
    report = hdi_lab.export(schema, symbols, start, end, out, session=stored)
    want = _expected(stored, schema, symbols, start, end)
    assert report.rows == len(want) > 0
    for reader, table in _read_all(out).items():
        assert table.num_rows == len(want), reader
        _same(table, want, reader)


def test_partitions_by_utc_day_and_symbol_with_unsafe_characters_quoted(stored: HdiSession, tmp_path: Path) -> None:
    out = tmp_path / "export"
    bars = hdi_lab.export("ohlcv-1m", BARS, START, END, out / "bars", session=stored)
    ticks = hdi_lab.export("trades", TICKS, START, END, out / "ticks", session=stored)
    parts = sorted(str(p.relative_to(out)) for p in out.rglob("part-0.parquet"))
    assert [p for p in parts if p.startswith("ticks/")] == [
        "ticks/date=2024-03-13/symbol=A%2FB/part-0.parquet",
        "ticks/date=2024-03-13/symbol=BRK.B/part-0.parquet",
        "ticks/date=2024-03-14/symbol=A%2FB/part-0.parquet",
        "ticks/date=2024-03-14/symbol=BRK.B/part-0.parquet",
    ]
    assert "bars/date=2024-03-14/symbol=ES.c.0/part-0.parquet" in parts
    assert (ticks.files, ticks.days, bars.days) == (4, 2, 3)
    # each file holds its day and symbol only, in query order; the continuous symbol names its contract per day
    frame = pl.read_parquet(f"{out}/bars/**/*.parquet", hive_partitioning=True)
    cont = frame.filter(pl.col("symbol") == "ES.c.0")
    assert (cont["date"] == cont["ts_event"].dt.date()).all()
    by_day = dict(cont.group_by("date").agg(pl.col("instrument_id").unique()).iter_rows())
    assert {d.isoformat(): sorted(v) for d, v in by_day.items()} == {
        "2024-03-13": [400001],
        "2024-03-14": [400002],
        "2024-03-15": [400002],
    }
    assert bars.files == 6  # ESH4 and ES.c.0 on 3 days


def test_arrow_and_csv_formats(stored: HdiSession, tmp_path: Path) -> None:
    """Arrow IPC read by pyarrow and Polars with the same columns; CSV with ISO UTC nanosecond timestamps, read
    back exactly with the column types."""
    want = _expected(stored, "trades", TICKS, START, END)
    hdi_lab.export("trades", TICKS, START, END, tmp_path / "ipc", format="arrow", session=stored)
    table = ds.dataset(tmp_path / "ipc", format="arrow", partitioning="hive").to_table()
    _same(table, want, "pyarrow ipc")
    frame = pl.scan_ipc(f"{tmp_path / 'ipc'}/**/*.arrow", hive_partitioning=True).collect()
    _same(frame.to_arrow().cast(_polars_as_arrow(frame)), want, "polars ipc")

    hdi_lab.export("trades", TICKS, START, END, tmp_path / "csv", format="csv", session=stored)
    first = (tmp_path / "csv" / "date=2024-03-13" / "symbol=A%2FB" / "part-0.csv").read_text().splitlines()
    assert first[0].split(",")[:3] == ['"ts_event"', '"symbol"', '"ts_recv"']
    assert first[1].startswith('"2024-03-13T14:30:00.006000025Z","A/B","2024-03-13T14:30:00.006000148Z"')
    types = {c: _arrow_type(want[c]) for c in want.columns}
    opts = csv.ConvertOptions(column_types=types, strings_can_be_null=False, quoted_strings_can_be_null=False)
    csv_table = ds.dataset(
        tmp_path / "csv",
        format=ds.CsvFileFormat(convert_options=opts),
        partitioning=exporter.partitioning(),
    ).to_table()
    _same(csv_table, want, "pyarrow csv")


# -- query(output=) ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "symbols", "start", "end", "kwargs"),
    [
        ("ohlcv-1m", BARS, START, END, {}),
        ("ohlcv-1m", BARS, START, END, {"price_type": "fixed"}),
        ("ohlcv-1m", "ESH4", START, END, {"columns": ["close", "symbol"]}),
        ("ohlcv-1m", "ESH4", START, END, {"columns": ["session", "close", "symbol"]}),
        ("ohlcv-1m", "ESM4", START, END, {"interval": "1h"}),
        ("trades", TICKS, START, END, {}),
        ("statistics", "ESH1", "2020-12-27", "2020-12-30", {}),
        ("ohlcv-1m", "ES.c.0", START, END, {"adjust": "ratio"}),
    ],
)
def test_output_arrow_and_polars_equal_the_pandas_frame(
    stored: HdiSession, schema: str, symbols: Any, start: str, end: str, kwargs: dict[str, Any]
) -> None:
    if "adjust" in kwargs:  # the roll needs definitions: the sample provider's for ESH4 and ESM4
        hdi_lab.ingest(
            provider="sample", schema="definition", symbols=["ESH4", "ESM4"], start=START, end=END, session=stored
        )
    frame = hdi_lab.query(schema, symbols, start, end, session=stored, **kwargs)
    want = frame.reset_index()
    table = hdi_lab.query(schema, symbols, start, end, output="arrow", session=stored, **kwargs)
    assert isinstance(table, pa.Table)
    assert table.column_names == list(want.columns)
    polars = hdi_lab.query(schema, symbols, start, end, output="polars", session=stored, **kwargs)
    assert isinstance(polars, pl.DataFrame)
    for name, got in (("arrow", table), ("polars", polars.to_arrow().cast(_polars_as_arrow(polars)))):
        for c in want.columns:
            assert got.schema.field(c).type == _arrow_type(want[c]), (name, c)
        assert got.num_rows == len(want) > 0
        exact = _plain({c: want[c] for c in want.columns})
        pd.testing.assert_frame_equal(_plain({c: got.column(c) for c in want.columns}), exact, check_exact=True)
        assert got.column("ts_event").to_pylist() == list(want["ts_event"]), name  # in the query's order
        assert got.column("symbol").to_pylist() == list(want["symbol"]), name


def test_output_errors(stored: HdiSession) -> None:
    with pytest.raises(ValidationError, match=r"output='excel' is not valid: use one of pandas, arrow, polars"):
        hdi_lab.query("ohlcv-1m", "ESH4", START, END, output="excel", session=stored)
    with pytest.raises(ValidationError, match="unknown column"):
        hdi_lab.query("trades", "BRK.B", START, END, columns=["nope"], output="arrow", session=stored)


# -- atomic, idempotent -----------------------------------------------------------------------------------------


def test_export_again_replaces_the_partitions_of_the_request(stored: HdiSession, tmp_path: Path) -> None:
    out = tmp_path / "export"
    first = hdi_lab.export("ohlcv-1m", ["ESH4", "ESM4"], START, END, out, session=stored)
    before = _snapshot(out)
    again = hdi_lab.export("ohlcv-1m", ["ESH4", "ESM4"], START, END, out, session=stored)
    assert _snapshot(out) == before and (again.rows, again.files, again.removed) == (first.rows, first.files, 0)
    # rows gone from the database (ESM4 on the 15th): its partition goes; other days and other requests stay
    hdi_lab.export("ohlcv-1m", "ES.c.0", START, END, out, session=stored)
    other = {k: v for k, v in _snapshot(out).items() if "symbol=ES.c.0" in k}
    hdi_lab.sql(
        "DELETE FROM ohlcv_1m WHERE instrument_id = 400002 AND ts_event >= '2024-03-15' AND ts_event < '2024-03-16'",
        session=stored,
    )
    third = hdi_lab.export("ohlcv-1m", ["ESH4", "ESM4"], START, END, out, session=stored)
    after = _snapshot(out)
    gone = "date=2024-03-15/symbol=ESM4/part-0.parquet"
    assert third.removed == 1 and gone in before and gone not in after
    assert not (out / "date=2024-03-15" / "symbol=ESM4").exists()
    assert {k: v for k, v in after.items() if k in other} == other
    assert {k: before[k] for k in before if k != gone} == {k: after[k] for k in before if k != gone}
    want = _expected(stored, "ohlcv-1m", ["ESH4", "ESM4"], START, END)
    table = ds.dataset(out, format="parquet", partitioning=exporter.partitioning()).to_table()
    _same(table.filter(ds.field("symbol").isin(["ESH4", "ESM4"])), want, "after re-export")


def _no_staging(tmp_path: Path) -> None:
    assert not [p for p in tmp_path.rglob("*") if ".hdi-export-" in p.name]


def test_a_file_in_the_way_midway_changes_nothing(stored: HdiSession, tmp_path: Path) -> None:
    out = tmp_path / "export"
    hdi_lab.export("ohlcv-1m", "ESH4", START, "2024-03-15", out, session=stored)
    (out / "date=2024-03-15").write_text("not a folder")  # the third day cannot be written
    before = _snapshot(out)
    with pytest.raises(ValidationError, match=r"date=2024-03-15 is a file where a partition folder goes"):
        hdi_lab.export("ohlcv-1m", ["ESH4", "ESM4"], START, END, out, session=stored)
    assert _snapshot(out) == before
    _no_staging(tmp_path)


def test_an_interrupted_or_failed_export_changes_nothing(stored: HdiSession, tmp_path: Path, pg_url: str) -> None:
    out = tmp_path / "export"
    hdi_lab.export("ohlcv-1m", "ESH4", START, "2024-03-14", out, session=stored)
    before = _snapshot(out)

    def interrupt(ev: Progress) -> None:
        if ev.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hdi_lab.export("ohlcv-1m", ["ESH4", "ESM4"], START, END, out, progress=interrupt, session=stored)
    assert _snapshot(out) == before
    _no_staging(tmp_path)

    pid = stored.connection().get_backend_pid()

    def server_gone(ev: Progress) -> None:  # the server ends the session's connection after the first day
        if ev.done == 1:
            with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s)", (pid,))

    with pytest.raises(HdiError) as caught:
        hdi_lab.export("ohlcv-1m", ["ESH4", "ESM4"], START, END, out, progress=server_gone, session=stored)
    assert isinstance(caught.value, StorageError), caught.value
    assert _snapshot(out) == before
    _no_staging(tmp_path)


def test_errors(stored: HdiSession, tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValidationError, match=r"format='xlsx' is not valid: use one of parquet, arrow, csv"):
        hdi_lab.export("ohlcv-1m", "ESH4", START, END, tmp_path / "o", format="xlsx", session=stored)
    with pytest.raises(ValidationError, match=r"output .*a_file is a file: give a folder"):
        hdi_lab.export("ohlcv-1m", "ESH4", START, END, a_file, session=stored)
    with pytest.raises(ValidationError, match=r"nothing stored for trades BRK.B in \[2024-03-15T00:00:00\+00:00"):
        hdi_lab.export("trades", "BRK.B", "2024-03-15", "2024-03-16", tmp_path / "o", session=stored)
    with pytest.raises(ValidationError, match="unknown symbol"):
        hdi_lab.export("ohlcv-1m", "ZZZ9", START, END, tmp_path / "o", session=stored)
    with pytest.raises(ValidationError, match="definitions are not exported"):
        hdi_lab.export("definition", "ESH4", START, END, tmp_path / "o", session=stored)
    assert not (tmp_path / "o").exists()
    _no_staging(tmp_path)


# -- front ends -------------------------------------------------------------------------------------------------


def test_cli_export(stored: HdiSession, hdi_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "cli"
    code, stdout, stderr = run_cli(
        ["export", "trades", "--symbols", "BRK.B,A/B", "--start", START, "--end", END, "--output", str(out)]
    )
    assert code == 0, stderr
    assert stdout.startswith(f"exported 12 trades rows to 4 parquet partition(s) on 2 day(s) in {out}")
    _same(ds.dataset(out, partitioning="hive").to_table(), _expected(stored, "trades", TICKS, START, END), "cli")
    with pytest.raises(SystemExit) as usage:  # argparse: --output is required
        run_cli(["export", "trades", "--symbols", "BRK.B", "--start", START, "--end", END])
    assert usage.value.code == 2
    code, _, stderr = run_cli(
        ["export", "trades", "--symbols", "BRK.B", "--start", "2020-01-01", "--end", "2020-01-02", "--output", str(out)]
    )
    assert code == 1 and stderr.startswith("hdi: error: ") and len(stderr.strip().splitlines()) == 1


def test_magic_export(stored: HdiSession, hdi_env: dict[str, str], tmp_path: Path) -> None:
    from IPython.core.error import UsageError

    with hdi_shell() as shell:
        shell.run_line_magic("config", "HdiMagics.progress = False")
        report = shell.run_line_magic("hdi_export", f"ohlcv-1m ES.c.0 {START} {END} --format csv --output {tmp_path}/m")
        assert isinstance(report, exporter.ExportReport) and report.files == 3
        assert (tmp_path / "m" / "date=2024-03-15" / "symbol=ES.c.0" / "part-0.csv").is_file()
        with pytest.raises(UsageError, match="ValidationError: nothing stored"):
            shell.run_line_magic("hdi_export", f"trades BRK.B 2024-03-15 2024-03-16 --output {tmp_path}/m")
