"""Change versions of the market data: what tells a cached copy of an instrument-day from a stale one.

Migration 15 adds ``market_versions`` (one row per market-data table, instrument and UTC day: the ``version`` of
its rows) and ``market_epochs`` (one row per table: an ``epoch``, the ``retention`` of its TimescaleDB retention
policy and the schema's random ``identity``). Both numbers come from one sequence, so a value is never given twice.

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

A reader (:func:`observe`) reads the identity, the epoch, the retention horizon and the versions of the days it
wants in one SELECT, *before* it reads any row: a write that commits in between leaves the reader with rows newer
than the versions it saw, never older, so what it caches under those versions is at worst refreshed once more.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import psycopg2.extensions

from hdi_lab.schemas import DAY_NS
from hdi_lab.storage.cursor import quote

__all__ = ["Observed", "bump", "days_of", "kept", "observe", "set_retention"]

#: the transaction-local setting by which the loader tells the market tables' trigger that it keeps the versions
_SETTING = "hdi_lab.market_versions"


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


class Observed(NamedTuple):
    """What :func:`observe` read: the schema's ``identity`` (where its entries live), the ``token`` of each
    (instrument, day) asked (epoch and version: equal tokens, equal rows), and the retention ``horizon`` (int64 ns,
    None without a policy): days starting before it may lose rows without a new token."""

    identity: str
    tokens: dict[tuple[int, int], str]
    horizon: int | None


def observe(
    cur: psycopg2.extensions.cursor, schema: str, table: str, wanted: Sequence[tuple[int, int]]
) -> Observed | None:
    """The :class:`Observed` state of ``table`` and of the ``wanted`` (instrument, day) pairs (days since
    1970-01-01): one SELECT, in the cursor's transaction; read it before the rows. None when the table has no
    epoch row (the row was deleted by hand)."""
    conn = cur.connection
    ids = sorted({iid for iid, _ in wanted})
    days = [d for _, d in wanted] or [0]
    cur.execute(
        "SELECT e.identity::text || '-' || e.tableoid::int8, e.epoch, "
        "(extract(epoch FROM now() - e.retention) * 1e6)::int8, v.instrument_id, v.day - date '1970-01-01', "
        f"v.version FROM {quote(conn, schema, 'market_epochs')} e LEFT JOIN {quote(conn, schema, 'market_versions')} "
        "v ON v.table_name = e.table_name AND v.instrument_id = ANY(%s::int8[]) "
        "AND v.day >= date '1970-01-01' + %s AND v.day <= date '1970-01-01' + %s WHERE e.table_name = %s",
        (ids, min(days), max(days), table),
    )
    rows = cur.fetchall()
    if not rows:
        return None
    identity, epoch, horizon_us = rows[0][0], rows[0][1], rows[0][2]
    versions = {(int(iid), int(day)): int(v) for _, _, _, iid, day, v in rows if iid is not None}
    tokens = {key: f"{epoch}.{versions.get(key, 0)}" for key in wanted}
    return Observed(str(identity), tokens, None if horizon_us is None else int(horizon_us) * 1000)


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
