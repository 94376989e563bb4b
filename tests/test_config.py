"""Settings precedence, masking and errors (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

import hdi_lab
from hdi_lab.config import load_settings
from hdi_lab.errors import ConfigError
from hdi_lab.frontend.cli import main

pytestmark = pytest.mark.unit


def test_precedence_argument_env_file_default(tmp_path: Path) -> None:
    (tmp_path / "hdi_lab.toml").write_text('db_schema = "from_file"\nib_port = 4001\nchunk_rows = 5\n')
    env = {"HDI_IB_PORT": "7497", "HDI_CHUNK_ROWS": "7"}
    s = load_settings({"chunk_rows": 9}, environ=env, cwd=tmp_path)
    assert s.db_schema == "from_file" and s.sources["db_schema"].startswith("file ")
    assert s.ib_port == 7497 and s.sources["ib_port"] == "env HDI_IB_PORT"
    assert s.chunk_rows == 9 and s.sources["chunk_rows"] == "argument"
    assert s.ib_host == "127.0.0.1" and s.sources["ib_host"] == "default"


def test_pyproject_table_is_found_from_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.hdi_lab]\ndb_schema = "proj"\n')
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert load_settings(environ={}, cwd=sub).db_schema == "proj"


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    (tmp_path / "hdi_lab.toml").write_text('databse_url = "postgresql://x"\n')
    with pytest.raises(ConfigError, match="did you mean 'database_url'"):
        load_settings(environ={}, cwd=tmp_path)


def test_bad_values_and_placeholder_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ib_port"):
        load_settings(environ={"HDI_IB_PORT": "abc"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(environ={"DATABENTO_API_KEY": "YOUR_API_KEY"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="identifier"):
        load_settings({"db_schema": "x; drop table trades"}, environ={}, cwd=tmp_path)


def test_config_show_masks_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABENTO_API_KEY", "db-Abcdefghijklmnopqrstuvwxyz123")
    rc = main(["--database-url", "postgresql://u:secretpw@db.example:5432/x", "config", "show"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "secretpw" not in out and "Abcdefghijklmnopqrstuvwxyz" not in out
    assert "postgresql://u:****@db.example:5432/x" in out and "argument" in out
    assert "env DATABENTO_API_KEY" in out


def test_public_api_matches_all() -> None:
    exported = {name for name in dir(hdi_lab) if not name.startswith("_")}
    modules = {n for n in exported if type(getattr(hdi_lab, n)).__name__ == "module"}
    assert set(hdi_lab.__all__) == exported - modules - {"annotations", "logging"}
    assert hdi_lab.__all__ == sorted(hdi_lab.__all__)


def test_missing_extra_names_the_pip_command() -> None:
    from hdi_lab.errors import MissingDependency
    from hdi_lab.extras import require

    with pytest.raises(MissingDependency, match=r"pip install 'hdi_lab\[ta\]'") as info:
        require("hdi_lab_no_such_module", "ta")
    assert isinstance(info.value, ImportError)
    assert require("json").dumps([1]) == "[1]"
