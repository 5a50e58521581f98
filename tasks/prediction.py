"""The prediction stage: every input file predicted on the cluster, one output per file.

One task run for the stage (the unit of visibility); inside it, one step per file or per run
of a large file's blocks, each retried where it runs after a transient failure (the unit of
retry). On a cluster of several workers each step is a Dask task and the model is shipped
once to each worker; on a cluster of one (the command's own), the steps run on Dask's
threaded scheduler inside the stage's task, as the library runs them. Outputs are
atomic and complete ones are kept, so a retried or re-run stage continues where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

import ooc
from ooc.predict import PredictionJob, clear_leftovers, prediction_graph, takes_frames

from .cluster import compute_each
from .faults import maybe_fail
from .progress import StageProgress
from .retries import IO_RETRIES, retry_transient
from .store import load_object

REGISTRY_SCHEMES = ("models:/", "runs:/")


def load_model(model_ref: str, tracking_uri: str | None = None):
    """A registry URI (``models:/name/3``) through MLflow, or a saved model path."""
    if model_ref.startswith(REGISTRY_SCHEMES):
        import mlflow

        from .registry import load_model as load_registered

        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        return load_registered(model_ref)
    return load_object(model_ref)


@dataclass(frozen=True)
class Predicted:
    """What the prediction stage wrote."""

    out: str
    files: int
    rows: int
    written: int  # outputs written now; the others were complete already
    model_ref: str
    seconds: float


def _attempt(index: dict, func, *args) -> tuple[object, list[str]]:
    """Run one step of the prediction graph where it runs, retrying transient failures;
    its result, and the retries for the stage's log."""
    job = next(a for a in args if isinstance(a, PredictionJob))
    notes: list[str] = []

    def attempt():
        if func is not ooc.predict.join_parts:
            maybe_fail("predict-partition", index[job.dest])
        return func(*args)

    def note(error, n):
        notes.append(f"{job.dest.name}: attempt {n} failed ({error!r}), retried")

    return retry_transient(attempt, on_retry=note), notes


@task(cache_policy=NONE, task_run_name="predict", **IO_RETRIES)
def predict_files(
    data: str,
    out: str,
    model_ref: str,
    *,
    target: str | None,
    features: list[str] | None,
    method: str,
    block_rows: int,
    tracking_uri: str | None = None,
) -> Predicted:
    """Predict every file under ``data`` into ``out`` on the cluster's workers."""
    start = time.perf_counter()
    logger = get_run_logger()
    model = load_model(model_ref, tracking_uri)
    jobs = ooc.prediction_jobs(
        data, out, features=features, target=target, block_rows=block_rows,
        as_frame=takes_frames(model),
    )  # fmt: skip
    removed = clear_leftovers(jobs)
    if removed:
        logger.info("Removed %d file(s) an interrupted run left in %s.", len(removed), out)
    steps = prediction_graph(
        model, jobs, method, call=partial(_attempt, {job.dest: i for i, job in enumerate(jobs)})
    )
    progress = StageProgress("predict", sum(s.blocks for s in steps), "blocks")
    written = 0

    def done(i: int, outcome: tuple[object, list[str]]) -> None:
        nonlocal written
        step, (result, notes) = steps[i], outcome
        for line in notes:
            logger.warning(line)
        progress.update(advance=step.blocks)
        written += step.final and bool(result)

    compute_each([step.task for step in steps], done)
    progress.finish()
    return Predicted(
        out=str(out),
        files=len(jobs),
        rows=sum(job.rows for job in jobs),
        written=written,
        model_ref=model_ref,
        seconds=time.perf_counter() - start,
    )
