"""Settings from the environment, in one place, with defaults that need no server.

Every variable has the prefix ``OOC_`` (e.g. ``OOC_DASK_ADDRESS``). Prefect and MLflow
read their own variables (``PREFECT_API_URL``, ``MLFLOW_TRACKING_URI``) themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where data and runs live, and which Dask cluster runs the tasks."""

    model_config = SettingsConfigDict(env_prefix="OOC_", extra="ignore")

    workdir: Path = Field(Path(".ooc"), description="Datasets, run directories, predictions.")
    dask_address: str | None = Field(
        None, description="Address of an existing Dask scheduler (tcp://host:8786)."
    )
    dask_cluster_class: str | None = Field(
        None,
        description="Import path of a cluster class, e.g. dask_kubernetes.operator.KubeCluster.",
    )
    dask_cluster_kwargs: dict[str, Any] = Field(default_factory=dict)
    n_workers: int = Field(1, ge=1, description="LocalCluster workers.")
    threads_per_worker: int | None = Field(
        None, ge=1, description="Threads per LocalCluster worker (default: the usable cores)."
    )
    worker_processes: bool = Field(
        False,
        description="LocalCluster workers as processes; by default they are threads of the "
        "command's own process, which start at once and share its imports.",
    )
    dashboard_address: str = Field("127.0.0.1:8787", description="LocalCluster dashboard.")
    mlflow_experiment: str = Field("ooc", description="MLflow experiment of every run.")
    train_cron: str = Field("0 2 * * *", description="Schedule of the served pipeline.")
    predict_cron: str = Field("0 3 * * *", description="Schedule of the served batch_predict.")


def get_settings() -> Settings:
    return Settings()


def local_cluster_kwargs(settings: Settings) -> dict[str, Any]:
    """The embedded LocalCluster's arguments, sized by the settings.

    Worker processes listen on 127.0.0.1 only; worker threads talk in-process (``inproc://``).
    The dashboards (the scheduler's and each worker's) are on ``dashboard_address``'s host.
    """
    import os
    import socket

    cores = len(os.sched_getaffinity(0))
    dashboard = settings.dashboard_address
    host, _, port = dashboard.rpartition(":")
    with socket.socket() as probe:  # taken (another command's): any free port, no warning
        if port.isdigit() and probe.connect_ex((host or "127.0.0.1", int(port))) == 0:
            dashboard = f"{host}:0"
    threads = settings.threads_per_worker or max(1, cores // settings.n_workers)
    kwargs = {
        "n_workers": settings.n_workers,
        "threads_per_worker": threads,
        "processes": settings.worker_processes,
        "dashboard_address": dashboard,
        # A worker's own HTTP server (its /status, /metrics) on the dashboard's host: by
        # default an in-process worker would bind every interface.
        "worker_dashboard_address": f"{host or '127.0.0.1'}:0",
    }
    if settings.worker_processes:
        kwargs["host"] = "127.0.0.1"
    return kwargs
