"""Change versions of the market data: what tells a cached copy of an instrument-day from a stale one.

Migration 15 adds ``market_versions`` (one row per market-data table, instrument and UTC day: the ``version`` of
its rows) and ``market_epochs`` (one row per table: an ``epoch``, the ``retention`` of its TimescaleDB retention
policy and the schema's random ``identity``; made with the tables' triggers by :func:`cover`). Both numbers come
from one sequence, so a value is never given twice.

Who changes them, always in the transaction that writes the rows (the new number commits with the rows, or not at
all):

* the loader (:mod:`hdi_lab.storage.load`: ingest, update, live, quarantine retries, a chunk's deletion of rows a
  revision removed) gives every instrument-day whose rows it inserts, updates or deletes a new version
  (:func:`bump`), inside :func:`kept`;
* any other statement that writes a market-data table (a hand-written ``INSERT``, ``UPDATE``, ``DELETE`` or
  ``TRUNCATE``) gives the table a new epoch through a statement trigger, which :func:`kept` tells apart;
* removing or changing a TimescaleDB retention policy gives the table a new epoch, and the policy's ``drop_after``
  is kept in ``retention`` (:func:`set_retention`): rows older than ``now() - retention`` may vanish without any
  trigger, so a reader never takes a cached copy of those days.

A reader (:func:`observe`, or :func:`observe_with` in the statement resolving its symbols) reads the identity, the
epoch, the retention horizon and the versions of the days it wants in one SELECT, *before* it reads any row: a
write that commits in between leaves the reader with rows newer than the versions it saw, never older, so what it
caches under those versions is at worst refreshed once more. A version names one state of a day's rows, it counts
nothing: a day no loader wrote since migration 15 has version 0.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg2.extensions

from hdi_lab.schemas import DAY_NS
from hdi_lab.storage.cursor import execute_prepared, quote
from hdi_lab.storage.tables import TABLES

__all__ = ["Observed", "bump", "cover", "days_of", "kept", "observe", "observe_with", "set_retention"]

#: the transaction-local setting by which the loader tells the market tables' trigger that it keeps the versions
_SETTING = "hdi_lab.market_versions"
_EPOCH_DATE = dt.date(1970, 1, 1)


def cover(cur: psycopg2.extensions.cursor, schema: str) -> None:
    """Give every market-data table (:data:`hdi_lab.storage.tables.TABLES`) its epoch row and its statement
    trigger, where it has none yet (after the migrations: a table a later migration adds is covered too)."""
    conn = cur.connection
    epochs = quote(conn, schema, "market_epochs")
    names = sorted(t.name for t in TABLES.values())
    cur.execute(
        f"WITH id AS (SELECT coalesce((SELECT identity FROM {epochs} LIMIT 1), gen_random_uuid()) AS u) "
        f"INSERT INTO {epochs} (table_name, epoch, identity) SELECT t, 0, id.u FROM unnest(%s::text[]) AS t, id "
        "ON CONFLICT (table_name) DO NOTHING",
        (names,),
    )
    cur.execute(
        "SELECT c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid "
        "WHERE g.tgname = 'market_touched' AND c.relnamespace = %s::regnamespace",
        (quote(conn, schema),),
    )
    have = {r[0] for r in cur.fetchall()}
    for name in names:
        if name not in have:
            cur.execute(
                f"CREATE TRIGGER market_touched AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "
                f"{quote(conn, schema, name)} FOR EACH STATEMENT EXECUTE FUNCTION "
                f"{quote(conn, schema, 'market_touched')}()"
            )


def _seq(cur: psycopg2.extensions.cursor, schema: str) -> str:
    return quote(cur.connection, schema, "market_version_seq")


@contextmanager
def kept(cur: psycopg2.extensions.cursor) -> Iterator[None]:
    """The block's statements on market tables keep the versions themselves (:func:`bump`): the trigger does not
    give the table a new epoch. Enter it before any savepoint the block rolls back to (the setting is
    transaction-local)."""
    cur.execute("SELECT set_config(%s, 'kept', true)", (_SETTING,))
    yield
    cur.execute("SELECT set_config(%s, '', true)", (_SETTING,))


def days_of(instrument_ids: npt.NDArray[np.integer], ns: npt.NDArray[np.integer]) -> tuple[list[int], list[int]]:
    """The distinct (instrument, UTC day) pairs of rows with these instruments and times (int64 ns): two lists,
    instrument ids and days since 1970-01-01, sorted. One pass when the rows are in key order (the loader's)."""
    iid = np.asarray(instrument_ids, dtype=np.int64)
    day = np.asarray(ns, dtype=np.int64) // DAY_NS
    if not len(iid):
        return [], []
    key = (iid << 24) | (day - int(day.min()))  # days of one load span far less than 2**24
    if (key[1:] < key[:-1]).any():
        key = np.sort(key)
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    return (key[first] >> 24).tolist(), ((key[first] & 0xFFFFFF) + int(day.min())).tolist()


def bump(
    cur: psycopg2.extensions.cursor,
    schema: str,
    table: str,
    instrument_ids: npt.NDArray[np.integer],
    ns: npt.NDArray[np.integer],
) -> None:
    """Give each instrument-day of rows of ``table`` with these instruments and times (int64 ns) a new version, in
    the cursor's transaction (rows written in key order: concurrent loads lock them alike)."""
    ids, days = days_of(instrument_ids, ns)
    if not ids:
        return
    cur.execute(
        f"INSERT INTO {quote(cur.connection, schema, 'market_versions')} (table_name, instrument_id, day, version) "
        f"SELECT %s, u.i, date '1970-01-01' + u.d, (SELECT nextval(%s::regclass)) "
        "FROM unnest(%s::int8[], %s::int4[]) AS u(i, d) ORDER BY 2, 3 "
        "ON CONFLICT (table_name, instrument_id, day) DO UPDATE SET version = EXCLUDED.version",
        (table, _seq(cur, schema), ids, days),
    )


@dataclass(frozen=True)
class Observed:
    """What :func:`observe` read: the schema's ``identity`` (where its entries live), the table's ``epoch``, the
    retention ``horizon`` (int64 ns, None without a policy: days starting before it may lose rows without a new
    token), and the stored ``versions`` of ``instruments`` on days ``first`` to ``last``."""

    identity: str
    epoch: int
    horizon: int | None
    instruments: frozenset[int]
    first: int
    last: int
    versions: Mapping[tuple[int, int], int]

    def covers(self, wanted: Sequence[tuple[int, int]]) -> bool:
        """Whether every (instrument, day) of ``wanted`` was observed."""
        return all(iid in self.instruments and self.first <= d <= self.last for iid, d in wanted)

    def token(self, key: tuple[int, int]) -> str:
        """The token of an observed (instrument, day): equal tokens, equal rows."""
        return f"{self.epoch}.{self.versions.get(key, 0)}"


#: the rows of :func:`observe_with`'s statement: a kind, then two texts, a number, two dates, a time and a number
_EPOCH_ROW = (
    "SELECT 1, e.identity::text || '-' || e.tableoid::int8, NULL::text, e.epoch, NULL::date, NULL::date, "
    "now() - e.retention, NULL::int8 FROM {epochs} e WHERE e.table_name = %(hdi_table)s"
)
_VERSION_ROWS = (
    "SELECT 2, NULL, NULL, v.instrument_id, v.day, NULL, NULL, v.version FROM {versions} v "
    "WHERE v.table_name = %(hdi_table)s AND v.instrument_id IN ({ids}) "
    "AND v.day >= date '1970-01-01' + %(hdi_first)s::int4 AND v.day <= date '1970-01-01' + %(hdi_last)s::int4"
)


def observe(
    cur: psycopg2.extensions.cursor, schema: str, table: str, wanted: Sequence[tuple[int, int]]
) -> Observed | None:
    """The :class:`Observed` state of ``table`` and of the ``wanted`` (instrument, day) pairs (days since
    1970-01-01): one SELECT, in the cursor's transaction; read it before the rows. None when the table has no
    epoch row (the row was deleted by hand)."""
    conn = cur.connection
    ids = sorted({iid for iid, _ in wanted})
    days = [d for _, d in wanted] or [0]
    params = {"hdi_table": table, "hdi_ids": ids, "hdi_first": min(days), "hdi_last": max(days)}
    cur.execute(
        f"{_EPOCH_ROW} UNION ALL {_VERSION_ROWS}".format(
            epochs=quote(conn, schema, "market_epochs"),
            versions=quote(conn, schema, "market_versions"),
            ids="SELECT unnest(%(hdi_ids)s::int8[])",
        ),
        params,
    )
    return _observed(cur.fetchall(), frozenset(ids), min(days), max(days))


def observe_with(
    cur: psycopg2.extensions.cursor,
    schema: str,
    table: str,
    query: str,
    params: Mapping[str, Any],
    first: int,
    last: int,
    prepared: set[str] | None = None,
) -> tuple[list[tuple[Any, ...]], Observed | None]:
    """The rows of ``query`` (a SELECT of six columns: two texts, the instrument id, two dates and a time; its
    parameters named, none starting with ``hdi_``) and, in the same statement (one round trip), the
    :class:`Observed` state of ``table`` for the instruments it returns on days ``first`` to ``last``.
    ``prepared``: the names of the statements the connection prepared (it runs as a prepared statement then: see
    :func:`hdi_lab.storage.cursor.execute_prepared`)."""
    conn = cur.connection
    state = f"UNION ALL {_EPOCH_ROW} UNION ALL {_VERSION_ROWS}".format(
        epochs=quote(conn, schema, "market_epochs"),
        versions=quote(conn, schema, "market_versions"),
        ids="SELECT r.instrument_id FROM r",
    )
    text = (
        f"WITH r (a, b, instrument_id, c, d, e) AS ({query}) "
        f"SELECT 0, r.a, r.b, r.instrument_id, r.c, r.d, r.e, NULL::int8 FROM r {state}"
    )
    values = {**params, "hdi_table": table, "hdi_first": first, "hdi_last": last}
    if prepared is None:
        cur.execute(text, values)
    else:
        execute_prepared(cur, prepared, text, values)
    rows = cur.fetchall()
    found = [r[1:7] for r in rows if r[0] == 0]
    ids = frozenset(int(r[2]) for r in found)
    return found, _observed([r for r in rows if r[0] != 0], ids, first, last)


def _observed(rows: Sequence[tuple[Any, ...]], ids: frozenset[int], first: int, last: int) -> Observed | None:
    """:class:`Observed` from the epoch row (kind 1) and version rows (kind 2) of :data:`_EPOCH_ROW` and
    :data:`_VERSION_ROWS`."""
    epoch = next((r for r in rows if r[0] == 1), None)
    if epoch is None:
        return None
    horizon = None if epoch[6] is None else int(pd.Timestamp(epoch[6]).value)
    found = {(int(r[3]), (r[4] - _EPOCH_DATE).days): int(r[7]) for r in rows if r[0] == 2}
    return Observed(str(epoch[1]), int(epoch[3]), horizon, ids, first, last, found)


def set_retention(
    cur: psycopg2.extensions.cursor, schema: str, tables: Sequence[str], retention: str | None, changed: Sequence[str]
) -> None:
    """Record the retention policy's ``drop_after`` (None: no policy) of ``tables``, and give the ``changed``
    tables (a policy removed or replaced: it may have dropped rows) a new epoch."""
    t = quote(cur.connection, schema, "market_epochs")
    cur.execute(
        f"UPDATE {t} SET retention = %s::interval, epoch = CASE WHEN table_name = ANY(%s::text[]) "
        "THEN nextval(%s::regclass) ELSE epoch END WHERE table_name = ANY(%s::text[])",
        (retention, list(changed), _seq(cur, schema), list(tables)),
    )
