"""hdi_lab's Feast feature repo: its connection variables, its declarations and opening it.

``feature_repo/feature_store.yaml`` reads its connection values from environment variables
(:data:`VARIABLES`). Feast expands ``${VAR}`` itself but has no default value and leaves an unset
variable literal, so hdi_lab checks them first and names the one missing. hdi_lab's own calls
(:func:`open_store`, ``hdi features publish``) derive every value from the session (the embedded
server's URL is only known at run time) and substitute them into the parsed file themselves (the
process environment is never written: a kernel's other threads read it); run the
``feast`` CLI yourself after ``eval "$(hdi features env)"``: it creates :func:`feast_home`, writes the
password (if any) to a libpq password file there (mode 0600) and prints every variable,
``HDI_FEAST_PG_PASSWORD`` empty and ``PGPASSFILE`` naming that file: libpq, psycopg2 and psycopg 3
(Feast's driver) read the password from it when the one given is empty. The password is never printed.

Feast's registry and the sqlite online store live in :func:`feast_home` under the hdi_lab data
home, one folder per database and schema, so that the online store always describes the database
it was materialised from (and nothing is written into the repo).

Nothing here changes process-wide state: the repo's configuration is built in memory
(:func:`load_config`), its Python files are run in fresh module objects that are never registered
in ``sys.modules`` (:func:`apply`; no ``sys.path`` entry, no ``chdir``, no bytecode written), and the
online store is loaded without Feast's progress prints (:func:`materialize`).

``feast`` is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import hashlib
import importlib.util
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hdi_lab import dsn as dsns
from hdi_lab import features
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ConfigError, HdiError, StorageError, ValidationError, first_line
from hdi_lab.extras import require

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureStore, FeatureView
    from feast.repo_config import RepoConfig
    from feast.repo_contents import RepoContents

__all__ = [
    "DEFAULT_INTERVAL",
    "ENTITY",
    "JOIN_KEY",
    "PROJECT",
    "SECRET",
    "TTL",
    "VARIABLES",
    "apply",
    "check_env",
    "declarations",
    "default_repo",
    "feast_env",
    "feast_errors",
    "feast_home",
    "feature_service",
    "feature_view",
    "in_use",
    "instrument_entity",
    "load_config",
    "materialize",
    "open_store",
    "repo_declarations",
    "repo_path",
    "service_name",
    "shell_env",
    "shell_exports",
    "view_name",
]

PROJECT = "hdi_lab"
ENTITY = "instrument"
JOIN_KEY = "instrument_id"
DEFAULT_INTERVAL = "1d"

#: variable -> what it holds, as used by feature_repo/feature_store.yaml (HDI_FEAST_REDIS by its Redis block)
VARIABLES: dict[str, str] = {
    "HDI_FEAST_HOME": "folder for Feast's registry and sqlite online store",
    "HDI_FEAST_PG_HOST": "PostgreSQL host of hdi_lab's database",
    "HDI_FEAST_PG_PORT": "its port",
    "HDI_FEAST_PG_DB": "its database name",
    "HDI_FEAST_PG_USER": "its user",
    "HDI_FEAST_PG_PASSWORD": "that user's password (may be empty)",
    "HDI_FEAST_PG_SCHEMA": "the hdi_lab schema holding the feature tables (HDI_DB_SCHEMA)",
    "HDI_FEAST_PG_SSLMODE": "libpq sslmode: disable, prefer, require, verify-full ...",
    "HDI_FEAST_REDIS": "host:port of the Redis online store (setting feast_redis), if the repo uses Redis",
}
SECRET = "HDI_FEAST_PG_PASSWORD"

#: how old a feature may be and still be served (Feast's TTL): a weekend plus a holiday for daily
#: bars, a weekend for intraday bars (futures close Friday 22:00 and reopen Sunday 23:00 UTC)
TTL: dict[str, dt.timedelta] = {
    "1s": dt.timedelta(days=3),
    "5s": dt.timedelta(days=3),
    "1m": dt.timedelta(days=3),
    "5m": dt.timedelta(days=3),
    "15m": dt.timedelta(days=3),
    "1h": dt.timedelta(days=3),
    "1d": dt.timedelta(days=5),
}

_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


# -- names --------------------------------------------------------------------------------------


def view_name(set_name: str, interval: str) -> str:
    """The feature view of a set at an interval, e.g. ``momentum_v1_1d``."""
    return f"{set_name}_{interval}"


def service_name(set_name: str, interval: str) -> str:
    """The feature service: the set's own name at the default interval (``momentum_v1``),
    ``momentum_v1_1h`` ... at the others."""
    return set_name if interval == DEFAULT_INTERVAL else f"{set_name}_{interval}"


def default_repo() -> Path:
    """``feature_repo/`` next to the hdi_lab package (a source checkout), else the copy a wheel
    installs inside it (``hdi_lab/feature_repo``)."""
    here = Path(__file__).resolve().parents[1]  # the hdi_lab package
    checkout = here.parent / "feature_repo"
    return checkout if (checkout / "feature_store.yaml").is_file() else here / "feature_repo"


def repo_path(session: HdiSession, repo: str | Path | None = None) -> Path:
    """The feature repo to use: ``repo``, else the ``feast_repo`` setting, else :func:`default_repo`.

    Raises ConfigError when the folder holds no ``feature_store.yaml``."""
    path = Path(repo or session.settings.values.get("feast_repo") or default_repo()).expanduser().resolve()
    if not (path / "feature_store.yaml").is_file():
        raise ConfigError(
            f"{path} is not a Feast feature repo (no feature_store.yaml): set HDI_FEAST_REPO "
            "(or feast_repo in hdi_lab.toml) to a copy of hdi_lab's feature_repo/"
        )
    return path


# -- environment ---------------------------------------------------------------------------------


def feast_home(session: HdiSession, host: str, port: str, database: str) -> Path:
    """The folder of Feast's registry and sqlite online store for this database and schema."""
    key = hashlib.sha1(f"{host}:{port}/{database}/{session.schema}".encode()).hexdigest()[:10]
    return session.settings.home_dir / "feast" / f"{database}_{session.schema}_{key}"


def feast_env(session: HdiSession) -> dict[str, str]:
    """Every :data:`VARIABLES` value for the session's database (contains the password).

    Raises ConfigError when the session's database URL cannot be parsed."""
    import psycopg2.extensions

    url = session.database_url()
    try:
        dsn = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError as exc:  # libpq may quote the password in its message
        raise ConfigError(
            f"the database URL is not valid ({dsns.scrub(str(exc).strip(), url)}): fix HDI_DATABASE_URL"
        ) from None
    host = dsn.get("host", "localhost")
    port = dsn.get("port", "5432")
    database = dsn.get("dbname", dsn.get("user", "postgres"))
    return {
        "HDI_FEAST_HOME": str(feast_home(session, host, port, database)),
        "HDI_FEAST_PG_HOST": host,
        "HDI_FEAST_PG_PORT": port,
        "HDI_FEAST_PG_DB": database,
        "HDI_FEAST_PG_USER": dsn.get("user", "postgres"),
        "HDI_FEAST_PG_PASSWORD": dsn.get("password", ""),
        "HDI_FEAST_PG_SCHEMA": session.schema,
        "HDI_FEAST_PG_SSLMODE": dsn.get("sslmode", "prefer"),
        **({"HDI_FEAST_REDIS": str(session.settings.feast_redis)} if session.settings.feast_redis else {}),
    }


def shell_env(session: HdiSession) -> dict[str, str]:
    """The variables for the ``feast`` CLI (``hdi features env``): :data:`VARIABLES` with the password
    empty and, when the database has one, ``PGPASSFILE`` naming a libpq password file (mode 0600)
    that holds it. Creates :func:`feast_home`, where Feast's file registry must be able to write.

    Raises ConfigError as :func:`feast_env` does, OSError when the folder or the file cannot be written."""
    env = feast_env(session)
    password = env[SECRET]
    home = Path(env["HDI_FEAST_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    out = {**env, SECRET: ""}
    if password:
        out["PGPASSFILE"] = str(_write_pgpass(home / "pgpass", env, password))
    return out


def _write_pgpass(path: Path, env: Mapping[str, str], password: str) -> Path:
    """A libpq password file with the one line of this database (written atomically, mode 0600)."""

    def field(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    host = env["HDI_FEAST_PG_HOST"]
    host = "localhost" if host.startswith("/") else host  # libpq matches socket connections as localhost
    line = ":".join(
        field(v) for v in (host, env["HDI_FEAST_PG_PORT"], env["HDI_FEAST_PG_DB"], env["HDI_FEAST_PG_USER"], password)
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(line + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def shell_exports(env: Mapping[str, str]) -> str:
    """``export`` lines for a shell (:func:`shell_env`'s values: they hold no password)."""
    import shlex

    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())


def check_env(yaml_file: Path, environ: Mapping[str, str]) -> None:
    """Raise ConfigError naming the first variable ``yaml_file`` uses that ``environ`` lacks.

    Raises OSError when the file cannot be read."""
    for number, line in enumerate(yaml_file.read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0]
        for m in _VAR.finditer(text):
            name = m.group(1) or m.group(2)
            if name not in environ:
                what = VARIABLES.get(name, "a value it needs")
                raise ConfigError(
                    f"{name} is not set ({what}), used at {yaml_file}:{number}: Feast leaves unset variables "
                    'literal; export it (`eval "$(hdi features env)"` prints them) or use hdi_lab\'s publish, '
                    "which sets them from the session"
                )


def _substitute(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` (parsed YAML) with ``${VAR}`` / ``$VAR`` in its strings replaced from ``env`` (names
    not in ``env`` stay literal, as Feast leaves them)."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)
    if isinstance(value, dict):
        return {k: _substitute(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env) for v in value]
    return value


def load_config(path: Path, env: Mapping[str, str]) -> RepoConfig:
    """The repo's ``feature_store.yaml`` as Feast's ``RepoConfig``, its variables taken from ``env``.

    Feast's own loader expands the variables from ``os.environ`` in the file's text; here the file is
    parsed first and the values substituted into its strings, so no value needs YAML quoting and
    the process environment is neither read nor written.

    Raises ConfigError naming a variable the file uses that ``env`` lacks (:func:`check_env`), or
    when the file is not valid YAML or not a valid Feast configuration."""
    # The one process-wide change left, and it is Feast's: importing feast.metrics (which RepoConfig and
    # Feast's online and offline reads do) sets PROMETHEUS_MULTIPROCESS_DIR and PROMETHEUS_MULTIPROC_DIR
    # in os.environ to a temporary folder it creates (for gunicorn workers), once per process and only
    # when unset. Importing it first thing, under Python's import lock, makes that happen at a known
    # point; nothing of hdi_lab's (no password, no path) is written.
    import feast.metrics  # noqa: F401
    import yaml
    from feast.repo_config import RepoConfig
    from pydantic import ValidationError

    yaml_file = path / "feature_store.yaml"
    check_env(yaml_file, env)
    try:
        raw = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{yaml_file} is not valid YAML: {first_line(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{yaml_file} is not a Feast configuration (a mapping of options)")
    try:
        config = RepoConfig(**_substitute(raw, env))
    except ValidationError as exc:  # pydantic's message holds the input values: the password
        raise ConfigError(f"feature_store.yaml is not valid for Feast: {first_line(exc)} (at {yaml_file})") from None
    config.repo_path = path
    return config


def in_use(session: HdiSession) -> bool:
    """Whether Feast is set up for the session's database: the ``feast_repo`` setting names a repo, or the
    repo's registry exists (a publish or ``feast apply`` registered something for this database and schema),
    and the ``feast`` extra is installed. Reads the repo's ``feature_store.yaml`` only (Feast is not imported);
    a registry that is not a local file (a custom repo's SQL or object-store registry) counts as set up.

    Raises nothing: a repo or configuration that cannot be read means not set up."""
    import importlib.util

    import yaml

    if importlib.util.find_spec("feast") is None:
        return False
    if session.settings.values.get("feast_repo"):
        return True
    try:
        path = repo_path(session)
        raw = yaml.safe_load((path / "feature_store.yaml").read_text(encoding="utf-8"))
        registry = _substitute(raw.get("registry"), feast_env(session)) if isinstance(raw, dict) else None
    except (HdiError, OSError, yaml.YAMLError):
        return False
    where = registry.get("path") if isinstance(registry, dict) else registry
    if not isinstance(where, str) or "${" in where:
        return False
    if "://" in where and not where.startswith("file://"):
        return True
    file = Path(where.removeprefix("file://"))
    return (file if file.is_absolute() else path / file).is_file()


def open_store(session: HdiSession, repo: str | Path | None = None) -> FeatureStore:
    """A Feast ``FeatureStore`` over the feature repo, connected to the session's database.

    Raises ConfigError when the repo, the database URL or feature_store.yaml is not usable
    (:func:`repo_path`, :func:`load_config`)."""
    feast = require("feast")
    path = repo_path(session, repo)
    env = feast_env(session)
    config = load_config(path, env)
    Path(env["HDI_FEAST_HOME"]).mkdir(parents=True, exist_ok=True)
    with feast_errors():
        return feast.FeatureStore(repo_path=str(path), config=config)


@contextlib.contextmanager
def feast_errors() -> Iterator[None]:
    """Translate Feast's configuration and database errors into hdi_lab's (first line only: no values).

    Raises ConfigError for Feast's ``FeastConfigError``, StorageError for psycopg's errors."""
    import psycopg
    from feast.repo_config import FeastConfigError

    try:
        yield
    except FeastConfigError as exc:
        raise ConfigError(f"feature_store.yaml is not valid for Feast: {first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StorageError(
            f"Feast's database call failed: {first_line(exc)}", sqlstate=getattr(exc, "sqlstate", None)
        ) from exc


def apply(store: FeatureStore) -> list[str]:
    """``feast apply``: register the repo's declarations (deleting ones no longer declared).

    Returns the names of the objects applied. As the CLI does, the repo's Python files (except those in
    ``.feastignore``) are run, afresh each time (what is declared depends on the tables that exist), with
    ``store`` as the store to consult (:func:`repo_declarations`). Unlike the CLI, each runs in a module
    object of its own that is never registered in ``sys.modules``, with no ``sys.path`` entry and no
    ``chdir``: a repo file imports installed packages (hdi_lab, feast), not the repo's other files.

    Raises what the repo's files raise, and Feast's errors (translate them with :func:`feast_errors`)."""
    from feast.repo_operations import extract_objects_for_apply_delete, get_repo_files

    root = Path(store.repo_path).resolve()
    token = _APPLYING.set(store)
    try:
        namespaces = [_run(path, root) for path in get_repo_files(root)]
    finally:
        _APPLYING.reset(token)
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(store.project, store.registry, _contents(namespaces))
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    return sorted(n for n in (getattr(o, "name", str(o)) for o in to_apply) if not n.startswith("__"))


def _run(path: Path, root: Path) -> dict[str, Any]:
    """The namespace of the repo file ``path`` run as a module named for its place in ``root``: compiled
    from its source (no bytecode is written into the repo) and never entered in ``sys.modules``."""
    name = ".".join(path.relative_to(root).with_suffix("").parts)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    return module.__dict__


def _contents(namespaces: list[dict[str, Any]]) -> RepoContents:
    """The Feast objects the namespaces hold, as ``feast.repo_operations.parse_repo`` collects them from
    the modules it imports (each object once; a view's or a stream source's data sources too)."""
    from feast import (
        BatchFeatureView,
        Entity,
        FeatureService,
        FeatureView,
        KafkaSource,
        KinesisSource,
        OnDemandFeatureView,
        PushSource,
        StreamFeatureView,
    )
    from feast.data_source import DataSource
    from feast.feature_view import DUMMY_ENTITY
    from feast.labeling.label_view import LabelView
    from feast.permissions.permission import Permission
    from feast.project import Project
    from feast.repo_contents import RepoContents

    res = RepoContents(
        projects=[],
        data_sources=[],
        entities=[],
        feature_views=[],
        feature_services=[],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        permissions=[],
    )

    def add(items: list[Any], obj: Any) -> None:
        if obj is not None and not any(obj is o for o in items):
            items.append(obj)

    kinds: list[tuple[type, list[Any]]] = [
        (StreamFeatureView, res.stream_feature_views),
        (BatchFeatureView, res.feature_views),
        (FeatureView, res.feature_views),
        (Entity, res.entities),
        (FeatureService, res.feature_services),
        (OnDemandFeatureView, res.on_demand_feature_views),
        (LabelView, res.label_views),
        (Permission, res.permissions),
        (Project, res.projects),
    ]
    for namespace in namespaces:
        for attr in sorted(namespace):  # parse_repo walks dir(module): sorted names
            obj = namespace[attr]
            if isinstance(obj, DataSource):
                add(res.data_sources, obj)
                if isinstance(obj, PushSource | KafkaSource | KinesisSource):
                    add(res.data_sources, obj.batch_source)
                continue
            for kind, items in kinds:
                if isinstance(obj, kind):
                    add(items, obj)
                    if isinstance(obj, FeatureView):
                        add(res.data_sources, obj.batch_source)
                        add(res.data_sources, obj.stream_source)
                    elif isinstance(obj, LabelView):
                        add(res.data_sources, obj.source)
                        if isinstance(obj.source, PushSource):
                            add(res.data_sources, obj.source.batch_source)
                    break
    res.entities.append(DUMMY_ENTITY)
    return res


def materialize(store: FeatureStore, view_name: str, start: dt.datetime, end: dt.datetime) -> None:
    """Load the online store with ``view_name``'s rows in ``[start, end]`` and record the interval in the
    registry: what ``FeatureStore.materialize`` does for one view of a local store, without its
    prints and progress bars (Feast writes them to ``sys.stdout`` / ``sys.stderr``, with no option to
    turn them off; redirecting those would swallow the output of every other thread).

    Raises ValidationError when ``start`` is after ``end``, and Feast's errors (:func:`feast_errors`)."""
    from feast import utils
    from tqdm import tqdm

    start, end = utils.make_tzaware(start), utils.make_tzaware(end)
    if start > end:
        raise ValidationError(f"materialize: start {start} is after end {end}")
    view = store.get_feature_view(view_name)
    provider = store._get_provider()  # what FeatureStore.materialize itself calls (feast pinned to 0.67)
    provider.materialize_single_feature_view(
        config=store.config,
        feature_view=view,
        start_date=start,
        end_date=end,
        registry=store.registry,
        project=store.project,
        tqdm_builder=lambda n: tqdm(total=n, disable=True),
    )
    store.registry.apply_materialization(view, store.project, start, end)


# -- declarations (used by feature_repo/definitions.py) -----------------------------------------


def instrument_entity() -> Entity:
    from feast import Entity
    from feast.value_type import ValueType

    return Entity(
        name=ENTITY,
        join_keys=[JOIN_KEY],
        value_type=ValueType.INT64,
        description="an instrument (hdi_lab instrument_id; symbols map to it by date)",
    )


def feature_view(set_name: str, interval: str, entity: Entity) -> FeatureView:
    """The view of a set at an interval over its hdi_lab table (``features_<set>_<interval>``).

    Raises ValidationError for a set that is not known, KeyError for an interval without a TTL."""
    from feast import FeatureView, Field
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )
    from feast.types import Float64

    fs = features.feature_set(set_name)
    name = view_name(fs.name, interval)
    source = PostgreSQLSource(
        name=f"{name}_source",
        table=features.table_name(fs.name, interval),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        description=f"hdi_lab feature table of {fs.name} at {interval}",
    )
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=TTL[interval],
        source=source,
        online=True,
        schema=[Field(name=c, dtype=Float64) for c in fs.columns],
        description=fs.description,
        tags=_tags(fs, interval),
    )


def feature_service(view: FeatureView) -> FeatureService:
    """The versioned service of a view made by :func:`feature_view` (named by :func:`service_name`).

    Raises KeyError for a view without hdi_lab's tags."""
    from feast import FeatureService

    set_name, interval = view.tags["hdi_feature_set"], view.tags["interval"]
    return FeatureService(
        name=service_name(set_name, interval),
        features=[view],
        tags=view.tags,
        description=f"{set_name} at {interval} (version {view.tags['version']})",
    )


def declarations(tables: set[str] | None = None) -> dict[str, Any]:
    """The project, the entity, and a view and a service per feature set and interval, by Python
    name; with ``tables``, only the views (and services) of those feature tables."""
    from feast.project import Project

    entity = instrument_entity()
    out: dict[str, Any] = {"project": Project(name=PROJECT, description="hdi_lab feature sets"), ENTITY: entity}
    for fs in features.FEATURE_SETS.values():
        for interval in features.INTERVALS:
            if tables is not None and features.table_name(fs.name, interval) not in tables:
                continue
            view = feature_view(fs.name, interval, entity)
            out[view.name] = view
            out[f"{view.name}_service"] = feature_service(view)
    return out


#: the store :func:`apply` is applying, for the repo's definitions.py (:func:`repo_declarations`)
_APPLYING: contextvars.ContextVar[FeatureStore | None] = contextvars.ContextVar("hdi_feast_applying", default=None)


def repo_declarations(repo: str | Path) -> dict[str, Any]:
    """What ``feature_repo/definitions.py`` declares: :func:`declarations` for the feature tables
    that exist in the offline store's schema, each view with the materialization intervals the
    registry holds for it.

    Views over tables not yet computed are not registered, so ``feast materialize`` without
    ``-v`` loads what is there. Feast counts a view's materialization intervals in its equality, so
    without them every ``feast apply`` after a materialization would "update" the view.
    The store is :func:`apply`'s, or (the ``feast`` CLI) one opened from ``repo``'s
    feature_store.yaml with the environment's values.

    Raises ConfigError / StorageError when Feast cannot read the configuration or the database.
    """
    store = _APPLYING.get()
    if store is None:
        feast = require("feast")
        with feast_errors():
            store = feast.FeatureStore(repo_path=str(repo))
    assert store is not None
    with feast_errors():
        tables = _feature_tables(store)
        registered = {v.name: v for v in store.registry.list_feature_views(store.project, allow_cache=False)}
    out = declarations(tables)
    for name, obj in out.items():
        if name in registered and hasattr(obj, "update_materialization_intervals"):
            obj.update_materialization_intervals(registered[name].materialization_intervals)
    return out


def _feature_tables(store: FeatureStore) -> set[str]:
    """Names of the ``features_*`` tables in the offline store's schema."""
    from feast.infra.utils.postgres.connection_utils import _get_conn

    from hdi_lab.storage import feast as feast_sql  # psycopg 3: imported with Feast, not with this module

    config = store.config.offline_store
    with _get_conn(config) as conn:
        return feast_sql.feature_tables(conn, config.db_schema or config.user)


def _tags(fs: features.FeatureSet, interval: str) -> dict[str, str]:
    return {
        "hdi_feature_set": fs.name,
        "version": str(fs.version),
        "interval": interval,
        "table": features.table_name(fs.name, interval),
    }
