"""The shared ledger of a cluster run in the database (:class:`DatabaseLedger`): a provider's copy on each Dask
worker paces its requests and leases its connection ids through it, so a vendor's per-account limits hold for
every worker together (see :mod:`hdi_lab.core.cluster`; the SQL is :mod:`hdi_lab.storage.ledger`).

The database is the one place every worker reaches, and its clock the one clock they share (machines' clocks
differ; a worker's monotonic clock means nothing to another). Each process uses a connection of its own for the
ledger, never a chunk's: a booking commits at once while the chunk's transaction stays open until its rows are
loaded, and a lease lives as long as that connection, so PostgreSQL frees the ids of a worker that dies.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence

import psycopg2
import psycopg2.extensions

from hdi_lab import dsn
from hdi_lab.errors import StorageError
from hdi_lab.providers.base import LedgerEntry
from hdi_lab.storage import db
from hdi_lab.storage import ledger as table

__all__ = ["DatabaseLedger"]


class DatabaseLedger:
    """A :class:`~hdi_lab.providers.base.Ledger` in the hdi_lab schema ``schema`` of the database at ``url``, on
    a connection of its own (opened on first use; the schema must be migrated). Thread-safe: one call at a time."""

    def __init__(self, url: str, schema: str) -> None:
        self._url, self.schema = url, schema
        self._conn: psycopg2.extensions.connection | None = None
        self._held: set[tuple[str, int]] = set()
        self._lock = threading.RLock()

    def __repr__(self) -> str:  # Dask may log it: the database masked
        return f"DatabaseLedger(database={dsn.mask(self._url)!r}, schema={self.schema!r})"

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._held.clear()  # a lost connection took its leases with it
            self._conn = db.connect(self._url, self.schema)
        return self._conn

    def book(
        self,
        scope: str,
        horizon_s: float,
        decide: Callable[[float, list[LedgerEntry]], tuple[float, list[LedgerEntry]]],
    ) -> float:
        """See :meth:`hdi_lab.providers.base.Ledger.book`. Raises StorageError when the database fails."""
        with self._lock:
            return table.book(self._connection(), self.schema, scope, horizon_s, decide)

    def lease(self, scope: str, candidates: Sequence[int]) -> int | None:
        """See :meth:`hdi_lab.providers.base.Ledger.lease`. Raises StorageError when the database fails."""
        with self._lock:
            mine = [c for c in candidates if (scope, int(c)) not in self._held]  # a session lock is re-entrant
            got = table.lease(self._connection(), self.schema, scope, mine)
            if got is not None:
                self._held.add((scope, got))
            return got

    def release(self, scope: str, value: int) -> None:
        """See :meth:`hdi_lab.providers.base.Ledger.release`. Raises StorageError when the database fails."""
        with self._lock:
            if (scope, value) not in self._held:
                return
            self._held.discard((scope, value))
            if self._conn is not None and not self._conn.closed:
                table.release(self._conn, self.schema, scope, value)

    def close(self) -> None:
        """Give back every lease (closing the connection frees them) and close the connection."""
        with self._lock:
            for scope, value in sorted(self._held):
                with contextlib.suppress(StorageError):  # closing frees the lock anyway; the row may stay
                    self.release(scope, value)
            self._held.clear()
            if self._conn is not None and not self._conn.closed:
                self._conn.close()
            self._conn = None
