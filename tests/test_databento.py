"""The databento provider against a local fake gateway (TLS) driven by the real ``databento`` client."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest
from conftest import databento_session
from fake_databento import KEY, FakeDatabento, Fault
from helpers import hdi_shell

import hdi_lab
from hdi_lab.core import catalog
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import (
    AuthError,
    ConfigError,
    CostLimitError,
    DataFormatError,
    ProviderError,
    RateLimitError,
    UnavailableError,
    ValidationError,
)
from hdi_lab.schemas import ONLY_FROM, Schema

pytestmark = pytest.mark.integration
#: read at import: the autouse clean_environ fixture removes vendor keys before each test runs
LIVE_KEY = os.environ.get("HDI_DATABENTO_API_KEY") or os.environ.get("DATABENTO_API_KEY")
GLBX = "GLBX.MDP3"


def _ingest(s: HdiSession, **kw: object) -> hdi_lab.IngestReport:
    args: dict[str, object] = dict(
        provider="databento", dataset=GLBX, schema="ohlcv-1m", symbols=["ESH4"], start="2024-03-12", end="2024-03-14"
    )
    args.update(kw)
    return hdi_lab.ingest(session=s, **args)  # type: ignore[arg-type]


def _count(s: HdiSession, table: str) -> int:
    return int(hdi_lab.sql(f"SELECT count(*) AS n FROM {table}", session=s)["n"].iloc[0])


# --- ingest of every schema ---------------------------------------------------------------------

COMPARE = {
    "bar": ("open", "high", "low", "close", "volume"),
    "trades": ("price", "size", "sequence"),
    "tbbo": ("price", "size", "bid_px_00", "ask_px_00", "bid_sz_00", "ask_sz_00"),
    "statistics": ("stat_type", "price", "quantity"),
}


@pytest.mark.parametrize("schema", [s.value for s in Schema if s not in ONLY_FROM])  # ohlcv-5s: IB's only
def test_ingest_each_schema_stores_exactly_what_was_served(dbs: HdiSession, fake: FakeDatabento, schema: str) -> None:
    sparse = schema in ("ohlcv-1h", "ohlcv-1d", "statistics", "definition")
    start, end = ("2024-02-20", "2024-03-10") if sparse else ("2024-03-12", "2024-03-14")
    report = _ingest(dbs, schema=schema, symbols=["ESH4", "NQH4"], start=start, end=end)
    served = fake.served_of(schema)
    assert [c.chunk.schema.value for c in report.chunks if not c.chunk.companion] == [schema, schema]
    assert [p["schema"] for e, p in fake.calls if e == "timeseries.get_range"].count(schema) == 2
    assert report.fetched == len(served) > 0 and report.quarantined == 0 and report.warnings == []
    assert report.inserted == len(served)
    # the instruments' definitions are stored with the data (before it), or are the data
    defs = fake.served_of("definition")
    stored = hdi_lab.sql("SELECT instrument_id, raw_symbol FROM instruments ORDER BY 1", session=dbs)
    assert set(stored["instrument_id"]) == set(defs["instrument_id"].tolist())
    assert set(stored["raw_symbol"]) == {"ESH4", "NQH4"}
    if schema == "definition":
        assert not any(c.chunk.companion for c in report.chunks)
        return
    assert report.definitions == len(defs) > 0 and report.chunks[0].chunk.companion
    assert f"definitions {len(defs)}" in str(report)
    frame = hdi_lab.query(schema, ["ESH4", "NQH4"], start, end, session=dbs, price_type="fixed")
    order = np.lexsort((served["instrument_id"], served["ts_event"]))
    got = frame.reset_index().sort_values(["ts_event", "instrument_id"], kind="stable")
    assert len(got) == len(served)
    assert got["ts_event"].astype("int64").to_numpy().tolist() == served["ts_event"][order].astype(np.int64).tolist()
    assert got["instrument_id"].to_numpy().tolist() == served["instrument_id"][order].tolist()
    cols = COMPARE["bar" if schema.startswith("ohlcv") else schema]
    if schema in ("trades", "tbbo"):  # ties on ts_event: compare as sorted multisets per column
        for c in cols:
            assert sorted(got[c].astype("int64").tolist()) == sorted(served[c].astype(np.int64).tolist()), c
    else:
        for c in cols:
            assert got[c].astype("int64").tolist() == served[c][order].astype(np.int64).tolist(), c


def test_acceptance_form_parent_symbol(dbs: HdiSession, fake: FakeDatabento) -> None:
    report = hdi_lab.ingest(
        provider="databento",
        dataset="GLBX.MDP3",
        schema="ohlcv-1d",
        symbols=["ES.FUT"],
        stype_in="parent",
        start="2024-02-01",
        end="2024-03-01",
        session=dbs,
    )
    assert report.inserted == len(fake.served_of("ohlcv-1d")) > 0
    df = hdi_lab.query("ohlcv-1d", "ES.FUT", "2024-02-01", "2024-03-01", session=dbs)
    assert set(df["instrument_id"]) == {400001, 400002, 400005, 400006}  # ESH4 ESM4 ESU4 ESZ4, all listed


def test_continuous_symbol_rolls_on_2024_03_14(dbs: HdiSession) -> None:
    _ingest(dbs, schema="ohlcv-1d", symbols=["ES.c.0"], stype_in="continuous", start="2024-03-10", end="2024-03-20")
    df = hdi_lab.query("ohlcv-1d", "ES.c.0", "2024-03-10", "2024-03-20", session=dbs)
    before, after = df[df.index < "2024-03-14"], df[df.index >= "2024-03-14"]
    assert set(before["instrument_id"]) == {400001} and set(after["instrument_id"]) == {400002}
    assert len(before) and len(after)


# --- auto-discovery -------------------------------------------------------------------------------


def test_query_discovers_a_missing_symbol(dbs: HdiSession, fake: FakeDatabento) -> None:
    t0 = time.perf_counter()
    df = hdi_lab.query("definition", "NQM4", "2024-03-01", "2024-03-05", dataset=GLBX, session=dbs)
    assert time.perf_counter() - t0 < 2.0
    assert fake.count("symbology.resolve") == 1
    assert [p["schema"] for e, p in fake.calls if e == "timeseries.get_range"] == ["definition"]
    assert len(df) and set(df["instrument_id"]) == {400004}
    hdi_lab.query("definition", "NQM4", "2024-03-01", "2024-03-05", dataset=GLBX, session=dbs)
    assert fake.count("symbology.resolve") == 1  # stored now: no second fetch


def test_no_discovery_for_datasets_databento_does_not_serve(dbs: HdiSession, fake: FakeDatabento) -> None:
    with pytest.raises(ValidationError) as info:
        hdi_lab.query("ohlcv-1d", "ZZ:FUT:CME:USD:202403", "2024-03-01", "2024-03-05", dataset="IB", session=dbs)
    assert "Databento" not in str(info.value) and fake.calls == []


def test_discovery_uses_the_dataset_setting_and_reports_unknown_symbols(
    session: HdiSession, fake: FakeDatabento
) -> None:
    with databento_session(session, fake, databento_dataset=GLBX) as s:
        df = hdi_lab.query("ohlcv-1d", "ES.c.0", "2024-03-01", "2024-03-05", session=s)
        assert df.empty  # symbology known now, no bars ingested
        with pytest.raises(ValidationError, match="Databento does not know them"):
            hdi_lab.query("ohlcv-1d", "ZZZZ9", "2024-03-01", "2024-03-05", session=s)


def test_no_discovery_without_a_key(session: HdiSession, fake: FakeDatabento) -> None:
    with pytest.raises(ValidationError, match="ingest them first"):
        hdi_lab.query("ohlcv-1d", "NQM4", "2024-03-01", "2024-03-05", dataset=GLBX, session=session)
    assert fake.calls == []


# --- cost ------------------------------------------------------------------------------------------


def test_dry_run_reports_records_and_cost(dbs: HdiSession, fake: FakeDatabento) -> None:
    report = _ingest(dbs, schema="trades", dry_run=True)
    served = fake.records(
        {
            "dataset": GLBX,
            "schema": "trades",
            "stype_in": "raw_symbol",
            "symbols": "ESH4",
            "start": "2024-03-12",
            "end": "2024-03-14",
        }
    )
    defs = fake.records(
        {
            "dataset": GLBX,
            "schema": "definition",
            "stype_in": "raw_symbol",
            "symbols": "ESH4",
            "start": "2024-03-12",
            "end": "2024-03-14",
        }
    )
    assert report.fetched == len(served) > 0 and len(defs) > 0  # the estimate of the data alone
    assert report.cost_usd == pytest.approx((len(served) + len(defs)) * fake.usd_per_record)  # what is paid
    assert fake.count("timeseries.get_range") == 0 and _count(dbs, "trades") == 0
    assert "estimated cost $" in str(report)


def test_cost_guard_refuses_then_allow_cost_overrides(session: HdiSession, fake: FakeDatabento) -> None:
    with databento_session(session, fake, databento_max_cost_usd=0.5) as s:
        # ESM4: its volume has moved from ESH4 by then (the roll before ESH4's expiry on 2024-03-15)
        with pytest.raises(CostLimitError) as info:
            _ingest(s, schema="trades", symbols=["ESM4"])
        msg = str(info.value)
        assert "databento_max_cost_usd=$0.50" in msg and "allow_cost=True" in msg and "\n" not in msg
        assert fake.count("timeseries.get_range") == 0
        report = _ingest(s, schema="trades", symbols=["ESM4"], allow_cost=True)
        assert report.inserted > 0


# --- faults ---------------------------------------------------------------------------------------


def test_429_with_retry_after_then_success(dbs: HdiSession, fake: FakeDatabento) -> None:
    fake.faults.append(
        Fault("timeseries.get_range", 429, {"Retry-After": "0.3"}, "Too many requests", schema="ohlcv-1m")
    )
    t0 = time.perf_counter()
    report = _ingest(dbs, start="2024-03-12", end="2024-03-13")
    assert time.perf_counter() - t0 >= 0.3  # Retry-After honoured (backoff alone is 0.01 s)
    assert [p["schema"] for e, p in fake.calls if e == "timeseries.get_range"] == ["definition"] + ["ohlcv-1m"] * 2
    assert report.inserted == len(fake.served_of("ohlcv-1m")) > 0


def test_429_exhausted_is_a_rate_limit_error(dbs: HdiSession, fake: FakeDatabento) -> None:
    fake.faults += [Fault("timeseries.get_range", 429, {"Retry-After": "0"}) for _ in range(3)]
    with pytest.raises(RateLimitError, match="after 3 tries") as info:
        _ingest(dbs, start="2024-03-12", end="2024-03-13")
    assert info.value.status == 429 and info.value.provider == "databento"


def test_5xx_exhausting_retries_keeps_earlier_chunks_and_rerun_resumes(dbs: HdiSession, fake: FakeDatabento) -> None:
    bars = dict(schema="ohlcv-1m")
    fake.faults += [
        Fault("timeseries.get_range", 503, after=1, **bars),
        Fault("timeseries.get_range", 502, **bars),
        Fault("timeseries.get_range", 500, **bars),
    ]
    with pytest.raises(UnavailableError, match=r"HTTP 500.*after 3 tries") as info:
        _ingest(dbs, start="2024-03-11", end="2024-03-14")
    assert info.value.status == 500 and info.value.request_id == "fake-req-1"
    assert str(info.value).endswith("(2 of 4 chunks were committed before this and are kept)")  # definitions, day 1
    first = fake.records(
        {
            "dataset": GLBX,
            "schema": "ohlcv-1m",
            "stype_in": "raw_symbol",
            "symbols": "ESH4",
            "start": "2024-03-11",
            "end": "2024-03-12",
        }
    )
    assert _count(dbs, "ohlcv_1m") == len(first) > 0  # the first day stays committed
    report = _ingest(dbs, start="2024-03-11", end="2024-03-14")
    assert report.chunks_skipped == 2 and len(report.chunks) == 4  # the definitions and the first day
    whole = fake.records(
        {
            "dataset": GLBX,
            "schema": "ohlcv-1m",
            "stype_in": "raw_symbol",
            "symbols": "ESH4",
            "start": "2024-03-11",
            "end": "2024-03-14",
        }
    )
    assert _count(dbs, "ohlcv_1m") == len(whole) == len(first) + report.inserted


def test_truncated_stream_rolls_the_chunk_back(dbs: HdiSession, fake: FakeDatabento) -> None:
    fake.faults.append(Fault("timeseries.get_range", truncate=True))
    with pytest.raises(DataFormatError, match="truncated"):
        _ingest(dbs, schema="trades", start="2024-03-12", end="2024-03-13")
    assert _count(dbs, "trades") == 0 and _count(dbs, "ingest_log") == 0
    report = _ingest(dbs, schema="trades", start="2024-03-12", end="2024-03-13")
    assert report.inserted == _count(dbs, "trades") > 0


@pytest.mark.parametrize(
    ("schema", "table"),
    [("trades", "trades"), ("ohlcv-1d", "ohlcv_1d")],
    ids=["records-decode", "header-does-not-decode"],
)
def test_unfinished_zstd_download_fails_the_chunk_and_stores_nothing(
    dbs: HdiSession, fake: FakeDatabento, schema: str, table: str
) -> None:
    """A download whose zstd frame never ends (whole records, no frame end) is an error, not a short chunk.

    Not retried: the download completed as the gateway sent it; the chunk fails, and a re-run fetches it again.
    """
    fake.faults.append(Fault("timeseries.get_range", unfinished=True, schema=schema))
    with pytest.raises(DataFormatError, match="truncated") as info:
        _ingest(dbs, schema=schema, start="2024-03-12", end="2024-03-13")
    assert "re-run" in str(info.value) and KEY not in str(info.value)
    assert _count(dbs, table) == 0
    logged = hdi_lab.sql("SELECT schema FROM ingest_log", session=dbs)["schema"].tolist()
    assert logged == ["definition"]  # the definitions chunk before it committed; the failed chunk did not
    assert [p["schema"] for e, p in fake.calls if e == "timeseries.get_range"].count(schema) == 1
    report = _ingest(dbs, schema=schema, start="2024-03-12", end="2024-03-13")
    assert report.inserted == len(fake.served_of(schema)) == _count(dbs, table) > 0


def test_partial_resolution_ingests_the_rest_and_reports_it(dbs: HdiSession, fake: FakeDatabento) -> None:
    report = _ingest(dbs, symbols=["ESH4", "ESZ9"], start="2024-03-12", end="2024-03-13")
    assert report.inserted == len(fake.served_of("ohlcv-1m")) > 0
    assert len(report.warnings) == 2  # for the definitions and for the bars
    assert all("ESZ9" in w and "not found" in w for w in report.warnings)
    assert any("ohlcv-1m" in w for w in report.warnings) and any("definition" in w for w in report.warnings)
    assert "warning: " in str(report)


def test_partial_resolution_warnings_are_kept_in_the_ingest_log(dbs: HdiSession, fake: FakeDatabento) -> None:
    report = _ingest(dbs, symbols=["ESH4", "ESZ9"], start="2024-03-12", end="2024-03-13")
    logged = hdi_lab.sql("SELECT schema, warnings FROM ingest_log ORDER BY id", session=dbs)
    assert logged["schema"].tolist() == ["definition", "ohlcv-1m"]
    assert [w for ws in logged["warnings"] for w in ws] == report.warnings
    status = catalog.status(dbs)
    assert any("ESZ9" in w for w in status.recent["warnings"])


def test_a_connection_cut_mid_download_is_retried(dbs: HdiSession, fake: FakeDatabento) -> None:
    fake.faults.append(Fault("timeseries.get_range", cut=True, schema="trades"))
    report = _ingest(dbs, schema="trades", start="2024-03-12", end="2024-03-13")
    assert [p["schema"] for e, p in fake.calls if e == "timeseries.get_range"].count("trades") == 2
    assert report.inserted == len(fake.served_of("trades")) == _count(dbs, "trades") > 0


def test_connection_cuts_exhausting_retries_fail_the_chunk(dbs: HdiSession, fake: FakeDatabento) -> None:
    fake.faults += [Fault("timeseries.get_range", cut=True, schema="trades") for _ in range(3)]
    with pytest.raises(UnavailableError, match="broke off 3 times"):
        _ingest(dbs, schema="trades", start="2024-03-12", end="2024-03-13")
    assert _count(dbs, "trades") == 0


def test_definitions_with_the_data_can_be_turned_off(session: HdiSession, fake: FakeDatabento) -> None:
    with databento_session(session, fake, databento_definitions=False) as s:
        report = _ingest(s, start="2024-03-12", end="2024-03-13")
        assert [p["schema"] for e, p in fake.calls if e == "timeseries.get_range"] == ["ohlcv-1m"]
        assert report.inserted > 0 and "definitions" not in report.summary() and _count(s, "instruments") == 0


def test_cost_guard_counts_only_the_chunks_still_to_fetch(session: HdiSession, fake: FakeDatabento) -> None:
    def cost(schema: str, start: str, end: str) -> float:
        return (
            len(
                fake.records(
                    {
                        "dataset": GLBX,
                        "schema": schema,
                        "stype_in": "raw_symbol",
                        "symbols": "ESH4",
                        "start": start,
                        "end": end,
                    }
                )
            )
            * fake.usd_per_record
        )

    whole = cost("trades", "2024-03-11", "2024-03-14") + cost("definition", "2024-03-11", "2024-03-14")
    last_day = cost("trades", "2024-03-13", "2024-03-14")
    assert last_day < whole / 2
    with databento_session(session, fake, databento_max_cost_usd=whole) as s:
        _ingest(s, schema="trades", start="2024-03-11", end="2024-03-13")
    with databento_session(session, fake, databento_max_cost_usd=(last_day + whole) / 2) as s:
        with pytest.raises(CostLimitError):  # the whole range costs more than the limit ...
            _ingest(s, schema="trades", start="2024-03-11", end="2024-03-14", force=True)
        report = _ingest(s, schema="trades", start="2024-03-11", end="2024-03-14")  # ... what is left does not
        # skipped: the two trade days (the definitions' month chunk is keyed by the request's range)
        assert report.chunks_skipped == 2 and report.inserted > 0
    asked = [p for e, p in fake.calls if e == "metadata.get_cost"][-1]
    assert (asked["schema"], asked["start"][:10], asked["end"][:10]) == ("trades", "2024-03-13", "2024-03-14")


def test_bad_key_is_a_one_line_auth_error_without_the_key(session: HdiSession, fake: FakeDatabento) -> None:
    bad = "db-WrongKeyWrongKey0123456789"
    with databento_session(session, fake, databento_api_key=bad) as s, pytest.raises(AuthError) as info:
        _ingest(s)
    msg = str(info.value)
    assert "HDI_DATABENTO_API_KEY" in msg and "\n" not in msg and info.value.status == 401
    assert bad not in msg and bad not in repr(info.value) and KEY not in msg


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        (dict(symbols=["NOPE1"]), "check the symbols"),
    ],
)
def test_4xx_is_a_one_line_error_saying_what_to_change(
    dbs: HdiSession, fake: FakeDatabento, kw: dict[str, object], needle: str
) -> None:
    with pytest.raises(ProviderError) as info:
        _ingest(dbs, **kw)
    msg = str(info.value)
    assert needle in msg and "HTTP 422" in msg and "\n" not in msg and info.value.status == 422


@pytest.mark.parametrize(
    ("start", "end"), [("1700-01-01", "2024-03-12"), ("2010-01-04", "2010-01-05"), ("2024-12-31", "2025-01-02")]
)
def test_a_range_beyond_the_dataset_is_refused_before_planning(
    dbs: HdiSession, fake: FakeDatabento, start: str, end: str
) -> None:
    """A dry run from 1700 planned 118,342 chunks: the dataset's range (``metadata.get_dataset_range``) refuses it."""
    with pytest.raises(
        ValidationError,
        match=r"is outside the range Databento offers for GLBX.MDP3: "
        r"2018-01-01T00:00:00\+00:00 to 2025-01-01T00:00:00\+00:00; choose "
        r"start and end within it",
    ):
        _ingest(dbs, start=start, end=end, dry_run=True)
    assert [e for e, _ in fake.calls] == ["metadata.get_dataset_range"]


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        (dict(dataset="GLBX.MPD3"), "did you mean GLBX.MDP3"),
        (dict(dataset=None), "dataset is required"),
        (dict(schema="mbp-10"), "schema='mbp-10' is not valid"),
        (dict(symbols=["ES.FUT"]), "use stype_in=parent"),
        (dict(symbols=["ESH4"], stype_in="continuous"), "use stype_in=raw_symbol"),
        (dict(start="2024-03-14", end="2024-03-12"), "must be before end"),
    ],
)
def test_requests_are_validated_before_any_call(
    dbs: HdiSession, fake: FakeDatabento, kw: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle):
        _ingest(dbs, **kw)
    assert fake.calls == []


def test_missing_key_is_a_config_error_and_the_key_never_shows(session: HdiSession, dbs: HdiSession) -> None:
    with pytest.raises(ConfigError, match="HDI_DATABENTO_API_KEY"):
        _ingest(session)
    provider = dbs.provider("databento")
    assert KEY not in repr(provider) and KEY not in str(dbs.settings.masked())


# --- live ------------------------------------------------------------------------------------------


@pytest.mark.live
def test_live_databento_smoke(session: HdiSession) -> None:
    """Against the real gateway: needs --live and HDI_DATABENTO_API_KEY/DATABENTO_API_KEY (costs cents)."""
    if not LIVE_KEY:
        pytest.skip("no Databento key in HDI_DATABENTO_API_KEY / DATABENTO_API_KEY")
    with HdiSession(session.settings.replace(databento_api_key=LIVE_KEY, databento_max_cost_usd=1.0)) as s:
        report = hdi_lab.ingest(
            provider="databento",
            dataset=GLBX,
            schema="ohlcv-1d",
            symbols=["ES.FUT"],
            stype_in="parent",
            start="2024-02-01",
            end="2024-03-01",
            session=s,
        )
        assert report.inserted > 0
        df = hdi_lab.query("ohlcv-1d", "ES.FUT", "2024-02-01", "2024-03-01", session=s)
        assert len(df) == report.inserted and pd.api.types.is_float_dtype(df["close"])


# --- front ends ------------------------------------------------------------------------------------


def test_a_long_dry_run_is_estimated_per_span(dbs: HdiSession, fake: FakeDatabento) -> None:
    """More than SPAN_AFTER daily chunks: two vendor requests per run of contiguous chunks, not two per chunk; the
    totals are the vendor's, each chunk's share by its length, and they add up to what per-chunk requests give."""
    from hdi_lab.core.plan import SPAN_AFTER

    start, end = pd.Timestamp("2023-12-01", tz="UTC"), pd.Timestamp("2024-02-15", tz="UTC")
    days = (end - start).days
    assert days > SPAN_AFTER
    report = _ingest(dbs, start=start, end=end, dry_run=True)
    bars = [r for r in report.chunks if r.chunk.schema == Schema.OHLCV_1M]
    assert len(bars) == days
    # one span per schema (the bars, the definitions fetched along): 2 x (record count + cost)
    assert fake.count("metadata.get_record_count") == 2 and fake.count("metadata.get_cost") == 2
    served = fake.records(
        {"dataset": GLBX, "schema": "ohlcv-1m", "stype_in": "raw_symbol", "symbols": "ESH4",
         "start": str(start.date()), "end": str(end.date())}
    )  # fmt: skip
    assert sum(r.fetched for r in bars) == len(served) > 0
    assert sum(r.cost_usd or 0.0 for r in bars) == pytest.approx(len(served) * fake.usd_per_record)
    assert {r.fetched for r in bars} <= {len(served) // days, len(served) // days + 1}  # shared by length
    assert "together" in bars[0].warnings[0] and not bars[1].warnings
    # the per-chunk path (a short plan) gives the same total for the same days
    short = sum(_ingest(dbs, start=d, end=d + pd.Timedelta(days=1), dry_run=True).fetched
                for d in pd.date_range(start, end, freq="D", inclusive="left"))  # fmt: skip
    assert short == len(served)


def test_cli_dry_run_and_allow_cost(
    hdi_env: dict[str, str], fake: FakeDatabento, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from hdi_lab.frontend.cli import main

    for k, v in {
        "HDI_DATABENTO_API_KEY": KEY,
        "HDI_DATABENTO_GATEWAY": fake.url,
        "HDI_DATABENTO_MAX_COST_USD": "0.01",
    }.items():
        monkeypatch.setenv(k, v)
    argv = [
        "ingest",
        "--provider",
        "databento",
        "--dataset",
        GLBX,
        "--schema",
        "ohlcv-1m",
        "--symbols",
        "ESH4",
        "--start",
        "2024-03-12",
        "--end",
        "2024-03-13",
    ]
    out, err = io.StringIO(), io.StringIO()
    assert main([*argv, "--dry-run"], out, err) == 0 and "estimated cost $" in out.getvalue()
    assert main(argv, out, err) == 1 and "--allow-cost" in err.getvalue() and KEY not in err.getvalue()
    out = io.StringIO()
    assert main([*argv, "--allow-cost"], out, err) == 0 and "inserted 1380" in out.getvalue()


def test_magic_and_widget_offer_the_cost_override(
    hdi_env: dict[str, str], fake: FakeDatabento, monkeypatch: pytest.MonkeyPatch, session: HdiSession
) -> None:
    from IPython.core.error import UsageError

    from hdi_lab.frontend.widgets import IngestForm

    for k, v in {
        "HDI_DATABENTO_API_KEY": KEY,
        "HDI_DATABENTO_GATEWAY": fake.url,
        "HDI_DATABENTO_MAX_COST_USD": "0.01",
    }.items():
        monkeypatch.setenv(k, v)
    with hdi_shell() as shell:
        line = (
            f"%hdi_ingest --provider databento --dataset {GLBX} --schema ohlcv-1m --symbols ESH4 "
            "--start 2024-03-12 --end 2024-03-13 --quiet"
        )
        with pytest.raises(UsageError, match="databento_max_cost_usd"):
            shell.run_cell(line)
        report = shell.run_cell(line + " --allow-cost").result
        assert report.inserted == len(fake.served_of("ohlcv-1m")) > 0
    with databento_session(session, fake, databento_max_cost_usd=0.01) as s:
        form = IngestForm(s)
        form.provider.value, form.dataset.value, form.schema.value = "databento", GLBX, "ohlcv-1m"
        form.symbols.value, form.stype_in.value = "ESH4", "raw_symbol"
        form.start.value, form.end.value = pd.Timestamp("2024-03-13").date(), pd.Timestamp("2024-03-14").date()
        before = _count(s, "ohlcv_1m")  # the magic's day
        form.run_button.click()
        assert isinstance(form.last_error, CostLimitError) and _count(s, "ohlcv_1m") == before
        form.allow_cost.value = True
        form.run_button.click()
        assert form.last_error is None and form.report is not None and form.report.inserted > 0
        assert _count(s, "ohlcv_1m") == before + form.report.inserted
