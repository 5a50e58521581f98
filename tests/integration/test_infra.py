"""The deployment files describe real things: services, commands, flows, and no secrets."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
PROJECT_SERVICES = {"prefect-server", "prefect-worker", "mlflow", "dask-scheduler", "dask-worker"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def deployments() -> list[dict]:
    return yaml.safe_load((INFRA / "prefect.yaml").read_text())["deployments"]


def test_compose_has_the_stack_built_from_one_project_image(compose):
    services = compose["services"]
    assert set(services) == PROJECT_SERVICES | {"postgres"}
    for name in PROJECT_SERVICES:
        build = services[name]["build"]
        # The context is relative to the compose file; the Dockerfile to the context.
        dockerfile = (INFRA / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile == (INFRA / "Dockerfile").resolve()


def test_every_published_port_is_on_loopback(compose):
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published, "the UIs should be reachable from the host"
    assert all(str(p).startswith("127.0.0.1:") for p in published), published


def test_commands_are_the_projects_tools(compose):
    bin_dir = Path(sys.executable).parent
    for name in PROJECT_SERVICES:
        tool = compose["services"][name]["command"].split()[0]
        assert (bin_dir / tool).exists() or shutil.which(tool), f"{name}: {tool} not installed"


def test_credentials_come_from_an_env_file_that_is_not_committed(compose):
    text = (INFRA / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)\}", text))
    example = dict(
        line.split("=", 1)
        for line in (INFRA / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert used <= set(example), used - set(example)
    assert example["POSTGRES_PASSWORD"] == "change-me"
    assert "password" not in text.lower().replace("postgres_password", "")
    gitignore = (INFRA.parent / ".gitignore").read_text().splitlines()
    assert "infra/.env" in gitignore


def test_prefect_yaml_entrypoints_are_real_flows_on_the_workers_pool(compose, deployments):
    from prefect.flows import Flow, load_flow_from_entrypoint

    worker = compose["services"]["prefect-worker"]["command"].split()
    pool = worker[worker.index("--pool") + 1]
    names = {}
    for deployment in deployments:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        assert isinstance(flow, Flow)
        assert deployment["entrypoint"].startswith("ooc.flows."), deployment["entrypoint"]
        names[deployment["name"]] = flow.name
        assert deployment["work_pool"]["name"] == pool
        parameters = deployment.get("parameters", {})
        unknown = set(parameters) - set(flow.parameters.properties)
        assert not unknown, f"{deployment['name']}: unknown parameters {unknown}"
        # The values are valid for the flow's typed parameters, as a run would validate them.
        flow.validate_parameters(parameters)
    assert names == {
        "ooc-pipeline": "pipeline",
        "ooc-batch-predict": "batch-predict",
        "ooc-train": "train",
    }
    crons = {d["name"]: [s["cron"] for s in d.get("schedules", [])] for d in deployments}
    assert crons["ooc-pipeline"] and crons["ooc-batch-predict"]


def test_prefect_yaml_rejects_what_the_flows_would_reject(deployments):
    """The check above can fail: the old, flat pipeline parameters are refused."""
    from prefect.exceptions import ParameterTypeError
    from prefect.flows import load_flow_from_entrypoint

    pipeline = next(d for d in deployments if d["name"] == "ooc-pipeline")
    flow = load_flow_from_entrypoint(pipeline["entrypoint"])
    with pytest.raises(ParameterTypeError, match="rows"):
        flow.validate_parameters({"dataset": {"rows": 0}, "workdir": "/data"})
    assert "rows" not in flow.parameters.properties


def test_batch_predict_and_train_read_what_the_pipeline_writes(deployments):
    from ooc.flows.pipeline import dataset_dir
    from ooc.tasks.config import DatasetConfig

    by_name = {d["name"]: d["parameters"] for d in deployments}
    pipeline = by_name["ooc-pipeline"]
    written = dataset_dir(pipeline["workdir"], DatasetConfig(**pipeline["dataset"]))
    for name in ("ooc-batch-predict", "ooc-train"):
        assert by_name[name]["data"] == str(written), name
        assert by_name[name]["workdir"] == pipeline["workdir"], name


def test_dockerfile_copies_paths_that_exist():
    copies = re.findall(r"^COPY (\S+)", (INFRA / "Dockerfile").read_text(), flags=re.M)
    assert copies
    for source in copies:
        assert (INFRA.parent / source).exists(), source


def test_dockerfile_installs_the_packages_the_services_run():
    """The image installs the project with the extra that holds Prefect, MLflow and Dask
    (the library alone has none of them), from every package directory it declares."""
    import tomllib

    text = (INFRA / "Dockerfile").read_text()
    project = tomllib.loads((INFRA.parent / "pyproject.toml").read_text())
    (install,) = re.findall(r"pip install [^\n]*?\"?\.\[([\w,]+)\]\"?", text)
    extras = set(install.split(","))
    assert "flows" in extras and extras <= set(project["project"]["optional-dependencies"])
    flows_extra = " ".join(project["project"]["optional-dependencies"]["flows"])
    for tool in ("prefect", "mlflow", "distributed"):
        assert tool in flows_extra, tool
    copied = set(re.findall(r"^COPY (\S+)", text, flags=re.M))
    package_dirs = set(project["tool"]["setuptools"]["package-dir"].values())
    assert package_dirs <= copied, package_dirs - copied
