"""Per-session caches of the reference rows every read needs: which dataset each publisher publishes, and the
exchange of an instrument's latest definition (the calendar of IB contracts).

A read of bars asks both on every call (the publisher filter of each span, the ``session`` column); over a
session they rarely change, so an :class:`Lookups` (one per :class:`hdi_lab.core.session.HdiSession`, see
``HdiSession.lookups``) answers from memory and reads the table again only when it is asked something it has
not seen: a publisher id it does not know (a newer hdi_lab or another process added publishers) re-reads the
publishers, an instrument without a stored exchange is asked again next time. A stored exchange is kept: an
instrument's exchange does not change between definitions.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence

import psycopg2.extensions

from hdi_lab.storage.cursor import quote, transaction

__all__ = ["Lookups"]


class Lookups:
    """The caches of one session (its schema); thread-safe (a lookup replaces whole dicts)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._lock = threading.Lock()
        self._datasets: dict[int, str] = {}
        self._exchanges: dict[tuple[str, int], str] = {}
        # the names of the statements each connection prepared (see hdi_lab.storage.cursor.execute_prepared)
        self._prepared: weakref.WeakKeyDictionary[psycopg2.extensions.connection, set[str]] = (
            weakref.WeakKeyDictionary()
        )

    def prepared(self, conn: psycopg2.extensions.connection) -> set[str]:
        """The names of the statements ``conn`` has prepared (a set the caller adds to). Raises nothing."""
        with self._lock:
            return self._prepared.setdefault(conn, set())

    def datasets(self, conn: psycopg2.extensions.connection, publisher_ids: Iterable[int] = ()) -> Mapping[int, str]:
        """``publisher_id -> dataset`` of every stored publisher, read (in a transaction of its own) only the first
        time and when one of ``publisher_ids`` is not in it.

        Raises StorageError when the server fails."""
        ids = [int(p) for p in publisher_ids]
        found = self._datasets
        if found and all(p in found for p in ids):
            return found
        with transaction(conn) as cur:
            return self.datasets_in(cur, ids)

    def datasets_in(self, cur: psycopg2.extensions.cursor, publisher_ids: Iterable[int] = ()) -> Mapping[int, str]:
        """:meth:`datasets` read with ``cur``, in the caller's transaction. Raises psycopg2.Error."""
        found = self._datasets
        if found and all(int(p) in found for p in publisher_ids):
            return found
        cur.execute(f"SELECT publisher_id, dataset FROM {quote(cur.connection, self.schema, 'publishers')}")
        found = {int(pub): str(ds) for pub, ds in cur.fetchall()}
        with self._lock:
            self._datasets = found
        return found

    def exchanges(
        self, conn: psycopg2.extensions.connection, instruments: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], str | None]:
        """The exchange of the latest stored definition of each ``(dataset, instrument_id)``, None where no
        definition is stored; asked from the server (in a transaction of its own) for the ones not known yet.

        Raises StorageError when the server fails."""
        known = self._exchanges
        missing = sorted({k for k in instruments if k not in known})
        if missing:
            with transaction(conn) as cur:
                cur.execute(
                    "SELECT k.ds, k.iid, (SELECT i.exchange FROM "
                    f"{quote(conn, self.schema, 'instruments')} i WHERE i.dataset = k.ds AND i.instrument_id = k.iid "
                    "ORDER BY i.ts_recv_ns DESC LIMIT 1) FROM unnest(%s::text[], %s::int8[]) AS k(ds, iid)",
                    ([ds for ds, _ in missing], [int(iid) for _, iid in missing]),
                )
                fetched = {(str(ds), int(iid)): str(ex) for ds, iid, ex in cur.fetchall() if ex is not None}
            with self._lock:
                self._exchanges = known = {**self._exchanges, **fetched}
        return {k: known.get(k) for k in instruments}
