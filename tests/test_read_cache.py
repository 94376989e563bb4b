"""The read cache (hdi_lab.core.cache, hdi_lab.storage.cached, hdi_lab.storage.versions): queries served from Arrow
files under HDI_HOME equal queries read from the database, whatever wrote the tables since: another process's
re-ingest of a revised file, a live stream, a hand-written statement, a write committing while a read fills the
cache. Real PostgreSQL, real DBN bytes, real processes; the cache's own files on disk."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import pyarrow as pa
import pytest
from fake_databento_live import FakeLiveGateway, live_session
from helpers import drop_schema, make_session, run_cli

import hdi_lab
from hdi_lab.config import load_settings
from hdi_lab.core import live
from hdi_lab.core.cache import ReadCache
from hdi_lab.core.session import HdiSession, default_session
from hdi_lab.dbn.writer import empty_records, encode_dbn
from hdi_lab.errors import ConfigError
from hdi_lab.schemas import Schema, SType
from hdi_lab.storage import cached, read, scan
from hdi_lab.storage.cached import Day

ROOT = Path(__file__).resolve().parents[1]
FUT = dict(provider="sample", symbols="ES.FUT", stype_in="parent", start="2024-03-11", end="2024-03-16")
TICKS = dict(provider="sample", symbols="ESH4", start="2024-03-12", end="2024-03-14")


def _cache(session: HdiSession) -> ReadCache:
    cache = session.cache
    assert cache is not None
    return cache


class Spy:
    """Counts what a session's cache answered (hits, misses) and what it was given (puts, counted as the writer
    makes the days handed to it: :meth:`take` waits for it): the real cache runs."""

    def __init__(self, cache: ReadCache, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: Counter[str] = Counter()
        self.cache = cache
        get_many, put_later = cache.get_many, cache.put_later

        def spied_get_many(*args: Any) -> Any:
            got = get_many(*args)
            self.seen.update("hit" if one is not None else "miss" for one in got)
            return got

        def spied_put_later(days: Any, size: int) -> None:
            def made() -> Any:
                out = list(days())
                self.seen["put"] += len(out)
                return out

            put_later(made, size)

        monkeypatch.setattr(cache, "get_many", spied_get_many)
        monkeypatch.setattr(cache, "put_later", spied_put_later)

    def take(self) -> dict[str, int]:
        assert self.cache.flush(30)
        out = dict(self.seen)
        self.seen.clear()
        return out


def _same(a: Any, b: Any) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    else:
        assert a.equals(b), (a.schema, b.schema)


# -- one stored schema for the read-only comparisons -------------------------------------------------------------


@pytest.fixture(scope="module")
def stored(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HdiSession, HdiSession]]:
    """A schema holding ES futures (parent and continuous symbology, definitions, statistics, 1m/1h/1d bars over a
    roll) and ESH4 ticks and 1s bars: a session with a cache of its own, and one without."""
    schema = f"t_cache_{os.getpid()}"
    home = tmp_path_factory.mktemp("home")
    on = make_session(pg_url, schema, home=home)
    try:
        for sch in ("definition", "statistics", "ohlcv-1m", "ohlcv-1h", "ohlcv-1d"):
            hdi_lab.ingest(**FUT, schema=sch, session=on)  # type: ignore[arg-type]
        hdi_lab.ingest(**{**FUT, "symbols": "ES.c.0", "stype_in": "continuous"}, schema="ohlcv-1m", session=on)  # type: ignore[arg-type]
        for sch in ("trades", "tbbo", "statistics", "ohlcv-1s"):
            hdi_lab.ingest(**TICKS, schema=sch, session=on)  # type: ignore[arg-type]
        off = make_session(pg_url, schema, cache=False)
        yield on, off
        off.close()
    finally:
        on.close()
        drop_schema(pg_url, schema)


READS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("ohlcv-1m", ["ESH4", "ESM4"], "2024-03-11", "2024-03-16"), {}),
    # partly covered days (read whole and cached for 1m bars), the roll H4 -> M4 on 2024-03-14, one instrument
    # under two symbols
    (("ohlcv-1m", ["ES.c.0", "ESM4"], "2024-03-12T13:07Z", "2024-03-15T21:00:00.000000123Z"), {}),
    (("ohlcv-1m", "ES.FUT", "2024-03-13", "2024-03-15"), {"columns": ["close", "volume"], "price_type": "fixed"}),
    (("ohlcv-1m", "ESM4", "2024-03-12T13:07Z", "2024-03-14T21:00Z"), {}),  # one span, its days read whole
    (("ohlcv-1m", "ES.c.0", "2024-03-11", "2024-03-16"), {"output": "arrow"}),
    (("ohlcv-1h", "ES.c.0", "2024-03-11", "2024-03-16"), {}),
    (("ohlcv-1d", "ES.FUT", "2024-03-11", "2024-03-16"), {}),
    (("ohlcv-1m", "ESH4", "2024-03-11", "2024-03-16"), {"interval": "15m"}),  # rollups read the table
    (("ohlcv-1m", "ESH4", "2024-03-12", "2024-03-15"), {"interval": "1h", "align": "session"}),
    (("ohlcv-1h", "ES.c.0", "2024-03-11", "2024-03-16"), {"adjust": "ratio"}),
    # ticks and 1s bars: whole days cached, the partly covered ones read as asked
    (("trades", "ESH4", "2024-03-12", "2024-03-14"), {}),
    (("trades", "ESH4", "2024-03-12T15:00Z", "2024-03-13T18:30:00.5Z"), {"output": "arrow"}),
    (("tbbo", "ESH4", "2024-03-12", "2024-03-14"), {"price_type": "fixed"}),
    (("statistics", "ESH4", "2024-03-12", "2024-03-14"), {}),
    (("ohlcv-1s", "ESH4", "2024-03-12T20:00Z", "2024-03-14"), {}),
    (("definition", "ES.FUT", "2024-03-11", "2024-03-16"), {}),
]


@pytest.mark.integration
@pytest.mark.parametrize("whole", [False, True], ids=["days", "whole"])
@pytest.mark.parametrize(("args", "kwargs"), READS, ids=[f"{a[0]}-{i}" for i, (a, _) in enumerate(READS)])
def test_cached_reads_equal_reads_from_the_database(
    stored: tuple[HdiSession, HdiSession],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    whole: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cold, then warm: put together from the cached days, or (``whole``: every read of cached days kept whole in
    memory) the rows kept whole."""
    if whole:
        monkeypatch.setattr(read, "MEMO_PIECES", 1)
    on, off = stored
    want = hdi_lab.query(*args, session=off, **kwargs)
    assert len(want) > 0
    _cache(on).clear()
    cold = hdi_lab.query(*args, session=on, **kwargs)
    assert _cache(on).flush(30)
    warm = hdi_lab.query(*args, session=on, **kwargs)
    _same(cold, want)
    _same(warm, want)
    _same(hdi_lab.query(*args, session=on, **kwargs), want)


@pytest.mark.integration
def test_a_read_of_many_days_is_kept_whole_and_never_stale(
    session: HdiSession, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of at least MEMO_PIECES cached instrument-days is kept put together in memory: repeated, it takes
    no day at all; the frame it gives is the caller's; any write to one of its days reads the days again."""
    minutes = np.arange(0, 3 * 1440, 7)
    hdi_lab.ingest(provider="file", path=str(_file(tmp_path / "v1.dbn.zst", _bars(minutes))), session=session)
    args = ("ohlcv-1m", SYMBOL, "2024-01-02", "2024-01-05")
    cache = _cache(session)
    recalled: list[bool] = []
    recall = cache.recall

    def spied_recall(*args: Any) -> Any:  # one real recall a call: what it found
        got = recall(*args)
        recalled.append(got is not None)
        return got

    monkeypatch.setattr(cache, "recall", spied_recall)
    spy = Spy(cache, monkeypatch)
    with make_session(pg_url, session.schema, cache=False) as off:
        hdi_lab.query(*args, session=session)  # three days: fewer than MEMO_PIECES, put together each time
        assert cache.flush(30)
        hdi_lab.query(*args, session=session)
        assert recalled == [] and spy.take() == {"miss": 3, "put": 3, "hit": 3}
        monkeypatch.setattr(read, "MEMO_PIECES", 3)
        first = hdi_lab.query(*args, session=session)
        with pd.option_context("mode.copy_on_write", False):  # with it on, pandas makes to_numpy() read-only
            first["volume"].to_numpy()[:] = -1  # the caller's frame, changed in place
            first["close"].to_numpy()[:] = -1.0
        again = hdi_lab.query(*args, session=session)
        assert recalled == [False, True] and spy.take() == {"hit": 3}  # the second read took no day
        pd.testing.assert_frame_equal(again, hdi_lab.query(*args, session=off))
        conn = psycopg2.connect(pg_url)
        with conn, conn.cursor() as cur:
            cur.execute(
                f'UPDATE "{session.schema}".ohlcv_1m SET volume = volume + 1 WHERE ts_event = %s',
                (DAY0 + pd.Timedelta(minutes=7 * 206),),  # on the second day
            )
            assert cur.rowcount == 1
        conn.close()
        after = hdi_lab.query(*args, session=session)
        assert recalled[-1] is False
        pd.testing.assert_frame_equal(after, hdi_lab.query(*args, session=off))
        assert int((after["volume"] - again["volume"]).sum()) == 1


@pytest.mark.integration
def test_a_repeated_read_is_served_from_the_cache(
    stored: tuple[HdiSession, HdiSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    on, _ = stored
    cache = _cache(on)
    cache.clear()
    spy = Spy(cache, monkeypatch)
    args = ("ohlcv-1m", ["ESH4", "ESM4"], "2024-03-11", "2024-03-14")
    first = hdi_lab.query(*args, session=on)
    assert cache.flush(30)
    assert spy.take() == {"miss": 6, "put": 6}  # 2 instruments x 3 days
    assert cache.usage().files == 6
    again = hdi_lab.query(*args, session=on)
    assert spy.take() == {"hit": 6}
    pd.testing.assert_frame_equal(first, again)
    # a wider read takes the cached days and reads the others; a partly covered day of 1m bars is read whole
    hdi_lab.query("ohlcv-1m", "ESH4", "2024-03-12", "2024-03-15T09:30Z", session=on)
    assert cache.flush(30)
    assert spy.take() == {"hit": 2, "miss": 2, "put": 2}  # 03-14 and (until 09:30, read whole) 03-15
    # ticks: only whole days are cached
    hdi_lab.query("trades", "ESH4", "2024-03-12T12:00Z", "2024-03-14", session=on)
    assert cache.flush(30)
    assert spy.take() == {"miss": 1, "put": 1}  # 2024-03-13 whole; 03-12 from noon read as asked
    day = Day(cached_identity(on), "trades", 400001, _day("2024-03-13"))
    assert cache.path(day).is_file()


def cached_identity(session: HdiSession) -> str:
    """The folder of the session's schema in the cache (as :func:`hdi_lab.storage.versions.observe` reads it)."""
    row = hdi_lab.sql(
        f"SELECT identity::text || '-' || tableoid::int8 FROM \"{session.schema}\".market_epochs LIMIT 1",
        session=session,
    )
    return str(row.iloc[0, 0])


def _day(date: str) -> int:
    return pd.Timestamp(date, tz="UTC").value // 86_400_000_000_000


@pytest.mark.integration
def test_damaged_files_are_read_again_and_rewritten(stored: tuple[HdiSession, HdiSession]) -> None:
    on, off = stored
    cache = _cache(on)
    args = ("ohlcv-1m", "ESH4", "2024-03-12", "2024-03-14")
    hdi_lab.query(*args, session=on)
    assert cache.flush(30)
    ident = cached_identity(on)
    cut, garbage = (cache.path(Day(ident, "ohlcv_1m", 400001, _day(d))) for d in ("2024-03-12", "2024-03-13"))
    cut.write_bytes(cut.read_bytes()[:-100])  # a file cut short (a writer killed before its rename cannot do this)
    garbage.write_bytes(b"not an arrow file")
    with HdiSession(on.settings) as other:  # another reader of the folder (this one keeps the days in memory)
        pd.testing.assert_frame_equal(hdi_lab.query(*args, session=other), hdi_lab.query(*args, session=off))
        assert _cache(other).flush(30)
    for path in (cut, garbage):  # rewritten whole
        assert pa.ipc.open_file(path.read_bytes()).read_all().num_rows > 1000


# -- writes invalidate ---------------------------------------------------------------------------------------------

DATASET = "GLBX.MDP3"
DAY0 = pd.Timestamp("2024-01-02", tz="UTC")
TEST_ID, SYMBOL = 9001, "TESTA"
PX = 1_000_000_000


def _bars(minutes: np.ndarray, shift: int = 0) -> np.ndarray:
    rec = empty_records("ohlcv-1m", len(minutes))
    rec["publisher_id"] = 1
    rec["instrument_id"] = TEST_ID
    rec["ts_event"] = DAY0.value + minutes.astype(np.int64) * 60_000_000_000
    o = 4800 * PX + minutes.astype(np.int64) * 250_000_000 + shift
    rec["open"], rec["high"], rec["low"], rec["close"] = o, o + PX, o - PX, o + 500_000_000
    rec["volume"] = minutes + 10
    return rec


def _file(path: Path, rec: np.ndarray) -> Path:
    """A DBN file of ``rec`` (TESTA's bars) over three days from DAY0."""
    day = (DAY0.date(), (DAY0 + pd.Timedelta(days=3)).date())
    path.write_bytes(
        encode_dbn(
            dataset=DATASET,
            schema="ohlcv-1m",
            stype_in="raw_symbol",
            start=DAY0,
            end=DAY0 + pd.Timedelta(days=3),
            symbols=[SYMBOL],
            mappings={SYMBOL: [(*day, TEST_ID)]},
            records=rec,
            compress=True,
        )
    )
    return path


@pytest.mark.integration
def test_a_correction_ingested_by_another_process_is_seen_by_the_next_read(
    session: HdiSession, hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vendor correction (a revised file over the same range) re-ingested by ``hdi ingest --force`` in another
    process: the next read of the cached days returns the corrected rows. Of three days, the first is unchanged
    (still taken from the cache), the second only loses a bar (the chunk deletes it), the third has every price
    moved and a bar added."""
    minutes = np.arange(0, 3 * 1440, 7)
    hdi_lab.ingest(provider="file", path=str(_file(tmp_path / "v1.dbn.zst", _bars(minutes))), session=session)
    spy = Spy(_cache(session), monkeypatch)
    args = ("ohlcv-1m", SYMBOL, "2024-01-02", "2024-01-05")
    before = hdi_lab.query(*args, session=session, price_type="fixed")
    assert _cache(session).flush(30)
    assert hdi_lab.query(*args, session=session, price_type="fixed").equals(before)
    assert spy.take() == {"miss": 3, "put": 3, "hit": 3}
    revised = np.sort(np.r_[minutes[minutes != 1442], 4318])
    rec = _bars(revised)
    rec["close"][rec["ts_event"] >= (DAY0 + pd.Timedelta(days=2)).value] += 250_000_000
    path = _file(tmp_path / "v2.dbn.zst", rec)
    run = subprocess.run(
        [sys.executable, "-m", "hdi_lab.frontend.cli", "ingest", "--quiet", "--force", str(path)],
        env={**os.environ, **hdi_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    after = hdi_lab.query(*args, session=session, price_type="fixed")
    assert spy.take() == {"hit": 1, "miss": 2, "put": 2}  # day 1 unchanged, days 2 and 3 read again
    np.testing.assert_array_equal(after.index.asi8, np.sort(rec["ts_event"]).astype(np.int64))
    np.testing.assert_array_equal(after["close"].to_numpy(), rec["close"][np.argsort(rec["ts_event"])])
    with make_session(session.settings.database_url, session.schema, cache=False) as off:
        pd.testing.assert_frame_equal(after, hdi_lab.query(*args, session=off, price_type="fixed"))


@pytest.mark.integration
def test_hand_written_statements_invalidate_the_whole_table(session: HdiSession, pg_url: str) -> None:
    hdi_lab.ingest(**TICKS, schema="ohlcv-1m", session=session)  # type: ignore[arg-type]
    args = ("ohlcv-1m", "ESH4", "2024-03-12", "2024-03-14")
    with make_session(pg_url, session.schema, cache=False) as off:
        for statement in (
            "UPDATE {t} SET close = close + 1000000000 WHERE ts_event = '2024-03-12 15:00+00'",
            "DELETE FROM {t} WHERE ts_event >= '2024-03-13 20:00+00'",
            (
                "INSERT INTO {t} SELECT instrument_id, publisher_id, ts_event + interval '30 seconds', open, high, "
                "low, close, volume FROM {t} WHERE ts_event < '2024-03-12 01:00+00'"
            ),
            "TRUNCATE {t}",
        ):
            hdi_lab.query(*args, session=session)
            assert _cache(session).flush(30)
            conn = psycopg2.connect(pg_url)
            with conn, conn.cursor() as cur:
                cur.execute(statement.format(t=f'"{session.schema}".ohlcv_1m'))
            conn.close()
            got = hdi_lab.query(*args, session=session)
            pd.testing.assert_frame_equal(got, hdi_lab.query(*args, session=off))
    assert len(got) == 0


@pytest.mark.integration
def test_a_write_committing_while_a_read_fills_the_cache_leaves_no_stale_day(
    session: HdiSession, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader reads the days' versions before their rows: a correction that commits in between gives it the
    new rows under the old version, which the next read does not take."""
    minutes = np.arange(0, 1440, 5)
    hdi_lab.ingest(provider="file", path=str(_file(tmp_path / "v1.dbn.zst", _bars(minutes))), session=session)
    writer = make_session(pg_url, session.schema, cache=False)
    fetch, committed = scan.fetch, []

    def fetch_after_a_commit(*args: Any, **kwargs: Any) -> Any:
        if not committed:  # another session's correction commits between the versions and the rows
            path = _file(tmp_path / "v2.dbn.zst", _bars(minutes, shift=7 * PX))
            committed.append(hdi_lab.ingest(provider="file", path=str(path), force=True, session=writer))
        return fetch(*args, **kwargs)

    args = ("ohlcv-1m", SYMBOL, "2024-01-02", "2024-01-03")
    with monkeypatch.context() as m:
        m.setattr(cached.scan, "fetch", fetch_after_a_commit)
        first = hdi_lab.query(*args, session=session, price_type="fixed")
    assert committed[0].updated == len(minutes)
    assert (first["open"].to_numpy() == _bars(minutes, shift=7 * PX)["open"]).all()  # read after the commit
    assert _cache(session).flush(30)
    spy = Spy(_cache(session), monkeypatch)
    again = hdi_lab.query(*args, session=session, price_type="fixed")
    assert spy.take() == {"miss": 1, "put": 1}  # cached under the version seen before the commit: not taken
    pd.testing.assert_frame_equal(again, first)
    writer.close()


@pytest.mark.integration
def test_live_writes_invalidate_the_days_they_write(session: HdiSession) -> None:
    """Half a day of trades ingested and read (cached whole), then the day streamed live: the next read has it
    all."""
    gw = FakeLiveGateway(window=("2024-03-01", "2024-03-02"))
    try:
        hdi_lab.ingest(provider="sample", schema="trades", symbols="ES.c.0", stype_in="continuous",
                       start="2024-03-01", end="2024-03-01T12:00Z", session=session)  # fmt: skip
        args = ("trades", "ES.c.0", "2024-03-01", "2024-03-02")
        half = hdi_lab.query(*args, session=session)
        assert _cache(session).flush(30)
        served = gw.records(Schema.TRADES, SType.CONTINUOUS, ["ES.c.0"])
        assert 0 < len(half) < len(served)
        with live_session(session, gw) as s:
            handle = live.start(
                live.make_request("databento", dataset="GLBX.MDP3", schema="trades", symbols="ES.c.0",
                                  stype_in="continuous"),
                s,
                heartbeat_interval_s=1,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while handle.status().records < len(served) and time.monotonic() < deadline:
                time.sleep(0.05)
            handle.stop()
        full = hdi_lab.query(*args, session=session, price_type="fixed")
        assert len(full) == len(served)
        np.testing.assert_array_equal(full["price"].to_numpy(), served["price"].astype(np.int64))
    finally:
        gw.close()


# -- settings, bounds, processes -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_hdi_cache_off_reads_without_files(
    hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HDI_HOME", str(tmp_path))
    with default_session() as s:
        hdi_lab.ingest(**TICKS, schema="ohlcv-1h", session=s)  # type: ignore[arg-type]
    monkeypatch.setenv("HDI_CACHE", "off")
    with default_session() as s:
        assert s.cache is None
    assert len(hdi_lab.query("ohlcv-1h", "ESH4", "2024-03-12", "2024-03-14")) > 0
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv("HDI_CACHE", "on")
    assert len(hdi_lab.query("ohlcv-1h", "ESH4", "2024-03-12", "2024-03-14")) > 0
    with default_session() as s:
        assert _cache(s).flush(30) and _cache(s).usage().files == 2
    monkeypatch.setenv("HDI_CACHE_BYTES", "0")
    with pytest.raises(ConfigError, match=r"cache_bytes=0 .* HDI_CACHE=off"):
        load_settings()


@pytest.mark.integration
def test_hdi_cache_status_and_clear(hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HDI_HOME", str(tmp_path))
    args = ("ohlcv-1h", "ESH4", "2024-03-12", "2024-03-14")
    with default_session() as s:
        hdi_lab.ingest(**TICKS, schema="ohlcv-1h", session=s)  # type: ignore[arg-type]
        want = hdi_lab.query(*args, session=s)
        assert _cache(s).flush(30)
        held = _cache(s).usage()
    assert held.files == 2
    code, out, err = run_cli(["cache", "status"])
    assert (code, err) == (0, "")
    assert f"read cache: on; 2 files, {held.bytes / 2**20:.1f} MiB of 1024 MiB" in out
    assert str(tmp_path / "cache") in out
    code, out, _ = run_cli(["cache", "clear"])
    assert code == 0 and out.startswith("read cache: 2 files deleted")
    assert "0 files" in run_cli(["cache", "status"])[1]
    with default_session() as s:
        pd.testing.assert_frame_equal(hdi_lab.query(*args, session=s), want)  # read from the database again
    monkeypatch.setenv("HDI_CACHE", "off")
    code, out, _ = run_cli(["cache", "clear"])
    assert code == 0 and out.startswith("read cache: off")


@pytest.mark.unit
def test_the_least_recently_used_days_go_first(tmp_path: Path) -> None:
    schema = cached.layout("ohlcv_1m")
    rows = pa.RecordBatch.from_arrays(  # 1000 rows: ~50 KB a day
        [pa.array(np.arange(1000), type=f.type) for f in schema], schema=schema
    )
    probe = ReadCache(tmp_path, 1 << 30)
    probe.put(Day("db", "ohlcv_1m", 1, 0), "t", rows)
    assert probe.flush(30)
    size = probe.usage().bytes
    cache = ReadCache(tmp_path, 8 * size)  # room for 8 days; trimmed to 6 whenever an eighth (1 day) is written
    days = [Day("db", "ohlcv_1m", 1, d) for d in range(8)]
    for k, day in enumerate(days):
        cache.put(day, "t", rows)
        assert cache.flush(30)
        os.utime(cache.path(day), (1000.0 + k, 1000.0 + k))  # written in this order, a second apart
    assert cache.usage().files == 8
    got = cache.get(days[0], "t", schema)  # a hit refreshes the oldest day
    assert got is not None and got.equals(rows)
    cache.put(Day("db", "ohlcv_1m", 1, 8), "t", rows)  # over the bound: the least recently used go
    assert cache.flush(30)
    left = {d.day for d in [*days, Day("db", "ohlcv_1m", 1, 8)] if cache.path(d).exists()}
    assert left == {0, 4, 5, 6, 7, 8}
    assert cache.usage().bytes <= 6 * size
    assert cache.get(days[0], "other token", schema) is None  # another version: not this file
    assert cache.get(days[0], "t", cached.layout("ohlcv_1h").remove(0)) is None  # another layout
    empty = rows.slice(0, 0)  # a day without rows is cached too
    cache.put(Day("db", "ohlcv_1m", 2, 0), "t", empty)
    assert cache.flush(30)
    got = cache.get(Day("db", "ohlcv_1m", 2, 0), "t", schema)
    assert got is not None and got.num_rows == 0 and got.schema.equals(schema)


@pytest.mark.unit
def test_many_days_are_looked_up_by_listing_each_instrument_once(tmp_path: Path) -> None:
    """get_many answers what get answers, day by day: the folder of an instrument listed once, an instrument never
    cached (no folder) all misses; days handed over whole are split and written by the writer."""
    schema = cached.layout("ohlcv_1m")
    rows = pa.RecordBatch.from_arrays([pa.array(np.arange(10), type=f.type) for f in schema], schema=schema)
    cache = ReadCache(tmp_path, 1 << 30)
    days = [Day("db", "ohlcv_1m", 1, d) for d in (3, 4, 5)] + [Day("db", "ohlcv_1m", 2, 4)]
    tokens = ["t", "t", "t", "t"]
    assert cache.get_many(days, tokens, schema) == [None] * 4
    cache.put_later(lambda: [(days[0], "t", rows.slice(0, 4)), (days[2], "u", rows.slice(4))], int(rows.nbytes))
    assert cache.flush(30)
    got = cache.get_many(days, ["t", "t", "t", "t"], schema)
    assert got[0] is not None and got[0].equals(rows.slice(0, 4)) and got[1:] == [None] * 3  # day 5 is "u"
    got = cache.get_many(days, ["t", "t", "u", "t"], schema)
    assert [g is not None for g in got] == [True, False, True, False]
    assert [cache.get(d, k, schema) is not None for d, k in zip(days, ["t", "t", "u", "t"], strict=True)] == [
        True, False, True, False,
    ]  # fmt: skip


@pytest.mark.unit
def test_days_read_lately_are_kept_in_memory_up_to_its_bound(tmp_path: Path) -> None:
    schema = cached.layout("ohlcv_1h")
    rows = pa.RecordBatch.from_arrays([pa.array(np.arange(100), type=f.type) for f in schema], schema=schema)
    writer = ReadCache(tmp_path, 1 << 30)
    days = [Day("db", "ohlcv_1h", 7, d) for d in range(3)]
    for day in days:
        writer.put(day, "v1", rows)
    assert writer.flush(30)
    size = writer.path(days[0]).stat().st_size
    cache = ReadCache(tmp_path, 1 << 30, memory_bytes=2 * size)  # room for two days in memory
    for day in days:
        assert cache.get(day, "v1", schema) is not None  # read from its file, then kept
    for day in days:
        writer.path(day).unlink()
    assert cache.get(days[0], "v1", schema) is None  # the least recently read went: its file is gone
    for day in days[1:]:
        got = cache.get(day, "v1", schema)
        assert got is not None and got.equals(rows)  # from memory
    assert cache.get(days[2], "v2", schema) is None  # another version: not the day kept


@pytest.mark.integration
def test_processes_sharing_one_cache_folder(stored: tuple[HdiSession, HdiSession], tmp_path: Path) -> None:
    """Four processes read overlapping ranges through one cache folder at once, twice: every frame equals the
    database's, and the folder holds whole files only."""
    on, off = stored
    script = (
        "import sys, hdi_lab, pandas as pd\n"
        "from hdi_lab.config import load_settings\n"
        "from hdi_lab.core.session import HdiSession\n"
        "url, schema, home, k = sys.argv[1:]\n"
        "s = HdiSession(load_settings({'database_url': url, 'db_schema': schema, 'home': home}, environ={}))\n"
        "for n in range(2):\n"
        "    for sym in ('ESH4', 'ESM4', 'ES.c.0'):\n"
        "        f = hdi_lab.query('ohlcv-1m', sym, f'2024-03-1{1 + int(k) % 2}', '2024-03-16', session=s)\n"
        "        f.to_pickle(f'{home}/{k}-{n}-{sym}.pkl')\n"
    )
    home = tmp_path / "shared"
    home.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(on.settings.database_url), on.schema, str(home), str(k)])
        for k in range(4)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    for k in range(4):
        for sym in ("ESH4", "ESM4", "ES.c.0"):
            want = hdi_lab.query("ohlcv-1m", sym, f"2024-03-1{1 + k % 2}", "2024-03-16", session=off)
            for n in range(2):
                pd.testing.assert_frame_equal(pd.read_pickle(home / f"{k}-{n}-{sym}.pkl"), want)
    files = list((home / "cache").rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")]
    arrows = [f for f in files if f.suffix == ".arrow"]
    assert len(arrows) == 10  # ESH4 (5 days) and ESM4 (5 days); ES.c.0 is one of them each day
    for f in arrows:
        assert pa.ipc.open_file(f.read_bytes()).schema.equals(cached.layout("ohlcv_1m"))


@pytest.mark.integration
def test_every_market_table_has_its_epoch_and_trigger(session: HdiSession) -> None:
    from hdi_lab.storage.tables import TABLES

    names = sorted(t.name for t in TABLES.values())
    epochs = hdi_lab.sql(f'SELECT table_name, identity::text FROM "{session.schema}".market_epochs', session=session)
    assert sorted(epochs["table_name"]) == names and epochs["identity"].nunique() == 1
    triggers = hdi_lab.sql(
        "SELECT c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid "
        "WHERE g.tgname = 'market_touched' AND c.relnamespace = %s::regnamespace",
        (f'"{session.schema}"',),
        session=session,
    )
    assert sorted(triggers["relname"]) == names


@pytest.mark.integration
def test_the_resolution_runs_prepared_and_survives_losing_it(stored: tuple[HdiSession, HdiSession]) -> None:
    """The statement resolving the symbols and reading the days' versions is prepared once per connection; a
    prepared statement gone from the server (here DEALLOCATE ALL) is run as is, then prepared again."""
    on, off = stored
    args = ("ohlcv-1m", "ESH4", "2024-03-12", "2024-03-14")
    want = hdi_lab.query(*args, session=off)
    pd.testing.assert_frame_equal(hdi_lab.query(*args, session=on), want)
    conn = on.connection()

    def prepared() -> list[str]:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'hdi_%'")
            names = [r[0] for r in cur.fetchall()]
        conn.commit()
        return names

    assert len(prepared()) == 1 and prepared() == sorted(on.lookups.prepared(conn))
    with conn.cursor() as cur:
        cur.execute("DEALLOCATE ALL")
    conn.commit()
    pd.testing.assert_frame_equal(hdi_lab.query(*args, session=on), want)  # run as is
    pd.testing.assert_frame_equal(hdi_lab.query(*args, session=on), want)  # prepared again
    assert len(prepared()) == 1


@pytest.mark.integration
@pytest.mark.parametrize("days", [("2024-03-12", "2024-03-13"), ("2024-03-12", "2024-03-15")])
def test_frames_own_their_values(stored: tuple[HdiSession, HdiSession], days: tuple[str, str]) -> None:
    """A frame from the cache (a day read cold, then from memory; several days) is the caller's: writable, and
    changing it in place changes nothing cached."""
    on, off = stored
    args = ("ohlcv-1m", "ESH4", *days)
    want = hdi_lab.query(*args, session=off)
    _cache(on).clear()
    for _ in range(3):  # cold (its days queued for writing), then from the files, then from memory
        frame = hdi_lab.query(*args, session=on)
        pd.testing.assert_frame_equal(frame, want)
        with pd.option_context("mode.copy_on_write", False):  # with it on, pandas makes to_numpy() read-only
            values = frame["volume"].to_numpy()
        values[:] = -1  # in place
        assert (frame["volume"] == -1).all()
        assert _cache(on).flush(30)
