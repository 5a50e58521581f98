"""Synthetic datasets: layout, manifest, dtypes, determinism and resumable generation."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ooc
from ooc.datasets import MANIFEST_NAME
from ooc.files import atomic_write

# 3 partitions of 1 000, 1 000 and 500 rows: small, and the last one is shorter.
SMALL = dict(n_rows=2_500, n_features=4, chunk_rows=1_000)


def _parts(path):
    return sorted(path.glob("part-*.parquet"))


def _snapshot(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir()}


def _temp_files(path) -> list:
    return [p for p in path.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def _read(path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in _parts(path)], ignore_index=True)


def test_files_and_manifest(tmp_path):
    info = ooc.generate_dataset(tmp_path, **SMALL, seed=7)

    assert info.path == tmp_path
    assert info.written == [0, 1, 2] and info.skipped == []
    assert [p.name for p in _parts(tmp_path)] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    rows = [pq.read_metadata(p).num_rows for p in _parts(tmp_path)]
    assert rows == [1_000, 1_000, 500]

    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["params"] == {
        "n_rows": 2_500,
        "n_features": 4,
        "chunk_rows": 1_000,
        "task": "classification",
        "dtype": "float64",
        "seed": 7,
        "n_classes": 2,
    }
    assert manifest["n_rows"] == 2_500
    assert sum(p["rows"] for p in manifest["partitions"]) == 2_500
    assert manifest["partitions"] == [
        {"file": "part-00000.parquet", "rows": 1_000},
        {"file": "part-00001.parquet", "rows": 1_000},
        {"file": "part-00002.parquet", "rows": 500},
    ]
    assert manifest["schema"] == {
        "x0": "float64",
        "x1": "float64",
        "x2": "float64",
        "x3": "float64",
        "y": "int64",
    }
    # The manifest's schema is the files' schema.
    for part in _parts(tmp_path):
        schema = pq.read_schema(part)
        assert {f.name: str(f.type).replace("double", "float64") for f in schema} == (
            manifest["schema"]
        )


@pytest.mark.parametrize(
    ("n_rows", "chunk_rows", "expected"),
    [(2_000, 1_000, [1_000, 1_000]), (300, 1_000, [300]), (1, 1, [1])],
)
def test_partition_rows_edges(tmp_path, n_rows, chunk_rows, expected):
    ooc.generate_dataset(tmp_path, n_rows=n_rows, n_features=2, chunk_rows=chunk_rows)
    assert [pq.read_metadata(p).num_rows for p in _parts(tmp_path)] == expected


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("task", "target_type"),
    [("classification", pa.int64()), ("regression", pa.float64()), ("blobs", pa.int64())],
)
def test_dtypes(tmp_path, task, target_type, dtype):
    ooc.generate_dataset(tmp_path, n_rows=600, n_features=3, chunk_rows=250, task=task, dtype=dtype)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    for part in _parts(tmp_path):
        schema = pq.read_schema(part)
        assert schema.names == ["x0", "x1", "x2", "y"]
        assert [schema.field(c).type for c in ["x0", "x1", "x2"]] == [
            pa.from_numpy_dtype(dtype)
        ] * 3
        assert schema.field("y").type == target_type
    assert manifest["schema"]["x0"] == dtype
    assert manifest["schema"]["y"] == str(target_type.to_pandas_dtype().__name__)


@pytest.mark.parametrize(
    ("task", "n_classes"), [("classification", 2), ("classification", 5), ("blobs", 4)]
)
def test_labels_cover_range(tmp_path, task, n_classes):
    ooc.generate_dataset(
        tmp_path, n_rows=3_000, n_features=3, chunk_rows=1_000, task=task, n_classes=n_classes
    )
    y = _read(tmp_path)["y"].to_numpy()
    assert y.dtype == np.int64
    # Every class occurs, and nothing outside range(n_classes).
    assert set(np.unique(y)) == set(range(n_classes))


def test_regression_target_is_continuous(tmp_path):
    ooc.generate_dataset(tmp_path, n_rows=2_000, n_features=3, chunk_rows=1_000, task="regression")
    y = _read(tmp_path)["y"].to_numpy()
    assert y.dtype == np.float64
    assert len(np.unique(y)) == len(y)
    assert np.isfinite(y).all()


def test_features_have_different_scales_and_offsets(tmp_path):
    ooc.generate_dataset(tmp_path, n_rows=4_000, n_features=8, chunk_rows=2_000, seed=0)
    X = _read(tmp_path).drop(columns="y").to_numpy()
    std, mean = X.std(axis=0), X.mean(axis=0)
    # Unscaled data: scales differ by more than an order of magnitude and the means are far
    # from 0 and from each other, so a scaler changes the result of a gradient-based fit.
    assert std.max() / std.min() > 10
    assert np.abs(mean).max() > 10 * std.min()
    assert np.ptp(mean) > 10
    assert np.isfinite(X).all()


def test_target_depends_on_features(tmp_path):
    """The target is learnable: not noise independent of X."""
    ooc.generate_dataset(tmp_path, n_rows=3_000, n_features=4, chunk_rows=1_000, task="regression")
    df = _read(tmp_path)
    X = df.drop(columns="y").to_numpy()
    X = np.column_stack([X, np.ones(len(X))])
    coef, *_ = np.linalg.lstsq(X, df["y"].to_numpy(), rcond=None)
    residual = df["y"].to_numpy() - X @ coef
    assert residual.var() < 0.1 * df["y"].var()


def test_deterministic_byte_identical(tmp_path):
    a = ooc.generate_dataset(tmp_path / "a", **SMALL, dtype="float32", seed=3)
    b = ooc.generate_dataset(tmp_path / "b", **SMALL, dtype="float32", seed=3)
    assert a.spec == b.spec
    snap_a, snap_b = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    assert set(snap_a) == {
        MANIFEST_NAME,
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    }
    assert snap_a == snap_b

    ooc.generate_dataset(tmp_path / "c", **SMALL, dtype="float32", seed=4)
    snap_c = _snapshot(tmp_path / "c")
    assert all(snap_c[name] != snap_a[name] for name in snap_a)


def test_partitions_differ_from_each_other(tmp_path):
    """Each partition has its own random stream: no block repeats another one."""
    ooc.generate_dataset(tmp_path, n_rows=2_000, n_features=3, chunk_rows=1_000)
    first, second = (pd.read_parquet(p).to_numpy() for p in _parts(tmp_path))
    assert not np.allclose(first, second)


def test_deleted_partition_is_rewritten_alone(tmp_path):
    ooc.generate_dataset(tmp_path, **SMALL)
    before = _snapshot(tmp_path)
    mtimes = {p.name: p.stat().st_mtime_ns for p in _parts(tmp_path)}

    (tmp_path / "part-00001.parquet").unlink()
    info = ooc.generate_dataset(tmp_path, **SMALL)

    assert info.written == [1]
    assert info.skipped == [0, 2]
    assert _snapshot(tmp_path) == before
    for name in ("part-00000.parquet", "part-00002.parquet"):
        assert (tmp_path / name).stat().st_mtime_ns == mtimes[name]


def test_truncated_partition_is_rewritten(tmp_path):
    """A partial file (e.g. from a crash outside the atomic rename) is not taken as done."""
    ooc.generate_dataset(tmp_path, **SMALL)
    before = _snapshot(tmp_path)
    last = tmp_path / "part-00002.parquet"
    last.write_bytes(last.read_bytes()[:100])

    info = ooc.generate_dataset(tmp_path, **SMALL)

    assert info.written == [2] and info.skipped == [0, 1]
    assert _snapshot(tmp_path) == before


def test_rerun_skips_everything(tmp_path):
    ooc.generate_dataset(tmp_path, **SMALL)
    before = _snapshot(tmp_path)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}

    info = ooc.generate_dataset(tmp_path, **SMALL)

    assert info.written == []
    assert info.skipped == [0, 1, 2]
    assert _snapshot(tmp_path) == before
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"n_rows": 3_000}, "n_rows"),
        ({"n_features": 5}, "n_features"),
        ({"chunk_rows": 500}, "chunk_rows"),
        ({"task": "regression"}, "task"),
        ({"dtype": "float32"}, "dtype"),
        ({"seed": 1}, "seed"),
        ({"n_classes": 3}, "n_classes"),
    ],
)
def test_other_parameters_in_same_dir_raise(tmp_path, change, name):
    ooc.generate_dataset(tmp_path, **SMALL)
    before = _snapshot(tmp_path)

    with pytest.raises(ValueError, match=rf"other parameters.*'{name}'") as err:
        ooc.generate_dataset(tmp_path, **{**SMALL, **change})

    # Only the differing parameter is named, and nothing was touched.
    others = {"n_rows", "n_features", "chunk_rows", "task", "dtype", "seed", "n_classes"} - {name}
    assert not any(f"'{other}'" in str(err.value) for other in others)
    assert _snapshot(tmp_path) == before


def test_foreign_parquet_without_manifest_raises(tmp_path):
    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(tmp_path / "data.parquet")
    with pytest.raises(ValueError, match=rf"parquet files but no {re.escape(MANIFEST_NAME)}"):
        ooc.generate_dataset(tmp_path, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet"]


def test_nested_foreign_parquet_without_manifest_raises(tmp_path):
    """read_parquet reads subdirectories, so a nested foreign file would mix data too."""
    (tmp_path / "old").mkdir()
    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(tmp_path / "old" / "data.parquet")
    with pytest.raises(ValueError, match="no _manifest.json"):
        ooc.generate_dataset(tmp_path, **SMALL)
    assert not _parts(tmp_path)


def test_unrelated_files_are_allowed(tmp_path):
    (tmp_path / "README.txt").write_text("notes")
    info = ooc.generate_dataset(tmp_path, **SMALL)
    assert info.written == [0, 1, 2]
    assert (tmp_path / "README.txt").read_text() == "notes"


def test_missing_directories_are_created(tmp_path):
    info = ooc.generate_dataset(tmp_path / "new" / "nested", **SMALL)
    assert info.written == [0, 1, 2]
    assert len(_parts(tmp_path / "new" / "nested")) == 3


def test_no_temp_files_left(tmp_path):
    ooc.generate_dataset(tmp_path, **SMALL)
    (tmp_path / "part-00000.parquet").unlink()
    ooc.generate_dataset(tmp_path, **SMALL)
    assert _temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        MANIFEST_NAME,
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "part-00000.parquet"

    def fail(tmp):
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    assert list(tmp_path.iterdir()) == []


def test_write_partition_alone(tmp_path):
    spec = ooc.DatasetSpec(**SMALL, task="blobs", n_classes=3, seed=5)
    ooc.generate_dataset(tmp_path / "all", **SMALL, task="blobs", n_classes=3, seed=5)
    alone = tmp_path / "alone"
    alone.mkdir()

    # Any order, any single index, no manifest needed.
    for index in (2, 0, 1):
        assert ooc.write_partition(alone, spec, index) is True
        name = spec.partition_name(index)
        assert (alone / name).read_bytes() == (tmp_path / "all" / name).read_bytes()
    assert ooc.write_partition(alone, spec, 1) is False
    assert _temp_files(alone) == []


@pytest.mark.parametrize("index", [-1, 3, 100])
def test_write_partition_index_out_of_range(tmp_path, index):
    spec = ooc.DatasetSpec(**SMALL)
    with pytest.raises(IndexError, match=rf"partition index {index} is outside 0\.\.2"):
        ooc.write_partition(tmp_path, spec, index)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_rows": 0}, "n_rows"),
        ({"n_rows": -10}, "n_rows"),
        ({"n_rows": 10.5}, "n_rows"),
        ({"n_features": 0}, "n_features"),
        ({"chunk_rows": 0}, "chunk_rows"),
        ({"task": "nope"}, "task"),
        ({"dtype": "int8"}, "dtype"),
        ({"n_classes": 1}, "n_classes"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, name):
    out = tmp_path / "out"
    args = {**SMALL, **kwargs}
    with pytest.raises(ValueError, match=rf"generate_dataset: {name} must be .*, got"):
        ooc.generate_dataset(out, **args)
    # Validation happens before anything is created.
    assert not out.exists()


def test_bad_arguments_show_value_and_choices(tmp_path):
    with pytest.raises(ValueError, match=r"task must be one of \('classification'.*got 'nope'"):
        ooc.generate_dataset(tmp_path, n_rows=10, task="nope")
    with pytest.raises(
        ValueError, match=r"dtype must be one of \('float64', 'float32'\), got 'int8'"
    ):
        ooc.generate_dataset(tmp_path, n_rows=10, dtype="int8")
