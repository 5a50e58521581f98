"""The Prefect tasks on their own: each called as a real task against the temporary
Prefect server (in this process), or, for the tasks that use the cluster, inside a small
flow on the session's Dask cluster. Results are compared with scikit-learn and numpy on
the same data in memory."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import ooc
from ooc.datasets import DatasetSpec
from tasks.data import check_dataset, plan_dataset, write_partition
from tasks.evaluation import evaluate_model
from tasks.faults import InjectedFault, maybe_fail
from tasks.prediction import plan_predictions, predict_partition
from tasks.settings import Settings, get_settings
from tasks.store import load_object, save_object
from tasks.training import fit_model, fit_scaler, training_arrays

ROOT = Path(__file__).resolve().parents[2]
ROWS, CHUNK_ROWS, FEATURES = 40_000, 5_000, 5
SPEC = DatasetSpec(ROWS, FEATURES, CHUNK_ROWS, seed=11)
HOLDOUT, SPLIT_SEED = 0.1, 0
TRAINING = {
    "epochs": 1,
    "shuffle_blocks": False,
    "random_state": 0,
    "prefetch": 2,
    "early_stopping": False,
    "holdout_fraction": HOLDOUT,
    "split_seed": SPLIT_SEED,
    "checkpoint_every": 2,
}
MODEL = {"name": "sgd-classifier", "params": {"random_state": 0}}

# Tasks called outside a flow log to the API without a flow run id; Prefect warns.
pytestmark = pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted:UserWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tasks") / "data"
    ooc.generate_dataset(path, ROWS, FEATURES, CHUNK_ROWS, seed=11)
    return path


def read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    X = np.column_stack([table[f"x{j}"].to_numpy() for j in range(FEATURES)])
    return X, table["y"].to_numpy()


def split_files(data: Path) -> tuple[list[Path], list[Path]]:
    train, holdout = ooc.inspect_parquet(data).split(HOLDOUT, seed=SPLIT_SEED)
    return list(train.files), list(holdout.files)


def task_run(state):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_task_run(state.state_details.task_run_id)
        names = [s.name for s in client.read_task_run_states(run.id)]
    return run, names


# -- the fault hook -------------------------------------------------------------------------


def test_fault_hook_is_inert_without_ooc_faults(monkeypatch, tmp_path):
    monkeypatch.delenv("OOC_FAULTS", raising=False)
    monkeypatch.setenv("OOC_FAULTS_DIR", str(tmp_path))
    maybe_fail("fit-block", 1)
    assert list(tmp_path.iterdir()) == []


def test_fault_fires_once_at_its_point_and_count(faults, tmp_path):
    faults("generate-partition:1, predict-partition:2")
    maybe_fail("generate-partition", 0)
    maybe_fail("predict-partition", 1)
    maybe_fail("fit-block", 2)
    with pytest.raises(InjectedFault, match=r"injected fault at predict-partition #2"):
        maybe_fail("predict-partition", 2)
    maybe_fail("predict-partition", 2)  # fired already: the retry passes
    assert [p.name for p in (tmp_path / "fault-markers").iterdir()] == [
        "ooc-fault-predict-partition-2"
    ]
    with pytest.raises(InjectedFault, match="OOC_FAULTS="):
        maybe_fail("generate-partition", 1)


def test_kill_fault_ends_the_process_once(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OOC_FAULTS": "fit-block:3:kill",
        "OOC_FAULTS_DIR": str(tmp_path),
    }
    code = "from tasks.faults import maybe_fail\nfor i in range(1, 5): maybe_fail('fit-block', i)"
    first = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    second = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    assert (first.returncode, second.returncode) == (17, 0)


# -- store ----------------------------------------------------------------------------------


def test_store_round_trip_reloads_a_replaced_file(tmp_path):
    path = tmp_path / "run" / "obj.pkl"
    assert save_object({"a": np.arange(3)}, path) == str(path)
    first = load_object(path)
    np.testing.assert_array_equal(first["a"], np.arange(3))
    assert load_object(path) is first  # cached while the file is unchanged
    save_object({"a": np.arange(5)}, path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    np.testing.assert_array_equal(load_object(path)["a"], np.arange(5))
    assert [p.name for p in path.parent.iterdir()] == ["obj.pkl"]  # no temporary left
    with pytest.raises(FileNotFoundError, match=r"No saved object at .*missing\.pkl"):
        load_object(tmp_path / "missing.pkl")


# -- settings -------------------------------------------------------------------------------


def test_settings_defaults_need_no_server(monkeypatch):
    for name in list(os.environ):
        if name.startswith("OOC_"):
            monkeypatch.delenv(name)
    settings = get_settings()
    assert settings.dask_address is None and settings.dask_cluster_class is None
    assert settings.workdir == Path(".ooc")
    assert (settings.n_workers, settings.threads_per_worker) == (2, 1)
    assert settings.dask_cluster_kwargs == {}


def test_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OOC_WORKDIR", str(tmp_path))
    monkeypatch.setenv("OOC_DASK_ADDRESS", "tcp://scheduler:8786")
    monkeypatch.setenv("OOC_N_WORKERS", "4")
    monkeypatch.setenv("OOC_DASK_CLUSTER_KWARGS", '{"n_workers": 3}')
    monkeypatch.setenv("OOC_TRAIN_CRON", "*/30 * * * *")
    settings = Settings()
    assert settings.workdir == tmp_path and settings.dask_address == "tcp://scheduler:8786"
    assert settings.n_workers == 4 and settings.dask_cluster_kwargs == {"n_workers": 3}
    assert settings.train_cron == "*/30 * * * *"

    monkeypatch.setenv("OOC_N_WORKERS", "0")
    with pytest.raises(ValidationError, match="n_workers"):
        Settings()


# -- data tasks -----------------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_server")
def test_plan_and_write_partitions(tmp_path):
    out = str(tmp_path / "data")
    assert plan_dataset(out, SPEC) == SPEC.n_partitions == ROWS // CHUNK_ROWS
    assert json.loads((tmp_path / "data" / "_manifest.json").read_text())["n_rows"] == ROWS
    assert write_partition(out, SPEC, 3) is True
    assert write_partition(out, SPEC, 3) is False  # complete already: kept
    assert pq.read_metadata(tmp_path / "data" / "part-00003.parquet").num_rows == CHUNK_ROWS


@pytest.mark.usefixtures("prefect_server")
def test_write_partition_is_retried_after_a_failure(faults, tmp_path):
    faults("generate-partition:0")
    out = str(tmp_path / "data")
    plan_dataset(out, SPEC)
    state = write_partition(out, SPEC, 0, return_state=True)
    assert state.is_completed() and state.result() is True
    run, names = task_run(state)
    assert run.run_count == 2
    assert "Retrying" in names and names[-1] == "Completed"


@pytest.mark.usefixtures("prefect_server")
def test_check_dataset_describes_the_split(data):
    layout = check_dataset(str(data), "y", HOLDOUT, SPLIT_SEED)
    train, holdout = split_files(data)
    assert layout["features"] == [f"x{j}" for j in range(FEATURES)]
    assert layout["n_files"] == 8 and layout["n_rows"] == ROWS
    assert layout["holdout_files"] == [str(f) for f in holdout] and len(holdout) == 1
    assert layout["train_rows"] == len(train) * CHUNK_ROWS == ROWS - layout["holdout_rows"]


@pytest.mark.usefixtures("prefect_server")
def test_check_dataset_names_the_bad_file_or_column(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_dataset(str(tmp_path / "nowhere"), "y", HOLDOUT, SPLIT_SEED)
    with pytest.raises(ValueError, match=r"Target column 'label' not found in .*part-00000"):
        check_dataset(str(data), "label", HOLDOUT, SPLIT_SEED)
    one = tmp_path / "one"
    one.mkdir()
    (one / "part-00000.parquet").write_bytes((data / "part-00000.parquet").read_bytes())
    with pytest.raises(ValueError, match="at least 2 parquet files"):
        check_dataset(str(one), "y", HOLDOUT, SPLIT_SEED)


# -- prediction tasks -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path(data, tmp_path_factory) -> str:
    """A pipeline fitted in memory on the training files, saved as the tasks save it."""
    train, _ = split_files(data)
    X, y = map(np.concatenate, zip(*(read_file(f) for f in train), strict=True))
    pipe = make_pipeline(StandardScaler(), SGDClassifier(random_state=0)).fit(X, y)
    return save_object(pipe, tmp_path_factory.mktemp("model") / "model.pkl")


@pytest.mark.usefixtures("prefect_server")
def test_plan_and_predict_partitions(data, model_path, tmp_path):
    out = tmp_path / "pred"
    features = [f"x{j}" for j in range(FEATURES)]
    jobs = plan_predictions(str(data), str(out), "y", features)
    assert [j.dest for j in jobs] == [out / f"part-{i:05d}.parquet" for i in range(8)]
    assert all(j.features == tuple(features) and j.rows == CHUNK_ROWS for j in jobs)

    result = predict_partition(jobs[1], 1, model_path, "predict")
    assert result == {"dest": str(jobs[1].dest), "rows": CHUNK_ROWS, "written": True}
    X, _ = read_file(jobs[1].source)
    written = pq.read_table(jobs[1].dest)["prediction"].to_numpy()
    np.testing.assert_array_equal(written, load_object(model_path).predict(X))
    assert predict_partition(jobs[1], 1, model_path, "predict")["written"] is False

    scores = predict_partition(jobs[2], 2, model_path, "decision_function")
    assert scores["written"] and pq.read_schema(jobs[2].dest).names == ["prediction"]

    with pytest.raises(ValueError, match=r"Feature columns \['x9'\] not found"):
        plan_predictions(str(data), str(out), "y", [*features, "x9"])


@pytest.mark.usefixtures("prefect_server")
def test_predict_partition_is_retried_after_a_failure(faults, data, model_path, tmp_path):
    faults("predict-partition:4")
    (job,) = [j for j in ooc.prediction_jobs(data, tmp_path) if j.source.name.endswith("4.parquet")]
    state = predict_partition(job, 4, model_path, "predict", return_state=True)
    assert state.is_completed() and state.result()["written"] is True
    run, names = task_run(state)
    assert run.name == "predict-part-00004.parquet" and run.run_count == 2
    assert "Retrying" in names


# -- the fit --------------------------------------------------------------------------------


def saved_scaler(data: Path, run_dir: Path) -> str:
    X, _ = training_arrays(str(data), "y", HOLDOUT, SPLIT_SEED)
    return save_object(ooc.StandardScaler().fit(X), run_dir / "scaler.pkl")


def manual_fit(data: Path, scaler_path: str, epochs: int) -> SGDClassifier:
    """What the fit must equal: partial_fit over the scaled training files, in order."""
    scaler = load_object(scaler_path)
    train, _ = split_files(data)
    estimator = SGDClassifier(random_state=0)
    for _ in range(epochs):
        for f in train:
            X, y = read_file(f)
            estimator.partial_fit(scaler.transform(X), y, classes=[0, 1])
    return estimator


@pytest.mark.usefixtures("prefect_server")
def test_fit_model_equals_a_manual_partial_fit_loop(data, tmp_path):
    run_dir = tmp_path / "run"
    scaler_path = saved_scaler(data, run_dir)
    training = {**TRAINING, "epochs": 2}
    fit = fit_model(str(data), "y", MODEL, training, scaler_path, [0, 1], str(run_dir))

    n_train = ROWS - CHUNK_ROWS
    assert fit["n_samples_seen"] == 2 * n_train and fit["n_epochs"] == 2
    assert fit["resumed_from"] is None
    pipe = load_object(fit["model_path"])
    expected = manual_fit(data, scaler_path, epochs=2)
    np.testing.assert_array_equal(pipe[-1].estimator_.coef_, expected.coef_)
    np.testing.assert_array_equal(pipe[-1].estimator_.intercept_, expected.intercept_)
    # The saved model neither calls back into the run nor resumes from its checkpoint.
    assert pipe[-1].block_callback is None and pipe[-1].checkpoint_path is None

    with open(fit["blocks_path"], newline="") as fh:
        blocks = list(csv.DictReader(fh))
    assert len(blocks) == 2 * 7 and int(blocks[-1]["n_samples_seen"]) == 2 * n_train
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress == {"done": 14, "total": 14, "rows": 2 * n_train}


@pytest.mark.usefixtures("prefect_server")
def test_fit_model_retry_resumes_from_its_checkpoint(faults, data, tmp_path):
    run_dir = tmp_path / "run"
    scaler_path = saved_scaler(data, run_dir)
    faults("fit-block:3")
    state = fit_model(
        str(data), "y", MODEL, TRAINING, scaler_path, [0, 1], str(run_dir), return_state=True
    )
    fit = state.result()

    assert tuple(fit["resumed_from"]) == (0, 2)  # checkpointed every 2 blocks
    assert fit["n_samples_seen"] == ROWS - CHUNK_ROWS
    run, names = task_run(state)
    assert run.run_count == 2 and "Retrying" in names
    expected = manual_fit(data, scaler_path, epochs=1)
    np.testing.assert_array_equal(
        load_object(fit["model_path"])[-1].estimator_.coef_, expected.coef_
    )


def test_fit_and_evaluate_on_the_cluster(dask_cluster, prefect_server, data, tmp_path):
    """fit_scaler and evaluate_model use the task runner's cluster (``get_dask_client``)."""
    from prefect import flow
    from prefect_dask import DaskTaskRunner

    @flow(task_runner=DaskTaskRunner(address=dask_cluster.scheduler_address))
    def scale_and_evaluate(run_dir: str, model_path: str) -> tuple[dict, dict]:
        scaler = fit_scaler.submit(str(data), "y", "sgd-classifier", HOLDOUT, SPLIT_SEED, run_dir)
        metrics = evaluate_model.submit(model_path, str(data), "y", HOLDOUT, SPLIT_SEED)
        return scaler.result(), metrics.result()

    train, holdout = split_files(data)
    X, y = map(np.concatenate, zip(*(read_file(f) for f in train), strict=True))
    in_memory = make_pipeline(StandardScaler(), SGDClassifier(random_state=0)).fit(X, y)
    model_path = save_object(in_memory, tmp_path / "model.pkl")

    scaler, metrics = scale_and_evaluate(str(tmp_path / "run"), model_path)

    assert scaler["classes"] == [0, 1]
    fitted = load_object(scaler["scaler_path"])
    np.testing.assert_allclose(fitted.mean_, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(fitted.scale_, X.std(axis=0), rtol=1e-10)
    X_test, y_test = read_file(holdout[0])
    assert metrics["n_samples"] == len(y_test)
    expected = accuracy_score(y_test, in_memory.predict(X_test))
    assert metrics["accuracy"] == pytest.approx(expected)
