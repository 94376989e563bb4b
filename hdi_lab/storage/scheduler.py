"""The scheduler's database side: the advisory lock that keeps one scheduler active per hdi_lab schema, and
the name of the table APScheduler's SQLAlchemy job store keeps its jobs in (in the hdi_lab schema)."""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

from hdi_lab.storage.cursor import storage_error

__all__ = ["JOBS_TABLE", "check_held", "try_lock", "unlock"]

#: the job store's table, created by APScheduler in the hdi_lab schema
JOBS_TABLE = "scheduler_jobs"
# the lock's key: the first of PostgreSQL's two 32-bit keys names the scheduler, the second the schema
_KEY = "SELECT hashtext('hdi_lab.scheduler'), hashtext(%s)"


def try_lock(conn: psycopg2.extensions.connection, schema: str) -> bool:
    """Take the scheduler lock of ``schema`` on ``conn`` (a session-level advisory lock, held until ``conn``
    closes or :func:`unlock`); returns whether it was taken (False: another connection holds it).

    Raises StorageError when the database fails."""
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT pg_try_advisory_lock(k1, k2) FROM ({_KEY}) AS k(k1, k2)", (schema,))
            row = cur.fetchone()
        conn.commit()  # the lock is the session's: no transaction is left open while it is held
    except psycopg2.Error as exc:
        raise storage_error(exc, conn) from exc
    return bool(row and row[0])


def unlock(conn: psycopg2.extensions.connection, schema: str) -> None:
    """Release the scheduler lock of ``schema`` held by ``conn``.

    Raises StorageError when the database fails."""
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT pg_advisory_unlock(k1, k2) FROM ({_KEY}) AS k(k1, k2)", (schema,))
        conn.commit()
    except psycopg2.Error as exc:
        raise storage_error(exc, conn) from exc


def check_held(conn: psycopg2.extensions.connection) -> None:
    """Check that ``conn``, which took the lock, is still connected: a session-level lock lives as long as its
    connection, so a live connection still holds it.

    Raises StorageError when the connection is lost (the lock with it: another scheduler may take over)."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.commit()
    except psycopg2.Error as exc:
        raise storage_error(exc, conn) from exc
