"""Shared fixtures: small generated datasets and a real dask cluster with worker processes."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import ooc  # noqa: E402


@pytest.fixture(scope="session")
def clf_dir(tmp_path_factory):
    """A small binary classification dataset: 6 parquet files of 2 000 rows, 5 features."""
    path = tmp_path_factory.mktemp("clf")
    ooc.generate_dataset(path, n_rows=12_000, n_features=5, chunk_rows=2_000, seed=1)
    return path


@pytest.fixture(scope="session")
def reg_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("reg")
    ooc.generate_dataset(
        path, n_rows=9_000, n_features=4, chunk_rows=1_500, task="regression", seed=2
    )
    return path


@pytest.fixture(scope="session")
def blobs_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("blobs")
    ooc.generate_dataset(
        path, n_rows=8_000, n_features=3, chunk_rows=2_000, task="blobs", n_classes=4, seed=3
    )
    return path


@pytest.fixture(scope="session")
def dask_cluster():
    """A real LocalCluster with two worker processes, shared by the session."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster


@pytest.fixture
def dask_client(dask_cluster):
    from distributed import Client

    with Client(dask_cluster) as client:
        yield client


@pytest.fixture(scope="session")
def prefect_server():
    """A temporary Prefect server and database for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def faults(tmp_path, monkeypatch):
    """Arm test-only faults: ``faults("fit-block:3")``; each fires once."""
    monkeypatch.setenv("OOC_FAULTS_DIR", str(tmp_path / "fault-markers"))

    def arm(spec: str) -> None:
        monkeypatch.setenv("OOC_FAULTS", spec)

    return arm


@pytest.fixture
def worker_faults(dask_cluster, faults):
    """Arm ``OOC_FAULTS`` here and in the running worker processes of the session cluster.

    The hook reads the environment of the process it runs in, and the session workers
    were started before the test set anything, so the variables are set in them too
    (and removed afterwards).
    """
    from distributed import Client

    names = ("OOC_FAULTS", "OOC_FAULTS_DIR")

    def set_env(values: dict) -> None:
        os.environ.update(values)

    def unset_env(keys) -> None:
        for key in keys:
            os.environ.pop(key, None)

    client = Client(dask_cluster.scheduler_address, set_as_default=False)

    def arm(spec: str) -> None:
        faults(spec)
        client.run(set_env, {name: os.environ[name] for name in names})

    try:
        yield arm
    finally:
        client.run(unset_env, names)
        client.close()
