"""Incremental: equal to a manual partial_fit loop, prefetching, bounded, and loud on bad input."""

from __future__ import annotations

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
        read_by_file(tmp_path)


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
