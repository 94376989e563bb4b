"""Secrets: masked in every DSN form, repr, display, CLI and magic output and error; a project file
may not decide where a credential is sent."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import hdi_shell, run_cli
from IPython.core.error import UsageError
from IPython.lib.pretty import pretty

from hdi_lab import dsn
from hdi_lab.config import OPTIONS, ROUTING, load_settings, user_config_file
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ConfigError

PW = "Sup3rS3cretPw"
KEY = "db-TestSecretKey0123456789xyz"

#: (DSN, what mask() must show, the secret texts that must not appear)
DSNS = [
    (f"postgresql://user:{PW}@host/db", "postgresql://user:****@host/db", [PW]),
    (f"postgres://user:{PW}@host:5433/db", "postgres://user:****@host:5433/db", [PW]),
    (f"postgresql://u:p@ss{PW}@host/db", "postgresql://u:****@host/db", [f"p@ss{PW}", PW]),
    (f"postgresql://u:a?b{PW}@host/db", "postgresql://u:****@host/db", [PW]),
    (f"postgresql://u@host/db?password={PW}", "postgresql://u@host/db?password=****", [PW]),
    (
        f"postgresql://u@host/db?sslmode=require&password={PW}&connect_timeout=3",
        "postgresql://u@host/db?sslmode=require&password=****&connect_timeout=3",
        [PW],
    ),
    (f"postgresql://u@host/db?pass%77ord={PW}", "postgresql://u@host/db?pass%77ord=****", [PW]),
    (f"postgresql://u:%40{PW}%25@host/db", "postgresql://u:****@host/db", [PW, f"%40{PW}%25", f"@{PW}%"]),
    (f"host=h password={PW} dbname=d", "host=h password=**** dbname=d", [PW]),
    (f"host=h password = {PW} dbname=d", "host=h password = **** dbname=d", [PW]),
    (f"host=h password='a {PW}\\' c' dbname=d", "host=h password=**** dbname=d", [PW, f"a {PW}' c"]),
    (f"host=h sslpassword={PW}", "host=h sslpassword=****", [PW]),
    (f"postgresql://u:{PW}%zz@host/db", "postgresql://u:****@host/db", [PW]),  # malformed: masked all the same
]


@pytest.mark.unit
@pytest.mark.parametrize(("url", "shown", "hidden"), DSNS)
def test_mask_hides_the_password_of_every_dsn_form(url: str, shown: str, hidden: list[str]) -> None:
    assert dsn.mask(url) == shown
    for secret in hidden:
        assert secret not in dsn.mask(url)
        assert secret not in dsn.scrub(f"libpq said: {url}", url)
    for secret in dsn.secrets(url):  # the password as written and as decoded, quoted alone by a message
        assert PW not in dsn.scrub(f'invalid percent-encoded token: "{secret}"', url)


@pytest.mark.unit
def test_scrub_hides_the_part_of_a_password_libpq_reads_as_a_host() -> None:
    url = f"postgresql://u:pre@{PW}@127.0.0.1/db"  # libpq: password "pre", host "<PW>@127.0.0.1"
    message = f'could not translate host name "{PW}@127.0.0.1" to address'
    assert PW not in dsn.scrub(message, url)


@pytest.mark.unit
@pytest.mark.parametrize(
    "url", ["postgresql://h/db", "host=h dbname=d user=u", "postgresql://u@h:5/db?sslmode=require"]
)
def test_mask_leaves_a_dsn_without_password_alone(url: str) -> None:
    assert dsn.mask(url) == url and dsn.secrets(url) == [] and dsn.check(url) is None


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"postgresql://u:{PW}%zz@host/db", "bad percent escape"),
        (f"postgresql://u:{PW}@host/db%", "bad percent escape"),
        ("not a url", "neither a postgresql:// URL nor key=value pairs"),
        (f"host=h password='{PW}", "not terminated"),
        (f"host=h password={PW} extra", "neither a postgresql:// URL"),
        (f"mysql://u:{PW}@h/db", "must start with postgresql://"),
    ],
)
def test_a_malformed_url_is_one_config_error_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"HDI_DATABASE_URL": url}, cwd=Path("/"))
    text = str(info.value)
    assert problem in text and "HDI_DATABASE_URL" in text and len(text.splitlines()) == 1
    assert PW not in text and "extra" not in text


@pytest.mark.unit
def test_settings_and_session_reprs_mask_secrets(tmp_path: Path) -> None:
    env = {"HDI_DATABASE_URL": f"host=db.example password='{PW}' dbname=x", "HDI_DATABENTO_API_KEY": KEY}
    settings = load_settings(environ=env, cwd=tmp_path)
    session = HdiSession(settings)
    shown = [
        repr(settings),
        str(settings),
        pretty(settings),
        f"{settings}",
        repr(session),
        str(session),
        pretty(session),
        repr(settings.replace(chunk_rows=5)),
        repr(session.provider("databento").caller()),
    ]
    for text in shown:
        assert PW not in text and KEY[3:-3] not in text, text
    assert "password=****" in repr(settings) and "****xyz" in repr(settings)
    assert "db.example" in repr(session)


@pytest.mark.unit
@pytest.mark.parametrize("url", [u for u, _, _ in DSNS if dsn.check(u) is None])
def test_config_show_masks_every_dsn_form(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HDI_DATABENTO_API_KEY", KEY)
    code, out, err = run_cli(["--database-url", url, "config", "show"])
    assert code == 0, err
    assert PW not in out + err and KEY[3:-3] not in out + err
    assert dsn.mask(url) in out


@pytest.mark.unit
@pytest.mark.parametrize("schema", ["pg_catalog", "information_schema", "public", "pg_toast", "pg_temp_1"])
def test_system_schemas_are_refused(schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=rf"db_schema='{schema}' \(from env HDI_DB_SCHEMA\) is a system.*like 'hdi'"):
        load_settings(environ={"HDI_DB_SCHEMA": schema}, cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HDI_DB_SCHEMA", schema)
    code, _, err = run_cli(["status"])
    assert code == 1 and err.startswith("hdi: error: db_schema=") and len(err.strip().splitlines()) == 1


# -- the CLI and the magics with a real server ---------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{PW}%zz@127.0.0.1/db",
        "not a url",
        f"host=127.0.0.1 password={PW} nosuchoption=1",  # well formed, refused by libpq itself
        f"postgresql://u:{PW}@127.0.0.1/db?nosuchparam=1",
    ],
)
def test_status_with_a_bad_url_is_one_line_without_the_password(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HDI_DATABASE_URL", url)
    code, out, err = run_cli(["status"])
    assert code == 1 and out == ""
    assert err.startswith("hdi: error: ") and len(err.strip().splitlines()) == 1, err
    assert PW not in err and ("URL" in err or "url" in err)


@pytest.mark.integration
def test_status_with_a_wrong_password_masks_it(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused connection (nobody listens) is one line, and the password is in none of it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HDI_DATABASE_URL", f"postgresql://u:{PW}@127.0.0.1:{port}/db")
    code, _, err = run_cli(["status"])
    assert code == 1 and err.startswith("hdi: error: cannot connect to PostgreSQL") and PW not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.integration
def test_magics_mask_secrets(
    hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.setenv("HDI_DATABENTO_API_KEY", KEY)
    url = f"{hdi_env['HDI_DATABASE_URL']}?password={PW}"  # trust auth: the password is not checked
    monkeypatch.setenv("HDI_DATABASE_URL", url)
    with hdi_shell() as ip:
        cfg = ip.run_cell("%hdi_config").result
        data, _ = ip.display_formatter.format(cfg)
        session = ip.magics_manager.registry["HdiMagics"].session
        assert ip.run_cell("%hdi_status").result is not None  # connects through the URL with the password
        data2, _ = ip.display_formatter.format(session.settings)
        data3, _ = ip.display_formatter.format(session)
        print(session)
        print(session.settings)
        shown = [
            repr(cfg),
            cfg._repr_html_(),
            *data.values(),
            *data2.values(),
            *data3.values(),
            repr(session.settings),
            str(session),
        ]
    shown.append("".join(capsys.readouterr()))
    for text in shown:
        assert PW not in text and KEY[3:-3] not in text, text
    assert "password=****" in repr(cfg)


@pytest.mark.integration
def test_magic_with_a_bad_url_is_a_one_line_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.setenv("HDI_DATABASE_URL", f"host=127.0.0.1 password={PW} nosuchoption=1")
    with hdi_shell() as ip, pytest.raises(UsageError) as info:
        ip.run_cell("%hdi_status")
    text = str(info.value)
    assert PW not in text and len(text.splitlines()) == 2 and "nosuchoption" in text
    cause = info.value.__cause__
    chain = []
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    assert all(PW not in c for c in chain), chain


# -- a project file may not route a credential ---------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("hdi_lab.toml", 'databento_gateway = "https://evil.example"\n'),
        ("pyproject.toml", '[tool.hdi_lab]\ndatabento_gateway = "https://evil.example"\n'),
        ("hdi_lab.toml", 'database_url = "postgresql://me@evil.example/db"\n'),
        ("hdi_lab.toml", 'database_url = "host=evil.example dbname=db"\n'),
    ],
)
def test_a_project_file_may_not_route_a_credential(name: str, text: str, tmp_path: Path) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, cwd=tmp_path)
    msg = str(info.value)
    assert "is refused: a file in the working directory may not decide where" in msg
    assert str(user_config_file()) in msg and ("HDI_DATABENTO_GATEWAY" in msg or "HDI_DATABASE_URL" in msg)


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(ROUTING))
def test_every_routing_setting_is_refused_from_a_project_file(name: str, tmp_path: Path) -> None:
    value = "postgresql://me@evil.example/db" if name == "database_url" else "evil.example:8786"
    (tmp_path / "hdi_lab.toml").write_text(f'{name} = "{value}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, cwd=tmp_path)
    env = next(opt.env[0] for opt in OPTIONS if opt.name == name)
    assert str(info.value).startswith(f"{name} in {tmp_path / 'hdi_lab.toml'} is refused: ")
    assert f"may not decide where {ROUTING[name]} is sent; set {env} " in str(info.value)


@pytest.mark.unit
def test_routing_settings_from_trusted_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    # a project file's database_url carrying its own password is kept: libpq then sends that, not ~/.pgpass
    (project / "hdi_lab.toml").write_text(f'database_url = "postgresql://me:{PW}@db.example/db"\n')
    assert load_settings(environ={}, cwd=project).database_url == f"postgresql://me:{PW}@db.example/db"
    # the environment and $HDI_CONFIG may route credentials
    (project / "hdi_lab.toml").write_text('databento_gateway = "https://evil.example"\n')
    s = load_settings(environ={"HDI_DATABENTO_GATEWAY": "https://gw.example"}, cwd=tmp_path)
    assert s.databento_gateway == "https://gw.example"
    mine = tmp_path / "mine.toml"
    mine.write_text('databento_gateway = "https://gw.example"\ndatabase_url = "postgresql://me@db.example/x"\n')
    s = load_settings(environ={"HDI_CONFIG": str(mine)}, cwd=project)
    assert s.databento_gateway == "https://gw.example" and s.sources["databento_gateway"] == f"file {mine}"
    # so may the user's own config file (when the working directory has none)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    user = user_config_file()
    user.parent.mkdir(parents=True)
    user.write_text('databento_gateway = "https://gw2.example"\n')
    assert load_settings(environ={}, cwd=tmp_path).databento_gateway == "https://gw2.example"


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection and byte it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    self.received += conn.recv(65536)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    srv = Listener()
    yield srv
    srv.close()


@pytest.mark.integration
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_project_gateway_receives_nothing(
    listener: Listener, hdi_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    (tmp_path / "hdi_lab.toml").write_text(f'databento_gateway = "https://127.0.0.1:{listener.port}"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HDI_DATABENTO_API_KEY", KEY)
    argv = [
        "ingest",
        "--provider",
        "databento",
        "--dataset",
        "GLBX.MDP3",
        "--schema",
        "ohlcv-1d",
        "--symbols",
        "ESH4",
        "--start",
        "2024-01-02",
        "--end",
        "2024-01-05",
        "--quiet",
        *(["--dry-run"] if dry_run else []),
    ]
    code, out, err = run_cli(argv)
    assert listener.connections == 0 and listener.received == b""
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("hdi: error: databento_gateway in ") and "HDI_DATABENTO_GATEWAY" in err
    assert KEY not in err
    assert os.environ["HDI_DATABENTO_API_KEY"] == KEY
