"""What a person sees: the terminal, the Prefect UI and the MLflow UI of one ``ooc run``.

    python infra/screenshots.py --out infra/screenshots

1. starts ``prefect server start`` on 127.0.0.1 (a free port, its own temporary
   PREFECT_HOME, analytics off, the UI on) and, beside it, ``mlflow ui`` on the sqlite
   store the run will write; runs ``ooc run`` inside tmux (150x45) with ``PREFECT_API_URL``
   pointing at the server; when the command is done, its whole scrollback (progress bars,
   log lines, summary tables, the lines that say where to look) is drawn as
   ``terminal.png`` (rich's SVG of the ANSI text, photographed by Chromium);
2. takes headless-Chromium screenshots (a fresh profile each: a first visit) of the
   Prefect flow run, its ``ooc-run-summary`` artifact, the MLflow experiment, the MLflow
   run, its "Model metrics" tab and its learning curve, and copies the run's profile
   figures next to them. MLflow pages are opened in the model-training view
   (``workflowType=machine_learning``) and under a host name that is not localhost
   (see :func:`start_mlflow`);
3. checks every picture: not one flat colour, the expected text in each page's DOM, and
   what the servers' APIs say (the flow run completed, the experiment is a model-training
   one, the learning curve has points); a failed check exits 1 with what was expected and
   what came. What looks wrong but does not hide the run (a progress bar left short, a
   link that does not answer, a ``nan``) is printed as a note;
4. stops every process it started (process groups, also on error, Ctrl-C or SIGTERM)
   and prints where the pictures are. ``--keep`` keeps the temporary directory (server
   logs, the terminal's text, each page's DOM); it is kept anyway when something failed.

Needs tmux and Chromium (``apt-get install -y chromium tmux``), and the project's
environment (run it with ``.venv/bin/python``: its ``ooc``, ``prefect`` and ``mlflow``).
"""

from __future__ import annotations

import argparse
import io
import json
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
import urllib.error
import urllib.parse
import urllib.request
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the environment's ooc, prefect and mlflow
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# The user's settings never leak into the servers or the run.
FOREIGN_PREFIXES = ("PREFECT_", "MLFLOW_", "OOC_", "DASK_")
TERMINAL = (150, 45)  # columns, rows of the tmux window
BROWSER = (1440, 1000)  # Chromium's window for the UI pages
MLFLOW_HOST = "ooc-mlflow.test"  # the browser's name for 127.0.0.1 (see start_mlflow)
# Items of MLflow's GenAI side bar, absent from its model-training view.
GENAI_VIEW = ["Sessions", "Judges", "Evaluation runs", "Agent versions", "MLflow Assistant"]
PICTURES = (
    "terminal.png",
    "prefect-flow-run.png",
    "prefect-artifact.png",
    "mlflow-experiment.png",
    "mlflow-run.png",
    "mlflow-run-metrics.png",
    "mlflow-metric.png",
    "task-stream-fit.png",
    "cpu-memory.png",
)


class CheckFailed(Exception):
    """A picture or a server's answer is not what a person should see."""


_STARTED = time.monotonic()


def say(message: str) -> None:
    elapsed = time.monotonic() - _STARTED
    print(f"screenshots {elapsed:5.1f}s: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


# -- processes ------------------------------------------------------------------------------


@dataclass
class Processes:
    """Every process this script starts, each in its own process group, stopped in reverse."""

    started: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    cleanups: list = field(default_factory=list)

    def start(self, name: str, args: list[str], *, env: dict, cwd: Path, log: Path):
        handle = log.open("wb")
        process = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        handle.close()
        self.started.append((name, process))
        return process

    def stop(self) -> None:
        for cleanup in reversed(self.cleanups):
            with suppress(Exception):
                cleanup()
        for name, process in reversed(self.started):
            _stop_group(process)
            say(f"stopped {name}")


def _stop_group(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM to the process's group, SIGKILL if it does not end within ``grace``."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Children left in the group (server workers) go too.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def run_group(args: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a new process group, the whole group killed on timeout."""
    process = subprocess.Popen(args, start_new_session=True, **kwargs)
    try:
        out, err = process.communicate(timeout=timeout)
    except BaseException:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    finally:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # helpers Chromium left behind
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


# -- HTTP -----------------------------------------------------------------------------------


def http_json(url: str, payload: dict | None = None, timeout: float = 15.0):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace")[:500]
        raise CheckFailed(f"{url} answered {err.code}: {body}") from None
    except OSError as err:
        raise CheckFailed(f"{url} did not answer: {err}") from None


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CheckFailed(
                f"{shlex.join(map(str, process.args[:3]))} exited with {process.returncode} "
                f"before {url} answered; its log ends:\n{tail(log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise CheckFailed(f"{url} did not answer within {timeout:.0f} s; log:\n{tail(log)}")


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- the terminal ---------------------------------------------------------------------------


class Tmux:
    """A tmux server of our own (its own socket), one window of a fixed size."""

    def __init__(self, tmp: Path, processes: Processes):
        self.socket = tmp / "tmux.sock"
        self.conf = tmp / "tmux.conf"
        self.conf.write_text(
            "set -g history-limit 100000\n"
            'set -g default-terminal "tmux-256color"\n'
            "set -g status off\n"
        )
        processes.cleanups.append(self.kill)

    def tmux(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", str(self.conf), *args],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise CheckFailed(f"tmux {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result.stdout

    def start(self, script: Path, env: dict, cwd: Path) -> None:
        cols, rows = TERMINAL
        # The server takes the environment of the client that starts it.
        subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", str(self.conf), "new-session", "-d",
             "-s", "ooc", "-x", str(cols), "-y", str(rows), "-c", str(cwd),
             f"bash --norc --noprofile {shlex.quote(str(script))}"],
            env=env, check=True, timeout=30,
        )  # fmt: skip

    def capture(self) -> str:
        """The pane's whole history and screen, with colours, without trailing blank lines."""
        text = self.tmux("capture-pane", "-p", "-e", "-S", "-", "-E", "-", "-t", "ooc")
        return "\n".join(text.rstrip().splitlines()) + "\n"

    def kill(self) -> None:
        if not self.socket.exists():
            return
        pid = self.tmux("display-message", "-p", "-t", "ooc", "#{pane_pid}", check=False).strip()
        if pid.isdigit():  # the command first, as a Ctrl-C would (its own process group)
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGTERM)
            time.sleep(1)
        self.tmux("kill-server", check=False)


def run_in_tmux(tmux: Tmux, command: list[str], env: dict, tmp: Path, timeout: float) -> str:
    status = tmp / "ooc-run.status"
    script = tmp / "ooc-run.sh"
    shown = shlex.join(["ooc", *command[1:]])
    script.write_text(
        "printf '\\033[1;32m$\\033[0m %s\\n' " + shlex.quote(shown) + "\n"
        + shlex.join(command) + "\n"
        + f"echo $? > {shlex.quote(str(status))}\n"
        + "exec sleep 100000\n"  # keeps the pane, and no prompt, until it is captured
    )  # fmt: skip
    tmux.start(script, env, tmp)
    deadline = time.monotonic() + timeout
    while not status.exists() or not status.read_text().strip():
        if time.monotonic() > deadline:
            raise CheckFailed(
                f"`{shown}` did not finish within {timeout:.0f} s; the terminal shows:\n"
                + strip_ansi(tmux.capture())[-3000:]
            )
        time.sleep(1)
    text = tmux.capture()
    (tmp / "terminal.ansi").write_text(text)
    code = int(status.read_text())
    if code != 0:
        last = "\n".join(strip_ansi(text).splitlines()[-40:])
        raise CheckFailed(f"`{shown}` exited with {code}; the terminal ends:\n{last}")
    return text


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;:?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]", "", text)


def terminal_svg(ansi: str, title: str) -> tuple[str, int, int]:
    """The terminal text as rich draws it (an SVG with a window frame); its pixel size."""
    from rich.console import Console
    from rich.text import Text

    console = Console(
        record=True, width=TERMINAL[0], file=io.StringIO(), force_terminal=True,
        color_system="truecolor", legacy_windows=False,
    )  # fmt: skip
    for line in ansi.splitlines():
        console.print(Text.from_ansi(line), no_wrap=True, crop=True, overflow="crop")
    svg = console.export_svg(title=title)
    # No web fonts (no internet); the monospace font of the machine.
    svg = re.sub(r"@font-face \{[^}]*\}\s*", "", svg)
    svg = svg.replace("font-family: Fira Code, monospace", "font-family: monospace")
    width, height = map(float, re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())
    return svg, int(width + 0.5), int(height + 0.5)


# -- the browser ----------------------------------------------------------------------------


class Browser:
    """Headless Chromium, a fresh profile for each page (always a first visit)."""

    def __init__(self, chromium: str, tmp: Path):
        self.chromium = chromium
        self.tmp = tmp
        self.loads = 0

    def page(self, url: str, path: Path, size=BROWSER, budget_ms: int = 15000) -> str:
        """Load ``url``, let it render, write its screenshot to ``path``; return its DOM.

        The virtual-time budget lets a single-page app fetch and draw before the picture
        is taken (time runs fast while the page is idle); every compositor stage runs
        before the picture, so charts drawn when they come into view are drawn.
        """
        # Headless Chromium now and then never ends a virtual-time budget (seen once in CI,
        # on a page it loads in seconds otherwise): such a run is killed and started again.
        for attempt in range(1, 4):
            result = self._load(url, path, size, budget_ms)
            if result is not None:
                break
            say(f"Chromium hung on {url} (attempt {attempt} of 3); starting it again")
        else:
            raise CheckFailed(f"Chromium did not finish loading {url} in 3 attempts of 90 s")
        (self.tmp / f"{path.stem}.dom.html").write_text(f"<!-- {url} -->\n{result.stdout}")
        if not path.exists() or not result.stdout.strip():
            errors = [line for line in result.stderr.splitlines() if "dbus" not in line]
            raise CheckFailed(
                f"Chromium wrote no screenshot or no DOM of {url} (exit {result.returncode}):\n"
                + "\n".join(errors)[-2000:]
            )
        return visible_text(result.stdout)

    def _load(self, url: str, path: Path, size, budget_ms: int):
        """One Chromium run: its completed process, or None if it hung."""
        self.loads += 1
        profile = self.tmp / f"chromium-profile-{self.loads}"
        profile.mkdir()
        path.unlink(missing_ok=True)
        args = [
            self.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
            "--hide-scrollbars", "--mute-audio", "--force-device-scale-factor=1", "--lang=en-US",
            "--run-all-compositor-stages-before-draw",
            f"--host-resolver-rules=MAP {MLFLOW_HOST} 127.0.0.1",
            f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", "--dump-dom", url,
        ]  # fmt: skip
        try:
            return run_group(
                args, timeout=90, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                cwd=self.tmp,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return None
        finally:
            shutil.rmtree(profile, ignore_errors=True)


def visible_text(dom: str) -> str:
    """The page's text: the DOM without scripts, styles and tags, spaces collapsed."""
    dom = re.sub(r"(?is)<(script|style|noscript)\b.*?</\1>", " ", dom)
    text = re.sub(r"(?s)<[^>]+>", " ", dom)
    for entity, char in (("&nbsp;", " "), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"),
                         ("&quot;", '"'), ("&#39;", "'")):  # fmt: skip
        text = text.replace(entity, char)
    return re.sub(r"\s+", " ", text)


# -- checks ---------------------------------------------------------------------------------


@dataclass
class Report:
    """Checks that fail the script, and notes: what looks wrong but still shows the run."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        (self.passed if ok else self.failed).append(what if ok else f"{what}: {detail}")
        say(("ok    " if ok else "FAIL  ") + what + ("" if ok else f" ({detail})"))
        return ok

    def warn(self, ok: bool, what: str, seen: str) -> bool:
        """Like :meth:`check`, but what is not so is a note (the pictures still show the run)."""
        (self.passed if ok else self.notes).append(what if ok else seen)
        say(f"ok    {what}" if ok else f"NOTE  {seen}")
        return ok


def check_png(report: Report, path: Path) -> None:
    import matplotlib.image as mpimg
    import numpy as np

    if not report.check(path.exists() and path.stat().st_size > 0, f"{path.name} exists",
                        f"{path} is missing or empty"):  # fmt: skip
        return
    pixels = np.atleast_3d(mpimg.imread(path))[..., :3]  # grey, RGB or RGBA
    flat = pixels.reshape(-1, pixels.shape[-1])
    spread = float(flat.std(axis=0).max())
    step = max(1, len(flat) // 200_000)
    colours = len(np.unique((flat[::step] * 255).astype(np.uint8), axis=0))
    height, width = pixels.shape[:2]
    report.check(
        spread > 0.02 and colours > 8,
        f"{path.name} is not blank ({width}x{height}, {colours} colours, spread {spread:.3f})",
        f"one flat colour (spread {spread:.4f}, {colours} colours)",
    )


def answers(url: str) -> bool:
    """Whether a browser following ``url`` gets a page (single-page apps serve theirs only
    to a request that accepts HTML)."""
    request = urllib.request.Request(url, headers={"Accept": "text/html,*/*;q=0.8"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status < 400
    except (OSError, ValueError):
        return False


def check_links(report: Report, where: str, text: str) -> None:
    """Every web address ``text`` shows answers (while this script's servers run)."""
    for url in dict.fromkeys(re.findall(r"https?://[^\s)\]`'\"<>]+", text)):
        report.warn(answers(url), f"{where}'s link {url} answers",
                    f"{where}'s link {url} does not answer")  # fmt: skip


def check_text(report: Report, page: str, text: str, expected: list[str], absent=()) -> None:
    for phrase in expected:
        report.check(phrase.lower() in text.lower(), f"{page} shows {phrase!r}",
                     f"not in its DOM text: {text[:300]!r}...")  # fmt: skip
    for phrase in absent:
        report.check(phrase.lower() not in text.lower(), f"{page} does not show {phrase!r}",
                     "found in its DOM text")  # fmt: skip


# -- the run --------------------------------------------------------------------------------


def start_prefect(processes: Processes, tmp: Path, home: Path):
    """``prefect server start`` with the UI, its own PREFECT_HOME; returns its URL, the
    environment of its clients, the process and its log."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="true",
        DO_NOT_TRACK="1",
    )
    # The UI asks the API named here, not the --port it is served on (else :4200).
    server_env = dict(
        env, PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=f"{url}/api",
    )  # fmt: skip
    log = tmp / "prefect-server.log"
    say(f"starting prefect server on {url} (PREFECT_HOME {home})")
    process = processes.start(
        "prefect server",
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
         "--ui", "--analytics-off", "--no-background"],
        env=server_env, cwd=tmp, log=log,
    )  # fmt: skip
    return url, env, process, log


def start_mlflow(processes: Processes, tmp: Path, store: str):
    """``mlflow ui`` on 127.0.0.1; the browser reaches it as ``MLFLOW_HOST``.

    Seen from localhost, MLflow 3 opens its Assistant panel over a third of every page on
    the first visit (each screenshot is a first visit): under another host name it does
    not, and that name is allowed as the Host and the Origin of the UI's requests.
    Returns the API's URL, the browser's, the process and its log.
    """
    port = free_port()
    url, browser_url = f"http://127.0.0.1:{port}", f"http://{MLFLOW_HOST}:{port}"
    log = tmp / "mlflow-ui.log"
    say(f"starting mlflow ui on {url} ({store})")
    process = processes.start(
        "mlflow ui",
        [str(BIN / "mlflow"), "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--allowed-hosts", f"127.0.0.1:{port},localhost:{port},{MLFLOW_HOST}:{port}",
         "--cors-allowed-origins", browser_url],
        env=clean_env(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1"),
        cwd=tmp, log=log,
    )  # fmt: skip
    return url, browser_url, process, log


def flow_run_of(prefect: str) -> dict:
    runs = http_json(
        f"{prefect}/api/flow_runs/filter",
        {"flows": {"name": {"any_": ["pipeline"]}}, "sort": "START_TIME_DESC", "limit": 5},
    )
    if len(runs) != 1:
        raise CheckFailed(f"expected one `pipeline` flow run on {prefect}, found {len(runs)}")
    return runs[0]


def artifacts_of(prefect: str, flow_run_id: str) -> dict[str, dict]:
    """The flow run's artifacts by key (the latest of each key)."""
    artifacts = http_json(
        f"{prefect}/api/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "CREATED_DESC"},
    )
    latest: dict[str, dict] = {}
    for artifact in artifacts:
        latest.setdefault(artifact.get("key") or artifact["id"], artifact)
    return latest


def mlflow_run_of(mlflow: str, flow_run_id: str) -> tuple[dict, dict]:
    api = f"{mlflow}/api/2.0/mlflow"
    query = urllib.parse.urlencode({"experiment_name": "ooc"})
    experiment = http_json(f"{api}/experiments/get-by-name?{query}")["experiment"]
    found = http_json(
        f"{api}/runs/search",
        {"experiment_ids": [experiment["experiment_id"]],
         "filter": f"tags.`prefect.flow_run_id` = '{flow_run_id}'"},
    ).get("runs", [])  # fmt: skip
    if len(found) != 1:
        raise CheckFailed(f"expected one MLflow run tagged with flow run {flow_run_id}, "
                          f"found {len(found)}")  # fmt: skip
    return experiment, found[0]


def metric_history(mlflow: str, run_id: str, key: str) -> list[dict]:
    query = urllib.parse.urlencode({"run_id": run_id, "metric_key": key})
    return http_json(f"{mlflow}/api/2.0/mlflow/metrics/get-history?{query}").get("metrics", [])


def metric_page(mlflow_ui: str, experiment_id: str, run_id: str, key: str) -> str:
    """MLflow's metric page of one run, by step (for ``*_by_rows``: rows seen), points shown."""
    parts = [
        ("runs", json.dumps([run_id])),
        ("metric", json.dumps(key)),
        ("experiments", json.dumps([experiment_id])),
        ("plot_metric_keys", json.dumps([key])),
        ("plot_layout", "{}"),
        ("x_axis", "step"),
        ("y_axis_scale", "linear"),
        ("line_smoothness", "1"),
        ("show_point", "true"),
        ("deselected_curves", "[]"),
        ("last_linear_y_axis_range", "[]"),
    ]
    return f"{mlflow_ui}/#/metric?" + "&".join(f"{k}={urllib.parse.quote(v)}" for k, v in parts)


def take(args, tmp: Path, out: Path, report: Report, processes: Processes) -> None:
    chromium = find_chromium()
    if chromium is None:
        raise CheckFailed("Chromium is not installed: apt-get install -y chromium")
    if shutil.which("tmux") is None:
        raise CheckFailed("tmux is not installed: apt-get install -y tmux")
    browser = Browser(chromium, tmp)
    work = tmp / "work"

    # -- the run, in a terminal, recorded by a real Prefect server. MLflow starts meanwhile
    # on the store the run will use (it creates the database, the run its experiment).
    work.mkdir()
    prefect, server_env, prefect_process, prefect_log = start_prefect(
        processes, tmp, tmp / "prefect-home"
    )
    mlflow, mlflow_ui, mlflow_process, mlflow_log = start_mlflow(
        processes, tmp, f"sqlite:///{work / 'mlflow.db'}"
    )
    wait_http(f"{prefect}/api/health", prefect_process, prefect_log, timeout=180)
    wait_http(f"{mlflow}/health", mlflow_process, mlflow_log, timeout=180)
    run_env = dict(
        server_env,
        PREFECT_API_URL=f"{prefect}/api",
        # The run's Dask dashboard on a free port: another process's 8787 makes no warning.
        OOC_DASHBOARD_ADDRESS=f"127.0.0.1:{free_port()}",
    )
    run_env.pop("PREFECT_SERVER_UI_ENABLED", None)
    # Blocks of 50,000 rows: several blocks per file, so the learning curve has points.
    command = [str(BIN / "ooc"), "run", "--rows", str(args.rows), "--epochs", str(args.epochs),
               "--block-rows", "50000", "--workdir", str(work)]  # fmt: skip
    say(f"running {shlex.join(['ooc', *command[1:]])} in tmux ({TERMINAL[0]}x{TERMINAL[1]})")
    started = time.monotonic()
    tmux = Tmux(tmp, processes)
    ansi = run_in_tmux(tmux, command, run_env, tmp, timeout=args.run_timeout)
    say(f"ooc run finished in {time.monotonic() - started:.0f} s")
    tmux.kill()

    # -- the terminal
    flow_run = flow_run_of(prefect)
    run_id, run_name = flow_run["id"], flow_run["name"]
    plain = strip_ansi(ansi)
    svg, width, height = terminal_svg(ansi, "ooc run")
    page = tmp / "terminal.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><style>html,body{margin:0;"
        "background:#fff}svg{display:block}</style></head><body>"
        + svg.replace("<svg ", f'<svg width="{width}" height="{height}" ', 1)
        + "</body></html>"
    )
    browser.page(page.as_uri(), out / "terminal.png", size=(width, height), budget_ms=1000)
    check_text(
        report, "the terminal", plain,
        ["Holdout metrics", "accuracy", "rows/s", "MLflow", f"/runs/flow-run/{run_id}",
         f"Flow run '{run_name}' - Finished in state Completed"],
        absent=["Traceback", "| ERROR"],
    )  # fmt: skip
    warnings = [line for line in plain.splitlines() if "Warning" in line or "| WARNING" in line]
    report.warn(not warnings, "the terminal shows no warning", f"the terminal shows {warnings[:2]}")
    check_links(report, "the terminal", plain)
    bars = re.findall(r"^(\w+) +━+ +(\d+)/(\d+) ", plain, flags=re.M)
    report.check(bool(bars), f"the terminal shows {len(bars)} progress bars", "none")
    for stage, done, total in bars:
        report.warn(done == total, f"the terminal's {stage} bar ends full",
                    f"the terminal's {stage} bar ends at {done}/{total}, not full")  # fmt: skip
    nans = [line.split(" - ")[-1] for line in plain.splitlines() if re.search(r"\bnan\b", line)]
    report.warn(not nans, "the terminal shows no 'nan'", f"the terminal shows {nans[:1]}")

    # -- Prefect
    state = flow_run.get("state_type")
    report.check(state == "COMPLETED", f"the Prefect flow run {run_name} is COMPLETED", str(state))
    text = browser.page(f"{prefect}/runs/flow-run/{run_id}", out / "prefect-flow-run.png",
                        size=(BROWSER[0], 1400))  # fmt: skip
    check_text(report, "the Prefect flow run page", text,
               [run_name, "pipeline", "Completed", "Registered ooc-classification version"],
               absent=["Can't connect to Server API"])  # fmt: skip
    artifacts = artifacts_of(prefect, run_id)
    for key in ("ooc-run-summary", "mlflow-run"):
        report.check(key in artifacts, f"the flow run has the {key} artifact",
                     f"its artifacts: {sorted(artifacts)}")  # fmt: skip
    for key, artifact in sorted(artifacts.items()):
        if artifact.get("type") == "progress":
            percent = float(artifact.get("data") or 0)
            report.warn(percent >= 100, f"the {key} artifact ends at 100%",
                        f"the {key} artifact of the completed run shows {percent:g}%")  # fmt: skip
    if "ooc-run-summary" in artifacts:
        summary = artifacts["ooc-run-summary"]
        text = browser.page(f"{prefect}/artifacts/artifact/{summary['id']}",
                            out / "prefect-artifact.png", size=(BROWSER[0], 1650))  # fmt: skip
        check_text(report, "the Prefect artifact page", text,
                   ["ooc run summary", "Holdout metrics", "accuracy", "rows/s", run_name],
                   absent=["**Data**", "|---|", "Can't connect to Server API"])  # fmt: skip
        check_links(report, "the ooc-run-summary artifact", str(summary.get("data")))
    if "mlflow-run" in artifacts:
        check_links(report, "the mlflow-run artifact", str(artifacts["mlflow-run"].get("data")))

    # -- MLflow
    experiment, ml_run = mlflow_run_of(mlflow, run_id)
    experiment_id, ml_run_id = experiment["experiment_id"], ml_run["info"]["run_id"]
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    report.check(
        tags.get("mlflow.experimentKind") == "custom_model_development",
        "the MLflow experiment ooc is a model-training experiment",
        f"mlflow.experimentKind is {tags.get('mlflow.experimentKind')!r}",
    )
    report.check(ml_run["info"]["status"] == "FINISHED", "the MLflow run is FINISHED",
                 ml_run["info"]["status"])  # fmt: skip
    run_tags = {t["key"]: t["value"] for t in ml_run["data"].get("tags", [])}
    check_links(report, "the MLflow run's description", run_tags.get("mlflow.note.content", ""))
    curve_key = "train/progressive_score_by_rows"
    curve = metric_history(mlflow, ml_run_id, curve_key)
    report.check(len(curve) >= 2, f"{curve_key} has {len(curve)} points (a line)",
                 f"{len(curve)} point(s): the chart shows no line")  # fmt: skip
    # The experiment's kind chooses MLflow's view only when the UI is entered through the
    # experiments list; a link straight to the experiment or a run opens in the GenAI view
    # (MLflow's default) unless it names the view.
    view = "workflowType=machine_learning"
    experiment_page = f"{mlflow_ui}/#/experiments/{experiment_id}/runs?{view}"
    text = browser.page(experiment_page, out / "mlflow-experiment.png", size=(BROWSER[0], 800))
    check_text(report, "the MLflow experiment page", text,
               ["ooc", run_name, "Model registry", "1 matching run"],
               absent=GENAI_VIEW + ["Request error"])  # fmt: skip
    run_page = f"{mlflow_ui}/#/experiments/{experiment_id}/runs/{ml_run_id}"
    text = browser.page(f"{run_page}?{view}", out / "mlflow-run.png", size=(BROWSER[0], 1600))
    check_text(report, "the MLflow run page", text,
               [run_name, "holdout/accuracy", curve_key, "estimator.alpha", "Finished"],
               absent=GENAI_VIEW + ["Request error"])  # fmt: skip
    text = browser.page(f"{run_page}/model-metrics?{view}", out / "mlflow-run-metrics.png",
                        size=(BROWSER[0], 4400))  # fmt: skip
    check_text(report, "the MLflow run's model metrics tab", text,
               ["holdout", "train", "progressive_score_by_rows", "accuracy"],
               absent=GENAI_VIEW + ["Request error"])  # fmt: skip
    text = browser.page(metric_page(mlflow_ui, experiment_id, ml_run_id, curve_key) + f"&{view}",
                        out / "mlflow-metric.png")  # fmt: skip
    check_text(report, "the MLflow metric page", text, [curve_key, run_name],
               absent=GENAI_VIEW + ["Request error"])  # fmt: skip

    # -- the run's own profile figures
    profile = work / "runs" / run_id / "profile"
    for name in ("task-stream-fit.png", "cpu-memory.png"):
        if report.check((profile / name).exists(), f"the run drew {name}", f"not in {profile}"):
            shutil.copyfile(profile / name, out / name)
    for name in PICTURES:
        check_png(report, out / name)


def main(argv: list[str] | None = None) -> int:
    if not (BIN / "ooc").exists():
        venv = REPO / ".venv" / "bin" / "python"
        if (venv.parent / "ooc").exists() and not os.environ.get("OOC_SCREENSHOTS_REEXEC"):
            # `python infra/screenshots.py` outside the project's environment: run in it.
            os.environ["OOC_SCREENSHOTS_REEXEC"] = "1"
            os.execv(venv, [str(venv), __file__, *(sys.argv[1:] if argv is None else argv)])
        raise SystemExit(
            f"screenshots: no `ooc` next to {sys.executable}; run this with the project's "
            "environment: pip install -e '.[flows,dev]', then .venv/bin/python "
            "infra/screenshots.py"
        )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "infra" / "screenshots",
                        help="where the PNGs go (default: infra/screenshots)")  # fmt: skip
    parser.add_argument("--rows", type=int, default=300_000, help="rows of the run")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the run")
    parser.add_argument("--run-timeout", type=float, default=600, help="seconds for ooc run")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (logs, DOM, terminal text)")  # fmt: skip
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in PICTURES:  # never a picture of an earlier run beside this one's
        (out / name).unlink(missing_ok=True)

    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="ooc-screenshots-"))
    processes, report = Processes(), Report()
    done = False
    try:
        take(args, tmp, out, report, processes)
        done = True
    except CheckFailed as err:
        report.failed.append(str(err))
        say(f"FAIL  {str(err).splitlines()[0]}")
    except KeyboardInterrupt as err:
        say(f"stopped ({err or 'Ctrl-C'})")
        return 130
    finally:
        processes.stop()
        if args.keep or not done or report.failed:
            say(f"kept {tmp} (server logs, the terminal's text, each page's DOM)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - started
    if report.failed:
        print(f"screenshots: {len(report.failed)} check(s) failed in {seconds:.0f} s:",
              file=sys.stderr)  # fmt: skip
        for failure in report.failed:
            print(f"  - {failure}", file=sys.stderr)
        first = report.failed[0].splitlines()[0]
        print(f"screenshots: FAILED ({len(report.failed)}), first: {first}", file=sys.stderr)
        return 1
    if report.notes:
        print(f"{len(report.notes)} note(s) on what the pictures show (not failures):")
        for note in report.notes:
            print(f"  - {note}")
    print(f"{len(report.passed)} checks passed in {seconds:.0f} s; the pictures are in {out}:")
    for name in PICTURES:
        print(f"  {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
