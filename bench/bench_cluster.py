"""``executor="dask"``: an ingest of the sample provider on a 2-worker ``LocalCluster`` (processes) vs the same
ingest run serially, interleaved, each into a fresh schema; rows/s ratio.

``--days`` (default 10) UTC days of ESH4 and NQH4 trades (~35k trades per weekday and symbol): one chunk per day.
Both runs make, decode, validate and load the same records; the cluster's are two processes with their own
connections. On 2 cores shared with the server (and other jobs) the ratio is bounded near 1-1.5x; on a machine
with more cores than workers it is the speed-up of the workers. The cluster starts before the timed runs
(untimed: ~2 s). Target: >= 1.0x (the cluster never slower than one process).

A second row: ``hdi_lab.features.compute("momentum_v1", ..., "1m")`` of ``--feature-days`` (default 20) UTC days of
1-minute bars of the 8 sample futures, from their first bar, partitioned by instrument on the same cluster vs run
serially, interleaved; before each run (untimed) the feature and state tables are dropped. Target: >= 1.0x.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import pandas as pd
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Row
from distributed import Client, LocalCluster

import hdi_lab
from hdi_lab import features

BENCH = "cluster"
START = pd.Timestamp("2024-01-08", tz="UTC")
FUTURES = ["ESH4", "ESM4", "NQH4", "NQM4", "ESU4", "ESZ4", "NQU4", "NQZ4"]


def run(args: object) -> list[Row]:
    days, repeat = int(args.days), int(args.repeat)  # type: ignore[attr-defined]
    request = dict(schema="trades", symbols=["ESH4", "NQH4"], start=START, end=START + pd.Timedelta(days=days))
    with (
        common.database(args.database_url) as url,  # type: ignore[attr-defined]
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
        contextlib.ExitStack() as schemas,  # each run's schema, dropped at the end
    ):
        state: dict[str, object] = {}

        def setup() -> None:  # untimed: a fresh schema, migrated
            sess = common.session(url, schemas.enter_context(common.fresh_schema(url, "bench_cluster")))
            sess.connection()
            state["session"] = sess

        def ingest(how: dict[str, object]) -> object:
            sess = state["session"]
            report = hdi_lab.ingest("sample", session=sess, **request, **how)  # type: ignore[arg-type]
            sess.close()  # type: ignore[attr-defined]
            state["rows"] = report.inserted
            return report

        times = common.interleaved(
            {
                "serial": (lambda: ingest({}), setup),
                "dask": (lambda: ingest({"executor": "dask", "scheduler": client}), setup),
            },
            repeat,
        )
        feature_times, bars = _features(url, client, int(args.feature_days), repeat)  # type: ignore[attr-defined]
    serial, dask = times["serial"], times["dask"]
    n = int(state["rows"])  # type: ignore[call-overload]
    fserial, fdask = feature_times["serial"], feature_times["dask"]
    return [
        Row(
            BENCH,
            f"ingest of {days} days of sample trades on 2 Dask worker processes vs serial",
            f"{common.rate(n, dask.best)} vs {common.rate(n, serial.best)}",
            serial.best / dask.best,
            1.0,
            f"{n:,} rows; best of {repeat}: {dask.best:.2f} s vs {serial.best:.2f} s",
        ),
        Row(
            BENCH,
            f"features.compute momentum_v1 1m of {args.feature_days} days x 8 futures on 2 workers vs serial",  # type: ignore[attr-defined]
            f"{common.rate(bars, fdask.best)} vs {common.rate(bars, fserial.best)}",
            fserial.best / fdask.best,
            1.0,
            f"{bars:,} bars, a partition per instrument; best of {repeat}: {fdask.best:.2f} s vs {fserial.best:.2f} s",
        ),
    ]


def _features(url: str, client: Client, days: int, repeat: int) -> tuple[dict[str, common.Timing], int]:
    """Feature computations of the same stored bars, serial and on the cluster, each from the first bar."""
    end = START + pd.Timedelta(days=days)
    with (
        common.fresh_schema(url, "bench_cluster_features") as sch,
        contextlib.closing(common.session(url, sch)) as sess,
    ):
        hdi_lab.ingest("sample", session=sess, schema="ohlcv-1m", symbols=FUTURES, start=START, end=end)
        out: dict[str, int] = {}

        def setup() -> None:  # untimed: no feature table, no states
            conn = psycopg2.connect(url)
            conn.autocommit = True
            with conn.cursor() as cur:
                for t in (features.table_name("momentum_v1", "1m"), features.state_table_name("momentum_v1", "1m")):
                    cur.execute(f'DROP TABLE IF EXISTS "{sch}"."{t}"')
            conn.close()

        def compute(how: dict[str, object]) -> object:
            report = features.compute("momentum_v1", FUTURES, "1m", START, end, session=sess, **how)  # type: ignore[arg-type]
            out["bars"] = report.bars_read
            return report

        times = common.interleaved(
            {
                "serial": (lambda: compute({}), setup),
                "dask": (lambda: compute({"executor": "dask", "scheduler": client}), setup),
            },
            repeat,
        )
        return times, out["bars"]


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0] if __doc__ else BENCH, repeat=3)
    p.add_argument("--days", type=int, default=10, help="UTC days of trades, one chunk each (default 10)")
    p.add_argument("--feature-days", type=int, default=20, help="UTC days of 1m bars for features (default 20)")
    args = p.parse_args(argv)
    rows = run(args)
    common.print_table(rows, f"cluster: {args.days} days of sample trades, 2 workers vs serial")
    common.write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
