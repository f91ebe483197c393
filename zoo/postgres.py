"""A local PostgreSQL server for a team's MLflow tracking server (`make postgres`).

The cluster lives under `build/postgres/` (data, log, socket, the role's password), listens on
127.0.0.1 only (port 5433 unless told otherwise: 5432 is often a system cluster's), and holds a
database and a role named `mlflow` whose password is generated once and kept in
`build/postgres/password` (readable by its owner only). Connections over TCP need that
password (scram-sha-256); the cluster's superuser connects only through the socket in the
cluster's own folder.

PostgreSQL refuses to run as root: run as root (as on these machines), every PostgreSQL
program runs as the `postgres` system user, which then owns `build/postgres/`. The programs
come from the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout), else the PATH.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from zoo import paths
from zoo.errors import ZooError

DEFAULT_PORT = 5433
DATABASE = ROLE = "mlflow"
SYSTEM_USER = "postgres"


class PostgresError(ZooError):
    """The local PostgreSQL server cannot be set up, started or stopped."""


@dataclass(frozen=True)
class Cluster:
    """The local cluster's folder and port."""

    folder: Path
    port: int = DEFAULT_PORT

    @property
    def data(self) -> Path:
        """The cluster's data folder (initdb's)."""
        return self.folder / "data"

    @property
    def socket_dir(self) -> Path:
        """Where the server's Unix socket lives: here, not /var/run, so no system setup is
        needed."""
        return self.folder / "run"

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.folder / "server.log"

    @property
    def password_file(self) -> Path:
        """The `mlflow` role's password, generated once."""
        return self.folder / "password"

    def uri(self) -> str:
        """The SQLAlchemy URI of the `mlflow` database, for `make server BACKEND=...`."""
        password = self.password_file.read_text().strip()
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{DATABASE}"

    def running(self) -> bool:
        """Whether the cluster's server answers."""
        if not self.data.is_dir():
            return False
        done = _run(["pg_ctl", "-D", str(self.data), "status"], check=False)
        return done.returncode == 0


def default_cluster(port: int | None = None) -> Cluster:
    """The project's cluster: `build/postgres/` under the project root."""
    return Cluster(paths.project_root() / "build" / "postgres", port or DEFAULT_PORT)


def start(cluster: Cluster) -> str:
    """Create the cluster if it is new, start it if it is stopped, make sure the `mlflow` role
    and database exist; returns the database's URI.

    Raises:
        PostgresError: PostgreSQL is not installed, or a step failed (its output is quoted).
    """
    if not cluster.data.is_dir():
        _create(cluster)
    if not cluster.running():
        cluster.socket_dir.mkdir(parents=True, exist_ok=True)
        _own(cluster.folder)
        options = (f"-c listen_addresses=127.0.0.1 -p {cluster.port} "
                   f"-c unix_socket_directories={cluster.socket_dir}")
        _run(["pg_ctl", "-D", str(cluster.data), "-l", str(cluster.log), "-o", options,
              "-w", "-t", "60", "start"], what=f"starting PostgreSQL (log: {cluster.log})")
    _ensure_database(cluster)
    return cluster.uri()


def stop(cluster: Cluster) -> bool:
    """Stop the cluster's server (fast shutdown); returns whether it was running."""
    if not cluster.running():
        return False
    _run(["pg_ctl", "-D", str(cluster.data), "-m", "fast", "-w", "stop"],
         what="stopping PostgreSQL")
    return True


def _create(cluster: Cluster) -> None:
    cluster.folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for parent in cluster.folder.resolve().parents:
            if not parent.stat().st_mode & 0o001:
                raise PostgresError(
                    f"the {SYSTEM_USER} user that runs PostgreSQL cannot reach "
                    f"{cluster.folder}: {parent} is closed to other users; open it with "
                    f"`chmod o+x {parent}`, or put the project elsewhere")
    if not cluster.password_file.exists():
        cluster.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        cluster.password_file.chmod(0o600)
    _own(cluster.folder)
    # Local (socket) connections: the system user only (peer); TCP: passwords.
    _run(["initdb", "-D", str(cluster.data), "-U", SYSTEM_USER, "--auth-local=peer",
          "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"],
         what="creating the PostgreSQL cluster")


def _ensure_database(cluster: Cluster) -> None:
    password = cluster.password_file.read_text().strip()
    exists = _psql(cluster, f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'").strip()
    # The password is generated from URL-safe characters, so it needs no quoting beyond this.
    verb = "ALTER" if exists else "CREATE"
    _psql(cluster, f"{verb} ROLE {ROLE} LOGIN PASSWORD '{password}'")
    if not _psql(cluster, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'").strip():
        _psql(cluster, f"CREATE DATABASE {DATABASE} OWNER {ROLE}")


def _psql(cluster: Cluster, sql: str) -> str:
    return _run(["psql", "-h", str(cluster.socket_dir), "-p", str(cluster.port), "-U",
                 SYSTEM_USER, "-d", "postgres", "-tAc", sql],
                what="setting up the mlflow role and database").stdout


def _own(folder: Path) -> None:
    """As root, hand the cluster's folder to the system user that runs the server."""
    if os.geteuid() != 0:
        return
    for path in [folder, *folder.rglob("*")]:
        shutil.chown(path, SYSTEM_USER, SYSTEM_USER)


def _program(name: str) -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for folder in reversed(versions):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise PostgresError(f"{name} not found: install PostgreSQL (Debian: apt-get install "
                            "postgresql) or put its bin folder on the PATH")
    return found


def _run(command: list[str], what: str = "", check: bool = True) -> subprocess.CompletedProcess:
    command = [_program(command[0]), *command[1:]]
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        command = ["runuser", "-u", SYSTEM_USER, "--", *command]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          cwd="/")  # the system user may not read the current folder
    if check and done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise PostgresError(f"{what or command[0]} failed after {time.monotonic() - started:.0f} "
                            f"s (exit code {done.returncode}): {output}")
    return done
