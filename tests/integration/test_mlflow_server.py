"""The train and batch_predict flows against a real ``mlflow server`` process."""

from __future__ import annotations

import mlflow
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

import ooc

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

    from flows.pipeline import batch_predict, train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    runner = DaskTaskRunner(address=dask_cluster.scheduler_address)
    trained = train.with_options(task_runner=runner)(data=str(data), workdir=str(tmp_path))
    assert trained["registry"]["promoted"] and trained["registry"]["version"] == "1"

    mlflow.set_tracking_uri(mlflow_server)
    client = MlflowClient()
    (run,) = client.search_runs(client.get_experiment_by_name("ooc").experiment_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["prefect.flow_name"] == "train"
    assert 0.6 < run.data.metrics["holdout_accuracy"] <= 1
    assert run.data.metrics["fit_rows_per_s"] > 0
    assert run.data.params["data_rows"] == "40000"
    artifacts = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id, "profiles")}
    for name in ("task-stream-fit.png", "cpu-memory.png", "dask-performance-report.html"):
        assert artifacts[f"profiles/{name}"] > 0, name
    champion = client.get_model_version_by_alias("ooc-classification", "champion")
    assert str(champion.version) == "1"

    # The artifacts live on the server: nothing was written to the local store.
    assert not (tmp_path / "mlflow.db").exists()

    out = tmp_path / "pred"
    predicted = batch_predict.with_options(task_runner=runner)(
        data=str(data), out=str(out), workdir=str(tmp_path)
    )
    assert predicted["model_path"] == "models:/ooc-classification/1"
    assert sum(pq.read_metadata(f).num_rows for f in out.glob("*.parquet")) == 40_000
    runs = client.search_runs(client.get_experiment_by_name("ooc").experiment_id)
    predict_run = next(r for r in runs if r.data.tags["prefect.flow_name"] == "batch-predict")
    assert predict_run.data.tags["ooc.predict_model_version"] == "1"
