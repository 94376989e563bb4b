"""The IB client: ``ib_async`` (maintained) or ``ib_insync`` (same API), run on a private event loop.

The library is chosen by the ``ib_library`` setting (``HDI_IB_LIBRARY``): ``auto`` takes ib_async
when installed, else ib_insync. Each :class:`IbConnection` runs the client on its own event loop in
its own thread, so it works the same from a script, the CLI and a notebook (whose loop is already
running), and callers stay synchronous. IB errors become :class:`IbApiError` (with IB's code) and a
lost connection :class:`IbDisconnected`; :mod:`hdi_lab.providers.ib.provider` turns them into hdi_lab errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import logging
import threading
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, Self, TypeVar

from hdi_lab.errors import ConfigError, MissingDependency

__all__ = [
    "CLIENT_ID_IN_USE",
    "LIBRARIES",
    "IbApiError",
    "IbClientIdInUse",
    "IbConnection",
    "IbDisconnected",
    "load_library",
]

LIBRARIES = ("ib_async", "ib_insync")
#: IB's error code for a connection whose client id another connection uses ("Unable to connect as the client id
#: is already in use"); TWS closes the connection after it
CLIENT_ID_IN_USE = 326
T = TypeVar("T")
log = logging.getLogger(__name__)


class IbApiError(Exception):
    """IB answered a request with an error message (``code`` as in IB's message codes)."""

    def __init__(self, code: int, message: str, req_id: int = -1) -> None:
        super().__init__(f"IB error {code}: {message}")
        self.code = code
        self.message = message
        self.req_id = req_id


class IbDisconnected(Exception):
    """The connection to TWS / IB Gateway was lost or could not be opened."""


class IbClientIdInUse(IbDisconnected):
    """TWS / IB Gateway refused the connection: another connection uses its client id (IB error 326)."""


def load_library(choice: str | None = "auto") -> ModuleType:
    """The IB client module: ``ib_async``, ``ib_insync``, or for ``auto`` the first one installed.

    Raises ConfigError for another ``choice``, MissingDependency when the library is not installed."""
    name = (choice or "auto").strip().lower()
    if name not in ("auto", *LIBRARIES):
        raise ConfigError(f"ib_library={choice!r} is not valid: use auto, ib_async or ib_insync")
    for candidate in LIBRARIES if name == "auto" else (name,):
        try:
            module = importlib.import_module(candidate)
        except ImportError:
            continue
        # the client logs every IB error it also hands to us (e.g. "no data" for each holiday); with
        # no handler configured, logging's last resort would print them all: hdi_lab reports them
        logger = logging.getLogger(candidate)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
        return module
    extra = "ib-insync" if name == "ib_insync" else "ib"
    raise MissingDependency("ib_insync" if name == "ib_insync" else "ib_async", extra)


class IbConnection:
    """One API connection on a private event loop; use as a context manager.

    ``call(fn)`` runs the coroutine ``fn(ib)`` on the loop and returns its result. Errors that IB
    reports for the request in flight (requests are sent one at a time) and a lost connection end
    the wait at once instead of waiting for the timeout.
    """

    def __init__(self, lib: ModuleType, host: str, port: int, client_id: int, timeout: float) -> None:
        self.lib = lib
        self.host, self.port, self.client_id, self.timeout = host, int(port), int(client_id), float(timeout)
        self.ib: Any = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"hdi-ib-{self.port}", daemon=True)
        self._failure: asyncio.Future[BaseException] | None = None
        self.errors: list[tuple[int, int, str]] = []  # (reqId, code, message) of every IB error/notice

    @property
    def connected(self) -> bool:
        return self._thread.is_alive() and self.ib is not None and bool(self.ib.isConnected())

    # -- lifecycle ---------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def __enter__(self) -> Self:
        self._thread.start()
        try:
            self._submit(self._connect(), self.timeout + 5)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _connect(self) -> None:
        ib = self.lib.IB()
        ib.RaiseRequestErrors = True
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnect
        self.ib = ib
        # TWS answers a client id in use with error 326 and closes the connection, which the client library
        # notices only when its handshake times out: the error ends the wait at once
        self._failure = refused = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(
            ib.connectAsync(self.host, self.port, clientId=self.client_id, timeout=self.timeout, readonly=True)
        )
        try:
            done, _ = await asyncio.wait({task, refused}, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                raise refused.result()
            task.result()
        except (TimeoutError, OSError, ConnectionError) as exc:
            raise IbDisconnected(
                f"cannot connect to TWS / IB Gateway at {self.host}:{self.port} "
                f"(client id {self.client_id}): {type(exc).__name__} {exc}".rstrip()
            ) from exc
        finally:
            self._failure = None
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _disconnect(self) -> None:
        if self.ib is not None:
            self.ib.errorEvent -= self._on_error
            self.ib.disconnectedEvent -= self._on_disconnect
            if self.ib.isConnected():
                self.ib.disconnect()
            for _ in range(3):  # let the transport finish closing on this loop
                await asyncio.sleep(0)

    def close(self) -> None:
        """Disconnect, stop the loop and join its thread (idempotent)."""
        if self._thread.is_alive():
            try:
                self._submit(self._disconnect(), 5)
            except BaseException:
                log.debug("IB disconnect failed", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        elif not self._loop.is_closed() and not self._thread.ident:
            self._loop.close()

    # -- events ------------------------------------------------------------------------------
    def _on_error(self, req_id: int, code: int, message: str, *rest: object) -> None:
        self.errors.append((int(req_id), int(code), str(message)))
        if code == CLIENT_ID_IN_USE and self._failure is not None and not self._failure.done():
            self._failure.set_result(
                IbClientIdInUse(
                    f"TWS / IB Gateway at {self.host}:{self.port} refused client id {self.client_id}: another "
                    f"connection uses it (IB error {code}: {message})"
                )
            )
            return
        informational = code in (2104, 2106, 2107, 2108, 2158, 2119) or 2100 <= code < 2200
        if req_id > 0 and not informational and self._failure is not None and not self._failure.done():
            self._failure.set_result(IbApiError(int(code), str(message), int(req_id)))

    def _on_disconnect(self) -> None:
        if self._failure is not None and not self._failure.done():
            self._failure.set_result(IbDisconnected(f"the connection to {self.host}:{self.port} was lost"))

    # -- calls -------------------------------------------------------------------------------
    def _submit(self, coro: Awaitable[T], timeout: float) -> T:
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def call(self, fn: Callable[[Any], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``fn(ib)`` on the loop; IB errors for it raise IbApiError, a lost link IbDisconnected."""
        limit = self.timeout if timeout is None else timeout
        return self._submit(self._guarded(fn, limit), limit + 5)

    async def _guarded(self, fn: Callable[[Any], Awaitable[T]], limit: float) -> T:
        if self.ib is None or not self.ib.isConnected():
            raise IbDisconnected(f"not connected to {self.host}:{self.port}")
        loop = asyncio.get_running_loop()
        self._failure = failure = loop.create_future()
        task = asyncio.ensure_future(fn(self.ib))
        try:
            done, _ = await asyncio.wait({task, failure}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                try:
                    return task.result()
                except self.lib.RequestError as exc:
                    raise IbApiError(int(exc.code), str(exc.message), int(exc.reqId)) from None
                except ConnectionError as exc:
                    raise IbDisconnected(f"the connection to {self.host}:{self.port} was lost: {exc}") from None
            if failure in done:
                raise failure.result()
            raise TimeoutError(f"IB did not answer within {limit:g} s")
        finally:
            self._failure = None
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
