"""Fault case 7: runs that register at the same time against one real ``mlflow server``.

MLflow has no compare-and-set for aliases, so a run that decided "promote" and then
wrote ``champion`` could overwrite a better model registered meanwhile (last writer
won). ``ooc.tasks.registry.register`` settles ``champion`` on the best stored score of
all versions, re-reading after each write; these tests check the registry after real
concurrent registrations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

import ooc
from ooc.tasks import registry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NAME = "ooc-classification"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("concurrent-data") / "data"
    ooc.generate_dataset(path, n_rows=40_000, n_features=5, chunk_rows=5_000, seed=13)
    return path


def _registry(client: MlflowClient) -> tuple[dict, dict]:
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{NAME}'")}
    aliases = {a: str(v) for a, v in client.get_registered_model(NAME).aliases.items()}
    return versions, aliases


def test_two_train_commands_at_once_record_both_and_crown_the_better(
    mlflow_server, data, tmp_path, dask_cluster, prefect_server
):
    """Two ``ooc train`` processes started together, on the session's Prefect server and
    Dask cluster, both tracking to one MLflow server; one model is deliberately poor
    (strong L1 zeroes its coefficients)."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OOC_FAULTS",))}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_URL=PREFECT_API_URL.value(),
        OOC_DASK_ADDRESS=dask_cluster.scheduler_address,
        MLFLOW_TRACKING_URI=mlflow_server,
    )
    params = {
        "good": ["--param", "random_state=0"],
        "poor": ["--param", "penalty=l1", "--param", "alpha=1.0", "--param", "random_state=0"],
    }
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ooc.flows.cli",
                "train",
                "--data",
                str(data),
                "--workdir",
                str(tmp_path / name),
                "--block-rows",
                "5000",
                "--json",
                *args,
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name, args in params.items()
    }
    outputs = {name: proc.communicate(timeout=300) for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}: {outputs[name][1][-4000:]}"
    results = {name: json.loads(out) for name, (out, _) in outputs.items()}

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    # Both runs recorded, FINISHED.
    runs = client.search_runs([client.get_experiment_by_name("ooc").experiment_id])
    assert sorted(r.data.tags["prefect.flow_name"] for r in runs) == ["train", "train"]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    by_run = {r.info.run_id: r for r in runs}

    # Two versions, each scored with its own run's holdout metric, each with its tags.
    versions, aliases = _registry(client)
    assert sorted(versions) == ["1", "2"]
    assert {results[n]["registered"]["version"] for n in params} == {"1", "2"}
    scores = {}
    for number, version in versions.items():
        tags = version.tags
        for key in ("ooc.score", "ooc.promotion_metric", "ooc.promoted", "ooc.decision"):
            assert tags.get(key), (number, key, tags)
        scores[number] = float(tags["ooc.score"])
        assert scores[number] == pytest.approx(
            by_run[version.run_id].data.metrics["holdout/roc_auc"], abs=1e-6
        )  # the metric is logged rounded to 6 digits, the tag is the exact score
        name = next(n for n in params if results[n]["registered"]["version"] == number)
        assert scores[number] == results[name]["trained"]["evaluated"]["metrics"]["roc_auc"]
    good = results["good"]["registered"]["version"]
    assert scores[good] > max(scores.values()) - 1e-12 and len(set(scores.values())) == 2

    # The registry is consistent: champion is the better version, challenger one of them.
    assert aliases["champion"] == good == max(scores, key=scores.get)
    assert aliases["challenger"] in versions
    assert versions[good].tags["ooc.promoted"] == "true"


def test_racing_registrations_crown_the_best_version(mlflow_server, tmp_path, monkeypatch):
    """Five registrations that all decided before any registered (each saw no champion),
    released together by a barrier: the stale "promote" of each must not win."""
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("race")
    X = np.random.default_rng(0).normal(size=(40, 2))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(X, X[:, 0] > 0), name="model", pip_requirements=[]
        )

    scores = [0.70, 0.93, 0.81, 0.93, 0.60]  # a tie: the earlier version of the two wins
    decisions = [registry.decide(NAME, "roc_auc", "max", s) for s in scores]
    assert all(d.promoted and d.reason == "first version" for d in decisions)
    barrier = threading.Barrier(len(scores))
    done: dict[float, list] = {}
    errors: list[BaseException] = []

    def register(decision: registry.Decision) -> None:
        try:
            with mlflow.start_run():
                barrier.wait(timeout=60)
                registered = registry.register(NAME, info.model_uri, decision)
            done.setdefault(decision.score, []).append(registered)
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=register, args=(d,)) for d in decisions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors, errors

    client = MlflowClient()
    versions, aliases = _registry(client)
    assert len(versions) == len(scores)
    best = min(
        (v for v in versions.values() if float(v.tags["ooc.score"]) == 0.93),
        key=lambda v: int(v.version),
    )
    assert aliases["champion"] == str(best.version)
    assert aliases["challenger"] in versions
    for version in versions.values():
        assert version.tags["ooc.decision"] and version.tags["ooc.promoted"] in ("true", "false")
    assert best.tags["ooc.promoted"] == "true" and "kept" not in best.tags["ooc.decision"]
    # A registration that ended after the best one was settled says so in its decision.
    for registered in done[0.6] + done[0.7]:
        assert not registered.promoted or registered.reason == "first version"
