"""Bar counts kept at ingest: the bars stored per bar table, instrument, UTC day and 15-minute bucket.

:func:`hdi_lab.core.gaps.coverage` needs the bars stored in each instrument's session windows; counting them in
the bar tables costs a range scan of every bar (minutes, at 100 instruments x 5 years of 1-minute bars). The
table ``bar_counts`` (migration 10) holds one row per (bar table, instrument, UTC day): :data:`BUCKETS` counts
of :data:`BUCKET_SECONDS` each, as big-endian int4 in one ``bytea``. A window aligned to the buckets sums them.

The counting rule: a bar counts in the bucket ``floor(unix seconds of ts_event / BUCKET_SECONDS)``, its day that
bucket's ``// BUCKETS``, its place in the day's row the remainder (:func:`deltas` in numpy, :func:`_bucketed` in
SQL; the tests compare both with the rows). Who keeps the counts:

* the loader (:mod:`hdi_lab.storage.load`), in the transaction that writes the rows: rows COPYed in add
  (:func:`add`, from the keys it holds), rows inserted by its ``ON CONFLICT`` fallback add and rows it deletes
  subtract (:func:`change_sql`, from ``RETURNING``), updated rows change nothing (same keys). Concurrent loads add
  through ``INSERT .. ON CONFLICT DO UPDATE``, which locks and re-reads the count row: nothing is lost.
* :func:`repair` rebuilds them from the rows (after migration 10, and for rows written in plain SQL).

Anything else that writes a bar table (a hand-written INSERT / UPDATE / DELETE / TRUNCATE) marks the table
stale through a statement trigger, as does removing or changing a TimescaleDB retention policy (it dropped rows
without the loader): gaps then counts that table's rows until :func:`repair` rebuilds it. While a retention
policy is in force, the counts of windows older than its horizon are not used either (:func:`trust`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg2.extensions

from hdi_lab.errors import StorageError, ValidationError
from hdi_lab.schemas import parse_time
from hdi_lab.storage import copy
from hdi_lab.storage.cursor import quote, transaction
from hdi_lab.storage.tables import TABLES as _ALL_TABLES

__all__ = [
    "BUCKETS",
    "BUCKET_SECONDS",
    "TABLES",
    "Trust",
    "add",
    "change_sql",
    "deltas",
    "fill",
    "kept",
    "mark_stale",
    "read",
    "repair",
    "trust",
]

#: the length of one bucket, in seconds (session windows aligned to it are summed from the counts)
BUCKET_SECONDS = 900
#: buckets in a UTC day
BUCKETS = 86_400 // BUCKET_SECONDS
#: the bar tables whose rows are counted (tick tables are not: gaps only asks whether a tick exists)
TABLES: tuple[str, ...] = tuple(t.name for s, t in _ALL_TABLES.items() if s.is_bar)
#: one count row's counts: BUCKETS big-endian int4 (what ``int4send`` writes)
_ROW = np.dtype((">i4", (BUCKETS,)))
_BUCKET_US = BUCKET_SECONDS * 1_000_000
#: the transaction-local setting by which the loader tells the bar tables' trigger that it keeps the counts
_SETTING = "hdi_lab.bar_counts"


def _table(name: str) -> str:
    if name not in TABLES:
        raise ValidationError(f"{name!r} has no bar counts: give one of {', '.join(TABLES)}")
    return name


def deltas(
    instrument_ids: npt.NDArray[np.integer], ts_us: npt.NDArray[np.integer], sign: int = 1
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """The count rows of bars with these instruments and ``ts_event`` (PostgreSQL microseconds, since
    2000-01-01): (instrument ids, days since 1970-01-01, counts (n, :data:`BUCKETS`) int32), by instrument
    and day, each bar counted ``sign`` (1 inserted, -1 deleted).

    Rows sorted by instrument and time (the loader's key order) are counted by bisecting each instrument's
    times at the bucket edges of its days; other rows are sorted first."""
    iid = np.asarray(instrument_ids, dtype=np.int64)
    ts = np.asarray(ts_us, dtype=np.int64) + copy.PG_EPOCH_US  # Unix microseconds
    if len(iid) == 0:
        return iid, iid.copy(), np.zeros((0, BUCKETS), dtype=np.int32)
    if not ((iid[1:] >= iid[:-1]).all() and ((ts[1:] >= ts[:-1]) | (iid[1:] != iid[:-1])).all()):
        order = np.lexsort((ts, iid))
        iid, ts = iid[order], ts[order]
    starts = np.concatenate([[0], np.flatnonzero(iid[1:] != iid[:-1]) + 1, [len(iid)]])
    out_ids, out_days, out_counts = [], [], []
    day_us = BUCKETS * _BUCKET_US
    for lo, hi in itertools.pairwise(starts):
        times = ts[lo:hi]
        first, last = int(times[0]) // day_us, int(times[-1]) // day_us
        if (last - first + 1) * BUCKETS <= 4 * len(times) + 4 * BUCKETS:  # a dense range: bisect its edges
            edges = np.arange(first * BUCKETS, (last + 1) * BUCKETS + 1, dtype=np.int64) * _BUCKET_US
            per_day = np.diff(np.searchsorted(times, edges)).reshape(-1, BUCKETS)
            days: npt.NDArray[np.int64] = np.arange(first, last + 1, dtype=np.int64)
        else:  # sparse (daily bars over decades): bucket each bar
            bucket = times // _BUCKET_US
            days, at = np.unique(bucket // BUCKETS, return_inverse=True)
            per_day = np.bincount(
                at * BUCKETS + (bucket - (bucket // BUCKETS) * BUCKETS), minlength=len(days) * BUCKETS
            ).reshape(-1, BUCKETS)
        kept = per_day.any(axis=1)
        out_ids.append(np.full(int(kept.sum()), iid[lo], dtype=np.int64))
        out_days.append(days[kept])
        out_counts.append(per_day[kept])
    counts = np.concatenate(out_counts).astype(np.int32) * np.int32(sign)
    return np.concatenate(out_ids), np.concatenate(out_days), counts


def _upsert_sql(conn: psycopg2.extensions.connection, schema: str, source: str) -> str:
    """Add the count rows of ``source`` (columns instrument_id, day (date), counts) to ``bar_counts``; the
    first parameter is the bar table. Rows are written in key order (concurrent loads lock them alike)."""
    t = quote(conn, schema, "bar_counts")
    add_fn = quote(conn, schema, "bar_counts_add")
    return (
        f"INSERT INTO {t} (bar_table, instrument_id, day, counts) SELECT %s, c.instrument_id, c.day, c.counts "
        f"FROM ({source}) AS c ORDER BY 2, 3 ON CONFLICT (bar_table, instrument_id, day) "
        f"DO UPDATE SET counts = {add_fn}({t}.counts, EXCLUDED.counts)"
    )


def add(
    cur: psycopg2.extensions.cursor,
    schema: str,
    table: str,
    instrument_ids: npt.NDArray[np.integer],
    ts_us: npt.NDArray[np.integer],
    sign: int = 1,
) -> None:
    """Count bars of ``table`` (instrument ids and ``ts_event`` in PostgreSQL microseconds) as inserted
    (``sign`` 1) or deleted (-1), in the cursor's transaction."""
    if table not in TABLES or len(instrument_ids) == 0:
        return
    iids, days, counts = deltas(instrument_ids, ts_us, sign)
    width = _ROW.itemsize
    source = (
        "SELECT u.i AS instrument_id, date '1970-01-01' + u.d AS day, "
        f"substring(%s::bytea FROM ((u.n - 1) * {width} + 1)::int FOR {width}) AS counts "
        "FROM unnest(%s::bigint[], %s::int[]) WITH ORDINALITY AS u(i, d, n)"
    )
    blob = np.ascontiguousarray(counts, dtype=">i4").tobytes()
    cur.execute(
        _upsert_sql(cur.connection, schema, source),
        (table, psycopg2.Binary(blob), iids.tolist(), days.tolist()),
    )


def _bucketed(rows: str, sign: int = 1) -> str:
    """SQL: the count rows (instrument_id, day, counts) of the bars selected by ``rows`` (a query or CTE name
    with columns instrument_id, ts_event), each counted ``sign``: the counting rule of :func:`deltas`."""
    n, secs = BUCKETS, BUCKET_SECONDS

    def zeros(k: str) -> str:
        return f"decode(repeat('00', 4 * ({k})::int), 'hex')"

    return (
        f"SELECT g.instrument_id, date '1970-01-01' + g.d::int AS day, "
        f"string_agg({zeros('g.slot - g.prev - 1')} || int4send({int(sign)} * g.n), ''::bytea ORDER BY g.slot) "
        f"|| {zeros(f'{n - 1} - max(g.slot)')} AS counts "
        f"FROM (SELECT s.instrument_id, s.d, s.n, s.b - s.d * {n} AS slot, "
        f"coalesce(lag(s.b - s.d * {n}) OVER (PARTITION BY s.instrument_id, s.d ORDER BY s.b), -1) AS prev "
        f"FROM (SELECT q.instrument_id, q.b, floor(q.b / {n}.0)::bigint AS d, q.n FROM "
        f"(SELECT r.instrument_id, floor(extract(epoch FROM r.ts_event) / {secs})::bigint AS b, count(*)::int AS n "
        f"FROM {rows} AS r GROUP BY 1, 2) AS q) AS s) AS g "
        "GROUP BY g.instrument_id, g.d"
    )


def change_sql(conn: psycopg2.extensions.connection, schema: str, rows: str, sign: int) -> str:
    """SQL adding the bars of ``rows`` (a CTE name or a parenthesised query with columns instrument_id,
    ts_event) to the counts, each counted ``sign``; its one parameter is the bar table. For the data-modifying
    CTEs of the loader (``... RETURNING instrument_id, ts_event``)."""
    return _upsert_sql(conn, schema, _bucketed(rows, sign).replace("%", "%%"))


@contextmanager
def kept(cur: psycopg2.extensions.cursor, table: str) -> Iterator[None]:
    """The block's statements on bar ``table`` keep its counts themselves: the trigger does not mark the
    table stale (nothing to do for other tables). Enter it before any savepoint the block rolls back to (the
    setting is transaction-local)."""
    if table not in TABLES:
        yield
        return
    cur.execute("SELECT set_config(%s, 'kept', true)", (_SETTING,))
    yield
    cur.execute("SELECT set_config(%s, '', true)", (_SETTING,))


def mark_stale(cur: psycopg2.extensions.cursor, schema: str, tables: Sequence[str]) -> None:
    """Mark bar ``tables`` as written without their counts (gaps counts their rows until :func:`repair`)."""
    names = [t for t in tables if t in TABLES]
    if names:
        cur.execute(
            f"INSERT INTO {quote(cur.connection, schema, 'bar_counts_stale')} (bar_table) "
            "SELECT unnest(%s::text[]) ON CONFLICT (bar_table) DO NOTHING",
            (names,),
        )


def _rebuild(
    cur: psycopg2.extensions.cursor,
    schema: str,
    table: str,
    first: pd.Timestamp | None,
    end: pd.Timestamp | None,
    instrument_ids: Sequence[int] | None,
) -> int:
    """Replace the counts of ``table`` on days ``[first, end)`` (None: unbounded) from its rows, the table
    locked against writers meanwhile; returns the count rows written. A whole rebuild clears its stale mark."""
    conn = cur.connection
    bars, t = quote(conn, schema, table), quote(conn, schema, "bar_counts")
    cur.execute(f"LOCK TABLE {bars} IN SHARE MODE")
    lo = None if first is None else first.to_pydatetime()
    hi = None if end is None else end.to_pydatetime()
    ids = None if instrument_ids is None else [int(i) for i in instrument_ids]
    cur.execute(
        f"DELETE FROM {t} WHERE bar_table = %s AND (%s::timestamptz IS NULL OR day >= (%s::timestamptz)::date) "
        "AND (%s::timestamptz IS NULL OR day < (%s::timestamptz)::date) "
        "AND (%s::bigint[] IS NULL OR instrument_id = ANY(%s))",
        (table, lo, lo, hi, hi, ids, ids),
    )
    rows = cur.mogrify(
        f"(SELECT instrument_id, ts_event FROM {bars} WHERE (%s::timestamptz IS NULL OR ts_event >= %s) "
        "AND (%s::timestamptz IS NULL OR ts_event < %s) AND (%s::bigint[] IS NULL OR instrument_id = ANY(%s)))",
        (lo, lo, hi, hi, ids, ids),
    ).decode()
    cur.execute(change_sql(conn, schema, rows, 1), (table,))
    written = cur.rowcount
    if first is None and end is None and instrument_ids is None:
        cur.execute(
            f"DELETE FROM {quote(conn, schema, 'bar_counts_stale')} WHERE bar_table = %s",
            (table,),
        )
    return int(written)


def fill(cur: psycopg2.extensions.cursor, schema: str) -> None:
    """Count the rows of every bar table (migration 10, in its transaction; a bar table a later migration adds,
    such as ohlcv_5s, does not exist yet and starts empty)."""
    for table in TABLES:
        cur.execute("SELECT to_regclass(%s)", (quote(cur.connection, schema, table),))
        if (cur.fetchone() or (None,))[0] is not None:
            _rebuild(cur, schema, table, None, None, None)


def repair(
    conn: psycopg2.extensions.connection,
    schema: str,
    table: str | None = None,
    start: object = None,
    end: object = None,
    *,
    instrument_ids: Sequence[int] | None = None,
) -> int:
    """Rebuild the counts of bar ``table`` (all bar tables when None) from the stored rows, on the UTC days
    from ``start``'s to the one before ``end``'s (timestamps or dates; None: unbounded), for ``instrument_ids``
    (None: all), in one transaction that holds writers of the table off. Rebuilding a whole table (no start,
    end or instruments) also clears its stale mark. Returns the count rows written.

    For rows written in plain SQL (benchmarks, a hand-made fix) and after a TimescaleDB retention policy was
    removed or changed.

    Raises ValidationError (no bar table, a bad date) and StorageError."""
    names = TABLES if table is None else (_table(table),)
    first = None if start is None else parse_time(start, "start").normalize()
    last = None if end is None else parse_time(end, "end").normalize()
    written = 0
    with transaction(conn) as cur:
        for name in names:
            written += _rebuild(cur, schema, name, first, last, instrument_ids)
    return written


class Trust(NamedTuple):
    """Whether the counts of a bar table may be used: ``stale`` (written outside the loader since its last
    rebuild), and the retention ``horizon`` (int64 ns UTC; the counts of windows opening before it are not used,
    a policy may have dropped their rows), ``None`` without a retention policy."""

    stale: bool
    horizon: int | None


def trust(cur: psycopg2.extensions.cursor, schema: str, table: str) -> Trust:
    """:class:`Trust` of ``table``'s counts, read in the cursor's transaction."""
    conn = cur.connection
    cur.execute(f"SELECT EXISTS (SELECT FROM {quote(conn, schema, 'bar_counts_stale')} WHERE bar_table = %s)", (table,))
    row = cur.fetchone()
    stale = bool(row and row[0])
    horizon = None
    cur.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')")
    row = cur.fetchone()
    if row and row[0]:
        cur.execute(
            "SELECT max(now() - (config->>'drop_after')::interval) FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_retention' AND hypertable_schema = %s AND hypertable_name = %s",
            (schema, table),
        )
        row = cur.fetchone()
        if row and row[0] is not None:
            horizon = pd.Timestamp(row[0]).value
    return Trust(stale, horizon)


def read(
    cur: psycopg2.extensions.cursor, schema: str, table: str, instrument_ids: Sequence[int], first: int, last: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[Any]]:
    """The count rows of ``instrument_ids`` in ``table`` on days ``first`` to ``last`` (days since 1970-01-01,
    inclusive): (instrument ids, days, counts (n, :data:`BUCKETS`), big-endian int4 as read), by instrument and
    day. One binary COPY.

    Raises StorageError when a stored row is not one day's counts."""
    conn = cur.connection
    query = cur.mogrify(
        f"SELECT instrument_id, day - date '1970-01-01', counts FROM {quote(conn, schema, 'bar_counts')} "
        "WHERE bar_table = %s AND instrument_id = ANY(%s) AND day >= date '1970-01-01' + %s "
        "AND day <= date '1970-01-01' + %s ORDER BY 1, 2",
        (table, [int(i) for i in instrument_ids], int(first), int(last)),
    ).decode()
    buf = copy.copy_view(cur, query)  # no copy of the ~65 MB of a 100-instrument, 5-year read
    dtype = np.dtype(
        [("n", ">i2"), ("l0", ">i4"), ("v0", ">i8"), ("l1", ">i4"), ("v1", ">i4"), ("l2", ">i4"), ("v2", _ROW)]
    )
    start = 19 + int.from_bytes(buf[15:19], "big")
    body = len(buf) - start - 2
    if body < 0 or body % dtype.itemsize:
        raise StorageError("bar_counts holds a row of another size than the counts of one day: run repair")
    rows = np.frombuffer(buf, dtype=dtype, offset=start, count=body // dtype.itemsize)
    return rows["v0"].astype(np.int64), rows["v1"].astype(np.int64), rows["v2"]
