"""Small helpers shared by the integration tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import functools
import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import databento as db
import numpy as np
import pandas as pd
import psycopg2
import zstandard
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import hdi_lab
from hdi_lab.config import load_settings
from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import empty_records, encode_dbn
from hdi_lab.frontend import cli

#: Every table hdi_lab writes market data, reference data or bookkeeping into.
DATA_TABLES = (
    "ohlcv_1s",
    "ohlcv_5s",
    "ohlcv_1m",
    "ohlcv_1h",
    "ohlcv_1d",
    "trades",
    "tbbo",
    "statistics",
    "instruments",
    "symbology",
)
ALL_TABLES = (*DATA_TABLES, "ingest_log", "quarantine")


def read_store(path: str | Path) -> db.DBNStore:
    """The DBN file through the real databento decoder.

    ``DBNStore.from_file`` keeps the file open until garbage collection, which raises a
    ResourceWarning (an error under ``filterwarnings = error``); ``from_bytes`` is the same decoder.
    """
    return db.DBNStore.from_bytes(Path(path).read_bytes())


def file_schema(path: str | Path) -> str:
    return Path(path).name.split(".")[1]


def decompressed(path: str | Path) -> bytes:
    """The plain DBN bytes of a .dbn.zst file."""
    return zstandard.ZstdDecompressor().decompressobj().decompress(Path(path).read_bytes())


def metadata_mapping(store: db.DBNStore) -> dict[str, list[tuple[dt.date, dt.date, int]]]:
    """The store's symbology as :mod:`hdi_lab.dbn.writer` ``mappings``."""
    return {
        sym: [(iv["start_date"], iv["end_date"], int(iv["symbol"])) for iv in ivs]
        for sym, ivs in store.mappings.items()
    }


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``hdi ARGV`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, out, err)
    return code, out.getvalue(), err.getvalue()


#: the data home of test sessions that name none (their read cache lives there), removed at exit
TEST_HOME = Path(tempfile.mkdtemp(prefix="hdi-test-home-"))
atexit.register(shutil.rmtree, TEST_HOME, ignore_errors=True)


def make_session(pg_url: str, schema: str, **extra: Any) -> HdiSession:
    settings = {"database_url": pg_url, "db_schema": schema, "home": TEST_HOME, **extra}
    return HdiSession(load_settings(settings, environ={}))


def drop_schema(pg_url: str, schema: str) -> None:
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        conn.close()


def schema_at_version(pg_url: str, schema: str, version: int) -> None:
    """Create ``schema`` as hdi_lab's migrations up to ``version`` left it (an older hdi_lab's database)."""
    from hdi_lab.storage.db import migrations

    conn = psycopg2.connect(pg_url)
    try:
        with conn, conn.cursor() as cur:
            s = f'"{schema}"'
            cur.execute(f"CREATE SCHEMA {s}")
            cur.execute(
                f"CREATE TABLE {s}.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for v, name, text in migrations():
                if v <= version:
                    cur.execute(text.replace("{s}", s))
                    cur.execute(f"INSERT INTO {s}.schema_migrations (version, name) VALUES (%s, %s)", (v, name))
    finally:
        conn.close()


def row_counts(session: HdiSession, tables: tuple[str, ...] = ALL_TABLES) -> dict[str, int]:
    """Row count of each hdi_lab table in the session's schema (through ``hdi_lab.sql``)."""
    s = session.schema
    text = " UNION ALL ".join(f'SELECT \'{t}\' AS t, count(*) AS n FROM "{s}"."{t}"' for t in tables)
    df = hdi_lab.sql(text, session=session)
    return {str(t): int(n) for t, n in zip(df["t"], df["n"], strict=True)}


#: tables compared whole between a serial and a cluster run (the rest hold ids, times or nothing there)
COMPARED = ("ohlcv_1m", "trades", "instruments", "symbology", "bar_counts", "publishers")
LOG_COLUMNS = "chunk_key, fetched, inserted, updated, duplicates, quarantined, deleted, forced"


def stored_rows(pg_url: str, schema: str, tables: tuple[str, ...] = COMPARED) -> dict[str, list[tuple[object, ...]]]:
    """Every row of ``tables`` in a fixed order, the ingest log's counts per chunk and the quarantine's size: what
    two runs that stored the same must agree on."""
    out: dict[str, list[tuple[object, ...]]] = {}
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            for table in tables:
                cur.execute(f'SELECT * FROM "{schema}"."{table}"')
                out[table] = sorted(cur.fetchall(), key=repr)
            cur.execute(f'SELECT {LOG_COLUMNS} FROM "{schema}".ingest_log ORDER BY chunk_key')
            out["ingest_log"] = cur.fetchall()
            cur.execute(f'SELECT count(*) FROM "{schema}".quarantine')
            out["quarantine"] = cur.fetchall()
    finally:
        conn.close()
    return out


def assert_nothing_written(session: HdiSession) -> None:
    counts = row_counts(session)
    assert counts == dict.fromkeys(ALL_TABLES, 0), counts


def table_exists(session: HdiSession, table: str) -> bool:
    df = hdi_lab.sql("SELECT to_regclass(%s) IS NOT NULL AS ok", (f'"{session.schema}".{table}',), session=session)
    return bool(df["ok"].iloc[0])


def ns(ts: object) -> int:
    t = pd.Timestamp(ts)  # type: ignore[arg-type]
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.as_unit("ns").value)


def index_ns(frame: pd.DataFrame) -> np.ndarray:
    """The DatetimeIndex as int64 nanoseconds since the epoch."""
    return frame.index.as_unit("ns").asi8


def col_ns(series: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(series).as_unit("ns").asi8


#: a futures contract of the synthetic continuous-futures data: (raw symbol, instrument_id, expiration UTC)
Contract = tuple[str, int, str]


def futures_dbn(folder: Path, name: str, schema: str, records: np.ndarray, contracts: tuple[Contract, ...]) -> Path:
    """``records`` of ``schema`` as a GLBX.MDP3 DBN file ``folder/name.schema.dbn.zst`` (hdi_lab.dbn.writer) of
    2023-12-29 to 2025-01-01, the contracts' raw symbols mapped to their instrument ids over 2023-2024."""
    maps = {sym: [(dt.date(2023, 1, 1), dt.date(2025, 1, 1), iid)] for sym, iid, _ in contracts}
    path = folder / f"{name}.{schema}.dbn.zst"
    path.write_bytes(
        encode_dbn(
            dataset="GLBX.MDP3",
            schema=schema,
            stype_in="raw_symbol",
            start=pd.Timestamp("2023-12-29", tz="UTC"),
            end=pd.Timestamp("2025-01-01", tz="UTC"),
            symbols=[c[0] for c in contracts],
            mappings=maps,
            records=records,
        )
    )
    return path


def futures_definitions(contracts: tuple[Contract, ...], root: str) -> np.ndarray:
    """Definition records of ``root``'s futures ``contracts`` received 2023-12-29: instrument class F, exchange
    XCME, listed 400 days before their expiration, tick 0.25."""
    defs = empty_records("definition", len(contracts))
    for r, (sym, iid, expiration) in enumerate(contracts):
        exp = pd.Timestamp(expiration, tz="UTC")
        values = dict(
            publisher_id=1,
            instrument_id=iid,
            ts_event=pd.Timestamp("2023-12-29", tz="UTC").value,
            ts_recv=pd.Timestamp("2023-12-29", tz="UTC").value,
            raw_symbol=sym.encode(),
            asset=root.encode(),
            group=root.encode(),
            exchange=b"XCME",
            security_type=b"FUT",
            instrument_class=b"F",
            currency=b"USD",
            expiration=exp.value,
            activation=(exp - pd.Timedelta(days=400)).value,
            min_price_increment=250_000_000,
            display_factor=10_000_000,
        )
        for field, value in values.items():
            defs[r][field] = value
    return defs


def daily_bars(bars: list[tuple[int, int, float, float, float, float, int]]) -> np.ndarray:
    """``ohlcv-1d`` records (publisher 1) of ``(ts_event ns, instrument_id, open, high, low, close, volume)`` rows,
    prices in units (stored as int64 1e-9)."""
    rec = empty_records("ohlcv-1d", len(bars))
    rec["publisher_id"] = 1
    for j, name in enumerate(("ts_event", "instrument_id", "open", "high", "low", "close", "volume")):
        values = np.array([b[j] for b in bars])
        rec[name] = (
            np.rint(values * 1_000_000_000).astype(np.int64) if name in ("open", "high", "low", "close") else values
        )
    return rec


#: pandas offset aliases of the rollup intervals hdi_lab accepts
PANDAS_RULE = {"5m": "5min", "15m": "15min", "30m": "30min", "1h": "1h", "4h": "4h", "1d": "1D"}
#: the sample data's publishers -> their exchange calendar (GLBX.MDP3: CME Globex, XNAS.ITCH: Nasdaq)
SAMPLE_CALENDARS = {1: "CMES", 2: "XNAS"}


@functools.cache
def xc_schedule(code: str) -> pd.DataFrame:
    """exchange_calendars' schedule of ``code`` (session, open, close), straight from the library."""
    import exchange_calendars as xc

    sched = xc.get_calendar(code, start="2000-01-01").schedule
    return pd.DataFrame(
        {"session": sched.index.tz_localize(None).as_unit("ns"), "open": sched["open"], "close": sched["close"]}
    ).reset_index(drop=True)


def xc_sessions(code: str, starts: pd.DatetimeIndex, length: pd.Timedelta) -> np.ndarray:
    """The session of each bar ``[start, start + length)`` computed independently of hdi_lab, with pandas on
    exchange_calendars' schedule: the first session closing after the bar's start, if it opens before the bar
    ends; NaT otherwise. datetime64[ns] dates, in the order of ``starts``."""
    sched = xc_schedule(code)
    left = pd.DataFrame({"ts": pd.DatetimeIndex(starts).as_unit("ns"), "row": np.arange(len(starts))})
    left = left.sort_values("ts", kind="stable")
    right = sched.assign(close=sched["close"].dt.as_unit("ns"))
    m = pd.merge_asof(left, right, left_on="ts", right_on="close", direction="forward", allow_exact_matches=False)
    hit = m["open"].notna() & (m["open"] < m["ts"] + length)
    out = np.full(len(starts), np.datetime64("NaT"), dtype="datetime64[ns]")
    out[m["row"].to_numpy()] = np.where(hit, m["session"].to_numpy(), np.datetime64("NaT"))
    return out


def sample_sessions(bars: pd.DataFrame, length: pd.Timedelta) -> np.ndarray:
    """:func:`xc_sessions` of sample bars, each by its publisher's calendar (:data:`SAMPLE_CALENDARS`)."""
    out = np.full(len(bars), np.datetime64("NaT"), dtype="datetime64[ns]")
    pubs = bars["publisher_id"].to_numpy()
    for pub, code in SAMPLE_CALENDARS.items():
        mine = pubs == pub
        out[mine] = xc_sessions(code, pd.DatetimeIndex(bars.index[mine]), length)
    return out


def resample_bars(bars: pd.DataFrame, interval: str) -> pd.DataFrame:
    """The reference rollup of a bars query: per symbol and instrument, pandas ``resample`` with OHLC
    first / max / min / last and volume sum; empty buckets dropped; shaped like ``query(..., interval=)``."""
    parts = []
    for (sym, iid), g in bars.groupby(["symbol", "instrument_id"], sort=False):
        r = g.resample(PANDAS_RULE[interval]).agg(
            {"publisher_id": "first", "open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
        )
        r = r.dropna(subset=["open"])
        r.insert(0, "instrument_id", iid)
        r.insert(0, "symbol", sym)
        parts.append(r)
    out = pd.concat(parts).reset_index().sort_values(["ts_event", "symbol", "instrument_id"], kind="stable")
    out = out.set_index("ts_event")
    for name in ("instrument_id", "publisher_id", "open", "high", "low", "close", "volume"):
        out[name] = out[name].astype(bars[name].dtype)
    out["symbol"] = out["symbol"].astype(bars["symbol"].dtype)
    if "session" in bars:  # each bucket's session, from exchange_calendars (sample publishers)
        out["session"] = sample_sessions(out, pd.Timedelta(PANDAS_RULE[interval]))
    return out[list(bars.columns)]


def by_time(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in (time, symbol, instrument) order, as :func:`resample_bars` returns them."""
    return frame.reset_index().sort_values(["ts_event", "symbol", "instrument_id"], kind="stable").set_index("ts_event")


class TestingShell(InteractiveShell):
    """An InteractiveShell whose ``run_cell`` re-raises the cell's exception (jupysql's ``_testing.py``)."""

    __test__ = False  # not a pytest test class

    def run_cell(self, *args: Any, **kwargs: Any) -> Any:
        result = super().run_cell(*args, **kwargs)
        result.raise_error()
        return result


def new_shell() -> TestingShell:
    cfg = Config()
    cfg.HistoryManager.enabled = False
    cfg.InteractiveShell.colors = "nocolor"
    return TestingShell(config=cfg)


def dispose_shell(shell: TestingShell) -> None:
    hdi_lab.unload_ipython_extension(shell)
    shell.cleanup()  # puts sys.modules["__main__"] and sys.std* back
    atexit.unregister(shell.atexit_operations)


@contextlib.contextmanager
def hdi_shell() -> Iterator[TestingShell]:
    """A TestingShell with ``%load_ext hdi_lab`` done (settings from the environment at first use)."""
    shell = new_shell()
    try:
        shell.run_cell("%load_ext hdi_lab")
        yield shell
    finally:
        dispose_shell(shell)


def definition_file(
    path: Path, *, instrument_id: int, symbol: str, start: pd.Timestamp, end: pd.Timestamp, received_ns: int
) -> Path:
    """A GLBX.MDP3 (publisher 1) definition file: one future ``symbol`` -> ``instrument_id``, received at
    ``received_ns``, its symbology on ``start``'s day, the file's range ``[start, end)``."""
    d = empty_records("definition", 1)
    d["publisher_id"], d["instrument_id"] = 1, instrument_id
    d["ts_event"] = d["ts_recv"] = received_ns
    d["raw_symbol"], d["asset"], d["exchange"], d["currency"] = symbol.encode(), b"TB", b"XCME", b"USD"
    d["security_type"], d["instrument_class"], d["min_price_increment"] = b"FUT", b"F", 250_000_000
    day = start.normalize()
    path.write_bytes(
        encode_dbn(
            dataset="GLBX.MDP3",
            schema="definition",
            stype_in="raw_symbol",
            start=start,
            end=end,
            symbols=[symbol],
            mappings={symbol: [(day.date(), (day + pd.Timedelta(days=1)).date(), instrument_id)]},
            records=d,
        )
    )
    return path
