"""The ``databento`` provider: the Databento Historical API (``databento.Historical``).

Requests are validated (dataset, schema, stype_in, symbol forms, range) before any call. Long ranges
are split by :func:`~hdi_lab.providers.base.plan_chunks`, like the sample provider's: one chunk per
UTC day for ticks and 1s/1m bars, one per month for the sparse schemas. Each chunk is streamed to a
temporary file (``get_range(path=...)``) and decoded from there in batches by the core, so no whole
range is held in memory. Symbology mappings come with the DBN metadata; definitions are ingested
with ``schema="definition"``.

The API key comes from the settings (``HDI_DATABENTO_API_KEY`` / ``DATABENTO_API_KEY``) and is never
logged, shown in a repr or put into an error message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import difflib
import logging
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import databento as db
import pandas as pd
from databento.common.publishers import Dataset
from databento_dbn import DBNError

from hdi_lab import dbn
from hdi_lab.config import Settings
from hdi_lab.dbn.writer import record_dtype
from hdi_lab.errors import ConfigError, CostLimitError, DataFormatError, HdiError, ValidationError
from hdi_lab.providers.base import CONDITIONS, CostEstimate, DownloadSlots, Fetch, plan_chunks
from hdi_lab.providers.databento.http import Caller, close_abandoned_files
from hdi_lab.schemas import (
    SCHEMAS,
    Chunk,
    IngestRequest,
    Schema,
    SType,
    check_provided,
    parse_enum,
    parse_range,
    parse_time,
)

__all__ = [
    "DATASETS",
    "DatabentoProvider",
    "close_store",
    "conditions_frame",
    "symbol_stype",
    "validate_dataset",
    "validate_symbols",
]

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = tuple(d.value for d in Dataset)
_PARENT = re.compile(r"^[^.\s]+\.(FUT|OPT|SPOT|MLEG)$")
_CONTINUOUS = re.compile(r"^[^.\s]+\.[cnv]\.\d+$")


def validate_dataset(value: str | None, default: str | None = None) -> str:
    """A known Databento dataset code (upper-cased).

    Raises ValidationError when neither ``value`` nor ``default`` is given, or for an unknown code (with a
    suggestion)."""
    raw = (value or default or "").strip().upper()
    if not raw:
        raise ValidationError(
            "dataset is required for the databento provider: e.g. dataset=GLBX.MDP3 "
            "(or set databento_dataset / HDI_DATABENTO_DATASET)"
        )
    if raw not in DATASETS:
        close = difflib.get_close_matches(raw, DATASETS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ValidationError(
            f"dataset={value or default!r} is not a Databento dataset: {hint}known: {', '.join(DATASETS[:12])}, ..."
        )
    return raw


def symbol_stype(symbol: str) -> SType:
    """The stype a symbol's form suggests: ``ES.FUT`` parent, ``ES.c.0`` continuous, else raw."""
    if _PARENT.match(symbol):
        return SType.PARENT
    if _CONTINUOUS.match(symbol):
        return SType.CONTINUOUS
    return SType.RAW_SYMBOL


def validate_symbols(symbols: tuple[str, ...], stype: SType) -> None:
    """Check that there are symbols and that each is written as ``stype`` writes them.

    Raises ValidationError naming the symbol and the stype_in it looks like."""
    if not symbols:
        raise ValidationError(
            "symbols are required for the databento provider: e.g. symbols=['ESH4'], "
            "['ES.FUT'] with stype_in=parent or ['ES.c.0'] with stype_in=continuous"
        )
    for sym in symbols:
        form = symbol_stype(sym)
        if stype is SType.INSTRUMENT_ID:
            if not sym.isdigit():
                raise ValidationError(f"symbol {sym!r} is not an instrument id: use stype_in={form}")
        elif stype in (SType.PARENT, SType.CONTINUOUS) and form is not stype:
            example = "ES.FUT" if stype is SType.PARENT else "ES.c.0"
            raise ValidationError(f"symbol {sym!r} is not a {stype} symbol (like {example}): use stype_in={form}")
        elif stype is SType.RAW_SYMBOL and form is not SType.RAW_SYMBOL:
            raise ValidationError(f"symbol {sym!r} is a {form} symbol: use stype_in={form}")


def conditions_frame(answer: object, dataset: str) -> pd.DataFrame:
    """The vendor's ``get_dataset_condition`` answer (a list of ``{date, condition, last_modified_date}``)
    as the frame :meth:`DatabentoProvider.dataset_conditions` returns.

    Raises DataFormatError when ``answer`` is not such a list or names an unknown condition."""
    rows = answer if isinstance(answer, list) else None
    if rows is None or not all(isinstance(r, dict) and r.get("date") and r.get("condition") for r in rows):
        raise DataFormatError(
            f"Databento metadata.get_dataset_condition for {dataset} did not answer a list of "
            "{date, condition, last_modified_date}: re-run later or upgrade hdi_lab"
        )
    odd = sorted({str(r["condition"]) for r in rows} - set(CONDITIONS))
    if odd:
        raise DataFormatError(
            f"Databento metadata.get_dataset_condition for {dataset} gave unknown condition(s) {', '.join(odd)} "
            f"(known: {', '.join(CONDITIONS)}): upgrade hdi_lab"
        )
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime([str(r["date"]) for r in rows], format="%Y-%m-%d"),
            "condition": pd.Series([str(r["condition"]) for r in rows], dtype=object),
            "last_modified_date": pd.to_datetime(
                [str(r.get("last_modified_date") or "NaT") for r in rows], format="%Y-%m-%d"
            ),
        }
    )
    return frame.sort_values("date", ignore_index=True)


def close_store(store: db.DBNStore) -> None:
    """Close the file a file-backed DBNStore keeps open (databento offers no close())."""
    source = getattr(store, "_data_source", None)
    buf = getattr(source, "_FileDataSource__buffer", None)
    if buf is not None:
        buf.close()


class DatabentoProvider:
    """Databento Historical API provider (see the module docstring)."""

    name = "databento"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: db.Historical | None = None
        self._warnings: dict[str, list[str]] = {}
        self._prices: dict[str, dict[str, float]] = {}  # dataset -> schema -> USD per GB
        self._lock = threading.Lock()
        self._slots: DownloadSlots = contextlib.nullcontext

    def __repr__(self) -> str:
        return f"DatabentoProvider(gateway={self.settings.databento_gateway!r})"

    def __getstate__(self) -> dict[str, Any]:
        """What a copy on another process (a Dask worker) starts from: the settings only; it makes its own
        client and takes its own download slots (:meth:`limit_downloads`)."""
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"])  # type: ignore[misc]

    def max_downloads(self) -> int:
        """How many downloads may run at once across the processes of one run (``databento_concurrency``)."""
        return int(self.settings.databento_concurrency)

    def limit_downloads(self, slots: DownloadSlots) -> None:
        """Hold one of ``slots`` (a context manager factory, e.g. a cluster-wide semaphore) around each download."""
        self._slots = slots

    # --- the client --------------------------------------------------------------------------

    def _key(self) -> str:
        key = self.settings.databento_api_key
        if not key:
            raise ConfigError(
                "databento_api_key is not set: export HDI_DATABENTO_API_KEY (or DATABENTO_API_KEY) "
                "or set databento_api_key in hdi_lab.toml"
            )
        return str(key)

    def client(self) -> db.Historical:
        """The Historical API client, made on first use.

        Raises ConfigError without an API key or with a gateway that is not a URL."""
        with self._lock:
            if self._client is None:
                gateway = str(self.settings.databento_gateway)
                try:
                    self._client = db.Historical(key=self._key(), gateway=gateway)
                except ValueError:
                    raise ConfigError(
                        f"databento_gateway={gateway!r} is not a valid URL: set "
                        "HDI_DATABENTO_GATEWAY to e.g. https://hist.databento.com"
                    ) from None
            return self._client

    def caller(self) -> Caller:
        """A :class:`Caller` (retries, backoff, error messages) with this provider's settings.

        Raises ConfigError without an API key."""
        s = self.settings
        return Caller(self._key(), int(s.databento_retries), float(s.databento_backoff), float(s.databento_backoff_max))

    def _args(self, chunk: Chunk) -> dict[str, Any]:
        return dict(
            dataset=chunk.dataset,
            start=chunk.start,
            end=chunk.end,
            symbols=list(chunk.symbols),
            schema=str(chunk.schema),
            stype_in=str(chunk.stype_in),
        )

    # --- the Provider protocol ---------------------------------------------------------------

    def plan(self, request: IngestRequest) -> list[Chunk]:
        """Chunks of ``[start, end)`` for the dataset and symbols (see :func:`plan_chunks`), preceded by
        their definition chunks when ``databento_definitions`` is on.

        Raises ValidationError on a missing or unknown schema, stype_in, dataset or symbol, or a range outside
        the dataset's; ConfigError without an API key; ProviderError when asking the available range fails."""
        if request.schema is None:
            raise ValidationError(f"schema is required: use one of {', '.join(SCHEMAS)}")
        schema = check_provided(parse_enum(Schema, request.schema, "schema"), self.name)
        stype = parse_enum(SType, request.stype_in, "stype_in")
        dataset = validate_dataset(request.dataset, self.settings.databento_dataset)
        symbols = tuple(sorted(dict.fromkeys(request.symbols)))
        validate_symbols(symbols, stype)
        start, end = parse_range(request.start, request.end)
        self._check_available(dataset, start, end)
        chunks = plan_chunks(self.name, dataset, schema, stype, symbols, start, end)
        if schema is not Schema.DEFINITION and self.settings.databento_definitions:
            # the instruments' definitions first, so the data's instruments are known when it is validated
            defs = plan_chunks(self.name, dataset, Schema.DEFINITION, stype, symbols, start, end)
            chunks = [dataclasses.replace(c, companion=True) for c in defs] + chunks
        self._key()
        return chunks

    def available_range(self, dataset: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """The dataset's available range ``[start, end)`` (``metadata.get_dataset_range``), None when the
        vendor's answer holds none.

        Raises ConfigError without an API key; what :class:`Caller` raises when the request fails."""
        client, caller = self.client(), self.caller()
        got = caller("metadata.get_dataset_range", lambda: client.metadata.get_dataset_range(dataset))
        bounds = [got.get(k) or got.get(f"{k}_date") for k in ("start", "end")] if isinstance(got, dict) else []
        if len(bounds) != 2 or not all(isinstance(b, str) for b in bounds):
            return None
        lo, hi = (parse_time(b, "available range") for b in bounds)
        return lo, hi

    def _check_available(self, dataset: str, start: pd.Timestamp, end: pd.Timestamp) -> None:
        """Refuse a range beyond the dataset's available range (``metadata.get_dataset_range``) before
        planning it: a request from 1700 would otherwise plan a chunk per day for centuries."""
        available = self.available_range(dataset)
        if available is None:
            return  # an answer without a range: the vendor still refuses a range it does not hold
        lo, hi = available
        if start < lo or end > hi:
            raise ValidationError(
                f"[{start.isoformat()}, {end.isoformat()}) is outside the range Databento offers for {dataset}: "
                f"{lo.isoformat()} to {hi.isoformat()}; choose start and end within it"
            )

    def check_cost(self, chunks: list[Chunk], allow: bool) -> float | None:
        """Cost of the chunks still to fetch (per schema, over their span); None when ``allow``, without a
        limit or without chunks.

        Raises CostLimitError when the cost is above ``databento_max_cost_usd`` unless ``allow``;
        ConfigError without an API key or with a gateway that is not a URL; what :class:`Caller` raises when the
        cost request fails."""
        limit = self.settings.databento_max_cost_usd
        if allow or limit is None or not chunks:
            return None
        client, caller, cost = self.client(), self.caller(), 0.0
        spans: dict[Schema, tuple[pd.Timestamp, pd.Timestamp]] = {}
        for c in chunks:
            lo, hi = spans.get(c.schema, (c.start, c.end))
            spans[c.schema] = (min(lo, c.start), max(hi, c.end))
        first = chunks[-1]
        for schema, (lo, hi) in spans.items():
            args: dict[str, Any] = dict(
                dataset=first.dataset,
                start=lo,
                end=hi,
                symbols=list(first.symbols),
                schema=str(schema),
                stype_in=str(first.stype_in),
            )
            cost += float(caller("metadata.get_cost", lambda a=args: client.metadata.get_cost(**a)))  # type: ignore[misc]
        if cost > float(limit):
            lo = min(c.start for c in chunks)
            hi = max(c.end for c in chunks)
            what = " + ".join(str(s) for s in spans)
            raise CostLimitError(
                f"estimated cost ${cost:,.2f} of {first.dataset} {what} {','.join(first.symbols)} "
                f"[{lo.date()}, {hi.date()}) is above the limit databento_max_cost_usd=${float(limit):,.2f}: "
                "narrow the request, raise HDI_DATABENTO_MAX_COST_USD, or override with allow_cost=True "
                "(--allow-cost); --dry-run shows the cost"
            )
        return cost

    def fetch(self, chunk: Chunk) -> Fetch:
        """Stream the chunk into a temporary file and yield a DBNStore reading from it.

        Raises DataFormatError when the response holds no readable DBN, ProviderError (AuthError,
        RateLimitError, UnavailableError) when the API refuses or fails after its retries."""
        caller, client, args = self.caller(), self.client(), self._args(chunk)
        with tempfile.TemporaryDirectory(prefix="hdi-databento-") as tmp:
            path = Path(tmp) / "chunk.dbn.zst"
            try:
                with self._slots():
                    store = caller(
                        "timeseries.get_range",
                        lambda: client.timeseries.get_range(**args, path=path),
                        on_retry=lambda: path.unlink(missing_ok=True),
                    )
            except ValueError as exc:  # an empty response
                raise DataFormatError(
                    f"Databento timeseries.get_range for {chunk.describe()} returned no DBN "
                    f"data ({caller.scrub(str(exc))[:120]}): re-run the chunk"
                ) from None
            except DBNError as exc:  # downloaded, but its header does not decode (e.g. a truncated stream)
                close_abandoned_files(exc)
                dbn.open_store(path, chunk.describe())  # raises the DataFormatError that says why
                raise DataFormatError(
                    f"Databento timeseries.get_range for {chunk.describe()} returned an "
                    "unreadable DBN stream: re-run the chunk"
                ) from None
            with self._lock:
                self._warnings.setdefault(chunk.key, []).extend(caller.warnings)
            try:
                yield store
            finally:
                close_store(store)

    def close(self) -> None:
        """Nothing to release: each call is one HTTP request."""

    def cost_of(self, chunk: Chunk, records: int) -> float | None:
        """What fetching ``records`` records of ``chunk`` cost: their uncompressed DBN bytes (what Databento bills a
        request by) at the unit price of the chunk's schema (``metadata.list_unit_prices``, asked once per dataset
        and provider: no request per chunk); None when the vendor gives no price, which is logged and never fails
        the chunk."""
        price = self._unit_price(chunk.dataset, chunk.schema)
        return None if price is None else records * record_dtype(chunk.schema).itemsize * price / 1e9

    def _unit_price(self, dataset: str, schema: Schema) -> float | None:
        with self._lock:
            if dataset in self._prices:
                return self._prices[dataset].get(str(schema))
        caller, client = self.caller(), self.client()
        prices: dict[str, float] = {}
        try:
            modes = caller("metadata.list_unit_prices", lambda: client.metadata.list_unit_prices(dataset=dataset))
            by_mode = {m["mode"]: m["unit_prices"] for m in modes}
            prices = {k: float(v) for k, v in by_mode.get("historical-streaming", by_mode["historical"]).items()}
        except (HdiError, KeyError, TypeError, ValueError) as exc:
            log.warning("no unit prices for %s, so no cost estimate for its chunks: %s", dataset, exc)
        with self._lock:
            self._prices[dataset] = prices
        return prices.get(str(schema))

    def take_warnings(self, chunk: Chunk) -> list[str]:
        """The vendor's warnings (``X-Warning``, e.g. partial resolution) for a fetched chunk."""
        with self._lock:
            return [f"{chunk.describe()}: {w}" for w in self._warnings.pop(chunk.key, [])]

    def estimate(self, chunk: Chunk) -> CostEstimate:
        return self.estimate_span([chunk])

    def estimate_span(self, chunks: Sequence[Chunk]) -> CostEstimate:
        """``metadata.get_record_count`` and ``get_cost`` of the span of ``chunks`` (contiguous, one request's
        dataset, schema, stype and symbols): two requests however many days it holds.

        Raises what :class:`Caller` raises when the vendor refuses or fails."""
        first = chunks[0]
        caller, client = self.caller(), self.client()
        args = {**self._args(first), "end": chunks[-1].end}
        n = int(caller("metadata.get_record_count", lambda: client.metadata.get_record_count(**args)))
        cost = float(caller("metadata.get_cost", lambda: client.metadata.get_cost(**args)))
        return CostEstimate(first, records=n, bytes=n * record_dtype(first.schema).itemsize, cost_usd=cost)

    # --- vendor revisions -------------------------------------------------------------------

    def dataset_conditions(self, dataset: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """``metadata.get_dataset_condition`` for ``[start, end]`` (both inclusive, UTC days) as a frame:
        ``date`` and ``last_modified_date`` (datetime64, NaT when the vendor gives none) and ``condition``
        (one of :data:`~hdi_lab.providers.base.CONDITIONS`), one row per day, in date order.

        Raises ValidationError for an unknown dataset or ``start`` after ``end``; ConfigError without an API key;
        DataFormatError when the answer is not a list of conditions; what :class:`Caller` raises when the
        request fails."""
        code = validate_dataset(dataset)
        if start > end:
            raise ValidationError(f"start {start} is after end {end}: the conditions' range is [start, end]")
        client, caller = self.client(), self.caller()
        got = caller(
            "metadata.get_dataset_condition",
            lambda: client.metadata.get_dataset_condition(code, start_date=start, end_date=end),
        )
        return conditions_frame(got, code)

    # --- symbology (auto-discovery) ----------------------------------------------------------

    def resolve(
        self, dataset: str, symbols: tuple[str, ...], stype: SType, start: dt.date, end: dt.date
    ) -> dict[str, Any]:
        """``symbology.resolve`` (to instrument ids) with retries; the vendor's JSON answer."""
        client = self.client()
        out: dict[str, Any] = self.caller()(
            "symbology.resolve",
            lambda: client.symbology.resolve(
                dataset=dataset,
                symbols=list(symbols),
                stype_in=str(stype),
                stype_out="instrument_id",
                start_date=start,
                end_date=end,
            ),
        )
        return out
