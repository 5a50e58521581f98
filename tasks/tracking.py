"""Every MLflow call of the project: runs, metrics, profiles, the model and the registry.

One MLflow run per flow run, opened in the flow process. The default store is a sqlite
file in the work directory (no server); ``MLFLOW_TRACKING_URI`` points at a server, which
is checked to answer before a run starts (:func:`check_tracking_server`).
Models are pickled (cloudpickle): load only models from a registry you trust.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import random
import subprocess
import time
import urllib.error
import urllib.request
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


class ServiceUnreachable(ConnectionError):
    """A server named in the environment does not answer; the message says what to fix."""


def check_reachable(
    url: str, what: str, variable: str, hint: str, timeout: float = 3.0, attempts: int = 2
) -> None:
    """GET ``<url>/health`` and raise :class:`ServiceUnreachable` unless a server answers.

    Any HTTP answer counts (even 401 or 404: something is listening), except 502, 503 and
    504, which a proxy gives for a server behind it that is down. Each attempt waits at
    most ``timeout`` seconds, so a dead address fails in seconds instead of after the
    minutes of retries the MLflow and Prefect clients would spend on it.
    """
    problem = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.5)
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout):
                return
        except urllib.error.HTTPError as err:
            if err.code not in (502, 503, 504):
                return
            problem = f"it answered HTTP {err.code} {err.reason}"
        except (OSError, ValueError) as err:  # refused, timed out, unknown host, bad URL
            reason = getattr(err, "reason", err)
            problem = str(reason) or type(reason).__name__
    raise ServiceUnreachable(f"Cannot reach the {what} at {url} ({variable}): {problem}. {hint}")


def check_tracking_server(uri: str | None = None) -> None:
    """Fail fast if ``MLFLOW_TRACKING_URI`` names an http(s) server that does not answer."""
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return  # a local store (sqlite, file) or a scheme MLflow resolves itself
    check_reachable(
        uri,
        "MLflow tracking server",
        "MLFLOW_TRACKING_URI",
        "Start the server, or fix MLFLOW_TRACKING_URI; unset, runs are recorded in "
        "<workdir>/mlflow.db.",
    )


def configure(settings: Settings | None = None) -> str:
    """Point MLflow at the store and make sure the experiment exists; return the URI.

    Raises :class:`ServiceUnreachable` at once if a tracking server does not answer.
    """
    settings = settings or get_settings()
    uri = tracking_uri(settings)
    check_tracking_server(uri)
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
            "ooc.score": "" if self.score is None else repr(float(self.score)),
            "ooc.champion_version_before": self.champion_version or "",
            "ooc.champion_score_before": ""
            if self.champion_score is None
            else repr(float(self.champion_score)),
            "ooc.promoted": str(self.promoted).lower(),
            "ooc.decision": self.reason,
        }


WITHDRAWN = "ooc.withdrawn"


def _champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _set_alias(client: MlflowClient, name: str, alias: str, version) -> None:
    """Set an alias, again if the store refuses it for a concurrent write.

    Two writers setting the same alias at once can both try to insert it: the store's
    unique constraint then fails one of them (``IntegrityError`` from an MLflow server
    on sqlite). Setting an alias is idempotent, so the write is simply tried again.
    """
    for attempt in range(5):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException:
            if attempt == 4:
                raise
            time.sleep(0.05 * 2**attempt * (1 + random.random()))


def _score(version) -> float | None:
    try:
        score = float(version.tags.get("ooc.score") or "nan")
    except ValueError:
        return None
    return None if math.isnan(score) else score


def _same_terms(version, metric: str, direction: str) -> bool:
    """Scored on ``metric`` in ``direction``: comparable with a candidate that is."""
    tags = version.tags
    return (
        tags.get("ooc.promotion_metric") == metric
        and tags.get("ooc.promotion_direction", direction) == direction
        and _score(version) is not None
    )


def _withdrawn(version) -> bool:
    return version.tags.get(WITHDRAWN, "").lower() == "true"


def _ranked(versions, metric: str, direction: str) -> list:
    """The versions that may be champion, best first: comparable, not withdrawn; the
    better stored score first, and of equal scores the earlier version."""
    sign = -1.0 if direction == "max" else 1.0
    eligible = [v for v in versions if _same_terms(v, metric, direction) and not _withdrawn(v)]
    return sorted(eligible, key=lambda v: (sign * _score(v), int(v.version)))


def _versions(client: MlflowClient, name: str) -> list:
    return list(client.search_model_versions(f"name='{name}'"))


def _kept(champion, metric: str, direction: str) -> bool:
    """A champion without a score on these terms is left alone (not comparable), unless
    it is withdrawn."""
    return (
        champion is not None
        and not _withdrawn(champion)
        and not _same_terms(champion, metric, direction)
    )


def _judge(metric: str, direction: str, score, candidate, champion, ranked) -> tuple[bool, str]:
    """Whether ``candidate`` (a version, or None before registering) is champion by the
    rule, and why, from one reading of the champion and the ranked versions."""
    if _kept(champion, metric, direction):
        return False, f"not comparable on {metric}: champion v{champion.version} kept"
    mine = str(candidate.version) if candidate is not None else None
    others = [v for v in ranked if str(v.version) != mine]
    if not others:
        if score is None and champion is not None:
            return False, f"no {metric} score: champion v{champion.version} kept"
        return True, "first version"
    best = others[0]
    if score is None:
        return False, f"no {metric} score: champion v{best.version} kept"
    theirs = _score(best)
    better = score > theirs if direction == "max" else score < theirs
    if better:
        sign = ">" if direction == "max" else "<"
        return True, f"{metric} {score:.6g} {sign} {theirs:.6g} (v{best.version}): promoted"
    if score == theirs and mine is not None and int(mine) < int(best.version):
        return True, f"{metric} {score:.6g} = {theirs:.6g} (v{best.version}), earlier: promoted"
    sign = "<=" if direction == "max" else ">="
    return False, f"{metric} {score:.6g} {sign} {theirs:.6g}: champion v{best.version} kept"


def decide(name: str, metric: str, direction: str, score: float | None) -> Decision:
    """What registering a candidate with this score would decide, without writing.

    The rule is :func:`register`'s; a concurrent registration can still change the
    outcome, which :func:`register` settles.
    """
    if direction not in ("max", "min"):
        raise ValueError(f"promotion direction must be 'max' or 'min', got {direction!r}.")
    if score is not None and math.isnan(score):
        score = None
    client = MlflowClient()
    champion = _champion(client, name)
    ranked = _ranked(_versions(client, name), metric, direction)
    promoted, reason = _judge(metric, direction, score, None, champion, ranked)
    champ_version = str(champion.version) if champion is not None else None
    champ_score = _score(champion) if champion is not None else None
    return Decision(None, promoted, metric, direction, score, champ_version, champ_score, reason)


def _settle(client: MlflowClient, name: str, metric: str, direction: str, candidate):
    """Point ``champion`` at the best version by the rule until a fresh reading agrees.

    MLflow has no compare-and-set on aliases, so concurrent registrations can overwrite
    each other's choice. Each one re-reads after it writes and writes again while the
    alias is not the best version it sees; the last writer's reading then includes every
    version scored before it, and each later version's own reading includes all of
    them: once all registrations end, ``champion`` is the best version of the registry.
    Returns the final champion and the ranked versions of the reading that agreed.
    """
    for _ in range(20):
        champion = _champion(client, name)
        ranked = _ranked(_versions(client, name), metric, direction)
        if _kept(champion, metric, direction):
            return champion, ranked
        # No version has a comparable score: the first version becomes champion anyway.
        best = ranked[0] if ranked else champion or candidate
        if champion is not None and str(champion.version) == str(best.version):
            return champion, ranked
        _set_alias(client, name, CHAMPION, best.version)
    return _champion(client, name), ranked


def register(name: str, model_uri: str, decision: Decision) -> Decision:
    """Register ``model_uri`` as a new version: alias challenger, and champion by the rule.

    The rule: ``champion`` is the version with the best stored score (``ooc.score``) on
    the decision's metric and direction, the earlier one of equal scores; versions
    tagged ``ooc.withdrawn=true`` are left out, and a champion scored on another metric
    is kept. Safe when runs register at the same time (see :func:`_settle`). The returned
    decision, also the version's tags, is what this registration found.

    All or nothing: if any step fails, the new version is deleted again.
    """
    client = MlflowClient()
    version = mlflow.register_model(model_uri, name)
    number = str(version.version)
    metric, direction, score = decision.metric, decision.direction, decision.score
    try:
        before = _champion(client, name)
        # The score first: from here on, every registration ranks this version.
        scored = Decision(number, False, metric, direction, score, None, None, "").tags()
        for key in ("ooc.promotion_metric", "ooc.promotion_direction", "ooc.score"):
            client.set_model_version_tag(name, number, key, scored[key])
        _set_alias(client, name, CHALLENGER, number)
        mine = client.get_model_version(name, number)
        champion, ranked = _settle(client, name, metric, direction, mine)
        _, reason = _judge(metric, direction, score, mine, champion, ranked)
        promoted = champion is not None and str(champion.version) == number
        decision = Decision(
            number,
            promoted,
            metric,
            direction,
            score,
            str(before.version) if before is not None else None,
            _score(before) if before is not None else None,
            reason,
        )
        for key, value in decision.tags().items():
            client.set_model_version_tag(name, number, key, value)
    except Exception:
        client.delete_model_version(name, number)
        raise
    mlflow.set_tags(
        {
            "ooc.registered_model": name,
            "ooc.registered_version": number,
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
