"""Chunks on a Dask distributed cluster (``executor="dask"``): the same chunk work as a local run, each chunk a
task, every worker with its own database connections against the one shared PostgreSQL.

- **Settings travel, secrets stay unseen.** A run registers a worker plugin holding the caller's settings (the
  database URL resolved, so the workers reach the caller's server) and a copy of its provider; each worker makes
  its own :class:`~hdi_lab.core.session.HdiSession` from them and closes it when the run unregisters the plugin.
  Tasks carry only the plugin's name, the chunk and its work function: Dask logs a failed task's repr (``Compute
  Failed ... Task: ...``) and the plugin's, and neither holds a secret (:class:`~hdi_lab.config.Settings` and the
  providers mask theirs). The settings do cross the wire to the workers: use TLS on an untrusted network.
- **A lost worker loses nothing.** Each chunk commits its rows with its ingest-log row in one transaction; a
  worker killed mid-chunk leaves an uncommitted transaction that PostgreSQL rolls back when the connection
  drops, and the scheduler runs the task again on another worker (up to ``distributed.scheduler.allowed-failures``
  times, then :class:`~hdi_lab.errors.ClusterError`). The chunk's advisory lock makes the retry wait for the dead
  connection's rollback, and the ingest log makes a chunk committed before the loss a skip.
- **Vendor limits are cluster-wide.** A provider that limits concurrent downloads
  (:class:`~hdi_lab.providers.base.DownloadLimited`, Databento's ``databento_concurrency``) takes one lease of a
  ``distributed.Semaphore`` on the scheduler around each download: every worker and every run on the cluster
  share it, and the scheduler frees the leases of a dead worker (``distributed.scheduler.locks.lease-timeout``).
  A semaphore (rather than a lease row in the database) needs no extra connection and no clean-up after a crash.
  A provider whose vendor paces every request per account and allows one connection per client id
  (:class:`~hdi_lab.providers.base.LedgerPaced`: IB) gets a :class:`~hdi_lab.core.ledger.DatabaseLedger` on each
  worker instead: its requests are booked under one lock in the database, on the database's clock, over what every
  worker sent (the pacing rules hold for all of them, on any machine), and each worker's connection leases a client
  id no other worker holds; a lease is a lock of the worker's ledger connection, freed when the worker dies.

Only this module imports Dask (``pip install 'hdi_lab[dask]'``; importing it without raises MissingDependency);
:mod:`hdi_lab.core.executors` says when it runs.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeAlias

from hdi_lab import dsn
from hdi_lab.config import Settings
from hdi_lab.core.executors import DaskExecutor
from hdi_lab.core.ledger import DatabaseLedger
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ClusterError, ConfigError, MissingDependency, first_line
from hdi_lab.providers.base import DownloadLimited, LedgerPaced, Provider

try:  # importing this module without Dask says which extra to install, whoever imports it
    from distributed import Client, KilledWorker, Semaphore, WorkerPlugin, as_completed, get_worker
except ImportError as exc:
    raise MissingDependency("distributed", "dask") from exc

__all__ = ["CONNECT_TIMEOUT_S", "DOWNLOADS", "Work", "map_unordered", "open_client"]

#: the name of the cluster-wide semaphore of a provider's downloads (one per provider name)
DOWNLOADS = "hdi_lab-downloads-{provider}"
#: how long reaching a scheduler by address may take
CONNECT_TIMEOUT_S = 10

#: what runs on a worker for one item: ``fn(session, provider, item)``; a module-level function (Dask pickles it
#: by reference, the workers import it)
Work: TypeAlias = Callable[[HdiSession, "Provider | None", Any], Any]


@contextlib.contextmanager
def open_client(target: DaskExecutor) -> Iterator[Client]:
    """The caller's client, or a client of the scheduler address (closed on exit; never the process's default
    client).

    Raises ClusterError when the scheduler cannot be reached."""
    if not isinstance(target.scheduler, str):
        yield target.scheduler
        return
    try:
        client = Client(target.scheduler, set_as_default=False, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"the Dask scheduler {target.scheduler} cannot be reached ({first_line(exc)}): start it (e.g. `docker "
            "compose --profile dask up -d`) or fix --scheduler / HDI_DASK_SCHEDULER"
        ) from None
    try:
        yield client
    finally:
        client.close()


class _Run(WorkerPlugin):
    """One run's state on each worker: its session (own connections) and its own copy of the provider."""

    def __init__(self, settings: Settings, provider: Provider | None, downloads: tuple[str, int] | None) -> None:
        self.settings = settings
        self.provider = provider
        self.downloads = downloads
        self.session: HdiSession | None = None
        self.ledger: DatabaseLedger | None = None
        self._semaphore: Semaphore | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # Dask may log it: the database masked, nothing else of the settings
        return f"hdi_lab run (database={dsn.mask(self.settings.database_url)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "provider": self.provider, "downloads": self.downloads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"], state["provider"], state["downloads"])  # type: ignore[misc]

    def setup(self, worker: Any) -> None:
        self.session = HdiSession(self.settings)
        if self.downloads is not None and isinstance(self.provider, DownloadLimited):
            self.provider.limit_downloads(self._slot)
        if isinstance(self.provider, LedgerPaced):  # connects on first use, in a task
            self.ledger = DatabaseLedger(str(self.settings.database_url), str(self.settings.db_schema))
            self.provider.share_ledger(self.ledger)

    def teardown(self, worker: Any) -> None:
        try:
            if self.provider is not None:
                self.provider.close()
        finally:
            if self.ledger is not None:
                self.ledger.close()
            if self.session is not None:
                self.session.close()

    def _slot(self) -> AbstractContextManager[object]:
        """A lease of the cluster-wide download semaphore (made on first use, in a task's thread)."""
        assert self.downloads is not None
        name, limit = self.downloads
        with self._lock:
            if self._semaphore is None:
                self._semaphore = Semaphore(max_leases=limit, name=name)
            sem = self._semaphore
        return _Lease(sem, name, limit)


class _Lease:
    """``with``: one lease of a semaphore; a limit other than the one the cluster's semaphore has is refused."""

    def __init__(self, sem: Semaphore, name: str, limit: int) -> None:
        self._sem, self._name, self._limit = sem, name, limit

    def __enter__(self) -> None:
        try:
            self._sem.acquire()
        except ValueError as exc:  # "Inconsistent max leases": another run made it with another limit
            raise ConfigError(
                f"the cluster's semaphore {self._name} has another limit than {self._limit} "
                f"({first_line(exc)}): give every run on one cluster the same databento_concurrency "
                "(HDI_DATABENTO_CONCURRENCY), or restart the scheduler"
            ) from None

    def __exit__(self, *exc: object) -> None:
        self._sem.release()


def _call(run: str, fn: Work, item: object) -> Any:
    """A task: ``fn`` with this worker's session and provider of the run ``run``."""
    plugin = get_worker().plugins[run]
    assert isinstance(plugin, _Run) and plugin.session is not None, f"plugin {run} is not an hdi_lab run"
    return fn(plugin.session, plugin.provider, item)


def map_unordered(
    target: DaskExecutor,
    session: HdiSession,
    provider: Provider | None,
    fn: Work,
    items: Sequence[object],
    *,
    label: str = "hdi-chunk",
) -> Iterator[tuple[int, Any]]:
    """Run ``fn(worker session, worker provider, item)`` for every item on the cluster; yields ``(index, result)``
    as tasks finish. Closing the iterator early cancels the tasks not started yet (running ones finish: each is a
    committed-or-nothing chunk).

    ``provider`` is copied to the workers (pickled; a copy holds none of the caller's connections).

    Raises ClusterError (the scheduler cannot be reached; a task lost its worker too often), ConfigError (a
    download limit other than the cluster's) and what ``fn`` raises (re-raised as it was raised on the worker).
    """
    settings = session.settings.replace(database_url=session.database_url())  # the embedded server's, too
    downloads = None
    if isinstance(provider, DownloadLimited):
        downloads = (DOWNLOADS.format(provider=getattr(provider, "name", "provider")), provider.max_downloads())
    run = f"hdi_lab-run-{uuid.uuid4().hex[:12]}"
    with open_client(target) as client:
        client.register_plugin(_Run(settings, provider, downloads), name=run)
        futures = [
            client.submit(_call, run, fn, item, key=f"{label}-{i}-{run}", pure=False) for i, item in enumerate(items)
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in as_completed(futures, loop=client.loop):
                try:
                    out = fut.result()
                except KilledWorker as exc:
                    raise ClusterError(
                        f"{label} {index[fut.key]} lost its worker too many times ({first_line(exc)}): the "
                        "chunks committed before are kept; check the workers' memory and logs, then re-run"
                    ) from None
                yield index[fut.key], out
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:
                client.cancel(pending)
            with contextlib.suppress(OSError, ValueError, KeyError, TimeoutError):
                client.unregister_worker_plugin(run)
