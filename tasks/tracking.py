"""Every MLflow call of the project: runs, metrics, profiles, the model and the registry.

One MLflow run per flow run, opened in the flow process. The default store is a sqlite
file in the work directory (no server); ``MLFLOW_TRACKING_URI`` points at a server.
Models are pickled (cloudpickle): load only models from a registry you trust.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import ooc

from .settings import Settings, get_settings
from .store import load_object

CHALLENGER, CHAMPION = "challenger", "champion"
DEFAULT_METRICS = {
    "classification": ("roc_auc", "max"),
    "regression": ("r2", "max"),
    "clustering": ("inertia", "min"),
}


def tracking_uri(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(settings.workdir / 'mlflow.db').resolve()}"


def configure(settings: Settings | None = None) -> str:
    """Point MLflow at the store and make sure the experiment exists; return the URI."""
    settings = settings or get_settings()
    uri = tracking_uri(settings)
    explicit = bool(os.environ.get("MLFLOW_TRACKING_URI"))
    mlflow.set_tracking_uri(uri)
    if not explicit:
        # set_tracking_uri also exports MLFLOW_TRACKING_URI; left there, tracking_uri() would
        # take it for the user's, and the next flow in this process, with another workdir,
        # would write to this store.
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    if mlflow.get_experiment_by_name(settings.mlflow_experiment) is None:
        local = uri.startswith("sqlite:")
        location = (settings.workdir / "mlartifacts").resolve().as_uri() if local else None
        with contextlib.suppress(MlflowException):  # created meanwhile by a concurrent run
            mlflow.create_experiment(settings.mlflow_experiment, artifact_location=location)
    mlflow.set_experiment(settings.mlflow_experiment)
    return uri


def code_version() -> str:
    """The git commit of this checkout if there is one, else the package version."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{ooc.__version__}+g{sha}"
    except (OSError, subprocess.SubprocessError):
        return ooc.__version__


def _ui_link(uri: str, run) -> tuple[str, str]:
    path = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    if uri.startswith("http"):
        return f"{uri.rstrip('/')}/{path}", "MLflow run"
    # A sqlite store has no web address; `mlflow ui` serves it on port 5000 by default.
    return (
        f"http://127.0.0.1:5000/{path}",
        f"MLflow run (after `mlflow ui --backend-store-uri {uri}`)",
    )


def current_uri() -> str:
    """The tracking URI in use (after :func:`configure`), for tasks on other processes."""
    return mlflow.get_tracking_uri()


@contextlib.contextmanager
def flow_run_tracking(flow_name: str, workdir: Path | None = None):
    """One MLflow run for the current Prefect flow run, FAILED if the block raises.

    Without ``MLFLOW_TRACKING_URI`` the store is ``<workdir>/mlflow.db``.
    """
    from prefect.artifacts import create_link_artifact
    from prefect.runtime import deployment, flow_run

    settings = get_settings()
    if workdir is not None:
        settings = settings.model_copy(update={"workdir": Path(workdir)})
    uri = configure(settings)
    tags = {
        "prefect.flow_run_id": str(flow_run.get_id()),
        "prefect.flow_run_name": str(flow_run.get_name()),
        "prefect.flow_name": flow_name,
        "prefect.deployment": str(deployment.get_name() or "none"),
        "ooc.code_version": code_version(),
    }
    with mlflow.start_run(run_name=str(flow_run.get_name() or flow_name), tags=tags) as run:
        link, text = _ui_link(uri, run)
        create_link_artifact(link, link_text=text, description="MLflow run of this flow run")
        yield run


def fingerprint(layout: dict) -> str:
    """A short hash of the files, row counts and columns a run read."""
    basis = json.dumps(
        [layout["files"], layout["rows"], layout["features"], layout.get("target")], default=str
    )
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


def log_dataset(layout: dict, manifest: dict | None = None) -> None:
    mlflow.set_tags(
        {
            "ooc.data_path": layout["data"],
            "ooc.data_fingerprint": fingerprint(layout),
            "ooc.data_rows": layout["n_rows"],
            "ooc.data_files": layout["n_files"],
        }
    )
    mlflow.log_params(
        {
            "data_rows": layout["n_rows"],
            "data_features": len(layout["features"]),
            "data_files": layout["n_files"],
            "block_rows": max(layout["rows"]),
            "train_rows": layout["train_rows"],
            "holdout_rows": layout["holdout_rows"],
        }
    )
    if manifest:
        mlflow.log_dict(manifest, "data/manifest.json")


def log_params(params: dict) -> None:
    """Scalar parameters only (the pipeline's get_params() holds estimators too)."""
    scalars = {
        k: v for k, v in params.items() if v is None or isinstance(v, bool | int | float | str)
    }
    mlflow.log_params({k: str(v)[:500] for k, v in scalars.items()})


def log_cluster(client) -> None:
    if client is None:
        return
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    mlflow.log_params(
        {
            "dask_workers": len(workers),
            "dask_threads": sum(w.get("nthreads", 0) for w in workers),
        }
    )


def log_stage(stage: str, seconds: float, rows: int | None = None) -> None:
    mlflow.log_metric(f"{stage}_seconds", seconds)
    if rows and seconds > 0:
        mlflow.log_metric(f"{stage}_rows_per_s", rows / seconds)


def log_holdout(metrics: dict) -> None:
    mlflow.log_metrics({f"holdout_{k}": float(v) for k, v in metrics.items() if k != "seconds"})


def log_epochs(training_scores: list, validation_scores: list) -> None:
    for step, score in enumerate(training_scores, start=1):
        mlflow.log_metric("train_score", score, step=step)
    for step, score in enumerate(validation_scores, start=1):
        mlflow.log_metric("validation_score", score, step=step)


def log_files(files, artifact_path: str = "profiles") -> None:
    for file in files:
        mlflow.log_artifact(str(file), artifact_path=artifact_path)


def log_model(model, input_example) -> str:
    """Log the whole fitted pipeline with its signature; return the model URI."""
    from mlflow.models import infer_signature

    signature = infer_signature(input_example, model.predict(input_example.to_numpy()))
    with warnings.catch_warnings():
        # MLflow checks the example by predicting on the DataFrame; the pipeline was fitted
        # on arrays from parquet, so sklearn notes the names it cannot check.
        warnings.filterwarnings("ignore", message="X has feature names", category=UserWarning)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            serialization_format="cloudpickle",
            # The model unpickles ooc classes: ship the package with it, and state the
            # requirements instead of having MLflow infer them (slow, and it misses ooc).
            code_paths=[str(Path(ooc.__file__).parent)],
            pip_requirements=_requirements(),
        )
    return info.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"{name}=={version(name)}"
        for name in ("scikit-learn", "numpy", "pandas", "pyarrow", "dask", "cloudpickle")
    ]


def log_training(trained: dict, input_example) -> str:
    """Everything a training run measured, and the model; returns the model's URI."""
    layout, fit, card = trained["layout"], trained["fit"], trained["card"]
    log_dataset(layout)
    pipeline = load_object(fit["model_path"])
    log_params(
        {
            "model": card["model"]["name"],
            **{f"model_{k}": v for k, v in card["model"]["params"].items()},
            **card["training"],
            **pipeline.get_params(),
        }
    )
    log_stage("preprocess", trained["scaler"]["seconds"], layout["train_rows"])
    log_stage("fit", fit["seconds"], fit["n_samples_seen"])
    log_stage("evaluate", trained["metrics"]["seconds"], layout["holdout_rows"])
    log_holdout(trained["metrics"])
    log_epochs(fit.get("training_scores", []), fit.get("validation_scores", []))
    mlflow.log_metrics(
        {"fit_partial_fit_seconds": fit["fit_seconds"], "fit_wait_seconds": fit["wait_seconds"]}
    )
    if fit["resumed_from"]:
        mlflow.set_tag("ooc.resumed_from", str(fit["resumed_from"]))
    mlflow.log_dict(card, "model_card.json")
    return log_model(pipeline, input_example)


def log_generation(generated: dict) -> None:
    mlflow.log_params(
        {"generate_rows": generated["rows"], "generate_partitions": generated["partitions"]}
    )
    log_stage("generate", generated["seconds"], generated["rows"] if generated["written"] else None)


def log_prediction_version(version: str | None) -> None:
    """Which registered version made the predictions (None: a model outside the registry)."""
    if version is not None:
        mlflow.set_tag("ooc.predict_model_version", version)


def log_prediction(predicted: dict) -> None:
    mlflow.set_tags(
        {"ooc.predict_model": predicted["model_path"], "ooc.predict_out": predicted["out"]}
    )
    mlflow.log_metric("predict_files", predicted["files"])
    log_stage("predict", predicted["seconds"], predicted["rows"] if predicted["written"] else None)


# -- registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What registering a candidate decided, for the logs and the version's tags."""

    version: str | None
    promoted: bool
    metric: str
    direction: str
    score: float | None
    champion_version: str | None
    champion_score: float | None
    reason: str

    def tags(self) -> dict:
        return {
            "ooc.promotion_metric": self.metric,
            "ooc.promotion_direction": self.direction,
            "ooc.score": "" if self.score is None else repr(self.score),
            "ooc.champion_version_before": self.champion_version or "",
            "ooc.champion_score_before": ""
            if self.champion_score is None
            else repr(self.champion_score),
            "ooc.promoted": str(self.promoted).lower(),
            "ooc.decision": self.reason,
        }


def _champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def decide(name: str, metric: str, direction: str, score: float | None) -> Decision:
    """Compare a candidate's holdout score with the champion's, without writing anything."""
    if direction not in ("max", "min"):
        raise ValueError(f"promotion direction must be 'max' or 'min', got {direction!r}.")
    champion = _champion(MlflowClient(), name)
    if champion is None:
        return Decision(None, True, metric, direction, score, None, None, "first version")
    tags = champion.tags
    champ_score = float(tags["ooc.score"]) if tags.get("ooc.score") else None
    common = (metric, direction, score, str(champion.version), champ_score)
    if tags.get("ooc.promotion_metric") != metric or champ_score is None or score is None:
        return Decision(None, False, *common, f"not comparable on {metric}: champion kept")
    better = score > champ_score if direction == "max" else score < champ_score
    sign = (">" if better else "<=") if direction == "max" else ("<" if better else ">=")
    verdict = "promoted" if better else f"champion v{champion.version} kept"
    return Decision(
        None, better, *common, f"{metric} {score:.6g} {sign} {champ_score:.6g}: {verdict}"
    )


def register(name: str, model_uri: str, decision: Decision) -> Decision:
    """Register ``model_uri`` as a new version: alias challenger, and champion if promoted.

    All or nothing: if any step fails, the new version is deleted again.
    """
    client = MlflowClient()
    version = mlflow.register_model(model_uri, name)
    try:
        decision = Decision(**{**decision.__dict__, "version": str(version.version)})
        for key, value in decision.tags().items():
            client.set_model_version_tag(name, version.version, key, value)
        client.set_registered_model_alias(name, CHALLENGER, version.version)
        if decision.promoted:
            client.set_registered_model_alias(name, CHAMPION, version.version)
    except Exception:
        client.delete_model_version(name, version.version)
        raise
    mlflow.set_tags(
        {
            "ooc.registered_model": name,
            "ooc.registered_version": version.version,
            "ooc.promoted": str(decision.promoted).lower(),
            "ooc.decision": decision.reason,
        }
    )
    return decision


def champion_uri(name: str) -> tuple[str, str]:
    """The champion as a pinned URI (``models:/name/version``) and its version."""
    champion = _champion(MlflowClient(), name)
    if champion is None:
        raise LookupError(
            f"The registry has no '{CHAMPION}' for model {name!r} at {mlflow.get_tracking_uri()}:"
            " train a model first (`ooc train` / `ooc run`), or pass --model."
        )
    return f"models:/{name}/{champion.version}", str(champion.version)


def model_features(model_uri: str) -> list[str] | None:
    """The input column names in a logged model's signature."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    return signature.inputs.input_names() if signature is not None else None


@functools.lru_cache(maxsize=4)
def load_model(model_uri: str, uri: str):
    """Load a logged sklearn model once per process (prediction tasks on workers)."""
    mlflow.set_tracking_uri(uri)
    return mlflow.sklearn.load_model(model_uri)
