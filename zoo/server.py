"""A local MLflow tracking server, for concurrent writers (distributed tuning) or a team.

It binds 127.0.0.1 unless told otherwise. The backend is the zoo's SQLite store by default, or
any SQLAlchemy URI such as postgresql://user:password@host/db.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

from zoo import paths, tracking
from zoo.errors import ZooError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that no process listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(backend_uri: str, host: str, port: int,
                   workers: int | None = 1) -> list[str]:
    """The command line of an MLflow server over `backend_uri`, run by this Python.

    Args:
        backend_uri: the backend store; a SQLite store keeps its artifacts in the `artifacts`
            folder beside the database, other stores let the server decide.
        host: the interface to bind.
        port: the port to listen on.
        workers: web server processes; None leaves the number to MLflow (MLFLOW_WORKERS, else
            its default).

    Returns:
        The command, its first item the interpreter (for `os.execv` or `subprocess`).
    """
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
               "--host", host, "--port", str(port)]
    if workers is not None:
        command += ["--workers", str(workers)]
    artifact_root = tracking.local_artifact_root(backend_uri)
    if artifact_root is not None:
        command += ["--default-artifact-root", artifact_root.as_uri()]
    else:
        # A database backend (PostgreSQL): the server stores the artifacts and serves them to
        # its clients (mlflow-artifacts:/ URIs), so clients on other machines need no shared
        # file system.
        destination = paths.project_root() / "build" / "mlflow-artifacts"
        command += ["--artifacts-destination", str(destination)]
    return command


@contextlib.contextmanager
def local_server_if_needed(uri: str) -> Iterator[str]:
    """Yield a URI several processes can log to at once: `uri` itself when it is already a
    server, else a temporary MLflow server on 127.0.0.1 over it."""
    if uri.startswith(("http://", "https://")):
        yield uri
        return
    port = free_port()
    # A session of its own: a terminal's Ctrl-C must not end it before the workers that log
    # through it have marked their runs KILLED; the caller stops it when they are done.
    process = subprocess.Popen(server_command(uri, "127.0.0.1", port),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Return once the MLflow server `process` answers on `url`/health.

    Raises:
        ZooError: the process exited, or did not answer within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ZooError(f"the MLflow server for {url} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise ZooError(f"the MLflow server at {url} did not answer within {timeout:.0f} s")
