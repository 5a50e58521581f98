"""The flows against a temporary Prefect server and a real Dask cluster of worker processes.

Every flow runs on the session cluster through the project's own task runner
(``OOC_DASK_ADDRESS``); what the flow returns, what it wrote, and what Prefect recorded
(flow run state, one task run per stage, logs, artifacts) are all checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ooc
from ooc.flows.pipeline import batch_predict, dataset_dir, generate_dataset, pipeline, train
from ooc.tasks.config import ModelConfig
from ooc.tasks.store import load_object

from .support import (
    CHUNK_ROWS,
    FEATURES,
    HOLDOUT_ROWS,
    N_FILES,
    ROWS,
    assert_summary_and_progress,
    champion_version,
    completed,
    final_step,
    flow_run_id,
    logged,
    parquet_rows,
    read_flow_run,
    registered_versions,
    registry,
    run,
    task_runs,
    tiny_dataset,
    tiny_training,
    wait_for_task_runs,
)

pytestmark = pytest.mark.usefixtures("prefect_server")
TRAIN_STAGES = {"check_dataset": 1, "fit_preprocessing": 1, "fit_model": 1, "evaluate_model": 1}
RECORDING = {"log_training_run": 1, "register_model": 1}


def features_of(path: Path) -> np.ndarray:
    table = pq.read_table(path)
    return np.column_stack([table[f"x{j}"].to_numpy() for j in range(FEATURES)])


@pytest.fixture(scope="module")
def trained(runner, clf_data, tmp_path_factory):
    """One train flow run on the tiny classification data (its result and workdir)."""
    workdir = tmp_path_factory.mktemp("trained")
    model = ModelConfig(params={"random_state": 0})
    result = completed(
        run(train, runner, data=str(clf_data), workdir=str(workdir), model=model,
            training=tiny_training())
    )  # fmt: skip
    return result, workdir


# -- each flow completes --------------------------------------------------------------------


def scheduler_task_counts(dask_cluster) -> dict[str, int]:
    """Tasks the cluster computed, by key prefix (the task function name)."""
    from distributed import Client

    def counts(dask_scheduler):
        return {k: p.state_counts["memory"] for k, p in dask_scheduler.task_prefixes.items()}

    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        return client.run_on_scheduler(counts)


def test_generate_dataset_writes_files_and_manifest_then_nothing(runner, dask_cluster, tmp_path):
    out = tmp_path / "data"
    dataset = tiny_dataset(seed=3)
    before = scheduler_task_counts(dask_cluster)
    state = run(generate_dataset, runner, out=str(out), dataset=dataset, workdir=str(tmp_path))
    result = completed(state)
    # One Dask task per partition ran on the cluster OOC_DASK_ADDRESS names.
    seen = scheduler_task_counts(dask_cluster)
    assert seen.get("write_partition", 0) - before.get("write_partition", 0) == N_FILES

    assert result.partitions == N_FILES and result.written == N_FILES
    assert result.rows == ROWS and result.path == str(out)
    assert parquet_rows(out) == {f"part-{i:05d}.parquet": CHUNK_ROWS for i in range(N_FILES)}
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["n_rows"] == ROWS and len(manifest["partitions"]) == N_FILES
    assert ooc.inspect_parquet(out).features == tuple(f"x{j}" for j in range(FEATURES))

    # One task run for the stage, with its progress.
    runs = wait_for_task_runs(flow_run_id(state), {"generate_partitions": 1})
    assert set(runs) == {"generate_partitions"}
    assert runs["generate_partitions"][0].name == "generate"
    assert_summary_and_progress(flow_run_id(state), stages=("generate",))

    # A second run finds every partition complete and rewrites nothing.
    mtimes = {f: f.stat().st_mtime_ns for f in out.glob("*.parquet")}
    again = completed(
        run(generate_dataset, runner, out=str(out), dataset=dataset, workdir=str(tmp_path))
    )
    assert again.written == 0 and again.partitions == N_FILES
    assert {f: f.stat().st_mtime_ns for f in out.glob("*.parquet")} == mtimes


@pytest.mark.parametrize(
    ("task", "model_name", "metrics"),
    [
        ("classification", "sgd-classifier", {"accuracy", "roc_auc"}),
        ("regression", "sgd-regressor", {"r2", "rmse"}),
        ("blobs", "minibatch-kmeans", {"inertia"}),
    ],
)
def test_train_returns_metrics_and_a_model_that_predicts(
    runner, tmp_path, task, model_name, metrics
):
    data = tmp_path / "data"
    ooc.generate_dataset(data, ROWS, FEATURES, CHUNK_ROWS, task=task, seed=5)
    model = ModelConfig(name=model_name, params={"random_state": 0})
    training = tiny_training(epochs=2)
    state = run(
        train, runner, data=str(data), workdir=str(tmp_path), model=model, training=training
    )
    result = completed(state)
    trained = result.trained

    got = trained.evaluated.metrics
    assert metrics <= set(got), got
    assert trained.evaluated.n_samples == HOLDOUT_ROWS
    if task == "classification":
        assert 0.6 < got["accuracy"] <= 1 and 0.6 < got["roc_auc"] <= 1
    elif task == "regression":
        assert 0.5 < got["r2"] <= 1 and got["rmse"] > 0
    else:
        assert got["inertia"] > 0

    fitted = trained.fitted
    assert fitted.n_epochs == 2 and fitted.n_samples_seen == 2 * (ROWS - HOLDOUT_ROWS)
    assert fitted.resumed_from is None
    model_path = Path(fitted.model_path)
    card = json.loads(model_path.with_suffix(".json").read_text())
    assert card == json.loads(json.dumps(trained.card(), default=str))
    assert card["features"] == [f"x{j}" for j in range(FEATURES)]
    # Registered in the workdir's MLflow store; the first version becomes the champion.
    kind = {"classification": "classification", "regression": "regression"}.get(task, "clustering")
    assert result.registered.version == "1" and result.registered.promoted is True
    assert champion_version(tmp_path, f"ooc-{kind}") == "1"
    assert model_path.parent == tmp_path / "runs" / str(flow_run_id(state))
    assert {"model.pkl", "model.json", "scaler.pkl", "blocks.csv"} <= {
        p.name for p in model_path.parent.iterdir()
    }

    pipe = load_object(model_path)
    X = features_of(data / "part-00000.parquet")
    predicted = pipe.predict(X)
    assert predicted.shape == (CHUNK_ROWS,)
    if task == "blobs":
        assert set(np.unique(predicted)) <= set(range(pipe[-1].estimator_.n_clusters))
    else:
        assert np.isfinite(predicted.astype(float)).all()

    runs = wait_for_task_runs(flow_run_id(state), {**TRAIN_STAGES, **RECORDING})
    assert {name: len(found) for name, found in runs.items()} == {**TRAIN_STAGES, **RECORDING}
    assert sorted(t.name for found in runs.values() for t in found) == [
        "check-data", "evaluate", "fit", "log-to-mlflow", "preprocess", "register",
    ]  # fmt: skip
    summary = assert_summary_and_progress(flow_run_id(state), stages=("fit",))
    assert model_name in summary and str(model_path) in summary
    assert "Registry" in summary and "MLflow run" in summary
    assert logged(flow_run_id(state), "Epoch 2: progressive training score")

    # The run's profile in MLflow, the Dask report (written while the model was logged)
    # complete and offline.
    client = registry(tmp_path)
    (mlflow_run,) = client.search_runs(
        [client.get_experiment_by_name("ooc").experiment_id],
        filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id(state)}'",
    )
    run_id = mlflow_run.info.run_id
    profiles = {Path(a.path).name for a in client.list_artifacts(run_id, "profiles")}
    assert {"task-stream-fit.png", "cpu-memory.png", "dask-performance-report.html"} <= profiles
    report = client.download_artifacts(
        run_id, "profiles/dask-performance-report.html", str(tmp_path / "downloaded")
    )
    html = Path(report).read_text()
    assert html.rstrip().endswith("</html>") and "Dask Performance Report" in html
    assert "cdn.bokeh.org" not in html


def test_batch_predict_writes_one_output_per_input(runner, trained, clf_data, tmp_path):
    result, workdir = trained
    out = tmp_path / "pred"
    # No model given: the flow takes the registry's champion in the workdir's MLflow store.
    state = run(batch_predict, runner, data=str(clf_data), out=str(out), workdir=str(workdir))
    predicted = completed(state).predicted

    assert predicted.model_ref == "models:/ooc-classification/1"
    assert predicted.files == N_FILES and predicted.rows == ROWS
    assert predicted.written == N_FILES
    assert parquet_rows(out) == parquet_rows(clf_data)
    pipe = load_object(result.trained.fitted.model_path)  # the model that was registered
    for name in ("part-00000.parquet", "part-00007.parquet"):
        written = pq.read_table(out / name)["prediction"].to_numpy()
        np.testing.assert_array_equal(written, pipe.predict(features_of(clf_data / name)))

    runs = wait_for_task_runs(flow_run_id(state), {"predict_files": 1})
    assert set(runs) == {"predict_files"} and runs["predict_files"][0].name == "predict"
    assert_summary_and_progress(flow_run_id(state), stages=("predict",))


def test_pipeline_end_to_end(runner, tmp_path):
    dataset = tiny_dataset()
    state = run(
        pipeline, runner, workdir=str(tmp_path), dataset=dataset, model=ModelConfig(),
        training=tiny_training(),
    )  # fmt: skip
    result = completed(state)

    data = Path(result.generated.path)
    assert data == dataset_dir(tmp_path, dataset)
    assert data.name == f"classification-{ROWS}x{FEATURES}-{CHUNK_ROWS}-float64-seed0"
    assert result.generated.written == N_FILES
    assert result.trained.evaluated.metrics["accuracy"] > 0.6
    out = Path(result.predicted.out)
    assert out == tmp_path / "predictions" / str(flow_run_id(state))
    assert result.predicted.rows == ROWS and parquet_rows(out) == parquet_rows(data)
    # The new model is the first, so the champion: the predictions are its.
    assert result.registered.promoted is True
    assert result.predicted_with == "this run's model, registered as ooc-classification v1"
    assert champion_version(tmp_path, "ooc-classification") == "1"
    (mlflow_run,) = registry(tmp_path).search_runs(["1"])
    assert mlflow_run.data.tags["ooc.predict_model_version"] == "1"

    expected = {"generate_partitions": 1, **TRAIN_STAGES, "predict_files": 1, **RECORDING}
    runs = wait_for_task_runs(flow_run_id(state), expected)
    assert {name: len(found) for name, found in runs.items()} == expected
    summary = assert_summary_and_progress(flow_run_id(state), stages=("generate", "fit", "predict"))
    assert "**Data**" in summary and "**Model**" in summary and "**Predictions**" in summary


# -- retries and resumption -----------------------------------------------------------------


def test_failed_partition_write_is_retried_where_it_runs(runner, worker_faults, tmp_path):
    worker_faults("generate-partition:1")
    out = tmp_path / "data"
    dataset = tiny_dataset()
    state = run(generate_dataset, runner, out=str(out), dataset=dataset, workdir=str(tmp_path))
    result = completed(state)

    assert result.written == N_FILES
    assert parquet_rows(out) == {f"part-{i:05d}.parquet": CHUNK_ROWS for i in range(N_FILES)}
    assert (tmp_path / "fault-markers" / "ooc-fault-generate-partition-1").exists()
    # Retried inside the stage (one partition again), not the whole stage: one task run.
    runs = wait_for_task_runs(flow_run_id(state), {"generate_partitions": 1})
    assert [t.run_count for t in runs["generate_partitions"]] == [1]
    assert logged(flow_run_id(state), "partition 1: attempt 1 failed")


def test_failed_partition_prediction_is_retried_where_it_runs(
    runner, worker_faults, trained, clf_data, tmp_path
):
    worker_faults("predict-partition:2")
    out = tmp_path / "pred"
    model = trained[0].trained.fitted.model_path
    state = run(
        batch_predict, runner, data=str(clf_data), out=str(out), model=model, workdir=str(tmp_path)
    )
    predicted = completed(state).predicted

    assert predicted.rows == ROWS and parquet_rows(out) == parquet_rows(clf_data)
    runs = wait_for_task_runs(flow_run_id(state), {"predict_files": 1})
    assert [t.run_count for t in runs["predict_files"]] == [1]
    assert logged(flow_run_id(state), "part-00002.parquet: attempt 1 failed")


def test_interrupted_fit_resumes_from_checkpoint_to_the_same_model(
    runner, worker_faults, clf_data, tmp_path
):
    model = ModelConfig(params={"random_state": 0})
    training = tiny_training(epochs=2, checkpoint_every=2)
    params = {"data": str(clf_data), "model": model, "training": training}
    clean = completed(run(train, runner, workdir=str(tmp_path / "clean"), **params)).trained
    assert clean.fitted.resumed_from is None

    # The fit fails after its 5th block: the retry resumes from the checkpoint of block 4.
    worker_faults("fit-block:5")
    state = run(train, runner, workdir=str(tmp_path / "interrupted"), **params)
    resumed = completed(state).trained

    assert tuple(resumed.fitted.resumed_from) == (0, 4)
    assert resumed.fitted.n_samples_seen == clean.fitted.n_samples_seen
    assert resumed.fitted.n_epochs == clean.fitted.n_epochs == 2
    ours, theirs = final_step(resumed.fitted.model_path), final_step(clean.fitted.model_path)
    np.testing.assert_array_equal(ours.coef_, theirs.coef_)
    np.testing.assert_array_equal(ours.intercept_, theirs.intercept_)
    assert resumed.evaluated.metrics["accuracy"] == clean.evaluated.metrics["accuracy"]

    runs = wait_for_task_runs(flow_run_id(state), {"fit_model": 1})
    assert [t.run_count for t in runs["fit_model"]] == [2]  # the stage's own retry
    assert "resumed from" in assert_summary_and_progress(flow_run_id(state))
    assert logged(flow_run_id(state), "Resumed from checkpoint at epoch 0")


def test_prediction_rerun_after_partial_run_gives_exactly_n_rows(
    runner, trained, clf_data, tmp_path
):
    out = tmp_path / "pred"
    model_path = trained[0].trained.fitted.model_path
    # A first run that crashed: 3 outputs complete, a stray temporary file of a 4th (as a
    # writer without O_TMPFILE leaves), and a damaged file under a final name (as a
    # non-atomic writer would leave).
    jobs = ooc.prediction_jobs(clf_data, out, features=trained[0].trained.plan.features)
    for job in jobs[:3]:
        assert ooc.predict_file(load_object(model_path), job)
    stray = out / f".{jobs[3].dest.name}.{'0123abcd' * 4}.tmp"
    stray.write_bytes(b"PAR1 half a file")
    jobs[4].dest.write_bytes(b"not parquet")
    kept = {job.dest: job.dest.stat().st_mtime_ns for job in jobs[:3]}

    predicted = completed(
        run(batch_predict, runner, data=str(clf_data), out=str(out), model=model_path,
            workdir=str(tmp_path))
    ).predicted  # fmt: skip

    assert predicted.files == N_FILES and predicted.rows == ROWS
    assert predicted.written == N_FILES - 3
    assert {dest: dest.stat().st_mtime_ns for dest in kept} == kept
    assert parquet_rows(out) == parquet_rows(clf_data)
    assert sorted(p.name for p in out.glob("*.parquet")) == sorted(j.dest.name for j in jobs)
    # The crash's temporary file is removed: nothing partial or temporary is left.
    assert not stray.exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_prediction_survives_a_killed_worker(runner, worker_faults, trained, clf_data, tmp_path):
    # The worker process predicting file 2 dies; Dask runs its task again elsewhere.
    worker_faults("predict-partition:2:kill")
    out = tmp_path / "pred"
    model = trained[0].trained.fitted.model_path
    state = run(
        batch_predict, runner, data=str(clf_data), out=str(out), model=model, workdir=str(tmp_path)
    )
    predicted = completed(state).predicted

    assert (tmp_path / "fault-markers" / "ooc-fault-predict-partition-2").exists()
    assert predicted.files == N_FILES and predicted.rows == ROWS
    assert parquet_rows(out) == parquet_rows(clf_data)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    runs = wait_for_task_runs(flow_run_id(state), {"predict_files": 1})
    assert all(t.state.is_completed() for t in runs["predict_files"])


# -- bad input fails before any fitting -----------------------------------------------------


def _write(path: Path, columns: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def _bad_data(kind: str, root: Path) -> tuple[Path, type[Exception], str]:
    rng = np.random.default_rng(0)
    cols = {f"x{j}": rng.normal(size=100) for j in range(3)}
    data = root / "bad"
    if kind == "missing":
        return data, FileNotFoundError, f"Data path {data} does not exist"
    if kind == "no-parquet":
        data.mkdir()
        (data / "part-0.csv").write_text("x0,y\n1,0\n")
        return data, FileNotFoundError, f"No parquet files found under {data}"
    if kind == "no-target":
        for i in range(3):
            _write(data / f"part-{i}.parquet", {**cols, "label": np.zeros(100, dtype=int)})
        return data, ValueError, f"Target column 'y' not found in {data / 'part-0.parquet'}"
    assert kind == "schema"
    for i in range(3):
        extra = {"x3": rng.normal(size=100)} if i == 2 else {}
        _write(data / f"part-{i}.parquet", {**cols, **extra, "y": np.zeros(100, dtype=int)})
    return data, ValueError, f"Schema mismatch: {data / 'part-2.parquet'} has columns"


@pytest.mark.filterwarnings("ignore:Skipped 1 file")
@pytest.mark.parametrize("kind", ["missing", "no-parquet", "no-target", "schema"])
def test_train_fails_fast_on_bad_data(runner, trained, tmp_path, kind):
    """In a workdir that has a champion already: it must stay the only version."""
    import re

    data, error, message = _bad_data(kind, tmp_path)
    work = trained[1]
    assert registered_versions(work) == [("ooc-classification", "1")]

    state = run(train, runner, data=str(data), workdir=str(work))

    assert state.is_failed()
    assert read_flow_run(flow_run_id(state)).state.is_failed()
    with pytest.raises(error, match=re.escape(message)):
        state.result()
    runs = wait_for_task_runs(flow_run_id(state), {"check_dataset": 1})
    assert [t.state.is_failed() for t in runs["check_dataset"]] == [True]
    assert set(runs) == {"check_dataset"}  # no preprocessing, no fit
    assert not list((work / "runs" / str(flow_run_id(state))).rglob("*.pkl"))
    assert registered_versions(work) == [("ooc-classification", "1")]
    assert champion_version(work, "ooc-classification") == "1"
    client = registry(work)
    (mlflow_run,) = client.search_runs(
        [client.get_experiment_by_name("ooc").experiment_id],
        filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id(state)}'",
    )
    assert mlflow_run.info.status == "FAILED"


def test_train_rejects_an_unknown_estimator_parameter_before_running(runner, clf_data, tmp_path):
    model = {"name": "sgd-classifier", "params": {"alpah": 0.001}}
    state = run(train, runner, data=str(clf_data), workdir=str(tmp_path), model=model)

    assert state.is_failed()
    assert "got an unexpected keyword argument 'alpah'" in state.message
    assert task_runs(flow_run_id(state)) == []
    assert not (tmp_path / "runs").exists()


# -- the task runner from settings ----------------------------------------------------------


def test_runner_uses_the_scheduler_address(runner, dask_cluster, monkeypatch):
    from distributed import LocalCluster

    from ooc.flows.runner import dask_task_runner

    address = dask_cluster.scheduler_address
    assert runner.address == address and runner.cluster_class is None

    monkeypatch.setenv("OOC_DASK_ADDRESS", "tcp://10.0.0.7:8786")
    assert dask_task_runner().address == "tcp://10.0.0.7:8786"

    monkeypatch.delenv("OOC_DASK_ADDRESS")
    local = dask_task_runner()
    assert local.address is None and local.resolved_cluster_class is LocalCluster
    # By default, threads of the flow's process: nothing to start, nothing to import.
    assert local.cluster_kwargs["processes"] is False and local.cluster_kwargs["n_workers"] == 1
    monkeypatch.setenv("OOC_N_WORKERS", "3")
    monkeypatch.setenv("OOC_THREADS_PER_WORKER", "2")
    monkeypatch.setenv("OOC_WORKER_PROCESSES", "true")
    local = dask_task_runner()
    assert local.cluster_kwargs["n_workers"] == 3
    assert local.cluster_kwargs["threads_per_worker"] == 2
    assert local.cluster_kwargs["processes"] is True
    assert local.cluster_kwargs["host"] == "127.0.0.1"

    monkeypatch.setenv("OOC_DASK_CLUSTER_CLASS", "distributed.LocalCluster")
    monkeypatch.setenv("OOC_DASK_CLUSTER_KWARGS", '{"n_workers": 1, "processes": false}')
    custom = dask_task_runner()
    assert custom.resolved_cluster_class is LocalCluster
    assert custom.cluster_kwargs == {"n_workers": 1, "processes": False}
