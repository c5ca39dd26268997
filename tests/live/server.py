"""The live server of the scripts that need a real one: tests/live/fuzz.py, chaos.py, slow_clients.py
and the benchmark (bench/run.py). One way to start gunicorn, wait for it, kill parts of it and stop it.

    from server import LiveServer, live_env, logger            # tests/live/*.py (their own directory)
    from tests.live.server import LiveServer, logger           # bench/ (the project root on sys.path)

    log = logger("fuzz")                                       # prints "[fuzz] message"
    env = live_env("postgres://postgres@127.0.0.1:5432/billing_fuzz", secret_key="fuzz-only-...")
    with LiveServer(env=env, database="recreate", drop_prefix="billing_fuzz", log_path=path) as server:
        requests.get(f"{server.base_url}/api/health/")

What `with LiveServer(...)` does, in order (`open()`; `close()` on the way out, whatever happens):

1. The port: the one given (refused if something already listens there), else a free one picked at
   random below the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), so that no
   client connection is ever given it as its own local port while the server is down between two
   starts (a client retrying against a dead port in that range can even connect to itself). The port
   is kept for every restart.
2. The database of env["DATABASE_URL"]: `database="recreate"` drops and creates it (only a name that
   starts with `drop_prefix`, `billing_fuzz…`, or ends with its last word, `…_fuzz`, is ever
   dropped, see `droppable`; SQLite: the file is deleted), `"ensure"` creates it if
   it is missing (never dropped), None leaves it alone. Then `manage.py migrate` unless migrate=False.
3. gunicorn `billing.wsgi:application --bind 127.0.0.1:<port> [--workers N] <options>` in the
   project root, so that ./gunicorn.conf.py configures it (gevent workers, request slots, deadlines)
   and the command-line options given override it; in a session of its own, so that signalling the
   process group reaches the master and every worker and frees the port. stdout and stderr are
   appended to `log_path` (one file across restarts).
4. Waits until GET /api/health/ answers 200 (`boot_timeout`); raises ServerError if gunicorn exits
   first or does not answer in time.

For chaos: `master_pid`, `worker_pids()`, `kill_worker()` (SIGKILL one worker; the master forks a
new one), `kill()` (SIGKILL the whole group), `start()` and `wait_healthy()` again, or `restart()`.
`stop()`: SIGTERM to the group (running requests finish), SIGKILL for whatever is left after
`stop_timeout`. `close()` and, as a backstop, an atexit hook always end the group.

Only the standard library at import time (psycopg2 is imported when a PostgreSQL database is
prepared): schemathesis loads tests/live/fuzz.py, which imports this, as its hooks module.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
HOST = "127.0.0.1"


def logger(tag: str, *, clock: bool = False) -> Callable[[str], None]:
    """The scripts' `log()`: one line on stdout, flushed, as `[tag] message` (`[tag HH:MM:SS] ...`
    with clock=True)."""

    def log(message: str) -> None:
        stamp = time.strftime(" %H:%M:%S") if clock else ""
        print(f"[{tag}{stamp}] {message}", flush=True)

    return log


def live_env(database_url: str, *, secret_key: str, **overrides: str) -> dict[str, str]:
    """The environment of a live server: this one's, with production settings (DJANGO_DEBUG=0), the
    given database, a login throttle no test run reaches, and only warnings and tracebacks logged
    (LOG_LEVEL=INFO logs one line per request)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "billing.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secret_key,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "LOGIN_THROTTLE_RATE": "100000/min",
        "LOG_LEVEL": "WARNING",
        **overrides,
    }


class ServerError(RuntimeError):
    """The server could not be set up or started; the message says why."""


# --- ports -------------------------------------------------------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((HOST, port)) == 0


def _bindable(port: int) -> bool:
    """Whether gunicorn could bind the port now (it sets SO_REUSEADDR too: TIME_WAIT does not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port(attempts: int = 100) -> int:
    """A port nothing listens on and nothing is bound to, below the kernel's ephemeral range."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first = 10000 if low > 11000 else 1024
    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.randrange(first, low)
        if _bindable(port) and not _listening(port):
            return port
    raise ServerError(f"no free port found in {first}-{low - 1} after {attempts} attempts")


# --- databases ---------------------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return None
    path = Path(unquote(parts.path)[1:])  # as dj-database-url reads it: sqlite:////abs or sqlite:///rel
    return path if path.is_absolute() else ROOT / path  # relative to the project root, gunicorn's cwd


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _admin_connection(url: str):
    import psycopg2

    parts = urlsplit(url)
    connection = psycopg2.connect(
        urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, "")), connect_timeout=5
    )
    connection.autocommit = True
    return connection


def droppable(name: str, drop_prefix: str) -> bool:
    """Whether a script whose databases are `drop_prefix…` may drop `name`: it starts with the
    prefix (`billing_chaos`, `billing_chaos_2`) or ends with the prefix's last word after an
    underscore (`billing_ci_chaos` for prefix `billing_chaos`), so that runs side by side on one
    PostgreSQL can each have their own, and a name of the app's own is never one of them."""
    if not drop_prefix:
        return False
    word = drop_prefix.rsplit("_", 1)[-1]
    return name.startswith(drop_prefix) or (word != drop_prefix and name.endswith(f"_{word}"))


def recreate_database(url: str, *, drop_prefix: str) -> None:
    """Drop and create the database of `url`; only a `droppable` name is dropped."""
    sqlite = _sqlite_path(url)
    name = sqlite.name if sqlite else _database_name(url)
    if not droppable(name.removesuffix(".sqlite3") if sqlite else name, drop_prefix):
        word = drop_prefix.rsplit("_", 1)[-1] if drop_prefix else "?"
        raise ServerError(f"refusing to drop {name!r}: the database must be named {drop_prefix}* or *_{word}")
    if sqlite:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{sqlite}{suffix}").unlink(missing_ok=True)
        return
    from psycopg2 import sql

    connection = _admin_connection(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def ensure_database(url: str) -> None:
    """Create the database of `url` if it is missing; it is never dropped."""
    if _sqlite_path(url):
        return
    from psycopg2 import sql

    name = _database_name(url)
    connection = _admin_connection(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def database_sessions(url: str) -> int:
    """Sessions open on the PostgreSQL database of `url`, other than the one asking."""
    import psycopg2

    connection = psycopg2.connect(url, connect_timeout=5)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]
    finally:
        connection.close()


def migrate(env: Mapping[str, str]) -> None:
    """`manage.py migrate` with the server's environment (its settings module, its database)."""
    done = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "migrate", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ServerError(
            f"manage.py migrate failed ({done.returncode}): {(done.stdout + done.stderr)[-3000:]}"
        )


# --- the server --------------------------------------------------------------------------------------


class LiveServer:
    """gunicorn on 127.0.0.1 in a process group of its own; see the module's docstring."""

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        log_path: Path,
        port: int | None = None,
        workers: int | None = None,
        options: Sequence[str] = (),
        database: str | None = None,
        drop_prefix: str | None = None,
        migrate: bool = True,
        boot_timeout: float = 30,
        stop_timeout: float = 15,
    ):
        if database not in (None, "recreate", "ensure"):
            raise ValueError(f"database must be 'recreate', 'ensure' or None, not {database!r}")
        if database == "recreate" and not drop_prefix:
            raise ValueError("database='recreate' needs the drop_prefix its name must start with")
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.port_given = port is not None
        self.port = port if port is not None else free_port()
        self.workers, self.options = workers, list(options)
        self.database, self.drop_prefix, self.migrate = database, drop_prefix, migrate
        self.boot_timeout, self.stop_timeout = boot_timeout, stop_timeout
        self.process: subprocess.Popen | None = None
        self._swept = True  # nothing of a group of ours can be left (none started, or SIGKILLed since)

    # -- the whole life, as a context manager

    def __enter__(self) -> LiveServer:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> LiveServer:
        """Check the port, prepare the database, start gunicorn and wait for /api/health/."""
        if self.port_given and _listening(self.port):
            raise ServerError(f"{HOST}:{self.port} is already in use; stop whatever listens there first")
        self.prepare_database()
        self.start()
        if not self.wait_healthy(self.boot_timeout):
            state = (
                f"exited with code {self.returncode}"
                if not self.alive()
                else f"did not answer /api/health/ within {self.boot_timeout:g} s"
            )
            self.kill()
            raise ServerError(f"gunicorn {state} (its log: {self.log_path})")
        return self

    def close(self) -> None:
        """Stop gracefully, then make sure nothing of the group is left."""
        try:
            self.stop()
        finally:
            self._kill_group()
            atexit.unregister(self._at_exit)

    def prepare_database(self) -> None:
        url = self.env.get("DATABASE_URL", "")
        if self.database == "recreate":
            recreate_database(url, drop_prefix=self.drop_prefix or "")
        elif self.database == "ensure":
            ensure_database(url)
        if self.migrate:
            migrate(self.env)

    # -- what the scripts read

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def master_pid(self) -> int:
        if self.process is None:
            raise ServerError("gunicorn is not started")
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def worker_pids(self) -> list[int]:
        """The master's live children, from /proc (field 4 of /proc/PID/stat is the parent)."""
        if not self.alive():
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                state, ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if int(ppid) == self.master_pid and state != "Z":
                pids.append(int(entry))
        return pids

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/api/health/", timeout=2) as response:  # noqa: S310
                return response.status == 200
        except (OSError, http.client.HTTPException):  # refused, reset, timed out, an error status
            return False

    def wait_healthy(self, timeout: float) -> bool:
        """Until /api/health/ answers 200 (True), gunicorn exits or `timeout` seconds pass (False)."""
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if not self.alive():
                return False
            if self.healthy():
                return True
            time.sleep(0.1)
        return False

    def log_tail(self, size: int = 5000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    # -- starting and stopping

    def command(self) -> list[str]:
        workers = [] if self.workers is None else [f"--workers={self.workers}"]
        return [
            str(VENV_BIN / "gunicorn"),
            "billing.wsgi:application",
            f"--bind={HOST}:{self.port}",
            *workers,
            *self.options,
        ]

    def start(self) -> None:
        """Start gunicorn (again: a restart keeps the port); does not wait for it to answer."""
        if self.alive():
            raise ServerError(f"gunicorn already runs (pid {self.master_pid})")
        give_up = time.monotonic() + 10  # a killed master's socket may take a moment to go
        while not _bindable(self.port):
            if time.monotonic() > give_up:
                raise ServerError(f"{HOST}:{self.port} is still taken 10 s after the previous server")
            time.sleep(0.1)
        atexit.unregister(self._at_exit)  # registered once, whatever the number of starts
        atexit.register(self._at_exit)
        self._swept = False
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill_worker(self, pid: int | None = None, *, rng: random.Random | None = None) -> bool:
        """SIGKILL a worker (the given one, else one drawn with `rng`); False if there was none."""
        if pid is None:
            pids = self.worker_pids()
            if not pids:
                return False
            pid = (rng or random).choice(pids)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def kill(self, sig: int = signal.SIGKILL, wait: float = 10) -> None:
        """Signal the whole process group (master and workers) and reap the master."""
        if self._gone():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        if sig == signal.SIGKILL:
            self._swept = True
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self._kill_group()
            self.process.wait(5)

    def restart(self, *, delay: float = 0.0, timeout: float | None = None) -> bool:
        """Kill the group, wait `delay` seconds, start again; whether it answered within `timeout`."""
        self.kill()
        time.sleep(delay)
        self.start()
        return self.wait_healthy(self.boot_timeout if timeout is None else timeout)

    def stop(self) -> None:
        """Graceful (SIGTERM lets the running requests finish), SIGKILL after `stop_timeout`, and
        SIGKILL for whatever is left of the group (the orphaned workers of a dead master, if any)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.kill(signal.SIGTERM, wait=self.stop_timeout)
        self._kill_group()

    def _gone(self) -> bool:
        """Nothing of the group can be left: never started, or SIGKILLed and the master reaped. Its id is
        not signalled again then, since another session may have been given it since."""
        return self.process is None or (self._swept and self.process.poll() is not None)

    def _kill_group(self) -> None:
        if self._gone():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._swept = True

    def _at_exit(self) -> None:
        self._kill_group()
