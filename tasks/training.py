"""Tasks for preprocessing and the incremental fit: sources and configs in, typed results out."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import dask
import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from sklearn.pipeline import Pipeline

import ooc
from ooc.catalog import make_scaler
from ooc.files import atomic_write
from ooc.io import dask_collections
from ooc.statcache import StatsCache, target_classes

from .cluster import cluster_client, stage_compute
from .config import ModelConfig, PreprocessConfig, TrainingConfig
from .data import DataPlan
from .evaluation import Evaluated
from .faults import maybe_fail
from .progress import StageProgress
from .retries import STAGE_RETRIES
from .store import load_object, save_object
from .tabular import build_preprocessing, categories


@dataclass(frozen=True)
class Preprocessed:
    """The fitted preprocessing (a path in the run directory) and the target's classes."""

    scaler_path: str  # the model's scaler, or an ooc.OnePass over a ColumnTransformer
    classes: list | None
    pieces: int  # row groups (or slices) the statistics cover
    pieces_read: int  # of them, read now (the others came from the statistics cache)
    seconds: float
    passes: int = 1  # reads of the data the preprocessing took
    categories: dict | None = None  # each one-hot encoded column's categories


@task(cache_policy=NONE, task_run_name="preprocess", **STAGE_RETRIES)
def fit_preprocessing(
    train: ooc.ParquetSource,
    model: ModelConfig,
    run_dir: str,
    stats_cache: str | None = None,
    preprocess: PreprocessConfig = PreprocessConfig(),  # noqa: B008 - immutable
) -> Preprocessed:
    """Fit the preprocessing on the cluster in one parallel pass over the training blocks,
    and find the classes of a classifier's target (a read of the target column only).

    Complete numeric data: the model's scaler, with ``stats_cache`` (a directory) keeping
    each file's statistics, so a retrain reads only new or changed files. Text, booleans
    or missing values: a ColumnTransformer fitted by ``ooc.OnePass`` (``tasks.tabular``).
    """
    start = time.perf_counter()
    X, y = dask_collections(train)
    pieces = sum(len(block) for block in train.blocks)
    progress = StageProgress("preprocess", pieces, "pieces")
    classes, cache = None, StatsCache(stats_cache) if stats_cache else None
    with stage_compute():
        if train.as_frame:
            fitted = build_preprocessing(train, model, preprocess).fit(X)
            read, passes = pieces * fitted.n_passes_, fitted.n_passes_
        else:
            fitted = make_scaler(model.name).set_params(stats_cache=stats_cache).fit(X)
            read, passes = fitted.n_pieces_read_, 1
        if y is not None and model.kind == "classification":
            classes, _ = target_classes(train, cache)
    progress.finish(pieces)
    logger = get_run_logger()
    if train.as_frame:
        logger.info(
            "Preprocessing fitted in %d pass(es) over the data: %s.",
            passes, "; ".join(fitted.passes_) if hasattr(fitted, "passes_") else "",
        )  # fmt: skip
    elif stats_cache:
        logger.info(
            "Statistics of %d piece(s): %d read, %d from the cache in %s.",
            pieces, read, pieces - read, stats_cache,
        )  # fmt: skip
    return Preprocessed(
        scaler_path=save_object(fitted, Path(run_dir) / "scaler.pkl"),
        classes=classes,
        pieces=pieces,
        pieces_read=read,
        seconds=time.perf_counter() - start,
        passes=passes,
        categories=categories(fitted) or None,
    )


@dataclass(frozen=True)
class Fitted:
    """What the fit task produced and measured."""

    model_path: str
    blocks_path: str  # blocks.csv: one row per block, times in seconds from blocks_origin
    blocks_origin: float  # wall-clock time
    n_samples_seen: int
    n_epochs: int
    n_blocks: int
    training_scores: list[float]
    validation_scores: list[float]
    curve: list[tuple[int, float]]  # (rows seen, progressive score of the block) per block
    resumed_from: tuple[int, int] | None
    fit_seconds: float  # inside partial_fit
    wait_seconds: float  # waiting for a block to be read
    seconds: float


class FitProgress:
    """Block callback: the stage's progress (Prefect UI and terminal) and every block's
    timings, kept for ``blocks.csv``."""

    def __init__(self, blocks: int, epochs: int):
        self.epochs = epochs
        self.progress = StageProgress("fit", blocks * epochs, "blocks")
        self.reports: list[ooc.BlockReport] = []

    def __call__(self, report: ooc.BlockReport) -> None:
        self.reports.append(report)
        done = report.epoch * report.n_positions + report.position + 1
        maybe_fail("fit-block", done)
        # n_positions counts the blocks fitted per epoch (not those held out for
        # early stopping), so the total is known from the first report on.
        total = report.n_positions * self.epochs
        self.progress.update(done, total=total, note=f"epoch {report.epoch + 1}/{self.epochs}")

    @property
    def origin(self) -> float:
        """When the first block began loading (wall clock): time 0 of ``blocks.csv``."""
        return min((r.load_started for r in self.reports), default=0.0)

    def write_timings(self, path: Path) -> str:
        """One row per block, in seconds from :attr:`origin`: reading (and transforming,
        fused with it), waiting for the block, and partial_fit."""
        origin = self.origin
        names = [
            "epoch", "position", "block", "replica", "rows", "n_samples_seen",
            "load_start_s", "load_s", "wait_s", "fit_start_s", "partial_fit_s",
            "progressive_score",
        ]  # fmt: skip

        def row(r: ooc.BlockReport) -> dict:
            return {
                "epoch": r.epoch, "position": r.position, "block": r.block,
                "replica": r.replica, "rows": r.rows, "n_samples_seen": r.n_samples_seen,
                "load_start_s": round(r.load_started - origin, 4),
                "load_s": round(r.load_seconds, 4), "wait_s": round(r.wait_seconds, 4),
                "fit_start_s": round(r.fit_started - origin, 4),
                "partial_fit_s": round(r.fit_seconds, 4),
                "progressive_score": "" if r.score is None else round(r.score, 6),
            }  # fmt: skip

        def write(tmp):
            with tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=names)
                writer.writeheader()
                writer.writerows(row(r) for r in self.reports)

        atomic_write(path, write)
        return str(path)


@task(cache_policy=NONE, task_run_name="fit", **STAGE_RETRIES)
def fit_model(
    train: ooc.ParquetSource,
    model: ModelConfig,
    training: TrainingConfig,
    preprocessed: Preprocessed,
    run_dir: str,
) -> Fitted:
    """Stream the training blocks into ``partial_fit``, checkpointing as it goes.

    A retry of this task resumes from the run directory's checkpoint and ends with
    the same model as an uninterrupted fit.
    """
    logger = get_run_logger()
    start = time.perf_counter()
    run = Path(run_dir)
    X, y = dask_collections(train)
    if model.kind == "clustering":
        y = None  # the target column stays out of the features, and is not learned
    scaler = load_object(preprocessed.scaler_path)
    checkpoint = run / "fit.ckpt"
    if checkpoint.exists():
        logger.info("Checkpoint %s found: resuming the fit from it.", checkpoint)
    progress = FitProgress(len(train.blocks), training.epochs)
    wrapper = (
        partial(
            ooc.ParallelIncremental, n_replicas=training.replicas, sync_every=training.sync_every
        )
        if training.replicas
        else ooc.Incremental
    )
    incremental = wrapper(
        model.estimator(training.random_state),
        n_epochs=training.epochs,
        shuffle_blocks=training.shuffle_blocks,
        random_state=training.random_state,
        prefetch=training.prefetch,
        early_stopping=training.early_stopping,
        progressive_score=True,
        block_callback=progress,
        checkpoint_path=checkpoint,
        checkpoint_every=training.checkpoint_every,
    )
    fit_kwargs = {"classes": preprocessed.classes} if preprocessed.classes is not None else {}
    if training.replicas:
        # Each replica reads its own blocks on its worker (load_seconds include the
        # transform there).
        logger.info("Fitting %d replicas on the cluster's workers.", training.replicas)
        with cluster_client():
            incremental.fit(scaler.transform(X), y, **fit_kwargs)
    else:
        # Blocks are read by threads in this process: no transfer between workers. The
        # transform of parquet columns is fused with their reading (ooc.fastpath).
        with dask.config.set(scheduler="threads"):
            incremental.fit(scaler.transform(X), y, **fit_kwargs)
    if incremental.resumed_from_:
        logger.info(
            "Resumed from checkpoint at epoch %d, block position %d.", *incremental.resumed_from_
        )
    for epoch, score in enumerate(incremental.training_scores_, start=1):
        validation = incremental.validation_scores_[epoch - 1 : epoch]
        shown = f", validation score {validation[0]:.4f}" if validation else ""
        scored = (
            f"progressive training score {score:.4f}"
            if np.isfinite(score)
            else "no block scored yet (each block is scored before the model learns from it)"
        )
        logger.info("Epoch %d: %s%s.", epoch, scored, shown)
    progress.progress.finish(len(progress.reports))
    # The saved model must not call back into this run or resume from its checkpoint.
    incremental.set_params(block_callback=None, checkpoint_path=None)
    pipeline = Pipeline([("scaler", scaler), ("incremental", incremental)])
    reports = progress.reports
    return Fitted(
        model_path=save_object(pipeline, run / "model.pkl"),
        blocks_path=progress.write_timings(run / "blocks.csv"),
        blocks_origin=progress.origin,
        n_samples_seen=incremental.n_samples_seen_,
        n_epochs=incremental.n_epochs_,
        n_blocks=reports[0].n_positions if reports else 0,
        training_scores=list(incremental.training_scores_),
        validation_scores=list(incremental.validation_scores_),
        curve=[(r.n_samples_seen, r.score) for r in reports if r.score is not None],
        resumed_from=incremental.resumed_from_,
        fit_seconds=sum(r.fit_seconds for r in reports),
        wait_seconds=sum(r.wait_seconds for r in reports),
        seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class Trained:
    """A training run, stage by stage: the data plan and what each stage gave."""

    plan: DataPlan
    model: ModelConfig
    training: TrainingConfig
    preprocessed: Preprocessed
    fitted: Fitted
    evaluated: Evaluated
    preprocess: PreprocessConfig = PreprocessConfig()  # noqa: RUF009 - immutable

    def card(self) -> dict:
        """What the saved model is and how it was made (``model.json`` beside it)."""
        return {
            "model_path": self.fitted.model_path,
            "model": self.model.model_dump(),
            "training": self.training.model_dump(),
            "preprocess": self.preprocess.model_dump(),
            "data": self.plan.data,
            "data_fingerprint": self.plan.fingerprint(),
            "target": self.plan.target,
            "features": self.plan.features,
            "classes": self.preprocessed.classes,
            "metrics": self.evaluated.metrics,
        }
