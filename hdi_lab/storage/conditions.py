"""The vendor's day conditions seen at ingest time (table ``ingest_conditions``), written with a chunk's
ingest-log row and read back per symbol and day for :mod:`hdi_lab.core.conditions`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd
import psycopg2.extensions
import psycopg2.extras

from hdi_lab.storage.cursor import fetch_frame, quote, transaction

__all__ = ["INGESTED_COLUMNS", "ingested_days", "insert_conditions"]

#: the columns of :func:`ingested_days`
INGESTED_COLUMNS = ("symbol", "day", "ingest_id", "ingested_at", "condition", "last_modified_date")


def insert_conditions(
    cur: psycopg2.extensions.cursor,
    schema: str,
    ingest_id: int,
    rows: Sequence[tuple[dt.date, str, dt.date | None]],
) -> None:
    """Remember (day, condition, last_modified_date) as seen by the ingest ``ingest_id`` (in its transaction)."""
    if not rows:
        return
    t = quote(cur.connection, schema, "ingest_conditions")
    psycopg2.extras.execute_values(
        cur,
        f"INSERT INTO {t} (ingest_id, day, condition, last_modified_date) VALUES %s "
        "ON CONFLICT (ingest_id, day) DO UPDATE SET condition = EXCLUDED.condition, "
        "last_modified_date = EXCLUDED.last_modified_date",
        [(ingest_id, day, condition, modified) for day, condition, modified in rows],
        template="(%s::bigint, %s::date, %s, %s::date)",
    )


def ingested_days(
    conn: psycopg2.extensions.connection,
    schema: str,
    dataset: str,
    data_schema: str,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
) -> pd.DataFrame:
    """Per symbol and UTC day of ``[start, end]`` (inclusive) that an ingest of ``dataset``/``data_schema``
    covered: the latest such ingest (``ingest_id``, ``ingested_at``) and the condition and last_modified_date
    it saw (None when it recorded none). Days no ingest covered have no row.

    Raises StorageError when the database fails."""
    log = quote(conn, schema, "ingest_log")
    cond = quote(conn, schema, "ingest_conditions")
    with transaction(conn) as cur:
        cur.execute(
            "SELECT DISTINCT ON (s.symbol, d.day) s.symbol, d.day, l.id AS ingest_id, l.finished_at AS ingested_at, "
            "c.condition, c.last_modified_date "
            "FROM unnest(%s::text[]) AS s(symbol) "
            "CROSS JOIN (SELECT g::date AS day FROM generate_series(%s::date, %s::date, interval '1 day') AS g) d "
            f"JOIN {log} l ON l.dataset = %s AND l.schema = %s AND s.symbol = ANY(l.symbols) "
            "AND l.start_ts < ((d.day + 1)::timestamp AT TIME ZONE 'UTC') "
            "AND l.end_ts > (d.day::timestamp AT TIME ZONE 'UTC') "
            f"LEFT JOIN {cond} c ON c.ingest_id = l.id AND c.day = d.day "
            "ORDER BY s.symbol, d.day, l.finished_at DESC, l.id DESC",
            (list(symbols), start, end, dataset, data_schema),
        )
        frame = fetch_frame(cur)
    if frame.empty:
        return pd.DataFrame(columns=list(INGESTED_COLUMNS))
    return frame
