"""The storage reader: stored rows of a schema for resolved symbol spans (binary COPY into a
DataFrame, or an Arrow table built from the same numpy columns), instrument definitions, and analysts' SQL."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg2
import psycopg2.extensions
import pyarrow as pa
from psycopg2 import sql as pgsql

from hdi_lab import dbn
from hdi_lab.dbn import INT64_MAX
from hdi_lab.errors import StorageError, ValidationError, first_line
from hdi_lab.schemas import Schema
from hdi_lab.storage import aggregates, copy
from hdi_lab.storage.cursor import fetch_frame, quote, transaction
from hdi_lab.storage.symbology import Span
from hdi_lab.storage.tables import TABLES, Column, Table

__all__ = ["FIXED_SUFFIX", "PriceType", "float_prices", "query", "query_arrow", "sql", "venues"]

PriceType: TypeAlias = Literal["float", "fixed"]
#: the name suffix of the int64 fixed-point copy of a float price column (``close`` -> ``close_fixed``)
FIXED_SUFFIX = "_fixed"
_SENTINEL = {"price": INT64_MAX, "undef_i64": INT64_MAX, "undef_u64": -1}


def query(
    conn: psycopg2.extensions.connection,
    schema: str,
    sch: Schema,
    spans: list[Span],
    syms: tuple[str, ...],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    price_type: PriceType,
    seconds: int | None,
    columns: Sequence[str] | None,
) -> pd.DataFrame:
    """The rows of ``sch`` for ``spans`` in one transaction (see :func:`hdi_lab.core.retrieval.query`);
    ``seconds`` rolls bars up, ``columns`` (bars) limits the value columns read.

    Raises ValidationError when ``columns`` names a column ``sch`` does not have, StorageError when the
    server fails."""
    with transaction(conn) as cur:
        if sch is Schema.DEFINITION:
            return _definitions(cur, schema, spans, lo, hi, price_type)
        rows = _read(cur, schema, sch, spans, syms, lo, hi, seconds, columns)
    return _frame(rows, syms, price_type)


def query_arrow(
    conn: psycopg2.extensions.connection,
    schema: str,
    sch: Schema,
    spans: list[Span],
    syms: tuple[str, ...],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    price_type: PriceType,
    seconds: int | None,
    columns: Sequence[str] | None,
    *,
    fixed_too: bool = False,
) -> pa.Table:
    """:func:`query`'s rows as a ``pyarrow.Table`` built from the decoded numpy columns (no pandas in between):
    ``ts_event`` (``timestamp[ns, tz=UTC]``) first, then the frame's columns with the same names, values and
    types (``symbol`` and the char columns as ``string``). ``fixed_too`` (float prices) adds each price's exact
    int64 fixed-point value as ``<name>_fixed`` right after it. Definitions come from their frame.

    Raises what :func:`query` raises."""
    with transaction(conn) as cur:
        if sch is Schema.DEFINITION:
            frame = _definitions(cur, schema, spans, lo, hi, price_type)
            return pa.Table.from_pandas(frame.reset_index(), preserve_index=False).replace_schema_metadata(None)
        rows = _read(cur, schema, sch, spans, syms, lo, hi, seconds, columns)
    return _table(rows, syms, price_type, fixed_too)


def float_prices(fixed: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """int64 1e-9 fixed-point prices as floats, UNDEF_PRICE as NaN (how every float price is made). Raises nothing."""
    f = fixed.astype(np.float64) / 1e9
    f[fixed == INT64_MAX] = np.nan
    return f


@dataclass(frozen=True)
class _Rows:
    """Decoded rows in output order: each read column's native array, the index of each row's symbol."""

    arrays: dict[str, npt.NDArray[Any]]
    sym: npt.NDArray[np.int32]
    cols: list[Column]
    table: Table


def _read(
    cur: Any,
    schema: str,
    sch: Schema,
    spans: list[Span],
    syms: tuple[str, ...],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    seconds: int | None,
    columns: Sequence[str] | None,
) -> _Rows:
    rollup = (
        None
        if seconds is None
        else aggregates.choose(cur, schema, TABLES[sch].name, seconds, lo.value, hi.value + seconds * 10**9)
    )
    wanted = None
    if columns and sch.is_bar:  # read only these from the server (its row formatting is the floor)
        known = [c.name for c in _out_columns(TABLES[sch])] + ["symbol"]
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise ValidationError(f"unknown column(s) {unknown} for {sch}: choose from {known}")
        wanted = set(columns)
    return _market(cur, schema, TABLES[sch], spans, syms, rollup, wanted)


def _out_columns(t: Table) -> list[Column]:
    return [c for c in t.columns if c.kind != "dup" and not (t.ns_column and c.name == t.time_column)]


def _market(
    cur: Any,
    schema: str,
    t: Table,
    spans: list[Span],
    syms: tuple[str, ...],
    rollup: aggregates.Rollup | None = None,
    wanted: Collection[str] | None = None,
) -> _Rows:
    """The rows of ``spans``; ``wanted`` (bars) limits the value columns read (the key always comes)."""
    cols = [
        c
        for c in _out_columns(t)
        if wanted is None or c.name in wanted or c.name in ("instrument_id", t.time_column, t.ns_column)
    ]
    q = pgsql.Identifier
    conn = cur.connection
    # each row comes back with the index of its span; the span gives symbol and instrument_id
    # client-side (one field less per row: the server's COPY formatting is the read path's floor)
    ties = [k for k in t.key if k not in ("instrument_id", "ts_event", "ts_event_ns")]
    fetched = [c for c in cols if c.name != "instrument_id"]
    fetched += [t.column(k) for k in ties if k not in {c.name for c in fetched}]
    select = ["r.span"] + [
        f"COALESCE(t.{q(c.name).as_string(conn)}, {_SENTINEL[c.kind]})"
        if c.nullable
        else f"t.{q(c.name).as_string(conn)}"
        for c in fetched
    ]
    ts = t.time_column
    epoch = "'epoch'::timestamptz + interval '1 microsecond' * "
    # bars are whole microseconds: ts*1000 >= lo_ns <=> ts >= ceil(lo_ns/1000); ticks add exact ns bounds
    cond = f"t.{ts} >= {epoch}r.lo_us AND t.{ts} < {epoch}r.hi_us"
    if t.ns_column:
        cond += f" AND t.{t.ns_column} >= r.lo_ns AND t.{t.ns_column} < r.hi_ns"
    where = (
        f"t.instrument_id = r.iid AND {cond} AND t.publisher_id IN (SELECT p.publisher_id FROM "
        f"{q(schema, 'publishers').as_string(conn)} p WHERE p.dataset = r.dataset)"
    )
    inner = (
        aggregates.relation(conn, schema, rollup, where)
        if rollup
        else f"SELECT * FROM {q(schema, t.name).as_string(conn)} t WHERE {where}"
    )
    text = (
        f"SELECT {', '.join(select)} FROM unnest(%s::int4[], %s::text[], %s::int8[], %s::int8[], %s::int8[], "
        "%s::int8[], %s::int8[]) AS r(span, dataset, iid, lo_us, hi_us, lo_ns, hi_ns) "
        # one primary-key range scan per span (a hash join would match every row to every span)
        f"CROSS JOIN LATERAL ({inner} OFFSET 0) t"
    )
    lo_ns = [sp.lo.value for sp in spans]
    hi_ns = [sp.hi.value for sp in spans]
    if rollup:  # whole buckets starting in [lo, hi): the rows from the first bucket start >= lo on
        lo_ns, hi_ns = ([aggregates.bucket_ceil_ns(v, rollup.seconds) for v in vs] for vs in (lo_ns, hi_ns))
    if t.ns_column:  # coarse microsecond window around the exact nanosecond one
        lo_us, hi_us = [v // 1000 for v in lo_ns], [(v - 1) // 1000 + 1 for v in hi_ns]
    else:
        lo_us, hi_us = [-(-v // 1000) for v in lo_ns], [-(-v // 1000) for v in hi_ns]
    params = (
        list(range(len(spans))),
        [sp.dataset for sp in spans],
        [sp.instrument_id for sp in spans],
        lo_us,
        hi_us,
        lo_ns,
        hi_ns,
    )
    raw = copy.copy_out(cur, cur.mogrify(text, params).decode())
    rows = copy.decode(raw, ["int4", *(c.pgtype for c in fetched)])
    span = rows["v0"].astype(np.int64)
    arrays = {c.name: rows[f"v{i}"] for i, c in enumerate(fetched, start=1)}
    arrays["instrument_id"] = np.array([sp.instrument_id for sp in spans], dtype=np.int64)[span]
    sym = np.array([syms.index(sp.symbol) for sp in spans], dtype=np.int32)[span]
    # sorted client-side (time, symbol, instrument, then the rest of the key): a server sort of a
    # large result spills to disk with the default work_mem
    order = np.lexsort([*(arrays[k] for k in reversed(ties)), arrays["instrument_id"], sym, arrays[t.ns_column or ts]])
    return _Rows({k: v[order] for k, v in arrays.items()}, sym[order], cols, t)


#: the output name of a stored column whose name differs (the nanosecond columns)
_RENAMED = {"ts_recv_ns": "ts_recv", "ts_ref_ns": "ts_ref"}


def _values(
    rows: _Rows, price_type: PriceType, fixed_too: bool = False
) -> tuple[npt.NDArray[np.int64], dict[str, Any]]:
    """The time index (int64 ns) and every value column in output order (``symbol`` aside): native numpy arrays,
    Arrow string arrays for chars; ``ts_recv`` as int64 ns. One conversion for the frame and the Arrow table."""
    data: dict[str, Any] = {}
    for c in rows.cols:
        v = rows.arrays[c.name]
        name = _RENAMED.get(c.name, c.name)
        if c.kind == "ts":
            data[name] = v.astype(np.int64) * 1000 + copy.PG_EPOCH_US * 1000
        elif c.kind == "char":
            data[name] = _arrow_strings(v.astype(np.int32), _CHARS)
        elif c.kind == "price" and price_type == "float":
            data[name] = float_prices(v)
            if fixed_too:
                data[name + FIXED_SUFFIX] = v.astype(np.int64)
        elif c.kind == "undef_u64":
            data[name] = v.astype(np.int64).view(np.uint64)
        else:
            data[name] = v.astype(v.dtype.newbyteorder("="))
    t = rows.table
    time_ns = data.pop(_RENAMED.get(t.ns_column or t.time_column, t.ns_column or t.time_column))
    if "ts_recv" in data:  # first after symbol, as DBNStore.to_df() shows it
        data = {"ts_recv": data.pop("ts_recv"), **data}
    return time_ns, data


def _frame(rows: _Rows, syms: tuple[str, ...], price_type: PriceType) -> pd.DataFrame:
    time_ns, data = _values(rows, price_type)
    index = pd.DatetimeIndex(pd.to_datetime(time_ns, unit="ns", utc=True), name="ts_event")
    if "ts_recv" in data:
        data["ts_recv"] = pd.to_datetime(data["ts_recv"], unit="ns", utc=True)
    for name, v in data.items():
        if isinstance(v, pa.Array):
            data[name] = _strings(v)
    frame = pd.DataFrame(data, index=index)
    frame.insert(0, "symbol", _strings(_arrow_strings(rows.sym, syms)))
    return frame


_NS_UTC = pa.timestamp("ns", tz="UTC")


def _table(rows: _Rows, syms: tuple[str, ...], price_type: PriceType, fixed_too: bool) -> pa.Table:
    time_ns, data = _values(rows, price_type, fixed_too)
    arrays = {"ts_event": pa.array(time_ns, type=_NS_UTC), "symbol": _arrow_strings(rows.sym, syms)}
    for name, v in data.items():
        arrays[name] = pa.array(v, type=_NS_UTC) if name == "ts_recv" else v
    return pa.table(arrays)


_CHARS = tuple(chr(i) if i else "" for i in range(256))


def _arrow_strings(codes: npt.NDArray[Any], labels: Sequence[str]) -> pa.Array:
    """An Arrow ``string`` array from integer codes into ``labels`` (~6x faster than object arrays)."""
    arr = pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), pa.array(list(labels), type=pa.string()))
    return arr.cast(pa.string())


def _strings(arr: pa.Array) -> Any:
    """A pandas ``str`` array over an Arrow string array."""
    return pd.array(arr.cast(pa.large_string()), dtype=pd.StringDtype("pyarrow", na_value=np.nan))


def _definitions(
    cur: Any, schema: str, spans: list[Span], lo: pd.Timestamp, hi: pd.Timestamp, price_type: PriceType
) -> pd.DataFrame:
    import databento_dbn

    t = quote(cur.connection, schema, "instruments")
    frames = []
    for sp in spans:
        cur.execute(
            f"SELECT record FROM {t} WHERE dataset = %s AND instrument_id = %s AND ts_recv_ns >= %s "
            "AND ts_recv_ns < %s ORDER BY ts_recv_ns",
            (sp.dataset, sp.instrument_id, max(sp.lo, lo).value, min(sp.hi, hi).value),
        )
        records = [r[0] for r in cur.fetchall()]
        if records:
            dtype = np.dtype(databento_dbn.InstrumentDefMsg._dtypes)
            arr = dbn.records_from_json(records, dtype)
            f = pd.DataFrame({n: arr[n] for n in dtype.names or () if not n.startswith("_") and n != "length"})
            f.insert(0, "symbol", sp.symbol)
            frames.append(f)
    if not frames:
        return pd.DataFrame(columns=["symbol"])
    frame = pd.concat(frames, ignore_index=True)
    for name in (
        "raw_symbol",
        "group",
        "exchange",
        "asset",
        "cfi",
        "security_type",
        "currency",
        "underlying",
        "instrument_class",
        "unit_of_measure",
        "settl_currency",
        "secsubtype",
    ):
        if name in frame:
            frame[name] = frame[name].str.decode("latin-1")
    if price_type == "float":
        for name in databento_dbn.InstrumentDefMsg._price_fields:
            v = frame[name].to_numpy()
            frame[name] = np.where(v == INT64_MAX, np.nan, v / 1e9)
    frame.index = pd.DatetimeIndex(
        pd.to_datetime(frame.pop("ts_event").astype(np.int64), unit="ns", utc=True), name="ts_event"
    )
    return frame


def venues(
    conn: psycopg2.extensions.connection, schema: str, publisher_ids: Sequence[int], instrument_ids: Sequence[int]
) -> list[tuple[int, int, str, str | None]]:
    """``(publisher_id, instrument_id, dataset, exchange)`` of each pair: the publisher's dataset and the exchange
    of the instrument's latest definition in it (None when no definition is stored), for the calendars of
    :mod:`hdi_lab.core.sessions`.

    Raises StorageError when the server fails."""
    with transaction(conn) as cur:
        cur.execute(
            "SELECT k.pub, k.iid, p.dataset, (SELECT i.exchange FROM "
            f"{quote(conn, schema, 'instruments')} i WHERE i.dataset = p.dataset AND i.instrument_id = k.iid "
            "ORDER BY i.ts_recv_ns DESC LIMIT 1) "
            "FROM unnest(%s::int2[], %s::int8[]) AS k(pub, iid) "
            f"JOIN {quote(conn, schema, 'publishers')} p ON p.publisher_id = k.pub",
            ([int(v) for v in publisher_ids], [int(v) for v in instrument_ids]),
        )
        return [(int(pub), int(iid), str(ds), None if ex is None else str(ex)) for pub, iid, ds, ex in cur.fetchall()]


def sql(
    conn: psycopg2.extensions.connection, text: str, params: Mapping[str, Any] | Sequence[Any] | None
) -> pd.DataFrame:
    """Run SQL with bound parameters against the hdi_lab schema (see :func:`hdi_lab.core.retrieval.sql`).

    Raises ValidationError when the driver cannot send a parameter, StorageError (with the server's
    first line and SQLSTATE) when the statement fails or the connection is lost."""
    with transaction(conn) as cur:  # a lost connection or a refused privilege: transaction()'s StorageError
        try:
            cur.execute(text, params)
        except psycopg2.ProgrammingError as exc:
            if exc.pgcode is None:  # raised by the driver before the server saw the statement
                raise ValidationError(f"a parameter cannot be sent to PostgreSQL: {str(exc).strip()}") from exc
            raise StorageError(f"SQL failed: {first_line(exc)}", sqlstate=exc.pgcode) from exc
        except psycopg2.Error as exc:
            if exc.pgcode is None or exc.pgcode.startswith(("08", "57P", "42501")):
                raise
            raise StorageError(f"SQL failed: {first_line(exc)}", sqlstate=exc.pgcode) from exc
        if cur.description is None:
            return pd.DataFrame()
        return fetch_frame(cur)
