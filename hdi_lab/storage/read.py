"""The storage reader: stored rows of a schema for resolved symbol spans (binary COPY into a
DataFrame, or an Arrow table built from the same numpy columns), instrument definitions, and analysts' SQL."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

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
from hdi_lab.schemas import PRICE_TYPES, PriceType, Schema
from hdi_lab.storage import aggregates, copy
from hdi_lab.storage.cursor import fetch_frame, quote, transaction
from hdi_lab.storage.lookups import Lookups
from hdi_lab.storage.symbology import Span
from hdi_lab.storage.tables import TABLES, Column, Table

__all__ = [
    "FIXED_SUFFIX",
    "PRICE_TYPES",
    "UNION_SPANS",
    "Extra",
    "PriceType",
    "check_columns",
    "check_price_type",
    "float_prices",
    "query",
    "query_arrow",
    "sql",
    "statement",
]

#: columns a caller adds to a read's frame, computed from each row's time (int64 ns), publisher and instrument ids
Extra: TypeAlias = Callable[[npt.NDArray[np.int64], npt.NDArray[Any], npt.NDArray[Any]], Mapping[str, npt.NDArray[Any]]]
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
    *,
    lookups: Lookups | None = None,
    extra: Extra | None = None,
) -> pd.DataFrame:
    """The rows of ``sch`` for ``spans`` in one transaction (see :func:`hdi_lab.core.retrieval.query`);
    ``seconds`` rolls bars up, ``columns`` (bars) limits the value columns read. ``lookups``: the session's
    cache of publishers (else they are read). ``extra`` gives columns to append (market data only), built into
    the frame at once (an insert into a built frame copies it).

    Raises ValidationError when ``columns`` names a column ``sch`` does not have, StorageError when the
    server fails."""
    with transaction(conn) as cur:
        if sch is Schema.DEFINITION:
            return _definitions(cur, schema, spans, lo, hi, price_type)
        rows = _read(cur, schema, sch, spans, syms, lo, hi, seconds, columns, lookups)
    return _frame(rows, syms, price_type, extra)


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
    lookups: Lookups | None = None,
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
        rows = _read(cur, schema, sch, spans, syms, lo, hi, seconds, columns, lookups)
    return _table(rows, syms, price_type, fixed_too)


def statement(conn: psycopg2.extensions.connection, schema: str, sch: Schema, spans: list[Span]) -> str:
    """The SELECT a read of ``spans`` of ``sch`` (market data, no rollup) sends inside its COPY, parameters bound:
    for EXPLAIN and for benchmarks running the same plan through another client. Raises nothing."""
    t = TABLES[sch]
    with conn.cursor() as cur:
        fetched = _fetched(t, _out_columns(t))
        text, params = (_union if len(spans) <= UNION_SPANS else _lateral)(cur, schema, t, spans, fetched, None)
        return str(cur.mogrify(text, params).decode())


def check_price_type(price_type: object) -> PriceType:
    """``price_type`` when it is one of :data:`PRICE_TYPES`.

    Raises ValidationError otherwise."""
    if price_type not in PRICE_TYPES:
        raise ValidationError(f"price_type={price_type!r} is not valid: use {' or '.join(PRICE_TYPES)}")
    return cast(PriceType, price_type)


def check_columns(columns: Sequence[str], names: Sequence[str], sch: Schema) -> None:
    """Check that every one of ``columns`` is one of ``names``, the columns a read of ``sch`` gives.

    Raises ValidationError naming the unknown ones and listing ``names``."""
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise ValidationError(f"unknown column(s) {unknown} for {sch}: choose from {list(names)}")


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
    lookups: Lookups | None,
) -> _Rows:
    rollup = (
        None
        if seconds is None
        else aggregates.choose(cur, schema, TABLES[sch].name, seconds, lo.value, hi.value + seconds * 10**9)
    )
    wanted = None
    if columns and sch.is_bar:  # read only these from the server (its row formatting is the floor)
        check_columns(columns, [c.name for c in _out_columns(TABLES[sch])] + ["symbol"], sch)
        wanted = set(columns)
    return _market(cur, schema, TABLES[sch], spans, syms, rollup, wanted, lookups)


def _out_columns(t: Table) -> list[Column]:
    return [c for c in t.columns if c.kind != "dup" and not (t.ns_column and c.name == t.time_column)]


#: up to this many spans a read is one plain primary-key range scan per span, joined by UNION ALL (each planned in
#: ~0.03 ms); more (a parent symbol over years) are read by one scan per span of an unnest of them (LATERAL: one
#: plan whatever their number, ~0.3 ms more per read)
UNION_SPANS = 32
#: reads longer than this (summed over spans) turn the server's JIT off: a large scan's plan passes its
#: jit_above_cost, and compiling its expressions took longer than it saved (1M bars: ~0.1-0.3 s)
_JIT_OFF_NS = 31 * 86_400 * 10**9


def _market(
    cur: Any,
    schema: str,
    t: Table,
    spans: list[Span],
    syms: tuple[str, ...],
    rollup: aggregates.Rollup | None = None,
    wanted: Collection[str] | None = None,
    lookups: Lookups | None = None,
) -> _Rows:
    """The rows of ``spans``; ``wanted`` (bars) limits the value columns read (the key always comes)."""
    cols = [
        c
        for c in _out_columns(t)
        if wanted is None or c.name in wanted or c.name in ("instrument_id", t.time_column, t.ns_column)
    ]
    # symbol and instrument_id come client-side from the span of each row (one field less per row: the server's
    # COPY formatting is the read path's floor); with one span not even the span's index is sent
    ties = _ties(t)
    fetched = _fetched(t, cols)
    several = len(spans) > 1
    text, params = (_union if len(spans) <= UNION_SPANS else _lateral)(cur, schema, t, spans, fetched, rollup)
    if sum(sp.hi.value - sp.lo.value for sp in spans) > _JIT_OFF_NS:
        cur.execute("SET LOCAL jit = off")  # compiling a large scan's expressions costs more than it saves
    raw = copy.copy_view(cur, cur.mogrify(text, params).decode())
    # native contiguous arrays: sorting and gathering big-endian strided record fields is ~20x slower
    decoded = copy.columns(raw, ["int4"] * several + [c.pgtype for c in fetched])
    arrays = {c.name: v for c, v in zip(fetched, decoded[int(several) :], strict=True)}
    span = decoded[0].astype(np.intp) if several else np.zeros(len(decoded[0]), dtype=np.intp)
    keep = _of_dataset(cur, schema, spans, arrays["publisher_id"], span, lookups)
    if keep is not None:
        arrays, span = {k: v[keep] for k, v in arrays.items()}, span[keep]
    arrays["instrument_id"] = np.array([sp.instrument_id for sp in spans], dtype=np.int64)[span]
    sym = np.array([syms.index(sp.symbol) for sp in spans], dtype=np.int32)[span]
    # in order of time, symbol, instrument, then the rest of the key; one span's rows come in it from the
    # primary key (checked), others are sorted client-side: a server sort of a large result spills to disk with
    # the default work_mem
    keys = [arrays[t.ns_column or t.time_column], *([sym, arrays["instrument_id"]] if several else [])]
    keys += [arrays[k] for k in ties]
    if not _ordered(keys):
        order = np.lexsort(keys[::-1])
        arrays, sym = {k: v[order] for k, v in arrays.items()}, sym[order]
    return _Rows(arrays, sym, cols, t)


def _ties(t: Table) -> list[str]:
    """The key columns after instrument and time: what orders rows of one instant."""
    return [k for k in t.key if k not in ("instrument_id", "ts_event", "ts_event_ns")]


def _fetched(t: Table, cols: list[Column]) -> list[Column]:
    """What a read of ``cols`` fetches: them but instrument_id (from the span), then the ties and publisher_id."""
    fetched = [c for c in cols if c.name != "instrument_id"]
    return fetched + [t.column(k) for k in [*_ties(t), "publisher_id"] if k not in {c.name for c in fetched}]


def _bounds(t: Table, spans: list[Span], rollup: aggregates.Rollup | None) -> list[tuple[int, int, int, int]]:
    """``(lo_us, hi_us, lo_ns, hi_ns)`` of each span: the microsecond window of the time column and the exact
    nanosecond one (ticks)."""
    out = []
    for sp in spans:
        lo_ns, hi_ns = sp.lo.value, sp.hi.value
        if rollup:  # whole buckets starting in [lo, hi): the rows from the first bucket start >= lo on
            lo_ns, hi_ns = (
                aggregates.bucket_ceil_ns(lo_ns, rollup.seconds),
                aggregates.bucket_ceil_ns(hi_ns, rollup.seconds),
            )
        if t.ns_column:  # coarse microsecond window around the exact nanosecond one
            out.append((lo_ns // 1000, (hi_ns - 1) // 1000 + 1, lo_ns, hi_ns))
        else:  # bars are whole microseconds: ts*1000 >= lo_ns <=> ts >= ceil(lo_ns/1000)
            out.append((-(-lo_ns // 1000), -(-hi_ns // 1000), lo_ns, hi_ns))
    return out


_EPOCH = "'epoch'::timestamptz + interval '1 microsecond' * "


def _select(cur: Any, fetched: list[Column]) -> list[str]:
    q = pgsql.Identifier
    return [
        f"COALESCE(t.{q(c.name).as_string(cur)}, {_SENTINEL[c.kind]})"
        if c.nullable
        else f"t.{q(c.name).as_string(cur)}"
        for c in fetched
    ]


def _union(
    cur: Any, schema: str, t: Table, spans: list[Span], fetched: list[Column], rollup: aggregates.Rollup | None
) -> tuple[str, list[int]]:
    """One primary-key range scan per span, constants in the text (a plan in ~0.03 ms each; an ad-hoc LATERAL
    over an unnest takes ~0.3 ms more to plan, and its join per row costs); with several spans each row starts
    with its span's index."""
    select = ", ".join(_select(cur, fetched))
    table = pgsql.Identifier(schema, t.name).as_string(cur)
    ts, parts, params = t.time_column, list[str](), list[int]()
    if not spans:
        return f"SELECT {select} FROM {table} t WHERE false", params
    for k, (sp, (lo_us, hi_us, lo_ns, hi_ns)) in enumerate(zip(spans, _bounds(t, spans, rollup), strict=True)):
        where = f"t.instrument_id = %s AND t.{ts} >= {_EPOCH}%s AND t.{ts} < {_EPOCH}%s"
        params += [sp.instrument_id, lo_us, hi_us]
        if t.ns_column:
            where += f" AND t.{t.ns_column} >= %s AND t.{t.ns_column} < %s"
            params += [lo_ns, hi_ns]
        source = (
            f"({aggregates.relation(cur.connection, schema, rollup, where)}) t"
            if rollup
            else f"{table} t WHERE {where}"
        )
        parts.append(f"SELECT {f'{k}::int4, ' if len(spans) > 1 else ''}{select} FROM {source}")
    return " UNION ALL ".join(parts), params


def _lateral(
    cur: Any, schema: str, t: Table, spans: list[Span], fetched: list[Column], rollup: aggregates.Rollup | None
) -> tuple[str, tuple[list[Any], ...]]:
    """Many spans: one statement over an unnest of them, one primary-key range scan per span (a hash join would
    match every row to every span); each row starts with its span's index."""
    ts = t.time_column
    where = f"t.instrument_id = r.iid AND t.{ts} >= {_EPOCH}r.lo_us AND t.{ts} < {_EPOCH}r.hi_us"
    if t.ns_column:
        where += f" AND t.{t.ns_column} >= r.lo_ns AND t.{t.ns_column} < r.hi_ns"
    inner = (
        aggregates.relation(cur.connection, schema, rollup, where)
        if rollup
        else f"SELECT * FROM {pgsql.Identifier(schema, t.name).as_string(cur)} t WHERE {where}"
    )
    text = (
        f"SELECT r.span, {', '.join(_select(cur, fetched))} FROM unnest(%s::int4[], %s::int8[], %s::int8[], "
        "%s::int8[], %s::int8[], %s::int8[]) AS r(span, iid, lo_us, hi_us, lo_ns, hi_ns) "
        f"CROSS JOIN LATERAL ({inner} OFFSET 0) t"
    )
    bounds = _bounds(t, spans, rollup)
    return text, (
        list(range(len(spans))),
        [sp.instrument_id for sp in spans],
        *([b[i] for b in bounds] for i in range(4)),
    )


def _of_dataset(
    cur: Any,
    schema: str,
    spans: list[Span],
    publisher: npt.NDArray[Any],
    span: npt.NDArray[np.intp],
    lookups: Lookups | None,
) -> npt.NDArray[np.bool_] | None:
    """Which rows a publisher of their span's dataset published (instrument ids are the vendor's per dataset:
    two datasets may use one), None when all did. Checked client-side from the session's cache of publishers
    (a filter in the statement costs ~5% of a small read)."""
    if not len(publisher):
        return None
    seen = np.zeros(1 << 16, dtype=np.bool_)
    seen[publisher.view(np.uint16)] = True
    present = np.flatnonzero(seen)
    datasets = (lookups or Lookups(schema)).datasets_in(cur, present.tolist())
    names = sorted({sp.dataset for sp in spans})
    if len(names) == 1 and all(datasets.get(int(p)) == names[0] for p in present):
        return None
    code = np.full(1 << 16, -1, dtype=np.int32)  # the dataset of each publisher id
    for p in present:
        if datasets.get(int(p)) in names:
            code[p] = names.index(datasets[int(p)])
    wanted = np.array([names.index(sp.dataset) for sp in spans], dtype=np.int32)
    return np.asarray(code[publisher.view(np.uint16)] == wanted[span])


def _ordered(keys: list[npt.NDArray[Any]]) -> bool:
    """Whether the rows are in lexicographic order of ``keys`` (most significant first): one vectorised pass."""
    if len(keys[0]) < 2:
        return True
    first = keys[0]
    later = first[1:] > first[:-1]
    if later.all():
        return True
    tied = first[1:] == first[:-1]
    for key in keys[1:]:
        later |= tied & (key[1:] > key[:-1])
        tied &= key[1:] == key[:-1]
    return bool((later | tied).all())


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
            data[name] = v.astype(v.dtype.newbyteorder("="), copy=False)
    t = rows.table
    time_ns = data.pop(_RENAMED.get(t.ns_column or t.time_column, t.ns_column or t.time_column))
    if "ts_recv" in data:  # first after symbol, as DBNStore.to_df() shows it
        data = {"ts_recv": data.pop("ts_recv"), **data}
    return time_ns, data


def _frame(rows: _Rows, syms: tuple[str, ...], price_type: PriceType, extra: Extra | None = None) -> pd.DataFrame:
    time_ns, data = _values(rows, price_type)
    if extra is not None:
        data.update(extra(time_ns, rows.arrays["publisher_id"], rows.arrays["instrument_id"]))
    index = _utc(time_ns).rename("ts_event")
    if "ts_recv" in data:
        data["ts_recv"] = _utc(data["ts_recv"])
    for name, v in data.items():
        if isinstance(v, pa.Array):
            data[name] = _strings(v)
    # the arrays are this frame's own: no copy (a consolidating copy and inserts cost ~0.5 ms a small read)
    return pd.DataFrame(
        {"symbol": _strings(_arrow_strings(rows.sym, syms, large=True)), **data}, index=index, copy=False
    )


def _utc(ns: npt.NDArray[np.int64]) -> pd.DatetimeIndex:
    """int64 nanoseconds as a UTC DatetimeIndex, without parsing (``pd.to_datetime`` takes ~8x longer)."""
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]")).tz_localize("UTC")


_NS_UTC = pa.timestamp("ns", tz="UTC")


def _table(rows: _Rows, syms: tuple[str, ...], price_type: PriceType, fixed_too: bool) -> pa.Table:
    time_ns, data = _values(rows, price_type, fixed_too)
    arrays = {"ts_event": pa.array(time_ns, type=_NS_UTC), "symbol": _arrow_strings(rows.sym, syms)}
    for name, v in data.items():
        arrays[name] = pa.array(v, type=_NS_UTC) if name == "ts_recv" else v
    return pa.table(arrays)


_CHARS = tuple(chr(i) if i else "" for i in range(256))


def _arrow_strings(codes: npt.NDArray[Any], labels: Sequence[str], *, large: bool = False) -> pa.Array:
    """An Arrow ``string`` (``large``: ``large_string``) array from integer codes into ``labels`` (~6x faster
    than object arrays)."""
    kind = pa.large_string() if large else pa.string()
    if len(labels) == 1:  # one symbol: its bytes repeated, no dictionary to decode
        raw = labels[0].encode()
        offsets = np.arange(len(codes) + 1, dtype=np.int64 if large else np.int32) * len(raw)
        return pa.Array.from_buffers(kind, len(codes), [None, pa.py_buffer(offsets), pa.py_buffer(raw * len(codes))])
    arr = pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), pa.array(list(labels), type=kind))
    return arr.cast(kind)


def _strings(arr: pa.Array) -> Any:
    """A pandas ``str`` array over an Arrow string array."""
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    return pd.array(arr, dtype=pd.StringDtype("pyarrow", na_value=np.nan))


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
