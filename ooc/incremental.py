"""``Incremental``: stream the blocks of a dask collection into ``partial_fit``.

While block *i* is in ``partial_fit``, the next ``prefetch`` blocks are already being
read and transformed in background threads, so a fit runs at the speed of
``partial_fit`` and memory is bounded by block size × (prefetch + 1).
"""

from __future__ import annotations

import copy
import inspect
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial, reduce
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.utils import check_random_state, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .blocks import (
    aligned_row_blocks,
    compute_blocks,
    is_dask_frame,
    n_rows,
    prefetch,
    with_all_columns,
)
from .metrics import BlockScorer

__all__ = ["BlockReport", "Incremental"]


@dataclass(frozen=True)
class BlockReport:
    """What happened to one block; passed to ``block_callback`` after each block.

    Attributes
    ----------
    epoch : int
        0-based epoch.
    position : int
        Position of the block in this epoch's order (0-based).
    n_positions : int
        Number of training blocks per epoch.
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
    """

    epoch: int
    position: int
    n_positions: int
    block: int
    rows: int
    load_seconds: float
    wait_seconds: float
    fit_seconds: float
    n_samples_seen: int
    load_started: float = 0.0
    fit_started: float = 0.0
    replica: int = 0


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


def _apply(block, estimator, method: str, tail: tuple, dtype):
    """Run ``estimator.method`` on one block; an empty block gives an empty result."""
    if len(block) == 0:
        return np.empty((0, *tail), dtype=dtype)
    return getattr(estimator, method)(block)


def _apply_frame(part: pd.DataFrame, estimator, method: str, tail: tuple, dtype):
    out = _apply(part, estimator, method, tail, dtype)
    if out.ndim == 1:
        return pd.Series(out, index=part.index, dtype=dtype)
    return pd.DataFrame(out, index=part.index)


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
        the same model as an uninterrupted fit. Delete the file to start over.
    checkpoint_every : int, optional
        Also checkpoint every this many blocks.

    Attributes
    ----------
    estimator_ : estimator
        The fitted clone. Its learned attributes (``coef_``, ``classes_``,
        ``cluster_centers_``, ...) are also readable on the wrapper.
    n_epochs_ : int
        Epochs actually run.
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
    """

    def __init__(
        self,
        estimator,
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
    ):
        self.estimator = estimator
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

        Returns
        -------
        self
        """
        self._check_params()
        estimator = self.__dict__.get("estimator_")
        if estimator is None:
            estimator = clone(self.estimator)
        seen = self.__dict__.get("n_samples_seen_", 0)
        epochs = self.__dict__.get("n_epochs_", 0)
        self._stream(X, y, fit_kwargs, estimator, epochs=1, one_pass=True)
        self.n_samples_seen_ += seen
        self.n_epochs_ += epochs
        return self

    def _check_params(self) -> None:
        if not hasattr(self.estimator, "partial_fit"):
            raise TypeError(
                f"Incremental needs an estimator with partial_fit; "
                f"{type(self.estimator).__name__} has none."
            )
        if not (isinstance(self.n_epochs, int | np.integer) and self.n_epochs >= 1):
            raise ValueError(f"n_epochs must be an int >= 1, got {self.n_epochs!r}.")
        if self.early_stopping and not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}."
            )

    def _with_classes(self, estimator, y, fit_kwargs: dict) -> dict:
        """Add ``classes`` when a classifier needs it and it can be found for free."""
        needs = (
            is_classifier(estimator)
            and "classes" in inspect.signature(estimator.partial_fit).parameters
        )
        if not needs or "classes" in fit_kwargs or y is None or hasattr(estimator, "classes_"):
            return fit_kwargs
        if isinstance(y, da.Array) or is_dask_frame(y):
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
        n_val = min(n_blocks - 1, max(1, round(self.validation_fraction * n_blocks)))
        held = set(np.random.default_rng([seed, 1]).choice(n_blocks, n_val, replace=False))
        return [i for i in range(n_blocks) if i not in held], sorted(int(i) for i in held)

    def _order(self, train: list[int], seed: int, epoch: int) -> list[int]:
        if not self.shuffle_blocks:
            return train
        return [int(i) for i in np.random.default_rng([seed, 2, epoch]).permutation(train)]

    def _stream(self, X, y, fit_kwargs, estimator, *, epochs: int, one_pass: bool = False):
        if y is None and get_tags(estimator).target_tags.required:
            raise ValueError(
                f"This {type(estimator).__name__} estimator requires y to be passed, "
                "but the target y is None."
            )
        xb, yb = aligned_row_blocks(X, y)
        fit_kwargs = self._with_classes(estimator, y, fit_kwargs)
        checkpoint = _Checkpoint.of(self, xb, one_pass)
        state = _FitState(seed=self._seed())
        resumed = checkpoint.load() if checkpoint else None
        if resumed:
            estimator, state = resumed
        self.resumed_from_ = (state.epoch, state.position) if resumed else None
        train, held_out = (
            ([*range(len(xb))], []) if one_pass else self._split_blocks(len(xb), state.seed)
        )

        while state.epoch < epochs and not state.stopped:
            order = self._order(train, state.seed, state.epoch)
            estimator = self._epoch(estimator, order, state, fit_kwargs, (xb, yb), checkpoint)
            state.epoch += 1
            state.position = 0
            if self.progressive_score:
                state.training_scores.append(BlockScorer(estimator).value(state.training_total))
                state.training_total = None
            if held_out:
                self._validate_epoch(estimator, state, [_loader(xb, yb, i) for i in held_out])
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

    def _epoch(self, estimator, order, state: _FitState, fit_kwargs, blocks, checkpoint):
        """Stream the rest of this epoch's ``order`` into ``estimator``; return it."""
        xb, yb = blocks
        todo = ((i, _loader(xb, yb, i)) for i in order[state.position :])
        for loaded, waited in prefetch(todo, depth=self.prefetch):
            fit_started = time.time()
            rows, fit_seconds, part = fit_block(
                estimator,
                loaded,
                fit_kwargs,
                epoch=state.epoch,
                lazy=xb.lazy,
                score=self.progressive_score and state.n_samples_seen > 0,
            )
            if part is not None:
                state.training_total = BlockScorer.merge(state.training_total, part)
            state.position += 1
            state.n_samples_seen += rows
            self._report(
                BlockReport(
                    state.epoch, state.position - 1, len(order), loaded.index, rows,
                    loaded.load_seconds, waited, fit_seconds, state.n_samples_seen,
                    loaded.started, fit_started,
                )
            )  # fmt: skip
            if checkpoint and checkpoint.due(state.position):
                checkpoint.save(estimator, state)
        return estimator

    def _fit_signature(self) -> dict:
        """What a checkpoint must match to be resumed by this fit."""
        return {
            "estimator": repr(self.estimator),
            "n_epochs": self.n_epochs,
            "shuffle_blocks": self.shuffle_blocks,
            "early_stopping": self.early_stopping,
        }

    def _report(self, report: BlockReport) -> None:
        if self.block_callback is not None:
            self.block_callback(report)

    def _validate_epoch(self, estimator, state: _FitState, loaders) -> None:
        scorer = BlockScorer(estimator)
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
        est = self.estimator_
        if not (isinstance(X, da.Array) or is_dask_frame(X)):
            return getattr(est, method)(X)
        if isinstance(X, da.Array):
            X = with_all_columns(X)
            probe_input = np.zeros((1, X.shape[1]), dtype=X.dtype)
        else:
            probe_input = pd.DataFrame(np.zeros((1, len(X.columns))), columns=X.columns).astype(
                X.dtypes.to_dict()
            )
        probe = np.asarray(getattr(est, method)(probe_input))
        tail, dtype = probe.shape[1:], probe.dtype
        func = partial(_apply, estimator=est, method=method, tail=tail, dtype=dtype)
        if is_dask_frame(X):
            meta = _apply_frame(probe_input.iloc[:0], est, method, tail, dtype)
            return X.map_partitions(
                _apply_frame, est, method, tail, dtype, meta=meta, align_dataframes=False
            )
        if tail:
            return X.map_blocks(func, chunks=(X.chunks[0], tail), dtype=dtype)
        return X.map_blocks(func, drop_axis=1, dtype=dtype, meta=np.empty((0,), dtype=dtype))

    @available_if(_estimator_has("predict"))
    def predict(self, X):
        """Predict blockwise: lazy for dask input, immediate for in-memory input."""
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

    @available_if(_estimator_has("score"))
    def score(self, X, y=None):
        """The wrapped estimator's default score over all blocks, computed exactly.

        Accuracy for classifiers, R² for regressors, minus the total inertia for
        k-means; see :class:`ooc.metrics.BlockScorer`.
        """
        check_is_fitted(self)
        if not (isinstance(X, da.Array) or is_dask_frame(X)):
            return self.estimator_.score(X) if y is None else self.estimator_.score(X, y)
        import dask

        xb, yb = aligned_row_blocks(X, y)
        scorer = BlockScorer(self.estimator_)
        parts = [
            dask.delayed(scorer.parts)(xb.blocks[i], yb.blocks[i] if yb else None, i)
            for i in range(len(xb))
        ]
        return scorer.value(reduce(scorer.merge, dask.compute(*parts), None))


def _loader(xb, yb, i: int):
    """Computes block ``i`` of X (and of y) when called."""
    return partial(compute_blocks, xb.blocks[i], yb.blocks[i] if yb else None)


def fit_block(
    estimator, loaded, fit_kwargs: dict, *, epoch: int, lazy: bool, score: bool
) -> tuple[int, float, dict | None]:
    """One ``partial_fit`` on a loaded (X, y) block.

    Returns the rows fitted, the seconds ``partial_fit`` took and, with ``score``, the
    block's progressive-validation statistics taken *before* the model learns from it.
    """
    xi, yi = loaded.value
    rows = n_rows(xi)
    # Empty blocks of a partitioned collection are normal; empty in-memory data is not,
    # and partial_fit says so.
    if rows == 0 and lazy:
        return 0, 0.0, None
    if yi is not None and n_rows(yi) != rows:
        raise ValueError(
            f"Block {loaded.index}: X has {rows} rows but y has {len(yi)}. "
            "X and y must be partitioned alike."
        )
    part = BlockScorer(estimator).parts(xi, yi, block=loaded.index) if score else None
    start = time.perf_counter()
    try:
        if yi is None:
            estimator.partial_fit(xi, **fit_kwargs)
        else:
            estimator.partial_fit(xi, yi, **fit_kwargs)
    except ValueError as err:
        raise ValueError(
            f"{type(estimator).__name__}.partial_fit failed on block {loaded.index} "
            f"(epoch {epoch + 1}, {rows} rows): {err}"
        ) from err
    return rows, time.perf_counter() - start, part


class _Checkpoint:
    """An atomically written pickle of (estimator, fit state), tied to the data's layout."""

    def __init__(self, path: Path, signature: dict, every: int | None):
        self.path, self.signature, self.every = path, signature, every

    @classmethod
    def of(cls, inc: Incremental, blocks, one_pass: bool):
        if inc.checkpoint_path is None or one_pass:
            return None
        signature = {"n_blocks": len(blocks), "rows": blocks.rows, **inc._fit_signature()}
        return cls(Path(inc.checkpoint_path), signature, inc.checkpoint_every)

    def due(self, position: int) -> bool:
        return bool(self.every) and position % self.every == 0

    def load(self):
        if not self.path.exists():
            return None
        with self.path.open("rb") as fh:
            saved = pickle.load(fh)
        if saved["signature"] != self.signature:
            raise ValueError(
                f"Checkpoint {self.path} was written by a different fit (estimator, data "
                f"layout or epochs differ: {saved['signature']} vs {self.signature}). "
                "Delete it to start over, or point checkpoint_path elsewhere."
            )
        return saved["estimator"], saved["state"]

    def save(self, estimator, state: _FitState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            pickle.dump(
                {"signature": self.signature, "estimator": estimator, "state": state},
                fh,
                protocol=pickle.HIGHEST_PROTOCOL,
            )
        os.replace(tmp, self.path)
