"""A local fake of Databento's live subscription gateway (LSG), for the real ``databento.Live`` client.

It speaks the gateway's protocol as the client (databento/live/gateway.py, protocol.py) expects it:

1. on connect, text control lines: ``lsg_version=...`` then ``cram=<challenge>``;
2. the client's ``auth=<sha256("challenge|key")>-<last 5 chars of the key>|dataset=...|encoding=dbn|ts_out=0|
   compression=none|heartbeat_interval_s=...|client=...`` is checked; the answer is ``success=1|session_id=N``
   (or ``success=0|error=...`` and the connection closes);
3. subscription lines ``schema=...|stype_in=...|symbols=...|start=<ns>|snapshot=0|id=N|is_last=1`` until
   ``start_session=0``;
4. then the DBN stream: the metadata header, a ``SymbolMappingMsg`` per subscribed symbol and instrument (at the
   stream's start and at each UTC midnight it crosses), the records of every subscription merged in time order,
   and ``SystemMsg`` heartbeats whenever nothing was sent for ``heartbeat_interval_s`` (the client's, else 30 s).
   When the data runs out the connection stays open with heartbeats only, as a live feed does.

The data is the offline sample provider's (deterministic DBN records, :mod:`hdi_lab.providers.sample`) for the
subscription's symbols over :attr:`FakeLiveGateway.window` (default: one UTC day), or records given per schema in
``data``. ``start=`` (intraday replay) serves the records from that time on (``ts_recv`` where the schema has it,
else ``ts_event``, as Databento indexes); without it the stream starts at :attr:`FakeLiveGateway.now` (default:
the window's start). Records are paced in accelerated time (``speed`` data seconds per wall second) or at
``rate`` records per second, or sent as fast as the client reads (TCP backpressure: nothing is dropped).

Test hooks: :class:`Fault` entries, one consumed per connection (drop the connection after N records, or stall:
stop sending anything, heartbeats included, after N records); ``malformed`` (positions in the merged stream of a
connection starting at the window's start, whose record is sent broken: a trade of size 0, a bar whose high is
below its low). :attr:`sent` logs (wall time, first stream position, count) of each block sent, for latency
measurements.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import secrets
import socket
import socketserver
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import databento_dbn as dbn
import numpy as np
import pandas as pd

from hdi_lab.core.session import HdiSession
from hdi_lab.dbn.writer import Records, empty_records, encode_metadata, record_dtype
from hdi_lab.providers import sample
from hdi_lab.schemas import Chunk, Schema, SType

KEY = "db-FakeLiveKey0123456789abcd"
VERSION = "0.7.0-fake"


@dataclass
class Fault:
    """What one connection does wrong: close after ``drop_after`` records, or stop sending anything (heartbeats
    included) after ``stall_after`` records; ``None``: nothing. ``map_after``: the symbol mappings of the stream's
    start are sent only after that many records (never, if the stream holds fewer), ``map_pause`` seconds after
    the last of them (the client commits those records first): records arriving before their instrument is
    known."""

    drop_after: int | None = None
    stall_after: int | None = None
    map_after: int | None = None
    map_pause: float = 0.5


@dataclass
class Connection:
    """What the gateway saw of one connection."""

    session_id: int
    auth: dict[str, str] = field(default_factory=dict)
    subscriptions: list[dict[str, str]] = field(default_factory=list)
    records: int = 0  # data records sent
    heartbeats: int = 0
    ended: str = ""  # why the stream ended: "client closed", "dropped", "stalled", "auth failed"


class FakeLiveGateway:
    """The gateway on 127.0.0.1: point ``databento.Live(gateway=host, port=port)`` at it."""

    def __init__(
        self,
        key: str = KEY,
        window: tuple[str | pd.Timestamp, str | pd.Timestamp] = ("2024-03-01", "2024-03-02"),
        *,
        data: dict[Schema, Records] | None = None,
        speed: float | None = None,
        rate: float | None = None,
        block: int = 512,
    ) -> None:
        self.key = key
        self.window = (pd.Timestamp(window[0], tz="UTC"), pd.Timestamp(window[1], tz="UTC"))
        self.now: pd.Timestamp = self.window[0]
        self.data = data
        self.speed, self.rate, self.block = speed, rate, block
        self.faults: list[Fault] = []
        self.malformed: dict[str, set[int]] = {}  # schema -> positions in :meth:`records` sent broken
        self.connections: list[Connection] = []
        self.sent: list[tuple[float, str, int, int]] = []  # (wall time.time(), schema, first position, count)
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self._cache: dict[tuple[Schema, SType, tuple[str, ...]], Records] = {}
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.host, self.port = "127.0.0.1", int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-lsg", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.close_all()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self) -> FakeLiveGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what is served ---------------------------------------------------------------------------

    def records(self, schema: Schema, stype: SType, symbols: Sequence[str]) -> Records:
        """Every record of the window for a subscription, in stream order (sorted by the index time)."""
        key = (schema, stype, tuple(sorted(symbols)))
        with self.lock:
            if key in self._cache:
                return self._cache[key]
        if self.data is not None:
            rec = self.data.get(schema, empty_records(schema, 0))
            ids = {i for s in symbols for d in self.days() for i in _ids(s, stype, d)}
            if ids and len(rec):
                rec = rec[np.isin(rec["instrument_id"], sorted(ids))]
        else:
            dataset = sample.validate_symbols(list(symbols), stype)
            chunk = Chunk("live", "sample", dataset, schema, stype, tuple(symbols), *self.window)
            rec = sample.SampleProvider().records(chunk)
        rec = rec[np.argsort(index_times(rec), kind="stable")]
        with self.lock:
            self._cache[key] = rec
        return rec

    def days(self) -> list[dt.date]:
        return sample.utc_days(*self.window)

    def stream(self, subs: list[dict[str, str]]) -> tuple[list[Records], np.ndarray, np.ndarray]:
        """The subscriptions' records and the merged order: (records per subscription, which subscription,
        position in it), in time order; ``start=`` applied."""
        parts, which, pos, times = [], [], [], []
        for k, sub in enumerate(subs):
            rec = self.records(Schema(sub["schema"]), SType(sub["stype_in"]), sub["symbols"].split(","))
            t = index_times(rec)
            start = int(sub["start"]) if sub.get("start") else self.now.value
            first = int(np.searchsorted(t, np.uint64(max(start, 0))))
            parts.append(rec)
            which.append(np.full(len(rec) - first, k, np.int64))
            pos.append(np.arange(first, len(rec), dtype=np.int64))
            times.append(t[first:])
        if not parts:
            return [], np.empty(0, np.int64), np.empty(0, np.int64)
        order = np.argsort(np.concatenate(times), kind="stable")
        return parts, np.concatenate(which)[order], np.concatenate(pos)[order]

    def mappings(self, subs: list[dict[str, str]], day: dt.date, ts: int) -> list[bytes]:
        """The SymbolMappingMsg records of ``day`` for the subscribed symbols."""
        out, seen = [], set()
        d0 = pd.Timestamp(day, tz="UTC").value
        for sub in subs:
            stype = SType(sub["stype_in"])
            for symbol in sub["symbols"].split(","):
                for inst in sample.resolve(symbol, stype, day) if stype is not SType.INSTRUMENT_ID else []:
                    if (symbol, inst.instrument_id) in seen:
                        continue
                    seen.add((symbol, inst.instrument_id))
                    msg = dbn.SymbolMappingMsg(
                        publisher_id=inst.root.publisher_id,
                        instrument_id=inst.instrument_id,
                        ts_event=ts,
                        stype_in=dbn.SType.from_str(str(stype)),
                        stype_in_symbol=symbol,
                        stype_out=dbn.SType.INSTRUMENT_ID,
                        stype_out_symbol=inst.symbol,
                        start_ts=d0,
                        end_ts=d0 + sample.DAY_NS,
                    )
                    out.append(bytes(msg))
        return out


def live_session(session: HdiSession, gw: FakeLiveGateway) -> HdiSession:
    """A session of ``session``'s database whose Databento live feed talks to ``gw`` (with the fake's key)."""
    return HdiSession(session.settings.replace(databento_api_key=KEY, databento_live_gateway=f"{gw.host}:{gw.port}"))


def index_times(rec: Records) -> np.ndarray:
    """The time Databento orders and replays a schema by: ``ts_recv`` where the records have it."""
    return rec["ts_recv" if "ts_recv" in (rec.dtype.names or ()) else "ts_event"]


def _ids(symbol: str, stype: SType, day: dt.date) -> list[int]:
    if stype is SType.INSTRUMENT_ID:
        return [int(symbol)]
    return [i.instrument_id for i in sample.resolve(symbol, stype, day)]


def heartbeat() -> bytes:
    return bytes(dbn.SystemMsg(ts_event=time.time_ns(), msg="Heartbeat", code=dbn.SystemCode.HEARTBEAT))


def broken(rec: Records) -> Records:
    """``rec`` (one record) made invalid: a trade of size 0, a bar whose high is below its low."""
    out = rec.copy()
    names = out.dtype.names or ()
    if "size" in names:
        out["size"] = 0
    elif "high" in names:
        out["high"] = out["low"] - 1
    return out


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeLiveGateway

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sockets: set[socket.socket] = set()
        self.closing = threading.Event()

    def close_all(self) -> None:
        self.closing.set()
        for s in list(self.sockets):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class _Closed(Exception):
    """The client went away."""


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def setup(self) -> None:
        self.server.sockets.add(self.request)
        self.buf = b""

    def finish(self) -> None:
        self.server.sockets.discard(self.request)

    def line(self) -> str:
        while b"\n" not in self.buf:
            data = self.request.recv(4096)
            if not data:
                raise _Closed
            self.buf += data
        head, _, self.buf = self.buf.partition(b"\n")
        return head.decode()

    def send(self, data: bytes) -> None:
        try:
            self.request.sendall(data)
        except OSError as exc:
            raise _Closed from exc

    def handle(self) -> None:
        fake = self.server.fake
        conn = Connection(next(fake._ids))
        with fake.lock:
            fake.connections.append(conn)
            fault = fake.faults.pop(0) if fake.faults else Fault()
        try:
            self._serve(fake, conn, fault)
        except _Closed:
            conn.ended = conn.ended or "client closed"

    def _serve(self, fake: FakeLiveGateway, conn: Connection, fault: Fault) -> None:
        self.send(f"lsg_version={VERSION}\n".encode())
        challenge = secrets.token_hex(8)
        self.send(f"cram={challenge}\n".encode())
        conn.auth = _fields(self.line())
        want = hashlib.sha256(f"{challenge}|{fake.key}".encode()).hexdigest() + "-" + fake.key[-5:]
        if conn.auth.get("auth") != want:
            self.send(b"success=0|error=Authentication failed.\n")
            conn.ended = "auth failed"
            return
        self.send(f"success=1|session_id={conn.session_id}\n".encode())
        while True:
            msg = _fields(self.line())
            if "start_session" in msg:
                break
            conn.subscriptions.append(msg)
        interval = float(conn.auth.get("heartbeat_interval_s") or 30)
        subs = conn.subscriptions
        parts, which, pos = fake.stream(subs)
        schemas = {s["schema"] for s in subs}
        stypes = {s["stype_in"] for s in subs}
        starts = [int(s["start"]) for s in subs if s.get("start")]
        start = min(starts) if starts else fake.now.value
        self.send(
            encode_metadata(
                dataset=conn.auth.get("dataset", ""),
                schema=next(iter(schemas)) if len(schemas) == 1 else None,
                stype_in=next(iter(stypes)) if len(stypes) == 1 else None,
                start=start,
                end=None,
                symbols=sorted({x for s in subs for x in s["symbols"].split(",")}),
            )
        )
        day = pd.Timestamp(start, tz="UTC").date()
        held = b"".join(fake.mappings(subs, day, start))
        if fault.map_after is None:
            self.send(held)
            held = b""
        last = time.monotonic()
        t0_wall, t0_data = time.monotonic(), None
        n, i = len(which), 0
        while i < n:
            j = min(n, i + fake.block)
            same = which[i:j] == which[i]
            j = i + (int(np.argmin(same)) if not same.all() else len(same))  # a run of one subscription
            limit = fault.drop_after if fault.drop_after is not None else fault.stall_after
            if limit is not None:
                j = min(j, i + max(limit - conn.records, 0))
                if j == i:
                    if fault.drop_after is not None:
                        conn.ended = "dropped"
                        self.request.shutdown(socket.SHUT_RDWR)
                        return
                    conn.ended = "stalled"
                    self._wait_closed()
                    return
            if held and fault.map_after is not None:
                j = min(j, i + max(fault.map_after - conn.records, 1))
            rec = parts[which[i]][pos[i:j]]
            t = index_times(rec)
            if int(t[0]) // sample.DAY_NS != day.toordinal() - dt.date(1970, 1, 1).toordinal():
                day = pd.Timestamp(int(t[0]), tz="UTC").date()
                self.send(b"".join(fake.mappings(subs, day, int(t[0]))))
            if t0_data is None:
                t0_data = int(t[0])
            due = None
            if fake.speed:
                due = t0_wall + (int(t[0]) - t0_data) / 1e9 / fake.speed
            elif fake.rate:
                due = t0_wall + i / fake.rate
            while due is not None and time.monotonic() < due:
                if time.monotonic() - last >= interval:
                    self.send(heartbeat())
                    conn.heartbeats += 1
                    last = time.monotonic()
                time.sleep(max(0.0, min(due - time.monotonic(), interval, 0.05)))  # the clock moves between reads
            schema = subs[which[i]]["schema"]
            bad = [k for k in fake.malformed.get(schema, ()) if pos[i] <= k < pos[i] + (j - i)]
            if bad:
                rec = rec.copy()
                for k in bad:
                    rec[k - pos[i]] = broken(rec[k - pos[i] : k - pos[i] + 1])[0]
            fake.sent.append((time.time(), schema, int(pos[i]), j - i))
            self.send(memoryview(np.ascontiguousarray(rec)).cast("B"))
            conn.records += j - i
            last = time.monotonic()
            i = j
            if held and fault.map_after is not None and conn.records >= fault.map_after:
                time.sleep(fault.map_pause)
                self.send(held)
                held = b""
        if fault.stall_after is not None:
            conn.ended = "stalled"
            self._wait_closed()
            return
        while not self.server.closing.is_set():  # a live feed: nothing more to send, heartbeats only
            if self._closed_by_client(min(interval, 0.1)):
                raise _Closed
            if time.monotonic() - last >= interval:
                self.send(heartbeat())
                conn.heartbeats += 1
                last = time.monotonic()

    def _closed_by_client(self, timeout: float) -> bool:
        self.request.settimeout(timeout)
        try:
            data = self.request.recv(4096)
        except TimeoutError:
            return False
        except OSError:
            return True
        finally:
            self.request.settimeout(None)
        return not data

    def _wait_closed(self) -> None:
        while not self.server.closing.is_set() and not self._closed_by_client(0.1):
            pass


def _fields(line: str) -> dict[str, str]:
    return {k: v for k, _, v in (t.partition("=") for t in line.strip().split("|"))}


def trades(n: int, *, instrument_id: int = 400001, start: str = "2024-03-01 14:30", step_ns: int = 20_000) -> Records:
    """``n`` valid trades of one instrument, one every ``step_ns`` (a dense stream for benchmarks)."""
    rec = empty_records(Schema.TRADES, n)
    ts = pd.Timestamp(start, tz="UTC").value + np.arange(n, dtype=np.int64) * step_ns
    rec["publisher_id"], rec["instrument_id"], rec["ts_event"] = 1, instrument_id, ts
    rec["ts_recv"] = ts + 300_000
    rec["price"] = (4_800_000_000_000 + (np.arange(n) % 40) * 250_000_000).astype(np.int64)
    rec["size"] = 1 + np.arange(n) % 7
    rec["action"], rec["side"], rec["depth"], rec["flags"] = b"T", b"B", 0, 0
    rec["ts_in_delta"], rec["sequence"] = 15_000, 1_000 + np.arange(n)
    assert rec.dtype == record_dtype(Schema.TRADES)
    return rec
