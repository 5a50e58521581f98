"""The Dask task runner, chosen from the settings.

An existing scheduler when ``OOC_DASK_ADDRESS`` is set; a cluster class (Kubernetes,
HPC) when ``OOC_DASK_CLUSTER_CLASS`` is; otherwise a LocalCluster of worker processes.
"""

from __future__ import annotations

from prefect_dask import DaskTaskRunner

from tasks.settings import Settings, get_settings


def dask_task_runner(settings: Settings | None = None) -> DaskTaskRunner:
    settings = settings or get_settings()
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    if settings.dask_cluster_class:
        return DaskTaskRunner(
            cluster_class=settings.dask_cluster_class,
            cluster_kwargs=settings.dask_cluster_kwargs,
        )
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": settings.n_workers,
            "threads_per_worker": settings.threads_per_worker,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": settings.dashboard_address,
        },
    )
