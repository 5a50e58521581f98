"""The pipeline end to end on the services of ``infra/docker-compose.yml``, run as processes.

PostgreSQL (Prefect's and MLflow's databases), ``prefect server start``, ``mlflow server``,
``dask scheduler`` and two ``dask worker`` run on 127.0.0.1 with the commands and the
environment the compose file gives them (``stack.py`` says what is substituted and why).
``ooc run`` then runs with the prefect-worker service's environment, as it would inside
that container, and every result is checked through the services' own APIs; a
``prefect worker`` of the compose file then runs the ``ooc-batch-predict`` deployment of
``infra/prefect.yaml`` with the registry's champion.
"""

from __future__ import annotations

import http.client
import importlib.util
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from .stack import INFRA, REPO, Stack, postgres_bin

pytestmark = pytest.mark.integration

ROWS, CHUNK_ROWS, FEATURES = 200_000, 25_000, 5
FILES = ROWS // CHUNK_ROWS
MODEL = "ooc-classification"
# One task run per stage. check_dataset, log_training_run and register_model run in the
# flow's process; the other stages on Dask.
STAGES = Counter(
    generate_partitions=1, check_dataset=1, fit_preprocessing=1, fit_model=1,
    evaluate_model=1, log_training_run=1, predict_files=1, register_model=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # Missing parts fail (CI installs them), before anything starts.
    try:
        postgres_bin()
    except FileNotFoundError as err:
        pytest.fail(str(err))
    for module, package in [("psycopg2", "psycopg2-binary"), ("asyncpg", "asyncpg")]:
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is missing (the servers' PostgreSQL driver): install {package}")
    # A password that is not the example's, so nothing passes by relying on a default.
    stack = Stack(
        tmp_path_factory.mktemp("stack"), {"POSTGRES_PASSWORD": secrets.token_urlsafe(12)}
    )
    try:
        scheduler = stack.start("dask-scheduler")
        stack.start_postgres()
        stack.wait_http(f"http://{stack.url('dask-scheduler', 8787)}/health", scheduler)
        workers = [stack.start("dask-worker", f"dask-worker-{i}") for i in (1, 2)]
        prefect = stack.start("prefect-server")
        mlflow = stack.start("mlflow")
        stack.wait_http(f"http://{stack.url('prefect-server', 4200)}/api/health", prefect)
        stack.wait_http(f"http://{stack.url('mlflow', 5000)}/health", mlflow)
        with dask_client(stack) as client:
            stack.wait(
                lambda: len(client.scheduler_info()["workers"]) == 2, workers, "2 Dask workers"
            )
        yield stack
    finally:
        stack.stop()


def dask_client(stack):
    from distributed import Client

    return Client(stack.scheduler_address, set_as_default=False, timeout=60)


@pytest.fixture(scope="module")
def pipeline_run(stack):
    """``ooc run`` with the prefect-worker container's environment; the scheduler records
    a task stream meanwhile."""
    env = stack.environment("prefect-worker", "ooc-run")
    script = Path(sys.executable).parent / "ooc"  # the console script, when installed
    ooc = [script] if script.exists() else [sys.executable, "-m", "ooc.flows.cli"]
    args = [
        *ooc, "run", "--rows", ROWS, "--chunk-rows", CHUNK_ROWS, "--features", FEATURES,
        "--block-rows", CHUNK_ROWS,
    ]  # fmt: skip
    with dask_client(stack) as client:
        start = time.time()
        client.get_task_stream(start=start)  # starts recording on the scheduler
        with open(stack.root / "logs" / "ooc-run.log", "ab") as log:
            try:
                result = subprocess.run(
                    [str(a) for a in args], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, timeout=300,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                pytest.fail(f"ooc run did not finish in 300 s\n{stack.logs(80)}")
        assert result.returncode == 0, f"ooc run failed\n{stack.logs(80)}"
        stream = client.get_task_stream(start=start)
        workers = set(client.scheduler_info()["workers"])
    return {"env": env, "task_stream": stream, "workers": workers}


LOAD_CHAMPION = """
import sys
import mlflow.sklearn
import numpy as np
import pyarrow.parquet as pq

uri, source, predicted = sys.argv[1:]
model = mlflow.sklearn.load_model(uri)
table = pq.read_table(source)
X = np.column_stack([table[name].to_numpy() for name in table.column_names if name != "y"])
same = np.array_equal(model.predict(X), pq.read_table(predicted)["prediction"].to_numpy())
print("same" if same else "different", len(X))
"""


def prefect_client(stack):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(f"http://{stack.url('prefect-server', 4200)}/api")


def mlflow_client(stack):
    from mlflow import MlflowClient

    url = f"http://{stack.url('mlflow', 5000)}"
    return MlflowClient(tracking_uri=url, registry_uri=url)


def wait_for_task_runs(client, flow_run_id, expected: Counter, stack) -> list:
    """Task-run states reach the API as events, possibly after the flow run ends."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    only = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    found = []

    def done() -> bool:
        found[:] = client.read_task_runs(flow_run_filter=only)
        counts = Counter(run.task_key.rsplit("-", 1)[0] for run in found)
        completed = all(run.state_type == "COMPLETED" for run in found)
        return completed and all(counts[k] == n for k, n in expected.items())

    try:
        stack.wait(done, stack.processes, "every task run COMPLETED", timeout=60)
    except TimeoutError:
        states = sorted((run.name, str(run.state_type)) for run in found)
        pytest.fail(f"task runs of {flow_run_id}: {states}\n{stack.logs()}")
    return found


def host_header_status(address: str, path: str, host: str) -> int:
    """What a server answers a client that calls it by ``host`` (a compose service name)."""
    hostname, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(hostname, int(port), timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host})
        return connection.getresponse().status
    finally:
        connection.close()


def test_pipeline_end_to_end_on_the_compose_services(stack, pipeline_run, tmp_path):
    logs = stack.logs
    workdir = Path(pipeline_run["env"]["OOC_WORKDIR"])  # the image's ENV, on the data volume
    assert workdir.is_relative_to(stack.root / "volumes" / "data")

    # Prefect: one pipeline flow run, COMPLETED, with one task run per stage, COMPLETED.
    with prefect_client(stack) as client:
        (flow_run,) = client.read_flow_runs()
        assert flow_run.state_type == "COMPLETED", f"{flow_run.state}\n{logs()}"
        assert client.read_flow(flow_run.flow_id).name == "pipeline"
        task_runs = wait_for_task_runs(client, flow_run.id, STAGES, stack)
        assert len(task_runs) == sum(STAGES.values()), sorted(t.name for t in task_runs)
    states = stack.psql(stack.env["PREFECT_DB"], "SELECT state_type FROM flow_run")
    assert states == "COMPLETED", states  # the server's database is the PostgreSQL one

    # Dask: the tasks ran on the external scheduler, on both workers started from compose:
    # each stage's task, and inside the generate and predict stages one task per file.
    from dask.utils import key_split

    stream = pipeline_run["task_stream"]
    ran = Counter(key_split(record["key"]) for record in stream if record["status"] == "OK")
    for prefix in ("generate_partitions", "fit_preprocessing", "fit_model", "evaluate_model",
                   "predict_files"):  # fmt: skip
        assert ran[prefix] == 1, (prefix, ran)
    for prefix in ("write_partition", "attempt"):  # predict: _attempt(predict_file, ...)
        assert ran[prefix] == FILES, (prefix, ran)
    assert {record["worker"] for record in stream} == pipeline_run["workers"], stream

    # MLflow: the run FINISHED with holdout metrics, tagged with the Prefect flow run.
    client = mlflow_client(stack)
    experiment = client.get_experiment_by_name("ooc")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED", f"{run.info}\n{logs()}"
    assert run.data.tags["prefect.flow_run_id"] == str(flow_run.id)
    assert run.data.tags["prefect.flow_name"] == "pipeline"
    assert 0.6 < run.data.metrics["holdout/accuracy"] <= 1, run.data.metrics
    assert 0.6 < run.data.metrics["holdout/roc_auc"] <= 1, run.data.metrics
    assert run.data.params["cluster.workers"] == "2"
    assert run.data.params["data.rows"] == str(ROWS)
    assert run.data.params["training.block_rows"] == str(CHUNK_ROWS)
    assert run.data.tags["ooc.predict_model_version"] == "1"

    # The registry (in PostgreSQL): version 1 of this run is the champion.
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert (champion.version, champion.run_id) == ("1", run.info.run_id)
    aliases = stack.psql(
        stack.env["MLFLOW_DB"], "SELECT alias, version FROM registered_model_aliases"
    )
    assert set(aliases.splitlines()) == {"champion|1", "challenger|1"}, aliases
    # Artifacts went through the server into its --artifacts-destination volume.
    assert list((stack.root / "volumes" / "mlartifacts").rglob("MLmodel")), logs()
    assert not list(workdir.rglob("mlflow.db")), "a local MLflow store was used"

    # The predictions on disk: one file per input, exactly the input's rows.
    out = Path(run.data.tags["ooc.predict_out"])
    assert out == workdir / "predictions" / str(flow_run.id)
    outputs = sorted(out.glob("*.parquet"))
    assert len(outputs) == FILES
    assert sum(pq.read_metadata(f).num_rows for f in outputs) == ROWS

    # The champion loads through models:/ (in a fresh process, as a consumer of the registry
    # would) and predicts exactly what is on disk.
    source = Path(run.data.tags["ooc.data_path"]) / outputs[0].name
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_CHAMPION, f"models:/{MODEL}@champion", source, outputs[0]],
        env={**pipeline_run["env"], "MLFLOW_TRACKING_URI": client.tracking_uri},
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert loaded.returncode == 0, f"{loaded.stdout}\n{loaded.stderr}"
    assert loaded.stdout.split() == ["same", str(pq.read_metadata(source).num_rows)]

    # The clients of the compose network call the servers by service name (Host header).
    mlflow_address = stack.url("mlflow", 5000)
    api = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=ooc"
    assert host_header_status(mlflow_address, api, "mlflow:5000") == 200
    assert host_header_status(mlflow_address, api, "attacker.example") == 403
    prefect_address = stack.url("prefect-server", 4200)
    assert host_header_status(prefect_address, "/api/health", "prefect-server:4200") == 200


def deployment_file(stack, worker_env: dict) -> Path:
    """``infra/prefect.yaml`` with the image's paths made local and schedules paused.

    Test-only: paused, because a cron could otherwise start a 100M-row run during the test.
    """
    config = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    data = Path(worker_env["OOC_WORKDIR"])  # /data, the data volume of the worker

    def local(value):
        if isinstance(value, str):
            if value == "/app":
                return str(REPO)
            if value == "/data" or value.startswith("/data/"):
                return str(data) + value[len("/data") :]
        return value

    for step in config.get("pull", []):
        for options in step.values():
            options.update({k: local(v) for k, v in options.items()})
    for deployment in config["deployments"]:
        parameters = deployment.get("parameters", {})
        parameters.update({k: local(v) for k, v in parameters.items()})
        for schedule in deployment.get("schedules", []):
            schedule["active"] = False
    path = stack.root / "prefect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_prefect_worker_runs_the_batch_predict_deployment(stack, pipeline_run):
    """The compose file's ``prefect worker`` runs ``ooc-batch-predict`` from prefect.yaml."""
    worker = stack.start("prefect-worker")
    env = stack.environment("prefect-worker", "prefect-deploy")
    with prefect_client(stack) as client:

        def pool_exists() -> bool:
            return client.read_work_pool("ooc-process").type == "process"

        stack.wait(pool_exists, [worker], "the worker's ooc-process work pool")
        deploy = subprocess.run(
            [
                stack.bin / "prefect", "--no-prompt", "deploy",
                "--prefect-file", deployment_file(stack, env), "--name", "ooc-batch-predict",
            ],
            env=env, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert deploy.returncode == 0, f"{deploy.stdout}\n{deploy.stderr}\n{stack.logs()}"
        deployment = client.read_deployment_by_name("batch-predict/ooc-batch-predict")
        assert not any(schedule.active for schedule in deployment.schedules)
        data = next((Path(env["OOC_WORKDIR"]) / "data").glob(f"classification-{ROWS}x*"))
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"data": str(data)}
        )

        def finished() -> bool:
            return client.read_flow_run(flow_run.id).state.is_final()

        stack.wait(finished, [worker], "the deployment's flow run", timeout=150)
        state = client.read_flow_run(flow_run.id).state
        assert state.is_completed(), f"{state}\n{stack.logs(80)}"
        (predicting,) = wait_for_task_runs(client, flow_run.id, Counter(predict_files=1), stack)
        assert predicting.name == "predict"

    client = mlflow_client(stack)
    experiment = client.get_experiment_by_name("ooc")
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`prefect.flow_run_id` = '{flow_run.id}'"
    )
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert run.data.tags["prefect.deployment"] == "ooc-batch-predict"
    assert run.data.tags["ooc.predict_model_version"] == "1"  # the champion, pinned
    out = Path(run.data.tags["ooc.predict_out"])
    assert sum(pq.read_metadata(f).num_rows for f in out.glob("*.parquet")) == ROWS
