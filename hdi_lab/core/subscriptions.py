"""Subscriptions: the market data to keep current, stored in the database so every user and a scheduler see
one list (``hdi watch add|list|remove``, ``hdi_lab.watch`` / ``watches`` / ``unwatch``, ``%hdi_watch``).

A subscription is an ingest request without an end: provider, dataset, schema, stype_in and symbols, from
``since`` on. Adding one validates it exactly as an ingest of its first day would be validated (the provider
plans that day; nothing is fetched), and stores the dataset the provider planned with. One subscription per
request: adding the same request again with the same ``since``, name and options changes nothing and returns
the stored one; with anything different it is an error (remove it first). Names are unique and never all
digits, so a subscription is named by its id or its name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hdi_lab.core.session import PROVIDERS, HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.extras import require
from hdi_lab.schemas import (
    SCHEMAS,
    IngestRequest,
    Schema,
    SType,
    check_interval,
    parse_enum,
    parse_time,
    require_symbols,
)
from hdi_lab.storage import subscriptions as table

__all__ = [
    "COLUMNS",
    "CRON_EXAMPLE",
    "CRON_FIELDS",
    "DEFAULT_INTERVAL",
    "OPTIONS",
    "Subscription",
    "add",
    "check_cron",
    "check_options",
    "cron_fields",
    "find",
    "frame",
    "list_all",
    "remove",
]

#: the columns of :func:`frame`: the table's, symbols joined by commas
COLUMNS = table.COLUMNS

#: the options that say what runs after an update changed a subscription's data (other keys are kept as given)
OPTIONS = {
    "features": "feature sets recomputed from the first changed bar of the instruments an update changed",
    "interval": "the bar interval of those feature sets (default 1d)",
    "publish": "true: the Feast online store is materialized with them after the update",
    "cron": "when the scheduler updates it: five cron fields in UTC (default: 30 minutes after the close)",
}
#: the ``interval`` of the feature sets when the options do not say
DEFAULT_INTERVAL = "1d"
#: a valid ``cron`` option, as the errors about one show it: weekdays at 22:30 UTC
CRON_EXAMPLE = "30 22 * * mon-fri"
#: the five crontab fields of a ``cron`` option, in order, as APScheduler's ``CronTrigger`` names them
CRON_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_CRON_HELP = (
    f"give five cron fields in UTC, minute hour day month weekday, e.g. '{CRON_EXAMPLE}' (or six, seconds first)"
)


def cron_fields(cron: object) -> dict[str, str]:
    """The APScheduler ``CronTrigger`` arguments of a ``cron`` option: five crontab fields (minute hour day month
    weekday) or six with seconds first, in UTC.

    Raises ValidationError when ``cron`` is no text or has another number of fields."""
    if not isinstance(cron, str) or not cron.strip():
        raise ValidationError(f"cron {cron!r} is not a cron expression: {_CRON_HELP}")
    fields = cron.split()
    names: tuple[str, ...] = CRON_FIELDS
    if len(fields) == 6:
        names = ("second", *names)
    elif len(fields) != 5:
        raise ValidationError(f"cron {cron!r} has {len(fields)} fields: {_CRON_HELP}")
    return {**dict(zip(names, fields, strict=True)), "timezone": "UTC"}


def check_cron(cron: object) -> str:
    """A ``cron`` option as stored (its fields separated by single spaces), checked as the scheduler will read
    it (APScheduler's ``CronTrigger``: field ranges, names, steps).

    Raises ValidationError for a bad expression, saying what a valid one looks like; MissingDependency without
    the ``scheduler`` extra (which reads the option)."""
    fields = cron_fields(cron)
    cron_module = require("apscheduler.triggers.cron", "scheduler")
    try:
        cron_module.CronTrigger(**fields)
    except ValueError as exc:
        raise ValidationError(f"cron {cron!r} is not valid ({exc}): {_CRON_HELP}") from None
    return " ".join(str(cron).split())


@dataclass(frozen=True)
class Subscription:
    """One stored subscription."""

    id: int
    name: str | None
    provider: str
    dataset: str
    schema: Schema
    stype_in: SType
    symbols: tuple[str, ...]
    since: dt.date
    created_at: pd.Timestamp  # UTC
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: table.Row) -> Subscription:
        """A subscription from its stored row."""
        return cls(
            id=int(row["id"]),
            name=row["name"],
            provider=row["provider"],
            dataset=row["dataset"],
            schema=Schema(row["schema"]),
            stype_in=SType(row["stype_in"]),
            symbols=tuple(row["symbols"]),
            since=row["since"],
            created_at=pd.Timestamp(row["created_at"]).tz_convert("UTC"),
            options=dict(row["options"]),
        )

    @property
    def feature_sets(self) -> tuple[str, ...]:
        """The feature sets recomputed after an update changed this subscription's data (``features``)."""
        return tuple(self.options.get("features", ()))

    @property
    def feature_interval(self) -> str:
        """The bar interval of :attr:`feature_sets` (``interval``, default 1d)."""
        return str(self.options.get("interval", DEFAULT_INTERVAL))

    @property
    def publishes(self) -> bool:
        """Whether the feature sets are published to the Feast online store after an update (``publish``)."""
        return bool(self.options.get("publish", False))

    @property
    def label(self) -> str:
        """``subscription 3 (es_1m)``, or ``subscription 3`` without a name."""
        return f"subscription {self.id}" + (f" ({self.name})" if self.name else "")

    def request(
        self, end: object, *, force: bool = False, dry_run: bool = False, allow_cost: bool = False
    ) -> IngestRequest:
        """The ingest request of ``[since, end)``: what an update of this subscription ingests.

        Raises ValidationError when ``end`` is not a date or timestamp."""
        return IngestRequest(
            provider=self.provider,
            schema=self.schema,
            dataset=self.dataset,
            symbols=self.symbols,
            stype_in=self.stype_in,
            start=parse_time(self.since, "since"),
            end=parse_time(end, "end"),
            force=force,
            dry_run=dry_run,
            allow_cost=allow_cost,
        )

    def __str__(self) -> str:
        return (
            f"{self.label}: {self.provider} {self.dataset} {self.schema} {','.join(self.symbols)} "
            f"({self.stype_in}) since {self.since}"
        )


def _name(name: str | None) -> str | None:
    if name is None or not str(name).strip():
        return None
    text = str(name).strip()
    if text.isdigit():
        raise ValidationError(f"name={text!r} is all digits, which reads as an id: give a name with a letter")
    return text


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` as stored (a JSON object), the keys of :data:`OPTIONS` checked: ``features`` a list of
    feature-set names (a string of comma-separated names is split), ``interval`` a bar interval, ``publish``
    a boolean that needs ``features``, ``cron`` a cron expression (:func:`check_cron`). Empty ``features`` and a
    false ``publish`` are left out.

    Raises ValidationError for options that are not a JSON object or a bad value of those keys;
    MissingDependency for a ``cron`` without the ``scheduler`` extra."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValidationError(f"options must be a mapping (a JSON object), not {type(options).__name__}")
    try:
        opts = dict(json.loads(json.dumps(dict(options))))  # stored as JSONB: what comes back is what is compared
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"options cannot be stored as JSON ({exc}): give strings, numbers, lists, dicts"
        ) from None
    sets = opts.pop("features", None)
    if isinstance(sets, str):
        sets = [p.strip() for p in sets.split(",")]
    if sets is not None and (not isinstance(sets, list) or not all(isinstance(n, str) and n.strip() for n in sets)):
        raise ValidationError(f"options features={sets!r}: give a list of feature-set names, e.g. ['momentum_v1']")
    if sets:
        opts["features"] = list(dict.fromkeys(n.strip() for n in sets))
    if "interval" in opts:
        check_interval(str(opts["interval"]))
    if opts.get("cron") is not None:
        opts["cron"] = check_cron(opts["cron"])
    else:
        opts.pop("cron", None)
    publish = opts.pop("publish", False)
    if not isinstance(publish, bool):
        raise ValidationError(f"options publish={publish!r}: give true or false")
    if publish:
        if not sets:
            raise ValidationError("options publish=true needs features: the feature sets to publish")
        opts["publish"] = True
    return opts


def _planned_dataset(session: HdiSession, request: IngestRequest, since: dt.date) -> str:
    """The dataset the provider plans the first day of ``request`` with (validating it as an ingest would)."""
    if not request.provider:
        raise ValidationError(f"provider is required: use one of {', '.join(p for p in PROVIDERS if p != 'file')}")
    if request.provider == "file":
        raise ValidationError(
            "provider='file' reads local files, there is nothing to keep current: "
            f"subscribe to one of {', '.join(p for p in PROVIDERS if p != 'file')}"
        )
    if request.schema is None:
        raise ValidationError(f"schema is required: use one of {', '.join(SCHEMAS)}")
    require_symbols(request.symbols)
    start = parse_time(since, "since")
    first_day = dataclasses.replace(request, start=start, end=start + pd.Timedelta(days=1))
    provider = session.provider(request.provider)
    try:
        chunks = provider.plan(first_day)
    finally:
        provider.close()
    return next(c.dataset for c in chunks if not c.companion)


def add(
    session: HdiSession,
    request: IngestRequest,
    since: object,
    *,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[Subscription, bool]:
    """Subscribe to ``request``'s data from ``since`` on; returns (the subscription, whether it is new).

    The request's provider, schema, stype_in and symbols (its start and end are not used) are validated
    like an ingest of the day ``since`` (see the module); the same subscription added again is returned as
    it is stored.

    Raises ValidationError (a bad request, since, name or options; another subscription of the same request
    or with the same name), ConfigError or ProviderError (the provider cannot plan: e.g. no API key) and
    StorageError.
    """
    since_day = parse_time(since, "since").date()
    label = _name(name)
    opts = check_options(options)
    dataset = _planned_dataset(session, request, since_day)
    schema = parse_enum(Schema, request.schema, "schema")
    stype = parse_enum(SType, request.stype_in, "stype_in")
    row, new = table.insert(
        session.connection(),
        session.schema,
        name=label,
        provider=request.provider,
        dataset=dataset,
        data_schema=schema.value,
        stype_in=stype.value,
        symbols=sorted(request.symbols),
        since=since_day,
        options=opts,
    )
    sub = Subscription.from_row(row)
    if new:
        return sub, True
    same_request = (sub.provider, sub.dataset, sub.schema, sub.stype_in, sub.symbols) == (
        request.provider,
        dataset,
        schema,
        stype,
        tuple(sorted(request.symbols)),
    )
    if not same_request:
        raise ValidationError(f"name={label!r} is taken by {sub}: choose another name")
    if (sub.since, sub.name, dict(sub.options)) != (since_day, label, opts):
        raise ValidationError(
            f"already subscribed as {sub}, with other settings (since, name or options): "
            f"remove it first (`hdi watch remove {sub.id}`) to change them"
        )
    return sub, False


def list_all(session: HdiSession) -> list[Subscription]:
    """Every subscription, by id. Raises StorageError."""
    return [Subscription.from_row(r) for r in table.all_rows(session.connection(), session.schema)]


def frame(subscriptions: list[Subscription]) -> pd.DataFrame:
    """The subscriptions as a table (:data:`COLUMNS`, symbols joined by commas). Raises nothing."""
    rows = [
        {
            **{c: getattr(s, c) for c in COLUMNS},
            "schema": s.schema.value,
            "stype_in": s.stype_in.value,
            "symbols": ",".join(s.symbols),
            "options": dict(s.options),
        }
        for s in subscriptions
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def find(every: Sequence[Subscription], which: int | str) -> Subscription:
    """The subscription of ``every`` with id (a number, or all digits) or name ``which``.

    Raises ValidationError when there is none."""
    text = str(which).strip()
    sub_id, name = _id_or_name(text)
    for sub in every:
        if sub.id == sub_id or (name is not None and sub.name == name):
            return sub
    raise _unknown(text)


def _id_or_name(text: str) -> tuple[int | None, str | None]:
    return (int(text), None) if text.isdigit() else (None, text)


def _unknown(text: str) -> ValidationError:
    return ValidationError(f"no subscription {text!r}: see `hdi watch list` for ids and names")


def remove(session: HdiSession, which: int | str) -> Subscription:
    """Remove the subscription with id (a number, or all digits) or name ``which``; returns it.

    Raises ValidationError when there is none, StorageError."""
    text = str(which).strip()
    if not text:
        raise ValidationError("give the id or the name of the subscription to remove (see `hdi watch list`)")
    sub_id, name = _id_or_name(text)
    row = table.delete(session.connection(), session.schema, sub_id=sub_id, name=name)
    if row is None:
        raise _unknown(text)
    return Subscription.from_row(row)
