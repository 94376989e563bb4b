"""The IPython front end: ``%load_ext hdi_lab`` start-up cost and ``%hdi_query`` overhead vs ``hdi_lab.query``.

* load: wall time of a fresh ``python -c`` that creates an ``InteractiveShell`` [baseline] vs the
  same plus ``%load_ext hdi_lab``; the difference is what the extension costs a new kernel
  (target < 0.5 s); the same again with ``import pandas`` in both (a notebook's usual first cell).
  Best of ``--repeat``, interleaved, after one untimed warm-up of each (warm page cache and
  bytecode, like a second kernel start). A third variant imports ``hdi_lab`` first
  and times, in-process, ``import hdi_lab`` and then ``%load_ext`` alone: the package import
  vs the extension's own registration.
* query: 1 instrument x 1 week of stored OHLCV-1m bars, ``hdi_lab.query(..., session=...)``
  [baseline] vs ``%hdi_query`` through ``run_line_magic`` (argument parsing + the magic) and
  through ``run_cell("df = %hdi_query ...")`` (plus IPython's cell machinery); p50 of 50
  interleaved runs after 3 warm-ups (target: < 10% extra, i.e. core/magic >= 0.91).
  Setup (untimed): synthetic bars (``common.generate_ohlcv``) ingested with ``hdi_lab.ingest``
  into a fresh schema, then ``VACUUM ANALYZE``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Row

import hdi_lab

BENCH = "magics"
LOAD_BUDGET_S = 0.5
QUERY_TARGET = 1 / 1.10
SMALL_REPS = 50

_SHELL = (
    "import time\n"
    "from traitlets.config import Config\n"
    "from IPython.core.interactiveshell import InteractiveShell\n"
    "c = Config(); c.HistoryManager.enabled = False\n"
    "ip = InteractiveShell(config=c)\n"
)
VARIANTS = {
    "ipython": _SHELL + "print('{}')\n",
    "load_ext": _SHELL + "ip.run_line_magic('load_ext', 'hdi_lab')\nprint('{}')\n",
    "pandas": _SHELL + "import pandas\nprint('{}')\n",
    "pandas_ext": _SHELL + "import pandas\nip.run_line_magic('load_ext', 'hdi_lab')\nprint('{}')\n",
    "split": _SHELL
    + (
        "t0 = time.perf_counter()\nimport hdi_lab\nt1 = time.perf_counter()\n"
        "ip.run_line_magic('load_ext', 'hdi_lab')\nt2 = time.perf_counter()\n"
        "import json; print(json.dumps({'import': t1 - t0, 'load_ext': t2 - t1}))\n"
    ),
}


def _python(code: str, cwd: str) -> tuple[float, dict[str, float]]:
    """Wall time of ``python -c code`` in a clean environment, and the JSON it printed last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDI_") and k != "VIRTUAL_ENV"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(common.ROOT), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"python -c failed:\n{proc.stderr}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def bench_load(repeat: int) -> list[Row]:
    walls: dict[str, list[float]] = {k: [] for k in VARIANTS}
    split: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="hdi-bench-magics-") as cwd:
        for code in VARIANTS.values():  # warm-up: page cache, __pycache__
            _python(code, cwd)
        for _ in range(repeat):
            for name, code in VARIANTS.items():
                wall, out = _python(code, cwd)
                walls[name].append(wall)
                if name == "split":
                    split.append(out)
    for name, times in walls.items():
        print(f"[{BENCH}]   {name:<10} {common.Timing(times)}", flush=True)
    base, with_ext = min(walls["ipython"]), min(walls["load_ext"])
    diff = max(with_ext - base, 1e-6)
    nb_diff = max(min(walls["pandas_ext"]) - min(walls["pandas"]), 1e-6)
    imp = min(s["import"] for s in split)
    own = min(s["load_ext"] for s in split)
    return [
        Row(BENCH, "python -c: InteractiveShell() [baseline]", f"{base:.3f} s", note=f"best of {repeat}"),
        Row(
            BENCH,
            "python -c: + %load_ext hdi_lab (difference)",
            f"{diff:.3f} s",
            LOAD_BUDGET_S / diff,
            1,
            f"ratio = {LOAD_BUDGET_S} s budget / difference",
        ),
        Row(
            BENCH,
            "python -c: pandas already imported, + %load_ext",
            f"{nb_diff:.3f} s",
            LOAD_BUDGET_S / nb_diff,
            1,
            "as in a notebook that imported pandas first",
        ),
        Row(BENCH, "  in-process: import hdi_lab", f"{imp:.3f} s", note="package import (pandas, databento, ...)"),
        Row(
            BENCH,
            "  in-process: %load_ext after import",
            f"{own * 1000:.1f} ms",
            LOAD_BUDGET_S / own,
            1,
            "the extension's own cost",
        ),
    ]


def bench_query(args: argparse.Namespace, data: common.Dataset, path: Path) -> list[Row]:
    w_lo, w_hi = data.middle_week()
    one = data.symbols[0]
    with common.database(args.database_url) as url, common.fresh_schema(url, "bench_magics") as sch:
        print(f"[{BENCH}] {common.server_summary(url)}; schema {sch}", flush=True)
        sess, t, stored = common.store_file(url, sch, path)
        print(f"[{BENCH}] setup: ingested {stored:,} rows in {t:.1f}s", flush=True)

        # the extension's session is configured as a user would: through the environment; the database path, as
        # the core's session reads it (the read cache would serve the magic's repeated week from memory)
        os.environ.update(HDI_DATABASE_URL=url, HDI_DB_SCHEMA=sch, HDI_CACHE="off")
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        cfg = Config()
        cfg.HistoryManager.enabled = False
        ip = InteractiveShell(config=cfg)
        ip.run_line_magic("load_ext", "hdi_lab")
        line = f"ohlcv-1m {one} {w_lo.isoformat()} {w_hi.isoformat()}"
        cell = f"df = %hdi_query {line}"

        def core() -> pd.DataFrame:
            return hdi_lab.query("ohlcv-1m", one, w_lo, w_hi, session=sess)

        def magic() -> pd.DataFrame:
            return ip.run_line_magic("hdi_query", line)  # type: ignore[no-any-return]

        def in_cell() -> pd.DataFrame:
            result = ip.run_cell(cell)
            result.raise_error()
            return ip.user_ns["df"]  # type: ignore[no-any-return]

        expected = core()
        for fn in (magic, in_cell):
            pd.testing.assert_frame_equal(fn(), expected)
        n = len(expected)
        print(f"[{BENCH}] query {one} {w_lo.date()}..{w_hi.date()} ({n:,} rows) x{SMALL_REPS} ...", flush=True)
        for _ in range(3):
            core(), magic(), in_cell()
        runs = common.interleaved({"core": (core, None), "magic": (magic, None), "cell": (in_cell, None)}, SMALL_REPS)
        ms = {k: np.asarray(v.times) * 1000 for k, v in runs.items()}
        p50 = {k: common.percentile(v, 50) for k, v in ms.items()}
        p95 = {k: common.percentile(v, 95) for k, v in ms.items()}
        for k in ms:
            print(f"[{BENCH}]   {k:<5} p50 {p50[k]:.2f} ms p95 {p95[k]:.2f} ms", flush=True)
        if args.profile:
            common.profile(lambda: [magic() for _ in range(20)], 30)
        ip.run_line_magic("unload_ext", "hdi_lab")
        sess.close()

    def fig(k: str) -> str:
        return f"{p50[k]:.2f} / {p95[k]:.2f} ms"

    extra = {k: (p50[k] / p50["core"] - 1) * 100 for k in ("magic", "cell")}
    return [
        Row(
            BENCH,
            "1 instr x 1 week: hdi_lab.query p50/p95 [baseline]",
            fig("core"),
            note=f"{n:,} rows, {SMALL_REPS} runs",
        ),
        Row(
            BENCH,
            "1 instr x 1 week: %hdi_query (run_line_magic)",
            fig("magic"),
            p50["core"] / p50["magic"],
            round(QUERY_TARGET, 2),
            f"{extra['magic']:+.1f}% p50; ratio = core / magic",
        ),
        Row(
            BENCH,
            "1 instr x 1 week: df = %hdi_query (run_cell)",
            fig("cell"),
            p50["core"] / p50["cell"],
            round(QUERY_TARGET, 2),
            f"{extra['cell']:+.1f}% p50, incl. IPython's cell machinery",
        ),
    ]


def run(args: argparse.Namespace) -> list[Row]:
    print(f"[{BENCH}] %load_ext in fresh subprocesses, x{args.repeat} ...", flush=True)
    return bench_load(args.repeat) + common.with_dbn_file(args, BENCH, bench_query)


def main(argv: list[str] | None = None) -> int:
    return common.bench_main(
        argv,
        __doc__ or "",
        run,
        lambda a: "magics: %load_ext start-up and %hdi_query overhead",
        records=200_000,
        repeat=5,
    )


if __name__ == "__main__":
    raise SystemExit(main())
