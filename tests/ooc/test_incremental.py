"""Incremental: equal to a manual partial_fit loop, prefetching, bounded, and loud on bad input."""

from __future__ import annotations

import pickle
import re
import threading
import time

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Perceptron, SGDClassifier, SGDRegressor
from sklearn.naive_bayes import BernoulliNB, GaussianNB, MultinomialNB
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import ooc
from ooc import Incremental, MinMaxScaler, StandardScaler

from .support import read_by_file

# -- scikit-learn's estimator checks on the numpy path -------------------------------------


@parametrize_with_checks(
    [
        Incremental(SGDClassifier(random_state=0), n_epochs=5),
        Incremental(SGDRegressor(random_state=0), n_epochs=5),
        Incremental(MiniBatchKMeans(n_clusters=3, n_init=3, random_state=0)),
        Incremental(GaussianNB()),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- equality with a manual partial_fit loop, for every supported family -----------------

CLASSES = [0, 1]

ESTIMATORS = {
    "sgd-classifier": (lambda: SGDClassifier(random_state=0), StandardScaler, True),
    "sgd-regressor": (lambda: SGDRegressor(random_state=0), StandardScaler, False),
    "passive-aggressive-classifier": (
        lambda: SGDClassifier(
            loss="hinge", penalty=None, learning_rate="pa1", eta0=1.0, random_state=0
        ),
        StandardScaler,
        True,
    ),
    "passive-aggressive-regressor": (
        lambda: SGDRegressor(
            loss="epsilon_insensitive", penalty=None, learning_rate="pa1", eta0=1.0, random_state=0
        ),
        StandardScaler,
        False,
    ),
    "perceptron": (lambda: Perceptron(random_state=0), StandardScaler, True),
    "mlp-classifier": (
        lambda: MLPClassifier(hidden_layer_sizes=(8,), random_state=0),
        StandardScaler,
        True,
    ),
    "mlp-regressor": (
        lambda: MLPRegressor(hidden_layer_sizes=(8,), random_state=0),
        StandardScaler,
        False,
    ),
    "gaussian-nb": (GaussianNB, StandardScaler, True),
    "multinomial-nb": (MultinomialNB, MinMaxScaler, True),
    "bernoulli-nb": (lambda: BernoulliNB(binarize=0.0), StandardScaler, True),
    "minibatch-kmeans": (
        lambda: MiniBatchKMeans(n_clusters=4, n_init=1, random_state=0),
        StandardScaler,
        None,
    ),
}

LEARNED = (
    "coef_", "intercept_", "coefs_", "intercepts_", "cluster_centers_", "theta_", "var_",
    "class_count_", "feature_log_prob_", "classes_",
)  # fmt: skip


def _file_blocks(path, target):
    """The blocks exactly as a person would read them: one pyarrow read per file."""
    layout = ooc.inspect_parquet(path, target=target)
    for file in layout.files:
        table = pq.read_table(file)
        X = np.column_stack([table[c].to_numpy() for c in layout.features])
        yield X, (table[target].to_numpy() if target else None)


def _data_dir(name, clf_dir, reg_dir, blobs_dir):
    return {True: (clf_dir, "y"), False: (reg_dir, "y"), None: (blobs_dir, None)}[name]


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_pipeline_fit_equals_manual_partial_fit_loop(name, clf_dir, reg_dir, blobs_dir):
    make_estimator, scaler_cls, classifier = ESTIMATORS[name]
    path, target = _data_dir(classifier, clf_dir, reg_dir, blobs_dir)
    X, y = read_by_file(path, target=target)
    kwargs = {"incremental__classes": CLASSES} if classifier else {}

    pipe = make_pipeline(scaler_cls(), Incremental(make_estimator()))
    pipe.fit(X, y, **kwargs)

    scaler = pipe[0]
    manual = make_estimator()
    for Xb, yb in _file_blocks(path, target):
        Xb = scaler.transform(Xb)
        if classifier:
            manual.partial_fit(Xb, yb, classes=CLASSES)
        elif yb is not None:
            manual.partial_fit(Xb, yb)
        else:
            manual.partial_fit(Xb)

    fitted = pipe[-1]
    compared = [a for a in LEARNED if hasattr(manual, a)]
    assert compared, f"no learned attribute compared for {name}"
    for attr in compared:
        got, want = getattr(fitted, attr), getattr(manual, attr)
        if isinstance(want, list):
            for g, w in zip(got, want, strict=True):
                assert_array_equal(g, w)
        else:
            assert_array_equal(got, want, err_msg=attr)
    assert fitted.n_samples_seen_ == sum(len(b[0]) for b in _file_blocks(path, target))


def test_learned_attributes_readable_through_wrapper(clf_dir):
    X, y = read_by_file(clf_dir)
    inc = Incremental(SGDClassifier(random_state=0)).fit(X, y, classes=CLASSES)
    assert inc.coef_ is inc.estimator_.coef_
    assert_array_equal(inc.classes_, CLASSES)
    assert inc.n_features_in_ == X.shape[1]
    with pytest.raises(AttributeError):
        _ = inc.cluster_centers_


def test_partial_fit_continues_from_estimator(clf_dir):
    X, y = read_by_file(clf_dir)
    half = X.numblocks[0] // 2
    inc = Incremental(SGDClassifier(random_state=0))
    inc.partial_fit(X[: X.chunks[0][0] * half], y[: X.chunks[0][0] * half], classes=CLASSES)
    first = inc.estimator_
    inc.partial_fit(X[X.chunks[0][0] * half :], y[X.chunks[0][0] * half :], classes=CLASSES)
    assert inc.estimator_ is first  # continued, not cloned
    full = Incremental(SGDClassifier(random_state=0)).fit(X, y, classes=CLASSES)
    assert_array_equal(inc.coef_, full.coef_)
    assert inc.n_samples_seen_ == X.shape[0]


# -- epochs and shuffling ------------------------------------------------------------------


def _orders(inc, X, y):
    reports = []
    inc.set_params(block_callback=reports.append)
    inc.fit(X, y, classes=CLASSES)
    epochs = sorted({r.epoch for r in reports})
    return [[r.block for r in reports if r.epoch == e] for e in epochs], reports


def test_epochs_shuffle_blocks_reproducibly(clf_dir):
    X, y = read_by_file(clf_dir)
    n = X.numblocks[0]
    inc = Incremental(SGDClassifier(random_state=0), n_epochs=4, shuffle_blocks=True)
    orders, reports = _orders(inc.set_params(random_state=7), X, y)
    assert len(orders) == 4
    assert all(sorted(o) == list(range(n)) for o in orders)
    assert len({tuple(o) for o in orders}) > 1, "each epoch should draw its own order"
    again, _ = _orders(inc.set_params(random_state=7), X, y)
    other, _ = _orders(inc.set_params(random_state=8), X, y)
    assert again == orders and other != orders
    assert inc.n_epochs_ == 4 and inc.n_samples_seen_ == 4 * X.shape[0]
    assert reports[-1].n_samples_seen == 4 * X.shape[0]


def test_unshuffled_epochs_equal_manual_loop(clf_dir):
    X, y = read_by_file(clf_dir)
    inc = Incremental(SGDClassifier(random_state=0), n_epochs=3).fit(X, y, classes=CLASSES)
    manual = SGDClassifier(random_state=0)
    for _ in range(3):
        for Xb, yb in _file_blocks(clf_dir, "y"):
            manual.partial_fit(Xb, yb, classes=CLASSES)
    assert_array_equal(inc.coef_, manual.coef_)


# -- prefetch: overlap and a bounded depth ------------------------------------------------


class _SharedLog(list):
    """A log that survives sklearn's clone (which deep-copies parameters)."""

    def __deepcopy__(self, memo):
        return self


class _SlowRecorder(BaseEstimator, ClassifierMixin):
    """A classifier whose partial_fit takes time and records when it ran."""

    def __init__(self, log=None, seconds=0.05):
        self.log = log
        self.seconds = seconds

    def partial_fit(self, X, y, classes=None):
        self.log.append(("fit-start", int(X[0, 0]), time.perf_counter()))
        time.sleep(self.seconds)
        self.log.append(("fit-end", int(X[0, 0]), time.perf_counter()))
        self.classes_ = np.asarray(classes)
        return self


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_prefetch_overlaps_and_is_bounded(depth):
    n_blocks, log = 8, _SharedLog()
    lock = threading.Lock()

    def load(block_id=None):
        with lock:
            log.append(("load-start", block_id[0], time.perf_counter()))
        time.sleep(0.02)
        return np.full((10, 2), float(block_id[0]))

    X = da.map_blocks(load, chunks=((10,) * n_blocks, (2,)), dtype=float)
    y = da.zeros(10 * n_blocks, chunks=10, dtype=int)
    est = _SlowRecorder(log=log)
    inc = Incremental(est, prefetch=depth)
    with dask.config.set(scheduler="threads"):
        inc.fit(X, y, classes=[0])
    starts = {b: t for kind, b, t in log if kind == "load-start"}
    fit_start = {b: t for kind, b, t in log if kind == "fit-start"}
    fit_end = {b: t for kind, b, t in log if kind == "fit-end"}
    assert sorted(fit_start) == list(range(n_blocks))
    for i in range(n_blocks - 1):
        # the next block was already loading while block i was being fitted
        assert starts[i + 1] < fit_end[i]
    for i in range(n_blocks):
        # ...but never more than `depth` blocks ahead of the one being fitted
        ahead = [b for b, t in starts.items() if t < fit_start[i] and b > i]
        assert len(ahead) <= depth


def test_block_callback_reports_every_block(clf_dir):
    X, y = read_by_file(clf_dir)
    reports = []
    Incremental(SGDClassifier(), block_callback=reports.append).fit(X, y, classes=CLASSES)
    assert [r.block for r in reports] == list(range(X.numblocks[0]))
    assert [r.rows for r in reports] == list(X.chunks[0])
    assert all(r.fit_seconds > 0 and r.load_seconds > 0 and r.wait_seconds >= 0 for r in reports)
    assert reports[-1].n_samples_seen == X.shape[0]
    assert {r.n_positions for r in reports} == {X.numblocks[0]}


# -- inputs: column chunks, empty blocks, dataframes, numpy, distributed -------------------


def test_column_chunked_array_trains_on_every_feature(clf_dir):
    X, y = read_by_file(clf_dir)
    chunked = X.rechunk({1: 2})
    assert chunked.numblocks[1] > 1
    a = Incremental(SGDClassifier(random_state=0)).fit(chunked, y, classes=CLASSES)
    b = Incremental(SGDClassifier(random_state=0)).fit(X, y, classes=CLASSES)
    assert a.coef_.shape == (1, X.shape[1])
    assert_array_equal(a.coef_, b.coef_)
    assert a.predict(chunked).compute().shape == (X.shape[0],)


def test_empty_blocks_skipped_in_fit_and_empty_in_predict(clf_dir):
    X, y = read_by_file(clf_dir)
    chunks = (0, 2000, 0, *X.chunks[0][1:])
    Xe, ye = X.rechunk({0: chunks}), y.rechunk({0: chunks})
    assert Xe.chunks[0] == chunks
    reports = []
    sgd = SGDClassifier(loss="log_loss", random_state=0)
    with_empty = Incremental(sgd, block_callback=reports.append).fit(Xe, ye, classes=CLASSES)
    plain = Incremental(sgd).fit(X, y, classes=CLASSES)
    assert_array_equal(with_empty.coef_, plain.coef_)
    assert [r.rows for r in reports if r.rows == 0] == [0, 0]
    pred = with_empty.predict(Xe)
    assert pred.chunks[0] == Xe.chunks[0]
    assert_array_equal(pred.compute(), plain.predict(X).compute())
    proba = with_empty.predict_proba(Xe)
    assert proba.blocks[0].compute().shape == (0, 2)
    assert proba.compute().shape == (X.shape[0], 2)


def test_dask_dataframe_input(clf_dir):
    df = dd.read_parquet(str(clf_dir))
    features = [c for c in df.columns if c != "y"]
    Xd, yd = df[features], df["y"]
    sgd = SGDClassifier(loss="log_loss", random_state=0)
    inc = Incremental(sgd).fit(Xd, yd, classes=CLASSES)
    X, y = read_by_file(clf_dir)
    ref = Incremental(sgd).fit(X, y, classes=CLASSES)
    assert_allclose(inc.coef_, ref.coef_, rtol=1e-12)
    assert list(inc.feature_names_in_) == features
    pred = inc.predict(Xd)
    assert isinstance(pred, dd.Series)
    assert_array_equal(pred.compute().to_numpy(), ref.predict(X).compute())
    proba = inc.predict_proba(Xd)
    assert isinstance(proba, dd.DataFrame) and proba.compute().shape == (X.shape[0], 2)


def test_numpy_in_numpy_out(clf_dir):
    X, y = (a.compute() for a in read_by_file(clf_dir))
    sgd = SGDClassifier(loss="log_loss", random_state=0)
    inc = Incremental(sgd, n_epochs=2).fit(X, y)  # classes found from the in-memory y
    manual = clone(sgd)
    for _ in range(2):
        manual.partial_fit(X, y, classes=CLASSES)
    assert_array_equal(inc.coef_, manual.coef_)
    for method in ("predict", "predict_proba", "decision_function"):
        out = getattr(inc, method)(X)
        assert isinstance(out, np.ndarray)
        assert_array_equal(out, getattr(manual, method)(X))


@pytest.mark.parametrize(
    "method", ["predict", "predict_proba", "predict_log_proba", "decision_function"]
)
def test_prediction_methods_are_lazy_and_blockwise(clf_dir, method):
    X, y = read_by_file(clf_dir)
    inc = Incremental(SGDClassifier(loss="log_loss", random_state=0)).fit(X, y, classes=CLASSES)
    out = getattr(inc, method)(X)
    assert isinstance(out, da.Array)
    assert out.chunks[0] == X.chunks[0]
    # Blocks arrive feature-major from parquet; BLAS may round the last bit differently.
    assert_allclose(out.compute(), getattr(inc.estimator_, method)(X.compute()), rtol=1e-10)


def test_transform_and_score_for_kmeans(blobs_dir):
    X, _ = read_by_file(blobs_dir, target=None)
    inc = Incremental(MiniBatchKMeans(n_clusters=4, n_init=1, random_state=0)).fit(X)
    dist = inc.transform(X)
    assert isinstance(dist, da.Array) and dist.shape == (X.shape[0], 4)
    Xc = X.compute()
    assert_allclose(dist.compute(), inc.estimator_.transform(Xc))
    assert_allclose(inc.score(X), inc.estimator_.score(Xc), rtol=1e-9)


def test_score_equals_in_memory_score(clf_dir, reg_dir):
    X, y = read_by_file(clf_dir)
    clf = Incremental(SGDClassifier(random_state=0)).fit(X, y, classes=CLASSES)
    assert clf.score(X, y) == pytest.approx(clf.estimator_.score(X.compute(), y.compute()))
    X, y = read_by_file(reg_dir)
    reg = Incremental(SGDRegressor(random_state=0)).fit(X, y)
    # R² needs the global total sum of squares: averaging per-block R² would differ.
    assert reg.score(X, y) == pytest.approx(reg.estimator_.score(X.compute(), y.compute()))


def test_same_model_on_a_distributed_cluster(clf_dir, dask_client):
    X, y = read_by_file(clf_dir)
    on_cluster = Incremental(SGDClassifier(random_state=0)).fit(X, y, classes=CLASSES)
    with dask.config.set(scheduler="sync"):
        local = Incremental(SGDClassifier(random_state=0)).fit(X, y, classes=CLASSES)
    assert_array_equal(on_cluster.coef_, local.coef_)
    assert_array_equal(on_cluster.predict(X).compute(), local.predict(X).compute())
    for scoring in (None, "roc_auc", "f1"):  # score graphs run on worker processes
        on_cluster.set_params(scoring=scoring)
        with dask.config.set(scheduler="sync"):
            want = on_cluster.score(X, y)
        assert on_cluster.score(X, y) == want


# -- early stopping -------------------------------------------------------------------------


def test_early_stopping_holds_out_blocks_and_reports_scores(clf_dir):
    X, y = read_by_file(clf_dir)
    n_blocks, rows = X.numblocks[0], X.chunks[0][0]
    inc = Incremental(
        SGDClassifier(random_state=0),
        n_epochs=30,
        early_stopping=True,
        validation_fraction=0.34,
        n_iter_no_change=2,
        tol=10.0,  # nothing counts as an improvement, so it stops after 1 + 2 epochs
        random_state=0,
    )
    reports = []
    inc.set_params(block_callback=reports.append).fit(X, y, classes=CLASSES)
    assert inc.n_epochs_ == 3
    assert len(inc.validation_scores_) == 3
    assert all(0.5 < s <= 1 for s in inc.validation_scores_)
    assert inc.best_validation_score_ == max(inc.validation_scores_)
    held_out = n_blocks - len({r.block for r in reports})
    assert held_out == round(0.34 * n_blocks)
    assert inc.n_samples_seen_ == 3 * (n_blocks - held_out) * rows


def test_early_stopping_keeps_the_best_epoch(clf_dir):
    X, y = read_by_file(clf_dir)
    inc = Incremental(
        SGDClassifier(random_state=0, eta0=0.5, learning_rate="constant"),
        n_epochs=6,
        early_stopping=True,
        validation_fraction=0.34,
        n_iter_no_change=10,
        random_state=0,
    ).fit(X, y, classes=CLASSES)
    assert inc.n_epochs_ == 6
    _, held = inc._split_blocks(X.numblocks[0], 0)
    Xv = da.concatenate([X.blocks[i] for i in held]).compute()
    yv = da.concatenate([y.blocks[i] for i in held]).compute()
    assert inc.estimator_.score(Xv, yv) == pytest.approx(inc.best_validation_score_)


# -- checkpoints ------------------------------------------------------------------------------


class _Interrupt(Exception):
    pass


def _interrupt_after(n):
    count = {"blocks": 0}

    def callback(report):
        count["blocks"] += 1
        if count["blocks"] == n:
            raise _Interrupt(f"stopped after {n} blocks")

    return callback


@pytest.mark.parametrize("every, stop_after", [(2, 5), (None, 9)])
def test_interrupted_fit_resumes_to_the_same_model(clf_dir, tmp_path, every, stop_after):
    X, y = read_by_file(clf_dir)
    params = dict(n_epochs=3, shuffle_blocks=True, random_state=3)
    clean = Incremental(MLPClassifier(hidden_layer_sizes=(6,), random_state=0), **params)
    clean.fit(X, y, classes=CLASSES)

    ckpt = tmp_path / "fit.ckpt"
    inc = Incremental(
        MLPClassifier(hidden_layer_sizes=(6,), random_state=0),
        checkpoint_path=ckpt,
        checkpoint_every=every,
        block_callback=_interrupt_after(stop_after),
        **params,
    )
    with pytest.raises(_Interrupt):
        inc.fit(X, y, classes=CLASSES)
    assert ckpt.exists()
    inc.set_params(block_callback=None).fit(X, y, classes=CLASSES)
    n = X.numblocks[0]
    expected = (4 // n, 4 % n) if every == 2 else (1, 0)
    assert inc.resumed_from_ == expected
    for got, want in zip(inc.coefs_, clean.coefs_, strict=True):
        assert_array_equal(got, want)
    assert inc.n_samples_seen_ == clean.n_samples_seen_


def test_checkpoint_from_another_fit_is_refused(clf_dir, tmp_path):
    X, y = read_by_file(clf_dir)
    ckpt = tmp_path / "fit.ckpt"
    Incremental(SGDClassifier(), checkpoint_path=ckpt).fit(X, y, classes=CLASSES)
    with pytest.raises(ValueError, match="written by a different fit"):
        Incremental(SGDClassifier(), n_epochs=2, checkpoint_path=ckpt).fit(X, y, classes=CLASSES)


# -- bad input ---------------------------------------------------------------------------------


def test_nan_in_a_block_names_the_block():
    X = da.from_array(np.ones((40, 3)), chunks=(10, 3))
    X = da.where(da.arange(40)[:, None] == 25, np.nan, X)
    y = da.from_array(np.arange(40) % 2, chunks=10)
    with pytest.raises(ValueError, match=r"block 2 .*NaN"):
        Incremental(SGDClassifier()).fit(X, y, classes=CLASSES)


def test_inf_in_a_block_names_the_block():
    X = da.from_array(np.ones((40, 3)), chunks=(10, 3))
    X = da.where(da.arange(40)[:, None] == 5, np.inf, X)
    y = da.from_array(np.arange(40) % 2, chunks=10)
    with pytest.raises(ValueError, match=r"block 0 .*infinity"):
        Incremental(SGDRegressor()).fit(X, y)


def test_mismatched_rows_of_x_and_y():
    X = da.ones((100, 3), chunks=(25, 3))
    with pytest.raises(ValueError, match="X has 100 rows but y has 90"):
        Incremental(SGDRegressor()).fit(X, da.ones(90, chunks=30))


def test_mismatched_blocks_of_unknown_size():
    pdf = pd.DataFrame({"a": np.arange(100.0), "b": 1.0})
    X = dd.from_pandas(pdf, npartitions=4)
    y = dd.from_pandas(pdf["a"], npartitions=3)
    with pytest.raises(ValueError, match="X has 4 row blocks but y has 3"):
        Incremental(SGDRegressor()).fit(X, y)


def test_y_rechunked_to_x_blocks_when_totals_agree(clf_dir):
    X, y = read_by_file(clf_dir)
    a = Incremental(SGDClassifier(random_state=0)).fit(X, y.rechunk(5000), classes=CLASSES)
    b = Incremental(SGDClassifier(random_state=0)).fit(X, y, classes=CLASSES)
    assert_array_equal(a.coef_, b.coef_)


def test_missing_classes_for_a_streamed_classifier(clf_dir):
    X, y = read_by_file(clf_dir)
    with pytest.raises(ValueError, match=r"needs every class label up front.*incremental__classes"):
        make_pipeline(StandardScaler(), Incremental(SGDClassifier())).fit(X, y)


def test_predict_before_fit():
    X = da.ones((10, 2), chunks=5)
    for method in ("predict", "predict_proba", "score"):
        with pytest.raises(NotFittedError):
            args = (X, da.ones(10, chunks=5)) if method == "score" else (X,)
            getattr(Incremental(SGDClassifier(loss="log_loss")), method)(*args)


def test_estimator_without_partial_fit():
    from sklearn.svm import SVC

    with pytest.raises(TypeError, match="needs an estimator with partial_fit; SVC has none"):
        Incremental(SVC()).fit(np.ones((4, 2)), [0, 1, 0, 1])


def test_target_column_that_does_not_exist(clf_dir):
    with pytest.raises(ValueError, match=r"Target column 'label' not found"):
        read_by_file(clf_dir, target="label")


def test_non_numeric_feature_column(tmp_path):
    pd.DataFrame({"a": [1.0, 2.0], "city": ["x", "y"], "y": [0, 1]}).to_parquet(
        tmp_path / "p.parquet"
    )
    message = r"Feature column 'city' in .*p.parquet has type (large_)?string"
    with pytest.raises(ValueError, match=message):
        # A numeric array (by default a string column gives a DataFrame: issue 14).
        read_by_file(tmp_path, as_frame=False)


def test_progressive_score_equals_a_manual_test_then_train_loop(clf_dir):
    X, y = read_by_file(clf_dir)
    reports = []
    inc = Incremental(
        SGDClassifier(random_state=0),
        n_epochs=2,
        progressive_score=True,
        block_callback=reports.append,
    ).fit(X, y, classes=CLASSES)
    manual, scores = SGDClassifier(random_state=0), []
    for epoch in range(2):
        correct = seen = 0
        for i, (Xb, yb) in enumerate(_file_blocks(clf_dir, "y")):
            if epoch or i:  # the very first block meets an unfitted model
                correct += int(np.sum(manual.predict(Xb) == yb))
                seen += len(yb)
            manual.partial_fit(Xb, yb, classes=CLASSES)
        scores.append(correct / seen)
    assert inc.training_scores_ == pytest.approx(scores, abs=0)
    assert all(r.load_started <= r.fit_started for r in reports)
    assert [r.fit_started for r in reports] == sorted(r.fit_started for r in reports)


def test_numeric_parameters_refuse_bools_and_out_of_range_values():
    X, y = np.ones((4, 2)), np.array([0, 1, 0, 1])
    for name, bad in [
        ("n_epochs", True),
        ("n_epochs", 1.0),
        ("prefetch", -1),
        ("n_iter_no_change", 0),
        ("checkpoint_every", 0),
    ]:
        with pytest.raises(ValueError, match=rf"{name} must be (None or )?an int >= \d, got {bad}"):
            Incremental(SGDClassifier(), **{name: bad}).fit(X, y)


# -- progress: what a progress bar needs ------------------------------------------------------


def test_block_reports_count_training_blocks_only(clf_dir):
    X, y = read_by_file(clf_dir)
    reports = []
    Incremental(
        SGDClassifier(random_state=0),
        n_epochs=3,
        early_stopping=True,
        validation_fraction=0.34,
        n_iter_no_change=10,  # every epoch runs
        random_state=0,
        block_callback=reports.append,
    ).fit(X, y, classes=CLASSES)
    n_train = X.numblocks[0] - round(0.34 * X.numblocks[0])
    assert {r.n_positions for r in reports} == {n_train}
    assert {r.blocks_total for r in reports} == {3 * n_train}
    assert [r.blocks_done for r in reports] == list(range(1, 3 * n_train + 1))


def test_block_report_is_built_by_keyword():
    with pytest.raises(TypeError):
        ooc.BlockReport(0, 0, 1, 1, 0, 10, 0.0, 0.0, 0.0, 10, 0.0, 0.0)


# -- partial_fit: in order, adding to the history -----------------------------------------------


def test_partial_fit_streams_in_order_and_adds_to_the_history(clf_dir):
    X, y = read_by_file(clf_dir)
    reports = []
    inc = Incremental(
        SGDClassifier(random_state=0),
        shuffle_blocks=True,
        random_state=0,
        progressive_score=True,
        block_callback=reports.append,
    )
    inc.partial_fit(X, y, classes=CLASSES).partial_fit(X, y, classes=CLASSES)
    assert [r.block for r in reports] == 2 * list(range(X.numblocks[0]))
    manual = SGDClassifier(random_state=0)
    for _ in range(2):
        for Xb, yb in _file_blocks(clf_dir, "y"):
            manual.partial_fit(Xb, yb, classes=CLASSES)
    assert_array_equal(inc.coef_, manual.coef_)
    assert len(inc.training_scores_) == 2 and inc.n_epochs_ == 2
    assert inc.n_samples_seen_ == 2 * X.shape[0]


# -- scipy.sparse blocks ------------------------------------------------------------------------


def _sparse_data():
    """A dask array of CSR blocks, one of them empty, and the same rows in memory."""
    import scipy.sparse as sp

    Xs = sp.random(600, 8, density=0.3, format="csr", random_state=0)
    y = (np.asarray(Xs.sum(axis=1)).ravel() > 1.2).astype(int)
    chunks = ((200, 0, 250, 150), (8,))
    X = da.from_array(Xs, chunks=chunks, asarray=False)
    assert isinstance(X.blocks[1].compute(), sp.csr_matrix) and X.blocks[1].shape[0] == 0
    return X, da.from_array(y, chunks=chunks[0]), Xs, y


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function"])
def test_prediction_on_sparse_blocks_equals_in_memory(method):
    X, y, Xs, ys = _sparse_data()
    inc = Incremental(SGDClassifier(loss="log_loss", random_state=0)).fit(X, y, classes=CLASSES)
    out = getattr(inc, method)(X)
    assert out.chunks[0] == X.chunks[0]
    assert_allclose(out.compute(), getattr(inc.estimator_, method)(Xs), rtol=1e-12)


def test_transform_score_and_evaluate_on_sparse_blocks():
    X, y, Xs, ys = _sparse_data()
    km = Incremental(MiniBatchKMeans(n_clusters=3, n_init=1, random_state=0)).fit(X)
    assert_allclose(km.transform(X).compute(), km.estimator_.transform(Xs), rtol=1e-12)
    assert km.score(X) == pytest.approx(km.estimator_.score(Xs), rel=1e-9)
    clf = Incremental(SGDClassifier(loss="log_loss", random_state=0)).fit(X, y, classes=CLASSES)
    assert clf.score(X, y) == pytest.approx(clf.estimator_.score(Xs, ys))
    metrics = ooc.evaluate(clf, X, y)
    assert metrics["n_samples"] == 600
    assert metrics["accuracy"] == pytest.approx(clf.estimator_.score(Xs, ys))


# -- *_meta: no probe on a row of zeros -------------------------------------------------------


class _RefusesZeroRows(BaseEstimator, ClassifierMixin):
    """A classifier whose predict and predict_proba refuse a row of zeros (as some do)."""

    def partial_fit(self, X, y, classes=None):
        self.classes_ = np.asarray(classes)
        self.n_features_in_ = X.shape[1]
        return self

    def _check(self, X):
        X = np.asarray(X)
        if not np.abs(X).sum(axis=1).all():
            raise ValueError("a row of zeros has no direction")
        return X

    def predict(self, X):
        return (self._check(X)[:, 0] > 0).astype(np.int64)

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-self._check(X)[:, 0]))
        return np.column_stack([1 - p, p])


def _nonzero_data():
    rng = np.random.default_rng(0)
    Xn = rng.normal(size=(300, 3)) + 5.0
    return da.from_array(Xn, chunks=(100, 3)), da.from_array(np.arange(300) % 2, chunks=100), Xn


def test_an_estimator_that_fails_the_probe_asks_for_the_meta():
    X, y, _ = _nonzero_data()
    inc = Incremental(_RefusesZeroRows()).fit(X, y, classes=CLASSES)
    with pytest.raises(ValueError, match=r"one row of zeros.*predict_meta=numpy.empty\(\(0,\)"):
        inc.predict(X)


def test_given_meta_is_used_instead_of_a_probe():
    X, y, Xn = _nonzero_data()
    inc = Incremental(
        _RefusesZeroRows(),
        predict_meta=np.empty((0,), dtype=np.int64),
        predict_proba_meta=np.empty((0, 2)),
    ).fit(X, y, classes=CLASSES)
    pred, proba = inc.predict(X), inc.predict_proba(X)
    assert pred.dtype == np.int64 and proba.chunks == (X.chunks[0], (2,))
    assert_array_equal(pred.compute(), inc.estimator_.predict(Xn))
    assert_allclose(proba.compute(), inc.estimator_.predict_proba(Xn))
    frame = dd.from_dask_array(X, columns=["a", "b", "c"])
    assert_array_equal(inc.predict(frame).compute().to_numpy(), inc.estimator_.predict(Xn))
    labelled = inc.set_params(predict_proba_meta=pd.DataFrame({"no": [0.0], "yes": [0.0]}))
    assert list(labelled.predict_proba(frame).compute().columns) == ["no", "yes"]


def test_a_meta_without_the_output_width_is_refused():
    X, y, _ = _nonzero_data()
    inc = Incremental(_RefusesZeroRows(), predict_proba_meta=np.empty((0, 0)))
    with pytest.raises(ValueError, match=r"predict_proba_meta must be an empty array shaped like"):
        inc.fit(X, y, classes=CLASSES).predict_proba(X)


# -- scoring -------------------------------------------------------------------------------------


def _scorer(name):
    from sklearn.metrics import get_scorer

    return get_scorer(name)


@pytest.mark.parametrize("name", ["accuracy", "neg_log_loss", "roc_auc", "roc_auc_ovr"])
def test_exact_classifier_scorers_equal_sklearn_on_all_rows(clf_dir, name):
    X, y = read_by_file(clf_dir)
    inc = Incremental(SGDClassifier(loss="log_loss", random_state=0), scoring=name)
    pipe = make_pipeline(StandardScaler(), inc).fit(X, y, incremental__classes=CLASSES)
    want = _scorer(name)(pipe, X.compute(), y.compute())
    # The AUCs come from 2**14-bin histograms: exact up to the pairs sharing a bin.
    assert pipe.score(X, y) == pytest.approx(want, rel=1e-9, abs=1e-3 if "auc" in name else 0)


@pytest.mark.parametrize(
    "name",
    ["r2", "neg_mean_squared_error", "neg_root_mean_squared_error", "neg_mean_absolute_error"],
)
def test_exact_regressor_scorers_equal_sklearn_on_all_rows(reg_dir, name):
    X, y = read_by_file(reg_dir)
    inc = Incremental(SGDRegressor(random_state=0), scoring=name).fit(X, y)
    want = _scorer(name)(inc.estimator_, X.compute(), y.compute())
    assert inc.score(X, y) == pytest.approx(want, rel=1e-9)


def test_other_scorers_are_the_row_weighted_mean_of_block_scores():
    from sklearn.metrics import f1_score, make_scorer

    X, y, Xs, ys = _sparse_data()  # blocks of 200, 0, 250 and 150 rows
    for scoring in ("f1", make_scorer(f1_score)):
        inc = Incremental(SGDClassifier(random_state=0), scoring=scoring)
        inc.fit(X, y, classes=CLASSES)
        rows = [0, 200, 450, 600]
        blocks = [(Xs[a:b], ys[a:b]) for a, b in zip(rows[:-1], rows[1:], strict=True) if b > a]
        f1 = [f1_score(yb, inc.estimator_.predict(Xb)) * len(yb) for Xb, yb in blocks]
        assert inc.score(X, y) == pytest.approx(sum(f1) / 600, rel=1e-12)


def test_a_callable_scorer_is_used_as_is(clf_dir):
    X, y = read_by_file(clf_dir)

    def balanced_error(estimator, X, y):  # a scorer: (estimator, X, y) -> float
        return -float(np.mean(estimator.predict(X) != y))

    inc = Incremental(SGDClassifier(random_state=0), scoring=balanced_error)
    inc.fit(X, y, classes=CLASSES)
    assert inc.score(X, y) == pytest.approx(-1 + inc.estimator_.score(X.compute(), y.compute()))
    assert inc.score(X.compute(), y.compute()) == pytest.approx(inc.score(X, y))


def test_scoring_drives_early_stopping_and_progressive_score(clf_dir):
    X, y = read_by_file(clf_dir)
    inc = Incremental(
        SGDClassifier(loss="log_loss", random_state=0),
        scoring="neg_log_loss",
        n_epochs=3,
        early_stopping=True,
        validation_fraction=0.34,
        n_iter_no_change=10,
        progressive_score=True,
        random_state=0,
    ).fit(X, y, classes=CLASSES)
    assert all(s < 0 for s in inc.validation_scores_ + inc.training_scores_)
    _, held = inc._split_blocks(X.numblocks[0], 0)
    Xv = da.concatenate([X.blocks[i] for i in held]).compute()
    yv = da.concatenate([y.blocks[i] for i in held]).compute()
    want = _scorer("neg_log_loss")(inc.estimator_, Xv, yv)
    assert inc.best_validation_score_ == pytest.approx(want, rel=1e-9)


def test_scoring_is_a_parameter():
    inc = Incremental(SGDClassifier(), "accuracy")  # dask-ml's position
    assert inc.get_params()["scoring"] == "accuracy"
    assert clone(inc.set_params(scoring="f1")).scoring == "f1"


def test_a_metric_passed_as_scoring_is_refused_with_the_fix():
    from sklearn.metrics import accuracy_score

    def my_metric(y_true, y_pred):
        return 0.0

    X, y = np.ones((4, 2)), np.array([0, 1, 0, 1])
    for metric, name in ((accuracy_score, "accuracy_score"), (my_metric, "my_metric")):
        message = rf"scoring={name} is a metric.*make_scorer\({name}\)"
        with pytest.raises(ValueError, match=message):
            Incremental(SGDClassifier(), scoring=metric).fit(X, y)


@pytest.mark.parametrize(
    "scoring, message",
    [
        ("acuracy", "'acuracy' is not a valid scoring value"),
        (["accuracy"], "scoring must be None, a scorer name"),
        ("neg_log_loss", "needs predict_proba, which SGDClassifier does not have"),
    ],
)
def test_bad_scoring_is_refused_before_the_fit(scoring, message):
    X, y = np.ones((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=re.escape(message)):
        Incremental(SGDClassifier(loss="hinge"), scoring=scoring).fit(X, y)


def test_lazy_score(clf_dir):
    X, y = read_by_file(clf_dir)
    inc = Incremental(SGDClassifier(random_state=0), scoring="accuracy")
    inc.fit(X, y, classes=CLASSES)
    for args in ((X, y), (X.compute(), y.compute())):
        lazy = inc.score(*args, compute=False)
        assert dask.is_dask_collection(lazy)
        assert lazy.compute() == inc.score(*args)
    assert isinstance(inc.score(X, y), float)


# -- checkpoints: every parameter, the fit arguments, and a damaged file --------------------------


def _small_data(n=600, chunk=200):
    rng = np.random.default_rng(0)
    Xn = rng.normal(size=(n, 4))
    yn = (Xn[:, 0] > 0).astype(int)
    return da.from_array(Xn, chunks=(chunk, 4)), da.from_array(yn, chunks=chunk)


@pytest.mark.parametrize(
    "first, then",
    [
        # sklearn's repr shows the first and last elements of a long tuple only
        (
            {"estimator": MLPClassifier(hidden_layer_sizes=(4,) * 30 + (3,) + (4,) * 30)},
            {"estimator": MLPClassifier(hidden_layer_sizes=(4,) * 61)},
        ),
        ({"validation_fraction": 0.34}, {"validation_fraction": 0.5}),
        ({"random_state": 0}, {"random_state": 1}),
        ({"scoring": "accuracy"}, {"scoring": "neg_log_loss"}),
    ],
)
def test_checkpoint_of_other_parameters_is_refused(tmp_path, first, then):
    X, y = _small_data()
    ckpt = tmp_path / "fit.ckpt"
    base = dict(
        estimator=MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0),
        early_stopping=True,
        validation_fraction=0.34,
        random_state=0,
        checkpoint_path=ckpt,
    )
    if "estimator" in first:
        assert repr(first["estimator"]) == repr(then["estimator"])
    Incremental(**{**base, **first}).fit(X, y, classes=CLASSES)
    key = next(iter(then))
    with pytest.raises(
        ValueError, match=rf"Checkpoint .*fit.ckpt was written by a different fit.*{key}"
    ):
        Incremental(**{**base, **then}).fit(X, y, classes=CLASSES)


def test_checkpoint_with_other_classes_is_refused(tmp_path):
    X, y = _small_data()
    ckpt = tmp_path / "fit.ckpt"
    Incremental(SGDClassifier(), checkpoint_path=ckpt).fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match=r"different fit \(fit_kwargs"):
        Incremental(SGDClassifier(), checkpoint_path=ckpt).fit(X, y, classes=[0, 1, 2])


def test_checkpoint_resumes_with_another_prefetch_or_callback(tmp_path):
    X, y = _small_data()
    ckpt = tmp_path / "fit.ckpt"
    first = Incremental(SGDClassifier(random_state=0), checkpoint_path=ckpt, prefetch=2)
    first.fit(X, y, classes=CLASSES)
    again = Incremental(
        SGDClassifier(random_state=0), checkpoint_path=ckpt, prefetch=0, block_callback=print
    ).fit(X, y, classes=CLASSES)
    assert again.resumed_from_ == (1, 0)
    assert_array_equal(again.coef_, first.coef_)


def test_a_damaged_checkpoint_names_the_file_and_the_fix(tmp_path):
    X, y = _small_data()
    ckpt = tmp_path / "fit.ckpt"
    Incremental(SGDClassifier(), checkpoint_path=ckpt).fit(X, y, classes=CLASSES)
    ckpt.write_bytes(ckpt.read_bytes()[:50])  # a truncated write
    with pytest.raises(ValueError, match=r"Checkpoint .*fit.ckpt cannot be read.*Delete it"):
        Incremental(SGDClassifier(), checkpoint_path=ckpt).fit(X, y, classes=CLASSES)


class _BreaksPickleOnBlock(SGDClassifier):
    """An SGDClassifier that cannot be pickled once it has fitted ``block`` blocks."""

    def __init__(self, block=3, **params):
        super().__init__(**params)
        self.block = block

    def partial_fit(self, X, y, classes=None):
        self.fitted_blocks_ = getattr(self, "fitted_blocks_", 0) + 1
        if self.fitted_blocks_ == self.block:
            self.lock_ = threading.Lock()
        return super().partial_fit(X, y, classes=classes)


def test_a_failed_checkpoint_write_keeps_the_last_checkpoint_and_leaves_nothing(tmp_path):
    X, y = _small_data(n=1_000)
    ckpt = tmp_path / "fit.ckpt"
    inc = Incremental(_BreaksPickleOnBlock(block=3), checkpoint_path=ckpt, checkpoint_every=2)
    with pytest.raises(TypeError, match="pickle"):
        inc.fit(X, y, classes=CLASSES)
    assert [p.name for p in tmp_path.iterdir()] == ["fit.ckpt"]  # no temporary file left
    saved = pickle.loads(ckpt.read_bytes())  # the checkpoint of block 2, intact
    assert saved["state"].position == 2 and saved["estimator"].fitted_blocks_ == 2
