"""IPython magics (``%load_ext hdi_lab``): thin front ends over the same core as the ``hdi`` CLI.

=================  =========================================================================
``%hdi_ingest``    the options of ``hdi ingest``; returns the :class:`IngestReport`
``%hdi_query``     ``SCHEMA SYMBOLS START END [--dataset --columns --adjust --indicators ...]``: a DataFrame
``%%hdi_query``    SQL in the cell; ``:name`` and ``{{name}}`` are bound as parameters from the
                   notebook's variables (never pasted into the SQL text)
``%hdi_export``    ``SCHEMA SYMBOLS START END --output DIR [--format parquet|arrow|csv --dataset]``: Hive-
                   partitioned files by date and symbol (as ``hdi export``); returns the ``ExportReport``
``%hdi_status``    server, coverage and recent ingests
``%hdi_config``    every setting with its source, secrets masked
``%hdi_symbols``   symbols (symbology and instrument master) matching a pattern
``%hdi_publish``   ``SET --symbols --interval --start --end``: compute, ``feast apply``, materialize
                   (the options of ``hdi features publish``); returns the :class:`PublishReport`
``%hdi_gaps``      ``SCHEMA SYMBOLS START END [--dataset --stype-in --partial]``: the sessions missing, a
                   DataFrame (see :func:`hdi_lab.gaps`)
``%hdi_report``    ``[--date D | --start S --end E] [--format text|html|json] [--output F] [--threshold]``:
                   the daily operations report shown (or written to F); returns the ``Report``
``%hdi_watch``     ``add [the options of hdi watch add]``, ``list`` or ``remove ID|NAME``: subscriptions;
                   returns the :class:`Subscription` added or removed, or the list as a DataFrame
``%hdi_update``    ``[ID|NAME...] [--until --dry-run --allow-cost]``: bring subscriptions current (as
                   ``hdi update``); returns the :class:`UpdateReport`
``%hdi_live``      ``start [the options of hdi live start]``: stream live data in the background, returns the
                   session's handle (``.status()``, ``.stop()``); ``status``: the sessions (a DataFrame);
                   ``stop [ID...]``: stop sessions (this kernel's at once, others' within a second)
=================  =========================================================================

Every magic returns its result and takes ``-o/--out NAME`` (also bind it in the user namespace)
and ``--verbose``. An :class:`HdiError` is shown as a one-line ``UsageError`` with what to do;
``--verbose`` (or ``%config HdiMagics.verbose = True``) raises it with its traceback instead.
Returned frames display at most ``HdiMagics.display_rows`` rows.
"""

from __future__ import annotations

import functools
import keyword
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import parse_argstring
from traitlets import Bool, Int

from hdi_lab.core.session import HdiSession
from hdi_lab.errors import HdiError
from hdi_lab.frontend import options
from hdi_lab.frontend.display import ConfigView, FrameDisplay, StatusView
from hdi_lab.frontend.progress import progress_bar

if TYPE_CHECKING:
    import argparse

    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell

    from hdi_lab.core.export import ExportReport
    from hdi_lab.core.live import LiveHandle, LiveStatus
    from hdi_lab.core.report import Report
    from hdi_lab.core.subscriptions import Subscription
    from hdi_lab.core.update import UpdateReport
    from hdi_lab.featurestore.publish import PublishReport
    from hdi_lab.schemas import IngestReport

__all__ = ["HdiMagics", "load", "unload", "usage_error"]
#: the options every magic takes (-o/--out, --verbose), by the attribute they parse into
_EVERY_MAGIC = frozenset(options.option(ref).name for ref in options.MAGIC)


def usage_error(exc: HdiError) -> UsageError:
    """jupysql's exception factory: a plain ``UsageError`` carrying the hdi_lab error type.

    IPython prints a ``UsageError`` as one line without a traceback, but only that exact class:
    a subclass gets the full traceback (ipython#14024), hence an instance tagged with attributes.
    """
    err = UsageError(f"{type(exc).__name__}: {exc}\n(add --verbose for the traceback)")
    err.error_type = type(exc).__name__  # type: ignore[attr-defined]
    err.hdi_error = exc  # type: ignore[attr-defined]
    return err


def _arg_error(magic: Callable[..., Any], message: str) -> UsageError:
    """An argparse-style message: the magic's usage line, then the error."""
    parser = magic.parser  # type: ignore[attr-defined]
    text = parser.format_usage()  # IPython's formatter: "::\n\n  %name [options]\n    ..."
    lines = [line.strip() for line in text.removeprefix("::").strip().splitlines()]
    indent = " " * len(f"usage: %{parser.prog} ")
    usage = "\n".join(["usage: " + lines[0], *(indent + line for line in lines[1:])])
    return UsageError(f"{usage}\n%{parser.prog}: error: {message}")


def _parse(magic: Callable[..., Any], line: str) -> argparse.Namespace:
    try:
        args = parse_argstring(magic, line)
    except (UsageError, ValueError) as exc:  # ValueError: unbalanced quotes (shlex)
        raise _arg_error(magic, str(exc)) from None
    for name, value in vars(args).items():  # IPython splits like a non-POSIX shell: 'a b' keeps its quotes
        setattr(args, name, [_unquote(v) for v in value] if isinstance(value, list) else _unquote(value))
    out = getattr(args, "out", None)
    if out is not None and (not out.isidentifier() or keyword.iskeyword(out)):
        raise _arg_error(magic, f"-o/--out {out!r} is not a Python variable name")
    return args


def _unquote(value: object) -> object:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _given(magic: Callable[..., Any], args: argparse.Namespace, names: Iterable[str]) -> list[str]:
    """The options among ``names`` (attribute names) given on the line, i.e. not at their default, sorted."""
    parser = magic.parser  # type: ignore[attr-defined]  # set by IPython's @magic_arguments
    return sorted(name for name in names if getattr(args, name) != parser.get_default(name))


def _front_end(magic: Callable[..., Any]) -> Callable[..., Any]:
    """Parse the line with the magic's own parser, run the magic on the namespace, bind ``--out``,
    and turn an HdiError into a short UsageError (chained, so the cause stays inspectable)."""

    @functools.wraps(magic)
    def run(self: HdiMagics, line: str, *cell: str) -> Any:
        args = _parse(magic, line)
        try:
            result = magic(self, args, *cell)
        except HdiError as exc:
            if args.verbose or self.verbose:
                raise
            raise usage_error(exc) from exc
        if args.out:
            self.user_ns[args.out] = result
        return result

    return run


@magics_class
class HdiMagics(Magics):
    """The hdi_lab magics; one instance per shell, holding the extension's one :class:`HdiSession`."""

    verbose = Bool(False, help="Raise hdi_lab errors with their traceback instead of a short message.").tag(config=True)
    display_rows = Int(20, help="Rows shown (head and tail) when a DataFrame from a magic is displayed.").tag(
        config=True
    )
    progress = Bool(True, help="Show a progress bar while %hdi_ingest runs.").tag(config=True)

    def __init__(self, shell: InteractiveShell, session: HdiSession | None = None, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)  # Magics adds itself to shell.configurables (%config HdiMagics)
        self._session = session
        self._frames = FrameDisplay(shell, lambda: self.display_rows)
        self._live: dict[int, LiveHandle] = {}  # the live sessions started here, stopped on unload

    @property
    def session(self) -> HdiSession:
        """The session, created on first use: loading the extension reads and connects nothing."""
        if self._session is None:
            self._session = HdiSession()
        return self._session

    @property
    def user_ns(self) -> dict[str, Any]:
        assert self.shell is not None, "HdiMagics is created with its shell"
        return self.shell.user_ns

    def _usage(self, magic: str, message: str) -> UsageError:
        return _arg_error(getattr(type(self), magic), message)

    def _only_with(self, magic: str, action: str, args: argparse.Namespace, refs: Iterable[options.OptionRef]) -> None:
        """Raise UsageError when an option of ``refs`` (those of ``%magic action`` only) is given with another
        action."""
        flags = {opt.name: opt.flags[-1] for opt in map(options.option, refs)}
        given = _given(getattr(type(self), magic), args, flags)
        if args.action != action and given:
            raise self._usage(magic, f"{', '.join(flags[n] for n in given)}: only %{magic} {action} takes these")

    def close(self) -> None:
        """Stop the live sessions started here, close the session's connections, restore the DataFrame
        formatters."""
        for handle in self._live.values():
            handle.stop()
        self._live.clear()
        if self._session is not None:
            self._session.close()
        self._frames.uninstall()

    @line_magic
    @_front_end
    @options.magic_arguments(*options.INGEST, *options.MAGIC)
    def hdi_ingest(self, args: argparse.Namespace) -> IngestReport:
        """Fetch, validate and load market data, like ``hdi ingest``; returns the IngestReport.

        ``%hdi_ingest --provider sample --schema ohlcv-1m --symbols ESH4 --start 2024-01-02 --end 2024-01-05``
        or ``%hdi_ingest data/GLBX.MDP3/ohlcv-1m.dbn.zst``. Chunks already ingested are skipped.
        """
        update, close = progress_bar(self.progress and not args.quiet, "hdi_ingest")
        try:
            return options.ingest(args, self.session, progress=update)
        finally:
            close()

    @line_cell_magic
    @_front_end
    @options.magic_arguments(*options.QUERY_MAGIC, *options.MAGIC)
    def hdi_query(self, args: argparse.Namespace, cell: str | None = None) -> pd.DataFrame:
        """Stored rows (line form, like ``hdi query``) or the result of SQL (cell form) as a DataFrame.

        ``df = %hdi_query ohlcv-1m ESH4 2024-01-02 2024-01-05``. Cell form: ``%%hdi_query [-o NAME]``
        with SQL against the hdi_lab schema below it; ``:name`` and ``{{name}}`` take the value of
        the notebook variable ``name`` as a bound parameter (a list binds as an array, a tuple as
        ``(a, b)`` for ``IN``); ``::type`` casts, literals and comments are left alone.
        """
        if cell is None:
            return self._frames.track(self._rows(args))
        return self._frames.track(self._sql(args, cell))

    def _rows(self, args: argparse.Namespace) -> pd.DataFrame:
        range_ = [options.option(ref) for ref in options.QUERY_RANGE_MAGIC]
        missing = [str(opt.metavar) for opt in range_ if getattr(args, opt.name) is None]
        if missing:
            raise self._usage(
                "hdi_query",
                f"the following arguments are required: {', '.join(missing)} (or write SQL in a %%hdi_query cell)",
            )
        frame = options.query(args, self.session)
        if args.indicators:
            from hdi_lab import features

            if args.schema not in options.BAR_SCHEMAS or args.price_type == "fixed":
                raise self._usage("hdi_query", "--indicators needs bars (an ohlcv-* schema) with float prices")
            frame = features.overlay(frame, args.indicators)
        return frame

    def _sql(self, args: argparse.Namespace, cell: str) -> pd.DataFrame:
        from hdi_lab.core import retrieval
        from hdi_lab.frontend.sqlparams import bind

        if _given(type(self).hdi_query, args, set(vars(args)) - _EVERY_MAGIC):
            raise self._usage(
                "hdi_query", "%%hdi_query runs the SQL in the cell: only -o/--out NAME and --verbose go on its line"
            )
        if not cell.strip():
            raise self._usage("hdi_query", "the cell is empty: write SQL below %%hdi_query")
        text, params = bind(cell, self.user_ns)
        return retrieval.sql(self.session, text, params)

    @line_magic
    @_front_end
    @options.magic_arguments(*options.EXPORT_MAGIC, *options.MAGIC)
    def hdi_export(self, args: argparse.Namespace) -> ExportReport:
        """Write stored rows as Hive-partitioned Parquet (Arrow IPC, CSV) files, one per UTC day and symbol, like
        ``hdi export``; returns the ExportReport. ``%hdi_export ohlcv-1m ESH4,ES.c.0 2024-01-02 2024-02-01
        --output exports/es``"""
        update, close = progress_bar(self.progress, "hdi_export", unit="day")
        try:
            return options.export(args, self.session, progress=update)
        finally:
            close()

    @line_magic
    @_front_end
    @options.magic_arguments("recent", *options.MAGIC)
    def hdi_status(self, args: argparse.Namespace) -> StatusView:
        """The server, what is stored (rows and time range per table and instrument) and recent ingests."""
        from hdi_lab.core import catalog

        status = catalog.status(self.session, recent=args.recent)
        return StatusView(status, self.session.schema, self.session.embedded, self.display_rows)

    @line_magic
    @_front_end
    @options.magic_arguments(*options.MAGIC)
    def hdi_config(self, args: argparse.Namespace) -> ConfigView:
        """Every setting with its value (secrets masked) and source, then the HdiMagics options."""
        rows = list(self.session.settings.masked())
        section = self.config.get(type(self).__name__) or {}
        for name in sorted(self.class_trait_names(config=True)):
            source = "%config / ipython_config" if name in section else "default"
            rows.append((f"HdiMagics.{name}", str(getattr(self, name)), source))
        return ConfigView(rows)

    @line_magic
    @_front_end
    @options.magic_arguments("pattern", "symbols_limit", *options.MAGIC)
    def hdi_symbols(self, args: argparse.Namespace) -> pd.DataFrame:
        """Known symbols matching PATTERN: stype, dataset, instrument_id, raw_symbol and the dates covered."""
        from hdi_lab.core import catalog

        return self._frames.track(catalog.search_symbols(self.session, args.pattern, args.limit))

    @line_magic
    @_front_end
    @options.magic_arguments(options.PUBLISH_SET_MAGIC, *options.PUBLISH, *options.MAGIC)
    def hdi_publish(self, args: argparse.Namespace) -> PublishReport:
        """Compute a feature set, apply the Feast feature repo and load the online store (Feast loads now)."""
        return options.publish(args, self.session)

    @line_magic
    @_front_end
    @options.magic_arguments(*options.GAPS_MAGIC, *options.MAGIC)
    def hdi_gaps(self, args: argparse.Namespace) -> pd.DataFrame:
        """The trading sessions of SYMBOLS from START to END (exclusive) whose data is missing, like ``hdi gaps``:
        one row per symbol and session with the reason (not_ingested, empty, partial) and the expected and
        present bars. ``%hdi_gaps ohlcv-1m ESH4 2024-01-02 2024-02-01 --dataset GLBX.MDP3``"""
        return self._frames.track(options.gaps(args, self.session))

    @line_magic
    @_front_end
    @options.magic_arguments(*options.REPORT, *options.MAGIC)
    def hdi_report(self, args: argparse.Namespace) -> Report:
        """The daily operations report, like ``hdi report``: shown in the notebook (html as a page with its
        charts), or written to ``--output``; returns the report (``.status``, ``.findings``, ``.to_dict()``).
        ``%hdi_report --date 2024-01-03 --format html``"""
        from IPython.display import HTML, Pretty, display

        from hdi_lab.frontend.report import render, write

        found = options.report(args, self.session)
        text = render(found, args.format)
        if args.output:
            write(text, args.output)
        elif args.format == "html":
            display(HTML(text))
        else:
            display(Pretty(text))
        return found

    @line_magic
    @_front_end
    @options.magic_arguments(*options.WATCH_MAGIC, *options.MAGIC)
    def hdi_watch(self, args: argparse.Namespace) -> Subscription | pd.DataFrame:
        """Subscriptions, like ``hdi watch``: ``add`` one (returns it; adding it again changes nothing),
        ``list`` them (a DataFrame) or ``remove ID|NAME`` (returns the one removed).

        ``%hdi_watch add --provider databento --dataset GLBX.MDP3 --schema ohlcv-1m --symbols ES.c.0
        --stype-in continuous --since 2020-01-01``

        Raises UsageError when an option does not go with the action (add's options or an ID|NAME elsewhere,
        remove without one), and like every magic for an HdiError.
        """
        from hdi_lab.core import subscriptions

        self._only_with("hdi_watch", "add", args, options.WATCH)
        if (args.action == "remove") != (args.target is not None):
            what = "give the subscription's ID or NAME" if args.action == "remove" else "only remove takes ID|NAME"
            raise self._usage("hdi_watch", f"%hdi_watch {args.action}: {what}")
        if args.action == "add":
            return options.watch(args, self.session)[0]
        if args.action == "remove":
            return subscriptions.remove(self.session, args.target)
        return self._frames.track(subscriptions.frame(subscriptions.list_all(self.session)))

    @line_magic
    @_front_end
    @options.magic_arguments(*options.UPDATE, *options.MAGIC)
    def hdi_update(self, args: argparse.Namespace) -> UpdateReport:
        """Bring subscriptions (all, or those named by id or name) current, like ``hdi update``: new sessions,
        gaps and vendor revisions as one chunk plan; ``--dry-run`` shows it with its cost.

        ``%hdi_update es_1m --until 2024-03-01 --dry-run``"""
        return options.update(args, self.session)

    @line_magic
    @_front_end
    @options.magic_arguments(*options.LIVE_MAGIC, *options.MAGIC)
    def hdi_live(self, args: argparse.Namespace) -> LiveHandle | LiveStatus | pd.DataFrame | list[int]:
        """Live sessions, like ``hdi live``: ``start`` one in the background (returns its handle; the kernel stays
        usable), ``status`` (the sessions, a DataFrame) or ``stop [ID...]`` (a session started in this kernel
        stops at once and its final status is returned; others are asked through the database: their ids).

        ``h = %hdi_live start --dataset GLBX.MDP3 --schema trades,ohlcv-1s --symbols ES.c.0 --stype-in continuous``
        or ``h = %hdi_live start --provider ib --schema ohlcv-5s --symbols AAPL:STK:SMART`` (IB's real-time bars)

        Raises UsageError when an option does not go with the action, and like every magic for an HdiError.
        """
        from hdi_lab.core import live

        self._only_with("hdi_live", "start", args, options.LIVE)
        if args.ids and args.action != "stop":
            raise self._usage("hdi_live", f"%hdi_live {args.action}: only stop takes session ids")
        if args.action == "start":
            handle = options.live(args, self.session)
            self._live[handle.id] = handle
            return handle
        if args.action == "status":
            return self._frames.track(live.sessions(self.session))
        mine = [i for i in (args.ids or list(self._live)) if i in self._live]
        stopped = [self._live.pop(i).stop() for i in mine]
        others = [i for i in args.ids if i not in mine]
        asked = live.request_stop(self.session, others or None) if others or not args.ids else []
        if len(stopped) == 1 and not asked:
            return stopped[0]
        return sorted({*mine, *asked})


def load(shell: InteractiveShell) -> HdiMagics:
    """Register the magics once per shell; loading again returns the registered instance unchanged."""
    registered = shell.magics_manager.registry.get(HdiMagics.__name__)
    if registered is not None:
        return registered
    magics = HdiMagics(shell)
    if magics not in shell.configurables:
        shell.configurables.append(magics)
    shell.register_magics(magics)
    return magics


def unload(shell: InteractiveShell) -> None:
    """Unregister the magics and close the session's database connections."""
    magics = shell.magics_manager.registry.pop(HdiMagics.__name__, None)
    if magics is None:
        return
    for kind, table in magics.magics.items():
        registered = shell.magics_manager.magics[kind]
        for name, fn in table.items():
            if registered.get(name) == fn:
                del registered[name]
    if magics in shell.configurables:
        shell.configurables.remove(magics)
    magics.close()
