"""The shared ledger's database side (tables ``pacing_ledger`` and ``client_leases``, migration 016): what every
process of a cluster run agrees on about one vendor account, whichever machine it runs on.

- :func:`book`: under a scope's advisory lock (held until commit), the database's clock and the entries of the
  scope's last ``horizon_s`` seconds go to the caller's decision, and the entries it returns are added, in one
  transaction: two processes never decide on the same history.
- :func:`lease`: a connection id of a scope as a session-level advisory lock of the caller's connection (released
  by :func:`release`, or by PostgreSQL when that connection or its process ends: a killed worker frees its ids),
  with a row saying who holds it.

The caller gives a connection of its own: the locks and commits here must never touch a chunk's transaction.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence

import psycopg2.extensions
import psycopg2.extras

from hdi_lab.storage.cursor import one, quote, transaction

__all__ = ["Entry", "book", "lease", "leases", "release"]

#: a ledger entry: (time on the database's clock in epoch seconds, weight, identity, group)
Entry = tuple[float, int, str, str]
# the two 32-bit keys of a scope's booking lock (per hdi_lab schema) and of a scope's connection ids (per database:
# a vendor's ids do not depend on the schema a process writes to)
_BOOK_KEY = "hashtext('hdi_lab.ledger.' || %s), hashtext(%s)"
_LEASE_KEY = "hashtext('hdi_lab.client.' || %s)"


def book(
    conn: psycopg2.extensions.connection,
    schema: str,
    scope: str,
    horizon_s: float,
    decide: Callable[[float, list[Entry]], tuple[float, list[Entry]]],
) -> float:
    """Call ``decide(now, entries)`` with the database's clock and ``scope``'s entries since ``now - horizon_s``
    (older ones are deleted), holding the scope's lock; add the entries it returns; return the wait it returns.

    Raises StorageError when the database fails (nothing is booked then)."""
    t = quote(conn, schema, "pacing_ledger")
    with transaction(conn) as cur:
        cur.execute(f"SELECT pg_advisory_xact_lock({_BOOK_KEY})", (schema, scope))
        cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
        now = float(one(cur)[0])
        cur.execute(f"DELETE FROM {t} WHERE scope = %s AND sent_at < %s", (scope, now - horizon_s))
        cur.execute(f"SELECT sent_at, weight, identity, grp FROM {t} WHERE scope = %s ORDER BY sent_at", (scope,))
        entries = [(float(a), int(w), str(i), str(g)) for a, w, i, g in cur.fetchall()]
        wait, add = decide(now, entries)
        if add:
            psycopg2.extras.execute_values(
                cur,
                f"INSERT INTO {t} (scope, sent_at, weight, identity, grp) VALUES %s",
                [(scope, *e) for e in add],
            )
    return wait


def lease(conn: psycopg2.extensions.connection, schema: str, scope: str, candidates: Sequence[int]) -> int | None:
    """Take the first of ``candidates`` (connection ids) of ``scope`` that no other connection holds, as a
    session-level lock of ``conn``, and record who took it; None when every one is held.

    Raises StorageError when the database fails."""
    t = quote(conn, schema, "client_leases")
    with transaction(conn) as cur:  # the lock is the session's: no transaction stays open while it is held
        for value in candidates:
            cur.execute(f"SELECT pg_try_advisory_lock({_LEASE_KEY}, %s)", (scope, int(value)))
            if one(cur)[0]:
                cur.execute(
                    f"INSERT INTO {t} (scope, client_id, host, pid, backend_pid) "
                    "VALUES (%s, %s, %s, %s, pg_backend_pid()) ON CONFLICT (scope, client_id) DO UPDATE SET "
                    "host = EXCLUDED.host, pid = EXCLUDED.pid, backend_pid = EXCLUDED.backend_pid, taken_at = now()",
                    (scope, int(value), socket.gethostname(), os.getpid()),
                )
                return int(value)
    return None


def release(conn: psycopg2.extensions.connection, schema: str, scope: str, value: int) -> None:
    """Give back the connection id ``value`` of ``scope`` that ``conn`` holds (its row goes with it).

    Raises StorageError when the database fails."""
    t = quote(conn, schema, "client_leases")
    with transaction(conn) as cur:
        cur.execute(
            f"DELETE FROM {t} WHERE scope = %s AND client_id = %s AND backend_pid = pg_backend_pid()",
            (scope, int(value)),
        )
        cur.execute(f"SELECT pg_advisory_unlock({_LEASE_KEY}, %s)", (scope, int(value)))


def leases(conn: psycopg2.extensions.connection, schema: str) -> list[tuple[str, int, str, int]]:
    """The connection ids held now: (scope, id, host, pid of the holding process), rows of dead holders left out.

    Raises StorageError when the database fails."""
    t = quote(conn, schema, "client_leases")
    with transaction(conn) as cur:
        cur.execute(
            f"SELECT c.scope, c.client_id, c.host, c.pid FROM {t} c WHERE EXISTS (SELECT 1 FROM pg_locks l "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.pid = c.backend_pid AND l.objsubid = 2 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            f"AND l.classid = ({_LEASE_KEY.replace('%s', 'c.scope')})::oid AND l.objid = c.client_id::oid) "
            "ORDER BY c.scope, c.client_id"
        )
        return [(str(s), int(c), str(h), int(p)) for s, c, h, p in cur.fetchall()]
