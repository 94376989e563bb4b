"""The scheduler: ``hdi scheduler run`` keeps every subscription current on its own schedule.

Built on APScheduler 3 (the ``scheduler`` extra) with its jobs in the database (APScheduler's SQLAlchemy job
store, table ``scheduler_jobs`` in the hdi_lab schema): one job per subscription, ``subscription-ID``, which
runs :func:`hdi_lab.core.update.update` of that subscription. Updates are ingests and log themselves to the
ingest log; the scheduler logs each run's outcome through :mod:`logging`.

Schedules. A subscription's ``cron`` option wins: five crontab fields (``"30 22 * * mon-fri"``) in UTC, or six
with seconds first (``"*/5 * * * * *"``, for tests and demos). Without one, the job runs Monday to Friday
30 minutes after the regular close of the dataset's exchange calendar (:func:`hdi_lab.calendars.calendar_for`),
in the calendar's time zone, so the time follows daylight saving time (``CMES``: 16:30 America/Chicago, its
trading day ending at the 16:00 daily halt; ``XNAS``/``XNYS``: 16:30 America/New_York). Early closes keep the
regular time (the run is later than needed, never too early). An update stores whole UTC days (its default
``until`` is the start of the current UTC day, or the vendor's available range), so a US session that closed
before UTC midnight is stored by the next run. A dataset without a known calendar runs at 00:30 UTC every day.

Runs. A failed update is retried ``retries`` times, waiting ``backoff`` seconds, doubled each time; the chunks
it committed before failing stay, so a retry resumes. What a retry cannot fix (ValidationError, e.g. the cost
limit; ConfigError, e.g. no API key) is logged and not retried: the next scheduled run tries again.
``coalesce=True``: runs missed while no scheduler was running become one run (an update catches up every
missing day anyway); ``misfire_grace_time=None``: that run happens however late the scheduler starts;
``max_instances=1``: a subscription never runs twice at once.
APScheduler stores a job's next run time as soon as it hands the job to its worker, before the update does its
work, so a scheduler killed during a run does not run that fire time again when restarted; and an update is
idempotent (stored chunks are not fetched again), so even a repeated run (a kill in between) applies nothing twice.

One scheduler per database (per hdi_lab schema): :func:`run` takes a PostgreSQL advisory lock on a dedicated
connection and holds it while it runs; a second scheduler waits for it (``wait=True``) or raises
:class:`SchedulerBusy`. Stopping: set the ``stop`` event (``hdi scheduler run`` does on SIGTERM or SIGINT);
the update running is finished (a retry waiting is abandoned), then the scheduler exits; each chunk is one
transaction, so a process killed mid-chunk (a second signal to ``hdi scheduler run``, or SIGKILL) leaves nothing
half-stored and the next update fetches that chunk again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import pandas as pd

from hdi_lab import calendars
from hdi_lab.core import update as updater
from hdi_lab.core.session import HdiSession
from hdi_lab.core.subscriptions import CRON_FIELDS, Subscription, cron_fields
from hdi_lab.errors import ConfigError, HdiError, ValidationError
from hdi_lab.extras import require
from hdi_lab.schemas import parse_time
from hdi_lab.storage import db
from hdi_lab.storage import scheduler as lock

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

__all__ = [
    "CLOSE_DELAY",
    "JOB_DEFAULTS",
    "Job",
    "SchedulerBusy",
    "UpdateFn",
    "active",
    "job_id",
    "jobs",
    "run",
    "run_subscription",
    "schedule_of",
    "trigger_of",
]

log = logging.getLogger(__name__)

#: how long after its calendar's regular close a subscription without a ``cron`` option runs
CLOSE_DELAY = dt.timedelta(minutes=30)
#: APScheduler's job defaults (see the module for why)
JOB_DEFAULTS: dict[str, Any] = {"coalesce": True, "misfire_grace_time": None, "max_instances": 1}
_EXTRA = "scheduler"
_JOB_FUNC = "hdi_lab.core.scheduler:run_subscription"


class SchedulerBusy(HdiError):
    """Another scheduler holds the database's scheduler lock."""


@dataclass(frozen=True)
class Job:
    """One subscription's job: its schedule and next run (None before a scheduler first stored it)."""

    subscription: Subscription
    schedule: str
    next_run: pd.Timestamp | None


@dataclass
class _Runner:
    """What the jobs of the running scheduler use (APScheduler calls :func:`run_subscription` by name)."""

    session: HdiSession
    until: object
    retries: int
    backoff: float
    stop: threading.Event
    update: UpdateFn


#: how a job updates one subscription: (session, [id], until) -> report. The default is the core's update; the
#: front ends pass hdi_lab.api's, which then runs the work after an update (features, Feast) the core cannot
UpdateFn: TypeAlias = Callable[[HdiSession, list[int], object], updater.UpdateReport]


def _core_update(session: HdiSession, which: list[int], until: object) -> updater.UpdateReport:
    return updater.update(session, which, until=until)


# the running scheduler's runner (at most one per process: it holds the database lock)
_running: list[_Runner] = []


def job_id(sub: Subscription) -> str:
    """The job of ``sub``: ``subscription-ID``."""
    return f"subscription-{sub.id}"


def trigger_of(sub: Subscription) -> CronTrigger:
    """The cron trigger of ``sub`` (see the module).

    Raises ValidationError for a ``cron`` option that is not five or six cron fields; MissingDependency
    without the ``scheduler`` extra."""
    cron_module = require("apscheduler.triggers.cron", _EXTRA)
    try:
        trigger: CronTrigger = cron_module.CronTrigger(**_cron_fields(sub))
    except ValueError as exc:
        raise ValidationError(f"{sub.label}: cron {sub.options.get('cron')!r} is not valid ({exc})") from None
    return trigger


def _cron_fields(sub: Subscription) -> dict[str, str]:
    """The CronTrigger arguments of ``sub``'s schedule. Raises ValidationError for a bad ``cron`` option."""
    cron = sub.options.get("cron")
    if cron is not None:  # checked when added (subscriptions.check_cron); one stored before is checked here
        try:
            return cron_fields(cron)
        except ValidationError as exc:
            raise ValidationError(f"{sub.label}: {exc}") from None
    try:
        code = calendars.calendar_for(sub.dataset)
    except ValidationError:
        return {"hour": "0", "minute": "30", "timezone": "UTC"}
    close, tz = _regular_close(code)
    at = (dt.datetime.combine(dt.date(2000, 1, 1), close) + CLOSE_DELAY).time()
    return {"day_of_week": "mon-fri", "hour": str(at.hour), "minute": str(at.minute), "timezone": tz}


def _regular_close(code: str) -> tuple[dt.time, str]:
    """The regular end of trading of calendar ``code`` and its time zone: the start of its daily halt
    (:data:`hdi_lab.calendars.DAILY_HALTS`: CME's 16:00 Chicago) where it has one, else its latest close."""
    xcals = require("exchange_calendars", "all")
    cal = xcals.get_calendar(code, start=calendars.FIRST_SESSION)
    if code in calendars.DAILY_HALTS:
        return calendars.DAILY_HALTS[code][0], str(cal.tz)
    return max(t for _, t in cal.close_times), str(cal.tz)


def schedule_of(sub: Subscription) -> str:
    """``sub``'s schedule as cron fields and a time zone, e.g. ``30 16 * * mon-fri America/Chicago``.

    Raises ValidationError for a bad ``cron`` option; MissingDependency without the ``scheduler`` extra."""
    trigger_of(sub)  # validates the fields
    f = _cron_fields(sub)
    names = ("second", *CRON_FIELDS) if "second" in f else CRON_FIELDS
    fields = [f.get(n, "*") for n in names]
    return " ".join([*fields, f["timezone"]])


def _store(session: HdiSession) -> Any:
    """APScheduler's SQLAlchemy job store on ``session``'s database, through psycopg2 (hdi_lab's driver;
    SQLAlchemy's default for ``postgresql://`` may be another), holding no connection between its uses."""
    jobstores = require("apscheduler.jobstores.sqlalchemy", _EXTRA)
    pool = require("sqlalchemy.pool", _EXTRA)
    scheme, _, rest = session.database_url().partition("://")
    url = f"postgresql+psycopg2://{rest}" if scheme in ("postgresql", "postgres") else session.database_url()
    return jobstores.SQLAlchemyJobStore(
        url=url,
        tablename=lock.JOBS_TABLE,
        tableschema=session.schema,
        engine_options={"poolclass": pool.NullPool},
    )


def jobs(session: HdiSession) -> list[Job]:
    """Every subscription's job with its schedule and the next run time the job store holds.

    Raises MissingDependency without the ``scheduler`` extra, StorageError."""
    background = require("apscheduler.schedulers.background", _EXTRA)
    store = _store(session)
    store.start(background.BackgroundScheduler(), "default")
    try:
        stored = {j.id: j for j in store.get_all_jobs()}
    finally:
        store.shutdown()
    out = []
    for sub in updater.select(session):
        found = stored.get(job_id(sub))
        when = None if found is None or found.next_run_time is None else pd.Timestamp(found.next_run_time)
        try:
            schedule = schedule_of(sub)
        except ValidationError as exc:
            schedule = f"invalid: {exc}"
        out.append(Job(sub, schedule, None if when is None else when.tz_convert("UTC")))
    return out


def active(session: HdiSession) -> bool:
    """Whether a scheduler holds the lock of ``session``'s database now. Raises StorageError."""
    conn = db.connect(session.database_url(), session.schema)
    try:
        return lock.held(conn, session.schema)
    finally:
        conn.close()


def run_subscription(sub_id: int) -> None:
    """The job of a subscription: update it, retrying failures with backoff (see the module); APScheduler
    calls it by name. Raises nothing: failures are logged."""
    if not _running:  # only a running scheduler calls jobs
        log.error("subscription %s: no scheduler is running in this process", sub_id)
        return
    runner = _running[0]
    for attempt in range(runner.retries + 1):
        if runner.stop.is_set():
            log.info("subscription %s: not updated, the scheduler is stopping", sub_id)
            return
        t0 = time.perf_counter()
        try:
            report = runner.update(runner.session, [sub_id], runner.until)
        except (ValidationError, ConfigError) as exc:  # a retry cannot fix these: a person must
            log.error("subscription %s: update refused, not retried: %s", sub_id, exc)
            return
        except HdiError as exc:
            wait = runner.backoff * 2**attempt
            if attempt == runner.retries:
                log.error("subscription %s: update failed after %d attempts: %s", sub_id, attempt + 1, exc)
                return
            log.warning("subscription %s: update failed (%s); retrying in %.1f s", sub_id, exc, wait)
            runner.stop.wait(wait)
            continue
        for p in report.plans:
            log.info("scheduled update done in %.1f s: %s", time.perf_counter() - t0, p.describe())
        return


def _sync(scheduler: BackgroundScheduler, session: HdiSession) -> None:
    """Make the jobs match the subscriptions: add the new, replace the changed, remove the removed.
    A job whose schedule did not change keeps its stored next run (a missed run is caught up)."""
    wanted = {}
    for sub in updater.select(session):
        try:
            wanted[job_id(sub)] = (sub, trigger_of(sub))
        except ValidationError as exc:
            log.error("%s is not scheduled: %s", sub.label, exc)
    for job in scheduler.get_jobs():
        if job.id not in wanted:
            log.info("job %s removed: its subscription is gone or not schedulable", job.id)
            job.remove()
    for key, (sub, trigger) in wanted.items():
        current = scheduler.get_job(key)
        same = current is not None and (str(current.trigger), str(current.trigger.timezone)) == (
            str(trigger),
            str(trigger.timezone),
        )
        if same:
            continue
        scheduler.add_job(
            _JOB_FUNC, trigger, args=(sub.id,), id=key, name=sub.label, replace_existing=True, **JOB_DEFAULTS
        )
        log.info("%s scheduled: %s", sub.label, schedule_of(sub))


def run(
    session: HdiSession,
    stop: threading.Event,
    *,
    wait: bool = False,
    until: object = None,
    retries: int = 3,
    backoff: float = 60.0,
    refresh: float = 30.0,
    poll: float = 1.0,
    update: UpdateFn = _core_update,
) -> None:
    """Run the scheduler until ``stop`` is set (see the module); subscriptions added or removed while it runs
    are picked up every ``refresh`` seconds. ``until`` is passed to every update (default: the update's);
    ``update`` runs one subscription's update (see :data:`UpdateFn`).

    Raises SchedulerBusy when another scheduler holds the lock and ``wait`` is False; ValidationError for a
    bad ``until``; MissingDependency without the ``scheduler`` extra; StorageError (also when the lock's
    connection is lost: the running update finishes, then the scheduler stops)."""
    background = require("apscheduler.schedulers.background", _EXTRA)
    if until is not None:
        until = parse_time(until, "until")
    conn = db.connect(session.database_url(), session.schema)
    try:
        while not lock.try_lock(conn, session.schema):
            if not wait:
                raise SchedulerBusy(
                    f"another scheduler is running on this database (schema {session.schema}): stop it, or pass "
                    "--wait to take over when it stops"
                )
            if stop.wait(poll):
                return
        log.info("scheduler started (schema %s)", session.schema)
        # the jobs run in APScheduler's worker thread: they get their own session (connection)
        jobs_session = HdiSession(session.settings.replace(database_url=session.database_url()))
        _running[:] = [_Runner(jobs_session, until, retries, backoff, stop, update)]
        scheduler = background.BackgroundScheduler(
            jobstores={"default": _store(session)},
            executors={"default": {"type": "threadpool", "max_workers": 1}},
            job_defaults=JOB_DEFAULTS,
            timezone="UTC",
        )
        scheduler.start()
        try:
            while True:
                _sync(scheduler, session)
                if stop.wait(refresh):
                    break
                lock.check_held(conn)  # without the lock another scheduler may start: stop rather than run two
        finally:
            log.info("scheduler stopping: waiting for the running update to finish")
            scheduler.shutdown(wait=True)
            _running.clear()
            jobs_session.close()
            log.info("scheduler stopped")
    finally:
        conn.close()
