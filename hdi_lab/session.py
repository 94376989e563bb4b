"""HdiSession: settings, the database connection and the providers, for one front end or script."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg2.extensions

from hdi_lab.config import Settings, load_settings
from hdi_lab.errors import ValidationError
from hdi_lab.providers.base import Provider
from hdi_lab.storage import db

if TYPE_CHECKING:
    from hdi_lab.storage.embedded import EmbeddedServer

PROVIDERS = ("file", "sample")


class HdiSession:
    """Holds settings and one lazily opened, migrated database connection."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._conn: psycopg2.extensions.connection | None = None
        self._url: str | None = None

    @property
    def schema(self) -> str:
        return str(self.settings.db_schema)

    @property
    def embedded(self) -> bool:
        return not self.settings.database_url

    def database_url(self) -> str:
        """The configured URL, or the embedded server's (started if needed). Contains secrets."""
        if self._url is None:
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
        """An open connection with the hdi_lab schema migrated to the current version."""
        if self._conn is None or self._conn.closed:
            conn = db.connect(self.database_url(), self.schema)
            db.migrate(conn, self.schema)
            self._conn = conn
        return self._conn

    def provider(self, name: str) -> Provider:
        if name == "file":
            from hdi_lab.providers.file import FileProvider

            return FileProvider()
        if name == "sample":
            from hdi_lab.providers.sample import SampleProvider

            return SampleProvider()
        raise ValidationError(f"provider={name!r} is not known: use one of {', '.join(PROVIDERS)}")

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def __enter__(self) -> HdiSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
