"""The search stage: candidates of the estimator race on the training blocks, on the cluster."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from sklearn.pipeline import Pipeline

import ooc
from ooc.io import dask_collections

from .cluster import cluster_client
from .config import ModelConfig, SearchConfig, TrainingConfig
from .progress import StageProgress
from .retries import STAGE_RETRIES
from .store import load_object, save_object
from .training import Preprocessed


@dataclass(frozen=True)
class Searched:
    """What the search found: the best parameters, every candidate, the saved model."""

    model_path: str
    best_params: dict
    best_score: float
    candidates: list[dict]  # id, bracket, params, final score, blocks seen, rank
    history: list[dict]  # every score check: candidate, rung, blocks seen, score
    plan: dict  # the brackets and rungs, planned
    partial_fit_calls: int
    seconds: float


def make_search(model: ModelConfig, training: TrainingConfig, search: SearchConfig, callback):
    """The library search these settings describe (its plan is known before any work)."""
    common = {
        "scoring": None,
        "shuffle_blocks": training.shuffle_blocks,
        "prefetch": training.prefetch,
        "random_state": training.random_state,
        "refit": True,
        "callback": callback,
    }
    estimator = model.estimator(training.random_state)
    if search.method == "halving":
        return ooc.SuccessiveHalvingSearchCV(
            estimator, search.distributions(), search.max_blocks, eta=search.eta,
            n_candidates=search.n_candidates, **common,
        )  # fmt: skip
    return ooc.HyperbandSearchCV(
        estimator, search.distributions(), search.max_blocks, eta=search.eta, **common
    )


class _RungLog:
    """Search callback: progress in blocks of the budget, and a log line per rung."""

    def __init__(self, max_blocks: int):
        self.progress = StageProgress("search", max_blocks, "blocks")
        self.logger = get_run_logger()

    def __call__(self, report) -> None:
        scores = [entry["score"] for entry in report.scores]
        if scores:
            self.logger.info(
                "After %d blocks: %d candidate(s) scored (best %.4f), %d still racing.",
                report.blocks, len(scores), max(scores), report.racing,
            )  # fmt: skip
        self.progress.update(report.blocks, note=f"{report.racing} racing")


def _plain(params: dict) -> dict:
    """Parameters as plain Python values (numpy scalars print as ``np.float64(...)``)."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in params.items()}


def _candidates(result) -> list[dict]:
    results = result.cv_results_
    return [
        {
            "id": i,
            "params": _plain(results["params"][i]),
            "bracket": int(results["bracket"][i]),
            "score": float(results["test_score"][i]),
            "blocks_seen": int(results["blocks_seen"][i]),
            "rank": int(results["rank_test_score"][i]),
        }
        for i in range(len(results["params"]))
    ]


@task(cache_policy=NONE, task_run_name="search", **STAGE_RETRIES)
def search_model(
    train: ooc.ParquetSource,
    model: ModelConfig,
    training: TrainingConfig,
    search: SearchConfig,
    preprocessed: Preprocessed,
    run_dir: str,
) -> Searched:
    """Race the candidates on the scaled training blocks, then refit the best on them all."""
    start = time.perf_counter()
    X, y = dask_collections(train)
    if model.kind == "clustering":
        y = None
    scaler = load_object(preprocessed.scaler_path)
    rungs = _RungLog(search.max_blocks)
    searcher = make_search(model, training, search, rungs)
    fit_kwargs = {"classes": preprocessed.classes} if preprocessed.classes is not None else {}
    with cluster_client():
        searcher.fit(scaler.transform(X), y, **fit_kwargs)
    rungs.progress.finish()
    get_run_logger().info(
        "Best of %d candidates: %s (score %.4f), refitted on every training block.",
        searcher.n_candidates_, _plain(searcher.best_params_), searcher.best_score_,
    )  # fmt: skip
    pipeline = Pipeline([("scaler", scaler), ("model", searcher.best_estimator_)])
    return Searched(
        model_path=save_object(pipeline, Path(run_dir) / "model.pkl"),
        best_params=_plain(searcher.best_params_),
        best_score=float(searcher.best_score_),
        candidates=_candidates(searcher),
        history=list(searcher.history_),
        plan=searcher.metadata,
        partial_fit_calls=int(searcher.metadata_["partial_fit_calls"]),
        seconds=time.perf_counter() - start,
    )
