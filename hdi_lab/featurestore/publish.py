"""Publish feature sets to Feast: compute, ``feast apply``, materialize; training frames; online reads.

>>> from hdi_lab.featurestore.publish import publish, training_frame, online_features
>>> report = publish("momentum_v1", ["AAPL", "MSFT"], "1d", "2023-01-01", "2024-06-01")
>>> frame = training_frame(entities, "momentum_v1")          # Feast point-in-time join (as-of)
>>> online_features(report.instrument_ids, "momentum_v1")    # latest values, with staleness

:func:`publish` (also ``hdi features publish`` and ``%hdi_publish``):

1. computes / refreshes the set for the symbols over ``[start, end)`` (:func:`hdi_lab.features.compute`,
   idempotent; ``compute=False`` publishes what is stored);
2. applies the feature repo (the ``feast apply`` of ``feature_repo/``);
3. loads the online store up to the table's latest row (not "now", so that the next day's rows
   follow what was materialized): ``materialize_incremental`` when the published rows all lie
   after what was materialized before (a daily append: only the new rows are read), else
   ``materialize`` over the published rows' window (the first publish, a backfill, new symbols).
   Either way the online store ends with each instrument's latest stored values.

**Online staleness.** Feast's online read ignores the view's TTL: it returns the last materialized
value however old. :func:`online_features` adds each row's ``event_timestamp``, its ``age`` and a
``status`` (``fresh`` / ``stale`` = older than the TTL, which the offline store would not return /
``missing``); ``drop_stale=True`` blanks stale values as a training frame would.

Feast is imported on first use, never by ``import hdi_lab`` or ``%load_ext hdi_lab``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hdi_lab import features
from hdi_lab.core.session import HdiSession, with_session
from hdi_lab.errors import ValidationError
from hdi_lab.featurestore import repo as feast_repo
from hdi_lab.schemas import INTERVALS, check_interval, parse_range, parse_symbols, require_symbols

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = ["PublishReport", "feature_store", "online_features", "publish", "training_frame"]


@dataclass
class PublishReport:
    """What :func:`publish` did."""

    feature_set: str
    interval: str
    view: str
    service: str
    symbols: tuple[str, ...]
    computed: features.FeatureReport | None = None
    applied: list[str] = field(default_factory=list)
    materialize: str = ""  # "incremental" or "window"
    window_start: pd.Timestamp | None = None
    window_end: pd.Timestamp | None = None
    instrument_ids: list[int] = field(default_factory=list)
    online_rows: int = 0  # instruments with a value in the online store after publishing
    online_store: str = ""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        c = self.computed
        return {
            "feature_set": self.feature_set,
            "interval": self.interval,
            "service": self.service,
            "instruments": len(self.instrument_ids),
            "rows": c.rows if c else None,
            "inserted": c.inserted if c else None,
            "updated": c.updated if c else None,
            "materialize": self.materialize,
            "window": f"{_ts(self.window_start)} .. {_ts(self.window_end)}",
            "online_rows": self.online_rows,
            "online_store": self.online_store,
            "seconds": round(self.seconds, 3),
        }

    def __str__(self) -> str:
        s = self.summary()
        computed = (
            f"computed {s['rows']:,} rows ({s['inserted']:,} inserted, {s['updated']:,} updated); "
            if self.computed
            else ""
        )
        return (
            f"published {self.feature_set} {self.interval} as feature service {self.service!r}: {computed}"
            f"applied {len(self.applied)} Feast objects; materialized ({self.materialize}) {s['window']} into "
            f"the {self.online_store} online store: {self.online_rows} of {s['instruments']} instrument(s) "
            f"online ({self.seconds:.2f} s)"
        )

    def _repr_html_(self) -> str:
        from html import escape

        s = self.summary()
        cell = "style='text-align:right'"
        head = "".join(f"<th {cell}>{escape(k)}</th>" for k in s)
        row = "".join(f"<td {cell}>{escape('' if v is None else str(v))}</td>" for v in s.values())
        return (
            f"<table><caption style='text-align:left'><b>published {escape(self.service)}</b></caption>"
            f"<thead><tr>{head}</tr></thead><tbody><tr>{row}</tr></tbody></table>"
        )


def _ts(t: pd.Timestamp | None) -> str:
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M")


def feature_store(session: HdiSession | None = None, repo: str | Path | None = None) -> FeatureStore:
    """A Feast ``FeatureStore`` over hdi_lab's feature repo and database (for your own Feast calls).

    Raises ConfigError when the repo, the database URL or feature_store.yaml is not usable."""
    if session is None:  # made here, closed here: the store keeps what it read, not the session
        with HdiSession() as own:
            return feast_repo.open_store(own, repo)
    return feast_repo.open_store(session, repo)


# -- publish ------------------------------------------------------------------------------------


def publish(
    set_name: str,
    symbols: str | Sequence[str] | None = None,
    interval: str = "1d",
    start: object = None,
    end: object = None,
    *,
    compute: bool = True,
    dataset: str | None = None,
    repo: str | Path | None = None,
    session: HdiSession | None = None,
) -> PublishReport:
    """Compute ``set_name`` for ``symbols`` over ``[start, end)``, apply the feature repo and load the
    online store. ``compute=False`` publishes the rows already stored for the bars opened in
    ``[start, end)`` (default: all; ``symbols`` may then be omitted: every instrument of the table).

    Nothing is printed and no process-wide state changes (the environment, the working directory,
    ``sys.path``/``sys.modules``, ``sys.stdout``): other threads of a kernel are not disturbed.

    Raises ValidationError for an unknown set or interval, missing symbols or a table not computed
    yet; ConfigError for an unusable repo or configuration; StorageError when a database call fails."""
    fs = features.feature_set(set_name)
    check_interval(interval)
    syms = (
        require_symbols(symbols, "or compute=False to publish the rows already stored")
        if compute
        else parse_symbols(symbols)
    )
    return with_session(session, lambda s: _publish(s, fs, syms, interval, start, end, compute, dataset, repo))


def _publish(
    session: HdiSession,
    fs: features.FeatureSet,
    syms: tuple[str, ...],
    interval: str,
    start: object,
    end: object,
    compute: bool,
    dataset: str | None,
    repo: str | Path | None,
) -> PublishReport:
    t0 = time.perf_counter()
    report = PublishReport(
        fs.name, interval, feast_repo.view_name(fs.name, interval), feast_repo.service_name(fs.name, interval), syms
    )
    if compute:
        report.computed = features.compute(fs.name, syms, interval, start, end, dataset=dataset, session=session)
    t1 = time.perf_counter()
    lo = hi = None
    step = pd.Timedelta(seconds=INTERVALS[interval])
    if report.computed is not None:  # the rows of the bars opened in [start, end) are stamped one bar later
        lo, hi = report.computed.start + step, report.computed.end + step
    elif start is not None or end is not None:
        lo_bar, hi_bar = parse_range("1970-01-01" if start is None else start, "2200-01-01" if end is None else end)
        lo, hi = lo_bar + step, hi_bar + step
    ids, first, latest = _published_rows(session, features.table_name(fs.name, interval), lo, hi)
    report.instrument_ids = ids
    store = feast_repo.open_store(session, repo)
    report.online_store = str(store.config.online_store.type)
    with feast_repo.feast_errors():
        report.applied = feast_repo.apply(store)
    t2 = time.perf_counter()
    report.materialize = "none (no rows)"
    if ids:
        assert first is not None and latest is not None
        view = store.get_feature_view(report.view)
        done = [iv[1] for iv in view.materialization_intervals]
        until = latest + pd.Timedelta(microseconds=1)  # Feast's end bound is inclusive; keep it past the row
        if done and first > max(done):  # what materialize_incremental would load: from the last end on
            report.materialize = "incremental"
            report.window_start = pd.Timestamp(max(done))
        else:
            report.materialize = "window"
            report.window_start = first
        with feast_repo.feast_errors():  # Feast's own materialize prints; this one is silent
            feast_repo.materialize(store, report.view, report.window_start.to_pydatetime(), until.to_pydatetime())
        report.window_end = until
        online = _online(store, report.service, ids)
        report.online_rows = int(online["event_timestamp"].notna().sum())
    t3 = time.perf_counter()
    report.timings = {"compute": t1 - t0, "apply": t2 - t1, "materialize": t3 - t2}
    report.seconds = t3 - t0
    return report


def _published_rows(
    session: HdiSession, table: str, lo: pd.Timestamp | None, hi: pd.Timestamp | None
) -> tuple[list[int], pd.Timestamp | None, pd.Timestamp | None]:
    """Instruments and first event of the rows being published (event_timestamp in [lo, hi)), and the
    table's latest event (materialization runs up to it: later rows of other windows stay online)."""
    from hdi_lab.storage.features import published_rows

    return published_rows(session.connection(), session.schema, table, lo, hi)


# -- reading ------------------------------------------------------------------------------------


def training_frame(
    entity_df: pd.DataFrame | str,
    set_name: str = "momentum_v1",
    interval: str = "1d",
    *,
    full_feature_names: bool = False,
    repo: str | Path | None = None,
    session: HdiSession | None = None,
) -> pd.DataFrame:
    """Feast's point-in-time join of the published set onto ``entity_df`` (``instrument_id``,
    ``event_timestamp`` and any label columns): for each row the latest values knowable at its time
    within the view's TTL, else NaN. A DataFrame comes back in its own row order and index, with
    ``event_timestamp`` in UTC.

    Raises ValidationError for an unknown set or a service not published yet; ConfigError /
    StorageError as :func:`publish` does."""
    fs = features.feature_set(set_name)

    def work(s: HdiSession) -> pd.DataFrame:
        store = feast_repo.open_store(s, repo)
        service = _service(store, feast_repo.service_name(fs.name, interval))
        with feast_repo.feast_errors():
            if isinstance(entity_df, str):
                return _utc(
                    store.get_historical_features(
                        entity_df=entity_df, features=service, full_feature_names=full_feature_names
                    ).to_df()
                )
            rows = entity_df.assign(_hdi_row=range(len(entity_df)))
            out = store.get_historical_features(
                entity_df=rows, features=service, full_feature_names=full_feature_names
            ).to_df()
        out = out.sort_values("_hdi_row").drop(columns="_hdi_row")
        out.index = entity_df.index
        return _utc(out)

    frame: pd.DataFrame = with_session(session, work)
    return frame


def _utc(frame: pd.DataFrame) -> pd.DataFrame:
    ts = frame.get("event_timestamp")
    if ts is not None and getattr(ts.dt, "tz", None) is None:
        frame["event_timestamp"] = ts.dt.tz_localize("UTC")  # Feast's PostgreSQL results drop the zone
    return frame


def _service(store: FeatureStore, name: str) -> Any:
    from feast.errors import FeatureServiceNotFoundException

    try:
        return store.get_feature_service(name)
    except FeatureServiceNotFoundException:
        raise ValidationError(
            f"feature service {name!r} is not registered: publish the set first "
            "(hdi features publish / hdi_lab.featurestore.publish.publish)"
        ) from None


def online_features(
    instrument_ids: int | Sequence[int],
    set_name: str = "momentum_v1",
    interval: str = "1d",
    *,
    now: object = None,
    drop_stale: bool = False,
    repo: str | Path | None = None,
    session: HdiSession | None = None,
) -> pd.DataFrame:
    """The online store's values of the set for ``instrument_ids``, one row each, in order.

    Columns: ``instrument_id``, the features, ``event_timestamp`` (UTC), ``age`` (``now`` minus it),
    ``status`` (``fresh``, ``stale``: older than the view's TTL, ``missing``: never published).
    Feast itself serves stale values as if fresh; ``drop_stale=True`` blanks them (NaN).

    Raises ValidationError for an unknown set or a service not published yet; ConfigError /
    StorageError as :func:`publish` does.
    """
    fs = features.feature_set(set_name)
    ids = [int(instrument_ids)] if isinstance(instrument_ids, int) else [int(i) for i in instrument_ids]
    at = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)  # type: ignore[arg-type]
    at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")

    def work(s: HdiSession) -> pd.DataFrame:
        store = feast_repo.open_store(s, repo)
        return _online(store, feast_repo.service_name(fs.name, interval), ids)

    out: pd.DataFrame = with_session(session, work)
    ttl = pd.Timedelta(feast_repo.TTL[interval])
    out["age"] = at - out["event_timestamp"]
    stale = out["event_timestamp"].notna() & (out["event_timestamp"] < at - ttl)
    out["status"] = "fresh"
    out.loc[stale, "status"] = "stale"
    out.loc[out["event_timestamp"].isna(), "status"] = "missing"
    if drop_stale:
        out.loc[stale, list(fs.columns)] = float("nan")
    return out


def _online(store: FeatureStore, service_name: str, ids: list[int]) -> pd.DataFrame:
    """Feast's online response as a frame: features, and their event time (NaT when none)."""
    from feast.online_response import TIMESTAMP_POSTFIX

    service = _service(store, service_name)
    with feast_repo.feast_errors():
        data = store.get_online_features(features=service, entity_rows=[{feast_repo.JOIN_KEY: i} for i in ids]).to_dict(
            include_event_timestamps=True
        )
    served = [f.name for projection in service.feature_view_projections for f in projection.features]
    names = [n for n in served if n in data]  # the set's column order (Feast answers in its own)
    frame = pd.DataFrame({feast_repo.JOIN_KEY: ids})
    for n in names:
        frame[n] = pd.to_numeric(pd.Series(data[n], dtype=object), errors="coerce").astype("float64")
    seconds = pd.DataFrame({n: data[n + TIMESTAMP_POSTFIX] for n in names}).max(axis=1) if names else None
    ts = pd.to_datetime(seconds, unit="s", utc=True) if seconds is not None else pd.Series(pd.NaT, index=frame.index)
    frame["event_timestamp"] = ts.where(seconds > 0) if seconds is not None else ts
    return frame
