"""An estimator's default ``score`` computed exactly from per-block sums.

Averaging per-block scores is wrong for R² (it needs the global total sum of squares)
and for unequal blocks, so each block is reduced to sufficient statistics instead and
the score is computed once from their totals.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import is_classifier, is_regressor
from sklearn.utils import get_tags

__all__ = ["BlockScorer"]


class BlockScorer:
    """Accumulate the default score of ``estimator`` over row blocks.

    Classifiers: accuracy. Regressors: R² (averaged uniformly over outputs).
    Clusterers: the sum of block scores (for k-means, minus the total inertia).
    Anything else with ``score``: the row-weighted mean of block scores.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> X = np.arange(10.0).reshape(-1, 1); y = 2 * X.ravel() + 1
    >>> est = LinearRegression().fit(X, y)
    >>> scorer = BlockScorer(est)
    >>> total = scorer.parts(X[:4], y[:4]) + scorer.parts(X[4:], y[4:])
    >>> round(scorer.value(total), 6)
    1.0
    """

    def __init__(self, estimator):
        self.estimator = estimator
        if is_classifier(estimator):
            self.kind = "classifier"
        elif is_regressor(estimator):
            self.kind = "regressor"
        elif get_tags(estimator).estimator_type == "clusterer":
            self.kind = "clusterer"
        else:
            self.kind = "other"

    def parts(self, X, y=None) -> np.ndarray:
        """Sufficient statistics of one block; add them up across blocks."""
        n = len(X)
        if self.kind == "classifier":
            if n == 0:
                return np.zeros(2)
            correct = np.sum(self.estimator.predict(X) == np.asarray(y).ravel())
            return np.array([correct, n], dtype=float)
        if self.kind == "regressor":
            y = np.asarray(y, dtype=float).reshape(n, -1)
            if n == 0:
                return np.zeros((4, y.shape[1]))
            pred = np.asarray(self.estimator.predict(X), dtype=float).reshape(n, -1)
            return np.stack(
                [
                    ((y - pred) ** 2).sum(axis=0),
                    y.sum(axis=0),
                    (y**2).sum(axis=0),
                    np.full(y.shape[1], n, dtype=float),
                ]
            )
        if n == 0:
            return np.zeros(2)
        score = self.estimator.score(X) if y is None else self.estimator.score(X, y)
        weight = 1.0 if self.kind == "clusterer" else n
        return np.array([score * weight, n], dtype=float)

    def value(self, total: np.ndarray) -> float:
        """The score from the summed parts of all blocks."""
        if self.kind == "regressor":
            sse, sum_y, sum_y2, n = total
            ss_tot = sum_y2 - sum_y**2 / n
            with np.errstate(divide="ignore", invalid="ignore"):
                r2 = np.where(ss_tot > 0, 1 - sse / ss_tot, np.where(sse == 0, 1.0, 0.0))
            return float(np.mean(r2))
        if self.kind == "clusterer":
            return float(total[0])
        return float(total[0] / total[1]) if total[1] else float("nan")
