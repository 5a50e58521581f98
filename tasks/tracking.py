"""MLflow tracking: one run per flow run, and what each stage measured, logged to it.

The default store is a sqlite file in the work directory (no server); ``MLFLOW_TRACKING_URI``
points at a server, which is checked to answer before a run starts. Metric names are
grouped by what they measure (``holdout/``, ``train/``, ``timing/``, ``throughput/``), and
parameters by what they set (``model``, ``estimator.``, ``training.``, ``data.``).
Models are pickled (cloudpickle): load only models from a registry you trust.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import time
import warnings
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

import ooc

from .health import check_tracking_server
from .settings import Settings, get_settings

# Opens the experiment in MLflow's model-training view, not the GenAI one.
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": "Runs of ooc: out-of-core scikit-learn pipelines, one MLflow run "
    "per Prefect flow run (generate, train, tune, batch-predict, pipeline); a tune run's "
    "candidates are its child runs.",
}


@contextlib.contextmanager
def quiet():
    """Without MLflow's own notices on stderr (database creation, "Created version ..."
    prints, the pickle caution that the README's trust section states): they would bury
    the run's log. MLflow writes them to whatever ``sys.stderr`` is at the time."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def tracking_uri(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(settings.workdir / 'mlflow.db').resolve()}"


def configure(settings: Settings | None = None) -> str:
    """Point MLflow at the store and make sure the experiment exists; return the URI.

    Raises :class:`~tasks.health.ServiceUnreachable` at once if a tracking server does not
    answer.
    """
    settings = settings or get_settings()
    uri = tracking_uri(settings)
    check_tracking_server(uri)
    with quiet():
        return _configure(settings, uri)


def open_store(workdir: str | Path | None = None) -> str:
    """:func:`configure` for the runs of ``workdir`` (the settings' own without one): its
    store is ``<workdir>/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` names another."""
    settings = get_settings()
    if workdir is not None:
        settings = settings.model_copy(update={"workdir": Path(workdir)})
    return configure(settings)


def _configure(settings: Settings, uri: str) -> str:
    explicit = bool(os.environ.get("MLFLOW_TRACKING_URI"))
    mlflow.set_tracking_uri(uri)
    if not explicit:
        # set_tracking_uri also exports MLFLOW_TRACKING_URI; left there, tracking_uri() would
        # take it for the user's, and the next flow in this process, with another workdir,
        # would write to this store.
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        local = uri.startswith("sqlite:")
        location = (settings.workdir / "mlartifacts").resolve().as_uri() if local else None
        with contextlib.suppress(MlflowException):  # created meanwhile by a concurrent run
            mlflow.create_experiment(
                settings.mlflow_experiment, artifact_location=location, tags=EXPERIMENT_TAGS
            )
    elif experiment.tags.get("mlflow.experimentKind") is None:
        mlflow.MlflowClient().set_experiment_tag(
            experiment.experiment_id,
            "mlflow.experimentKind",
            EXPERIMENT_TAGS["mlflow.experimentKind"],
        )
    mlflow.set_experiment(settings.mlflow_experiment)
    return uri


def code_version() -> str:
    """The package version, with the git commit of this checkout if there is one."""
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


def run_link(uri: str, run) -> tuple[str, str]:
    """The MLflow UI's address of ``run``, and how to open it."""
    # workflowType: MLflow 3 opens its GenAI view otherwise, whatever the experiment's kind.
    path = (
        f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        "?workflowType=machine_learning"
    )
    if uri.startswith("http"):
        return f"{uri.rstrip('/')}/{path}", "MLflow run"
    # A sqlite store has no web address; `mlflow ui` serves it on port 5000 by default.
    return f"http://127.0.0.1:5000/{path}", f"mlflow ui --backend-store-uri {uri}"


def current_uri() -> str:
    """The tracking URI in use (after :func:`configure`), for tasks on other processes."""
    return mlflow.get_tracking_uri()


@contextlib.contextmanager
def flow_run_tracking(flow_name: str, workdir: Path | None, prefect_link: str | None):
    """One MLflow run for the current Prefect flow run, FAILED if the block raises.

    The run's description links to the Prefect flow run, and a link artifact of the flow
    run (key ``mlflow-run``) to the MLflow run. Without ``MLFLOW_TRACKING_URI`` the store
    is ``<workdir>/mlflow.db``.
    """
    from prefect.artifacts import create_link_artifact
    from prefect.runtime import deployment, flow_run

    uri = open_store(workdir)
    name = str(flow_run.get_name() or flow_name)
    tags = {
        "prefect.flow_run_id": str(flow_run.get_id()),
        "prefect.flow_run_name": name,
        "prefect.flow_name": flow_name,
        "prefect.deployment": str(deployment.get_name() or "none"),
        "ooc.code_version": code_version(),
        "mlflow.note.content": (
            f"Prefect flow run **{name}** of `{flow_name}`"
            + (f": [{prefect_link}]({prefect_link})" if prefect_link else "")
        ),
    }
    with mlflow.start_run(run_name=name, tags=tags) as run:
        link, how = run_link(uri, run)
        create_link_artifact(
            link, link_text=f"MLflow run {run.info.run_id}", key="mlflow-run", description=how
        )
        yield run


def log_dataset(plan, example) -> None:
    """The data a run read: an MLflow dataset input (name, fingerprint, schema, rows; the
    Dataset column of the runs table), tags to search by, and its shape and split."""
    source = plan.source
    mlflow.set_tags({"ooc.data_path": plan.data, "ooc.data_fingerprint": plan.fingerprint()})
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    with warnings.catch_warnings():
        # MLflow registers its local-file source twice and warns that a path is ambiguous.
        warnings.filterwarnings("ignore", "The specified dataset source", UserWarning)
        source_ref = resolve_dataset_source(str(Path(plan.data).resolve()))
    dataset = MetaDataset(
        source=source_ref,
        name=Path(plan.data).name,
        digest=plan.fingerprint(),
        schema=infer_signature(example).inputs,
    )
    try:
        mlflow.log_input(dataset, context="training")
    except MlflowException as error:
        # MLflow creates a dataset on first use without a lock: two runs at once on the
        # same data race to insert it, and the loser fails on the unique key. The dataset
        # exists now; logging again links this run to it.
        if "unique constraint" not in str(error).lower():  # sqlite's and PostgreSQL's words
            raise
        mlflow.log_input(dataset, context="training")
    mlflow.log_params(
        {
            "data.rows": source.n_rows,
            "data.files": len(source.files),
            "data.features": len(source.features),
            "data.blocks": len(source.blocks),
            "data.block_rows": source.block_rows,
            "data.train_rows": plan.train.n_rows,
            "data.holdout_rows": plan.holdout.n_rows,
        }
    )


def _scalar(value) -> str:
    return str(value)[:500]


# Estimator parameters that partial_fit does not use (the streaming settings are the
# training.* parameters): logged, they would only contradict those.
_UNUSED_BY_PARTIAL_FIT = {
    "max_iter", "tol", "n_iter_no_change", "early_stopping", "validation_fraction",
    "verbose", "n_jobs", "warm_start", "max_fun",
}  # fmt: skip


def log_config(model, training, estimator) -> None:
    """The model's name, the estimator's parameters that a streamed fit uses, and the
    training settings; unset settings (None) are left out."""
    params = {"model": model.name}
    params |= {
        f"estimator.{k}": _scalar(v)
        for k, v in estimator.get_params(deep=False).items()
        if k not in _UNUSED_BY_PARTIAL_FIT and v is not None
    }
    params |= {
        f"training.{k}": _scalar(v) for k, v in training.model_dump().items() if v is not None
    }
    mlflow.log_params(params)


def log_stage(stage: str, seconds: float, rows: int | None = None) -> None:
    metrics = {f"timing/{stage}_s": round(seconds, 3)}
    if rows and seconds > 0:
        metrics[f"throughput/{stage}_rows_per_s"] = round(rows / seconds)
    mlflow.log_metrics(metrics)


def log_holdout(metrics: dict[str, float]) -> None:
    mlflow.log_metrics({f"holdout/{k}": round(float(v), 6) for k, v in metrics.items()})


def log_learning(fitted) -> None:
    """The learning curves: each block's progressive score (the model's score on the block
    before learning from it) by rows seen; per epoch, its mean and the validation score.
    One batch write, however many blocks."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric("train/progressive_score_by_rows", round(score, 6), now, int(rows))
        for rows, score in fitted.curve
    ]
    metrics += [
        Metric("train/progressive_score", round(score, 6), now, step)
        for step, score in enumerate(fitted.training_scores, start=1)
        if math.isfinite(score)  # an epoch of one block scores none of its blocks
    ]
    metrics += [
        Metric("train/validation_score", round(score, 6), now, step)
        for step, score in enumerate(fitted.validation_scores, start=1)
    ]
    run_id = mlflow.active_run().info.run_id
    for start in range(0, len(metrics), 1000):  # MLflow takes up to 1000 per batch
        mlflow.MlflowClient().log_batch(run_id, metrics=metrics[start : start + 1000])


def log_files(files, artifact_path: str = "profiles") -> None:
    for file in files:
        mlflow.log_artifact(str(file), artifact_path=artifact_path)


def log_model(model, input_example) -> str:
    """Log the whole fitted pipeline with its signature; return the model URI."""
    from mlflow.models import infer_signature

    from ooc.predict import takes_frames

    example = input_example if takes_frames(model) else input_example.to_numpy()
    signature = infer_signature(input_example, model.predict(example))
    with warnings.catch_warnings():
        # MLflow checks the example by predicting on the DataFrame; the pipeline was fitted
        # on arrays from parquet, so sklearn notes the names it cannot check.
        warnings.filterwarnings("ignore", message="X has feature names", category=UserWarning)
        with quiet():
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


def log_training(trained, pipeline, input_example) -> str:
    """Everything a training run measured, and the model; returns the model's URI.

    The holdout metrics and the learning curves first (the MLflow UI lists metrics in the
    order they were logged), then the timings."""
    plan, fitted, pre = trained.plan, trained.fitted, trained.preprocessed
    log_holdout(trained.evaluated.metrics)
    log_learning(fitted)
    log_dataset(plan, input_example)
    log_config(trained.model, trained.training, pipeline[-1].estimator)
    settings = {f"preprocess.{k}": _scalar(v) for k, v in trained.preprocess.model_dump().items()}
    mlflow.log_params({**settings, "preprocess.passes": pre.passes})
    log_stage("preprocess", pre.seconds, plan.train.n_rows)
    log_stage("fit", fitted.seconds, fitted.n_samples_seen)
    log_stage("evaluate", trained.evaluated.seconds, plan.holdout.n_rows)
    mlflow.log_metrics(
        {
            "timing/fit_partial_fit_s": round(fitted.fit_seconds, 3),
            "timing/fit_waiting_for_data_s": round(fitted.wait_seconds, 3),
        }
    )
    tags = {"ooc.statistics_pieces_read": f"{pre.pieces_read} of {pre.pieces}"}
    if fitted.resumed_from:
        tags["ooc.resumed_from"] = str(fitted.resumed_from)
    mlflow.set_tags(tags)
    if pre.categories:
        mlflow.log_dict(pre.categories, "preprocess/categories.json")
    mlflow.log_dict(trained.card(), "model_card.json")
    return log_model(pipeline, input_example)


def log_generation(generated) -> None:
    mlflow.set_tag("ooc.generated", f"{generated.written} of {generated.partitions} files written")
    log_stage("generate", generated.seconds, generated.rows if generated.written else None)


def log_prediction(predicted, version: str | None) -> None:
    """Where the predictions went, and which model (and registered version) made them."""
    tags = {
        "ooc.predict_model": predicted.model_ref,
        "ooc.predict_out": predicted.out,
        "ooc.predict_files": str(predicted.files),
    }
    if version is not None:
        tags["ooc.predict_model_version"] = version
    mlflow.set_tags(tags)
    log_stage("predict", predicted.seconds, predicted.rows if predicted.written else None)


def log_cluster(client) -> None:
    if client is None:
        return
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    mlflow.log_params(
        {
            "cluster.workers": len(workers),
            "cluster.threads": sum(w.get("nthreads", 0) for w in workers),
        }
    )


def log_search(searched, model, search) -> None:
    """The search on the flow's run, and each candidate as a child run: its parameters,
    its score at every check (by blocks seen), its bracket and rank."""
    from mlflow.entities import Metric, Param, RunTag

    mlflow.log_params(
        {"model": model.name, **{f"search.{k}": _scalar(v) for k, v in search.model_dump().items()}}
    )
    mlflow.log_params({f"best.{k}": _scalar(v) for k, v in searched.best_params.items()})
    mlflow.log_metrics(
        {
            "search/best_score": round(searched.best_score, 6),
            "search/candidates": len(searched.candidates),
            "search/partial_fit_calls": searched.partial_fit_calls,
            "timing/search_s": round(searched.seconds, 3),
        }
    )
    client, parent = mlflow.MlflowClient(), mlflow.active_run()
    now = int(time.time() * 1000)
    for candidate in searched.candidates:
        child = client.create_run(
            parent.info.experiment_id,
            run_name=f"candidate {candidate['id']}",
            tags={"mlflow.parentRunId": parent.info.run_id},
        )
        checks = [h for h in searched.history if h["candidate"] == candidate["id"]]
        client.log_batch(
            child.info.run_id,
            metrics=[
                Metric("score", round(h["score"], 6), now, int(h["blocks_seen"])) for h in checks
            ],
            params=[Param(k, _scalar(v)) for k, v in candidate["params"].items()],
            tags=[
                RunTag("ooc.bracket", str(candidate["bracket"])),
                RunTag("ooc.rank", str(candidate["rank"])),
                RunTag("ooc.blocks_seen", str(candidate["blocks_seen"])),
            ],
        )
        client.set_terminated(child.info.run_id)
