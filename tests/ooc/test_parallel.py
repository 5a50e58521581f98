"""ParallelIncremental and the replica averaging rules behind it."""

from __future__ import annotations

import copy

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import MiniBatchKMeans
from sklearn.datasets import make_blobs, make_classification, make_regression
from sklearn.linear_model import Perceptron, SGDClassifier, SGDRegressor
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.utils.estimator_checks import parametrize_with_checks

from ooc import Incremental, ParallelIncremental
from ooc.averaging import TESTED_SKLEARN, average_replicas, check_state, state_attributes

CLASSES = [0, 1]


def _data(kind: str, n: int = 48_000, chunk: int = 2_000):
    if kind == "classification":
        X, y = make_classification(n, 8, n_informative=5, class_sep=1.5, random_state=0)
    elif kind == "regression":
        X, y = make_regression(n, 8, noise=5.0, random_state=0)
        y = y / y.std()
    else:
        X, y = make_blobs(n, 8, centers=4, random_state=0)
    return da.from_array(X, chunks=(chunk, 8)), da.from_array(y, chunks=chunk), X, y


FAMILIES = {
    # name: (estimator, data kind, fit kwargs, allowed score loss against the serial fit)
    "sgd-classifier": (SGDClassifier(random_state=0), "classification", 0.01),
    "sgd-regressor": (SGDRegressor(random_state=0), "regression", 0.01),
    "perceptron": (Perceptron(random_state=0), "classification", 0.03),
    "passive-aggressive": (
        SGDClassifier(loss="hinge", penalty=None, learning_rate="pa1", eta0=1.0, random_state=0),
        "classification",
        0.03,
    ),
    "sgd-averaged": (SGDClassifier(average=True, random_state=0), "classification", 0.01),
    "mlp-classifier": (
        MLPClassifier(hidden_layer_sizes=(16,), random_state=0),
        "classification",
        0.03,
    ),
    # Averaging R replicas takes one optimiser step per R blocks' worth of rows, so an MLP
    # (far from converged after 2 epochs) trails the serial fit more than linear models do.
    "mlp-regressor": (MLPRegressor(hidden_layer_sizes=(16,), random_state=0), "regression", 0.06),
    "minibatch-kmeans": (MiniBatchKMeans(4, n_init=1, random_state=0), "blobs", 0.02),
}


def _fit_kwargs(kind: str) -> dict:
    return {"classes": CLASSES} if kind == "classification" else {}


def _score(model, X, y, kind) -> float:
    if kind == "blobs":
        return model.score(X)  # minus inertia
    return model.score(X, y)


def _learned(model) -> list[np.ndarray]:
    est = model.estimator_
    for names in (("coef_", "intercept_"), ("coefs_", "intercepts_"), ("cluster_centers_",)):
        if hasattr(est, names[0]):
            out = []
            for name in names:
                value = getattr(est, name)
                out.extend(value if isinstance(value, list) else [value])
            return out
    raise AssertionError(type(est))


# -- the averaging rules --------------------------------------------------------------


def _fitted_copies(estimator, X, y, n, **fit_kwargs):
    start = (
        estimator.partial_fit(X, **fit_kwargs)
        if y is None
        else estimator.partial_fit(X, y, **fit_kwargs)
    )
    return start, [copy.deepcopy(start) for _ in range(n)]


def test_linear_replicas_average_to_the_row_weighted_mean():
    X, y = np.eye(3), np.array([1.0, -1.0, 0.5])
    start, (a, b, c) = _fitted_copies(SGDRegressor(random_state=0), X, y, 3)
    a.coef_[:], b.coef_[:], c.coef_[:] = [3.0, 0, 0], [0, 6.0, 0], [0, 0, 9.0]
    a.intercept_[:], b.intercept_[:], c.intercept_[:] = 1.0, 2.0, 4.0
    a.t_, b.t_, c.t_ = start.t_ + 10, start.t_ + 20, start.t_ + 30
    merged = average_replicas(start, [a, b, c], rows=[1, 2, 3])
    assert_allclose(merged.coef_, [3 / 6, 12 / 6, 27 / 6])
    assert_allclose(merged.intercept_, [(1 + 4 + 12) / 6])
    assert merged.t_ == start.t_ + 60  # the learning-rate clock counts every replica's rows


def test_averaged_sgd_averages_both_the_iterate_and_the_running_average():
    X, y = np.eye(2), np.array([0, 1])
    start, (a, b) = _fitted_copies(
        SGDClassifier(average=True, random_state=0), X, y, 2, classes=CLASSES
    )
    a._standard_coef[:], b._standard_coef[:] = 1.0, 3.0
    a._average_coef[:], b._average_coef[:] = 10.0, 30.0
    merged = average_replicas(start, [a, b], rows=[1, 1])
    assert_allclose(merged._standard_coef, 2.0)
    assert_allclose(merged._average_coef, 20.0)


def test_replicas_without_rows_do_not_count():
    X, y = np.eye(2), np.array([1.0, -1.0])
    start, (a, b) = _fitted_copies(SGDRegressor(random_state=0), X, y, 2)
    a.coef_[:], b.coef_[:] = 1.0, 100.0
    assert_allclose(average_replicas(start, [a, b], rows=[5, 0]).coef_, 1.0)


def test_mlp_replicas_average_layers_and_adam_moments():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    start, (a, b) = _fitted_copies(MLPRegressor(hidden_layer_sizes=(4,), random_state=0), X, y, 2)
    a.partial_fit(X, y)
    b.partial_fit(X[::-1], -y)
    want_coefs = [(3 * p + q) / 4 for p, q in zip(a.coefs_, b.coefs_, strict=True)]
    want_ms = [(3 * p + q) / 4 for p, q in zip(a._optimizer.ms, b._optimizer.ms, strict=True)]
    merged = average_replicas(start, [a, b], rows=[30, 10])
    for got, want in zip(merged.coefs_, want_coefs, strict=True):
        assert_allclose(got, want)
    for got, want in zip(merged._optimizer.ms, want_ms, strict=True):
        assert_allclose(got, want)
    assert merged.t_ == start.t_ + 2 * 20


def test_kmeans_replicas_merge_as_one_running_mean():
    X, _ = make_blobs(600, 2, centers=3, random_state=0)
    km = MiniBatchKMeans(3, n_init=1, random_state=0, reassignment_ratio=0.0)
    start, (a, b) = _fitted_copies(km, X[:200], None, 2)
    a.partial_fit(X[200:400])
    b.partial_fit(X[400:])
    # Each replica assigned its rows with the start's centres: add them up by hand.
    centres, counts = start.cluster_centers_ * start._counts[:, None], start._counts.copy()
    for rows in (X[200:400], X[400:]):
        labels = start.predict(rows)
        for k in range(3):
            centres[k] += rows[labels == k].sum(axis=0)
            counts[k] += np.sum(labels == k)
    merged = average_replicas(start, [a, b], rows=[200, 200])
    assert_allclose(merged._counts, counts)
    assert_allclose(merged.cluster_centers_, centres / counts[:, None])
    assert merged.n_steps_ == start.n_steps_ + 2


def test_an_estimator_that_cannot_be_averaged_is_refused():
    X, y, *_ = _data("classification", n=4_000)
    with pytest.raises(TypeError, match="GaussianNB is none of these.*ooc.Incremental"):
        ParallelIncremental(GaussianNB()).fit(X, y, classes=CLASSES)


@pytest.mark.parametrize(
    "name, value", [("sync_every", 0), ("n_replicas", 1.5), ("n_replicas", True)]
)
def test_bad_parameters_are_refused(name, value):
    X, y, *_ = _data("classification", n=4_000)
    model = ParallelIncremental(SGDClassifier(), **{name: value})
    with pytest.raises(ValueError, match=f"{name} must be None or an int >= 1"):
        model.fit(X, y, classes=CLASSES)


# -- scikit-learn's private state, read by averaging ------------------------------------

STATES = {
    "sgd": (SGDClassifier(random_state=0), "classification"),
    "sgd-averaged": (SGDClassifier(average=True, random_state=0), "classification"),
    "sgd-regressor-averaged": (SGDRegressor(average=True, random_state=0), "regression"),
    "perceptron": (Perceptron(random_state=0), "classification"),
    "mlp-adam": (MLPClassifier(hidden_layer_sizes=(4,), random_state=0), "classification"),
    "mlp-sgd-momentum": (
        MLPRegressor(hidden_layer_sizes=(4,), solver="sgd", momentum=0.9, random_state=0),
        "regression",
    ),
    "minibatch-kmeans": (MiniBatchKMeans(3, n_init=1, random_state=0), "blobs"),
}


def _fitted(name):
    estimator, kind = STATES[name]
    _, _, X, y = _data(kind, n=300)
    if kind == "blobs":
        return copy.deepcopy(estimator).partial_fit(X)
    return copy.deepcopy(estimator).partial_fit(X, y, **_fit_kwargs(kind))


@pytest.mark.parametrize("name", list(STATES))
def test_the_installed_scikit_learn_has_the_state_averaging_reads(name):
    """Fails on a scikit-learn release that renamed or dropped one of these attributes."""
    estimator = _fitted(name)
    check_state(estimator)
    private = [a for a in state_attributes(estimator) if a.startswith("_")]
    assert bool(private) == (name not in {"sgd", "perceptron"}), private


def test_a_replica_without_its_state_fails_loudly():
    import sklearn

    estimator = _fitted("sgd-averaged")
    replica = copy.deepcopy(estimator)
    del replica._average_coef  # as a scikit-learn release without it would leave it
    message = (
        rf"SGDClassifier._average_coef, but this SGDClassifier \(scikit-learn "
        rf"{sklearn.__version__}\) has no such attribute.*Pin scikit-learn.*ooc.Incremental"
    )
    with pytest.raises(TypeError, match=message):
        average_replicas(estimator, [replica, copy.deepcopy(estimator)], rows=[1, 1])
    mlp = _fitted("mlp-adam")
    del mlp._optimizer.vs
    with pytest.raises(TypeError, match=r"MLPClassifier._optimizer.vs"):
        check_state(mlp)


def test_pyproject_bounds_scikit_learn_to_the_tested_releases():
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.specifiers import SpecifierSet

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert f"scikit-learn{TESTED_SKLEARN}" in pyproject["project"]["dependencies"]
    assert version("scikit-learn") in SpecifierSet(TESTED_SKLEARN)


# -- fitting --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_one_replica_is_exactly_the_serial_fit(name):
    estimator, kind, _ = FAMILIES[name]
    X, y, *_ = _data(kind, n=12_000)
    target = None if kind == "blobs" else y
    kwargs = _fit_kwargs(kind)
    serial = Incremental(estimator, random_state=0, shuffle_blocks=True, n_epochs=2)
    parallel = ParallelIncremental(
        estimator, n_replicas=1, sync_every=3, random_state=0, shuffle_blocks=True, n_epochs=2
    )
    serial.fit(X, target, **kwargs)
    parallel.fit(X, target, **kwargs)
    for got, want in zip(_learned(parallel), _learned(serial), strict=True):
        assert_array_equal(got, want)
    assert parallel.n_samples_seen_ == serial.n_samples_seen_ == 24_000


@pytest.mark.parametrize("name", list(FAMILIES))
def test_two_replicas_score_close_to_the_serial_fit(name):
    estimator, kind, allowed = FAMILIES[name]
    X, y, Xn, yn = _data(kind)
    target = None if kind == "blobs" else y
    kwargs = _fit_kwargs(kind)
    serial = Incremental(estimator, random_state=0, n_epochs=2).fit(X, target, **kwargs)
    parallel = ParallelIncremental(
        estimator, n_replicas=2, sync_every=2, random_state=0, n_epochs=2
    ).fit(X, target, **kwargs)
    want, got = _score(serial, Xn, yn, kind), _score(parallel, Xn, yn, kind)
    if kind == "blobs":  # minus inertia: compare relatively
        assert got >= want * (1 + allowed), (got, want)
    else:
        assert got >= want - allowed, (got, want)
    assert parallel.n_samples_seen_ == 2 * len(Xn)


def test_replicas_really_fit_different_blocks():
    X, y, *_ = _data("classification", n=16_000)
    reports = []
    ParallelIncremental(
        SGDClassifier(random_state=0), n_replicas=2, sync_every=2, block_callback=reports.append
    ).fit(X, y, classes=CLASSES)
    assert [r.position for r in reports] == list(range(8))
    assert sorted(r.block for r in reports) == list(range(8))
    # Block 0 alone initialises the model; then rounds of 2 blocks per replica.
    assert [r.replica for r in reports] == [0, 0, 1, 0, 1, 0, 1, 0]
    assert reports[-1].n_samples_seen == 16_000


def test_same_model_from_threads_and_from_in_process_workers():
    from distributed import Client, LocalCluster

    X, y, *_ = _data("classification", n=24_000)
    params = dict(n_replicas=2, sync_every=2, random_state=3, shuffle_blocks=True, n_epochs=2)
    threads = ParallelIncremental(SGDClassifier(random_state=0), **params)
    threads.fit(X, y, classes=CLASSES)
    # In-process workers share this process's objects: each replica must copy the model.
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        for _ in range(2):
            in_process = ParallelIncremental(SGDClassifier(random_state=0), **params)
            in_process.fit(X, y, classes=CLASSES)
            assert_array_equal(in_process.coef_, threads.coef_)
            assert_array_equal(in_process.intercept_, threads.intercept_)


def test_same_model_from_threads_and_from_cluster_workers(dask_cluster):
    from distributed import Client, get_task_stream

    X, y, *_ = _data("classification", n=24_000)
    params = dict(n_replicas=2, sync_every=2, random_state=3, shuffle_blocks=True, n_epochs=2)
    threads = ParallelIncremental(SGDClassifier(random_state=0), **params)
    threads.fit(X, y, classes=CLASSES)
    again = ParallelIncremental(SGDClassifier(random_state=0), **params)
    again.fit(X, y, classes=CLASSES)
    with Client(dask_cluster) as client:
        on_workers = ParallelIncremental(SGDClassifier(random_state=0), **params)
        with get_task_stream(client) as stream:
            on_workers.fit(X, y, classes=CLASSES)
    assert_array_equal(threads.coef_, again.coef_)
    assert_array_equal(threads.coef_, on_workers.coef_)
    assert on_workers.n_samples_seen_ == 48_000
    replicas = [t for t in stream.data if str(t["key"]).startswith("ooc-replica")]
    # 2 epochs of 11 blocks after the first: 3 rounds each, both workers every round.
    assert len({t["worker"] for t in replicas}) == 2, replicas
    assert len(replicas) == 1 + 2 * 6


def test_an_interrupted_parallel_fit_resumes_to_the_same_model(tmp_path):
    X, y, *_ = _data("classification", n=24_000)
    params = dict(n_replicas=2, sync_every=2, random_state=0, shuffle_blocks=True, n_epochs=2)
    clean = ParallelIncremental(SGDClassifier(random_state=0), **params).fit(X, y, classes=CLASSES)

    def crash(report):
        if report.epoch == 1 and report.position == 6:
            raise RuntimeError("worker lost")

    checkpoint = tmp_path / "fit.ckpt"
    model = ParallelIncremental(
        SGDClassifier(random_state=0),
        **params,
        block_callback=crash,
        checkpoint_path=checkpoint,
        checkpoint_every=2,
    )
    with pytest.raises(RuntimeError, match="worker lost"):
        model.fit(X, y, classes=CLASSES)
    model.set_params(block_callback=None).fit(X, y, classes=CLASSES)
    # Checkpoints fall on round boundaries: epoch 1's rounds are positions 0-3, 4-7, ...
    assert model.resumed_from_ == (1, 4)
    assert_array_equal(model.coef_, clean.coef_)
    assert model.n_samples_seen_ == clean.n_samples_seen_ == 48_000


def test_progressive_score_and_early_stopping():
    X, y, *_ = _data("classification", n=24_000)
    model = ParallelIncremental(
        SGDClassifier(random_state=0),
        n_replicas=2,
        n_epochs=4,
        random_state=0,
        progressive_score=True,
        early_stopping=True,
        n_iter_no_change=1,
        tol=1.0,  # no epoch can improve by 1: stop after the second
    ).fit(X, y, classes=CLASSES)
    assert model.n_epochs_ == 2
    assert len(model.training_scores_) == len(model.validation_scores_) == 2
    assert all(0.7 < s <= 1.0 for s in model.training_scores_ + model.validation_scores_)


def test_scoring_of_a_parallel_fit():
    X, y, Xn, yn = _data("classification", n=8_000)
    model = ParallelIncremental(SGDClassifier(random_state=0), "f1", n_replicas=2)
    model.fit(X, y, classes=CLASSES)
    assert model.get_params()["scoring"] == "f1"
    assert model.score(X, y) == pytest.approx(model.score(Xn, yn), abs=0.01)
    lazy = model.score(X, y, compute=False)
    assert lazy.compute() == model.score(X, y)


@parametrize_with_checks([ParallelIncremental(SGDClassifier(random_state=0), n_epochs=5)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
