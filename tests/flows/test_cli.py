"""The ``ooc`` command line as a user runs it: ``python -m flows.cli ...`` subprocesses.

Most commands talk to the session's temporary Prefect server (``PREFECT_API_URL``) and
run their tasks on the session cluster (``OOC_DASK_ADDRESS``); ``ooc run`` is also run
with neither, as on a fresh machine: it starts its own local Prefect API and LocalCluster.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.store import load_object

from .support import (
    CHUNK_ROWS,
    FEATURES,
    N_FILES,
    ROWS,
    champion_version,
    eventually,
    parquet_rows,
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
        [sys.executable, "-m", "flows.cli", *args],
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
        ok(ooc("generate", "--out", str(data), *TINY_ARGS, env=served_env)).stdout
    )
    assert generated["written"] == N_FILES and generated["rows"] == ROWS
    assert sum(parquet_rows(data).values()) == ROWS

    trained = ok(
        ooc(
            "train", "--data", str(data), "--workdir", str(work), "--epochs", "2",
            "--param", "alpha=0.001", "--param", "random_state=3", "--param", "penalty=l1",
            env=served_env,
        )
    )  # fmt: skip
    result = json.loads(trained.stdout)
    card = result["card"]
    assert json.loads(Path(card["model_path"]).with_suffix(".json").read_text()) == card
    assert result["registry"]["version"] == "1" and result["registry"]["promoted"] is True
    assert card["model"]["params"] == {"alpha": 0.001, "random_state": 3, "penalty": "l1"}
    assert result["fit"]["n_epochs"] == 2 and result["metrics"]["accuracy"] > 0.6
    # The parameters reached the estimator that was fitted.
    estimator = load_object(card["model_path"])[-1].estimator_
    assert (estimator.alpha, estimator.random_state, estimator.penalty) == (0.001, 3, "l1")
    assert estimator.coef_.shape == (1, FEATURES)

    predicted = json.loads(
        ok(ooc("predict", "--data", str(data), "--out", str(out), "--workdir", str(work),
               env=served_env)).stdout
    )  # fmt: skip
    # No --model: the registry's champion, the model just trained.
    assert predicted["model_path"] == "models:/ooc-classification/1"
    assert predicted["files"] == N_FILES and predicted["rows"] == ROWS
    assert parquet_rows(out) == parquet_rows(data)


def test_run_without_a_prefect_server_starts_its_own(tmp_path):
    """No PREFECT_API_URL, no cluster address: a local API and a LocalCluster, for one command."""
    env = cli_env(tmp_path, OOC_N_WORKERS="2")
    work = tmp_path / "work"
    proc = ok(ooc("run", *TINY_ARGS, "--workdir", str(work), env=env, timeout=300))

    data = work / "data" / f"classification-{ROWS}x{FEATURES}-{CHUNK_ROWS}-seed0"
    assert sum(parquet_rows(data).values()) == ROWS
    (predictions,) = (work / "predictions").iterdir()
    card = json.loads((work / "runs" / predictions.name / "model.json").read_text())
    assert Path(card["model_path"]).exists() and card["metrics"]["accuracy"] > 0.6
    assert champion_version(work, "ooc-classification") == "1"
    assert parquet_rows(predictions) == parquet_rows(data)
    assert str(predictions) in proc.stdout.replace("\n", "")

    # Everything was recorded in the local API's database, in PREFECT_HOME: the flow run
    # (under its id, the predictions directory) and the tasks the workers ran.
    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:
        flow_runs = db.execute("select id, state_type from flow_run").fetchall()
        task_names = [n for (n,) in db.execute("select name from task_run")]
    assert [state for _, state in flow_runs] == ["COMPLETED"]
    assert flow_runs[0][0].replace("-", "") == predictions.name.replace("-", "")
    assert sum(n.startswith("write_partition") for n in task_names) == N_FILES
    assert sum(n.startswith("fit_model") for n in task_names) == 1
    assert sum(n.startswith("predict-part-") for n in task_names) == N_FILES


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "alpha"], "ooc: --param expects NAME=VALUE, got 'alpha'"),
        (["--param", "=0.1"], "ooc: --param expects NAME=VALUE, got '=0.1'"),
        (
            ["--param", "alpha=0.001", "--param", "alpah=0.001"],
            "SGDClassifier.__init__() got an unexpected keyword argument 'alpah'",
        ),
        (["--epochs", "0"], "ooc: epochs: Input should be greater than or equal to 1"),
        (["--holdout-fraction", "1.5"], "ooc: holdout_fraction: Input should be less than 1"),
    ],
)
@pytest.mark.parametrize("command", ["train", "run"])
def test_bad_model_options_stop_before_anything_runs(monkeypatch, tmp_path, command, args, message):
    """Checked in ``main`` before a Prefect API, a cluster or a flow run is started."""
    from flows.cli import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    data = ["--data", str(tmp_path / "data")] if command == "train" else []
    with pytest.raises(SystemExit) as exit_:
        main([command, *data, "--workdir", str(tmp_path / "w"), *args])
    assert message in str(exit_.value.code)
    assert "PREFECT_API_URL" not in os.environ  # no local API was started
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
        [sys.executable, "-m", "flows.cli", "serve", "--workdir", str(work), "--rows", str(ROWS),
         "--train-cron", train_cron, "--predict-cron", predict_cron],
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
        assert pipeline_dep.entrypoint == "flows.pipeline.pipeline"
        assert [s.schedule.cron for s in pipeline_dep.schedules] == [train_cron]
        assert pipeline_dep.parameters == {"rows": ROWS, "workdir": str(work)}
        predict_dep = found["batch-predict/ooc-batch-predict"]
        assert [s.schedule.cron for s in predict_dep.schedules] == [predict_cron]
        assert found["train/ooc-train"].schedules == []

        flow_run = run_deployment(
            name="pipeline/ooc-pipeline",
            parameters={"features": FEATURES, "chunk_rows": CHUNK_ROWS},
            timeout=300,
            poll_interval=1,
        )
        assert flow_run.state.is_completed(), flow_run.state.message
        assert flow_run.deployment_id == pipeline_dep.id
        predictions = work / "predictions" / str(flow_run.id)
        assert sum(parquet_rows(predictions).values()) == ROWS
        runs = wait_for_task_runs(flow_run.id, {"fit_model": 1, "predict_partition": N_FILES})
        assert len(runs["fit_model"]) == 1
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
