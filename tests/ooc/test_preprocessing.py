"""ooc.StandardScaler and ooc.MinMaxScaler against scikit-learn on the same data in memory."""

from __future__ import annotations

import contextlib
import re

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.callbacks import Callback
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import preprocessing as skp
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import ooc

RTOL = 1e-10  # float64 statistics
ATOL_STATS = 1e-20  # rounding noise in a constant column's variance (0 or ~1e-33)
ATOL_OUT = 1e-9  # float64 transformed values, which are O(1)
FEATURES = ["a", "b", "c", "d"]

STANDARD_ATTRS = ("mean_", "var_", "scale_", "n_samples_seen_", "n_features_in_")
MINMAX_ATTRS = (
    "data_min_",
    "data_max_",
    "data_range_",
    "scale_",
    "min_",
    "n_samples_seen_",
    "n_features_in_",
)
PAIRS = {
    "standard": (ooc.StandardScaler, skp.StandardScaler, STANDARD_ATTRS),
    "minmax": (ooc.MinMaxScaler, skp.MinMaxScaler, MINMAX_ATTRS),
}
CASES = [
    ("standard", {}),
    ("standard", {"with_mean": False}),
    ("standard", {"with_std": False}),
    ("standard", {"with_mean": False, "with_std": False}),
    ("minmax", {}),
    ("minmax", {"feature_range": (-2, 3)}),
    ("minmax", {"feature_range": (-2, 3), "clip": True}),
]
CASE_IDS = [f"{name}-{params}" for name, params in CASES]
KINDS = ["numpy", "dask_rows", "dask_cols", "dask_frame", "dask_frame_empty_partition"]


# -- data ------------------------------------------------------------------------------------
def make_X(n: int = 60, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """Four features: plain, a large offset (1e6 + noise), constant (0.1) and skewed."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, 4))
    X[:, 0] = rng.normal(2.0, 3.0, n)
    X[:, 1] = 1e6 + rng.normal(size=n)
    X[:, 2] = 0.1  # constant, and not exact in binary
    X[:, 3] = rng.exponential(size=n) - 5.0
    return X.astype(dtype)


def uneven_row_chunks(n: int) -> tuple[int, ...]:
    """Uneven row blocks, one of them empty (explicit: da.concatenate drops 0-row arrays)."""
    first, third = n // 4 + 1, n // 3
    return (first, 0, third, 1, n - first - third - 1)


def as_kind(X: np.ndarray, kind: str):
    """``X`` as a numpy array, a dask array or a dask DataFrame of several blocks."""
    if kind == "numpy":
        return X
    if kind == "dask_rows":
        Xd = da.from_array(X, chunks=(uneven_row_chunks(len(X)), X.shape[1]))
        assert 0 in Xd.chunks[0] and Xd.numblocks[0] == 5
        return Xd
    if kind == "dask_cols":
        Xd = da.from_array(X, chunks=(len(X) // 3, (1, X.shape[1] - 1)))
        assert Xd.numblocks == (3, 2)
        return Xd
    frame = pd.DataFrame(X, columns=FEATURES[: X.shape[1]])
    ddf = dd.from_pandas(frame, npartitions=4)
    if kind == "dask_frame":
        return ddf
    assert kind == "dask_frame_empty_partition"
    # Partition 1 filtered to nothing: the merged statistics must skip it.
    rows = len(X)
    keep = dd.from_pandas(
        pd.Series((np.arange(rows) < rows // 4) | (np.arange(rows) >= rows // 2)), npartitions=4
    )
    ddf = ddf[keep]
    assert ddf.map_partitions(len).compute().tolist()[1] == 0
    return ddf


def rows_of(X: np.ndarray, kind: str) -> np.ndarray:
    """The rows of ``X`` that ``as_kind(X, kind)`` holds."""
    if kind != "dask_frame_empty_partition":
        return X
    rows = np.arange(len(X))
    return X[(rows < len(X) // 4) | (rows >= len(X) // 2)]


def values(Z) -> np.ndarray:
    """Compute a dask result and return plain numpy values."""
    if dask.is_dask_collection(Z):
        Z = Z.compute()
    return Z.to_numpy() if isinstance(Z, pd.DataFrame) else np.asarray(Z)


def assert_same_fit(ours, ref, attrs, rtol=RTOL, atol=ATOL_STATS) -> None:
    for attr in attrs:
        want, got = getattr(ref, attr), getattr(ours, attr)
        if want is None:
            assert got is None, attr
        else:
            assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=attr)


class ComputeCounter(Callback):
    """Counts scheduler runs, i.e. ``dask.compute`` calls (one per ``get``)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def _start(self, dsk):
        self.count += 1


@contextlib.contextmanager
def count_computes():
    # The local scheduler runs callbacks; pin it in case a distributed Client is the default.
    with dask.config.set(scheduler="threads"), ComputeCounter() as counter:
        yield counter


# -- equality with scikit-learn --------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_fit_transform_match_sklearn(name, params, kind):
    ours_cls, ref_cls, attrs = PAIRS[name]
    X = make_X()
    Xk = as_kind(X, kind)
    Xr = rows_of(X, kind)

    ours = ours_cls(**params).fit(Xk)
    ref = ref_cls(**params).fit(Xr)
    assert_same_fit(ours, ref, attrs)

    assert_allclose(values(ours.transform(Xk)), ref.transform(Xr), rtol=RTOL, atol=ATOL_OUT)
    # Data outside the fitted range (clip matters here).
    X_new = make_X(seed=1) * 1.5 - 1.0
    Xt_new = ours.transform(as_kind(X_new, kind))
    assert_allclose(values(Xt_new), ref.transform(rows_of(X_new, kind)), rtol=RTOL, atol=ATOL_OUT)
    back = ours.inverse_transform(as_kind(ref.transform(X), kind))
    assert_allclose(values(back), Xr, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_read_parquet_matches_sklearn(clf_dir, name):
    ours_cls, ref_cls, attrs = PAIRS[name]
    X, _ = ooc.read_parquet(clf_dir, target="y", block_rows=2_000)
    assert X.numblocks[0] == 6
    X_mem = X.compute()

    with count_computes() as counter:
        ours = ours_cls().fit(X)
    assert counter.count == 1
    ref = ref_cls().fit(X_mem)
    assert_same_fit(ours, ref, attrs)
    assert ours.n_samples_seen_ == 12_000
    Xt = ours.transform(X)
    assert isinstance(Xt, da.Array) and Xt.chunks == X.chunks
    assert_allclose(Xt.compute(), ref.transform(X_mem), rtol=RTOL, atol=ATOL_OUT)


@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_integer_parquet_columns_match_sklearn(tmp_path, name):
    ours_cls, ref_cls, attrs = PAIRS[name]
    rng = np.random.default_rng(0)
    for i in range(3):  # int64 columns: the statistics pass used to say "not inexact"
        columns = {c: rng.integers(-1_000, 1_000, 500) for c in FEATURES}
        pd.DataFrame(columns).to_parquet(tmp_path / f"part-{i}.parquet")
    X, _ = ooc.read_parquet(tmp_path, target=None, block_rows=500)
    assert X.numblocks[0] == 3
    X_mem = X.compute()
    ours, ref = ours_cls().fit(X), ref_cls().fit(X_mem.astype(np.float64))
    assert_same_fit(ours, ref, attrs)
    assert_allclose(ours.transform(X).compute(), ref.transform(X_mem), rtol=RTOL, atol=ATOL_OUT)


@pytest.mark.parametrize("kind", ["numpy", "dask_rows", "dask_cols", "dask_frame"])
@pytest.mark.parametrize("offset", [1e6, 1e9])
def test_standard_scaler_large_offset_is_stable(kind, offset):
    """A tiny spread on a huge offset: block means rounded to float64 must not leak in."""
    rng = np.random.default_rng(3)
    X = offset + rng.normal(scale=1e-3, size=(90, 4))
    ref = skp.StandardScaler().fit(X)
    ours = ooc.StandardScaler().fit(as_kind(X, kind))
    assert_same_fit(ours, ref, STANDARD_ATTRS)
    # The true variance, from deviations that float64 holds exactly.
    exact = np.var(X - X[0], axis=0)
    assert_allclose(ours.var_, exact, rtol=RTOL)
    Xt = values(ours.transform(as_kind(X, kind)))
    # Each output carries the rounding of the mean (eps * offset), divided by the scale.
    assert_allclose(Xt, ref.transform(X), atol=8 * np.finfo(float).eps * offset / 1e-3)
    assert_allclose(Xt.std(axis=0), 1.0, rtol=1e-6)


@pytest.mark.parametrize("kind", ["numpy", "dask_rows", "dask_frame"])
def test_constant_columns_get_scale_one(kind):
    rng = np.random.default_rng(4)
    X = np.column_stack([np.full(30, 0.1), np.full(30, 1e6), np.zeros(30), rng.normal(size=30)])
    Xk = as_kind(X, kind)
    standard = ooc.StandardScaler().fit(Xk)
    assert_array_equal(standard.var_[:3], 0.0)  # deviations from a row of the data are exact
    assert_array_equal(standard.scale_[:3], 1.0)
    assert_same_fit(standard, skp.StandardScaler().fit(X), STANDARD_ATTRS)
    assert_allclose(values(standard.transform(Xk))[:, :3], 0.0, atol=1e-10)

    minmax = ooc.MinMaxScaler(feature_range=(-2, 3)).fit(Xk)
    assert_array_equal(minmax.scale_[:3], 5.0)
    assert_same_fit(minmax, skp.MinMaxScaler(feature_range=(-2, 3)).fit(X), MINMAX_ATTRS)


@pytest.mark.parametrize("kind", ["numpy", "dask_rows", "dask_frame"])
def test_minmax_clip_keeps_feature_range(kind):
    X = as_kind(make_X(), kind)
    X_new = as_kind(make_X(seed=5) * 3.0 - 2.0, kind)
    clipped = values(ooc.MinMaxScaler(feature_range=(-2, 3), clip=True).fit(X).transform(X_new))
    assert clipped.min() == -2.0 and clipped.max() == 3.0
    free = values(ooc.MinMaxScaler(feature_range=(-2, 3)).fit(X).transform(X_new))
    assert free.min() < -2.0 and free.max() > 3.0


@pytest.mark.parametrize("feature_range", [(1, 0), (2, 2)])
@pytest.mark.parametrize("kind", ["numpy", "dask_rows"])
def test_minmax_bad_feature_range_raises(feature_range, kind):
    X = as_kind(make_X(), kind)
    msg = re.escape(f"must be smaller than maximum. Got {feature_range}")
    with pytest.raises(ValueError, match=msg):
        ooc.MinMaxScaler(feature_range=feature_range).fit(X)
    with pytest.raises(ValueError, match=msg):
        ooc.MinMaxScaler(feature_range=feature_range).partial_fit(X)


# -- one compute, lazy transforms ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dask_rows", "dask_cols", "dask_frame"])
@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_fit_on_dask_computes_once(name, kind):
    ours_cls, ref_cls, attrs = PAIRS[name]
    X = make_X()
    Xk = as_kind(X, kind)
    with count_computes() as counter:
        ours = ours_cls().fit(Xk)
    assert counter.count == 1
    assert_same_fit(ours, ref_cls().fit(X), attrs)


@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_transform_of_dask_array_is_lazy_dask_array(name):
    X = make_X()
    Xd = as_kind(X, "dask_cols")
    scaler = PAIRS[name][0]().fit(X)
    with count_computes() as counter:
        Xt = scaler.transform(Xd)
        back = scaler.inverse_transform(Xt)
    assert counter.count == 0
    assert isinstance(Xt, da.Array) and isinstance(back, da.Array)
    assert Xt.chunks == Xd.chunks and Xt.dtype == np.float64
    assert_allclose(back.compute(), X, rtol=1e-12)


@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_transform_of_dask_frame_is_lazy_dask_frame(name):
    X = make_X()
    ddf = as_kind(X, "dask_frame")
    scaler = PAIRS[name][0]().fit(ddf)
    with count_computes() as counter:
        Xt = scaler.transform(ddf)
        back = scaler.inverse_transform(Xt)
    assert counter.count == 0
    assert type(Xt) is type(ddf) and type(back) is type(ddf)
    assert list(Xt.columns) == FEATURES and list(back.columns) == FEATURES
    assert Xt.npartitions == ddf.npartitions and Xt.divisions == ddf.divisions
    computed = Xt.compute()
    pd.testing.assert_index_equal(computed.index, ddf.index.compute())
    assert dict(computed.dtypes) == dict(Xt.dtypes)
    assert_allclose(back.compute().to_numpy(), X, rtol=1e-12)


@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_in_memory_input_gives_numpy(name):
    X = make_X()
    for Z in (X, pd.DataFrame(X, columns=FEATURES)):
        scaler = PAIRS[name][0]().fit(Z)
        assert type(scaler.transform(Z)) is np.ndarray
        assert type(scaler.inverse_transform(Z)) is np.ndarray


@pytest.mark.parametrize("kind", ["numpy", "dask_rows", "dask_cols", "dask_frame"])
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_float32_stays_float32(name, params, kind):
    ours_cls, ref_cls, _ = PAIRS[name]
    X = make_X(dtype=np.float32)
    X[:, 1] = X[:, 1] - 1e6 + 5.0  # float32 cannot hold the 1e6 offset's noise
    Xk = as_kind(X, kind)
    ours = ours_cls(**params).fit(Xk)
    ref = ref_cls(**params).fit(X)
    Xt = ours.transform(Xk)
    back = ours.inverse_transform(Xt)
    for Z in (Xt, back):
        if isinstance(Z, np.ndarray | da.Array):
            assert Z.dtype == np.float32
        else:
            assert set(Z.dtypes) == {np.dtype(np.float32)}
        assert values(Z).dtype == np.float32
    assert_allclose(values(Xt), ref.transform(X), rtol=1e-5, atol=1e-5)
    assert_allclose(values(back), X, rtol=1e-5, atol=1e-5)


# -- partial_fit -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_partial_fit_over_numpy_blocks_equals_fit(name):
    ours_cls, ref_cls, attrs = PAIRS[name]
    X = make_X(n=97)
    streamed = ours_cls()
    for block in np.array_split(X, [10, 11, 50, 51]):  # sizes 10, 1, 39, 1, 46
        streamed.partial_fit(block)
    assert_same_fit(streamed, ours_cls().fit(X), attrs)
    assert_same_fit(streamed, ref_cls().fit(X), attrs)
    ref_streamed = ref_cls()
    for block in np.array_split(X, [10, 11, 50, 51]):
        ref_streamed.partial_fit(block)
    assert_same_fit(streamed, ref_streamed, attrs)


@pytest.mark.parametrize("kind", ["dask_rows", "dask_frame"])
@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_partial_fit_dask_then_numpy(name, kind):
    ours_cls, ref_cls, attrs = PAIRS[name]
    X = make_X(n=90)
    head, tail = X[:60], X[60:]

    def in_memory(block):  # pandas next to a dask DataFrame, so feature names agree
        return pd.DataFrame(block, columns=FEATURES) if kind == "dask_frame" else block

    scaler = ours_cls().partial_fit(as_kind(head, kind))
    scaler.partial_fit(in_memory(tail[:7])).partial_fit(in_memory(tail[7:]))
    assert_same_fit(scaler, ref_cls().fit(X), attrs)
    # And the other way round: in memory first, then a dask collection.
    scaler = ours_cls().partial_fit(in_memory(tail)).partial_fit(as_kind(head, kind))
    assert_same_fit(scaler, ref_cls().fit(np.vstack([tail, head])), attrs)


@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_fit_forgets_previous_partial_fits(name):
    ours_cls, ref_cls, attrs = PAIRS[name]
    X = make_X()
    scaler = ours_cls().partial_fit(make_X(seed=9) * 10)
    assert_same_fit(scaler.fit(as_kind(X, "dask_rows")), ref_cls().fit(X), attrs)


# -- inputs are never mutated ----------------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_numpy_and_pandas_inputs_are_not_mutated(name, params):
    ours_cls = PAIRS[name][0]
    X = make_X()
    frame = pd.DataFrame(make_X(seed=2), columns=FEATURES)
    X_copy, frame_copy = X.copy(), frame.copy()

    scaler = ours_cls(**params).fit(X)
    scaler.partial_fit(X)
    outputs = [scaler.transform(X), scaler.inverse_transform(X), scaler.fit_transform(X)]
    assert_array_equal(X, X_copy)
    for out in outputs:
        assert not np.shares_memory(out, X)

    frame_scaler = ours_cls(**params).fit(frame)
    frame_scaler.partial_fit(frame)
    frame_scaler.transform(frame)
    frame_scaler.inverse_transform(frame)
    frame_scaler.fit_transform(frame)
    pd.testing.assert_frame_equal(frame, frame_copy)


@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_dask_sources_are_not_mutated(name):
    X = make_X()
    X_copy = X.copy()
    for kind in ("dask_rows", "dask_frame"):
        Xk = as_kind(X, kind)
        scaler = PAIRS[name][0]().fit(Xk)
        values(scaler.transform(Xk))
        values(scaler.inverse_transform(Xk))
    assert_array_equal(X, X_copy)


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    ("kind", "column"),
    [("dask_rows", "3"), ("dask_cols", "3"), ("dask_frame", "'d'")],
)
@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_nonfinite_in_dask_block_names_block_and_column(name, kind, column, bad):
    X = make_X()
    Xk = as_kind(X, kind)
    # The second row of block 2 (the blocks' row offsets differ per kind).
    starts = Xk.divisions if kind == "dask_frame" else np.cumsum((0, *Xk.chunks[0]))
    X[starts[2] + 1, 3] = bad
    Xk = as_kind(X, kind)
    scaler = PAIRS[name][0]()
    pattern = rf"block 2 has {re.escape(str(bad))} in column {column} \(row 1 of the block\)"
    with pytest.raises(ValueError, match=pattern):
        scaler.fit(Xk)
    with pytest.raises(ValueError, match="NaN or infinity"):
        scaler.partial_fit(Xk)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_nonfinite_in_numpy_raises(name, bad):
    X = make_X()
    X[5, 2] = bad
    scaler = PAIRS[name][0]()
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        scaler.fit(X)
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        scaler.partial_fit(X)
    fitted = PAIRS[name][0]().fit(make_X())
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        fitted.transform(X)


@pytest.mark.parametrize("kind", ["numpy", "dask_rows", "dask_cols"])
@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_wrong_number_of_features_raises(name, kind):
    ours_cls = PAIRS[name][0]
    scaler = ours_cls().fit(as_kind(make_X(), kind))
    narrow = as_kind(make_X()[:, :3], kind)
    msg = f"X has 3 features, but {ours_cls.__name__} is expecting 4 features as input"
    for method in (scaler.transform, scaler.inverse_transform, scaler.partial_fit):
        with pytest.raises(ValueError, match=msg):
            method(narrow)


@pytest.mark.parametrize("kind", ["numpy", "dask_rows", "dask_frame"])
@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_transform_before_fit_raises_not_fitted(name, kind):
    X = as_kind(make_X(), kind)
    scaler = PAIRS[name][0]()
    with pytest.raises(NotFittedError):
        scaler.transform(X)
    with pytest.raises(NotFittedError):
        scaler.inverse_transform(X)


@pytest.mark.parametrize("kind", ["dask_rows", "dask_frame_empty_partition"])
@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_fit_on_empty_dask_collection_raises(name, kind):
    X = as_kind(make_X(), kind)
    empty = X[:0] if kind == "dask_rows" else X[X["a"] > 1e300]
    scaler = PAIRS[name][0]()
    with pytest.raises(ValueError, match="0 rows"):
        scaler.fit(empty)
    with pytest.raises(NotFittedError):
        scaler.transform(make_X())


@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_one_dimensional_dask_array_raises(name):
    with pytest.raises(ValueError, match="Expected a 2-D dask array, got 1-D"):
        PAIRS[name][0]().fit(da.ones(10, chunks=5))


def _sklearn_error(func) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        func()
    return info.type, str(info.value)


@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_feature_names_follow_sklearn(name):
    ours_cls, ref_cls, _ = PAIRS[name]
    X = make_X()
    frame = pd.DataFrame(X, columns=FEATURES)
    ddf = as_kind(X, "dask_frame")
    ours = ours_cls().fit(ddf)
    ref = ref_cls().fit(frame)
    assert_array_equal(ours.feature_names_in_, ref.feature_names_in_)
    assert_array_equal(ours.get_feature_names_out(), FEATURES)

    # Renamed or reordered columns: the same error as scikit-learn.
    for columns in (["a", "b", "c", "z"], ["b", "a", "c", "d"]):
        renamed = frame.set_axis(columns, axis=1)
        err_type, err_msg = _sklearn_error(lambda r=renamed: ref.transform(r))
        with pytest.raises(err_type, match=re.escape(err_msg.splitlines()[0])):
            ours.transform(dd.from_pandas(renamed, npartitions=2))
        with pytest.raises(err_type, match=re.escape(err_msg.splitlines()[0])):
            ours.transform(renamed)

    # Names at fit but not at transform, and the reverse: the same warnings.
    msg = f"X does not have valid feature names, but {ours_cls.__name__} was fitted with"
    with pytest.warns(UserWarning, match=msg):
        ours.transform(as_kind(X, "dask_rows"))
    with pytest.warns(UserWarning, match=msg):
        ours.transform(X)
    unnamed = ours_cls().fit(X)
    assert not hasattr(unnamed, "feature_names_in_")
    msg = f"X has feature names, but {ours_cls.__name__} was fitted without feature names"
    with pytest.warns(UserWarning, match=msg):
        unnamed.transform(ddf)

    # A refit without names forgets them.
    assert not hasattr(ours.fit(as_kind(X, "dask_rows")), "feature_names_in_")


# -- scikit-learn's estimator checks (numpy path) --------------------------------------------
@parametrize_with_checks([ooc.StandardScaler(), ooc.MinMaxScaler()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- the pass over parquet reads columns, not 2-D blocks -------------------------------


@pytest.mark.parametrize("name", ["standard", "minmax"])
def test_pass_over_parquet_columns_equals_pass_over_blocks(clf_dir, name):
    from ooc.io import parquet_source

    ours_cls, _, attrs = PAIRS[name]
    X, _ = ooc.read_parquet(clf_dir, target="y")
    assert parquet_source(X) is not None  # the column path
    same_blocks = X.map_blocks(lambda block: block, dtype=X.dtype)
    assert parquet_source(same_blocks) is None and parquet_source(X[:100]) is None
    assert_same_fit(ours_cls().fit(X), ours_cls().fit(same_blocks), attrs)


@pytest.mark.parametrize("name", ["standard", "minmax"])
@pytest.mark.parametrize("bad, shown", [(np.nan, "nan"), (np.inf, "inf")])
def test_pass_over_parquet_columns_names_file_column_and_row(tmp_path, name, bad, shown):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    for part in ("a", "b"):
        x = rng.normal(size=(50, 3))
        if part == "b":
            x[7, 1] = bad
        columns = {f"x{j}": x[:, j] for j in range(3)} | {"y": np.zeros(50)}
        pq.write_table(pa.table(columns), tmp_path / f"{part}.parquet")
    X, _ = ooc.read_parquet(tmp_path, target="y")
    with pytest.raises(ValueError, match=rf"b\.parquet: column 'x1' has {shown} at row 7"):
        PAIRS[name][0]().fit(X)
