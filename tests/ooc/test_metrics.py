"""evaluate: holdout metrics from per-block statistics equal scikit-learn's in memory."""

from __future__ import annotations

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.callbacks import Callback
from sklearn.cluster import MiniBatchKMeans
from sklearn.dummy import DummyRegressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, SGDClassifier, SGDRegressor
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler as SkStandardScaler

import ooc
from ooc.metrics import evaluate

AUC_TOL = 1e-3


class ComputeCounter(Callback):
    """Counts the dask computations started while it is active."""

    def __init__(self):
        super().__init__()
        self.computes = 0

    def _start(self, dsk):
        self.computes += 1


def _sgd_pipeline(**params):
    sgd = SGDClassifier(loss="log_loss", random_state=0, **params)
    return make_pipeline(ooc.StandardScaler(), ooc.Incremental(sgd, n_epochs=2))


@pytest.fixture(scope="module")
def binary(clf_dir):
    """A Pipeline(StandardScaler, Incremental(log-loss SGD)) fitted on parquet blocks."""
    X, y = ooc.read_parquet(clf_dir)
    pipe = _sgd_pipeline().fit(X, y, incremental__classes=[0, 1])
    return pipe, X, y


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    path = tmp_path_factory.mktemp("multiclass")
    ooc.generate_dataset(path, n_rows=6_000, n_features=4, chunk_rows=1_000, n_classes=3, seed=5)
    X, y = ooc.read_parquet(path)
    pipe = _sgd_pipeline().fit(X, y, incremental__classes=[0, 1, 2])
    return pipe, X, y


def _numpy_classification(n=3_000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = (X @ [1.0, -2.0, 0.5, 0.0] + rng.standard_normal(n) > 0).astype(np.int64)
    return X, y


# --- classifiers -------------------------------------------------------------------------


def test_probabilistic_pipeline_matches_sklearn(binary):
    pipe, X, y = binary
    metrics = evaluate(pipe, X, y)

    x_np, y_np = da.compute(X, y)
    proba = pipe.predict_proba(x_np)
    assert set(metrics) == {"n_samples", "accuracy", "log_loss", "roc_auc"}
    assert metrics["n_samples"] == len(y_np)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_np, pipe.predict(x_np)))
    assert metrics["log_loss"] == pytest.approx(log_loss(y_np, proba, labels=[0, 1]), rel=1e-9)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y_np, proba[:, 1]), abs=AUC_TOL)
    assert 0.6 < metrics["accuracy"] < 1  # a real, imperfect model: the test means something


def test_multiclass_macro_one_vs_rest_auc(multiclass):
    pipe, X, y = multiclass
    metrics = evaluate(pipe, X, y)

    x_np, y_np = da.compute(X, y)
    proba = pipe.predict_proba(x_np)
    expected_auc = roc_auc_score(y_np, proba, multi_class="ovr", average="macro")
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_np, pipe.predict(x_np)))
    assert metrics["log_loss"] == pytest.approx(log_loss(y_np, proba), rel=1e-9)
    assert metrics["roc_auc"] == pytest.approx(expected_auc, abs=AUC_TOL)


def test_hinge_classifier_has_no_log_loss_and_auc_from_decision_function():
    x_np, y_np = _numpy_classification()
    model = SGDClassifier(loss="hinge", random_state=0).fit(x_np, y_np)
    assert not hasattr(model, "predict_proba")
    X, y = da.from_array(x_np, chunks=(700, 4)), da.from_array(y_np, chunks=700)

    metrics = evaluate(model, X, y)

    assert set(metrics) == {"n_samples", "accuracy", "roc_auc"}
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_np, model.predict(x_np)))
    expected_auc = roc_auc_score(y_np, model.decision_function(x_np))
    assert metrics["roc_auc"] == pytest.approx(expected_auc, abs=AUC_TOL)


def test_multiclass_without_predict_proba_has_no_auc():
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal((600, 3))
    y_np = np.argmax(x_np, axis=1)
    model = SGDClassifier(loss="hinge", random_state=0).fit(x_np, y_np)

    metrics = evaluate(model, da.from_array(x_np, chunks=200), da.from_array(y_np, chunks=200))

    assert set(metrics) == {"n_samples", "accuracy"}
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_np, model.predict(x_np)))


def test_string_labels_are_mapped_through_classes():
    x_np, y_int = _numpy_classification(n=800)
    y_np = np.array(["no", "yes"])[y_int].astype(object)
    model = SGDClassifier(loss="log_loss", random_state=0).fit(x_np, y_np)

    metrics = evaluate(model, da.from_array(x_np, chunks=300), da.from_array(y_np, chunks=300))

    proba = model.predict_proba(x_np)
    assert metrics["log_loss"] == pytest.approx(log_loss(y_np, proba), rel=1e-9)
    expected_auc = roc_auc_score(y_np == "yes", proba[:, 1])
    assert metrics["roc_auc"] == pytest.approx(expected_auc, abs=AUC_TOL)


def test_auc_is_nan_when_y_holds_one_class_only():
    x_np, y_np = _numpy_classification(n=400)
    model = SGDClassifier(loss="log_loss", random_state=0).fit(x_np, y_np)
    x_one, y_one = x_np[y_np == 1], y_np[y_np == 1]
    metrics = evaluate(model, x_one, y_one)
    assert np.isnan(metrics["roc_auc"])
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_one, model.predict(x_one)))


def test_unknown_label_is_named(binary):
    pipe, X, y = binary
    y_bad = da.where(da.arange(len(y), chunks=y.chunks) == 2_500, 7, y)
    message = r"label\(s\) \[7\] that the model does not know; its classes_ are \[0, 1\]"
    with pytest.raises(ValueError, match=message):
        evaluate(pipe, X, y_bad)


# --- regressors --------------------------------------------------------------------------


def test_regressor_pipeline_matches_sklearn(reg_dir):
    X, y = ooc.read_parquet(reg_dir)
    sgd = SGDRegressor(random_state=0)
    pipe = make_pipeline(ooc.StandardScaler(), ooc.Incremental(sgd, n_epochs=2)).fit(X, y)

    metrics = evaluate(pipe, X, y)

    x_np, y_np = da.compute(X, y)
    pred = pipe.predict(x_np)
    assert set(metrics) == {"n_samples", "r2", "rmse", "mae"}
    assert metrics["n_samples"] == len(y_np)
    assert metrics["r2"] == pytest.approx(r2_score(y_np, pred), rel=1e-9)
    assert metrics["rmse"] == pytest.approx(root_mean_squared_error(y_np, pred), rel=1e-9)
    assert metrics["mae"] == pytest.approx(mean_absolute_error(y_np, pred), rel=1e-9)
    assert 0.5 < metrics["r2"] < 1


def test_multioutput_regression_averages_outputs_uniformly():
    rng = np.random.default_rng(2)
    x_np = rng.standard_normal((500, 3))
    y_np = np.column_stack([x_np @ [1.0, 2.0, 0.0], 100 * x_np[:, 2]])
    y_np += rng.standard_normal(y_np.shape) * [3.0, 1.0]
    model = LinearRegression().fit(x_np[:100], y_np[:100])

    metrics = evaluate(model, da.from_array(x_np, chunks=130), da.from_array(y_np, chunks=130))

    pred = model.predict(x_np)
    assert metrics["r2"] == pytest.approx(r2_score(y_np, pred), rel=1e-9)
    assert metrics["rmse"] == pytest.approx(root_mean_squared_error(y_np, pred), rel=1e-9)
    assert metrics["mae"] == pytest.approx(mean_absolute_error(y_np, pred), rel=1e-9)


@pytest.mark.parametrize("constant", [3.0, 4.0])
def test_constant_target_follows_sklearn_r2_convention(constant):
    x_np = np.zeros((60, 1))
    y_np = np.full(60, 3.0)
    model = DummyRegressor(strategy="constant", constant=constant).fit(x_np, y_np)

    metrics = evaluate(model, da.from_array(x_np, chunks=25), da.from_array(y_np, chunks=25))

    assert metrics["r2"] == r2_score(y_np, model.predict(x_np))  # 1.0 if exact, else 0.0


def test_r2_stays_accurate_for_a_target_with_a_large_mean():
    rng = np.random.default_rng(3)
    x_np = rng.standard_normal((2_000, 2))
    y_np = 1e9 + x_np[:, 0] + 0.5 * rng.standard_normal(2_000)
    model = LinearRegression().fit(x_np, y_np)

    metrics = evaluate(model, da.from_array(x_np, chunks=300), da.from_array(y_np, chunks=300))

    assert metrics["r2"] == pytest.approx(r2_score(y_np, model.predict(x_np)), rel=1e-6)


# --- clusterers --------------------------------------------------------------------------


def test_kmeans_inertia_matches_in_memory(blobs_dir):
    X, _ = ooc.read_parquet(blobs_dir)
    x_np = X.compute()
    km = MiniBatchKMeans(n_clusters=4, random_state=0, n_init=3).fit(x_np)

    metrics = evaluate(km, X)

    distances = ((x_np[:, None, :] - km.cluster_centers_[None]) ** 2).sum(axis=2)
    assert set(metrics) == {"n_samples", "inertia"}
    assert metrics["n_samples"] == len(x_np)
    assert metrics["inertia"] == pytest.approx(-km.score(x_np), rel=1e-9)
    assert metrics["inertia"] == pytest.approx(distances.min(axis=1).sum(), rel=1e-9)


def test_streamed_kmeans_pipeline_ignores_y(blobs_dir):
    X, y = ooc.read_parquet(blobs_dir)
    km = MiniBatchKMeans(n_clusters=4, random_state=0, n_init=3)
    pipe = make_pipeline(ooc.StandardScaler(), ooc.Incremental(km)).fit(X)

    metrics = evaluate(pipe, X, y)

    assert metrics["inertia"] == pytest.approx(-pipe.score(X.compute()), rel=1e-9)


# --- blocks and computation --------------------------------------------------------------


def test_exactly_one_dask_compute(binary):
    pipe, X, y = binary
    counter = ComputeCounter()
    with dask.config.set(scheduler="threads"), counter:
        evaluate(pipe, X, y)
    assert counter.computes == 1


def test_numpy_input_is_one_block_and_needs_no_compute():
    x_np, y_np = _numpy_classification(n=500)
    model = SGDClassifier(loss="log_loss", random_state=0).fit(x_np, y_np)
    counter = ComputeCounter()
    with dask.config.set(scheduler="threads"), counter:
        metrics = evaluate(model, x_np, y_np)
    assert counter.computes == 0
    assert metrics["log_loss"] == pytest.approx(log_loss(y_np, model.predict_proba(x_np)))
    assert metrics == evaluate(model, da.from_array(x_np, chunks=500), da.from_array(y_np))


def test_empty_blocks_are_skipped():
    x_np, y_np = _numpy_classification(n=300)
    # sklearn's predict rejects 0 rows, so this only passes if empty blocks are skipped.
    model = SGDClassifier(loss="log_loss", random_state=0).fit(x_np, y_np)
    chunks = (0, 100, 0, 150, 0, 50, 0)
    X = da.from_array(x_np, chunks=(300, 4)).rechunk((chunks, (4,)))
    y = da.from_array(y_np, chunks=300).rechunk((chunks,))
    assert X.chunks[0] == chunks

    metrics = evaluate(model, X, y)

    assert metrics == pytest.approx(evaluate(model, x_np, y_np))
    assert metrics["n_samples"] == 300


def test_empty_partitions_of_a_dask_dataframe_are_skipped():
    x_np, y_np = _numpy_classification(n=400)
    frame = pd.DataFrame(x_np, columns=["a", "b", "c", "d"]).assign(y=y_np, row=range(400))
    model = SGDClassifier(loss="log_loss", random_state=0).fit(frame[["a", "b", "c", "d"]], y_np)
    ddf = dd.from_pandas(frame, npartitions=4)
    ddf = ddf[ddf["row"] < 250]  # the last partition becomes empty; sizes are unknown
    assert 0 in ddf.map_partitions(len).compute().tolist()
    kept = frame.iloc[:250]

    metrics = evaluate(model, ddf[["a", "b", "c", "d"]], ddf["y"])

    assert metrics == pytest.approx(evaluate(model, kept[["a", "b", "c", "d"]], kept["y"]))
    assert metrics["n_samples"] == 250


def test_runs_on_a_distributed_cluster(binary, dask_client):
    pipe, X, y = binary
    with dask.config.set(scheduler="threads"):
        local = evaluate(pipe, X, y)
    assert evaluate(pipe, X, y) == pytest.approx(local)


# --- bad input ---------------------------------------------------------------------------


def test_missing_y_for_a_supervised_model(binary):
    pipe, X, _ = binary
    with pytest.raises(ValueError, match="needs the true target y.*but y is None"):
        evaluate(pipe, X)


def test_model_that_is_not_a_predictor():
    with pytest.raises(TypeError, match="StandardScaler is none of them"):
        evaluate(SkStandardScaler().fit(np.ones((3, 1))), np.ones((3, 1)))


def test_unfitted_model():
    with pytest.raises(NotFittedError):
        evaluate(SGDClassifier(), np.ones((3, 1)), np.array([0, 1, 0]))


@pytest.mark.parametrize("bins", [1, 0, 2.5, True])
def test_bad_auc_bins(bins):
    x_np, y_np = _numpy_classification(n=50)
    model = SGDClassifier(random_state=0).fit(x_np, y_np)
    with pytest.raises(ValueError, match=f"auc_bins must be an int >= 2, got {bins!r}"):
        evaluate(model, x_np, y_np, auc_bins=bins)


def test_no_rows():
    x_np, y_np = _numpy_classification(n=50)
    model = SGDClassifier(random_state=0).fit(x_np, y_np)
    X = da.from_array(x_np[:0], chunks=(1, 4))
    with pytest.raises(ValueError, match="X has no rows"):
        evaluate(model, X, da.from_array(y_np[:0], chunks=1))
