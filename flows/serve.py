"""``ooc serve``: the pipeline and batch_predict on cron schedules, train and tune on demand."""

from __future__ import annotations

import os

from ooc.tasks.config import DatasetConfig
from ooc.tasks.settings import get_settings

# What the served tune deployment searches unless its run is given another space.
TUNE_SEARCH = {"space": {"alpha": "loguniform:1e-7:1e-2"}}


def build_deployments(
    workdir: str,
    dataset: DatasetConfig,
    train_cron: str,
    predict_cron: str,
    predict_data: str | None = None,
    predict_out: str | None = None,
    tune_cron: str | None = None,
):
    """The deployments ``ooc serve`` serves (also used by tests).

    Entrypoints are module paths (``ooc.flows.pipeline.pipeline``), not file paths: a flow
    loaded from a file gets a module name the Dask scheduler and workers cannot import,
    so its runs could not ship tasks to an existing cluster (``OOC_DASK_ADDRESS``).
    """
    from prefect.deployments.runner import EntrypointType

    from .pipeline import batch_predict, dataset_dir, pipeline, train, tune

    data = predict_data or str(dataset_dir(workdir, dataset))
    return [
        pipeline.to_deployment(
            name="ooc-pipeline",
            entrypoint_type=EntrypointType.MODULE_PATH,
            cron=train_cron,
            parameters={"dataset": dataset.model_dump(), "workdir": workdir},
            description="Generate if missing, preprocess, fit, evaluate, predict, register.",
            tags=["ooc"],
        ),
        batch_predict.to_deployment(
            name="ooc-batch-predict",
            entrypoint_type=EntrypointType.MODULE_PATH,
            cron=predict_cron,
            parameters={"data": data, "out": predict_out, "workdir": workdir},
            description="Predict the dataset with the registry's champion, disk to disk.",
            tags=["ooc"],
        ),
        train.to_deployment(
            name="ooc-train",
            entrypoint_type=EntrypointType.MODULE_PATH,
            parameters={"data": data, "workdir": workdir},
            description="Train on demand.",
            tags=["ooc"],
        ),
        tune.to_deployment(
            name="ooc-tune",
            entrypoint_type=EntrypointType.MODULE_PATH,
            cron=tune_cron,
            parameters={"data": data, "search": TUNE_SEARCH, "workdir": workdir},
            description="Search the model's regularisation (Hyperband over streamed "
            "candidates), register the best; on demand unless --tune-cron is given.",
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
    given = {
        k: getattr(args, k)
        for k in DatasetConfig.model_fields
        if getattr(args, k, None) is not None
    }
    deployments = build_deployments(
        workdir=str(args.workdir or settings.workdir),
        dataset=DatasetConfig(**given),
        train_cron=args.train_cron or settings.train_cron,
        predict_cron=args.predict_cron or settings.predict_cron,
        predict_data=args.predict_data,
        predict_out=args.predict_out,
        tune_cron=args.tune_cron,
    )
    api = os.environ["PREFECT_API_URL"].removesuffix("/api")
    print(
        f"Serving {len(deployments)} deployments ({', '.join(d.name for d in deployments)}) "
        f"on {api}: see them under Deployments in its UI. Ctrl-C stops serving.",
        flush=True,
    )
    prefect_serve(*deployments)
    return 0
