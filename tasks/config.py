"""The typed settings of a run, and every default, in one place.

Flows take these models as parameters (the Prefect UI renders them as forms), tasks
receive them as they are, and the command line builds its options from their fields:
each default, description and bound is written here once.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ooc.catalog import MODELS, make_estimator, model_kind
from ooc.layout import DEFAULT_BLOCK_ROWS

ModelName = Literal[tuple(MODELS)]  # type: ignore[valid-type]
Task = Literal["classification", "regression", "blobs"]
Dtype = Literal["float64", "float32"]
Method = Literal["predict", "predict_proba", "decision_function", "transform"]

# The holdout metric a new model is compared on, per kind of model, and which way is better.
DEFAULT_METRICS = {
    "classification": ("roc_auc", "max"),
    "regression": ("r2", "max"),
    "clustering": ("inertia", "min"),
}


def registered_name(kind: str) -> str:
    """The registered model a run of this kind of model lands in: ``ooc-<kind>``."""
    return f"ooc-{kind}"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Config):
    """A synthetic dataset: the seed's shape by default (20 features, files of 500k rows)."""

    rows: int = Field(3_000_000, ge=1, description="Rows in all.")
    features: int = Field(20, ge=1, description="Feature columns x0 .. x{N-1}.")
    chunk_rows: int = Field(500_000, ge=1, description="Rows per parquet file.")
    task: Task = Field("classification", description="Kind of target y.")
    dtype: Dtype = Field("float64", description="Dtype of the features.")
    seed: int = Field(0, ge=0, description="Seed of the whole dataset.")

    def spec(self):
        from ooc.datasets import DatasetSpec

        return DatasetSpec(
            self.rows, self.features, self.chunk_rows, self.task, self.dtype, self.seed
        )

    def directory_name(self) -> str:
        """One directory per parameter set, so datasets of other parameters never mix."""
        return (
            f"{self.task}-{self.rows}x{self.features}-{self.chunk_rows}-{self.dtype}"
            f"-seed{self.seed}"
        )


class ModelConfig(_Config):
    """Which estimator to stream into, and its parameters."""

    name: ModelName = Field("sgd-classifier", description="Estimator, by name.")
    params: dict[str, Any] = Field(
        default_factory=dict, description='Estimator parameters, e.g. {"alpha": 1e-5}.'
    )

    @model_validator(mode="after")
    def _known_params(self) -> ModelConfig:
        """A misspelt parameter fails here, when the run is asked for, not after retries."""
        make_estimator(self.name, **self.params)  # ValueError naming the parameter
        return self

    @property
    def kind(self) -> str:
        """``"classification"``, ``"regression"`` or ``"clustering"``."""
        return model_kind(self.name)

    def estimator(self, random_state: int):
        """The estimator, seeded from the run's ``random_state`` unless its params set one."""
        estimator = make_estimator(self.name, **self.params)
        if estimator.get_params().get("random_state", 0) is None:
            estimator.set_params(random_state=random_state)
        return estimator


class PreprocessConfig(_Config):
    """How the features are prepared, when they are not all complete numbers.

    By default the column types decide: numeric columns are imputed (if any value is
    missing) and scaled; string, categorical and boolean columns are one-hot encoded, rare
    categories grouped. Data of complete numeric columns only is scaled as before.
    """

    categorical: list[str] = Field(
        default_factory=list, description="Numeric columns to one-hot encode as categories."
    )
    drop: list[str] = Field(default_factory=list, description="Columns left out of the features.")
    impute: Literal["mean", "most_frequent", "constant", "median"] = Field(
        "mean", description="How missing numeric values are filled."
    )
    min_frequency: float = Field(
        0.0005, ge=0, lt=1, description="Categories rarer than this share are grouped as one."
    )
    max_categories: int = Field(
        200, ge=2, description="Most one-hot columns per categorical column (rarer ones grouped)."
    )

    @model_validator(mode="after")
    def _no_median(self) -> PreprocessConfig:
        if self.impute == "median":
            raise ValueError(
                "impute: median imputation is not supported out of core: no statistic that "
                "merges across blocks gives the exact median, and ooc fits the whole "
                "preprocessing in one pass. Use mean, most_frequent or constant."
            )
        return self


class TrainingConfig(_Config):
    """How to split the data and stream the training blocks."""

    epochs: int = Field(1, ge=1, description="Passes over the training blocks.")
    shuffle_blocks: bool = Field(False, description="Visit the blocks in a new order each epoch.")
    random_state: int = Field(0, description="Seeds the block order and the estimator.")
    block_rows: int = Field(
        DEFAULT_BLOCK_ROWS, ge=1, description="Most rows read and fitted at once (a block)."
    )
    prefetch: int = Field(2, ge=0, description="Blocks read ahead of partial_fit.")
    stats_cache: bool = Field(
        True,
        description="Keep each file's statistics in <workdir>/cache, so a retrain reads only "
        "new or changed files for them.",
    )
    early_stopping: bool = Field(
        False, description="Hold out validation blocks and stop when the score stalls."
    )
    holdout_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the rows held out for evaluation."
    )
    split_seed: int = Field(0, ge=0, description="Seeds the choice of the holdout rows.")
    checkpoint_every: int = Field(10, ge=1, description="Checkpoint every N blocks.")
    replicas: int | None = Field(
        None,
        ge=1,
        description="Fit this many model replicas at once, one per Dask worker, averaged "
        "every sync_every blocks (linear models, MLPs, MiniBatchKMeans). Empty: one serial fit.",
    )
    sync_every: int = Field(
        4, ge=1, description="Blocks each replica fits between two averages (with replicas)."
    )


class RegistryConfig(_Config):
    """Where the model is registered, and what makes it the champion."""

    model_name: str | None = Field(
        None, description="Registered model; default ooc-<classification|regression|clustering>."
    )
    metric: str | None = Field(
        None, description="Holdout metric compared with the champion's (default per task)."
    )
    direction: Literal["max", "min"] | None = Field(
        None, description="Whether a larger or a smaller metric is better (default per metric)."
    )

    def resolve(self, kind: str) -> tuple[str, str, str]:
        """(registered model name, metric, direction) for a model of this kind."""
        metric, direction = DEFAULT_METRICS[kind]
        return (
            self.model_name or registered_name(kind),
            self.metric or metric,
            self.direction or direction,
        )


DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")


def parse_distribution(name: str, spec: str):
    """``"loguniform:1e-6:1e-2"``, ``"uniform:0:1"``, ``"randint:1:10"`` (10 excluded),
    ``"choice:l1,l2"`` or a JSON list, as a scipy distribution or a list of values.

    Raises
    ------
    ValueError
        Naming the parameter, what was written and what is expected.
    """
    import json

    from scipy import stats

    text = spec.strip()
    if text.startswith("["):
        values = json.loads(text)
        if not values:
            raise ValueError(f"search space {name}={spec!r}: the list of values is empty.")
        return values
    kind, _, rest = text.partition(":")
    if kind not in DISTRIBUTIONS:
        raise ValueError(
            f"search space {name}={spec!r}: unknown distribution {kind!r}; write one of "
            f"loguniform:LOW:HIGH, uniform:LOW:HIGH, randint:LOW:HIGH, choice:A,B,... or a "
            "JSON list."
        )
    if kind == "choice":
        values = [_value(v) for v in rest.split(",") if v.strip()]
        if not values:
            raise ValueError(f"search space {name}={spec!r}: choice needs at least one value.")
        return values
    try:
        low, high = (float(v) for v in rest.split(":"))
    except ValueError:
        raise ValueError(
            f"search space {name}={spec!r}: expected {kind}:LOW:HIGH with two numbers."
        ) from None
    if not low < high or (kind == "loguniform" and low <= 0):
        raise ValueError(
            f"search space {name}={spec!r}: expected LOW < HIGH"
            + (" and LOW > 0 for loguniform." if kind == "loguniform" else ".")
        )
    if kind == "loguniform":
        return stats.loguniform(low, high)
    if kind == "uniform":
        return stats.uniform(low, high - low)
    return stats.randint(int(low), int(high))


def _value(text: str):
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()


class SearchConfig(_Config):
    """A search over the estimator's parameters, racing streamed candidates."""

    space: dict[str, str] = Field(
        default_factory=dict,
        description='Parameter -> distribution, e.g. {"alpha": "loguniform:1e-6:1e-2", '
        '"penalty": "choice:l2,l1"}.',
    )
    method: Literal["hyperband", "halving"] = Field(
        "hyperband", description="Hyperband (brackets of halvings) or one successive halving."
    )
    max_blocks: int = Field(27, ge=1, description="Most blocks one candidate sees: the budget.")
    eta: int = Field(3, ge=2, description="Each rung keeps 1/eta of its candidates.")
    n_candidates: int = Field(27, ge=1, description="Candidates of a successive halving.")

    @model_validator(mode="after")
    def _parse(self) -> SearchConfig:
        if not self.space:
            raise ValueError("search space is empty: give at least one parameter to search.")
        for name, spec in self.space.items():
            parse_distribution(name, spec)
        return self

    def distributions(self) -> dict:
        return {name: parse_distribution(name, spec) for name, spec in self.space.items()}

    def check_names(self, model: ModelConfig) -> None:
        """Every searched name is a parameter of the estimator (before any work)."""
        known = set(model.estimator(0).get_params())
        unknown = sorted(set(self.space) - known)
        if unknown:
            raise ValueError(
                f"search space names {unknown}, which {model.name} does not have; its "
                f"parameters are {', '.join(sorted(known))}."
            )
