"""MLflow tracking, the registry's promotion rules and the servers' health checks, on a real
sqlite store (and real HTTP servers on 127.0.0.1 where a server is needed)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline

import ooc
from ooc.tasks import health, registry, tracking
from ooc.tasks.config import ModelConfig, TrainingConfig
from ooc.tasks.data import DataPlan, sample_rows
from ooc.tasks.settings import Settings
from ooc.tasks.training import Fitted


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


def _train_run(fitted, score: float, name="m") -> registry.Decision:
    pipe, example, _ = fitted
    with mlflow.start_run():
        tracking.log_holdout({"roc_auc": score})
        uri = tracking.log_model(pipe, example)
        decision = registry.decide(name, "roc_auc", "max", score)
        return registry.register(name, uri, decision)


# -- the store and what a run logs ----------------------------------------------------------


def test_configure_creates_the_experiment_in_the_model_training_view(store):
    experiment = mlflow.get_experiment_by_name(store.mlflow_experiment)
    assert experiment is not None and experiment.name == "ooc"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location == (store.workdir / "mlartifacts").resolve().as_uri()
    # Configuring again (another run in the same store) keeps the one experiment.
    tracking.configure(store)
    assert [e.name for e in mlflow.search_experiments()].count("ooc") == 1


def test_a_run_logs_grouped_metric_and_parameter_names(store, clf_dir):
    source = ooc.inspect_parquet(clf_dir, target="y", block_rows=1_000)
    plan = DataPlan(str(clf_dir), source, *source.split(0.25, seed=0))
    model = ModelConfig(params={"alpha": 1e-4})
    training = TrainingConfig(epochs=2, block_rows=1_000)
    fit = Fitted(
        model_path="model.pkl", blocks_path="blocks.csv", blocks_origin=0.0,
        n_samples_seen=2 * plan.train.n_rows, n_epochs=2, n_blocks=len(plan.train.blocks),
        training_scores=[0.8, 0.9], validation_scores=[],
        curve=[(1_000, 0.7), (2_000, 0.85), (plan.train.n_rows, 0.9)], resumed_from=None,
        fit_seconds=1.0, wait_seconds=0.1, seconds=2.0,
    )  # fmt: skip
    with mlflow.start_run() as run:
        tracking.log_dataset(plan, sample_rows(plan))
        tracking.log_config(model, training, model.estimator(training.random_state))
        tracking.log_stage("fit", fit.seconds, fit.n_samples_seen)
        tracking.log_stage("predict", 3.0, None)  # nothing written: no throughput
        tracking.log_holdout({"roc_auc": 0.91234567, "accuracy": 0.875})
        tracking.log_learning(fit)

    data = MlflowClient().get_run(run.info.run_id).data
    assert data.metrics == {
        "holdout/roc_auc": 0.912346,
        "holdout/accuracy": 0.875,
        "timing/fit_s": 2.0,
        "throughput/fit_rows_per_s": round(fit.n_samples_seen / 2.0),
        "timing/predict_s": 3.0,
        "train/progressive_score": 0.9,  # the last epoch's
        "train/progressive_score_by_rows": 0.9,  # the last block's
    }
    history = MlflowClient().get_metric_history(run.info.run_id, "train/progressive_score")
    assert [(m.step, m.value) for m in history] == [(1, 0.8), (2, 0.9)]
    by_rows = MlflowClient().get_metric_history(run.info.run_id, "train/progressive_score_by_rows")
    assert sorted((m.step, m.value) for m in by_rows) == fit.curve
    params = data.params
    assert params["model"] == "sgd-classifier"
    assert params["estimator.alpha"] == "0.0001" and params["estimator.loss"] == "hinge"
    assert params["training.epochs"] == "2" and params["training.block_rows"] == "1000"
    assert params["data.rows"] == "12000" and params["data.files"] == "6"
    assert params["data.blocks"] == str(len(source.blocks)) and params["data.block_rows"] == "1000"
    assert int(params["data.train_rows"]) + int(params["data.holdout_rows"]) == 12_000
    assert params["data.holdout_rows"] == "3000"
    assert data.tags["ooc.data_path"] == str(clf_dir)
    assert data.tags["ooc.data_fingerprint"] == plan.fingerprint() and len(plan.fingerprint()) == 16
    # Every name is grouped: no metric or parameter outside its group.
    assert all(name.split("/")[0] in {"holdout", "timing", "throughput", "train"}
               for name in data.metrics)  # fmt: skip
    assert all(name == "model" or name.split(".")[0] in {"estimator", "training", "data"}
               for name in params)  # fmt: skip


# -- the registry's rules -------------------------------------------------------------------


def test_first_version_becomes_champion_then_better_moves_worse_stays(store, fitted):
    client = MlflowClient()
    first = _train_run(fitted, 0.80)
    assert first.promoted and first.reason == "first version"
    assert str(client.get_model_version_by_alias("m", "champion").version) == first.version
    # What is not known (no champion before) is left out of the tags, not written blank.
    tags = client.get_model_version("m", first.version).tags
    assert "ooc.champion_version_before" not in tags and "ooc.champion_score_before" not in tags
    assert tags["ooc.promoted"] == "true" and float(tags["ooc.score"]) == 0.80

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
    assert tags["ooc.champion_version_before"] == better.version
    assert tags["ooc.decision"] == f"roc_auc 0.82 <= 0.85: champion v{better.version} kept"


def test_a_version_without_a_score_has_no_score_tag(store, fitted):
    """A NaN holdout score (e.g. ROC AUC of a one-class holdout) is no score: no
    ``ooc.score`` tag, and such a version never displaces a champion."""
    pipe, example, _ = fitted
    with mlflow.start_run():
        uri = tracking.log_model(pipe, example)
        first = registry.register("s", uri, registry.decide("s", "roc_auc", "max", float("nan")))
    assert first.score is None and first.promoted
    tags = MlflowClient().get_model_version("s", first.version).tags
    assert "ooc.score" not in tags and tags["ooc.promotion_metric"] == "roc_auc"
    assert tags["ooc.promoted"] == "true"
    with mlflow.start_run():
        second = registry.register("s", uri, registry.decide("s", "roc_auc", "max", None))
    assert not second.promoted and f"champion v{first.version} kept" in second.reason
    assert registry.champion_uri("s") == (f"models:/s/{first.version}", first.version)
    # The first version's decision says what happened to it: it became champion.
    assert first.reason == tags["ooc.decision"] == "first version"


def test_min_direction_and_incomparable_metric(store, fitted):
    pipe, example, _ = fitted
    with mlflow.start_run():
        uri = tracking.log_model(pipe, example)
        registry.register("k", uri, registry.decide("k", "inertia", "min", 10.0))
    assert registry.decide("k", "inertia", "min", 9.0).promoted
    assert not registry.decide("k", "inertia", "min", 11.0).promoted
    other = registry.decide("k", "roc_auc", "max", 0.99)
    assert not other.promoted and "not comparable" in other.reason
    with pytest.raises(ValueError, match="direction must be 'max' or 'min', got 'down'"):
        registry.decide("k", "inertia", "down", 1.0)


def test_logged_model_loads_with_pyfunc_and_sklearn(store, fitted):
    pipe, example, X = fitted
    with mlflow.start_run():
        uri = tracking.log_model(pipe, example)
    expected = pipe.predict(X[:100].compute())
    frame = pd.DataFrame(X[:100].compute(), columns=example.columns)
    assert np.array_equal(mlflow.pyfunc.load_model(uri).predict(frame), expected)
    assert np.array_equal(registry.load_model(uri).predict(X[:100].compute()), expected)
    assert registry.model_features(uri) == list(example.columns)


# -- a registration that fails half way ------------------------------------------------------


def _break(monkeypatch, method: str, when=lambda *args: True) -> None:
    """Make one MlflowClient method fail (where ``when(*args)``), as a registry that goes
    away in the middle of a registration would."""
    original = getattr(MlflowClient, method)

    def broken(self, *args, **kwargs):
        if when(*args):
            raise RuntimeError("registry went away")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, method, broken)


def _versions(name: str = "m") -> list[str]:
    return sorted(str(v.version) for v in MlflowClient().search_model_versions(f"name='{name}'"))


def test_failed_registration_before_any_alias_leaves_no_version(store, fitted, monkeypatch):
    pipe, example, _ = fitted
    _train_run(fitted, 0.9)
    with mlflow.start_run() as run:
        uri = tracking.log_model(pipe, example)
        decision = registry.decide("m", "roc_auc", "max", 0.95)
        _break(monkeypatch, "set_registered_model_alias")
        with pytest.raises(RuntimeError, match="registry went away"):
            registry.register("m", uri, decision)
    monkeypatch.undo()
    assert _versions() == ["1"]
    assert str(MlflowClient().get_model_version_by_alias("m", "champion").version) == "1"
    assert "ooc.registered_version" not in MlflowClient().get_run(run.info.run_id).data.tags


def test_failed_registration_after_promotion_gives_champion_back(store, fitted, monkeypatch):
    """The new, better version was champion already when the last write failed: the
    version is deleted and ``champion`` goes back to the best other version."""
    pipe, example, _ = fitted
    _train_run(fitted, 0.7)
    _train_run(fitted, 0.9)
    _train_run(fitted, 0.8)
    assert str(MlflowClient().get_model_version_by_alias("m", "champion").version) == "2"
    with mlflow.start_run() as run:
        uri = tracking.log_model(pipe, example)
        decision = registry.decide("m", "roc_auc", "max", 0.95)
        assert decision.promoted
        # The decision's own tag is written last, after champion has moved.
        _break(monkeypatch, "set_model_version_tag", lambda *args: args[2] == "ooc.decision")
        with pytest.raises(RuntimeError, match="registry went away"):
            registry.register("m", uri, decision)
    monkeypatch.undo()
    assert _versions() == ["1", "2", "3"]
    aliases = {a: str(v) for a, v in MlflowClient().get_registered_model("m").aliases.items()}
    assert aliases["champion"] == "2"  # the best of the others, not the latest (3)
    assert "ooc.registered_version" not in MlflowClient().get_run(run.info.run_id).data.tags


def test_failed_registration_of_the_first_version_leaves_no_champion(store, fitted, monkeypatch):
    pipe, example, _ = fitted
    with mlflow.start_run():
        uri = tracking.log_model(pipe, example)
        decision = registry.decide("m", "roc_auc", "max", 0.95)
        _break(monkeypatch, "set_model_version_tag", lambda *args: args[2] == "ooc.decision")
        with pytest.raises(RuntimeError, match="registry went away"):
            registry.register("m", uri, decision)
    monkeypatch.undo()
    assert _versions() == []
    assert "champion" not in MlflowClient().get_registered_model("m").aliases
    with pytest.raises(LookupError, match="no 'champion' for model 'm'"):
        registry.champion_uri("m")


def test_champion_uri_without_champion_is_a_clear_error(store):
    with pytest.raises(LookupError, match="no 'champion' for model 'nothing'") as err:
        registry.champion_uri("nothing")
    assert store.workdir.name in str(err.value) and "train a model first" in str(err.value)


# -- concurrent registrations ----------------------------------------------------------------


@pytest.fixture
def model_uri(store, fitted) -> str:
    """One logged model, registered as many versions as a test needs."""
    pipe, example, _ = fitted
    with mlflow.start_run():
        return tracking.log_model(pipe, example)


def _register(uri: str, decision: registry.Decision) -> registry.Decision:
    with mlflow.start_run():
        return registry.register("m", uri, decision)


def _aliases(name: str = "m") -> dict[str, str]:
    return {a: str(v) for a, v in MlflowClient().get_registered_model(name).aliases.items()}


@pytest.mark.parametrize("order", ["better-first", "worse-first"])
def test_stale_decisions_still_crown_the_best_version(model_uri, order):
    """Two runs decide before either registers (as concurrent runs do): both see no
    champion. Whatever order they register in, the better one ends champion."""
    better = registry.decide("m", "roc_auc", "max", 0.9)
    worse = registry.decide("m", "roc_auc", "max", 0.8)
    assert better.promoted and worse.promoted  # both stale: "first version"

    pair = [(better, 0.9), (worse, 0.8)]
    done = {
        s: _register(model_uri, d) for d, s in (pair if order == "better-first" else pair[::-1])
    }

    assert _aliases()["champion"] == done[0.9].version
    assert _aliases()["challenger"] == (done[0.8] if order == "better-first" else done[0.9]).version
    # What each registration found is its decision: the worse one, registered first, was
    # champion until the better one replaced it.
    if order == "better-first":
        assert done[0.9].promoted and done[0.9].reason == "first version"
        assert not done[0.8].promoted
        assert done[0.8].reason == f"roc_auc 0.8 <= 0.9: champion v{done[0.9].version} kept"
    else:
        assert done[0.8].promoted and done[0.8].reason == "first version"
        assert done[0.9].promoted and done[0.9].champion_version == done[0.8].version
        assert done[0.9].reason == f"roc_auc 0.9 > 0.8 (v{done[0.8].version}): promoted"
    for decision in done.values():
        tags = MlflowClient().get_model_version("m", decision.version).tags
        assert tags["ooc.promoted"] == str(decision.promoted).lower()
        assert tags["ooc.decision"] == decision.reason


def test_a_withdrawn_version_is_passed_over(model_uri):
    first = _register(model_uri, registry.decide("m", "roc_auc", "max", 0.8))
    best = _register(model_uri, registry.decide("m", "roc_auc", "max", 0.95))
    assert _aliases()["champion"] == best.version
    MlflowClient().set_model_version_tag("m", best.version, registry.WITHDRAWN, "true")

    decision = registry.decide("m", "roc_auc", "max", 0.85)
    assert decision.promoted and decision.reason == "roc_auc 0.85 > 0.8 (v1): promoted"
    third = _register(model_uri, decision)
    assert third.promoted and _aliases()["champion"] == third.version
    assert third.champion_version == best.version and first.version == "1"


# -- servers that do not answer, or refuse ------------------------------------------------------


@pytest.fixture
def http_server():
    """A server on 127.0.0.1 answering every GET with the status the test sets."""
    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            self.send_response(status["code"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", status
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_registry_error_is_not_taken_for_no_champion(http_server, monkeypatch):
    """A registry that answers with an error (here 403, as a server without the rights
    would) must fail the decision: "no champion" would crown the wrong model."""
    url, status = http_server
    status["code"] = 403
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    mlflow.set_tracking_uri(url)
    try:
        with pytest.raises(MlflowException) as err:
            registry.decide("m", "roc_auc", "max", 0.9)
        assert err.value.error_code == "PERMISSION_DENIED"
        assert "403" in str(err.value)
        with pytest.raises(MlflowException, match="403"):
            registry.champion_uri("m")
    finally:
        mlflow.set_tracking_uri(None)


def test_check_reachable_accepts_any_answer_but_a_gateway_error(http_server):
    url, status = http_server
    for code in (200, 401, 404, 500):
        status["code"] = code
        health.check_reachable(url, "thing", "THING_URL", "Fix it.")
    for code in (502, 503, 504):
        status["code"] = code
        with pytest.raises(health.ServiceUnreachable, match=f"it answered HTTP {code}"):
            health.check_reachable(url, "thing", "THING_URL", "Fix it.")


def test_check_reachable_names_the_url_and_the_variable(monkeypatch, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    start = time.monotonic()
    with pytest.raises(health.ServiceUnreachable) as err:
        tracking.configure(Settings(workdir=tmp_path))
    assert time.monotonic() - start < 10  # refused at once, one retry; not minutes
    assert isinstance(err.value, ConnectionError)  # transient: a stage may retry it
    message = str(err.value)
    assert message.startswith(
        f"Cannot reach the MLflow tracking server at {url} (MLFLOW_TRACKING_URI): "
    )
    assert "Connection refused" in message and "fix MLFLOW_TRACKING_URI" in message
    assert not (tmp_path / "mlflow.db").exists()
    # A local store is never probed.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    health.check_tracking_server(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(health.ServiceUnreachable, match=r"\(THING_URL\): .*Fix it\."):
        health.check_reachable("not a url", "thing", "THING_URL", "Fix it.")
