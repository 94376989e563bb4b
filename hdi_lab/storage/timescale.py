"""TimescaleDB when the extension is available: hypertables, compression, rollups, policies.

Detection is automatic (:func:`detect` reads ``pg_available_extensions``). Plain PostgreSQL keeps
ordinary tables with the same primary keys, so every load path is identical on both; rollups are
computed at query time there (see :mod:`hdi_lab.storage.aggregates`).

On TimescaleDB, every time a session connects (:func:`enable`, called by the migration):

- the market-data tables are hypertables with a chunk interval suited to each (``CHUNK_INTERVALS``);
- they are compressible, segmented by ``instrument_id, publisher_id`` and ordered by time
  (newest first) then the rest of the primary key; a compression policy compresses chunks older
  than ``timescale_compress_after`` (default 7 days; ``off`` for none). Loads into compressed
  chunks work as anywhere else (TimescaleDB >= 2.11 checks the key and inserts into compressed
  chunks; rows already stored are skipped or updated exactly as in uncompressed ones);
- 1-minute bars roll up into continuous aggregates (5m, 15m, 1h, 1d) with refresh policies;
- retention is OFF: no data is ever dropped unless ``timescale_retention`` is set (e.g.
  ``"5 years"``), which adds a retention policy to every market-data hypertable. Beware that a
  retention policy also drops backfilled history older than that age. Unsetting it removes the policy.

Policies follow the settings on every connect (added, changed or removed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd
import psycopg2.extensions

from hdi_lab.errors import ConfigError
from hdi_lab.storage import aggregates, counts, versions
from hdi_lab.storage.cursor import fetch_frame, quote, transaction
from hdi_lab.storage.tables import TABLES

__all__ = [
    "CHUNK_INTERVALS",
    "SEGMENT_BY",
    "Extension",
    "Objects",
    "Policies",
    "detect",
    "enable",
    "job_ids",
    "objects",
]

log = logging.getLogger(__name__)

#: Chunk interval per table: about a day of ticks, a week of minute bars, a year of daily bars.
CHUNK_INTERVALS: dict[str, str] = {
    "ohlcv_1s": "1 day",
    "ohlcv_5s": "1 day",
    "ohlcv_1m": "7 days",
    "ohlcv_1h": "90 days",
    "ohlcv_1d": "365 days",
    "trades": "1 day",
    "tbbo": "1 day",
    "statistics": "30 days",
}
SEGMENT_BY = ("instrument_id", "publisher_id")
_OFF = ("", "off", "none", "false", "0", "never")


@dataclass(frozen=True)
class Policies:
    """What the TimescaleDB policies should be (from the settings)."""

    compress_after: str | None = "7 days"  # None: no compression policy (chunks stay compressible)
    retention: str | None = None  # None: never drop data

    @classmethod
    def from_settings(cls, compress_after: object, retention: object) -> Policies:
        def interval(value: object) -> str | None:
            return None if value is None or str(value).strip().lower() in _OFF else str(value).strip()

        return cls(interval(compress_after), interval(retention))


@dataclass(frozen=True)
class Extension:
    """The timescaledb extension on a server."""

    installed: str | None  # installed version; None: plain PostgreSQL
    available: bool  # the server offers the extension


class Objects(NamedTuple):
    """A schema's TimescaleDB objects, one frame each."""

    hypertables: pd.DataFrame
    # table, chunk_interval, chunks, compressed_chunks, bytes_before, bytes_after, compression_ratio
    aggregates: pd.DataFrame  # view, source, materialized_only
    policies: pd.DataFrame  # job_id, policy, target, schedule, config


def detect(cur: psycopg2.extensions.cursor) -> Extension:
    """Whether the server offers timescaledb and which version is installed (the one detection query)."""
    cur.execute("SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb'")
    row = cur.fetchone()
    return Extension(str(row[0]) if row and row[0] is not None else None, row is not None)


def enable(cur: psycopg2.extensions.cursor, schema: str, policies: Policies | None = None) -> list[str]:
    """Create the extension if needed, convert and configure the market-data tables; returns the
    tables converted now.

    Runs inside the migration transaction; a server that lists the extension but refuses to
    create it (no privilege) leaves plain tables and logs why.
    """
    policies = policies or Policies()
    ext = aggregates.extension_schema(cur)
    if ext is None:
        if not detect(cur).available:
            return []
        cur.execute("SAVEPOINT hdi_timescale")
        try:  # in public, never in the first schema on the search path (the hdi_lab schema)
            cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb SCHEMA public")
        except psycopg2.Error as exc:
            cur.execute("ROLLBACK TO SAVEPOINT hdi_timescale")
            log.warning(
                "timescaledb is available but could not be created (%s); using plain tables",
                (exc.pgerror or str(exc)).strip(),
            )
            return []
        ext = "public"
    conn = cur.connection
    e = quote(conn, ext)
    cur.execute(
        "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables "
        "WHERE hypertable_schema = %s",
        (schema,),
    )
    existing = dict(cur.fetchall())
    converted = []
    for table, interval in CHUNK_INTERVALS.items():
        target = quote(conn, schema, table)
        if table not in existing:
            cur.execute(
                f"SELECT {e}.create_hypertable(%s::regclass, 'ts_event', chunk_time_interval => %s::interval, "
                "migrate_data => true)",
                (target, interval),
            )
            converted.append(table)
        if not existing.get(table):
            cur.execute(
                f"ALTER TABLE {target} SET (timescaledb.compress, timescaledb.compress_segmentby = %s, "
                "timescaledb.compress_orderby = %s)",
                (", ".join(SEGMENT_BY), _order_by(table)),
            )
    _sync_policy(
        cur,
        schema,
        e,
        "policy_compression",
        "compress_after",
        "add_compression_policy",
        "remove_compression_policy",
        policies.compress_after,
    )
    _sync_policy(
        cur,
        schema,
        e,
        "policy_retention",
        "drop_after",
        "add_retention_policy",
        "remove_retention_policy",
        policies.retention,
    )
    aggregates.create(cur, schema, ext)
    return converted


def _order_by(table: str) -> str:
    """Newest first, then the rest of the primary key (segments are one instrument and publisher)."""
    key = next(t.key for t in TABLES.values() if t.name == table)
    rest = [k for k in key if k not in SEGMENT_BY and k != "ts_event"]
    return ", ".join(["ts_event DESC", *rest])


def _sync_policy(
    cur: psycopg2.extensions.cursor,
    schema: str,
    e: str,
    proc: str,
    option: str,
    add: str,
    remove: str,
    wanted: str | None,
) -> None:
    """Make every market-data hypertable's ``proc`` policy match ``wanted`` (None: no policy)."""
    conn = cur.connection
    if wanted is not None:
        cur.execute("SAVEPOINT hdi_policy")
        try:
            cur.execute("SELECT %s::interval", (wanted,))
        except psycopg2.Error:
            cur.execute("ROLLBACK TO SAVEPOINT hdi_policy")
            setting = "timescale_compress_after" if proc == "policy_compression" else "timescale_retention"
            raise ConfigError(
                f"{setting}={wanted!r} is not a PostgreSQL interval: use e.g. '7 days' or 'off'"
            ) from None
        cur.execute("RELEASE SAVEPOINT hdi_policy")
    cur.execute(
        "SELECT hypertable_name, (config->>%s)::interval = %s::interval FROM timescaledb_information.jobs "
        "WHERE proc_name = %s AND hypertable_schema = %s",
        (option, wanted, proc, schema),
    )
    current = {name: bool(same) for name, same in cur.fetchall()}
    removed = []
    for table in CHUNK_INTERVALS:
        target = quote(conn, schema, table)
        if table in current and (wanted is None or not current[table]):
            cur.execute(f"SELECT {e}.{remove}(%s::regclass)", (target,))
            removed.append(table)
            if proc == "policy_retention":  # it may have dropped rows the bar counts still hold
                counts.mark_stale(cur, schema, [table])
        if wanted is not None and not current.get(table):
            cur.execute(f"SELECT {e}.{add}(%s::regclass, %s::interval)", (target, wanted))
    if proc == "policy_retention":  # what readers of cached days must know: the horizon, and rows maybe dropped
        versions.set_retention(cur, schema, list(CHUNK_INTERVALS), wanted, removed)


def objects(cur: psycopg2.extensions.cursor, schema: str) -> Objects:
    """``schema``'s hypertables with chunk counts and compression, continuous aggregates and policies
    (empty frames when the extension is not installed)."""
    ext = aggregates.extension_schema(cur)
    if ext is None:
        return Objects(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    e = quote(cur.connection, ext)
    cur.execute(
        f'SELECT h.hypertable_name AS "table", d.time_interval AS chunk_interval, '
        "(SELECT count(*) FROM timescaledb_information.chunks c WHERE c.hypertable_schema = h.hypertable_schema "
        "AND c.hypertable_name = h.hypertable_name) AS chunks, "
        "COALESCE(s.number_compressed_chunks, 0) AS compressed_chunks, "
        "s.before_compression_total_bytes AS bytes_before, s.after_compression_total_bytes AS bytes_after, "
        "round(s.before_compression_total_bytes::numeric / NULLIF(s.after_compression_total_bytes, 0), 2)"
        "::float8 AS compression_ratio "
        "FROM timescaledb_information.hypertables h "
        "JOIN timescaledb_information.dimensions d ON d.hypertable_schema = h.hypertable_schema "
        "AND d.hypertable_name = h.hypertable_name AND d.dimension_number = 1 "
        f"LEFT JOIN LATERAL {e}.hypertable_compression_stats(format('%%I.%%I', h.hypertable_schema, "
        "h.hypertable_name)::regclass) s ON true "
        "WHERE h.hypertable_schema = %s ORDER BY 1",
        (schema,),
    )
    tables = fetch_frame(cur)
    cur.execute(
        "SELECT view_name AS view, hypertable_name AS source, materialized_only "
        "FROM timescaledb_information.continuous_aggregates WHERE view_schema = %s ORDER BY 1",
        (schema,),
    )
    views = fetch_frame(cur)
    for name in ("chunks", "compressed_chunks", "bytes_before", "bytes_after"):
        tables[name] = tables[name].astype("Int64")
    tables["chunk_interval"] = tables["chunk_interval"].astype(str)
    return Objects(tables, views, _policies(cur, schema))


def _policies(cur: psycopg2.extensions.cursor, schema: str) -> pd.DataFrame:
    cur.execute(
        "SELECT j.job_id, j.proc_name AS policy, COALESCE(a.view_name, j.hypertable_name) AS target, "
        "j.schedule_interval::text AS schedule, j.config::text AS config "
        "FROM timescaledb_information.jobs j LEFT JOIN timescaledb_information.continuous_aggregates a "
        "ON a.materialization_hypertable_schema = j.hypertable_schema "
        "AND a.materialization_hypertable_name = j.hypertable_name "
        "WHERE j.hypertable_schema = %s OR a.view_schema = %s ORDER BY 2, 3",
        (schema, schema),
    )
    return fetch_frame(cur)


def job_ids(conn: psycopg2.extensions.connection, schema: str, policy: str) -> dict[str, int]:
    """Job id of each ``policy`` job (``policy_compression``, ``policy_retention``,
    ``policy_refresh_continuous_aggregate``) by table or view name, for ``CALL run_job(id)``."""
    with transaction(conn) as cur:
        jobs = _policies(cur, schema) if aggregates.extension_schema(cur) is not None else pd.DataFrame()
    if not len(jobs):
        return {}
    rows = jobs[jobs["policy"] == policy]
    return {str(t): int(j) for t, j in zip(rows["target"], rows["job_id"], strict=True)}
