"""Fixtures for the flow tests: the session cluster as the project's task runner, and tiny
data (``worker_faults`` is in ``tests/conftest.py``, shared with the task tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ooc

from .support import CHUNK_ROWS, FEATURES, ROWS


@pytest.fixture(scope="session", autouse=True)
def isolated_workdir(tmp_path_factory):
    """Flows called without a workdir (and their MLflow store) land in a temporary
    directory, never in the checkout; each flow's MLflow store is ``<workdir>/mlflow.db``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OOC_WORKDIR", str(tmp_path_factory.mktemp("default-workdir")))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


@pytest.fixture(scope="session")
def api_url(prefect_server) -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def runner(dask_cluster, prefect_server):
    """``flows.runner.dask_task_runner()`` as ``OOC_DASK_ADDRESS`` points it at the session
    cluster: the flows run there instead of starting a cluster each."""
    from ooc.flows.runner import dask_task_runner

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OOC_DASK_ADDRESS", dask_cluster.scheduler_address)
        return dask_task_runner()


@pytest.fixture(scope="session")
def clf_data(tmp_path_factory) -> Path:
    """A tiny classification dataset: 8 files of 5 000 rows, 5 features."""
    path = tmp_path_factory.mktemp("flows-clf") / "data"
    ooc.generate_dataset(path, n_rows=ROWS, n_features=FEATURES, chunk_rows=CHUNK_ROWS, seed=7)
    return path
