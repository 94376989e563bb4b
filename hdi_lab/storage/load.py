"""Writing one chunk: market data (binary COPY), definitions, symbology, quarantine, ingest log.

Every function takes the cursor of the chunk's transaction; the caller commits or rolls back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from hdi_lab.dbn import INT64_MAX, UINT64_MAX, Mapping, record_to_json
from hdi_lab.schemas import Chunk, ChunkResult
from hdi_lab.storage import copy
from hdi_lab.storage.cursor import quote
from hdi_lab.storage.db import one
from hdi_lab.storage.normalise import Columns, key_view

__all__ = [
    "BadRow",
    "Cursor",
    "completed",
    "insert_log",
    "insert_quarantine",
    "known_instruments",
    "load_definitions",
    "load_market",
    "lock_chunk",
    "upsert_symbology",
]

Cursor: TypeAlias = psycopg2.extensions.cursor


def _payload(cols: Columns, rows: npt.NDArray[Any] | None = None) -> bytes:
    """Binary COPY payload of all rows, or of the rows selected by the boolean mask ``rows``."""
    t = cols.table
    idx = {c.name: i for i, c in enumerate(t.columns)}

    def pick(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return a if rows is None else a[rows]

    return copy.encode(
        [c.pgtype for c in t.columns],
        [pick(cols.values[c.name]) for c in t.columns],
        {idx[name]: pick(mask) for name, mask in cols.nulls.items()},
    )


def _stored(cur: Cursor, schema: str, cols: Columns) -> npt.NDArray[Any]:
    """Mask of rows whose key is already stored (one index range scan, read by binary COPY)."""
    t = cols.table
    ts = cols.values[t.time_column]
    key_types = [t.column(k).pgtype for k in t.key]
    text = cur.mogrify(
        f"SELECT {', '.join(quote(cur.connection, k) for k in t.key)} FROM {quote(cur.connection, schema, t.name)} "
        f"WHERE instrument_id = ANY(%s) AND {t.time_column} BETWEEN %s AND %s",
        (np.unique(cols.values["instrument_id"]).tolist(), _pg_ts(int(ts.min())), _pg_ts(int(ts.max()))),
    ).decode()
    existing = copy.decode(copy.copy_out(cur, text), key_types)
    if len(existing) == 0:
        return np.zeros(len(cols), dtype=bool)
    mine = key_view([cols.values[k].astype(existing[f"v{i}"].dtype.newbyteorder("=")) for i, k in enumerate(t.key)])
    theirs = key_view([existing[f"v{i}"] for i in range(len(t.key))])
    return np.isin(mine, theirs)


def _pg_ts(pg_us: int) -> dt.datetime:
    return dt.datetime(2000, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=pg_us)


def load_market(cur: Cursor, schema: str, cols: Columns) -> tuple[int, int]:
    """Load canonical columns; returns (inserted, updated). Re-loading the same rows adds nothing.

    The keys already stored in the chunk's range are read first. Rows with new keys are COPYed
    straight into the table (insert-only tables never need more); tables that take vendor
    corrections send overlapping rows through a staging table and ``INSERT .. ON CONFLICT DO
    UPDATE``. If a concurrent writer stores the same keys meanwhile, the direct COPY fails on
    the primary key and the whole batch falls back to the staging path.
    """
    n = len(cols)
    if n == 0:
        return 0, 0
    t = cols.table
    target = quote(cur.connection, schema, t.name)
    names = [quote(cur.connection, c) for c in t.column_names]
    stored = _stored(cur, schema, cols)
    overlap = bool(stored.any())
    if not overlap or t.on_conflict == "nothing":
        fresh = ~stored
        cur.execute("SAVEPOINT hdi_direct")
        try:
            if fresh.any():
                copy.copy_in(cur, target, names, _payload(cols, fresh if overlap else None))
            cur.execute("RELEASE SAVEPOINT hdi_direct")
            return int(fresh.sum()), 0
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT hdi_direct")
    payload = _payload(cols)
    stage = quote(cur.connection, f"hdi_stage_{t.name}")
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {target}) ON COMMIT DROP")
    cur.execute(f"TRUNCATE {stage}")
    copy.copy_in(cur, stage, names, payload)
    cols_sql = ", ".join(names)
    key_sql = ", ".join(quote(cur.connection, k) for k in t.key)
    if t.on_conflict == "nothing":
        cur.execute(
            f"INSERT INTO {target} ({cols_sql}) SELECT {cols_sql} FROM {stage} ON CONFLICT ({key_sql}) DO NOTHING"
        )
        return cur.rowcount, 0
    rest = [quote(cur.connection, c) for c in t.column_names if c not in t.key]
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in rest)
    old = ", ".join(f"{target}.{c}" for c in rest)
    new = ", ".join(f"EXCLUDED.{c}" for c in rest)
    cur.execute(
        f"WITH up AS (INSERT INTO {target} ({cols_sql}) SELECT {cols_sql} FROM {stage} "
        f"ON CONFLICT ({key_sql}) DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new}) "
        "RETURNING (xmax = 0) AS fresh) "
        "SELECT count(*) FILTER (WHERE fresh), count(*) FILTER (WHERE NOT fresh) FROM up"
    )
    ins, upd = one(cur)
    return int(ins), int(upd)


def _text(v: bytes) -> str | None:
    s = v.decode("latin-1").rstrip("\x00")
    return s or None


def _ns_ts(v: int) -> dt.datetime | None:
    if v in (UINT64_MAX, INT64_MAX, 0):
        return None
    return pd.Timestamp(int(v), unit="ns", tz="UTC").to_pydatetime(warn=False)


def load_definitions(cur: Cursor, schema: str, dataset: str, records: npt.NDArray[Any]) -> tuple[int, int]:
    """Upsert instrument definitions (versioned by ts_recv); returns (inserted, updated)."""
    if len(records) == 0:
        return 0, 0
    rows = [  # definitions are few: one per instrument per day
        (
            int(r["publisher_id"]),
            int(r["instrument_id"]),
            int(r["ts_recv"]),
            _ns_ts(int(r["ts_recv"])),
            int(r["ts_event"]),
            dataset,
            _text(r["raw_symbol"]) or "",
            _text(r["instrument_class"]),
            _text(r["security_type"]),
            _text(r["asset"]),
            _text(r["exchange"]),
            _text(r["currency"]),
            _text(r["underlying"]),
            _ns_ts(int(r["expiration"])),
            _ns_ts(int(r["activation"])),
            None if int(r["min_price_increment"]) == INT64_MAX else int(r["min_price_increment"]),
            None if int(r["display_factor"]) == INT64_MAX else int(r["display_factor"]),
            None if int(r["contract_multiplier"]) == 2**31 - 1 else int(r["contract_multiplier"]),
            psycopg2.extras.Json(record_to_json(r)),
        )
        for r in records
    ]
    t = quote(cur.connection, schema, "instruments")
    result = psycopg2.extras.execute_values(
        cur,
        f"WITH up AS (INSERT INTO {t} (publisher_id, instrument_id, ts_recv_ns, ts_recv, ts_event_ns, dataset, "
        "raw_symbol, instrument_class, security_type, asset, exchange, currency, underlying, expiration, "
        "activation, min_price_increment, display_factor, contract_multiplier, record) VALUES %s "
        "ON CONFLICT (publisher_id, instrument_id, ts_recv_ns) DO UPDATE SET record = EXCLUDED.record, "
        "raw_symbol = EXCLUDED.raw_symbol, expiration = EXCLUDED.expiration "
        f"WHERE {t}.record IS DISTINCT FROM EXCLUDED.record RETURNING (xmax = 0) AS fresh) "
        "SELECT count(*) FILTER (WHERE fresh), count(*) FILTER (WHERE NOT fresh) FROM up",
        rows,
        page_size=len(rows),
        fetch=True,
    )
    ins, upd = result[0]
    return int(ins), int(upd)


def upsert_symbology(cur: Cursor, schema: str, dataset: str, mappings: Iterable[Mapping]) -> None:
    rows = sorted({(dataset, m.stype, m.symbol, m.d0, m.d1, m.instrument_id) for m in mappings})
    if not rows:
        return
    t = quote(cur.connection, schema, "symbology")
    psycopg2.extras.execute_values(
        cur,
        f"INSERT INTO {t} (dataset, stype, symbol, d0, d1, instrument_id) VALUES %s "
        f"ON CONFLICT (dataset, stype, symbol, d0, instrument_id) DO UPDATE SET d1 = GREATEST({t}.d1, EXCLUDED.d1)",
        rows,
    )


def known_instruments(cur: Cursor, schema: str, dataset: str, ids: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The subset of ``ids`` that the database knows for ``dataset`` (symbology or definitions)."""
    if len(ids) == 0:
        return ids
    symbology, instruments = quote(cur.connection, schema, "symbology"), quote(cur.connection, schema, "instruments")
    cur.execute(
        f"SELECT instrument_id FROM {symbology} WHERE dataset = %s AND instrument_id = ANY(%s) "
        f"UNION SELECT instrument_id FROM {instruments} WHERE dataset = %s "
        "AND instrument_id = ANY(%s)",
        (dataset, ids.tolist(), dataset, ids.tolist()),
    )
    return np.array([r[0] for r in cur.fetchall()], dtype=np.int64)


def lock_chunk(cur: Cursor, key: str) -> None:
    """Hold the chunk's advisory lock until the transaction ends (concurrent loads of one chunk wait)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))


def completed(cur: Cursor, schema: str, keys: Sequence[str]) -> set[str]:
    if not keys:
        return set()
    cur.execute(
        f"SELECT DISTINCT chunk_key FROM {quote(cur.connection, schema, 'ingest_log')} WHERE chunk_key = ANY(%s)",
        (list(keys),),
    )
    return {r[0] for r in cur.fetchall()}


def insert_log(cur: Cursor, schema: str, result: ChunkResult, forced: bool) -> int:
    c = result.chunk
    log = quote(cur.connection, schema, "ingest_log")
    cur.execute(
        f"INSERT INTO {log} (chunk_key, provider, dataset, schema, stype_in, symbols, "
        "start_ts, end_ts, source, fetched, inserted, updated, duplicates, quarantined, seconds, forced, warnings) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::text[]) RETURNING id",
        (
            c.key,
            c.provider,
            c.dataset,
            c.schema.value,
            c.stype_in.value,
            list(c.symbols),
            c.start.to_pydatetime(),
            c.end.to_pydatetime(),
            c.path,
            result.fetched,
            result.inserted,
            result.updated,
            result.duplicates,
            result.quarantined,
            result.seconds,
            forced,
            list(result.warnings),
        ),
    )
    return int(one(cur)[0])


class BadRow(NamedTuple):
    rule: str
    reason: str
    record: dict[str, object]
    dup_idx: int


def insert_quarantine(cur: Cursor, schema: str, ingest_id: int | None, chunk: Chunk, rows: Sequence[BadRow]) -> None:
    """Store rejected records (rule, reason, original record), one entry per record.

    An entry is identified by the fingerprint of the original record (dataset, schema, dup_idx,
    record) taken here, whatever its status: a re-run adds nothing, and an entry already fixed and
    resolved is not re-opened (its ``record`` may have been edited since; the fingerprint is not).
    """
    if not rows:
        return
    t = quote(cur.connection, schema, "quarantine")
    fingerprint = quote(cur.connection, schema, "quarantine_fingerprint")
    psycopg2.extras.execute_values(
        cur,
        f"INSERT INTO {t} (ingest_id, chunk_key, dataset, schema, rule, reason, record, dup_idx, req_start, req_end, "
        f"fingerprint) SELECT v.*, {fingerprint}(v.dataset, v.schema, v.dup_idx, v.record) FROM (VALUES %s) AS "
        "v(ingest_id, chunk_key, dataset, schema, rule, reason, record, dup_idx, req_start, req_end) "
        "ON CONFLICT (fingerprint) DO NOTHING",
        [
            (
                ingest_id,
                chunk.key,
                chunk.dataset,
                chunk.schema.value,
                r.rule,
                r.reason,
                psycopg2.extras.Json(r.record),
                r.dup_idx,
                chunk.start.to_pydatetime(),
                chunk.end.to_pydatetime(),
            )
            for r in rows
        ],
        template="(%s::bigint, %s, %s, %s, %s, %s, %s::jsonb, %s::integer, %s, %s)",
    )
