"""Typed flow parameters: the Prefect UI renders these as forms."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ooc.catalog import MODELS, make_estimator, model_kind
from tasks.tracking import DEFAULT_METRICS

ModelName = Literal[tuple(MODELS)]  # type: ignore[valid-type]
Task = Literal["classification", "regression", "blobs"]
Dtype = Literal["float64", "float32"]
Method = Literal["predict", "predict_proba", "decision_function", "transform"]


class ModelConfig(BaseModel):
    """Which estimator to stream into, and its parameters."""

    name: ModelName = "sgd-classifier"
    params: dict[str, Any] = Field(
        default_factory=dict, description='Estimator parameters, e.g. {"alpha": 1e-5}.'
    )

    @model_validator(mode="after")
    def _known_params(self) -> ModelConfig:
        """A misspelt parameter fails here, when the run is asked for, not after retries."""
        make_estimator(self.name, **self.params)  # ValueError naming the parameter
        return self


class TrainingConfig(BaseModel):
    """How to stream the training blocks."""

    epochs: int = Field(1, ge=1)
    shuffle_blocks: bool = False
    random_state: int = 0
    prefetch: int = Field(2, ge=0, description="Blocks read ahead of partial_fit.")
    early_stopping: bool = False
    holdout_fraction: float = Field(
        0.1, gt=0, lt=1, description="Fraction of the files held out for evaluation."
    )
    split_seed: int = 0
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


class RegistryConfig(BaseModel):
    """Where the model is registered, and what makes it the champion."""

    model_name: str | None = Field(
        None, description="Registered model; default ooc-<classification|regression|clustering>."
    )
    metric: str | None = Field(
        None, description="Holdout metric compared with the champion's (default per task)."
    )
    direction: Literal["max", "min"] | None = None

    def resolve(self, estimator: str) -> tuple[str, str, str]:
        """(registered model name, metric, direction) for the estimator ``estimator``."""
        kind = model_kind(estimator)
        metric, direction = DEFAULT_METRICS[kind]
        return (
            self.model_name or f"ooc-{kind}",
            self.metric or metric,
            self.direction or direction,
        )
