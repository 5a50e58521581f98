"""Fault case 8: services listen on 127.0.0.1 by default, the repository holds no secret,
and the README states whom a registered model must come from.

The compose file's published ports are checked in ``test_infra.py``
(``test_every_published_port_is_on_loopback``); these tests check our own defaults.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# -- loopback by default ------------------------------------------------------------------------


def _listening(process) -> set[tuple[str, int]]:
    """(ip, port) of the TCP sockets ``process`` and its children listen on."""
    import psutil

    found = set()
    for proc in [process, *process.children(recursive=True)]:
        try:
            connections = proc.net_connections(kind="tcp")
        except psutil.Error:  # a child that ended meanwhile
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == "LISTEN"}
    return found


def _clear_cluster_settings(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("OOC_"):
            monkeypatch.delenv(name)


def test_the_default_cluster_listens_on_loopback_only(monkeypatch):
    """The LocalCluster a command starts without settings (``flows/session.py``): worker
    threads of the command's process that talk in-process (``inproc://``); the sockets it
    opens (the dashboard, a worker's HTTP endpoint) are on 127.0.0.1 only."""
    import psutil

    from ooc.flows.runner import dask_task_runner
    from ooc.flows.session import _local_cluster
    from ooc.tasks.settings import Settings

    _clear_cluster_settings(monkeypatch)
    assert Settings().dashboard_address == "127.0.0.1:8787"
    runner = dask_task_runner()
    assert runner.cluster_kwargs["processes"] is False
    # 8787, or any free port when another process holds it: on loopback either way.
    assert runner.cluster_kwargs["dashboard_address"] in ("127.0.0.1:8787", "127.0.0.1:0")

    me = psutil.Process()
    before = _listening(me)
    # Any free dashboard port (8787 may be taken on a shared machine: the address is what
    # is tested, not the port).
    with _local_cluster(Settings(dashboard_address="127.0.0.1:0")) as cluster:
        opened = _listening(me) - before
        assert cluster.scheduler_address.startswith("inproc://")
        assert all(a.startswith("inproc://") for a in cluster.scheduler_info["workers"])
        dashboard_port = int(cluster.dashboard_link.rsplit(":", 1)[1].split("/")[0])
    assert ("127.0.0.1", dashboard_port) in opened, opened
    # Nothing else on any other interface (a worker's own HTTP server included).
    assert {ip for ip, _ in opened} == {"127.0.0.1"}, opened


def test_a_cluster_of_worker_processes_listens_on_loopback_only(monkeypatch):
    """With ``OOC_WORKER_PROCESSES``: scheduler, nannies, workers and dashboards all bind
    127.0.0.1 (checked on the sockets themselves)."""
    import psutil

    from ooc.flows.runner import dask_task_runner
    from ooc.flows.session import _local_cluster
    from ooc.tasks.settings import Settings

    _clear_cluster_settings(monkeypatch)
    monkeypatch.setenv("OOC_WORKER_PROCESSES", "true")
    runner = dask_task_runner()
    assert runner.cluster_kwargs["processes"] is True
    assert runner.cluster_kwargs["host"] == "127.0.0.1"

    me = psutil.Process()
    before = _listening(me)
    settings = Settings(n_workers=1, dashboard_address="127.0.0.1:0")
    with _local_cluster(settings) as cluster:
        opened = _listening(me) - before
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
        assert all(a.startswith("tcp://127.0.0.1:") for a in cluster.scheduler_info["workers"])
    # scheduler, dashboard, nanny, worker (and the worker's own dashboard)
    assert len(opened) >= 4, opened
    assert {ip for ip, _ in opened} == {"127.0.0.1"}, opened


def test_the_temporary_prefect_api_of_a_command_is_on_loopback_and_ends_with_it(tmp_path):
    """Without PREFECT_API_URL, a command starts ``flows/api.py``'s temporary API: it
    listens on 127.0.0.1 only, and the kernel ends it when the command's process dies,
    however it dies."""
    import psutil

    code = (
        "import time\n"
        "from ooc.flows.api import TemporaryAPI\n"
        "api = TemporaryAPI()\n"
        "api.start()\n"
        "api.wait_ready(300)\n"
        "print(api.process.pid, api.url, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    command = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        line = command.stdout.readline()
        assert line, f"the API did not start: {command.communicate(timeout=30)[1][-3000:]}"
        pid, url = line.split()
        server = psutil.Process(int(pid))
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
        listening = _listening(server)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert ("127.0.0.1", port) in listening
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
    finally:
        command.kill()  # SIGKILL: the command has no chance to stop the server itself
        command.wait(timeout=30)
    server.wait(timeout=30)  # psutil.TimeoutExpired if the server outlived the command
    assert not server.is_running()


# -- no secret in the repository -----------------------------------------------------------------

SENSITIVE_WORDS = r"password|passwd|pwd|secret|token|api_?key|access_?key|private_?key|credential"
ASSIGNMENT = re.compile(
    rf"(?i)\b(?P<key>[a-z0-9_.-]*(?:{SENSITIVE_WORDS})[a-z0-9_]*)\b[\"']?\s*[:=]\s*"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;#]+)"
)
URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:(?P<value>[^@\s/]+)@")
TOKEN_FORMATS = [
    re.compile(p)
    for p in (
        r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key id
        r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",  # GitHub tokens
        r"\bgithub_pat_[A-Za-z0-9_]{22,}\b",
        r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",  # Slack
        r"\bsk-[A-Za-z0-9_-]{20,}\b",  # API secret keys of several services
        "-----BEGIN " + r"[A-Z ]*PRIVATE KEY-----",
    )
]
PLACEHOLDERS = {"change-me", "changeme", "example", "dummy", "none", "null", "true", "false"}


def _is_placeholder(value: str) -> bool:
    """An empty value, a placeholder, or a reference to a value kept elsewhere."""
    value = value.strip("\"'")
    if not value or value.lower() in PLACEHOLDERS or set(value) <= {"*", "x", "X", "."}:
        return True
    # ${VAR}, $VAR, <your-token>, {placeholder}, a call or attribute (code, not a value),
    # a type annotation, or a word naming the variable rather than holding it.
    return (
        value.startswith(("$", "<", "{", "%("))
        or any(ch in value for ch in "().[]")
        or value in {"str", "int", "bool", "SecretStr"}
        or len(value) < 8
    )


def find_secrets(text: str) -> list[str]:
    """The lines of ``text`` that look like a credential with a real value."""
    hits = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in ASSIGNMENT.finditer(line):
            if not _is_placeholder(match["value"]):
                hits.append(f"{number}: {line.strip()}")
        for match in URL_CREDENTIALS.finditer(line):
            if not _is_placeholder(match["value"]):
                hits.append(f"{number}: {line.strip()}")
        if any(p.search(line) for p in TOKEN_FORMATS):
            hits.append(f"{number}: {line.strip()}")
    return hits


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def tracked_files() -> list[Path]:
    if shutil.which("git") is None or _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / name for name in _git("ls-files", "-z").stdout.split("\0") if name]


@pytest.mark.parametrize(
    "line",
    [
        "POSTGRES_PASSWORD=" + "hunter2hunter2",
        '    api_key = "' + "f3a9c1d2e4b5a6978" + '"',
        "  token: " + "0123456789abcdef0123",
        "postgresql://ooc:" + "s3cretpassw0rd" + "@db:5432/ooc",
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "-----BEGIN " + "RSA PRIVATE KEY-----",
    ],
)
def test_the_scan_finds_credentials(line):
    assert find_secrets(line), line


@pytest.mark.parametrize(
    "line",
    [
        "POSTGRES_PASSWORD=change-me",
        "      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}",
        "postgresql+asyncpg://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/x",
        'token = os.environ["TOKEN"]',
        "password: str",
    ],
)
def test_the_scan_lets_placeholders_pass(line):
    assert find_secrets(line) == [], line


def test_no_secret_in_any_tracked_file(tracked_files):
    found = {}
    for path in tracked_files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary, or deleted in the working tree
        hits = find_secrets(text)
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert found == {}, f"credential-like values in tracked files: {found}"


def test_the_env_file_is_ignored_and_not_tracked(tracked_files):
    assert _git("check-ignore", "-q", "infra/.env").returncode == 0, "infra/.env not ignored"
    assert ROOT / "infra" / ".env" not in tracked_files
    assert ROOT / "infra" / ".env.example" in tracked_files


# -- the trust model ---------------------------------------------------------------------------


def test_the_readme_states_the_trust_model_for_registered_models():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"\*\*Trust\.\*\*(?P<body>.+?)(?:\n\n|\Z)", readme, flags=re.S)
    assert match, "README has no **Trust.** paragraph"
    body = " ".join(match["body"].split())
    assert "pickle" in body and "cloudpickle" in body
    assert "runs code" in body
    assert "registry you control" in body
