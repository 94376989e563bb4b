"""Run every benchmark (each in its own process, so memory and imports do not leak between them) and
print one summary table. Options are passed through to every benchmark, e.g.::

    .venv/bin/python bench/run_all.py --database-url postgresql://USER@HOST:PORT/DB

With neither ``--database-url`` nor ``$HDI_BENCH_DATABASE_URL``, one embedded server is started
here, shared by the benchmarks that need it, and stopped at the end. Always exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

HERE = Path(__file__).resolve().parent

BENCHES = (
    "bench_ingest",
    "bench_decode",
    "bench_query",
    "bench_cache",
    "bench_magics",
    "bench_databento",
    "bench_features",
    "bench_ib",
    "bench_feast",
    "bench_gaps",
    "bench_update",
    "bench_cluster",
    "bench_continuous",
    "bench_export",
    "bench_live",
)


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=BENCHES, help="run only these benchmarks")
    p.set_defaults(repeat=None)  # None: each benchmark's own default
    args = p.parse_args(argv)
    chosen = args.only or list(BENCHES)
    rows: list[common.Row] = []
    failed: list[str] = []
    with common.database(args.database_url) as url, tempfile.TemporaryDirectory(prefix="hdi-bench-") as tmp:
        env = dict(os.environ, **{common.URL_ENV: url})
        for name in chosen:
            out = Path(tmp) / f"{name}.json"
            cmd = [
                sys.executable,
                str(HERE / f"{name}.py"),
                "--records",
                str(args.records),
                "--instruments",
                str(args.instruments),
                "--json",
                str(out),
            ]
            if args.repeat is not None:
                cmd += ["--repeat", str(args.repeat)]
            if args.profile:
                cmd.append("--profile")
            print(f"\n######## {name} ########", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.run(cmd, env=env, check=False).returncode
            print(f"[run_all] {name} finished in {time.perf_counter() - t0:.0f}s (exit {rc})", flush=True)
            if rc == 0 and out.exists():
                rows += common.read_json(out)
            else:
                failed.append(name)
    common.print_table(rows, f"all benchmarks ({args.records:,} records)")
    if failed:
        print(f"[run_all] these benchmarks did not complete: {', '.join(failed)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
