"""Interactive Brokers live bars, each put into a :class:`~hdi_lab.providers.live.LiveBuffer` once it is final:

* ``ohlcv-5s``: IB's real-time 5-second bars, ``reqRealTimeBars(contract, 5, whatToShow, useRTH=False)`` per
  contract. A real-time bar is final when delivered: each is put as it arrives.
* ``ohlcv-1m``: keep-up-to-date 1-minute bars, ``reqHistoricalData(keepUpToDate=True)`` per contract. A bar is
  put once closed: when the next bar begins (IB's update carries a new bar) or when its end time has passed on
  the clock of IB's server (checked at every update and about once a second while connected).

Bars are converted by :func:`hdi_lab.providers.ib.provider.bar_records` (the one conversion of IB bars: the
historical path's), so a bar stored live and again by a historical IB ingest of the same span is one row with the
same key. A contract's symbol mappings (the text asked for and the qualified contract, as the historical path
stores them) are put before its first bar.

The feed uses an :class:`~hdi_lab.providers.ib.provider.IbProvider`'s one connection (client id ``ib_client_id``)
and its pacing planner: each subscription is one paced request (IB counts real-time bar requests against the
historical-data pacing limits too). TWS sends no heartbeats: a dead link is the connection closing. On
:meth:`IbFeed.connect` after a loss (or with a replay ``start``):

* 1-minute bars are subscribed again with a ``durationStr`` reaching back to the last bar the session stored (at
  most IB's one day of 1-minute bars): the missed minutes arrive as the request's historical answer;
* real-time bars have no replay: the subscription is made first and its bars held back, then the 5-second bars
  since the last one put (or since ``start``) up to the last one complete on IB's clock are fetched by
  :meth:`~hdi_lab.providers.ib.provider.IbProvider.history` (``barSizeSetting="5 secs"``, paced requests of at
  most IB's 3600 S each: the historical path's requests), reaching back at most :data:`BACKFILL_MAX_S`; then the
  held real-time bars after them are put, and the next ones as they arrive.

Bars the feed put before a loss are not put again; what a new session replays over stored bars is recognised by
the live core (:mod:`hdi_lab.core.live`) and the tables' keys.

Single contracts only (``CONTFUT`` is refused: its front contract changes within a subscription). IB has no
real-time bars of BID_ASK (its ``whatToShow`` there: TRADES, MIDPOINT, BID, ASK): ``IB.BID_ASK`` streams
``ohlcv-1m`` only.
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

__all__ = ["BACKFILL_MAX_S", "LIVE_SCHEMAS", "IbFeed"]

log = logging.getLogger(__name__)

#: what the IB live feed streams
LIVE_SCHEMAS: tuple[Schema, ...] = (Schema.OHLCV_5S, Schema.OHLCV_1M)
#: the longest gap of 5-second bars a (re)connection backfills: a day, 24 paced requests of 3600 S
BACKFILL_MAX_S = 86_400
_FIRST_S = 120  # a first 1-minute subscription without a replay start: the last two minutes
_REALTIME_WHAT = ("TRADES", "MIDPOINT")  # the datasets' whatToShow that IB streams as real-time bars
_NS = 1_000_000_000


class _Subscription:
    """One contract's bars of one schema: what was put so far."""

    def __init__(self, spec: ContractSpec, inst: IbInstrument, schema: Schema) -> None:
        self.spec, self.inst, self.schema = spec, inst, schema
        self.bars: Any = None  # the client's BarDataList (1m) or RealTimeBarList (5s)
        self.put_until = -1  # ts_event (ns) of the last bar put
        self.ready = False  # real-time bars: put as they arrive (after the backfill)
        self.cancelled = False  # a subscription given up (closed, or its connection attempt failed): puts nothing


class IbFeed:
    """One live session's bars from TWS / IB Gateway (see the module docstring)."""

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
                f"{' and/or '.join(map(str, LIVE_SCHEMAS))} (IB's real-time 5-second bars, keep-up-to-date "
                "1-minute bars)"
            )
        self.what = DATASETS[self.dataset]
        if Schema.OHLCV_5S in schemas and self.what not in _REALTIME_WHAT:
            raise ValidationError(
                f"dataset={self.dataset} has no real-time bars: IB streams 5-second bars of TRADES and MIDPOINT "
                "only; use dataset IB or IB.MIDPOINT for ohlcv-5s (IB.BID_ASK streams ohlcv-1m)"
            )
        self.specs = [parse_contract(s) for s in symbols]
        cont = [s.text for s in self.specs if s.continuous]
        if cont:
            raise ValidationError(
                f"{', '.join(cont)}: the ib live feed streams single contracts, not CONTFUT: name the future, "
                "e.g. ES:FUT:CME:USD:202403"
            )
        self.schemas = tuple(dict.fromkeys(schemas))
        self.publisher_id = PUBLISHERS[self.dataset]
        self.buffer = buffer
        self.provider = provider or IbProvider(settings)
        self.items = 0  # items put into the buffer
        self.metadata_start: int | None = None
        #: whether a reconnection sends again what was received (Databento's intraday replay): no, the feed
        #: resumes after the last bar it put, per contract and schema
        self.replays = False
        self._conn: IbConnection | None = None
        self._subs: list[_Subscription] = []
        self._mapped: set[str] = set()  # contracts whose symbol mappings were put
        self._lock = threading.Lock()
        self._checked = 0.0
        self._errors_seen = 0  # of the connection's IB errors, those already looked at
        self._offset_ns = 0  # IB's clock minus this machine's (reqCurrentTime at each connect)

    def __repr__(self) -> str:
        schemas, contracts = [str(s) for s in self.schemas], [s.text for s in self.specs]
        return f"IbFeed(dataset={self.dataset!r}, schemas={schemas}, contracts={contracts})"

    # -- the client's events (its event-loop thread) ------------------------------------------------

    def _now_ns(self) -> int:
        """Now on IB's clock: the wall clock set by the server's time at the connection."""
        return time.time_ns() + self._offset_ns

    def _put(self, item: Any) -> None:
        if self.buffer.put(item):
            self.items += 1

    def _put_bars(self, sub: _Subscription, rec: Any) -> None:
        """Put ``rec`` (bars of ``sub`` in time order) after the last one put, the contract's mappings first."""
        rec = rec[rec["ts_event"] > sub.put_until] if sub.put_until >= 0 else rec
        if not len(rec):
            return
        if sub.spec.text not in self._mapped:
            d0 = pd.Timestamp(int(rec["ts_event"][0]), tz="UTC").date()
            for text in dict.fromkeys((sub.spec.text, sub.inst.text)):
                self._put((None, Mapping(str(sub.spec.stype), text, d0, d0 + dt.timedelta(days=1), sub.inst.con_id)))
            self._mapped.add(sub.spec.text)
        for i in range(len(rec)):
            self._put((sub.schema, rec[i : i + 1].tobytes()))
        sub.put_until = int(rec["ts_event"][-1])

    def _convert(self, sub: _Subscription, bars: Any) -> Any:
        return bar_records(bars, sub.schema, self.publisher_id, sub.inst.con_id, self.what, 0, INT64_MAX)

    def _emit(self, sub: _Subscription, *, now_ns: int) -> None:
        """Put the subscription's bars that became final since the last call."""
        with self._lock:
            if sub.cancelled:
                return
            if sub.schema is Schema.OHLCV_5S:  # each real-time bar is final: those received since the last call
                if not sub.ready or sub.bars is None:
                    return
                n = len(sub.bars)
                new = sub.bars[:n]
                del sub.bars[:n]  # the client appends to this list for the whole session: keep it short
                self._put_bars(sub, self._convert(sub, new))
                return
            bars = list(sub.bars or ())
            if not bars:
                return
            rec = self._convert(sub, bars)
            if len(rec) and int(rec["ts_event"][-1]) + sub.schema.bar_seconds * _NS > now_ns:
                rec = rec[:-1]  # the forming bar: closed when the next begins or its end passes
            self._put_bars(sub, rec)

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
        """Connect (the provider's connection), qualify the contracts, subscribe each one's bars of each schema and
        fill what the subscriptions do not replay, reaching back to ``starts`` (a replay or what was missed while
        disconnected): see the module docstring.

        Raises UnavailableError when TWS / IB Gateway cannot be reached or drops the connection, ValidationError
        for an unknown contract, ProviderError when IB refuses a subscription or a backfill request."""
        conn = self.provider.connection()
        try:
            server = conn.call(lambda ib: ib.reqCurrentTimeAsync())
        except (IbApiError, IbDisconnected) as exc:
            raise UnavailableError(f"IB did not tell its time ({exc})", provider="ib") from exc
        self._offset_ns = pd.Timestamp(server).tz_convert("UTC").value - time.time_ns()
        self._errors_seen = len(conn.errors)
        now = pd.Timestamp(self._now_ns(), tz="UTC")
        previous = {(s.spec.text, s.schema): s.put_until for s in self._subs}
        subs: list[_Subscription] = []
        try:
            for spec in self.specs:
                inst = self.provider.resolve(spec)[0]
                for schema in self.schemas:
                    sub = _Subscription(spec, inst, schema)
                    sub.put_until = previous.get((spec.text, schema), -1)
                    if schema is Schema.OHLCV_5S:
                        self._subscribe_realtime(conn, sub, now)
                    else:
                        self._subscribe_keep_up(conn, sub, starts.get(schema), now)
                    subs.append(sub)
            for sub in subs:
                if sub.schema is Schema.OHLCV_5S:
                    self._backfill(sub, starts.get(sub.schema))
        except IbDisconnected as exc:
            self._cancel(conn, subs)
            raise UnavailableError(f"IB connection lost while subscribing live bars ({exc})", provider="ib") from exc
        except BaseException:
            self._cancel(conn, subs)
            raise
        self._conn, self._subs = conn, subs
        for sub in subs:
            self._emit(sub, now_ns=self._now_ns())

    def _subscribe_keep_up(self, conn: IbConnection, sub: _Subscription, start: int | None, now: pd.Timestamp) -> None:
        """Keep-up-to-date 1-minute bars reaching back to ``start`` (else two minutes), at most a day."""
        seconds = _FIRST_S if start is None else max((now.value - int(start)) / 1e9 + 60, 60)
        seconds = min(seconds, MAX_SECONDS[sub.schema])
        duration = duration_string(seconds, sub.schema)
        contract = sub.inst.ib_contract(self.provider.lib)
        req = HistRequest(str(sub.inst.con_id), sub.inst.exchange, self.what, BAR_SIZES[sub.schema], now, duration)
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

        sub.bars = self._paced_call(conn, sub, req, call)

    def _subscribe_realtime(self, conn: IbConnection, sub: _Subscription, now: pd.Timestamp) -> None:
        """Real-time 5-second bars, held back until :meth:`_backfill` made the subscription ready."""
        contract = sub.inst.ib_contract(self.provider.lib)
        # no two real-time requests are identical (each starts a stream now): the identity carries the time
        req = HistRequest(str(sub.inst.con_id), sub.inst.exchange, self.what, "realtime", now, "")
        handler = self._on_update(sub)

        async def call(ib: Any) -> Any:
            bars = ib.reqRealTimeBars(contract, 5, self.what, False)
            bars.updateEvent += handler
            return bars

        sub.bars = self._paced_call(conn, sub, req, call)

    def _paced_call(self, conn: IbConnection, sub: _Subscription, req: HistRequest, call: Any) -> Any:
        self.provider.pacer.acquire(req)
        try:
            return conn.call(call)
        except IbApiError as exc:
            raise ProviderError(
                f"IB refused live {sub.schema} bars for {sub.spec.text} (error {exc.code}: {exc.message})",
                provider="ib",
                status=exc.code,
            ) from None
        finally:
            self.provider.pacer.release()

    def _backfill(self, sub: _Subscription, start: int | None) -> None:
        """Put the 5-second bars since the last one put (else since ``start``; none without either) up to the
        last complete one on IB's clock, from paced historical requests; then make the subscription ready (the
        real-time bars held back meanwhile are put after them)."""
        step = sub.schema.bar_seconds * _NS
        since = sub.put_until + step if sub.put_until >= 0 else start
        rec = None
        if since is not None:
            lo, hi = -(-int(since) // step) * step, self._now_ns() // step * step
            if hi - lo > BACKFILL_MAX_S * _NS:
                lo = hi - BACKFILL_MAX_S * _NS
                self._put(
                    (
                        None,
                        Note(
                            f"{sub.spec.text}: its 5-second bars before {pd.Timestamp(lo, tz='UTC')} were not "
                            f"backfilled (at most {BACKFILL_MAX_S // 3600} h back): ingest them with --provider ib "
                            "--schema ohlcv-5s",
                            error=True,
                        ),
                    )
                )
            if lo < hi:
                rec = self.provider.history(
                    sub.inst, sub.schema, self.dataset, pd.Timestamp(lo, tz="UTC"), pd.Timestamp(hi, tz="UTC")
                )
        with self._lock:
            if rec is not None:
                self._put_bars(sub, rec)
            sub.ready = True

    def _cancel(
        self, conn: IbConnection, subs: Sequence[_Subscription], timeout: float = 10.0, *, send: bool = True
    ) -> str | None:
        """Give the subscriptions up (they put nothing more) and, with ``send`` while connected, cancel them at IB;
        returns the first failure's text. Raises nothing."""
        why = None
        with self._lock:
            for sub in subs:
                sub.cancelled = True
        if not send or not conn.connected:
            return None
        for sub in subs:
            if sub.bars is None:
                continue

            async def cancel(ib: Any, s: _Subscription = sub) -> None:
                if s.schema is Schema.OHLCV_5S:
                    ib.cancelRealTimeBars(s.bars)
                else:
                    ib.cancelHistoricalData(s.bars)

            try:
                conn.call(cancel, timeout=timeout)
            except Exception as exc:  # noqa: BLE001  (closing: the reason is reported)
                why = why or str(exc)
        return why

    def connected(self) -> bool:
        """Whether the connection is up (about once a second, bars whose end time passed are put and IB's errors
        about the subscriptions noted)."""
        conn = self._conn
        if conn is None or not conn.connected:
            return False
        if time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            self._note_errors(conn)

            async def check(ib: Any) -> None:
                for sub in self._subs:
                    self._emit(sub, now_ns=self._now_ns())

            try:
                conn.call(check, timeout=5)
            except (IbDisconnected, TimeoutError):
                return False
        return True

    def _note_errors(self, conn: IbConnection) -> None:
        """IB's errors about a subscription after it was made (a real-time request answers at once, its refusal
        comes later), as notes of the session."""
        n = len(conn.errors)
        errors, self._errors_seen = conn.errors[self._errors_seen : n], n
        ids = {getattr(s.bars, "reqId", None): s for s in self._subs}
        for req_id, code, message in errors:
            sub = ids.get(req_id)
            if sub is not None and not 2100 <= code < 2200:
                text = f"IB error {code} for the {sub.schema} bars of {sub.spec.text}: {message}"
                self._put((None, Note(text, error=True)))

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
        failed = self._cancel(conn, self._subs, timeout, send=not abort)
        self.provider.close()
        return why or failed

    def shutdown(self) -> None:
        """Close the connection. Raises nothing."""
        self.close()
