"""The flows against a temporary Prefect server and a real Dask cluster of worker processes.

Every flow runs on the session cluster through the project's own task runner
(``OOC_DASK_ADDRESS``); what the flow returns, what it wrote, and what Prefect recorded
(flow run state, mapped task runs, retries, artifacts) are all checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ooc
from flows.params import ModelConfig, TrainingConfig
from flows.pipeline import batch_predict, generate_dataset, pipeline, train
from tasks.store import load_object

from .support import (
    CHUNK_ROWS,
    FEATURES,
    N_FILES,
    ROWS,
    TINY,
    assert_summary_and_progress,
    champion_version,
    completed,
    final_step,
    flow_run_id,
    parquet_rows,
    read_flow_run,
    registered_versions,
    registry,
    run,
    task_runs,
    wait_for_task_runs,
)

pytestmark = pytest.mark.usefixtures("prefect_server")


def features_of(path: Path) -> np.ndarray:
    table = pq.read_table(path)
    return np.column_stack([table[f"x{j}"].to_numpy() for j in range(FEATURES)])


def retried(task_run) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        names = [s.name for s in client.read_task_run_states(task_run.id)]
    return task_run.run_count >= 2 and "Retrying" in names


@pytest.fixture(scope="module")
def trained(runner, clf_data, tmp_path_factory) -> dict:
    """One train flow run on the tiny classification data (its result and workdir)."""
    workdir = tmp_path_factory.mktemp("trained")
    model = ModelConfig(params={"random_state": 0})
    result = completed(run(train, runner, data=str(clf_data), workdir=str(workdir), model=model))
    return {**result, "workdir": workdir}


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
    before = scheduler_task_counts(dask_cluster)
    state = run(generate_dataset, runner, out=str(out), seed=3, workdir=str(tmp_path), **TINY)
    result = completed(state)
    # The mapped tasks ran on the cluster OOC_DASK_ADDRESS names.
    seen = scheduler_task_counts(dask_cluster)
    assert seen.get("write_partition", 0) - before.get("write_partition", 0) == N_FILES

    assert result["partitions"] == N_FILES and result["written"] == N_FILES
    assert result["rows"] == ROWS and result["path"] == str(out)
    assert parquet_rows(out) == {f"part-{i:05d}.parquet": CHUNK_ROWS for i in range(N_FILES)}
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["n_rows"] == ROWS and len(manifest["partitions"]) == N_FILES
    layout = ooc.inspect_parquet(out)
    assert layout.features == tuple(f"x{j}" for j in range(FEATURES))

    runs = wait_for_task_runs(flow_run_id(state), {"plan_dataset": 1, "write_partition": N_FILES})
    assert len(runs["write_partition"]) == N_FILES
    assert_summary_and_progress(flow_run_id(state), progress=False)

    # A second run finds every partition complete and rewrites nothing.
    mtimes = {f: f.stat().st_mtime_ns for f in out.glob("*.parquet")}
    again = completed(
        run(generate_dataset, runner, out=str(out), seed=3, workdir=str(tmp_path), **TINY)
    )
    assert again["written"] == 0 and again["partitions"] == N_FILES
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
    training = TrainingConfig(epochs=2)
    state = run(
        train, runner, data=str(data), workdir=str(tmp_path), model=model, training=training
    )
    result = completed(state)

    got = result["metrics"]
    assert metrics <= set(got), got
    assert got["n_samples"] == CHUNK_ROWS  # one of eight files is held out
    if task == "classification":
        assert 0.6 < got["accuracy"] <= 1 and 0.6 < got["roc_auc"] <= 1
    elif task == "regression":
        assert 0.5 < got["r2"] <= 1 and got["rmse"] > 0
    else:
        assert got["inertia"] > 0

    fit = result["fit"]
    assert fit["n_epochs"] == 2 and fit["n_samples_seen"] == 2 * (ROWS - CHUNK_ROWS)
    assert fit["resumed_from"] is None
    model_path = Path(fit["model_path"])
    card = json.loads(model_path.with_suffix(".json").read_text())
    assert card["model_path"] == fit["model_path"] == result["card"]["model_path"]
    assert card["features"] == [f"x{j}" for j in range(FEATURES)]
    # Registered in the workdir's MLflow store; the first version becomes the champion.
    kind = {"classification": "classification", "regression": "regression"}.get(task, "clustering")
    assert result["registry"]["version"] == "1" and result["registry"]["promoted"] is True
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

    runs = wait_for_task_runs(
        flow_run_id(state),
        {"check_dataset": 1, "fit_scaler": 1, "fit_model": 1, "evaluate_model": 1},
    )
    assert len(runs["fit_model"]) == 1
    summary = assert_summary_and_progress(flow_run_id(state))
    assert model_name in summary and str(model_path) in summary


def test_batch_predict_writes_one_output_per_input(runner, trained, clf_data, tmp_path):
    out = tmp_path / "pred"
    # No model given: the flow takes the registry's champion in the workdir's MLflow store.
    state = run(
        batch_predict, runner, data=str(clf_data), out=str(out), workdir=str(trained["workdir"])
    )
    result = completed(state)

    assert result["model_path"] == "models:/ooc-classification/1"
    assert result["files"] == N_FILES and result["rows"] == ROWS and result["written"] == N_FILES
    assert parquet_rows(out) == parquet_rows(clf_data)
    pipe = load_object(trained["fit"]["model_path"])  # the model that was registered
    for name in ("part-00000.parquet", "part-00007.parquet"):
        written = pq.read_table(out / name)["prediction"].to_numpy()
        np.testing.assert_array_equal(written, pipe.predict(features_of(clf_data / name)))

    runs = wait_for_task_runs(
        flow_run_id(state), {"plan_predictions": 1, "predict_partition": N_FILES}
    )
    assert len(runs["predict_partition"]) == N_FILES
    assert sorted(t.name for t in runs["predict_partition"]) == [
        f"predict-part-{i:05d}.parquet" for i in range(N_FILES)
    ]
    assert_summary_and_progress(flow_run_id(state), progress=False)


def test_pipeline_end_to_end(runner, tmp_path):
    state = run(pipeline, runner, workdir=str(tmp_path), model=ModelConfig(), **TINY)
    result = completed(state)

    generated, trained_, predicted = result["generate"], result["train"], result["predict"]
    data = Path(generated["path"])
    assert data == tmp_path / "data" / f"classification-{ROWS}x{FEATURES}-{CHUNK_ROWS}-seed0"
    assert generated["written"] == N_FILES
    assert trained_["metrics"]["accuracy"] > 0.6
    out = Path(predicted["out"])
    assert out == tmp_path / "predictions" / str(flow_run_id(state))
    assert predicted["rows"] == ROWS and parquet_rows(out) == parquet_rows(data)
    # The new model is the first, so the champion: the predictions are its.
    assert trained_["registry"]["promoted"] is True
    assert predicted["model_path"].startswith(("models:/", "runs:/"))
    assert champion_version(tmp_path, "ooc-classification") == "1"

    runs = wait_for_task_runs(
        flow_run_id(state),
        {"write_partition": N_FILES, "fit_model": 1, "predict_partition": N_FILES},
    )
    assert len(runs["write_partition"]) == N_FILES == len(runs["predict_partition"])
    summary = assert_summary_and_progress(flow_run_id(state))
    assert "**Data**" in summary and "**Model**" in summary and "**Predictions**" in summary


# -- retries and resumption -----------------------------------------------------------------


def test_failed_partition_write_is_retried(runner, worker_faults, tmp_path):
    worker_faults("generate-partition:1")
    out = tmp_path / "data"
    state = run(generate_dataset, runner, out=str(out), workdir=str(tmp_path), **TINY)
    result = completed(state)

    assert result["written"] == N_FILES
    assert parquet_rows(out) == {f"part-{i:05d}.parquet": CHUNK_ROWS for i in range(N_FILES)}
    assert (tmp_path / "fault-markers" / "ooc-fault-generate-partition-1").exists()
    runs = wait_for_task_runs(flow_run_id(state), {"write_partition": N_FILES})
    retries = [t for t in runs["write_partition"] if retried(t)]
    assert len(retries) == 1, [(t.name, t.run_count) for t in runs["write_partition"]]


def test_failed_partition_prediction_is_retried(runner, worker_faults, trained, clf_data, tmp_path):
    worker_faults("predict-partition:2")
    out = tmp_path / "pred"
    model = trained["fit"]["model_path"]
    state = run(
        batch_predict, runner, data=str(clf_data), out=str(out), model=model, workdir=str(tmp_path)
    )
    result = completed(state)

    assert result["rows"] == ROWS and parquet_rows(out) == parquet_rows(clf_data)
    runs = wait_for_task_runs(flow_run_id(state), {"predict_partition": N_FILES})
    retries = [t.name for t in runs["predict_partition"] if retried(t)]
    assert retries == ["predict-part-00002.parquet"]


def test_interrupted_fit_resumes_from_checkpoint_to_the_same_model(
    runner, worker_faults, clf_data, tmp_path
):
    model = ModelConfig(params={"random_state": 0})
    training = TrainingConfig(epochs=2, checkpoint_every=2)
    params = {"data": str(clf_data), "model": model, "training": training}
    clean = completed(run(train, runner, workdir=str(tmp_path / "clean"), **params))
    assert clean["fit"]["resumed_from"] is None

    # The fit fails after its 5th block: the retry resumes from the checkpoint of block 4.
    worker_faults("fit-block:5")
    state = run(train, runner, workdir=str(tmp_path / "interrupted"), **params)
    resumed = completed(state)

    assert tuple(resumed["fit"]["resumed_from"]) == (0, 4)
    assert resumed["fit"]["n_samples_seen"] == clean["fit"]["n_samples_seen"]
    assert resumed["fit"]["n_epochs"] == clean["fit"]["n_epochs"] == 2
    ours, theirs = final_step(resumed["fit"]["model_path"]), final_step(clean["fit"]["model_path"])
    np.testing.assert_array_equal(ours.coef_, theirs.coef_)
    np.testing.assert_array_equal(ours.intercept_, theirs.intercept_)
    assert resumed["metrics"]["accuracy"] == clean["metrics"]["accuracy"]

    runs = wait_for_task_runs(flow_run_id(state), {"fit_model": 1})
    assert [retried(t) for t in runs["fit_model"]] == [True]
    assert "resumed from" in assert_summary_and_progress(flow_run_id(state))


def test_prediction_rerun_after_partial_run_gives_exactly_n_rows(
    runner, trained, clf_data, tmp_path
):
    out = tmp_path / "pred"
    model_path = trained["fit"]["model_path"]
    # A first run that crashed: 3 outputs complete, a stray temporary file of a 4th, and
    # a damaged file under a final name (as a non-atomic writer would leave).
    jobs = ooc.prediction_jobs(clf_data, out, features=trained["card"]["features"])
    for job in jobs[:3]:
        assert ooc.predict_file(load_object(model_path), job)
    stray = out / f".{jobs[3].dest.name}.0123abcd.tmp"
    stray.write_bytes(b"PAR1 half a file")
    jobs[4].dest.write_bytes(b"not parquet")
    kept = {job.dest: job.dest.stat().st_mtime_ns for job in jobs[:3]}

    result = completed(
        run(
            batch_predict,
            runner,
            data=str(clf_data),
            out=str(out),
            model=model_path,
            workdir=str(tmp_path),
        )
    )

    assert result["files"] == N_FILES and result["rows"] == ROWS
    assert result["written"] == N_FILES - 3
    assert {dest: dest.stat().st_mtime_ns for dest in kept} == kept
    assert parquet_rows(out) == parquet_rows(clf_data)
    assert sum(parquet_rows(out).values()) == ROWS
    assert sorted(p.name for p in out.glob("*.parquet")) == sorted(j.dest.name for j in jobs)
    # The crash's temporary file is removed: nothing partial or temporary is left.
    assert not stray.exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_prediction_survives_a_killed_worker(runner, worker_faults, trained, clf_data, tmp_path):
    # The worker process running partition 2 dies; Dask runs its tasks again elsewhere.
    worker_faults("predict-partition:2:kill")
    out = tmp_path / "pred"
    model = trained["fit"]["model_path"]
    state = run(
        batch_predict, runner, data=str(clf_data), out=str(out), model=model, workdir=str(tmp_path)
    )
    result = completed(state)

    assert (tmp_path / "fault-markers" / "ooc-fault-predict-partition-2").exists()
    assert result["files"] == N_FILES and result["rows"] == ROWS
    assert parquet_rows(out) == parquet_rows(clf_data)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    runs = wait_for_task_runs(flow_run_id(state), {"predict_partition": N_FILES})
    assert all(t.state.is_completed() for t in runs["predict_partition"])


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
        return data, FileNotFoundError, f"No parquet files .* under {data}"
    if kind == "no-target":
        for i in range(3):
            _write(data / f"part-{i}.parquet", {**cols, "label": np.zeros(100, dtype=int)})
        return data, ValueError, f"Target column 'y' not found in {data / 'part-0.parquet'}"
    assert kind == "schema"
    for i in range(3):
        extra = {"x3": rng.normal(size=100)} if i == 2 else {}
        _write(data / f"part-{i}.parquet", {**cols, **extra, "y": np.zeros(100, dtype=int)})
    return data, ValueError, f"Schema mismatch: {data / 'part-2.parquet'} has columns"


@pytest.mark.parametrize("kind", ["missing", "no-parquet", "no-target", "schema"])
def test_train_fails_fast_on_bad_data(runner, trained, tmp_path, kind):
    """In a workdir that has a champion already: it must stay the only version."""
    import re

    data, error, message = _bad_data(kind, tmp_path)
    work = trained["workdir"]
    assert registered_versions(work) == [("ooc-classification", "1")]

    state = run(train, runner, data=str(data), workdir=str(work))

    assert state.is_failed()
    assert read_flow_run(flow_run_id(state)).state.is_failed()
    with pytest.raises(error, match=message if kind == "no-parquet" else re.escape(message)):
        state.result()
    runs = wait_for_task_runs(flow_run_id(state), {"check_dataset": 1})
    assert [t.state.is_failed() for t in runs["check_dataset"]] == [True]
    assert set(runs) == {"check_dataset"}  # no fit_scaler, no fit_model
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

    from flows.runner import dask_task_runner

    address = dask_cluster.scheduler_address
    assert runner.address == address and runner.cluster_class is None

    monkeypatch.setenv("OOC_DASK_ADDRESS", "tcp://10.0.0.7:8786")
    assert dask_task_runner().address == "tcp://10.0.0.7:8786"

    monkeypatch.delenv("OOC_DASK_ADDRESS")
    monkeypatch.setenv("OOC_N_WORKERS", "3")
    monkeypatch.setenv("OOC_THREADS_PER_WORKER", "2")
    local = dask_task_runner()
    assert local.address is None
    assert local.resolved_cluster_class is LocalCluster
    assert local.cluster_kwargs["n_workers"] == 3
    assert local.cluster_kwargs["threads_per_worker"] == 2
    assert local.cluster_kwargs["processes"] is True

    monkeypatch.setenv("OOC_DASK_CLUSTER_CLASS", "distributed.LocalCluster")
    monkeypatch.setenv("OOC_DASK_CLUSTER_KWARGS", '{"n_workers": 1, "processes": false}')
    custom = dask_task_runner()
    assert custom.resolved_cluster_class is LocalCluster
    assert custom.cluster_kwargs == {"n_workers": 1, "processes": False}
