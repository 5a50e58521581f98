"""ParquetSource.split: a deterministic holdout of exactly the asked share of rows, by
blocks (the last one drawn cut to size), on any layout, readable by dask_arrays."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ooc
from ooc.io import dask_arrays


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """20 files of 10 rows each (the last one 7), 3 features and a target; a block per file."""
    path = tmp_path_factory.mktemp("split")
    ooc.generate_dataset(path, n_rows=197, n_features=3, chunk_rows=10, seed=4)
    return ooc.inspect_parquet(path, block_rows=10)


def _frame(files) -> pd.DataFrame:
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def _row_ids(source) -> list[tuple[int, int]]:
    """(file, row in file) of every row of ``source``, in block order."""
    return [
        (piece.file, source.file_offset(piece) + r)
        for block in source.blocks
        for piece in block
        for r in range(piece.rows)
    ]


def test_parts_are_disjoint_cover_every_row_and_keep_their_order(source):
    train, holdout = source.split(0.25, seed=1)
    train_rows, held_rows = _row_ids(train), _row_ids(holdout)
    assert not set(train_rows) & set(held_rows)
    assert sorted(train_rows + held_rows) == _row_ids(source)
    # Each part keeps the original order of its rows.
    assert train_rows == sorted(train_rows) and held_rows == sorted(held_rows)
    assert train.n_rows + holdout.n_rows == source.n_rows


def test_parts_keep_columns_and_dtypes(source):
    for part in source.split(0.3):
        assert part.features == source.features
        assert part.target == source.target
        assert part.dtype == source.dtype
        assert part.target_dtype == source.target_dtype


@pytest.mark.parametrize("fraction", [0.001, 0.01, 0.1, 0.25, 0.33, 0.5, 0.9, 0.99, 0.999])
def test_holdout_holds_the_rounded_share_of_rows(source, fraction):
    train, holdout = source.split(fraction)
    expected = min(196, max(1, round(fraction * 197)))
    assert holdout.n_rows == expected
    assert train.n_rows == 197 - expected


def test_holdout_is_whole_blocks_but_one(source):
    """At most one block is cut; every other block goes whole to one side."""
    whole = set(source.blocks)
    for seed in range(10):
        train, holdout = source.split(0.37, seed=seed)
        cut = [b for b in (*train.blocks, *holdout.blocks) if b not in whole]
        assert len(cut) <= 2  # the two halves of the one block that was cut


def test_same_seed_same_split(source):
    assert source.split(0.3, seed=7) == source.split(0.3, seed=7)
    assert source.split(0.3) == source.split(0.3, seed=0)


def test_different_seeds_give_different_splits(source):
    holdouts = {source.split(0.5, seed=seed)[1].blocks for seed in range(5)}
    assert len(holdouts) == 5


def test_split_does_not_change_the_source(source):
    blocks, rows = source.blocks, source.rows
    source.split(0.4, seed=3)
    assert source.blocks == blocks and source.rows == rows


def test_dask_arrays_of_the_parts_read_their_rows(source):
    frame = _frame(source.files)
    starts = np.cumsum([0, *source.file_rows])
    for part in source.split(0.3, seed=2):
        X, y = dask_arrays(part)
        assert X.chunks[0] == part.rows and y.chunks[0] == part.rows
        expected = frame.iloc[[starts[f] + r for f, r in _row_ids(part)]]
        np.testing.assert_array_equal(X.compute(), expected[list(part.features)].to_numpy())
        np.testing.assert_array_equal(y.compute(), expected["y"].to_numpy())
    train, holdout = source.split(0.3, seed=2)
    # Different rows, so different dask keys: the parts never share cached blocks.
    assert dask_arrays(train)[0].name != dask_arrays(holdout)[0].name


def test_dask_arrays_of_an_unsupervised_split(source):
    unsupervised = ooc.inspect_parquet(source.root, target=None)
    train, _ = unsupervised.split(0.5)
    X, y = dask_arrays(train)
    assert y is None
    assert X.shape == (train.n_rows, 4)  # the target column is read as a feature


def test_a_one_file_one_row_group_dataset_splits(tmp_path):
    """The case that whole-file holdouts refused: one file, one row group."""
    ooc.generate_dataset(tmp_path, n_rows=1_000, n_features=2, chunk_rows=1_000)
    whole = ooc.inspect_parquet(tmp_path)
    assert len(whole.blocks) == 1
    train, holdout = whole.split(0.1, seed=0)
    assert (train.n_rows, holdout.n_rows) == (900, 100)
    X, y = dask_arrays(holdout)
    expected = pq.read_table(whole.files[0]).to_pandas().iloc[:100]
    np.testing.assert_array_equal(y.compute(), expected["y"].to_numpy())


def test_one_file_of_many_row_groups_splits_near_the_fraction(tmp_path):
    table = pa.table({"x": np.arange(4_000.0), "y": np.arange(4_000) % 2})
    pq.write_table(table, tmp_path / "one.parquet", row_group_size=250)
    source = ooc.inspect_parquet(tmp_path, block_rows=500)
    assert len(source.blocks) == 8
    train, holdout = source.split(0.1, seed=3)
    assert holdout.n_rows == 400 and train.n_rows == 3_600
    held = np.concatenate([b for b in dask_arrays(holdout)[0].compute()])
    assert len(np.unique(held)) == 400


@pytest.mark.parametrize("fraction", [0, 1, 0.0, 1.0, -0.2, 1.5, math.nan, "0.2", None, True])
def test_fraction_outside_the_open_interval_is_rejected(source, fraction):
    expected = f"got {fraction!r}. Pass e.g. fraction=0.2."
    message = "fraction must be a number strictly between 0 and 1.*" + re.escape(expected)
    with pytest.raises(ValueError, match=message):
        source.split(fraction)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_bad_seed_is_rejected(source, seed):
    with pytest.raises(ValueError, match=re.escape(f"seed must be an int >= 0, got {seed!r}")):
        source.split(0.2, seed=seed)


def test_a_single_row_cannot_be_split(tmp_path):
    ooc.generate_dataset(tmp_path, n_rows=1, n_features=2, chunk_rows=100)
    one = ooc.inspect_parquet(tmp_path)
    message = re.escape(f"at least 2 rows to hold some out; {tmp_path}")
    with pytest.raises(ValueError, match=message):
        one.split(0.2)
