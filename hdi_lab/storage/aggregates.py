"""Coarser bars rolled up from stored bars: TimescaleDB continuous aggregates, else computed.

On TimescaleDB, 1-minute bars (``ohlcv_1m``) roll up into continuous aggregates ``rollup_5m``,
``rollup_15m``, ``rollup_1h`` and ``rollup_1d``, each shaped like a bars table (``ts_event`` is the
bucket start). They are real-time aggregates (``materialized_only = false``): buckets after the
last refresh are computed from the raw bars at query time. Bars that arrive *behind* the last
refresh (a backfill of history) are materialised by the next refresh: the refresh policy covers
the whole table (``start_offset => NULL``) and only re-materialises what changed; run it at once
with :func:`refresh`. Until then a query whose range has such bars computes its rollup from the
raw bars instead (:func:`choose` reads TimescaleDB's invalidation logs), so results are always
current.

Any other rollup (another interval, or bars other than 1-minute) is computed at query time:
``time_bucket`` on TimescaleDB, ``date_bin`` on plain PostgreSQL, both aligned on midnight UTC.
OHLC: first open, highest high, lowest low, last close (by time); volume: sum.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import psycopg2.extensions

from hdi_lab.errors import ValidationError
from hdi_lab.schemas import parse_time
from hdi_lab.storage.cursor import quote

__all__ = [
    "DAY",
    "ROLLUPS",
    "SOURCE",
    "Rollup",
    "bucket_ceil_ns",
    "choose",
    "create",
    "extension_schema",
    "parse_interval",
    "refresh",
    "relation",
]

log = logging.getLogger(__name__)

DAY = 86_400

#: Continuous aggregates over ``ohlcv_1m``: view name by bucket length (seconds).
ROLLUPS: dict[int, str] = {300: "rollup_5m", 900: "rollup_15m", 3600: "rollup_1h", DAY: "rollup_1d"}
SOURCE = "ohlcv_1m"

#: Refresh policy per rollup: (end_offset, schedule_interval).
_POLICY = {
    300: ("5 minutes", "5 minutes"),
    900: ("15 minutes", "15 minutes"),
    3600: ("1 hour", "1 hour"),
    DAY: ("1 day", "1 hour"),
}

_PG_MIN_US = -210_866_803_200_000_000  # the earliest timestamptz (4714 BC), in Unix microseconds
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": DAY, "day": DAY}
_INTERVAL = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|hour|d|day)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Rollup:
    """How to serve bars of ``seconds`` from the bars table ``table``."""

    seconds: int
    table: str  # source bars table
    view: str | None  # continuous aggregate to read, or None: compute at query time
    bucket_fn: str  # "time_bucket" (qualified) or "date_bin"
    first_last: str | None  # schema holding TimescaleDB's first()/last(), or None

    @property
    def interval_sql(self) -> str:
        return f"INTERVAL '{self.seconds} seconds'"


def parse_interval(text: str, bar_seconds: int) -> int:
    """Bucket length in seconds for ``interval`` (``"5m"``, ``"15m"``, ``"1h"``, ``"1d"``...) over bars of
    ``bar_seconds``; it must divide a day (or be one day) and be a multiple of the bar length.

    Raises ValidationError when ``text`` is not a positive number and a unit, does not divide a day, or is
    not a multiple of ``bar_seconds``."""
    m = _INTERVAL.match(str(text))
    if not m or int(m.group(1)) == 0:
        raise ValidationError(f"interval={text!r} is not valid: use a number and a unit, e.g. 5m, 15m, 1h or 1d")
    seconds = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if seconds > DAY or DAY % seconds:
        raise ValidationError(f"interval={text!r} does not divide a day: use e.g. 5m, 15m, 30m, 1h, 4h or 1d")
    if seconds % bar_seconds:
        raise ValidationError(
            f"interval={text!r} is not a whole number of the stored {bar_seconds}s bars: use a multiple of them"
        )
    return seconds


def choose(
    cur: psycopg2.extensions.cursor,
    schema: str,
    table: str,
    seconds: int,
    lo_ns: int | None = None,
    hi_ns: int | None = None,
) -> Rollup:
    """The continuous aggregate when it exists and is current over ``[lo_ns, hi_ns)``, else a
    query-time rollup for this server (``time_bucket`` / ``date_bin``)."""
    ext = extension_schema(cur)
    if ext is None:
        return Rollup(seconds, table, None, "date_bin", None)
    view = ROLLUPS.get(seconds) if table == SOURCE else None
    if view is not None:
        cur.execute(
            "SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_schema = %s AND view_name = %s",
            (schema, view),
        )
        view = view if cur.fetchone() and not _stale(cur, schema, view, lo_ns, hi_ns) else None
    return Rollup(seconds, table, view, f"{quote(cur.connection, ext)}.time_bucket", ext)


def _stale(cur: psycopg2.extensions.cursor, schema: str, view: str, lo_ns: int | None, hi_ns: int | None) -> bool:
    """Whether bars changed behind the aggregate's last refresh within ``[lo_ns, hi_ns)``.

    Above the watermark the real-time part reads the raw bars; below it, rows written since the
    last refresh (late data, backfills) are listed in TimescaleDB's invalidation logs until the
    next refresh. Those catalogs are internal: on a version without them, the aggregate is trusted.
    """
    lo_us = _PG_MIN_US if lo_ns is None else max(lo_ns // 1000, _PG_MIN_US)
    hi_us = 2**63 - 1 if hi_ns is None else -(-hi_ns // 1000)
    cur.execute("SAVEPOINT hdi_cagg_stale")
    try:
        cur.execute(
            "SELECT %(lo)s < LEAST(%(hi)s, w.watermark) AND (EXISTS (SELECT 1 "
            "  FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log l "
            "  WHERE l.hypertable_id = c.raw_hypertable_id AND l.lowest_modified_value < LEAST(%(hi)s, w.watermark) "
            "  AND l.greatest_modified_value >= %(lo)s) "
            "OR EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log m "
            "  WHERE m.materialization_id = c.mat_hypertable_id "
            "  AND m.lowest_modified_value < LEAST(%(hi)s, w.watermark) AND m.greatest_modified_value >= %(lo)s)) "
            "FROM _timescaledb_catalog.continuous_agg c JOIN _timescaledb_catalog.continuous_aggs_watermark w "
            "ON w.mat_hypertable_id = c.mat_hypertable_id "
            "WHERE c.user_view_schema = %(s)s AND c.user_view_name = %(v)s",
            {"lo": lo_us, "hi": hi_us, "s": schema, "v": view},
        )
        row = cur.fetchone()
    except psycopg2.Error as exc:
        cur.execute("ROLLBACK TO SAVEPOINT hdi_cagg_stale")
        log.debug(
            "cannot read the invalidation logs of %s.%s (%s): trusting the aggregate",
            schema,
            view,
            (exc.pgerror or str(exc)).strip(),
        )
        return False
    cur.execute("RELEASE SAVEPOINT hdi_cagg_stale")
    return bool(row and row[0])


def extension_schema(cur: psycopg2.extensions.cursor) -> str | None:
    """The schema TimescaleDB is installed in, or None (plain PostgreSQL)."""
    cur.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'timescaledb'"
    )
    row = cur.fetchone()
    return None if row is None else str(row[0])


def bucket_ceil_ns(ts_ns: int, seconds: int) -> int:
    """The first bucket start at or after ``ts_ns`` (buckets aligned on midnight UTC)."""
    step = seconds * 1_000_000_000
    return -(-ts_ns // step) * step


def relation(conn: psycopg2.extensions.connection, schema: str, r: Rollup, where: str) -> str:
    """SQL selecting bars-shaped rows (``instrument_id, publisher_id, ts_event, open, high, low, close,
    volume``) of the rollup, filtered by ``where`` on the source table (alias ``t``)."""
    src = quote(conn, schema, r.table)
    if r.view is not None:
        return f"SELECT * FROM {quote(conn, schema, r.view)} t WHERE {where}"
    if r.bucket_fn == "date_bin":
        bucket = f"date_bin({r.interval_sql}, t.ts_event, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
    else:
        bucket = f"{r.bucket_fn}({r.interval_sql}, t.ts_event)"
    if r.first_last:
        ext = quote(conn, r.first_last)
        first, last = f"{ext}.first(t.open, t.ts_event)", f"{ext}.last(t.close, t.ts_event)"
    else:
        first = "(array_agg(t.open ORDER BY t.ts_event))[1]"
        last = "(array_agg(t.close ORDER BY t.ts_event DESC))[1]"
    return (
        f"SELECT t.instrument_id, t.publisher_id, {bucket} AS ts_event, {first} AS open, max(t.high) AS high, "
        f"min(t.low) AS low, {last} AS close, sum(t.volume)::int8 AS volume FROM {src} t WHERE {where} "
        f"GROUP BY t.instrument_id, t.publisher_id, {bucket}"
    )


def create(cur: psycopg2.extensions.cursor, schema: str, ext: str) -> list[str]:
    """Create the missing continuous aggregates over ``ohlcv_1m`` (WITH NO DATA) and their refresh
    policies; returns the views created. Runs inside the migration transaction."""
    conn = cur.connection
    cur.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates WHERE view_schema = %s", (schema,))
    existing = {r[0] for r in cur.fetchall()}
    e = quote(conn, ext)
    src = quote(conn, schema, SOURCE)
    # TimescaleDB >= 2.19 refreshes in batches; its default batch walks the whole window bucket by
    # bucket (measured on 2.23: ~37 s for an empty 2-year window of 5-minute buckets). One batch
    # refreshes only what changed.
    cur.execute(
        "SELECT bool_or(pg_get_function_arguments(p.oid) LIKE '%%buckets_per_batch%%') FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s "
        "AND p.proname = 'add_continuous_aggregate_policy'",
        (ext,),
    )
    batch = ", buckets_per_batch => 0" if (cur.fetchone() or (False,))[0] else ""
    made = []
    for seconds, view in ROLLUPS.items():
        if view in existing:
            continue
        v = quote(conn, schema, view)
        bucket = f"{e}.time_bucket(INTERVAL '{seconds} seconds', ts_event)"
        cur.execute(
            f"CREATE MATERIALIZED VIEW {v} WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
            f"SELECT instrument_id, publisher_id, {bucket} AS ts_event, {e}.first(open, ts_event) AS open, "
            f"max(high) AS high, min(low) AS low, {e}.last(close, ts_event) AS close, "
            f"sum(volume)::bigint AS volume FROM {src} GROUP BY instrument_id, publisher_id, {bucket} "
            "WITH NO DATA"
        )
        end_offset, every = _POLICY[seconds]
        cur.execute(
            f"SELECT {e}.add_continuous_aggregate_policy(%s::regclass, start_offset => NULL, "
            f"end_offset => %s::interval, schedule_interval => %s::interval{batch})",
            (v, end_offset, every),
        )
        made.append(view)
    return made


def refresh(conn: psycopg2.extensions.connection, schema: str, start: object = None, end: object = None) -> list[str]:
    """Materialise the rollups over ``[start, end)`` now (None: unbounded); returns the views refreshed.

    ``refresh_continuous_aggregate`` cannot run inside a transaction: this commits first and runs
    in autocommit. Nothing to do on plain PostgreSQL.
    """
    conn.commit()
    with conn.cursor() as cur:
        ext = extension_schema(cur)
        if ext is None:
            conn.commit()
            return []
        cur.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates WHERE view_schema = %s "
            "AND view_name = ANY(%s) ORDER BY view_name",
            (schema, list(ROLLUPS.values())),
        )
        views = [r[0] for r in cur.fetchall()]
    conn.commit()
    bounds = [
        None if v is None else parse_time(v, name).to_pydatetime() for v, name in ((start, "start"), (end, "end"))
    ]
    old = conn.autocommit
    conn.autocommit = True
    try:
        call = f"CALL {quote(conn, ext)}.refresh_continuous_aggregate(%s::regclass, %s, %s)"
        with conn.cursor() as cur:
            for view in views:
                cur.execute(call, (quote(conn, schema, view), *bounds))
    finally:
        conn.autocommit = old
    return views
