"""What the browser tests share: the tools they need (Debian's Chromium, the playwright package), a local
Jupyter-family server (JupyterLab, Voila) started on a free port with its config in temp dirs and killed with
every process it started, and a headless Chromium that writes nothing outside the test's temp dir.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``) and the ``playwright`` Python package (never
``playwright install``: its browser download does not work here). Missing either, a test skips, or fails when
``CI`` is set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "JUPYTER_DIRS",
    "SERVER_START_TIMEOUT",
    "Server",
    "artifact_dir",
    "chromium",
    "jupyter_env",
    "poll",
    "require_browser_tools",
    "serve",
    "served_copy",
]

CHROMIUM = "/usr/bin/chromium"
_CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 60.0
#: the config, data, runtime and IPython dirs of every Jupyter-family server: in the test's temp dir
JUPYTER_DIRS = {
    "JUPYTER_CONFIG_DIR": "config",
    "JUPYTER_DATA_DIR": "data",
    "JUPYTER_RUNTIME_DIR": "runtime",
    "IPYTHONDIR": "ipython",
}
# Read at import: the autouse clean_environ fixture removes every HDI_* variable before a test runs.
ARTIFACTS = os.environ.get("HDI_BROWSER_ARTIFACTS")
# No HTTP proxy from the environment for the local server.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def require_browser_tools() -> None:
    """Skip (fail in CI) with the reason when Chromium or Playwright is missing."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401 - only whether it imports
    except ImportError:
        missing.append("the playwright Python package (pip install 'hdi_lab[dev]'; do not run `playwright install`)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: required in CI", pytrace=False)
        pytest.skip(reason)


@dataclass
class Server:
    base_url: str
    token: str
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


def jupyter_env(tmp_path: Path, dirs: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The server's environment: this process's without HDI_*/JUPYTER*/IPYTHONDIR, each variable of
    :data:`JUPYTER_DIRS` and ``dirs`` (name -> sub directory) pointing to a new dir under ``tmp_path/jupyter``,
    ``extra`` and this interpreter's bin dir first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HDI_", "JUPYTER", "IPYTHONDIR"))}
    for name, sub in {**JUPYTER_DIRS, **(dirs or {})}.items():
        path = tmp_path / "jupyter" / sub
        path.mkdir(parents=True)
        env[name] = str(path)
    env.update(PYTHONUNBUFFERED="1", **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def served_copy(tmp_path: Path, notebook: Path) -> Path:
    """A new folder ``tmp_path/root`` holding a copy of ``notebook``: the server's root (the copy may be
    changed by the run)."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(notebook, root / notebook.name)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(
    module: str,
    args: Callable[[int], list[str]],
    *,
    cwd: Path,
    env: dict[str, str],
    log: Path,
    ready: str,
    token: str,
    ready_with_token: bool = True,
) -> Iterator[Server]:
    """``python -m module *args(port)`` on a free port (this interpreter, so its kernels run it too), up once
    GET ``ready`` (a path; with the token in an Authorization header if ``ready_with_token``: Voila redirects
    such a request for a static file elsewhere) answers 200; killed with every process it started when the
    block ends."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args(port)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(base_url, token, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{module} exited with {proc.returncode}:\n{server.log_tail()}", pytrace=False)
            try:
                auth = {"Authorization": f"token {token}"} if ready_with_token else {}
                req = urllib.request.Request(f"{base_url}{ready}", headers=auth)
                with _HTTP.open(req, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{module} not up after {SERVER_START_TIMEOUT:.0f} s:\n{server.log_tail()}", pytrace=False)
            time.sleep(0.25)
        yield server
    finally:
        _kill(proc, base_url, token)


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) for every process (from /proc)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        table[int(entry)] = (int(fields[1]), fields[19])
    return table


def _descendants(pid: int) -> dict[int, str]:
    """Descendants of ``pid`` (a kernel runs in a session of its own) with their start times."""
    table = _proc_table()
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, start) in table.items():
            if ppid == parent and child not in found:
                found[child] = start
                todo.append(child)
    return found


def _kill(proc: subprocess.Popen[bytes], base_url: str, token: str) -> None:
    """Shut the server down (it stops its kernels), then kill its process group and any leftover child."""
    children = _descendants(proc.pid)
    try:
        req = urllib.request.Request(
            f"{base_url}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"}
        )
        _HTTP.open(req, timeout=5).close()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    table = _proc_table()
    for pid, start in children.items():  # only the very processes seen above (pids may be reused)
        if table.get(pid, (0, ""))[1] == start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def chromium(pw: Any, tmp_path: Path, **env: str) -> Any:
    """Headless Debian Chromium through playwright ``pw``, its HOME/config/cache under ``tmp_path`` (else it
    writes ~/.config/chromium and ~/.cache/dconf), ``env`` added to its environment."""
    home = tmp_path / "chromium-home"
    browser_env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        **env,
    }
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=_CHROMIUM_ARGS, env=browser_env)


def artifact_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``$HDI_BROWSER_ARTIFACTS`` (read at import), else ``tmp_path``."""
    out = Path(ARTIFACTS) if ARTIFACTS else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


def poll(what: str, check: Callable[[], Any], timeout: float, describe: Callable[[], str]) -> Any:
    """``check()``'s first truthy result, tried every 0.25 s; the test fails after ``timeout`` s with
    ``describe()``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}: {describe()}", pytrace=False)
        time.sleep(0.25)
