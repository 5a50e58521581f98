"""Weighted averaging of estimator replicas that continued from one shared model.

Parallel fitting gives each replica its own share of the blocks; after a round, the
replicas' learned parameters are averaged, weighted by the rows each one saw in the
round, and every replica continues from the average. This module holds the per-family
rules: linear models, multi-layer perceptrons and mini-batch k-means.

Some of the state averaged is scikit-learn's private attributes (``_average_coef``, the
optimiser's moments, ``_counts``): :func:`check_state` fails loudly where a scikit-learn
release lacks one, rather than averaging a model with part of its state left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sklearn
from sklearn.cluster import MiniBatchKMeans
from sklearn.neural_network import MLPClassifier, MLPRegressor

__all__ = ["average_replicas", "check_averageable", "check_state", "family", "state_attributes"]

# The scikit-learn releases whose private state this module is tested on (as pyproject.toml).
TESTED_SKLEARN = ">=1.6,<1.10"

# The optimiser's moment estimates of an MLP, by solver (only these two have partial_fit).
_MOMENTS = {"adam": ("ms", "vs"), "sgd": ("velocities",)}


def family(estimator) -> str | None:
    """``"linear"``, ``"mlp"``, ``"kmeans"``, or None when replicas cannot be averaged."""
    if isinstance(estimator, MiniBatchKMeans):
        return "kmeans"
    if isinstance(estimator, MLPClassifier | MLPRegressor):
        return "mlp"
    # SGDClassifier/Regressor, Perceptron and PassiveAggressive*: linear models with
    # partial_fit all carry SparseCoefMixin's densify.
    if hasattr(estimator, "partial_fit") and hasattr(estimator, "densify"):
        return "linear"
    return None


def check_averageable(estimator) -> str:
    """The estimator's family; a ``TypeError`` saying what is supported otherwise."""
    kind = family(estimator)
    if kind is None:
        raise TypeError(
            f"Parallel fitting averages replicas of linear models (SGDClassifier, "
            f"SGDRegressor, Perceptron: coef_/intercept_), MLPClassifier/MLPRegressor "
            f"(coefs_/intercepts_) and MiniBatchKMeans (centres weighted by counts); "
            f"{type(estimator).__name__} is none of these. Fit it with ooc.Incremental."
        )
    return kind


def state_attributes(estimator) -> tuple[str, ...]:
    """The fitted attributes averaging reads and writes (``_optimizer.ms`` for an MLP's).

    Examples
    --------
    >>> from sklearn.linear_model import SGDRegressor
    >>> state_attributes(SGDRegressor(average=True))
    ('coef_', 'intercept_', 't_', '_standard_coef', '_standard_intercept', '_average_coef', \
'_average_intercept')
    """
    kind = check_averageable(estimator)
    if kind == "linear":
        # With ``average``, both the iterate and the running average.
        averaged = ("_standard_coef", "_standard_intercept", "_average_coef", "_average_intercept")
        return ("coef_", "intercept_", "t_", *(averaged if estimator.average else ()))
    if kind == "mlp":
        moments = _MOMENTS.get(estimator.solver, ())
        return ("coefs_", "intercepts_", "t_", "loss_", *(f"_optimizer.{m}" for m in moments))
    return ("cluster_centers_", "_counts", "n_steps_")


def check_state(estimator) -> None:
    """Raise a ``TypeError`` naming what a fitted replica lacks of :func:`state_attributes`.

    A scikit-learn release that renamed or dropped a private attribute would otherwise
    give a wrongly averaged model with no error.
    """
    for name in state_attributes(estimator):
        owner, attr = estimator, name
        if "." in name:
            parent, attr = name.split(".")
            owner = getattr(estimator, parent, None)
        if getattr(owner, attr, None) is None:
            kind = type(estimator).__name__
            raise TypeError(
                f"Parallel fitting averages {kind}.{name}, but this {kind} (scikit-learn "
                f"{sklearn.__version__}) has no such attribute: ooc averages replicas of "
                f"scikit-learn {TESTED_SKLEARN}. Pin scikit-learn to those releases "
                f"(pip install 'scikit-learn{TESTED_SKLEARN}'), or fit with ooc.Incremental, "
                "which needs no private attribute."
            )


def average_replicas(start, replicas: Sequence, rows: Sequence[int]):
    """Average ``replicas`` that each continued from ``start`` for one round.

    Parameters
    ----------
    start : estimator
        The model every replica began the round from (already fitted at least once).
    replicas : sequence of estimators
        The replicas after the round, in a fixed order (the result depends on it only
        through floating-point summation order).
    rows : sequence of int
        Rows each replica saw in the round: the weights.

    Returns
    -------
    estimator
        ``replicas[0]``, its parameters replaced in place by the weighted average and its
        counters (``t_``, ``n_steps_``) set to the start's plus every replica's progress.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import SGDRegressor
    >>> X, y = np.eye(2), np.array([1.0, -1.0])
    >>> start = SGDRegressor(random_state=0).partial_fit(X, y)
    >>> a = SGDRegressor(random_state=0).partial_fit(X, y)
    >>> b = SGDRegressor(random_state=0).partial_fit(X, y)
    >>> a.coef_[:], b.coef_[:] = [1.0, 0.0], [0.0, 3.0]
    >>> average_replicas(start, [a, b], rows=[3, 1]).coef_
    array([0.75, 0.75])
    """
    kept = [(r, n) for r, n in zip(replicas, rows, strict=True) if n > 0]
    if not kept:
        return replicas[0]
    replicas, rows = [r for r, _ in kept], [n for _, n in kept]
    if len(replicas) == 1:
        return replicas[0]
    for estimator in (start, *replicas):
        check_state(estimator)
    weights = np.asarray(rows, dtype=float) / float(sum(rows))
    merge = {"linear": _average_linear, "mlp": _average_mlp, "kmeans": _average_kmeans}
    return merge[check_averageable(start)](start, replicas, weights)


def _mean(arrays, weights: np.ndarray) -> np.ndarray:
    out = np.zeros_like(np.asarray(arrays[0], dtype=float))
    for array, weight in zip(arrays, weights, strict=True):
        out += weight * np.asarray(array, dtype=float)
    return out


def _progress(start, replicas, name: str):
    """The start's counter plus every replica's progress past it."""
    base = getattr(start, name)
    return base + sum(getattr(r, name) - base for r in replicas)


def _average_linear(start, replicas, weights):
    first = replicas[0]
    arrays = [a for a in state_attributes(first) if a != "t_"]
    # Every average is computed before any is written: some of these names may be one
    # array (``coef_`` is ``_average_coef`` once averaging has begun).
    means = {a: _mean([getattr(r, a) for r in replicas], weights) for a in arrays}
    for name, mean in means.items():
        np.copyto(getattr(first, name), mean, casting="same_kind")
    first.t_ = _progress(start, replicas, "t_")
    return first


def _average_mlp(start, replicas, weights):
    first = replicas[0]
    layers = {
        name: [_mean([getattr(r, name)[i] for r in replicas], weights) for i in range(n)]
        for name, n in (("coefs_", len(first.coefs_)), ("intercepts_", len(first.intercepts_)))
    }
    for name, means in layers.items():
        for target, mean in zip(getattr(first, name), means, strict=True):
            np.copyto(target, mean, casting="same_kind")
    # The optimiser's moment estimates belong to the parameters they were built on:
    # average them too, so momentum/Adam continue from the averaged model.
    optimizers = [r._optimizer for r in replicas]
    for moment in _MOMENTS.get(first.solver, ()):
        parts = [getattr(o, moment) for o in optimizers]
        merged = [_mean([p[i] for p in parts], weights) for i in range(len(parts[0]))]
        setattr(optimizers[0], moment, merged)
    first.t_ = _progress(start, replicas, "t_")
    first.loss_ = float(sum(w * r.loss_ for r, w in zip(replicas, weights, strict=True)))
    return first


def _average_kmeans(start, replicas, weights):
    """Merge running means exactly: the shared start's counts are counted once.

    Replica *r*'s centre *k* is the running mean of the start's ``counts[k]`` points and
    the rows it assigned there since, so those rows' sum is
    ``counts_r[k] * centre_r[k] - counts[k] * centre[k]``. Where a replica reassigned a
    centre (its count fell), the centres are averaged weighted by their counts instead.
    """
    first = replicas[0]
    c0, n0 = start.cluster_centers_, start._counts
    centres = np.stack([r.cluster_centers_ for r in replicas])  # (R, K, F)
    counts = np.stack([r._counts for r in replicas])  # (R, K)
    gained = counts - n0
    total = n0 + gained.sum(axis=0)
    sums = n0[:, None] * c0 + (counts[..., None] * centres - (n0[:, None] * c0)).sum(axis=0)
    exact = (gained >= 0).all(axis=0) & (total > 0)
    by_count = counts.sum(axis=0)
    weighted = (counts[..., None] * centres).sum(axis=0) / np.where(by_count, by_count, 1)[:, None]
    merged = np.where(exact[:, None], sums / np.where(total > 0, total, 1)[:, None], weighted)
    np.copyto(first.cluster_centers_, merged, casting="same_kind")
    np.copyto(first._counts, np.where(exact, total, counts.mean(axis=0)), casting="same_kind")
    first.n_steps_ = _progress(start, replicas, "n_steps_")
    return first
