"""The ``ib`` provider: historical bars from TWS / IB Gateway through ib_async or ib_insync.

Requests name contracts as ``SYMBOL:SECTYPE[:EXCHANGE[:CURRENCY[:EXPIRY]]]`` (see
:mod:`hdi_lab.providers.ib.contracts`). The dataset selects what IB shows:

=================  ===========  ============  =======================================================
dataset            whatToShow   publisher_id  volume column
=================  ===========  ============  =======================================================
``IB`` (default)   TRADES       32000         traded volume (IB's decimal volume, rounded)
``IB.MIDPOINT``    MIDPOINT     32001         0 (IB sends -1: no volume for quotes)
``IB.BID_ASK``     BID_ASK      32002         0; open = time-average bid, high = max ask, low = min
                                              bid, close = time-average ask (IB's definition)
=================  ===========  ============  =======================================================

The plan: one ``definition`` chunk per contract (qualified to conIds by ``reqContractDetails``; a
``CONTFUT`` is the futures chain, expired contracts included, and resolves on each day to its front
contract), then the range of each contract cut into IB's maximum duration per bar size, one chunk per
``reqHistoricalData`` request, contracts interleaved. Chunk keys are stable, so a run stopped by a
disconnect resumes from the last committed chunk. Requests go through a :class:`Pacer` that never
breaks IB's pacing rules; a dry run reports each chunk's earliest start and so the plan's minimum
duration. ``reqHeadTimeStamp`` skips requests that end before a contract's earliest data.

One connection to TWS / IB Gateway serves a provider's fetches (re-opened if lost), one request at a time,
until :meth:`IbProvider.close` (``ingestion.run`` closes the providers it creates; use ``with IbProvider(...)``
otherwise). The client runs on a private event loop (:mod:`hdi_lab.providers.ib.client`), so it works
the same in scripts and in notebooks.

Schemas: ohlcv-1s/5s/1m/1h/1d, requested with barSizeSetting 1 secs / 5 secs / 1 min / 1 hour / 1 day (ohlcv-5s,
IB's 5-second bars, is the one schema only this provider has; its live real-time bars are
:mod:`hdi_lab.providers.ib.live`'s, which backfills their gaps through :meth:`IbProvider.history`).

**On a cluster** (``executor="dask"``) each worker gets a copy of the provider, which the executor hands a
shared :class:`~hdi_lab.providers.base.Ledger` (:meth:`IbProvider.share_ledger`): its requests are paced over
what every worker sent to the gateway (:class:`~hdi_lab.providers.ib.pacing.SharedPacer`), and its connection
uses a client id leased from ``ib_client_id`` .. ``ib_client_id + CLIENT_IDS - 1`` that no other worker holds (an
id TWS still refuses, held by another program, is skipped). A worker that dies frees its lease with its database
connection.

Timestamps: intraday bars are requested with formatDate=2 (epoch seconds, UTC, bar start); daily
bars come as the exchange's trading date and are stored at 00:00 UTC of that date, like Databento's
ohlcv-1d. Prices are decimal-rounded to int64 fixed-point 1e-9. Only all-hours data (useRTH=0).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import weakref
from typing import Any, Self

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from hdi_lab.config import Settings
from hdi_lab.dbn import store_from_bytes
from hdi_lab.dbn.writer import Interval, Records, empty_records, encode_dbn
from hdi_lab.errors import (
    ProviderError,
    RateLimitError,
    UnavailableError,
    ValidationError,
)
from hdi_lab.providers.base import CostEstimate, Fetch, Ledger
from hdi_lab.providers.ib.client import (
    IbApiError,
    IbClientIdInUse,
    IbConnection,
    IbDisconnected,
    load_library,
)
from hdi_lab.providers.ib.contracts import (
    ContractSpec,
    IbInstrument,
    definition_record,
    fixed,
    front_segments,
    parse_contract,
)
from hdi_lab.providers.ib.pacing import (
    BAR_SIZES,
    Clock,
    HistRequest,
    Pacer,
    Rules,
    SharedPacer,
    duration_string,
    schedule,
    split_range,
)
from hdi_lab.schemas import Chunk, IngestRequest, Schema, parse_enum, parse_range

__all__ = [
    "CLIENT_IDS",
    "DATASETS",
    "PACING_BACKOFF_S",
    "PACING_RETRIES",
    "PUBLISHERS",
    "IbProvider",
    "bar_records",
    "fixed_prices",
    "validate_dataset",
]

DATASETS: dict[str, str] = {"IB": "TRADES", "IB.MIDPOINT": "MIDPOINT", "IB.BID_ASK": "BID_ASK"}
PUBLISHERS: dict[str, int] = {"IB": 32000, "IB.MIDPOINT": 32001, "IB.BID_ASK": 32002}
PACING_RETRIES = 3
PACING_BACKOFF_S = 60.0
#: how many client ids, from ``ib_client_id`` on, the workers of a cluster lease their connections from
CLIENT_IDS = 32
log = logging.getLogger(__name__)


def validate_dataset(value: str | None) -> str:
    """The IB dataset ``value`` names (IB when left out), upper-cased.

    Raises ValidationError for any other name."""
    raw = (value or "IB").strip().upper()
    if raw not in DATASETS:
        raise ValidationError(f"dataset={value!r} is not an IB dataset: use IB (TRADES), IB.MIDPOINT or IB.BID_ASK")
    return raw


def _days(lo: pd.Timestamp, hi: pd.Timestamp) -> tuple[dt.date, dt.date]:
    """The dates ``[d0, d1)`` that ``[lo, hi)`` touches."""
    return lo.date(), (hi - pd.Timedelta(1, "ns")).date() + dt.timedelta(days=1)


def _chunk_dbn(
    chunk: Chunk, schema: Schema, spec: ContractSpec, mappings: dict[str, list[Interval]], records: Records
) -> bytes:
    """The DBN bytes of one chunk's records for ``spec``, with its symbol mappings (uncompressed: read at once)."""
    return encode_dbn(
        dataset=chunk.dataset,
        schema=schema,
        stype_in=spec.stype,
        start=chunk.start,
        end=chunk.end,
        symbols=[spec.text],
        mappings=mappings,
        records=records,
        compress=False,
    )


class IbProvider:
    """Interactive Brokers historical bars (see the module docstring)."""

    name = "ib"

    def __init__(self, settings: Settings, *, clock: Clock | None = None, rules: Rules | None = None) -> None:
        self.settings = settings
        self.pacer = Pacer(rules or Rules(margin_s=0.5), clock or Clock())
        self._lib: Any = None
        self._resolved: dict[str, list[IbInstrument]] = {}
        self._heads: dict[tuple[int, str], pd.Timestamp | None] = {}
        self._warnings: dict[str, list[str]] = {}
        self._starts: dict[str, float] = {}
        self.connections = 0  # connections opened (one per run, plus reconnects)
        self._conn: IbConnection | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._ledger: Ledger | None = None
        self._lease: int | None = None  # the client id leased from the ledger for the open connection
        self._refused: list[int] = []  # leased ids TWS refused (used by another program), held until close()
        self._calls = threading.RLock()  # one request at a time on the one connection (a worker runs tasks in threads)

    def __getstate__(self) -> dict[str, Any]:  # a copy for another process: the settings and the pacing rules
        return {"settings": self.settings, "rules": self.pacer.rules, "clock": self.pacer.clock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"], clock=state["clock"], rules=state["rules"])  # type: ignore[misc]

    @property
    def scope(self) -> str:
        """The gateway the provider talks to, as the ledger names it."""
        return f"ib:{self.settings.ib_host}:{self.settings.ib_port}"

    def share_ledger(self, ledger: Ledger) -> None:
        """Pace every request over what every process sharing ``ledger`` sent to this gateway, and connect with a
        client id leased from it (see the module docstring); the connection open now is closed."""
        with self._calls:
            self.close()
            self._ledger = ledger
            self.pacer = SharedPacer(self.pacer.rules, self.pacer.clock, ledger, self.scope)

    @property
    def lib(self) -> Any:
        if self._lib is None:
            self._lib = load_library(getattr(self.settings, "ib_library", "auto"))
        return self._lib

    # -- plan --------------------------------------------------------------------------------
    def plan(self, request: IngestRequest) -> list[Chunk]:
        """A definition chunk per contract, then bar chunks per contract and window of ``[start, end)``
        (each within IB's maximum duration for the bar size), their send times scheduled by the pacing rules.

        Raises ValidationError on a missing or unsupported schema, a bad dataset, no symbols, a bad contract
        or range."""
        if request.schema is None:
            raise ValidationError(
                f"schema is required for the ib provider: use one of {', '.join(s.value for s in BAR_SIZES)}"
            )
        schema = parse_enum(Schema, request.schema, "schema")
        if schema not in BAR_SIZES:
            raise ValidationError(
                f"schema={schema} is not available from the ib provider: use one of "
                f"{', '.join(s.value for s in BAR_SIZES)}"
            )
        dataset = validate_dataset(request.dataset)
        if not request.symbols:
            raise ValidationError(
                "symbols are required for the ib provider: contracts like AAPL:STK:SMART:USD, "
                "ES:FUT:CME:USD:202403, ES:CONTFUT:CME or EUR:CASH:IDEALPRO:USD"
            )
        specs = [parse_contract(s) for s in request.symbols]
        start, end = parse_range(request.start, request.end)
        chunks = [
            dataclasses.replace(self._chunk(dataset, Schema.DEFINITION, spec, start, end), companion=True)
            for spec in specs
        ]
        windows = split_range(start, end, schema)
        bars = [self._chunk(dataset, schema, spec, lo, hi) for lo, hi in windows for spec in specs]
        self._starts = dict(
            zip((c.key for c in bars), schedule([self.request_of(c) for c in bars], self.pacer.rules), strict=True)
        )
        return chunks + bars

    def _chunk(self, dataset: str, schema: Schema, spec: ContractSpec, lo: pd.Timestamp, hi: pd.Timestamp) -> Chunk:
        key = f"ib:{dataset}:{schema}:{spec.text}:{lo.value}:{hi.value}"
        return Chunk(
            key=key,
            provider=self.name,
            dataset=dataset,
            schema=schema,
            stype_in=spec.stype,
            symbols=(spec.text,),
            start=lo,
            end=hi,
        )

    def request_of(self, chunk: Chunk, contract: str | None = None) -> HistRequest:
        """The historical request a bar chunk makes (``contract`` defaults to the contract text)."""
        spec = parse_contract(chunk.symbols[0])
        return HistRequest(
            contract or spec.text,
            spec.exchange,
            DATASETS[chunk.dataset],
            BAR_SIZES[chunk.schema],
            chunk.end,
            duration_string((chunk.end - chunk.start).total_seconds(), chunk.schema),
        )

    def estimate(self, chunk: Chunk) -> CostEstimate:
        """Bars on weekdays in the chunk (an upper bound: holidays and closed hours have none), no
        cost, and the chunk's earliest start under the pacing rules."""
        if chunk.schema is Schema.DEFINITION:
            return CostEstimate(chunk=chunk, records=1, bytes=520, cost_usd=0.0)
        step = chunk.schema.bar_seconds * 1_000_000_000
        first = -(-chunk.start.value // step) * step
        ts = np.arange(first, chunk.end.value, step, dtype=np.int64)
        n = int(np.count_nonzero(pd.DatetimeIndex(ts, tz="UTC").dayofweek < 5)) if len(ts) else 0
        return CostEstimate(chunk=chunk, records=n, bytes=n * 56, cost_usd=0.0, start_s=self._starts.get(chunk.key))

    def check_cost(self, chunks: list[Chunk], allow: bool) -> None:
        """None: IB historical data costs nothing per request (market-data subscriptions aside)."""
        return

    def take_warnings(self, chunk: Chunk) -> list[str]:
        return self._warnings.pop(chunk.key, [])

    # -- fetch -------------------------------------------------------------------------------
    def fetch(self, chunk: Chunk) -> Fetch:
        """Yield the chunk as DBN (definitions or bars) with symbology for its contract text.

        A connection lost mid-chunk is re-opened once and the chunk fetched again (nothing of it
        was stored); a second loss raises UnavailableError and a re-run resumes from here.
        """
        spec = parse_contract(chunk.symbols[0])
        for attempt in (1, 2):
            try:
                with self._calls:
                    conn = self._connection()
                    data = (
                        self._definitions(conn, chunk, spec)
                        if chunk.schema is Schema.DEFINITION
                        else self._bars(conn, chunk, spec)
                    )
                break
            except IbDisconnected as exc:
                self.close()
                if attempt == 2:
                    raise UnavailableError(
                        f"IB connection lost while fetching {chunk.describe()} ({exc}): chunks already stored are "
                        f"kept; check TWS / IB Gateway at {self.settings.ib_host}:{self.settings.ib_port} and re-run "
                        "the same ingest to resume from the last committed chunk",
                        provider=self.name,
                    ) from exc
                log.warning("IB connection lost during %s (%s): reconnecting once", chunk.describe(), exc)
                self._warnings.setdefault(chunk.key, []).append(
                    f"IB connection was lost during {chunk.describe()} and re-opened; the chunk was fetched again"
                )
            except TimeoutError as exc:
                raise UnavailableError(
                    f"IB did not answer for {chunk.describe()} within ib_timeout={self.settings.ib_timeout} s: "
                    "check TWS / IB Gateway (market data farm connected?) or raise HDI_IB_TIMEOUT; re-run to resume",
                    provider=self.name,
                ) from exc
        yield store_from_bytes(data, f"IB {chunk.describe()}")

    def _connection(self) -> IbConnection:
        """The open connection, (re)connecting when needed; it stays open until :meth:`close`."""
        with self._calls:
            if self._conn is not None and self._conn.connected:
                return self._conn
            self.close()
            conn = self._open(self.settings.ib_client_id) if self._ledger is None else self._open_leased(self._ledger)
            self._conn = conn
            self._finalizer = weakref.finalize(self, conn.close)  # a provider dropped without close()
            return conn

    def _open(self, client_id: int, *, leased: bool = False) -> IbConnection:
        """A new connection with ``client_id``.

        Raises UnavailableError when TWS / IB Gateway cannot be reached or refuses the id; IbClientIdInUse when
        ``leased`` and TWS refuses the id (the caller takes another)."""
        s = self.settings
        self.connections += 1
        conn = IbConnection(self.lib, s.ib_host, s.ib_port, client_id, s.ib_timeout)
        try:
            conn.__enter__()
        except IbClientIdInUse:
            if leased:
                raise
            raise UnavailableError(
                f"TWS / IB Gateway at {s.ib_host}:{s.ib_port} refused client id {client_id}: another connection "
                "uses it; set HDI_IB_CLIENT_ID to an id no other program uses, then re-run the same ingest to resume "
                "from the last committed chunk",
                provider=self.name,
            ) from None
        except (IbDisconnected, TimeoutError) as exc:
            raise UnavailableError(
                f"{exc}: start TWS or IB Gateway with the API enabled, or set HDI_IB_HOST / HDI_IB_PORT / "
                "HDI_IB_CLIENT_ID (a client id already in use is refused); chunks already stored are kept: re-run "
                "the same ingest to resume from the last committed chunk",
                provider=self.name,
            ) from exc
        return conn

    def _open_leased(self, ledger: Ledger) -> IbConnection:
        """A new connection with a client id leased from ``ledger``: one no other process holds. An id TWS refuses
        (another program uses it) stays leased, so the other workers skip it too, until :meth:`close`.

        Raises UnavailableError when every id is held or refused, or TWS / IB Gateway cannot be reached;
        StorageError when the ledger fails."""
        first = int(self.settings.ib_client_id)
        while True:
            client_id = ledger.lease(self.scope, range(first, first + CLIENT_IDS))
            if client_id is None:
                raise UnavailableError(
                    f"every IB client id from {first} to {first + CLIENT_IDS - 1} is held by another worker or used "
                    f"by another program ({len(self._refused)} refused by TWS / IB Gateway): run fewer workers or "
                    "set HDI_IB_CLIENT_ID to a free range, then re-run the same ingest to resume",
                    provider=self.name,
                )
            try:
                conn = self._open(client_id, leased=True)
            except IbClientIdInUse:
                log.warning("IB client id %d is used by another program: trying the next one", client_id)
                self._refused.append(client_id)
                continue
            except BaseException:
                ledger.release(self.scope, client_id)
                raise
            self._lease = client_id
            return conn

    @property
    def client_id(self) -> int | None:
        """The client id of the open connection (None when none is open)."""
        return None if self._conn is None else self._conn.client_id

    def close(self) -> None:
        """Close the connection to TWS / IB Gateway (the next fetch opens a new one) and give back its leased
        client id.

        Raises StorageError when the ledger fails giving the lease back (the connection is closed)."""
        conn, self._conn = self._conn, None
        leases = [*self._refused, *([] if self._lease is None else [self._lease])]
        self._lease, self._refused = None, []
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        try:
            if conn is not None:
                conn.close()
        finally:
            if self._ledger is not None:
                for client_id in leases:
                    self._ledger.release(self.scope, client_id)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _definitions(self, conn: IbConnection, chunk: Chunk, spec: ContractSpec) -> bytes:
        insts = self._resolve(conn, spec)
        d0, d1 = _days(chunk.start, chunk.end)
        pub = PUBLISHERS[chunk.dataset]
        mappings: dict[str, list[Interval]] = {}
        if spec.continuous:
            segments = front_segments(insts, d0, d1)
            if not segments:
                raise ValidationError(
                    f"IB lists no {spec.symbol} futures on {spec.exchange} expiring on or after "
                    f"{d0}: no front contract for {spec.text} in [{chunk.start}, {chunk.end})"
                )
            used = list({i.con_id: i for _, _, i in segments}.values())
            mappings[spec.text] = [(a, b, i.con_id) for a, b, i in segments]
        else:
            used = insts
            mappings[spec.text] = [(d0, d1, insts[0].con_id)]
            mappings[insts[0].text] = [(d0, d1, insts[0].con_id)]
        records = np.concatenate([definition_record(i, publisher_id=pub, ts_ns=chunk.start.value) for i in used])
        return _chunk_dbn(chunk, Schema.DEFINITION, spec, mappings, records)

    def _resolve(self, conn: IbConnection, spec: ContractSpec) -> list[IbInstrument]:
        """The qualified contract (a one-item list) or, for CONTFUT, its futures chain."""
        if spec.text in self._resolved:
            return self._resolved[spec.text]
        contract = spec.ib_contract(self.lib)
        try:
            details = conn.call(lambda ib: ib.reqContractDetailsAsync(contract))
        except IbApiError as exc:
            raise self._error(exc, spec.text, "reqContractDetails") from None
        insts = [IbInstrument.from_details(d) for d in details]
        if not insts:
            raise ValidationError(
                f"IB does not know contract {spec.text!r}: check the symbol, security type, "
                "exchange, currency and expiry (e.g. ES:FUT:CME:USD:202403)"
            )
        if not spec.continuous and len(insts) > 1:
            names = ", ".join(sorted(i.local_symbol or i.text for i in insts)[:8])
            raise ValidationError(
                f"IB contract {spec.text!r} is ambiguous ({len(insts)} matches: {names}): "
                "give the exchange, currency or a full YYYYMMDD expiry"
            )
        self._resolved[spec.text] = insts
        return insts

    def _bars(self, conn: IbConnection, chunk: Chunk, spec: ContractSpec) -> bytes:
        insts = self._resolve(conn, spec)
        d0, d1 = _days(chunk.start, chunk.end)
        if spec.continuous:
            segments = [
                (max(chunk.start, pd.Timestamp(a, tz="UTC")), min(chunk.end, pd.Timestamp(b, tz="UTC")), i)
                for a, b, i in front_segments(insts, d0, d1)
            ]
        else:
            segments = [(chunk.start, chunk.end, insts[0])]
        parts: list[NDArray[Any]] = []
        mappings: dict[str, list[Interval]] = {}
        for lo, hi, inst in segments:
            if lo >= hi:
                continue
            a, b = _days(lo, hi)
            mappings.setdefault(spec.text, []).append((a, b, inst.con_id))
            if not spec.continuous:
                mappings.setdefault(inst.text, []).append((a, b, inst.con_id))
            parts.append(self._segment(conn, chunk.schema, chunk.dataset, inst, lo, hi))
        records = np.concatenate(parts) if parts else empty_records(chunk.schema, 0)
        return _chunk_dbn(chunk, chunk.schema, spec, mappings, records)

    def _segment(
        self, conn: IbConnection, schema: Schema, dataset: str, inst: IbInstrument, lo: pd.Timestamp, hi: pd.Timestamp
    ) -> NDArray[Any]:
        what = DATASETS[dataset]
        head = None if inst.sec_type == "FUT" else self._head(conn, inst, what)
        if head is not None and hi <= head:
            return empty_records(schema, 0)  # before IB's earliest data: no request spent
        contract = inst.ib_contract(self.lib)
        duration = duration_string((hi - lo).total_seconds(), schema)
        req = HistRequest(str(inst.con_id), inst.exchange, what, BAR_SIZES[schema], hi, duration)
        end = hi.to_pydatetime()

        async def call(ib: Any) -> Any:
            return await ib.reqHistoricalDataAsync(
                contract,
                endDateTime=end,
                durationStr=duration,
                barSizeSetting=req.bar_size,
                whatToShow=what,
                useRTH=False,
                formatDate=2,
                keepUpToDate=False,
                timeout=0,
            )

        bars = self._paced(conn, req, call, inst.text)
        return bar_records(bars, schema, PUBLISHERS[dataset], inst.con_id, what, lo.value, hi.value)

    def _head(self, conn: IbConnection, inst: IbInstrument, what: str) -> pd.Timestamp | None:
        key = (inst.con_id, what)
        if key not in self._heads:
            contract = inst.ib_contract(self.lib)
            req = HistRequest(str(inst.con_id), inst.exchange, what, "head", pd.Timestamp(0, tz="UTC"), "")

            async def call(ib: Any) -> Any:
                return await ib.reqHeadTimeStampAsync(contract, whatToShow=what, useRTH=False, formatDate=2)

            when = self._paced(conn, req, call, inst.text)
            self._heads[key] = None if when is None or when == [] else _utc(when)
        return self._heads[key]

    def _paced(self, conn: IbConnection, req: HistRequest, call: Any, what: str) -> Any:
        """One request through the pacer; pacing violations back off and retry, no-data is empty."""
        for attempt in range(PACING_RETRIES + 1):
            self.pacer.acquire(req)
            try:
                return conn.call(call)
            except IbApiError as exc:
                text = exc.message.lower()
                if exc.code == 162 and "no data" in text:
                    return []
                if exc.code == 162 and "pacing" in text and attempt < PACING_RETRIES:
                    wait = PACING_BACKOFF_S * 2**attempt
                    log.warning("IB pacing violation for %s: waiting %.0f s, then retrying", what, wait)
                    self.pacer.hold(wait)
                    continue
                raise self._error(
                    exc, what, "reqHistoricalData" if req.bar_size != "head" else "reqHeadTimeStamp"
                ) from None
            finally:
                self.pacer.release()
        raise AssertionError("unreachable")

    def _error(self, exc: IbApiError, what: str, call: str) -> Exception:
        code, msg = exc.code, exc.message
        if code == 200:
            return ValidationError(
                f"IB does not know contract {what!r} (error 200: {msg}): check the symbol, "
                "security type, exchange, currency and expiry, e.g. ES:FUT:CME:USD:202403"
            )
        if code == 321:
            return ValidationError(
                f"IB rejected {call} for {what} (error 321: {msg}): the request's parameters "
                "are invalid for this contract"
            )
        if code == 162 and "pacing" in msg.lower():
            return RateLimitError(
                f"IB kept reporting pacing violations for {what} (error 162: {msg}) after "
                f"{PACING_RETRIES} retries: another client may share this IB account's "
                "historical-data budget; wait 10 minutes and re-run to resume",
                provider=self.name,
                status=code,
            )
        if code == 162:
            return ProviderError(
                f"IB historical data service refused {call} for {what} (error 162: {msg})",
                provider=self.name,
                status=code,
            )
        if code == 366:
            return ProviderError(
                f"IB lost the historical query for {what} (error 366: {msg}): re-run the same ingest to resume",
                provider=self.name,
                status=code,
            )
        return ProviderError(f"IB error {code} for {call} {what}: {msg}", provider=self.name, status=code)

    # -- what the live feed shares (hdi_lab.providers.ib.live) --------------------------------
    def connection(self) -> IbConnection:
        """The provider's one open connection to TWS / IB Gateway (opened when needed).

        Raises UnavailableError when TWS / IB Gateway cannot be reached."""
        return self._connection()

    def resolve(self, spec: ContractSpec) -> list[IbInstrument]:
        """The qualified contract of ``spec`` (a one-item list) or, for CONTFUT, its futures chain.

        Raises ValidationError for an unknown or ambiguous contract, UnavailableError without a connection."""
        return self._resolve(self._connection(), spec)

    def history(
        self, inst: IbInstrument, schema: Schema, dataset: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> NDArray[Any]:
        """The ``schema`` bars of the qualified contract ``inst`` opening in ``[start, end)``, requested as an
        ingest's chunks request them: one paced ``reqHistoricalData`` per window of IB's maximum duration
        (:func:`~hdi_lab.providers.ib.pacing.split_range`). What the live feed backfills a gap with.

        Raises UnavailableError without a connection, IbDisconnected when it is lost meanwhile, and for IB's
        errors what an ingest raises (ValidationError, RateLimitError, ProviderError)."""
        conn = self._connection()
        parts = [self._segment(conn, schema, dataset, inst, lo, hi) for lo, hi in split_range(start, end, schema)]
        return np.concatenate(parts) if parts else empty_records(schema, 0)


def bar_records(bars: Any, schema: Schema, publisher_id: int, con_id: int, what: str, lo_ns: int, hi_ns: int) -> Any:
    """IB bars (of the client library) with a start in ``[lo_ns, hi_ns)`` as ``schema`` records: the one conversion
    of IB bars, shared by the historical and the live paths. Historical bars (``BarData``: ``date``, ``open``) and
    real-time bars (``RealTimeBar``: ``time``, ``open_``, both the bar's start) alike."""
    ts = np.array([_bar_ns(b.date if hasattr(b, "date") else b.time) for b in bars], dtype=np.int64)
    keep = (ts >= lo_ns) & (ts < hi_ns)
    chosen = [b for b, k in zip(bars, keep, strict=True) if k]
    rec = empty_records(schema, len(chosen))
    if not chosen:
        return rec
    rec["publisher_id"] = publisher_id
    rec["instrument_id"] = con_id
    rec["ts_event"] = ts[keep].astype(np.uint64)
    rec["open"] = fixed_prices(np.array([b.open if hasattr(b, "open") else b.open_ for b in chosen], dtype=np.float64))
    for name in ("high", "low", "close"):
        rec[name] = fixed_prices(np.array([getattr(b, name) for b in chosen], dtype=np.float64))
    if what == "TRADES":
        vol = np.rint(np.array([float(b.volume) for b in chosen], dtype=np.float64))
        rec["volume"] = np.maximum(vol, 0).astype(np.uint64)
    return rec


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def fixed_prices(values: NDArray[Any]) -> NDArray[Any]:
    """Float prices as int64 fixed-point 1e-9, equal to :func:`fixed` of each one's decimal text.

    Below 1e6 the nearest double of a decimal with at most 9 places, times 1e9, is within 0.2 of
    that decimal's integer, so ``rint`` recovers it exactly; larger prices go through Decimal."""
    if len(values) and float(np.max(np.abs(values))) < 1e6:
        return np.rint(values * 1e9).astype(np.int64)
    return np.array([fixed(float(v)) for v in values], dtype=np.int64)


def _bar_ns(value: Any) -> int:
    """A bar's ts_event: a date (daily bars: the trading date) -> 00:00 UTC; a datetime -> UTC."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None and value.microsecond == 0:
            return int(value.timestamp()) * 1_000_000_000
        return int(_utc(value).value)
    if isinstance(value, dt.date):
        return int(pd.Timestamp(value, tz="UTC").value)
    return int(_utc(value).value)
