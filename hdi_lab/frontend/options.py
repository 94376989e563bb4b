"""One declaration of every option the front ends take: the ``hdi`` CLI and the IPython magics build their
argument parsers from :data:`OPTIONS`, so a name, type, choice list, default or help text is written once.

>>> add(parser, "symbols", "start", "end")          # argparse: the CLI
>>> @magic_arguments(*INGEST, *MAGIC)               # IPython: a magic's parser and its ``%magic?`` help

A command's options are listed once too (:data:`INGEST`, :data:`QUERY`, :data:`PUBLISH` ...); where the CLI and
a magic legitimately differ, the difference is declared here, next to the list (:data:`QUERY_RANGE_CLI` /
:data:`QUERY_RANGE_MAGIC`, :data:`PUBLISH_SET_MAGIC`). The widgets take their choice lists from here as well.

This module is imported by ``%load_ext hdi_lab``: it imports argparse and hdi_lab's leaves only (IPython on use).
"""

from __future__ import annotations

import argparse
import builtins
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from hdi_lab.core.executors import EXECUTORS
from hdi_lab.core.session import LIVE_PROVIDERS, PROVIDERS
from hdi_lab.schemas import ADJUSTS, ALIGNS, EXPORT_FORMATS, INTERVALS, PRICE_TYPES, SCHEMAS, VIEWS, Schema, SType

if TYPE_CHECKING:
    import pandas as pd

    from hdi_lab.core.executors import DaskExecutor
    from hdi_lab.core.export import ExportProgress, ExportReport
    from hdi_lab.core.ingestion import ProgressFn
    from hdi_lab.core.live import LiveCommit, LiveHandle
    from hdi_lab.core.report import Report
    from hdi_lab.core.session import HdiSession
    from hdi_lab.core.subscriptions import Subscription
    from hdi_lab.core.update import UpdateReport
    from hdi_lab.featurestore.publish import PublishReport
    from hdi_lab.schemas import IngestReport, IngestRequest

__all__ = [
    "ADJUSTS",
    "ALIGNS",
    "BAR_SCHEMAS",
    "COMPARE",
    "EXECUTORS",
    "EXPORT",
    "EXPORT_CLI",
    "EXPORT_MAGIC",
    "FEATURES_COMPUTE",
    "GAPS",
    "GAPS_CLI",
    "GAPS_MAGIC",
    "GLOBAL",
    "INGEST",
    "LIVE",
    "LIVE_ACTIONS",
    "LIVE_MAGIC",
    "LIVE_PROVIDERS",
    "MAGIC",
    "OPTIONS",
    "PRICE_TYPES",
    "PROVIDERS",
    "PUBLISH",
    "PUBLISH_SET_MAGIC",
    "QUERY",
    "QUERY_CLI",
    "QUERY_MAGIC",
    "QUERY_RANGE_CLI",
    "QUERY_RANGE_MAGIC",
    "REPORT",
    "REPORT_FORMATS",
    "SCHEDULER_RUN",
    "SCHEMAS",
    "STYPES",
    "UPDATE",
    "VIEWS",
    "WATCH",
    "WATCH_ACTIONS",
    "WATCH_MAGIC",
    "Option",
    "OptionRef",
    "add",
    "count",
    "executor",
    "export",
    "fraction",
    "gaps",
    "ingest",
    "ingest_request",
    "interval_help",
    "live",
    "magic_arguments",
    "one_of",
    "option",
    "publish",
    "query",
    "report",
    "update",
    "watch",
]

#: the bar schemas (``ohlcv-*``)
BAR_SCHEMAS: tuple[str, ...] = tuple(s.value for s in Schema if s.is_bar)
#: how requested symbols are interpreted (``--stype-in``)
STYPES: tuple[str, ...] = tuple(s.value for s in SType)
#: the actions of ``hdi watch ACTION`` and ``%hdi_watch ACTION``
WATCH_ACTIONS: tuple[str, ...] = ("add", "list", "remove")
#: the actions of ``hdi live ACTION`` and ``%hdi_live ACTION``
LIVE_ACTIONS: tuple[str, ...] = ("start", "status", "stop")
#: the formats of ``hdi report --format``
REPORT_FORMATS: tuple[str, ...] = ("text", "html", "json")


def count(text: str) -> int:
    """argparse type of ``--limit``-like options: a whole number >= 0 (what 0 means is the option's).

    Raises :class:`argparse.ArgumentTypeError` (argparse's one-line message) for anything else.
    """
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number: give 0 or more") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative: give 0 or more")
    return n


def fraction(text: str) -> float:
    """argparse type of ``--partial``: a number from 0 to 1.

    Raises :class:`argparse.ArgumentTypeError` (argparse's one-line message) for anything else.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: give a fraction from 0 to 1, e.g. 0.5") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not from 0 to 1: give a fraction, e.g. 0.5")
    return value


def one_of(values: Sequence[str], default: str | None = None) -> str:
    """``"one of a, b, c (default a)"``: the help of an option with choices."""
    return f"one of {', '.join(values)}" + (f" (default {default})" if default is not None else "")


def interval_help(default: str) -> str:
    """``"bar interval: 1s, 1m, 5m, 15m, 1h or 1d (default 1d)"``, from :data:`hdi_lab.schemas.INTERVALS`."""
    *head, last = INTERVALS
    return f"bar interval: {', '.join(head)} or {last} (default {default})"


def _rollup_help() -> str:
    coarser = [name for name, seconds in INTERVALS.items() if seconds > INTERVALS["1m"]]
    return f"roll bars up into buckets: {', '.join(coarser)}... (bars only)"


@dataclass(frozen=True)
class Option:
    """One option as ``ArgumentParser.add_argument`` takes it (a field left None is not passed)."""

    flags: tuple[str, ...]  # ("--symbols",), ("-o", "--out") or ("schema",) for a positional
    help: str | None = None
    dest: str | None = None
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    default: Any = None
    metavar: str | None = None
    action: str | builtins.type[argparse.Action] | None = None  # e.g. argparse.BooleanOptionalAction: --x / --no-x
    nargs: str | None = None
    required: bool = False

    @property
    def positional(self) -> bool:
        return not self.flags[0].startswith("-")

    @property
    def name(self) -> str:
        """The attribute the parsed value lands in (argparse's ``dest``)."""
        if self.dest is not None:
            return self.dest
        return self.flags[-1].lstrip("-").replace("-", "_")

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``add_argument``."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "flags"}
        if self.positional:
            given.pop("dest")  # argparse names a positional by its flag
        if not given["required"]:
            given.pop("required")
        return {k: v for k, v in given.items() if v is not None}

    def but(self, **changes: Any) -> Option:
        """This option with ``changes``: how a declared difference between commands is written."""
        return dataclasses.replace(self, **changes)

    def as_positional(self, *, optional: bool = False) -> Option:
        """This option taken positionally (``--symbols`` -> ``SYMBOLS``); ``optional``: it may be left out."""
        return self.but(
            flags=(self.name,),
            dest=None,
            required=False,
            nargs="?" if optional else None,
            metavar=self.metavar or self.name.upper(),
        )

    def as_required(self) -> Option:
        return self.but(required=True)


_DATE = "date or ISO timestamp (UTC)"

#: every option of the ``hdi`` CLI and the magics, by name
OPTIONS: dict[str, Option] = {
    # hdi (before the command)
    "database_url": Option(
        ("--database-url",), help="PostgreSQL URL (default: $HDI_DATABASE_URL, else the embedded server)"
    ),
    "home": Option(("--home",), help="data home (default: $HDI_HOME or the platform data dir)"),
    # what to fetch or read
    "paths": Option(("paths",), nargs="*", metavar="PATH", help="DBN files or folders (file provider)"),
    "provider": Option(
        ("--provider",), default="file", choices=PROVIDERS, metavar="PROVIDER", help=one_of(PROVIDERS, "file")
    ),
    "dataset": Option(("--dataset",), help="e.g. GLBX.MDP3 (default: from the symbols or the file)"),
    "dataset_filter": Option(("--dataset",), help="restrict symbol resolution to this dataset, e.g. GLBX.MDP3"),
    "schema": Option(("--schema",), choices=SCHEMAS, metavar="SCHEMA", help=one_of(SCHEMAS)),
    "symbols": Option(("--symbols",), metavar="SYMBOLS", help="comma-separated symbols"),
    "stype_in": Option(
        ("--stype-in",),
        default=SType.RAW_SYMBOL.value,
        choices=STYPES,
        metavar="STYPE",
        help=one_of(STYPES, SType.RAW_SYMBOL.value),
    ),
    "start": Option(("--start",), metavar="START", help=f"{_DATE}, inclusive"),
    "end": Option(("--end",), metavar="END", help=f"{_DATE}, exclusive"),
    # how to ingest
    "force": Option(("--force",), action="store_true", help="re-load chunks already ingested (no duplicates)"),
    "dry_run": Option(("--dry-run",), action="store_true", help="plan and estimate only"),
    "allow_cost": Option(("--allow-cost",), action="store_true", help="run even above the configured cost limit"),
    "quiet": Option(("--quiet",), action="store_true", help="no progress bar"),
    "executor": Option(
        ("--executor",),
        choices=EXECUTORS,
        metavar="EXECUTOR",
        help=f"where the chunks run: {one_of(EXECUTORS, 'local')}; dask: on the Dask cluster of --scheduler "
        "(workers connect to the same database)",
    ),
    "scheduler": Option(
        ("--scheduler",),
        metavar="ADDRESS",
        help="Dask scheduler, e.g. tcp://scheduler:8786 (implies --executor dask; default: $HDI_DASK_SCHEDULER)",
    ),
    # how to read
    "price_type": Option(
        ("--price-type",), choices=PRICE_TYPES, default="float", help="float (default) or fixed (int64, 1e-9)"
    ),
    "columns": Option(("--columns",), help="comma-separated columns to keep"),
    "rollup": Option(("--interval",), help=_rollup_help()),
    "adjust": Option(
        ("--adjust",),
        choices=ADJUSTS,
        metavar="ADJUST",
        help=f"continuous symbols (ES.c.0, ES.v.0, ES.n.0) rolled by hdi_lab's rules and back-adjusted: "
        f"{one_of(ADJUSTS)} (default: as stored, unadjusted)",
    ),
    "align": Option(
        ("--align",),
        choices=ALIGNS,
        default=ALIGNS[0],
        metavar="ALIGN",
        help="bars: buckets from midnight UTC (utc, the default) or from each trading session's open (session: "
        "--interval 1d gives one bar per session; the sessions dated in the range, bars outside them left out)",
    ),
    "indicators": Option(
        ("--indicators",),
        metavar="COLUMNS",
        help="bars only: add indicator columns computed on the fly per instrument, e.g. "
        "rsi_14,sma_20 (see hdi_lab.indicators)",
    ),
    "format": Option(("--format",), choices=("table", "csv", "parquet"), default="table"),
    "output": Option(("--output",), help="file to write (required for parquet)"),
    "rows_limit": Option(("--limit",), type=count, default=20, help="rows shown by --format table (0 = all)"),
    # exports
    "export_format": Option(
        ("--format",),
        choices=EXPORT_FORMATS,
        default="parquet",
        help=f"{one_of(EXPORT_FORMATS, 'parquet')}: one file per UTC day and symbol (arrow: Arrow IPC; csv: ISO UTC "
        "timestamps)",
    ),
    "export_output": Option(
        ("--output",),
        required=True,
        metavar="DIR",
        help="folder of the partitions date=YYYY-MM-DD/symbol=SYMBOL/ (created; exporting again replaces them)",
    ),
    # what is stored
    "recent": Option(("--recent",), type=count, default=10, help="ingest-log rows to show (default 10)"),
    "pattern": Option(("pattern",), nargs="?", default="", help="case-insensitive substring (default: all)"),
    "symbols_limit": Option(("--limit",), type=count, default=200, help="at most this many rows (default 200)"),
    # quarantine
    "entry_status": Option(("--status",), choices=("open", "resolved", "superseded", "all"), default="open"),
    "rule": Option(("--rule",)),
    "entries_limit": Option(("--limit",), type=count, default=100),
    "entry_id": Option(("id",), type=int),
    "entry_ids": Option(("ids",), type=int, nargs="*", help="entry ids (default: all open)"),
    "auto": Option(
        ("--auto",),
        action="store_true",
        help="retry every open entry whose rule now passes (no ids; exit 0 when the others stay open, "
        "e.g. from cron); unknown instruments are also retried by the ingest that makes them known",
    ),
    # the database server, settings
    "db_action": Option(
        ("action",),
        choices=("status", "start", "stop", "info"),
        help="info: server, TimescaleDB or plain PostgreSQL, hypertables, compression, policies",
    ),
    "config_action": Option(("action",), choices=("show",)),
    "cache_action": Option(
        ("action",),
        choices=("status", "clear"),
        help="status: the files and bytes the read cache holds; clear: delete them (the database is untouched)",
    ),
    # feature sets
    "feature_set": Option(
        ("--set",),
        dest="feature_set",
        required=True,
        metavar="SET",
        help="feature set, e.g. momentum_v1 (see `hdi features list`; published as its Feast feature service)",
    ),
    "interval": Option(("--interval",), default="1d", help=interval_help("1d")),
    "bars_start": Option(
        ("--start",), metavar="START", help="first bar (open) to compute, inclusive (default: the first stored bar)"
    ),
    "bars_end": Option(("--end",), metavar="END", help="bars opening before this, exclusive (default: now)"),
    "max_gap": Option(("--max-gap",), help="refuse instruments with a longer gap between bars, e.g. 4D or 2h"),
    "view": Option(
        ("--view",),
        choices=VIEWS,
        metavar="VIEW",
        help="with --adjust: research (one adjustment from the latest roll up to --end; values change when a new "
        "roll comes) or as_of (each bar with the rolls known at its time; stored values never change): "
        f"{one_of(VIEWS, VIEWS[0])}",
    ),
    "no_compute": Option(
        ("--no-compute",), dest="compute", action="store_false", help="publish the rows already stored"
    ),
    "repo": Option(("--repo",), help="Feast feature repo (default: $HDI_FEAST_REPO or hdi_lab's feature_repo/)"),
    # compare
    "bar_schema": Option(("schema",), choices=BAR_SCHEMAS, metavar="SCHEMA", help=one_of(BAR_SCHEMAS)),
    "left": Option(("--left",), required=True, help="symbol of the first source, e.g. ESH4"),
    "left_dataset": Option(("--left-dataset",), help="e.g. GLBX.MDP3"),
    "right": Option(("--right",), required=True, help="symbol of the second source, e.g. ES:FUT:CME:USD:202403"),
    "right_dataset": Option(("--right-dataset",), default="IB", help="default IB"),
    "price_tol": Option(("--price-tol",), type=float, default=0.0, help="absolute price tolerance (default 0: exact)"),
    "volume_tol": Option(
        ("--volume-tol",), type=float, default=0.0, help="relative volume tolerance (default 0: exact)"
    ),
    "diffs_limit": Option(("--limit",), type=count, default=20, help="differences shown (0 = all)"),
    # subscriptions
    "since": Option(
        ("--since",), metavar="DATE", help="keep the data current from this date (UTC) on, e.g. 2020-01-01"
    ),
    "watch_name": Option(("--name",), help="a unique name to refer to the subscription by (not all digits)"),
    "watch_action": Option(("action",), choices=WATCH_ACTIONS, metavar="ACTION", help=one_of(WATCH_ACTIONS)),
    "watch_target": Option(("target",), metavar="ID|NAME", help="the subscription's id or name"),
    "watch_features": Option(
        ("--features",),
        metavar="SET[,SET]",
        help="feature sets recomputed after an update changed the data, e.g. momentum_v1",
    ),
    "watch_publish": Option(
        ("--publish",), action="store_true", help="after an update, load the Feast online store with --features"
    ),
    "watch_cron": Option(
        ("--cron",),
        metavar="'M H DOM MON DOW'",
        help="when `hdi scheduler run` updates it: five cron fields in UTC, e.g. '30 22 * * mon-fri' "
        "(default: 30 minutes after the exchange's close)",
    ),
    # updates
    "update_targets": Option(
        ("targets",), nargs="*", metavar="ID|NAME", help="subscriptions to update, by id or name (default: all)"
    ),
    "until": Option(
        ("--until",),
        metavar="DATE",
        help=f"{_DATE}, exclusive: update up to here (default: the last whole UTC day the vendor has available; "
        "today for sample and IB)",
    ),
    # the scheduler
    "wait": Option(
        ("--wait",),
        action="store_true",
        help="when another scheduler runs on this database, wait and take over when it stops (default: exit)",
    ),
    "retries": Option(("--retries",), type=count, default=3, help="retries of a failed update (default 3)"),
    "backoff": Option(
        ("--backoff",),
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait before the first retry, doubled for each next one (default 60)",
    ),
    # gaps
    "partial": Option(
        ("--partial",),
        type=fraction,
        metavar="FRACTION",
        help="a bar session with fewer bars than this fraction of its expected bars is partial "
        "(default 0.5; 0 reports only empty and not ingested sessions)",
    ),
    # the operations report
    "report_date": Option(("--date",), metavar="DATE", help="the UTC day to report on (default: today)"),
    "report_start": Option(("--start",), metavar="START", help="first UTC day of a range, inclusive"),
    "report_end": Option(("--end",), metavar="END", help="last day of the range, exclusive (default: START + 1 day)"),
    "report_format": Option(("--format",), choices=REPORT_FORMATS, default="text", help=one_of(REPORT_FORMATS, "text")),
    "report_output": Option(("--output",), metavar="FILE", help="write the report to FILE (default: print it)"),
    "report_threshold": Option(
        ("--threshold",),
        action="append",
        metavar="NAME=VALUE",
        help="a quality threshold, e.g. jump_sigmas=8 or stale_bars=60 (repeatable; the names and defaults are "
        "hdi_lab.core.report.Thresholds')",
    ),
    # live sessions
    "live_action": Option(("action",), choices=LIVE_ACTIONS, metavar="ACTION", help=one_of(LIVE_ACTIONS)),
    "live_schema": Option(
        ("--schema",),
        metavar="SCHEMA[,SCHEMA]",
        help=f"comma-separated schemas streamed together, e.g. trades,ohlcv-1s ({', '.join(SCHEMAS)}; ib: "
        "ohlcv-5s real-time bars, ohlcv-1m)",
    ),
    "live_start": Option(
        ("--start",),
        metavar="START",
        help=f"{_DATE}: intraday replay from here (Databento: within the last 24 hours; default: from now)",
    ),
    "heartbeat": Option(
        ("--heartbeat",),
        type=int,
        default=10,
        metavar="SECONDS",
        help="heartbeat interval asked of the gateway; silence for twice as long plus 5 s is a dead connection "
        "(reconnected with intraday replay) (default 10)",
    ),
    "live_online": Option(
        ("--online",),
        action=argparse.BooleanOptionalAction,
        help="write the live values of --features into the Feast online store (--no-online: never; default: when "
        "Feast is set up for the database: HDI_FEAST_REPO, or a registry a publish created)",
    ),
    "live_ids": Option(
        ("ids",), type=int, nargs="*", metavar="ID", help="live session ids (default: every running one)"
    ),
    # every magic
    "out": Option(("-o", "--out"), metavar="NAME", help="also store the result in the user namespace as NAME"),
    "verbose": Option(("--verbose",), action="store_true", help="on an hdi_lab error, show the full traceback"),
}

#: an option by name, or an :class:`Option` derived from one (a declared difference)
OptionRef: TypeAlias = "str | Option"


def option(ref: OptionRef) -> Option:
    """The declaration ``ref`` names (an :class:`Option` is itself); raises ``KeyError`` for an unknown name."""
    return ref if isinstance(ref, Option) else OPTIONS[ref]


# -- each command's options, in the order its help lists them ----------------------------------------

GLOBAL: tuple[OptionRef, ...] = ("database_url", "home")
INGEST: tuple[OptionRef, ...] = (
    "paths",
    "provider",
    "dataset",
    "schema",
    "symbols",
    "stype_in",
    "start",
    "end",
    "force",
    "dry_run",
    "allow_cost",
    "quiet",
    "executor",
    "scheduler",
)
#: the options ``hdi query`` and ``%hdi_query`` share after the range
QUERY: tuple[OptionRef, ...] = ("dataset_filter", "price_type", "columns", "rollup", "align", "adjust")
#: ``hdi query SCHEMA --symbols --start --end``: the range is required
QUERY_RANGE_CLI: tuple[OptionRef, ...] = (
    option("schema").as_positional(),
    *(option(n).as_required() for n in ("symbols", "start", "end")),
)
#: ``%hdi_query SCHEMA SYMBOLS START END``: positional, and each may be left out because the cell form
#: (``%%hdi_query`` with SQL) takes none of them; the line form says which are missing
QUERY_RANGE_MAGIC: tuple[OptionRef, ...] = tuple(
    option(n).as_positional(optional=True) for n in ("schema", "symbols", "start", "end")
)
QUERY_CLI: tuple[OptionRef, ...] = (*QUERY_RANGE_CLI, *QUERY, "format", "output", "rows_limit")
QUERY_MAGIC: tuple[OptionRef, ...] = (*QUERY_RANGE_MAGIC, *QUERY, "indicators")
FEATURES_COMPUTE: tuple[OptionRef, ...] = (
    "feature_set",
    option("symbols").as_required(),
    "interval",
    "bars_start",
    "bars_end",
    "dataset_filter",
    "max_gap",
    "adjust",
    "view",
    option("executor").but(
        help=f"where the instruments are computed: {one_of(EXECUTORS, 'local')}; dask: partitioned by instrument on "
        "the Dask cluster of --scheduler (workers connect to the same database)"
    ),
    "scheduler",
)
#: ``hdi features publish`` and ``%hdi_publish`` after the set; symbols may be omitted with --no-compute
PUBLISH: tuple[OptionRef, ...] = (
    option("symbols").but(help="comma-separated symbols (omit with --no-compute: all stored instruments)"),
    "interval",
    "bars_start",
    "bars_end",
    "dataset_filter",
    "no_compute",
    "repo",
)
#: ``%hdi_publish SET``: the magic takes the set positionally (``hdi features publish --set SET``)
PUBLISH_SET_MAGIC: Option = option("feature_set").as_positional()
COMPARE: tuple[OptionRef, ...] = (
    "bar_schema",
    "left",
    "left_dataset",
    "right",
    "right_dataset",
    "start",
    "end",
    "price_tol",
    "volume_tol",
    "diffs_limit",
)
#: ``hdi watch add`` and ``%hdi_watch add``: an ingest request without an end. The provider has no default
#: (a subscription of the file provider makes no sense): the core says when it is missing.
WATCH: tuple[OptionRef, ...] = (
    option("provider").but(default=None, help=one_of(PROVIDERS)),
    "dataset",
    "schema",
    "symbols",
    "stype_in",
    "since",
    "watch_name",
    "watch_features",
    option("interval").but(default=None, help="the bar interval of --features (default 1d)"),
    "watch_publish",
    "watch_cron",
)
#: ``%hdi_watch ACTION [ID|NAME] [add's options]``: one parser for every action, so the target may be left out
#: (``hdi watch remove ID|NAME`` requires it)
WATCH_MAGIC: tuple[OptionRef, ...] = ("watch_action", option("watch_target").as_positional(optional=True), *WATCH)
#: the options ``hdi export`` and ``%hdi_export`` share after the range
EXPORT: tuple[OptionRef, ...] = ("dataset_filter", "export_format", "export_output")
#: ``hdi export SCHEMA --symbols --start --end --output DIR``: as ``hdi query``
EXPORT_CLI: tuple[OptionRef, ...] = (*QUERY_RANGE_CLI, *EXPORT, "quiet")
#: ``%hdi_export SCHEMA SYMBOLS START END --output DIR``: positional, as ``%hdi_gaps``
EXPORT_MAGIC: tuple[OptionRef, ...] = (
    *(option(n).as_positional() for n in ("schema", "symbols", "start", "end")),
    *EXPORT,
)
#: the options ``hdi gaps`` and ``%hdi_gaps`` share after the range
GAPS: tuple[OptionRef, ...] = ("dataset_filter", "stype_in", "partial")
#: ``hdi gaps SCHEMA --symbols --start --end``: as ``hdi query``, printed as a table or CSV
GAPS_CLI: tuple[OptionRef, ...] = (
    *QUERY_RANGE_CLI,
    *GAPS,
    option("format").but(choices=("table", "csv")),
    "rows_limit",
)
#: ``%hdi_gaps SCHEMA SYMBOLS START END``: positional, as ``%hdi_query``'s line form, all required
GAPS_MAGIC: tuple[OptionRef, ...] = (
    *(option(n).as_positional() for n in ("schema", "symbols", "start", "end")),
    *GAPS,
)
#: ``hdi update [ID|NAME...]`` and ``%hdi_update [ID|NAME...]``: bring subscriptions current
UPDATE: tuple[OptionRef, ...] = (
    "update_targets",
    "until",
    option("dry_run").but(help="plan and estimate only: the chunks and their total cost"),
    "allow_cost",
    option("executor").but(
        help=f"where the chunks run, and the subscriptions' feature sets after them: {one_of(EXECUTORS, 'local')}; "
        "dask: on the Dask cluster of --scheduler (workers connect to the same database)"
    ),
    "scheduler",
)

#: ``hdi live start`` and ``%hdi_live start``: stream a vendor's live data into the same tables
LIVE: tuple[OptionRef, ...] = (
    option("provider").but(default=LIVE_PROVIDERS[0], choices=LIVE_PROVIDERS, help=one_of(LIVE_PROVIDERS, "databento")),
    option("dataset").but(
        help="e.g. GLBX.MDP3 (default: the databento_dataset setting; for ib: IB, IB.MIDPOINT or IB.BID_ASK)"
    ),
    "live_schema",
    "symbols",
    "stype_in",
    "live_start",
    "heartbeat",
    option("watch_features").but(
        help="feature sets kept up to date per closed bar of the session's ohlcv-1s / ohlcv-5s / ohlcv-1m bars, "
        "e.g. momentum_v1 (hdi_lab.live(features=...))"
    ),
    "live_online",
)
#: ``%hdi_live start|status|stop [ID...] [start's options]``: one parser for every action (``hdi live`` has one
#: subcommand per action)
LIVE_MAGIC: tuple[OptionRef, ...] = ("live_action", "live_ids", *LIVE)

#: ``hdi scheduler run``: keep every subscription current on its schedule until SIGTERM/SIGINT
SCHEDULER_RUN: tuple[OptionRef, ...] = (
    "wait",
    option("until").but(help=f"{_DATE}, exclusive: every scheduled update goes up to here (default: the update's)"),
    "retries",
    "backoff",
)

#: ``hdi report`` and ``%hdi_report``: the exit code of ``hdi report`` is 0 green, 1 amber, 2 red
REPORT: tuple[OptionRef, ...] = (
    "report_date",
    "report_start",
    "report_end",
    "report_format",
    "report_output",
    "report_threshold",
)
#: what every magic takes after its own options
MAGIC: tuple[OptionRef, ...] = ("out", "verbose")


def add(parser: argparse.ArgumentParser, *refs: OptionRef) -> argparse.ArgumentParser:
    """Add the options ``refs`` to ``parser`` in order; returns the parser. Raises ``KeyError`` for an unknown name."""
    for ref in refs:
        opt = option(ref)
        parser.add_argument(*opt.flags, **opt.kwargs())
    return parser


_F = TypeVar("_F", bound=Callable[..., Any])


def magic_arguments(*refs: OptionRef) -> Callable[[_F], _F]:
    """Decorate a magic with IPython's ``@magic_arguments()`` and an ``@argument(...)`` per option, in order.

    IPython builds the magic's parser from them and replaces its docstring with the parser's help
    (``%hdi_ingest?``), as if the decorators were written out. Raises ``KeyError`` for an unknown name.
    """
    from IPython.core import magic_arguments as ipython

    opts = [option(ref) for ref in refs]  # looked up now: a typo fails when the magics module is imported

    def decorate(magic: _F) -> _F:
        for opt in reversed(opts):  # IPython applies them in source order, i.e. the reverse of decoration
            magic = ipython.argument(*opt.flags, **opt.kwargs())(magic)
        return ipython.magic_arguments()(magic)

    return decorate


def ingest_request(args: argparse.Namespace) -> IngestRequest:
    """The request the :data:`INGEST` options of ``hdi ingest`` and ``%hdi_ingest`` describe.

    Raises :class:`~hdi_lab.errors.ValidationError` for a request that cannot be made (see
    :func:`hdi_lab.api.make_request`)."""
    from hdi_lab.api import make_request

    return make_request(
        args.provider,
        schema=args.schema,
        symbols=args.symbols,
        start=args.start,
        end=args.end,
        dataset=args.dataset,
        stype_in=args.stype_in,
        path=args.paths or None,
        force=args.force,
        dry_run=args.dry_run,
        allow_cost=args.allow_cost,
    )


def executor(args: argparse.Namespace, session: HdiSession) -> DaskExecutor | None:
    """Where the ``--executor`` / ``--scheduler`` options of ``hdi ingest`` and ``%hdi_ingest`` run the chunks
    (None: locally).

    Raises :class:`~hdi_lab.errors.ValidationError` (see :func:`hdi_lab.core.executors.executor_of`)."""
    from hdi_lab.core.executors import executor_of

    return executor_of(args.executor, args.scheduler, session.settings)


def ingest(args: argparse.Namespace, session: HdiSession, progress: ProgressFn | None = None) -> IngestReport:
    """Run the ingest the :data:`INGEST` options of ``hdi ingest`` and ``%hdi_ingest`` describe: the request of
    :func:`ingest_request`, its chunks where :func:`executor` says.

    Raises what :func:`hdi_lab.core.ingestion.run` raises (ValidationError for a bad request, executor or
    scheduler; CostLimitError, IngestError, DataFormatError, StorageError, ProviderError, ClusterError,
    MissingDependency)."""
    from hdi_lab.core import ingestion

    return ingestion.run(ingest_request(args), session, progress=progress, executor=executor(args, session))


def query(args: argparse.Namespace, session: HdiSession) -> pd.DataFrame:
    """The rows the :data:`QUERY_CLI` / :data:`QUERY_MAGIC` options of ``hdi query`` and ``%hdi_query`` ask for
    (``--columns`` comma-separated, empty items left out).

    Raises what :func:`hdi_lab.core.retrieval.query` raises (ValidationError for a bad request or column,
    StorageError, ProviderError)."""
    from hdi_lab.core import retrieval

    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    return retrieval.query(
        session,
        args.schema,
        args.symbols,
        args.start,
        args.end,
        dataset=args.dataset,
        price_type=args.price_type,
        columns=columns,
        interval=args.interval,
        adjust=args.adjust,
        align=args.align,
    )


def publish(args: argparse.Namespace, session: HdiSession) -> PublishReport:
    """Publish what the :data:`PUBLISH` options of ``hdi features publish`` and ``%hdi_publish`` describe.

    Raises what :func:`hdi_lab.featurestore.publish.publish` raises (ValidationError for a bad request,
    ConfigError or StorageError from the feature repo and the database)."""
    from hdi_lab.featurestore.publish import publish

    return publish(
        args.feature_set,
        args.symbols,
        args.interval,
        args.start,
        args.end,
        compute=args.compute,
        dataset=args.dataset,
        repo=args.repo,
        session=session,
    )


def watch(args: argparse.Namespace, session: HdiSession) -> tuple[Subscription, bool]:
    """Add the subscription the :data:`WATCH` options of ``hdi watch add`` and ``%hdi_watch add`` describe;
    returns it and whether it is new.

    Raises what :func:`hdi_lab.core.subscriptions.add` raises (ValidationError for a bad request or option, an
    unknown feature set, or one subscribed with other settings, ConfigError, ProviderError, StorageError)."""
    from hdi_lab.after_update import validate_options
    from hdi_lab.api import make_request
    from hdi_lab.core import subscriptions

    request = make_request(
        args.provider, schema=args.schema, symbols=args.symbols, dataset=args.dataset, stype_in=args.stype_in
    )
    given = {"features": args.features, "interval": args.interval, "publish": args.publish or None, "cron": args.cron}
    opts = validate_options({k: v for k, v in given.items() if v is not None})
    return subscriptions.add(session, request, args.since, name=args.name, options=opts)


def gaps(args: argparse.Namespace, session: HdiSession) -> pd.DataFrame:
    """The gaps the :data:`GAPS_CLI` / :data:`GAPS_MAGIC` options of ``hdi gaps`` and ``%hdi_gaps`` ask for
    (without ``--partial``, the core's default threshold).

    Raises what :func:`hdi_lab.core.gaps.gaps` raises (ValidationError for a bad request, ConfigError,
    StorageError)."""
    from hdi_lab.core import gaps

    threshold = {} if args.partial is None else {"partial": args.partial}
    return gaps.gaps(
        session,
        args.schema,
        args.symbols,
        args.start,
        args.end,
        dataset=args.dataset,
        stype_in=args.stype_in,
        **threshold,
    )


def export(args: argparse.Namespace, session: HdiSession, progress: ExportProgress | None = None) -> ExportReport:
    """Run the export the :data:`EXPORT_CLI` / :data:`EXPORT_MAGIC` options of ``hdi export`` and ``%hdi_export``
    describe.

    Raises what :func:`hdi_lab.api.export` raises (ValidationError for a bad request, an output that is a file,
    nothing stored or a file that cannot be written, StorageError, ProviderError)."""
    from hdi_lab.api import export

    return export(
        args.schema,
        args.symbols,
        args.start,
        args.end,
        args.output,
        format=args.format,
        dataset=args.dataset,
        progress=progress,
        session=session,
    )


def update(args: argparse.Namespace, session: HdiSession) -> UpdateReport:
    """Run the update the :data:`UPDATE` options of ``hdi update`` and ``%hdi_update`` describe.

    Raises what :func:`hdi_lab.api.update` raises (ValidationError for an unknown subscription, a bad --until,
    an unknown feature set or a bad --executor / --scheduler, CostLimitError above the cost limit, ConfigError,
    ProviderError, DataFormatError, StorageError, ClusterError)."""
    from hdi_lab.api import update

    return update(
        *(args.targets or ()),
        until=args.until,
        dry_run=args.dry_run,
        allow_cost=args.allow_cost,
        executor=args.executor,
        scheduler=args.scheduler,
        session=session,
    )


def report(args: argparse.Namespace, session: HdiSession) -> Report:
    """The operations report the :data:`REPORT` options of ``hdi report`` and ``%hdi_report`` ask for.

    Raises what :func:`hdi_lab.core.report.report` raises (ValidationError for a bad date, range or threshold,
    ConfigError, StorageError)."""
    from hdi_lab.core.report import Thresholds, report

    limits = Thresholds.parse(args.threshold or ())
    return report(session, args.date, start=args.start, end=args.end, thresholds=limits)


def live(
    args: argparse.Namespace, session: HdiSession, on_commit: Callable[[LiveCommit], None] | None = None
) -> LiveHandle:
    """Start the live session the :data:`LIVE` options of ``hdi live start`` and ``%hdi_live start`` describe
    (running in background threads); returns its handle.

    Raises what :func:`hdi_lab.api.live` raises (ValidationError for a bad request, an unknown feature set or
    features without a bar schema, ConfigError without an API key or with a bad gateway setting, StorageError)."""
    from hdi_lab.api import live

    return live(
        args.provider,
        dataset=args.dataset,
        schema=args.schema,
        symbols=args.symbols,
        stype_in=args.stype_in,
        start=args.start,
        session=session,
        on_commit=on_commit,
        heartbeat_interval_s=args.heartbeat,
        features=args.features or None,
        online=args.online,
    )
