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


# -- concurrent registrations ----------------------------------------------------------------


@pytest.fixture
def model_uri(store, fitted) -> str:
    """One logged model, registered as many versions as a test needs."""
    pipe, example, _ = fitted
    with mlflow.start_run():
        return tracking.log_model(pipe, example)


def _register(uri: str, decision: tracking.Decision) -> tracking.Decision:
    with mlflow.start_run():
        return tracking.register("m", uri, decision)


def _aliases(name: str = "m") -> dict[str, str]:
    return {a: str(v) for a, v in MlflowClient().get_registered_model(name).aliases.items()}


@pytest.mark.parametrize("order", ["better-first", "worse-first"])
def test_stale_decisions_still_crown_the_best_version(model_uri, order):
    """Two runs decide before either registers (as concurrent runs do): both see no
    champion. Whatever order they register in, the better one ends champion."""
    better = tracking.decide("m", "roc_auc", "max", 0.9)
    worse = tracking.decide("m", "roc_auc", "max", 0.8)
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
    first = _register(model_uri, tracking.decide("m", "roc_auc", "max", 0.8))
    best = _register(model_uri, tracking.decide("m", "roc_auc", "max", 0.95))
    assert _aliases()["champion"] == best.version
    MlflowClient().set_model_version_tag("m", best.version, tracking.WITHDRAWN, "true")

    decision = tracking.decide("m", "roc_auc", "max", 0.85)
    assert decision.promoted and decision.reason == "roc_auc 0.85 > 0.8 (v1): promoted"
    third = _register(model_uri, decision)
    assert third.promoted and _aliases()["champion"] == third.version
    assert third.champion_version == best.version and first.version == "1"


# -- a tracking server that does not answer ----------------------------------------------------


@pytest.fixture
def http_server():
    """A server on 127.0.0.1 answering every GET with the status the test sets."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            self.send_response(status["code"])
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
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_check_reachable_accepts_any_answer_but_a_gateway_error(http_server):
    url, status = http_server
    for code in (200, 401, 404, 500):
        status["code"] = code
        tracking.check_reachable(url, "thing", "THING_URL", "Fix it.")
    status["code"] = 503
    with pytest.raises(tracking.ServiceUnreachable, match="it answered HTTP 503"):
        tracking.check_reachable(url, "thing", "THING_URL", "Fix it.")


def test_check_reachable_names_the_url_and_the_variable(monkeypatch, tmp_path):
    import time

    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    start = time.monotonic()
    with pytest.raises(tracking.ServiceUnreachable) as err:
        tracking.configure(Settings(workdir=tmp_path))
    assert time.monotonic() - start < 10  # refused at once, one retry; not minutes
    message = str(err.value)
    assert message.startswith(
        f"Cannot reach the MLflow tracking server at {url} (MLFLOW_TRACKING_URI): "
    )
    assert "Connection refused" in message and "fix MLFLOW_TRACKING_URI" in message
    # A local store is never probed.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tracking.check_tracking_server(f"sqlite:///{tmp_path / 'x.db'}")
