"""MLflow tracking and the registry's promotion rules, on a real sqlite store."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline

import ooc
from tasks import tracking
from tasks.settings import Settings


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(workdir=tmp_path)
    uri = tracking.configure(settings)
    assert uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    yield settings
    mlflow.end_run()


@pytest.fixture(scope="module")
def fitted(clf_dir):
    X, y = ooc.read_parquet(clf_dir)
    pipe = make_pipeline(
        ooc.StandardScaler(), ooc.Incremental(SGDClassifier(loss="log_loss", random_state=0))
    )
    pipe.fit(X, y, incremental__classes=[0, 1])
    example = pd.DataFrame(X[:5].compute(), columns=[f"x{j}" for j in range(X.shape[1])])
    return pipe, example, X


def _train_run(fitted, score: float, name="m") -> tracking.Decision:
    pipe, example, _ = fitted
    with mlflow.start_run():
        tracking.log_holdout({"roc_auc": score})
        uri = tracking.log_model(pipe, example)
        decision = tracking.decide(name, "roc_auc", "max", score)
        return tracking.register(name, uri, decision)


def test_first_version_becomes_champion_then_better_moves_worse_stays(store, fitted):
    client = MlflowClient()
    first = _train_run(fitted, 0.80)
    assert first.promoted and first.reason == "first version"
    assert str(client.get_model_version_by_alias("m", "champion").version) == first.version

    better = _train_run(fitted, 0.85)
    assert better.promoted and better.champion_version == first.version
    assert str(client.get_model_version_by_alias("m", "champion").version) == better.version
    assert str(client.get_model_version_by_alias("m", "challenger").version) == better.version

    worse = _train_run(fitted, 0.82)
    assert not worse.promoted
    assert str(client.get_model_version_by_alias("m", "champion").version) == better.version
    assert str(client.get_model_version_by_alias("m", "challenger").version) == worse.version
    tags = client.get_model_version("m", worse.version).tags
    assert tags["ooc.promoted"] == "false"
    assert float(tags["ooc.score"]) == 0.82
    assert float(tags["ooc.champion_score_before"]) == 0.85
    assert "kept" in tags["ooc.decision"]


def test_min_direction_and_incomparable_metric(store, fitted):
    pipe, example, _ = fitted
    with mlflow.start_run():
        uri = tracking.log_model(pipe, example)
        tracking.register("k", uri, tracking.decide("k", "inertia", "min", 10.0))
    assert tracking.decide("k", "inertia", "min", 9.0).promoted
    assert not tracking.decide("k", "inertia", "min", 11.0).promoted
    other = tracking.decide("k", "roc_auc", "max", 0.99)
    assert not other.promoted and "not comparable" in other.reason
    with pytest.raises(ValueError, match="direction must be 'max' or 'min'"):
        tracking.decide("k", "inertia", "down", 1.0)


def test_logged_model_loads_with_pyfunc_and_sklearn(store, fitted):
    pipe, example, X = fitted
    with mlflow.start_run():
        uri = tracking.log_model(pipe, example)
    expected = pipe.predict(X[:100].compute())
    frame = pd.DataFrame(X[:100].compute(), columns=example.columns)
    assert np.array_equal(mlflow.pyfunc.load_model(uri).predict(frame), expected)
    assert np.array_equal(mlflow.sklearn.load_model(uri).predict(X[:100].compute()), expected)
    assert tracking.model_features(uri) == list(example.columns)


def test_failed_registration_leaves_no_version(store, fitted, monkeypatch):
    pipe, example, _ = fitted
    _train_run(fitted, 0.9)
    with mlflow.start_run():
        uri = tracking.log_model(pipe, example)
        decision = tracking.decide("m", "roc_auc", "max", 0.95)

        def broken(self, *args, **kwargs):
            raise RuntimeError("registry went away")

        monkeypatch.setattr(MlflowClient, "set_registered_model_alias", broken)
        with pytest.raises(RuntimeError, match="registry went away"):
            tracking.register("m", uri, decision)
    monkeypatch.undo()
    versions = MlflowClient().search_model_versions("name='m'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(MlflowClient().get_model_version_by_alias("m", "champion").version) == "1"


def test_champion_uri_without_champion_is_a_clear_error(store):
    with pytest.raises(LookupError, match="no 'champion' for model 'nothing'"):
        tracking.champion_uri("nothing")
