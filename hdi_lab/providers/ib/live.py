"""Interactive Brokers live 1-minute bars: ``reqHistoricalData(keepUpToDate=True)`` per contract, each bar put into
a :class:`~hdi_lab.providers.live.LiveBuffer` once it is closed.

A bar is closed when the next bar begins (IB's update carries a new bar) or when its end time has passed on the
clock of IB's server (checked at every update and about once a second while connected). Closed bars are converted by
:func:`hdi_lab.providers.ib.provider.bar_records` (the one conversion of IB bars: the historical path's), so a bar
stored live and again by a historical IB ingest of the same minute is one row with the same key. A contract's
symbol mappings (the text asked for and the qualified contract, as the historical path stores them) are put
before its first bar.

The feed uses an :class:`~hdi_lab.providers.ib.provider.IbProvider`'s one connection (client id ``ib_client_id``)
and its pacing planner: each subscription is one paced historical request. TWS sends no heartbeats: a dead link
is the connection closing. On :meth:`IbFeed.connect` after a loss, each contract is subscribed again with a
``durationStr`` reaching back to the last bar the session stored (at most IB's one day of 1-minute bars): the
missed minutes arrive as the request's historical answer, converted the same way, and those already stored are
recognised by the live core (:mod:`hdi_lab.core.live`).

Only ``ohlcv-1m`` (1-minute bars; IB also keeps 1-hour bars up to date, not offered here) of single contracts
(``CONTFUT`` is refused: its front contract changes within a subscription). IB's 5-second ``reqRealTimeBars`` are
not stored: there is no 5-second table.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping as MappingType
from collections.abc import Sequence
from typing import Any

import pandas as pd

from hdi_lab.config import Settings
from hdi_lab.dbn import INT64_MAX, Mapping
from hdi_lab.errors import ProviderError, UnavailableError, ValidationError
from hdi_lab.providers.ib.client import IbApiError, IbConnection, IbDisconnected
from hdi_lab.providers.ib.contracts import ContractSpec, IbInstrument, parse_contract
from hdi_lab.providers.ib.pacing import BAR_SIZES, MAX_SECONDS, HistRequest, duration_string
from hdi_lab.providers.ib.provider import DATASETS, PUBLISHERS, IbProvider, bar_records, validate_dataset
from hdi_lab.providers.live import LiveBuffer, Note
from hdi_lab.schemas import Schema

__all__ = ["LIVE_SCHEMAS", "IbFeed"]

log = logging.getLogger(__name__)

#: what the IB live feed streams
LIVE_SCHEMAS: tuple[Schema, ...] = (Schema.OHLCV_1M,)
_FIRST_S = 120  # a first subscription without a replay start: the last two minutes


class _Subscription:
    """One contract's keep-up-to-date bars: what was put so far."""

    def __init__(self, spec: ContractSpec, inst: IbInstrument) -> None:
        self.spec, self.inst = spec, inst
        self.bars: Any = None  # the client's BarDataList
        self.put_until = -1  # ts_event (ns) of the last bar put
        self.mapped = False


class IbFeed:
    """One live session's keep-up-to-date 1-minute bars from TWS / IB Gateway (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        buffer: LiveBuffer,
        *,
        dataset: str,
        schemas: Sequence[Schema],
        symbols: Sequence[str],
        provider: IbProvider | None = None,
    ) -> None:
        """Raises ValidationError for a dataset, schema or contract the IB live feed does not stream."""
        self.dataset = validate_dataset(dataset)
        bad = [s for s in schemas if s not in LIVE_SCHEMAS]
        if bad or not schemas:
            raise ValidationError(
                f"schema={','.join(map(str, schemas))} is not streamed by the ib live feed: use "
                f"{', '.join(map(str, LIVE_SCHEMAS))} (IB's 5-second real-time bars have no table)"
            )
        self.specs = [parse_contract(s) for s in symbols]
        cont = [s.text for s in self.specs if s.continuous]
        if cont:
            raise ValidationError(
                f"{', '.join(cont)}: the ib live feed streams single contracts, not CONTFUT: name the future, "
                "e.g. ES:FUT:CME:USD:202403"
            )
        self.schema = Schema.OHLCV_1M
        self.what = DATASETS[self.dataset]
        self.publisher_id = PUBLISHERS[self.dataset]
        self.buffer = buffer
        self.provider = provider or IbProvider(settings)
        self.items = 0  # items put into the buffer
        self.metadata_start: int | None = None
        self._conn: IbConnection | None = None
        self._subs: list[_Subscription] = []
        self._lock = threading.Lock()
        self._checked = 0.0
        self._offset_ns = 0  # IB's clock minus this machine's (reqCurrentTime at each connect)

    def __repr__(self) -> str:
        return f"IbFeed(dataset={self.dataset!r}, contracts={[s.text for s in self.specs]})"

    # -- the client's events (its event-loop thread) ------------------------------------------------

    def _now_ns(self) -> int:
        """Now on IB's clock: the wall clock set by the server's time at the connection."""
        return time.time_ns() + self._offset_ns

    def _put(self, item: Any) -> None:
        if self.buffer.put(item):
            self.items += 1

    def _emit(self, sub: _Subscription, *, now_ns: int) -> None:
        """Put the subscription's bars that closed since the last call."""
        with self._lock:
            bars = list(sub.bars or ())
            if not bars:
                return
            step = self.schema.bar_seconds * 1_000_000_000
            rec = bar_records(
                bars, self.schema, self.publisher_id, sub.inst.con_id, self.what, sub.put_until + 1, INT64_MAX
            )
            if not len(rec):
                return
            last = int(rec["ts_event"][-1])
            if last + step > now_ns:  # the forming bar: closed when the next begins or its end passes
                rec = rec[:-1]
            if not len(rec):
                return
            if not sub.mapped:
                d0 = pd.Timestamp(int(rec["ts_event"][0]), tz="UTC").date()
                for text in dict.fromkeys((sub.spec.text, sub.inst.text)):
                    self._put(
                        (None, Mapping(str(sub.spec.stype), text, d0, d0 + dt.timedelta(days=1), sub.inst.con_id))
                    )
                sub.mapped = True
            for i in range(len(rec)):
                self._put((self.schema, rec[i : i + 1].tobytes()))
            sub.put_until = int(rec["ts_event"][-1])

    def _on_update(self, sub: _Subscription) -> Any:
        def handler(bars: Any, has_new_bar: bool) -> None:
            try:
                self._emit(sub, now_ns=self._now_ns())
            except Exception as exc:  # a callback must not break the client's loop: reported
                log.exception("IB live bars of %s", sub.spec.text)
                self._put((None, Note(f"IB bars of {sub.spec.text} could not be converted: {exc}", error=True)))

        return handler

    # -- the connection ----------------------------------------------------------------------------

    def connect(self, starts: MappingType[Schema, int | None]) -> None:
        """Connect (the provider's connection), qualify the contracts and subscribe each one's keep-up-to-date
        bars, reaching back to ``starts`` (a replay or the minutes missed while disconnected).

        Raises UnavailableError when TWS / IB Gateway cannot be reached or drops the connection, ValidationError
        for an unknown contract, ProviderError when IB refuses the subscription."""
        conn = self.provider.connection()
        start = starts.get(self.schema)
        try:
            server = conn.call(lambda ib: ib.reqCurrentTimeAsync())
        except (IbApiError, IbDisconnected) as exc:
            raise UnavailableError(f"IB did not tell its time ({exc})", provider="ib") from exc
        self._offset_ns = pd.Timestamp(server).tz_convert("UTC").value - time.time_ns()
        now = pd.Timestamp(self._now_ns(), tz="UTC")
        seconds = _FIRST_S if start is None else max((now.value - int(start)) / 1e9 + 60, 60)
        seconds = min(seconds, MAX_SECONDS[self.schema])
        duration = duration_string(seconds, self.schema)
        previous = {s.spec.text: s.put_until for s in self._subs}
        subs = []
        try:
            for spec in self.specs:
                inst = self.provider.resolve(spec)[0]
                sub = _Subscription(spec, inst)
                sub.put_until = previous.get(spec.text, -1)
                sub.mapped = spec.text in previous
                self._subscribe(conn, sub, duration, now)
                subs.append(sub)
        except IbDisconnected as exc:
            raise UnavailableError(f"IB connection lost while subscribing live bars ({exc})", provider="ib") from exc
        self._conn, self._subs = conn, subs
        for sub in subs:
            self._emit(sub, now_ns=self._now_ns())

    def _subscribe(self, conn: IbConnection, sub: _Subscription, duration: str, now: pd.Timestamp) -> None:
        contract = sub.inst.ib_contract(self.provider.lib)
        req = HistRequest(str(sub.inst.con_id), sub.inst.exchange, self.what, BAR_SIZES[self.schema], now, duration)
        handler = self._on_update(sub)

        async def call(ib: Any) -> Any:
            bars = await ib.reqHistoricalDataAsync(
                contract,
                endDateTime="",
                durationStr=duration,
                barSizeSetting=req.bar_size,
                whatToShow=self.what,
                useRTH=False,
                formatDate=2,
                keepUpToDate=True,
                timeout=0,
            )
            bars.updateEvent += handler
            return bars

        self.provider.pacer.acquire(req)
        try:
            sub.bars = conn.call(call)
        except IbApiError as exc:
            raise ProviderError(
                f"IB refused live bars for {sub.spec.text} (error {exc.code}: {exc.message})",
                provider="ib",
                status=exc.code,
            ) from None
        finally:
            self.provider.pacer.release()

    def connected(self) -> bool:
        """Whether the connection is up (about once a second, bars whose end time passed are put)."""
        conn = self._conn
        if conn is None or not conn.connected:
            return False
        if time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()

            async def check(ib: Any) -> None:
                for sub in self._subs:
                    self._emit(sub, now_ns=self._now_ns())

            try:
                conn.call(check, timeout=5)
            except (IbDisconnected, TimeoutError):
                return False
        return True

    def silent_for(self) -> float:
        """0: TWS sends no heartbeats (a quiet contract sends nothing); a dead link closes the connection."""
        return 0.0

    def close(self, *, abort: bool = False, timeout: float = 10.0) -> str | None:
        """Cancel the subscriptions and close the connection; returns why it ended (None: closed cleanly).
        Raises nothing."""
        conn, self._conn = self._conn, None
        if conn is None:
            return None
        why = None if conn.connected else "TWS / IB Gateway closed the connection"
        if not abort and conn.connected:
            for sub in self._subs:

                async def cancel(ib: Any, bars: Any = sub.bars) -> None:
                    ib.cancelHistoricalData(bars)

                try:
                    conn.call(cancel, timeout=timeout)
                except Exception as exc:  # noqa: BLE001  (closing: the reason is reported)
                    why = why or str(exc)
        self.provider.close()
        return why

    def shutdown(self) -> None:
        """Close the connection. Raises nothing."""
        self.close()
