"""What the daily operations report (:mod:`hdi_lab.core.report`) asks the database: the ingests finished in a
time window, quarantine entries by rule and status, the vendor's day conditions seen, and the window's bars and
TBBO quotes (prices as int64 fixed-point, 1e-9) with the dataset of their publisher."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import psycopg2.extensions

from hdi_lab.storage.cursor import fetch_frame, quote, transaction

__all__ = [
    "BAR_COLUMNS",
    "CONDITION_COLUMNS",
    "INGEST_COLUMNS",
    "QUARANTINE_COLUMNS",
    "QUOTE_COLUMNS",
    "SUBSCRIPTION_COLUMNS",
    "bars",
    "conditions",
    "ingests",
    "quarantine",
    "quotes",
    "subscription_ingests",
]

#: the columns of :func:`ingests`
INGEST_COLUMNS = (
    "day",
    "provider",
    "dataset",
    "schema",
    "chunks",
    "fetched",
    "inserted",
    "updated",
    "deleted",
    "duplicates",
    "quarantined",
    "seconds",
    "cost_usd",
)
#: the columns of :func:`subscription_ingests`
SUBSCRIPTION_COLUMNS = (
    "subscription",
    "provider",
    "dataset",
    "schema",
    "chunks",
    "fetched",
    "inserted",
    "updated",
    "deleted",
    "seconds",
    "cost_usd",
)
#: the columns of :func:`quarantine`
QUARANTINE_COLUMNS = ("rule", "open", "resolved", "superseded")
#: the columns of :func:`conditions`
CONDITION_COLUMNS = ("dataset", "schema", "day", "condition", "last_modified_date")
#: the columns of :func:`bars`
BAR_COLUMNS = ("dataset", "instrument_id", "publisher_id", "ts_event", "open", "high", "low", "close", "volume")
#: the columns of :func:`quotes`
QUOTE_COLUMNS = ("dataset", "instrument_id", "publisher_id", "ts_event", "bid_px", "ask_px")


def _sums(columns: tuple[str, ...], prefix: str) -> str:
    """SQL: the sums of the ingest-log columns named after ``chunks`` in ``columns`` (from the table or alias
    ``prefix``), each named as its column: durations and costs as float8, counts as bigint."""
    summed = columns[columns.index("chunks") + 1 :]
    return ", ".join(
        f"sum({prefix}{c})::{'float8' if c in ('seconds', 'cost_usd') else 'bigint'} AS {c}" for c in summed
    )


def _frame(cur: psycopg2.extensions.cursor, columns: tuple[str, ...]) -> pd.DataFrame:
    frame = fetch_frame(cur)
    return pd.DataFrame(columns=list(columns)) if frame.empty else frame


def ingests(conn: psycopg2.extensions.connection, schema: str, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
    """The ingest log's chunks finished in ``[lo, hi)`` summed per UTC day (of finishing), provider, dataset and
    schema (:data:`INGEST_COLUMNS`; ``seconds`` is the chunks' total duration, ``cost_usd`` the sum of their
    estimated costs, NULL when no chunk of the group has one).

    Raises StorageError when the database fails."""
    log = quote(conn, schema, "ingest_log")
    with transaction(conn) as cur:
        cur.execute(
            "SELECT (finished_at AT TIME ZONE 'UTC')::date AS day, provider, dataset, schema, count(*) AS chunks, "
            f"{_sums(INGEST_COLUMNS, '')} FROM {log} WHERE finished_at >= %s AND finished_at < %s "
            "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            (lo, hi),
        )
        return _frame(cur, INGEST_COLUMNS)


def subscription_ingests(
    conn: psycopg2.extensions.connection, schema: str, lo: pd.Timestamp, hi: pd.Timestamp
) -> pd.DataFrame:
    """The chunks finished in ``[lo, hi)`` of each subscription's request (same provider, dataset, stype_in and
    symbols; its schema, and the definitions fetched along with it), summed per subscription
    (:data:`SUBSCRIPTION_COLUMNS`; ``subscription`` its name, else its id; ``cost_usd`` NULL when no chunk has
    an estimate). Subscriptions with no such chunk have no row.

    Raises StorageError when the database fails."""
    log, subs = quote(conn, schema, "ingest_log"), quote(conn, schema, "subscriptions")
    with transaction(conn) as cur:
        cur.execute(
            "SELECT coalesce(s.name, s.id::text) AS subscription, s.provider, s.dataset, s.schema, "
            f"count(*) AS chunks, {_sums(SUBSCRIPTION_COLUMNS, 'l.')} "
            f"FROM {subs} s JOIN {log} l ON l.provider = s.provider AND l.dataset = s.dataset "
            "AND l.stype_in = s.stype_in AND l.symbols @> s.symbols AND l.symbols <@ s.symbols "
            "AND l.schema IN (s.schema, 'definition') "
            "WHERE l.finished_at >= %s AND l.finished_at < %s GROUP BY s.id ORDER BY s.id",
            (lo, hi),
        )
        return _frame(cur, SUBSCRIPTION_COLUMNS)


def quarantine(conn: psycopg2.extensions.connection, schema: str, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
    """Quarantine entries created in ``[lo, hi)`` or still open, counted per rule and status
    (:data:`QUARANTINE_COLUMNS`), by rule.

    Raises StorageError when the database fails."""
    t = quote(conn, schema, "quarantine")
    with transaction(conn) as cur:
        cur.execute(
            "SELECT rule, count(*) FILTER (WHERE status = 'open') AS open, "
            "count(*) FILTER (WHERE status = 'resolved') AS resolved, "
            "count(*) FILTER (WHERE status = 'superseded') AS superseded "
            f"FROM {t} WHERE status = 'open' OR (created_at >= %s AND created_at < %s) GROUP BY 1 ORDER BY 1",
            (lo, hi),
        )
        return _frame(cur, QUARANTINE_COLUMNS)


def conditions(conn: psycopg2.extensions.connection, schema: str, first: dt.date, last: dt.date) -> pd.DataFrame:
    """The vendor's condition of each day of ``[first, last]`` as the latest ingest covering it saw it, per
    dataset and schema (:data:`CONDITION_COLUMNS`).

    Raises StorageError when the database fails."""
    log = quote(conn, schema, "ingest_log")
    cond = quote(conn, schema, "ingest_conditions")
    with transaction(conn) as cur:
        cur.execute(
            "SELECT DISTINCT ON (l.dataset, l.schema, c.day) l.dataset, l.schema, c.day, c.condition, "
            f"c.last_modified_date FROM {cond} c JOIN {log} l ON l.id = c.ingest_id "
            "WHERE c.day >= %s AND c.day <= %s ORDER BY l.dataset, l.schema, c.day, l.finished_at DESC, l.id DESC",
            (first, last),
        )
        return _frame(cur, CONDITION_COLUMNS)


def bars(
    conn: psycopg2.extensions.connection, schema: str, table: str, lo: pd.Timestamp, hi: pd.Timestamp
) -> pd.DataFrame:
    """The bars of ``table`` starting in ``[lo, hi)`` (:data:`BAR_COLUMNS`, prices int64 1e-9), by instrument,
    publisher and time.

    Raises StorageError when the database fails."""
    t, pub = quote(conn, schema, table), quote(conn, schema, "publishers")
    with transaction(conn) as cur:
        cur.execute(
            "SELECT p.dataset, b.instrument_id, b.publisher_id, b.ts_event, b.open, b.high, b.low, b.close, "
            f"b.volume FROM {t} b LEFT JOIN {pub} p USING (publisher_id) "
            "WHERE b.ts_event >= %s AND b.ts_event < %s ORDER BY 2, 3, 4",
            (lo, hi),
        )
        frame = _frame(cur, BAR_COLUMNS)
    frame["ts_event"] = pd.to_datetime(frame["ts_event"], utc=True)
    return frame


def quotes(conn: psycopg2.extensions.connection, schema: str, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
    """The TBBO rows in ``[lo, hi)`` whose best bid is at or above the best ask (locked or crossed; both sides
    quoted), :data:`QUOTE_COLUMNS`: checked in the database, a day of TBBO being millions of rows.

    Raises StorageError when the database fails."""
    t, pub = quote(conn, schema, "tbbo"), quote(conn, schema, "publishers")
    with transaction(conn) as cur:
        cur.execute(
            "SELECT p.dataset, q.instrument_id, q.publisher_id, q.ts_event, q.bid_px_00 AS bid_px, "
            f"q.ask_px_00 AS ask_px FROM {t} q LEFT JOIN {pub} p USING (publisher_id) "
            "WHERE q.ts_event >= %s AND q.ts_event < %s AND q.bid_px_00 IS NOT NULL AND q.ask_px_00 IS NOT NULL "
            "AND q.bid_px_00 >= q.ask_px_00 ORDER BY 2, 3, 4",
            (lo, hi),
        )
        frame = _frame(cur, QUOTE_COLUMNS)
    frame["ts_event"] = pd.to_datetime(frame["ts_event"], utc=True)
    return frame
