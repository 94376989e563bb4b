"""Export 1M stored OHLCV-1m rows to Hive-partitioned Parquet; ``query(output="arrow")`` vs the pandas frame.

Setup (untimed): the rows are ingested with ``hdi_lab.ingest(provider="file")`` into a fresh schema, then
``VACUUM ANALYZE``; the whole range is read once as an Arrow table with a ``date`` column (the in-memory frame
of the baselines).

* export: ``hdi_lab.export("ohlcv-1m", <all symbols>, start, end, DIR)`` (read day by day from PostgreSQL,
  float and fixed prices, one zstd Parquet file per day and symbol, staged and moved in), interleaved with
  (b) pyarrow writing the same in-memory table directly (``pyarrow.dataset.write_dataset``, Hive partitions
  ``date``/``symbol``, zstd): the write floor, no database; and (c) ``query(output="arrow")`` of the whole
  range then the same ``write_dataset``: read + write in one frame (unbounded memory). Ratios are export
  rows/s over each baseline's.
* output: ``hdi_lab.query`` of all rows with ``output="arrow"`` and ``"polars"`` vs the default pandas frame,
  interleaved (ratio = pandas time / arrow time).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Row

import hdi_lab

BENCH = "export"


def run(args: argparse.Namespace) -> list[Row]:
    return common.with_dbn_file(args, BENCH, _run)


def _run(args: argparse.Namespace, data: common.Dataset, path: Path) -> list[Row]:
    n = args.records
    lo = pd.Timestamp(data.start_ns, unit="ns", tz="UTC")
    hi = pd.Timestamp(data.end_ns, unit="ns", tz="UTC")
    syms = list(data.symbols)
    with (
        common.database(args.database_url) as url,
        common.fresh_schema(url, "bench_export") as sch,
        tempfile.TemporaryDirectory(prefix="hdi-bench-export-") as tmp,
    ):
        print(f"[{BENCH}] {common.server_summary(url)}; schema {sch}", flush=True)
        sess, t, stored = common.store_file(url, sch, path)
        common.analyze(url, sch, "ohlcv_1m")
        print(f"[{BENCH}] setup: ingested {stored:,} rows in {t:.1f}s", flush=True)
        base = Path(tmp)

        def arrow() -> pa.Table:
            return hdi_lab.query("ohlcv-1m", syms, lo, hi, output="arrow", session=sess)

        def dated(table: pa.Table) -> pa.Table:
            return table.append_column("date", pc.strftime(table["ts_event"], format="%Y-%m-%d"))

        frame = dated(arrow())  # the in-memory frame of baseline (b), untimed
        hive = ds.partitioning(pa.schema([("date", pa.string()), ("symbol", pa.string())]), flavor="hive")
        parquet = ds.ParquetFileFormat().make_write_options(compression="zstd")

        def write(table: pa.Table, to: Path) -> None:
            ds.write_dataset(
                table,
                to,
                format="parquet",
                partitioning=hive,
                file_options=parquet,
                existing_data_behavior="overwrite_or_ignore",
            )

        def fresh(name: str) -> Path:
            target = base / name
            shutil.rmtree(target, ignore_errors=True)
            return target

        def rows_check(k: int, who: str) -> Callable[[object], None]:
            def check(result: object) -> None:
                got = result.num_rows if isinstance(result, pa.Table) else len(result)  # type: ignore[arg-type]
                if got != k:
                    print(f"[{BENCH}] WARNING: {who} gave {got:,} rows, expected {k:,}", flush=True)

            return check

        hdi_lab.query("ohlcv-1m", syms, lo, hi, output="polars", session=sess)  # warm-up: Polars imported
        print(f"[{BENCH}] export of {n:,} rows vs pyarrow, interleaved x{args.repeat} ...", flush=True)
        report: list[object] = []
        exp = common.interleaved(
            {
                "export": (
                    lambda: report.append(hdi_lab.export("ohlcv-1m", syms, lo, hi, base / "e", session=sess)),
                    None,
                ),
                "write": (lambda: write(frame, fresh("w")), None),
                "read+write": (lambda: write(dated(arrow()), fresh("rw")), None),
            },
            args.repeat,
        )
        for k, v in exp.items():
            print(f"[{BENCH}]   {k:<10} {v}", flush=True)
        last = report[-1]
        print(f"[{BENCH}]   {last}", flush=True)
        files = len(list((base / "e").rglob("*.parquet")))
        size = sum(p.stat().st_size for p in (base / "e").rglob("*.parquet"))
        size_w = sum(p.stat().st_size for p in (base / "w").rglob("*.parquet"))

        print(f"[{BENCH}] query of {n:,} rows: pandas vs arrow vs polars, interleaved x{args.repeat} ...", flush=True)
        out = common.interleaved(
            {
                "pandas": (lambda: hdi_lab.query("ohlcv-1m", syms, lo, hi, session=sess), None),
                "arrow": (arrow, None),
                "polars": (lambda: hdi_lab.query("ohlcv-1m", syms, lo, hi, output="polars", session=sess), None),
            },
            args.repeat,
            checks={k: rows_check(n, k) for k in ("pandas", "arrow", "polars")},
        )
        for k, v in out.items():
            print(f"[{BENCH}]   {k:<7} {v}", flush=True)
        if args.profile:
            common.profile(lambda: hdi_lab.export("ohlcv-1m", syms, lo, hi, base / "p", session=sess), 30)
        sess.close()

    e, w, rw = exp["export"].best, exp["write"].best, exp["read+write"].best
    return [
        Row(
            BENCH,
            "pyarrow write_dataset, in memory [baseline]",
            common.rate(n, w),
            note=f"{w:.2f}s, {size_w / 1e6:.1f} MB",
        ),
        Row(BENCH, "query(arrow) + write_dataset [baseline]", common.rate(n, rw), note=f"{rw:.2f}s, one frame"),
        Row(
            BENCH,
            "hdi_lab.export / read+write",
            common.rate(n, e),
            rw / e,
            0.7,
            f"{e:.2f}s, {files} files, {size / 1e6:.1f} MB (float + fixed prices); {w / e:.2f}x the in-memory write",
        ),
        Row(
            BENCH,
            "query() pandas, 1M rows [baseline]",
            common.rate(n, out["pandas"].best),
            note=f"{out['pandas'].best:.3f}s",
        ),
        Row(
            BENCH,
            'query(output="arrow") / pandas',
            common.rate(n, out["arrow"].best),
            out["pandas"].best / out["arrow"].best,
            1.0,
            f"{out['arrow'].best:.3f}s",
        ),
        Row(
            BENCH,
            'query(output="polars") / pandas',
            common.rate(n, out["polars"].best),
            out["pandas"].best / out["polars"].best,
            1.0,
            f"{out['polars'].best:.3f}s",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    return common.bench_main(
        argv, __doc__ or "", run, lambda a: f"export: {a.records:,} OHLCV-1m rows stored", repeat=3
    )


if __name__ == "__main__":
    raise SystemExit(main())
