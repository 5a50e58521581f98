"""Prefect flows: generate_dataset, train, batch_predict, and the end-to-end pipeline.

Flows wire tasks and choose the task runner, nothing else. One task run per stage (check,
preprocess, fit, evaluate, predict, generate): each spreads its work over the Dask cluster
and reports its progress. Each flow body is a plain function, so the ``pipeline`` flow
chains them under one task runner (one cluster).
"""

from __future__ import annotations

import json
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from ooc.files import atomic_write
from ooc.tasks import registry as model_registry
from ooc.tasks import tracking
from ooc.tasks.config import (
    DatasetConfig,
    Method,
    ModelConfig,
    PreprocessConfig,
    RegistryConfig,
    SearchConfig,
    TrainingConfig,
    registered_name,
)
from ooc.tasks.data import Generated, check_dataset, generate_partitions, sample_rows
from ooc.tasks.evaluation import evaluate_model
from ooc.tasks.prediction import REGISTRY_SCHEMES, Predicted, predict_files
from ooc.tasks.profiling import RunProfiler
from ooc.tasks.recording import Candidate, log_training_run, register_model
from ooc.tasks.settings import get_settings
from ooc.tasks.store import load_object
from ooc.tasks.training import Trained, fit_model, fit_preprocessing
from ooc.tasks.tuning import Searched, make_search, search_model

from .progress import stage_bars
from .runner import dask_task_runner
from .summary import publish_summary

VERSION = tracking.code_version()
DEFAULT_BLOCK_ROWS = TrainingConfig.model_fields["block_rows"].default


def _workdir(workdir: str | None) -> Path:
    return Path(workdir) if workdir else get_settings().workdir


def dataset_dir(workdir: str | Path, dataset: DatasetConfig) -> Path:
    """Where the pipeline keeps the dataset of these parameters (one per parameter set)."""
    return Path(workdir) / "data" / dataset.directory_name()


def _run_id() -> str:
    return str(flow_run.get_id() or "local")


def _check(data, target, model: ModelConfig, training: TrainingConfig, preprocess):
    return check_dataset(
        data, target, training.holdout_fraction, training.split_seed, training.block_rows,
        model.kind, preprocess,
    )  # fmt: skip


def _stats_cache(workdir: Path, training: TrainingConfig) -> str | None:
    """Where a run keeps each file's statistics (shared by the runs of a work directory)."""
    return str(Path(workdir) / "cache" / "stats") if training.stats_cache else None


def _run_dir(workdir: Path) -> Path:
    run = workdir / "runs" / _run_id()
    run.mkdir(parents=True, exist_ok=True)
    return run


def _prefect_link() -> str | None:
    """The flow run's page in the Prefect UI (``PREFECT_UI_URL``: for a command's temporary
    API, the local database that ``prefect server start`` serves)."""
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=flow_run.get_id())


def _links(run) -> list[tuple[str, str]]:
    """Where to look at this run: its MLflow run, and its Prefect flow run."""
    mlflow_link, how = tracking.run_link(tracking.current_uri(), run)
    links = [("MLflow run", mlflow_link)]
    if how.startswith("mlflow ui"):
        links.append(("MLflow UI", how))
    prefect = _prefect_link()
    return links + ([("Prefect flow run", prefect)] if prefect else [])


# -- flow bodies ------------------------------------------------------------------------------


def run_generate(out: str, dataset: DatasetConfig) -> Generated:
    with stage_bars():
        return generate_partitions.submit(out, dataset.spec()).result()


def run_train(
    data: str,
    target: str | None,
    model: ModelConfig,
    training: TrainingConfig,
    preprocess: PreprocessConfig,
    workdir: Path,
    profiler: RunProfiler,
) -> Trained:
    run_dir = str(_run_dir(workdir))
    # Every footer is read and checked, and the split decided, before any fitting starts.
    plan = _check(data, target, model, training, preprocess)
    with stage_bars():
        with profiler.stage("preprocess"):
            preprocessed = fit_preprocessing.submit(
                plan.train, model, run_dir, _stats_cache(workdir, training), preprocess
            ).result()
        with profiler.stage("fit"):
            fitted = fit_model.submit(plan.train, model, training, preprocessed, run_dir).result()
        with profiler.stage("evaluate"):
            evaluated = evaluate_model.submit(fitted.model_path, plan.holdout).result()
    trained = Trained(plan, model, training, preprocessed, fitted, evaluated, preprocess)
    _write_json(Path(fitted.model_path).with_suffix(".json"), trained.card())
    return trained


def run_predict(
    data: str,
    out: str,
    model_ref: str,
    target: str | None,
    method: str,
    block_rows: int,
    profiler: RunProfiler,
) -> Predicted:
    """Predict with a registry URI or a saved model path, on every worker."""
    if model_ref.startswith(REGISTRY_SCHEMES):
        features = model_registry.model_features(model_ref)
    else:
        card = Path(model_ref).with_suffix(".json")
        features = json.loads(card.read_text())["features"] if card.exists() else None
    with profiler.stage("predict"), stage_bars():
        return predict_files.submit(
            data, out, model_ref, target=target, features=features, method=method,
            block_rows=block_rows, tracking_uri=tracking.current_uri(),
        ).result()  # fmt: skip


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, default=str)))


@contextmanager
def _profile_logged(profiler: RunProfiler, trained: Trained | None = None):
    """Draw the run's profile in a child process while the block runs (logging the model to
    MLflow, registering it), then log the figures: the run's end waits for the slower of
    the two, not for both."""
    blocks = trained.fitted.blocks_path if trained else None
    origin = trained.fitted.blocks_origin if trained else 0.0
    drawing = profiler.draw(blocks, origin)
    try:
        yield
    except BaseException:
        drawing.cancel()
        with suppress(Exception):
            profiler.report()  # written, so the cluster does not close under it
        raise
    files = drawing.result() + profiler.report()
    tracking.log_files([*files, blocks] if blocks else files)
    tracking.log_cluster(profiler.client)


@dataclass(frozen=True)
class TrainResult:
    """A train flow run: the training, and what the registry decided."""

    trained: Trained
    registered: model_registry.Decision
    links: list[tuple[str, str]]


@dataclass(frozen=True)
class PredictResult:
    predicted: Predicted
    model_version: str | None
    links: list[tuple[str, str]]


@dataclass(frozen=True)
class PipelineResult:
    generated: Generated
    trained: Trained
    registered: model_registry.Decision
    predicted: Predicted
    predicted_with: str  # "this run's model" or "champion vN"
    links: list[tuple[str, str]]


# -- flows ----------------------------------------------------------------------------------


@flow(name="generate-dataset", version=VERSION, task_runner=dask_task_runner(), log_prints=True)
def generate_dataset(
    out: str,
    dataset: DatasetConfig = DatasetConfig(),  # noqa: B008 (pydantic defaults render in the UI)
    workdir: str | None = None,
) -> Generated:
    """Write a synthetic parquet dataset on the cluster (complete files are kept)."""
    with tracking.flow_run_tracking("generate-dataset", _workdir(workdir), _prefect_link()) as run:
        generated = run_generate(out, dataset)
        tracking.log_generation(generated)
    publish_summary(generated=generated, links=_links(run))
    return generated


@flow(name="train", version=VERSION, task_runner=dask_task_runner(), log_prints=True)
def train(
    data: str,
    target: str | None = "y",
    model: ModelConfig = ModelConfig(),  # noqa: B008
    training: TrainingConfig = TrainingConfig(),  # noqa: B008
    registry: RegistryConfig = RegistryConfig(),  # noqa: B008
    workdir: str | None = None,
    preprocess: PreprocessConfig = PreprocessConfig(),  # noqa: B008
) -> TrainResult:
    """Check the data, fit the scaler, stream the fit, evaluate on the holdout rows, log
    everything to MLflow and register the model (champion only if it is better)."""
    root = _workdir(workdir)
    with tracking.flow_run_tracking("train", root, _prefect_link()) as run:
        with RunProfiler(_run_dir(root) / "profile") as profiler:
            trained = run_train(data, target, model, training, preprocess, root, profiler)
        with _profile_logged(profiler, trained):
            candidate = log_training_run(trained, registry)
        registered = register_model(candidate)
    result = TrainResult(trained, registered, _links(run))
    publish_summary(trained=trained, registered=registered, links=_links(run))
    return result


@flow(name="batch-predict", version=VERSION, task_runner=dask_task_runner(), log_prints=True)
def batch_predict(
    data: str,
    out: str | None = None,
    model: str | None = None,
    registered_model: str = registered_name("classification"),
    target: str | None = "y",
    method: Method = "predict",
    block_rows: int = DEFAULT_BLOCK_ROWS,
    workdir: str | None = None,
) -> PredictResult:
    """Predict every file under ``data`` into ``out``, one output per input file.

    ``model`` is a registry URI or a saved model path; by default the registry's
    ``champion`` of ``registered_model``, pinned to its version for the whole run.
    ``out`` defaults to a directory of this flow run, so scheduled runs never mix.
    """
    root = _workdir(workdir)
    out = out or str(root / "predictions" / _run_id())
    with tracking.flow_run_tracking("batch-predict", root, _prefect_link()) as run:
        model_ref, version = (
            (model, None) if model else model_registry.champion_uri(registered_model)
        )
        with RunProfiler(_run_dir(root) / "profile") as profiler:
            predicted = run_predict(data, out, model_ref, target, method, block_rows, profiler)
        with _profile_logged(profiler):
            tracking.log_prediction(predicted, version)
    publish_summary(predicted=predicted, links=_links(run))
    return PredictResult(predicted, version, _links(run))


@flow(name="pipeline", version=VERSION, task_runner=dask_task_runner(), log_prints=True)
def pipeline(
    dataset: DatasetConfig = DatasetConfig(),  # noqa: B008
    model: ModelConfig = ModelConfig(),  # noqa: B008
    training: TrainingConfig = TrainingConfig(),  # noqa: B008
    registry: RegistryConfig = RegistryConfig(),  # noqa: B008
    workdir: str | None = None,
    preprocess: PreprocessConfig = PreprocessConfig(),  # noqa: B008
) -> PipelineResult:
    """End to end: generate if missing, preprocess, fit, evaluate, predict with the
    champion (the new model if it beats the old one), then register the new model."""
    root = _workdir(workdir)
    data = str(dataset_dir(root, dataset))
    with tracking.flow_run_tracking("pipeline", root, _prefect_link()) as run:
        with RunProfiler(_run_dir(root) / "profile") as profiler:
            with profiler.stage("generate"):
                generated = run_generate(data, dataset)
            trained = run_train(data, "y", model, training, preprocess, root, profiler)
            candidate = log_training_run(trained, registry)
            if candidate.decision.promoted:
                model_ref, version, used = candidate.model_uri, None, "this run's model"
            else:
                model_ref, version = model_registry.champion_uri(candidate.name)
                used = f"champion v{version}"
            out = str(root / "predictions" / _run_id())
            predicted = run_predict(
                data, out, model_ref, "y", "predict", training.block_rows, profiler
            )
        with _profile_logged(profiler, trained):
            tracking.log_generation(generated)
        # Last, so a run that fails anywhere registers nothing.
        registered = register_model(candidate)
        # The version that made the predictions: this run's, once registered, or the
        # champion pinned before predicting (whatever the registry decided since).
        tracking.log_prediction(predicted, registered.version if version is None else version)
    if version is None:
        used = f"this run's model, registered as {candidate.name} v{registered.version}"
    publish_summary(
        generated=generated, trained=trained, registered=registered, predicted=predicted,
        predicted_with=used, links=_links(run),
    )  # fmt: skip
    return PipelineResult(generated, trained, registered, predicted, used, _links(run))


@dataclass(frozen=True)
class TuneResult:
    """A tune flow run: the search, the best model's holdout metrics, the registry."""

    searched: Searched
    evaluated: object  # tasks.evaluation.Evaluated
    registered: model_registry.Decision
    links: list[tuple[str, str]]


@flow(name="tune", version=VERSION, task_runner=dask_task_runner(), log_prints=True)
def tune(
    data: str,
    search: SearchConfig,
    target: str | None = "y",
    model: ModelConfig = ModelConfig(),  # noqa: B008
    training: TrainingConfig = TrainingConfig(),  # noqa: B008
    registry: RegistryConfig = RegistryConfig(),  # noqa: B008
    workdir: str | None = None,
    preprocess: PreprocessConfig = PreprocessConfig(),  # noqa: B008
) -> TuneResult:
    """Race candidates of the estimator on the training rows (Hyperband: a few passes over
    the data, not one per candidate), refit the best, evaluate it on the holdout rows, log
    every candidate as a child MLflow run, and register the best (champion only if better)."""
    search.check_names(model)  # before any work: a misspelt parameter fails here
    make_search(model, training, search, callback=None).metadata  # noqa: B018 - the budget
    root = _workdir(workdir)
    run_dir = str(_run_dir(root))
    with tracking.flow_run_tracking("tune", root, _prefect_link()) as run:
        plan = _check(data, target, model, training, preprocess)
        with stage_bars():
            preprocessed = fit_preprocessing.submit(
                plan.train, model, run_dir, _stats_cache(root, training), preprocess
            ).result()
            searched = search_model.submit(
                plan.train, model, training, search, preprocessed, run_dir
            ).result()
            evaluated = evaluate_model.submit(searched.model_path, plan.holdout).result()
        example = sample_rows(plan)
        tracking.log_holdout(evaluated.metrics)
        tracking.log_search(searched, model, search)
        tracking.log_dataset(plan, example)
        name, metric, direction = registry.resolve(model.kind)
        pipeline = load_object(searched.model_path)
        model_uri = tracking.log_model(pipeline, example)
        decision = model_registry.decide(name, metric, direction, evaluated.metrics.get(metric))
        registered = register_model(Candidate(name, model_uri, decision))
    publish_summary(
        searched=searched, evaluated=evaluated, registered=registered, links=_links(run)
    )
    return TuneResult(searched, evaluated, registered, _links(run))
