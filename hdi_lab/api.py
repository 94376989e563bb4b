"""The Python API: ``hdi_lab.ingest`` / ``hdi_lab.query`` / ``hdi_lab.sql`` build requests for the core."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hdi_lab.core import continuous as chain
from hdi_lab.core import export as exporter
from hdi_lab.core import gaps as gap_finder
from hdi_lab.core import ingestion, retrieval, subscriptions
from hdi_lab.core import report as reporter
from hdi_lab.core import update as updater
from hdi_lab.core.retrieval import PriceType
from hdi_lab.core.session import HdiSession, with_session
from hdi_lab.core.subscriptions import Subscription
from hdi_lab.core.update import UpdateReport
from hdi_lab.schemas import (
    ExportFormat,
    IngestReport,
    IngestRequest,
    Output,
    Schema,
    SType,
    parse_enum,
    parse_range,
    parse_symbols,
)

__all__ = [
    "continuous",
    "export",
    "gaps",
    "ingest",
    "make_request",
    "query",
    "report",
    "rolls",
    "sql",
    "unwatch",
    "update",
    "watch",
    "watches",
]


def make_request(
    provider: str,
    *,
    schema: str | Schema | None = None,
    symbols: str | Sequence[str] | None = None,
    start: object = None,
    end: object = None,
    dataset: str | None = None,
    stype_in: str | SType = SType.RAW_SYMBOL,
    path: str | Path | Sequence[str | Path] | None = None,
    force: bool = False,
    dry_run: bool = False,
    allow_cost: bool = False,
) -> IngestRequest:
    """Validate user arguments into an :class:`IngestRequest` (shared by every front end)."""
    paths: tuple[str, ...] = ()
    if path is not None:
        paths = (str(path),) if isinstance(path, str | Path) else tuple(str(p) for p in path)
    lo = hi = None
    if start is not None or end is not None:
        lo, hi = parse_range(start, end)
    return IngestRequest(
        provider=provider,
        schema=parse_enum(Schema, schema, "schema") if schema else None,
        dataset=dataset,
        symbols=parse_symbols(symbols),
        stype_in=parse_enum(SType, stype_in, "stype_in"),
        start=lo,
        end=hi,
        paths=paths,
        force=force,
        dry_run=dry_run,
        allow_cost=allow_cost,
    )


def ingest(
    provider: str = "file",
    *,
    session: HdiSession | None = None,
    progress: ingestion.ProgressFn | None = None,
    **request: Any,
) -> IngestReport:
    """Ingest market data and return the :class:`IngestReport`.

    ``hdi_lab.ingest(provider="file", path="x.dbn.zst")`` or ``hdi_lab.ingest(provider="sample",
    schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-05")``. Chunks already
    ingested are skipped unless ``force=True``; ``dry_run=True`` only plans and estimates.
    """
    req = make_request(provider, **request)
    return with_session(session, lambda s: ingestion.run(req, s, progress=progress))


def query(
    schema: str | Schema,
    symbols: str | Sequence[str],
    start: object,
    end: object,
    *,
    dataset: str | None = None,
    price_type: PriceType = "float",
    columns: Sequence[str] | None = None,
    interval: str | None = None,
    align: str = "utc",
    adjust: str | None = None,
    output: str | Output = Output.PANDAS,
    session: HdiSession | None = None,
) -> pd.DataFrame | Any:  # Any: a pyarrow.Table or polars.DataFrame (output=)
    """Stored rows for ``symbols`` in ``[start, end)`` as a DataFrame indexed by ``ts_event``.

    ``interval="5m"`` (bars only) rolls bars up into 5-minute buckets, likewise 15m, 1h, 1d...; bars carry a
    ``session`` column (each bar's trading date) and ``align="session"`` buckets from each trading session's
    open instead of midnight UTC (see :func:`hdi_lab.core.retrieval.query`).
    ``adjust="ratio"`` (or ``difference``, ``none``) reads continuous symbols (``ES.c.0``) with hdi_lab's roll
    rules, back-adjusted (see :func:`continuous`). ``output="arrow"`` returns a ``pyarrow.Table``,
    ``output="polars"`` a Polars DataFrame (``pip install 'hdi_lab[polars]'``), built without a pandas copy:
    ``ts_event`` is their first column.

    Raises what :func:`hdi_lab.core.retrieval.query` raises (ValidationError, StorageError, MissingDependency,
    ProviderError).
    """
    return with_session(
        session,
        lambda s: retrieval.query(
            s,
            schema,
            symbols,
            start,
            end,
            dataset=dataset,
            price_type=price_type,
            columns=columns,
            interval=interval,
            align=align,
            adjust=adjust,
            output=output,
        ),
    )


def export(
    schema: str | Schema,
    symbols: str | Sequence[str],
    start: object,
    end: object,
    path: str | os.PathLike[str],
    *,
    format: str | ExportFormat = ExportFormat.PARQUET,  # noqa: A002  (hdi export --format)
    dataset: str | None = None,
    progress: exporter.ExportProgress | None = None,
    session: HdiSession | None = None,
) -> exporter.ExportReport:
    """Write stored rows as Hive-partitioned files under the folder ``path``: ``date=YYYY-MM-DD/symbol=.../
    part-0.parquet`` (``format="arrow"``: Arrow IPC, ``"csv"``: CSV with ISO UTC timestamps), one per UTC day and
    symbol, read as they are by DuckDB, Polars and pyarrow.

    ``hdi_lab.export("ohlcv-1m", ["ESH4", "ES.c.0"], "2024-01-02", "2024-02-01", "exports/es")``. Each row as
    :func:`query` returns it, ``ts_event`` as a ``timestamp[ns, UTC]`` column, each price as float64 and as exact
    int64 fixed-point (``close`` and ``close_fixed``). Read and written one day at a time; ``path`` changes only
    when the whole export succeeded; exporting again replaces the request's partitions. See
    :mod:`hdi_lab.core.export`.

    Raises ValidationError (a bad request or format, ``path`` is a file, nothing stored, a file that cannot be
    written), StorageError, ProviderError (auto-discovery).
    """
    return with_session(
        session,
        lambda s: exporter.export(
            s, schema, symbols, start, end, path, format=format, dataset=dataset, progress=progress
        ),
    )


def continuous(
    root: str,
    schema: str | Schema,
    start: object,
    end: object,
    *,
    rank: int = 0,
    roll: str = "calendar",
    offset: int = 0,
    adjust: str = "none",
    dataset: str | None = None,
    price_type: PriceType = "float",
    session: HdiSession | None = None,
) -> pd.DataFrame:
    """A continuous future's bars in ``[start, end)``, derived on read from the stored contracts: indexed by
    ``ts_event``, each row with its contract's ``instrument_id`` and ``symbol``; the roll table is on
    ``frame.attrs["rolls"]`` (and :func:`rolls`).

    ``hdi_lab.continuous("ES.c.0", "ohlcv-1d", "2020-01-01", "2024-07-01", adjust="ratio")``. ``root`` is
    ``ES``, ``ES.FUT`` or a continuous symbol (``ES.c.0`` calendar, ``ES.v.0`` volume, ``ES.n.0`` open interest:
    its letter picks ``roll``, its number ``rank``). ``roll``: ``calendar`` (front by expiration, rolling
    ``offset`` sessions before its last trade session), ``volume`` or ``open_interest`` (the highest in the
    previous session; open interest from the ``statistics`` schema); decisions use only what was known at the
    previous session's close and never roll back to an earlier expiry. ``rank``: 0 the front, 1 the next...
    ``adjust``: ``none``, ``difference`` or ``ratio``, backward from the latest contract (its prices stay raw;
    the gap is between both contracts' closes on the last session before the roll); volumes are never
    adjusted. See :mod:`hdi_lab.core.continuous` (research view vs as-of view).

    Raises ValidationError (a bad root, schema, range, rank, offset, roll or adjust; no contracts of the root
    stored or listed in the range; open interest missing for ``open_interest``; a rank above the contracts
    listed together; a roll without prices to adjust by), ConfigError and StorageError.
    """
    return with_session(
        session,
        lambda s: chain.continuous(
            s,
            root,
            schema,
            start,
            end,
            rank=rank,
            roll=roll,
            offset=offset,
            adjust=adjust,
            dataset=dataset,
            price_type=price_type,
        ),
    )


def rolls(
    root: str,
    schema: str | Schema,
    start: object,
    end: object,
    *,
    rank: int = 0,
    roll: str = "calendar",
    offset: int = 0,
    adjust: str = "none",
    dataset: str | None = None,
    session: HdiSession | None = None,
) -> pd.DataFrame:
    """The roll table of :func:`continuous` with the same arguments: one row per roll in ``[start, end)``
    with session, from_instrument, to_instrument, from_price, to_price, difference, ratio, from_symbol,
    to_symbol and ts_roll (the first instant of the new contract). Bars are not read.

    Raises what :func:`continuous` raises (ValidationError, ConfigError, StorageError).
    """
    return with_session(
        session,
        lambda s: chain.rolls(
            s, root, schema, start, end, rank=rank, roll=roll, offset=offset, adjust=adjust, dataset=dataset
        ),
    )


def sql(
    text: str,
    params: Mapping[str, Any] | Sequence[Any] | None = None,
    *,
    session: HdiSession | None = None,
) -> pd.DataFrame:
    """Run SQL with bound parameters against the hdi_lab database."""
    return with_session(session, lambda s: retrieval.sql(s, text, params))


def watch(
    provider: str,
    *,
    schema: str | Schema,
    symbols: str | Sequence[str],
    since: object,
    dataset: str | None = None,
    stype_in: str | SType = SType.RAW_SYMBOL,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
    session: HdiSession | None = None,
) -> Subscription:
    """Subscribe to market data from ``since`` on, stored in the database for every user and the scheduler.

    ``hdi_lab.watch("databento", dataset="GLBX.MDP3", schema="ohlcv-1m", symbols="ES.c.0",
    stype_in="continuous", since="2020-01-01", name="es_1m")``. The request is validated like an ingest of
    its first day (nothing is fetched); adding the same subscription again returns the stored one.
    ``options`` (a JSON object) is kept with it for what runs after its updates: ``{"features": ["momentum_v1"],
    "interval": "1d", "publish": True}`` recomputes those feature sets (and loads the Feast online store) after
    an update changed its data (see :data:`hdi_lab.core.subscriptions.OPTIONS`).

    Raises ValidationError (a bad request or option, an unknown feature set; the same request or name
    subscribed with other settings),
    ConfigError or ProviderError (the provider cannot plan, e.g. no Databento API key) and StorageError.
    """
    req = make_request(provider, schema=schema, symbols=symbols, dataset=dataset, stype_in=stype_in)
    from hdi_lab.after_update import validate_options

    opts = validate_options(options)
    return with_session(session, lambda s: subscriptions.add(s, req, since, name=name, options=opts)[0])


def watches(*, session: HdiSession | None = None) -> pd.DataFrame:
    """Every subscription, by id: id, name, provider, dataset, schema, stype_in, symbols (comma-separated),
    since, created_at (UTC), options. Raises StorageError."""
    return with_session(session, lambda s: subscriptions.frame(subscriptions.list_all(s)))


def unwatch(which: int | str, *, session: HdiSession | None = None) -> Subscription:
    """Remove the subscription with this id or name; returns it (the data stored for it stays).

    Raises ValidationError when there is no such subscription, StorageError."""
    return with_session(session, lambda s: subscriptions.remove(s, which))


def gaps(
    schema: str | Schema,
    symbols: str | Sequence[str],
    start: object,
    end: object,
    *,
    dataset: str | None = None,
    stype_in: str | SType = SType.RAW_SYMBOL,
    partial: float = gap_finder.PARTIAL,
    session: HdiSession | None = None,
) -> pd.DataFrame:
    """The trading sessions of ``symbols`` (session dates in ``[start, end)``) whose data is missing: one row per
    symbol and session, columns symbol, instrument_id, session, reason (``not_ingested``, ``empty`` or
    ``partial``), expected and present (bars). Sessions the exchange calendar closed are never gaps.

    ``hdi_lab.gaps("ohlcv-1m", "ESH4", "2024-01-01", "2024-02-01", dataset="GLBX.MDP3")``. A bar session with
    fewer bars than ``partial`` (default half) of the expected ones is ``partial``; ``partial=0`` turns that off.
    See :mod:`hdi_lab.core.gaps`.

    Raises ValidationError (a bad schema, stype_in, range or partial; no symbols; no dataset given and none or
    several known for the symbols; a dataset without a known calendar), ConfigError and StorageError.
    """
    return with_session(
        session,
        lambda s: gap_finder.gaps(s, schema, symbols, start, end, dataset=dataset, stype_in=stype_in, partial=partial),
    )


def update(
    *which: int | str,
    until: object = None,
    dry_run: bool = False,
    allow_cost: bool = False,
    session: HdiSession | None = None,
) -> UpdateReport:
    """Bring every subscription (or those named by id or name) current: the sessions not stored since its
    ``since`` up to ``until`` (default: what the vendor has available; today for sample and IB), the empty
    or partial ones, and the days the vendor revised (re-fetched with force), as one chunk plan.

    ``hdi_lab.update()``, ``hdi_lab.update("es_1m", until="2024-03-01", dry_run=True)``. Resumable and
    idempotent: an up-to-date set does nothing. See :mod:`hdi_lab.core.update`. Then, for each subscription
    whose rows changed, what its options ask: its feature sets recomputed from the first changed bar and
    published to the Feast online store (:mod:`hdi_lab.after_update`; reported in each plan's
    ``after``).

    Raises ValidationError (an unknown subscription, a bad until, a range the provider refuses; an unknown
    feature set or a gap in the bars after the update), CostLimitError (above the cost limit without
    ``allow_cost``), ConfigError, ProviderError, DataFormatError and StorageError."""
    return with_session(session, lambda s: _update(s, which, until, dry_run, allow_cost))


def _update(
    session: HdiSession, which: Sequence[int | str], until: object, dry_run: bool, allow_cost: bool
) -> UpdateReport:
    from hdi_lab import after_update  # features and Feast load only for an update

    done = updater.update(session, which, until=until, dry_run=dry_run, allow_cost=allow_cost)
    return after_update.run(session, done)


def report(
    date: object = None,
    *,
    start: object = None,
    end: object = None,
    thresholds: reporter.Thresholds | Mapping[str, Any] | None = None,
    session: HdiSession | None = None,
) -> reporter.Report:
    """The daily operations report of ``date``'s UTC day (default today) or of the days ``start`` to ``end``
    (exclusive): ingests, gaps left per subscription, quarantine by rule, vendor conditions and data-quality
    findings, with a ``status`` (green / amber / red) and its ``reasons``.

    ``hdi_lab.report("2024-01-03").status``; ``thresholds={"jump_sigmas": 8}`` changes a quality threshold (see
    :class:`hdi_lab.core.report.Thresholds` for each and its default); ``.to_dict()`` is the JSON form.

    Raises ValidationError (a bad date, range or threshold), ConfigError and StorageError.
    """
    return with_session(session, lambda s: reporter.report(s, date, start=start, end=end, thresholds=thresholds))
