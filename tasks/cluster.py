"""The task runner's Dask cluster, used from inside a stage's task."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def cluster_client():
    """The flow's Dask cluster as the current client, this task's worker thread handed back.

    A stage's task runs on a Dask worker and spreads its work over the whole cluster. The
    worker's own client is reused (a new one would cost a connection per stage), and while
    the task waits, its worker thread is handed back (``secede``), so the work can use
    every worker, this one included.
    """
    from distributed import worker_client

    with worker_client(separate_thread=True) as client, client.as_current():
        yield client
