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
from hdi_lab.storage import copy, counts, versions
from hdi_lab.storage.cursor import quote
from hdi_lab.storage.db import one
from hdi_lab.storage.normalise import Columns
from hdi_lab.storage.tables import Table

__all__ = [
    "Arrays",
    "BadRow",
    "Coverage",
    "Cursor",
    "Span",
    "completed",
    "delete_stale",
    "insert_log",
    "insert_quarantine",
    "key_values",
    "known_instruments",
    "load_definitions",
    "load_market",
    "lock_chunk",
    "logged_result",
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


#: stands for NULL when stored rows are read back by binary COPY (no vendor value is INT64_MIN)
_NULL_INT8 = -(2**63)

Arrays: TypeAlias = list[npt.NDArray[Any]]


class Coverage:
    """What the loads of one chunk covered, for :func:`delete_stale`: the keys of the rows they stored,
    the ranges of stored rows they read, and the rows read there that their data did not have."""

    def __init__(self) -> None:
        self.kept: list[Arrays] = []  # key columns of rows stored (or kept) for the chunk, one list per load
        self.windows: list[tuple[list[int], int, int]] = []  # (instrument ids, first, last time in PG us)
        self.unmatched: list[Arrays] = []  # key columns of stored rows read in a window and not in its data
        self.changed: dict[int, int] = {}  # instrument id -> ts_event (ns) of its first row inserted/updated/deleted

    def keep(self, keys: Arrays) -> None:
        """Count rows with these key columns (stored types, see :func:`key_values`) as the chunk's."""
        self.kept.append(keys)

    def note_changed(self, t: Table, keys: Arrays) -> None:
        """Count rows of ``t`` with these key columns (stored types) as inserted, updated or deleted: each
        instrument's earliest ``ts_event`` is kept in :attr:`changed`."""
        if len(keys[0]) == 0:
            return
        k = dict(zip(t.key, keys, strict=True))
        ns = _ns_of(t, k)
        ids = k["instrument_id"].astype(np.int64)
        for iid in np.unique(ids):
            first = int(ns[ids == iid].min())
            self.changed[int(iid)] = min(first, self.changed.get(int(iid), first))


def _ns_of(t: Table, key: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.int64]:
    """The time (ns) of rows from their key columns (stored types): the ns column, else the PG microseconds."""
    if t.ns_column:
        return key[t.ns_column].astype(np.int64, copy=False)
    return (key[t.time_column].astype(np.int64) + copy.PG_EPOCH_US) * 1000


def _native(t: Table, column: str, v: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return v.astype(np.dtype(copy.WIDTH[t.column(column).pgtype]).newbyteorder("="), copy=False)


def key_values(cols: Columns) -> Arrays:
    """The key columns of the rows, in their stored types (see :meth:`Coverage.keep`)."""
    return [_native(cols.table, k, cols.values[k]) for k in cols.table.key]


def _full_values(cols: Columns) -> Arrays:
    """Every column of the rows, key columns first, in their stored types, NULLs as :data:`_NULL_INT8`."""
    t = cols.table
    out = []
    for c in _key_first(t):
        v = cols.values[c]
        if c in cols.nulls:
            v = np.where(cols.nulls[c], _NULL_INT8, v)
        out.append(_native(t, c, v))
    return out


def _key_first(t: Table) -> list[str]:
    return [*t.key, *(c for c in t.column_names if c not in t.key)]


def _read(cur: Cursor, t: Table, columns: Sequence[str], where: str, params: Sequence[object]) -> Arrays:
    """``columns`` of the stored rows matching ``where`` (binary COPY), NULLs as :data:`_NULL_INT8`."""
    conn = cur.connection
    sel = ", ".join(
        f"COALESCE({quote(conn, c)}, {_NULL_INT8})" if t.column(c).nullable else quote(conn, c) for c in columns
    )
    text = cur.mogrify(f"SELECT {sel} FROM {where}", params).decode()
    rows = copy.decode(copy.copy_out(cur, text), [t.column(c).pgtype for c in columns])
    return [_native(t, c, rows[f"v{i}"]) for i, c in enumerate(columns)]


def _match(mine: Arrays, theirs: Arrays, nkey: int) -> tuple[npt.NDArray[np.bool_], ...]:
    """Compare rows by their first ``nkey`` columns (the key) and by all columns.

    Returns (mine equal to one of theirs, mine whose key is one of theirs', theirs whose key is one of
    mine). One lexsort of both sides: no hashing, any number of equal rows on either side.
    """
    n = len(mine[0])
    if n == len(theirs[0]) and all(np.array_equal(a, b) for a, b in zip(mine[:nkey], theirs[:nkey], strict=True)):
        # the common re-load: the stored rows come back in key order, as the data is sorted
        same = np.ones(n, dtype=bool)
        for a, b in zip(mine[nkey:], theirs[nkey:], strict=True):
            same &= a == b
        return same, np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    both = [np.concatenate([a, b]) for a, b in zip(mine, theirs, strict=True)]
    if len(both[0]) == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    order = np.lexsort(both[::-1])  # by the key, then by the other columns: equal rows end up adjacent
    diff = np.zeros(len(order) - 1, dtype=bool)
    key_group: npt.NDArray[np.intp] = np.zeros(len(order), dtype=np.intp)
    for i, c in enumerate(both):
        s = c[order]
        diff |= s[1:] != s[:-1]
        if i + 1 == nkey:
            key_group = np.concatenate([[0], np.cumsum(diff)])
    full_group = np.concatenate([[0], np.cumsum(diff)])
    theirs_at = order >= n
    mine_at = ~theirs_at

    def has(group: npt.NDArray[Any], side: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        return np.bincount(group, weights=side, minlength=int(group[-1]) + 1)[group] > 0

    same, keyed = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    same[order[mine_at]] = has(full_group, theirs_at)[mine_at]
    keyed[order[mine_at]] = has(key_group, theirs_at)[mine_at]
    found = np.zeros(len(order) - n, dtype=bool)
    found[order[theirs_at] - n] = has(key_group, mine_at)[theirs_at]
    return same, keyed, found


def _compare(
    cur: Cursor, schema: str, cols: Columns, coverage: Coverage | None
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Masks of rows already stored with equal values (``same``) and with other values (``changed``).

    The stored rows of the data's range are read in one index range scan and compared whole.
    """
    t = cols.table
    ts = cols.values[t.time_column]
    ids = np.unique(cols.values["instrument_id"]).tolist()
    lo, hi = int(ts.min()), int(ts.max())
    where = (
        f"{quote(cur.connection, schema, t.name)} WHERE instrument_id = ANY(%s) AND {t.time_column} BETWEEN %s AND %s"
    )
    existing = _read(cur, t, _key_first(t), where, (ids, _pg_ts(lo), _pg_ts(hi)))
    n = len(cols)
    if coverage is not None:
        coverage.windows.append((ids, lo, hi))
    if len(existing[0]) == 0:
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    same, keyed, found = _match(_full_values(cols), existing, len(t.key))
    if coverage is not None and not found.all():
        coverage.unmatched.append([e[~found] for e in existing[: len(t.key)]])
    return same, keyed & ~same


def _pg_ts(pg_us: int) -> dt.datetime:
    return dt.datetime(2000, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=pg_us)


def _stage(cur: Cursor, t: Table, target: str, names: Sequence[str], payload: bytes) -> str:
    """A temporary table shaped like ``target`` holding ``payload`` (dropped at commit)."""
    stage = quote(cur.connection, f"hdi_stage_{t.name}")
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {target}) ON COMMIT DROP")
    cur.execute(f"TRUNCATE {stage}")
    copy.copy_in(cur, stage, names, payload)
    return stage


def load_market(cur: Cursor, schema: str, cols: Columns, coverage: Coverage | None = None) -> tuple[int, int]:
    """Load canonical columns; returns (inserted, updated). Re-loading the same rows changes nothing.

    The rows stored in the chunk's range are read first. Rows with new keys are COPYed straight
    into the table; rows whose key is stored with other values (a vendor revision) replace them
    through a staging table. If a concurrent writer stores the same keys meanwhile, the direct COPY
    fails on the primary key and the whole batch goes through the staging table and
    ``INSERT .. ON CONFLICT DO UPDATE``. ``coverage``, if given, records what was read and stored.
    """
    n = len(cols)
    if n == 0:
        return 0, 0
    same, changed = _compare(cur, schema, cols, coverage)
    keys = key_values(cols) if coverage is not None else []
    if coverage is not None:
        coverage.keep(keys)
    fresh = ~(same | changed)
    if not (fresh.any() or changed.any()):
        return 0, 0
    with counts.kept(cur, cols.table.name), versions.kept(cur):
        ins, upd = _write(cur, schema, cols, fresh, changed, keys, coverage)
    return ins, upd


def _bump(cur: Cursor, schema: str, cols: Columns, rows: npt.NDArray[np.bool_] | None) -> None:
    """New versions for the instrument-days of the rows (all, or those of the mask ``rows``) of ``cols``."""
    t = cols.table
    ids = cols.values["instrument_id"]
    ns = cols.values[t.ns_column] if t.ns_column else (cols.values[t.time_column] + copy.PG_EPOCH_US) * 1000
    if rows is not None:
        ids, ns = ids[rows], ns[rows]
    versions.bump(cur, schema, t.name, ids, ns)


def _write(
    cur: Cursor,
    schema: str,
    cols: Columns,
    fresh: npt.NDArray[np.bool_],
    changed: npt.NDArray[np.bool_],
    keys: Arrays,
    coverage: Coverage | None,
) -> tuple[int, int]:
    """COPY the ``fresh`` rows, update the ``changed`` ones (see :func:`load_market`); bar counts and the versions
    of their instrument-days follow."""
    t = cols.table
    target = quote(cur.connection, schema, t.name)
    names = [quote(cur.connection, c) for c in t.column_names]
    cur.execute("SAVEPOINT hdi_direct")
    try:
        if fresh.any():
            copy.copy_in(cur, target, names, _payload(cols, None if fresh.all() else fresh))
        cur.execute("RELEASE SAVEPOINT hdi_direct")
    except psycopg2.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT hdi_direct")
        if coverage is not None:  # which rows the upsert changes is not known here: all of them may have
            coverage.note_changed(t, keys)
        _bump(cur, schema, cols, None)
        return _upsert(cur, schema, t, _payload(cols))
    if fresh.any():
        ids, ts = cols.values["instrument_id"], cols.values[t.time_column]
        counts.add(cur, schema, t.name, ids[fresh], ts[fresh])
    touched = fresh | changed
    _bump(cur, schema, cols, None if touched.all() else touched)
    if coverage is not None and touched.any():
        coverage.note_changed(t, [k[touched] for k in keys])
    if not changed.any():
        return int(fresh.sum()), 0
    stage = _stage(cur, t, target, names, _payload(cols, changed))
    rest = [quote(cur.connection, c) for c in t.column_names if c not in t.key]
    sets = ", ".join(f"{c} = s.{c}" for c in rest)
    match = " AND ".join(f"d.{quote(cur.connection, k)} = s.{quote(cur.connection, k)}" for k in t.key)
    cur.execute(f"UPDATE {target} AS d SET {sets} FROM {stage} AS s WHERE {match}")
    return int(fresh.sum()), cur.rowcount


def _upsert(cur: Cursor, schema: str, t: Table, payload: bytes) -> tuple[int, int]:
    """Insert or update every row of ``payload``; returns (inserted, updated). The rows it inserts are
    counted (bar tables)."""
    conn = cur.connection
    target = quote(conn, schema, t.name)
    names = [quote(conn, c) for c in t.column_names]
    stage = _stage(cur, t, target, names, payload)
    cols_sql = ", ".join(names)
    key_sql = ", ".join(quote(conn, k) for k in t.key)
    rest = [quote(conn, c) for c in t.column_names if c not in t.key]
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in rest)
    old = ", ".join(f"{target}.{c}" for c in rest)
    new = ", ".join(f"EXCLUDED.{c}" for c in rest)
    bars = t.name in counts.TABLES
    returning = ", instrument_id, ts_event" if bars else ""
    counted = f", counted AS ({counts.change_sql(conn, schema, '(SELECT * FROM up WHERE fresh)', 1)})" if bars else ""
    cur.execute(
        f"WITH up AS (INSERT INTO {target} ({cols_sql}) SELECT {cols_sql} FROM {stage} "
        f"ON CONFLICT ({key_sql}) DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new}) "
        f"RETURNING (xmax = 0) AS fresh{returning}){counted} "
        "SELECT count(*) FILTER (WHERE fresh), count(*) FILTER (WHERE NOT fresh) FROM up",
        (t.name,) if bars else None,
    )
    ins, upd = one(cur)
    return int(ins), int(upd)


#: (instrument_id, start ns, end ns): an instrument on a time range ``[start, end)``
Span: TypeAlias = tuple[int, int, int]


def _by_range(spans: Iterable[Span]) -> dict[tuple[int, int], list[int]]:
    """Instruments grouped by their time range."""
    out: dict[tuple[int, int], list[int]] = {}
    for iid, lo, hi in sorted(set(spans)):
        if lo < hi:
            out.setdefault((lo, hi), []).append(iid)
    return out


def _unread(
    ranges: dict[tuple[int, int], list[int]], windows: Sequence[tuple[list[int], int, int]]
) -> dict[tuple[int, int, int, int], list[int]]:
    """The parts of ``ranges`` (ns, half-open) that no window (PG microseconds, inclusive) covered.

    Returns (first us, end us, first ns, end ns) -> instruments: the rows no load read lie there.
    """
    read: dict[int, list[tuple[int, int]]] = {}
    for ids, lo_us, hi_us in windows:
        for iid in ids:
            read.setdefault(iid, []).append((lo_us, hi_us + 1))
    out: dict[tuple[int, int, int, int], list[int]] = {}
    for (lo, hi), ids in ranges.items():
        first, end = lo // 1000 - copy.PG_EPOCH_US, -(-hi // 1000) - copy.PG_EPOCH_US
        for iid in ids:
            at = first
            for a, b in sorted(read.get(iid, [])):
                if a > at:
                    out.setdefault((at, min(a, end), lo, hi), []).append(iid)
                at = max(at, b)
                if at >= end:
                    break
            if at < end:
                out.setdefault((at, end, lo, hi), []).append(iid)
    return {k: v for k, v in out.items() if k[0] < k[1]}


def delete_stale(
    cur: Cursor,
    schema: str,
    t: Table,
    coverage: Coverage,
    spans: Sequence[Span],
    dataset: str,
    publishers: Sequence[int],
) -> int:
    """Delete the stored rows of a chunk's range that its data no longer has; returns how many.

    The range is the chunk's own: its instruments, each on its time range (``spans``), of the
    publishers of ``dataset`` (and ``publishers``, those of its data); rows outside it are never
    touched. The candidates are the rows the loads read and did not match (``coverage.unmatched``)
    and the rows of the range that no load read (outside ``coverage.windows``); those the chunk
    stored or kept are not deleted.
    """
    ranges = _by_range(spans)
    if not ranges:
        return 0
    conn = cur.connection
    table = quote(conn, schema, t.name)
    cur.execute(f"SELECT publisher_id FROM {quote(conn, schema, 'publishers')} WHERE dataset = %s", (dataset,))
    pubs = sorted({int(r[0]) for r in cur.fetchall()} | set(publishers))
    unread = _unread(ranges, coverage.windows)
    terms, params = [], []
    for (lo_us, hi_us, lo, hi), ids in unread.items():
        term = f"(instrument_id = ANY(%s) AND {t.time_column} >= %s AND {t.time_column} < %s"
        params += [ids, _pg_ts(lo_us), _pg_ts(hi_us)]
        if t.ns_column:  # the exact range: the microseconds above cover it
            term += f" AND {t.ns_column} >= %s AND {t.ns_column} < %s"
            params += [lo, hi]
        terms.append(term + ")")
    candidates = []
    if terms:
        where = f"{table} WHERE publisher_id = ANY(%s) AND ({' OR '.join(terms)})"
        candidates.append(_read(cur, t, t.key, where, [pubs, *params]))
    for keys in coverage.unmatched:  # rows a load read and its data lacked: candidates if inside the range
        k = dict(zip(t.key, keys, strict=True))
        ns = _ns_of(t, k)
        inside = np.zeros(len(ns), dtype=bool)
        for (lo, hi), ids in ranges.items():
            inside |= np.isin(k["instrument_id"], ids) & (ns >= lo) & (ns < hi)
        candidates.append([c[inside & np.isin(k["publisher_id"], pubs)] for c in keys])
    if not candidates:
        return 0
    stale = [np.concatenate(c) for c in zip(*candidates, strict=True)]
    if coverage.kept and len(stale[0]):  # what a load of the chunk stored (or kept) stays
        kept = [np.concatenate(c) for c in zip(*coverage.kept, strict=True)]
        _, is_kept, _ = _match(stale, kept, len(t.key))
        stale = [c[~is_kept] for c in stale]
    if len(stale[0]) == 0:
        return 0
    coverage.note_changed(t, stale)
    key = dict(zip(t.key, stale, strict=True))
    versions.bump(cur, schema, t.name, key["instrument_id"], _ns_of(t, key))
    names = [quote(conn, k) for k in t.key]
    payload = copy.encode([t.column(k).pgtype for k in t.key], stale, {})
    stage = quote(conn, f"hdi_stale_{t.name}")
    cur.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DROP AS SELECT {', '.join(names)} FROM {table} WITH NO DATA"
    )
    cur.execute(f"TRUNCATE {stage}")
    copy.copy_in(cur, stage, names, payload)
    match = " AND ".join(f"d.{k} = s.{k}" for k in names)
    delete = f"DELETE FROM {table} AS d USING {stage} AS s WHERE {match}"
    with versions.kept(cur):
        if t.name not in counts.TABLES:
            cur.execute(delete)
            return cur.rowcount
        with counts.kept(cur, t.name):  # the deleted rows are subtracted from the bar counts
            cur.execute(
                f"WITH gone AS ({delete} RETURNING d.instrument_id, d.ts_event), "
                f"counted AS ({counts.change_sql(conn, schema, 'gone', -1)}) SELECT count(*) FROM gone",
                (t.name,),
            )
            return int(one(cur)[0])


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


def insert_log(cur: Cursor, schema: str, result: ChunkResult, forced: bool, run_id: str | None = None) -> int:
    """Log a committed chunk (its counts, estimated cost and the rows its range held; ``run_id``, the cluster run
    that committed it); returns the log id."""
    c = result.chunk
    log = quote(cur.connection, schema, "ingest_log")
    cur.execute(
        f"INSERT INTO {log} (chunk_key, provider, dataset, schema, stype_in, symbols, "
        "start_ts, end_ts, source, fetched, inserted, updated, duplicates, deleted, quarantined, seconds, forced, "
        f"warnings, cost_usd, held, run_id) VALUES ({', '.join(['%s'] * 17)}, %s::text[], %s, %s, %s) RETURNING id",
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
            result.deleted,
            result.quarantined,
            result.seconds,
            forced,
            list(result.warnings),
            result.cost_usd,
            None if result.held is None else psycopg2.extras.Json({str(k): v for k, v in sorted(result.held.items())}),
            run_id,
        ),
    )
    return int(one(cur)[0])


def logged_result(cur: Cursor, schema: str, chunk: Chunk, run_id: str) -> ChunkResult | None:
    """What the cluster run ``run_id`` logged for ``chunk`` (its latest row), None when that run did not log it.

    The rows it changed are not logged: every instrument its range held counts as changed from the chunk's start
    (dependent work then recomputes from there: more than needed, never less)."""
    cur.execute(
        "SELECT fetched, inserted, updated, duplicates, deleted, quarantined, seconds, warnings, cost_usd, held "
        f"FROM {quote(cur.connection, schema, 'ingest_log')} WHERE chunk_key = %s AND run_id = %s "
        "ORDER BY id DESC LIMIT 1",
        (chunk.key, run_id),
    )
    row = cur.fetchone()
    if row is None:
        return None
    fetched, inserted, updated, duplicates, deleted, quarantined, seconds, warnings, cost, held_json = row
    held = None if held_json is None else {int(k): int(v) for k, v in held_json.items()}
    changed = dict.fromkeys(sorted(held or {}), chunk.start.value) if inserted + updated + deleted else {}
    return ChunkResult(
        chunk,
        fetched=fetched,
        inserted=inserted,
        updated=updated,
        duplicates=duplicates,
        quarantined=quarantined,
        deleted=deleted,
        seconds=float(seconds),
        warnings=tuple(warnings),
        changed=changed,
        cost_usd=cost,
        held=held,
    )


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
                chunk.request[0].to_pydatetime(),
                chunk.request[1].to_pydatetime(),
            )
            for r in rows
        ],
        template="(%s::bigint, %s, %s, %s, %s, %s, %s::jsonb, %s::integer, %s, %s)",
    )
