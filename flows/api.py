"""A temporary Prefect API for one command, as a child process that cannot outlive it.

Prefect's own ephemeral server is a plain subprocess: ``kill -9`` of the command leaves it
running. This one asks the kernel to end it when the command ends, however it ends
(``PR_SET_PDEATHSIG``), runs in its own process group (a Ctrl-C reaches the command, which
stops it in order after the last logs are sent), and waits long enough on first use, when
Prefect creates its database.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ooc.tasks.lifetime import end_with_parent


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()


def first_use() -> bool:
    """No Prefect database yet: the server creates it, which takes a while, once."""
    if os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"):
        return False
    return not (prefect_home() / "prefect.db").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryAPI:
    """``start()`` returns at once; ``wait_ready()`` blocks until the API answers."""

    def __init__(self):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    def start(self) -> None:
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],  # fmt: skip
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=end_with_parent,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> None:
        """Block until ``/health`` answers; a clear error if the server died or is slow."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"The temporary Prefect API exited with code {self.process.returncode} "
                    f"before answering: {self._output()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"The temporary Prefect API did not answer within {timeout:.0f} s. Is the "
            f"machine very busy? Its output: {self._output() or '(none)'}"
        )

    def _output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:].strip()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
