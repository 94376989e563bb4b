"""Rolled-up bars (``query(..., interval=)``) and ``hdi db info`` on plain PostgreSQL (``date_bin``).

The TimescaleDB side (continuous aggregates, ``time_bucket``) is in ``test_timescale.py``.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from helpers import by_time, hdi_shell, resample_bars
from IPython.core.error import UsageError

import hdi_lab
from hdi_lab.core import catalog
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.frontend.cli import main
from hdi_lab.storage import aggregates, db, timescale

pytestmark = pytest.mark.integration


def _ingest(session: HdiSession, symbols: list[str], start: str, end: str) -> None:
    for sym in symbols:  # the sample provider serves one dataset per request
        hdi_lab.ingest(provider="sample", schema="ohlcv-1m", symbols=[sym], start=start, end=end, session=session)


def test_rollups_equal_pandas_resample(session: HdiSession) -> None:
    _ingest(session, ["ESH4", "AAPL"], "2024-01-02", "2024-01-05")
    bars = hdi_lab.query("ohlcv-1m", "ESH4,AAPL", "2024-01-02", "2024-01-05", price_type="fixed", session=session)
    assert len(bars) > 3000
    with session.connection().cursor() as cur:
        rollup = aggregates.choose(cur, session.schema, "ohlcv_1m", 300)
    session.connection().rollback()
    assert rollup.view is None and rollup.bucket_fn == "date_bin"  # plain PostgreSQL: computed
    for interval in ("5m", "15m", "30m", "1h", "4h", "1d"):
        got = hdi_lab.query(
            "ohlcv-1m", "ESH4,AAPL", "2024-01-02", "2024-01-05", price_type="fixed", interval=interval, session=session
        )
        assert list(got.columns) == list(bars.columns) and got.index.name == "ts_event"
        assert str(got.index.dtype) == str(bars.index.dtype)
        pd.testing.assert_frame_equal(by_time(got), resample_bars(bars, interval), obj=interval)
    # float prices are the fixed-point ones / 1e9, as for bars
    floats = hdi_lab.query("ohlcv-1m", "ESH4", "2024-01-02", "2024-01-05", interval="1h", session=session)
    fixed = hdi_lab.query(
        "ohlcv-1m", "ESH4", "2024-01-02", "2024-01-05", interval="1h", price_type="fixed", session=session
    )
    assert (floats["close"] == fixed["close"] / 1e9).all() and len(floats) == len(fixed) > 0


def test_rollup_follows_continuous_symbol_roll_and_whole_buckets(session: HdiSession) -> None:
    hdi_lab.ingest(
        provider="sample",
        schema="ohlcv-1m",
        symbols=["ES.c.0"],
        stype_in="continuous",
        start="2024-03-12",
        end="2024-03-16",
        session=session,
    )
    bars = hdi_lab.query("ohlcv-1m", "ES.c.0", "2024-03-12", "2024-03-16", price_type="fixed", session=session)
    assert bars["instrument_id"].nunique() == 2  # ESH4, then ESM4 after the roll
    for interval in ("1h", "1d"):
        got = hdi_lab.query(
            "ohlcv-1m", "ES.c.0", "2024-03-12", "2024-03-16", price_type="fixed", interval=interval, session=session
        )
        pd.testing.assert_frame_equal(by_time(got), resample_bars(bars, interval), obj=interval)
    # a start inside a bucket: the first bucket is the next whole one; the last one is whole too
    got = hdi_lab.query(
        "ohlcv-1m",
        "ES.c.0",
        "2024-03-12 10:02",
        "2024-03-12 10:31",
        price_type="fixed",
        interval="15m",
        session=session,
    )
    assert [str(t.time()) for t in got.index] == ["10:15:00", "10:30:00"]
    whole = resample_bars(bars, "15m")
    pd.testing.assert_frame_equal(got, whole.loc["2024-03-12 10:15":"2024-03-12 10:30"])
    # the bar length itself is the plain query
    same = hdi_lab.query("ohlcv-1m", "ES.c.0", "2024-03-12", "2024-03-13", interval="1m", session=session)
    pd.testing.assert_frame_equal(
        same, hdi_lab.query("ohlcv-1m", "ES.c.0", "2024-03-12", "2024-03-13", session=session)
    )


@pytest.mark.parametrize(
    ("schema", "interval", "message"),
    [
        ("trades", "5m", "bars only"),
        ("ohlcv-1m", "7m", "does not divide a day"),
        ("ohlcv-1m", "2d", "does not divide a day"),
        ("ohlcv-1m", "30s", "whole number of the stored 60s bars"),
        ("ohlcv-1h", "90m", "whole number of the stored 3600s bars"),
        ("ohlcv-1m", "five minutes", "use a number and a unit"),
        ("ohlcv-1m", "0m", "use a number and a unit"),
    ],
)
def test_bad_intervals_are_refused(session: HdiSession, schema: str, interval: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        hdi_lab.query(schema, "ESH4", "2024-01-02", "2024-01-03", interval=interval, session=session)


def test_cli_query_interval_and_db_info_on_plain_postgres(
    pg_url: str, db_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HDI_DB_SCHEMA", db_schema)

    def cli(*argv: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        assert main(["--database-url", pg_url, *argv], out, err) == 0, err.getvalue()
        return out.getvalue()

    cli(
        "ingest",
        "--quiet",
        "--provider",
        "sample",
        "--schema",
        "ohlcv-1m",
        "--symbols",
        "ESH4",
        "--start",
        "2024-01-02",
        "--end",
        "2024-01-03",
    )
    csv = cli(
        "query",
        "ohlcv-1m",
        "--symbols",
        "ESH4",
        "--start",
        "2024-01-02",
        "--end",
        "2024-01-03",
        "--interval",
        "1h",
        "--format",
        "csv",
    )
    frame = pd.read_csv(io.StringIO(csv), index_col="ts_event")
    assert list(frame.columns) == [
        *("symbol", "instrument_id", "publisher_id", "open", "high", "low", "close", "volume", "session")
    ]
    assert len(frame) == 23 and frame.index[1].startswith("2024-01-02 01:00:00")  # 22:00-23:00 is the break
    info = cli("db", "info")
    assert "plain PostgreSQL" in info and "date_bin" in info and "hypertables" not in info


def test_describe_plain_postgres(session: HdiSession) -> None:
    info = db.server_info(session.connection(), session.schema)
    assert info.timescaledb is None and info.flavour.startswith("plain PostgreSQL")
    assert info.hypertables.empty and info.policies.empty
    status = catalog.status(session)
    assert status.server is not None and status.server.timescaledb is None


def test_policies_from_settings() -> None:
    assert timescale.Policies.from_settings("7 days", None) == timescale.Policies("7 days", None)
    assert timescale.Policies.from_settings("off", "  ") == timescale.Policies(None, None)
    assert timescale.Policies.from_settings("14 days", "5 years") == timescale.Policies("14 days", "5 years")


def test_magic_query_interval(hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    with hdi_shell() as shell:
        shell.run_cell(
            "%hdi_ingest --provider sample --schema ohlcv-1m --symbols ESH4 --start 2024-01-02 --end 2024-01-03 --quiet"
        )
        frame = shell.run_cell("%hdi_query ohlcv-1m ESH4 2024-01-02 2024-01-03 --interval 1h").result
        assert isinstance(frame, pd.DataFrame) and len(frame) == 23
        assert (frame.index.minute == 0).all() and frame["volume"].sum() > 0
        with pytest.raises(UsageError, match="only -o/--out"):
            shell.run_cell("%%hdi_query --interval 1h\nSELECT 1")
