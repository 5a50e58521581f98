"""Estimators by name, for command lines and flow parameters.

Each entry gives the estimator with good streaming defaults, the kind of target it
learns, and the scaler that suits it (multinomial naive Bayes needs non-negative input).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["MODELS", "ModelEntry", "make_estimator", "make_scaler"]


@dataclass(frozen=True)
class ModelEntry:
    """A named estimator: how to build it, what it learns, and how to scale its input.

    ``factory`` is an import path (``"sklearn.linear_model:SGDClassifier"``), imported when
    the model is built, so listing the models (a command line's choices) is instant.
    """

    factory: str
    kind: str  # "classification", "regression" or "clustering"
    scaler: str = "standard"
    defaults: dict | None = None

    def build(self, **params):
        module, name = self.factory.split(":")
        cls = getattr(importlib.import_module(module), name)
        return cls(**{**(self.defaults or {}), **params})


MODELS: dict[str, ModelEntry] = {
    "sgd-classifier": ModelEntry("sklearn.linear_model:SGDClassifier", "classification"),
    "sgd-regressor": ModelEntry("sklearn.linear_model:SGDRegressor", "regression"),
    # sklearn 1.8 deprecates PassiveAggressive*; these are their SGD equivalents.
    "passive-aggressive": ModelEntry(
        "sklearn.linear_model:SGDClassifier",
        "classification",
        defaults={"loss": "hinge", "penalty": None, "learning_rate": "pa1", "eta0": 1.0},
    ),
    "passive-aggressive-regressor": ModelEntry(
        "sklearn.linear_model:SGDRegressor",
        "regression",
        defaults={
            "loss": "epsilon_insensitive",
            "penalty": None,
            "learning_rate": "pa1",
            "eta0": 1.0,
        },
    ),
    "perceptron": ModelEntry("sklearn.linear_model:Perceptron", "classification"),
    "mlp-classifier": ModelEntry(
        "sklearn.neural_network:MLPClassifier",
        "classification",
        defaults={"hidden_layer_sizes": (32,)},
    ),
    "mlp-regressor": ModelEntry(
        "sklearn.neural_network:MLPRegressor", "regression", defaults={"hidden_layer_sizes": (32,)}
    ),
    "minibatch-kmeans": ModelEntry(
        "sklearn.cluster:MiniBatchKMeans", "clustering", defaults={"n_clusters": 8, "n_init": 3}
    ),
    "gaussian-nb": ModelEntry("sklearn.naive_bayes:GaussianNB", "classification"),
    "multinomial-nb": ModelEntry(
        "sklearn.naive_bayes:MultinomialNB", "classification", scaler="minmax"
    ),
    "bernoulli-nb": ModelEntry(
        "sklearn.naive_bayes:BernoulliNB", "classification", defaults={"binarize": 0.0}
    ),
}


def _entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.") from None


def make_estimator(name: str, **params):
    """Build the estimator called ``name`` with ``params`` over its defaults.

    Raises
    ------
    ValueError
        For an unknown name, or a parameter the estimator does not have.

    Examples
    --------
    >>> make_estimator("sgd-classifier", alpha=1e-5)
    SGDClassifier(alpha=1e-05)
    """
    entry = _entry(name)
    try:
        return entry.build(**params)
    except TypeError as err:
        raise ValueError(f"Model {name!r}: {err}") from err


def make_scaler(name: str):
    """The scaler suited to model ``name`` (unfitted)."""
    from .preprocessing import MinMaxScaler, StandardScaler

    return MinMaxScaler() if _entry(name).scaler == "minmax" else StandardScaler()


def model_kind(name: str) -> str:
    """``"classification"``, ``"regression"`` or ``"clustering"``."""
    return _entry(name).kind
