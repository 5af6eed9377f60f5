"""A team's servers on one machine, for tests and benchmarks: PostgreSQL in a temporary folder, a
`prefect server` and an `mlflow server` on it, all bound to 127.0.0.1, all torn down on exit.

PostgreSQL comes from the system (Debian's ``postgresql`` package puts ``initdb`` and ``pg_ctl``
in ``/usr/lib/postgresql/<version>/bin``); ``find_postgres`` says why when it is not there.
PostgreSQL refuses to run as root: as root, the cluster is created and run as the ``postgres``
user (``runuser``). Pure: starts the servers as processes, imports neither Prefect nor MLflow.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
PG_USER = "bhm"
START_SECONDS = 180


class ServerUnavailable(RuntimeError):
    """A server cannot be started on this machine (e.g. PostgreSQL is not installed): the reason."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def find_postgres() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``createdb``; ServerUnavailable with the reason if none."""
    candidates = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    candidates += reversed(versions)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "createdb")):
            return folder
    raise ServerUnavailable(
        "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
        "on Debian or Ubuntu: apt-get install -y postgresql"
    )


# runuser lives in /usr/sbin (util-linux), which a cron job's PATH (/usr/bin:/bin) leaves out.
SYSTEM_BIN_DIRS = ("/usr/sbin", "/sbin")


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses root: run as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return command
    search = os.pathsep.join([os.environ.get("PATH", ""), *SYSTEM_BIN_DIRS])
    if (runuser := shutil.which("runuser", path=search)) is None:
        raise ServerUnavailable(f"running as root and runuser is missing (searched {search}): cannot start PostgreSQL as another user")
    return [runuser, "-u", "postgres", "--", *command]


def _wait_http(url: str, process: subprocess.Popen, log: Path, seconds: float = START_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{url} did not answer in {seconds:g} s (exit {process.poll()}):\n{tail}")
        time.sleep(0.5)


def stop(process: subprocess.Popen, seconds: float = 30) -> None:
    """SIGTERM the process group, then SIGKILL it if it does not end."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"


@contextmanager
def postgres(databases: tuple[str, ...] = ("prefect", "mlflow"), root: Path | None = None) -> Iterator[Postgres]:
    """A new PostgreSQL cluster in a temporary folder on 127.0.0.1 (password login), with ``databases``."""
    bin_dir = find_postgres()
    folder = Path(tempfile.mkdtemp(prefix="bhm-pg-", dir=root))
    password = secrets.token_hex(12)
    port = free_port()
    data, log = folder / "data", folder / "postgres.log"
    (folder / "pw").write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        os.chmod(folder, 0o700)
        shutil.chown(folder / "pw", "postgres", "postgres")
    env = {**os.environ, "PGPASSWORD": password, "LC_ALL": "C"}
    try:
        subprocess.run(
            _as_postgres_user(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "--pwfile", str(folder / "pw"),
                 "--auth", "scram-sha-256", "--encoding", "UTF8", "--no-instructions"]
            ),
            env=env, check=True, capture_output=True, text=True, cwd=folder,
        )  # fmt: skip
        options = f"-c listen_addresses={LOOPBACK} -p {port} -c unix_socket_directories={folder} -c max_connections=200"
        started = subprocess.run(
            _as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "120", "start"]),
            env=env, capture_output=True, text=True, cwd=folder,
        )  # fmt: skip
        if started.returncode:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}\n{tail}")
        server = Postgres(LOOPBACK, port, PG_USER, password)
        try:
            for name in databases:
                subprocess.run(
                    [str(bin_dir / "createdb"), "-h", LOOPBACK, "-p", str(port), "-U", PG_USER, name],
                    env=env, check=True, capture_output=True, text=True,
                )  # fmt: skip
            yield server
        finally:
            subprocess.run(
                _as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                env=env, capture_output=True, cwd=folder,
            )  # fmt: skip
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"{' '.join(err.cmd)} failed: {err.stderr}") from err
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _clean_env(env: Mapping[str, str] | None) -> dict[str, str]:
    base = dict(env if env is not None else os.environ)
    return {k: v for k, v in base.items() if not k.startswith(("PREFECT_API_", "MLFLOW_TRACKING_"))}


@contextmanager
def prefect_server(database_url: str | None, home: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1 with its database at ``database_url`` (None: its SQLite
    default under ``home``); yields the API URL."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server_env = _clean_env(env) | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if database_url:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    log = home / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)],
            env=server_env, cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            api = f"http://{LOOPBACK}:{port}/api"
            _wait_http(f"{api}/health", process, log)
            yield api
        finally:
            stop(process)


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with ``backend_uri`` and artifacts served from ``artifacts``; yields its URL."""
    artifacts.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = artifacts.parent / f"mlflow-server-{port}.log"
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(artifacts), "--host", LOOPBACK, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=_clean_env(env), cwd=artifacts.parent, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            url = f"http://{LOOPBACK}:{port}"
            _wait_http(f"{url}/health", process, log)
            yield url
        finally:
            stop(process)
