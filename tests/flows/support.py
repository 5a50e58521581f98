"""Helpers for the flow tests: reading runs back from the Prefect API, and files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import pyarrow.parquet as pq
import pytest

import ooc

ROWS, CHUNK_ROWS, FEATURES = 40_000, 5_000, 5
N_FILES = ROWS // CHUNK_ROWS
HOLDOUT_ROWS = round(0.1 * ROWS)  # TrainingConfig's holdout_fraction


def tiny_dataset(**changes):
    """The tests' dataset settings: 8 files of 5 000 rows, 5 features."""
    from ooc.tasks.config import DatasetConfig

    return DatasetConfig(rows=ROWS, features=FEATURES, chunk_rows=CHUNK_ROWS, **changes)


def tiny_training(**changes):
    """Training settings with a block per file, so a fit streams several blocks."""
    from ooc.tasks.config import TrainingConfig

    return TrainingConfig(block_rows=CHUNK_ROWS, **changes)


# -- reading back from the API ------------------------------------------------------------


def eventually(check: Callable[[], object], timeout: float = 60.0, every: float = 0.5):
    """Call ``check`` until it returns something truthy (task runs arrive as events)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def flow_run_id(state) -> UUID:
    return state.state_details.flow_run_id


def read_flow_run(run_id: UUID):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def run(flow, runner, **params):
    """Run ``flow`` on ``runner``; return its final state (the flow run id is in it)."""
    return flow.with_options(task_runner=runner)(**params, return_state=True)


def completed(state) -> dict:
    assert state.is_completed(), state
    assert read_flow_run(flow_run_id(state)).state.is_completed()
    return state.result()


def task_runs(run_id: UUID) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), limit=200
        )


def task_name(task_run) -> str:
    """The task's function name (``task_key`` is ``<qualname>-<hash>``)."""
    return task_run.task_key.rsplit("-", 1)[0]


def runs_of(run_id: UUID, name: str) -> list:
    return [t for t in task_runs(run_id) if task_name(t) == name]


def wait_for_task_runs(run_id: UUID, expected: dict[str, int], timeout: float = 60.0) -> dict:
    """Task runs of a flow run by task name, once ``expected`` runs of each name have
    reached a final state in the API (task run states arrive as events)."""

    def check():
        by_name: dict[str, list] = {}
        for t in task_runs(run_id):
            by_name.setdefault(task_name(t), []).append(t)
        done = all(
            sum(1 for t in by_name.get(name, []) if t.state and t.state.is_final()) >= n
            for name, n in expected.items()
        )
        return by_name if done else None

    by_name = eventually(check, timeout)
    assert by_name is not None, f"{expected} final task runs not recorded: {task_runs(run_id)}"
    return by_name


def artifacts(run_id: UUID) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )


def assert_summary_and_progress(run_id: UUID, stages: tuple[str, ...] = ()) -> str:
    """The run's markdown summary artifact (returned), and a progress artifact at 100% for
    each of ``stages`` (the stage tasks' ``<stage>-progress``)."""
    found = eventually(lambda: artifacts(run_id) if len(artifacts(run_id)) > len(stages) else [])
    summaries = [a for a in found if a.key == "ooc-run-summary"]
    assert len(summaries) == 1, found
    assert summaries[0].type == "markdown"
    assert summaries[0].description == "ooc run summary" and "**" in summaries[0].data
    for stage in stages:
        bars = [a for a in found if a.type == "progress" and a.key == f"{stage}-progress"]
        assert bars, f"no {stage} progress among {[(a.key, a.type) for a in found]}"
        assert max(float(a.data) for a in bars) == pytest.approx(100.0)
    links = [a for a in found if a.key == "mlflow-run"]
    assert len(links) == 1, [(a.key, a.type) for a in found]
    return summaries[0].data


def logged(run_id: UUID, text: str, timeout: float = 30.0) -> bool:
    """Whether the flow run or one of its task runs logged a message containing ``text``
    (logs reach the API in batches: waited for)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    def messages() -> list[str]:
        with get_client(sync_client=True) as client:
            found = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200
            )
        return [log.message for log in found]

    return bool(eventually(lambda: any(text in m for m in messages()), timeout=timeout))


# -- files ----------------------------------------------------------------------------------


def parquet_rows(path: Path) -> dict[str, int]:
    """Rows of every visible parquet file under ``path``, by relative name."""
    return {
        str(f.relative_to(path)): pq.read_metadata(f).num_rows for f in ooc.list_parquet_files(path)
    }


def registry(workdir: Path):
    """The MLflow client of a flow's default store, ``<workdir>/mlflow.db``."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion_version(workdir: Path, name: str) -> str:
    return str(registry(workdir).get_model_version_by_alias(name, "champion").version)


def registered_versions(workdir: Path) -> list[tuple[str, str]]:
    return sorted((v.name, str(v.version)) for v in registry(workdir).search_model_versions())


def final_step(model_path: str | Path):
    """The estimator inside the saved pipeline's Incremental step."""
    from ooc.tasks.store import load_object

    return load_object(model_path)[-1].estimator_
