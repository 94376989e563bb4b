"""The live-session registry (table ``live_sessions``, migrations 13 and 18) for :mod:`hdi_lab.core.live`: a session's
row is inserted when it starts, advanced in the transaction of every batch it commits (so its counts never run
ahead of the stored rows), and closed when it ends. ``hdi live stop`` sets ``stop_requested``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields

import pandas as pd
import psycopg2.extensions

from hdi_lab.storage.cursor import fetch_frame, one, quote, transaction

__all__ = ["COLUMNS", "COUNTERS", "Progress", "advance", "close", "frame", "insert", "request_stop"]

#: the columns :func:`frame` returns, in order
COLUMNS = (
    "id",
    "status",
    "provider",
    "dataset",
    "schemas",
    "stype_in",
    "symbols",
    "replay_start",
    "started_at",
    "ended_at",
    "heartbeat_at",
    "host",
    "pid",
    "records",
    "inserted",
    "updated",
    "duplicates",
    "quarantined",
    "recovered",
    "replayed",
    "batches",
    "reconnects",
    "last_ts_event",
    "stop_requested",
    "error",
)


@dataclass
class Progress:
    """A session's counts: what one committed batch adds to its row (:func:`advance`), or their running sum."""

    records: int = 0
    inserted: int = 0
    updated: int = 0
    duplicates: int = 0
    quarantined: int = 0
    recovered: int = 0  # quarantined records of an unknown instrument loaded once it became known
    replayed: int = 0
    reconnects: int = 0
    batches: int = 0
    last_ts_event: dt.datetime | None = None


#: the counters of :class:`Progress`: the columns of ``live_sessions`` that :func:`advance` adds to
COUNTERS: tuple[str, ...] = tuple(f.name for f in fields(Progress) if f.name != "last_ts_event")


def _t(conn: psycopg2.extensions.connection, schema: str) -> str:
    return quote(conn, schema, "live_sessions")


def insert(
    conn: psycopg2.extensions.connection,
    schema: str,
    *,
    provider: str,
    dataset: str,
    schemas: Sequence[str],
    stype_in: str,
    symbols: Sequence[str],
    replay_start: dt.datetime | None,
    host: str,
    pid: int,
) -> int:
    """Register a running session; returns its id. Raises StorageError."""
    with transaction(conn) as cur:
        cur.execute(
            f"INSERT INTO {_t(conn, schema)} (provider, dataset, schemas, stype_in, symbols, replay_start, host, pid) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (provider, dataset, list(schemas), stype_in, list(symbols), replay_start, host, pid),
        )
        return int(one(cur)[0])


def advance(cur: psycopg2.extensions.cursor, schema: str, session_id: int, p: Progress) -> bool:
    """Add ``p`` to the session's row and mark it alive (in the caller's transaction); returns whether a stop
    was requested. Raises StorageError (through the caller's transaction)."""
    added = ", ".join(f"{c} = {c} + %s" for c in COUNTERS)
    cur.execute(
        f"UPDATE {_t(cur.connection, schema)} SET {added}, heartbeat_at = now(), "
        "last_ts_event = GREATEST(last_ts_event, %s) WHERE id = %s RETURNING stop_requested",
        (*(getattr(p, c) for c in COUNTERS), p.last_ts_event, session_id),
    )
    found = cur.fetchone()
    return bool(found and found[0])


def close(conn: psycopg2.extensions.connection, schema: str, session_id: int, status: str, error: str | None) -> None:
    """Mark the session ended (``stopped`` or ``failed``, with the error). Raises StorageError."""
    with transaction(conn) as cur:
        cur.execute(
            f"UPDATE {_t(conn, schema)} SET status = %s, error = %s, ended_at = now(), heartbeat_at = now() "
            "WHERE id = %s",
            (status, error, session_id),
        )


def request_stop(conn: psycopg2.extensions.connection, schema: str, ids: Sequence[int] | None) -> list[int]:
    """Ask running sessions (``ids``, or all) to stop; returns the ids asked. Raises StorageError."""
    with transaction(conn) as cur:
        cur.execute(
            f"UPDATE {_t(conn, schema)} SET stop_requested = true WHERE status = 'running' "
            "AND (%s::integer[] IS NULL OR id = ANY(%s::integer[])) RETURNING id",
            (None if ids is None else list(ids), None if ids is None else list(ids)),
        )
        return sorted(int(r[0]) for r in cur.fetchall())


def frame(conn: psycopg2.extensions.connection, schema: str, limit: int = 50) -> pd.DataFrame:
    """The newest sessions first (:data:`COLUMNS`). Raises StorageError."""
    with transaction(conn) as cur:
        cur.execute(
            f"SELECT {', '.join(COLUMNS)} FROM {_t(conn, schema)} ORDER BY id DESC LIMIT %s",
            (limit,),
        )
        return fetch_frame(cur)
