"""The train and batch_predict flows against a real ``mlflow server`` process."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

import ooc
from ooc.tasks.config import TrainingConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("server-data") / "data"
    ooc.generate_dataset(path, n_rows=40_000, n_features=5, chunk_rows=5_000, seed=11)
    return path


def test_train_and_predict_through_an_mlflow_server(
    mlflow_server, data, tmp_path, dask_cluster, prefect_server, monkeypatch
):
    from prefect_dask import DaskTaskRunner

    from ooc.flows.pipeline import batch_predict, train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    runner = DaskTaskRunner(address=dask_cluster.scheduler_address)
    training = TrainingConfig(block_rows=5_000)
    result = train.with_options(task_runner=runner)(
        data=str(data), workdir=str(tmp_path), training=training
    )
    assert result.registered.promoted and result.registered.version == "1"
    # The links name the server's own UI.
    assert dict(result.links)["MLflow run"].startswith(f"{mlflow_server}/#/experiments/")

    mlflow.set_tracking_uri(mlflow_server)
    client = MlflowClient()
    (run,) = client.search_runs(client.get_experiment_by_name("ooc").experiment_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["prefect.flow_name"] == "train"
    metrics = run.data.metrics
    assert metrics["holdout/accuracy"] == round(result.trained.evaluated.metrics["accuracy"], 6)
    assert 0.6 < metrics["holdout/accuracy"] <= 1 and 0.6 < metrics["holdout/roc_auc"] <= 1
    assert metrics["throughput/fit_rows_per_s"] > 0 and metrics["timing/fit_s"] > 0
    assert metrics["train/progressive_score"] > 0
    assert run.data.params["data.rows"] == "40000" and run.data.params["data.files"] == "8"
    assert run.data.params["training.block_rows"] == "5000"
    assert run.data.params["model"] == "sgd-classifier"
    assert run.data.params["cluster.workers"] == "2"
    artifacts = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id, "profiles")}
    for name in (
        "task-stream-fit.png", "cpu-memory.png", "dask-performance-report.html", "blocks.csv",
    ):  # fmt: skip
        assert artifacts[f"profiles/{name}"] > 0, name
    card = client.download_artifacts(run.info.run_id, "model_card.json", str(tmp_path / "dl"))
    assert json.loads(Path(card).read_text())["metrics"] == result.trained.evaluated.metrics
    champion = client.get_model_version_by_alias("ooc-classification", "champion")
    assert (str(champion.version), champion.run_id) == ("1", run.info.run_id)
    assert float(champion.tags["ooc.score"]) == result.trained.evaluated.metrics["roc_auc"]

    # The artifacts live on the server: nothing was written to the local store.
    assert not (tmp_path / "mlflow.db").exists()

    out = tmp_path / "pred"
    predicted = batch_predict.with_options(task_runner=runner)(
        data=str(data), out=str(out), workdir=str(tmp_path)
    )
    assert predicted.model_version == "1"
    assert predicted.predicted.model_ref == "models:/ooc-classification/1"
    assert sum(pq.read_metadata(f).num_rows for f in out.glob("*.parquet")) == 40_000
    runs = client.search_runs(client.get_experiment_by_name("ooc").experiment_id)
    predict_run = next(r for r in runs if r.data.tags["prefect.flow_name"] == "batch-predict")
    assert predict_run.info.status == "FINISHED"
    assert predict_run.data.tags["ooc.predict_model_version"] == "1"
    assert predict_run.data.tags["ooc.predict_out"] == str(out)
    assert predict_run.data.tags["ooc.predict_files"] == "8"
    assert predict_run.data.metrics["timing/predict_s"] > 0
    assert not (tmp_path / "mlflow.db").exists()
