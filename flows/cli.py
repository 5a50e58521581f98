"""The ooc command line: generate, convert, train, predict, run, serve.

Options are built from the same typed settings the flows take (tasks/config.py), so every
default and bound is stated once. Without PREFECT_API_URL, each command starts a temporary
Prefect API and a Dask LocalCluster together (see flows/session.py); its runs are kept in
Prefect's local database, which `prefect server start` shows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import types
import typing
from dataclasses import asdict, is_dataclass

# Before dask or prefect is imported, so worker processes inherit it too: a quiet terminal.
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# The embedded cluster's workers are threads of this process, and their statistical profiler
# (a stack walk of every busy thread each 10 ms) holds the GIL they need: off, prediction's
# stage at 100M rows was 0.35-0.8 s faster in the medians of two series (README).
# `DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=true` brings back the report's profile tabs.
os.environ.setdefault("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "false")
# The flow run's link artifact and the summary hold the MLflow run's link.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

from ooc.tasks.config import (  # noqa: E402 - after the environment above
    DatasetConfig,
    Method,
    ModelConfig,
    PreprocessConfig,
    SearchConfig,
    TrainingConfig,
    registered_name,
)

DESCRIPTION = "scikit-learn on data larger than memory: Prefect flows on Dask, tracked in MLflow."


# -- options from the settings' fields ----------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_fields(parser, model, skip=()) -> None:
    """One option per field of ``model``: its type, bounds' checks, help and default."""
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        default, kind = info.get_default(call_default_factory=True), info.annotation
        if isinstance(default, list):
            default = ",".join(default) or "none"
        args = typing.get_args(kind)
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in args if a is not type(None))
            args = typing.get_args(kind)
        help_text = f"{info.description.rstrip('.')} (default: {default})"
        if kind is bool:
            parser.add_argument(
                _flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif typing.get_origin(kind) is list:
            parser.add_argument(
                _flag(name), type=_names, default=None, metavar="A,B", help=help_text
            )
        elif typing.get_origin(kind) is typing.Literal:
            parser.add_argument(_flag(name), choices=args, default=None, help=help_text)
        else:
            parser.add_argument(
                _flag(name),
                type=kind,
                default=None,
                metavar="N" if kind is int else None,
                help=help_text,
            )


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _given(args, model, skip=()) -> dict:
    return {
        name: getattr(args, name)
        for name in model.model_fields
        if name not in skip and getattr(args, name, None) is not None
    }


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _params(pairs: list[str] | None) -> dict:
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"ooc: --param expects NAME=VALUE, got {pair!r}")
        params[key] = _value(value)
    return params


def _config(args, cls):
    if cls is ModelConfig:
        return ModelConfig(name=args.model, params=_params(args.param))
    if cls is SearchConfig:
        space = {}
        for pair in args.space:
            name, sep, spec = pair.partition("=")
            if not sep or not name:
                raise SystemExit(f"ooc: --space expects NAME=SPEC, got {pair!r}")
            space[name] = spec
        return SearchConfig(space=space, **_given(args, SearchConfig, skip=("space",)))
    return cls(**_given(args, cls))


def check_search(model, search, training) -> None:
    """The names searched and the budget, checked before any work."""
    from ooc.tasks.tuning import make_search

    search.check_names(model)
    make_search(model, training, search, callback=None).metadata  # noqa: B018 - the plan


def _configs(args, *classes):
    """Validate the options into the settings' models; any problem stops the command here."""
    from pydantic import ValidationError

    try:
        return [_config(args, cls) for cls in classes]
    except (ValidationError, ValueError) as err:
        if isinstance(err, ValidationError):
            problems = [(".".join(map(str, e["loc"])), e["msg"]) for e in err.errors()]
            message = "; ".join(f"{at}: {m}" if at else m for at, m in problems)
        else:
            message = str(err)
        raise SystemExit(f"ooc: {message}") from None


def _add_model(parser) -> None:
    from ooc.catalog import MODELS

    default = ModelConfig.model_fields["name"].default
    parser.add_argument(
        "--model",
        default=default,
        choices=sorted(MODELS),
        metavar="NAME",
        help=f"estimator, one of {', '.join(sorted(MODELS))} (default: {default})",
    )
    parser.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="an estimator parameter, e.g. alpha=1e-5 (repeatable)",
    )


def _add_common(parser) -> None:
    parser.add_argument(
        "--workdir",
        default=None,
        help="run directories, predictions and the MLflow store (default: $OOC_WORKDIR or .ooc)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON instead of a summary table"
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ooc", description=DESCRIPTION)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser(
        "generate",
        help="write a synthetic parquet dataset",
        description="Write a synthetic parquet dataset, in parallel.",
    )
    g.add_argument("--out", required=True, help="output directory")
    _add_fields(g, DatasetConfig)
    _add_common(g)

    c = sub.add_parser(
        "convert",
        help="convert CSV files to parquet, out of core",
        description="Convert one or many CSV files (gzip too) to parquet.",
    )
    c.add_argument("source", help="a CSV file or a directory of them")
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument(
        "--row-group-rows",
        type=int,
        default=500_000,
        metavar="N",
        help="rows per parquet row group (default: 500000)",
    )
    c.add_argument("--json", action="store_true", help="print the result as JSON")

    t = sub.add_parser(
        "train",
        help="fit a pipeline on a parquet dataset",
        description="Check, preprocess, fit, evaluate and register a model.",
    )
    t.add_argument("--data", required=True, help="parquet file or directory")
    t.add_argument("--target", default="y", help="target column (default: y)")
    _add_model(t)
    _add_fields(t, TrainingConfig)
    _add_fields(t, PreprocessConfig)
    _add_common(t)

    p = sub.add_parser(
        "predict",
        help="predict every file of a dataset, disk to disk",
        description="Predict every parquet file into one output file each.",
    )
    p.add_argument("--data", required=True, help="parquet file or directory to predict")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--model",
        default=None,
        help="registry URI (models:/name/3) or saved model "
        "path (default: the champion of --registered-model)",
    )
    default = registered_name("classification")
    p.add_argument(
        "--registered-model",
        default=default,
        help=f"registered model whose champion predicts (default: {default})",
    )
    p.add_argument(
        "--target", default="y", help="column left out of the features, if present (default: y)"
    )
    p.add_argument(
        "--method",
        default="predict",
        choices=typing.get_args(Method),
        help="model method whose output is written (default: predict)",
    )
    block_rows = TrainingConfig.model_fields["block_rows"]
    p.add_argument(
        "--block-rows",
        type=int,
        default=block_rows.default,
        metavar="N",
        help=f"{block_rows.description} (default: {block_rows.default})",
    )
    _add_common(p)

    r = sub.add_parser(
        "run",
        help="the end-to-end pipeline: generate, train, predict",
        description="Generate (if missing), train, predict and register.",
    )
    _add_fields(r, DatasetConfig)
    _add_model(r)
    _add_fields(r, TrainingConfig)
    _add_fields(r, PreprocessConfig)
    _add_common(r)

    u = sub.add_parser(
        "tune",
        help="search the estimator's parameters, streamed (Hyperband)",
        description="Race candidates of the estimator on the training blocks (a few passes "
        "over the data in all), refit the best, evaluate and register it.",
    )
    u.add_argument("--data", required=True, help="parquet file or directory")
    u.add_argument("--target", default="y", help="target column (default: y)")
    _add_model(u)
    u.add_argument(
        "--space",
        action="append",
        metavar="NAME=SPEC",
        required=True,
        help="a parameter's distribution (repeatable): loguniform:LOW:HIGH, uniform:LOW:HIGH, "
        "randint:LOW:HIGH, choice:A,B,... or a JSON list, e.g. alpha=loguniform:1e-6:1e-2",
    )
    _add_fields(u, SearchConfig, skip=("space",))
    _add_fields(u, TrainingConfig)
    _add_fields(u, PreprocessConfig)
    _add_common(u)

    s = sub.add_parser(
        "serve",
        help="serve scheduled deployments (needs a Prefect server)",
        description="Serve the pipeline and batch-predict on cron schedules, "
        "and train on demand, against PREFECT_API_URL.",
    )
    s.add_argument(
        "--train-cron",
        default=None,
        help="pipeline schedule (default: $OOC_TRAIN_CRON or 0 2 * * *)",
    )
    s.add_argument(
        "--predict-cron",
        default=None,
        help="batch-predict schedule (default: $OOC_PREDICT_CRON or 0 3 * * *)",
    )
    s.add_argument(
        "--tune-cron", default=None, help="tune schedule (default: none; it runs on demand)"
    )
    s.add_argument(
        "--predict-data",
        default=None,
        help="data batch-predict reads (default: the pipeline's dataset)",
    )
    s.add_argument(
        "--predict-out",
        default=None,
        help="where batch-predict writes (default: a directory per run)",
    )
    _add_fields(s, DatasetConfig)
    s.add_argument("--workdir", default=None, help="as for the other commands")
    return top


# -- running ----------------------------------------------------------------------------------


def preflight() -> None:
    """Check that the servers the environment names answer, before any work starts.

    ``PREFECT_API_URL`` and an http(s) ``MLFLOW_TRACKING_URI`` are each asked for their
    ``/health`` with a short timeout; without this check their clients retry for minutes.
    Exits with a message naming the URL and the variable to fix.
    """
    from ooc.tasks.health import ServiceUnreachable, check_reachable, check_tracking_server

    try:
        if os.environ.get("PREFECT_API_URL"):
            check_reachable(
                os.environ["PREFECT_API_URL"],
                "Prefect API",
                "PREFECT_API_URL",
                "Start the server (`prefect server start`), or fix PREFECT_API_URL; unset, "
                "ooc starts a local API for the command.",
            )
        check_tracking_server(os.environ.get("MLFLOW_TRACKING_URI", ""))
    except ServiceUnreachable as err:
        raise SystemExit(f"ooc: {err}") from None


def _jsonable(value):
    if is_dataclass(value):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _run_flow(args, session):
    from . import pipeline as flows
    from .runner import dask_task_runner

    runner = dask_task_runner()
    if args.command == "generate":
        (dataset,) = _configs(args, DatasetConfig)
        return flows.generate_dataset.with_options(task_runner=runner)(
            out=args.out, dataset=dataset, workdir=args.workdir
        )
    if args.command == "train":
        model, training, preprocess = args.configs
        return flows.train.with_options(task_runner=runner)(
            data=args.data,
            target=args.target,
            model=model,
            training=training,
            preprocess=preprocess,
            workdir=args.workdir,
        )
    if args.command == "predict":
        return flows.batch_predict.with_options(task_runner=runner)(
            data=args.data,
            out=args.out,
            model=args.model,
            target=args.target,
            method=args.method,
            block_rows=args.block_rows,
            workdir=args.workdir,
            registered_model=args.registered_model,
        )
    if args.command == "tune":
        model, search, training, preprocess = args.configs
        return flows.tune.with_options(task_runner=runner)(
            data=args.data,
            target=args.target,
            model=model,
            search=search,
            training=training,
            preprocess=preprocess,
            workdir=args.workdir,
        )
    dataset, model, training, preprocess = args.configs
    return flows.pipeline.with_options(task_runner=runner)(
        dataset=dataset,
        model=model,
        training=training,
        preprocess=preprocess,
        workdir=args.workdir,
    )


def _convert(args) -> int:
    import ooc

    result = ooc.convert_csv(args.source, args.out, row_group_rows=args.row_group_rows)
    if args.json:
        print(json.dumps(_jsonable(result), indent=2))
    else:
        print(
            f"{len(result.files)} parquet file(s), {result.n_rows:,} rows, in {result.out} "
            f"({len(result.written)} written, {len(result.kept)} already complete)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parser().parse_args(argv)
    if args.command == "convert":
        return _convert(args)
    if args.command == "serve":
        from .serve import serve

        preflight()
        return serve(args)
    preflight()
    from ooc.tasks.settings import get_settings

    from .session import command_session

    def check():  # before the cluster starts: a bad option costs nothing
        if args.command == "train":
            args.configs = _configs(args, ModelConfig, TrainingConfig, PreprocessConfig)
        elif args.command == "run":
            args.configs = _configs(
                args, DatasetConfig, ModelConfig, TrainingConfig, PreprocessConfig
            )
        elif args.command == "tune":
            args.configs = _configs(
                args, ModelConfig, SearchConfig, TrainingConfig, PreprocessConfig
            )
            try:
                check_search(*args.configs[:3])
            except ValueError as err:
                raise SystemExit(f"ooc: {err}") from None

    def import_flows():
        from . import pipeline  # noqa: F401 - prefect, mlflow: seconds of imports

    def open_tracking_store():
        # Opening MLflow's store checks its schema (~1 s here); done while the API starts,
        # the flow's own opening finds it open. An error is the flow's to report.
        from ooc.tasks import tracking

        with contextlib.suppress(Exception):
            tracking.open_store(args.workdir or None)

    try:
        with command_session(
            get_settings(), check=check, meanwhile=import_flows, then=open_tracking_store
        ) as session:
            try:
                result = _run_flow(args, session)
            except Exception as err:  # noqa: BLE001 - the log above has the traceback
                print(f"ooc: {args.command} failed: {err}", file=sys.stderr)
                return 1
    except KeyboardInterrupt as stop:
        print(
            f"ooc: {args.command} stopped ({stop or 'Ctrl-C'}). Nothing partial was written; "
            "run the same command again to continue (complete outputs are kept).",
            file=sys.stderr,
        )
        return 130
    if args.json:
        print(json.dumps(_jsonable(result), indent=2, default=str))
    else:
        from .terminal import print_result

        print_result(args.command, result, session, time.perf_counter() - started)
    return 0


def entry() -> None:
    """The ``ooc`` command: :func:`main`, then an exit without the interpreter's teardown.

    Once a command has stopped its cluster and its API and printed its result, nothing is
    left to do, but finalizing the modules of Prefect, MLflow and Dask still took about 2 s
    of wall time before the shell got its prompt back.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
