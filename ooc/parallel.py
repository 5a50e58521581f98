"""``ParallelIncremental``: replicas of the estimator fit their own shares of the blocks.

Each round, every replica streams ``sync_every`` blocks of its own into its own copy
of the model; then the copies are averaged, weighted by the rows each saw
(:func:`ooc.averaging.average_replicas`), and the next round starts from the average.
On a ``dask.distributed`` client each replica is a task on its own worker, which reads
its blocks itself; without one, replicas are threads of this process (the inner loops
of scikit-learn's SGD, MLP and k-means release the GIL).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial

from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .averaging import average_replicas, check_averageable
from .blocks import compute_blocks, current_client, prefetch, standalone
from .incremental import BlockReport, Incremental, Step, check_count, fit_block
from .metrics import BlockScorer

__all__ = ["ParallelIncremental"]


@dataclass
class _Share:
    """One replica's blocks for one round: (position in the epoch's order, block, X, y)."""

    step: Step
    items: list


@dataclass
class _ShareResult:
    estimator: object
    reports: list  # BlockReport per block; n_samples_seen is filled in by the caller
    score_total: dict | None


def _fit_share(estimator, share: _Share, *, depth: int, score: bool) -> _ShareResult:
    """Stream one replica's share into its own copy of the estimator (on a worker or in a
    thread)."""
    # The copy is made here, where the replica runs: threads, and in-process workers,
    # would otherwise all update the caller's one estimator at once.
    estimator = copy.deepcopy(estimator)
    # Each replica reads its own blocks where it runs, with the synchronous scheduler:
    # no transfer, and no nested use of the cluster from inside a task.
    todo = (
        (block, partial(compute_blocks, x, y, scheduler="sync")) for _, block, x, y in share.items
    )
    reports, total = [], None
    positions = [position for position, *_ in share.items]
    for (loaded, waited), position in zip(prefetch(todo, depth=depth), positions, strict=True):
        report, part = fit_block(
            estimator, loaded, waited, share.step, position=position, seen=0, score=score
        )
        total = BlockScorer.merge(total, part)
        reports.append(report)
    return _ShareResult(estimator, reports, total)


def _items(run, order: list[int], positions) -> list[tuple]:
    """(position, block, X, y) of each position in ``order``; the blocks without the graph
    of the rest of the collection."""
    x, y = run.xb.blocks, run.yb.blocks if run.yb else None
    return [
        (p, order[p], standalone(x[order[p]]), standalone(y[order[p]]) if y else None)
        for p in positions
    ]


def _is_fitted(estimator) -> bool:
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


class _Threads:
    """Replicas as threads of this process."""

    def __init__(self, size: int):
        self.size = size
        self.pool = ThreadPoolExecutor(size, thread_name_prefix="ooc-replica")

    def run(self, fit: Callable, estimator, shares: list[_Share]) -> list[_ShareResult]:
        futures = [self.pool.submit(fit, estimator, share) for share in shares]
        return [future.result() for future in futures]

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class _Workers:
    """Replicas as tasks on a dask.distributed cluster, replica k on worker k."""

    def __init__(self, client, size: int | None):
        self.client = client
        self.workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        if not self.workers:
            raise RuntimeError(f"The dask client {client} has no workers to fit replicas on.")
        self.size = size or len(self.workers)

    def run(self, fit: Callable, estimator, shares: list[_Share]) -> list[_ShareResult]:
        futures = [
            # Pinned for locality and a stable assignment; a dead worker's replica is
            # rerun elsewhere from the same inputs, so the result does not change.
            self.client.submit(
                fit,
                estimator,
                share,
                workers=[self.workers[share.step.replica % len(self.workers)]],
                allow_other_workers=True,
                pure=False,
                key=f"ooc-replica-{share.step.replica}-{os.urandom(6).hex()}",
            )
            for share in shares
        ]
        return self.client.gather(futures)

    def close(self) -> None:
        pass


@contextmanager
def _replicas(n_replicas: int | None):
    client = current_client()
    pool = (
        _Workers(client, n_replicas)
        if client is not None
        else _Threads(n_replicas or len(os.sched_getaffinity(0)))
    )
    try:
        yield pool
    finally:
        pool.close()


class ParallelIncremental(Incremental):
    """:class:`Incremental` with several replicas fitting at once, averaged every round.

    Each round, the next ``n_replicas × sync_every`` blocks of the epoch's order are dealt
    round robin to the replicas; each streams its blocks into its own copy of the model
    (reading them where it runs, with prefetch); then the copies are averaged, weighted by
    the rows each saw, and all continue from the average. The very first block is fitted
    by one replica alone, so every copy starts from the same initialised model (weights of
    an MLP, k-means centres, classes).

    Supported: linear models (``SGDClassifier``, ``SGDRegressor``, ``Perceptron``; average
    of ``coef_``/``intercept_``), ``MLPClassifier``/``MLPRegressor`` (``coefs_``/
    ``intercepts_`` and the optimiser's moments) and ``MiniBatchKMeans`` (centres merged
    as running means, weighted by their counts).

    Where replicas run: on the current ``dask.distributed`` client, one per worker (replica
    *k* on the *k*-th worker by address); without a client, as threads of this process.
    For a fixed ``random_state`` and number of replicas the result is deterministic, and
    the same on either.

    Parameters
    ----------
    estimator : estimator with ``partial_fit``
        One of the supported families.
    n_replicas : int, optional
        Replicas fitting at once; default: the number of workers (or of usable cores
        without a client). With one replica the fit equals :class:`Incremental`'s.
    sync_every : int or None, default 4
        Blocks each replica fits between two averages; None averages once per epoch.
        The trade-off: every average is a barrier (replicas wait for the slowest, and the
        next round's first block is read without overlap), so a larger value is faster;
        but replicas drift apart between averages and the average of drifted copies is
        worse than a serial fit, so a smaller value is closer to the serial model. Convex
        linear models tolerate large values; MLPs and k-means want small ones.
    prefetch : int, default 1
        Blocks each replica reads ahead of its ``partial_fit``. Peak memory is about
        ``n_replicas × (prefetch + 2)`` blocks (a block, its transform, the read-ahead).
    scoring, n_epochs, shuffle_blocks, random_state, early_stopping, validation_fraction,\
    n_iter_no_change, tol, progressive_score, block_callback, checkpoint_path,\
    checkpoint_every, predict_meta, predict_proba_meta, decision_function_meta,\
    transform_meta
        As in :class:`Incremental`. ``block_callback`` runs
        here, after each round, once per block in epoch order; checkpoints are written at
        round boundaries (every ``checkpoint_every`` blocks or more).

    Examples
    --------
    >>> import dask.array as da
    >>> from sklearn.linear_model import SGDClassifier
    >>> from ooc import ParallelIncremental
    >>> X = da.random.default_rng(0).random((8_000, 4), chunks=(1_000, 4))
    >>> y = (X[:, 0] > 0.5).astype(int)
    >>> model = ParallelIncremental(SGDClassifier(random_state=0), n_replicas=2)
    >>> model.fit(X, y, classes=[0, 1]).n_samples_seen_
    8000
    """

    def __init__(
        self,
        estimator,
        scoring=None,
        *,
        n_replicas: int | None = None,
        sync_every: int | None = 4,
        n_epochs: int = 1,
        shuffle_blocks: bool = False,
        random_state=None,
        prefetch: int = 1,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        tol: float = 1e-4,
        progressive_score: bool = False,
        block_callback: Callable[[BlockReport], None] | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        predict_meta=None,
        predict_proba_meta=None,
        decision_function_meta=None,
        transform_meta=None,
    ):
        super().__init__(
            estimator,
            scoring,
            n_epochs=n_epochs,
            shuffle_blocks=shuffle_blocks,
            random_state=random_state,
            prefetch=prefetch,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            progressive_score=progressive_score,
            block_callback=block_callback,
            checkpoint_path=checkpoint_path,
            checkpoint_every=checkpoint_every,
            predict_meta=predict_meta,
            predict_proba_meta=predict_proba_meta,
            decision_function_meta=decision_function_meta,
            transform_meta=transform_meta,
        )
        self.n_replicas = n_replicas
        self.sync_every = sync_every

    def _check_params(self) -> None:
        super()._check_params()
        check_averageable(self.estimator)
        check_count("n_replicas", self.n_replicas, minimum=1, none=True)
        check_count("sync_every", self.sync_every, minimum=1, none=True)

    def _stream(self, X, y, fit_kwargs, estimator, **kwargs):
        with _replicas(self.n_replicas) as pool:
            self._pool = pool
            try:
                return super()._stream(X, y, fit_kwargs, estimator, **kwargs)
            finally:
                del self._pool

    def _fit_signature(self, fit_kwargs: dict) -> dict:
        # The replicas actually used: n_replicas=None means one per worker (or core).
        return {**super()._fit_signature(fit_kwargs), "n_replicas": self._pool.size}

    def _epoch(self, estimator, order, state, run):
        saved_at = state.position
        while state.position < len(order):
            fitted = _is_fitted(estimator)
            # Until the model is initialised, one block on one replica.
            n = min(self._pool.size, len(order)) if fitted else 1
            per_replica = (self.sync_every or len(order)) if fitted else 1
            positions = range(state.position, min(len(order), state.position + n * per_replica))
            shares = [
                _Share(
                    self._step(run, state.epoch, len(order), replica),
                    _items(run, order, positions[replica::n]),
                )
                for replica in range(n)
            ]
            shares = [share for share in shares if share.items]
            fit = partial(_fit_share, depth=self.prefetch, score=self.progressive_score and fitted)
            results = self._pool.run(fit, estimator, shares)
            rows = [sum(r.rows for r in result.reports) for result in results]
            estimator = average_replicas(estimator, [r.estimator for r in results], rows)
            for result in results:
                state.training_total = BlockScorer.merge(state.training_total, result.score_total)
            self._report_round(state, results)
            state.position = positions.stop
            checkpoint = run.checkpoint
            if checkpoint and checkpoint.every and state.position - saved_at >= checkpoint.every:
                checkpoint.save(estimator, state)
                saved_at = state.position
        return estimator

    def _report_round(self, state, results) -> None:
        """The round's blocks in epoch order, each with the rows seen up to it."""
        reports = sorted(
            (r for result in results for r in result.reports), key=lambda r: r.position
        )
        for report in reports:
            state.n_samples_seen += report.rows
            self._report(replace(report, n_samples_seen=state.n_samples_seen))
