"""OnePass: a scikit-learn ColumnTransformer or Pipeline fitted out of core in one read,
equal to scikit-learn fitted in memory on the same data."""

from __future__ import annotations

import logging
import pickle

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from dask.callbacks import Callback
from sklearn.compose import ColumnTransformer, make_column_selector, make_column_transformer
from sklearn.feature_extraction import FeatureHasher
from sklearn.impute import SimpleImputer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    StandardScaler,
)
from sklearn.utils.estimator_checks import parametrize_with_checks

import ooc
from ooc.onepass import OnePass, column_tokens

NUM = ["x0", "x1"]
CAT = ["c0", "c1"]
BLOCK_ROWS = 500


def _write(path, frame: pd.DataFrame, row_group_size=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, row_group_size=row_group_size)


def _part(rng, rows: int, *, last=False, x0_missing=False) -> pd.DataFrame:
    c0 = rng.choice(["a", "b", "c", "d"], size=rows, p=[0.6, 0.25, 0.1, 0.05]).astype(object)
    c0[rng.random(rows) < 0.05] = None
    if last:
        c0[:3] = "zeta"  # a category only in the last block
    c1 = np.array([f"k{int(v):02d}" for v in rng.zipf(1.6, size=rows) % 60], dtype=object)
    x0 = rng.normal(3.0, 2.0, size=rows)
    x0[rng.random(rows) < 0.1] = np.nan
    if x0_missing:
        x0[:] = np.nan
    return pd.DataFrame(
        {
            "x0": x0,
            "x1": 1e6 + rng.normal(size=rows),  # far from 0: merges must keep precision
            "n": rng.integers(0, 9, size=rows),
            "b": rng.random(rows) < 0.3,
            "c0": c0,
            "c1": c1,
            "y": rng.integers(0, 2, size=rows),
        }
    )


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    """Uneven blocks (500 | 350, 350, 300, 300 slices of a file's two row groups | a block
    where x0 is missing in every row | 150 rows with a category seen nowhere else), and
    an empty file."""
    path = tmp_path_factory.mktemp("tabular")
    rng = np.random.default_rng(0)
    _write(path / "part-0.parquet", _part(rng, 500))
    _write(path / "part-1.parquet", _part(rng, 0))
    _write(path / "part-2.parquet", _part(rng, 1300), row_group_size=700)
    _write(path / "part-3.parquet", _part(rng, 400, x0_missing=True))
    _write(path / "part-4.parquet", _part(rng, 150, last=True))
    return path


@pytest.fixture(scope="module")
def data(tabular):
    X, y = ooc.read_parquet(tabular, block_rows=BLOCK_ROWS)
    return X, y, X.compute()


class Reads(Callback):
    """Counts the parquet blocks read (tasks of read_parquet's graph), and of those the
    ones that read some columns only (``projected``: dask named them otherwise)."""

    def __init__(self, X=None):
        super().__init__()
        self.count = 0
        self.projected = 0
        self.name = None if X is None else X.__dask_keys__()[0][0]

    def _pretask(self, key, dsk, state):
        name = str(key[0] if isinstance(key, tuple) else key)
        if name.startswith("read-"):
            self.count += 1
            self.projected += self.name is not None and name != self.name


# -- comparing with scikit-learn ---------------------------------------------------------------

ATTRS = (
    "statistics_", "mean_", "var_", "scale_", "n_samples_seen_", "data_min_", "data_max_",
    "data_range_", "min_", "max_abs_", "categories_", "infrequent_categories_", "drop_idx_",
    "n_features_in_", "feature_names_in_", "sparse_output_", "output_indices_",
)  # fmt: skip


def _same_value(a, b, where: str) -> None:
    if isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _same_value(u, v, f"{where}[{i}]")
        return
    if isinstance(a, dict):
        assert a == b, where
        return
    if a is None or b is None:
        assert a is None and b is None, where
        return
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    assert a_arr.shape == b_arr.shape, (where, a_arr.shape, b_arr.shape)
    assert a_arr.dtype == b_arr.dtype, (where, a_arr.dtype, b_arr.dtype)
    if a_arr.dtype.kind == "f":
        np.testing.assert_allclose(a_arr, b_arr, rtol=1e-9, atol=1e-12, err_msg=where)
    elif a_arr.dtype.kind == "O":
        for u, v in zip(a_arr.ravel(), b_arr.ravel(), strict=True):
            assert (pd.isna(u) and pd.isna(v)) or u == v, (where, u, v)
    else:
        np.testing.assert_array_equal(a_arr, b_arr, err_msg=where)


def assert_fitted_like(ours, ref, where="transformer") -> None:
    """The same kind of object, parameters and learned attributes, all the way down."""
    assert type(ours) is type(ref), where
    assert ours.__module__.startswith("sklearn"), where
    ours_params, ref_params = ours.get_params(deep=False), ref.get_params(deep=False)
    assert ours_params.keys() == ref_params.keys(), where
    for name in ("steps", "transformers", "remainder"):
        ours_params.pop(name, None), ref_params.pop(name, None)
    assert repr(ours_params) == repr(ref_params), where
    if isinstance(ref, Pipeline):
        for (n1, s1), (n2, s2) in zip(ours.steps, ref.steps, strict=True):
            assert n1 == n2
            if not isinstance(s2, str) and s2 is not None:
                assert_fitted_like(s1, s2, f"{where}/{n1}")
    if isinstance(ref, ColumnTransformer):
        assert len(ours.transformers_) == len(ref.transformers_), where
        for (n1, t1, c1), (n2, t2, c2) in zip(ours.transformers_, ref.transformers_, strict=True):
            assert n1 == n2 and repr(c1) == repr(c2), where
            if isinstance(t2, str):
                assert t1 == t2
            else:
                assert_fitted_like(t1, t2, f"{where}/{n1}")
    if hasattr(ref, "indicator_") and ref.indicator_ is not None:
        _same_value(ours.indicator_.features_, ref.indicator_.features_, f"{where}.indicator_")
    for attr in ATTRS:
        if hasattr(ref, attr):
            _same_value(getattr(ours, attr), getattr(ref, attr), f"{where}.{attr}")
        else:
            assert not hasattr(ours, attr), f"{where}.{attr}"


def assert_same_output(ours, ref) -> None:
    assert sp.issparse(ours) == sp.issparse(ref)
    ours = ours.toarray() if sp.issparse(ours) else np.asarray(ours)
    ref = ref.toarray() if sp.issparse(ref) else np.asarray(ref)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def _compare(transformer, data, passes=1, looks=0):
    """OnePass and scikit-learn on the same data; ``looks``: blocks read for their first
    rows alone (to learn the columns a ColumnTransformer gets), besides the passes."""
    X, _, frame = data
    reads = Reads()
    with reads:
        fitted = OnePass(transformer).fit(X)
    ref = transformer.fit(frame)
    assert_fitted_like(fitted.transformer_, ref)
    assert fitted.n_passes_ == passes, fitted.passes_
    assert reads.count == passes * X.npartitions + looks
    assert_same_output(fitted.transform(X).compute(), ref.transform(frame))
    return fitted, ref


def _log1p_abs(X):
    return np.log1p(np.abs(X))


def _with_ratio(X: pd.DataFrame) -> pd.DataFrame:
    return X.assign(r=X["x1"] / 1e6)


CASES = {
    # scalers on raw columns (NaN is ignored by scikit-learn's scalers, as here)
    "standard": lambda: make_column_transformer((StandardScaler(), NUM)),
    "standard-no-mean": lambda: make_column_transformer((StandardScaler(with_mean=False), NUM)),
    "standard-no-std": lambda: make_column_transformer((StandardScaler(with_std=False), NUM)),
    "minmax": lambda: make_column_transformer((MinMaxScaler((-1, 1)), [*NUM, "n"])),
    "maxabs": lambda: make_column_transformer((MaxAbsScaler(), [*NUM, "n", "b"])),
    # imputers, and what their statistics give the next step
    "impute-mean": lambda: make_column_transformer((SimpleImputer(), NUM)),
    "impute-mean-standard": lambda: make_column_transformer(
        (make_pipeline(SimpleImputer(), StandardScaler()), NUM)
    ),
    "impute-indicator-standard": lambda: make_column_transformer(
        (make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()), NUM)
    ),
    "impute-frequent-minmax": lambda: make_column_transformer(
        (make_pipeline(SimpleImputer(strategy="most_frequent"), MinMaxScaler()), ["x0", "n"])
    ),
    "impute-constant-maxabs": lambda: make_column_transformer(
        (make_pipeline(SimpleImputer(strategy="constant", fill_value=-50), MaxAbsScaler()), NUM)
    ),
    "impute-frequent-onehot": lambda: make_column_transformer(
        (
            make_pipeline(
                SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
            ),
            CAT,
        )
    ),
    "impute-constant-onehot": lambda: make_column_transformer(
        (
            make_pipeline(
                SimpleImputer(strategy="constant", fill_value="none", add_indicator=True),
                OneHotEncoder(),
            ),
            CAT,
        )
    ),
    "impute-frequent-ordinal": lambda: make_column_transformer(
        (make_pipeline(SimpleImputer(strategy="most_frequent"), OrdinalEncoder()), ["c0", "n"])
    ),
    # encoders
    "onehot": lambda: make_column_transformer((OneHotEncoder(handle_unknown="ignore"), CAT)),
    "onehot-numbers": lambda: make_column_transformer((OneHotEncoder(), ["n", "b"])),
    "onehot-dense-drop-first": lambda: make_column_transformer(
        (OneHotEncoder(drop="first", sparse_output=False), [*CAT, "n"])
    ),
    "onehot-drop-if-binary": lambda: make_column_transformer(
        (OneHotEncoder(drop="if_binary"), ["b", "c0"]), (StandardScaler(), ["x1"])
    ),
    "onehot-min-frequency": lambda: make_column_transformer(
        (OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=25), CAT)
    ),
    "onehot-min-frequency-share": lambda: make_column_transformer(
        (OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=0.02), CAT)
    ),
    "onehot-max-categories": lambda: make_column_transformer(
        (OneHotEncoder(max_categories=5, handle_unknown="infrequent_if_exist"), CAT)
    ),
    "onehot-grouped-drop": lambda: make_column_transformer(
        (OneHotEncoder(max_categories=3, drop="first"), ["c0"]), (StandardScaler(), ["x1"])
    ),
    "onehot-one-category": lambda: make_column_transformer(
        (OneHotEncoder(max_categories=1), CAT), (OneHotEncoder(), ["n"])
    ),
    "ordinal": lambda: make_column_transformer((OrdinalEncoder(), [*CAT, "n"])),
    "ordinal-grouped": lambda: make_column_transformer(
        (
            OrdinalEncoder(
                min_frequency=20,
                max_categories=8,
                handle_unknown="use_encoded_value",
                unknown_value=-1,
                encoded_missing_value=-2,
            ),
            CAT,
        )
    ),
    # stateless steps, applied inside the pass
    "function-standard": lambda: make_column_transformer(
        (make_pipeline(FunctionTransformer(_log1p_abs), StandardScaler()), ["n", "x0"])
    ),
    "hashing": lambda: make_column_transformer(
        (
            make_pipeline(
                FunctionTransformer(column_tokens),
                FeatureHasher(n_features=32, input_type="string"),
            ),
            CAT,
        ),
        (StandardScaler(), ["x1"]),
    ),
    # ColumnTransformer features
    "selector-remainder": lambda: make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_include="category")),
        ("drop", ["x0"]),
        remainder="passthrough",
    ),
    "remainder-estimator": lambda: ColumnTransformer(
        [("cat", OneHotEncoder(sparse_output=False), CAT), ("gone", "drop", ["b", "x0"])],
        remainder=StandardScaler(),
    ),
    "positions": lambda: ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), MinMaxScaler()), [0, 1]),
            ("cat", OrdinalEncoder(), [4]),
        ]
    ),
    "full": lambda: make_column_transformer(
        (make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()), NUM),
        (MinMaxScaler(), ["n"]),
        (
            make_pipeline(
                SimpleImputer(strategy="constant", fill_value="missing"),
                OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=10),
            ),
            CAT,
        ),
    ),
}


MORE_CASES = {
    "explicit-categories": lambda: make_column_transformer(
        (
            OneHotEncoder(
                categories=[["a", "b", "c", "d", "zeta", np.nan], ["k00", "k01", "k02"]],
                handle_unknown="infrequent_if_exist",
                min_frequency=30,
            ),
            CAT,
        )
    ),
    "ordinal-explicit": lambda: make_column_transformer(
        (OrdinalEncoder(categories=[list(range(9))]), ["n"])
    ),
    "nested-columns": lambda: ColumnTransformer(
        [
            (
                "inner",
                make_column_transformer((OneHotEncoder(), ["c0"]), (SimpleImputer(), NUM)),
                ["c0", *NUM],
            ),
            ("n", MinMaxScaler(), ["n"]),
        ]
    ),
    "pandas-output": lambda: make_column_transformer(
        (make_pipeline(SimpleImputer(), StandardScaler()), NUM),
        (OneHotEncoder(sparse_output=False, handle_unknown="ignore"), ["c0"]),
    ).set_output(transform="pandas"),
}


def test_a_column_transformer_after_a_stateless_step(data):
    """Its columns are known from the first rows (one block looked at), then one pass."""
    pipe = make_pipeline(
        FunctionTransformer(_with_ratio),
        make_column_transformer(
            (make_pipeline(SimpleImputer(), StandardScaler()), ["r", "x0"]),
            (OneHotEncoder(), ["c0"]),
        ),
    )
    _compare(pipe, data, passes=1, looks=1)


@pytest.mark.parametrize("case", list(CASES) + list(MORE_CASES))
def test_equals_scikit_learn_in_memory_in_one_pass(data, case):
    _compare({**CASES, **MORE_CASES}[case](), data)


def test_unknown_categories_in_the_data_are_refused_as_scikit_learn_does(data):
    ct = make_column_transformer((OneHotEncoder(categories=[["a", "b"]]), ["c0"]))
    with pytest.raises(ValueError, match="Found unknown categories"):
        OnePass(ct).fit(data[0])


def test_float32_columns(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "f": rng.normal(5, 2, size=600).astype(np.float32),
            "g": rng.normal(size=600).astype(np.float32),
            "c": rng.choice(["u", "v"], size=600),
        }
    )
    frame.loc[::7, "f"] = np.nan
    _write(tmp_path / "a.parquet", frame.iloc[:350])
    _write(tmp_path / "b.parquet", frame.iloc[350:])
    X, _ = ooc.read_parquet(tmp_path, target=None, block_rows=200)
    assert X.dtypes["f"] == np.float32
    ct = make_column_transformer(
        (make_pipeline(SimpleImputer(), MinMaxScaler()), ["f", "g"]),
        (MaxAbsScaler(), ["g"]),
        (OneHotEncoder(), ["c"]),
    )
    fitted = OnePass(ct).fit(X)
    ref = ct.fit(X.compute())
    imputer = fitted.transformer_.named_transformers_["pipeline"][0]
    np.testing.assert_allclose(
        imputer.statistics_, ref.named_transformers_["pipeline"][0].statistics_, rtol=1e-6
    )
    scaler = fitted.transformer_.named_transformers_["maxabsscaler"]
    assert scaler.max_abs_.dtype == np.float32
    np.testing.assert_array_equal(scaler.max_abs_, ref.named_transformers_["maxabsscaler"].max_abs_)
    np.testing.assert_allclose(fitted.transform(X).compute(), ref.transform(X.compute()), rtol=1e-5)


def test_with_distributed_workers(data, dask_client):
    """The pass runs in worker processes (bases, statistics and readers must pickle)."""
    X, _, frame = data
    ct = TWO_PASSES["onehot-maxabs"]()
    fitted = OnePass(ct).fit(X)
    assert fitted.n_passes_ == 2
    assert_fitted_like(fitted.transformer_, ct.fit(frame))
    out = dask_client.compute(fitted.transform(X), sync=True)
    assert_same_output(out, ct.transform(frame))


# Chains whose later statistics no column statistic gives: a second pass over the branch.
TWO_PASSES = {
    "onehot-maxabs": lambda: make_column_transformer(
        (make_pipeline(OneHotEncoder(), MaxAbsScaler()), CAT), (StandardScaler(), NUM)
    ),
    "scaler-then-imputer": lambda: make_column_transformer(
        (make_pipeline(StandardScaler(), SimpleImputer()), NUM)
    ),
    "columns-then-scaler": lambda: make_pipeline(
        make_column_transformer(
            (OneHotEncoder(sparse_output=False), ["c0"]), (SimpleImputer(), NUM)
        ),
        StandardScaler(),
    ),
    "impute-function-scaler": lambda: make_column_transformer(
        (make_pipeline(SimpleImputer(), FunctionTransformer(np.abs), StandardScaler()), NUM)
    ),
}


@pytest.mark.parametrize("case", list(TWO_PASSES))
def test_underivable_chains_take_a_second_pass(data, case, caplog):
    with caplog.at_level(logging.INFO, logger="ooc.onepass"):
        fitted, _ = _compare(TWO_PASSES[case](), data, passes=2)
    assert "pass 2" in caplog.text
    assert "no statistic of the input columns gives" in fitted.passes_[1]


def test_the_second_pass_reads_only_the_columns_involved(data):
    X, _, frame = data
    ct = TWO_PASSES["onehot-maxabs"]()
    reads = Reads(X)
    with reads:
        fitted = OnePass(ct).fit(X)
    assert reads.count == 2 * X.npartitions
    assert reads.projected == X.npartitions  # the second pass: the branch's columns
    assert_fitted_like(fitted.transformer_, ct.fit(frame))


def test_single_steps_and_pipelines_at_the_top(data):
    _compare(OneHotEncoder(handle_unknown="ignore"), (data[0][CAT], None, data[2][CAT]))
    _compare(
        make_pipeline(SimpleImputer(strategy="most_frequent"), StandardScaler()),
        (data[0][NUM], None, data[2][NUM]),
    )


def test_dask_arrays_with_missing_values(tabular):
    X, _ = ooc.read_parquet(tabular, features=NUM, block_rows=BLOCK_ROWS, allow_missing=True)
    assert isinstance(X, da.Array)
    values = X.compute()
    pipe = make_pipeline(SimpleImputer(add_indicator=True), StandardScaler())
    fitted = OnePass(pipe).fit(X)
    ref = pipe.fit(values)
    assert_fitted_like(fitted.transformer_, ref)
    assert fitted.n_passes_ == 1 and fitted.n_samples_seen_ == len(values)
    Xt = fitted.transform(X)
    assert Xt.chunks[0] == X.chunks[0]
    assert_same_output(Xt.compute(), ref.transform(values))


def test_blocks_without_rows(data):
    """Empty partitions of a dask DataFrame and empty chunks of a dask array."""
    frame = data[2].iloc[:900]
    parts = [frame.iloc[:300], frame.iloc[:0], frame.iloc[300:], frame.iloc[:0]]
    X = dd.from_map(lambda i: parts[i], range(4), meta=frame.iloc[:0], enforce_metadata=False)
    ct = CASES["full"]()
    fitted = OnePass(ct).fit(X)
    ref = ct.fit(frame)
    assert_fitted_like(fitted.transformer_, ref)
    out = fitted.transform(X)
    assert np.isnan(out.chunks[0]).all()  # not from parquet: sizes unknown
    assert_same_output(out.compute(), ref.transform(frame))

    values = frame[NUM].to_numpy()
    arr = da.from_array(values, chunks=((400, 0, 500), (2,)))
    pipe = make_pipeline(SimpleImputer(), MinMaxScaler())
    fitted = OnePass(pipe).fit(arr)
    assert_fitted_like(fitted.transformer_, pipe.fit(values))
    assert_same_output(fitted.transform(arr).compute(), pipe.transform(values))


def test_in_memory_input(data):
    frame = data[2]
    ct = CASES["full"]()
    fitted = OnePass(ct).fit(frame)
    assert_fitted_like(fitted.transformer_, ct.fit(frame))
    assert_same_output(fitted.transform(frame), ct.transform(frame))


def test_the_fitted_object_is_plain_scikit_learn(data):
    X, _, frame = data
    fitted = OnePass(CASES["full"]()).fit(X)
    plain = pickle.loads(pickle.dumps(fitted.transformer_))
    assert type(plain) is ColumnTransformer
    names = fitted.get_feature_names_out()
    assert list(names) == list(plain.get_feature_names_out())
    assert list(fitted.feature_names_in_) == list(frame.columns)
    assert fitted.n_features_in_ == plain.n_features_in_
    assert_same_output(plain.transform(frame.iloc[:50]), fitted.transform(frame.iloc[:50]))


def test_transform_is_lazy_with_the_blocks_of_the_footers(data):
    X, y, _ = data
    fitted = OnePass(CASES["full"]()).fit(X)
    reads = Reads()
    with reads:
        Xt = fitted.transform(X)
    assert reads.count == 0
    assert Xt.chunks[0] == y.chunks[0]
    assert isinstance(Xt._meta, sp.csr_matrix)
    assert sp.issparse(Xt.blocks[1].compute())


def test_column_transformer_on_a_dask_array(tabular):
    X, _ = ooc.read_parquet(
        tabular, features=[*NUM, "n"], block_rows=BLOCK_ROWS, allow_missing=True
    )
    values = X.compute()
    ct = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), [0, 1]),
            ("n", OneHotEncoder(), [2]),
        ]
    )
    fitted = OnePass(ct).fit(X)
    assert fitted.n_passes_ == 1
    assert_fitted_like(fitted.transformer_, ct.fit(values))
    assert_same_output(fitted.transform(X).compute(), ct.transform(values))


@parametrize_with_checks(
    [
        OnePass(StandardScaler()),
        OnePass(MaxAbsScaler()),
        OnePass(make_pipeline(SimpleImputer(), MinMaxScaler())),
        OnePass(make_pipeline(SimpleImputer(strategy="most_frequent"), StandardScaler())),
        OnePass(OneHotEncoder(handle_unknown="ignore")),
        OnePass(OrdinalEncoder()),
    ]
)
def test_scikit_learn_estimator_checks(estimator, check):
    """The numpy path keeps the scikit-learn estimator contract."""
    check(estimator)


# -- bad input ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    path = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(3)
    for i in range(4):
        rows = 600
        ids = rng.integers(0, 3000, size=rows)
        frame = pd.DataFrame({"id": [f"user{v}" for v in ids], "x": rng.normal(size=rows)})
        _write(path / f"part-{i}.parquet", frame)
    return path


def test_a_column_with_too_many_values_is_named(many):
    X, _ = ooc.read_parquet(many, target=None, block_rows=600, features=["id"])
    with pytest.raises(ValueError) as info:
        OnePass(OneHotEncoder()).fit(X)
    message = str(info.value)
    assert "column 'id' has more than 1,000 distinct values" in message
    assert "too many for OneHotEncoder 'onehotencoder'" in message
    assert "counted" in message and "counting stopped" in message
    assert "max_categories" in message and "min_frequency" in message
    assert "FeatureHasher" in message and "column_tokens" in message
    # Grouping rare values counts them all (up to max_counted) and fits.
    ct = OneHotEncoder(max_categories=20, handle_unknown="infrequent_if_exist")
    fitted = OnePass(ct).fit(X)
    assert_fitted_like(fitted.transformer_, ct.fit(X.compute()))
    with pytest.raises(ValueError, match="more than 500 distinct values.*hash the column"):
        OnePass(ct, max_counted=500).fit(X)
    # Hashing needs no count at all.
    hashing = make_pipeline(
        FunctionTransformer(column_tokens), FeatureHasher(n_features=256, input_type="string")
    )
    out = OnePass(hashing).fit(X).transform(X).compute()
    assert out.shape == (2400, 256) and sp.issparse(out)
    assert_same_output(out, hashing.fit(X.compute()).transform(X.compute()))


def test_a_feature_missing_in_every_row_is_named(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "gone": [np.nan] * 3, "c": ["a", None, "b"]})
    _write(tmp_path / "a.parquet", frame)
    X, _ = ooc.read_parquet(tmp_path, target=None, as_frame=True)
    steps = (StandardScaler(), MinMaxScaler(), SimpleImputer(), OneHotEncoder())
    for step in (*steps, SimpleImputer(strategy="constant")):
        with pytest.raises(ValueError, match="column 'gone' is missing in all 3 rows"):
            OnePass(make_column_transformer((step, ["x", "gone"]))).fit(X)
    # Unless it is to be kept (filled with 0, or the constant), as scikit-learn does.
    for strategy in ("mean", "most_frequent", "constant"):
        ct = make_column_transformer(
            (SimpleImputer(strategy=strategy, keep_empty_features=True), ["x", "gone"])
        )
        assert_fitted_like(OnePass(ct).fit(X).transformer_, ct.fit(frame))


def test_unsupported_steps_are_refused_clearly(data):
    X = data[0]
    with pytest.raises(ValueError, match="strategy='median'.*exact median.*fill_value="):
        OnePass(make_column_transformer((SimpleImputer(strategy="median"), NUM))).fit(X)
    with pytest.raises(TypeError, match="cannot fit PolynomialFeatures.*Supported steps"):
        OnePass(make_column_transformer((PolynomialFeatures(), NUM))).fit(X)
    with pytest.raises(ValueError, match="missing_values=-1"):
        OnePass(make_column_transformer((SimpleImputer(missing_values=-1), ["n"]))).fit(X)
    with pytest.raises(ValueError, match="max_distinct must be an int >= 1"):
        OnePass(StandardScaler(), max_distinct=0).fit(X)
    with pytest.raises(ValueError, match=r"StandardScaler 'standardscaler' needs numbers.*'c0'"):
        OnePass(make_column_transformer((StandardScaler(), ["c0"]))).fit(X)


def test_no_rows(tmp_path):
    pq.write_table(pa.table({"c": pa.array([], pa.string())}), tmp_path / "a.parquet")
    X, _ = ooc.read_parquet(tmp_path, target=None, as_frame=True)
    with pytest.raises(ValueError, match="X has no rows"):
        OnePass(OneHotEncoder()).fit(X)


# -- end to end -------------------------------------------------------------------------------


def test_sparse_one_hot_streams_into_incremental_and_beats_numbers_alone(tmp_path):
    ooc.generate_dataset(
        tmp_path, n_rows=24_000, n_features=4, chunk_rows=4_000, n_categorical=3,
        missing_rate=0.05, seed=4,
    )  # fmt: skip
    source = ooc.inspect_parquet(tmp_path, block_rows=3_000, as_frame="auto")
    train, holdout = source.split(0.25, seed=0)
    X, y = ooc.io.dask_collections(train)
    Xh, yh = ooc.io.dask_collections(holdout)
    numbers = [f"x{j}" for j in range(4)]
    num = make_pipeline(SimpleImputer(), StandardScaler())

    def model(ct):
        sgd = SGDClassifier(loss="log_loss", random_state=0, alpha=1e-4)
        return make_pipeline(OnePass(ct), ooc.Incremental(sgd, n_epochs=3, random_state=0))

    with_categories = model(
        make_column_transformer(
            (num, numbers),
            (
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                ["c0", "c1", "c2"],
            ),
        )
    ).fit(X, y, incremental__classes=[0, 1])
    assert with_categories[0].transformer_.sparse_output_
    assert sp.issparse(with_categories[0].transform(Xh).blocks[0].compute())
    numbers_only = model(make_column_transformer((num, numbers))).fit(
        X, y, incremental__classes=[0, 1]
    )
    better, worse = with_categories.score(Xh, yh), numbers_only.score(Xh, yh)
    assert better > worse + 0.1, (better, worse)
