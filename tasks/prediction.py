"""Batch prediction tasks: plan one job per input file, then one mapped task per job."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff

import ooc

from . import tracking
from .faults import maybe_fail
from .store import load_object

REGISTRY_SCHEMES = ("models:/", "runs:/")


def load_model(model_ref: str, tracking_uri: str | None = None):
    """A registry URI (``models:/name/3``) through MLflow, or a saved model path."""
    if model_ref.startswith(REGISTRY_SCHEMES):
        return tracking.load_model(model_ref, tracking_uri or tracking.current_uri())
    return load_object(model_ref)


@task(cache_policy=NONE)
def plan_predictions(
    data: str, out: str, target: str | None, features: list[str] | None
) -> list[ooc.PredictionJob]:
    """Check the input files (schema, features) and plan one output per input."""
    return ooc.prediction_jobs(data, out, features=features, target=target)


@task(
    cache_policy=NONE,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
    task_run_name="predict-{job.source.name}",
)
def predict_partition(
    job: ooc.PredictionJob,
    index: int,
    model_ref: str,
    method: str,
    tracking_uri: str | None = None,
) -> dict:
    """Predict one file and write its output atomically; a complete output is kept."""
    maybe_fail("predict-partition", index)
    written = ooc.predict_file(load_model(model_ref, tracking_uri), job, method)
    return {"dest": str(job.dest), "rows": job.rows, "written": written}
