"""HdiSession: settings, the database connection and the providers, for one front end or script.

**The default session.** A library call without ``session=`` (``hdi_lab.query(...)``) runs on a *default
session*: one per set of settings (everything :func:`hdi_lab.config.fingerprint` sees: ``HDI_*`` and ``PG*``
variables, the config files), kept for the next call and closed at exit, so repeated calls cost what calls on
an explicit session cost (no new connection, no migration check). Change a setting (``HDI_DATABASE_URL``,
``HDI_DB_SCHEMA``, a config file) and the next call gets the session of the new settings. Threads share a
default session, each with its own connection; a forked child never uses its parent's connections (it gets
its own session and leaves the parent's sockets alone). A default session whose connection the server closed
(a restart, ``pg_terminate_backend``) reconnects on the next call. Besides the sessions in use, a few idle
ones are kept.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hdi_lab import dsn
from hdi_lab.config import Settings, fingerprint, load_settings
from hdi_lab.errors import ValidationError

if TYPE_CHECKING:  # the database and provider layers load on first use (fast `%load_ext`)
    import psycopg2.extensions

    from hdi_lab.core.cache import ReadCache
    from hdi_lab.providers.base import Provider
    from hdi_lab.storage.embedded import EmbeddedServer
    from hdi_lab.storage.lookups import Lookups

__all__ = ["LIVE_PROVIDERS", "PROVIDERS", "HdiSession", "close_default_sessions", "default_session", "with_session"]

PROVIDERS = ("file", "sample", "databento", "ib")
#: the providers with a live feed (:mod:`hdi_lab.core.live`)
LIVE_PROVIDERS = ("databento", "ib")


class HdiSession:
    """Holds settings and lazily opened, migrated database connections (one per thread).

    Chunks may run on a thread pool (see :func:`hdi_lab.core.ingestion.run`'s ``executor``): each
    thread gets its own connection, so each chunk still commits through its own transaction. A thread's
    connection closes when the thread ends; a forked child opens its own.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._local = threading.local()  # .conn, .pid: this thread's connection and the process that opened it
        self._conns: weakref.WeakSet[psycopg2.extensions.connection] = weakref.WeakSet()  # every open one
        self._lock = threading.Lock()
        self._url: str | None = None
        self._migrated = False
        self._lookups: Lookups | None = None
        self._cache: ReadCache | None = None

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

    @property
    def lookups(self) -> Lookups:
        """This session's caches of reference rows (publishers, venues): see :mod:`hdi_lab.storage.lookups`."""
        found = self._lookups
        if found is None:
            from hdi_lab.storage.lookups import Lookups

            with self._lock:
                if self._lookups is None:
                    self._lookups = Lookups(self.schema)
                found = self._lookups
        return found

    @property
    def cache(self) -> ReadCache | None:
        """This session's read cache under ``<home>/cache`` (see :mod:`hdi_lab.core.cache`), None when the
        ``cache`` setting is off."""
        if not self.settings.cache:
            return None
        found = self._cache
        if found is None:
            from hdi_lab.core.cache import ReadCache

            with self._lock:
                if self._cache is None:
                    self._cache = ReadCache(
                        self.settings.home_dir / "cache",
                        int(self.settings.cache_bytes),
                        int(self.settings.cache_memory_bytes),
                    )
                found = self._cache
        return found

    def connection(self) -> psycopg2.extensions.connection:
        """This thread's open connection, with the hdi_lab schema migrated to the current version.

        A connection that died (server restarted, backend terminated) is replaced by a new one on
        the next call: a notebook keeps its session. In a forked child the parent's connections are
        left alone (never used, never closed: closing would end the parent's) and new ones are opened.

        Raises StorageError (cannot connect, a bad URL, a schema this role may not use or migrate),
        EmbeddedServerError and ConfigError (a TimescaleDB policy setting that is not an interval).
        """
        local = self._local
        conn: psycopg2.extensions.connection | None = getattr(local, "conn", None)
        if conn is not None and not conn.closed and local.pid == os.getpid():
            return conn
        if conn is not None and local.pid != os.getpid():
            self._abandon()
        from hdi_lab.storage import db, timescale

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
            self._conns.add(conn)
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def refresh(self) -> None:
        """Drop this thread's connection when the server has closed it (a restart, a terminated backend), so
        the next :meth:`connection` opens a new one instead of failing once: one ``poll(2)`` of its socket,
        which an idle connection never has data on. A connection inside a transaction is left as it is.

        Raises nothing."""
        conn: psycopg2.extensions.connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or self._local.pid != os.getpid():
            return
        import psycopg2
        import psycopg2.extensions

        if conn.status != psycopg2.extensions.STATUS_READY:
            return
        try:
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
            dead = bool(poller.poll(0))
        except (OSError, ValueError, psycopg2.Error):
            dead = True
        if not dead:
            return
        with contextlib.suppress(Exception):
            conn.close()
        self._local.conn = None
        with self._lock:
            self._lookups = None  # the server may be another one now
            if self.embedded:
                self._url = None  # the embedded server may have come back on another port

    def _abandon(self) -> None:
        """In a forked child: let go of the parent's connections without a word to the server. Each socket is
        replaced by /dev/null first, so what libpq writes when the object goes (its Terminate message) reaches
        nobody; the parent's connections stay open."""
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_RDWR)
            try:
                for conn in list(self._conns):
                    if not conn.closed:
                        with contextlib.suppress(OSError, ValueError):
                            os.dup2(devnull, conn.fileno())
            finally:
                os.close(devnull)
        self._conns = weakref.WeakSet()
        self._local = threading.local()
        self._lock = threading.Lock()  # another thread of the parent may have held it at the fork
        self._lookups = None

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
            for conn in list(self._conns):
                if not conn.closed:
                    conn.close()
            self._conns = weakref.WeakSet()
            self._local = threading.local()

    def __enter__(self) -> HdiSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def with_session[T](session: HdiSession | None, work: Callable[[HdiSession], T]) -> T:
    """Run ``work`` on the caller's session, or on the default session of the current settings (see the
    module). Raises what ``work`` raises, and ConfigError for invalid settings."""
    if session is not None:
        return work(session)
    with default_session() as own:
        return work(own)


@dataclass
class _Default:
    session: HdiSession
    users: int = 0


#: idle default sessions kept besides those in use (settings rarely change within a process)
_KEEP = 4


class _Cache:
    """The default sessions of this process (one module-level instance)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: dict[Hashable, tuple[Settings, Hashable]] = {}  # fingerprint -> settings, their session key
        # (pid, settings, environment) -> session, least recently used first
        self.defaults: dict[tuple[Any, ...], _Default] = {}


_CACHE = _Cache()


@contextlib.contextmanager
def default_session() -> Iterator[HdiSession]:
    """The default session of the current settings (see the module), as a context manager: it stays open
    afterwards for the next call, closed at exit. Its connection is checked (:meth:`HdiSession.refresh`).

    Raises ConfigError for invalid settings."""
    entry = _borrow()
    try:
        entry.session.refresh()
        yield entry.session
    finally:
        with _CACHE.lock:
            entry.users -= 1
            dropped = _trim()
        for old in dropped:
            old.session.close()


def _borrow() -> _Default:
    seen = fingerprint()
    with _CACHE.lock:
        known = _CACHE.settings.get(seen)
    if known is None:
        settings = load_settings()  # outside the lock: it reads files, and may raise ConfigError
        # the session's key: every setting, and the variables libpq reads (PG*) with the others
        known = settings, (tuple(sorted(settings.values.items(), key=lambda kv: kv[0])), seen[0])
        with _CACHE.lock:
            if len(_CACHE.settings) >= 4 * _KEEP:
                _CACHE.settings.clear()
            _CACHE.settings[seen] = known
    settings, values = known
    key = (os.getpid(), values)
    with _CACHE.lock:
        entry = _CACHE.defaults.pop(key, None) or _Default(HdiSession(settings))
        _CACHE.defaults[key] = entry  # the most recently used last
        entry.users += 1
    return entry


def _trim() -> list[_Default]:
    """Take the least recently used idle sessions beyond :data:`_KEEP` out of the cache (under the lock)."""
    idle = [k for k, e in _CACHE.defaults.items() if e.users == 0 and k[0] == os.getpid()]  # never a parent's
    return [_CACHE.defaults.pop(k) for k in idle[: max(0, len(idle) - _KEEP)]]


def close_default_sessions() -> None:
    """Close every default session of this process (run at exit; the next call opens a new one).

    Raises nothing."""
    with _CACHE.lock:
        mine = [k for k in _CACHE.defaults if k[0] == os.getpid()]
        entries = [_CACHE.defaults.pop(k) for k in mine]
    for entry in entries:
        with contextlib.suppress(Exception):
            entry.session.close()


def _after_fork_in_child() -> None:
    """The parent's default sessions are not the child's: let go of their connections without closing them
    (see :meth:`HdiSession._abandon`)."""
    _CACHE.lock = threading.Lock()  # another thread may have held it at the fork
    inherited = list(_CACHE.defaults.values())
    _CACHE.defaults.clear()
    for entry in inherited:
        entry.session._abandon()


atexit.register(close_default_sessions)
os.register_at_fork(after_in_child=_after_fork_in_child)
