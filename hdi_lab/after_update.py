"""The work that follows an update, as each subscription's options say (see
:data:`hdi_lab.core.subscriptions.OPTIONS`): for a subscription whose stored rows the update changed,
its ``features`` sets are recomputed from the first changed bar, and with ``publish`` the Feast online
store is loaded with them.

It lives above the core (which ingests and knows nothing of features): :func:`hdi_lab.update` and the
front ends run the core's update, then :func:`run` over its report.

**From the first changed bar.** A chunk reports, per instrument whose rows it inserted, updated or deleted,
the first such row's ``ts_event`` (:attr:`hdi_lab.schemas.ChunkResult.changed`); the computation starts at
the ``interval`` bar holding the earliest of them, for those instruments only (a continuous or parent
symbol maps to several contracts: the ones whose bars did not change are not recomputed).
:func:`hdi_lab.features.compute` resumes an instrument from its saved state only when that state lies just
before the start; a revised bar before a saved state makes it compute the instrument from its first bar and
store the rows from the start on, so a revision of old bars is never hidden by a state saved after them.

**Where it runs.** An update run on a Dask cluster (``executor="dask"``) computes the feature sets on the same
cluster (:func:`hdi_lab.features.compute` partitioned by instrument); a local update computes them here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from hdi_lab import features
from hdi_lab.core.executors import DaskExecutor
from hdi_lab.core.session import HdiSession
from hdi_lab.core.subscriptions import check_options
from hdi_lab.core.update import SubscriptionPlan, UpdateReport
from hdi_lab.featurestore import publish as publisher
from hdi_lab.schemas import INTERVALS
from hdi_lab.storage import symbology

__all__ = ["changed_symbols", "run", "run_plan", "start_of", "validate_options"]


def validate_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """:func:`hdi_lab.core.subscriptions.check_options` of ``options``, its feature sets known.

    Raises ValidationError for a bad option or an unknown feature set."""
    opts = check_options(options)
    for name in opts.get("features", ()):
        features.feature_set(name)
    return opts


def start_of(first_changed: pd.Timestamp, interval: str) -> pd.Timestamp:
    """The open of the ``interval`` bar holding ``first_changed`` (bars are aligned on the epoch). Raises nothing."""
    return first_changed.floor(f"{INTERVALS[interval]}s")


def changed_symbols(session: HdiSession, plan: SubscriptionPlan, start: pd.Timestamp) -> tuple[str, ...]:
    """The subscription's symbols that map, from ``start`` on, to an instrument the update changed (all of
    them when the symbology says none: the computation then sorts out which have bars).

    Raises StorageError."""
    sub, changed = plan.subscription, plan.changed
    spans = symbology.lookup(
        session.connection(), session.schema, sub.symbols, start, pd.Timestamp.now(tz="UTC"), sub.dataset, []
    )
    found = tuple(sorted({sp.symbol for sp in spans if sp.instrument_id in changed}))
    return found or sub.symbols


def run_plan(
    session: HdiSession,
    plan: SubscriptionPlan,
    repo: str | Path | None = None,
    *,
    executor: DaskExecutor | None = None,
) -> list[object]:
    """Run what follows one subscription's update (its feature sets, then its publishes, for
    :func:`changed_symbols` from the first changed bar on) and add the reports
    to ``plan.after``; returns them (none when its options ask for nothing or its run changed no row). The
    feature sets are computed on ``executor``'s Dask cluster when given, else here.

    Raises ValidationError (an unknown feature set, a gap in the bars), ConfigError (an unusable Feast repo)
    and StorageError; with ``executor`` also ClusterError and MissingDependency."""
    sub = plan.subscription
    changed = plan.changed
    if not sub.feature_sets or not changed:
        return []
    interval = sub.feature_interval
    start = start_of(min(changed.values()), interval)
    symbols = changed_symbols(session, plan, start)
    done: list[object] = []
    for name in sub.feature_sets:
        done.append(
            features.compute(
                name,
                symbols,
                interval,
                start,
                dataset=sub.dataset,
                instruments=sorted(changed),
                executor=None if executor is None else "dask",
                scheduler=None if executor is None else executor.scheduler,
                session=session,
            )
        )
        if sub.publishes:
            done.append(
                publisher.publish(
                    name,
                    symbols,
                    interval,
                    start,
                    compute=False,
                    dataset=sub.dataset,
                    repo=repo,
                    session=session,
                )
            )
    plan.after.extend(done)
    return done


def run(
    session: HdiSession,
    report: UpdateReport,
    repo: str | Path | None = None,
    *,
    executor: DaskExecutor | None = None,
) -> UpdateReport:
    """Run what follows the update of ``report`` (nothing after a dry run) for each subscription, in order,
    its feature sets on ``executor``'s Dask cluster when given (the update's); returns ``report``, its plans'
    ``after`` filled.

    Raises what :func:`run_plan` raises; the update's data stays stored and the work before is kept."""
    if not report.dry_run:
        for plan in report.plans:
            run_plan(session, plan, repo, executor=executor)
    return report
