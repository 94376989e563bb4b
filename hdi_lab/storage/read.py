"""The storage reader: stored rows of a schema for resolved symbol spans (binary COPY into a
DataFrame, or an Arrow table built from the same numpy columns), instrument definitions, and analysts' SQL."""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg2
import psycopg2.extensions
import pyarrow as pa

from hdi_lab import dbn
from hdi_lab.dbn import INT64_MAX
from hdi_lab.errors import StorageError, ValidationError, first_line
from hdi_lab.schemas import PRICE_TYPES, PriceType, Schema
from hdi_lab.storage import aggregates, cached, copy, scan
from hdi_lab.storage.cached import DayStore
from hdi_lab.storage.cursor import fetch_frame, quote, statements, transaction
from hdi_lab.storage.lookups import Lookups
from hdi_lab.storage.symbology import Span
from hdi_lab.storage.tables import TABLES, Column, Table
from hdi_lab.storage.versions import Observed

__all__ = [
    "FIXED_SUFFIX",
    "MEMO_PIECES",
    "PRICE_TYPES",
    "Extra",
    "PriceType",
    "check_columns",
    "check_price_type",
    "float_prices",
    "owner_pairs",
    "pair_ids",
    "query",
    "query_arrow",
    "sql",
    "statement",
]

#: columns a caller adds to a read's frame, computed from each row's time (int64 ns) and owner: the code of its
#: (publisher, instrument) pair, and the pairs as ``publisher << 32 | instrument`` (int64; a code may have no row)
Extra: TypeAlias = Callable[
    [npt.NDArray[np.int64], npt.NDArray[np.intp], npt.NDArray[np.int64]], Mapping[str, npt.NDArray[Any]]
]
#: reads of at least this many instrument-days, all cached, are kept put together in memory (see :func:`_market`)
MEMO_PIECES = 32
#: the name suffix of the int64 fixed-point copy of a float price column (``close`` -> ``close_fixed``)
FIXED_SUFFIX = "_fixed"


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
    cache: DayStore | None = None,
    observed: Observed | None = None,
) -> pd.DataFrame:
    """The rows of ``sch`` for ``spans`` (see :func:`hdi_lab.core.retrieval.query`), in one transaction for a
    rollup or a long read, else statement by statement (see :func:`_cursor`);
    ``seconds`` rolls bars up, ``columns`` (bars) limits the value columns read. ``lookups``: the session's
    cache of publishers (else they are read). ``extra`` gives columns to append (market data only), built into
    the frame at once (an insert into a built frame copies it). ``cache``: where instrument-days are cached (see
    :mod:`hdi_lab.storage.cached`; rollups and definitions are always read from the tables), ``observed`` the
    versions of their days if already read (:func:`hdi_lab.storage.symbology.lookup_observing`).

    Raises ValidationError when ``columns`` names a column ``sch`` does not have, StorageError when the
    server fails."""
    with _cursor(conn, spans, seconds) as cur:
        if sch is Schema.DEFINITION:
            return _definitions(cur, schema, spans, lo, hi, price_type)
        rows = _read(cur, schema, sch, spans, syms, lo, hi, seconds, columns, lookups, cache, observed)
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
    cache: DayStore | None = None,
    observed: Observed | None = None,
) -> pa.Table:
    """:func:`query`'s rows as a ``pyarrow.Table`` built from the decoded numpy columns (no pandas in between):
    ``ts_event`` (``timestamp[ns, tz=UTC]``) first, then the frame's columns with the same names, values and
    types (``symbol`` and the char columns as ``string``). ``fixed_too`` (float prices) adds each price's exact
    int64 fixed-point value as ``<name>_fixed`` right after it. Definitions come from their frame.

    Raises what :func:`query` raises."""
    with _cursor(conn, spans, seconds) as cur:
        if sch is Schema.DEFINITION:
            frame = _definitions(cur, schema, spans, lo, hi, price_type)
            return pa.Table.from_pandas(frame.reset_index(), preserve_index=False).replace_schema_metadata(None)
        rows = _read(cur, schema, sch, spans, syms, lo, hi, seconds, columns, lookups, cache, observed)
    return _table(rows, syms, price_type, fixed_too)


def statement(conn: psycopg2.extensions.connection, schema: str, sch: Schema, spans: list[Span]) -> str:
    """The SELECT a read of ``spans`` of ``sch`` (market data, no rollup) sends inside its COPY, parameters bound:
    for EXPLAIN and for benchmarks running the same plan through another client. Raises nothing."""
    t = TABLES[sch]
    with conn.cursor() as cur:
        ranges = [(sp.instrument_id, sp.lo.value, sp.hi.value) for sp in spans]
        text, params = scan.statement(cur, schema, t, ranges, scan.fetched(t, scan.out_columns(t)))
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
    if len(fixed) and fixed.max() == INT64_MAX:  # a quick pass: most columns have no undefined price
        f[fixed == INT64_MAX] = np.nan
    return f


def _cursor(
    conn: psycopg2.extensions.connection, spans: list[Span], seconds: int | None
) -> contextlib.AbstractContextManager[psycopg2.extensions.cursor]:
    """Where a read runs: a transaction for a rollup (choosing a continuous aggregate takes a savepoint) or a long
    read (its JIT is turned off for it), else each statement on its own (no BEGIN and COMMIT round trips: a read's
    statements need no shared snapshot)."""
    long = scan.is_long([(sp.instrument_id, sp.lo.value, sp.hi.value) for sp in spans])
    return transaction(conn) if long or seconds is not None else statements(conn)


@dataclass(frozen=True)
class _Rows:
    """Decoded rows in output order: each read column's native array, the index of each row's symbol, the code
    of each row's (publisher, instrument) pair and the pairs (see :data:`Extra`)."""

    arrays: dict[str, npt.NDArray[Any]]
    sym: npt.NDArray[np.int32]
    cols: list[Column]
    table: Table
    owner: npt.NDArray[np.intp]
    pairs: npt.NDArray[np.int64]
    #: the arrays are kept for later reads too: a frame made of them copies what it would otherwise share
    shared: bool = False

    @property
    def nbytes(self) -> int:
        return sum(int(v.nbytes) for v in (*self.arrays.values(), self.sym, self.owner))


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
    cache: DayStore | None,
    observed: Observed | None,
) -> _Rows:
    rollup = (
        None
        if seconds is None
        else aggregates.choose(cur, schema, TABLES[sch].name, seconds, lo.value, hi.value + seconds * 10**9)
    )
    wanted = None
    if columns and sch.is_bar:  # read only these from the server (its row formatting is the floor)
        check_columns(columns, [c.name for c in scan.out_columns(TABLES[sch])] + ["symbol"], sch)
        wanted = set(columns)
    return _market(cur, schema, TABLES[sch], spans, syms, rollup, wanted, lookups, cache, observed)


def _market(
    cur: Any,
    schema: str,
    t: Table,
    spans: list[Span],
    syms: tuple[str, ...],
    rollup: aggregates.Rollup | None = None,
    wanted: Collection[str] | None = None,
    lookups: Lookups | None = None,
    cache: DayStore | None = None,
    observed: Observed | None = None,
) -> _Rows:
    """The rows of ``spans``; ``wanted`` (bars) limits the value columns read (the key always comes); ``cache``
    (not with ``rollup``) serves and keeps whole instrument-days (see :mod:`hdi_lab.storage.cached`)."""
    cols = [
        c
        for c in scan.out_columns(t)
        if wanted is None or c.name in wanted or c.name in ("instrument_id", t.time_column, t.ns_column)
    ]
    # symbol and instrument_id come client-side from the span of each row (one field less per row: the server's
    # COPY formatting is the read path's floor); with one span not even the span's index is sent. Spans in the
    # order of the result's ties (symbol as requested, instrument): see _order
    spans = sorted(spans, key=lambda sp: (syms.index(sp.symbol), sp.instrument_id, sp.lo, sp.dataset))
    ranges = [(sp.instrument_id, sp.lo.value, sp.hi.value) for sp in spans]
    fetched = scan.fetched(t, cols)
    iid_of = np.array([sp.instrument_id for sp in spans], dtype=np.int64)  # of each span
    sym_of = np.array([syms.index(sp.symbol) for sp in spans], dtype=np.int32)
    planned = None if cache is None or rollup is not None else cached.plan(cur, schema, t, ranges, observed)
    keep_whole: Callable[[_Rows, int], None] | None = None  # a read of many days, all cached (a repeated read)
    if cache is not None and planned is not None and len(planned.pieces) >= MEMO_PIECES and planned.complete:
        ties = tuple(zip(sym_of.tolist(), [sp.dataset for sp in spans], strict=True))
        result = cached.Result(planned.seen.identity, t.name, (tuple(ranges), ties, tuple(c.name for c in cols)))
        kept = cache.recall(result, planned.tokens)
        if isinstance(kept, _Rows):
            return kept
        keep_whole = functools.partial(cache.keep, result, planned.tokens)
    if cache is None or planned is None:
        arrays, span = scan.fetch(cur, schema, t, ranges, fetched, rollup)
    else:
        got = cached.fetch(cur, schema, planned, cache)
        arrays, span = {c.name: got[0][c.name] for c in fetched}, got[1]
    keep, publishers = _of_dataset(cur, schema, spans, arrays["publisher_id"], span, lookups)
    if keep is not None:
        arrays, span = {k: v[keep] for k, v in arrays.items()}, span[keep]
    order = _order(t, spans, span, arrays, iid_of, sym_of, runs=planned is not None)
    if order is not None:  # the rows' span in output order, then what comes of it from the spans (no gathers)
        arrays, span = {k: v[order] for k, v in arrays.items()}, span[order]
    arrays["instrument_id"] = iid_of[span]
    owner, pairs = _owners(span, iid_of, arrays["publisher_id"], publishers)
    # kept whole for later reads, or views of the days the cache keeps (unless the order or the dataset made new ones)
    shared = keep_whole is not None or (planned is not None and order is None and keep is None)
    rows = _Rows(arrays, sym_of[span], cols, t, owner, pairs, shared)
    if keep_whole is not None:
        keep_whole(rows, rows.nbytes)
    return rows


def _owners(
    span: npt.NDArray[np.intp],
    iid_of: npt.NDArray[np.int64],
    publisher: npt.NDArray[Any],
    publishers: npt.NDArray[np.intp],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """Each row's (publisher, instrument) code and the pairs (see :data:`Extra`), from the rows' spans and the
    ``publishers`` present: lookups into small tables, no hashing of the rows."""
    instruments, inst_of = np.unique(iid_of, return_inverse=True)  # of the spans: a few
    pairs = _pair(publishers[None, :], instruments[:, None]).ravel()  # instrument-major, publisher-minor
    code = inst_of.astype(np.intp)[span]
    if len(publishers) > 1:
        lut = np.zeros(1 << 16, dtype=np.intp)
        lut[publishers] = np.arange(len(publishers))
        code *= len(publishers)
        code += lut[publisher.view(np.uint16)]
    return code, pairs


def owner_pairs(
    publishers: npt.NDArray[Any], instruments: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """Each row's (publisher, instrument) code and the pairs (see :data:`Extra`) of rows given by their publisher and
    instrument ids (a frame's columns): the pairs factorized. Raises nothing."""
    pair = _pair(publishers, instruments)
    if not len(pair) or (pair == pair[0]).all():  # one publisher and instrument: nothing to factorize
        return np.zeros(len(pair), dtype=np.intp), pair[:1]
    codes, keys = pd.factorize(pair)
    return codes, np.asarray(keys, dtype=np.int64)


def pair_ids(pairs: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """The (publisher, instrument) ids of each of :data:`Extra`'s pairs. Raises nothing."""
    return [(key >> 32, key & 0xFFFFFFFF) for key in pairs.tolist()]


def _pair(publishers: npt.NDArray[Any], instruments: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """``publisher << 32 | instrument`` (DBN instrument ids are uint32), element by element (broadcast)."""
    return np.asarray((publishers.astype(np.int64) << 32) | instruments.astype(np.int64))


def _order(
    t: Table,
    spans: list[Span],
    span: npt.NDArray[np.intp],
    arrays: dict[str, npt.NDArray[Any]],
    iid_of: npt.NDArray[np.int64],
    sym_of: npt.NDArray[np.int32],
    *,
    runs: bool = False,
) -> npt.NDArray[np.intp] | None:
    """The permutation putting the rows in order of time, symbol (as requested), instrument, then the rest of the
    key; None when they are in it (one span's rows come so from the primary key: checked). Sorted client-side: a
    server sort of a large result spills to disk with the default work_mem.

    Spans come in (symbol, instrument) order; when each span's rows are in (time, rest of the key) order and
    spans sharing a symbol and instrument do not overlap in time, a stable sort by time alone merges them
    (timsort over the spans' runs: ~10x faster than a lexsort of the four keys of 1M rows). ``runs``: the rows
    are known to come so (span by span, each in key order: the read cache's), not checked again."""
    several = len(spans) > 1
    time, ties = arrays[t.ns_column or t.time_column], [arrays[k] for k in scan.ties(t)]

    def keys() -> list[npt.NDArray[Any]]:
        between: list[npt.NDArray[Any]] = [sym_of[span], iid_of[span]] if several else []
        return [time, *between, *ties]

    # several spans' rows are seldom in time order: their symbol and instrument keys are built only if they are
    if (not several or scan.ordered([time])) and scan.ordered(keys()):
        return None
    apart = all(
        (a.symbol, a.instrument_id) != (b.symbol, b.instrument_id) or a.hi <= b.lo for a, b in itertools.pairwise(spans)
    )
    if apart and (runs or scan.ordered([span, time, *ties])):
        return np.argsort(time, kind="stable")
    return np.lexsort(keys()[::-1])


def _of_dataset(
    cur: Any,
    schema: str,
    spans: list[Span],
    publisher: npt.NDArray[Any],
    span: npt.NDArray[np.intp],
    lookups: Lookups | None,
) -> tuple[npt.NDArray[np.bool_] | None, npt.NDArray[np.intp]]:
    """Which rows a publisher of their span's dataset published (instrument ids are the vendor's per dataset:
    two datasets may use one), None when all did, and the publisher ids present (those of the rows kept).
    Checked client-side from the session's cache of publishers (a filter in the statement costs ~5% of a small
    read)."""
    ids = publisher.view(np.uint16)
    present = _present(ids)
    if not len(present):
        return None, present
    datasets = (lookups or Lookups(schema)).datasets_in(cur, present.tolist())
    names = sorted({sp.dataset for sp in spans})
    if len(names) == 1 and all(datasets.get(int(p)) == names[0] for p in present):
        return None, present
    code = np.full(1 << 16, -1, dtype=np.int32)  # the dataset of each publisher id
    for p in present:
        if datasets.get(int(p)) in names:
            code[p] = names.index(datasets[int(p)])
    wanted = np.array([names.index(sp.dataset) for sp in spans], dtype=np.int32)
    keep = np.asarray(code[ids] == wanted[span])
    return keep, _present(ids[keep])


def _present(ids: npt.NDArray[np.uint16]) -> npt.NDArray[np.intp]:
    """The distinct publisher ids of the rows, ascending."""
    if not len(ids) or ids.min() == ids.max():  # none, or one publisher (the usual read): no scatter over the rows
        return ids[:1].astype(np.intp)
    seen = np.zeros(1 << 16, dtype=np.bool_)
    seen[ids] = True
    return np.flatnonzero(seen)


#: the output name of a stored column whose name differs (the nanosecond columns)
_RENAMED = {"ts_recv_ns": "ts_recv", "ts_ref_ns": "ts_ref"}


def _values(
    rows: _Rows, price_type: PriceType, fixed_too: bool = False
) -> tuple[npt.NDArray[np.int64], dict[str, Any]]:
    """The time index (int64 ns) and every value column in output order (``symbol`` aside): native numpy arrays
    of their own (never the rows' own when they are :attr:`_Rows.shared`), Arrow string arrays for chars;
    ``ts_recv`` as int64 ns. One conversion for the frame and the Arrow table."""
    data: dict[str, Any] = {}
    for c in rows.cols:
        v = rows.arrays[c.name]
        name = _RENAMED.get(c.name, c.name)
        if c.kind == "ts":
            ns = v.astype(np.int64)  # microseconds since 2000 as nanoseconds since 1970, in place
            ns *= 1000
            ns += copy.PG_EPOCH_US * 1000
            data[name] = ns
        elif c.kind == "char":
            data[name] = _arrow_strings(v.astype(np.int32), _CHARS)
        elif c.kind == "price" and price_type == "float":
            data[name] = float_prices(v)
            if fixed_too:
                data[name + FIXED_SUFFIX] = v.astype(np.int64)
        elif c.kind == "undef_u64":
            data[name] = v.astype(np.int64).view(np.uint64)
        else:
            data[name] = v.astype(v.dtype.newbyteorder("="), copy=rows.shared)
    t = rows.table
    time_ns = data.pop(_RENAMED.get(t.ns_column or t.time_column, t.ns_column or t.time_column))
    if "ts_recv" in data:  # first after symbol, as DBNStore.to_df() shows it
        data = {"ts_recv": data.pop("ts_recv"), **data}
    return time_ns, data


def _frame(rows: _Rows, syms: tuple[str, ...], price_type: PriceType, extra: Extra | None = None) -> pd.DataFrame:
    time_ns, data = _values(rows, price_type)
    if extra is not None:
        data.update(extra(time_ns, rows.owner, rows.pairs))
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
