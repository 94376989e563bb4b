"""Settings: the one place that reads the environment and configuration files.

Precedence: explicit arguments > ``HDI_*`` environment variables > config file > defaults. The
config file is ``$HDI_CONFIG``, else ``hdi_lab.toml`` in the working directory, else the
``[tool.hdi_lab]`` table of the nearest ``pyproject.toml``, else ``<config dir>/hdi_lab.toml``.

A project file (the working directory's ``hdi_lab.toml`` or ``pyproject.toml``) comes with
whatever folder one runs ``hdi`` in, e.g. a cloned repository, so it may not decide where a
credential is sent (:data:`ROUTING`): those settings come from arguments, the environment,
``$HDI_CONFIG`` or the user's own config file only. Secrets never appear in a repr or a message.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from hdi_lab import dsn
from hdi_lab.errors import ConfigError

__all__ = [
    "OPTIONS",
    "ROUTING",
    "Option",
    "Settings",
    "default_home",
    "find_config_file",
    "fingerprint",
    "load_settings",
    "mask",
    "parse_calendars",
    "user_config_file",
]


@dataclass(frozen=True)
class Option:
    name: str
    env: tuple[str, ...]
    default: Any
    kind: type
    secret: bool = False
    help: str = ""


OPTIONS: tuple[Option, ...] = (
    Option(
        "database_url",
        ("HDI_DATABASE_URL",),
        None,
        str,
        True,
        "PostgreSQL/TimescaleDB URL; unset = the embedded server in home",
    ),
    Option("home", ("HDI_HOME",), None, Path, False, "data home (embedded server, caches)"),
    Option(
        "cache",
        ("HDI_CACHE",),
        True,
        bool,
        False,
        "keep queried instrument-days in <home>/cache (Arrow IPC files, checked against the database on every "
        "read, never stale); off: every read from the database",
    ),
    Option(
        "cache_bytes",
        ("HDI_CACHE_BYTES",),
        1 << 30,
        int,
        False,
        "most bytes the read cache keeps; the least recently used files go first",
    ),
    Option(
        "cache_memory_bytes",
        ("HDI_CACHE_MEMORY_BYTES",),
        128 << 20,
        int,
        False,
        "most bytes of cached days and reads a process also keeps in memory (those it read last); 0: none",
    ),
    Option("db_schema", ("HDI_DB_SCHEMA",), "hdi", str, False, "PostgreSQL schema holding hdi_lab tables"),
    Option("databento_api_key", ("HDI_DATABENTO_API_KEY", "DATABENTO_API_KEY"), None, str, True, "Databento API key"),
    Option(
        "databento_gateway",
        ("HDI_DATABENTO_GATEWAY",),
        "https://hist.databento.com",
        str,
        False,
        "Databento historical gateway",
    ),
    Option(
        "databento_live_gateway",
        ("HDI_DATABENTO_LIVE_GATEWAY",),
        None,
        str,
        False,
        "Databento live gateway as host or host:port (default: the dataset's, e.g. glbx-mdp3.lsg.databento.com:13000)",
    ),
    Option(
        "databento_dataset",
        ("HDI_DATABENTO_DATASET",),
        None,
        str,
        False,
        "default Databento dataset (auto-discovery of unknown symbols), e.g. GLBX.MDP3",
    ),
    Option(
        "databento_max_cost_usd",
        ("HDI_DATABENTO_MAX_COST_USD",),
        10.0,
        float,
        False,
        "refuse Databento requests estimated above this (USD); override with allow_cost / --allow-cost",
    ),
    Option(
        "databento_retries",
        ("HDI_DATABENTO_RETRIES",),
        5,
        int,
        False,
        "retries of a Databento call after HTTP 429/5xx or a dropped connection",
    ),
    Option(
        "databento_backoff",
        ("HDI_DATABENTO_BACKOFF",),
        1.0,
        float,
        False,
        "first retry delay (s), doubled per retry; a Retry-After header wins",
    ),
    Option("databento_backoff_max", ("HDI_DATABENTO_BACKOFF_MAX",), 30.0, float, False, "longest retry delay (s)"),
    Option(
        "databento_definitions",
        ("HDI_DATABENTO_DEFINITIONS",),
        True,
        bool,
        False,
        "also store the instruments' definitions (the definition schema) with every market-data ingest",
    ),
    Option(
        "databento_concurrency",
        ("HDI_DATABENTO_CONCURRENCY",),
        4,
        int,
        False,
        "most Databento downloads in flight at once across a Dask cluster (executor='dask'; a local run makes one)",
    ),
    Option("ib_host", ("HDI_IB_HOST",), "127.0.0.1", str, False, "IB Gateway/TWS host"),
    Option("ib_port", ("HDI_IB_PORT",), 4002, int, False, "IB Gateway/TWS port"),
    Option("ib_client_id", ("HDI_IB_CLIENT_ID",), 17, int, False, "IB API client id"),
    Option("ib_timeout", ("HDI_IB_TIMEOUT",), 10.0, float, False, "IB request timeout (s)"),
    Option(
        "ib_library",
        ("HDI_IB_LIBRARY",),
        "auto",
        str,
        False,
        "IB client library: auto (ib_async if installed, else ib_insync), ib_async or ib_insync",
    ),
    Option(
        "calendars",
        ("HDI_CALENDARS",),
        None,
        str,
        False,
        "exchange calendar per dataset, overriding the built-in map, e.g. GLBX.MDP3=CMES,IB=XNYS,IB:SMART=XLON",
    ),
    Option(
        "dask_scheduler",
        ("HDI_DASK_SCHEDULER",),
        None,
        str,
        False,
        "Dask scheduler of executor='dask' / --executor dask, e.g. tcp://scheduler:8786 (settings, secrets included, "
        "travel to its workers)",
    ),
    Option("chunk_rows", ("HDI_CHUNK_ROWS",), 1_000_000, int, False, "records per load batch"),
    Option(
        "file_stream_bytes",
        ("HDI_FILE_STREAM_BYTES",),
        64 << 20,
        int,
        False,
        "DBN files larger than this (bytes) are ingested streaming: one chunk per UTC day (calendar month for "
        "sparse schemas) of their records, read in load batches, never whole",
    ),
    Option(
        "timescale_compress_after",
        ("HDI_TIMESCALE_COMPRESS_AFTER",),
        "7 days",
        str,
        False,
        "TimescaleDB: compress chunks older than this (a PostgreSQL interval; 'off' = no policy)",
    ),
    Option(
        "timescale_retention",
        ("HDI_TIMESCALE_RETENTION",),
        None,
        str,
        False,
        "TimescaleDB: DROP market data older than this (e.g. '5 years'); unset = keep everything",
    ),
    Option(
        "feast_redis",
        ("HDI_FEAST_REDIS",),
        None,
        str,
        False,
        "host:port of Redis when feature_store.yaml's online store is Redis (docker compose: redis:6379)",
    ),
    Option(
        "feast_repo",
        ("HDI_FEAST_REPO",),
        None,
        Path,
        False,
        "Feast feature repo used by `hdi features publish` (default: feature_repo/ of the hdi_lab checkout)",
    ),
)
_BY_NAME = {o.name: o for o in OPTIONS}
#: settings that decide where a credential is sent, and what they send: never from a project file (see the
#: module docstring)
ROUTING: Mapping[str, str] = {
    "databento_gateway": "the Databento API key",
    "databento_live_gateway": "the Databento API key",
    "database_url": "your PostgreSQL password",
    "dask_scheduler": "your settings and their secrets (a Dask cluster's workers receive them)",
}
#: schemas that belong to PostgreSQL (or every role): hdi_lab tables need a dedicated one
_SYSTEM_SCHEMA = re.compile(r"^(pg_.*|information_schema|public)$")
_CALENDAR_ENTRY = re.compile(r"^([A-Z0-9._]+(?::[A-Z0-9._]+)?)=([A-Za-z0-9_/]+)$")
_PLACEHOLDER = re.compile(r"^(|x+|\.\.\.|<.*>|changeme|your[-_ ]?(api[-_ ]?)?key.*|\$\{.*\})$", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """Resolved settings; ``sources`` records where each value came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value, _ in self.masked())
        return f"Settings({shown})"

    def __str__(self) -> str:
        return repr(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "values":  # unpickling (a Dask worker) looks up before values is set
            raise AttributeError(name)
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def home_dir(self) -> Path:
        home = self.values.get("home")
        return Path(home) if home else default_home()

    def masked(self) -> list[tuple[str, str, str]]:
        """(name, display value, source) for every option, secrets masked."""
        rows = []
        for opt in OPTIONS:
            value = self.values.get(opt.name)
            if opt.name == "home" and value is None:
                value = self.home_dir
            rows.append((opt.name, mask(opt, value), self.sources.get(opt.name, "default")))
        return rows

    def replace(self, **overrides: Any) -> Settings:
        return load_settings(overrides=overrides, environ={}, base=self)


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("hdi_lab", appauthor=False))


def mask(opt: Option, value: Any) -> str:
    if value is None:
        return "(not set)"
    if not opt.secret:
        return str(value)
    if opt.name == "database_url":
        return dsn.mask(value)
    return "****" + str(value)[-3:] if len(str(value)) > 8 else "****"


def _coerce(opt: Option, raw: Any, source: str) -> Any:
    if raw is None:
        return None
    value: Any
    try:
        if opt.kind is bool and isinstance(raw, str):
            value = {
                "1": True,
                "true": True,
                "yes": True,
                "on": True,
                "0": False,
                "false": False,
                "no": False,
                "off": False,
            }[raw.strip().lower()]
        else:
            value = opt.kind(raw) if not isinstance(raw, opt.kind) else raw
    except (TypeError, ValueError, KeyError):
        raise ConfigError(f"{opt.name}={raw!r} from {source} is not a valid {opt.kind.__name__}") from None
    if opt.secret and isinstance(value, str) and opt.name != "database_url" and _PLACEHOLDER.match(value):
        names = " or ".join(opt.env)
        raise ConfigError(f"{opt.name} from {source} looks like a placeholder: set {names} to your real key")
    if opt.name == "database_url":
        problem = dsn.check(str(value))
        if problem:
            raise ConfigError(
                f"database_url from {source} is not a valid PostgreSQL URL: {problem}; "
                "use postgresql://user:password@host:port/dbname (or key=value pairs)"
            )
    return value


def parse_calendars(text: str | None, source: str = "calendars") -> dict[str, str]:
    """The ``calendars`` setting as ``{key: calendar code}``: keys are dataset codes (``GLBX.MDP3``), ``IB``
    (every IB dataset) or ``IB:EXCHANGE`` (IB contracts of that exchange), upper-cased; codes as written.

    Raises ConfigError for an entry that is not ``KEY=CODE`` or a key given twice."""
    found: dict[str, str] = {}
    for raw in (text or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        key, eq, code = entry.partition("=")
        match = _CALENDAR_ENTRY.match(f"{key.strip().upper()}{eq}{code.strip()}")
        if match is None:
            raise ConfigError(
                f"calendars entry {entry!r} from {source} is not DATASET=CALENDAR: write e.g. "
                "HDI_CALENDARS='GLBX.MDP3=CMES,IB=XNYS' (calendar codes of exchange_calendars)"
            )
        if match[1] in found:
            raise ConfigError(f"calendars from {source} names {match[1]} twice: keep one {match[1]}=CALENDAR")
        found[match[1]] = match[2]
    return found


def _check_project_file(table: Mapping[str, Any], path: Path) -> None:
    """Refuse a project file's setting that would decide where a credential is sent (module docstring).

    A ``database_url`` carrying its own password is accepted: libpq then sends that password, not
    ``PGPASSWORD`` or ``~/.pgpass`` entries, so the file can only hand out its own secret.
    """
    for name, what in ROUTING.items():
        if name not in table:
            continue
        if name == "database_url" and dsn.secrets(table[name]):
            continue
        opt = _BY_NAME[name]
        raise ConfigError(
            f"{name} in {path} is refused: a file in the working directory may not decide where {what} is "
            f"sent; set {opt.env[0]} or put it in {user_config_file()} (or the file named by $HDI_CONFIG)"
        )


def user_config_file() -> Path:
    """The user's own config file (read when the working directory has none)."""
    return Path(platformdirs.user_config_dir("hdi_lab", appauthor=False)) / "hdi_lab.toml"


def _check_keys(table: Mapping[str, Any], where: str) -> None:
    for key in table:
        if key not in _BY_NAME:
            close = difflib.get_close_matches(key, list(_BY_NAME), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown setting {key!r} in {where}{hint}; known: {', '.join(_BY_NAME)}")


def find_config_file(environ: Mapping[str, str], cwd: Path) -> tuple[Path, Mapping[str, Any]] | None:
    """The config file in force and its hdi_lab table, or None.

    Raises ConfigError when $HDI_CONFIG names a missing file or the file found is not valid TOML."""
    explicit = environ.get("HDI_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"HDI_CONFIG={explicit} does not exist: point it at an hdi_lab.toml file")
        return path, _read_toml(path)
    if (cwd / "hdi_lab.toml").is_file():
        return cwd / "hdi_lab.toml", _read_toml(cwd / "hdi_lab.toml")
    nearest = _nearest_pyproject(str(cwd))
    if nearest is not None:
        table = _read_toml(Path(nearest)).get("tool", {}).get("hdi_lab")
        if table is not None:
            return Path(nearest), table
    user = user_config_file()
    if user.is_file():
        return user, _read_toml(user)
    return None


def _nearest_pyproject(folder: str) -> str | None:
    """The ``pyproject.toml`` in ``folder`` or its nearest parent that has one (os.path: cheap enough for
    :func:`fingerprint`)."""
    while True:
        path = os.path.join(folder, "pyproject.toml")
        if os.path.isfile(path):
            return path
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    base: Settings | None = None,
) -> Settings:
    """Resolve settings: overrides > environment > config file > defaults (or ``base``).

    Raises ConfigError for an unknown setting, a value of the wrong type, a placeholder key, an invalid
    ``database_url``, a missing or invalid config file, a project file that routes credentials, or a
    ``db_schema`` that is not a lowercase identifier or names a system schema, or a malformed ``calendars``."""
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_keys(overrides, "arguments")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if base is not None:
        values, sources = dict(base.values), dict(base.sources)
    else:
        found = find_config_file(environ, cwd or Path.cwd())
        table: Mapping[str, Any] = {}
        if found:
            path, table = found
            _check_keys(table, str(path))
            if _is_project_file(path, environ):
                _check_project_file(table, path)
        for opt in OPTIONS:
            values[opt.name], sources[opt.name] = opt.default, "default"
            if opt.name in table:
                values[opt.name] = _coerce(opt, table[opt.name], str(found[0]))  # type: ignore[index]
                sources[opt.name] = f"file {found[0]}"  # type: ignore[index]
            for env in opt.env:
                if environ.get(env):
                    values[opt.name] = _coerce(opt, environ[env], f"${env}")
                    sources[opt.name] = f"env {env}"
                    break
    for name, raw in overrides.items():
        values[name] = _coerce(_BY_NAME[name], raw, "argument")
        sources[name] = "argument"
    if int(values["databento_concurrency"]) < 1:
        raise ConfigError(
            f"databento_concurrency={values['databento_concurrency']!r} (from {sources['databento_concurrency']}) "
            "must be 1 or more: it is how many Databento downloads may run at once"
        )
    if int(values["cache_bytes"]) < 1:
        raise ConfigError(
            f"cache_bytes={values['cache_bytes']!r} (from {sources['cache_bytes']}) must be 1 or more: it bounds "
            "the read cache's size; turn the cache off with HDI_CACHE=off (cache = false)"
        )
    if int(values["cache_memory_bytes"]) < 0:
        raise ConfigError(
            f"cache_memory_bytes={values['cache_memory_bytes']!r} (from {sources['cache_memory_bytes']}) must be 0 "
            "(no days kept in memory) or more"
        )
    parse_calendars(values["calendars"], sources["calendars"])  # a typo fails here, not at the first gap check
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", str(values["db_schema"])):
        raise ConfigError(f"db_schema={values['db_schema']!r} must be a lowercase SQL identifier like 'hdi'")
    if _SYSTEM_SCHEMA.match(str(values["db_schema"])):
        raise ConfigError(
            f"db_schema={values['db_schema']!r} (from {sources['db_schema']}) is a system or shared "
            "schema: pick a dedicated schema for hdi_lab's tables, like 'hdi'"
        )
    return Settings(values=values, sources=sources)


#: variables read besides the options' own: where the user's config file and data home are (platformdirs)
_PLATFORM_ENV = ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")
#: prefixes of the variables that change what :func:`load_settings` gives or where libpq connects (PGHOST,
#: PGPASSWORD, PGSSLMODE, PGSERVICE...)
_INPUT_PREFIXES = ("HDI_", "PG", "DATABENTO_")
_INPUT_NAMES = frozenset({env for opt in OPTIONS for env in opt.env} | set(_PLATFORM_ENV))


def fingerprint(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> tuple[Any, ...]:
    """What :func:`load_settings` (and libpq) read, without parsing a file: the ``HDI_*``, ``PG*`` and
    vendor variables, the working directory and the identity (path, size, mtime, inode) of each config file it
    may read. Equal fingerprints give equal settings and connections, so a caller may keep what it built from
    them (see :func:`hdi_lab.core.session.with_session`); about 0.1 ms instead of a TOML parse of a large
    ``pyproject.toml`` (~2 ms).

    Raises OSError only when the working directory is gone (as :func:`load_settings` does); an unreadable
    file counts as missing (:func:`load_settings` then says what is wrong)."""
    environ = os.environ if environ is None else environ
    env = tuple(sorted((k, v) for k, v in environ.items() if k.startswith(_INPUT_PREFIXES) or k in _INPUT_NAMES))
    here = str(cwd or Path.cwd())
    files: list[tuple[Any, ...] | None] = []
    explicit = environ.get("HDI_CONFIG")
    if explicit:
        files.append(_identity(os.path.expanduser(explicit)))
    else:
        nearest = _nearest_pyproject(here)
        files.append(_identity(os.path.join(here, "hdi_lab.toml")))
        files.append(None if nearest is None else _identity(nearest))
        files.append(_identity(str(user_config_file())))
    return env, here, tuple(files)


def _identity(path: str) -> tuple[Any, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode


def _is_project_file(path: Path, environ: Mapping[str, str]) -> bool:
    """True for the working directory's hdi_lab.toml / pyproject.toml, not $HDI_CONFIG or the user's file."""
    return not environ.get("HDI_CONFIG") and path != user_config_file()
