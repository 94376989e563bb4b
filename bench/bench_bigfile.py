"""Big DBN files in bounded memory: a generated multi-day trades ``.dbn.zst`` of ``--gb`` compressed GB.

Written in a temporary directory with :mod:`hdi_lab.dbn.writer` (its metadata encoder and record
templates, zstd-compressed batch by batch: the generator never holds the file) and deleted afterwards.
Each step runs in a fresh process, which reports its wall time and its peak RSS (``VmHWM`` of
``/proc/self/status``):

* baseline: ``databento.DBNStore.from_file(path).to_ndarray(count=batch)``, iterated: the client's own
  batched decode of the same file, nothing stored;
* read: hdi_lab's streaming path without the database: ``FileProvider.plan`` (the index pass: one read of
  the file, period hashes) then every period chunk's ``fetch`` decoded by ``dbn.decode`` in load batches
  (a second read of the file);
* ingest: ``hdi_lab.ingest(provider="file")`` of a file of ``--ingest-gb`` (default: the same file when
  ``--gb`` <= 0.1, else a 0.1 GB one) into a fresh schema: decode -> validate -> load, one chunk per day.

Targets: peak RSS < 1 GB for every hdi_lab step (the issue's 5 GB file: run with ``--gb 5``); rows/s of
the read path reported as a ratio to the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from hdi_lab.dbn.writer import empty_records, encode_metadata

BENCH = "bigfile"
DAY_NS = 86_400_000_000_000
PER_DAY = 2_000_000  # trades per UTC day at most: a day chunk's load state stays small
BATCH = 1_000_000  # records per read / load batch (the chunk_rows default)


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, gb: float, seed: int = 1) -> int:
    """Write trades of 10 instruments, one UTC day after another (at most PER_DAY a day), ~``gb`` GB compressed.
    Returns the number of records."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    est = int(gb * 1e9 / 21)  # ~21 compressed bytes per 48-byte trade (measured on this generator)
    days = max(2, math.ceil(est / PER_DAY))
    per_day = math.ceil(est / days)
    symbols = [f"SYM{i}" for i in range(10)]
    end = start + pd.Timedelta(days=days)
    head = encode_metadata(
        dataset="GLBX.MDP3",
        schema="trades",
        stype_in="raw_symbol",
        start=start,
        end=end,
        symbols=symbols,
        mappings={s: [(start.date(), end.date(), 1000 + i)] for i, s in enumerate(symbols)},
    )
    n = 0
    seq = 0
    with open(path, "wb") as f:
        writer = zstandard.ZstdCompressor(level=1).stream_writer(f, closefd=False)
        writer.write(head)
        for d in range(days):
            t0 = start.value + d * DAY_NS
            left = per_day
            while left:
                k = min(BATCH, left)
                rec = empty_records("trades", k)
                ts = t0 + np.sort(rng.integers(0, DAY_NS, k))
                rec["ts_event"] = ts
                rec["ts_recv"] = ts + rng.integers(1_000, 50_000, k)
                rec["publisher_id"] = 1
                rec["instrument_id"] = 1000 + rng.integers(0, 10, k)
                rec["price"] = (4_000_000 + rng.integers(-500, 500, k)) * 1_000_000
                rec["size"] = rng.integers(1, 50, k)
                rec["sequence"] = np.arange(seq, seq + k)
                rec["action"], rec["side"] = b"T", np.where(rng.random(k) < 0.5, b"A", b"B")
                writer.write(rec.tobytes())
                seq += k
                n += k
                left -= k
        writer.close()
    return n


def step_baseline(path: Path) -> dict[str, float]:
    import databento as db

    t0 = time.perf_counter()
    store = db.DBNStore.from_file(path)
    rows = sum(len(b) for b in store.to_ndarray(count=BATCH))
    return {"seconds": time.perf_counter() - t0, "rows": rows, "peak_mb": _peak_mb()}


def step_read(path: Path) -> dict[str, float]:
    from hdi_lab import dbn
    from hdi_lab.api import make_request
    from hdi_lab.providers.file import FileProvider

    t0 = time.perf_counter()
    provider = FileProvider()
    try:
        chunks = provider.plan(make_request(provider="file", path=path))
        t_index = time.perf_counter() - t0
        rows = 0
        largest = 0
        for chunk in chunks:
            for store in provider.fetch(chunk):
                for part in dbn.decode(store, str(path), batch=BATCH):
                    rows += len(part.records)
                    largest = max(largest, len(part.records))
    finally:
        provider.close()
    return {
        "seconds": time.perf_counter() - t0,
        "index_seconds": t_index,
        "rows": rows,
        "chunks": len(chunks),
        "largest_batch": largest,
        "peak_mb": _peak_mb(),
    }


def step_ingest(path: Path, url: str) -> dict[str, float]:
    import hdi_lab

    with common.fresh_schema(url, "bench_big") as schema, contextlib.closing(common.session(url, schema)) as session:
        t0 = time.perf_counter()
        report = hdi_lab.ingest(provider="file", path=path, session=session)
        seconds = time.perf_counter() - t0
        return {
            "seconds": seconds,
            "rows": report.inserted,
            "chunks": len(report.chunks),
            "peak_mb": _peak_mb(),
        }


def _child(step: str, path: Path, url: str | None) -> dict[str, float]:
    argv = [sys.executable, __file__, "--step", step, "--path", str(path)]
    if url:
        argv += ["--database-url", url]
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gb", type=float, default=0.25, help="compressed size of the generated file (default 0.25)")
    p.add_argument("--ingest-gb", type=float, default=None, help="file size for the ingest step (default min(gb, 0.1))")
    p.add_argument("--no-ingest", action="store_true", help="skip the ingest step")
    p.add_argument("--database-url", default=None)
    p.add_argument("--dir", default=None, help="where to write the temporary files (default: the system temp dir)")
    p.add_argument("--json", default=None)
    p.add_argument("--step", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step:
        path = Path(args.path)
        result = {"baseline": lambda: step_baseline(path), "read": lambda: step_read(path)}.get(args.step)
        out = result() if result else step_ingest(path, args.database_url)
        print(json.dumps(out))
        return

    tmp = Path(tempfile.mkdtemp(prefix="hdi-bigfile-", dir=args.dir))
    try:
        big = tmp / "big.trades.dbn.zst"
        t0 = time.perf_counter()
        n = generate(big, args.gb)
        size = big.stat().st_size
        print(f"[bench] generated {n:,} trades, {size / 1e9:.2f} GB compressed in {time.perf_counter() - t0:.0f} s")
        base = _child("baseline", big, None)
        read = _child("read", big, None)
        rows = [
            ("baseline DBNStore.to_ndarray(count=1M)", base),
            ("hdi read (index + periods, no database)", read),
        ]
        if not args.no_ingest:
            ingest_gb = args.ingest_gb if args.ingest_gb is not None else min(args.gb, 0.1)
            small = big
            if abs(ingest_gb - args.gb) > 1e-9:
                small = tmp / "ingest.trades.dbn.zst"
                generate(small, ingest_gb, seed=2)
            with common.database(args.database_url) as url:
                rows.append((f"hdi ingest ({small.stat().st_size / 1e9:.2f} GB file)", _child("ingest", small, url)))
        print(f"\nbigfile: {size / 1e9:.2f} GB .dbn.zst, {n:,} trades (48 B), load batch {BATCH:,} records")
        print(f"{'step':<44} {'seconds':>8} {'rows/s':>12} {'peak RSS':>10} {'vs baseline':>12}")
        base_rate = base["rows"] / base["seconds"]
        for name, r in rows:
            rate = r["rows"] / r["seconds"]
            print(f"{name:<44} {r['seconds']:8.1f} {rate:12,.0f} {r['peak_mb']:8.0f} MB {rate / base_rate:11.2f}x")
        chunks, largest = read["chunks"], read["largest_batch"]
        print(f"index pass {read['index_seconds']:.1f} s, {chunks} day chunks, largest batch {largest:,}")
        worst = max(r["peak_mb"] for name, r in rows if name.startswith("hdi"))
        print(f"peak RSS of hdi_lab steps < 1 GB: {'MET' if worst < 1024 else 'MISSED'} ({worst:.0f} MB)")
        if args.json:
            Path(args.json).write_text(json.dumps({"bench": BENCH, "rows": dict(rows), "gb": size / 1e9}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
