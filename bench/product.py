"""The product path against the library: ``ooc`` commands and the same work done by ``ooc``
alone, on the same data, at two sizes.

Each command's wall time is ``fixed + rows × per_row``; measured at two sizes, the two
are separated: ``per_row`` is the slope (compared with the library's slope for the same
work), ``fixed`` the command's start and end (the API, the cluster, MLflow, the summary).
The library's work runs in a fresh process per measurement and is timed from the first
call to the last, imports excluded (a script that imported ooc pays those anyway), those
that unpickling a model would do too (scikit-learn's, 1.3-1.7 s here).

Both sides meet the same machine: the library and the command alternate, ``repeats``
times each, the library first in even repeats and the command first in odd ones; each
repeat measures the two sizes back to back, so the slope of a repeat is taken between runs
seconds apart (this VM's speed drifts by up to 25% over minutes);
the median over the repeats is kept. Before a stage that reads the data, the data is read
once, so both start from the same page cache (the library's copies of the two sizes are
kept, 19 GB at 100M rows; the command's generated copy is removed at once).

At small sizes the work is a second or two beside a command's fixed ~13 s, and one
command's wall time at one size ranged over 3-6 s in seven repeats at 10M: the table also
gives the per-row cost of the stage alone (the command's own timing of its work), which
that noise does not reach, and the per-row cost of the flow run (its start and end as
Prefect recorded them): every task, MLflow, the registry, the figures and the summary, without
the process's start and end, where most of that noise is (the imports and the API's start
on two cores).

Run it on the install users have (``.[flows]``), not beside the ``bench`` extra: dask-ml
brings ``sparse`` and ``numba``, which ``dask.array`` imports whenever they are installed
(about 0.4 s of every command's start here).

``python -m bench --product --rows 10000000``; ``--stages predict`` measures one stage
(more repeats of it in the same time).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

LIBRARY = {
    "generate": """
import ooc
ooc.generate_dataset(OUT, n_rows=ROWS)
""",
    "train": """
import ooc
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline
source = ooc.inspect_parquet(DATA)
train, holdout = source.split(0.1, seed=0)
X, y = ooc.io.dask_arrays(train)
pipe = make_pipeline(ooc.StandardScaler(), ooc.Incremental(SGDClassifier(random_state=0),
                     progressive_score=True))
pipe.fit(X, y, incremental__classes=[0, 1])
Xh, yh = ooc.io.dask_arrays(holdout)
ooc.evaluate(pipe, Xh, yh)
""",
    "predict": """
import pickle, ooc
import sklearn.linear_model, sklearn.pipeline
pipe = pickle.load(open(MODEL, "rb"))
ooc.predict_parquet(pipe, DATA, OUT)
""",
}

TIMER = """
import time, sys
start = time.perf_counter()
{body}
print("SECONDS", time.perf_counter() - start)
"""


def _settled() -> None:
    """Write back what earlier measurements wrote, so no measurement pays for another's
    dirty pages (a 10M-row dataset is 1.6 GB of them)."""
    os.sync()


def _library(stage: str, **names) -> float:
    """Seconds of the library doing ``stage`` in a fresh process (imports excluded)."""
    _settled()
    body = LIBRARY[stage]
    for key, value in names.items():
        body = body.replace(key, repr(value))
    # The imports at the top of the body run before the timer starts.
    imports = "\n".join(line for line in body.splitlines() if line.startswith(("import", "from")))
    rest = "\n".join(line for line in body.splitlines() if not line.startswith(("import", "from")))
    script = imports + "\n" + TIMER.format(body=rest)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench: library {stage} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.split("SECONDS")[-1])


def _warm(data: Path) -> None:
    """Read every file of ``data`` once, so the measurement after starts from the cache."""
    for path in sorted(data.rglob("*.parquet")):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def _pair(repeat: int, library: Callable, command: Callable, before: Callable = lambda: None):
    """The library's result and the command's, the library first in even repeats and the
    command first in odd ones: whatever the first leaves behind (dirty pages, a page cache
    the second must make room in, a warmer CPU) falls on each side as often. ``before``
    runs before each side (reading the data, so both start from the page cache)."""
    order = (command, library) if repeat % 2 else (library, command)
    ran = {}
    for side in order:
        before()
        ran[side] = side()
    return ran[library], ran[command]


def _command(args: list[str], env: dict) -> tuple[float, dict]:
    """Wall seconds of ``ooc ARGS --json`` as a user runs it, and its JSON result."""
    _settled()
    start = time.perf_counter()
    command = [str(Path(sys.executable).with_name("ooc")), *args, "--json"]  # as installed
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"bench: ooc {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout)


def _env(home: Path, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "OOC_DASK"))}
    env.update(PREFECT_HOME=str(home), OOC_WORKDIR=str(work), DO_NOT_TRACK="1")
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _stage_seconds(stage: str, result: dict) -> float:
    """The command's own timing of the library's work, from its JSON result."""
    if stage == "generate":
        return result["seconds"]
    if stage == "predict":
        return result["predicted"]["seconds"]
    trained = result["trained"]
    return sum(trained[part]["seconds"] for part in ("preprocessed", "fitted", "evaluated"))


# Each stage the benchmark measures, and the name of the flow its command runs.
FLOWS = {"generate": "generate-dataset", "train": "train", "predict": "batch-predict"}
STAGES = tuple(FLOWS)


def _flow_seconds(home: Path, stage: str) -> float:
    """The seconds of the command's flow run, from the run's start to its end as Prefect
    recorded them in the home's database: everything the flow orchestrates (its tasks,
    MLflow, the registry, figures, the summary), without the process's start and end."""
    with contextlib.closing(sqlite3.connect(home / "prefect.db")) as db:
        name, started, ended, state = db.execute(
            "select flow.name, run.start_time, run.end_time, run.state_type from flow_run run"
            " join flow on flow.id = run.flow_id order by run.start_time desc limit 1"
        ).fetchone()
    if name != FLOWS[stage] or state != "COMPLETED":
        raise SystemExit(f"bench: the last flow run in {home} is {name} ({state}), not {stage}")
    return (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()


def _runs(stages, sizes) -> dict:
    sides = ("library", "command", "flow", "stage")
    return {stage: {side: {rows: [] for rows in sizes} for side in sides} for stage in stages}


def measure(sizes: tuple[int, int], root: Path, home: Path, repeats: int,
            stages: tuple[str, ...] = STAGES) -> dict:  # fmt: skip
    """Every run of ``stages`` (generate, train, predict), library and command, at both
    ``sizes``.

    Each repeat measures both sizes back to back, so a slope is taken between runs a few
    seconds apart: this VM's speed drifts over minutes, and a drift between the two sizes
    would land in the slope. Returns ``{stage: {side: {rows: [seconds, ...]}}}``, the
    sides being ``library``, ``command`` (wall), ``flow`` (the flow run, as Prefect
    recorded it) and ``stage`` (the command's own timing of the stage's work). Without the
    generate stage, the data is written once by the library; without the train stage,
    predict uses one model ``ooc train`` fitted on the larger size (neither is timed)."""
    env = _env(home, root / "work")
    data = {rows: root / f"lib-{rows}" for rows in sizes}
    runs = _runs(stages, sizes)

    def record(stage: str, rows: int, library: float, command: tuple[float, dict]) -> None:
        runs[stage]["library"][rows].append(library)
        runs[stage]["command"][rows].append(command[0])
        runs[stage]["flow"][rows].append(_flow_seconds(home, stage))
        runs[stage]["stage"][rows].append(_stage_seconds(stage, command[1]))

    for repeat in range(repeats if "generate" in stages else 0):
        for rows in sizes:
            out = root / f"cmd-{rows}"
            shutil.rmtree(data[rows], ignore_errors=True)
            generate = ["generate", "--out", str(out), "--rows", str(rows)]

            def command(out=out, generate=generate):
                ran = _command(generate, env)
                shutil.rmtree(out)  # only the library's copy is kept, so the cache can hold it
                return ran

            library = partial(_library, "generate", OUT=str(data[rows]), ROWS=rows)
            record("generate", rows, *_pair(repeat, library, command))
    if "generate" not in stages:
        for rows in sizes:
            shutil.rmtree(data[rows], ignore_errors=True)
            _library("generate", OUT=str(data[rows]), ROWS=rows)
    models = {}
    for repeat in range(repeats if "train" in stages else 0):
        for rows in sizes:
            library = partial(_library, "train", DATA=str(data[rows]))
            # The library computes the scaler's statistics every time; so does the command.
            train = ["train", "--data", str(data[rows]), "--no-stats-cache"]
            seconds, trained = _pair(
                repeat, library, partial(_command, train, env), partial(_warm, data[rows])
            )
            record("train", rows, seconds, trained)
            models.setdefault(rows, trained[1]["trained"]["fitted"]["model_path"])
    if "predict" in stages and not models:
        _, trained = _command(["train", "--data", str(data[sizes[-1]])], env)
        models = dict.fromkeys(sizes, trained["trained"]["fitted"]["model_path"])
    for repeat in range(repeats if "predict" in stages else 0):
        for rows in sizes:
            lib_out, cmd_out = root / "lib-pred", root / "cmd-pred"

            def library(rows=rows, lib_out=lib_out):
                named = {"MODEL": models[rows], "DATA": str(data[rows]), "OUT": str(lib_out)}
                seconds = _library("predict", **named)
                shutil.rmtree(lib_out, ignore_errors=True)
                return seconds

            def command(rows=rows, cmd_out=cmd_out):
                predict = ["predict", "--data", str(data[rows]), "--out", str(cmd_out)]
                ran = _command(predict, env)
                shutil.rmtree(cmd_out, ignore_errors=True)
                return ran

            record("predict", rows, *_pair(repeat, library, command, partial(_warm, data[rows])))
    for path in data.values():
        shutil.rmtree(path)
    return runs


def first_use(root: Path) -> float:
    """Seconds of the first command on a new Prefect home (it creates the database)."""
    home = Path(tempfile.mkdtemp(prefix="prefect-home-", dir=root))
    data = root / "first-use"
    seconds, _ = _command(["generate", "--out", str(data), "--rows", "1000"], _env(home, root))
    shutil.rmtree(data, ignore_errors=True)
    return seconds


def _slope(side: dict[int, list[float]], small: int, large: int) -> list[float]:
    """Seconds per million rows of each repeat, between its two sizes."""
    return [(b - a) / (large - small) * 1e6 for a, b in zip(side[small], side[large], strict=True)]


def _interval(command: list[float], library: list[float], level: float = 0.9,
              resamples: int = 2000) -> list[float]:  # fmt: skip
    """A bootstrap interval of the ratio of the two medians: the repeats are drawn again
    with replacement (in pairs, as they were measured), ``resamples`` times."""
    draw = random.Random(0)
    pairs = list(zip(command, library, strict=True))
    ratios = []
    for _ in range(resamples):
        sample = draw.choices(pairs, k=len(pairs))
        below = statistics.median(lib for _, lib in sample)
        if below:
            ratios.append(statistics.median(cmd for cmd, _ in sample) / below)
    if not ratios:  # the library's slope is nil: no ratio to bound
        return [math.nan, math.nan]
    ratios.sort()
    cut = int(len(ratios) * (1 - level) / 2)
    return [ratios[cut], ratios[-cut - 1]]


def summarize(runs: dict, small: int, large: int) -> dict:
    """Each stage's slopes and intercept, from ``measure``'s runs.

    The per-row cost is the median over the repeats of each repeat's slope, against the
    library's; ``per_row_interval`` is its 90% bootstrap interval (how far the repeats'
    noise leaves it uncertain), ``per_row_range`` the command's lowest and highest repeat
    against the library's median. ``flow_ratio`` (and its interval) is the same from the
    flow run's duration (all the orchestration, without the process's start and end), and
    ``stage_ratio`` from the command's own timing of the stage (the work alone). The fixed
    cost is the intercept."""
    stages = {}
    for stage, sides in runs.items():
        slopes = {side: _slope(sides[side], small, large) for side in sides}
        per_million = {side: statistics.median(v) for side, v in slopes.items()}
        ratios = [c / per_million["library"] for c in slopes["command"]]
        median = {side: {n: statistics.median(v) for n, v in by_rows.items()}
                  for side, by_rows in sides.items()}  # fmt: skip
        stages[stage] = {
            "small": {side: median[side][small] for side in sides},
            "large": {side: median[side][large] for side in sides},
            "library_per_million_s": per_million["library"],
            "command_per_million_s": per_million["command"],
            "per_row_ratio": per_million["command"] / per_million["library"],
            "per_row_interval": _interval(slopes["command"], slopes["library"]),
            "per_row_range": [min(ratios), max(ratios)],
            "flow_ratio": per_million["flow"] / per_million["library"],
            "flow_interval": _interval(slopes["flow"], slopes["library"]),
            "stage_ratio": per_million["stage"] / per_million["library"],
            "stage_interval": _interval(slopes["stage"], slopes["library"]),
            "fixed_s": median["command"][large] - per_million["command"] * large / 1e6,
            "runs": {
                side: {str(n): v for n, v in by_rows.items()} for side, by_rows in sides.items()
            },
        }
    return stages


def product_table(rows: int, root: Path, repeats: int = 1,
                  stages: tuple[str, ...] = STAGES) -> dict:  # fmt: skip
    """The two sizes (a fifth of ``rows``, and ``rows``), measured and summarized, and the
    first command's seconds on a new Prefect home."""
    root.mkdir(parents=True, exist_ok=True)
    home = root / "prefect-home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(root / "work", ignore_errors=True)
    started = first_use(root)
    # A Prefect home and a work directory that exist, as on a user's second command.
    shutil.rmtree(root / "warm", ignore_errors=True)
    _command(["generate", "--out", str(root / "warm"), "--rows", "1000"], _env(home, root / "work"))
    small, large = max(rows // 5, 1), rows
    runs = measure((small, large), root, home, repeats, stages)
    return {
        "rows": [small, large],
        "repeats": repeats,
        "first_use_s": started,
        "stages": summarize(runs, small, large),
    }
