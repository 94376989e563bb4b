"""The ``hdi`` command line: a thin front end over the ingestion and query core."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import pandas as pd

from hdi_lab.config import load_settings
from hdi_lab.core import catalog, quarantine, subscriptions
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import HdiError, IngestError, ValidationError
from hdi_lab.frontend import options
from hdi_lab.frontend.display import StatusView
from hdi_lab.frontend.progress import progress_bar

__all__ = ["COMMANDS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``hdi`` argument parser, built from :mod:`hdi_lab.frontend.options`."""
    p = argparse.ArgumentParser(prog="hdi", description="Historical market data into PostgreSQL/TimescaleDB.")
    options.add(p, *options.GLOBAL)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    options.add(sub.add_parser("ingest", help="fetch, validate and load market data"), *options.INGEST)
    options.add(sub.add_parser("query", help="read stored data"), *options.QUERY_CLI)
    options.add(
        sub.add_parser(
            "export",
            help="write stored data as Hive-partitioned Parquet, Arrow or CSV files (by date and symbol) for "
            "DuckDB, Polars, pyarrow",
        ),
        *options.EXPORT_CLI,
    )
    options.add(
        sub.add_parser("gaps", help="trading sessions missing (not ingested, empty or partial) by exchange calendar"),
        *options.GAPS_CLI,
    )
    options.add(
        sub.add_parser(
            "report",
            help="daily operations report: ingests, gaps, quarantine, vendor conditions, data-quality checks "
            "(exit code 0 green, 1 amber, 2 red)",
        ),
        *options.REPORT,
    )
    sub.add_parser("status", help="ingest log, row counts, coverage and live sessions")

    qu = sub.add_parser("quarantine", help="records that failed validation")
    qsub = qu.add_subparsers(dest="action", required=True, metavar="ACTION")
    options.add(qsub.add_parser("list"), "entry_status", "rule", "entries_limit")
    options.add(qsub.add_parser("show"), "entry_id")
    options.add(qsub.add_parser("retry", help="re-validate and load fixed entries"), "entry_ids", "auto")

    wa = sub.add_parser("watch", help="subscriptions: the market data `hdi update` keeps current (in the database)")
    wsub = wa.add_subparsers(dest="action", required=True, metavar="ACTION")
    options.add(
        wsub.add_parser("add", help="subscribe (validated like an ingest; adding it again is a no-op)"), *options.WATCH
    )
    wsub.add_parser("list", help="every subscription")
    options.add(wsub.add_parser("remove", help="remove a subscription (its stored data stays)"), "watch_target")

    options.add(
        sub.add_parser(
            "update",
            help="bring subscriptions current: new sessions, gaps and vendor revisions, as one chunk plan",
        ),
        *options.UPDATE,
    )

    sch = sub.add_parser("scheduler", help="keep every subscription current on its schedule (APScheduler)")
    ssub = sch.add_subparsers(dest="action", required=True, metavar="ACTION")
    options.add(
        ssub.add_parser(
            "run", help="run the scheduler until SIGTERM/SIGINT (one per database; jobs stored in the database)"
        ),
        *options.SCHEDULER_RUN,
    )
    ssub.add_parser("status", help="whether a scheduler runs, each subscription's schedule and next run")

    lv = sub.add_parser("live", help="live data into the same tables (Databento Live, IB bars), until SIGTERM/SIGINT")
    lsub = lv.add_subparsers(dest="action", required=True, metavar="ACTION")
    options.add(
        lsub.add_parser(
            "start",
            help="stream in the foreground until SIGTERM/SIGINT (everything received is stored first); "
            "reconnects with intraday replay",
        ),
        *options.LIVE,
    )
    lsub.add_parser("status", help="live sessions: running, stopped, failed or lost, with their counts")
    options.add(lsub.add_parser("stop", help="ask running live sessions to stop gracefully"), "live_ids")

    options.add(sub.add_parser("db", help="the database server"), "db_action")
    options.add(sub.add_parser("config", help="settings"), "config_action")
    options.add(sub.add_parser("cache", help="the read cache of query results under HDI_HOME/cache"), "cache_action")

    feat = sub.add_parser("features", help="feature sets: technical indicators computed and stored per instrument")
    fsub = feat.add_subparsers(dest="action", required=True, metavar="ACTION")
    options.add(
        fsub.add_parser("compute", help="compute a feature set over stored bars and store it (idempotent)"),
        *options.FEATURES_COMPUTE,
    )
    fsub.add_parser("list", help="defined feature sets and the tables computed")
    fp = fsub.add_parser("publish", help="compute a set, `feast apply` the feature repo, load the online store")
    options.add(fp, "feature_set", *options.PUBLISH)
    fsub.add_parser(
        "env",
        help="print `export` lines for the `feast` CLI: the variables feature_store.yaml reads and "
        "PGPASSFILE, a password file it writes (the password is never printed)",
    )

    options.add(
        sub.add_parser("compare", help="bar-by-bar differences of one market from two sources (e.g. Databento vs IB)"),
        *options.COMPARE,
    )
    options.add(sub.add_parser("demo", help="ingest the offline sample data, query it and print a summary"), "quiet")
    return p


def _cmd_ingest(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    update, close = progress_bar(not a.quiet and err.isatty(), "hdi ingest", err)
    try:
        report = options.ingest(a, session, progress=update)
    except IngestError as exc:  # some files failed: every file's outcome, then the one-line error
        print(exc.report, file=out)
        for c in exc.report.chunks:
            print(f"  {c.outcome}", file=out)
        raise
    finally:
        close()
    print(report, file=out)
    if a.dry_run:
        for c in report.chunks:
            start = "" if c.est_start_s is None else f", starts at +{c.est_start_s:,.0f} s"
            print(f"  {c.chunk.describe()}: ~{c.fetched} records{start}", file=out)
    return 0


def _cmd_compare(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from hdi_lab.core.compare import compare_bars

    result = compare_bars(
        session,
        a.schema,
        a.left,
        a.right,
        a.start,
        a.end,
        left_dataset=a.left_dataset,
        right_dataset=a.right_dataset,
        price_tol=a.price_tol,
        volume_tol=a.volume_tol,
    )
    print(result, file=out)
    diffs = result.differences
    if len(diffs):
        shown = diffs if a.limit == 0 else diffs.head(a.limit)
        print(shown.to_string(), file=out)
    return 0


def _cmd_query(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    df = options.query(a, session)
    if a.format == "parquet" and not a.output:
        raise ValidationError("--format parquet needs --output FILE")
    if a.output and a.format != "table":
        _write(df, Path(a.output), a.format)
        print(f"wrote {len(df)} rows to {a.output}", file=err)
    elif a.format == "csv":
        df.to_csv(out)
    else:
        shown = df if a.limit == 0 else df.head(a.limit)
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(shown.to_string() if len(shown) else "(no rows)", file=out)
        if len(shown) < len(df):
            print(f"... {len(df)} rows in all (--limit 0 shows all, --format csv exports)", file=out)
    return 0


def _cmd_export(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    update, close = progress_bar(not a.quiet and err.isatty(), "hdi export", err, unit="day")
    try:
        report = options.export(a, session, progress=update)
    finally:
        close()
    print(report, file=out)
    return 0


def _cmd_gaps(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    found = options.gaps(a, session)
    if a.format == "csv":
        found.to_csv(out, index=False, date_format="%Y-%m-%d")
        return 0
    if found.empty:
        print("no gaps", file=out)
        return 0
    shown = found if a.limit == 0 else found.head(a.limit)
    _table(shown.assign(session=shown["session"].dt.date), out, "")
    more = f" ({len(shown)} shown: --limit 0 shows all, --format csv exports)" if len(shown) < len(found) else ""
    print(f"{len(found)} gaps{more}", file=out)
    return 0


def _cmd_report(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from hdi_lab.frontend.report import render, write

    found = options.report(a, session)
    text = render(found, a.format)
    if a.output:
        print(f"{found.status}: report written to {write(text, a.output)}", file=out)
    else:
        out.write(text)
    return found.exit_code


def _write(df: pd.DataFrame, path: Path, fmt: str) -> None:
    """``df`` as csv or parquet into ``path``; a path that cannot be written is a one-line error."""
    if path.is_dir():
        raise ValidationError(f"--output {path} is a directory: give a file name, e.g. {path / ('rows.' + fmt)}")
    if not path.parent.is_dir():
        what = "is not a directory" if path.parent.exists() else "does not exist"
        raise ValidationError(f"--output {path}: {path.parent} {what}: create the directory first")
    try:
        if fmt == "parquet":
            df.to_parquet(path)
        else:
            df.to_csv(path)
    except OSError as exc:
        reason = exc.strerror or str(exc).splitlines()[0]
        raise ValidationError(f"--output {path} cannot be written ({reason}): choose another file") from exc


def _table(df: pd.DataFrame, out: TextIO, empty: str) -> None:
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 80):
        print(df.to_string(index=False) if len(df) else empty, file=out)


def _cmd_status(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    st = catalog.status(session)
    server, counts = StatusView(st, session.schema, session.embedded).headline()  # as %hdi_status shows it
    print(f"server: {server}\n{counts}\n", file=out)
    print("coverage:", file=out)
    _table(st.coverage, out, "  (no data yet: hdi ingest ...)")
    print("\nrecent ingests:", file=out)
    _table(st.recent, out, "  (none)")
    from hdi_lab.core import live

    print("\nlive sessions:", file=out)
    _table(live.summary(session), out, "  (none: hdi live start ...)")
    return 0


def _cmd_quarantine(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if a.action == "list":
        _table(quarantine.list_entries(session, a.status, a.rule, a.limit), out, "(no entries)")
    elif a.action == "show":
        for k, v in quarantine.show(session, a.id).items():
            print(f"{k}: {v}", file=out)
    else:
        r = quarantine.retry(session, a.ids or None, auto=a.auto)
        print(
            f"retried {r.retried}: loaded {r.loaded}, already stored {r.duplicates}, still failing {r.still_bad}",
            file=out,
        )
        for st in r.stayed:
            print(f"  stayed open: {st.count} {st.rule}, e.g. {st.reason}", file=out)
        return 0 if r.still_bad == 0 or a.auto else 1
    return 0


def _cmd_watch(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if a.action == "add":
        sub, new = options.watch(a, session)
        print(f"added {sub}" if new else f"already subscribed: {sub}", file=out)
    elif a.action == "remove":
        print(f"removed {subscriptions.remove(session, a.target)}", file=out)
    else:
        _table(subscriptions.frame(subscriptions.list_all(session)), out, "(no subscriptions: hdi watch add ...)")
    return 0


def _cmd_update(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    report = options.update(a, session)
    print(report, file=out)
    if a.dry_run:
        for p in report.plans:
            for c in p.report.chunks if p.report else []:
                cost = "" if c.cost_usd is None else f", ~${c.cost_usd:,.2f}"
                print(f"  {c.chunk.describe()} ({p.reasons[c.chunk.key]}): ~{c.fetched} records{cost}", file=out)
    return 0


def _cmd_live(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from hdi_lab.core import live

    if a.action == "status":
        _table(live.sessions(session), out, "(no live sessions: hdi live start ...)")
        return 0
    if a.action == "stop":
        asked = live.request_stop(session, a.ids or None)
        print(f"asked to stop: {', '.join(map(str, asked))}" if asked else "no running live session", file=out)
        return 0
    stop = threading.Event()
    with _logging_to(err), _stopped_by_signals(stop, err, "stopping the live session: what was received is stored"):
        handle = options.live(a, session)
        print(f"hdi: live session {handle.id} started: {handle.request.describe()}", file=err)
        while handle.running and not stop.wait(0.2):
            pass
        final = handle.stop()
    print(final, file=out)
    return 0 if final.state == "stopped" else 1


def _cmd_scheduler(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from hdi_lab.api import update
    from hdi_lab.core import scheduler

    if a.action == "status":
        found = scheduler.jobs(session)
        print(f"scheduler: {'running' if scheduler.active(session) else 'not running'}", file=out)
        rows = [
            {
                "job": scheduler.job_id(j.subscription),
                "subscription": j.subscription.label,
                "schedule": j.schedule,
                "next_run": "-" if j.next_run is None else j.next_run.isoformat(),
            }
            for j in found
        ]
        _table(pd.DataFrame(rows), out, "(no subscriptions: hdi watch add ...)")
        return 0
    stop = threading.Event()
    with _logging_to(err), _stopped_by_signals(stop, err, "stopping after the running update"):
        scheduler.run(
            session,
            stop,
            wait=a.wait,
            until=a.until,
            retries=a.retries,
            backoff=a.backoff,
            # hdi_lab.api's update: the work after an update (features, Feast) runs for scheduled updates too
            update=lambda s, which, until: update(*which, until=until, session=s),
        )
    return 0


@contextlib.contextmanager
def _logging_to(err: TextIO) -> Iterator[None]:
    """Log hdi_lab's INFO messages to ``err`` for the command's duration: the scheduler's run outcomes."""
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("hdi_lab")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event, err: TextIO, what: str) -> Iterator[None]:
    """SIGTERM or SIGINT sets ``stop`` (the running work finishes: ``what`` says how); a second one abandons it
    at once: the process exits, and the server rolls back the transaction in flight. The ``hdi`` command owns its
    process, so it may set the handlers for the command's duration; library code never does."""

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            print("hdi: stopping now: the transaction in flight is rolled back", file=err)
            os._exit(130)
        print(f"hdi: {signal.Signals(signum).name}: {what}", file=err)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _cmd_db(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if a.action == "info":
        print(catalog.storage_info(session).summary(), file=out)
        return 0
    if not session.embedded:
        if a.action != "status":
            raise ValidationError(f"`hdi db {a.action}` manages the embedded server; a database URL is configured")
        info = catalog.server_info(session.connection())
        print(f"configured server: PostgreSQL {info.version} ({info.label})", file=out)
        return 0
    server = session.embedded_server()
    if a.action == "start":
        server.start()
    elif a.action == "stop":
        print("stopped" if server.stop() else "was not running", file=out)
        return 0
    st = server.status()
    state = f"running (pid {st.pid}, port {st.port})" if st.running else "stopped"
    print(f"embedded PostgreSQL {st.version or ''}: {state}; data {st.data_dir}", file=out)
    return 0


def _cmd_config(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    for name, value, source in session.settings.masked():
        print(f"{name:<18} {value:<50} {source}", file=out)
    return 0


def _cmd_cache(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    cache = session.cache
    folder = session.settings.home_dir / "cache"
    if cache is None:
        print(f"read cache: off (the cache setting; HDI_CACHE=off); folder {folder}", file=out)
        return 0
    if a.action == "clear":
        print(f"read cache: {cache.clear()} files deleted from {folder}", file=out)
        return 0
    used = cache.usage()
    print(
        f"read cache: on; {used.files} files, {used.bytes / 2**20:.1f} MiB of {cache.max_bytes / 2**20:.0f} MiB "
        f"(cache_bytes); {cache.memory_bytes / 2**20:.0f} MiB in memory per process (cache_memory_bytes); "
        f"folder {folder}",
        file=out,
    )
    return 0


def _cmd_features(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from hdi_lab import features

    if a.action == "list":
        _table(features.list_sets(session), out, "(no feature sets)")
        return 0
    if a.action == "publish":
        print(options.publish(a, session), file=out)
        return 0
    if a.action == "env":
        from hdi_lab.featurestore.repo import shell_env, shell_exports

        print(shell_exports(shell_env(session)), file=out)
        return 0
    report = features.compute(
        a.feature_set,
        a.symbols,
        a.interval,
        a.start,
        a.end,
        dataset=a.dataset,
        max_gap=a.max_gap,
        adjust=a.adjust,
        view=a.view,
        executor=a.executor,
        scheduler=a.scheduler,
        session=session,
    )
    print(report, file=out)
    return 0


def _cmd_demo(session: HdiSession, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from hdi_lab.frontend.demo import run_demo

    run_demo(session, out, progress=not a.quiet and err.isatty())
    return 0


COMMANDS: dict[str, Callable[[HdiSession, argparse.Namespace, TextIO, TextIO], int]] = {
    "ingest": _cmd_ingest,
    "query": _cmd_query,
    "export": _cmd_export,
    "status": _cmd_status,
    "quarantine": _cmd_quarantine,
    "watch": _cmd_watch,
    "gaps": _cmd_gaps,
    "update": _cmd_update,
    "scheduler": _cmd_scheduler,
    "live": _cmd_live,
    "report": _cmd_report,
    "db": _cmd_db,
    "config": _cmd_config,
    "cache": _cmd_cache,
    "demo": _cmd_demo,
    "features": _cmd_features,
    "compare": _cmd_compare,
}


@contextlib.contextmanager
def _driver_noise_dropped() -> Iterator[None]:
    """Drop the one traceback psycopg2 prints by itself when the server goes away during a COPY.

    psycopg2 2.9 decodes the server's last message while the connection's error is pending and
    hands the resulting ``SystemError`` (caused by the driver's error) to ``sys.excepthook`` from
    C; the error itself still reaches hdi_lab and is reported in one line. The ``hdi`` command owns
    its process, so it may set the hook for the command's duration; library code never does.
    """
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: object) -> None:
        if kind is SystemError and type(value.__cause__).__module__.startswith("psycopg2"):
            return
        previous(kind, value, tb)  # type: ignore[arg-type]

    sys.excepthook = hook
    try:
        yield
    finally:
        sys.excepthook = previous


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        overrides = {"database_url": args.database_url, "home": Path(args.home) if args.home else None}
        with _driver_noise_dropped(), HdiSession(load_settings(overrides)) as session:
            return COMMANDS[args.command](session, args, out, err)
    except HdiError as exc:
        print(f"hdi: error: {exc}", file=err)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("hdi: interrupted (completed chunks are kept; re-run to resume)", file=err)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
