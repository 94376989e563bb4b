"""A Feast offline store whose training frames are as-of queries (loaded by Feast and hdi_lab.featurestore.publish).

Feast's PostgreSQL offline store answers ``get_historical_features`` with a range join followed by
window functions: every feature row inside each entity row's TTL window is joined, then ranked
(~26 s for 100k entity rows over 1M feature rows). :class:`HdiOfflineStore` asks the question an
as-of query asks: for each entity row, the one latest feature row at or before its timestamp. One
``LEFT JOIN LATERAL (... ORDER BY event_timestamp DESC, created DESC LIMIT 1)`` per feature view
walks the index ``(instrument_id, event_timestamp DESC, created DESC)`` that hdi_lab's feature
tables carry. For an entity DataFrame (:class:`HdiFrameJob`) only the row number, the join keys and
the exact time bounds go up (binary COPY into a temporary table) and only the row number and the
features come back (binary COPY parsed with numpy); the output is the caller's frame, unchanged and
in its order, with the features appended. The stock queries (materialization, the time-range mode,
SQL entity frames) are fetched by :class:`HdiRetrievalJob`, the stock retrieval job with a binary
fetch and a C transposition instead of a Python loop over every value.

Configure it in ``feature_store.yaml``::

    offline_store:
      type: hdi_lab.feast_store.HdiOfflineStore
      host: ...            # every option of Feast's `postgres` offline store

Point-in-time semantics are Feast's (and the stock store's) exactly:

* a feature row qualifies when ``event_timestamp <= entity_ts`` and, for a view with a TTL,
  ``event_timestamp >= entity_ts - ttl`` (inclusive; TTL in whole seconds, as Feast truncates it);
  with ``filter_by_created_timestamp=True`` also ``created <= entity_ts``; compared at the entity
  time's full (nanosecond) resolution: ``t - 1ns`` never sees a row at ``t`` (see :class:`EntityTimes`);
* entity times may be datetimes of any unit (naive ones are UTC, as Feast reads them) or strings
  Feast parses (``pd.to_datetime(..., utc=True)``; the stock store fails on those);
* of the qualifying rows the latest ``event_timestamp`` wins, ties broken by the latest created
  timestamp;
* rows whose created timestamp is NULL never qualify (the stock store drops them in its
  ``USING (..., created_timestamp)`` join; hdi_lab's tables declare ``created NOT NULL``);
* the output has the entity frame's columns, then the features (``view__feature`` with
  ``full_feature_names``), one row per entity row, in no guaranteed order (like the stock store).

Where the stock store is wrong, this store does not copy it: it truncates nanosecond entity times
to microseconds, which is exact for ``<= entity_ts`` but keeps a row ``ttl + 1..999 ns`` old; it
returns the entity times rewritten (``datetime64[us]``, zone dropped). With two or more join keys the stock
store concatenates them without a separator, so keys (1, 23) and (12, 3) collide; here each key is
compared on its own. Rows tied on both event and created timestamp (impossible in hdi_lab's tables,
whose primary key is ``(instrument_id, event_timestamp)``) make the stock store return the entity
row twice; here one of them is returned. Retrieval without an entity frame (``start_date`` /
``end_date``) is handed to the stock store unchanged.

This module builds on private helpers of Feast 0.67's PostgreSQL store (query context, retrieval
job): hdi_lab pins ``feast==0.67.*`` and ``tests/test_feast_store.py`` checks parity with the stock
store in CI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg
import pyarrow as pa
from feast.errors import InvalidEntityType
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
    EntitySelectMode,
    PostgreSQLOfflineStore,
    PostgreSQLOfflineStoreConfig,
    PostgreSQLRetrievalJob,
    _get_entity_df_event_timestamp_range,
    _get_entity_schema,
)
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.infra.utils.postgres.connection_utils import _get_conn, _get_conn_kwargs, _get_conninfo
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.type_map import arrow_to_pg_type
from pydantic import model_validator

from hdi_lab.errors import ConfigError, ValidationError, first_line
from hdi_lab.storage import feast as feast_sql
from hdi_lab.storage.copy import PG_EPOCH_US, decode, encode

__all__ = [
    "STORE_TYPE",
    "EntityTimes",
    "HdiFrameJob",
    "HdiOfflineStore",
    "HdiOfflineStoreConfig",
    "HdiRetrievalJob",
    "as_of_query",
]

#: the type feature_store.yaml names: the documented path, a re-export of this module (hdi_lab.feast_store)
STORE_TYPE = "hdi_lab.feast_store.HdiOfflineStore"

#: join-key column types the entity upload encodes with numpy (binary COPY); with any other key
#: type the rows go through psycopg's COPY one by one.
_BINARY: dict[str, str] = {"bigint": "int8", "double precision": "float8", "boolean": "bool"}
_SELECTION = re.compile(r"^(?P<source>.+) AS (?P<key>.+)$")
_UNSET = re.compile(r"\$\{(\w+)\}")


class HdiOfflineStoreConfig(PostgreSQLOfflineStoreConfig):
    """Feast's PostgreSQL offline store options; ``type`` names this store's class."""

    type: Literal["hdi_lab.feast_store.HdiOfflineStore"] = STORE_TYPE  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _no_unset_variables(cls, values: Any) -> Any:
        """Feast leaves an unset ``${VAR}`` of feature_store.yaml literal: name it instead of failing
        later on a host called ``${HDI_FEAST_PG_HOST}``."""
        if isinstance(values, dict):
            for key, value in values.items():
                m = _UNSET.search(value) if isinstance(value, str) else None
                if m:  # not a ValueError: pydantic would wrap it with the input values, password included
                    raise ConfigError(
                        f"environment variable {m.group(1)} is not set (offline_store.{key} of "
                        "feature_store.yaml): export it; `hdi features env` prints the values for your hdi_lab "
                        "database"
                    )
        return values


class HdiOfflineStore(PostgreSQLOfflineStore):
    """Feast's PostgreSQL offline store with as-of (``LATERAL ... LIMIT 1``) training frames."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[Any],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        """A training frame joining ``feature_refs`` as of each ``entity_df`` row (or the stock query
        over a time range when ``entity_df`` is None).

        Raises InvalidEntityType when ``entity_df`` is neither a DataFrame nor a SQL string, Feast's
        EntityTimestampInferenceException or FeastEntityDFMissingColumnsError when it has no timestamp
        column or lacks a join key, ValidationError when its timestamps are not timestamps or all missing."""
        if entity_df is None:  # non-entity mode (a time range): the stock store's query as is
            return _fast(
                PostgreSQLOfflineStore.get_historical_features(
                    config,
                    feature_views,
                    feature_refs,
                    entity_df,
                    registry,
                    project,
                    full_feature_names=full_feature_names,
                    filter_by_created_timestamp=filter_by_created_timestamp,
                    **kwargs,
                )
            )
        assert isinstance(config.offline_store, PostgreSQLOfflineStoreConfig)
        for fv in feature_views:
            assert isinstance(fv.batch_source, PostgreSQLSource)
        if not isinstance(entity_df, pd.DataFrame | str):
            raise InvalidEntityType(type(entity_df))
        entity_schema = _get_entity_schema(entity_df, config)
        ts_col = offline_utils.infer_event_timestamp_from_entity_df(entity_schema)
        offline_utils.assert_expected_columns_in_entity_df(
            entity_schema, offline_utils.get_expected_join_keys(project, feature_views, registry), ts_col
        )
        times = EntityTimes.of(entity_df[ts_col], ts_col) if isinstance(entity_df, pd.DataFrame) else None
        ts_range = times.range() if times else _get_entity_df_event_timestamp_range(entity_df, ts_col, config)
        contexts = offline_utils.get_feature_view_query_context(
            feature_refs, feature_views, registry, project, ts_range
        )
        metadata = RetrievalMetadata(
            features=feature_refs,
            keys=list(entity_schema.keys() - {ts_col}),
            min_event_timestamp=ts_range[0],
            max_event_timestamp=ts_range[1],
        )
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        if isinstance(entity_df, pd.DataFrame):
            assert times is not None
            return HdiFrameJob(
                entity_df,
                times,
                contexts,
                filter_by_created_timestamp,
                config=config,
                full_feature_names=full_feature_names,
                on_demand_feature_views=odfvs,
                metadata=metadata,
            )
        embed = config.offline_store.entity_select_mode == EntitySelectMode.embed_query

        @contextlib.contextmanager
        def query_generator() -> Iterator[str]:
            table = offline_utils.get_temp_entity_table_name()
            if not embed:
                with _get_conn(config.offline_store) as conn:
                    feast_sql.create_table_as(conn, table, entity_df)
            try:
                yield as_of_query(
                    contexts,
                    f"({entity_df})" if embed else feast_sql.quote(table),
                    list(entity_schema),
                    ts_col,
                    full_feature_names=full_feature_names,
                    filter_by_created_timestamp=filter_by_created_timestamp,
                )
            finally:
                if not embed:
                    with _get_conn(config.offline_store) as conn:
                        feast_sql.drop_table(conn, table)

        return HdiRetrievalJob(
            query=query_generator,
            config=config,
            full_feature_names=full_feature_names,
            on_demand_feature_views=odfvs,
            metadata=metadata,
        )

    @staticmethod
    def pull_all_from_table_or_query(*args: Any, **kwargs: Any) -> RetrievalJob:
        """The stock query (materialization reads through it), fetched by :class:`HdiRetrievalJob`."""
        return _fast(PostgreSQLOfflineStore.pull_all_from_table_or_query(*args, **kwargs))

    @staticmethod
    def pull_latest_from_table_or_query(*args: Any, **kwargs: Any) -> RetrievalJob:
        """The stock query, fetched by :class:`HdiRetrievalJob`."""
        return _fast(PostgreSQLOfflineStore.pull_latest_from_table_or_query(*args, **kwargs))


def _fast(job: RetrievalJob) -> HdiRetrievalJob:
    """The same query and metadata in an :class:`HdiRetrievalJob`."""
    assert isinstance(job, PostgreSQLRetrievalJob)
    return HdiRetrievalJob(
        query=job._query_generator,
        config=job.config,
        full_feature_names=job.full_feature_names,
        on_demand_feature_views=job.on_demand_feature_views,
        metadata=job.metadata,
    )


class HdiRetrievalJob(PostgreSQLRetrievalJob):
    """Feast's PostgreSQL retrieval job, with the rows fetched in binary and transposed in C.

    The stock job builds its Arrow columns with a Python loop over every value (1.8 s per 100k x 13
    values); this one gives the same Arrow table (same schema from the same type codes, the same
    ``pa.array`` conversion per column). Binary transfer is used when psycopg has a binary loader
    for every result column, else text as the stock job does.
    """

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        with self._query_generator() as query, _get_conn(self.config.offline_store) as conn:
            conn.read_only = True
            return _fetch(conn, query)


def _fetch(conn: psycopg.Connection[Any], query: str) -> pa.Table:
    """The result of ``query`` as an Arrow table typed as Feast types PostgreSQL results."""
    from feast.errors import ZeroColumnQueryResult
    from feast.type_map import pg_type_code_to_arrow

    description, rows = feast_sql.fetch(conn, query)
    if description is None:
        raise ZeroColumnQueryResult(query)
    schema = pa.schema([(name, pg_type_code_to_arrow(oid)) for name, oid in description])
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.Table.from_arrays([pa.array(list(c)) for c in columns], schema=schema)


@dataclasses.dataclass(frozen=True)
class EntityTimes:
    """An entity frame's timestamps in PostgreSQL microseconds (since 2000-01-01), bracketing the
    exact (nanosecond) time: ``floor <= t <= ceil``, equal unless ``t`` has sub-microsecond digits.

    Feature timestamps are ``timestamptz`` (microseconds), so for a feature time ``ts`` the exact
    rules ``ts <= t`` and ``ts >= t - ttl`` (ttl in whole seconds) are ``ts <= floor`` and
    ``ts >= ceil - ttl``: an entity time is never moved later (no look-ahead) nor earlier.
    """

    floor: npt.NDArray[np.int64]
    ceil: npt.NDArray[np.int64]
    null: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, column: pd.Series, name: str) -> EntityTimes:
        """Datetimes of any unit (naive ones are UTC, as Feast takes them) or strings Feast accepts.

        Raises ValidationError when ``column`` holds values that do not parse as timestamps."""
        if not pd.api.types.is_datetime64_any_dtype(column):
            try:  # what Feast's PostgreSQL store does with string timestamps (its range check)
                column = pd.to_datetime(column, utc=True)
            except (ValueError, TypeError, OverflowError) as exc:
                raise ValidationError(
                    f"entity_df column {name!r} holds values that are not timestamps ({exc}): "
                    "give datetimes or ISO 8601 strings"
                ) from None
        stamps = pd.DatetimeIndex(column)
        if stamps.tz is not None:
            stamps = stamps.tz_convert("UTC").tz_localize(None)
        null = np.asarray(stamps.isna())
        if stamps.unit == "ns":
            floor, rest = np.divmod(stamps.asi8, 1000)  # type: ignore[attr-defined]  # pandas-stubs lacks asi8 (the int64 view)
            ceil = floor + (rest != 0)
        else:  # whole microseconds at most (and no nanosecond overflow for far dates)
            floor = ceil = stamps.as_unit("us").asi8  # type: ignore[attr-defined]  # pandas-stubs lacks asi8 (the int64 view)
        zero = np.zeros(1, dtype=np.int64)
        return cls(np.where(null, zero, floor - PG_EPOCH_US), np.where(null, zero, ceil - PG_EPOCH_US), null)

    def range(self) -> tuple[dt.datetime, dt.datetime]:
        """(earliest, latest) as UTC datetimes: the floor of the first, the ceiling of the last.

        Raises ValidationError when every timestamp is missing."""
        if self.null.all():
            raise ValidationError("the entity_df has no event timestamps (all are missing)")
        epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        lo, hi = self.floor[~self.null].min(), self.ceil[~self.null].max()
        return epoch + dt.timedelta(microseconds=int(lo)), epoch + dt.timedelta(microseconds=int(hi))


def _none_for_missing(column: pd.Series) -> npt.NDArray[np.object_]:
    """The column as Python objects, None where it is missing (what COPY's text format writes as NULL)."""
    out = column.to_numpy(dtype=object)
    out[column.isna().to_numpy()] = None
    return out


class HdiFrameJob(HdiRetrievalJob):
    """A training frame for an entity DataFrame: the join keys and exact time bounds of each row
    (sorted by key and time, so consecutive lookups share index and table pages) go to a temporary
    table by binary COPY; the features come back by binary COPY parsed with numpy; the output is the
    caller's frame, unchanged and in its order, with the feature columns after it.

    The fast path (numeric keys, fixed-width features: hdi_lab's tables) runs on one psycopg2
    connection, whose COPY reads the whole stream in C (psycopg 3 hands COPY out over one Python call
    per row); anything else is uploaded row by row and fetched as :class:`HdiRetrievalJob` fetches.
    """

    def __init__(
        self,
        entity_df: pd.DataFrame,
        times: EntityTimes,
        contexts: list[offline_utils.FeatureViewQueryContext],
        filter_by_created_timestamp: bool,
        **job: Any,
    ) -> None:
        self._entity_df = entity_df
        self._times = times
        self._contexts = contexts
        self._filter_created = filter_by_created_timestamp
        self._keys = sorted(
            {m["key"] for fv in contexts for sel in fv.entity_selections if (m := _SELECTION.match(sel))}
        )

        @contextlib.contextmanager
        def query() -> Iterator[str]:  # to_sql(): the query, over the temporary table
            yield self._query(feast_sql.quote(_ENTITY_TABLE))

        super().__init__(query=query, **job)

    def _query(self, left: str) -> str:
        return as_of_query(
            self._contexts,
            left,
            [_ROW],
            "_hdi_floor",
            ceil_col="_hdi_ceil",
            sort=False,
            full_feature_names=self.full_feature_names,
            filter_by_created_timestamp=self._filter_created,
        )

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        import psycopg2

        keys = [self._entity_df[k] for k in self._keys]
        kinds = [arrow_to_pg_type(str(pa.Array.from_pandas(k).type)) for k in keys]  # as the stock store types them
        columns = [
            [_ROW, "bigint"],
            *map(list, zip(self._keys, kinds, strict=True)),
            ["_hdi_floor", "timestamptz"],
            ["_hdi_ceil", "timestamptz"],
        ]
        query = self._query(feast_sql.quote(_ENTITY_TABLE))
        order, payload = self._rows(keys, kinds)
        try:
            with contextlib.closing(_connect(self.config.offline_store)) as conn, conn.cursor() as cur:
                features = feast_sql.describe(cur, self._query(_placeholder(columns)))[1:]
                if payload is not None and all(oid in _FIXED for _, oid in features):
                    feast_sql.load_entity_table(cur, _ENTITY_TABLE, columns, payload)
                    rows, table = _fetch_fixed(cur, query, features)
                    conn.rollback()
                    return self._frame(rows, table)
        except psycopg2.Error as exc:  # raised as the stock store's (psycopg 3) errors are, first line only
            kind = psycopg.errors.lookup(exc.pgcode) if exc.pgcode else psycopg.OperationalError
            raise kind(first_line(exc)) from exc
        with _get_conn(self.config.offline_store) as conn3, conn3.cursor() as cur3:
            feast_sql.create_entity_table(cur3, _ENTITY_TABLE, columns)
            if payload is not None:
                feast_sql.copy_entity_binary(cur3, _ENTITY_TABLE, columns, payload)
            else:  # text (or other) keys: row by row
                epoch = pd.Timestamp("2000-01-01", tz="UTC")
                lo, hi = (
                    pd.to_datetime(a[order], unit="us", origin=epoch, utc=True).to_pydatetime()
                    for a in (self._times.floor, self._times.ceil)
                )
                null = self._times.null[order]
                values = [_none_for_missing(k)[order] for k in keys]
                feast_sql.copy_entity_rows(
                    cur3,
                    _ENTITY_TABLE,
                    columns,
                    (
                        (int(row), *(v[i] for v in values), *((None, None) if null[i] else (lo[i], hi[i])))
                        for i, row in enumerate(order)
                    ),
                )
            fetched = _fetch(conn3, query)
        return self._frame(fetched.column(0).to_numpy(), fetched.drop_columns([_ROW]))

    def _rows(self, keys: list[pd.Series], kinds: list[str]) -> tuple[npt.NDArray[np.int64], bytes | None]:
        """The upload order (by key, then time) and, for numeric keys, the binary COPY stream."""
        times = self._times
        numeric = all(t in _BINARY for t in kinds)
        by = [k.to_numpy() for k in keys] if numeric else [pd.factorize(k, sort=True)[0] for k in keys]
        order = np.lexsort([times.floor, *reversed(by)])
        if not numeric:
            return order, None
        values: list[npt.NDArray[Any]] = [order]
        nulls = {len(keys) + 1: times.null[order], len(keys) + 2: times.null[order]}
        for i, (k, kind) in enumerate(zip(keys, kinds, strict=True), start=1):
            nulls[i] = k.isna().to_numpy()[order]
            values.append(_fill(k, _BINARY[kind]).to_numpy()[order])
        return order, encode(
            ["int8", *(_BINARY[t] for t in kinds), "timestamptz", "timestamptz"],
            [*values, times.floor[order], times.ceil[order]],
            nulls,
        )

    def _frame(self, rows: npt.NDArray[np.int64], features: pa.Table) -> pa.Table:
        """The caller's columns, then the features put back in the caller's row order."""
        at = np.empty(len(rows), dtype=np.int64)
        at[rows] = np.arange(len(rows))
        left = pa.Table.from_pandas(self._entity_df, preserve_index=False)
        right = features.take(pa.array(at))
        return pa.Table.from_arrays([*left.columns, *right.columns], names=[*left.column_names, *right.column_names])


def _connect(config: PostgreSQLOfflineStoreConfig) -> Any:
    """A psycopg2 connection with the options Feast's own (psycopg 3) connections get."""
    import psycopg2

    options = {k: v for k, v in _get_conn_kwargs(config).items() if v is not None}
    return psycopg2.connect(_get_conninfo(config), keepalives_idle=config.keepalives_idle, **options)


def _placeholder(columns: list[list[str]]) -> str:
    """A one-row stand-in for the entity table (typing the query's result without uploading)."""
    return "(SELECT " + ", ".join(f"NULL::{t} AS {feast_sql.quote(n)}" for n, t in columns) + ")"


def _fetch_fixed(cur: Any, query: str, features: list[tuple[str, int]]) -> tuple[npt.NDArray[np.int64], pa.Table]:
    """(entity row numbers, features) by binary COPY: NULL features are sent as 0 and flagged in a
    bitmask (:func:`hdi_lab.storage.feast.fixed_width_copy`), so every field has a fixed width and numpy
    parses the stream."""
    from feast.type_map import pg_type_code_to_arrow

    per_word = feast_sql.FLAGS_PER_WORD
    types = ["int8", *(_FIXED[oid][0] for _, oid in features), *(["int8"] * -(-len(features) // per_word))]
    stream = feast_sql.fixed_width_copy(cur, query, _ROW, [(name, _FIXED[oid][1]) for name, oid in features])
    data = decode(stream, types)
    arrays = []
    for i, (_, oid) in enumerate(features):
        kind = pg_type_code_to_arrow(oid)
        raw = data[f"v{i + 1}"]
        values = raw.astype(bool) if kind == pa.bool_() else raw.astype(raw.dtype.newbyteorder("="))
        null = (data[f"v{len(features) + 1 + i // per_word}"] >> (i % per_word)) & 1 == 1
        arrays.append(pa.array(values, type=kind, mask=null))
    return data["v0"].astype(np.int64), pa.Table.from_arrays(arrays, names=[n for n, _ in features])


def _fill(column: pd.Series, pgtype: str) -> pd.Series:
    """A key column with its missing values filled (they are sent as NULL)."""
    return column.fillna(False if pgtype == "bool" else 0).astype(
        {"bool": np.bool_, "int8": np.int64, "float8": np.float64}[pgtype]
    )


_ROW = "_hdi_row"
_ENTITY_TABLE = "hdi_entity_rows"
#: fixed-width feature types fetched by numpy: oid -> (binary COPY type, the SQL of NULL's stand-in)
_FIXED: dict[int, tuple[str, str]] = {
    16: ("bool", "false"),
    20: ("int8", "0"),
    21: ("int2", "0"),
    23: ("int4", "0"),
    700: ("float4", "0"),
    701: ("float8", "0"),
}


def as_of_query(
    contexts: list[offline_utils.FeatureViewQueryContext],
    left: str,
    entity_columns: list[str],
    ts_col: str,
    *,
    ceil_col: str | None = None,
    sort: bool = True,
    full_feature_names: bool = False,
    filter_by_created_timestamp: bool = False,
) -> str:
    """The training-frame SQL: the entity rows (``left``: a table or a parenthesised query), each with
    one ``LEFT JOIN LATERAL`` per feature view picking the latest qualifying feature row.

    ``ts_col`` is the entity time (rounded down to the microsecond); ``ceil_col``, when given, is the
    same time rounded up, for the TTL bound (see :class:`EntityTimes`). ``sort`` visits the entity
    rows in key and time order (an uploaded frame is already in that order).

    Raises ValueError for an entity selection of a view context that is not ``<column> AS <key>``."""
    e_ts = f"e.{feast_sql.quote(ts_col)}"
    e_ceil = f"e.{feast_sql.quote(ceil_col or ts_col)}"
    outputs = [f"e.{feast_sql.quote(c)}" for c in entity_columns]
    joins = []
    for i, fv in enumerate(contexts):
        alias = f"fv_{i}"
        names = []
        inner = []
        for feature in fv.features:
            out = fv.field_mapping.get(feature, feature)
            out = f"{fv.name}__{out}" if full_feature_names else out
            names.append(out)
            inner.append(f"s.{feast_sql.quote(feature)} AS {feast_sql.quote(out)}")
            outputs.append(f"{alias}.{feast_sql.quote(out)}")
        ts = f"s.{feast_sql.quote(fv.timestamp_field)}"
        where = [f"{ts} <= {e_ts}"]
        if fv.ttl:
            where.append(f"{ts} >= {e_ceil} - {int(fv.ttl)} * interval '1' second")
        order = [f"{ts} DESC"]
        if fv.created_timestamp_column:
            created = f"s.{feast_sql.quote(fv.created_timestamp_column)}"
            where.append(f"{created} IS NOT NULL")
            if filter_by_created_timestamp:
                where.append(f"{created} <= {e_ts}")
            order.append(f"{created} DESC")
        for selection in fv.entity_selections:
            m = _SELECTION.match(selection)
            if m is None:
                raise ValueError(f"unexpected entity selection {selection!r} in feature view {fv.name}")
            where.append(f"s.{feast_sql.quote(m['source'])} = e.{feast_sql.quote(m['key'])}")
        joins.append(
            f"LEFT JOIN LATERAL (\n    SELECT {', '.join(inner) or 'NULL'}\n    FROM {fv.table_subquery} AS s\n"
            f"    WHERE {' AND '.join(where)}\n    ORDER BY {', '.join(order)}\n    LIMIT 1\n) AS {alias} ON true"
        )
    if sort:  # entity rows in key and time order: consecutive lookups hit the same index and table pages
        keys = [
            f"{feast_sql.quote(m['key'])}"
            for sel in (contexts[0].entity_selections if contexts else [])
            if (m := _SELECTION.match(sel))
        ]
        source = f"(SELECT * FROM {left} AS l ORDER BY {', '.join([*keys, feast_sql.quote(ts_col)])}) AS e"
    else:
        source = f"{left} AS e"
    return f"SELECT {', '.join(outputs)}\nFROM {source}\n" + "\n".join(joins)
