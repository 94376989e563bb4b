"""The scheduler's database side: the advisory lock that keeps one scheduler active per hdi_lab schema, and
the name of the table APScheduler's SQLAlchemy job store keeps its jobs in (in the hdi_lab schema)."""

from __future__ import annotations

import psycopg2.extensions

from hdi_lab.storage.cursor import transaction

__all__ = ["JOBS_TABLE", "check_held", "held", "try_lock"]

#: the job store's table, created by APScheduler in the hdi_lab schema
JOBS_TABLE = "scheduler_jobs"
# the lock's key: the first of PostgreSQL's two 32-bit keys names the scheduler, the second the schema
_KEY = "SELECT hashtext('hdi_lab.scheduler'), hashtext(%s)"


def try_lock(conn: psycopg2.extensions.connection, schema: str) -> bool:
    """Take the scheduler lock of ``schema`` on ``conn`` (a session-level advisory lock, held until ``conn``
    closes); returns whether it was taken (False: another connection holds it).

    Raises StorageError when the database fails."""
    with transaction(conn) as cur:  # the lock is the session's: no transaction is left open while it is held
        cur.execute(f"SELECT pg_try_advisory_lock(k1, k2) FROM ({_KEY}) AS k(k1, k2)", (schema,))
        row = cur.fetchone()
    return bool(row and row[0])


def check_held(conn: psycopg2.extensions.connection) -> None:
    """Check that ``conn``, which took the lock, is still connected: a session-level lock lives as long as its
    connection, so a live connection still holds it.

    Raises StorageError when the connection is lost (the lock with it: another scheduler may take over)."""
    with transaction(conn) as cur:
        cur.execute("SELECT 1")


def held(conn: psycopg2.extensions.connection, schema: str) -> bool:
    """Whether any connection holds the scheduler lock of ``schema`` now, read from ``pg_locks`` without taking
    the lock (a probe that took it, even briefly, could make a scheduler starting meanwhile think another runs).

    Raises StorageError when the database fails."""
    with transaction(conn) as cur:
        cur.execute(
            f"SELECT EXISTS (SELECT 1 FROM pg_locks l, ({_KEY}) AS k(k1, k2) WHERE l.locktype = 'advisory' "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = k.k1::oid AND l.objid = k.k2::oid AND l.objsubid = 2 AND l.granted)",
            (schema,),
        )
        row = cur.fetchone()
    return bool(row and row[0])
