"""The ib provider end to end: the real ib_async and ib_insync clients against the fake TWS gateway
(tests/fake_ib.py), through the ingest core into PostgreSQL; stored rows compared exactly."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_ib import (
    BAR_SECONDS,
    PACING_TEXT,
    UNIVERSE,
    FakeContract,
    FakeIbGateway,
    bar,
    bar_times,
)
from helpers import xc_sessions

import hdi_lab
from hdi_lab.api import make_request
from hdi_lab.core import ingestion, retrieval
from hdi_lab.core.compare import compare_bars
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import empty_records, encode_dbn
from hdi_lab.errors import ProviderError, UnavailableError, ValidationError
from hdi_lab.frontend import cli
from hdi_lab.providers.ib.pacing import Rules, VirtualClock
from hdi_lab.providers.ib.provider import IbProvider
from hdi_lab.schemas import IngestRequest, Schema, parse_time

pytestmark = pytest.mark.integration

BY_LOCAL = {c.local_symbol: c for c in UNIVERSE}
ESH4, ESZ3, AAPL, EUR, NEWCO = (BY_LOCAL[k] for k in ("ESH4", "ESZ3", "AAPL", "EUR.USD", "NEWCO"))
BAR_SIZE = {Schema.OHLCV_1S: "1 secs", Schema.OHLCV_1M: "1 min", Schema.OHLCV_1H: "1 hour", Schema.OHLCV_1D: "1 day"}


@pytest.fixture(params=["ib_async", "ib_insync"])
def lib(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(1000.0)


@pytest.fixture
def fake(clock: VirtualClock) -> Iterator[FakeIbGateway]:
    gw = FakeIbGateway(clock=clock)
    gw.start()
    yield gw
    for prov in OPEN:
        prov.close()
    OPEN.clear()
    gw.stop()


OPEN: list[IbProvider] = []


def provider(session: HdiSession, fake: FakeIbGateway, lib: str, clock: VirtualClock) -> IbProvider:
    """A provider on the fake gateway and the virtual clock (closed when the fake stops)."""
    settings = session.settings.replace(
        ib_host="127.0.0.1", ib_port=fake.port, ib_client_id=5, ib_library=lib, ib_timeout=5.0
    )
    OPEN.append(IbProvider(settings, clock=clock, rules=Rules(margin_s=0.5)))
    return OPEN[-1]


def run(
    session: HdiSession,
    prov: IbProvider,
    schema: str,
    symbols: list[str],
    start: str,
    end: str,
    dataset: str | None = None,
    dry_run: bool = False,
) -> hdi_lab.IngestReport:
    req = IngestRequest(
        provider="ib",
        schema=Schema(schema),
        dataset=dataset,
        symbols=tuple(symbols),
        start=parse_time(start, "start"),
        end=parse_time(end, "end"),
        dry_run=dry_run,
    )
    return ingestion.run(req, session, provider=prov)


def expected(contract: FakeContract, schema: Schema, start: str, end: str, what: str = "TRADES") -> pd.DataFrame:
    """The fake's bars as hdi_lab must store them: ts_event ns, prices fixed 1e-9 from the sent text."""
    size = BAR_SIZE[schema]
    times = bar_times(contract, size, pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    rows = []
    for t in times:
        o, h, lo, c, v = bar(contract, what, t, BAR_SECONDS[size])
        rows.append(
            (t * 1_000_000_000, *(int(Decimal(x) * 10**9) for x in (o, h, lo, c)), int(v) if what == "TRADES" else 0)
        )
    return pd.DataFrame(rows, columns=["ts", "open", "high", "low", "close", "volume"])


def stored(session: HdiSession, schema: Schema, symbol: str, start: str, end: str, dataset: str = "IB") -> pd.DataFrame:
    frame = retrieval.query(session, schema, symbol, start, end, dataset=dataset, price_type="fixed")
    out = pd.DataFrame(
        {"ts": frame.index.asi8, **{k: frame[k].to_numpy(np.int64) for k in ("open", "high", "low", "close", "volume")}}
    )
    out.attrs["instrument_id"] = sorted(set(frame["instrument_id"].tolist()))
    out.attrs["publisher_id"] = sorted(set(frame["publisher_id"].tolist()))
    return out


def test_acceptance_form_daily_future_env(
    lib: str, fake: FakeIbGateway, hdi_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, session: HdiSession
) -> None:
    """hdi_lab.ingest(provider="ib", ...) with HDI_IB_* from the environment; definitions and bars stored."""
    for name, value in {
        "HDI_IB_HOST": "127.0.0.1",
        "HDI_IB_PORT": str(fake.port),
        "HDI_IB_CLIENT_ID": "9",
        "HDI_IB_LIBRARY": lib,
    }.items():
        monkeypatch.setenv(name, value)
    report = hdi_lab.ingest(
        provider="ib", schema="ohlcv-1d", symbols=["ES:FUT:CME:USD:202403"], start="2023-11-01", end="2024-01-06"
    )
    want = expected(ESH4, Schema.OHLCV_1D, "2023-11-01", "2024-01-06")
    assert report.fetched == len(want) == report.inserted and report.quarantined == 0
    got = stored(session, Schema.OHLCV_1D, "ES:FUT:CME:USD:202403", "2023-11-01", "2024-01-06")
    pd.testing.assert_frame_equal(got, want)
    assert got.attrs == {"instrument_id": [ESH4.con_id], "publisher_id": [32000]}
    # daily bars sit at 00:00 UTC of the trading date, like Databento's ohlcv-1d
    assert (got["ts"] % 86_400_000_000_000 == 0).all()
    # the localSymbol and the qualified contract text resolve too
    assert len(stored(session, Schema.OHLCV_1D, "ESH4", "2023-11-01", "2024-01-06")) == len(want)
    assert len(stored(session, Schema.OHLCV_1D, "ES:FUT:CME:USD:20240315", "2023-11-01", "2024-01-06")) == len(want)
    inst = retrieval.sql(session, f'SELECT * FROM "{session.schema}".instruments')
    assert len(inst) == 1
    row = inst.iloc[0]
    assert (
        row.publisher_id,
        row.instrument_id,
        row.dataset,
        row.raw_symbol,
        row.security_type,
        row.exchange,
        row.currency,
        row.contract_multiplier,
    ) == (32000, ESH4.con_id, "IB", "ESH4", "FUT", "CME", "USD", 50)
    assert row.expiration == pd.Timestamp("2024-03-15", tz="UTC")
    assert row.record["group"] == "ES" and row.record["asset"] == "ES"
    assert row.record["min_price_increment"] == 250_000_000 and row.record["unit_of_measure_qty"] == 50 * 10**9


def test_backfill_across_pacing_windows(
    lib: str, fake: FakeIbGateway, clock: VirtualClock, session: HdiSession
) -> None:
    """70 one-minute requests (+2 head lookups) need two 10-minute windows: no rule is broken."""
    prov = provider(session, fake, lib, clock)
    t0 = clock.now()
    report = run(session, prov, "ohlcv-1m", ["AAPL:STK:SMART:USD", "EUR:CASH:IDEALPRO:USD"], "2024-01-01", "2024-02-05")
    assert fake.violations == []
    assert len(fake.sent) == 72
    assert clock.now() - t0 >= 600  # the 61st request waited for the window
    for contract, text in ((AAPL, "AAPL:STK:SMART:USD"), (EUR, "EUR:CASH:IDEALPRO:USD")):
        want = expected(contract, Schema.OHLCV_1M, "2024-01-01", "2024-02-05")
        got = stored(session, Schema.OHLCV_1M, text, "2024-01-01", "2024-02-05")
        pd.testing.assert_frame_equal(got, want)
        assert got.attrs["instrument_id"] == [contract.con_id]
        # each bar's session follows the contract's exchange (stored as DBN's 5 characters: IDEALPRO -> IDEAL)
        code = {"AAPL": "XNAS", "EUR": "24/5"}[text.split(":")[0]]
        bars = retrieval.query(session, Schema.OHLCV_1M, text, "2024-01-01", "2024-02-05", dataset="IB")
        ref = pd.DatetimeIndex(xc_sessions(code, pd.DatetimeIndex(bars.index), pd.Timedelta("1min")))
        assert pd.DatetimeIndex(bars["session"]).equals(ref) and ref.notna().sum() > 1000, text
    assert report.quarantined == 0 and report.fetched == report.inserted
    # a re-run fetches nothing
    again = run(session, prov, "ohlcv-1m", ["AAPL:STK:SMART:USD", "EUR:CASH:IDEALPRO:USD"], "2024-01-01", "2024-02-05")
    assert again.chunks_skipped == len(again.chunks) and len(fake.sent) == 72


def test_midpoint_dataset_and_head_timestamp(
    lib: str, fake: FakeIbGateway, clock: VirtualClock, session: HdiSession
) -> None:
    """IB.MIDPOINT stores midpoints with volume 0; requests ending before the head timestamp are skipped."""
    prov = provider(session, fake, lib, clock)
    run(session, prov, "ohlcv-1h", ["NEWCO:STK"], "2023-11-01", "2024-02-01", dataset="IB.MIDPOINT")
    hourly = [q for _, q in fake.sent if q.bar_size == "1 hour"]
    heads = [q for _, q in fake.sent if q.bar_size == "head"]
    assert len(heads) == 1 and heads[0].what == "MIDPOINT"
    assert [q.end for q in hourly] == [pd.Timestamp("2024-01-30", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC")]
    want = expected(NEWCO, Schema.OHLCV_1H, "2023-11-01", "2024-02-01", what="MIDPOINT")
    got = stored(session, Schema.OHLCV_1H, "NEWCO:STK", "2023-11-01", "2024-02-01", dataset="IB.MIDPOINT")
    pd.testing.assert_frame_equal(got, want)
    assert got.attrs["publisher_id"] == [32001] and (got["volume"] == 0).all()
    with pytest.raises(ValidationError, match="unknown symbol"):
        retrieval.query(session, "ohlcv-1h", "NEWCO:STK", "2023-11-01", "2024-02-01", dataset="IB")


def test_contfut_resolves_to_front_contract(
    lib: str, fake: FakeIbGateway, clock: VirtualClock, session: HdiSession
) -> None:
    prov = provider(session, fake, lib, clock)
    run(session, prov, "ohlcv-1d", ["ES:CONTFUT:CME"], "2023-12-01", "2024-01-31")
    got = retrieval.query(
        session, "ohlcv-1d", "ES:CONTFUT:CME", "2023-12-01", "2024-01-31", dataset="IB", price_type="fixed"
    )
    roll = pd.Timestamp("2023-12-16", tz="UTC")  # ESZ3's last trade date is 2023-12-15
    assert set(got.loc[got.index < roll, "instrument_id"]) == {ESZ3.con_id}
    assert set(got.loc[got.index >= roll, "instrument_id"]) == {ESH4.con_id}
    want = pd.concat(
        [
            expected(ESZ3, Schema.OHLCV_1D, "2023-12-01", "2023-12-16"),
            expected(ESH4, Schema.OHLCV_1D, "2023-12-16", "2024-01-31"),
        ],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(stored(session, Schema.OHLCV_1D, "ES:CONTFUT:CME", "2023-12-01", "2024-01-31"), want)
    inst = retrieval.sql(session, f'SELECT raw_symbol FROM "{session.schema}".instruments ORDER BY raw_symbol')
    assert inst["raw_symbol"].tolist() == ["ESH4", "ESZ3"]


def test_unknown_contract_is_a_clear_error(
    lib: str, fake: FakeIbGateway, clock: VirtualClock, session: HdiSession
) -> None:
    prov = provider(session, fake, lib, clock)
    with pytest.raises(ValidationError, match=r"IB does not know contract 'NOPE:STK:SMART:USD' \(error 200"):
        run(session, prov, "ohlcv-1d", ["NOPE:STK:SMART:USD"], "2024-01-01", "2024-01-31")
    assert retrieval.sql(session, f'SELECT count(*) AS n FROM "{session.schema}".ingest_log')["n"][0] == 0
    with pytest.raises(ValidationError, match="a future needs an expiry"):
        run(session, prov, "ohlcv-1d", ["ES:FUT:CME"], "2024-01-01", "2024-01-31")


def test_pacing_violation_injected_backs_off_and_retries(
    lib: str, fake: FakeIbGateway, clock: VirtualClock, session: HdiSession
) -> None:
    prov = provider(session, fake, lib, clock)
    fake.inject[2] = (162, PACING_TEXT)
    t0 = clock.now()
    report = run(session, prov, "ohlcv-1m", ["ES:FUT:CME:USD:202403"], "2024-01-02", "2024-01-05")
    assert len(fake.sent) == 4  # 3 requests, the second one twice
    assert fake.sent[2][1] == fake.sent[1][1] and fake.sent[2][0] - fake.sent[1][0] >= 60
    assert clock.now() - t0 >= 60 and fake.violations == []
    want = expected(ESH4, Schema.OHLCV_1M, "2024-01-02", "2024-01-05")
    pd.testing.assert_frame_equal(
        stored(session, Schema.OHLCV_1M, "ES:FUT:CME:USD:202403", "2024-01-02", "2024-01-05"), want
    )
    assert report.inserted == len(want)


@pytest.mark.parametrize(
    ("code", "message", "error", "match"),
    [
        (321, "Error validating request.-'bK' : cause - Invalid bar size", ValidationError, "error 321"),
        (366, "No historical data query found for ticker id:3", ProviderError, "error 366.*re-run"),
        (162, "Historical Market Data Service error message:Time length exceed max.", ProviderError, "error 162"),
    ],
)
def test_ib_errors_are_clear(
    lib: str,
    fake: FakeIbGateway,
    clock: VirtualClock,
    session: HdiSession,
    code: int,
    message: str,
    error: type[Exception],
    match: str,
) -> None:
    prov = provider(session, fake, lib, clock)
    fake.inject[2] = (code, message)
    with pytest.raises(error, match=match):
        run(session, prov, "ohlcv-1m", ["ES:FUT:CME:USD:202403"], "2024-01-02", "2024-01-05")
    # the definitions and the first day were committed before the failing chunk
    log = retrieval.sql(session, f'SELECT schema FROM "{session.schema}".ingest_log ORDER BY id')
    assert log["schema"].tolist() == ["definition", "ohlcv-1m"]


def test_disconnect_mid_backfill_reconnects(
    lib: str, fake: FakeIbGateway, clock: VirtualClock, session: HdiSession
) -> None:
    prov = provider(session, fake, lib, clock)
    fake.disconnect_at.add(2)
    report = run(session, prov, "ohlcv-1m", ["ES:FUT:CME:USD:202403"], "2024-01-02", "2024-01-05")
    assert any("re-opened" in w for w in report.warnings)
    assert fake.connections == prov.connections == 2  # one for the run, one after the drop
    pd.testing.assert_frame_equal(
        stored(session, Schema.OHLCV_1M, "ES:FUT:CME:USD:202403", "2024-01-02", "2024-01-05"),
        expected(ESH4, Schema.OHLCV_1M, "2024-01-02", "2024-01-05"),
    )


def test_gateway_down_then_resume_from_last_committed_chunk(
    lib: str, fake: FakeIbGateway, clock: VirtualClock, session: HdiSession
) -> None:
    prov = provider(session, fake, lib, clock)
    fake.down_after = 3
    with pytest.raises(UnavailableError, match="re-run the same ingest to resume"):
        run(session, prov, "ohlcv-1m", ["ES:FUT:CME:USD:202403"], "2024-01-01", "2024-01-07")
    log = retrieval.sql(session, f'SELECT schema FROM "{session.schema}".ingest_log ORDER BY id')
    assert log["schema"].tolist() == ["definition"] + ["ohlcv-1m"] * 3
    fake.down_after = None
    fake.start()
    report = run(
        session, provider(session, fake, lib, clock), "ohlcv-1m", ["ES:FUT:CME:USD:202403"], "2024-01-01", "2024-01-07"
    )
    assert report.chunks_skipped == 4 and len(report.chunks) == 7
    pd.testing.assert_frame_equal(
        stored(session, Schema.OHLCV_1M, "ES:FUT:CME:USD:202403", "2024-01-01", "2024-01-07"),
        expected(ESH4, Schema.OHLCV_1M, "2024-01-01", "2024-01-07"),
    )


def test_dry_run_shows_plan_and_minimum_duration(fake: FakeIbGateway, clock: VirtualClock, session: HdiSession) -> None:
    prov = provider(session, fake, "ib_async", clock)
    report = run(
        session, prov, "ohlcv-1m", ["AAPL:STK", "ES:FUT:CME:USD:202403"], "2024-01-01", "2024-03-01", dry_run=True
    )
    assert fake.connections == 0
    bars = [c for c in report.chunks if c.chunk.schema is Schema.OHLCV_1M]
    assert len(bars) == 2 * 60
    assert report.min_duration_s is not None and report.min_duration_s >= 600
    assert "minimum duration" in str(report)


def test_compare_databento_and_ib_bars(
    fake: FakeIbGateway, clock: VirtualClock, session: HdiSession, hdi_env: dict[str, str], tmp_path: Path
) -> None:
    """The same minutes from a Databento file and from IB: missing bars and mismatches are reported."""
    prov = provider(session, fake, "ib_async", clock)
    run(session, prov, "ohlcv-1m", ["ES:FUT:CME:USD:202403"], "2024-01-02", "2024-01-03")
    ib_bars = expected(ESH4, Schema.OHLCV_1M, "2024-01-02", "2024-01-03 00:05")
    assert len(ib_bars) == 1445
    vendor = ib_bars.drop(index=10).reset_index(drop=True)  # one minute Databento lacks
    vendor.loc[100, "close"] += 250_000_000  # one close a tick off
    vendor.loc[200, "volume"] += 1  # one volume off
    recs = empty_records(Schema.OHLCV_1M, len(vendor))
    recs["publisher_id"], recs["instrument_id"] = 1, 5002  # GLBX.MDP3, Databento's id for ESH4
    for col in ("open", "high", "low", "close", "volume"):
        recs[col] = vendor[col].to_numpy()
    recs["ts_event"] = vendor["ts"].to_numpy().astype(np.uint64)
    path = tmp_path / "esh4.ohlcv-1m.dbn"
    path.write_bytes(
        encode_dbn(
            dataset="GLBX.MDP3",
            schema=Schema.OHLCV_1M,
            stype_in="raw_symbol",
            start=pd.Timestamp("2024-01-02", tz="UTC"),
            end=pd.Timestamp("2024-01-04", tz="UTC"),
            symbols=["ESH4"],
            mappings={"ESH4": [(dt.date(2024, 1, 2), dt.date(2024, 1, 4), 5002)]},
            records=recs,
            compress=False,
        )
    )
    ingestion.run(make_request("file", path=str(path)), session)

    result = compare_bars(
        session, "ohlcv-1m", "ESH4", "ES:FUT:CME:USD:202403", "2024-01-02", "2024-01-03 00:05", left_dataset="GLBX.MDP3"
    )
    assert result.counts == {
        "match": 1440 - 3,
        "missing_left": 1,
        "missing_right": 5,
        "price_mismatch": 1,
        "volume_mismatch": 1,
    }
    diffs = result.differences
    assert diffs.loc[pd.Timestamp(int(ib_bars["ts"][10]), tz="UTC"), "status"] == "missing_left"
    bad = diffs[diffs["status"] == "price_mismatch"]
    assert bad["max_price_diff"].tolist() == [0.25] and bad.index[0].value == ib_bars["ts"][101]
    loose = compare_bars(
        session,
        "ohlcv-1m",
        "ESH4",
        "ES:FUT:CME:USD:202403",
        "2024-01-02",
        "2024-01-03 00:05",
        left_dataset="GLBX.MDP3",
        price_tol=0.25,
        volume_tol=0.1,
    )
    assert loose.counts["match"] == 1440 - 1 and loose.counts["price_mismatch"] == loose.counts["volume_mismatch"] == 0

    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        [
            "compare",
            "ohlcv-1m",
            "--left",
            "ESH4",
            "--left-dataset",
            "GLBX.MDP3",
            "--right",
            "ES:FUT:CME:USD:202403",
            "--start",
            "2024-01-02",
            "--end",
            "2024-01-03 00:05",
        ],
        out,
        err,
    )
    assert code == 0, err.getvalue()
    assert "1437 match, 1 only in right, 5 only in left, 1 price mismatches, 1 volume mismatches" in out.getvalue()


def test_cli_dry_run_shows_ib_plan(hdi_env: dict[str, str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        [
            "ingest",
            "--provider",
            "ib",
            "--schema",
            "ohlcv-1m",
            "--symbols",
            "AAPL:STK,EUR:CASH::USD",
            "--start",
            "2024-01-01",
            "--end",
            "2024-02-15",
            "--dry-run",
        ],
        out,
        err,
    )
    assert code == 0, err.getvalue()
    text = out.getvalue()
    # 2 contracts x 45 one-day requests: 5 per contract every 2 s, and the last 30 wait for the 10-minute window
    assert re.search(r"minimum duration 10 min 0\d s under the provider's pacing rules", text)
    assert text.count("starts at +0 s") == 10
