"""The SQL of hdi_lab's Feast glue, run on the connections Feast's PostgreSQL store opens (psycopg 3)
or on the psycopg2 connection the training-frame fast path opens with Feast's options.

The callers (:mod:`hdi_lab.featurestore.repo`, :mod:`hdi_lab.featurestore.offline_store`) build the
training-frame query from Feast's view contexts and hand it in as text; every statement runs here.
Errors are the drivers' own: the Feast glue translates them (``featurestore.repo.feast_errors``).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import psycopg
from psycopg import pq, sql

from hdi_lab.storage.copy import copy_out

__all__ = [
    "FLAGS_PER_WORD",
    "ColumnDef",
    "Description",
    "copy_entity_binary",
    "copy_entity_rows",
    "create_entity_table",
    "create_table_as",
    "describe",
    "drop_table",
    "feature_tables",
    "fetch",
    "fixed_width_copy",
    "load_entity_table",
    "quote",
]

#: a column of an entity table: [name, SQL type]
ColumnDef: TypeAlias = Sequence[str]
#: a result's columns: (name, type oid)
Description: TypeAlias = list[tuple[str, int]]

#: NULL flags per int8 bitmask column of :func:`fixed_width_copy` (62 keeps every sum a positive int8)
FLAGS_PER_WORD = 62

#: this connection only: compiling the per-row lookups costs more (~0.1 s) than it saves
_NO_JIT = "SET jit = off"


def feature_tables(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    """Names of the ``features_*`` tables in ``schema``."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name LIKE 'features\\_%%'",
            (schema,),
        )
        return {str(r[0]) for r in cur.fetchall()}


def create_table_as(conn: psycopg.Connection[Any], table: str, query: str) -> None:
    """``CREATE TABLE table AS (query)`` (Feast's entity table for a SQL entity frame)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} AS ({})").format(sql.Identifier(table), sql.SQL(query)))


def drop_table(conn: psycopg.Connection[Any], table: str) -> None:
    """``DROP TABLE IF EXISTS table``."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def fetch(conn: psycopg.Connection[Any], query: str) -> tuple[Description | None, list[tuple[Any, ...]]]:
    """The columns and rows of ``query``, fetched in binary when psycopg has a binary loader for every
    result column (else in text); no columns: ``(None, [])``."""
    with conn.cursor() as probe:
        probe.execute(f"SELECT * FROM ({query}) AS hdi_probe LIMIT 0")
        oids = [c.type_code for c in probe.description or ()]
    binary = all(conn.adapters.get_loader(oid, pq.Format.BINARY) is not None for oid in oids)
    with conn.cursor(binary=binary) as cur:
        cur.execute(query)
        if not cur.description:
            return None, []
        return [(c.name, c.type_code) for c in cur.description], cur.fetchall()


def _entity_sql(table: str, columns: Sequence[ColumnDef]) -> tuple[sql.Composed, sql.Composed]:
    """(``CREATE TEMPORARY TABLE ... ON COMMIT DROP``, ``COPY ... FROM STDIN``) of an entity table."""
    create = sql.SQL("CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns),
    )
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(n) for n, _ in columns)
    )
    return create, copy_in


def describe(cur: Any, query: str) -> Description:
    """The columns ``query`` returns, without running it (``LIMIT 0``), with JIT off for the
    connection (``cur``: psycopg 2 or 3)."""
    cur.execute(_NO_JIT)
    cur.execute(f"SELECT * FROM ({query}) AS hdi_probe LIMIT 0")
    return [(d.name, d.type_code) for d in cur.description or ()]


def load_entity_table(cur: Any, table: str, columns: Sequence[ColumnDef], payload: bytes) -> None:
    """Create the temporary entity ``table`` and fill it with a binary COPY stream (psycopg2 cursor,
    whose COPY reads the stream in C)."""
    create, copy_in = _entity_sql(table, columns)
    cur.execute(create.as_string(None))
    cur.copy_expert(copy_in.as_string(None) + " (FORMAT binary)", io.BytesIO(payload), size=1 << 22)


def create_entity_table(cur: psycopg.Cursor[Any], table: str, columns: Sequence[ColumnDef]) -> None:
    """Create the temporary entity ``table`` (psycopg 3 cursor), JIT off for the connection."""
    cur.execute(_NO_JIT)
    cur.execute(_entity_sql(table, columns)[0])


def copy_entity_binary(cur: psycopg.Cursor[Any], table: str, columns: Sequence[ColumnDef], payload: bytes) -> None:
    """Fill the entity ``table`` with a binary COPY stream (psycopg 3 cursor)."""
    with cur.copy(_entity_sql(table, columns)[1] + sql.SQL(" (FORMAT binary)")) as cp:
        cp.write(payload)


def copy_entity_rows(
    cur: psycopg.Cursor[Any], table: str, columns: Sequence[ColumnDef], rows: Iterable[tuple[Any, ...]]
) -> None:
    """Fill the entity ``table`` row by row (psycopg 3 cursor; ``rows``: an iterable of tuples)."""
    with cur.copy(_entity_sql(table, columns)[1]) as cp:
        for row in rows:
            cp.write_row(row)


def fixed_width_copy(cur: Any, query: str, row_col: str, features: Sequence[tuple[str, str]]) -> bytes:
    """The binary COPY of ``query``'s ``row_col`` and ``features`` (name, SQL of NULL's stand-in), NULLs
    sent as the stand-in and flagged in bitmasks (one int8 per :data:`FLAGS_PER_WORD` features, after
    the features), so that every field has a fixed width (psycopg2 cursor)."""
    q = quote
    fields = [f"q.{q(row_col)}", *(f"COALESCE(q.{q(name)}, {null})" for name, null in features)]
    for start in range(0, len(features), FLAGS_PER_WORD):
        word = features[start : start + FLAGS_PER_WORD]
        fields.append(
            "(0::int8 + "
            + " + ".join(f"CASE WHEN q.{q(name)} IS NULL THEN {1 << j} ELSE 0 END" for j, (name, _) in enumerate(word))
            + ")"
        )
    return copy_out(cur, f"SELECT {', '.join(fields)} FROM ({query}) AS q")


def quote(name: str) -> str:
    """A safely quoted identifier (psycopg 3, which Feast's connections use; no connection needed)."""
    return sql.Identifier(name).as_string()
