"""The quarantine table, read and updated for :mod:`hdi_lab.core.quarantine`: entries, one entry, the open
ones to retry, and their new rule or resolution (rows are written by :func:`hdi_lab.storage.load.insert_quarantine`)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import psycopg2.extensions
import psycopg2.extras

from hdi_lab.storage.cursor import fetch_frame, quote, transaction

__all__ = ["entries", "entry", "lock_open", "lock_open_of_instruments", "mark_resolved", "set_reasons"]


def _t(schema: str, cur: Any) -> str:
    return quote(cur.connection, schema, "quarantine")


def entries(
    conn: psycopg2.extensions.connection, schema: str, status: str, rule: str | None, limit: int
) -> pd.DataFrame:
    """Quarantine entries (newest first) without the record bodies."""
    with transaction(conn) as cur:
        cur.execute(
            f"SELECT id, created_at, dataset, schema, rule, reason, status FROM {_t(schema, cur)} "
            "WHERE (%s = 'all' OR status = %s) AND (%s::text IS NULL OR rule = %s) ORDER BY id DESC LIMIT %s",
            (status, status, rule, rule, limit),
        )
        return fetch_frame(cur)


def entry(conn: psycopg2.extensions.connection, schema: str, entry_id: int) -> dict[str, Any] | None:
    """Every column of entry ``entry_id``; None when there is no such entry."""
    with transaction(conn) as cur:
        cur.execute(f"SELECT * FROM {_t(schema, cur)} WHERE id = %s", (entry_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d.name for d in cur.description or ()], row, strict=True))


def lock_open(cur: psycopg2.extensions.cursor, schema: str, ids: list[int] | None) -> list[tuple[Any, ...]]:
    """(id, dataset, schema, record, dup_idx, req_start, req_end) of the open entries (all, or ``ids``),
    locked for update until the transaction ends."""
    cur.execute(
        f"SELECT id, dataset, schema, record, dup_idx, req_start, req_end FROM {_t(schema, cur)} "
        "WHERE status = 'open' AND (%s::bigint[] IS NULL OR id = ANY(%s)) ORDER BY id FOR UPDATE",
        (ids, ids),
    )
    return cur.fetchall()


def lock_open_of_instruments(
    cur: psycopg2.extensions.cursor, schema: str, rule: str, dataset: str, instrument_ids: list[int]
) -> list[tuple[Any, ...]]:
    """As :func:`lock_open`: the open entries of ``dataset`` under ``rule`` whose record is of one of
    ``instrument_ids``, locked for update until the transaction ends."""
    cur.execute(
        f"SELECT id, dataset, schema, record, dup_idx, req_start, req_end FROM {_t(schema, cur)} "
        "WHERE status = 'open' AND rule = %s AND dataset = %s AND (record->>'instrument_id')::bigint = ANY(%s) "
        "ORDER BY id FOR UPDATE",
        (rule, dataset, instrument_ids),
    )
    return cur.fetchall()


def set_reasons(cur: psycopg2.extensions.cursor, schema: str, rows: list[tuple[int, str, str]]) -> None:
    """The new (id, rule, reason) of entries that are still invalid."""
    psycopg2.extras.execute_values(
        cur,
        f"UPDATE {_t(schema, cur)} q SET rule = v.rule, reason = v.reason FROM (VALUES %s) AS v(id, rule, reason) "
        "WHERE q.id = v.id",
        rows,
    )


def mark_resolved(cur: psycopg2.extensions.cursor, schema: str, ids: list[int], how: str) -> None:
    """Entries ``ids`` resolved; their reason now starts with ``how`` (then what it was)."""
    cur.execute(
        f"UPDATE {_t(schema, cur)} SET status = 'resolved', resolved_at = now(), "
        "reason = %s || '; quarantined as: ' || reason WHERE id = ANY(%s)",
        (how, ids),
    )
