"""The quarantine table, read and updated for :mod:`hdi_lab.core.quarantine`: entries, one entry, the open
ones to retry, and their new rule or resolution (rows are written by :func:`hdi_lab.storage.load.insert_quarantine`)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import psycopg2.extensions
import psycopg2.extras

from hdi_lab.storage.cursor import fetch_frame, quote, transaction

__all__ = [
    "entries",
    "entry",
    "fixed_records",
    "lock_open",
    "lock_open_of_chunks",
    "lock_open_of_instruments",
    "mark_resolved",
    "set_reasons",
    "supersede",
]


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


def _lock(cur: psycopg2.extensions.cursor, schema: str, where: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """(id, dataset, schema, record, dup_idx, req_start, req_end) of the open entries matching ``where``, locked
    for update until the transaction ends: the rows :func:`hdi_lab.core.ingestion.reload_quarantined` takes."""
    cur.execute(
        f"SELECT id, dataset, schema, record, dup_idx, req_start, req_end FROM {_t(schema, cur)} "
        f"WHERE status = 'open' AND {where} ORDER BY id FOR UPDATE",
        params,
    )
    return cur.fetchall()


def lock_open(cur: psycopg2.extensions.cursor, schema: str, ids: list[int] | None) -> list[tuple[Any, ...]]:
    """(id, dataset, schema, record, dup_idx, req_start, req_end) of the open entries (all, or ``ids``),
    locked for update until the transaction ends."""
    return _lock(cur, schema, "(%s::bigint[] IS NULL OR id = ANY(%s))", (ids, ids))


def lock_open_of_instruments(
    cur: psycopg2.extensions.cursor, schema: str, rule: str, dataset: str, instrument_ids: list[int]
) -> list[tuple[Any, ...]]:
    """As :func:`lock_open`: the open entries of ``dataset`` under ``rule`` whose record is of one of
    ``instrument_ids``, locked for update until the transaction ends."""
    return _lock(
        cur,
        schema,
        "rule = %s AND dataset = %s AND (record->>'instrument_id')::bigint = ANY(%s)",
        (rule, dataset, instrument_ids),
    )


def lock_open_of_chunks(
    cur: psycopg2.extensions.cursor, schema: str, rule: str, chunk_keys: list[str]
) -> list[tuple[Any, ...]]:
    """As :func:`lock_open`: the open entries under ``rule`` quarantined by the chunks ``chunk_keys`` (a live
    session's), locked for update until the transaction ends."""
    return _lock(cur, schema, "rule = %s AND chunk_key = ANY(%s)", (rule, chunk_keys))


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


def fixed_records(
    cur: psycopg2.extensions.cursor, schema: str, dataset: str, data_schema: str, rows: list[tuple[dict[str, Any], int]]
) -> list[tuple[dict[str, Any], int]]:
    """(record, dup_idx) as fixed by a user, of the resolved entries for the rejected ``rows`` (original record,
    dup_idx): records the vendor still sends bad whose fix was loaded by a retry."""
    if not rows:
        return []
    fingerprint = quote(cur.connection, schema, "quarantine_fingerprint")
    query = cur.mogrify(  # the VALUES placeholder survives as %s for execute_values
        f"SELECT record, dup_idx FROM {_t(schema, cur)} WHERE status = 'resolved' AND fingerprint IN "
        f"(SELECT {fingerprint}(%s, %s, v.dup_idx, v.record) FROM (VALUES %%s) AS v(record, dup_idx))",
        (dataset, data_schema),
    ).decode()
    found = psycopg2.extras.execute_values(
        cur,
        query,
        [(psycopg2.extras.Json(rec), dup) for rec, dup in rows],
        template="(%s::jsonb, %s::integer)",
        page_size=len(rows),
        fetch=True,
    )
    return [(r[0], int(r[1])) for r in found]


def supersede(
    cur: psycopg2.extensions.cursor,
    schema: str,
    dataset: str,
    data_schema: str,
    spans: list[tuple[int, int, int]],
    request: tuple[int, int],
    rows: list[tuple[dict[str, Any], int]],
) -> int:
    """Mark 'superseded' the open entries of a re-ingested range whose original record its data no longer
    rejects (``rows``: (original record, dup_idx) it rejects); returns how many.

    The range is each instrument's ``[start, end)`` in ns (``spans``: (instrument_id, start, end)); a record
    outside it counts when a chunk of exactly the ``request`` range (start, end ns) rejected it.
    """
    if not spans:
        return 0
    fingerprint = quote(cur.connection, schema, "quarantine_fingerprint")
    cur.execute(
        f"UPDATE {_t(schema, cur)} SET status = 'superseded', resolved_at = now() "
        "WHERE status = 'open' AND dataset = %s AND schema = %s AND EXISTS (SELECT 1 FROM "
        "jsonb_to_recordset(%s::jsonb) AS s(i bigint, lo numeric, hi numeric) "
        "WHERE s.i = (record->>'instrument_id')::bigint AND (((record->>'ts_event')::numeric >= s.lo "
        "AND (record->>'ts_event')::numeric < s.hi) "
        "OR (req_start = to_timestamp(%s::numeric / 1e9) AND req_end = to_timestamp(%s::numeric / 1e9)))) "
        f"AND fingerprint <> ALL(ARRAY(SELECT {fingerprint}(%s, %s, v.dup_idx, v.record) "
        "FROM jsonb_to_recordset(%s::jsonb) AS v(record jsonb, dup_idx integer)))",
        (
            dataset,
            data_schema,
            psycopg2.extras.Json([{"i": i, "lo": lo, "hi": hi} for i, lo, hi in spans]),
            *request,
            dataset,
            data_schema,
            psycopg2.extras.Json([{"record": rec, "dup_idx": dup} for rec, dup in rows]),
        ),
    )
    return cur.rowcount
