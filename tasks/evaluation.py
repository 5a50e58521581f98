"""Holdout evaluation: metrics computed blockwise in parallel on the cluster."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NONE

import ooc
from ooc.io import dask_collections

from .cluster import stage_compute
from .progress import StageProgress
from .retries import STAGE_RETRIES
from .store import load_object


@dataclass(frozen=True)
class Evaluated:
    """Holdout metrics (accuracy, log loss, ROC AUC; R², RMSE, MAE; inertia)."""

    metrics: dict[str, float]
    n_samples: int
    seconds: float


@task(cache_policy=NONE, task_run_name="evaluate", **STAGE_RETRIES)
def evaluate_model(model_path: str, holdout: ooc.ParquetSource) -> Evaluated:
    """Metrics of the saved model on the holdout rows, every worker computing its share."""
    start = time.perf_counter()
    X, y = dask_collections(holdout)
    model = load_object(model_path)
    progress = StageProgress("evaluate", len(holdout.blocks), "blocks")
    with stage_compute():
        metrics = ooc.evaluate(model, X, y)
    progress.finish()
    n = int(metrics.pop("n_samples"))
    return Evaluated(metrics, n, time.perf_counter() - start)
