"""Migrations, table specs against the live tables, and binary COPY round trips on a real PostgreSQL."""

from __future__ import annotations

import numpy as np
import psycopg2
import pytest

from hdi_lab.core.session import HdiSession
from hdi_lab.dbn import INT64_MAX
from hdi_lab.storage import copy, db
from hdi_lab.storage.tables import TABLES

pytestmark = pytest.mark.integration

PG_TYPES = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "timestamptz": "timestamp with time zone",
    "char": '"char"',
}


def test_migrations_are_versioned_and_idempotent(session: HdiSession) -> None:
    conn = session.connection()  # migrates
    assert db.migrate(conn, session.schema) == []
    with conn.cursor() as cur:
        cur.execute(f'SELECT version FROM "{session.schema}".schema_migrations')
        assert [r[0] for r in cur.fetchall()] == [v for v, _, _ in db.migrations()]
        cur.execute(f'SELECT dataset FROM "{session.schema}".publishers WHERE publisher_id = 1')
        assert cur.fetchone()[0] == "GLBX.MDP3"
    conn.rollback()


def test_table_specs_match_live_tables(session: HdiSession) -> None:
    conn = session.connection()
    with conn.cursor() as cur:
        for t in {t.name: t for t in TABLES.values()}.values():
            cur.execute(
                "SELECT column_name, CASE WHEN data_type = '\"char\"' THEN '\"char\"' ELSE data_type END, "
                "is_nullable FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "ORDER BY ordinal_position",
                (session.schema, t.name),
            )
            live = [(n, ty, nul == "YES") for n, ty, nul in cur.fetchall()]
            assert live == [(c.name, PG_TYPES[c.pgtype], c.nullable) for c in t.columns], t.name
            cur.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
                "ORDER BY array_position(i.indkey, a.attnum)",
                (f'"{session.schema}".{t.name}',),
            )
            assert tuple(r[0] for r in cur.fetchall()) == t.key, t.name
    conn.rollback()


def test_newer_schema_is_refused(session: HdiSession) -> None:
    conn = session.connection()
    with conn.cursor() as cur:
        cur.execute(f'INSERT INTO "{session.schema}".schema_migrations VALUES (999, %s)', ("future",))
    conn.commit()
    with pytest.raises(Exception, match="newer than this hdi_lab"):
        db.migrate(conn, session.schema)


def test_binary_copy_round_trip_with_nulls_and_extremes(session: HdiSession) -> None:
    conn = session.connection()
    n = 1000
    rng = np.random.default_rng(7)
    a = rng.integers(-(2**62), 2**62, n, dtype=np.int64)
    a[:3] = [INT64_MAX - 1, -(2**63), 0]
    b = rng.integers(-(2**15), 2**15 - 1, n).astype(np.int16)
    ts = rng.integers(0, 2**50, n, dtype=np.int64)
    ch = rng.integers(0, 256, n).astype(np.uint8)
    nulls = rng.random(n) < 0.3
    with conn.cursor() as cur:
        cur.execute('CREATE TEMP TABLE rt (a bigint, b smallint, ts timestamptz, ch "char")')
        payload = copy.encode(["int8", "int2", "timestamptz", "char"], [a, b, ts, ch], {0: nulls})
        copy.copy_in(cur, "rt", ["a", "b", "ts", "ch"], payload)
        cur.execute("SELECT count(*), count(a) FROM rt")
        assert cur.fetchone() == (n, n - int(nulls.sum()))
        raw = copy.copy_out(cur, f"SELECT COALESCE(a, {INT64_MAX}), b, ts, ch FROM rt")
        rows = copy.decode(raw, ["int8", "int2", "timestamptz", "char"])
        np.testing.assert_array_equal(rows["v0"], np.where(nulls, INT64_MAX, a))
        np.testing.assert_array_equal(rows["v1"], b)
        np.testing.assert_array_equal(rows["v2"], ts)
        np.testing.assert_array_equal(rows["v3"], ch)
        with pytest.raises(Exception, match="NULL"):
            copy.decode(copy.copy_out(cur, "SELECT a FROM rt"), ["int8"])
    conn.rollback()


def test_unreachable_database_gives_a_clear_error() -> None:
    from hdi_lab.config import load_settings
    from hdi_lab.errors import StorageError

    s = HdiSession(load_settings({"database_url": "postgresql://nobody@127.0.0.1:1/x"}, environ={}))
    with pytest.raises(StorageError, match="HDI_DATABASE_URL"):
        s.connection()
    assert isinstance(psycopg2.__version__, str)
