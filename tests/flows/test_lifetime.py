"""No process outlives its command, and no partial file is left, however it is stopped.

Real ``ooc`` commands as subprocesses, each stopped mid-run by SIGTERM, SIGINT (Ctrl-C)
or SIGKILL: every process they started (the temporary Prefect API, Dask workers) is gone
afterwards, and every file under an output's final name is complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROWS, CHUNK = 4_000_000, 50_000  # 80 files (seconds of writing): still writing when stopped


def _env(home: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "OOC_DASK"))}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1", **extra)
    return env


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A Prefect home whose database exists (the first use is not what is tested here)."""
    home = tmp_path_factory.mktemp("prefect-home")
    out = tmp_path_factory.mktemp("warm")
    subprocess.run(
        [sys.executable, "-m", "ooc.flows.cli", "generate", "--out", str(out / "d"),
         "--rows", "1000", "--workdir", str(out), "--json"],
        env=_env(home), check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return home


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _complete(path: Path) -> bool:
    try:
        return pq.read_metadata(path).num_rows == CHUNK
    except (OSError, pa.ArrowException):
        return False


def _foreground() -> None:
    """Ctrl-C's default action, as in a terminal: a suite started in the background by a
    non-interactive shell (``make test &``) hands its children SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("sig", "processes"),
    [
        (signal.SIGTERM, True),
        (signal.SIGINT, True),
        (signal.SIGKILL, True),
        (signal.SIGKILL, False),  # the default: workers are threads of the command
    ],
    ids=["term", "int", "kill", "kill-threads"],
)
def test_a_stopped_command_leaves_no_process_and_no_partial_file(home, tmp_path, sig, processes):
    out = tmp_path / "data"
    env = _env(home, OOC_WORKER_PROCESSES=str(processes).lower(), OOC_N_WORKERS="2")
    command = subprocess.Popen(
        [sys.executable, "-m", "ooc.flows.cli", "generate", "--out", str(out), "--rows",
         str(ROWS), "--chunk-rows", str(CHUNK), "--workdir", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_foreground,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline:
            assert command.poll() is None, command.stdout.read().decode()
            time.sleep(0.05)
        started = _descendants(command.pid)
        assert any("uvicorn" in " ".join(p.cmdline()) for p in started)  # the temporary API
        if processes:
            assert len(started) >= 3  # and the worker processes
        command.send_signal(sig)
        command.wait(timeout=60)
        output = command.stdout.read().decode()
    finally:
        if command.poll() is None:
            command.kill()

    if sig != signal.SIGKILL:
        assert command.returncode == 130, output
        assert "run the same command again to continue" in output
    # Every process the command started has ended (the API by the kernel's parent-death
    # signal, Dask's worker processes by their own parent check).
    gone, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    # Stopped mid-run: some files written, not all; each one complete, nothing else left.
    files = sorted(out.iterdir())
    written = [f for f in files if f.name.startswith("part-")]
    assert 0 < len(written) < ROWS // CHUNK
    assert all(_complete(f) for f in written), [f for f in written if not _complete(f)]
    assert {f.name for f in files} - {f.name for f in written} == {"_manifest.json"}
