"""A local fake of TWS / IB Gateway speaking the TWS API wire protocol (server version 176).

It serves the real ``ib_async`` and ``ib_insync`` clients: the ``API\\0`` + version-range handshake,
``startApi`` -> ``nextValidId`` + ``managedAccounts``, the connect-time syncs (positions, open and
completed orders, account updates, executions), ``reqContractDetails``, ``reqHistoricalData``,
``reqHeadTimeStamp``, cancels, and error messages. Messages are a 4-byte big-endian length then
NUL-terminated text fields.

Live: ``reqRealTimeBars`` (paced like a historical request, as IB counts it; TRADES, MIDPOINT, BID or ASK)
streams 5-second bars (``REAL_TIME_BARS``) from :attr:`FakeIbGateway.today` on, one every
:attr:`FakeIbGateway.live_every` wall seconds (accelerated time), until ``cancelRealTimeBars`` or the connection
closes: the same bars a historical ``5 secs`` request answers for those times (``today`` is the server's now:
move it forward to stand for time passing while a client was away). ``reqHistoricalData(keepUpToDate=True)``
answers the bars up to ``today`` then streams ``HISTORICAL_DATA_UPDATE`` s of the bars that follow: each bar
twice while it forms (its first 5 seconds, then the whole bar) before the next bar begins, as TWS updates the
last bar, until ``cancelHistoricalData``.

Bars are deterministic (:func:`bar`; a minute rolls its 5-second bars up), on weekdays only, never before a
contract's head timestamp nor after a future's last trade date. The fake checks IB's pacing rules on its
(injectable) clock and answers a violation with error 162, as IB does; tests can also inject pacing violations,
any error code, and dropped connections on the n-th paced request, or take the gateway down.

Client ids: as TWS, the fake allows one live connection per client id; a second one is answered with error 326
and closed, and recorded in :attr:`FakeIbGateway.clashes`. Each paced request records its connection's client id
(:attr:`FakeIbGateway.sent_by`). A request in :attr:`FakeIbGateway.hold_at` is answered only once
:attr:`FakeIbGateway.release` is set (its client id is added to :attr:`FakeIbGateway.holding` meanwhile): a test
can kill the process waiting for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from hdi_lab.providers.ib.pacing import Clock, HistRequest, Rules, violations

SERVER_VERSION = 176
ACCOUNT = "DU1234567"
PACING_TEXT = "Historical Market Data Service error message:Historical data request pacing violation"
NO_DATA_TEXT = "Historical Market Data Service error message:HMDS query returned no data: {}"
CLIENT_ID_TEXT = "Unable to connect as the client id is already in use. Retry with a unique client id."
MAX_SECONDS = {"1 secs": 1800, "5 secs": 3600, "1 min": 86_400, "1 hour": 30 * 86_400, "1 day": 365 * 86_400}
BAR_SECONDS = {"1 secs": 1, "5 secs": 5, "1 min": 60, "1 hour": 3600, "1 day": 86_400}
REALTIME_WHAT = ("TRADES", "MIDPOINT", "BID", "ASK")  # what IB streams as real-time bars


@dataclass(frozen=True)
class FakeContract:
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    last_trade: str = ""  # YYYYMMDD for futures
    multiplier: str = ""
    min_tick: float = 0.01
    head: str = "2000-01-03"  # earliest data (UTC date)
    time_zone: str = "US/Eastern"

    @property
    def head_ts(self) -> pd.Timestamp:
        return pd.Timestamp(self.head, tz="UTC")

    @property
    def expiry_end(self) -> pd.Timestamp | None:
        """End of the last trade date (no bars after it)."""
        if not self.last_trade:
            return None
        last_day = dt.datetime.strptime(self.last_trade, "%Y%m%d").replace(tzinfo=dt.UTC)
        return pd.Timestamp(last_day) + pd.Timedelta(days=1)


UNIVERSE = (
    FakeContract(265598, "AAPL", "STK", "SMART", "USD", "AAPL", "NMS", head="1980-12-12", min_tick=0.01),
    FakeContract(
        495512557, "ES", "FUT", "CME", "USD", "ESZ3", "ES", "20231215", "50", 0.25, "2022-09-20", "US/Central"
    ),
    FakeContract(
        551601561, "ES", "FUT", "CME", "USD", "ESH4", "ES", "20240315", "50", 0.25, "2022-12-16", "US/Central"
    ),
    FakeContract(
        568550526, "ES", "FUT", "CME", "USD", "ESM4", "ES", "20240621", "50", 0.25, "2023-03-17", "US/Central"
    ),
    FakeContract(12087792, "EUR", "CASH", "IDEALPRO", "USD", "EUR.USD", "EUR.USD", min_tick=0.00005, head="2005-01-03"),
    FakeContract(416904, "SPX", "IND", "CBOE", "USD", "SPX", "SPX", head="1990-01-02", time_zone="US/Central"),
    FakeContract(777001, "NEWCO", "STK", "SMART", "USD", "NEWCO", "NMS", head="2024-01-10"),
)


def bar(contract: FakeContract, what: str, ts_s: int, bar_s: int) -> tuple[str, str, str, str, str]:
    """The fake's bar (open, high, low, close, volume) as the text it sends, for a bar starting at
    ``ts_s`` (epoch seconds; daily bars: 00:00 UTC of the date). A 1-minute bar is its twelve 5-second bars
    rolled up (first open, highest high, lowest low, last close, summed volume), as IB's are: the real-time
    5-second bars of a minute roll up to the minute's historical bar."""
    if bar_s == 60:
        parts = [_bar(contract, what, ts_s + 5 * i, 5) for i in range(12)]
        vol = "-1" if what != "TRADES" else str(sum(int(p[4]) for p in parts))
        o, h, lo, c = parts[0][0], max(p[1] for p in parts), min(p[2] for p in parts), parts[-1][3]
        return repr(o), repr(h), repr(lo), repr(c), vol
    o, h, lo, c, vol = _bar(contract, what, ts_s, bar_s)
    return repr(o), repr(h), repr(lo), repr(c), vol


def _bar(contract: FakeContract, what: str, ts_s: int, bar_s: int) -> tuple[float, float, float, float, str]:
    k = ts_s // bar_s
    if contract.sec_type == "CASH":
        base, tick = 1.05, 0.00005
    else:
        base, tick = 100.0 + contract.con_id % 89 * 10, 0.25
    shift = {"TRADES": 0.0, "MIDPOINT": tick / 2, "BID_ASK": -tick / 2, "BID": -tick / 2, "ASK": tick / 2}[what]
    o = round(base + (k * 7 % 40) * tick + shift, 6)
    c = round(base + ((k * 7 + 3) % 40) * tick + shift, 6)
    h = round(max(o, c) + 2 * tick, 6)
    lo = round(min(o, c) - tick, 6)
    vol = str(10 + k % 17) if what == "TRADES" else "-1"
    return o, h, lo, c, vol


def bar_times(contract: FakeContract, bar_size: str, start: pd.Timestamp, end: pd.Timestamp) -> list[int]:
    """Start times (epoch s) of the fake's bars in ``[start, end)``: weekdays, after the head, before expiry."""
    step = BAR_SECONDS[bar_size]
    lo = max(start, contract.head_ts)
    hi = min(end, contract.expiry_end) if contract.expiry_end is not None else end
    first = -(-int(lo.value // 1_000_000_000) // step) * step
    out = []
    t = first
    stop = hi.value // 1_000_000_000 if hi.value % 1_000_000_000 == 0 else hi.value // 1_000_000_000 + 1
    while t < stop:
        if dt.datetime.fromtimestamp(t, dt.UTC).weekday() < 5:
            out.append(t)
        t += step
    return out


def parse_end(text: str, now: pd.Timestamp) -> pd.Timestamp:
    if not text:
        return now
    parts = text.replace("-", " ").split()
    stamp = pd.to_datetime(parts[0] + parts[1], format="%Y%m%d%H:%M:%S")  # naive: localized to the given zone below
    return stamp.tz_localize(parts[2] if len(parts) > 2 else "UTC").tz_convert("UTC")


def parse_duration(text: str) -> pd.Timedelta:
    n, unit = text.split()
    days = {"D": 1, "W": 7, "M": 30, "Y": 365}
    return pd.Timedelta(seconds=int(n)) if unit == "S" else pd.Timedelta(days=int(n) * days[unit])


@dataclass
class FakeIbGateway:
    """Start with :meth:`start` (returns the port); :meth:`stop` closes everything."""

    clock: Clock = field(default_factory=Clock)
    rules: Rules = field(default_factory=Rules)
    today: pd.Timestamp = field(default_factory=lambda: pd.Timestamp("2024-02-01", tz="UTC"))
    contracts: tuple[FakeContract, ...] = UNIVERSE
    inject: dict[int, tuple[int, str]] = field(default_factory=dict)  # n-th historical request -> error
    disconnect_at: set[int] = field(default_factory=set)  # n-th historical request -> drop the connection
    down_after: int | None = None  # after this many historical requests the gateway goes down
    live_every: float = 0.02  # wall seconds between two live messages of one subscription (accelerated time)
    hist_delay: float = 0.0  # wall seconds a historical answer takes (IB's are slow): live streams go on meanwhile
    hold_at: set[int] = field(default_factory=set)  # n-th historical request -> answered once `release` is set

    def __post_init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.hist_count = 0
        self.sent: list[tuple[float, HistRequest]] = []  # paced requests as received (clock time)
        self.sent_by: list[int] = []  # the client id of each one's connection
        self.client_ids: list[int] = []  # the client id of every connection accepted, in order
        self.clashes: list[int] = []  # client ids refused (error 326): another live connection used them
        self.holding: list[int] = []  # client ids whose request (of hold_at) waits for `release`
        self.release = threading.Event()
        self._ids: dict[socket.socket, int] = {}  # live connection -> its client id
        self.violations: list[str] = []
        self.log: list[tuple[str, list[str]]] = []  # (kind, fields) of every request
        self._lock = threading.RLock()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._stopping = False
        self._bodies: dict[tuple[object, ...], str] = {}
        self._live: dict[int, threading.Event] = {}  # live subscription (request id) -> its cancel
        self.live_sent: list[tuple[str, int, int]] = []  # (kind, request id, bar start in epoch s) sent
        self.live_sent_at: list[float] = []  # when each of them was handed to the socket (time.time())

    # -- server ------------------------------------------------------------------------------
    def start(self) -> int:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(8)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._stopping = False
        t = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        t.start()
        self._threads.append(t)
        return self.port

    def go_down(self) -> None:
        """Drop every connection and stop listening (connections are refused until :meth:`start`)."""
        self._stopping = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # stop listening now, even inside accept()
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            _close(s)

    def stop(self) -> None:
        self.release.set()
        self.go_down()
        for t in self._threads:
            t.join(5)
        self._threads.clear()

    def _accept(self, listener: socket.socket) -> None:
        try:
            listener.settimeout(0.05)  # closing a socket does not wake a blocked accept()
        except OSError:  # the gateway went down before this thread ran: the listener is closed already
            return
        while not self._stopping:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self.connections += 1
                self._socks.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                reader = _Reader(conn)
                if reader.exact(4) != b"API\0":
                    return
                versions = reader.message().decode()
                lo, hi = versions.split()[0].lstrip("v").split("..")
                if not int(lo) <= SERVER_VERSION <= int(hi):
                    return
                _send(conn, [SERVER_VERSION, f"{self.today:%Y%m%d %H:%M:%S} UTC"])
                while True:
                    fields = reader.message().decode().split("\0")[:-1]
                    if not self._handle(conn, fields):
                        return
        except (OSError, EOFError):
            return
        finally:
            with self._lock:
                if conn in self._socks:
                    self._socks.remove(conn)
                self._ids.pop(conn, None)

    # -- requests ----------------------------------------------------------------------------
    def _handle(self, conn: socket.socket, f: list[str]) -> bool:
        msg = int(f[0])
        handlers: dict[int, Callable[[socket.socket, list[str]], bool | None]] = {
            71: self._start_api,
            61: lambda c, x: _send(c, [62, 1]),
            5: lambda c, x: _send(c, [53, 1]),
            99: lambda c, x: _send(c, [102]),
            6: lambda c, x: _send(c, [54, 1, x[3]]) if x[2] == "1" else None,
            76: lambda c, x: _send(c, [74, 1, x[2]]),
            7: lambda c, x: _send(c, [55, 1, x[2]]),
            49: lambda c, x: _send(c, [49, 1, int(self.today.timestamp())]),
            9: self._contract_details,
            20: self._historical,
            87: self._head,
            # every query is answered at once, so a cancel finds none (as IB says for a finished one), but for
            # a keepUpToDate one, which streams until cancelled
            25: self._cancel_historical,
            50: self._realtime_bars,
            51: self._cancel_live,
            90: lambda c, x: None,
        }
        handler = handlers.get(msg)
        with self._lock:
            self.log.append((str(msg), f))
        if handler is None:
            return True
        return handler(conn, f) is not False

    def _start_api(self, conn: socket.socket, f: list[str]) -> bool | None:
        """startApi (71: version, client id, capabilities): one live connection per client id, as TWS."""
        client_id = int(f[2])
        with self._lock:
            clash = client_id in self._ids.values()
            if clash:
                self.clashes.append(client_id)
            else:
                self._ids[conn] = client_id
                self.client_ids.append(client_id)
        if clash:
            _send(conn, [4, 2, -1, 326, CLIENT_ID_TEXT, ""])
            return False  # TWS closes the connection
        _send_all(conn, [[9, 1, 1], [15, 1, ACCOUNT]])
        return None

    def _match(self, f: list[str], first: int) -> list[FakeContract]:
        con_id, symbol, sec_type, last, _strike, _right, _mult, exchange, _prim, currency, local, _tc = f[
            first : first + 12
        ]
        include_expired = f[first + 12] == "1"
        if con_id not in ("", "0"):
            return [c for c in self.contracts if c.con_id == int(con_id)]
        out = []
        for c in self.contracts:
            if c.symbol != symbol.upper() or (
                c.sec_type != sec_type and not (sec_type == "CONTFUT" and c.sec_type == "FUT")
            ):
                continue
            if (exchange and exchange != c.exchange) or (currency and currency != c.currency):
                continue
            if local and local != c.local_symbol:
                continue
            if last and not c.last_trade.startswith(last):
                continue
            if c.sec_type == "FUT" and not include_expired and c.expiry_end is not None and c.expiry_end <= self.today:
                continue
            out.append(c)
        if sec_type == "CONTFUT":
            live = sorted(
                (c for c in out if c.expiry_end is not None and c.expiry_end > self.today), key=lambda c: c.last_trade
            )
            out = live[:1]
        return out

    def _contract_details(self, conn: socket.socket, f: list[str]) -> None:
        req_id = int(f[2])
        found = self._match(f, 3)
        if not found:
            _send(conn, [4, 2, req_id, 200, "No security definition has been found for the request", ""])
            return
        msgs = [_details_message(req_id, c) for c in found]
        msgs.append([52, 1, req_id])
        _send_all(conn, msgs)

    def _paced(self, conn: socket.socket, req_id: int, req: HistRequest) -> bool:
        """Record a paced request; True if it may be answered (else an error was sent)."""
        with self._lock:
            now = self.clock.now()
            self.sent.append((now, req))
            self.sent_by.append(self._ids.get(conn, -1))
            self.hist_count += 1
            n = self.hist_count
            horizon = max(self.rules.window_s, self.rules.identical_s)
            recent = [(u, q) for u, q in self.sent if now - u < horizon]
            new = [v for v in violations(recent, self.rules) if v.startswith(f"request {len(recent) - 1} ")]
            self.violations += new
            injected = self.inject.pop(n, None)
            drop = n in self.disconnect_at
            down = self.down_after is not None and n > self.down_after
            held = n in self.hold_at
            if held:
                self.holding.append(self._ids.get(conn, -1))
        if held and not self._hold(conn):
            return False
        if down:
            self.go_down()
            return False
        if drop:
            _close(conn)
            return False
        if new:
            _send(conn, [4, 2, req_id, 162, PACING_TEXT, ""])
            return False
        if injected is not None:
            _send(conn, [4, 2, req_id, injected[0], injected[1], ""])
            return False
        return True

    def _hold(self, conn: socket.socket) -> bool:
        """Wait for :attr:`release` while watching the connection, as TWS does (it reads every socket all the
        time): a client that goes away frees its client id at once. Returns whether the client is still there."""
        while not self.release.wait(0.05):
            readable, _, _ = select.select([conn], [], [], 0)
            if readable and not conn.recv(1, socket.MSG_PEEK):
                with self._lock:
                    self._ids.pop(conn, None)
                return False
        return True

    def _historical(self, conn: socket.socket, f: list[str]) -> bool | None:
        req_id = int(f[1])
        found = self._match(f, 2)
        end_text, bar_size, duration, what, fmt = f[15], f[16], f[17], f[19], f[20]  # f[18]: useRTH
        key = found[0].con_id if found else f[2]
        if not self._paced(
            conn, req_id, HistRequest(str(key), f[9], what, bar_size, parse_end(end_text, self.today), duration)
        ):
            return self._listener is not None and conn.fileno() >= 0
        if not found:
            _send(conn, [4, 2, req_id, 200, "No security definition has been found for the request", ""])
            return None
        keep_up = f[21] not in ("0", "")
        if keep_up and (end_text or bar_size not in ("1 min", "1 hour")):
            text = "Error validating request.-'bP' : cause - keepUpToDate needs no end time and 1 min or 1 hour bars"
            _send(conn, [4, 2, req_id, 321, text, ""])
            return None
        contract = found[0]
        end = parse_end(end_text, self.today)
        span = parse_duration(duration)
        if span.total_seconds() > MAX_SECONDS[bar_size]:
            _send(conn, [4, 2, req_id, 162, "Historical Market Data Service error message:Time length exceed max.", ""])
            return None
        start = end - span
        if self.hist_delay:
            time.sleep(self.hist_delay)
        times = bar_times(contract, bar_size, start, end)
        if not times:
            _send(conn, [4, 2, req_id, 162, NO_DATA_TEXT.format(req_id), ""])
            return None
        step = BAR_SECONDS[bar_size]
        key = (contract.con_id, what, step, fmt, times[0], times[-1])
        body = self._bodies.get(key)
        if body is None:  # the bars' text, kept: benchmarks repeat the same requests
            rows: list[object] = []
            for t in times:
                o, h, lo, c, v = bar(contract, what, t, step)
                stamp = (
                    dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y%m%d") if step == 86_400 or fmt != "2" else str(t)
                )
                rows += [stamp, o, h, lo, c, v, o, 1 if v == "-1" else int(v) // 2]
            body = self._bodies[key] = "".join(f"{v}\0" for v in [len(times), *rows])
        head = "".join(f"{v}\0" for v in [17, req_id, f"{start:%Y%m%d %H:%M:%S}", f"{end:%Y%m%d %H:%M:%S}"])
        text = (head + body).encode()
        conn.sendall(struct.pack(">I", len(text)) + text)
        if keep_up:
            self._stream(conn, req_id, contract, what, step, times[-1] + step, "update")
        return None

    # -- live --------------------------------------------------------------------------------
    def _realtime_bars(self, conn: socket.socket, f: list[str]) -> bool | None:
        req_id = int(f[2])
        found = self._match(f, 3)
        # IB counts real-time bar requests against the historical-data pacing rules; no two are identical (each
        # starts a stream of its own): the request id stands for the duration
        key = str(found[0].con_id) if found else f[3]
        req = HistRequest(key, f[10], f[16], "realtime", pd.Timestamp(0, tz="UTC"), f"#{req_id}")
        if not self._paced(conn, req_id, req):
            return self._listener is not None and conn.fileno() >= 0
        if not found:
            _send(conn, [4, 2, req_id, 200, "No security definition has been found for the request", ""])
            return None
        if f[15] != "5":
            _send(conn, [4, 2, req_id, 321, "Error validating request.-'bU' : cause - Invalid bar size", ""])
            return None
        if f[16] not in REALTIME_WHAT:
            _send(conn, [4, 2, req_id, 321, "Error validating request.-'bU' : cause - Invalid what to show", ""])
            return None
        start = int(self.today.timestamp()) // 5 * 5
        self._stream(conn, req_id, found[0], f[16], 5, start, "realtime")
        return None

    def _stream(
        self, conn: socket.socket, req_id: int, contract: FakeContract, what: str, step: int, start: int, kind: str
    ) -> None:
        cancel = threading.Event()
        with self._lock:
            self._live[req_id] = cancel

        def run() -> None:
            t = start
            try:
                while not cancel.wait(self.live_every) and not self._stopping:
                    o, h, lo, c, v = bar(contract, what, t, step)
                    if kind == "realtime":
                        messages: list[list[object]] = [[50, 3, req_id, t, o, h, lo, c, v, o, max(int(v) // 2, 1)]]
                    else:  # the forming bar after its first 5 seconds, then whole (IB: open, close, high, low order)
                        _, h5, l5, c5, v5 = bar(contract, what, t, 5)
                        messages = [
                            [90, req_id, 1, t, o, c5, max(float(o), float(h5)), min(float(o), float(l5)), o, v5],
                            [90, req_id, max(int(v) // 2, 1), t, o, c, h, lo, o, v],
                        ]
                    at = time.time()
                    for m in messages:
                        _send(conn, m)
                    with self._lock:
                        self.live_sent.append((kind, req_id, t))
                        self.live_sent_at.append(at)
                    t += step
            except OSError:
                return

        thread = threading.Thread(target=run, name=f"fake-ib-live-{req_id}", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _cancel_live(self, conn: socket.socket, f: list[str]) -> bool | None:
        with self._lock:
            cancel = self._live.pop(int(f[2]), None)
        if cancel is not None:
            cancel.set()
        return None

    def _cancel_historical(self, conn: socket.socket, f: list[str]) -> bool | None:
        with self._lock:
            streaming = int(f[2]) in self._live
        if streaming:
            return self._cancel_live(conn, f)
        _send(conn, [4, 2, f[2], 366, f"No historical data query found for ticker id:{f[2]}", ""])
        return None

    def _head(self, conn: socket.socket, f: list[str]) -> bool | None:
        req_id = int(f[1])
        found = self._match(f, 2)
        if not self._paced(
            conn,
            req_id,
            HistRequest(str(found[0].con_id if found else f[2]), f[9], f[16], "head", pd.Timestamp(0, tz="UTC"), ""),
        ):
            return self._listener is not None and conn.fileno() >= 0
        if not found:
            _send(conn, [4, 2, req_id, 200, "No security definition has been found for the request", ""])
            return None
        _send(conn, [88, req_id, int(found[0].head_ts.timestamp())])
        return None


class _Reader:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buf = b""

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def message(self) -> bytes:
        (n,) = struct.unpack(">I", self.exact(4))
        return self.exact(n)


def _encode(fields: list[object]) -> bytes:
    text = "".join(f"{v}\0" for v in fields).encode()
    return struct.pack(">I", len(text)) + text


def _details_message(req_id: int, c: FakeContract) -> list[object]:
    """One CONTRACT_DATA message (10) describing ``c``, in the field order the client reads."""
    return [
        10,
        req_id,
        c.symbol,
        c.sec_type,
        c.last_trade,
        0.0,
        "",
        c.exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
        c.trading_class,
        c.con_id,
        c.min_tick,
        c.multiplier,
        "ACTIVETIM,LMT,MKT",
        c.exchange,
        1,
        0,
        f"{c.symbol} fake",
        c.exchange if c.sec_type == "STK" else "",
        c.last_trade[:6],
        "",
        "",
        "",
        c.time_zone,
        "",
        "",
        "",
        "",
        0,
        1,
        "",
        "",
        "26",
        c.last_trade,
        "",
        "1",
        "1",
        "1",
    ]


def _send(conn: socket.socket, fields: list[object]) -> None:
    conn.sendall(_encode(fields))


def _send_all(conn: socket.socket, messages: list[list[object]]) -> None:
    conn.sendall(b"".join(_encode(m) for m in messages))


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
