"""Batch prediction tasks: plan one job per input file, then one mapped task per job."""

from __future__ import annotations

import re
from pathlib import Path

from prefect import get_run_logger, task
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


# ooc.files.atomic_write's temporary name for <name>: .<name>.<hex digits>.tmp
_TMP = re.compile(r"\.(?P<name>.+)\.[0-9a-f]+\.tmp")


def remove_leftovers(jobs: list[ooc.PredictionJob]) -> list[Path]:
    """Delete the temporary files a crashed writer left beside the planned outputs.

    Only names of the form ``.<output name>.<hex digits>.tmp`` next to an output of
    ``jobs`` are removed: one run writes one output directory (scheduled runs each get
    their own), so no live writer owns them. Returns the removed paths.
    """
    outputs: dict[Path, set[str]] = {}
    for job in jobs:
        outputs.setdefault(job.dest.parent, set()).add(job.dest.name)
    removed = []
    for folder, names in outputs.items():
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):
            match = _TMP.fullmatch(path.name)
            if match and match["name"] in names:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


@task(cache_policy=NONE)
def plan_predictions(
    data: str, out: str, target: str | None, features: list[str] | None
) -> list[ooc.PredictionJob]:
    """Check the input files (schema, features) and plan one output per input.

    Temporary files a crashed earlier run left in ``out`` are removed (and logged).
    """
    jobs = ooc.prediction_jobs(data, out, features=features, target=target)
    removed = remove_leftovers(jobs)
    if removed:
        get_run_logger().info(
            "Removed %d temporary file(s) an interrupted run left in %s.", len(removed), out
        )
    return jobs


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
