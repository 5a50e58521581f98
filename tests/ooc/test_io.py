"""read_parquet: lazy dask arrays with chunks from the footers, and every bad input named."""

from __future__ import annotations

import re

import dask.array as da
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ooc


def _files(path):
    return ooc.list_parquet_files(path)


def _footer_rows(path):
    return tuple(pq.read_metadata(f).num_rows for f in _files(path))


def _frame(path) -> pd.DataFrame:
    """The dataset read eagerly by pyarrow, file by file, in natural order."""
    return pd.concat([pq.read_table(f).to_pandas() for f in _files(path)], ignore_index=True)


def _write(path, **columns):
    """Write columns with pyarrow as given (NaN stays NaN, None becomes null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def _match(*parts: str) -> str:
    """A regex that matches the escaped parts in this order, anything in between."""
    return ".*".join(re.escape(str(p)) for p in parts)


# --- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clf_dir", "reg_dir", "blobs_dir"])
def test_arrays_match_eager_read(request, name):
    path = request.getfixturevalue(name)
    rows = _footer_rows(path)
    X, y = ooc.read_parquet(path, block_rows=max(rows))  # a block per file

    # Known chunks straight from the footers, before anything is computed.
    assert isinstance(X, da.Array) and isinstance(y, da.Array)
    assert X.chunks[0] == rows and y.chunks == (rows,)
    assert X.shape == (sum(rows), len(pq.read_schema(_files(path)[0]).names) - 1)
    assert X.numblocks == (len(rows), 1)

    df = _frame(path)
    expected_X = df.drop(columns="y").to_numpy()
    x_np, y_np = da.compute(X, y)
    assert x_np.dtype == X.dtype == expected_X.dtype
    assert y_np.dtype == y.dtype == df["y"].dtype
    np.testing.assert_array_equal(x_np, expected_X)
    np.testing.assert_array_equal(y_np, df["y"].to_numpy())


def test_matches_pandas_read_of_directory(clf_dir):
    X, y = ooc.read_parquet(str(clf_dir))
    df = pd.read_parquet(clf_dir)  # pandas sorts part-00000 .. part-00005 the same way
    np.testing.assert_array_equal(X.compute(), df[[f"x{j}" for j in range(5)]].to_numpy())
    np.testing.assert_array_equal(y.compute(), df["y"].to_numpy())


def test_float32_dataset_keeps_float32(tmp_path):
    ooc.generate_dataset(tmp_path, n_rows=1_200, n_features=3, chunk_rows=500, dtype="float32")
    X, y = ooc.read_parquet(tmp_path, block_rows=500)
    assert X.dtype == np.float32 and X.chunks[0] == (500, 500, 200)
    x_np = X.compute()
    assert x_np.dtype == np.float32
    np.testing.assert_array_equal(x_np, _frame(tmp_path).drop(columns="y").to_numpy())


def test_building_reads_no_data(clf_dir):
    """One task per block, chunk sizes known: the arrays are built from footers only."""
    n_files = len(_files(clf_dir))
    X, y = ooc.read_parquet(clf_dir, block_rows=2_000)
    assert not any(np.isnan(c) for c in X.chunks[0])
    assert len(X.__dask_graph__()) == n_files
    assert len(y.__dask_graph__()) == n_files
    assert X.npartitions == n_files


def test_data_pages_are_read_only_at_compute(tmp_path):
    """Footers intact, data pages destroyed: building works, computing names the file."""
    ooc.generate_dataset(tmp_path, n_rows=1_000, n_features=3, chunk_rows=500)
    bad = tmp_path / "part-00001.parquet"
    raw = bytearray(bad.read_bytes())
    footer_len = int.from_bytes(raw[-8:-4], "little")
    data_end = len(raw) - 8 - footer_len
    raw[4:data_end] = bytes(data_end - 4)  # keep the "PAR1" magic and the footer
    bad.write_bytes(bytes(raw))

    X, y = ooc.read_parquet(tmp_path, block_rows=500)
    assert X.chunks[0] == (500, 500)
    # The healthy block computes; the broken one fails naming its file.
    assert X.blocks[0].compute().shape == (500, 3)
    with pytest.raises(ValueError, match=_match("Cannot read columns", bad)):
        X.compute()
    with pytest.raises(ValueError, match=_match(bad)):
        y.compute()


def test_same_files_give_same_keys(clf_dir):
    X1, y1 = ooc.read_parquet(clf_dir)
    X2, y2 = ooc.read_parquet(clf_dir)
    assert X1.name == X2.name and y1.name == y2.name
    X3, _ = ooc.read_parquet(clf_dir, features=["x0", "x1"])
    assert X3.name != X1.name


def test_target_none(clf_dir):
    X, y = ooc.read_parquet(clf_dir, target=None)
    assert y is None
    # Every column is a feature, the int64 label included, so the common type is float64.
    assert X.shape == (12_000, 6)
    assert X.dtype == np.float64
    np.testing.assert_array_equal(X.compute(), _frame(clf_dir).to_numpy(dtype=np.float64))


def test_feature_subset_and_order(clf_dir):
    X, y = ooc.read_parquet(clf_dir, features=["x3", "x0"])
    assert X.shape == (12_000, 2) and X.chunks[1] == (2,)
    df = _frame(clf_dir)
    np.testing.assert_array_equal(X.compute(), df[["x3", "x0"]].to_numpy())
    np.testing.assert_array_equal(y.compute(), df["y"].to_numpy())


def test_other_target_column(clf_dir):
    X, y = ooc.read_parquet(clf_dir, target="x4", features=["x0", "y"])
    df = _frame(clf_dir)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y.compute(), df["x4"].to_numpy())
    np.testing.assert_array_equal(X.compute(), df[["x0", "y"]].to_numpy(dtype=np.float64))


def test_compute_y_alone(tmp_path):
    """y reads only the target column: a broken feature column does not stop it."""
    _write(tmp_path / "a.parquet", x=np.array([1.0, np.nan, 3.0]), y=np.array([0, 1, 0]))
    X, y = ooc.read_parquet(tmp_path)
    assert all(str(k[0]).startswith("read-parquet-y-") for k in y.__dask_graph__())
    np.testing.assert_array_equal(y.compute(), [0, 1, 0])
    with pytest.raises(ValueError, match="column 'x' has nan at row 1"):
        X.compute()


def test_pandas_directory_nested_natural_order(tmp_path):
    """Arbitrary pandas files, no manifest: recursive, natural order, hidden files skipped."""
    layout = {
        "part-10.parquet": 10,
        "part-2.parquet": 2,
        "part-1.parquet": 1,
        "sub/part-3.parquet": 3,
        "sub/deeper/part-0.parquet": 0,
    }
    for name, k in layout.items():
        n = 3 + k  # different sizes, so the chunks show the order too
        df = pd.DataFrame({"a": np.full(n, float(k)), "b": np.arange(n, dtype=np.float64)})
        df["target"] = k
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(tmp_path / name)
    # Not data: hidden and underscore-prefixed files and folders, other suffixes.
    bogus = pd.DataFrame({"other": ["not", "read"]})
    bogus.to_parquet(tmp_path / ".part-5.parquet.1234.tmp")
    bogus.to_parquet(tmp_path / ".hidden.parquet")
    bogus.to_parquet(tmp_path / "_metadata.parquet")
    (tmp_path / "_staging").mkdir()
    bogus.to_parquet(tmp_path / "_staging" / "part-9.parquet")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "notes.txt").write_text("hello")

    files = ooc.list_parquet_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "part-1.parquet",
        "part-2.parquet",
        "part-10.parquet",
        "sub/deeper/part-0.parquet",
        "sub/part-3.parquet",
    ]

    X, y = ooc.read_parquet(tmp_path, target="target", block_rows=1)
    order = [1, 2, 10, 0, 3]
    assert X.chunks == ((1,) * sum(3 + k for k in order), (2,))
    x_np, y_np = da.compute(X, y)
    expected = np.concatenate([np.full(3 + k, k) for k in order])
    np.testing.assert_array_equal(y_np, expected)
    np.testing.assert_array_equal(x_np[:, 0], expected)
    np.testing.assert_array_equal(x_np[:4, 1], [0, 1, 2, 3])


def test_pandas_index_is_not_a_feature(tmp_path):
    """A non-range index is stored as a column by pandas; it is row labels, not data."""
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [0, 1, 0]}, index=[30, 10, 20])
    df.to_parquet(tmp_path / "p0.parquet")
    df.set_index(pd.Index(["u", "v", "w"], name="id")).to_parquet(tmp_path / "p1.parquet")
    assert "__index_level_0__" in pq.read_schema(tmp_path / "p0.parquet").names
    assert "id" in pq.read_schema(tmp_path / "p1.parquet").names

    X, y = ooc.read_parquet(tmp_path / "p0.parquet")
    assert X.shape == (3, 1)
    np.testing.assert_array_equal(X.compute(), pd.read_parquet(tmp_path / "p0.parquet")[["a"]])
    X, _ = ooc.read_parquet(tmp_path / "p1.parquet")
    assert X.shape == (3, 1)
    # Still readable when asked for by name.
    X, _ = ooc.read_parquet(tmp_path / "p0.parquet", features=["a", "__index_level_0__"])
    np.testing.assert_array_equal(X.compute(), [[1.0, 30], [2.0, 10], [3.0, 20]])


def test_single_file(clf_dir):
    file = clf_dir / "part-00002.parquet"
    X, y = ooc.read_parquet(file)
    assert X.chunks == ((2_000,), (5,))
    df = pd.read_parquet(file)
    np.testing.assert_array_equal(X.compute(), df.drop(columns="y").to_numpy())
    np.testing.assert_array_equal(y.compute(), df["y"].to_numpy())


@pytest.mark.parametrize(
    "dtypes",
    [
        ["int64"],
        ["int64", "int64"],
        ["int32", "float32"],
        ["int16", "float32"],
        ["int8", "uint8"],
        ["uint64", "int64"],
        ["bool", "float32"],
        ["int32", "float64"],
    ],
)
def test_feature_dtype_is_numpy_result_type(tmp_path, dtypes):
    columns = {f"c{j}": np.arange(1, 6).astype(dt) for j, dt in enumerate(dtypes)}
    _write(tmp_path / "a.parquet", **columns, y=np.arange(5))
    _write(tmp_path / "b.parquet", **columns, y=np.arange(5))
    # A boolean column makes as_frame="auto" give a DataFrame (issue 14); an array is asked
    # for here.
    X, _ = ooc.read_parquet(tmp_path, as_frame=False)
    expected = np.result_type(*[np.dtype(dt) for dt in dtypes])
    assert X.dtype == expected
    x_np = X.compute()
    assert x_np.dtype == expected
    np.testing.assert_array_equal(
        x_np, np.tile(np.column_stack(list(columns.values())).astype(expected), (2, 1))
    )


def test_empty_file_gives_no_block(tmp_path):
    _write(tmp_path / "part-0.parquet", x=np.array([1.0, 2.0]), y=np.array([0, 1]))
    _write(
        tmp_path / "part-1.parquet",
        x=np.array([], dtype=np.float64),
        y=np.array([], dtype=np.int64),
    )
    _write(tmp_path / "part-2.parquet", x=np.array([3.0]), y=np.array([1]))
    X, y = ooc.read_parquet(tmp_path, block_rows=2)
    assert X.chunks[0] == (2, 1)
    np.testing.assert_array_equal(X.compute(), [[1.0], [2.0], [3.0]])
    np.testing.assert_array_equal(y.compute(), [0, 1, 1])


def test_only_empty_files_give_one_empty_block(tmp_path):
    empty = {"x": np.array([], dtype=np.float64), "y": np.array([], dtype=np.int64)}
    _write(tmp_path / "part-0.parquet", **empty)
    _write(tmp_path / "part-1.parquet", **empty)
    X, y = ooc.read_parquet(tmp_path)
    assert X.chunks == ((0,), (1,)) and y.chunks == ((0,),)
    assert X.compute().shape == (0, 1) and y.compute().shape == (0,)


def test_with_distributed_workers(clf_dir, dask_client):
    """The reading functions run in worker processes (they must pickle)."""
    X, y = ooc.read_parquet(clf_dir)
    x_np, y_np = dask_client.compute([X, y], sync=True)
    df = _frame(clf_dir)
    np.testing.assert_array_equal(x_np, df.drop(columns="y").to_numpy())
    np.testing.assert_array_equal(y_np, df["y"].to_numpy())


# --- bad input -------------------------------------------------------------------------------


def test_path_does_not_exist(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=_match("Data path", missing, "does not exist")):
        ooc.read_parquet(missing)


def test_directory_without_parquet(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    (tmp_path / "_hidden.parquet").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=_match("No parquet files", tmp_path)):
        ooc.read_parquet(tmp_path)


def test_missing_target_column(clf_dir):
    with pytest.raises(ValueError, match=r"Target column 'label' not found.*target=None"):
        ooc.read_parquet(clf_dir, target="label")


def test_missing_feature_columns(clf_dir):
    with pytest.raises(ValueError, match=r"Feature columns \['x9', 'z'\] not found"):
        ooc.read_parquet(clf_dir, features=["x0", "x9", "z"])


def test_target_also_a_feature(clf_dir):
    with pytest.raises(ValueError, match="'y' is both the target and a feature"):
        ooc.read_parquet(clf_dir, features=["x0", "y"])


def test_no_feature_column(tmp_path):
    _write(tmp_path / "a.parquet", y=np.arange(3))
    with pytest.raises(ValueError, match="No feature columns"):
        ooc.read_parquet(tmp_path)


def test_string_feature_column(tmp_path):
    """A string feature cannot be in a numeric array (as_frame=False); by default
    (as_frame="auto", issue 14) it makes X a DataFrame: see test_tabular_io.py."""
    file = tmp_path / "a.parquet"
    pd.DataFrame({"x": [1.0, 2.0], "city": ["Oslo", "Rome"], "y": [0, 1]}).to_parquet(file)
    with pytest.raises(
        ValueError, match=_match("Feature column 'city' in", file, "numeric", "as_frame=True")
    ):
        ooc.read_parquet(tmp_path, as_frame=False)
    # Leaving it out works.
    X, _ = ooc.read_parquet(tmp_path, features=["x"])
    np.testing.assert_array_equal(X.compute(), [[1.0], [2.0]])


@pytest.mark.parametrize(
    ("second", "column"),
    [
        ({"a": [1.0]}, "b"),  # b is missing
        ({"a": [1.0], "b": [2.0], "c": [3.0]}, "c"),  # c is extra
        ({"b": [2.0], "a": [1.0]}, "a"),  # different order
    ],
    ids=["missing", "extra", "order"],
)
def test_schema_mismatch_columns(tmp_path, second, column):
    first = _write(tmp_path / "part-1.parquet", a=[1.0], b=[2.0])
    other = _write(tmp_path / "part-2.parquet", **second)
    with pytest.raises(ValueError, match=_match("Schema mismatch", other, column, first)):
        ooc.read_parquet(tmp_path, target=None)


def test_schema_mismatch_type(tmp_path):
    first = _write(tmp_path / "part-1.parquet", a=np.array([1.0]), y=np.array([0]))
    other = _write(tmp_path / "part-2.parquet", a=np.array([1], dtype=np.int32), y=np.array([0]))
    with pytest.raises(
        ValueError, match=_match("column 'a' is int32 in", other, "but double in", first)
    ):
        ooc.read_parquet(tmp_path)


@pytest.mark.parametrize("content", [b"this is not parquet at all", b""], ids=["garbage", "empty"])
def test_corrupt_file(tmp_path, content):
    _write(tmp_path / "part-0.parquet", a=[1.0], y=[0])
    bad = tmp_path / "part-1.parquet"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=_match("Cannot read the parquet footer of", bad)):
        ooc.read_parquet(tmp_path)
    with pytest.raises(ValueError, match=_match(bad, "corrupt")):
        ooc.read_parquet(bad)


@pytest.mark.parametrize(
    ("bad_value", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")]
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nonfinite_feature_at_compute(tmp_path, bad_value, shown, dtype):
    good = np.arange(10, dtype=dtype)
    broken = good.copy()
    broken[7] = bad_value
    _write(tmp_path / "part-0.parquet", a=good, b=good, y=np.zeros(10, dtype=np.int64))
    bad = _write(tmp_path / "part-1.parquet", a=good, b=broken, y=np.zeros(10, dtype=np.int64))

    X, y = ooc.read_parquet(tmp_path, block_rows=10)  # footers only: no error yet
    assert X.chunks[0] == (10, 10)
    assert X.blocks[0].compute().shape == (10, 2)
    with pytest.raises(ValueError, match=_match(bad, "column 'b' has", shown, "at row 7")):
        X.compute()


def test_nonfinite_target(tmp_path):
    bad = _write(tmp_path / "a.parquet", x=np.arange(4.0), y=np.array([0.5, 1.5, np.inf, 2.0]))
    _, y = ooc.read_parquet(tmp_path)
    with pytest.raises(ValueError, match=_match(bad, "column 'y' has inf at row 2")):
        y.compute()


@pytest.mark.parametrize(
    "column",
    [
        pa.array([1.0, 2.0, None, 4.0], type=pa.float64()),
        pa.array([1, 2, None, 4], type=pa.int64()),
    ],
    ids=["float", "int"],
)
def test_null_in_feature(tmp_path, column):
    bad = _write(tmp_path / "a.parquet", x=column, y=np.arange(4))
    X, _ = ooc.read_parquet(tmp_path)
    with pytest.raises(ValueError, match=_match(bad, "column 'x' has 1 missing value(s)", "row 2")):
        X.compute()


def test_pandas_nan_is_written_as_null(tmp_path):
    """pandas stores NaN as a parquet null; it is reported as a missing value."""
    file = tmp_path / "a.parquet"
    pd.DataFrame({"x": [1.0, np.nan, np.nan], "y": [0, 1, 0]}).to_parquet(file)
    X, _ = ooc.read_parquet(tmp_path)
    with pytest.raises(
        ValueError, match=_match(file, "'x' has 2 missing value(s), first at row 1")
    ):
        X.compute()


def test_null_in_target(tmp_path):
    bad = _write(tmp_path / "a.parquet", x=np.arange(3.0), y=pa.array([0, None, 1]))
    X, y = ooc.read_parquet(tmp_path)
    np.testing.assert_array_equal(X.compute(), [[0.0], [1.0], [2.0]])
    with pytest.raises(ValueError, match=_match(bad, "target column 'y' has 1 missing value(s)")):
        y.compute()
