"""``Incremental``: stream the blocks of a dask collection into ``partial_fit``.

While block *i* is in ``partial_fit``, the next ``prefetch`` blocks are already being
read and transformed in background threads, so a fit runs at the speed of
``partial_fit`` and memory is bounded by block size × (prefetch + 1).
"""

from __future__ import annotations

import copy
import inspect
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import dask
import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.utils import check_random_state, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .blocks import (
    RowBlocks,
    aligned_row_blocks,
    apply_blockwise,
    compute_blocks,
    epoch_order,
    is_dask_collection,
    n_rows,
    prefetch,
    split_validation,
)
from .checkpoint import Checkpoint, comparable
from .metrics import BlockScorer

__all__ = ["BlockReport", "Incremental"]


@dataclass(frozen=True, kw_only=True)
class BlockReport:
    """What happened to one block; passed to ``block_callback`` after each block.

    A progress bar shows ``blocks_done`` of ``blocks_total``: both count training blocks
    only (held-out validation blocks are not fitted). With early stopping ``blocks_total``
    is a maximum, and the fit may end before it.

    Attributes
    ----------
    epoch : int
        0-based epoch.
    position : int
        Position of the block in this epoch's order (0-based).
    n_positions : int
        Number of training blocks per epoch.
    n_epochs : int
        Epochs this fit runs at most (1 for ``partial_fit``).
    block : int
        Index of the block in X.
    rows : int
        Rows in the block (0 for a skipped empty block).
    load_seconds : float
        Seconds to read and transform the block (in a prefetch thread).
    wait_seconds : float
        Seconds the fit waited for the block; near 0 when prefetch keeps up.
    fit_seconds : float
        Seconds in ``partial_fit``.
    n_samples_seen : int
        Rows seen so far in this fit, this block included.
    load_started, fit_started : float
        Wall-clock times (``time.time()``) when loading and ``partial_fit`` began.
    replica : int
        Which replica fitted the block (always 0 for a serial fit).
    score : float or None
        With ``progressive_score``: the model's score on this block just *before* it
        learned from it (progressive validation), so the reports draw a learning curve
        at no extra pass. None otherwise, and for the first block.
    """

    epoch: int
    position: int
    n_positions: int
    n_epochs: int
    block: int
    rows: int
    load_seconds: float
    wait_seconds: float
    fit_seconds: float
    n_samples_seen: int
    load_started: float
    fit_started: float
    replica: int = 0
    score: float | None = None

    @property
    def blocks_done(self) -> int:
        """Training blocks fitted so far in this fit, this one included."""
        return self.epoch * self.n_positions + self.position + 1

    @property
    def blocks_total(self) -> int:
        """Training blocks of the whole fit: ``n_epochs × n_positions``."""
        return self.n_epochs * self.n_positions


@dataclass
class _FitState:
    """Where a fit is; with the estimator, enough to resume it exactly."""

    seed: int
    epoch: int = 0
    position: int = 0
    n_samples_seen: int = 0
    validation_scores: list = field(default_factory=list)
    best_score: float = -np.inf
    best_estimator: object = None
    epochs_without_improvement: int = 0
    stopped: bool = False
    training_scores: list = field(default_factory=list)
    training_total: dict | None = None


def _estimator_has(method: str):
    def check(self):
        est = self.__dict__.get("estimator_", self.estimator)
        return hasattr(est, method)

    return check


def _can_score(self) -> bool:
    return self.scoring is not None or _estimator_has("score")(self)


# The parameter that gives each prediction method's output metadata (dask-ml's names).
_META_PARAM = {
    "predict": "predict_meta",
    "predict_proba": "predict_proba_meta",
    "predict_log_proba": "predict_proba_meta",
    "decision_function": "decision_function_meta",
    "transform": "transform_meta",
}


def check_count(name: str, value, *, minimum: int, none: bool = False) -> None:
    """Refuse anything but an int >= ``minimum`` (or None when allowed); bools too."""
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        allowed = f"{'None or ' if none else ''}an int >= {minimum}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}.")


class Incremental(MetaEstimatorMixin, BaseEstimator):
    """Fit any estimator with ``partial_fit`` on data larger than memory.

    ``fit`` streams the row blocks of ``X`` (and ``y``) into a clone of ``estimator``,
    one ``partial_fit`` per block, for ``n_epochs`` passes. The next ``prefetch`` blocks
    are computed in the background while the current one is being fitted. Prediction
    methods are lazy and blockwise on dask input, and plain on numpy input.

    Parameters
    ----------
    estimator : estimator with ``partial_fit``
        Cloned on ``fit``; the fitted clone is ``estimator_``.
    scoring : str, callable or None, default None
        The score of :meth:`score`, of early stopping's validation and of
        ``progressive_score``: None for the estimator's own ``score``, a scikit-learn
        scorer name (``"accuracy"``, ``"r2"``, ``"neg_log_loss"``, ...) or a callable
        ``scorer(estimator, X, y) -> float`` (a metric ``metric(y_true, y_pred)`` must be
        wrapped in :func:`sklearn.metrics.make_scorer`). Over blocks, the names of
        :data:`ooc.metrics.EXACT_SCORERS` are exact; any other scorer is the row-weighted
        mean of its block scores (see :class:`ooc.BlockScorer`).
    n_epochs : int, default 1
        Passes over the data (the maximum, with early stopping).
    shuffle_blocks : bool, default False
        Visit the blocks in a new random order each epoch, drawn from ``random_state``.
    random_state : int, RandomState or None
        Seeds the block order and the choice of validation blocks.
    prefetch : int, default 2
        Blocks computed ahead of ``partial_fit``; 0 computes each block when needed.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the blocks, score on them after each epoch,
        and stop after ``n_iter_no_change`` epochs without an improvement of ``tol``;
        the best epoch's estimator is kept.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 5
    tol : float, default 1e-4
    progressive_score : bool, default False
        Score each block with the model *before* it learns from it (progressive
        validation) and report the mean per epoch in ``training_scores_``: a training
        score that costs one ``predict`` per block and no extra pass.
    block_callback : callable, optional
        Called with a :class:`BlockReport` after each block (progress bars, timing).
    checkpoint_path : path-like, optional
        Save the fit's state here at the end of each epoch (and every
        ``checkpoint_every`` blocks); ``fit`` resumes from it when it exists, giving
        the same model as an uninterrupted fit. A checkpoint written with other
        parameters, ``fit`` arguments or blocks is refused. Delete the file to start over.
    checkpoint_every : int, optional
        Also checkpoint every this many blocks.
    predict_meta, predict_proba_meta, decision_function_meta, transform_meta : array, optional
        The output of ``predict``, ``predict_proba`` (and ``predict_log_proba``),
        ``decision_function``, ``transform`` on dask input, as an empty array shaped like it
        past the rows: ``numpy.empty((0,), dtype="int64")``, ``numpy.empty((0, 2))``, or a
        pandas Series/DataFrame. By default it is learned by running the method on one row
        of zeros, which some models refuse.

    Attributes
    ----------
    estimator_ : estimator
        The fitted clone. Its learned attributes (``coef_``, ``classes_``,
        ``cluster_centers_``, ...) are also readable on the wrapper.
    n_epochs_ : int
        Epochs actually run (``partial_fit`` adds one per call).
    n_samples_seen_ : int
        Training rows streamed, over all epochs.
    validation_scores_ : list of float
        Held-out score after each epoch (with ``early_stopping``).
    training_scores_ : list of float
        Progressive training score of each epoch (with ``progressive_score``).
    best_validation_score_ : float or None
    resumed_from_ : tuple (epoch, position) or None
        Where the fit resumed from a checkpoint, if it did.

    Examples
    --------
    >>> import dask.array as da
    >>> from sklearn.linear_model import SGDClassifier
    >>> from sklearn.pipeline import make_pipeline
    >>> from ooc import Incremental, StandardScaler
    >>> X = da.random.random((10_000, 4), chunks=(1_000, 4))
    >>> y = (X[:, 0] > 0.5).astype(int)
    >>> pipe = make_pipeline(StandardScaler(), Incremental(SGDClassifier(random_state=0)))
    >>> pipe = pipe.fit(X, y, incremental__classes=[0, 1])
    >>> pipe.predict(X)  # lazy, blockwise
    dask.array<_apply, shape=(10000,), dtype=int64, chunksize=(1000,), chunktype=numpy.ndarray>
    >>> pipe.score(X, y) > 0.9
    True
    """

    def __init__(
        self,
        estimator,
        scoring=None,
        *,
        n_epochs: int = 1,
        shuffle_blocks: bool = False,
        random_state=None,
        prefetch: int = 2,
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
        self.estimator = estimator
        self.scoring = scoring
        self.n_epochs = n_epochs
        self.shuffle_blocks = shuffle_blocks
        self.random_state = random_state
        self.prefetch = prefetch
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.progressive_score = progressive_score
        self.block_callback = block_callback
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.predict_meta = predict_meta
        self.predict_proba_meta = predict_proba_meta
        self.decision_function_meta = decision_function_meta
        self.transform_meta = transform_meta

    # -- learned attributes of the wrapped estimator ------------------------------------
    def __getattr__(self, name):
        # Only learned attributes (trailing "_") are forwarded, and only once fitted.
        if name.endswith("_") and not name.startswith("__") and "estimator_" in self.__dict__:
            return getattr(self.__dict__["estimator_"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = inner.classifier_tags
        tags.regressor_tags = inner.regressor_tags
        tags.transformer_tags = inner.transformer_tags
        tags.target_tags = inner.target_tags
        tags.input_tags = inner.input_tags
        return tags

    # -- fitting --------------------------------------------------------------------------
    def fit(self, X, y=None, **fit_kwargs):
        """Stream the blocks of ``X`` and ``y`` into a fresh clone's ``partial_fit``.

        Parameters
        ----------
        X : dask array, dask DataFrame, or array-like of shape (n_samples, n_features)
            A column-chunked dask array is rechunked so every block holds all features.
        y : dask array/Series or array-like of shape (n_samples,), optional
            Partitioned like ``X``.
        **fit_kwargs
            Passed to every ``partial_fit`` call, e.g. ``classes=[0, 1]``.

        Returns
        -------
        self
        """
        self._check_params()
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, attr)
        return self._stream(X, y, fit_kwargs, clone(self.estimator), epochs=self.n_epochs)

    def partial_fit(self, X, y=None, **fit_kwargs):
        """Stream the blocks of ``X`` once, in order, continuing from ``estimator_``.

        As dask-ml's ``partial_fit``: no shuffling, no held-out blocks and no checkpoint;
        ``n_epochs_``, ``n_samples_seen_`` and ``training_scores_`` add to the earlier fit's.

        Returns
        -------
        self
        """
        self._check_params()
        before = {name: self.__dict__[name] for name in _HISTORY if name in self.__dict__}
        estimator = before.get("estimator_")
        if estimator is None:
            estimator = clone(self.estimator)
        self._stream(X, y, fit_kwargs, estimator, epochs=1, one_pass=True)
        self.n_epochs_ += before.get("n_epochs_", 0)
        self.n_samples_seen_ += before.get("n_samples_seen_", 0)
        self.training_scores_ = before.get("training_scores_", []) + self.training_scores_
        self.validation_scores_ = before.get("validation_scores_", [])
        self.best_validation_score_ = before.get("best_validation_score_")
        return self

    def _check_params(self) -> None:
        if not hasattr(self.estimator, "partial_fit"):
            raise TypeError(
                f"Incremental needs an estimator with partial_fit; "
                f"{type(self.estimator).__name__} has none."
            )
        check_count("n_epochs", self.n_epochs, minimum=1)
        check_count("prefetch", self.prefetch, minimum=0)
        check_count("n_iter_no_change", self.n_iter_no_change, minimum=1)
        check_count("checkpoint_every", self.checkpoint_every, minimum=1, none=True)
        if self.early_stopping and not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}."
            )
        BlockScorer(self.estimator, self.scoring)  # a bad scoring fails before the fit

    def _with_classes(self, estimator, y, fit_kwargs: dict) -> dict:
        """Add ``classes`` when a classifier needs it and it can be found for free."""
        needs = (
            is_classifier(estimator)
            and "classes" in inspect.signature(estimator.partial_fit).parameters
        )
        if not needs or "classes" in fit_kwargs or y is None or hasattr(estimator, "classes_"):
            return fit_kwargs
        if is_dask_collection(y):
            name = type(estimator).__name__
            raise ValueError(
                f"{name}.partial_fit needs every class label up front, but y is streamed "
                f"block by block, so they are not known. Pass them: "
                f"Incremental(...).fit(X, y, classes=[0, 1]), or in a Pipeline "
                f"pipe.fit(X, y, incremental__classes=[0, 1]). To find them: "
                f"numpy.unique(y.compute())."
            )
        return {**fit_kwargs, "classes": np.unique(np.asarray(y))}

    def _seed(self) -> int:
        if isinstance(self.random_state, int | np.integer):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _split_blocks(self, n_blocks: int, seed: int) -> tuple[list[int], list[int]]:
        """Training and held-out validation block indices."""
        if not self.early_stopping:
            return list(range(n_blocks)), []
        if n_blocks < 2:
            raise ValueError(
                f"early_stopping holds out whole blocks, so X needs at least 2 blocks; it has "
                f"{n_blocks}. Rechunk X into more blocks or set early_stopping=False."
            )
        return split_validation(n_blocks, self.validation_fraction, seed)

    def _order(self, train: list[int], seed: int, epoch: int) -> list[int]:
        return epoch_order(train, seed, epoch, self.shuffle_blocks)

    def _stream(self, X, y, fit_kwargs, estimator, *, epochs: int, one_pass: bool = False):
        if y is None and get_tags(estimator).target_tags.required:
            raise ValueError(
                f"This {type(estimator).__name__} estimator requires y to be passed, "
                "but the target y is None."
            )
        xb, yb = aligned_row_blocks(X, y)
        fit_kwargs = self._with_classes(estimator, y, fit_kwargs)
        checkpoint = None if one_pass else Checkpoint.of(self, xb, fit_kwargs)
        run = _Run(xb, yb, fit_kwargs, epochs, checkpoint)
        state = _FitState(seed=self._seed())
        resumed = checkpoint.load() if checkpoint else None
        if resumed:
            estimator, state = resumed
        self.resumed_from_ = (state.epoch, state.position) if resumed else None
        train, held_out = (
            ([*range(len(xb))], []) if one_pass else self._split_blocks(len(xb), state.seed)
        )

        while state.epoch < epochs and not state.stopped:
            order = train if one_pass else self._order(train, state.seed, state.epoch)
            estimator = self._epoch(estimator, order, state, run)
            state.epoch += 1
            state.position = 0
            if self.progressive_score:
                scorer = BlockScorer(estimator, self.scoring)
                state.training_scores.append(scorer.value(state.training_total))
                state.training_total = None
            if held_out:
                self._validate_epoch(estimator, state, [run.loader(i) for i in held_out])
            if checkpoint:
                checkpoint.save(estimator, state)

        if held_out and state.best_estimator is not None:
            estimator = state.best_estimator
        self.estimator_ = estimator
        self.n_epochs_ = state.epoch
        self.n_samples_seen_ = state.n_samples_seen
        self.validation_scores_ = list(state.validation_scores)
        self.training_scores_ = list(state.training_scores)
        self.best_validation_score_ = state.best_score if held_out else None
        return self

    def _epoch(self, estimator, order, state: _FitState, run: _Run):
        """Stream the rest of this epoch's ``order`` into ``estimator``; return it."""
        step = self._step(run, state.epoch, len(order))
        todo = ((i, run.loader(i)) for i in order[state.position :])
        for loaded, waited in prefetch(todo, depth=self.prefetch):
            report, part = fit_block(
                estimator,
                loaded,
                waited,
                step,
                position=state.position,
                seen=state.n_samples_seen,
                score=self.progressive_score and state.n_samples_seen > 0,
            )
            state.training_total = BlockScorer.merge(state.training_total, part)
            state.position += 1
            state.n_samples_seen = report.n_samples_seen
            self._report(report)
            if run.checkpoint and run.checkpoint.due(state.position):
                run.checkpoint.save(estimator, state)
        return estimator

    def _step(self, run: _Run, epoch: int, n_positions: int, replica: int = 0) -> Step:
        return Step(
            fit_kwargs=run.fit_kwargs,
            lazy=run.xb.lazy,
            scoring=self.scoring,
            epoch=epoch,
            n_positions=n_positions,
            n_epochs=run.n_epochs,
            replica=replica,
        )

    def _fit_signature(self, fit_kwargs: dict) -> dict:
        """What a checkpoint must match to be resumed by this fit: every parameter that
        can change the model or its scores (the inner estimator's too) and the arguments
        of ``partial_fit``."""
        params = self.get_params(deep=True)
        signature = {k: comparable(v) for k, v in params.items() if k not in _FREE_ON_RESUME}
        return {**signature, "fit_kwargs": comparable(fit_kwargs)}

    def _report(self, report: BlockReport) -> None:
        if self.block_callback is not None:
            self.block_callback(report)

    def _validate_epoch(self, estimator, state: _FitState, loaders) -> None:
        scorer = BlockScorer(estimator, self.scoring)
        total = None
        for loaded, _ in prefetch(enumerate(loaders), depth=self.prefetch):
            total = scorer.merge(total, scorer.parts(*loaded.value, block=loaded.index))
        score = scorer.value(total)
        state.validation_scores.append(score)
        if score > state.best_score + self.tol:
            state.epochs_without_improvement = 0
        else:
            state.epochs_without_improvement += 1
        if score > state.best_score:
            state.best_score = score
            state.best_estimator = copy.deepcopy(estimator)
        state.stopped = state.epochs_without_improvement >= self.n_iter_no_change

    # -- prediction -----------------------------------------------------------------------
    def _blockwise(self, method: str, X):
        check_is_fitted(self)
        if not is_dask_collection(X):
            return getattr(self.estimator_, method)(X)
        param = _META_PARAM[method]
        return apply_blockwise(self.estimator_, method, X, getattr(self, param), meta_param=param)

    @available_if(_estimator_has("predict"))
    def predict(self, X):
        """Predict blockwise: lazy for dask input, immediate for in-memory input.

        A dask array gives a dask array; a dask DataFrame gives a dask Series (or
        DataFrame, for 2-D output) with X's index and divisions.
        """
        return self._blockwise("predict", X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities, blockwise."""
        return self._blockwise("predict_proba", X)

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X):
        """Log class probabilities, blockwise."""
        return self._blockwise("predict_log_proba", X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """Decision function, blockwise."""
        return self._blockwise("decision_function", X)

    @available_if(_estimator_has("transform"))
    def fit_transform(self, X, y=None, **fit_kwargs):
        """Fit, then transform ``X`` blockwise."""
        return self.fit(X, y, **fit_kwargs).transform(X)

    @available_if(_estimator_has("transform"))
    def transform(self, X):
        """Transform blockwise (e.g. distances to k-means centres)."""
        return self._blockwise("transform", X)

    @available_if(_can_score)
    def score(self, X, y=None, compute: bool = True):
        """The score of ``scoring`` (default: the estimator's own) over all blocks.

        Without ``scoring``: accuracy for classifiers and R² for regressors, exactly;
        minus the total inertia for k-means (see :class:`ooc.BlockScorer`).

        Parameters
        ----------
        X, y : dask collections partitioned alike, or in-memory arrays
        compute : bool, default True
            False returns a ``dask.delayed`` value instead, whose ``compute()`` gives the
            score (so several scores can be computed together with ``dask.compute``).

        Returns
        -------
        float, or Delayed with ``compute=False``
        """
        check_is_fitted(self)
        scorer = BlockScorer(self.estimator_, self.scoring)
        if is_dask_collection(X):
            score = scorer.delayed_score(X, y)
            return score.compute() if compute else score
        score = scorer.score(X, y)
        return score if compute else dask.delayed(score)


# Learned attributes that partial_fit continues from.
_HISTORY = (
    "estimator_",
    "n_epochs_",
    "n_samples_seen_",
    "training_scores_",
    "validation_scores_",
    "best_validation_score_",
)


@dataclass(frozen=True)
class _Run:
    """What stays fixed during one fit."""

    xb: RowBlocks
    yb: RowBlocks | None
    fit_kwargs: dict
    n_epochs: int
    checkpoint: Checkpoint | None

    def loader(self, i: int):
        """Computes block ``i`` of X (and of y) when called."""
        return partial(compute_blocks, self.xb.blocks[i], self.yb.blocks[i] if self.yb else None)


@dataclass(frozen=True)
class Step:
    """What :func:`fit_block` needs besides the block: one epoch of one replica."""

    fit_kwargs: dict
    lazy: bool
    scoring: object
    epoch: int
    n_positions: int
    n_epochs: int
    replica: int = 0


def fit_block(
    estimator, loaded, waited: float, step: Step, *, position: int, seen: int, score: bool
) -> tuple[BlockReport, dict | None]:
    """One ``partial_fit`` on a loaded (X, y) block.

    Returns the block's report (``n_samples_seen`` is ``seen`` plus its rows) and, with
    ``score``, its progressive-validation statistics, taken *before* the model learns
    from it.
    """
    xi, yi = loaded.value
    rows = n_rows(xi)
    fit_started, fit_seconds, part = time.time(), 0.0, None
    # Empty blocks of a partitioned collection are normal; empty in-memory data is not,
    # and partial_fit says so.
    block_score = None
    if rows > 0 or not step.lazy:
        if score:
            scorer = BlockScorer(estimator, step.scoring)
            part = scorer.parts(xi, yi, block=loaded.index)
            block_score = scorer.value(part) if part is not None else None
        fit_started, fit_seconds = _partial_fit(estimator, xi, yi, step, loaded.index)
    report = BlockReport(
        epoch=step.epoch,
        position=position,
        n_positions=step.n_positions,
        n_epochs=step.n_epochs,
        block=loaded.index,
        rows=rows,
        load_seconds=loaded.load_seconds,
        wait_seconds=waited,
        fit_seconds=fit_seconds,
        n_samples_seen=seen + rows,
        load_started=loaded.started,
        fit_started=fit_started,
        replica=step.replica,
        score=block_score,
    )
    return report, part


def _partial_fit(estimator, X, y, step: Step, block: int) -> tuple[float, float]:
    """``estimator.partial_fit`` on one block; the wall clock at its start and its seconds."""
    rows = n_rows(X)
    if y is not None and n_rows(y) != rows:
        raise ValueError(
            f"Block {block}: X has {rows} rows but y has {n_rows(y)}. "
            "X and y must be partitioned alike."
        )
    started, start = time.time(), time.perf_counter()
    try:
        if y is None:
            estimator.partial_fit(X, **step.fit_kwargs)
        else:
            estimator.partial_fit(X, y, **step.fit_kwargs)
    except ValueError as err:
        raise ValueError(
            f"{type(estimator).__name__}.partial_fit failed on block {block} "
            f"(epoch {step.epoch + 1}, {rows} rows): {err}"
        ) from err
    return started, time.perf_counter() - start


# -- checkpoints ---------------------------------------------------------------------------

# Parameters that change neither the model nor its scores: a fit may resume with others.
_FREE_ON_RESUME = frozenset(
    {"prefetch", "block_callback", "checkpoint_path", "checkpoint_every", *_META_PARAM.values()}
)
