"""Real tabular data (issue 14): DataFrames of categoricals and missing values read out of
core, the rule for missing values, footer reports, and generated categorical data."""

from __future__ import annotations

import re

import dask.array as da
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ooc
from ooc.checks import FooterReport, check_footer_statistics
from ooc.datasets import DatasetSpec, _dataset_constants, _partition_table
from ooc.frames import frame_source, read_frame


def _write(path, **columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def _match(*parts) -> str:
    return ".*".join(re.escape(str(p)) for p in parts)


@pytest.fixture
def shop(tmp_path):
    """Three files of uneven rows: numbers with nulls, an int column, text with nulls (one
    file dictionary encoded, as pandas writes a categorical), a boolean."""
    _write(
        tmp_path / "part-0.parquet",
        x=pa.array([1.0, None, 3.0, 4.0]),
        n=pa.array([1, 2, 3, 4]),
        city=pa.array(["Oslo", None, "Rome", "Oslo"]),
        ok=pa.array([True, False, True, True]),
        y=pa.array([0, 1, 0, 1]),
    )
    _write(
        tmp_path / "part-1.parquet",
        x=pa.array([5.0]),
        n=pa.array([5]),
        city=pa.array(["Lima"]),
        ok=pa.array([False]),
        y=pa.array([1]),
    )
    pd.DataFrame(
        {
            "x": [7.0, np.nan],
            "n": [6, 7],
            "city": pd.Categorical(["Rome", "Oslo"]),
            "ok": [True, False],
            "y": [0, 0],
        }
    ).to_parquet(tmp_path / "part-2.parquet", index=False)
    return tmp_path


def test_auto_gives_a_dataframe_of_categoricals_built_from_footers(shop):
    X, y = ooc.read_parquet(shop, block_rows=3)
    import dask.dataframe as dd

    assert isinstance(X, dd.DataFrame) and isinstance(y, da.Array)
    assert X.dtypes.to_dict() == {
        "x": np.dtype("float64"),
        "n": np.dtype("int64"),  # no nulls in any footer: stays int64
        "city": X.dtypes["city"],
        "ok": np.dtype("bool"),
    }
    assert isinstance(X.dtypes["city"], pd.CategoricalDtype)
    # One partition per block, known divisions and one task each: nothing was read.
    # (4 rows cut in two slices; 1 and 2 rows joined)
    assert X.npartitions == 3 and len(X.__dask_graph__()) == 3
    assert X.divisions == (0, 2, 4, 6)
    assert y.chunks == ((2, 2, 3),)

    frame = X.compute()
    expected = pd.concat(
        [pq.read_table(shop / f"part-{i}.parquet").to_pandas() for i in range(3)],
        ignore_index=True,
    )
    assert list(frame.index) == list(range(7))
    np.testing.assert_array_equal(frame["x"], expected["x"])
    np.testing.assert_array_equal(frame["n"], expected["n"])
    np.testing.assert_array_equal(frame["ok"], expected["ok"])
    city = frame["city"].astype(object).where(frame["city"].notna(), None).tolist()
    assert city == ["Oslo", None, "Rome", "Oslo", "Lima", "Rome", "Oslo"]
    np.testing.assert_array_equal(y.compute(), expected["y"])
    # Each block's categories are its own values.
    assert list(X.partitions[0].compute()["city"].cat.categories) == ["Oslo"]
    assert sorted(X.partitions[1].compute()["city"].cat.categories) == ["Oslo", "Rome"]
    assert frame_source(X) is not None and frame_source(X[["x"]]) is None


def test_the_frame_is_built_from_footers_alone(tmp_path):
    """Data pages destroyed, footers intact: building works, computing names the file."""
    ooc.generate_dataset(tmp_path, n_rows=1_000, n_features=2, chunk_rows=500, n_categorical=1)
    bad = tmp_path / "part-00001.parquet"
    raw = bytearray(bad.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little")
    raw[4 : len(raw) - 8 - footer] = bytes(len(raw) - 12 - footer)
    bad.write_bytes(bytes(raw))
    X, y = ooc.read_parquet(tmp_path, block_rows=500)
    assert X.npartitions == 2 and X.divisions == (0, 500, 999)
    assert len(X.partitions[0].compute()) == 500
    with pytest.raises(ValueError, match=_match("Cannot read columns", bad)):
        X.compute()


def test_as_frame_true_and_false(shop):
    X, _ = ooc.read_parquet(shop, features=["x", "n"], as_frame=True)
    assert X.dtypes.to_dict() == {"x": np.dtype("float64"), "n": np.dtype("int64")}
    X, _ = ooc.read_parquet(shop, features=["x", "n"])  # numbers only: an array
    assert isinstance(X, da.Array)
    X, _ = ooc.read_parquet(shop, features=["n", "ok"], as_frame=False)
    assert isinstance(X, da.Array) and X.dtype == np.int64
    with pytest.raises(ValueError, match="as_frame must be True, False or 'auto', got 'yes'"):
        ooc.read_parquet(shop, as_frame="yes")


def test_missing_values_are_nan_in_a_frame_and_integers_with_nulls_are_float(tmp_path):
    _write(
        tmp_path / "a.parquet",
        i=pa.array([1, None, 3]),
        b=pa.array([True, None, False]),
        s=pa.array(["u", "v", None]),
        y=pa.array([0, 1, 0]),
    )
    X, _ = ooc.read_parquet(tmp_path)
    assert X.dtypes["i"] == np.float64 and X.dtypes["b"] == np.float64
    frame = X.compute()
    np.testing.assert_array_equal(frame["i"], [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(frame["b"], [1.0, np.nan, 0.0])
    assert frame["s"].isna().tolist() == [False, False, True]


def test_missing_values_in_an_array_are_refused_unless_allowed(tmp_path):
    """The rule: a numeric array refuses missing values by default (naming file, column
    and row) and reads them as NaN with allow_missing=True."""
    bad = _write(tmp_path / "a.parquet", x=pa.array([1.0, None]), n=pa.array([None, 2]), y=[0, 1])
    X, _ = ooc.read_parquet(tmp_path)
    assert isinstance(X, da.Array) and X.dtype == np.float64
    with pytest.raises(
        ValueError, match=_match(bad, "'x' has 1 missing value(s)", "allow_missing")
    ):
        X.compute()
    X, _ = ooc.read_parquet(tmp_path, allow_missing=True)
    np.testing.assert_array_equal(X.compute(), [[1.0, np.nan], [np.nan, 2.0]])
    X, _ = ooc.read_parquet(tmp_path, as_frame=True, allow_missing=False)
    with pytest.raises(ValueError, match=_match(bad, "'x' has 1 missing value(s), first at row 1")):
        X.compute()


def test_infinity_is_refused_in_a_frame(tmp_path):
    bad = _write(
        tmp_path / "a.parquet", x=np.array([1.0, np.nan, np.inf]), s=["a", "b", "c"], y=[0, 1, 0]
    )
    X, _ = ooc.read_parquet(tmp_path)
    with pytest.raises(ValueError, match=_match(bad, "column 'x' has inf at row 2", "finite")):
        X.compute()


def test_a_target_with_missing_values_is_refused_naming_file_and_row(tmp_path):
    _write(tmp_path / "a.parquet", s=["a", "b"], y=pa.array([0, 1]))
    bad = _write(tmp_path / "b.parquet", s=["a", "b", "c"], y=pa.array([0, 1, None]))
    X, y = ooc.read_parquet(tmp_path)
    assert len(X.compute()) == 5  # the features are fine
    with pytest.raises(
        ValueError, match=_match(bad, "target column 'y' has 1 missing value(s), first at row 2")
    ):
        y.compute()


def test_a_column_numeric_in_one_file_and_text_in_another(tmp_path):
    first = _write(tmp_path / "part-0.parquet", a=[1.0, 2.0], y=[0, 1])
    _write(tmp_path / "part-1.parquet", a=[3.0], y=[1])
    odd = _write(tmp_path / "part-2.parquet", a=["three"], y=[1])
    with pytest.raises(ValueError) as info:
        ooc.read_parquet(tmp_path)
    message = str(info.value)
    assert f"column 'a' is string in {odd} but double in {first}" in message
    assert "text in one file and numbers" in message and "pyarrow.compute.cast" in message


def test_text_may_be_plain_in_one_file_and_dictionary_in_another(shop):
    kinds = {str(pq.read_schema(shop / f"part-{i}.parquet").field("city").type) for i in (0, 2)}
    assert kinds == {"string", "dictionary<values=string, indices=int8, ordered=0>"}
    X, _ = ooc.read_parquet(shop)
    assert X["city"].compute().notna().sum() == 6


def test_a_file_where_a_column_is_all_missing_may_type_it_null(tmp_path):
    """pandas writes an all-None (or empty) object column as type null: that file has
    every value of it missing, whatever the type in the other files."""
    _write(tmp_path / "a.parquet", s=pa.array(["u", "v"]), x=[1.0, 2.0], y=[0, 1])
    _write(tmp_path / "b.parquet", s=pa.array([None, None]), x=pa.array([None, None]), y=[1, 0])
    X, _ = ooc.read_parquet(tmp_path)
    assert isinstance(X.dtypes["s"], pd.CategoricalDtype) and X.dtypes["x"] == np.float64
    frame = X.compute()
    assert frame["s"].isna().tolist() == [False, False, True, True]
    np.testing.assert_array_equal(frame["x"], [1.0, 2.0, np.nan, np.nan])


def test_a_feature_of_type_null_is_named(tmp_path):
    bad = _write(tmp_path / "a.parquet", x=[1.0, 2.0], empty=pa.array([None, None]), y=[0, 1])
    with pytest.raises(ValueError, match=_match("'empty' in", bad, "type null", "features=")):
        ooc.read_parquet(tmp_path)


def test_hive_text_partitions_are_categorical_columns(tmp_path):
    for region in ("north", "south"):
        _write(tmp_path / f"region={region}" / "a.parquet", x=[1.0, 2.0], y=[0, 1])
    X, _ = ooc.read_parquet(tmp_path)
    frame = X.compute()
    assert isinstance(frame["region"].dtype, pd.CategoricalDtype)
    assert frame["region"].astype(str).tolist() == ["north", "north", "south", "south"]


def test_empty_dataset_gives_one_empty_partition(tmp_path):
    _write(tmp_path / "a.parquet", s=pa.array([], pa.string()), y=pa.array([], pa.int64()))
    X, y = ooc.read_parquet(tmp_path)
    assert X.npartitions == 1 and X.compute().shape == (0, 1)


def test_projection_reads_only_the_columns_asked_for(shop):
    source = ooc.inspect_parquet(shop, as_frame=True)
    block = read_frame(source, 0, ["city"])
    assert list(block.columns) == ["city"]
    X, _ = ooc.read_parquet(shop)
    assert list(X[["city"]].compute().columns) == ["city"]


def test_split_sources_read_as_frames(shop):
    source = ooc.inspect_parquet(shop, as_frame="auto")
    train, holdout = source.split(0.3, seed=1)
    Xt, yt = ooc.io.dask_collections(train)
    Xh, yh = ooc.io.dask_collections(holdout)
    assert len(Xt.compute()) + len(Xh.compute()) == 7
    assert len(yt.compute()) == len(Xt.compute())


# -- footer checks ----------------------------------------------------------------------------


def test_footer_check_reports_missing_features(shop):
    report = check_footer_statistics(ooc.inspect_parquet(shop, as_frame="auto"))
    assert isinstance(report, FooterReport)
    assert report.null_counts == {"x": 2, "city": 1}
    assert report.n_rows == 7 and report.has_missing
    assert report.missing_fraction("x") == pytest.approx(2 / 7)
    assert report.first_missing["x"] == (shop / "part-0.parquet", 0)


def test_footer_check_refuses_missing_values_where_they_are_not_allowed(shop):
    numeric = ooc.inspect_parquet(shop, features=["x", "n"])  # an array: not allowed
    with pytest.raises(
        ValueError, match=_match(shop / "part-0.parquet", "'x' has 1 missing value(s) (row group 0")
    ):
        check_footer_statistics(numeric)
    report = check_footer_statistics(numeric, allow_missing=True)
    assert report.null_counts == {"x": 2}
    with pytest.raises(ValueError, match="'x' has 2 missing value"):
        report.raise_for_missing()


def test_footer_check_still_refuses_missing_targets_and_infinities(tmp_path):
    _write(tmp_path / "a.parquet", s=["a", None], y=pa.array([0, None]))
    with pytest.raises(ValueError, match="target column 'y' has 1 missing value"):
        check_footer_statistics(ooc.inspect_parquet(tmp_path, as_frame=True))
    other = tmp_path / "inf"
    _write(other / "a.parquet", s=["a", None], x=[np.inf, 1.0], y=[0, 1])
    with pytest.raises(ValueError, match="column 'x' holds inf"):
        check_footer_statistics(ooc.inspect_parquet(other, as_frame=True))


# -- generated categorical data ----------------------------------------------------------------


def _old_partition_table(spec: DatasetSpec, index: int) -> pa.Table:
    """The generator as it was before issue 14, to check the defaults still give it."""
    const = _dataset_constants(spec)
    rng = np.random.default_rng([spec.seed, 1, index])
    n = spec.partition_rows(index)
    if spec.task == "blobs":
        y = rng.integers(spec.n_classes, size=n, dtype=np.int64)
        z = const["centres"][y].T + rng.standard_normal((spec.n_features, n))
    else:
        z = rng.standard_normal((spec.n_features, n))
        signal = const["weights"].T @ z
        if spec.task == "classification":
            noise = rng.gumbel(scale=0.5, size=signal.shape)
            y = np.argmax(signal + noise, axis=0).astype(np.int64)
        else:
            y = 10.0 * signal[0] + rng.standard_normal(n) + 3.0
    x = z * const["scales"][:, None] + const["offsets"][:, None]
    columns = {name: x[j].astype(spec.dtype) for j, name in enumerate(spec.feature_names)}
    columns["y"] = y
    return pa.table(columns)


@pytest.mark.parametrize("task", ["classification", "regression", "blobs"])
def test_defaults_generate_the_data_they_always_did(task):
    spec = DatasetSpec(n_rows=900, n_features=3, chunk_rows=400, task=task, seed=5, n_classes=3)
    for index in range(spec.n_partitions):
        assert _partition_table(spec, index).equals(_old_partition_table(spec, index))


def test_categorical_data_with_missing_values(tmp_path):
    ooc.generate_dataset(
        tmp_path, n_rows=30_000, n_features=3, chunk_rows=10_000, n_categorical=4,
        missing_rate=0.2, seed=3,
    )  # fmt: skip
    frame = pd.concat(
        [pd.read_parquet(p) for p in sorted(tmp_path.glob("part-*.parquet"))], ignore_index=True
    )
    assert list(frame.columns) == ["x0", "x1", "x2", "c0", "c1", "c2", "c3", "y"]
    assert pq.read_schema(tmp_path / "part-00000.parquet").field("c0").type == pa.string()
    for name in ("x0", "x1", "x2"):
        assert frame[name].isna().mean() == pytest.approx(0.2, abs=0.01)
    for name in ("c0", "c1", "c2", "c3"):
        assert frame[name].isna().mean() == pytest.approx(0.1, abs=0.01)
    assert frame["y"].notna().all()
    counts = frame["c0"].value_counts()
    assert len(counts) == 3 and counts.iloc[0] > 10 * counts.iloc[-1]  # skewed, one rare
    assert 100 < frame["c3"].nunique() <= 192
    # The label depends on the categories.
    rates = frame.groupby("c1", observed=True)["y"].mean()
    assert rates.max() - rates.min() > 0.3
    # Deterministic per (seed, partition): a partition regenerated alone is the same.
    again = tmp_path / "again"
    spec = DatasetSpec(30_000, 3, 10_000, seed=3, n_categorical=4, missing_rate=0.2)
    again.mkdir()
    ooc.write_partition(again, spec, 1)
    assert pq.read_table(again / "part-00001.parquet").equals(
        pq.read_table(tmp_path / "part-00001.parquet")
    )


def test_categorical_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"n_categorical must be an int >= 0, got -1"):
        ooc.generate_dataset(tmp_path, n_rows=10, n_categorical=-1)
    with pytest.raises(ValueError, match=r"missing_rate must be a number in \[0, 1\), got 1.0"):
        ooc.generate_dataset(tmp_path, n_rows=10, missing_rate=1.0)
