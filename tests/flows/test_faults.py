"""The fault matrix (issue 6): each fault, and a check that nothing was lost or duplicated.

Real parts only: the session's temporary Prefect server, the session ``LocalCluster`` of
worker processes, MLflow on sqlite in ``tmp_path`` (a real ``mlflow server`` for case 7),
and the ``OOC_FAULTS`` hooks of ``tasks/faults.py``. Where a case was covered before,
this map names the test instead of repeating it:

1. Transient failure, retried, run completes; bad input is never retried
   - ``test_flows.py::test_failed_partition_write_is_retried_where_it_runs`` (writing one
     partition raises once: retried inside the one generate task run, which runs once)
   - ``test_flows.py::test_failed_partition_prediction_is_retried_where_it_runs`` (predicting
     one file raises once: retried inside the one predict task run)
   - ``test_flows.py::test_interrupted_fit_resumes_from_checkpoint_to_the_same_model``
     (the fit raises at block 5; the stage's retry resumes from the checkpoint of block 4)
   - ``tests/tasks/test_tasks.py``:
     ``test_generate_partitions_retries_one_partition_where_it_runs``,
     ``test_predict_files_splits_a_large_file_into_blocks_and_retries_one``,
     ``test_fit_model_retry_resumes_from_its_checkpoint`` (the same, stage by stage), and
     which errors are retried: ``test_only_transient_errors_are_worth_retrying``,
     ``test_retry_transient_retries_where_it_runs_and_gives_up``,
     ``test_a_stage_retries_a_transient_failure_but_not_bad_input``,
     ``test_generate_partitions_refuses_another_dataset_without_retrying``,
     ``test_predict_files_fails_at_once_on_bad_input``
2. A Dask worker process killed in the middle of the fit
   - ``test_killed_worker_during_fit_resumes_to_the_same_model`` (here)
3. Prediction process killed mid-run, then run again
   - ``test_flows.py::test_prediction_survives_a_killed_worker`` (a worker dies mid-run)
   - ``test_flows.py::test_prediction_rerun_after_partial_run_gives_exactly_n_rows``
     (the re-run after a crash that left outputs, a damaged file and a temporary file)
   - ``test_prediction_killed_mid_run_then_rerun`` (here: the whole ``ooc predict``
     process group killed, as a crashed machine would be)
   - ``tests/integration/test_security.py::``
     ``test_the_temporary_prefect_api_of_a_command_is_on_loopback_and_ends_with_it``
     (a command killed with SIGKILL leaves no Prefect API server behind)
4. Bad data: one clear error naming file and column, before fitting; registry untouched
   - ``test_flows.py::test_train_fails_fast_on_bad_data``: no such path, no parquet file,
     no target column, a file with an extra column (last in order)
   - ``test_bad_data_fails_before_fitting_and_keeps_the_champion`` (here): corrupt file,
     missing column, extra column in the first file, string in a numeric column, NaN (found
     by the preprocessing stage's read, not retried), inf, a missing target value,
     single-class target
   - ``test_a_missing_feature_value_is_imputed_and_reported`` (here: no longer a fault)
   - ``test_single_class_check_reads_the_target_when_footers_have_no_statistics`` (here)
5. A trained model worse than the champion: registered, champion unchanged
   - ``tests/tasks/test_tracking.py::``
     ``test_first_version_becomes_champion_then_better_moves_worse_stays`` (the rule)
   - ``test_worse_model_is_registered_but_champion_stays`` (here, the train flow)
   - a registration that fails half way leaves no version, and gives ``champion`` back to
     the best other version if the new one had taken it:
     ``tests/tasks/test_tracking.py::test_failed_registration_*``; a registry that answers
     with an error is not taken for one without a champion:
     ``tests/tasks/test_tracking.py::test_a_registry_error_is_not_taken_for_no_champion``
6. MLflow tracking server or Prefect API unreachable at start
   - ``test_unreachable_service_stops_the_command_at_once`` (here, ``ooc`` subprocesses)
   - ``test_flow_fails_at_once_when_the_tracking_server_is_down`` (here, the flow itself)
   - ``tests/tasks/test_tracking.py::test_check_reachable_*``
7. Two pipeline runs at once against one MLflow server
   - ``tests/integration/test_concurrent_runs.py``
   - ``tests/tasks/test_tracking.py::test_stale_decisions_still_crown_the_best_version``
8. Loopback defaults, no secret in the repository, the trust model stated
   - ``tests/integration/test_security.py``, and
     ``tests/integration/test_infra.py::test_every_published_port_is_on_loopback``
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ooc
from ooc.flows.pipeline import batch_predict, train
from ooc.tasks.config import ModelConfig, TrainingConfig

from .support import (
    N_FILES,
    ROWS,
    completed,
    eventually,
    final_step,
    flow_run_id,
    logged,
    parquet_rows,
    read_flow_run,
    registry,
    run,
    task_runs,
    tiny_training,
    wait_for_task_runs,
)

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parents[2]
NAME = "ooc-classification"
MODEL = ModelConfig(params={"random_state": 0})
TRAINING = tiny_training(epochs=2, checkpoint_every=2)


def task_logs(task_run_id) -> list[str]:
    """The log lines Prefect recorded for one task run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id]))
        )
    return [log.message for log in logs]


def registry_state(workdir: Path) -> dict:
    """Every registered version with its tags, and the aliases: all a run may change."""
    client = registry(workdir)
    versions = {(v.name, str(v.version)): dict(v.tags) for v in client.search_model_versions()}
    aliases = {
        (m.name, alias): str(version)
        for m in client.search_registered_models()
        for alias, version in m.aliases.items()
    }
    return {"versions": versions, "aliases": aliases}


def mlflow_run_of(workdir: Path, state):
    client = registry(workdir)
    (found,) = client.search_runs(
        [client.get_experiment_by_name("ooc").experiment_id],
        filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id(state)}'",
    )
    return found


@pytest.fixture(scope="module")
def champion(runner, clf_data, tmp_path_factory) -> dict:
    """A workdir whose registry has a champion: one clean train run (also the reference
    model of case 2, trained with the same parameters)."""
    workdir = tmp_path_factory.mktemp("champion")
    params = {"data": str(clf_data), "model": MODEL, "training": TRAINING}
    result = completed(run(train, runner, workdir=str(workdir), **params))
    assert result.registered.version == "1" and result.registered.promoted
    return {"result": result, "workdir": workdir}


# -- 2. a worker process killed in the middle of the fit --------------------------------------


def worker_pids(dask_cluster) -> dict[str, int]:
    from distributed import Client

    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        return client.run(os.getpid)


def test_killed_worker_during_fit_resumes_to_the_same_model(
    runner, worker_faults, dask_cluster, clf_data, champion, tmp_path
):
    """``fit-block:5:kill`` ends the worker process running ``fit_model`` after block 5.

    Distributed notices the worker is gone and runs the task again on another worker
    (a worker death is not an exception Prefect sees: Dask's own rescheduling, at most
    ``distributed.scheduler.allowed-failures`` times, does it). prefect-dask submitted
    the task run with its id, so the second execution is the same Prefect task run; it
    finds the checkpoint of block 4 in the run directory and resumes from it.
    """
    before = worker_pids(dask_cluster)
    worker_faults("fit-block:5:kill")
    workdir = tmp_path / "killed"
    params = {"data": str(clf_data), "model": MODEL, "training": TRAINING}
    state = run(train, runner, workdir=str(workdir), **params)
    resumed = completed(state).trained

    # A worker process really died: its pid is gone from the cluster (the nanny restarts
    # a fresh process in its place).
    assert (tmp_path / "fault-markers" / "ooc-fault-fit-block-5").exists()
    after = worker_pids(dask_cluster)
    assert set(before.values()) - set(after.values()), (before, after)

    # The same model as the clean run, trained once over every block.
    reference = champion["result"].trained
    fit, clean = resumed.fitted, reference.fitted
    assert tuple(fit.resumed_from) == (0, 4)
    assert fit.n_samples_seen == clean.n_samples_seen and fit.n_epochs == 2
    ours, theirs = final_step(fit.model_path), final_step(clean.model_path)
    np.testing.assert_array_equal(ours.coef_, theirs.coef_)
    np.testing.assert_array_equal(ours.intercept_, theirs.intercept_)
    assert resumed.evaluated.metrics == reference.evaluated.metrics

    # Prefect: one fit_model task run (not two), completed, and its log says it resumed.
    runs = wait_for_task_runs(flow_run_id(state), {"fit_model": 1})
    (fit_run,) = runs["fit_model"]
    assert fit_run.state.is_completed()
    expected = "Resumed from checkpoint at epoch 0, block position 4."
    logs = eventually(lambda: [m for m in task_logs(fit_run.id) if m == expected], timeout=30)
    assert logs == [expected], task_logs(fit_run.id)
    # MLflow: the run is FINISHED, says it resumed, and registered one version.
    tracked = mlflow_run_of(workdir, state)
    assert tracked.info.status == "FINISHED"
    assert tracked.data.tags["ooc.resumed_from"] == "(0, 4)"
    assert list(registry_state(workdir)["versions"]) == [(NAME, "1")]

    # Leave the session cluster as it was for the next tests.
    from distributed import Client

    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(len(before), timeout=60)


# -- 3. the whole prediction process killed mid-run ------------------------------------------


class SlowModel:
    """Predicts zeros, half a second per file: a window to kill ``ooc predict`` in."""

    def predict(self, X):
        time.sleep(0.5)
        return np.zeros(len(X), dtype=np.int64)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without any Prefect API, cluster or MLflow address, plus ``extra``."""
    drop = {"PREFECT_API_URL", "OOC_DASK_ADDRESS", "MLFLOW_TRACKING_URI", "OOC_FAULTS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        **extra,
    )
    return env


def ooc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ooc.flows.cli", *args]


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def test_prediction_killed_mid_run_then_rerun(api_url, runner, clf_data, tmp_path):
    """``ooc predict`` on its own LocalCluster (the default: worker threads of the command's
    process) is killed with SIGKILL to its whole process group, as in a crash of the
    machine, once its first output exists; the prediction is then run again."""
    import cloudpickle

    # By value: the workers unpickle it without importing this test module.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        (tmp_path / "slow-model.pkl").write_bytes(cloudpickle.dumps(SlowModel()))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    model = str(tmp_path / "slow-model.pkl")
    out = tmp_path / "pred"
    args = ooc_command(
        "predict", "--data", str(clf_data), "--out", str(out), "--model", model,
        "--workdir", str(tmp_path / "work"),
    )  # fmt: skip
    env = cli_env(tmp_path, PREFECT_API_URL=api_url)
    first = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        written = eventually(
            lambda: list(out.glob("*.parquet")) or first.poll() is not None,
            timeout=180,
            every=0.05,
        )
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    assert written is not True, f"ooc predict ended before writing: {first.stderr.read()}"
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert 0 < len(done_before) < N_FILES, done_before

    # Run again (the flow in this process, on the session cluster: a faster test).
    state = run(batch_predict, runner, data=str(clf_data), out=str(out), model=model,
                workdir=str(tmp_path / "work"))  # fmt: skip
    result = completed(state).predicted
    assert result.files == N_FILES and result.rows == ROWS
    assert result.written == N_FILES - len(done_before)

    # One output per input partition, every row once, nothing partial or temporary; the
    # outputs the killed run completed are kept, not written again.
    assert parquet_rows(out) == parquet_rows(clf_data)
    assert sum(parquet_rows(out).values()) == ROWS
    assert hidden(out) == []
    assert {name: (out / name).stat().st_mtime_ns for name in done_before} == done_before
    # One prediction task run, not retried: the outputs complete before were skipped.
    runs = wait_for_task_runs(flow_run_id(state), {"predict_files": 1})
    assert [t.run_count for t in runs["predict_files"]] == [1]


# -- 4. bad data --------------------------------------------------------------------------------


def _write(path: Path, columns: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def _good_columns(seed: int, rows: int = 200) -> dict:
    rng = np.random.default_rng(seed)
    return {
        **{f"x{j}": rng.normal(size=rows) for j in range(3)},
        "y": rng.integers(0, 2, size=rows),
    }


def _split(data: Path):
    """The (train, holdout) sources of the flow's default split and blocks."""
    training = TrainingConfig()
    source = ooc.inspect_parquet(data, block_rows=training.block_rows)
    return source.split(training.holdout_fraction, seed=training.split_seed)


def _training_file(data: Path, row: int) -> Path:
    """A file whose row ``row`` is a training row (the preprocessing stage reads it)."""
    train, _ = _split(data)
    for block in train.blocks:
        for piece in block:
            start = train.file_offset(piece)
            if start <= row < start + piece.rows:
                return train.files[piece.file]
    raise AssertionError(f"row {row} of no file is a training row")


def bad_data(kind: str, root: Path) -> tuple[Path, str, str]:
    """A 4-file dataset with one fault; (directory, failing task, expected message)."""
    data = root / f"bad-{kind}"
    for i in range(4):
        _write(data / f"part-{i}.parquet", _good_columns(i))
    part = [data / f"part-{i}.parquet" for i in range(4)]
    if kind == "corrupt":
        part[1].write_bytes(part[1].read_bytes()[:-200])  # the footer cut off
        return data, "check_dataset", f"Cannot read the parquet footer of {part[1]}"
    if kind == "missing-column":
        table = pq.read_table(part[2]).drop(["x1"])
        pq.write_table(table, part[2])
        return data, "check_dataset", (
            f"Schema mismatch: {part[2]} has columns ['x0', 'x2', 'y'], but {part[0]} has "
            "['x0', 'x1', 'x2', 'y'] (missing: ['x1'], extra: []"
        )  # fmt: skip
    if kind == "extra-column-first":
        table = pq.read_table(part[0])
        pq.write_table(table.append_column("x9", pa.array(np.ones(200))), part[0])
        return data, "check_dataset", (
            f"Schema mismatch: {part[0]} has columns ['x0', 'x1', 'x2', 'y', 'x9'], but "
            f"{part[1]} has ['x0', 'x1', 'x2', 'y'] (missing: [], extra: ['x9']"
        )  # fmt: skip
    if kind == "string":
        columns = {**_good_columns(3), "x1": [f"v{i}" for i in range(200)]}
        _write(part[3], columns)
        return (
            data,
            "check_dataset",
            (f"Schema mismatch: column 'x1' is string in {part[3]} but double in {part[0]}"),
        )
    if kind in ("nan", "inf"):
        file = _training_file(data, row=17)
        columns = _good_columns(9)
        values = columns["x2"].tolist()
        values[17] = {"nan": float("nan"), "inf": float("inf")}[kind]
        _write(file, {**columns, "x2": pa.array(values, type=pa.float64())})
        if kind == "nan":  # not in the footers: found when the scaler reads the block
            return data, "fit_preprocessing", f"{file}: column 'x2' has nan at row 17"
        return data, "check_dataset", f"{file}: column 'x2' holds inf (row group 0"
    if kind == "null-target":  # a missing feature value is imputed; a missing label is not
        file = _training_file(data, row=17)
        columns = _good_columns(9)
        labels = columns["y"].tolist()
        labels[17] = None
        _write(file, {**columns, "y": pa.array(labels, type=pa.int64())})
        return data, "check_dataset", (
            f"{file}: target column 'y' has 1 missing value(s) (row group 0, from the file's "
            "footer). Drop these rows before fitting."
        )  # fmt: skip
    assert kind == "single-class"
    for i, file in enumerate(part):
        _write(file, {**_good_columns(i), "y": np.ones(200, dtype=np.int64)})
    # Every file holds training rows (the holdout rows are a part of one file's).
    return data, "check_dataset", (
        "Target column 'y' has one class (1) in all training files ("
        f"{part[0]}, {part[1]}, {part[2]}, … (4 files)): a classifier needs at least two; "
        "check the data or the target name."
    )  # fmt: skip


BAD_KINDS = [
    "corrupt", "missing-column", "extra-column-first", "string", "nan", "inf", "null-target",
    "single-class",
]  # fmt: skip


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_data_fails_before_fitting_and_keeps_the_champion(runner, champion, tmp_path, kind):
    data, failing, message = bad_data(kind, tmp_path)
    work = champion["workdir"]
    before = registry_state(work)
    assert before["aliases"][(NAME, "champion")] == "1"

    state = run(train, runner, data=str(data), workdir=str(work), model=MODEL)

    assert state.is_failed()
    assert read_flow_run(flow_run_id(state)).state.is_failed()
    with pytest.raises(ValueError, match=re.escape(message)):
        state.result()
    # The check that failed is the only failed task run, and nothing was fitted.
    runs = wait_for_task_runs(flow_run_id(state), {failing: 1})
    assert [t.state.is_failed() for t in runs[failing]] == [True]
    assert [t.run_count for t in runs[failing]] == [1]  # bad input is not retried
    assert "fit_model" not in runs and "evaluate_model" not in runs
    if failing == "check_dataset":  # the check runs first: no stage started at all
        assert set(runs) == {"check_dataset"}
    run_dir = work / "runs" / str(flow_run_id(state))
    assert not list(run_dir.rglob("*.pkl")), list(run_dir.rglob("*.pkl"))
    # The registry is exactly as it was: same versions, same tags, same aliases.
    assert registry_state(work) == before
    assert mlflow_run_of(work, state).info.status == "FAILED"


def test_a_missing_feature_value_is_imputed_and_reported(runner, clf_data, tmp_path):
    """Not a fault any more: the check reports it, the preprocessing imputes it."""
    data = tmp_path / "data"
    for i in range(4):
        _write(data / f"part-{i}.parquet", _good_columns(i))
    file = _training_file(data, row=17)
    columns = _good_columns(9)
    values = columns["x2"].tolist()
    values[17] = None
    _write(file, {**columns, "x2": pa.array(values, type=pa.float64())})

    state = run(train, runner, data=str(data), workdir=str(tmp_path / "work"), model=MODEL)
    result = completed(state)
    assert result.trained.plan.train.n_rows + result.trained.plan.holdout.n_rows == 800
    assert logged(flow_run_id(state), "Column 'x2': 1 missing value(s) (0.12%), imputed (mean)")


def test_single_class_check_reads_the_target_when_footers_have_no_statistics(tmp_path):
    from ooc.tasks.data import check_dataset

    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    for i in range(3):
        columns = _good_columns(i)
        single = pa.table({**columns, "y": np.full(200, 3)})
        pq.write_table(single, one / f"part-{i}.parquet", write_statistics=False)
        pq.write_table(pa.table(columns), two / f"part-{i}.parquet", write_statistics=False)
    assert pq.read_metadata(one / "part-0.parquet").row_group(0).column(3).statistics is None

    block_rows = TrainingConfig().block_rows
    with pytest.raises(ValueError, match=re.escape("Target column 'y' has one class (3)")):
        check_dataset(str(one), "y", 0.3, 0, block_rows, "classification")
    # Two classes are found in the target column; a regression needs no such check.
    assert len(check_dataset(str(two), "y", 0.3, 0, block_rows, "classification").train.files) == 3
    assert check_dataset(str(one), "y", 0.3, 0, block_rows, "regression").source.n_rows == 600


# -- 5. a model worse than the champion ------------------------------------------------------


def test_worse_model_is_registered_but_champion_stays(runner, champion, clf_data):
    """Strong L1 regularisation zeroes every coefficient: a constant score, ROC AUC 0.5."""
    work = champion["workdir"]
    before = registry_state(work)
    champ = before["aliases"][(NAME, "champion")]
    bad = ModelConfig(params={"penalty": "l1", "alpha": 1.0, "random_state": 0})

    result = completed(run(train, runner, data=str(clf_data), workdir=str(work), model=bad))

    after = registry_state(work)
    version = result.registered.version
    assert not result.registered.promoted
    assert set(after["versions"]) == set(before["versions"]) | {(NAME, version)}
    assert after["aliases"][(NAME, "champion")] == champ
    assert after["aliases"][(NAME, "challenger")] == version
    tags = after["versions"][(NAME, version)]
    theirs = float(before["versions"][(NAME, champ)]["ooc.score"])
    assert float(tags["ooc.score"]) == result.trained.evaluated.metrics["roc_auc"] < theirs
    assert tags["ooc.promoted"] == "false"
    assert tags["ooc.champion_version_before"] == champ
    assert tags["ooc.decision"] == (
        f"roc_auc {float(tags['ooc.score']):.6g} <= {theirs:.6g}: champion v{champ} kept"
    )


# -- 6. a server named in the environment does not answer ------------------------------------


@pytest.mark.parametrize(
    ("command", "service"),
    [("train", "mlflow"), ("run", "prefect"), ("generate", "mlflow"), ("predict", "prefect")],
)
def test_unreachable_service_stops_the_command_at_once(clf_data, tmp_path, command, service):
    port = closed_port()
    if service == "mlflow":
        url, variable = f"http://127.0.0.1:{port}", "MLFLOW_TRACKING_URI"
    else:
        url, variable = f"http://127.0.0.1:{port}/api", "PREFECT_API_URL"
    work, out = tmp_path / "work", tmp_path / "out"
    args = {
        "train": ["--data", str(clf_data)],
        "run": ["--rows", "20000", "--chunk-rows", "5000", "--features", "3"],
        "generate": ["--out", str(out), "--rows", "20000", "--chunk-rows", "5000"],
        "predict": ["--data", str(clf_data), "--out", str(out)],
    }[command]
    env = cli_env(tmp_path, **{variable: url})

    start = time.monotonic()
    proc = subprocess.run(
        ooc_command(command, *args, "--workdir", str(work)),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - start

    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    # A bound on correctness (no minutes of client retries), not a benchmark.
    assert elapsed < 20, f"{elapsed:.1f} s"
    assert f"at {url} ({variable})" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    # No work done: no workdir (runs, datasets, MLflow store), no output directory, and
    # no local Prefect API was started either.
    assert not work.exists() and not out.exists()
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()


def test_flow_fails_at_once_when_the_tracking_server_is_down(
    runner, clf_data, tmp_path, monkeypatch
):
    """A flow started another way (a deployment, Python) checks the server as it starts."""
    from ooc.tasks.health import ServiceUnreachable

    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    start = time.monotonic()
    state = run(train, runner, data=str(clf_data), workdir=str(tmp_path / "work"))
    elapsed = time.monotonic() - start

    assert state.is_failed()
    assert elapsed < 20, f"{elapsed:.1f} s"
    with pytest.raises(ServiceUnreachable, match=re.escape(f"at {url} (MLFLOW_TRACKING_URI)")):
        state.result()
    assert task_runs(flow_run_id(state)) == []
    assert not (tmp_path / "work").exists()


# -- the map above stays true ---------------------------------------------------------------


def test_every_test_the_fault_map_names_exists():
    """Each test named in this module's docstring is defined in the suite (a renamed or
    removed test would leave a fault of the matrix uncovered without anyone noticing)."""
    import fnmatch

    defined = {
        match
        for path in (ROOT / "tests").rglob("test_*.py")
        for match in re.findall(r"^def (test_\w+)\(", path.read_text(), flags=re.M)
    }
    named = set(re.findall(r"``(?:[\w/]+\.py::)?(test_\w+\*?)``", __doc__))
    assert len(named) >= 25, named
    missing = {name for name in named if not fnmatch.filter(defined, name)}
    assert missing == set(), missing
