"""The task runner's Dask cluster, used from inside a stage's task.

A stage's task runs on a Dask worker and spreads its work over the whole cluster. On a
cluster of several workers, that work is Dask tasks the scheduler hands out. On a cluster of
one worker (the command's own: threads of its process), it runs on Dask's threaded
scheduler, inside the stage's task, as the library runs it: the scheduler has nothing to
balance there, and a round trip through it and its event loop per task costs the GIL the
working threads need (at 10M rows, prediction's stage took 1.32-1.45 s on threads against
1.48-2.00 s as a Dask task per file, six alternating pairs of ``ooc predict``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import dask

# The scheduler's event topic of the tasks a stage ran on its worker's threads.
THREAD_STEPS = "ooc-thread-steps"


@contextmanager
def cluster_client():
    """The flow's Dask cluster as the current client, this task's worker thread handed back.

    The worker's own client is reused (a new one would cost a connection per stage), and
    while the task waits, its worker thread is handed back (``secede``), so the work can use
    every worker, this one included.
    """
    from distributed import worker_client

    with worker_client(separate_thread=True) as client, client.as_current():
        yield client


def _only_worker_threads(client) -> int | None:
    """The thread count of the cluster's only worker; None when it has several."""
    nthreads = client.nthreads()
    return next(iter(nthreads.values())) if len(nthreads) == 1 else None


@contextmanager
def stage_compute() -> Iterator[None]:
    """Where ``dask.compute`` runs inside the block: the cluster's workers, or this worker's
    threads when it is the only one."""
    with cluster_client() as client:
        threads = _only_worker_threads(client)
        if threads is None:
            yield
        else:
            with dask.config.set(scheduler="threads", num_workers=threads):
                yield


def compute_each(tasks: Sequence, done: Callable[[int, object], None]) -> None:
    """Compute every delayed of ``tasks`` on the cluster; ``done(i, result)`` sees each
    one's result as it ends, in this thread (the stage's, which reports progress). The
    first error ends the stage and is raised here."""
    with cluster_client() as client:
        threads = _only_worker_threads(client)
        if threads is not None:
            _compute_on_threads(tasks, threads, done)
            return
        from distributed import as_completed

        with quick_gil_handover():
            futures = client.compute(list(tasks))
            index = {future.key: i for i, future in enumerate(futures)}
            for future in as_completed(futures):
                done(index[future.key], future.result())


def _compute_on_threads(tasks: Sequence, threads: int, done) -> None:
    """The tasks on Dask's threaded scheduler, each one's span sent to the scheduler's
    event log (:data:`THREAD_STEPS`) at the end, where the run's profile draws them as the
    task stream would draw Dask tasks."""
    from dask.callbacks import Callback
    from distributed import get_worker

    index = {task.key: i for i, task in enumerate(tasks)}
    started: dict[str, float] = {}
    last_span: dict[object, dict] = {}  # by the pool's thread that ran it
    spans = []

    # A span runs from when the task is handed to the pool to when its result is seen,
    # which can be after the same thread took its next task: a thread's tasks run one after
    # another, so its previous span ends, at the latest, when its next one starts.
    def pretask(key, dsk, state):
        started[key] = time.time()

    def posttask(key, result, dsk, state, worker_id):
        span = {"key": str(key), "start": started.pop(key), "stop": time.time()}
        previous = last_span.get(worker_id)
        if previous is not None:
            previous["stop"] = min(previous["stop"], span["start"])
        span["thread"] = previous["thread"] if previous else len(last_span) + 1
        last_span[worker_id] = span
        spans.append(span)
        if key in index:
            done(index[key], result)

    try:
        with Callback(pretask=pretask, posttask=posttask):
            dask.compute(*tasks, scheduler="threads", num_workers=threads)
    finally:
        worker = get_worker()
        worker.log_event(THREAD_STEPS, {"worker": worker.address, "steps": spans})


# The process's interval when this module was imported, which a stage puts back.
PROCESS_SWITCH_INTERVAL = sys.getswitchinterval()


@contextmanager
def quick_gil_handover(seconds: float = 0.001):
    """Let a thread waiting for the GIL take it after ``seconds`` (Python's default: 5 ms).

    With workers that are threads of this process, Dask's event loop and the working
    threads share its GIL: every wake-up of the loop and every return of a thread from
    pyarrow or numpy waits for it. At 100M rows, 1 ms made prediction's stage 0.3 and 0.8 s
    faster in the medians of two series of alternating pairs (README). The interval is the
    process's, and the process's own is put back at the end: overlapping stages (``ooc
    serve`` runs flows side by side) cannot leave one stage's setting behind.
    """
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(PROCESS_SWITCH_INTERVAL)
