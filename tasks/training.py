"""Tasks for preprocessing and the incremental fit; paths and small dicts in and out."""

from __future__ import annotations

import csv
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, fields
from functools import partial
from pathlib import Path

import dask
import dask.array as da
from distributed import rejoin, secede
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff
from prefect_dask import get_dask_client
from sklearn.pipeline import Pipeline

import ooc
from ooc.catalog import make_estimator, make_scaler, model_kind
from ooc.files import atomic_write
from ooc.io import dask_arrays

from .data import split_layout
from .faults import maybe_fail
from .store import load_object, save_object


def _worth_retrying(task, task_run, state) -> bool:
    """Not bad input (a ValueError naming the file and column): it fails the same again."""
    try:
        state.result()
    except ValueError:
        return False
    except Exception:
        return True
    return True


RETRIES = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_condition_fn": _worth_retrying,
}


def training_arrays(data: str, target: str | None, holdout_fraction: float, split_seed: int):
    """X, y over the training files (the holdout files are left out by the split)."""
    _, train, _ = split_layout(data, target, holdout_fraction, split_seed)
    return dask_arrays(train)


@task(cache_policy=NONE, **RETRIES)
def fit_scaler(
    data: str,
    target: str | None,
    model_name: str,
    holdout_fraction: float,
    split_seed: int,
    run_dir: str,
) -> dict:
    """Fit the model's scaler on the cluster (one parallel pass) and find the classes."""
    start = time.perf_counter()
    X, y = training_arrays(data, target, holdout_fraction, split_seed)
    classes = None
    with cluster_client():
        scaler = make_scaler(model_name).fit(X)
        if y is not None and model_kind(model_name) == "classification":
            # Reads only the target column: a small fraction of the data.
            classes = da.unique(y).compute().tolist()
    return {
        "scaler_path": save_object(scaler, Path(run_dir) / "scaler.pkl"),
        "classes": classes,
        "seconds": time.perf_counter() - start,
    }


@contextmanager
def cluster_client():
    """The task runner's cluster as the current client, this task's thread handed back.

    A task waiting on the cluster would otherwise hold one of its worker's threads, and
    the work it submitted could use every worker but that one.
    """
    with get_dask_client() as client:
        secede()
        try:
            with client.as_current():
                yield client
        finally:
            rejoin()


class FitProgress:
    """Block callback: Prefect progress artifact, a progress file, and per-block timings."""

    def __init__(self, total_blocks: int, run_dir: Path, every_seconds: float = 1.0):
        self.total = max(total_blocks, 1)
        self.file = run_dir / "progress.json"
        self.every = every_seconds
        self.reports: list[ooc.BlockReport] = []
        self.last = 0.0
        self.artifact = create_progress_artifact(
            0.0, description="Incremental fit: blocks streamed into partial_fit"
        )

    def __call__(self, report: ooc.BlockReport) -> None:
        self.reports.append(report)
        done = report.epoch * report.n_positions + report.position + 1
        maybe_fail("fit-block", done)
        now = time.monotonic()
        if now - self.last >= self.every or done >= self.total:
            self.last = now
            percent = min(100.0, 100.0 * done / self.total)
            update_progress_artifact(self.artifact, percent)
            state = {"done": done, "total": self.total, "rows": report.n_samples_seen}
            atomic_write(self.file, lambda tmp: tmp.write_text(json.dumps(state)))

    def write_timings(self, path: Path, transform_seconds: dict[int, float]) -> str:
        """One row per block: read, transform, partial_fit and waiting seconds."""
        names = [f.name for f in fields(ooc.BlockReport)] + ["transform_seconds", "read_seconds"]

        def row(report):
            transform = transform_seconds.get(report.block, 0.0)
            read = max(report.load_seconds - transform, 0.0)
            return {**asdict(report), "transform_seconds": transform, "read_seconds": read}

        def write(tmp):
            with tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=names)
                writer.writeheader()
                writer.writerows(row(r) for r in self.reports)

        atomic_write(path, write)
        return str(path)


def timed_transform(scaler, X, seconds: dict[int, float]):
    """``scaler.transform`` block by block, recording each block's seconds (last epoch's)."""

    def transform(block, block_id=None):
        start = time.perf_counter()
        out = scaler.transform(block)
        seconds[block_id[0]] = time.perf_counter() - start
        return out

    return X.map_blocks(transform, dtype=X.dtype)


def _seeded(estimator, training: dict):
    """Seed the estimator from the run's random_state unless its parameters set one."""
    if estimator.get_params().get("random_state", 0) is None:
        estimator.set_params(random_state=training["random_state"])
    return estimator


@task(cache_policy=NONE, **RETRIES)
def fit_model(
    data: str,
    target: str | None,
    model: dict,
    training: dict,
    scaler_path: str,
    classes: list | None,
    run_dir: str,
) -> dict:
    """Stream the training blocks into ``partial_fit``, checkpointing as it goes.

    A retry of this task resumes from the run directory's checkpoint and ends with
    the same model as an uninterrupted fit.
    """
    logger = get_run_logger()
    start = time.perf_counter()
    run = Path(run_dir)
    X, y = training_arrays(data, target, training["holdout_fraction"], training["split_seed"])
    if model_kind(model["name"]) == "clustering":
        y = None  # the target column stays out of the features, and is not learned
    scaler = load_object(scaler_path)
    checkpoint = run / "fit.ckpt"
    if checkpoint.exists():
        logger.info("Checkpoint %s found: resuming the fit from it.", checkpoint)
    progress = FitProgress(X.numblocks[0] * training["epochs"], run)
    replicas = training.get("replicas")
    wrapper = (
        partial(ooc.ParallelIncremental, n_replicas=replicas, sync_every=training["sync_every"])
        if replicas
        else ooc.Incremental
    )
    incremental = wrapper(
        _seeded(make_estimator(model["name"], **model.get("params", {})), training),
        n_epochs=training["epochs"],
        shuffle_blocks=training["shuffle_blocks"],
        random_state=training["random_state"],
        prefetch=training["prefetch"],
        early_stopping=training["early_stopping"],
        progressive_score=True,
        block_callback=progress,
        checkpoint_path=checkpoint,
        checkpoint_every=training["checkpoint_every"],
    )
    fit_kwargs = {"classes": classes} if classes is not None else {}
    transform_seconds: dict[int, float] = {}
    if replicas:
        # Each replica reads its own blocks on its worker (load_seconds include the
        # transform there).
        logger.info("Fitting %d replicas on the cluster's workers.", replicas)
        with cluster_client():
            incremental.fit(scaler.transform(X), y, **fit_kwargs)
    else:
        # Blocks are read by threads in this process: no transfer between workers.
        with dask.config.set(scheduler="threads"):
            incremental.fit(timed_transform(scaler, X, transform_seconds), y, **fit_kwargs)
    if incremental.resumed_from_:
        logger.info(
            "Resumed from checkpoint at epoch %d, block position %d.", *incremental.resumed_from_
        )
    # The saved model must not call back into this run or resume from its checkpoint.
    incremental.set_params(block_callback=None, checkpoint_path=None)
    pipeline = Pipeline([("scaler", scaler), ("incremental", incremental)])
    reports = progress.reports
    return {
        "model_path": save_object(pipeline, run / "model.pkl"),
        "blocks_path": progress.write_timings(run / "blocks.csv", transform_seconds),
        "n_samples_seen": incremental.n_samples_seen_,
        "n_epochs": incremental.n_epochs_,
        "validation_scores": incremental.validation_scores_,
        "training_scores": incremental.training_scores_,
        "resumed_from": incremental.resumed_from_,
        "fit_seconds": sum(r.fit_seconds for r in reports),
        "wait_seconds": sum(r.wait_seconds for r in reports),
        "seconds": time.perf_counter() - start,
    }
