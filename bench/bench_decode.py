"""DBN -> canonical columns: hdi_lab's ``dbn.decode`` + ``key_order`` + ``normalise`` vs
``databento.DBNStore.to_df()`` on the same 1M-record DBN bytes (no database needed).

Both sides start from the same uncompressed DBN v3 bytes in memory; ``DBNStore.from_bytes`` is
inside the timed region for both and is given an ``io.BytesIO`` (as hdi_lab's sample provider does):
given a plain ``bytes`` object, databento's ``MemoryDataSource`` stores ``repr(source)`` as its name,
an O(size) string build that costs ~0.5 s per 56 MB and would swamp both sides. That cost is
measured separately (informational) because ``hdi_lab.dbn.open_store(bytes)`` pays it.

* hdi_lab: ``dbn.decode(store)`` (one batch, as ingestion does with ``chunk_rows`` >= n), then
  ``records[normalise.key_order(records, schema)]``, duplicate numbering and ``normalise.normalise(...)`` into
  the ``ohlcv_1m`` table's columns (``common.canonical_columns``) -- what ingestion does before
  COPY-encoding (validation excluded).
* baseline: ``DBNStore.from_bytes(raw).to_df()`` with its defaults (float prices, pretty
  timestamps, mapped symbols); its pandas warnings are silenced.

A second pair runs both on the zstd-compressed file bytes (informational, no target).
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from pathlib import Path

import databento as db
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Row

from hdi_lab import dbn
from hdi_lab.schemas import Schema
from hdi_lab.storage import normalise

BENCH = "decode"
SCHEMA = Schema.OHLCV_1M


def hdi_decode(raw: bytes) -> normalise.Columns:
    store = db.DBNStore.from_bytes(io.BytesIO(raw))
    parts = list(dbn.decode(store, "bench"))
    assert len(parts) == 1
    return common.canonical_columns(parts[0].records, SCHEMA)


def databento_df(raw: bytes) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return db.DBNStore.from_bytes(io.BytesIO(raw)).to_df()


def run(args: argparse.Namespace) -> list[Row]:
    n = args.records
    print(f"[{BENCH}] generating {n:,} OHLCV-1m records over {args.instruments} instruments", flush=True)
    data = common.generate_ohlcv(n, args.instruments)
    raw = data.dbn_bytes(compress=False)
    zst = data.dbn_bytes(compress=True)
    print(f"[{BENCH}] DBN {len(raw) / 1e6:.1f} MB plain, {len(zst) / 1e6:.1f} MB zstd", flush=True)

    def check_cols(cols: normalise.Columns) -> None:
        if len(cols) != n:
            print(f"[{BENCH}] WARNING: hdi decode gave {len(cols)} rows, expected {n}", flush=True)

    def check_df(df: pd.DataFrame) -> None:
        if len(df) != n:
            print(f"[{BENCH}] WARNING: to_df gave {len(df)} rows, expected {n}", flush=True)

    reps = max(args.repeat, 5)
    print(f"[{BENCH}] plain DBN, interleaved x{reps} ...", flush=True)
    t = common.interleaved(
        {"hdi": (lambda: hdi_decode(raw), None), "df": (lambda: databento_df(raw), None)},
        reps,
        checks={"hdi": check_cols, "df": check_df},
    )
    print(f"[{BENCH}]   hdi   {t['hdi']}\n[{BENCH}]   to_df {t['df']}", flush=True)
    zreps = max(args.repeat, 3)
    print(f"[{BENCH}] zstd DBN, interleaved x{zreps} ...", flush=True)
    tz = common.interleaved(
        {"hdi": (lambda: hdi_decode(zst), None), "df": (lambda: databento_df(zst), None)},
        zreps,
        checks={"hdi": check_cols, "df": check_df},
    )
    print(f"[{BENCH}]   hdi   {tz['hdi']}\n[{BENCH}]   to_df {tz['df']}", flush=True)

    print(
        f"[{BENCH}] store construction: hdi_lab dbn.open_store(bytes) vs DBNStore.from_bytes(BytesIO) ...", flush=True
    )
    to = common.interleaved(
        {
            "open_store": (lambda: dbn.open_store(raw), None),
            "bytesio": (lambda: db.DBNStore.from_bytes(io.BytesIO(raw)), None),
        },
        3,
    )
    print(
        f"[{BENCH}]   open_store(bytes) {to['open_store']}\n[{BENCH}]   from_bytes(BytesIO) {to['bytesio']}", flush=True
    )

    if args.profile:
        print(f"\n[{BENCH}] cProfile of hdi decode (plain):", flush=True)
        common.profile(lambda: hdi_decode(raw), 20)

    hdi_rate, df_rate = n / t["hdi"].best, n / t["df"].best
    zh, zd = n / tz["hdi"].best, n / tz["df"].best
    return [
        Row(BENCH, "DBNStore.to_df() plain [baseline]", f"{df_rate:,.0f} rec/s", note=f"{t['df'].best:.3f}s"),
        Row(
            BENCH,
            "hdi decode+key_order+normalise / to_df",
            f"{hdi_rate:,.0f} rec/s",
            hdi_rate / df_rate,
            10,
            f"{t['hdi'].best:.3f}s",
        ),
        Row(
            BENCH,
            "hdi decode absolute rate / 5M rec/s",
            f"{hdi_rate:,.0f} rec/s",
            hdi_rate / 5e6,
            1,
            "target >= 5M records/s",
        ),
        Row(BENCH, "DBNStore.to_df() zstd [baseline]", f"{zd:,.0f} rec/s", note=f"{tz['df'].best:.3f}s"),
        Row(BENCH, "hdi decode zstd / to_df zstd", f"{zh:,.0f} rec/s", zh / zd, note=f"{tz['hdi'].best:.3f}s"),
        Row(
            BENCH,
            "hdi dbn.open_store(bytes) construction time",
            f"{to['open_store'].best * 1000:,.1f} ms",
            note=f"DBNStore.from_bytes(BytesIO): {to['bytesio'].best * 1000:,.1f} ms (databento repr(bytes))",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    return common.bench_main(argv, __doc__ or "", run, lambda a: f"decode: {a.records:,} OHLCV-1m records", repeat=5)


if __name__ == "__main__":
    raise SystemExit(main())
