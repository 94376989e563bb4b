"""The main job on the embedded default: ingest the offline sample data, query it, summarise."""

from __future__ import annotations

import time
from typing import Any, TextIO

from hdi_lab.api import make_request
from hdi_lab.core import ingestion, retrieval
from hdi_lab.core.session import HdiSession
from hdi_lab.schemas import Progress

__all__ = ["JOBS", "run_demo"]

JOBS: tuple[dict[str, Any], ...] = (
    dict(schema="definition", symbols="ES.FUT,NQ.FUT", stype_in="parent", start="2024-03-01", end="2024-03-29"),
    dict(schema="ohlcv-1m", symbols="ES.FUT,NQ.FUT", stype_in="parent", start="2024-03-01", end="2024-03-29"),
    dict(schema="ohlcv-1d", symbols="ES.c.0", stype_in="continuous", start="2024-01-02", end="2024-06-01"),
    dict(schema="ohlcv-1m", symbols="AAPL,MSFT,NVDA", start="2024-03-01", end="2024-03-29"),
    dict(schema="trades", symbols="ESH4", start="2024-03-04", end="2024-03-05"),
    dict(schema="tbbo", symbols="ESH4", start="2024-03-04", end="2024-03-05"),
    dict(schema="statistics", symbols="ES.FUT", stype_in="parent", start="2024-03-01", end="2024-03-29"),
)


def run_demo(session: HdiSession, out: TextIO, progress: bool = False) -> None:
    t0 = time.perf_counter()
    where = "embedded PostgreSQL" if session.embedded else "the configured database"
    print(f"hdi_lab demo: offline sample data into {where} (schema {session.schema})\n", file=out)
    for job in JOBS:
        report = ingestion.run(make_request("sample", **job), session, progress=_printer(out) if progress else None)
        print(f"  {job['schema']:<11} {job['symbols']:<15} {report}", file=out)
    print("\nES continuous front month (ES.c.0), daily bars around the March roll:", file=out)
    daily = retrieval.query(session, "ohlcv-1d", "ES.c.0", "2024-03-11", "2024-03-19")
    print(daily[["symbol", "instrument_id", "open", "high", "low", "close", "volume"]].to_string(), file=out)
    bars = retrieval.query(session, "ohlcv-1m", "ESH4,NQH4,AAPL", "2024-03-01", "2024-03-29")
    summary = bars.groupby("symbol").agg(
        bars=("close", "size"),
        first=("close", lambda s: s.index.min()),
        last=("close", lambda s: s.index.max()),
        low=("low", "min"),
        high=("high", "max"),
        volume=("volume", "sum"),
    )
    print("\n1-minute bars, March 2024:", file=out)
    print(summary.to_string(), file=out)
    trades = retrieval.query(session, "trades", "ESH4", "2024-03-04", "2024-03-05")
    vwap = (trades["price"] * trades["size"]).sum() / max(int(trades["size"].sum()), 1)
    print(
        f"\nESH4 trades on 2024-03-04: {len(trades)} trades, VWAP {vwap:.2f}, "
        f"first {trades.index.min()} (ns precision kept)",
        file=out,
    )
    print(f"\ndone in {time.perf_counter() - t0:.1f} s; re-running skips every chunk already loaded.", file=out)


def _printer(out: TextIO) -> ingestion.ProgressFn:
    def show(ev: Progress) -> None:
        if ev.chunk is not None and (ev.done == ev.total or ev.done % 10 == 0):
            print(f"    {ev.done}/{ev.total} chunks, {ev.rows} rows", file=out)

    return show
