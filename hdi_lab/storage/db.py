"""Connections, migrations, server detection, and psycopg2 errors turned into StorageError.

Every statement runs in :func:`transaction`, which turns a ``psycopg2.Error`` into a one-line
:class:`StorageError` (with its sqlstate, chained to the original), so no front end ever sees a
driver traceback. Code that expects a specific error (``UniqueViolation`` under a savepoint)
catches it inside the transaction, before the translation.
"""

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

from hdi_lab import dsn
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


#: sqlstate classes of a connection that is gone: connection exception, operator intervention
_LOST = ("08", "57P")


def connect(url: str, schema: str) -> psycopg2.extensions.connection:
    """Open a connection with UTC session time zone and ``schema`` first on the search path.

    libpq's messages may quote the URL (``invalid dsn: invalid percent-encoded token: "<password>"``):
    they are scrubbed of its secrets, and not chained when they held one.
    """
    try:
        return psycopg2.connect(url, options=f"-c timezone=UTC -c search_path={schema},public",
                                application_name="hdi_lab", connect_timeout=10)
    except psycopg2.Error as exc:
        text = str(exc).strip()
        first = dsn.scrub(text, url).splitlines()[0] if text else "connection failed"
        if isinstance(exc, psycopg2.ProgrammingError):  # libpq refused the URL before connecting
            message = (f"the database URL is not valid ({first}): fix HDI_DATABASE_URL / --database-url, "
                       "e.g. postgresql://user:password@host:5432/dbname")
        else:
            message = (f"cannot connect to PostgreSQL ({first}): check HDI_DATABASE_URL or unset it to use "
                       "the embedded server")
        error = StorageError(message, sqlstate=exc.pgcode)
        if dsn.scrub(text, url) != text:  # the driver's text quoted a secret: keep it out of the chain too
            raise error from None
        raise error from exc


def storage_error(exc: psycopg2.Error, conn: psycopg2.extensions.connection | None = None) -> StorageError:
    """The one-line StorageError for a driver error (a lost connection says how to resume)."""
    text = (exc.pgerror or str(exc) or type(exc).__name__).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    code = exc.pgcode
    lost = (conn is not None and conn.closed) or isinstance(exc, psycopg2.InterfaceError) or (
        code is not None and code.startswith(_LOST)) or (code is None and isinstance(exc, psycopg2.OperationalError))
    if lost:
        return StorageError(f"lost the connection to PostgreSQL ({first}): completed chunks are kept; check the "
                            "server (hdi db status) and re-run to resume", sqlstate=code)
    if code == "42501":
        return StorageError(f"PostgreSQL refused: {first} (sqlstate 42501): this role lacks the privilege; "
                            "connect as a role that has it (e.g. the schema's owner) or ask for a GRANT",
                            sqlstate=code)
    where = f" (sqlstate {code})" if code else ""
    return StorageError(f"PostgreSQL failed: {first}{where}", sqlstate=code)


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


@dataclass(frozen=True)
class SchemaState:
    """What a role may see of the hdi_lab schema, read with plain SELECTs (no privilege needed)."""

    exists: bool
    owner: bool  # the role owns the schema (or is a member of its owner): it may migrate
    may_create: bool  # CREATE on the database: it may create the schema
    versions: frozenset[int]


def schema_state(conn: psycopg2.extensions.connection, schema: str) -> SchemaState:
    with transaction(conn) as cur:
        cur.execute(
            "SELECT n.oid IS NOT NULL, coalesce(pg_has_role(n.nspowner, 'USAGE'), false), "
            "has_database_privilege(current_database(), 'CREATE'), "
            "n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'USAGE') "
            "FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = %s", (schema,))
        exists, owner, may_create, usage = one(cur)
        versions: frozenset[int] = frozenset()
        if usage:
            table = f"{quote(conn, schema)}.schema_migrations"
            cur.execute("SELECT CASE WHEN to_regclass(%s) IS NULL THEN false "
                        "ELSE has_table_privilege(to_regclass(%s), 'SELECT') END", (table, table))
            if one(cur)[0]:
                cur.execute(f"SELECT version FROM {table}")
                versions = frozenset(r[0] for r in cur.fetchall())
        elif exists and not owner:
            raise StorageError(f"this role may not use schema {schema}: ask its owner for GRANT USAGE ON SCHEMA "
                               f"{schema} and GRANT SELECT ON ALL TABLES IN SCHEMA {schema}", sqlstate="42501")
    return SchemaState(bool(exists), bool(owner), bool(may_create), versions)


def migrate(conn: psycopg2.extensions.connection, schema: str,
            policies: timescale.Policies | None = None) -> list[int]:
    """Apply pending migrations in one transaction (serialised by an advisory lock).

    On TimescaleDB also converts and configures the tables and sets the ``policies``. The
    applied version is read first with plain SELECTs: a role that does not own a current schema
    (a read-only role) changes nothing and needs read rights only; one that cannot migrate a
    schema that needs it is told so.
    """
    state = schema_state(conn, schema)
    shipped = migrations()
    newest = max((v for v, _, _ in shipped), default=0)
    pending = [v for v, _, _ in shipped if v not in state.versions]
    if state.versions and max(state.versions) > newest:
        raise StorageError(
            f"schema {schema} is at version {max(state.versions)}, newer than this hdi_lab ({newest}): upgrade hdi_lab"
        )
    if not pending and not state.owner:
        return []
    if pending and not (state.owner if state.exists else state.may_create):
        if not state.exists:
            raise StorageError(f"schema {schema} does not exist and this role may not create it: connect once as "
                               "a role with CREATE on the database (e.g. the database owner) to create it",
                               sqlstate="42501")
        at = max(state.versions) if state.versions else 0
        raise StorageError(f"schema {schema} is at version {at}, this hdi_lab needs {newest}: connect once as its "
                           "owner to migrate", sqlstate="42501")
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
    """A cursor in one transaction: commit on success, roll back whole on any error.

    A driver error leaves as a :class:`StorageError` (from the original). The rollback of a dead
    connection cannot fail over the error that killed it: the server has rolled back already.
    """
    try:
        cur = conn.cursor()
    except psycopg2.Error as exc:
        raise storage_error(exc, conn) from exc
    try:
        yield cur
        conn.commit()
    except BaseException as exc:
        _rollback(conn)
        if isinstance(exc, psycopg2.Error):
            raise storage_error(exc, conn) from exc
        raise
    finally:
        cur.close()


def _rollback(conn: psycopg2.extensions.connection) -> None:
    if conn.closed:
        return
    try:
        conn.rollback()
    except (psycopg2.InterfaceError, psycopg2.OperationalError):
        pass  # the connection died: nothing is left to roll back, the first error is the one to report


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
