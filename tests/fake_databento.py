"""A local fake of Databento's historical HTTP gateway, over TLS, for the real ``databento`` client.

It speaks the endpoints the client calls (``POST /v0/timeseries.get_range`` streaming zstd DBN,
``/v0/symbology.resolve``, ``/v0/metadata.get_cost``, ``/v0/metadata.get_record_count``,
``GET /v0/metadata.list_unit_prices`` (per schema, priced so that records x record size x price = get_cost),
``GET /v0/metadata.get_dataset_range``, ``GET /v0/metadata.get_dataset_condition``, Basic auth
with the key as user) and serves the offline sample provider's universe as real DBN bytes,
filtered by the request's symbols, stype_in and [start, end). Faults are queued per endpoint.
Every day of the available range is ``available``, last modified the day after, unless a test says
otherwise with :meth:`FakeDatabento.set_condition`.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, override
from urllib.parse import parse_qs

import numpy as np
import pandas as pd
import trustme
import zstandard

from hdi_lab.dbn.writer import encode_dbn, record_dtype
from hdi_lab.providers import sample
from hdi_lab.schemas import Chunk, Schema, SType

KEY = "db-FakeTestKey0123456789abcd"
AVAILABLE = (pd.Timestamp("2018-01-01", tz="UTC"), pd.Timestamp("2025-01-01", tz="UTC"))


@dataclass
class Fault:
    """The next call to ``endpoint`` answers ``status`` (or, with ``truncate``, a cut DBN stream)."""

    endpoint: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    detail: str = "Internal server error"
    truncate: bool = False
    unfinished: bool = False  # whole records, flushed at a block boundary, the zstd frame never ended
    cut: bool = False  # the connection drops halfway through the body (Content-Length promises more)
    after: int = 0  # let this many matching calls through first
    schema: str | None = None  # only calls for this schema match (None: any)


class FakeDatabento:
    """The gateway: ``url`` to point ``HDI_DATABENTO_GATEWAY`` at, ``ca_path`` for ``REQUESTS_CA_BUNDLE``."""

    def __init__(self, tmp: Path, key: str = KEY, usd_per_record: float = 1e-4, cache: bool = False) -> None:
        ca = trustme.CA()
        self.ca_path = tmp / "fake-databento-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        self.key, self.usd_per_record = key, usd_per_record
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.served: list[np.ndarray] = []  # records of each successful get_range, in order
        self.served_schemas: list[str] = []  # the schema of each entry of ``served``
        self.cache: dict[str, tuple[int, dict[str, str], bytes]] | None = {} if cache else None  # benchmarks
        self.conditions: dict[str, tuple[str, str | None]] = {}  # ISO day -> (condition, last_modified_date)
        self.revise: Callable[[np.ndarray], np.ndarray] | None = None  # a vendor revision of what get_range serves
        self.get_range_delay = 0.0  # seconds each get_range takes (concurrency tests)
        self.in_flight = 0  # get_range calls being answered now
        self.max_in_flight = 0  # the most get_range calls answered at once
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.server.fake = self  # type: ignore[attr-defined]
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def count(self, endpoint: str) -> int:
        return sum(1 for e, _ in self.calls if e == endpoint)

    def served_of(self, schema: str) -> np.ndarray:
        """The records served by successful get_range calls for ``schema``, in order."""
        with self.lock:
            parts = [r for sch, r in zip(self.served_schemas, self.served, strict=True) if sch == schema]
        return np.concatenate(parts) if parts else np.array([])

    def take_fault(self, endpoint: str, schema: str | None = None) -> Fault | None:
        with self.lock:
            for i, f in enumerate(self.faults):
                if f.endpoint == endpoint and (f.schema is None or f.schema == schema):
                    if f.after > 0:
                        f.after -= 1
                        return None
                    return self.faults.pop(i)
        return None

    def set_condition(self, day: str, condition: str, last_modified: str | None = None) -> None:
        """From now on, the gateway describes ``day`` (ISO date, any dataset) as ``condition``, last modified
        on ``last_modified`` (the vendor gives none for ``missing``)."""
        with self.lock:
            self.conditions[day] = (condition, None if condition == "missing" else last_modified)

    def dataset_condition(self, p: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """As the real endpoint answers: one entry per UTC day of [start_date, end_date] (inclusive; the
        first or last available day when absent) inside the available range."""
        first, last = AVAILABLE[0].date(), (AVAILABLE[1] - pd.Timedelta(days=1)).date()
        lo = max(pd.Timestamp(p["start_date"]).date(), first) if p.get("start_date") else first
        hi = min(pd.Timestamp(p["end_date"]).date(), last) if p.get("end_date") else last
        if p.get("start_date") and p.get("end_date") and lo > hi and p["start_date"] > p["end_date"]:
            return _error(422, "Invalid date range: `start_date` must not be after `end_date`.")
        rows = []
        with self.lock:
            for day in pd.date_range(lo, hi, freq="D") if lo <= hi else []:
                iso = f"{day:%Y-%m-%d}"
                condition, modified = self.conditions.get(iso, ("available", f"{day + pd.Timedelta(days=1):%Y-%m-%d}"))
                rows.append({"date": iso, "condition": condition, "last_modified_date": modified})
        return 200, {"Content-Type": "application/json"}, json.dumps(rows).encode()

    # --- data ------------------------------------------------------------------------------

    @staticmethod
    def split(dataset: str, symbols: list[str], stype: SType) -> tuple[list[str], list[str]]:
        table = sample.symbol_table(stype)
        known = [s for s in symbols if table.get(s) == dataset]
        return known, [s for s in symbols if s not in known]

    def chunk(self, p: dict[str, str], known: list[str]) -> Chunk:
        return Chunk(
            key="fake",
            provider="sample",
            dataset=p["dataset"],
            schema=Schema(p["schema"]),
            stype_in=SType(p["stype_in"]),
            symbols=tuple(known),
            start=_ts(p["start"]),
            end=_ts(p["end"]),
        )

    def records(self, p: dict[str, str]) -> np.ndarray:
        """What get_range serves for these parameters (the known symbols only)."""
        known, _ = self.split(p["dataset"], p["symbols"].split(","), SType(p["stype_in"]))
        return sample.SampleProvider().records(self.chunk(p, known))

    def get_range(self, p: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.get_range_delay)
            return self._cached_range(p)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _cached_range(self, p: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.cache is None:
            return self._get_range(p)
        key = json.dumps(p, sort_keys=True)
        if key not in self.cache:
            self.cache[key] = self._get_range(p)
        return self.cache[key]

    def _get_range(self, p: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        err = self.check_range(p)
        if err:
            return err
        stype = SType(p["stype_in"])
        known, unknown = self.split(p["dataset"], p["symbols"].split(","), stype)
        if not known:
            return _error(422, f"None of the symbols could be resolved: {','.join(unknown)}")
        chunk = self.chunk(p, known)
        records = sample.SampleProvider().records(chunk)
        if self.revise is not None:
            records = self.revise(records)
        days = sample.utc_days(chunk.start, chunk.end)
        hits = {s: sum(1 for d in days if sample.resolve(s, stype, d)) for s in known}
        maps = {s: iv for s, iv in sample.mappings(known, stype, days).items() if iv}
        data = encode_dbn(
            dataset=chunk.dataset,
            schema=chunk.schema,
            stype_in=stype,
            start=chunk.start,
            end=chunk.end,
            symbols=p["symbols"].split(","),
            mappings=maps,
            records=records,
            compress=True,
            partial=[s for s in known if 0 < hits[s] < len(days)],
            not_found=unknown + [s for s in known if hits[s] == 0],
        )
        with self.lock:
            if self.cache is None:
                self.served.append(records)
                self.served_schemas.append(p["schema"])
        headers = {"Content-Type": "application/octet-stream"}
        if unknown:
            warning = f"Warning: The following symbols could not be resolved: {', '.join(unknown)}"
            headers["X-Warning"] = json.dumps([warning])
            return 206, headers, data
        return 200, headers, data

    def check_range(self, p: dict[str, str]) -> tuple[int, dict[str, str], bytes] | None:
        start, end = _ts(p["start"]), _ts(p["end"])
        if start >= end:
            return _error(422, "Invalid time range: `start` must be before `end`.")
        if start < AVAILABLE[0] or end > AVAILABLE[1]:
            return _error(
                422,
                f"Requested range is outside the available range for {p['dataset']}: "
                f"{AVAILABLE[0].date()} to {AVAILABLE[1].date()}",
            )
        return None

    def resolve(self, p: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        stype = SType(p["stype_in"])
        symbols = p["symbols"].split(",")
        start = pd.Timestamp(p["start_date"], tz="UTC")
        end = pd.Timestamp(p["end_date"], tz="UTC") if p.get("end_date") else start + pd.Timedelta(days=1)
        known, unknown = self.split(p["dataset"], symbols, stype)
        days = sample.utc_days(start, end)
        maps = sample.mappings(known, stype, days) if known else {}
        result = {s: [{"d0": str(a), "d1": str(b), "s": str(iid)} for a, b, iid in maps[s]] for s in known if maps[s]}
        body = {
            "result": result,
            "symbols": symbols,
            "stype_in": str(stype),
            "stype_out": "instrument_id",
            "start_date": str(start.date()),
            "end_date": str(end.date()),
            "partial": [],
            "not_found": unknown + [s for s in known if not maps[s]],
            "message": "OK",
            "status": 0,
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def metadata(self, endpoint: str, p: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        err = self.check_range(p)
        if err:
            return err
        known, _ = self.split(p["dataset"], p["symbols"].split(","), SType(p["stype_in"]))
        n = int(sample.SampleProvider().estimate(self.chunk(p, known)).records or 0) if known else 0
        value: float | int = n if endpoint.endswith("get_record_count") else round(n * self.usd_per_record, 6)
        return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()


def _ts(text: str) -> pd.Timestamp:
    ts = pd.Timestamp(text)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).as_unit("ns")


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps({"detail": detail}).encode()


class _Handler(BaseHTTPRequestHandler):
    server: Any

    @override  # the stdlib's signature, `format` included
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        """``metadata.get_dataset_range`` and ``get_dataset_condition`` (GETs, parameters in the query string)."""
        self.do_POST()

    def do_POST(self) -> None:
        fake: FakeDatabento = self.server.fake
        endpoint, _, query = self.path.partition("?")
        endpoint = endpoint.removeprefix("/v0/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if self.command == "POST" else query
        params = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
        with fake.lock:
            fake.calls.append((endpoint, params))
        status, headers, body = self.answer(fake, endpoint, params)
        cut = headers.pop("X-Fake-Cut", None) is not None
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body)), "request-id": "fake-req-1"}.items():
            self.send_header(k, v)
        self.end_headers()
        if not cut:
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])  # then the connection drops
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def answer(self, fake: FakeDatabento, endpoint: str, p: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        expected = "Basic " + base64.b64encode(f"{fake.key}:".encode()).decode()
        if self.headers.get("Authorization") != expected:
            return _error(401, "Authentication failed.")
        fault = fake.take_fault(endpoint, p.get("schema"))
        if fault is not None and not (fault.truncate or fault.cut or fault.unfinished):
            return _error(fault.status, fault.detail, fault.headers)
        if endpoint == "timeseries.get_range":
            status, headers, body = fake.get_range(p)
            if fault is not None and fault.cut:
                with fake.lock:
                    fake.served.pop()
                    fake.served_schemas.pop()
                headers["X-Fake-Cut"] = "1"
            elif fault is not None:  # a stream cut short: the header and part of the records
                plain = zstandard.ZstdDecompressor().decompressobj().decompress(body)
                if fault.unfinished:  # as a crashed writer leaves it: 2/3 of the records, no frame end
                    head = 8 + int.from_bytes(plain[4:8], "little")
                    size = record_dtype(Schema(p["schema"])).itemsize
                    comp = zstandard.ZstdCompressor().compressobj()
                    kept = (len(plain) - head) // size * 2 // 3
                    body = comp.compress(plain[: head + kept * size]) + comp.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
                else:
                    body = zstandard.ZstdCompressor().compress(plain[: len(plain) * 2 // 3 + 7])
                with fake.lock:
                    fake.served.pop()
                    fake.served_schemas.pop()
            return status, headers, body
        if endpoint == "symbology.resolve":
            return fake.resolve(p)
        if endpoint in ("metadata.get_cost", "metadata.get_record_count"):
            return fake.metadata(endpoint, p)
        if endpoint == "metadata.list_unit_prices":  # USD per GB of uncompressed DBN, as get_cost charges
            prices = {str(sch): fake.usd_per_record * 1e9 / record_dtype(sch).itemsize for sch in Schema}
            modes = [{"mode": m, "unit_prices": prices} for m in ("historical", "historical-streaming", "live")]
            return 200, {"Content-Type": "application/json"}, json.dumps(modes).encode()
        if endpoint == "metadata.get_dataset_condition":
            return fake.dataset_condition(p)
        if endpoint == "metadata.get_dataset_range":
            span = {
                "start": f"{AVAILABLE[0]:%Y-%m-%dT%H:%M:%S}.000000000Z",
                "end": f"{AVAILABLE[1]:%Y-%m-%dT%H:%M:%S}.000000000Z",
            }
            return 200, {"Content-Type": "application/json"}, json.dumps(span).encode()
        return _error(404, f"Not found: {endpoint}")
