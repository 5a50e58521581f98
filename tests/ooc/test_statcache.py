"""The statistics cache: a refit on unchanged files reads none of them; new and changed
files are read; the result always equals a fit without the cache; two runs at once share
the cache safely."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_array_equal

import ooc

ROWS = 2_000


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data"
    ooc.generate_dataset(path, n_rows=6 * ROWS, n_features=4, chunk_rows=ROWS, seed=3)
    return path


def _fit(path, cache, cls=ooc.StandardScaler):
    X, _ = ooc.read_parquet(path, block_rows=ROWS)
    return cls(stats_cache=str(cache)).fit(X)


def _same(a, b, attrs=("mean_", "var_", "scale_", "n_samples_seen_")):
    for attr in attrs:
        assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)


@pytest.mark.parametrize(
    ("cls", "attrs"),
    [
        (ooc.StandardScaler, ("mean_", "var_", "scale_", "n_samples_seen_")),
        (ooc.MinMaxScaler, ("data_min_", "data_max_", "scale_", "min_", "n_samples_seen_")),
    ],
)
def test_a_refit_reads_nothing_and_equals_a_fit_without_cache(data, tmp_path, cls, attrs):
    cache = tmp_path / "cache"
    first = _fit(data, cache, cls)
    assert first.n_pieces_read_ == 6
    again = _fit(data, cache, cls)
    assert again.n_pieces_read_ == 0
    X, _ = ooc.read_parquet(data, block_rows=ROWS)
    _same(again, cls().fit(X), attrs)


def test_a_grown_dataset_reads_only_the_new_file(data, tmp_path):
    cache = tmp_path / "cache"
    _fit(data, cache)
    ooc.write_partition(data, ooc.DatasetSpec(7 * ROWS, 4, ROWS, seed=3), 6)
    grown = _fit(data, cache)
    assert grown.n_pieces_read_ == 1
    X, _ = ooc.read_parquet(data, block_rows=ROWS)
    _same(grown, ooc.StandardScaler().fit(X))


def test_a_changed_file_is_read_again(data, tmp_path):
    cache = tmp_path / "cache"
    _fit(data, cache)
    changed = data / "part-00002.parquet"
    time.sleep(0.01)  # a new modification time even on coarse clocks
    table = pq.read_table(changed)
    pq.write_table(table.set_column(0, "x0", pa.array(table["x0"].to_numpy() * 2)), changed)
    refit = _fit(data, cache)
    assert refit.n_pieces_read_ == 1
    X, _ = ooc.read_parquet(data, block_rows=ROWS)
    _same(refit, ooc.StandardScaler().fit(X))


def test_a_removed_file_leaves_its_statistics_out(data, tmp_path):
    cache = tmp_path / "cache"
    _fit(data, cache)
    (data / "part-00004.parquet").unlink()
    smaller = _fit(data, cache)
    assert smaller.n_pieces_read_ == 0
    X, _ = ooc.read_parquet(data, block_rows=ROWS)
    _same(smaller, ooc.StandardScaler().fit(X))
    assert smaller.n_samples_seen_ == 5 * ROWS


FIT = textwrap.dedent(
    """
    import sys, ooc
    X, _ = ooc.read_parquet(sys.argv[1], block_rows=int(sys.argv[3]))
    s = ooc.StandardScaler(stats_cache=sys.argv[2]).fit(X)
    print(repr(s.mean_.tolist()), repr(s.var_.tolist()))
    """
)


def test_two_runs_at_once_share_the_cache(data, tmp_path):
    cache = tmp_path / "cache"
    args = [sys.executable, "-c", FIT, str(data), str(cache), str(ROWS)]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    X, _ = ooc.read_parquet(data, block_rows=ROWS)
    fresh = ooc.StandardScaler().fit(X)
    expected = f"{fresh.mean_.tolist()!r} {fresh.var_.tolist()!r}\n"
    assert outputs == [expected, expected]
    assert _fit(data, cache).n_pieces_read_ == 0  # both wrote complete entries
    assert not [p for p in cache.rglob("*") if p.name.startswith(".")]  # no temporary file
    assert np.isclose(fresh.mean_, _fit(data, cache).mean_).all()


def _labelled(path, y, row_group_size):
    path.mkdir()
    x = np.arange(len(y), dtype=np.float64)
    pq.write_table(pa.table({"x": x, "y": y}), path / "part.parquet", row_group_size=row_group_size)
    return path


@pytest.mark.parametrize(
    ("y", "classes", "read"),
    [
        # binary int, two row groups: both from the footers, no read
        (pa.array([0, 1] * 50, pa.int64()), [0, 1], 0),
        # a row group of one class each: from the footers
        (pa.array([3] * 50 + [4] * 50, pa.int32()), [3, 4], 0),
        (pa.array([True, False] * 50), [False, True], 0),
        # three classes 0..2 in one row group: min and max do not tell the middle one
        (pa.array([0, 2] * 25 + [0, 1, 2, 2] * 12 + [1, 1], pa.int64()), [0, 1, 2], 2),
        # float labels: their statistics are not trusted for classes
        (pa.array([0.0, 1.0] * 50), [0.0, 1.0], 2),
    ],
)
def test_classes_are_exact_and_read_only_where_the_footers_cannot_tell(tmp_path, y, classes, read):
    from ooc.statcache import target_classes

    source = ooc.inspect_parquet(_labelled(tmp_path / "d", y, 50), target="y")
    found, pieces_read = target_classes(source)
    assert found == classes
    assert pieces_read == read
    assert found == np.unique(y.to_numpy(zero_copy_only=False)).tolist()


def test_a_row_group_cut_into_blocks_is_read_for_its_classes(tmp_path):
    """Each block holds a slice of the row group; the group's min and max need not be in
    a slice, so the slices are read (here the first slice has only class 0)."""
    from ooc.statcache import target_classes

    y = pa.array([0] * 60 + [1] * 40, pa.int64())
    source = ooc.inspect_parquet(_labelled(tmp_path / "d", y, 100), target="y", block_rows=50)
    assert target_classes(source) == ([0, 1], 2)


def test_a_missing_label_is_refused_naming_file_and_column(tmp_path):
    from ooc.statcache import target_classes

    y = pa.array([0, 1, None, 1], pa.int64())
    source = ooc.inspect_parquet(_labelled(tmp_path / "d", y, 4), target="y")
    with pytest.raises(ValueError, match=r"part\.parquet.*'y'.*missing"):
        target_classes(source)
