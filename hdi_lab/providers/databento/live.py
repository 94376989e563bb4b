"""Databento Live through the official client (``databento.Live``): one connection at a time, its records put
into a :class:`~hdi_lab.providers.live.LiveBuffer` as DBN bytes.

Each :meth:`DatabentoFeed.connect` makes a new client on the feed's own event loop (a thread of its own: a slow
writer that makes the callback wait blocks this feed only, never another client's loop), subscribes every schema
(with ``start=`` for intraday replay) and starts the session. The client's own reconnection is off: the live core
reconnects itself, replaying from what it stored (:mod:`hdi_lab.core.live`).

The gateway is the dataset's (``glbx-mdp3.lsg.databento.com:13000``) unless ``databento_live_gateway`` names
another (``host`` or ``host:port``), as the tests' fake gateway does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import databento as db
import databento_dbn as dbn_lib

from hdi_lab.config import Settings
from hdi_lab.dbn.live import live_mapping
from hdi_lab.dbn.writer import NOT_IN_DBN, RTYPES
from hdi_lab.errors import AuthError, ConfigError, UnavailableError
from hdi_lab.providers.live import LiveBuffer, Note
from hdi_lab.schemas import Schema

__all__ = ["DEFAULT_PORT", "DatabentoFeed", "gateway_of"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 13000
_CLASSES: dict[Any, Schema] = {
    dbn_lib.TradeMsg: Schema.TRADES,
    dbn_lib.MBP1Msg: Schema.TBBO,
    dbn_lib.StatMsg: Schema.STATISTICS,
    dbn_lib.InstrumentDefMsg: Schema.DEFINITION,
}
_BARS = {RTYPES[s]: s for s in Schema if s.is_bar and s not in NOT_IN_DBN}


def gateway_of(settings: Settings) -> tuple[str | None, int]:
    """(host, port) of the live gateway: ``databento_live_gateway`` if set (None: the dataset's own).

    Raises ConfigError for a port that is not a number."""
    raw = settings.databento_live_gateway
    if not raw:
        return None, DEFAULT_PORT
    host, _, port = str(raw).strip().rpartition(":") if ":" in str(raw) else (str(raw).strip(), "", "")
    try:
        return host, int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ConfigError(
            f"databento_live_gateway={raw!r} is not host or host:port: set HDI_DATABENTO_LIVE_GATEWAY to e.g. "
            "glbx-mdp3.lsg.databento.com:13000 (or unset it for the dataset's gateway)"
        ) from None


class DatabentoFeed:
    """One live session's connection to Databento's live gateway (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        buffer: LiveBuffer,
        *,
        dataset: str,
        schemas: Sequence[Schema],
        symbols: Sequence[str],
        stype_in: str,
        heartbeat_interval_s: int = 10,
    ) -> None:
        key = settings.databento_api_key
        if not key:
            raise ConfigError(
                "databento_api_key is not set: export HDI_DATABENTO_API_KEY (or DATABENTO_API_KEY) "
                "or set databento_api_key in hdi_lab.toml"
            )
        self._key = str(key)
        self.host, self.port = gateway_of(settings)
        self.buffer = buffer
        self.dataset, self.schemas, self.symbols, self.stype_in = dataset, tuple(schemas), list(symbols), stype_in
        self.heartbeat_interval_s = heartbeat_interval_s
        self._wanted = set(self.schemas)
        self._client: db.Live | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hdi-live-databento", daemon=True)
        self._thread.start()
        self.last_message = time.monotonic()
        self.items = 0  # items put into the buffer (by the client's thread)
        self.metadata_start: int | None = None  # the first connection's session start (ns)
        #: a reconnection replays from the last ts_event stored: records received before come again
        self.replays = True

    def __repr__(self) -> str:
        return f"DatabentoFeed(dataset={self.dataset!r}, gateway={self.host or 'default'}:{self.port})"

    # -- the client's callbacks (its event-loop thread) -----------------------------------------

    def _on_record(self, rec: Any) -> None:
        self.last_message = time.monotonic()
        schema = _CLASSES.get(type(rec))
        if schema is None and type(rec) is dbn_lib.OHLCVMsg:
            raw = bytes(rec)
            schema = _BARS.get(raw[1])
            if schema in self._wanted:
                self._put((schema, raw))
            return
        if schema is not None:
            if schema in self._wanted:
                self._put((schema, bytes(rec)))
            return
        kind = type(rec)
        if kind is dbn_lib.SymbolMappingMsg:
            mapping = live_mapping(
                self.stype_in, rec.stype_in_symbol, rec.instrument_id, rec.start_ts, rec.end_ts, rec.ts_event
            )
            self._put((None, mapping))
        elif kind is dbn_lib.ErrorMsg:
            self._put((None, Note(f"gateway error: {rec.err}", error=True)))
        elif kind is dbn_lib.SystemMsg and not rec.is_heartbeat():
            self._put((None, Note(f"gateway: {rec.msg}")))
        if self.metadata_start is None and self._client is not None and self._client.metadata is not None:
            self.metadata_start = int(self._client.metadata.start)

    def _put(self, item: Any) -> None:
        if self.buffer.put(item):
            self.items += 1
        self.last_message = time.monotonic()  # after a wait for room: the gateway was not silent

    def _on_error(self, exc: Exception) -> None:
        log.error("live callback failed: %s", exc)

    # -- the connection ----------------------------------------------------------------------------

    def connect(self, starts: Mapping[Schema, int | None]) -> None:
        """Connect, authenticate, subscribe every schema (``starts``: intraday replay from that ns) and start.

        Raises AuthError when the gateway refuses the key, UnavailableError when it cannot be reached or
        refuses the subscription."""
        client = db.Live(
            key=self._key,
            gateway=self.host,
            port=self.port,
            heartbeat_interval_s=self.heartbeat_interval_s,
            loop=self._loop,
        )
        client.add_callback(self._on_record, self._on_error)
        where = f"{self.host or self.dataset.lower().replace('.', '-') + '.lsg.databento.com'}:{self.port}"
        try:
            for schema in self.schemas:
                client.subscribe(
                    self.dataset, str(schema), self.symbols, stype_in=self.stype_in, start=starts.get(schema)
                )
            self.last_message = time.monotonic()
            client.start()
        except db.BentoError as exc:
            self._discard(client)
            text = str(exc).strip() or type(exc).__name__
            if "auth" in text.lower():
                raise AuthError(
                    f"the Databento live gateway {where} refused the API key ({text}): check HDI_DATABENTO_API_KEY",
                    provider="databento",
                ) from exc
            raise UnavailableError(
                f"cannot stream from the Databento live gateway {where} ({text}): check the network and "
                "databento_live_gateway",
                provider="databento",
            ) from exc
        except ValueError as exc:
            self._discard(client)
            raise UnavailableError(f"the Databento live gateway {where} refused the session ({exc})") from exc
        self._client = client

    def _discard(self, client: db.Live) -> None:
        with contextlib.suppress(Exception):
            client.terminate()
        with contextlib.suppress(Exception):
            client.block_for_close(timeout=5)

    def connected(self) -> bool:
        """Whether the current connection is up."""
        return self._client is not None and self._client.is_connected()

    def silent_for(self) -> float:
        """Seconds since the gateway last sent anything (a record, a heartbeat)."""
        return time.monotonic() - self.last_message

    def close(self, *, abort: bool = False, timeout: float = 10.0) -> str | None:
        """End the current connection: gracefully (what the client received is delivered first) or, with
        ``abort``, at once; returns why it ended (None: closed cleanly). Raises nothing."""
        client, self._client = self._client, None
        if client is None:
            return None
        try:
            if abort:
                client.terminate()
            elif client.is_connected():
                client.stop()
            client.block_for_close(timeout=timeout)
        except Exception as exc:  # noqa: BLE001  (BentoError and what the client wraps: the reason is reported)
            return str(exc).strip() or type(exc).__name__
        return None

    def shutdown(self) -> None:
        """Close the connection and stop the feed's event loop. Raises nothing."""
        self.close()

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()
