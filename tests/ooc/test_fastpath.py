"""The fast paths: a block scaled straight from its columns equals the scaler's transform bit
for bit; a linear model's decision folded with its scaler gives the same labels as
transform-then-predict, and scores within the documented bound; everything else keeps the
exact path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.linear_model import Perceptron, SGDClassifier, SGDRegressor
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline

import ooc
from ooc.fastpath import LinearFold, scaled_block
from ooc.io import read_block_columns, read_features

from .support import read_by_file

PA_CLASSIFIER = {"loss": "hinge", "penalty": None, "learning_rate": "pa1", "eta0": 1.0}
PA_REGRESSOR = {"loss": "epsilon_insensitive", "penalty": None, "learning_rate": "pa1", "eta0": 1.0}
LINEAR = {
    "sgd-hinge": (lambda: SGDClassifier(random_state=0), "clf"),
    "sgd-log": (lambda: SGDClassifier(loss="log_loss", random_state=0), "clf"),
    "perceptron": (lambda: Perceptron(random_state=0), "clf"),
    "passive-aggressive": (lambda: SGDClassifier(random_state=0, **PA_CLASSIFIER), "clf"),
    "sgd-multiclass": (lambda: SGDClassifier(random_state=0), "multi"),
    "sgd-regressor": (lambda: SGDRegressor(random_state=0), "reg"),
    "passive-aggressive-regressor": (lambda: SGDRegressor(random_state=0, **PA_REGRESSOR), "reg"),
}
SCALERS = {
    "standard": ooc.StandardScaler,
    "minmax": ooc.MinMaxScaler,
    "no-centring": lambda: ooc.StandardScaler(with_mean=False),
    "none": None,
}


@pytest.fixture(scope="module")
def multi_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("multi")
    ooc.generate_dataset(path, n_rows=9_000, n_features=6, chunk_rows=1_500, n_classes=3, seed=8)
    return path


def _fitted(make_model, scaler, kind, clf_dir, reg_dir, multi_dir):
    path = {"clf": clf_dir, "reg": reg_dir, "multi": multi_dir}[kind]
    X, y = read_by_file(path)
    steps = ([scaler()] if scaler else []) + [ooc.Incremental(make_model(), n_epochs=2)]
    kwargs = {} if kind == "reg" else {"incremental__classes": np.unique(y.compute())}
    return make_pipeline(*steps).fit(X, y, **kwargs), path


def _outputs(model, path, tmp_path, method, exact):
    out = tmp_path / ("exact" if exact else "folded") / method
    jobs = ooc.predict_parquet(model, path, out, method=method, exact=exact, block_rows=1_000)
    tables = [pq.read_table(job.dest) for job in jobs]
    return np.concatenate(
        [np.column_stack([t[c].to_numpy() for c in t.column_names]) for t in tables]
    )


@pytest.mark.parametrize("scaler", sorted(SCALERS))
@pytest.mark.parametrize("name", sorted(LINEAR))
def test_folded_prediction_equals_transform_then_predict(
    name, scaler, clf_dir, reg_dir, multi_dir, tmp_path
):
    make_model, kind = LINEAR[name]
    model, path = _fitted(make_model, SCALERS[scaler], kind, clf_dir, reg_dir, multi_dir)
    assert LinearFold.of(model) is not None
    X = np.concatenate([read_features(s, 0) for s in (ooc.inspect_parquet(path).only_file(i)
                        for i in range(len(ooc.list_parquet_files(path))))])  # fmt: skip
    if kind != "reg":
        # The labels are identical (the tests' data has no row on the decision boundary).
        labels = _outputs(model, path, tmp_path, "predict", exact=False)
        assert_array_equal(labels, _outputs(model, path, tmp_path, "predict", exact=True))
        assert_array_equal(labels.ravel(), model.predict(X))
    # Scores: within n_features x eps of the terms' magnitude (the documented bound).
    method = "predict" if kind == "reg" else "decision_function"
    folded = _outputs(model, path, tmp_path, method, exact=False)
    exact = _outputs(model, path, tmp_path, method, exact=True)
    fold = LinearFold.of(model)
    magnitude = np.abs(X) @ np.abs(fold.coef.T) + np.abs(fold.intercept)
    bound = 4 * X.shape[1] * np.finfo(np.float64).eps * magnitude
    assert (np.abs(folded - exact) <= bound.reshape(folded.shape)).all()
    if name == "sgd-log":
        proba = _outputs(model, path, tmp_path, "predict_proba", exact=False)
        assert_allclose(proba, _outputs(model, path, tmp_path, "predict_proba", exact=True),
                        rtol=0, atol=1e-12)  # fmt: skip


def test_other_models_keep_the_exact_path(clf_dir, tmp_path):
    X, y = read_by_file(clf_dir)
    model = make_pipeline(
        ooc.StandardScaler(),
        ooc.Incremental(MLPClassifier(hidden_layer_sizes=(4,), random_state=0)),
    ).fit(X, y, incremental__classes=[0, 1])
    assert LinearFold.of(model) is None
    proba = _outputs(model, clf_dir, tmp_path, "predict_proba", exact=False)
    assert_array_equal(proba, model.predict_proba(X.compute()))


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
@pytest.mark.parametrize("scaler", [ooc.StandardScaler, ooc.MinMaxScaler])
def test_a_block_scaled_from_its_columns_is_the_transform_bit_for_bit(tmp_path, dtype, scaler):
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((40_000, 5)) * 100 + 1e4).astype(dtype)
    pq.write_table(pa.table({f"x{j}": values[:, j] for j in range(5)}), tmp_path / "a.parquet")
    source = ooc.inspect_parquet(tmp_path, target=None)
    fitted = scaler().fit(values)
    out_dtype = np.dtype(dtype) if dtype != "int64" else np.dtype(np.float64)
    block = scaled_block(read_block_columns(source, 0), fitted, out_dtype)
    assert block.flags.c_contiguous and block.dtype == out_dtype
    assert_array_equal(block, fitted.transform(values))
    # The lazy transform of a parquet array takes this path, and reads no 2-D block.
    X, _ = ooc.read_parquet(tmp_path, target=None)
    Xt = fitted.transform(X)
    assert list(Xt.dask.layers) == [Xt.name]
    assert_array_equal(Xt.compute(), fitted.transform(values))


def test_a_nan_is_still_named_by_file_column_and_row(tmp_path):
    good = np.arange(100.0)
    bad = good.copy()
    bad[42] = np.nan
    for name, b in (("bad", bad), ("clean", good)):
        (tmp_path / name).mkdir()
        pq.write_table(
            pa.table({"a": good, "b": b, "y": (good > 50).astype(int)}),
            tmp_path / name / "p.parquet",
        )
    X, y = ooc.read_parquet(tmp_path / "clean")
    model = make_pipeline(ooc.StandardScaler(), ooc.Incremental(SGDClassifier(random_state=0)))
    model.fit(X, y, incremental__classes=[0, 1])
    message = r"bad/p.parquet: column 'b' has nan at row 42"
    for exact in (False, True):
        with pytest.raises(ValueError, match=message):
            ooc.predict_parquet(model, tmp_path / "bad", tmp_path / f"out-{exact}", exact=exact)
    with pytest.raises(ValueError, match=message):
        model[0].transform(ooc.read_parquet(tmp_path / "bad")[0]).compute()
