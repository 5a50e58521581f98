"""Holdout evaluation: metrics computed blockwise in parallel on the cluster."""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NONE
from prefect_dask import get_dask_client

import ooc
from ooc.io import dask_arrays

from .data import split_layout
from .store import load_object
from .training import RETRIES


@task(cache_policy=NONE, **RETRIES)
def evaluate_model(
    model_path: str, data: str, target: str | None, holdout_fraction: float, split_seed: int
) -> dict:
    """Metrics of the saved model on the holdout files (accuracy, log loss, ROC AUC; R², RMSE;
    inertia), with ``seconds`` and ``n_samples``."""
    start = time.perf_counter()
    _, _, holdout = split_layout(data, target, holdout_fraction, split_seed)
    X, y = dask_arrays(holdout)
    model = load_object(model_path)
    with get_dask_client():
        metrics = ooc.evaluate(model, X, y)
    return {**metrics, "seconds": time.perf_counter() - start}
