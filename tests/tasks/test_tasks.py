"""The Prefect tasks on their own, compared with scikit-learn and numpy on the same data in
memory.

``check_dataset`` runs in the calling process, as it does in a flow; the stage tasks
spread their work over the cluster from a Dask worker (``tasks/cluster.py``), so they are
submitted from a small flow to the session's LocalCluster of worker processes, against
the session's temporary Prefect server, and what Prefect recorded of them (one task run
per stage, its retries and logs) is read back from its API.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import ooc
from ooc.datasets import DatasetSpec
from ooc.io import read_features, read_target
from ooc.tasks.cluster import PROCESS_SWITCH_INTERVAL, quick_gil_handover
from ooc.tasks.config import (
    DatasetConfig,
    ModelConfig,
    RegistryConfig,
    TrainingConfig,
    registered_name,
)
from ooc.tasks.data import DataPlan, Generated, check_dataset, generate_partitions
from ooc.tasks.evaluation import Evaluated, evaluate_model
from ooc.tasks.faults import InjectedFault, maybe_fail
from ooc.tasks.health import ServiceUnreachable
from ooc.tasks.prediction import Predicted, predict_files
from ooc.tasks.retries import is_bad_input, is_transient, retry_transient, stage_retries
from ooc.tasks.settings import Settings, get_settings, local_cluster_kwargs
from ooc.tasks.store import load_object, save_object
from ooc.tasks.training import Fitted, Preprocessed, fit_model, fit_preprocessing

from ..flows.support import artifacts, eventually, flow_run_id, logged, wait_for_task_runs

ROWS, CHUNK_ROWS, FEATURES = 40_000, 5_000, 5
N_FILES = ROWS // CHUNK_ROWS
SPEC = DatasetSpec(ROWS, FEATURES, CHUNK_ROWS, seed=11)
HOLDOUT, SPLIT_SEED = 0.1, 0
HOLDOUT_ROWS = round(HOLDOUT * ROWS)
MODEL = ModelConfig(params={"random_state": 0})
# A block per file, checkpointed every 2 blocks.
TRAINING = TrainingConfig(block_rows=CHUNK_ROWS, checkpoint_every=2)

# Tasks called outside a flow log to the API without a flow run id; Prefect warns.
pytestmark = pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted:UserWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tasks") / "data"
    ooc.generate_dataset(path, ROWS, FEATURES, CHUNK_ROWS, seed=11)
    return path


@pytest.fixture(scope="module")
def plan(data, prefect_server) -> DataPlan:
    return check_dataset(str(data), "y", HOLDOUT, SPLIT_SEED, CHUNK_ROWS, "classification")


@pytest.fixture(scope="session")
def task_runner(dask_cluster):
    """A DaskTaskRunner on the session cluster (its worker processes run the stages)."""
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=dask_cluster.scheduler_address)


@dataclass
class StageCluster:
    """A task runner on a cluster, whether the cluster has several workers, and the name
    prefixes of the tasks its scheduler saw while the test ran."""

    runner: object
    spread: bool
    seen: set


@pytest.fixture(params=["worker processes", "one worker"])
def stage_cluster(request, dask_cluster):
    """Where a stage spreads its files: Dask tasks over two worker processes, or the
    threaded scheduler inside the task on a cluster of one worker (the command's own kind:
    its threads in this process). That cluster lives for one test: its worker's client is
    this process's global client while it lives, which any later task runner would take."""
    from contextlib import ExitStack

    import dask
    from dask.utils import key_split
    from distributed import LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin
    from prefect_dask import DaskTaskRunner

    class Seen(SchedulerPlugin):
        name = "ooc-test-seen"

        def __init__(self):
            self.prefixes = set()

        def transition(self, key, start, finish, *args, **kwargs):
            self.prefixes.add(key_split(key))

    with ExitStack() as stack:
        # A client made default (an in-process worker's) sets dask's scheduler for this
        # process and, closed while another client lives, leaves it: put it back after.
        stack.enter_context(dask.config.set(scheduler=dask.config.get("scheduler", None)))
        cluster = dask_cluster
        if request.param == "one worker":
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
                )
            )
        seen = Seen()
        cluster.scheduler.add_plugin(seen)  # a LocalCluster's scheduler is in this process
        stack.callback(cluster.scheduler.remove_plugin, name=seen.name)
        yield StageCluster(
            DaskTaskRunner(address=cluster.scheduler_address),
            len(cluster.workers) > 1,
            seen.prefixes,
        )


def on_cluster(task_runner, body):
    """Run ``body()`` as a flow on the session cluster; its final state."""
    from prefect import flow

    @flow(task_runner=task_runner)
    def stage_flow():
        return body()

    return stage_flow(return_state=True)


def read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    X = np.column_stack([table[f"x{j}"].to_numpy() for j in range(FEATURES)])
    return X, table["y"].to_numpy()


def rows_of(source: ooc.ParquetSource) -> tuple[np.ndarray, np.ndarray]:
    """Every row of ``source`` in memory, block by block in order."""
    blocks = range(len(source.blocks))
    X = np.concatenate([read_features(source, i) for i in blocks])
    return X, np.concatenate([read_target(source, i) for i in blocks])


def task_run(state):
    """The task run of a task called outside a flow, once its final state is recorded (it
    reaches the API as events), and the names of its states."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    def final():
        with get_client(sync_client=True) as client:
            try:
                run = client.read_task_run(state.state_details.task_run_id)
            except ObjectNotFound:
                return None
            names = [s.name for s in client.read_task_run_states(run.id)]
        return (run, names) if run.state is not None and run.state.is_final() else None

    found = eventually(final)
    assert found, f"task run {state.state_details.task_run_id} not recorded"
    return found


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


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
    env = {**os.environ, "OOC_FAULTS": "fit-block:3:kill", "OOC_FAULTS_DIR": str(tmp_path)}
    code = (
        "from ooc.tasks.faults import maybe_fail\nfor i in range(1, 5): maybe_fail('fit-block', i)"
    )
    first = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    second = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    assert (first.returncode, second.returncode) == (17, 0)


# -- what is retried ------------------------------------------------------------------------


def test_only_transient_errors_are_worth_retrying():
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    transient = [
        ConnectionError("reset"), ConnectionRefusedError(), TimeoutError(), BlockingIOError(),
        InterruptedError(), OSError(5, "Input/output error"), InjectedFault("injected"),
        ServiceUnreachable("Cannot reach"), KilledWorker("fit_model-1", "tcp://w", 3),
        CommClosedError("closed"),
    ]  # fmt: skip
    permanent = [
        ValueError("column 'x2' has nan"), FileNotFoundError("no such file"),
        IsADirectoryError(), NotADirectoryError(), PermissionError(), TypeError(), KeyError("x"),
        MemoryError(), RuntimeError("a bug"),
    ]  # fmt: skip
    assert [e for e in transient if not is_transient(e)] == []
    assert [e for e in permanent if is_transient(e)] == []


def test_errors_about_the_input_are_told_from_bugs_and_hiccups():
    from ooc.colstats import HighCardinalityError

    about_the_input = [
        ValueError("column 'x2' has nan"), HighCardinalityError("too many"),
        FileNotFoundError("no such file"), IsADirectoryError(), PermissionError(),
        LookupError("no 'champion'"),
    ]  # fmt: skip
    others = [KeyError("x"), IndexError(), TypeError(), RuntimeError("a bug"), MemoryError(),
              ConnectionError("reset"), OSError(5, "Input/output error")]  # fmt: skip
    assert [e for e in about_the_input if not is_bad_input(e)] == []
    assert [e for e in others if is_bad_input(e)] == []


def test_retry_transient_retries_where_it_runs_and_gives_up():
    calls, retried = [], []

    def flaky(fail_times: int):
        calls.append(1)
        if len(calls) <= fail_times:
            raise ConnectionError(f"attempt {len(calls)}")
        return "done"

    def note(error, attempt):
        retried.append((str(error), attempt))

    assert retry_transient(flaky, 2, delay=0, on_retry=note) == "done"
    assert len(calls) == 3 and retried == [("attempt 1", 1), ("attempt 2", 2)]

    # At most `attempts` tries; the last error is raised.
    calls.clear()
    with pytest.raises(ConnectionError, match="attempt 3"):
        retry_transient(flaky, 5, attempts=3, delay=0)
    assert len(calls) == 3

    # Bad input is raised at once, not retried.
    def bad():
        calls.append(1)
        raise ValueError("column 'x1' is string")

    calls.clear()
    with pytest.raises(ValueError, match="column 'x1' is string"):
        retry_transient(bad, delay=0, on_retry=note)
    assert len(calls) == 1


def test_every_stage_retries_transient_failures_only():
    from prefect.tasks import Task

    stages = {
        generate_partitions: 3, predict_files: 3, fit_preprocessing: 2, fit_model: 2,
        evaluate_model: 2,
    }  # fmt: skip
    for stage, retries in stages.items():
        assert isinstance(stage, Task)
        assert stage.retries == retries, stage.name
        assert stage.retry_condition_fn is stage_retries(1)["retry_condition_fn"], stage.name
    # The check reads footers in the flow's process: bad data fails the same way again.
    assert check_dataset.retries == 0


@pytest.mark.usefixtures("prefect_server")
def test_a_stage_retries_a_transient_failure_but_not_bad_input(tmp_path):
    from prefect import task

    marker = tmp_path / "failed-once"

    @task(**stage_retries(2, backoff=0.1))
    def flaky() -> str:
        if not marker.exists():
            marker.touch()
            raise ConnectionError("the disk went away")
        return "done"

    @task(**stage_retries(2, backoff=0.1))
    def bad_input() -> str:
        raise ValueError("column 'x2' has nan at row 17")

    state = flaky(return_state=True)
    assert state.is_completed() and state.result() == "done"
    run, names = task_run(state)
    assert run.run_count == 2 and "Retrying" in names and names[-1] == "Completed"

    state = bad_input(return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="has nan at row 17"):
        state.result()
    run, names = task_run(state)
    assert run.run_count == 1 and "Retrying" not in names


# -- store ----------------------------------------------------------------------------------


def test_store_round_trip_gives_a_new_object_each_time(tmp_path):
    path = tmp_path / "run" / "obj.pkl"
    assert save_object({"a": np.arange(3)}, path) == str(path)
    first, second = load_object(path), load_object(path)
    np.testing.assert_array_equal(first["a"], np.arange(3))
    # No cache: what one caller changes, another never sees.
    assert first is not second
    first["a"][0] = 99
    np.testing.assert_array_equal(second["a"], np.arange(3))
    np.testing.assert_array_equal(load_object(path)["a"], np.arange(3))
    # A replaced file is read again at once (no stale copy, however close the mtimes).
    save_object({"a": np.arange(5)}, path)
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
    assert (settings.n_workers, settings.threads_per_worker) == (1, None)
    assert settings.worker_processes is False
    assert settings.dask_cluster_kwargs == {}
    assert settings.dashboard_address == "127.0.0.1:8787"
    # The embedded cluster: one worker of the command's own process, a thread per core.
    kwargs = local_cluster_kwargs(settings)
    cores = len(os.sched_getaffinity(0))
    # The dashboard on 8787, or on any free port if another cluster holds 8787.
    dashboard = kwargs.pop("dashboard_address")
    assert dashboard in ("127.0.0.1:8787", "127.0.0.1:0")
    assert kwargs == {
        "n_workers": 1, "threads_per_worker": cores, "processes": False,
        "worker_dashboard_address": "127.0.0.1:0",
    }  # fmt: skip


def test_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OOC_WORKDIR", str(tmp_path))
    monkeypatch.setenv("OOC_DASK_ADDRESS", "tcp://scheduler:8786")
    monkeypatch.setenv("OOC_N_WORKERS", "4")
    monkeypatch.setenv("OOC_WORKER_PROCESSES", "true")
    monkeypatch.setenv("OOC_DASK_CLUSTER_KWARGS", '{"n_workers": 3}')
    monkeypatch.setenv("OOC_TRAIN_CRON", "*/30 * * * *")
    settings = Settings()
    assert settings.workdir == tmp_path and settings.dask_address == "tcp://scheduler:8786"
    assert settings.n_workers == 4 and settings.dask_cluster_kwargs == {"n_workers": 3}
    assert settings.train_cron == "*/30 * * * *"
    # Worker processes listen on loopback only; threads are shared out over the workers.
    kwargs = local_cluster_kwargs(settings)
    assert kwargs["processes"] is True and kwargs["host"] == "127.0.0.1"
    assert kwargs["threads_per_worker"] == max(1, len(os.sched_getaffinity(0)) // 4)
    monkeypatch.setenv("OOC_THREADS_PER_WORKER", "3")
    assert local_cluster_kwargs(Settings())["threads_per_worker"] == 3

    for name in ("OOC_N_WORKERS", "OOC_THREADS_PER_WORKER"):
        monkeypatch.setenv(name, "0")
        with pytest.raises(ValidationError, match=name.removeprefix("OOC_").lower()):
            Settings()
        monkeypatch.setenv(name, "1")


# -- the typed settings of a run ------------------------------------------------------------


def test_configs_state_each_default_once():
    dataset = DatasetConfig(rows=ROWS, features=FEATURES, chunk_rows=CHUNK_ROWS, seed=11)
    assert dataset.spec() == SPEC
    assert (
        dataset.directory_name() == f"classification-{ROWS}x{FEATURES}-{CHUNK_ROWS}-float64-seed11"
    )
    assert DatasetConfig().directory_name() == "classification-3000000x20-500000-float64-seed0"
    assert TrainingConfig().block_rows == 500_000 and TrainingConfig().holdout_fraction == 0.1

    assert MODEL.kind == "classification" and ModelConfig(name="minibatch-kmeans").kind == (
        "clustering"
    )
    # The run's random_state seeds the estimator, unless its params set one.
    assert ModelConfig().estimator(random_state=7).random_state == 7
    assert MODEL.estimator(random_state=7).random_state == 0
    assert ModelConfig(params={"alpha": 1e-3}).estimator(0).alpha == 1e-3

    assert registered_name("regression") == "ooc-regression"
    assert RegistryConfig().resolve("classification") == ("ooc-classification", "roc_auc", "max")
    assert RegistryConfig().resolve("clustering") == ("ooc-clustering", "inertia", "min")
    custom = RegistryConfig(model_name="mine", metric="accuracy")
    assert custom.resolve("classification") == ("mine", "accuracy", "max")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ModelConfig(params={"alpah": 1.0}), "got an unexpected keyword argument 'alpah'"),
        (lambda: ModelConfig(name="sgd"), "Input should be 'sgd-classifier'"),
        (
            lambda: TrainingConfig(block_rows=0),
            "block_rows\n  Input should be greater than or equal to 1",
        ),
        (
            lambda: TrainingConfig(holdout_fraction=1.0),
            "holdout_fraction\n  Input should be less than 1",
        ),
        (lambda: TrainingConfig(rows=10), "rows\n  Extra inputs are not permitted"),
        (lambda: DatasetConfig(rows=0), "rows\n  Input should be greater than or equal to 1"),
        (lambda: DatasetConfig(task="ranking"), "Input should be 'classification', 'regression'"),
        (lambda: RegistryConfig(direction="up"), "Input should be 'max' or 'min'"),
    ],
)
def test_bad_settings_are_refused_with_what_was_expected(make, message):
    with pytest.raises(ValidationError) as err:
        make()
    assert message in str(err.value)


def test_configs_are_frozen():
    with pytest.raises(ValidationError, match="Instance is frozen"):
        TRAINING.epochs = 3


# -- checking the data ----------------------------------------------------------------------


def test_check_dataset_decides_the_split_once(plan, data):
    source = ooc.inspect_parquet(data, target="y", block_rows=CHUNK_ROWS)
    train, holdout = source.split(HOLDOUT, seed=SPLIT_SEED)
    assert isinstance(plan, DataPlan) and plan.data == str(data)
    for field in ("files", "row_groups", "blocks", "features", "target", "block_rows"):
        assert getattr(plan.source, field) == getattr(source, field), field
    assert plan.train.blocks == train.blocks and plan.holdout.blocks == holdout.blocks
    assert plan.features == [f"x{j}" for j in range(FEATURES)] and plan.target == "y"
    assert plan.source.n_rows == ROWS and len(plan.source.files) == N_FILES
    assert plan.holdout.n_rows == HOLDOUT_ROWS
    assert plan.train.n_rows == ROWS - HOLDOUT_ROWS
    # Disjoint, and together every row: the pieces of both cover each row group exactly once.
    pieces = sorted(
        (p.file, p.row_group, p.start, p.stop)
        for part in (plan.train, plan.holdout)
        for block in part.blocks
        for p in block
    )
    covered = {}
    for file, group, start, stop in pieces:
        assert covered.get((file, group), 0) == start, pieces
        covered[(file, group)] = stop
    assert covered == {(f, 0): CHUNK_ROWS for f in range(N_FILES)}
    assert plan.describe() == (
        f"{ROWS:,} rows in {N_FILES} file(s), {FEATURES} features, {N_FILES} block(s) of at "
        f"most {CHUNK_ROWS:,} rows; {HOLDOUT_ROWS:,} rows held out for evaluation"
    )
    # The same data gives the same fingerprint; another target, another one.
    again = check_dataset(str(data), "y", HOLDOUT, SPLIT_SEED, CHUNK_ROWS)
    assert again.fingerprint() == plan.fingerprint() and len(plan.fingerprint()) == 16
    assert again.train == plan.train  # the split is a function of the seed
    other = check_dataset(str(data), "x4", HOLDOUT, SPLIT_SEED, CHUNK_ROWS)
    assert other.fingerprint() != plan.fingerprint()
    reseeded = [check_dataset(str(data), "y", HOLDOUT, seed, CHUNK_ROWS) for seed in (1, 2, 3)]
    assert {p.holdout.blocks for p in reseeded} - {plan.holdout.blocks}
    assert {p.holdout.n_rows for p in reseeded} == {HOLDOUT_ROWS}


@pytest.mark.usefixtures("prefect_server")
def test_check_dataset_bounds_blocks_by_rows(data, tmp_path):
    small = check_dataset(str(data), "y", HOLDOUT, SPLIT_SEED, 2_000)
    # Each file's row group is cut into 3 equal slices of at most 2 000 rows.
    assert small.source.rows == (1_667, 1_666, 1_667) * N_FILES
    assert small.source.block_rows == 2_000
    joined = check_dataset(str(data), "y", HOLDOUT, SPLIT_SEED, 2 * CHUNK_ROWS)
    assert len(joined.source.blocks) == N_FILES // 2  # two files in each block
    # One file splits as well as many.
    one = tmp_path / "one"
    one.mkdir()
    (one / "part-00000.parquet").write_bytes((data / "part-00000.parquet").read_bytes())
    single = check_dataset(str(one), "y", HOLDOUT, SPLIT_SEED, 1_000)
    assert (single.train.n_rows, single.holdout.n_rows) == (CHUNK_ROWS - 500, 500)


@pytest.mark.usefixtures("prefect_server")
def test_check_dataset_names_the_bad_path_file_or_column(data, tmp_path):
    import re

    nowhere = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"Data path {re.escape(str(nowhere))} does not"):
        check_dataset(str(nowhere), "y", HOLDOUT, SPLIT_SEED, CHUNK_ROWS)
    first = re.escape(str(data / "part-00000.parquet"))
    with pytest.raises(ValueError, match=f"Target column 'label' not found in {first}"):
        check_dataset(str(data), "label", HOLDOUT, SPLIT_SEED, CHUNK_ROWS)
    with pytest.raises(ValueError, match="fraction must be a number strictly between 0 and 1"):
        check_dataset(str(data), "y", 1.5, SPLIT_SEED, CHUNK_ROWS)
    with pytest.raises(ValueError, match="block_rows must be an int >= 1"):
        check_dataset(str(data), "y", HOLDOUT, SPLIT_SEED, 0)
    tiny = tmp_path / "tiny"
    ooc.generate_dataset(tiny, n_rows=1, n_features=2, chunk_rows=1)
    with pytest.raises(ValueError, match="split needs at least 2 rows"):
        check_dataset(str(tiny), "y", HOLDOUT, SPLIT_SEED, CHUNK_ROWS)


# -- generating data on the cluster ---------------------------------------------------------


@pytest.mark.usefixtures("prefect_server")
def test_generate_partitions_retries_one_partition_where_it_runs(
    stage_cluster, worker_faults, tmp_path
):
    task_runner = stage_cluster.runner
    worker_faults("generate-partition:2")
    out = tmp_path / "data"
    state = on_cluster(task_runner, lambda: generate_partitions.submit(str(out), SPEC).result())
    generated = state.result()
    # A Dask task per file over several workers; on one, the threaded scheduler in the task.
    assert ("write_partition" in stage_cluster.seen) is stage_cluster.spread

    assert isinstance(generated, Generated)
    assert (generated.path, generated.rows, generated.partitions) == (str(out), ROWS, N_FILES)
    assert generated.written == N_FILES and generated.seconds > 0
    assert (tmp_path / "fault-markers" / "ooc-fault-generate-partition-2").exists()
    # Every partition exactly as a plain generate_dataset writes it; nothing temporary.
    reference = tmp_path / "reference"
    ooc.generate_dataset(reference, ROWS, FEATURES, CHUNK_ROWS, seed=11)
    for name in (f"part-{i:05d}.parquet" for i in range(N_FILES)):
        assert pq.read_table(out / name).equals(pq.read_table(reference / name)), name
    assert hidden(out) == []
    # One task run for the stage, not retried itself; the partition's retry is in its log.
    runs = wait_for_task_runs(flow_run_id(state), {"generate_partitions": 1})
    (stage,) = runs["generate_partitions"]
    assert (stage.name, stage.run_count, stage.state.is_completed()) == ("generate", 1, True)
    assert logged(flow_run_id(state), "partition 2: attempt 1 failed (InjectedFault(")
    assert logged(flow_run_id(state), "), retried")

    # Run again: every partition is complete, none is written.
    again = on_cluster(task_runner, lambda: generate_partitions.submit(str(out), SPEC).result())
    assert again.result().written == 0


@pytest.mark.usefixtures("prefect_server")
def test_generate_partitions_refuses_another_dataset_without_retrying(task_runner, tmp_path):
    out = tmp_path / "data"
    ooc.generate_dataset(out, 10_000, FEATURES, CHUNK_ROWS, seed=11)
    state = on_cluster(task_runner, lambda: generate_partitions.submit(str(out), SPEC).result())

    assert state.is_failed()
    with pytest.raises(ValueError, match="already holds a dataset generated with other param"):
        state.result()
    runs = wait_for_task_runs(flow_run_id(state), {"generate_partitions": 1})
    assert [t.run_count for t in runs["generate_partitions"]] == [1]  # bad input: no retry


# -- predicting on the cluster --------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path(plan, tmp_path_factory) -> str:
    """A pipeline fitted in memory on the training rows, saved as the tasks save it."""
    X, y = rows_of(plan.train)
    pipe = make_pipeline(StandardScaler(), SGDClassifier(random_state=0)).fit(X, y)
    return save_object(pipe, tmp_path_factory.mktemp("model") / "model.pkl")


def predict(task_runner, data, out, model_path, **options):
    options = {"target": "y", "features": None, "method": "predict", "block_rows": CHUNK_ROWS,
               **options}  # fmt: skip
    return on_cluster(
        task_runner,
        lambda: predict_files.submit(str(data), str(out), model_path, **options).result(),
    )


@pytest.mark.usefixtures("prefect_server")
def test_predict_files_writes_one_output_per_file_then_nothing(
    stage_cluster, data, model_path, tmp_path
):
    task_runner = stage_cluster.runner
    out = tmp_path / "pred"
    state = predict(task_runner, data, out, model_path)
    predicted = state.result()

    assert isinstance(predicted, Predicted)
    assert (predicted.out, predicted.files, predicted.rows) == (str(out), N_FILES, ROWS)
    assert predicted.written == N_FILES and predicted.model_ref == model_path
    pipe = load_object(model_path)
    for i in range(N_FILES):
        name = f"part-{i:05d}.parquet"
        X, _ = read_file(data / name)
        table = pq.read_table(out / name)
        assert table.column_names == ["prediction"]
        np.testing.assert_array_equal(table["prediction"].to_numpy(), pipe.predict(X))
    runs = wait_for_task_runs(flow_run_id(state), {"predict_files": 1})
    assert [(t.name, t.run_count) for t in runs["predict_files"]] == [("predict", 1)]
    progress = [a for a in artifacts(flow_run_id(state)) if a.key == "predict-progress"]
    assert progress and max(float(a.data) for a in progress) == pytest.approx(100.0)
    assert ("attempt" in stage_cluster.seen) is stage_cluster.spread

    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    again = predict(task_runner, data, out, model_path).result()
    assert again.written == 0 and again.rows == ROWS
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == mtimes


@pytest.mark.usefixtures("prefect_server")
def test_the_run_profile_shows_every_file_of_the_stage_on_either_cluster(
    stage_cluster, data, model_path, tmp_path
):
    """The profile's task stream of the predict stage has a bar per file: Dask tasks on
    several workers, or the tasks the stage ran on its one worker's threads, a lane per
    thread, none overlapping another in its lane."""
    from ooc.tasks.profiling import RunProfiler

    def body():
        with RunProfiler(tmp_path / "profile") as profiler, profiler.stage("predict"):
            predict_files.submit(
                str(data), str(tmp_path / "pred"), model_path, target="y", features=None,
                method="predict", block_rows=CHUNK_ROWS,
            ).result()  # fmt: skip
        return profiler

    profiler = on_cluster(stage_cluster.runner, body).result()
    steps = [r for r in profiler.tasks if str(r["key"]).startswith("_attempt-")]
    assert len(steps) == N_FILES
    on_threads = [r for r in steps if "lane" in r]
    assert len(on_threads) == (0 if stage_cluster.spread else N_FILES)
    for lane in {r["lane"] for r in on_threads}:
        spans = sorted((ss["start"], ss["stop"]) for r in on_threads if r["lane"] == lane
                       for ss in r["startstops"])  # fmt: skip
        assert all(stop <= start for (_, stop), (start, _) in pairwise(spans))
    assert {r["lane"] for r in on_threads} <= {1, 2}  # the worker's two threads
    drawn = profiler.figures()
    assert tmp_path / "profile" / "task-stream-predict.png" in drawn


@pytest.mark.usefixtures("prefect_server")
def test_predict_files_splits_a_large_file_into_blocks_and_retries_one(
    stage_cluster, worker_faults, data, model_path, tmp_path
):
    """Blocks of 2 000 rows: each 5 000-row file is predicted in 3 blocks and written as
    one output with a row group per block; a transient failure of file 3 is retried where
    it runs."""
    task_runner = stage_cluster.runner
    worker_faults("predict-partition:3")
    out = tmp_path / "pred"
    state = predict(
        task_runner, data, out, model_path, block_rows=2_000, method="decision_function"
    )
    predicted = state.result()

    assert predicted.files == N_FILES and predicted.written == N_FILES
    pipe = load_object(model_path)
    for i in range(N_FILES):
        name = f"part-{i:05d}.parquet"
        meta = pq.read_metadata(out / name)
        groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        assert groups == [1_667, 1_666, 1_667]
        X, _ = read_file(data / name)
        scores = pq.read_table(out / name)["prediction"].to_numpy()
        np.testing.assert_allclose(scores, pipe.decision_function(X), rtol=1e-9, atol=1e-12)
    assert hidden(out) == []  # no parts and no temporary file left
    assert (tmp_path / "fault-markers" / "ooc-fault-predict-partition-3").exists()
    runs = wait_for_task_runs(flow_run_id(state), {"predict_files": 1})
    assert [t.run_count for t in runs["predict_files"]] == [1]
    assert logged(flow_run_id(state), "part-00003.parquet: attempt 1 failed (InjectedFault(")


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"features": ["x0", "x9"]}, ValueError, "Feature columns ['x9'] not found in "),
        ({"method": "explain"}, ValueError, "method must be one of ("),
        ({"model": "missing.pkl"}, FileNotFoundError, "No saved object at "),
    ],
)
def test_predict_files_fails_at_once_on_bad_input(
    stage_cluster, data, model_path, tmp_path, options, error, message
):
    import re

    task_runner = stage_cluster.runner
    out = tmp_path / "pred"
    options = dict(options)
    model = str(tmp_path / options.pop("model")) if "model" in options else model_path
    state = predict(task_runner, data, out, model, **options)

    assert state.is_failed()
    with pytest.raises(error, match=re.escape(message)):
        state.result()
    runs = wait_for_task_runs(flow_run_id(state), {"predict_files": 1})
    assert [t.run_count for t in runs["predict_files"]] == [1]  # bad input: no retry
    assert not list(out.glob("*.parquet"))


# -- preprocessing, the fit and the evaluation on the cluster -------------------------------


def manual_fit(train: ooc.ParquetSource, scaler_path: str, epochs: int) -> SGDClassifier:
    """What the fit must equal: partial_fit over the scaled training blocks, in order."""
    scaler = load_object(scaler_path)
    estimator = SGDClassifier(random_state=0)
    for _ in range(epochs):
        for i in range(len(train.blocks)):
            X, y = read_features(train, i), read_target(train, i)
            estimator.partial_fit(scaler.transform(X), y, classes=[0, 1])
    return estimator


@pytest.fixture(scope="module")
def stages(task_runner, plan, tmp_path_factory):
    """Preprocess, fit (2 epochs) and evaluate, each a stage task on the cluster."""
    run_dir = str(tmp_path_factory.mktemp("run"))
    training = TRAINING.model_copy(update={"epochs": 2})

    def body():
        checked = check_dataset(
            plan.data, "y", HOLDOUT, SPLIT_SEED, CHUNK_ROWS, "classification"
        )  # fmt: skip
        pre = fit_preprocessing.submit(checked.train, MODEL, run_dir).result()
        fit = fit_model.submit(checked.train, MODEL, training, pre, run_dir).result()
        evaluated = evaluate_model.submit(fit.model_path, checked.holdout).result()
        return pre, fit, evaluated

    state = on_cluster(task_runner, body)
    return state, *state.result()


def test_preprocessing_equals_scikit_learn_in_memory(stages, plan):
    _, pre, _, _ = stages
    assert isinstance(pre, Preprocessed) and pre.classes == [0, 1]
    X, _ = rows_of(plan.train)
    reference = StandardScaler().fit(X)
    fitted = load_object(pre.scaler_path)
    np.testing.assert_allclose(fitted.mean_, reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(fitted.scale_, reference.scale_, rtol=1e-10)


def test_fit_model_equals_a_manual_partial_fit_loop(stages, plan):
    state, pre, fit, _ = stages
    n_train = ROWS - HOLDOUT_ROWS
    n_blocks = len(plan.train.blocks)
    assert isinstance(fit, Fitted)
    assert fit.n_samples_seen == 2 * n_train and fit.n_epochs == 2 and fit.n_blocks == n_blocks
    assert fit.resumed_from is None and len(fit.training_scores) == 2
    assert fit.validation_scores == [] and 0 < fit.fit_seconds <= fit.seconds
    pipe = load_object(fit.model_path)
    expected = manual_fit(plan.train, pre.scaler_path, epochs=2)
    np.testing.assert_array_equal(pipe[-1].estimator_.coef_, expected.coef_)
    np.testing.assert_array_equal(pipe[-1].estimator_.intercept_, expected.intercept_)
    # The saved model neither calls back into the run nor resumes from its checkpoint.
    assert pipe[-1].block_callback is None and pipe[-1].checkpoint_path is None

    with open(fit.blocks_path, newline="") as fh:
        blocks = list(csv.DictReader(fh))
    assert len(blocks) == 2 * n_blocks and int(blocks[-1]["n_samples_seen"]) == 2 * n_train
    assert sorted(int(b["rows"]) for b in blocks[:n_blocks]) == sorted(plan.train.rows)
    # One task run per stage, and the fit's progress reached 100%.
    runs = wait_for_task_runs(
        flow_run_id(state),
        {"check_dataset": 1, "fit_preprocessing": 1, "fit_model": 1, "evaluate_model": 1},
    )
    assert sorted((t.name, t.run_count) for found in runs.values() for t in found) == [
        ("check-data", 1), ("evaluate", 1), ("fit", 1), ("preprocess", 1),
    ]  # fmt: skip
    assert logged(flow_run_id(state), "Epoch 2: progressive training score")


@pytest.mark.parametrize("stage", ["preprocess", "fit", "evaluate"])
def test_every_stage_reports_its_progress_to_the_end(stages, stage):
    """Each stage's progress artifact (the Prefect UI's bar) ends at 100% when it is done."""
    state = stages[0]
    bars = [a for a in artifacts(flow_run_id(state)) if a.key == f"{stage}-progress"]
    assert len(bars) == 1 and bars[0].type == "progress", bars
    assert float(bars[0].data) == pytest.approx(100.0)


def test_evaluate_model_equals_scikit_learn_on_the_holdout_rows(stages, plan):
    _, _, fit, evaluated = stages
    assert isinstance(evaluated, Evaluated) and evaluated.n_samples == HOLDOUT_ROWS
    X, y = rows_of(plan.holdout)
    pipe = load_object(fit.model_path)
    assert evaluated.metrics["accuracy"] == pytest.approx(accuracy_score(y, pipe.predict(X)))
    exact = roc_auc_score(y, pipe.decision_function(X))
    assert evaluated.metrics["roc_auc"] == pytest.approx(exact, abs=1e-3)


@pytest.mark.usefixtures("prefect_server")
def test_fit_model_retry_resumes_from_its_checkpoint(
    task_runner, worker_faults, plan, stages, tmp_path
):
    _, pre, _, _ = stages
    run_dir = str(tmp_path / "run")
    worker_faults("fit-block:3")
    state = on_cluster(
        task_runner, lambda: fit_model.submit(plan.train, MODEL, TRAINING, pre, run_dir).result()
    )
    fit = state.result()

    assert tuple(fit.resumed_from) == (0, 2)  # checkpointed every 2 blocks
    assert fit.n_samples_seen == ROWS - HOLDOUT_ROWS
    expected = manual_fit(plan.train, pre.scaler_path, epochs=1)
    np.testing.assert_array_equal(load_object(fit.model_path)[-1].estimator_.coef_, expected.coef_)
    # The stage's own retry: one task run, run twice; its log says where it resumed.
    runs = wait_for_task_runs(flow_run_id(state), {"fit_model": 1})
    assert [t.run_count for t in runs["fit_model"]] == [2]
    assert logged(flow_run_id(state), "Resumed from checkpoint at epoch 0, block position 2.")
    assert logged(flow_run_id(state), f"Checkpoint {run_dir}/fit.ckpt found: resuming")
    with open(fit.blocks_path, newline="") as fh:
        assert int(list(csv.DictReader(fh))[-1]["n_samples_seen"]) == ROWS - HOLDOUT_ROWS


def test_model_card_describes_the_run(stages, plan):
    from ooc.tasks.training import Trained

    _, pre, fit, evaluated = stages
    trained = Trained(plan, MODEL, TRAINING, pre, fit, evaluated)
    card = json.loads(json.dumps(trained.card(), default=str))
    assert card["model_path"] == fit.model_path and card["model"] == MODEL.model_dump()
    assert card["training"]["block_rows"] == CHUNK_ROWS
    assert card["data"] == plan.data and card["data_fingerprint"] == plan.fingerprint()
    assert card["features"] == plan.features and card["target"] == "y"
    assert card["classes"] == [0, 1] and card["metrics"] == evaluated.metrics


def test_quick_gil_handover_leaves_the_process_interval_after_overlapping_stages():
    """Stage A starts, stage B starts, A ends, B ends: the process's interval is its own
    again, not the 1 ms that B saw when it started."""
    a, b = quick_gil_handover(), quick_gil_handover()
    a.__enter__()
    assert sys.getswitchinterval() == pytest.approx(0.001)
    b.__enter__()
    a.__exit__(None, None, None)
    b.__exit__(None, None, None)
    assert sys.getswitchinterval() == PROCESS_SWITCH_INTERVAL
    assert PROCESS_SWITCH_INTERVAL == pytest.approx(0.005)  # Python's, nothing changed it
