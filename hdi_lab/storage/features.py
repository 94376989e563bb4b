"""Feature tables and their saved indicator states: DDL, the registry ``feature_sets``, writes (binary
COPY, upsert), reads (:mod:`hdi_lab.features`) and what a publication covers (:mod:`hdi_lab.featurestore.publish`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from hdi_lab.errors import ValidationError
from hdi_lab.storage import copy
from hdi_lab.storage.cursor import one, quote, transaction
from hdi_lab.storage.symbology import resolve

__all__ = [
    "FeatureRows",
    "FeatureTable",
    "SeriesWrite",
    "StateRow",
    "StoredSeries",
    "StoredState",
    "latest_rows",
    "list_tables",
    "published_rows",
    "read_features",
    "read_series_features",
    "store",
    "store_series",
    "stored_series",
    "stored_states",
]


@dataclass(frozen=True)
class FeatureTable:
    """Where a feature set at an interval is stored, and what the registry records of it."""

    name: str  # the feature table (unqualified, in the hdi_lab schema)
    state_name: str  # the table of saved indicator states next to it
    set_name: str
    version: int
    interval: str
    columns: tuple[str, ...]  # the feature columns, in order
    definition: dict[str, Any]  # the set's JSON definition
    variant: str = ""  # "" the per-instrument table; else the continuous series' adjustment (and view)


@dataclass(frozen=True)
class FeatureRows:
    """Rows of a feature table: ``values[r]`` are the features of ``ids[r]`` at ``event_ns[r]``, stored
    under the symbol ``labels[sym[r]]``; NaN is stored as NULL."""

    ids: npt.NDArray[np.int64]
    event_ns: npt.NDArray[np.int64]
    sym: npt.NDArray[np.int32]
    labels: list[str]
    values: npt.NDArray[np.float64]  # (rows, columns)


@dataclass(frozen=True)
class StateRow:
    """An instrument's indicator state after its last computed bar."""

    instrument_id: int
    ts_ns: int  # the open of that bar
    bars: int  # the instrument's bars up to and including it
    symbol: str  # the symbol its rows are stored under
    state: tuple[float, ...]


@dataclass(frozen=True)
class StoredState:
    """A saved state and what the bar table says now about its instrument up to the state's bar."""

    saved: StateRow
    bars_now: int  # stored bars up to and including the state's bar
    lower_ns: int | None  # the open of the first of the last ``context`` of them (None: no bar)


# -- saved states ---------------------------------------------------------------------------


def stored_states(
    conn: psycopg2.extensions.connection,
    schema: str,
    table: FeatureTable,
    syms: tuple[str, ...],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    dataset: str | None,
    layout: tuple[str, ...],
    context: int,
) -> list[StoredState]:
    """The saved states, with ``layout``, of the instruments of ``syms`` in ``[lo, hi)`` whose bar is
    before ``lo``, each with its instrument's stored bars up to that bar and where its last ``context``
    of them start (one query for all instruments). None without the feature table or the state
    table, or when a symbol is unknown (the computation from the first bar reports it)."""
    with transaction(conn) as cur:
        cur.execute(
            "SELECT to_regclass(%s), to_regclass(%s)",
            (quote(conn, schema, table.name), quote(conn, schema, table.state_name)),
        )
        if None in one(cur):
            return []
        missing: list[str] = []
        ids = sorted({sp.instrument_id for sp in resolve(cur, schema, syms, lo, hi, dataset, missing)})
        if missing or not ids:
            return []
        bars = quote(conn, schema, f"ohlcv_{table.interval}")
        cur.execute(
            f"SELECT s.instrument_id, s.ts_event, s.bars, s.symbol, s.state, c.n, w.lower "
            f"FROM {quote(conn, schema, table.state_name)} s "
            f"CROSS JOIN LATERAL (SELECT count(*) AS n FROM {bars} b WHERE b.instrument_id = s.instrument_id "
            "AND b.ts_event <= s.ts_event) c "
            f"CROSS JOIN LATERAL (SELECT min(x.ts_event) AS lower FROM (SELECT b.ts_event FROM {bars} b "
            "WHERE b.instrument_id = s.instrument_id AND b.ts_event <= s.ts_event ORDER BY b.ts_event DESC "
            "LIMIT %s) x) w WHERE s.instrument_id = ANY(%s) AND s.ts_event < %s AND s.layout = %s",
            (context, ids, lo.to_pydatetime(), ",".join(layout)),
        )
        rows = cur.fetchall()
    return [
        StoredState(
            StateRow(int(iid), pd.Timestamp(ts).value, int(n_bars), str(symbol), tuple(float(v) for v in state)),
            int(n),
            pd.Timestamp(lower).value if lower is not None else None,
        )
        for iid, ts, n_bars, symbol, state, n, lower in rows
    ]


def _save_states(
    cur: psycopg2.extensions.cursor,
    schema: str,
    name: str,
    new: bool,
    layout: tuple[str, ...],
    states: Sequence[StateRow],
) -> None:
    """Upsert each instrument's state; a new feature table starts a new state table (states belong to
    the stored rows)."""
    t = quote(cur.connection, schema, name)
    if new:
        cur.execute(f"DROP TABLE IF EXISTS {t}")
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {t} (instrument_id bigint PRIMARY KEY, ts_event timestamptz NOT NULL, "
        "bars bigint NOT NULL, symbol text NOT NULL, layout text NOT NULL, state float8[] NOT NULL)"
    )
    if not states:
        return
    psycopg2.extras.execute_values(
        cur,
        f"INSERT INTO {t} (instrument_id, ts_event, bars, symbol, layout, state) VALUES %s "
        "ON CONFLICT (instrument_id) DO UPDATE SET ts_event = EXCLUDED.ts_event, bars = EXCLUDED.bars, "
        "symbol = EXCLUDED.symbol, layout = EXCLUDED.layout, state = EXCLUDED.state",
        [
            (
                s.instrument_id,
                pd.Timestamp(s.ts_ns, tz="UTC").to_pydatetime(),
                s.bars,
                s.symbol,
                ",".join(layout),
                [float(v) for v in s.state],
            )
            for s in states
        ],
        template="(%s, %s, %s, %s, %s, %s::float8[])",
        page_size=1000,
    )


# -- writing --------------------------------------------------------------------------------


def store(
    conn: psycopg2.extensions.connection,
    schema: str,
    table: FeatureTable,
    rows: FeatureRows | None,
    created: pd.Timestamp,
    states: tuple[tuple[str, ...], Sequence[StateRow]] | None,
) -> tuple[int, int]:
    """Store the rows (stamped ``created``) and the states (``(layout, states)``, None for a set that
    cannot resume) in one transaction; returns (inserted, updated).

    Raises ValidationError when the table was stored with other columns or another version.
    """
    with transaction(conn) as cur:
        new = _ensure_table(cur, schema, table)
        inserted = updated = 0
        if rows is not None and new:
            _copy_rows(cur, schema, table, rows, created)
            inserted = len(rows.ids)
        elif rows is not None:
            inserted, updated = _upsert(cur, schema, table, rows, created)
        if new:
            _add_keys(cur, schema, table.name)
        if states is not None:
            _save_states(cur, schema, table.state_name, new, *states)
    return inserted, updated


def _ensure_table(cur: psycopg2.extensions.cursor, schema: str, table: FeatureTable) -> bool:
    """The set's table, recorded in ``feature_sets``; refuses a changed definition. Returns whether it is new.

    A new table is created without its keys: the caller loads it and then calls :func:`_add_keys`
    in the same transaction (building the indexes once, after a bulk load, is ~2.5x faster than
    maintaining them row by row). The advisory lock serialises computations of one table until commit.
    """
    conn = cur.connection
    name = table.name
    t = quote(conn, schema, name)
    reg = quote(conn, schema, "feature_sets")
    cols = list(table.columns)
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('hdi_lab.features.' || %s || '.' || %s))", (schema, name))
    cur.execute(
        f"SELECT columns, version FROM {reg} WHERE name = %s AND interval = %s AND variant = %s",
        (table.set_name, table.interval, table.variant),
    )
    row = cur.fetchone()
    if row is not None and (list(row[0]) != cols or int(row[1]) != table.version):
        raise ValidationError(
            f"{name} was stored with columns {list(row[0])} (version {row[1]}), which differ from this hdi_lab's "
            f"{table.set_name} ({cols}, version {table.version}): define a new version of the set instead of "
            "changing it"
        )
    cur.execute("SELECT to_regclass(%s)", (t,))
    new = one(cur)[0] is None
    if new:
        feature_cols = ", ".join(f"{quote(conn, c)} double precision" for c in cols)
        cur.execute(
            f"CREATE TABLE {t} (instrument_id bigint NOT NULL, event_timestamp timestamptz NOT NULL, "
            f"created timestamptz NOT NULL, symbol text, {feature_cols})"
        )
    cur.execute(
        f"INSERT INTO {reg} (name, version, interval, variant, columns, definition, table_name) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name, interval, variant) DO UPDATE SET updated = now()",
        (table.set_name, table.version, table.interval, table.variant, cols, json.dumps(table.definition), name),
    )
    return new


def _add_keys(cur: psycopg2.extensions.cursor, schema: str, name: str) -> None:
    """The primary key (instrument_id, event_timestamp) and the as-of index of a new feature table."""
    conn = cur.connection
    t = quote(conn, schema, name)
    cur.execute(
        f"ALTER TABLE {t} ADD CONSTRAINT {quote(conn, name + '_pkey')} PRIMARY KEY (instrument_id, event_timestamp)"
    )
    cur.execute(
        f"CREATE INDEX {quote(conn, name + '_asof_idx')} ON {t} (instrument_id, event_timestamp DESC, created DESC)"
    )


def _copy_rows(
    cur: psycopg2.extensions.cursor, schema: str, table: FeatureTable, rows: FeatureRows, created: pd.Timestamp
) -> None:
    """COPY the rows straight into the table (none of their keys may be stored)."""
    conn = cur.connection
    nfeat = rows.values.shape[1]
    labels = np.array([label.encode("utf-8") for label in rows.labels], dtype=np.bytes_)
    nulls = np.isnan(rows.values)
    payload = copy.encode(
        ["int8", "timestamptz", "timestamptz", "text", *(["float8"] * nfeat)],
        [
            rows.ids,
            rows.event_ns // 1000 - copy.PG_EPOCH_US,
            np.full(len(rows.ids), created.value // 1000 - copy.PG_EPOCH_US, dtype=np.int64),
            labels[rows.sym],
            *(rows.values[:, i] for i in range(nfeat)),
        ],
        {4 + i: nulls[:, i] for i in range(nfeat) if nulls[:, i].any()},
    )
    copy.copy_in(
        cur,
        quote(conn, schema, table.name),
        ["instrument_id", "event_timestamp", "created", "symbol", *(quote(conn, c) for c in table.columns)],
        payload,
    )


def _upsert(
    cur: psycopg2.extensions.cursor, schema: str, table: FeatureTable, rows: FeatureRows, created: pd.Timestamp
) -> tuple[int, int]:
    """Store the rows; returns (inserted, updated).

    When none of the keys' range is stored yet (a first computation, new bars), the rows are
    COPYed straight into the table. Otherwise they go through a staging table and ``INSERT ..
    ON CONFLICT DO UPDATE .. WHERE (old values) IS DISTINCT FROM (new values)``: new keys are
    inserted, changed values updated (with a new ``created``), identical rows left alone.
    """
    conn = cur.connection
    name = table.name
    target = quote(conn, schema, name)
    feats = [quote(conn, c) for c in table.columns]
    lo_ns, hi_ns = int(rows.event_ns.min()), int(rows.event_ns.max())
    cur.execute(
        f"SELECT EXISTS (SELECT 1 FROM {target} WHERE instrument_id = ANY(%s) AND event_timestamp BETWEEN %s AND %s)",
        (
            np.unique(rows.ids).tolist(),
            pd.Timestamp(lo_ns, tz="UTC").to_pydatetime(),
            pd.Timestamp(hi_ns, tz="UTC").to_pydatetime(),
        ),
    )
    if not one(cur)[0]:
        cur.execute("SAVEPOINT hdi_features_direct")
        try:
            _copy_rows(cur, schema, table, rows, created)
            cur.execute("RELEASE SAVEPOINT hdi_features_direct")
            return len(rows.ids), 0
        except psycopg2.errors.UniqueViolation:  # a concurrent computation stored some: merge instead
            cur.execute("ROLLBACK TO SAVEPOINT hdi_features_direct")
    stage = quote(conn, f"hdi_stage_{name}")
    cur.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} (instrument_id bigint, event_timestamp timestamptz, "
        f"sym integer, {', '.join(f + ' double precision' for f in feats)}) ON COMMIT DROP"
    )
    cur.execute(f"TRUNCATE {stage}")
    nulls = np.isnan(rows.values)
    payload = copy.encode(
        ["int8", "timestamptz", "int4", *(["float8"] * len(feats))],
        [rows.ids, rows.event_ns // 1000 - copy.PG_EPOCH_US, rows.sym, *(rows.values[:, i] for i in range(len(feats)))],
        {3 + i: nulls[:, i] for i in range(len(feats)) if nulls[:, i].any()},
    )
    copy.copy_in(cur, stage, ["instrument_id", "event_timestamp", "sym", *feats], payload)
    new = ", ".join(f"EXCLUDED.{f}" for f in feats)
    old = ", ".join(f"{target}.{f}" for f in feats)
    cur.execute(
        f"WITH up AS (INSERT INTO {target} (instrument_id, event_timestamp, created, symbol, {', '.join(feats)}) "
        f"SELECT s.instrument_id, s.event_timestamp, %s, (%s::text[])[s.sym + 1], {', '.join('s.' + f for f in feats)} "
        f"FROM {stage} s ORDER BY s.instrument_id, s.event_timestamp "
        f"ON CONFLICT (instrument_id, event_timestamp) DO UPDATE SET created = EXCLUDED.created, "
        f"symbol = EXCLUDED.symbol, {', '.join(f'{f} = EXCLUDED.{f}' for f in feats)} "
        f"WHERE ({old}) IS DISTINCT FROM ({new}) RETURNING (xmax = 0) AS fresh) "
        "SELECT count(*) FILTER (WHERE fresh), count(*) FILTER (WHERE NOT fresh) FROM up",
        (created.to_pydatetime(), list(rows.labels)),
    )
    ins, upd = one(cur)
    return int(ins), int(upd)


# -- continuous series (variant tables) -------------------------------------------------------------


@dataclass(frozen=True)
class SeriesWrite:
    """One continuous series' rows for a variant table (:attr:`FeatureTable.variant`), and what they are.

    ``rows`` are every row computed, from the series' first bar; those with an event at or after
    ``window_ns`` are stored. With ``rewrite_on_change`` (the research view), a series whose stored roll
    table differs from ``rolls`` is rewritten: its stored rows are deleted and every row of ``rows`` stored,
    so the rows of one series always share one adjustment."""

    series_id: int  # stored as the rows' instrument_id
    symbol: str
    dataset: str
    adjust: str
    view: str
    rolls: list[dict[str, Any]]  # the roll table the rows were computed with (JSON values)
    rows: FeatureRows | None
    window_ns: int
    rewrite_on_change: bool


@dataclass(frozen=True)
class StoredSeries:
    """A continuous series stored in a variant table (the registry ``feature_series``)."""

    series_id: int
    symbol: str
    dataset: str
    adjust: str
    view: str
    rolls: list[dict[str, Any]]


def _window(rows: FeatureRows, from_ns: int) -> FeatureRows | None:
    keep = rows.event_ns >= from_ns
    if not keep.any():
        return None
    return FeatureRows(rows.ids[keep], rows.event_ns[keep], rows.sym[keep], rows.labels, rows.values[keep])


def store_series(
    conn: psycopg2.extensions.connection,
    schema: str,
    table: FeatureTable,
    writes: Sequence[SeriesWrite],
    created: pd.Timestamp,
) -> tuple[int, int, int, int, list[str]]:
    """Store continuous series' rows in the variant table ``table`` and record each series in
    ``feature_series``, in one transaction (serialised with every computation of the table); returns
    (rows written, inserted, updated, deleted, the symbols of the series rewritten).

    Raises ValidationError when the table was stored with other columns or another version."""
    written = inserted = updated = deleted = 0
    rewritten: list[str] = []
    with transaction(conn) as cur:
        new = _ensure_table(cur, schema, table)
        target = quote(conn, schema, table.name)
        registry = quote(conn, schema, "feature_series")
        for w in writes:
            cur.execute(
                f"SELECT rolls FROM {registry} WHERE table_name = %s AND series_id = %s", (table.name, w.series_id)
            )
            found = cur.fetchone()
            rolls = json.loads(json.dumps(w.rolls))  # as the registry gives them back
            rewrite = w.rewrite_on_change and found is not None and found[0] != rolls
            if rewrite:
                cur.execute(f"DELETE FROM {target} WHERE instrument_id = %s", (w.series_id,))
                deleted += cur.rowcount
                rewritten.append(w.symbol)
            rows = w.rows if rewrite or w.rows is None else _window(w.rows, w.window_ns)
            written += len(rows.ids) if rows is not None else 0
            if rows is not None and new:
                _copy_rows(cur, schema, table, rows, created)
                inserted += len(rows.ids)
            elif rows is not None:
                ins, upd = _upsert(cur, schema, table, rows, created)
                inserted, updated = inserted + ins, updated + upd
            cur.execute(
                f"INSERT INTO {registry} (table_name, series_id, symbol, dataset, adjust, view, rolls) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (table_name, series_id) DO UPDATE SET "
                "symbol = EXCLUDED.symbol, dataset = EXCLUDED.dataset, adjust = EXCLUDED.adjust, "
                "view = EXCLUDED.view, rolls = EXCLUDED.rolls, updated = now()",
                (table.name, w.series_id, w.symbol, w.dataset, w.adjust, w.view, json.dumps(w.rolls)),
            )
        if new:
            _add_keys(cur, schema, table.name)
    return written, inserted, updated, deleted, rewritten


def stored_series(
    conn: psycopg2.extensions.connection, schema: str, table_name: str, symbols: Sequence[str], dataset: str | None
) -> list[StoredSeries]:
    """The series of ``symbols`` (of ``dataset`` if given) stored in the variant table ``table_name``, by
    symbol then dataset. Raises StorageError."""
    with transaction(conn) as cur:
        cur.execute(
            f"SELECT series_id, symbol, dataset, adjust, view, rolls FROM {quote(conn, schema, 'feature_series')} "
            "WHERE table_name = %s AND symbol = ANY(%s) AND (%s::text IS NULL OR dataset = %s) "
            "ORDER BY symbol, dataset",
            (table_name, list(symbols), dataset, dataset),
        )
        rows = cur.fetchall()
    return [StoredSeries(int(i), str(s), str(d), str(a), str(v), list(r)) for i, s, d, a, v, r in rows]


# -- reading --------------------------------------------------------------------------------


def read_features(
    conn: psycopg2.extensions.connection,
    schema: str,
    name: str,
    syms: tuple[str, ...],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    dataset: str | None,
    wanted: Sequence[str],
) -> pd.DataFrame:
    """The rows of feature table ``name`` of the instruments of ``syms`` with ``event_timestamp`` in
    ``[lo, hi)``: ``instrument_id``, ``symbol`` (the requested symbol mapping to it), ``event_timestamp``
    and the ``wanted`` columns (NULL as NaN), ordered by instrument then time.

    Raises ValidationError for an unknown symbol or when the table does not exist yet.
    """
    with transaction(conn) as cur:
        # the bars behind events in [lo, hi) opened up to one interval earlier: resolve over both
        spans = resolve(cur, schema, syms, lo - pd.Timedelta(days=1), hi, dataset)
        owner: dict[int, str] = {}
        for sp in spans:
            owner.setdefault(sp.instrument_id, sp.symbol)
        return _read_rows(cur, schema, name, owner, lo, hi, wanted)


def read_series_features(
    conn: psycopg2.extensions.connection,
    schema: str,
    name: str,
    series: Mapping[int, str],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    wanted: Sequence[str],
) -> pd.DataFrame:
    """:func:`read_features` of the continuous series ``series`` (series id -> symbol) of a variant table.

    Raises ValidationError when the table does not exist yet."""
    with transaction(conn) as cur:
        return _read_rows(cur, schema, name, dict(series), lo, hi, wanted)


def _read_rows(
    cur: psycopg2.extensions.cursor,
    schema: str,
    name: str,
    owner: dict[int, str],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    wanted: Sequence[str],
) -> pd.DataFrame:
    conn = cur.connection
    cur.execute("SELECT to_regclass(%s)", (quote(conn, schema, name),))
    if one(cur)[0] is None:
        raise ValidationError(
            f"{name} does not exist yet: compute it first (hdi_lab.features.compute / hdi features compute)"
        )
    feats = [quote(conn, c) for c in wanted]
    text = cur.mogrify(
        f"SELECT instrument_id, event_timestamp, {', '.join(f'COALESCE({f}, %s)' for f in feats)} "
        f"FROM {quote(conn, schema, name)} WHERE instrument_id = ANY(%s) "
        "AND event_timestamp >= %s AND event_timestamp < %s ORDER BY instrument_id, event_timestamp",
        [*([float("nan")] * len(feats)), list(owner), lo.to_pydatetime(), hi.to_pydatetime()],
    ).decode()
    raw = copy.decode(copy.copy_out(cur, text), ["int8", "timestamptz", *(["float8"] * len(feats))])
    iid = raw["v0"].astype(np.int64)
    known = np.array(list(owner), dtype=np.int64)
    labels = np.array(list(owner.values()), dtype=object)
    sort = np.argsort(known)
    codes = sort[np.searchsorted(known[sort], iid)]
    data: dict[str, Any] = {
        "instrument_id": iid,
        "symbol": pd.array(labels[codes], dtype="string"),
        "event_timestamp": pd.to_datetime((raw["v1"].astype(np.int64) + copy.PG_EPOCH_US) * 1000, unit="ns", utc=True),
    }
    for i, c in enumerate(wanted):
        data[c] = raw[f"v{i + 2}"].astype(np.float64)
    return pd.DataFrame(data)


def latest_rows(
    conn: psycopg2.extensions.connection, schema: str, name: str, ids: Sequence[int], wanted: Sequence[str]
) -> pd.DataFrame:
    """The latest row of each of ``ids`` in feature table ``name`` (one primary-key lookup each):
    ``instrument_id``, ``event_timestamp``, ``created`` (UTC) and the ``wanted`` columns (NULL as NaN), by
    instrument; an instrument without a row is left out. Raises StorageError."""
    with transaction(conn) as cur:
        cols = ", ".join(f"r.{quote(conn, c)}" for c in wanted)
        cur.execute(
            f"SELECT i.id, r.event_timestamp, r.created, {cols} FROM unnest(%s::bigint[]) AS i(id) "
            f"CROSS JOIN LATERAL (SELECT * FROM {quote(conn, schema, name)} t WHERE t.instrument_id = i.id "
            "ORDER BY t.event_timestamp DESC LIMIT 1) r ORDER BY i.id",
            (sorted({int(i) for i in ids}),),
        )
        rows = cur.fetchall()
    frame = pd.DataFrame(rows, columns=["instrument_id", "event_timestamp", "created", *wanted])
    frame["instrument_id"] = frame["instrument_id"].astype(np.int64)
    for c in ("event_timestamp", "created"):
        frame[c] = pd.to_datetime(frame[c], utc=True)
    for c in wanted:
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(np.float64)
    return frame


def list_tables(
    conn: psycopg2.extensions.connection, schema: str
) -> list[tuple[str, str, str, str, int, pd.Timestamp | None, pd.Timestamp]]:
    """Each (set, interval, variant) of the registry: (set, interval, variant, table, rows, last event, last
    update); variant "" is the per-instrument table."""
    with transaction(conn) as cur:
        cur.execute(
            f"SELECT name, interval, variant, table_name, updated FROM {quote(conn, schema, 'feature_sets')} "
            "ORDER BY name, interval, variant"
        )
        out = []
        for name, interval, variant, table, updated in cur.fetchall():
            cur.execute(f"SELECT count(*), max(event_timestamp) FROM {quote(conn, schema, table)}")
            n, last = one(cur)
            out.append((name, interval, variant, table, int(n), last, updated))
    return out


def published_rows(
    conn: psycopg2.extensions.connection, schema: str, table: str, lo: pd.Timestamp | None, hi: pd.Timestamp | None
) -> tuple[list[int], pd.Timestamp | None, pd.Timestamp | None]:
    """Instruments and first event of the rows being published (event_timestamp in [lo, hi)), and the
    table's latest event (materialization runs up to it: later rows of other windows stay online).

    Raises ValidationError when ``table`` does not exist yet (the set was never computed), StorageError
    when the server fails."""
    with transaction(conn) as cur:
        name = quote(conn, schema, table)
        cur.execute("SELECT to_regclass(%s)", (name,))
        row = cur.fetchone()
        if row is None or row[0] is None:
            raise ValidationError(
                f"{table} does not exist yet: compute the set first (publish with compute=True, hdi features compute)"
            )
        where = "WHERE event_timestamp >= %s AND event_timestamp < %s" if lo is not None else ""
        params = (lo.to_pydatetime(), hi.to_pydatetime()) if lo is not None and hi is not None else ()
        cur.execute(
            f"SELECT instrument_id, min(event_timestamp) FROM {name} {where} "
            "GROUP BY instrument_id ORDER BY instrument_id",
            params,
        )
        rows = cur.fetchall()
        cur.execute(f"SELECT max(event_timestamp) FROM {name}")
        latest = cur.fetchone()
    if not rows or latest is None:
        return [], None, None
    return (
        [int(r[0]) for r in rows],
        pd.Timestamp(min(r[1] for r in rows)).tz_convert("UTC"),
        pd.Timestamp(latest[0]).tz_convert("UTC"),
    )
