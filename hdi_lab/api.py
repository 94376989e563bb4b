"""The Python API: ``hdi_lab.ingest`` / ``hdi_lab.query`` / ``hdi_lab.sql`` build requests for the core."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hdi_lab.config import load_settings
from hdi_lab.core import continuous as chain
from hdi_lab.core import export as exporter
from hdi_lab.core import gaps as gap_finder
from hdi_lab.core import ingestion, retrieval, subscriptions
from hdi_lab.core import live as live_core
from hdi_lab.core import report as reporter
from hdi_lab.core import update as updater
from hdi_lab.core.executors import DaskExecutor, executor_of
from hdi_lab.core.retrieval import PriceType
from hdi_lab.core.session import HdiSession, with_session
from hdi_lab.core.subscriptions import Subscription
from hdi_lab.core.update import UpdateReport
from hdi_lab.errors import MissingDependency, ValidationError
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
    "live",
    "live_sessions",
    "live_stop",
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
    executor: str | None = None,
    scheduler: Any = None,
    **request: Any,
) -> IngestReport:
    """Ingest market data and return the :class:`IngestReport`.

    ``hdi_lab.ingest(provider="file", path="x.dbn.zst")`` or ``hdi_lab.ingest(provider="sample",
    schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-05")``. Chunks already
    ingested are skipped unless ``force=True``; ``dry_run=True`` only plans and estimates.
    ``executor="dask"`` runs the chunks on a Dask cluster: ``scheduler="tcp://host:8786"`` or a
    ``distributed.Client`` (default: ``HDI_DASK_SCHEDULER``); its workers connect to the same database
    (see :mod:`hdi_lab.core.cluster`; ``pip install 'hdi_lab[dask]'``).

    Raises what :func:`hdi_lab.core.ingestion.run` raises (ValidationError, also for a bad executor or
    scheduler; CostLimitError, IngestError, DataFormatError, StorageError, ProviderError, ClusterError,
    MissingDependency).
    """
    req = make_request(provider, **request)

    def run(s: HdiSession) -> IngestReport:
        return ingestion.run(req, s, progress=progress, executor=executor_of(executor, scheduler, s.settings))

    return with_session(session, run)


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
    ``ts_event`` is their first column. Repeated reads are served by the read cache under ``HDI_HOME/cache`` (never
    stale: see :mod:`hdi_lab.core.cache`; ``HDI_CACHE=off`` reads every row from the database).

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
    cron: str | None = None,
    session: HdiSession | None = None,
) -> Subscription:
    """Subscribe to market data from ``since`` on, stored in the database for every user and the scheduler.

    ``hdi_lab.watch("databento", dataset="GLBX.MDP3", schema="ohlcv-1m", symbols="ES.c.0",
    stype_in="continuous", since="2020-01-01", name="es_1m")``. The request is validated like an ingest of
    its first day (nothing is fetched); adding the same subscription again returns the stored one.
    ``options`` (a JSON object) is kept with it for what runs after its updates: ``{"features": ["momentum_v1"],
    "interval": "1d", "publish": True}`` recomputes those feature sets (and loads the Feast online store) after
    an update changed its data (see :data:`hdi_lab.core.subscriptions.OPTIONS`). ``cron="30 22 * * mon-fri"``
    (five cron fields, UTC; the ``cron`` option) says when ``hdi scheduler run`` updates it (default: 30 minutes
    after its exchange's close).

    Raises ValidationError (a bad request or option, a bad cron expression, an unknown feature set; the same
    request or name subscribed with other settings; cron given both ways),
    ConfigError or ProviderError (the provider cannot plan, e.g. no Databento API key) and StorageError.
    """
    req = make_request(provider, schema=schema, symbols=symbols, dataset=dataset, stype_in=stype_in)
    from hdi_lab.after_update import validate_options

    given = options
    if cron is not None and (options is None or isinstance(options, Mapping)):  # other options: refused below
        if options is not None and options.get("cron") not in (None, cron):
            raise ValidationError("cron is given twice (cron= and options['cron']): give it once")
        given = {**(options or {}), "cron": cron}
    opts = validate_options(given)
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
    executor: str | None = None,
    scheduler: Any = None,
    session: HdiSession | None = None,
) -> UpdateReport:
    """Bring every subscription (or those named by id or name) current: the sessions not stored since its
    ``since`` up to ``until`` (default: what the vendor has available; today for sample and IB), the empty
    or partial ones, and the days the vendor revised (re-fetched with force), as one chunk plan.

    ``hdi_lab.update()``, ``hdi_lab.update("es_1m", until="2024-03-01", dry_run=True)``. Resumable and
    idempotent: an up-to-date set does nothing. See :mod:`hdi_lab.core.update`. Then, for each subscription
    whose rows changed, what its options ask: its feature sets recomputed from the first changed bar (on the same
    Dask cluster with ``executor="dask"``) and published to the Feast online store (:mod:`hdi_lab.after_update`;
    reported in each plan's ``after``).

    Raises ValidationError (an unknown subscription, a bad until, a range the provider refuses; an unknown
    feature set or a gap in the bars after the update; a bad executor or scheduler), CostLimitError (above the
    cost limit without ``allow_cost``), ConfigError, ProviderError, DataFormatError, StorageError and, with
    ``executor="dask"`` (the chunks on a Dask cluster, as :func:`ingest`), ClusterError and MissingDependency."""
    return with_session(
        session,
        lambda s: _update(s, which, until, dry_run, allow_cost, executor_of(executor, scheduler, s.settings)),
    )


def _update(
    session: HdiSession,
    which: Sequence[int | str],
    until: object,
    dry_run: bool,
    allow_cost: bool,
    executor: DaskExecutor | None,
) -> UpdateReport:
    from hdi_lab import after_update  # features and Feast load only for an update

    done = updater.update(session, which, until=until, dry_run=dry_run, allow_cost=allow_cost, executor=executor)
    return after_update.run(session, done, executor=executor)


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


def live(
    provider: str = "databento",
    *,
    schema: str | Sequence[str],
    symbols: str | Sequence[str],
    dataset: str | None = None,
    stype_in: str | SType = SType.RAW_SYMBOL,
    start: object = None,
    session: HdiSession | None = None,
    on_commit: Callable[[live_core.LiveCommit], None] | None = None,
    heartbeat_interval_s: int = 10,
    features: str | Sequence[str] | None = None,
    online: bool | None = None,
    **tuning: Any,
) -> live_core.LiveHandle:
    """Stream live data into the same tables as history, in background threads; returns the session's handle
    (``status()``, ``stop()``, ``wait()``).

    ``hdi_lab.live("databento", dataset="GLBX.MDP3", schema="trades,ohlcv-1s", symbols="ES.c.0",
    stype_in="continuous")``; ``hdi_lab.live("ib", schema="ohlcv-5s", symbols="AAPL:STK:SMART")`` (IB's real-time
    5-second bars; ``ohlcv-1m``: keep-up-to-date 1-minute bars; see :mod:`hdi_lab.providers.ib.live`). Records go
    through the ingestion core's decode -> validate -> load path in small batches (committed at most 100 ms after
    their first record), with the historical path's keys, so a later historical ingest of the same day stores
    nothing twice. A lost connection is reconnected with intraday replay from the last stored ``ts_event`` (IB's
    real-time bars: the gap backfilled by paced historical requests); ``start`` replays from an earlier time of the
    day. ``on_commit`` is called
    (on the writer's thread) with each committed batch (:class:`hdi_lab.core.live.LiveCommit`). ``tuning`` is
    passed to :func:`hdi_lab.core.live.start` (``flush_s``, ``max_batch``, ``buffer_size``, ``heartbeat_timeout``,
    ``max_reconnects``, ``backoff``).

    ``features`` (``["momentum_v1"]``, or ``"momentum_v1,trend_v1"``) keeps those feature sets up to date per
    closed bar of the ``ohlcv-1s`` / ``ohlcv-5s`` / ``ohlcv-1m`` bars the session stores, through the incremental
    resume path (:mod:`hdi_lab.features.live`; ``handle.features`` logs each update); the session's stop returns
    once they are computed.

    ``online`` (with ``features``) keeps the Feast online store current: after each update the latest rows of its
    instruments are written into the feature repo's online store (view ``<set>_<interval>``, e.g.
    ``momentum_v1_1s``, registered first if needed), on a thread of its own (:mod:`hdi_lab.featurestore.live`;
    ``handle.online`` logs each write, a failed one is logged and noted in the status, the session carries on).
    By default (``None``) it is on when Feast is set up for the database (the ``feast_repo`` setting, or a
    registry a publish created: :func:`hdi_lab.featurestore.repo.in_use`); ``True`` turns it on, ``False`` off.

    Without ``session`` the handle opens its own (closed when the session ends).

    Raises ValidationError (a bad request, an unknown feature set, features without a bar schema, ``online=True``
    without features), MissingDependency (``online=True`` without the feast extra), ConfigError (no API key, a bad
    gateway setting) and StorageError.
    """
    settings = session.settings if session is not None else load_settings()
    default = settings.databento_dataset
    request = live_core.make_request(
        provider,
        dataset=dataset,
        schema=schema,
        symbols=symbols,
        stype_in=str(stype_in),
        start=start,
        default_dataset=default,
    )
    if online and not features:
        raise ValidationError(
            "online=True writes live indicators into the Feast online store: give features= too, "
            "e.g. features=['momentum_v1']"
        )
    if online and importlib.util.find_spec("feast") is None:
        raise MissingDependency("feast", "feast")
    if not features:
        return live_core.start(
            request, session, heartbeat_interval_s=heartbeat_interval_s, on_commit=on_commit, **tuning
        )
    from hdi_lab.features import live as live_features  # pandas-ta loads only for live indicators

    bars = {s: live_features.LIVE_INTERVALS[str(s)] for s in request.schemas if str(s) in live_features.LIVE_INTERVALS}
    if not bars:
        raise ValidationError(
            f"features={features!r} need bars: add one of {', '.join(live_features.LIVE_INTERVALS)} to schema"
        )
    follower = live_features.LiveFeatures(
        live_features.parse_sets(features), request.symbols, session=HdiSession(settings), dataset=request.dataset
    )
    writer = None
    try:
        from hdi_lab.featurestore import repo as feast_repo

        if online or (online is None and feast_repo.in_use(follower.session)):
            from hdi_lab.featurestore.live import LiveOnline

            writer = LiveOnline(follower)
    except BaseException:
        follower.close()
        follower.session.close()
        raise

    def committed(commit: live_core.LiveCommit) -> None:
        for bar_schema, interval in bars.items():
            rec = commit.records.get(bar_schema)
            if rec is not None and len(rec):
                follower.bars_closed(interval, rec["instrument_id"], rec["ts_event"])
        if on_commit is not None:
            on_commit(commit)

    def closed() -> None:
        follower.close()  # its pending updates reach the online writer, which writes them before it ends
        if writer is not None:
            writer.close()
        follower.session.close()

    try:
        handle = live_core.start(
            request, session, heartbeat_interval_s=heartbeat_interval_s, on_commit=committed, on_close=closed, **tuning
        )
    except BaseException:
        closed()
        raise
    handle.features = follower
    handle.online = writer
    if writer is not None:
        writer.report_to(handle.note)  # its failures in the session's notes
    return handle


def live_sessions(session: HdiSession | None = None) -> pd.DataFrame:
    """The live sessions of the database, newest first (``state``: running, lost, stopped or failed; counts of
    records, inserted, duplicates, quarantined, replayed, reconnects; the last ts_event stored).

    Raises StorageError."""
    return with_session(session, live_core.sessions)


def live_stop(*ids: int, session: HdiSession | None = None) -> list[int]:
    """Ask running live sessions (``ids``, or all) to stop gracefully, wherever they run; returns the ids asked.

    Raises ValidationError for an id that is not running, StorageError."""
    return with_session(session, lambda s: live_core.request_stop(s, list(ids) or None))
