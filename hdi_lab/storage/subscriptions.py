"""The subscriptions table, read and written for :mod:`hdi_lab.core.subscriptions`: add one (or find the one it
collides with), all of them, one by id or name, and remove one. A row is a dict of the table's columns."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeAlias

import psycopg2.extensions
import psycopg2.extras

from hdi_lab.errors import StorageError
from hdi_lab.storage.cursor import quote, transaction

__all__ = ["COLUMNS", "Row", "all_rows", "delete", "insert"]

#: one subscription as stored, by column name
Row: TypeAlias = dict[str, Any]

#: the table's columns, in the order rows are read
COLUMNS = ("id", "name", "provider", "dataset", "schema", "stype_in", "symbols", "since", "created_at", "options")
_SELECT = ", ".join(COLUMNS)


def _t(cur: psycopg2.extensions.cursor, schema: str) -> str:
    return quote(cur.connection, schema, "subscriptions")


def _rows(cur: psycopg2.extensions.cursor) -> list[Row]:
    return [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]


def insert(
    conn: psycopg2.extensions.connection,
    schema: str,
    *,
    name: str | None,
    provider: str,
    dataset: str,
    data_schema: str,
    stype_in: str,
    symbols: list[str],
    since: dt.date,
    options: dict[str, Any],
) -> tuple[Row, bool]:
    """Add a subscription; returns (its row, True), or (the row it collides with, False) when one with the
    same request (provider, dataset, schema, stype_in, symbols) or else the same name exists.

    Raises StorageError when the database fails, or concurrent adds and removes keep changing the table."""
    with transaction(conn) as cur:
        t = _t(cur, schema)
        for _ in range(2):  # once more when a concurrent add or remove changed the table in between
            found = _colliding(cur, t, provider, dataset, data_schema, stype_in, symbols, name)
            if found is not None:
                return found, False
            # looked up first so that adding an existing subscription again draws no id
            cur.execute(
                f"INSERT INTO {t} (name, provider, dataset, schema, stype_in, symbols, since, options) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING {_SELECT}",
                (name, provider, dataset, data_schema, stype_in, symbols, since, psycopg2.extras.Json(options)),
            )
            added = _rows(cur)
            if added:
                return added[0], True
        raise StorageError(f"adding the subscription to {schema}.subscriptions raced with other sessions: try again")


def _colliding(
    cur: psycopg2.extensions.cursor,
    t: str,
    provider: str,
    dataset: str,
    data_schema: str,
    stype_in: str,
    symbols: list[str],
    name: str | None,
) -> Row | None:
    """The subscription of the same request, else the one of the same name, else None."""
    cur.execute(
        f"SELECT {_SELECT} FROM {t} "
        "WHERE (provider, dataset, schema, stype_in, symbols) = (%s, %s, %s, %s, %s::text[])",
        (provider, dataset, data_schema, stype_in, symbols),
    )
    found = _rows(cur)
    if not found and name is not None:
        cur.execute(f"SELECT {_SELECT} FROM {t} WHERE name = %s", (name,))
        found = _rows(cur)
    return found[0] if found else None


def all_rows(conn: psycopg2.extensions.connection, schema: str) -> list[Row]:
    """Every subscription, by id. Raises StorageError when the database fails."""
    with transaction(conn) as cur:
        cur.execute(f"SELECT {_SELECT} FROM {_t(cur, schema)} ORDER BY id")
        return _rows(cur)


def delete(conn: psycopg2.extensions.connection, schema: str, *, sub_id: int | None, name: str | None) -> Row | None:
    """Remove the subscription with id ``sub_id`` or name ``name``; returns its row, None when there is none.

    Raises StorageError when the database fails."""
    with transaction(conn) as cur:
        cur.execute(
            f"DELETE FROM {_t(cur, schema)} WHERE id = %s OR name = %s RETURNING {_SELECT}",
            (sub_id, name),
        )
        gone = _rows(cur)
    return gone[0] if gone else None
