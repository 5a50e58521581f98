"""``infra/screenshots.py`` end to end: what a person sees of ``ooc run``.

The script starts ``prefect server start``, runs ``ooc run`` in tmux against it, starts
``mlflow ui`` on the run's store, takes headless-Chromium screenshots of both UIs and checks
every picture (not blank, the expected text in each page, the servers' answers). Here it
writes into a temporary directory; it must succeed and leave every picture it names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "screenshots.py"
PICTURES = [
    "terminal.png",
    "prefect-flow-run.png",
    "prefect-artifact.png",
    "mlflow-experiment.png",
    "mlflow-run.png",
    "mlflow-run-metrics.png",
    "mlflow-metric.png",
    "task-stream-fit.png",
    "cpu-memory.png",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def run_script(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run the script; past ``timeout``, stop it as Ctrl-C would, so it stops its servers."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the script's finally stops what it started
        try:
            stdout, stderr = process.communicate(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"infra/screenshots.py took over {timeout:.0f} s:\n{stdout}\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_the_screenshots_script_takes_and_checks_every_picture(tmp_path):
    if not any(shutil.which(name) for name in CHROMIUM):
        pytest.skip("Chromium is not installed (.ci/run installs it: apt-get install chromium)")
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/run installs it: apt-get install tmux)")
    out = tmp_path / "screenshots"
    result = run_script("--out", str(out), "--run-timeout", "300", cwd=tmp_path, timeout=480)
    report = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-6000:]}"
    assert result.returncode == 0, report
    assert "checks passed" in result.stdout, report
    for name in PICTURES:
        picture = out / name
        assert picture.exists(), f"{name} is missing\n{report}"
        assert picture.read_bytes()[:8] == PNG_SIGNATURE, f"{name} is not a PNG"
        assert str(picture) in result.stdout, f"the script does not say where {name} is"
    # Nothing but the pictures is left in the output directory.
    assert sorted(p.name for p in out.iterdir()) == sorted(PICTURES)
