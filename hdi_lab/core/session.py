"""HdiSession: settings, the database connection and the providers, for one front end or script."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from hdi_lab import dsn
from hdi_lab.config import Settings, load_settings
from hdi_lab.errors import ValidationError

if TYPE_CHECKING:  # the database and provider layers load on first use (fast `%load_ext`)
    import psycopg2.extensions

    from hdi_lab.providers.base import Provider
    from hdi_lab.storage.embedded import EmbeddedServer

__all__ = ["PROVIDERS", "HdiSession", "with_session"]

PROVIDERS = ("file", "sample", "databento", "ib")


class HdiSession:
    """Holds settings and lazily opened, migrated database connections (one per thread).

    Chunks may run on a thread pool (see :func:`hdi_lab.core.ingestion.run`'s ``executor``): each
    thread gets its own connection, so each chunk still commits through its own transaction.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._conns: dict[int, psycopg2.extensions.connection] = {}
        self._lock = threading.Lock()
        self._url: str | None = None
        self._migrated = False

    def __repr__(self) -> str:
        where = "embedded server" if self.embedded else dsn.mask(self.settings.database_url)
        return f"HdiSession(database={where!r}, schema={self.schema!r})"

    @property
    def schema(self) -> str:
        return str(self.settings.db_schema)

    @property
    def embedded(self) -> bool:
        return not self.settings.database_url

    def database_url(self) -> str:
        """The configured URL, or the embedded server's (started if needed). Contains secrets.

        Raises EmbeddedServerError when the embedded server cannot start (or is not installed).
        """
        with self._lock:
            if self._url is not None:
                return self._url
            if self.settings.database_url:
                self._url = str(self.settings.database_url)
            else:
                self._url = self.embedded_server().start()
        return self._url

    def embedded_server(self) -> EmbeddedServer:
        """The embedded server under the data home (not started)."""
        from hdi_lab.storage.embedded import EmbeddedServer

        return EmbeddedServer(self.settings.home_dir)

    def connection(self) -> psycopg2.extensions.connection:
        """This thread's open connection, with the hdi_lab schema migrated to the current version.

        A connection that died (server restarted, backend terminated) is replaced by a new one on
        the next call: a notebook keeps its session.

        Raises StorageError (cannot connect, a bad URL, a schema this role may not use or migrate),
        EmbeddedServerError and ConfigError (a TimescaleDB policy setting that is not an interval).
        """
        from hdi_lab.storage import db, timescale

        key = threading.get_ident()
        conn = self._conns.get(key)
        if conn is None or conn.closed:
            conn = db.connect(self.database_url(), self.schema)
            with self._lock:
                if not self._migrated:
                    try:
                        db.migrate(
                            conn,
                            self.schema,
                            timescale.Policies.from_settings(
                                self.settings.timescale_compress_after, self.settings.timescale_retention
                            ),
                        )
                    except BaseException:
                        conn.close()
                        raise
                    self._migrated = True
                self._conns[key] = conn
        return conn

    def provider(self, name: str) -> Provider:
        """A new provider by name (one of :data:`PROVIDERS`), nothing connected yet. Raises ValidationError
        for an unknown name."""
        if name == "file":
            from hdi_lab.providers.file import FileProvider

            return FileProvider(self.settings)
        if name == "sample":
            from hdi_lab.providers.sample import SampleProvider

            return SampleProvider()
        if name == "databento":
            from hdi_lab.providers.databento.provider import DatabentoProvider

            return DatabentoProvider(self.settings)
        if name == "ib":
            from hdi_lab.providers.ib.provider import IbProvider

            return IbProvider(self.settings)
        raise ValidationError(f"provider={name!r} is not known: use one of {', '.join(PROVIDERS)}")

    def close(self) -> None:
        """Close every connection this session opened (the embedded server keeps running)."""
        with self._lock:
            for conn in self._conns.values():
                if not conn.closed:
                    conn.close()
            self._conns.clear()

    def __enter__(self) -> HdiSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def with_session[T](session: HdiSession | None, work: Callable[[HdiSession], T]) -> T:
    """Run ``work`` on the caller's session, or on a fresh one closed afterwards. Raises what ``work`` raises."""
    if session is not None:
        return work(session)
    with HdiSession() as own:
        return work(own)
