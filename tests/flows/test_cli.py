"""The ``ooc`` command line as a user runs it: ``python -m ooc.flows.cli ...`` subprocesses.

Most commands talk to the session's temporary Prefect server (``PREFECT_API_URL``) and
run their tasks on the session cluster (``OOC_DASK_ADDRESS``); ``ooc run`` is also run
with neither, as on a fresh machine: it starts its own local Prefect API and LocalCluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest

from ooc.flows.pipeline import dataset_dir
from ooc.tasks.config import DatasetConfig
from ooc.tasks.store import load_object

from .support import (
    CHUNK_ROWS,
    FEATURES,
    N_FILES,
    ROWS,
    champion_version,
    eventually,
    logged,
    parquet_rows,
    tiny_dataset,
    tiny_training,
    wait_for_task_runs,
)

ROOT = Path(__file__).resolve().parents[2]
TINY_ARGS = ["--rows", str(ROWS), "--features", str(FEATURES), "--chunk-rows", str(CHUNK_ROWS)]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's environment without any Prefect API or cluster address, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in {"PREFECT_API_URL", "OOC_DASK_ADDRESS"}}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        **extra,
    )
    return env


def ooc(*args: str, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ooc.flows.cli", *args],
        cwd=Path(env["PREFECT_HOME"]).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture
def served_env(tmp_path, api_url, dask_cluster) -> dict[str, str]:
    """Commands against the session's Prefect server, running tasks on the session cluster."""
    return cli_env(
        tmp_path, PREFECT_API_URL=api_url, OOC_DASK_ADDRESS=dask_cluster.scheduler_address
    )


def test_generate_train_predict_commands(served_env, tmp_path):
    data, work, out = tmp_path / "data", tmp_path / "work", tmp_path / "pred"

    generated = json.loads(
        ok(ooc("generate", "--out", str(data), *TINY_ARGS, "--json", env=served_env)).stdout
    )
    assert generated["written"] == N_FILES and generated["rows"] == ROWS
    assert generated["partitions"] == N_FILES and generated["path"] == str(data)
    assert sum(parquet_rows(data).values()) == ROWS

    trained = ok(
        ooc(
            "train", "--data", str(data), "--workdir", str(work), "--epochs", "2",
            "--block-rows", str(CHUNK_ROWS), "--holdout-fraction", "0.2", "--shuffle-blocks",
            "--param", "alpha=0.001", "--param", "random_state=3", "--param", "penalty=l1",
            "--json", env=served_env,
        )
    )  # fmt: skip
    result = json.loads(trained.stdout)
    fitted, evaluated = result["trained"]["fitted"], result["trained"]["evaluated"]
    card = json.loads(Path(fitted["model_path"]).with_suffix(".json").read_text())
    assert card["model_path"] == fitted["model_path"]
    assert card["model"] == result["trained"]["model"]
    assert card["model"]["params"] == {"alpha": 0.001, "random_state": 3, "penalty": "l1"}
    assert card["metrics"] == evaluated["metrics"]
    assert result["registered"]["version"] == "1" and result["registered"]["promoted"] is True
    assert result["registered"]["reason"] == "first version"
    assert fitted["n_epochs"] == 2 and evaluated["metrics"]["accuracy"] > 0.6
    # The options reached the run: the training settings, and the split they asked for.
    training = result["trained"]["training"]
    assert (training["epochs"], training["block_rows"]) == (2, CHUNK_ROWS)
    assert (training["holdout_fraction"], training["shuffle_blocks"]) == (0.2, True)
    assert evaluated["n_samples"] == round(0.2 * ROWS)
    assert fitted["n_samples_seen"] == 2 * (ROWS - round(0.2 * ROWS))
    assert dict(result["links"])["MLflow run"].startswith("http://127.0.0.1:5000/#/experiments/")
    # The parameters reached the estimator that was fitted.
    estimator = load_object(fitted["model_path"])[-1].estimator_
    assert (estimator.alpha, estimator.random_state, estimator.penalty) == (0.001, 3, "l1")
    assert estimator.coef_.shape == (1, FEATURES)

    predicted = json.loads(
        ok(ooc("predict", "--data", str(data), "--out", str(out), "--workdir", str(work),
               "--json", env=served_env)).stdout
    )  # fmt: skip
    # No --model: the registry's champion, the model just trained, pinned to its version.
    assert predicted["model_version"] == "1"
    assert predicted["predicted"]["model_ref"] == "models:/ooc-classification/1"
    assert predicted["predicted"]["files"] == N_FILES and predicted["predicted"]["rows"] == ROWS
    assert predicted["predicted"]["out"] == str(out)
    assert parquet_rows(out) == parquet_rows(data)


def test_without_json_a_command_prints_its_summary(served_env, tmp_path):
    data = tmp_path / "data"
    env = {**served_env, "COLUMNS": "300"}  # a wide table: paths on one line
    proc = ok(ooc("generate", "--out", str(data), *TINY_ARGS, env=env))
    assert proc.stdout.startswith("ooc generate\n")
    assert f"rows   {ROWS:,} rows in {N_FILES} files ({N_FILES} written now)" in proc.stdout
    assert re.search(rf"path +{re.escape(str(data))} ", proc.stdout), proc.stdout
    assert re.search(r"\n +generate +\d+\.\d\d +[\d,]+ +\n", proc.stdout), proc.stdout
    assert re.search(r"\n +the command, in all +\d+\.\d\d +\n", proc.stdout), proc.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(proc.stdout)


@pytest.mark.parametrize(
    "command, message",
    [
        ("predict", "ooc: predict failed: The registry has no 'champion' for model"),
        ("train", "ooc: train failed: Cannot read the parquet footer of"),
    ],
)
def test_an_error_about_the_input_shows_without_a_traceback(served_env, tmp_path, command,
                                                           message):  # fmt: skip
    """The terminal shows the message that says what to fix; the Prefect UI keeps the
    traceback in the run's logs."""
    bad = tmp_path / "bad.parquet"
    bad.write_text('{"not": "parquet"}')
    work = ["--workdir", str(tmp_path / "empty-work")]
    args = ["--data", str(bad), *work] if command == "train" else [
        "--data", str(bad), "--out", str(tmp_path / "pred"), *work]  # fmt: skip
    proc = ooc(command, *args, env=served_env)
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr.splitlines()[-1], proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # The log line of the failure stays, and the run's log in the API has the traceback.
    assert "Encountered exception during execution" in proc.stderr
    (run_id,) = set(re.findall(r"/runs/flow-run/([0-9a-f-]{36})", proc.stderr))
    assert logged(UUID(run_id), "Traceback (most recent call last)")
    assert not (tmp_path / "pred").exists()


def test_convert_writes_parquet_from_csv(tmp_path):
    import ooc as ooc_library

    source = tmp_path / "csv"
    source.mkdir()
    for i in range(2):
        lines = ["x0,x1,y"] + [f"{i * 10 + r}.5,{r},{r % 2}" for r in range(10)]
        (source / f"part-{i}.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "parquet"
    env = cli_env(tmp_path)
    result = json.loads(
        ok(ooc("convert", str(source), "--out", str(out), "--json", env=env)).stdout
    )
    assert sum(result["rows"]) == 20 and len(result["files"]) == 2
    assert result["out"] == str(out) and len(result["written"]) == 2
    assert sum(parquet_rows(out).values()) == 20
    X, y = ooc_library.read_parquet(out, target="y")
    assert X.shape == (20, 2) and sorted(y.compute().tolist()) == [0] * 10 + [1] * 10
    again = ok(ooc("convert", str(source), "--out", str(out), env=env)).stdout
    assert "2 parquet file(s), 20 rows" in again and "2 already complete" in again
    # No Prefect API was needed: none was started, nothing was recorded.
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()


def test_run_without_a_prefect_server_starts_its_own(tmp_path):
    """No PREFECT_API_URL, no cluster address: a local API and a LocalCluster, for one
    command (by default one worker of threads in the command's own process)."""
    env = cli_env(tmp_path, COLUMNS="300")
    work = tmp_path / "work"
    proc = ok(
        ooc("run", *TINY_ARGS, "--block-rows", str(CHUNK_ROWS), "--workdir", str(work), env=env,
            timeout=300)
    )  # fmt: skip

    data = work / "data" / f"classification-{ROWS}x{FEATURES}-{CHUNK_ROWS}-float64-seed0"
    assert sum(parquet_rows(data).values()) == ROWS
    (predictions,) = (work / "predictions").iterdir()
    card = json.loads((work / "runs" / predictions.name / "model.json").read_text())
    assert Path(card["model_path"]).exists() and card["metrics"]["accuracy"] > 0.6
    assert card["training"]["block_rows"] == CHUNK_ROWS
    assert champion_version(work, "ooc-classification") == "1"
    assert parquet_rows(predictions) == parquet_rows(data)
    # The summary table names where the predictions went, and how to look at the runs
    # once the command's API is gone.
    assert str(predictions) in proc.stdout, proc.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{work / 'mlflow.db'}" in proc.stdout
    assert "prefect server start" in proc.stdout
    # (the predictions directory is named after the flow run's id)
    assert f"http://127.0.0.1:4200/runs/flow-run/{predictions.name}" in proc.stdout

    # Everything was recorded in the local API's database, in PREFECT_HOME: the flow run
    # (under its id, the predictions directory), one task run per stage, and the logging to
    # MLflow and the registration as task runs of their own.
    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:
        flow_runs = db.execute("select id, state_type from flow_run").fetchall()
        task_runs = db.execute("select name, state_type from task_run").fetchall()
    assert [state for _, state in flow_runs] == ["COMPLETED"]
    assert flow_runs[0][0].replace("-", "") == predictions.name.replace("-", "")
    assert sorted(task_runs) == [
        (name, "COMPLETED")
        for name in sorted(
            [
                "generate",
                "check-data",
                "preprocess",
                "fit",
                "evaluate",
                "log-to-mlflow",
                "predict",
                "register",
            ]
        )  # fmt: skip
    ]


BAD_OPTIONS = [
    (["--param", "alpha"], "ooc: --param expects NAME=VALUE, got 'alpha'"),
    (["--param", "=0.1"], "ooc: --param expects NAME=VALUE, got '=0.1'"),
    (
        ["--param", "alpha=0.001", "--param", "alpah=0.001"],
        "SGDClassifier.__init__() got an unexpected keyword argument 'alpah'",
    ),
    (["--epochs", "0"], "ooc: epochs: Input should be greater than or equal to 1"),
    (["--holdout-fraction", "1.5"], "ooc: holdout_fraction: Input should be less than 1"),
    (["--block-rows", "0"], "ooc: block_rows: Input should be greater than or equal to 1"),
    (["--replicas", "0"], "ooc: replicas: Input should be greater than or equal to 1"),
]


def _api_servers() -> set[int]:
    """Processes started by this one that run a Prefect API server."""
    import psutil

    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "prefect.server.api.server:create_app" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.Error:  # ended meanwhile
            continue
    return found


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        *[("train", args, message) for args, message in BAD_OPTIONS],
        *[("run", args, message) for args, message in BAD_OPTIONS],
        ("run", ["--rows", "0"], "ooc: rows: Input should be greater than or equal to 1"),
        ("run", ["--chunk-rows", "-5"], "ooc: chunk_rows: Input should be greater than or equal"),
    ],
)
def test_bad_model_options_stop_before_anything_runs(monkeypatch, tmp_path, command, args, message):
    """Checked in ``main`` before a cluster or a flow run is started; the temporary API
    that was starting meanwhile is stopped again."""
    from ooc.flows.cli import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("OOC_DASK_ADDRESS", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    data = ["--data", str(tmp_path / "data")] if command == "train" else []
    servers = _api_servers()  # the session's own Prefect server
    with pytest.raises(SystemExit) as exit_:
        main([command, *data, "--workdir", str(tmp_path / "w"), *args])
    assert message in str(exit_.value.code)
    # Nothing is left behind: no API address, no cluster, no server process, no workdir.
    assert "PREFECT_API_URL" not in os.environ and "OOC_DASK_ADDRESS" not in os.environ
    assert _api_servers() == servers
    assert not (tmp_path / "w").exists()


def test_serve_without_prefect_api_url_says_what_to_do(tmp_path):
    proc = ooc("serve", "--workdir", str(tmp_path), env=cli_env(tmp_path), timeout=120)
    assert proc.returncode == 1
    assert "ooc serve needs a Prefect server" in proc.stderr
    assert "PREFECT_API_URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_creates_scheduled_deployments_and_runs_them(served_env, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    # Crons far from any test run, so no scheduled run starts by itself meanwhile.
    train_cron, predict_cron = "0 4 1 1 *", "30 5 1 1 *"
    work = tmp_path / "work"
    serve = subprocess.Popen(
        [sys.executable, "-m", "ooc.flows.cli", "serve", "--workdir", str(work),
         "--rows", str(ROWS), "--train-cron", train_cron, "--predict-cron", predict_cron],
        cwd=tmp_path, env=served_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:

        def deployments():
            with get_client(sync_client=True) as client:
                try:
                    return {
                        name: client.read_deployment_by_name(name)
                        for name in (
                            "pipeline/ooc-pipeline",
                            "batch-predict/ooc-batch-predict",
                            "train/ooc-train",
                        )
                    }
                except Exception:  # not all created yet
                    assert serve.poll() is None, serve.stdout.read()
                    return None

        found = eventually(deployments, timeout=90, every=1)
        assert found, "ooc serve created no deployments within 90 s"
        pipeline_dep = found["pipeline/ooc-pipeline"]
        # A module entrypoint: the served run's tasks unpickle on any worker.
        assert pipeline_dep.entrypoint == "ooc.flows.pipeline.pipeline"
        assert [s.schedule.cron for s in pipeline_dep.schedules] == [train_cron]
        dataset = DatasetConfig(rows=ROWS)
        assert pipeline_dep.parameters == {"dataset": dataset.model_dump(), "workdir": str(work)}
        predict_dep = found["batch-predict/ooc-batch-predict"]
        assert [s.schedule.cron for s in predict_dep.schedules] == [predict_cron]
        # batch-predict and train read the dataset the pipeline writes.
        data = str(dataset_dir(work, dataset))
        assert predict_dep.parameters == {"data": data, "out": None, "workdir": str(work)}
        train_dep = found["train/ooc-train"]
        assert train_dep.schedules == [] and train_dep.parameters == {
            "data": data, "workdir": str(work),
        }  # fmt: skip

        flow_run = run_deployment(
            name="pipeline/ooc-pipeline",
            parameters={
                "dataset": tiny_dataset().model_dump(),
                "training": tiny_training().model_dump(),
            },
            timeout=300,
            poll_interval=1,
        )
        assert flow_run.state.is_completed(), flow_run.state.message
        assert flow_run.deployment_id == pipeline_dep.id
        predictions = work / "predictions" / str(flow_run.id)
        assert sum(parquet_rows(predictions).values()) == ROWS
        assert (work / "data" / tiny_dataset().directory_name()).is_dir()
        stages = {"generate_partitions": 1, "fit_model": 1, "predict_files": 1}
        runs = wait_for_task_runs(flow_run.id, stages)
        assert {name: len(runs[name]) for name in stages} == stages
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()


def test_the_terminal_drops_the_traceback_of_an_input_error_only():
    import logging

    from ooc.flows.terminal import _InputErrorsPlain

    formatter = _InputErrorsPlain(logging.Formatter("%(levelname)s %(message)s"))

    def record(error):
        try:
            raise error
        except Exception:
            return logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())

    bad_input, bug = record(ValueError("column 'x' holds text")), record(KeyError("x"))
    assert formatter.format(bad_input) == "ERROR failed"
    assert bad_input.exc_info is not None  # the record other handlers get is unchanged
    assert "Traceback" in formatter.format(bug) and "KeyError: 'x'" in formatter.format(bug)
