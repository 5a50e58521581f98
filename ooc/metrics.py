"""Scores and holdout metrics computed exactly from per-block sufficient statistics.

Averaging per-block scores is wrong for R² (it needs the global total sum of squares)
and for unequal blocks, so each block is reduced to sufficient statistics instead and
the metrics are computed once from their totals. :func:`evaluate` builds one task per
block, merges the statistics in a tree and runs everything with one ``dask.compute``;
:class:`BlockScorer` does the same for one score (``Incremental.score``, validation and
progressive scores), for the estimator's own score or a scikit-learn scorer.
"""

from __future__ import annotations

import inspect
import numbers
from functools import partial, reduce

import dask
import numpy as np
from scipy.special import expit
from sklearn.base import is_classifier, is_regressor
from sklearn.metrics import get_scorer
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted

from .blocks import aligned_row_blocks, n_rows
from .io import parquet_source, read_features, read_target

__all__ = ["EXACT_SCORERS", "BlockScorer", "evaluate"]


def _model_kind(estimator) -> str:
    """The kind of estimator from its tags: classifier, regressor, clusterer or other."""
    if is_classifier(estimator):
        return "classifier"
    if is_regressor(estimator):
        return "regressor"
    if get_tags(estimator).estimator_type == "clusterer":
        return "clusterer"
    return "other"


class BlockScorer:
    """Accumulate a score of ``estimator`` over row blocks, exactly where the maths allows.

    Each block is reduced to statistics (:meth:`parts`), which are merged (:meth:`merge`)
    and turned into the score once (:meth:`value`); :meth:`delayed_score` does all three
    lazily over the blocks of a dask collection.

    - ``scoring=None``: the estimator's own ``score``. Classifiers: accuracy; regressors:
      R² (averaged uniformly over outputs), from the same pairwise-merged statistics as
      :func:`evaluate`; clusterers: the sum of block scores (for k-means, minus the total
      inertia); anything else: the row-weighted mean of block scores.
    - A name of :data:`EXACT_SCORERS` for the kind of estimator it is meant for: exact from
      per-block statistics. The ROC AUCs come from score histograms of 2**14 bins, as in
      :func:`evaluate`, so they agree with the exact AUC up to the pairs sharing a bin.
    - Any other name of :func:`sklearn.metrics.get_scorer_names`, or a callable scorer
      ``scorer(estimator, X, y) -> float``: scored on each block, and the block scores
      averaged weighted by their rows. That is exact for a mean over rows (accuracy,
      squared error) and only an approximation for other scores (F1, balanced accuracy,
      ...).

    Parameters
    ----------
    estimator : estimator
        Fitted by the time blocks are scored; its scikit-learn tags give its kind.
    scoring : str, callable or None, default None

    Raises
    ------
    ValueError
        A name scikit-learn does not know, a metric function ``(y_true, y_pred)`` where a
        scorer is expected, or a name that needs a method the estimator lacks.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> X = np.arange(10.0).reshape(-1, 1); y = 2 * X.ravel() + 1
    >>> est = LinearRegression().fit(X, y)
    >>> scorer = BlockScorer(est)
    >>> total = scorer.merge(scorer.parts(X[:4], y[:4]), scorer.parts(X[4:], y[4:]))
    >>> round(scorer.value(total), 6)
    1.0
    >>> round(BlockScorer(est, "neg_mean_squared_error").value(total), 6)
    -0.0
    """

    def __init__(self, estimator, scoring=None):
        self.estimator = estimator
        self.scoring = scoring
        self.kind = _model_kind(estimator)
        self._stats, self._finish = _rule(estimator, self.kind, scoring)

    def parts(self, X, y=None, block: int = 0) -> dict | None:
        """Sufficient statistics of one block (None for an empty block)."""
        if n_rows(X) == 0:
            return None
        return self._stats(self.estimator, X, y, block)

    @staticmethod
    def merge(a: dict | None, b: dict | None) -> dict | None:
        """Combine the parts of two blocks (or of two merged groups)."""
        return _merge(a, b)

    def value(self, total: dict | None) -> float:
        """The score from the merged parts of all blocks."""
        if total is None:
            return float("nan")
        return float(self._finish(total))

    def score(self, X, y=None) -> float:
        """The score of in-memory ``X``, ``y`` (one block), as scikit-learn computes it."""
        if self.scoring is None:
            return _own_score(self.estimator, X, y)
        return float(_as_scorer(self.scoring)(self.estimator, X, y))

    def delayed_score(self, X, y=None):
        """The score over every row block of a dask ``X`` (and ``y``), as one ``Delayed``."""
        xb, yb = aligned_row_blocks(X, y)
        scorer = dask.delayed(self, traverse=False)  # one copy of the model in the graph
        task = dask.delayed(_block_parts, pure=True)
        parts = [
            task(scorer, xb.blocks[i], yb.blocks[i] if yb else None, i) for i in range(len(xb))
        ]
        return dask.delayed(_value, pure=True)(scorer, _tree_merge(parts))


def _block_parts(scorer: BlockScorer, X, y, block: int):
    return scorer.parts(X, y, block)


def _value(scorer: BlockScorer, total):
    return scorer.value(total)


# -- evaluate ---------------------------------------------------------------------------------


def evaluate(model, X, y=None, *, auc_bins: int = 2**14) -> dict[str, float]:
    """Holdout metrics of a fitted model, computed blockwise with one ``dask.compute``.

    Each row block of ``X`` (and ``y``) becomes one task that applies ``model`` to the
    in-memory block and reduces the result to small sufficient statistics; these are
    merged in a tree and computed together, so peak memory is a function of the block
    size, never of the number of rows. Empty blocks are skipped.

    Metrics by kind of model (from its scikit-learn tags):

    - classifier: ``"accuracy"``; ``"log_loss"`` if it has ``predict_proba``;
      ``"roc_auc"`` from ``predict_proba`` (binary, or the macro one-vs-rest average for
      multiclass) or, for a binary model without it, from ``decision_function``
      through a logistic map. The AUC comes from per-class histograms of the scores
      with ``auc_bins`` bins over [0, 1] (ties within a bin count one half), so it
      agrees with the exact AUC up to the pairs that share a bin. It is NaN when a
      class has no positive or no negative row in ``y``.
    - regressor: ``"r2"`` (uniform average over outputs, 1.0 or 0.0 for a constant
      target as in :func:`sklearn.metrics.r2_score`), ``"rmse"``, ``"mae"``.
    - clusterer: ``"inertia"`` (``-model.score`` summed over the blocks: for k-means
      the sum of squared distances to the closest centre), if the model has ``score``.

    and always ``"n_samples"``.

    Parameters
    ----------
    model : fitted estimator or Pipeline
        Possibly ending in :class:`ooc.Incremental`; it is applied to numpy blocks.
    X : dask array, dask DataFrame or array-like of shape (n_samples, n_features)
    y : dask array/Series or array-like of shape (n_samples,) or (n_samples, n_outputs)
        Partitioned like ``X``. Required for classifiers and regressors; ignored for
        clusterers. Class labels must be among ``model.classes_``.
    auc_bins : int, default 2**14
        Histogram bins for the ROC AUC.

    Returns
    -------
    dict of str to float

    Raises
    ------
    ValueError
        Missing ``y``, ``y`` with a label the model does not know (naming it), no rows
        at all, or ``auc_bins`` < 2.
    TypeError
        A model that is neither a classifier, a regressor nor a clusterer.

    Examples
    --------
    >>> import dask.array as da
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = da.random.default_rng(0).normal(size=(1_000, 3), chunks=(250, 3))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> model = LogisticRegression().fit(X[:500].compute(), y[:500].compute())
    >>> metrics = evaluate(model, X[500:], y[500:])
    >>> sorted(metrics)
    ['accuracy', 'log_loss', 'n_samples', 'roc_auc']
    >>> metrics["n_samples"]
    500.0
    """
    kind = _model_kind(model)
    name = type(model).__name__
    if kind == "other":
        raise TypeError(
            f"evaluate supports classifiers, regressors and clusterers (by their scikit-learn "
            f"tags); {name} is none of them. Score it with its own score method instead."
        )
    ok = isinstance(auc_bins, numbers.Integral) and not isinstance(auc_bins, bool)
    if not (ok and auc_bins >= 2):
        raise ValueError(f"auc_bins must be an int >= 2, got {auc_bins!r}.")
    check_is_fitted(model)
    if kind == "clusterer":
        y = None
    elif y is None:
        raise ValueError(
            f"evaluate needs the true target y to score the {kind} {name}, but y is None. "
            "Pass y partitioned like X (e.g. from ooc.read_parquet)."
        )
    if kind == "classifier":
        block_stats = partial(
            _classifier_stats, classes=np.asarray(model.classes_), auc_bins=int(auc_bins)
        )
    else:
        block_stats = _regressor_stats if kind == "regressor" else _clusterer_stats

    source = parquet_source(X)
    if source is not None and (y is None or parquet_source(y, "target") == source):
        # Straight from the files, a run of blocks per task (slices of one large row
        # group are read in order, so it is decoded once).
        model_node = dask.delayed(model, traverse=False)
        task = dask.delayed(_run_stats, pure=True)
        parts = [task(block_stats, model_node, source, run, y is not None) for run in source.runs()]
        (total,) = dask.compute(_tree_merge(parts))
        if total is None:
            raise ValueError(f"evaluate: X has no rows (shape {X.shape}).")
        return {"n_samples": float(total["n"]), **_FINISH[kind](total)}
    xb, yb = aligned_row_blocks(X, y)
    if xb.lazy:
        model_node = dask.delayed(model, traverse=False)  # one copy in the graph
        task = dask.delayed(block_stats, pure=True)
        parts = [
            task(model_node, xb.blocks[i], yb.blocks[i] if yb else None, i)
            for i in range(len(xb))
            if xb.rows is None or xb.rows[i] > 0
        ]
        (total,) = dask.compute(_tree_merge(parts)) if parts else (None,)
    else:
        total = block_stats(model, xb.blocks[0], yb.blocks[0] if yb else None, 0)
    if total is None:
        raise ValueError(f"evaluate: X has no rows (shape {getattr(X, 'shape', None)}).")
    return {"n_samples": float(total["n"]), **_FINISH[kind](total)}


def _run_stats(block_stats, model, source, run, supervised: bool):
    total = None
    for index in run:
        y = read_target(source, index) if supervised else None
        total = _merge(total, block_stats(model, read_features(source, index), y, index))
    return total


def _tree_merge(parts: list, fan_in: int = 8):
    """Merge delayed statistics ``fan_in`` at a time, so the depth is log(n) / log(fan_in)."""
    merge = dask.delayed(_merge_all, pure=True)
    while len(parts) > 1:
        parts = [merge(*parts[i : i + fan_in]) for i in range(0, len(parts), fan_in)]
    return parts[0]


def _merge_all(*stats):
    return reduce(_merge, stats, None)


def _merge(a: dict | None, b: dict | None) -> dict | None:
    """Add statistics key by key; the target's mean and centred sum of squares are
    combined with Chan et al.'s pairwise formula, which stays accurate for large means."""
    if a is None or b is None:
        return b if a is None else a
    out = {k: a[k] + b[k] for k in a if k not in ("y_mean", "y_m2")}
    if "y_mean" in a:
        n = a["n"] + b["n"]
        delta = b["y_mean"] - a["y_mean"]
        out["y_mean"] = a["y_mean"] + delta * (b["n"] / n)
        out["y_m2"] = a["y_m2"] + b["y_m2"] + delta**2 * (a["n"] * b["n"] / n)
    return out


def _class_indices(y: np.ndarray, classes: np.ndarray, block: int) -> np.ndarray:
    """Position of each label of ``y`` in ``classes``; unknown labels raise ValueError."""
    order = np.argsort(classes, kind="stable")
    pos = np.minimum(np.searchsorted(classes[order], y), len(classes) - 1)
    known = classes[order][pos] == y
    if not known.all():
        unknown = np.unique(y[~known]).tolist()
        raise ValueError(
            f"evaluate: y (block {block}) has label(s) {unknown} that the model does not "
            f"know; its classes_ are {classes.tolist()}. Evaluate on data whose labels the "
            "model was fitted with, or refit it with every label (partial_fit(classes=...))."
        )
    return order[pos]


def _classifier_stats(model, X, y, block: int, *, classes: np.ndarray, auc_bins: int):
    n = n_rows(X)
    if n == 0:
        return None
    y = np.asarray(y)
    if y.size != n:
        raise ValueError(
            f"evaluate: block {block} of y has shape {y.shape} for {n} rows of X; a "
            "classifier's y must be 1-D with one label per row."
        )
    y = y.reshape(n)
    index = _class_indices(y, classes, block)
    stats = {"n": n, "correct": int(np.sum(np.asarray(model.predict(X)).reshape(n) == y))}
    scores = None
    binary = len(classes) == 2
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))
        if proba.dtype.kind != "f":
            proba = proba.astype(np.float64)
        eps = np.finfo(proba.dtype).eps  # sklearn's log_loss clips the same way
        p_true = np.clip(proba[np.arange(n), index], eps, 1 - eps)
        stats["log_loss_sum"] = float(-np.sum(np.log(p_true)))
        scores = proba[:, 1:] if binary else proba
    elif binary and hasattr(model, "decision_function"):
        # The logistic map is monotone, so the AUC is that of the raw decision values.
        scores = expit(np.asarray(model.decision_function(X), dtype=np.float64).reshape(n, 1))
    if scores is not None:
        # One-vs-rest: column k scores class k (binary: only the positive class).
        positive = index[:, None] == (np.arange(scores.shape[1]) + (1 if binary else 0))
        stats["auc_hist"] = _histograms(scores, positive, auc_bins)
    return stats


def _histograms(scores: np.ndarray, positive: np.ndarray, bins: int) -> np.ndarray:
    """Counts of shape (n_columns, 2, bins): negatives then positives of each score column."""
    m = scores.shape[1]
    b = np.minimum((np.clip(scores, 0.0, 1.0) * bins).astype(np.intp), bins - 1)
    flat = (np.arange(m) * 2 + positive) * bins + b
    return np.bincount(flat.ravel(), minlength=m * 2 * bins).reshape(m, 2, bins)


def _histogram_auc(hist: np.ndarray) -> float:
    """ROC AUC from score histograms of negatives and positives; a tie counts one half."""
    neg, pos = hist.astype(np.float64)
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg == 0 or n_pos == 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float(pos @ (below + neg / 2) / (n_pos * n_neg))


def _finish_classifier(total: dict) -> dict[str, float]:
    n = total["n"]
    out = {"accuracy": total["correct"] / n}
    if "log_loss_sum" in total:
        out["log_loss"] = total["log_loss_sum"] / n
    if "auc_hist" in total:
        out["roc_auc"] = float(np.mean([_histogram_auc(h) for h in total["auc_hist"]]))
    return out


def _regressor_stats(model, X, y, block: int):
    n = n_rows(X)
    if n == 0:
        return None
    y = np.asarray(y, dtype=np.float64).reshape(n, -1)
    pred = np.asarray(model.predict(X), dtype=np.float64).reshape(n, -1)
    if pred.shape != y.shape:
        raise ValueError(
            f"evaluate: block {block}: the model predicts {pred.shape[1]} output(s) but y "
            f"has {y.shape[1]}. Pass the target the model was fitted on."
        )
    err = y - pred
    mean = y.mean(axis=0)
    return {
        "n": n,
        "sse": (err**2).sum(axis=0),
        "sae": np.abs(err).sum(axis=0),
        "y_mean": mean,
        "y_m2": ((y - mean) ** 2).sum(axis=0),
    }


def _finish_regressor(total: dict) -> dict[str, float]:
    n, sse, ss_tot = total["n"], total["sse"], total["y_m2"]
    with np.errstate(divide="ignore", invalid="ignore"):
        # sklearn's convention for a constant target: 1 if predicted exactly, else 0.
        r2 = np.where(ss_tot > 0, 1 - sse / ss_tot, np.where(sse == 0, 1.0, 0.0))
    return {
        "r2": float(np.mean(r2)),
        "rmse": float(np.mean(np.sqrt(sse / n))),
        "mae": float(np.mean(total["sae"] / n)),
    }


def _clusterer_stats(model, X, y, block: int):
    n = n_rows(X)
    if n == 0:
        return None
    stats = {"n": n}
    if hasattr(model, "score"):
        stats["inertia"] = float(-model.score(X))
    return stats


def _finish_clusterer(total: dict) -> dict[str, float]:
    return {"inertia": float(total["inertia"])} if "inertia" in total else {}


_FINISH = {
    "classifier": _finish_classifier,
    "regressor": _finish_regressor,
    "clusterer": _finish_clusterer,
}


# -- scoring rules ----------------------------------------------------------------------------


def _rule(estimator, kind: str, scoring):
    """The (block statistics, score from their totals) that compute ``scoring``."""
    if scoring is None:
        return _OWN_SCORE[kind]
    if isinstance(scoring, str) and scoring in EXACT_SCORERS:
        for_kind, stats, finish, methods = EXACT_SCORERS[scoring]
        if kind == for_kind:
            if not any(hasattr(estimator, m) for m in methods):
                raise ValueError(
                    f"scoring={scoring!r} needs {' or '.join(methods)}, which "
                    f"{type(estimator).__name__} does not have (with these parameters). "
                    "Choose another scorer, e.g. scoring='accuracy'."
                )
            return stats, finish
    return partial(_weighted_stats, _as_scorer(scoring)), _mean_score


def _as_scorer(scoring):
    """A scikit-learn scorer for ``scoring``, or a ValueError saying how to make one."""
    if isinstance(scoring, str):
        return get_scorer(scoring)  # a ValueError listing the valid names otherwise
    if not callable(scoring):
        raise ValueError(
            f"scoring must be None, a scorer name such as 'accuracy' or 'r2', or a callable "
            f"scorer(estimator, X, y) -> float; got {scoring!r} of type "
            f"{type(scoring).__name__}. See sklearn.metrics.get_scorer_names()."
        )
    if _is_metric(scoring):
        name = getattr(scoring, "__name__", repr(scoring))
        raise ValueError(
            f"scoring={name} is a metric, called as {name}(y_true, y_pred), but scoring needs a "
            f"scorer, called as scorer(estimator, X, y). Wrap it: "
            f"scoring=sklearn.metrics.make_scorer({name}) (add greater_is_better=False for a "
            "loss, response_method='predict_proba' for a metric of probabilities), or pass a "
            "scorer name such as 'accuracy'."
        )
    return scoring


def _is_metric(func) -> bool:
    """Metrics take (y_true, y_pred, ...); scorers take (estimator, X, y)."""
    try:
        first = next(iter(inspect.signature(func).parameters), "")
    except (TypeError, ValueError):  # no signature to read: take it as a scorer
        return False
    return first.startswith(("y_", "labels_"))


def _correct_stats(model, X, y, block: int):
    correct = np.sum(np.asarray(model.predict(X)).ravel() == np.asarray(y).ravel())
    return {"n": n_rows(X), "correct": int(correct)}


def _probability_stats(model, X, y, block: int):
    classes = np.asarray(model.classes_)
    return _classifier_stats(model, X, y, block, classes=classes, auc_bins=2**14)


def _weighted_stats(scorer, model, X, y, block: int):
    """A block's score times its rows: the totals give the row-weighted mean."""
    n = n_rows(X)
    return {"n": n, "score_sum": float(scorer(model, X, y)) * n}


def _summed_stats(model, X, y, block: int):
    """Clusterer scores add up over blocks (k-means: minus the inertia)."""
    return {"n": n_rows(X), "score_sum": _own_score(model, X, y)}


def _own_score(model, X, y) -> float:
    return float(model.score(X) if y is None else model.score(X, y))


def _accuracy(total):
    return total["correct"] / total["n"]


def _neg_log_loss(total):
    return -_finish_classifier(total)["log_loss"]


def _roc_auc(total):
    hist = total.get("auc_hist")  # absent for more than two classes without predict_proba
    if hist is None or len(hist) != 1:
        raise ValueError(
            "scoring='roc_auc' is for binary classifiers, but the model has more than two "
            "classes. Use scoring='roc_auc_ovr' (the macro average of one-vs-rest AUCs)."
        )
    return _histogram_auc(hist[0])


def _roc_auc_ovr(total):
    if "auc_hist" not in total:
        raise ValueError(
            "scoring='roc_auc_ovr' on more than two classes needs predict_proba, which the "
            "model does not have. Use a probabilistic model or scoring='accuracy'."
        )
    return _finish_classifier(total)["roc_auc"]


def _r2(total):
    return _finish_regressor(total)["r2"]


def _neg_mse(total):
    return -float(np.mean(total["sse"] / total["n"]))


def _neg_rmse(total):
    return -_finish_regressor(total)["rmse"]


def _neg_mae(total):
    return -_finish_regressor(total)["mae"]


def _mean_score(total):
    return total["score_sum"] / total["n"]


def _summed_score(total):
    return total["score_sum"]


_SCORES = ("predict_proba", "decision_function")

# Scorer names computed exactly from merged block statistics: name -> (the kind of
# estimator they are for, block statistics, score from their totals, methods of which the
# estimator needs one). Same sign as scikit-learn's scorer of the name: greater is better.
EXACT_SCORERS = {
    "accuracy": ("classifier", _correct_stats, _accuracy, ("predict",)),
    "neg_log_loss": ("classifier", _probability_stats, _neg_log_loss, ("predict_proba",)),
    "roc_auc": ("classifier", _probability_stats, _roc_auc, _SCORES),
    "roc_auc_ovr": ("classifier", _probability_stats, _roc_auc_ovr, _SCORES),
    "r2": ("regressor", _regressor_stats, _r2, ("predict",)),
    "neg_mean_squared_error": ("regressor", _regressor_stats, _neg_mse, ("predict",)),
    "neg_root_mean_squared_error": ("regressor", _regressor_stats, _neg_rmse, ("predict",)),
    "neg_mean_absolute_error": ("regressor", _regressor_stats, _neg_mae, ("predict",)),
}

# scoring=None: the estimator's own score, by kind.
_OWN_SCORE = {
    "classifier": (_correct_stats, _accuracy),
    "regressor": (_regressor_stats, _r2),
    "clusterer": (_summed_stats, _summed_score),
    "other": (partial(_weighted_stats, _own_score), _mean_score),
}
