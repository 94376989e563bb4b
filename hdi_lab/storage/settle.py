"""What an update asks the database to tell a session the vendor has no (more) data for from one to fetch again
(:mod:`hdi_lab.core.update`): the rows a chunk's range holds per instrument now (to compare with
``ingest_log.held``, written with the chunk), the latest ingest of each chunk with what it saw, and the ingests
logged since a plan."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import psycopg2.extensions

from hdi_lab.storage.cursor import quote, transaction
from hdi_lab.storage.tables import Table

__all__ = ["Latest", "held", "held_now", "last_log_id", "latest", "logged_since"]


def _pg(ns: int) -> dt.datetime:
    return pd.Timestamp(ns, unit="ns", tz="UTC").to_pydatetime(warn=False)


def held(
    cur: psycopg2.extensions.cursor, schema: str, t: Table, ids: Sequence[int], lo: int, hi: int
) -> dict[int, int]:
    """The rows of ``t`` each instrument of ``ids`` has in ``[lo, hi)`` (int64 ns UTC), 0 for none; read in the
    caller's transaction.

    Raises StorageError (psycopg2's errors, translated by the caller's transaction) when the database fails."""
    if not ids:
        return {}
    table = quote(cur.connection, schema, t.name)
    # the timestamptz column bounds the index scan (microseconds, widened); the ns column, if any, is exact
    where = f"instrument_id = ANY(%s) AND {t.time_column} >= %s AND {t.time_column} < %s"
    params: list[object] = [sorted(ids), _pg(lo - lo % 1000), _pg(hi + (-hi) % 1000)]
    if t.ns_column:
        where += f" AND {t.ns_column} >= %s AND {t.ns_column} < %s"
        params += [lo, hi]
    cur.execute(f"SELECT instrument_id, count(*) FROM {table} WHERE {where} GROUP BY 1", params)
    found = {int(i): int(n) for i, n in cur.fetchall()}
    return {int(i): found.get(int(i), 0) for i in ids}


def held_now(
    conn: psycopg2.extensions.connection, schema: str, t: Table, ranges: Sequence[tuple[int, int, int]]
) -> list[int]:
    """The rows of ``t`` each ``(instrument_id, lo, hi)`` range (int64 ns UTC, half-open) holds now, in order,
    counted as :func:`held` counts them, in one statement (one index range count per range).

    Raises StorageError when the database fails."""
    if not ranges:
        return []
    table = quote(conn, schema, t.name)
    where = f"b.instrument_id = u.iid AND b.{t.time_column} >= u.lo_ts AND b.{t.time_column} < u.hi_ts"
    if t.ns_column:
        where += f" AND b.{t.ns_column} >= u.lo AND b.{t.ns_column} < u.hi"
    iids, los, his = (list(c) for c in zip(*ranges, strict=True))
    with transaction(conn) as cur:
        cur.execute(
            f"SELECT (SELECT count(*) FROM {table} b WHERE {where}) FROM unnest(%s::bigint[], %s::timestamptz[], "
            "%s::timestamptz[], %s::bigint[], %s::bigint[]) WITH ORDINALITY AS u(iid, lo_ts, hi_ts, lo, hi, n) "
            "ORDER BY u.n",
            (iids, [_pg(lo - lo % 1000) for lo in los], [_pg(hi + (-hi) % 1000) for hi in his], los, his),
        )
        return [int(r[0]) for r in cur.fetchall()]


@dataclass(frozen=True)
class Latest:
    """The latest ingest of a chunk: when its transaction began (``finished_at`` as logged), whether it was
    forced and changed rows, the rows its range held per instrument right after it (None: not recorded, an
    ingest older than schema version 11) and the UTC days it saw the vendor call ``available``."""

    chunk_key: str
    ingest_id: int
    finished_at: pd.Timestamp
    forced: bool
    changed: bool
    held: dict[int, int] | None
    available: frozenset[dt.date]


def latest(conn: psycopg2.extensions.connection, schema: str, keys: Sequence[str]) -> dict[str, Latest]:
    """The latest logged ingest of each chunk key (:class:`Latest`); keys never ingested are absent.

    Raises StorageError when the database fails."""
    if not keys:
        return {}
    log, cond = quote(conn, schema, "ingest_log"), quote(conn, schema, "ingest_conditions")
    with transaction(conn) as cur:
        cur.execute(
            "SELECT l.chunk_key, l.id, l.finished_at, l.forced, (l.inserted + l.updated + l.deleted) > 0, l.held, "
            f"ARRAY(SELECT c.day FROM {cond} c WHERE c.ingest_id = l.id AND c.condition = 'available' ORDER BY 1) "
            f"FROM (SELECT DISTINCT ON (chunk_key) * FROM {log} WHERE chunk_key = ANY(%s) "
            "ORDER BY chunk_key, id DESC) l",
            (list(keys),),
        )
        rows = cur.fetchall()
    return {
        key: Latest(
            chunk_key=key,
            ingest_id=int(iid),
            finished_at=pd.Timestamp(at).tz_convert("UTC"),
            forced=bool(forced),
            changed=bool(changed),
            held=None if kept is None else {int(k): int(v) for k, v in kept.items()},
            available=frozenset(days),
        )
        for key, iid, at, forced, changed, kept, days in rows
    }


def last_log_id(conn: psycopg2.extensions.connection, schema: str) -> int:
    """The highest ingest-log id committed now (0 when none): an update's plan remembers it.

    Raises StorageError when the database fails."""
    with transaction(conn) as cur:
        cur.execute(f"SELECT coalesce(max(id), 0) FROM {quote(conn, schema, 'ingest_log')}")
        row = cur.fetchone()
    return int(row[0]) if row else 0


def logged_since(cur: psycopg2.extensions.cursor, schema: str, key: str, after_id: int) -> bool:
    """Whether an ingest of chunk ``key`` was logged with an id above ``after_id`` (another run fetched it after
    a plan was made), in the caller's transaction (which holds the chunk's lock).

    Raises StorageError (through the caller's transaction) when the database fails."""
    cur.execute(
        f"SELECT EXISTS (SELECT 1 FROM {quote(cur.connection, schema, 'ingest_log')} WHERE chunk_key = %s AND id > %s)",
        (key, after_id),
    )
    row = cur.fetchone()
    return bool(row and row[0])
