"""TimescaleDB when the extension is available: the market-data tables become hypertables.

Detection is automatic (``pg_available_extensions``). Plain PostgreSQL keeps ordinary tables with
the same primary keys, so every query and load path is identical on both.
"""

from __future__ import annotations

import logging

import psycopg2.extensions
from psycopg2 import sql

log = logging.getLogger(__name__)

#: Chunk interval per table: about a day of ticks, a week of minute bars, a year of daily bars.
CHUNK_INTERVALS: dict[str, str] = {
    "ohlcv_1s": "1 day",
    "ohlcv_1m": "7 days",
    "ohlcv_1h": "90 days",
    "ohlcv_1d": "365 days",
    "trades": "1 day",
    "tbbo": "1 day",
    "statistics": "30 days",
}


def available(cur: psycopg2.extensions.cursor) -> bool:
    cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return cur.fetchone() is not None


def enable(cur: psycopg2.extensions.cursor, schema: str) -> list[str]:
    """Create the extension if needed and convert the market-data tables; returns tables converted.

    Runs inside the migration transaction; a server that lists the extension but refuses to
    create it (no privilege) leaves plain tables and logs why.
    """
    if not available(cur):
        return []
    cur.execute("SAVEPOINT hdi_timescale")
    try:
        cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg2.Error as exc:
        cur.execute("ROLLBACK TO SAVEPOINT hdi_timescale")
        log.warning("timescaledb is available but could not be created (%s); using plain tables",
                    (exc.pgerror or str(exc)).strip())
        return []
    cur.execute(
        "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_schema = %s", (schema,)
    )
    existing = {r[0] for r in cur.fetchall()}
    converted = []
    for table, interval in CHUNK_INTERVALS.items():
        if table in existing:
            continue
        cur.execute(
            "SELECT create_hypertable(%s::regclass, 'ts_event', chunk_time_interval => %s::interval, "
            "migrate_data => true)",
            (sql.Identifier(schema, table).as_string(cur.connection), interval),
        )
        converted.append(table)
    return converted
