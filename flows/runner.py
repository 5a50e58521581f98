"""The Dask task runner, chosen from the settings.

An existing scheduler when ``OOC_DASK_ADDRESS`` is set; a cluster class (Kubernetes,
HPC) when ``OOC_DASK_CLUSTER_CLASS`` is; otherwise a LocalCluster (threads of the flow's
process by default; see ``tasks.settings.local_cluster_kwargs``).
"""

from __future__ import annotations

from prefect_dask import DaskTaskRunner

from ooc.tasks.settings import Settings, get_settings, local_cluster_kwargs


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
        cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(settings)
    )
