"""Prefect flows: generate_dataset, train, batch_predict, and the end-to-end pipeline.

Flows wire tasks and choose the task runner, nothing else. Each flow body is a plain
function so the ``pipeline`` flow can chain them under one task runner (one cluster).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from ooc.catalog import model_kind
from ooc.datasets import DatasetSpec
from ooc.files import atomic_write
from tasks import tracking
from tasks.data import check_dataset, plan_dataset, sample_rows, write_partition
from tasks.evaluation import evaluate_model
from tasks.prediction import REGISTRY_SCHEMES, plan_predictions, predict_partition
from tasks.profiling import RunProfiler
from tasks.settings import get_settings
from tasks.training import fit_model, fit_scaler

from .params import Dtype, Method, ModelConfig, RegistryConfig, Task, TrainingConfig
from .progress import track_fit, track_futures
from .runner import dask_task_runner


def _workdir(workdir: str | None) -> Path:
    return Path(workdir) if workdir else get_settings().workdir


def dataset_dir(
    workdir: str | Path, task: str, rows: int, features: int, chunk_rows: int, seed: int
) -> Path:
    """Where the pipeline keeps the dataset of these parameters (one per parameter set)."""
    return Path(workdir) / "data" / f"{task}-{rows}x{features}-{chunk_rows}-seed{seed}"


def _run_id() -> str:
    return str(flow_run.get_id() or "local")


def _run_dir(workdir: Path) -> Path:
    run = workdir / "runs" / _run_id()
    run.mkdir(parents=True, exist_ok=True)
    return run


# -- flow bodies ------------------------------------------------------------------------------


def run_generate(out: str, spec: DatasetSpec) -> dict:
    start = time.perf_counter()
    n_partitions = plan_dataset(out, spec)
    futures = write_partition.map(unmapped(out), unmapped(spec), range(n_partitions))
    written = track_futures(futures, "partitions written")
    return {
        "path": str(out),
        "rows": spec.n_rows,
        "partitions": n_partitions,
        "written": sum(written),
        "seconds": time.perf_counter() - start,
    }


def run_train(
    data: str,
    target: str | None,
    model: ModelConfig,
    training: TrainingConfig,
    workdir: Path,
    profiler: RunProfiler,
) -> dict:
    logger = get_run_logger()
    run_dir = _run_dir(workdir)
    # Every footer is read and checked before any fitting starts.
    layout = check_dataset(
        data, target, training.holdout_fraction, training.split_seed, model_kind(model.name)
    )
    logger.info(
        "Data %s: %d rows in %d files, %d features; %d rows held out for evaluation.",
        data, layout["n_rows"], layout["n_files"], len(layout["features"]), layout["holdout_rows"],
    )  # fmt: skip
    split = (training.holdout_fraction, training.split_seed)
    with profiler.stage("preprocess"):
        scaler = fit_scaler.submit(data, target, model.name, *split, str(run_dir)).result()
    with profiler.stage("fit"):
        fit_future = fit_model.submit(
            data, target, model.model_dump(), training.model_dump(),
            scaler["scaler_path"], scaler["classes"], str(run_dir),
        )  # fmt: skip
        fit = track_fit(fit_future, run_dir / "progress.json")
    with profiler.stage("evaluate"):
        metrics = evaluate_model.submit(fit["model_path"], data, target, *split).result()
    card = {
        "model_path": fit["model_path"],
        "model": model.model_dump(),
        "training": training.model_dump(),
        "data": str(data),
        "target": target,
        "features": layout["features"],
        "classes": scaler["classes"],
        "metrics": {k: v for k, v in metrics.items() if k != "seconds"},
    }
    _write_json(Path(fit["model_path"]).with_suffix(".json"), card)
    return {"layout": layout, "scaler": scaler, "fit": fit, "metrics": metrics, "card": card}


def run_predict(
    data: str, out: str, model_ref: str, target: str | None, method: str, profiler: RunProfiler
) -> dict:
    """Predict with a registry URI or a saved model path, one mapped task per file."""
    start = time.perf_counter()
    if model_ref.startswith(REGISTRY_SCHEMES):
        features = tracking.model_features(model_ref)
    else:
        card = Path(model_ref).with_suffix(".json")
        features = json.loads(card.read_text())["features"] if card.exists() else None
    with profiler.stage("predict"):
        jobs = plan_predictions(data, out, target, features)
        futures = predict_partition.map(
            jobs, range(len(jobs)), unmapped(model_ref), unmapped(method),
            unmapped(tracking.current_uri()),
        )  # fmt: skip
        results = track_futures(futures, "partitions predicted")
    return {
        "out": str(out),
        "files": len(results),
        "rows": sum(r["rows"] for r in results),
        "written": sum(r["written"] for r in results),
        "model_path": model_ref,
        "seconds": time.perf_counter() - start,
    }


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, default=str)))


def _log_profile(profiler: RunProfiler, trained: dict | None = None) -> None:
    blocks = trained["fit"]["blocks_path"] if trained else None
    files = profiler.figures(blocks)
    tracking.log_files([*files, blocks] if blocks else files)
    tracking.log_cluster(profiler.client)


def _candidate(trained: dict, registry: RegistryConfig, model: ModelConfig) -> dict:
    """Log the trained model and decide (without writing the registry) if it is better."""
    name, metric, direction = registry.resolve(model.name)
    model_uri = tracking.log_training(
        trained, sample_rows(trained["card"]["data"], trained["card"]["features"])
    )
    score = trained["metrics"].get(metric)
    return {
        "name": name,
        "model_uri": model_uri,
        "decision": tracking.decide(name, metric, direction, score),
    }


def _register(candidate: dict) -> tracking.Decision:
    decision = tracking.register(candidate["name"], candidate["model_uri"], candidate["decision"])
    get_run_logger().info(
        "Registered %s version %s: %s.", candidate["name"], decision.version, decision.reason
    )
    return decision


# -- flows ----------------------------------------------------------------------------------


@flow(name="generate-dataset", task_runner=dask_task_runner(), log_prints=True)
def generate_dataset(
    out: str,
    rows: int = 3_000_000,
    features: int = 20,
    chunk_rows: int = 250_000,
    task: Task = "classification",
    dtype: Dtype = "float64",
    seed: int = 0,
    workdir: str | None = None,
) -> dict:
    """Write a synthetic parquet dataset, one retried task per partition."""
    spec = DatasetSpec(rows, features, chunk_rows, task, dtype, seed)
    with tracking.flow_run_tracking("generate-dataset", _workdir(workdir)):
        result = run_generate(out, spec)
        tracking.log_generation(result)
    _summary({"generate": result})
    return result


@flow(name="train", task_runner=dask_task_runner(), log_prints=True)
def train(
    data: str,
    target: str | None = "y",
    model: ModelConfig = ModelConfig(),  # noqa: B008 (pydantic defaults render in the UI)
    training: TrainingConfig = TrainingConfig(),  # noqa: B008
    registry: RegistryConfig = RegistryConfig(),  # noqa: B008
    workdir: str | None = None,
) -> dict:
    """Check the data, fit the scaler, stream the fit, evaluate on the holdout files, log
    everything to MLflow and register the model (champion only if it is better)."""
    root = _workdir(workdir)
    with tracking.flow_run_tracking("train", root):
        with RunProfiler(_run_dir(root) / "profile") as profiler:
            result = run_train(data, target, model, training, root, profiler)
        candidate = _candidate(result, registry, model)
        _log_profile(profiler, result)
        result["registry"] = _register(candidate).__dict__
    _summary({"train": result})
    return result


@flow(name="batch-predict", task_runner=dask_task_runner(), log_prints=True)
def batch_predict(
    data: str,
    out: str | None = None,
    model: str | None = None,
    registered_model: str = "ooc-classification",
    target: str | None = "y",
    method: Method = "predict",
    workdir: str | None = None,
) -> dict:
    """Predict every file under ``data`` into ``out``, one retried task per file.

    ``model`` is a registry URI or a saved model path; by default the registry's
    ``champion`` of ``registered_model``, pinned to its version for the whole run.
    ``out`` defaults to a directory of this flow run, so scheduled runs never mix.
    """
    root = _workdir(workdir)
    out = out or str(root / "predictions" / _run_id())
    with tracking.flow_run_tracking("batch-predict", root):
        model_ref, version = (model, None) if model else tracking.champion_uri(registered_model)
        with RunProfiler(_run_dir(root) / "profile") as profiler:
            result = run_predict(data, out, model_ref, target, method, profiler)
        tracking.log_prediction(result)
        tracking.log_prediction_version(version)
        _log_profile(profiler)
    _summary({"predict": result})
    return result


@flow(name="pipeline", task_runner=dask_task_runner(), log_prints=True)
def pipeline(
    rows: int = 3_000_000,
    workdir: str | None = None,
    features: int = 20,
    chunk_rows: int = 250_000,
    task: Task = "classification",
    seed: int = 0,
    model: ModelConfig = ModelConfig(),  # noqa: B008
    training: TrainingConfig = TrainingConfig(),  # noqa: B008
    registry: RegistryConfig = RegistryConfig(),  # noqa: B008
) -> dict:
    """End to end: generate if missing, preprocess, fit, evaluate, predict with the
    champion (the new model if it beats the old one), then register the new model."""
    root = _workdir(workdir)
    spec = DatasetSpec(rows, features, chunk_rows, task, "float64", seed)
    data = str(dataset_dir(root, task, rows, features, chunk_rows, seed))
    with tracking.flow_run_tracking("pipeline", root):
        with RunProfiler(_run_dir(root) / "profile") as profiler:
            with profiler.stage("generate"):
                generated = run_generate(data, spec)
            trained = run_train(data, "y", model, training, root, profiler)
            candidate = _candidate(trained, registry, model)
            decision = candidate["decision"]
            model_ref = (
                candidate["model_uri"]
                if decision.promoted
                else tracking.champion_uri(candidate["name"])[0]
            )
            out = str(root / "predictions" / _run_id())
            predicted = run_predict(data, out, model_ref, "y", "predict", profiler)
        tracking.log_generation(generated)
        tracking.log_prediction(predicted)
        _log_profile(profiler, trained)
        # Last, so a run that fails anywhere registers nothing.
        registered = _register(candidate)
        trained["registry"] = registered.__dict__
        tracking.log_prediction_version(
            registered.version if decision.promoted else registered.champion_version
        )
    result = {"generate": generated, "train": trained, "predict": predicted}
    _summary(result)
    return result


# -- run summary ------------------------------------------------------------------------------


def _summary(result: dict) -> str:
    """A markdown artifact with data, model, metrics and timings; also printed to the log."""
    lines = ["# ooc run summary", ""]
    stages = []
    if "generate" in result:
        g = result["generate"]
        lines.append(
            f"**Data** `{g['path']}`: {g['rows']:,} rows, {g['partitions']} partitions "
            f"({g['written']} written now)."
        )
        stages.append(("generate", g["seconds"], g["rows"] if g["written"] else None))
    if "train" in result:
        t = result["train"]
        card, fit = t["card"], t["fit"]
        lines += [
            f"**Model** `{card['model']['name']}` {card['model']['params'] or ''} → "
            f"`{card['model_path']}`",
            f"trained on {fit['n_samples_seen']:,} rows over {fit['n_epochs']} epoch(s)"
            + (f", resumed from {fit['resumed_from']}" if fit["resumed_from"] else ""),
            "",
            "| metric (holdout) | value |",
            "|---|---|",
            *[f"| {k} | {v:.6g} |" for k, v in card["metrics"].items()],
        ]
        rows = t["layout"]["train_rows"]
        stages += [
            ("preprocess", t["scaler"]["seconds"], rows),
            ("fit", fit["seconds"], fit["n_samples_seen"]),
            ("evaluate", t["metrics"]["seconds"], t["layout"]["holdout_rows"]),
        ]
    if "predict" in result:
        p = result["predict"]
        lines.append(f"\n**Predictions** `{p['out']}`: {p['files']} files, {p['rows']:,} rows.")
        stages.append(("predict", p["seconds"], p["rows"] if p["written"] else None))
    lines += ["", "| stage | seconds | rows/s |", "|---|---|---|"]
    for stage, seconds, rows in stages:
        rate = f"{rows / seconds:,.0f}" if rows and seconds else "–"
        lines.append(f"| {stage} | {seconds:.2f} | {rate} |")
    markdown = "\n".join(lines)
    create_markdown_artifact(markdown, key="ooc-run-summary", description="ooc run summary")
    get_run_logger().info("\n%s", markdown)
    return markdown
