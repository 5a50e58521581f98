"""The block's columns straight into what the model needs, with no 2-D copy in between.

Reading a block as a 2-D array and then scaling it costs two passes over it (a feature-
major copy, then the transform into the C order ``partial_fit`` wants). Here the parquet
columns (zero-copy views of Arrow's buffers) are scaled into the C-ordered block in one
pass, tile by tile so each tile stays in cache (:func:`scaled_block`), with exactly the
scaler's arithmetic, so the result is bit for bit the scaler's ``transform``.

For a linear model after a scaler, prediction needs no block at all: the scaling folds
into the coefficients, and the decision is accumulated column by column
(:class:`LinearFold`). That changes the order of the floating-point operations, so the
scores differ from transform-then-predict in the last bits (relative error of order
``n_features × eps``); predicted labels differ only for rows whose decision is within that
of 0. ``ooc.predict_parquet(..., exact=True)`` keeps the exact path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

__all__ = ["LinearFold", "scaled_block"]

# Rows per tile: a tile of every column (20 float64 columns: 2.6 MB) stays in cache.
_TILE_ROWS = 16_384


def scaled_block(columns: list[np.ndarray], scaler, dtype) -> np.ndarray:
    """The C-ordered block ``scaler.transform(np.column_stack(columns))``, in one pass.

    ``scaler`` is a fitted :class:`ooc.StandardScaler` or :class:`ooc.MinMaxScaler`; the
    per-tile arithmetic is its own ``_forward``, so the values are identical.
    """
    n, k = (len(columns[0]) if columns else 0), len(columns)
    out = np.empty((n, k), dtype=dtype)
    tile = np.empty((k, min(n, _TILE_ROWS)), dtype=dtype)
    for lo in range(0, n, _TILE_ROWS):
        hi = min(n, lo + _TILE_ROWS)
        part = tile[:, : hi - lo]
        for j, column in enumerate(columns):
            part[j] = column[lo:hi]
        scaler._forward(part.T, out=out[lo:hi])
    return out


def _linear_parts(model):
    """``(scaler or None, linear estimator)`` if ``model`` is a supported chain, else None."""
    from sklearn.linear_model import Perceptron, SGDClassifier, SGDRegressor
    from sklearn.pipeline import Pipeline

    from .incremental import Incremental
    from .preprocessing import MinMaxScaler, StandardScaler

    steps = [s for _, s in model.steps] if isinstance(model, Pipeline) else [model]
    steps = [s for s in steps if s not in (None, "passthrough")]
    if not steps or len(steps) > 2:
        return None
    last = steps[-1]
    if isinstance(last, Incremental):
        last = last.__dict__.get("estimator_")
    if not isinstance(last, SGDClassifier | SGDRegressor | Perceptron):
        return None
    scaler = steps[0] if len(steps) == 2 else None
    if scaler is not None and not isinstance(scaler, StandardScaler | MinMaxScaler):
        return None
    if isinstance(scaler, MinMaxScaler) and scaler.clip:
        return None  # clipping is not affine
    return scaler, last


@dataclass(frozen=True)
class LinearFold:
    """A linear model with its scaler folded in: ``decision = X @ coef.T + intercept``
    on the raw features.

    Attributes
    ----------
    coef : ndarray of shape (n_outputs, n_features)
    intercept : ndarray of shape (n_outputs,)
    classes : ndarray or None
        A classifier's classes (None for a regressor).
    loss : str or None
        The classifier's loss (``predict_proba`` is folded for ``log_loss`` only).
    """

    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray | None
    loss: str | None

    @classmethod
    def of(cls, model) -> LinearFold | None:
        """The fold of a fitted model, or None when it is not a linear model after a
        StandardScaler or MinMaxScaler (or alone).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.linear_model import SGDRegressor
        >>> X, y = np.arange(20.0).reshape(10, 2), np.arange(10.0)
        >>> fold = LinearFold.of(SGDRegressor(random_state=0).fit(X, y))
        >>> fold.coef.shape
        (1, 2)
        """
        parts = _linear_parts(model)
        if parts is None or not hasattr(parts[1], "coef_"):
            return None
        scaler, linear = parts
        coef = np.atleast_2d(np.asarray(linear.coef_, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(linear.intercept_, dtype=np.float64))
        multiplier, offset = _affine(scaler, coef.shape[1])
        # w . (x * m + o) + b = (w * m) . x + (w . o + b)
        return cls(
            coef * multiplier,
            intercept + coef @ offset,
            getattr(linear, "classes_", None),
            getattr(linear, "loss", None),
        )

    def supports(self, method: str) -> bool:
        if method in ("predict", "decision_function"):
            return True
        return method == "predict_proba" and self.loss == "log_loss" and len(self.coef) == 1

    def decision(self, columns: list[np.ndarray]) -> np.ndarray:
        """The decision function over 1-D feature columns: ``(n,)``, or ``(n, k)``."""
        n, k = len(columns[0]), len(self.coef)
        out = np.empty((k, n))
        out[:] = self.intercept[:, None]
        tmp = np.empty(min(n, _TILE_ROWS))
        for lo in range(0, n, _TILE_ROWS):
            hi = min(n, lo + _TILE_ROWS)
            t = tmp[: hi - lo]
            for row, weights in zip(out, self.coef, strict=True):
                part = row[lo:hi]
                for weight, column in zip(weights, columns, strict=True):
                    np.multiply(column[lo:hi], weight, out=t)
                    part += t
        return out[0] if k == 1 else out.T

    def output(self, method: str, scores: np.ndarray) -> np.ndarray:
        """``method``'s output, as the model would give it, from :meth:`decision`'s."""
        if method == "decision_function":
            return scores
        if method == "predict_proba":
            positive = expit(scores)
            return np.column_stack([1 - positive, positive])
        if self.classes is None:
            return scores
        if scores.ndim == 1:
            return self.classes[(scores > 0).astype(np.intp)]
        return self.classes[np.argmax(scores, axis=1)]


def _affine(scaler, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """``(m, o)`` with ``scaler.transform(x) = x * m + o`` (identity without a scaler)."""
    from .preprocessing import MinMaxScaler

    if scaler is None:
        return np.ones(n_features), np.zeros(n_features)
    if isinstance(scaler, MinMaxScaler):
        return scaler.scale_.astype(np.float64), scaler.min_.astype(np.float64)
    scale = scaler.scale_ if scaler.with_std else np.ones(n_features)
    mean = scaler.mean_ if scaler.with_mean else np.zeros(n_features)
    return 1.0 / scale, -mean / scale
