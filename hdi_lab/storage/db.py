"""Connections, migrations and server detection.

Statements run in :func:`hdi_lab.storage.cursor.transaction` (re-exported here with the other cursor
helpers), which turns a ``psycopg2.Error`` into a one-line :class:`StorageError`.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from hdi_lab import dsn
from hdi_lab.errors import StorageError
from hdi_lab.storage import counts, timescale, versions
from hdi_lab.storage.cursor import fetch_frame, one, quote, storage_error, transaction

__all__ = [
    "SchemaState",
    "ServerInfo",
    "connect",
    "fetch_frame",
    "migrate",
    "migrations",
    "one",
    "quote",
    "schema_state",
    "server_info",
    "storage_error",
    "transaction",
]

_MIGRATION = re.compile(r"^(\d{3})_(\w+)\.sql$")
#: what runs right after a migration's SQL, in its transaction: version 10 counts the bars already stored
_AFTER: dict[int, Callable[[psycopg2.extensions.cursor, str], None]] = {10: counts.fill}


@dataclass(frozen=True)
class ServerInfo:
    """The server, its TimescaleDB (or plain PostgreSQL) and, when read for a schema, that schema's
    TimescaleDB objects: what ``hdi db info`` / ``%hdi_status`` show."""

    version: str
    timescaledb: str | None  # installed extension version, None on plain PostgreSQL
    timescaledb_available: bool  # the server offers the extension
    hypertables: pd.DataFrame = field(default_factory=pd.DataFrame)
    # table, chunk_interval, chunks, compressed_chunks, bytes_before, bytes_after, compression_ratio
    aggregates: pd.DataFrame = field(default_factory=pd.DataFrame)  # view, source, materialized_only
    policies: pd.DataFrame = field(default_factory=pd.DataFrame)  # job_id, policy, target, schedule, config

    @property
    def label(self) -> str:
        """What the server is, as the front ends show it: ``TimescaleDB <version>`` or ``plain PostgreSQL``."""
        return f"TimescaleDB {self.timescaledb}" if self.timescaledb else "plain PostgreSQL"

    @property
    def flavour(self) -> str:
        """:attr:`label`, saying on plain PostgreSQL whether the server offers the extension."""
        return self.label + (
            " (timescaledb available, not installed)" if not self.timescaledb and self.timescaledb_available else ""
        )

    def summary(self) -> str:
        """The server line and, on TimescaleDB, the tables of its objects."""
        lines = [f"server: PostgreSQL {self.version} ({self.flavour})"]
        if not self.timescaledb:
            lines.append("rollups (interval=) are computed at query time with date_bin")
            return "\n".join(lines)
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 90):
            for title, frame in (
                ("hypertables", self.hypertables),
                ("continuous aggregates", self.aggregates),
                ("policies", self.policies),
            ):
                lines.append(f"\n{title}:")
                lines.append(frame.to_string(index=False) if len(frame) else "  (none)")
        return "\n".join(lines)


def connect(url: str, schema: str) -> psycopg2.extensions.connection:
    """Open a connection with UTC session time zone and ``schema`` first on the search path.

    libpq's messages may quote the URL (``invalid dsn: invalid percent-encoded token: "<password>"``):
    they are scrubbed of its secrets, and not chained when they held one.
    """
    try:
        return psycopg2.connect(
            url,
            options=f"-c timezone=UTC -c search_path={schema},public",
            application_name="hdi_lab",
            connect_timeout=10,
        )
    except psycopg2.Error as exc:
        text = str(exc).strip()
        first = dsn.scrub(text, url).splitlines()[0] if text else "connection failed"
        if isinstance(exc, psycopg2.ProgrammingError):  # libpq refused the URL before connecting
            message = (
                f"the database URL is not valid ({first}): fix HDI_DATABASE_URL / --database-url, "
                "e.g. postgresql://user:password@host:5432/dbname"
            )
        else:
            message = (
                f"cannot connect to PostgreSQL ({first}): check HDI_DATABASE_URL or unset it to use the embedded server"
            )
        error = StorageError(message, sqlstate=exc.pgcode)
        if dsn.scrub(text, url) != text:  # the driver's text quoted a secret: keep it out of the chain too
            raise error from None
        raise error from exc


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
    """What this role may see of ``schema`` (:class:`SchemaState`).

    Raises StorageError when the schema exists but the role may neither use nor own it, or the server fails."""
    with transaction(conn) as cur:
        cur.execute(
            "SELECT n.oid IS NOT NULL, coalesce(pg_has_role(n.nspowner, 'USAGE'), false), "
            "has_database_privilege(current_database(), 'CREATE'), "
            "n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'USAGE') "
            "FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = %s",
            (schema,),
        )
        exists, owner, may_create, usage = one(cur)
        versions: frozenset[int] = frozenset()
        if usage:
            table = f"{quote(conn, schema)}.schema_migrations"
            cur.execute(
                "SELECT CASE WHEN to_regclass(%s) IS NULL THEN false "
                "ELSE has_table_privilege(to_regclass(%s), 'SELECT') END",
                (table, table),
            )
            if one(cur)[0]:
                cur.execute(f"SELECT version FROM {table}")
                versions = frozenset(r[0] for r in cur.fetchall())
        elif exists and not owner:
            raise StorageError(
                f"this role may not use schema {schema}: ask its owner for GRANT USAGE ON SCHEMA "
                f"{schema} and GRANT SELECT ON ALL TABLES IN SCHEMA {schema}",
                sqlstate="42501",
            )
    return SchemaState(bool(exists), bool(owner), bool(may_create), versions)


def migrate(conn: psycopg2.extensions.connection, schema: str, policies: timescale.Policies | None = None) -> list[int]:
    """Apply pending migrations in one transaction (serialised by an advisory lock).

    On TimescaleDB also converts and configures the tables and sets the ``policies``. The
    applied version is read first with plain SELECTs: a role that does not own a current schema
    (a read-only role) changes nothing and needs read rights only; one that cannot migrate a
    schema that needs it is told so.

    Raises StorageError when the schema is newer than this hdi_lab, when migrations are pending and the
    role may not create or own the schema, when it may not use it, or when a migration fails.
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
            raise StorageError(
                f"schema {schema} does not exist and this role may not create it: connect once as "
                "a role with CREATE on the database (e.g. the database owner) to create it",
                sqlstate="42501",
            )
        at = max(state.versions) if state.versions else 0
        raise StorageError(
            f"schema {schema} is at version {at}, this hdi_lab needs {newest}: connect once as its owner to migrate",
            sqlstate="42501",
        )
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
            if version in _AFTER:
                _AFTER[version](cur, schema)
            cur.execute(f"INSERT INTO {s}.schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied_now.append(version)
        if applied_now:  # every market table (one added by a later migration too) has its versions' row, trigger
            versions.cover(cur, schema)
        timescale.enable(cur, schema, policies)
        if applied_now:
            import databento as db

            rows = [(p.to_int(), p.dataset, p.venue) for p in db.Publisher]
            psycopg2.extras.execute_values(
                cur, f"INSERT INTO {s}.publishers VALUES %s ON CONFLICT (publisher_id) DO NOTHING", rows
            )
    return applied_now


def server_info(conn: psycopg2.extensions.connection, schema: str | None = None) -> ServerInfo:
    """The server's version and TimescaleDB; with ``schema`` on TimescaleDB also that schema's hypertables
    (chunk counts and compression), continuous aggregates and policies.

    Raises StorageError when the server cannot be read.
    """
    with transaction(conn) as cur:
        cur.execute("SHOW server_version")
        version = str(one(cur)[0])
        ext = timescale.detect(cur)
        if schema is None or ext.installed is None:
            return ServerInfo(version, ext.installed, ext.available)
        objects = timescale.objects(cur, schema)
    return ServerInfo(version, ext.installed, ext.available, objects.hypertables, objects.aggregates, objects.policies)
