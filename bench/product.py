"""The product path against the library: ``ooc`` commands and the same work done by ``ooc``
alone, on the same data, at two sizes.

Each command's wall time is ``fixed + rows × per_row``; measured at two sizes, the two
are separated: ``per_row`` is the slope (compared with the library's slope for the same
work), ``fixed`` the command's start and end (the API, the cluster, MLflow, the summary).
The library's work runs in a fresh process per measurement and is timed from the first
call to the last, imports excluded (a script that imported ooc pays those anyway).

Both sides meet the same machine: the library and the command alternate, ``repeats``
times each, and the median is kept (one run of this VM varied by 25% from the next with
nothing else running); before a stage that reads the data, the data is read once, so both
start from the same page cache (a 100M-row dataset is 16 GB, and only one is kept at a
time, so it stays cached).

Run it on the install users have (``.[flows]``), not beside the ``bench`` extra: dask-ml
brings ``sparse`` and ``numba``, which ``dask.array`` imports whenever they are installed
(about 0.4 s of every command's start here).

``python -m bench --product --rows 10000000``
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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


def measure(rows: int, root: Path, home: Path, repeats: int) -> dict[str, dict]:
    """Library and command seconds (medians of ``repeats``, and every run) of generate,
    train and predict at ``rows`` rows."""
    env = _env(home, root / "work")
    lib_data, cmd_data = root / f"lib-{rows}", root / f"cmd-{rows}"
    runs: dict[str, dict[str, list[float]]] = {
        stage: {"library": [], "command": []} for stage in ("generate", "train", "predict")
    }
    for _ in range(repeats):
        for path in (lib_data, cmd_data):
            shutil.rmtree(path, ignore_errors=True)
        runs["generate"]["library"].append(_library("generate", OUT=str(lib_data), ROWS=rows))
        cmd, _ = _command(["generate", "--out", str(cmd_data), "--rows", str(rows)], env)
        runs["generate"]["command"].append(cmd)
        shutil.rmtree(cmd_data)  # one dataset on disk, so the page cache can hold it
    model = None
    for _ in range(repeats):
        _warm(lib_data)
        runs["train"]["library"].append(_library("train", DATA=str(lib_data)))
        _warm(lib_data)
        # The library computes the scaler's statistics every time; so does the command.
        cmd, trained = _command(["train", "--data", str(lib_data), "--no-stats-cache"], env)
        runs["train"]["command"].append(cmd)
        model = model or trained["trained"]["fitted"]["model_path"]
    for _ in range(repeats):
        _warm(lib_data)
        lib = _library("predict", MODEL=model, DATA=str(lib_data), OUT=str(root / "lib-pred"))
        runs["predict"]["library"].append(lib)
        shutil.rmtree(root / "lib-pred", ignore_errors=True)
        _warm(lib_data)
        pred = ["predict", "--data", str(lib_data), "--out", str(root / "cmd-pred")]
        runs["predict"]["command"].append(_command(pred, env)[0])
        shutil.rmtree(root / "cmd-pred", ignore_errors=True)
    shutil.rmtree(lib_data)
    return {
        stage: {**{side: statistics.median(v) for side, v in sides.items()}, "runs": sides}
        for stage, sides in runs.items()
    }


def first_use(root: Path) -> float:
    """Seconds of the first command on a new Prefect home (it creates the database)."""
    home = Path(tempfile.mkdtemp(prefix="prefect-home-", dir=root))
    data = root / "first-use"
    seconds, _ = _command(["generate", "--out", str(data), "--rows", "1000"], _env(home, root))
    shutil.rmtree(data, ignore_errors=True)
    return seconds


def product_table(rows: int, root: Path, repeats: int = 1) -> dict:
    """The two sizes, their slopes and intercepts, for every stage."""
    root.mkdir(parents=True, exist_ok=True)
    home = root / "prefect-home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(root / "work", ignore_errors=True)
    started = first_use(root)
    # A Prefect home and a work directory that exist, as on a user's second command.
    shutil.rmtree(root / "warm", ignore_errors=True)
    _command(["generate", "--out", str(root / "warm"), "--rows", "1000"], _env(home, root / "work"))
    small_rows = max(rows // 5, 1)
    small = measure(small_rows, root, home, repeats)
    large = measure(rows, root, home, repeats)
    stages = {}
    for stage in ("generate", "train", "predict"):
        slope = {
            side: (large[stage][side] - small[stage][side]) / (rows - small_rows)
            for side in ("library", "command")
        }
        fixed = large[stage]["command"] - slope["command"] * rows
        stages[stage] = {
            "small": small[stage],
            "large": large[stage],
            "library_per_million_s": slope["library"] * 1e6,
            "command_per_million_s": slope["command"] * 1e6,
            "per_row_ratio": slope["command"] / slope["library"],
            "fixed_s": fixed,
        }
    return {
        "rows": [small_rows, rows],
        "repeats": repeats,
        "first_use_s": started,
        "stages": stages,
    }
