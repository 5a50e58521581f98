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
        names[deployment["name"]] = flow.name
        assert deployment["work_pool"]["name"] == pool
        unknown = set(deployment.get("parameters", {})) - set(flow.parameters.properties)
        assert not unknown, f"{deployment['name']}: unknown parameters {unknown}"
    assert names == {
        "ooc-pipeline": "pipeline",
        "ooc-batch-predict": "batch-predict",
        "ooc-train": "train",
    }
    crons = {d["name"]: [s["cron"] for s in d.get("schedules", [])] for d in deployments}
    assert crons["ooc-pipeline"] and crons["ooc-batch-predict"]


def test_dockerfile_copies_paths_that_exist():
    copies = re.findall(r"^COPY (\S+)", (INFRA / "Dockerfile").read_text(), flags=re.M)
    assert copies
    for source in copies:
        assert (INFRA.parent / source).exists(), source
