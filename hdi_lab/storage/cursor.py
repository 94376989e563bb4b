"""Cursors in one transaction, psycopg2 errors turned into StorageError, and the small helpers every
storage module reads with (one row, a frame, a quoted identifier).

Every statement runs in :func:`transaction`, which turns a ``psycopg2.Error`` into a one-line
:class:`StorageError` (with its sqlstate, chained to the original), so no front end ever sees a
driver traceback. Code that expects a specific error (``UniqueViolation`` under a savepoint)
catches it inside the transaction, before the translation.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from hdi_lab.errors import StorageError, first_line

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["execute_prepared", "fetch_frame", "one", "quote", "statements", "storage_error", "transaction"]

#: sqlstate classes of a connection that is gone: connection exception, operator intervention
_LOST = ("08", "57P")


def storage_error(exc: psycopg2.Error, conn: psycopg2.extensions.connection | None = None) -> StorageError:
    """The one-line StorageError for a driver error (a lost connection says how to resume)."""
    first = first_line(exc)
    code = exc.pgcode
    lost = (
        (conn is not None and conn.closed)
        or isinstance(exc, psycopg2.InterfaceError)
        or (code is not None and code.startswith(_LOST))
        or (code is None and isinstance(exc, psycopg2.OperationalError))
    )
    if lost:
        return StorageError(
            f"lost the connection to PostgreSQL ({first}): completed chunks are kept; check the "
            "server (hdi db status) and re-run to resume",
            sqlstate=code,
        )
    if code == "42501":
        return StorageError(
            f"PostgreSQL refused: {first} (sqlstate 42501): this role lacks the privilege; "
            "connect as a role that has it (e.g. the schema's owner) or ask for a GRANT",
            sqlstate=code,
        )
    where = f" (sqlstate {code})" if code else ""
    return StorageError(f"PostgreSQL failed: {first}{where}", sqlstate=code)


def quote(conn: psycopg2.extensions.connection, *names: str) -> str:
    """Safely quoted (qualified) identifier."""
    return sql.Identifier(*names).as_string(conn)


@contextmanager
def transaction(conn: psycopg2.extensions.connection) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor in one transaction: commit on success, roll back whole on any error.

    The rollback of a dead connection cannot fail over the error that killed it: the server has rolled
    back already.

    Raises StorageError (from the original) when the driver fails opening the cursor, in the block or at
    commit; any other error leaves the block unchanged, after the rollback.
    """
    try:
        cur = conn.cursor()
    except psycopg2.Error as exc:
        raise storage_error(exc, conn) from exc
    try:
        yield cur
        conn.commit()
    except BaseException as exc:
        _rollback(conn)
        if isinstance(exc, psycopg2.Error):
            raise storage_error(exc, conn) from exc
        raise
    finally:
        cur.close()


@contextmanager
def statements(conn: psycopg2.extensions.connection) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor whose statements each run as a transaction of their own (autocommit): one round trip per
    statement, no ``BEGIN`` and ``COMMIT`` around them (two more each). For reads that need no snapshot shared
    by their statements; a connection already in a transaction (or in autocommit) runs them as
    :func:`transaction` does.

    Raises what :func:`transaction` raises."""
    if conn.autocommit or conn.closed or conn.status != psycopg2.extensions.STATUS_READY:
        with transaction(conn) as cur:
            yield cur
        return
    conn.autocommit = True
    try:
        with transaction(conn) as cur:  # its commit is a no-op here; it translates the errors
            yield cur
    finally:
        if not conn.closed:
            conn.autocommit = False


def execute_prepared(cur: psycopg2.extensions.cursor, prepared: set[str], text: str, params: Mapping[str, Any]) -> None:
    """Run ``text`` (a statement with named parameters ``%(name)s``) with ``params`` as a prepared statement of the
    cursor's connection: planned once, not at every call (a small read's planning costs more than its execution);
    ``prepared`` holds the names the connection has prepared (a ``PREPARE`` the first time). In a transaction, or
    when the prepared statement fails (a table it names was dropped and made again), the statement runs as is.

    Raises psycopg2.Error when the statement fails as is."""
    names = list(params)
    if not cur.connection.autocommit:  # an error in a transaction would abort it: no second chance there
        cur.execute(text, params)
        return
    name = "hdi_" + hashlib.sha1("\0".join([text, *names]).encode()).hexdigest()[:20]
    if name not in prepared:
        positional = text
        for i, key in enumerate(names, 1):
            positional = positional.replace(f"%({key})s", f"${i}")
        cur.execute(f"PREPARE {name} AS {positional}")
        prepared.add(name)
    try:
        cur.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(names))})", [params[k] for k in names])
    except psycopg2.Error as exc:
        if exc.pgcode is None or exc.pgcode.startswith(_LOST):
            raise
        prepared.discard(name)
        with contextlib.suppress(psycopg2.Error):
            cur.execute(f"DEALLOCATE {name}")
        cur.execute(text, params)


def _rollback(conn: psycopg2.extensions.connection) -> None:
    if conn.closed:
        return
    # the connection died: nothing is left to roll back, the first error is the one to report
    with contextlib.suppress(psycopg2.InterfaceError, psycopg2.OperationalError):
        conn.rollback()


def one(cur: psycopg2.extensions.cursor) -> tuple[Any, ...]:
    """The single row a statement must return.

    Raises StorageError when the statement returned no row."""
    row = cur.fetchone()
    if row is None:
        raise StorageError("the database returned no row where one was expected")
    return tuple(row)


def fetch_frame(cur: psycopg2.extensions.cursor) -> pd.DataFrame:
    """The rows of the last statement as a DataFrame (column names from the cursor)."""
    import pandas as pd

    names = [d.name for d in cur.description or ()]
    return pd.DataFrame.from_records(cur.fetchall(), columns=names)
