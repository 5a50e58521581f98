"""Recording a run: logging the model to MLflow and registering it, as tasks of the flow.

They run in the flow's process (MLflow's active run is there) and are task runs of their
own, so the Prefect UI shows where the end of a run goes.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from . import registry, tracking
from .config import RegistryConfig
from .data import sample_rows
from .store import load_object
from .training import Trained


@dataclass(frozen=True)
class Candidate:
    """A trained model logged to MLflow, and what registering it would decide."""

    name: str
    model_uri: str
    decision: registry.Decision


@task(cache_policy=NONE, task_run_name="log-to-mlflow")
def log_training_run(trained: Trained, rules: RegistryConfig) -> Candidate:
    """Log what the run measured and the model, and decide (without writing the registry)
    whether it beats the champion."""
    name, metric, direction = rules.resolve(trained.model.kind)
    pipeline = load_object(trained.fitted.model_path)
    model_uri = tracking.log_training(trained, pipeline, sample_rows(trained.plan))
    score = trained.evaluated.metrics.get(metric)
    return Candidate(name, model_uri, registry.decide(name, metric, direction, score))


@task(cache_policy=NONE, task_run_name="register")
def register_model(candidate: Candidate) -> registry.Decision:
    """A new version of the registered model, challenger, and champion by the rules."""
    decision = registry.register(candidate.name, candidate.model_uri, candidate.decision)
    get_run_logger().info(
        "Registered %s version %s: %s.", candidate.name, decision.version, decision.reason
    )
    return decision
