"""IB provider: the pacing planner's minimum wall time, and decode + store of bars from the fake gateway.

* planner (no network, no database): a year of 1-minute bars for 10 instruments is split into IB's
  maximum duration per request (1 D for 1-minute bars: 3,650 requests) and scheduled under IB's
  pacing rules on a virtual clock (``ib_pacing.schedule``). Baseline: the usual naive plan, one
  request every 10 s (600 s / 60) in plan order. The ratio is naive time / planned time; the gain is
  small by nature (60 requests per 10 minutes bounds both) and comes from sending each window's 60
  requests as a burst (interleaving contracts keeps the 6-per-2-s rule). A third line counts the
  rules a plan without pacing (one request per second) would break.
* decode + store (needs PostgreSQL): ``hdi_lab.ingest(provider="ib")`` of ~100k 1-minute bars from
  ``tests/fake_ib.py`` with the real ib_async client (pacing on a virtual clock: no waiting), end to
  end (contract details, head timestamp, one connection for the run, DBN conversion, validation,
  COPY). Baseline: the same ``reqHistoricalData`` calls through one ib_async connection, bars
  received and parsed by the client, nothing converted or stored. ``--records`` is capped at 100k.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import common
from common import Row
from fake_ib import FakeIbGateway

import hdi_lab
from hdi_lab.core import ingestion
from hdi_lab.providers.ib.client import IbConnection, load_library
from hdi_lab.providers.ib.pacing import (
    Rules,
    VirtualClock,
    format_duration,
    naive_seconds,
    schedule,
    violations,
)
from hdi_lab.providers.ib.provider import IbProvider
from hdi_lab.schemas import IngestRequest, Schema, parse_time

BENCH = "ib"


def planner_rows() -> list[Row]:
    settings = common.load_settings({}, environ={})
    provider = IbProvider(settings, rules=Rules())
    symbols = tuple(f"SYM{i}:STK:SMART:USD" for i in range(10))
    req = IngestRequest(
        provider="ib",
        schema=Schema.OHLCV_1M,
        symbols=symbols,
        start=parse_time("2023-01-01", "start"),
        end=parse_time("2024-01-01", "end"),
    )
    chunks = [c for c in provider.plan(req) if c.schema is Schema.OHLCV_1M]
    requests = [provider.request_of(c) for c in chunks]
    starts = schedule(requests, Rules())
    planned = max(starts)
    naive = naive_seconds(len(requests))
    broken = len(violations([(float(i), r) for i, r in enumerate(requests)], Rules()))
    assert not violations(list(zip(starts, requests, strict=True)), Rules())
    return [
        Row(
            BENCH,
            f"planner: {len(requests):,} requests (10 instruments x 1 year of 1m bars), paced",
            format_duration(planned),
            naive / planned,
            1.0,
            note=f"{planned:,.0f} s, 0 rules broken",
        ),
        Row(BENCH, "naive plan: one request every 10 s [baseline]", format_duration(naive), note=f"{naive:,.0f} s"),
        Row(
            BENCH,
            "unpaced plan: one request per second",
            format_duration(len(requests) - 1),
            note=f"breaks {broken:,} rules (IB answers error 162 / disconnects)",
        ),
    ]


def store_rows(args: object) -> list[Row]:
    a = args
    bars_wanted = min(int(a.records), 100_000)  # type: ignore[attr-defined]
    days = int(bars_wanted / 1440 * 7 / 5) + 1
    start, end = pd.Timestamp("2023-06-01", tz="UTC"), pd.Timestamp("2023-06-01", tz="UTC") + pd.Timedelta(days=days)
    clock = VirtualClock()
    # the fake does not police pacing here: the raw baseline sends unpaced (the planner is measured above)
    fake = FakeIbGateway(
        clock=clock, rules=Rules(window_max=10**9, identical_s=0.0, burst_max=10**9, messages_per_s=10**9)
    )
    port = fake.start()
    rows: list[Row] = []
    try:
        with common.database(a.database_url) as url, common.fresh_schema(url, "bench_ib") as schema:  # type: ignore[attr-defined]
            sessions: list[hdi_lab.HdiSession] = []
            settings = common.session(url, schema).settings.replace(
                ib_port=port, ib_library="ib_async", ib_timeout=30.0
            )
            lib = load_library("ib_async")

            fetched: list[int] = []  # the bars each raw() run fetched

            def raw() -> int:
                n = 0
                with IbConnection(lib, "127.0.0.1", port, 3, 30.0) as conn:
                    contract = lib.Contract(
                        conId=265598, symbol="AAPL", secType="STK", exchange="SMART", currency="USD"
                    )
                    day = start
                    while day < end:
                        hi = (day + pd.Timedelta(days=1)).to_pydatetime()
                        try:
                            bars = conn.call(
                                lambda ib, hi=hi: ib.reqHistoricalDataAsync(
                                    contract,
                                    endDateTime=hi,
                                    durationStr="86400 S",
                                    barSizeSetting="1 min",
                                    whatToShow="TRADES",
                                    useRTH=False,
                                    formatDate=2,
                                    keepUpToDate=False,
                                    timeout=0,
                                )
                            )
                        except Exception:  # noqa: BLE001 - weekends: error 162 no data
                            bars = []
                        n += len(bars)
                        day += pd.Timedelta(days=1)
                fetched.append(n)
                return n

            def fresh() -> None:
                name = f"{schema}_{len(sessions)}"
                sessions.append(hdi_lab.HdiSession(settings.replace(db_schema=name)))
                sessions[-1].connection()

            def hdi() -> int:
                req = IngestRequest(
                    provider="ib", schema=Schema.OHLCV_1M, symbols=("AAPL:STK:SMART:USD",), start=start, end=end
                )
                with IbProvider(sessions[-1].settings, clock=clock) as provider:  # closes its connection
                    return ingestion.run(req, sessions[-1], provider=provider).inserted

            t = common.interleaved({"raw": (raw, None), "hdi": (hdi, fresh)}, a.repeat)  # type: ignore[attr-defined]
            n = fetched[-1]
            for s in sessions:
                s.close()
                _drop(url, s.schema)
    finally:
        fake.stop()
    raw_t, hdi_t = t["raw"].best, t["hdi"].best
    rows += [
        Row(
            BENCH,
            f"raw: ib_async reqHistoricalData of {n:,} 1m bars from the fake [baseline]",
            common.rate(n, raw_t),
            note=f"{raw_t:.2f}s",
        ),
        Row(
            BENCH,
            "hdi_lab ingest(provider='ib') decode + store / raw",
            common.rate(n, hdi_t),
            raw_t / hdi_t,
            0.5,
            note=f"{hdi_t:.2f}s, overhead {100 * (hdi_t / raw_t - 1):.0f}%",
        ),
    ]
    return rows


def _drop(url: str, schema: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    conn.close()


def run(args: argparse.Namespace) -> list[Row]:
    return planner_rows() + store_rows(args)


def main(argv: list[str] | None = None) -> int:
    return common.bench_main(
        argv, __doc__ or "", run, lambda a: "IB provider: pacing planner, decode + store", repeat=3
    )


if __name__ == "__main__":
    sys.exit(main())
