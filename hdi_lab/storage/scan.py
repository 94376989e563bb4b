"""Primary-key range scans of a market-data table: the statement a read sends inside its binary COPY, and the
decoded columns it gives back (native contiguous numpy arrays, one per column).

A read asks for *ranges*, ``(instrument_id, lo_ns, hi_ns)`` each: up to :data:`UNION_SPANS` of them are one plain
range scan each joined by ``UNION ALL``, more one scan per range of an unnest of them (``LATERAL``). With several
ranges each row comes with the index of its range. :mod:`hdi_lab.storage.read` reads symbol spans this way, and
:mod:`hdi_lab.storage.cached` whole days of instruments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
from psycopg2 import sql as pgsql

from hdi_lab.dbn import INT64_MAX
from hdi_lab.storage import aggregates, copy
from hdi_lab.storage.tables import Column, Table

__all__ = [
    "UNION_SPANS",
    "Range",
    "fetch",
    "fetched",
    "is_long",
    "ordered",
    "out_columns",
    "statement",
    "ties",
]

#: ``(instrument_id, lo_ns, hi_ns)``: an instrument's rows on ``[lo_ns, hi_ns)``
Range: TypeAlias = tuple[int, int, int]

#: up to this many ranges a read is one plain primary-key range scan per range, joined by UNION ALL (each planned
#: in ~0.03 ms); more (a parent symbol over years) are read by one scan per range of an unnest of them (LATERAL:
#: one plan whatever their number, ~0.3 ms more per read)
UNION_SPANS = 32
#: reads longer than this (summed over ranges) turn the server's JIT off: a large scan's plan passes its
#: jit_above_cost, and compiling its expressions took longer than it saved (1M bars: ~0.1-0.3 s)
_JIT_OFF_NS = 31 * 86_400 * 10**9
_SENTINEL = {"price": INT64_MAX, "undef_i64": INT64_MAX, "undef_u64": -1}


def out_columns(t: Table) -> list[Column]:
    """The columns of ``t`` a read gives (no ``dup_idx``; ticks' time from their nanosecond column)."""
    return [c for c in t.columns if c.kind != "dup" and not (t.ns_column and c.name == t.time_column)]


def ties(t: Table) -> list[str]:
    """The key columns after instrument and time: what orders rows of one instant."""
    return [k for k in t.key if k not in ("instrument_id", "ts_event", "ts_event_ns")]


def fetched(t: Table, cols: Sequence[Column]) -> list[Column]:
    """What a read of ``cols`` fetches: them but instrument_id (known from the range), then the ties and
    publisher_id."""
    out = [c for c in cols if c.name != "instrument_id"]
    return out + [t.column(k) for k in [*ties(t), "publisher_id"] if k not in {c.name for c in out}]


def fetch(
    cur: Any,
    schema: str,
    t: Table,
    ranges: Sequence[Range],
    columns: Sequence[Column],
    rollup: aggregates.Rollup | None = None,
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.intp]]:
    """The ``columns`` (see :func:`fetched`) of the rows of ``ranges`` (``rollup``: rolled up), by one binary COPY:
    native contiguous arrays by column name, and each row's range index (zeros for one range). Rows come in no
    promised order (each range's usually in key order: see :func:`ordered`)."""
    several = len(ranges) > 1 or len(ranges) > UNION_SPANS  # the LATERAL statement always sends the index
    text, params = statement(cur, schema, t, ranges, columns, rollup)
    if is_long(ranges) and not cur.connection.autocommit:
        cur.execute("SET LOCAL jit = off")  # compiling a large scan's expressions costs more than it saves
    raw = copy.copy_view(cur, cur.mogrify(text, params).decode())
    # native contiguous arrays: sorting and gathering big-endian strided record fields is ~20x slower
    decoded = copy.columns(raw, ["int4"] * several + [c.pgtype for c in columns])
    arrays = {c.name: v for c, v in zip(columns, decoded[int(several) :], strict=True)}
    index = decoded[0].astype(np.intp) if several else np.zeros(len(decoded[0]), dtype=np.intp)
    return arrays, index


def is_long(ranges: Sequence[Range]) -> bool:
    """Whether a read of ``ranges`` is long enough to turn the server's JIT off (in its transaction)."""
    return sum(hi - lo for _, lo, hi in ranges) > _JIT_OFF_NS


def statement(
    cur: Any,
    schema: str,
    t: Table,
    ranges: Sequence[Range],
    columns: Sequence[Column],
    rollup: aggregates.Rollup | None = None,
) -> tuple[str, Any]:
    """The SELECT of :func:`fetch` and its parameters."""
    return (_union if len(ranges) <= UNION_SPANS else _lateral)(cur, schema, t, ranges, columns, rollup)


def ordered(keys: Sequence[npt.NDArray[Any]]) -> bool:
    """Whether the rows are in lexicographic order of ``keys`` (most significant first): one vectorised pass."""
    if len(keys[0]) < 2:
        return True
    first = keys[0]
    later = first[1:] > first[:-1]
    if later.all():
        return True
    tied = first[1:] == first[:-1]
    if not (later | tied).all():  # the first key goes back somewhere: the others cannot help
        return False
    for key in keys[1:]:
        later |= tied & (key[1:] > key[:-1])
        tied &= key[1:] == key[:-1]
    return bool((later | tied).all())


def _bounds(t: Table, ranges: Sequence[Range], rollup: aggregates.Rollup | None) -> list[tuple[int, int, int, int]]:
    """``(lo_us, hi_us, lo_ns, hi_ns)`` of each range: the microsecond window of the time column and the exact
    nanosecond one (ticks)."""
    out = []
    for _, lo, hi in ranges:
        lo_ns, hi_ns = lo, hi
        if rollup:  # whole buckets starting in [lo, hi): the rows from the first bucket start >= lo on
            lo_ns, hi_ns = aggregates.bucket_ceil_ns(lo, rollup.seconds), aggregates.bucket_ceil_ns(hi, rollup.seconds)
        if t.ns_column:  # coarse microsecond window around the exact nanosecond one
            out.append((lo_ns // 1000, (hi_ns - 1) // 1000 + 1, lo_ns, hi_ns))
        else:  # bars are whole microseconds: ts*1000 >= lo_ns <=> ts >= ceil(lo_ns/1000)
            out.append((-(-lo_ns // 1000), -(-hi_ns // 1000), lo_ns, hi_ns))
    return out


_EPOCH = "'epoch'::timestamptz + interval '1 microsecond' * "


def _select(cur: Any, columns: Sequence[Column]) -> list[str]:
    q = pgsql.Identifier
    return [
        f"COALESCE(t.{q(c.name).as_string(cur)}, {_SENTINEL[c.kind]})"
        if c.nullable
        else f"t.{q(c.name).as_string(cur)}"
        for c in columns
    ]


def _union(
    cur: Any,
    schema: str,
    t: Table,
    ranges: Sequence[Range],
    columns: Sequence[Column],
    rollup: aggregates.Rollup | None,
) -> tuple[str, list[int]]:
    """One primary-key range scan per range, constants in the text (a plan in ~0.03 ms each; an ad-hoc LATERAL
    over an unnest takes ~0.3 ms more to plan, and its join per row costs); with several ranges each row starts
    with its range's index."""
    select = ", ".join(_select(cur, columns))
    table = pgsql.Identifier(schema, t.name).as_string(cur)
    ts, parts, params = t.time_column, list[str](), list[int]()
    if not ranges:
        return f"SELECT {select} FROM {table} t WHERE false", params
    for k, ((iid, _, _), (lo_us, hi_us, lo_ns, hi_ns)) in enumerate(
        zip(ranges, _bounds(t, ranges, rollup), strict=True)
    ):
        where = f"t.instrument_id = %s AND t.{ts} >= {_EPOCH}%s AND t.{ts} < {_EPOCH}%s"
        params += [iid, lo_us, hi_us]
        if t.ns_column:
            where += f" AND t.{t.ns_column} >= %s AND t.{t.ns_column} < %s"
            params += [lo_ns, hi_ns]
        source = (
            f"({aggregates.relation(cur.connection, schema, rollup, where)}) t"
            if rollup
            else f"{table} t WHERE {where}"
        )
        parts.append(f"SELECT {f'{k}::int4, ' if len(ranges) > 1 else ''}{select} FROM {source}")
    return " UNION ALL ".join(parts), params


def _lateral(
    cur: Any,
    schema: str,
    t: Table,
    ranges: Sequence[Range],
    columns: Sequence[Column],
    rollup: aggregates.Rollup | None,
) -> tuple[str, tuple[list[Any], ...]]:
    """Many ranges: one statement over an unnest of them, one primary-key range scan per range (a hash join
    would match every row to every range); each row starts with its range's index."""
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
        f"SELECT r.span, {', '.join(_select(cur, columns))} FROM unnest(%s::int4[], %s::int8[], %s::int8[], "
        "%s::int8[], %s::int8[], %s::int8[]) AS r(span, iid, lo_us, hi_us, lo_ns, hi_ns) "
        f"CROSS JOIN LATERAL ({inner} OFFSET 0) t"
    )
    bounds = _bounds(t, ranges, rollup)
    return text, (
        list(range(len(ranges))),
        [iid for iid, _, _ in ranges],
        *([b[i] for b in bounds] for i in range(4)),
    )
