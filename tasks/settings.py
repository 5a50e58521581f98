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
    n_workers: int = Field(2, ge=1, description="LocalCluster worker processes.")
    threads_per_worker: int = Field(1, ge=1)
    dashboard_address: str = Field("127.0.0.1:8787", description="LocalCluster dashboard.")
    mlflow_experiment: str = Field("ooc", description="MLflow experiment of every run.")
    train_cron: str = Field("0 2 * * *", description="Schedule of the served pipeline.")
    predict_cron: str = Field("0 3 * * *", description="Schedule of the served batch_predict.")


def get_settings() -> Settings:
    return Settings()
