"""Coming from dask-ml: its spellings work where they mean the same, and each difference a
user meets (docs-dask-ml-table.md) is a tested choice."""

from __future__ import annotations

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.linear_model import LogisticRegression, SGDClassifier

import ooc
from ooc import Incremental

CLASSES = [0, 1]


def _frame(n=400, npartitions=4):
    rng = np.random.default_rng(0)
    pdf = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    pdf.index = pd.RangeIndex(1_000, 1_000 + n)  # not 0..n-1: alignment must keep it
    pdf["y"] = (pdf["a"] > 0).astype(int)
    df = dd.from_pandas(pdf, npartitions=npartitions)
    return df[["a", "b", "c"]], df["y"], pdf


def test_dask_ml_spellings_are_parameters():
    inc = Incremental(
        SGDClassifier(),
        "accuracy",  # scoring, second as in dask-ml
        shuffle_blocks=True,
        random_state=0,
        predict_meta=np.empty((0,), dtype=np.int64),
        predict_proba_meta=np.empty((0, 2)),
        transform_meta=None,
    )
    params = inc.get_params()
    assert params["scoring"] == "accuracy" and params["shuffle_blocks"] is True
    assert {"predict_meta", "predict_proba_meta", "transform_meta"} <= set(params)


def test_blocks_stream_in_order_unless_shuffle_blocks():
    X, y, _ = _frame()
    reports = []
    inc = Incremental(SGDClassifier(random_state=0), block_callback=reports.append)
    assert inc.shuffle_blocks is False  # dask-ml: True
    inc.fit(X, y, classes=CLASSES)
    assert [r.block for r in reports] == [0, 1, 2, 3]


def test_predict_on_a_dask_dataframe_is_a_series_aligned_with_x():
    X, y, pdf = _frame()
    inc = Incremental(SGDClassifier(random_state=0)).fit(X, y, classes=CLASSES)
    pred = inc.predict(X)
    assert isinstance(pred, dd.Series)  # dask-ml: a dask Array of unknown chunks
    assert pred.npartitions == X.npartitions and pred.divisions == X.divisions
    joined = X.assign(pred=pred).compute()  # the reason: it joins back to its rows
    assert_array_equal(joined.index, pdf.index)
    want = inc.estimator_.predict(pdf[["a", "b", "c"]])
    assert_array_equal(joined["pred"].to_numpy(), want)
    assert_array_equal(pred.to_dask_array(lengths=True).compute(), want)  # dask-ml's form


def test_an_estimator_without_partial_fit_is_a_type_error():
    # dask-ml raises ValueError; the estimator is of the wrong kind, found before any read.
    with pytest.raises(TypeError, match="needs an estimator with partial_fit; LogisticRegression"):
        Incremental(LogisticRegression()).fit(np.ones((4, 2)), [0, 1, 0, 1])


def test_lazy_scores_compute_together():
    X, y, _ = _frame()
    a = Incremental(SGDClassifier(random_state=0)).fit(X, y, classes=CLASSES)
    b = Incremental(SGDClassifier(random_state=1), scoring="roc_auc").fit(X, y, classes=CLASSES)
    lazy = a.score(X, y, compute=False), b.score(X, y, compute=False)
    assert dask.compute(*lazy) == (a.score(X, y), b.score(X, y))


def test_empty_partitions_are_skipped():
    X, y, pdf = _frame()
    rows = X.index.to_series()
    keep = (rows < 1_100) | (rows >= 1_200)  # partition 1 becomes empty
    Xe, ye = X[keep], y[keep]
    assert Xe.map_partitions(len).compute().tolist() == [100, 0, 100, 100]
    inc = Incremental(SGDClassifier(random_state=0)).fit(Xe, ye, classes=CLASSES)
    assert inc.n_samples_seen_ == 300
    assert len(inc.predict(Xe).compute()) == 300
    assert inc.score(Xe, ye) == pytest.approx(inc.estimator_.score(*dask.compute(Xe, ye)))


def test_column_chunked_x_uses_every_column():
    rng = np.random.default_rng(0)
    Xn = rng.normal(size=(400, 6))
    X = da.from_array(Xn, chunks=(100, 2))  # dask-ml trained on the first column block
    y = da.from_array((Xn[:, 5] > 0).astype(int), chunks=100)
    inc = Incremental(SGDClassifier(random_state=0)).fit(X, y, classes=CLASSES)
    assert inc.coef_.shape == (1, 6)
    assert inc.score(X, y) > 0.9  # the label is in the last column


def test_a_model_fitted_in_memory_predicts_blockwise_without_a_wrapper(clf_dir, tmp_path):
    """dask-ml's ParallelPostFit: in ooc, predict_parquet and evaluate take any fitted model."""
    X, y = ooc.read_parquet(clf_dir)
    model = LogisticRegression().fit(X[:2_000].compute(), y[:2_000].compute())
    metrics = ooc.evaluate(model, X, y)
    assert metrics["accuracy"] == pytest.approx(model.score(X.compute(), y.compute()))
    jobs = ooc.predict_parquet(model, clf_dir, tmp_path / "pred", method="predict_proba")
    got = np.concatenate([pq.read_table(job.dest).to_pandas().to_numpy() for job in jobs])
    assert_allclose(got, model.predict_proba(X.compute()), rtol=1e-12)
