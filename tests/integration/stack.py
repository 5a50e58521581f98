"""The services of ``infra/docker-compose.yml`` as processes on 127.0.0.1, for tests.

What a container gives a service, a process gets here, derived from the files themselves:

- the command and environment of its compose service, ``${VAR}`` taken from an env file
  (``infra/.env.example`` plus overrides);
- the image's ``ENV`` and ``WORKDIR`` from ``infra/Dockerfile`` (``/app`` is this checkout);
- a service name and container port a client uses (``@postgres:5432``,
  ``tcp://dask-scheduler:8786``) becomes 127.0.0.1 and a free port, and so does the
  service's own ``--port``/``--dashboard-address``; ``--host 0.0.0.0`` becomes 127.0.0.1
  (nothing but the test should reach these servers);
- a named volume becomes a directory of the stack's temporary directory.

What is not a literal substitution is said where it happens (``TEST_ONLY_ARGS``, the
extra environment in :meth:`Stack.environment`, and PostgreSQL, whose image entrypoint
is replayed by :meth:`Stack.start_postgres` with the distribution's binaries).

Every process runs in its own session and is stopped with its children by
:meth:`Stack.stop`; its output goes to ``<root>/logs/<name>.log`` (:meth:`Stack.logs`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
LOOPBACK = "127.0.0.1"
# Test-only arguments appended to a service's compose command, and why.
TEST_ONLY_ARGS = {
    # mlflow defaults to 4 server processes: one is enough for one client, on 2 cores.
    "mlflow": ["--workers", "1"],
    # The compose network keeps the workers private; here they must not listen on 0.0.0.0.
    "dask-worker": ["--host", LOOPBACK],
}
# Test-only replacements of compose arguments: the workers run 1 thread each, not 2,
# so that two of them fit on a 2-core CI machine.
TEST_ONLY_OPTIONS = {"dask-worker": {"--nthreads": "1"}}
DEBIAN_POSTGRES = Path("/usr/lib/postgresql")
# Variables of the test's own environment that would leak another server into a service.
FOREIGN_PREFIXES = ("PREFECT_", "MLFLOW_", "OOC_", "DASK_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a compose env file (comments and blank lines skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def image_config(dockerfile: Path = INFRA / "Dockerfile") -> tuple[dict[str, str], str]:
    """The ``ENV`` pairs and the last ``WORKDIR`` of a Dockerfile."""
    text = dockerfile.read_text().replace("\\\n", " ")
    env, workdir = {}, "/"
    for line in text.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "ENV":
            for item in shlex.split(rest):
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"{dockerfile}: write ENV as KEY=VALUE, got {line!r}")
                env[key] = value
        elif instruction == "WORKDIR":
            workdir = rest.strip()
    return env, workdir


def postgres_bin() -> Path:
    """The directory of PostgreSQL's server binaries: PATH first, then Debian's layout."""
    needed = ("initdb", "postgres", "psql", "pg_isready")
    candidates = []
    if found := shutil.which("initdb"):
        candidates.append(Path(found).resolve().parent)  # Debian links only some into PATH
    versions = DEBIAN_POSTGRES.glob("*/bin")
    candidates += sorted(versions, key=lambda p: _version(p.parent.name), reverse=True)
    for directory in candidates:
        if all((directory / name).exists() for name in needed):
            return directory
    raise FileNotFoundError(
        f"PostgreSQL server binaries ({', '.join(needed)}) were not found on PATH or in "
        "/usr/lib/postgresql/*/bin. Install them: `apt-get install postgresql` "
        "(.ci/run does it on CI)."
    )


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


@dataclass
class Process:
    """A started service process, its log, and how to stop it."""

    name: str
    popen: subprocess.Popen
    log: Path
    stop_signal: int = signal.SIGTERM
    group: bool = True  # signal the whole session (servers that fork workers)

    def send(self, sig: int) -> None:
        try:
            if self.group:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)
        except ProcessLookupError:
            pass


class Stack:
    """Start compose services as local processes under ``root``; see the module docstring."""

    def __init__(self, root: Path, overrides: dict[str, str] | None = None):
        self.root = Path(root)
        self.compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
        self.services = self.compose["services"]
        self.env = {**read_env_file(INFRA / ".env.example"), **(overrides or {})}
        self.image_env, workdir = image_config()
        self.paths = {workdir: REPO}  # the image's project directory is this checkout
        for name in self.compose.get("volumes") or {}:
            self.paths[name] = self.root / "volumes" / name
        self.ports: dict[tuple[str, int], int] = {}
        self.processes: list[Process] = []
        self.temp_dirs: list[Path] = []
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.bin = Path(sys.executable).parent

    # -- from the compose file to a process ---------------------------------------------------

    def port(self, service: str, container_port: int) -> int:
        """The free local port standing for ``service:container_port``."""
        key = (service, int(container_port))
        if key not in self.ports:
            self.ports[key] = free_port()
        return self.ports[key]

    def url(self, service: str, container_port: int) -> str:
        return f"{LOOPBACK}:{self.port(service, container_port)}"

    @property
    def scheduler_address(self) -> str:
        return f"tcp://{self.url('dask-scheduler', 8786)}"

    def _substitute(self, text: str) -> str:
        def variable(match: re.Match) -> str:
            if match.group(1) not in self.env:
                raise KeyError(f"docker-compose.yml uses ${{{match.group(1)}}}: not in the env")
            return self.env[match.group(1)]

        text = re.sub(r"\$\{(\w+)\}", variable, str(text))
        names = "|".join(re.escape(name) for name in self.services)
        # A client's address of another service: after "//" (a URL) or "@" (credentials).
        return re.sub(
            rf"(?<=[/@])({names}):(\d+)\b", lambda m: self.url(m.group(1), m.group(2)), text
        )

    def _volumes(self, service: str) -> dict[str, Path]:
        """Mount point -> local directory, for the service's named volumes."""
        mounts = {}
        for volume in self.services[service].get("volumes", []):
            source, target = str(volume).split(":")[:2]
            if source in (self.compose.get("volumes") or {}):
                mounts[target] = self.paths[source]
                self.paths[source].mkdir(parents=True, exist_ok=True)
        return mounts

    def _localize_path(self, value: str, mounts: dict[str, Path]) -> str:
        for target, local in mounts.items():
            if value == target or value.startswith(target + "/"):
                return str(local) + value[len(target) :]
        return value

    def command(self, service: str) -> list[str]:
        """The service's compose command, as run here."""
        args = shlex.split(self._substitute(self.services[service]["command"]))
        mounts = self._volumes(service)
        replaced = TEST_ONLY_OPTIONS.get(service, {})
        for i, arg in enumerate(args[1:], start=1):
            option = args[i - 1]
            if option == "--host" and arg == "0.0.0.0":
                args[i] = LOOPBACK
            elif option == "--port":
                args[i] = str(self.port(service, int(arg)))
            elif option == "--dashboard-address":
                args[i] = self.url(service, int(arg.rpartition(":")[2]))
            elif option in replaced:
                args[i] = replaced[option]
            else:
                args[i] = self._localize_path(arg, mounts)
        args += TEST_ONLY_ARGS.get(service, [])
        tool = self.bin / args[0]
        args[0] = str(tool) if tool.exists() else (shutil.which(args[0]) or args[0])
        return args

    def environment(self, service: str, name: str | None = None) -> dict[str, str]:
        """The environment the image and the compose file give the service."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        compose_env = {k: self._substitute(v) for k, v in self.container_env(service).items()}
        mounts = self._volumes(service)
        for key, value in compose_env.items():
            env[key] = self._localize_path(value, mounts)
        # Test-only: what separate containers would keep apart (Prefect's home directory,
        # Dask's scratch space) gets a directory per process instead of ~/.prefect and /tmp.
        home = self.root / "home" / (name or service)
        env["PREFECT_HOME"] = str(home / "prefect")
        env["DASK_TEMPORARY_DIRECTORY"] = str(home / "dask")
        for key in ("PREFECT_HOME", "DASK_TEMPORARY_DIRECTORY"):
            Path(env[key]).mkdir(parents=True, exist_ok=True)
        return env

    def container_env(self, service: str) -> dict[str, str]:
        """Image ``ENV`` (for project services) overlaid with the compose ``environment``."""
        definition = self.services[service]
        env = dict(self.image_env) if "build" in definition else {}
        compose_env = definition.get("environment") or {}
        if isinstance(compose_env, list):
            compose_env = dict(item.split("=", 1) for item in compose_env)
        env.update({k: str(v) for k, v in compose_env.items()})
        return env

    def start(self, service: str, name: str | None = None) -> Process:
        """Start a project service with its compose command and environment."""
        name = name or service
        return self.spawn(name, self.command(service), self.environment(service, name), REPO)

    def spawn(self, name, args, env, cwd, **popen) -> Process:
        log = self.root / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            out.write(f"$ {shlex.join(map(str, args))}\n".encode())
            out.flush()
            popen_ = subprocess.Popen(
                [str(a) for a in args],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen,
            )
        process = Process(name, popen_, log)
        self.processes.append(process)
        return process

    # -- PostgreSQL, the way the postgres image's entrypoint sets it up -----------------------

    def start_postgres(self, service: str = "postgres") -> Process:
        """initdb with POSTGRES_USER/POSTGRES_PASSWORD, start on a free port, wait for the
        compose healthcheck, create POSTGRES_DB, then run the compose file's init scripts.

        The image is not used: Debian's server binaries run as the ``postgres`` user when
        we are root (PostgreSQL refuses root), in a temporary directory that user owns.
        """
        bin_dir = postgres_bin()
        env = {k: self._substitute(v) for k, v in self.container_env(service).items()}
        user, database = env["POSTGRES_USER"], env["POSTGRES_DB"]
        port = self.port(service, 5432)
        as_user = {}
        pgdir = Path(tempfile.mkdtemp(prefix="ooc-postgres-"))
        self.temp_dirs.append(pgdir)
        pwfile = pgdir / "pwfile"
        pwfile.write_text(env["POSTGRES_PASSWORD"] + "\n")
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam("postgres")
            as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            for path in (pgdir, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        log = self.root / "logs" / "postgres.log"
        with open(log, "ab") as out:
            # The image's initdb: the superuser is POSTGRES_USER with its password; local
            # socket connections are trusted, TCP ones need the password (scram-sha-256).
            subprocess.run(
                [
                    bin_dir / "initdb", "-D", pgdir / "data", f"--username={user}",
                    f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                    "--encoding=UTF8", "--no-locale",
                ],
                cwd=pgdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                check=True, timeout=120, **as_user,
            )  # fmt: skip
        pwfile.unlink()
        process = self.spawn(
            "postgres",
            [
                bin_dir / "postgres", "-D", pgdir / "data", "-h", LOOPBACK, "-p", port,
                "-k", pgdir,
                # Test-only: no durability needed, and the migrations run much faster.
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            ],
            {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
            pgdir,
            **as_user,
        )  # fmt: skip
        # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for every client to leave).
        process.stop_signal, process.group = signal.SIGINT, False
        client_env = {
            **os.environ,
            **env,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PGHOST": str(pgdir),
            "PGPORT": str(port),
        }
        self.pg_bin, self.pg_env = bin_dir, client_env
        # Ready when the compose file's own healthcheck passes.
        kind, healthcheck = self.services[service]["healthcheck"]["test"]
        assert kind == "CMD-SHELL", kind
        ready = ["sh", "-c", self._substitute(healthcheck)]

        def answers() -> bool:
            return subprocess.run(ready, env=client_env, capture_output=True).returncode == 0

        self.wait(answers, [process], "PostgreSQL to accept connections")

        def sql(args, what):
            result = subprocess.run(
                args, env=client_env, capture_output=True, text=True, timeout=60, cwd=INFRA
            )
            with open(log, "a") as out:
                out.write(f"$ {shlex.join(map(str, args))}\n{result.stdout}{result.stderr}")
            if result.returncode:
                raise RuntimeError(f"{what} failed:\n{result.stdout}{result.stderr}")

        if database != "postgres":  # the entrypoint creates POSTGRES_DB
            sql(
                [
                    bin_dir / "psql", "-v", "ON_ERROR_STOP=1", "--username", user,
                    "--dbname", "postgres", "-c", f'CREATE DATABASE "{database}"',
                ],
                "creating POSTGRES_DB",
            )  # fmt: skip
        for volume in self.services[service].get("volumes", []):
            source, target = str(volume).split(":")[:2]
            if target.startswith("/docker-entrypoint-initdb.d/") and target.endswith(".sh"):
                sql(["sh", INFRA / source], f"{source}")
        return process

    def psql(self, database: str, query: str) -> str:
        """Run one query as POSTGRES_USER over the socket; rows as ``a|b`` lines."""
        result = subprocess.run(
            [
                self.pg_bin / "psql", "-v", "ON_ERROR_STOP=1", "-A", "-t",
                "--username", self.pg_env["POSTGRES_USER"], "--dbname", database, "-c", query,
            ],
            env=self.pg_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if result.returncode:
            raise RuntimeError(f"psql {database}: {query}\n{result.stderr}")
        return result.stdout.strip()

    # -- waiting, logs, stopping ----------------------------------------------------------

    def wait(
        self, check: Callable[[], bool], processes: list[Process], what: str, timeout=150.0
    ) -> None:
        """Poll ``check`` until true; fail early (with the logs) if a process exits."""
        deadline, last = time.monotonic() + timeout, None
        while True:
            for process in processes:
                if process.popen.poll() is not None:
                    raise RuntimeError(
                        f"{process.name} exited with {process.popen.returncode} while "
                        f"waiting for {what}\n{self.logs()}"
                    )
            try:
                if check():
                    return
            except Exception as err:  # not up yet
                last = err
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{what}: not ready within {timeout:.0f} s (last error: {last!r})\n"
                    f"{self.logs()}"
                )
            time.sleep(0.5)

    def wait_http(self, url: str, process: Process, timeout=150.0) -> None:
        def ok() -> bool:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status == 200

        self.wait(ok, [process], url, timeout)

    def logs(self, lines: int = 40) -> str:
        """The last lines of every process's log, for assertion messages."""
        parts = []
        for log in sorted((self.root / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"---- {log} (last {len(tail)} lines) ----\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every process (PostgreSQL last), then remove the temporary directories."""
        try:
            servers = [p for p in self.processes if p.name != "postgres"]
            databases = [p for p in self.processes if p.name == "postgres"]
            for batch in (servers, databases):
                for process in batch:
                    process.send(process.stop_signal)
                deadline = time.monotonic() + timeout
                for process in batch:
                    try:
                        process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        process.send(signal.SIGKILL)
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            process.popen.wait(timeout=10)
                    # Children left in the session (uvicorn or dask worker processes).
                    if process.group:
                        process.send(signal.SIGKILL)
        finally:
            for path in self.temp_dirs:
                shutil.rmtree(path, ignore_errors=True)
