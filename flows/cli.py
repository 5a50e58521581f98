"""The ``ooc`` command line: generate, train, predict, run, serve.

Without ``PREFECT_API_URL``, one local Prefect API is started for the command and shared
with the Dask worker processes, so every task run lands in the same place (Prefect's
local database, which ``prefect server start`` then shows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager

# Before dask is imported, so worker processes inherit it too: keep the terminal readable.
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Stdout is the command's JSON result; MLflow would print each run's link there (the flow
# run's link artifact holds it).
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

from ooc.catalog import MODELS  # noqa: E402
from ooc.datasets import TASKS  # noqa: E402


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"ooc: --param expects NAME=VALUE, got {pair!r}")
        params[key] = _value(value)
    return params


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="sgd-classifier", choices=sorted(MODELS))
    p.add_argument(
        "--param", action="append", metavar="NAME=VALUE", help="estimator parameter (repeatable)"
    )
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--shuffle-blocks", action="store_true")
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("--prefetch", type=int, default=2)
    p.add_argument("--early-stopping", action="store_true")
    p.add_argument("--holdout-fraction", type=float, default=0.1)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="fit N model replicas at once, one per Dask worker, averaged every --sync-every",
    )
    p.add_argument("--sync-every", type=int, default=4)


def _model_configs(args):
    from pydantic import ValidationError

    from .params import ModelConfig, TrainingConfig

    try:
        model = ModelConfig(name=args.model, params=_params(args.param))
        training = TrainingConfig(
            epochs=args.epochs,
            shuffle_blocks=args.shuffle_blocks,
            random_state=args.random_state,
            prefetch=args.prefetch,
            early_stopping=args.early_stopping,
            holdout_fraction=args.holdout_fraction,
            checkpoint_every=args.checkpoint_every,
            replicas=args.replicas,
            sync_every=args.sync_every,
        )
    except ValidationError as err:
        problems = [(".".join(map(str, e["loc"])), e["msg"]) for e in err.errors()]
        message = "; ".join(f"{at}: {m}" if at else m for at, m in problems)
        raise SystemExit(f"ooc: {message}") from None
    return model, training


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ooc", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a synthetic parquet dataset")
    g.add_argument("--out", required=True)
    g.add_argument("--rows", type=int, required=True)
    g.add_argument("--features", type=int, default=20)
    g.add_argument("--chunk-rows", type=int, default=500_000)
    g.add_argument("--task", default="classification", choices=TASKS)
    g.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workdir", default=None, help="where the MLflow store lives")

    t = sub.add_parser("train", help="fit a pipeline on a parquet dataset")
    t.add_argument("--data", required=True)
    t.add_argument("--target", default="y")
    t.add_argument("--workdir", default=None)
    _add_model_args(t)

    p = sub.add_parser("predict", help="predict every file of a dataset, disk to disk")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--model",
        default=None,
        help="registry URI (models:/name/3) or saved model path (default: the champion)",
    )
    p.add_argument("--registered-model", default="ooc-classification")
    p.add_argument("--target", default="y", help="column to leave out of the features")
    p.add_argument("--method", default="predict")
    p.add_argument("--workdir", default=None)

    r = sub.add_parser("run", help="the end-to-end pipeline flow")
    r.add_argument("--rows", type=int, default=3_000_000)
    r.add_argument("--workdir", default=None)
    r.add_argument("--features", type=int, default=20)
    r.add_argument("--chunk-rows", type=int, default=250_000)
    r.add_argument("--task", default="classification", choices=TASKS)
    r.add_argument("--seed", type=int, default=0)
    _add_model_args(r)

    s = sub.add_parser("serve", help="serve scheduled deployments (needs a Prefect server)")
    s.add_argument("--workdir", default=None)
    s.add_argument("--rows", type=int, default=3_000_000, help="pipeline dataset size")
    s.add_argument("--train-cron", default=None, help="pipeline schedule (OOC_TRAIN_CRON)")
    s.add_argument("--predict-cron", default=None, help="batch_predict schedule (OOC_PREDICT_CRON)")
    s.add_argument("--predict-data", default=None, help="data batch_predict reads")
    s.add_argument("--predict-out", default=None, help="where batch_predict writes")
    return top


@contextmanager
def prefect_api():
    """Use ``PREFECT_API_URL`` if set; otherwise start one local API for this command."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url  # inherited by the Dask workers
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        _drain_to(server)
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def preflight() -> None:
    """Check that the servers the environment names answer, before any work starts.

    ``PREFECT_API_URL`` and an http(s) ``MLFLOW_TRACKING_URI`` are each asked for their
    ``/health`` with a short timeout; without this check their clients retry for minutes.
    Exits with a message naming the URL and the variable to fix.
    """
    from tasks.tracking import ServiceUnreachable, check_reachable, check_tracking_server

    try:
        if os.environ.get("PREFECT_API_URL"):
            check_reachable(
                os.environ["PREFECT_API_URL"],
                "Prefect API",
                "PREFECT_API_URL",
                "Start the server (`prefect server start`), or fix PREFECT_API_URL; unset, "
                "ooc starts a local API for the command.",
            )
        check_tracking_server()
    except ServiceUnreachable as err:
        raise SystemExit(f"ooc: {err}") from None


def _drain_to(server) -> None:
    """Send queued logs and events before the API stops (else they retry for a minute)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    EventsWorker.drain_all(timeout=10)


def _print_result(result: dict) -> None:
    from rich.console import Console

    Console().print_json(json.dumps(result, default=str))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from . import pipeline as flows

    if args.command == "serve":
        from .serve import serve

        preflight()
        return serve(args)
    # Checked before any API or cluster starts.
    configs = _model_configs(args) if args.command in ("train", "run") else None
    preflight()
    with prefect_api():
        if args.command == "generate":
            result = flows.generate_dataset(
                out=args.out, rows=args.rows, features=args.features, chunk_rows=args.chunk_rows,
                task=args.task, dtype=args.dtype, seed=args.seed, workdir=args.workdir,
            )  # fmt: skip
        elif args.command == "train":
            model, training = configs
            result = flows.train(
                data=args.data, target=args.target, model=model, training=training,
                workdir=args.workdir,
            )  # fmt: skip
        elif args.command == "predict":
            result = flows.batch_predict(
                data=args.data, out=args.out, model=args.model, target=args.target,
                method=args.method, workdir=args.workdir,
                registered_model=args.registered_model,
            )  # fmt: skip
        else:
            model, training = configs
            result = flows.pipeline(
                rows=args.rows, workdir=args.workdir, features=args.features,
                chunk_rows=args.chunk_rows, task=args.task, seed=args.seed, model=model,
                training=training,
            )  # fmt: skip
            _where_to_look(result)
            return 0
    _print_result(result)
    return 0


def _where_to_look(result: dict) -> None:
    from rich.console import Console

    console = Console()
    card = result["train"]["card"]
    console.print(f"\n[bold]data[/]        {result['generate']['path']}")
    console.print(f"[bold]model[/]       {card['model_path']}")
    console.print(f"[bold]metrics[/]     {card['metrics']}")
    console.print(f"[bold]predictions[/] {result['predict']['out']}")
    console.print(
        "[bold]Prefect UI[/]  run `prefect server start` and open http://127.0.0.1:4200 "
        "(flow runs, task runs, the summary and progress artifacts)"
    )


if __name__ == "__main__":
    sys.exit(main())
