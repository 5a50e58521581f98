"""``ooc serve``: the pipeline and batch_predict on cron schedules, plus train on demand."""

from __future__ import annotations

import os

from tasks.settings import get_settings


def build_deployments(
    workdir: str,
    rows: int,
    train_cron: str,
    predict_cron: str,
    predict_data: str | None = None,
    predict_out: str | None = None,
):
    """The deployments ``ooc serve`` serves (also used by tests).

    Entrypoints are module paths (``flows.pipeline.pipeline``), not file paths: a flow
    loaded from a file gets a module name the Dask scheduler and workers cannot import,
    so its runs could not ship tasks to an existing cluster (``OOC_DASK_ADDRESS``).
    """
    from prefect.deployments.runner import EntrypointType

    from .pipeline import batch_predict, dataset_dir, pipeline, train

    data = predict_data or str(dataset_dir(workdir, "classification", rows, 20, 250_000, 0))
    return [
        pipeline.to_deployment(
            name="ooc-pipeline",
            entrypoint_type=EntrypointType.MODULE_PATH,
            cron=train_cron,
            parameters={"rows": rows, "workdir": workdir},
            description="Generate if missing, preprocess, fit, evaluate, predict.",
            tags=["ooc"],
        ),
        batch_predict.to_deployment(
            name="ooc-batch-predict",
            entrypoint_type=EntrypointType.MODULE_PATH,
            cron=predict_cron,
            parameters={"data": data, "out": predict_out, "workdir": workdir},
            description="Predict the dataset with the latest model, one task per file.",
            tags=["ooc"],
        ),
        train.to_deployment(
            name="ooc-train",
            entrypoint_type=EntrypointType.MODULE_PATH,
            parameters={"data": data, "workdir": workdir},
            description="Train on demand.",
            tags=["ooc"],
        ),
    ]


def serve(args) -> int:
    if not os.environ.get("PREFECT_API_URL"):
        raise SystemExit(
            "ooc serve needs a Prefect server to hold the schedules: run `prefect server start` "
            "and `export PREFECT_API_URL=http://127.0.0.1:4200/api`, then `ooc serve` again."
        )
    from prefect import serve as prefect_serve

    settings = get_settings()
    deployments = build_deployments(
        workdir=str(args.workdir or settings.workdir),
        rows=args.rows,
        train_cron=args.train_cron or settings.train_cron,
        predict_cron=args.predict_cron or settings.predict_cron,
        predict_data=args.predict_data,
        predict_out=args.predict_out,
    )
    prefect_serve(*deployments)
    return 0
