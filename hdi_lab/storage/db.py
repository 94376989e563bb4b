"""Connections, migrations and server detection."""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from hdi_lab.errors import StorageError
from hdi_lab.storage import timescale

if TYPE_CHECKING:
    import pandas as pd

_MIGRATION = re.compile(r"^(\d{3})_(\w+)\.sql$")


@dataclass(frozen=True)
class ServerInfo:
    version: str
    timescaledb: str | None  # installed extension version, None on plain PostgreSQL
    timescaledb_available: bool


def connect(url: str, schema: str) -> psycopg2.extensions.connection:
    """Open a connection with UTC session time zone and ``schema`` first on the search path."""
    try:
        conn = psycopg2.connect(url, options=f"-c timezone=UTC -c search_path={schema},public",
                                application_name="hdi_lab", connect_timeout=10)
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        raise StorageError(
            f"cannot connect to PostgreSQL ({first}): check HDI_DATABASE_URL or unset it to use "
            "the embedded server"
        ) from exc
    return conn


def quote(conn: psycopg2.extensions.connection, *names: str) -> str:
    """Safely quoted (qualified) identifier."""
    return sql.Identifier(*names).as_string(conn)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with hdi_lab, in order."""
    root = importlib.resources.files("hdi_lab.storage") / "migrations"
    out = []
    for entry in root.iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(out)


def migrate(conn: psycopg2.extensions.connection, schema: str,
            policies: timescale.Policies | None = None) -> list[int]:
    """Apply pending migrations in one transaction (serialised by an advisory lock).

    On TimescaleDB also converts and configures the tables and sets the ``policies``.
    """
    s = quote(conn, schema)
    applied_now: list[int] = []
    with transaction(conn) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('hdi_lab.migrate.' || %s))", (schema,))
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.schema_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute(f"SELECT version FROM {s}.schema_migrations")
        done = {r[0] for r in cur.fetchall()}
        shipped = migrations()
        newest = max((v for v, _, _ in shipped), default=0)
        if done and max(done) > newest:
            raise StorageError(
                f"schema {schema} is at version {max(done)}, newer than this hdi_lab ({newest}): upgrade hdi_lab"
            )
        for version, name, text in shipped:
            if version in done:
                continue
            cur.execute(text.replace("{s}", s))
            cur.execute(f"INSERT INTO {s}.schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied_now.append(version)
        timescale.enable(cur, schema, policies)
        if applied_now:
            import databento as db

            rows = [(p.to_int(), p.dataset, p.venue) for p in db.Publisher]
            psycopg2.extras.execute_values(
                cur, f"INSERT INTO {s}.publishers VALUES %s ON CONFLICT (publisher_id) DO NOTHING", rows
            )
    return applied_now


@contextmanager
def transaction(conn: psycopg2.extensions.connection) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor in one transaction: commit on success, roll back whole on any error."""
    cur = conn.cursor()
    try:
        yield cur
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        cur.close()


def one(cur: psycopg2.extensions.cursor) -> tuple[Any, ...]:
    """The single row a statement must return."""
    row = cur.fetchone()
    if row is None:
        raise StorageError("the database returned no row where one was expected")
    return tuple(row)


def fetch_frame(cur: psycopg2.extensions.cursor) -> pd.DataFrame:
    """The rows of the last statement as a DataFrame (column names from the cursor)."""
    import pandas as pd

    names = [d.name for d in cur.description or ()]
    return pd.DataFrame.from_records(cur.fetchall(), columns=names)


def server_info(conn: psycopg2.extensions.connection) -> ServerInfo:
    with transaction(conn) as cur:
        cur.execute("SHOW server_version")
        version = one(cur)[0]
        cur.execute("SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb'")
        row = cur.fetchone()
    return ServerInfo(version, row[0] if row else None, bool(row))
