"""ParquetLayout.split: a deterministic holdout by whole files, readable by dask_arrays."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import ooc
from ooc.io import dask_arrays


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """20 files of 10 rows each (the last one 7), 3 features and a target."""
    path = tmp_path_factory.mktemp("split")
    ooc.generate_dataset(path, n_rows=197, n_features=3, chunk_rows=10, seed=4)
    return ooc.inspect_parquet(path)


def _frame(files) -> pd.DataFrame:
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def test_parts_are_disjoint_cover_all_files_and_keep_their_order(layout):
    train, holdout = layout.split(0.25, seed=1)

    assert not set(train.files) & set(holdout.files)
    assert set(train.files) | set(holdout.files) == set(layout.files)
    # Each part lists its files in the original order, with their own row counts.
    for part in (train, holdout):
        assert list(part.files) == [f for f in layout.files if f in set(part.files)]
        assert part.rows == tuple(pq.read_metadata(f).num_rows for f in part.files)
    assert train.n_rows + holdout.n_rows == layout.n_rows


def test_parts_keep_columns_and_dtypes(layout):
    for part in layout.split(0.3):
        assert part.features == layout.features
        assert part.target == layout.target
        assert part.dtype == layout.dtype
        assert part.target_dtype == layout.target_dtype


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.01, 1), (0.1, 2), (0.25, 5), (0.33, 7), (0.5, 10), (0.9, 18), (0.99, 19)],
)
def test_holdout_size(layout, fraction, expected):
    train, holdout = layout.split(fraction)
    assert len(holdout.files) == expected
    assert len(train.files) == 20 - expected


def test_holdout_size_is_the_rounded_share_with_at_least_one_file(layout):
    for fraction in np.linspace(0.02, 0.95, 30):
        _, holdout = layout.split(float(fraction))
        assert len(holdout.files) == max(1, round(fraction * 20))


def test_training_part_keeps_at_least_one_file(tmp_path):
    ooc.generate_dataset(tmp_path, n_rows=20, n_features=2, chunk_rows=10)
    train, holdout = ooc.inspect_parquet(tmp_path).split(0.9)  # round(1.8) would be 2
    assert len(train.files) == 1 and len(holdout.files) == 1


def test_same_seed_same_split(layout):
    assert layout.split(0.3, seed=7) == layout.split(0.3, seed=7)
    assert layout.split(0.3) == layout.split(0.3, seed=0)


def test_different_seeds_give_different_splits(layout):
    holdouts = {layout.split(0.5, seed=seed)[1].files for seed in range(5)}
    assert len(holdouts) == 5


def test_split_does_not_change_the_layout(layout):
    files, rows = layout.files, layout.rows
    layout.split(0.4, seed=3)
    assert layout.files == files and layout.rows == rows


def test_dask_arrays_of_the_parts_read_their_files(layout):
    train, holdout = layout.split(0.3, seed=2)
    for part in (train, holdout):
        X, y = dask_arrays(part)
        assert X.chunks[0] == part.rows and y.chunks[0] == part.rows
        expected = _frame(part.files)
        np.testing.assert_array_equal(X.compute(), expected[list(part.features)].to_numpy())
        np.testing.assert_array_equal(y.compute(), expected["y"].to_numpy())
    # Different files, so different dask keys: the parts never share cached blocks.
    assert dask_arrays(train)[0].name != dask_arrays(holdout)[0].name


def test_dask_arrays_of_an_unsupervised_split(layout):
    unsupervised = ooc.inspect_parquet(layout.files[0].parent, target=None)
    train, _ = unsupervised.split(0.5)
    X, y = dask_arrays(train)
    assert y is None
    assert X.shape == (train.n_rows, 4)  # the target column is read as a feature


@pytest.mark.parametrize("fraction", [0, 1, 0.0, 1.0, -0.2, 1.5, math.nan, "0.2", None, True])
def test_fraction_outside_the_open_interval_is_rejected(layout, fraction):
    expected = f"got {fraction!r}. Pass e.g. fraction=0.2."
    message = "fraction must be a number strictly between 0 and 1.*" + re.escape(expected)
    with pytest.raises(ValueError, match=message):
        layout.split(fraction)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_bad_seed_is_rejected(layout, seed):
    with pytest.raises(ValueError, match=re.escape(f"seed must be an int >= 0, got {seed!r}")):
        layout.split(0.2, seed=seed)


def test_a_single_file_cannot_be_split(tmp_path):
    ooc.generate_dataset(tmp_path, n_rows=50, n_features=2, chunk_rows=100)
    layout = ooc.inspect_parquet(tmp_path)
    with pytest.raises(ValueError) as err:
        layout.split(0.2)
    message = str(err.value)
    assert "at least 2 parquet files" in message
    assert "has 1" in message
    assert str(layout.files[0]) in message
    assert "smaller chunk_rows" in message
