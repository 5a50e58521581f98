"""Any parquet layout streams in blocks bounded by rows: one file of many row groups, a row
group larger than the bound, files of mixed sizes with an empty one, a hive tree.

For each layout the fit equals a manual ``partial_fit`` loop over the same row blocks read
with plain pyarrow, prediction gives one output per input, and memory is bounded by the
block (measured in a subprocess), not by the file.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline

import ooc

from .support import PEAK_RSS

ROWS, FEATURES, BOUND = 40_000, 4, 5_000


def _table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((FEATURES, rows)) * [[1], [10], [100], [0.1]] + [[5], [-3], [40], [0]]
    y = (x[0] + x[1] / 10 + rng.standard_normal(rows) > 5).astype(np.int64)
    return pa.table({**{f"x{j}": x[j] for j in range(FEATURES)}, "y": y})


def _many_row_groups(root):
    pq.write_table(_table(ROWS, 0), root / "one.parquet", row_group_size=2_500)


def _one_big_row_group(root):
    pq.write_table(_table(ROWS, 1), root / "one.parquet", row_group_size=ROWS)


def _mixed_sizes(root):
    sizes = {
        "a": (100, 100), "b": (7_000, 3_000), "c": (2_500, 2_500), "d": (0, 1),
        "e": (30_400, 12_000),
    }  # fmt: skip
    for seed, (name, (rows, group)) in enumerate(sizes.items()):
        pq.write_table(_table(rows, seed), root / f"{name}.parquet", row_group_size=group)


def _hive_tree(root):
    for seed, (date, region) in enumerate(
        [("2026-11-28", 1), ("2026-11-29", 1), ("2026-11-29", 2), ("2026-11-30", 2)]
    ):
        folder = root / f"date={date}" / f"region={region}"
        folder.mkdir(parents=True)
        pq.write_table(_table(ROWS // 4, seed), folder / "part-0.parquet", row_group_size=3_000)


LAYOUTS = {
    "many-row-groups": _many_row_groups,
    "one-big-row-group": _one_big_row_group,
    "mixed-sizes-and-empty": _mixed_sizes,
    "hive": _hive_tree,
}


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def layout(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    LAYOUTS[request.param](root)
    return root


def _manual_blocks(source):
    """The blocks of ``source``'s plan read with plain pyarrow, one piece at a time."""
    for block in source.blocks:
        parts = []
        for piece in block:
            table = pq.ParquetFile(source.files[piece.file]).read_row_group(piece.row_group)
            parts.append(table.slice(piece.start, piece.rows))
        table = pa.concat_tables(parts)
        X = np.column_stack([table[c].to_numpy() for c in source.features])
        yield X, table["y"].to_numpy()


def test_blocks_are_bounded_and_cover_every_row(layout):
    features = [f"x{j}" for j in range(FEATURES)]
    source = ooc.inspect_parquet(layout, features=features, block_rows=BOUND)
    assert source.n_rows == sum(pq.read_metadata(f).num_rows for f in source.files)
    assert all(0 < rows <= BOUND for rows in source.rows)
    # Nothing is cut smaller than it must be: two neighbours never fit in one block,
    # unless a file boundary or a cut row group separates them.
    X, y = ooc.read_parquet(layout, features=list(source.features), block_rows=BOUND)
    assert X.chunks[0] == source.rows
    expected = np.concatenate([Xb for Xb, _ in _manual_blocks(source)])
    assert_array_equal(X.compute(), expected)


def test_fit_equals_a_manual_loop_over_the_same_blocks(layout):
    features = [f"x{j}" for j in range(FEATURES)]
    source = ooc.inspect_parquet(layout, features=features, block_rows=BOUND)
    X, y = ooc.read_parquet(layout, features=features, block_rows=BOUND)
    order = []
    pipe = make_pipeline(
        ooc.StandardScaler(),
        ooc.Incremental(
            SGDClassifier(random_state=0),
            shuffle_blocks=True,
            random_state=3,
            block_callback=lambda report: order.append(report.block),
        ),
    )
    pipe.fit(X, y, incremental__classes=[0, 1])

    blocks = list(_manual_blocks(source))
    everything = np.concatenate([b for b, _ in blocks])
    assert_allclose(pipe[0].mean_, everything.mean(axis=0), rtol=1e-12)
    assert sorted(order) == list(range(len(blocks))) and len(blocks) > 1
    manual = SGDClassifier(random_state=0)
    for index in order:
        Xb, yb = blocks[index]
        manual.partial_fit(pipe[0].transform(Xb), yb, classes=[0, 1])
    assert_array_equal(pipe[-1].coef_, manual.coef_)
    assert_array_equal(pipe[-1].intercept_, manual.intercept_)


def test_prediction_gives_one_output_per_input_with_a_row_group_per_block(layout, tmp_path):
    features = [f"x{j}" for j in range(FEATURES)]
    X, y = ooc.read_parquet(layout, features=features, block_rows=BOUND)
    pipe = make_pipeline(ooc.StandardScaler(), ooc.Incremental(SGDClassifier(random_state=0)))
    pipe.fit(X, y, incremental__classes=[0, 1])
    jobs = ooc.predict_parquet(pipe, layout, tmp_path / "out", features=features, block_rows=BOUND)
    inputs = ooc.list_parquet_files(layout)
    assert [job.dest.relative_to(tmp_path / "out") for job in jobs] == [
        f.relative_to(layout) for f in inputs
    ]
    for job in jobs:
        meta = pq.read_metadata(job.dest)
        assert meta.num_rows == pq.read_metadata(job.source.files[0]).num_rows
        assert meta.num_row_groups == max(job.n_blocks, 1)
        assert pq.read_schema(job.dest).field("prediction").type == pa.int64()
    got = np.concatenate([pq.read_table(j.dest)["prediction"].to_numpy() for j in jobs])
    assert_array_equal(got, pipe.predict(X.compute()))
    assert not [p for p in (tmp_path / "out").rglob(".*")]  # no parts or temporary files left


MEMORY = PEAK_RSS + textwrap.dedent(
    """
    import json, sys
    import pyarrow as pa
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    import ooc

    path, bound = sys.argv[1], int(sys.argv[2])
    X, y = ooc.read_parquet(path, block_rows=bound)
    pipe = make_pipeline(ooc.StandardScaler(), ooc.Incremental(SGDClassifier(random_state=0)))
    pipe.fit(X, y, incremental__classes=[0, 1])
    ooc.predict_parquet(pipe, path, sys.argv[3], block_rows=bound)
    print(json.dumps({
        "arrow_peak": pa.default_memory_pool().max_memory(),
        "rss_peak": peak_rss(),
    }))
    """
)


def _peaks(path, out, bound) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY, str(path), str(bound), str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def big_layouts(tmp_path_factory):
    """600k and 1.2M rows x 4 features, each as files of 50k rows, one file of 50k-row
    groups, and one file of a single row group."""
    root = tmp_path_factory.mktemp("big")
    for n_parts in (12, 24):
        table = pa.concat_tables([_table(50_000, seed) for seed in range(n_parts)])
        folder = root / str(n_parts)
        (folder / "files").mkdir(parents=True)
        for i in range(n_parts):
            pq.write_table(table.slice(i * 50_000, 50_000), folder / "files" / f"p{i:02d}.parquet")
        pq.write_table(table, folder / "groups.parquet", row_group_size=50_000)
        pq.write_table(table, folder / "single.parquet", row_group_size=len(table))
    return root


def test_memory_is_bounded_by_the_block_not_by_the_file(big_layouts, tmp_path):
    """Arrow's own high-water mark over a fit and a prediction (blocks of 50 000 rows):
    twice the rows in the same layout and the peak does not grow, whatever the layout;
    one file of one row group costs only the readers that stream through it on top."""
    peaks = {
        (n, name): _peaks(big_layouts / n / name, tmp_path / n / name, 50_000)["arrow_peak"]
        for n in ("12", "24")
        for name in ("files", "groups.parquet", "single.parquet")
    }
    for name in ("files", "groups.parquet"):
        small, large = peaks["12", name], peaks["24", name]
        assert large <= 1.1 * small + 2**20, (name, small, large)
    files = peaks["24", "files"]
    assert peaks["24", "groups.parquet"] <= 1.1 * files + 2**20, peaks
    # One row group streams through readers that each hold their buffers (~3 MB a
    # column here); how many exist at once depends on the threads' timing, at most 4
    # (two prefetching, two kept), whatever the rows.
    for n in ("12", "24"):
        assert peaks[n, "single.parquet"] <= files + 4 * 5 * 3 * 2**20, peaks


def test_hive_partition_columns_are_columns_and_filters_choose_files(tmp_path):
    _hive_tree(tmp_path)
    (tmp_path / "README.txt").write_text("not data")
    (tmp_path / "date=2026-11-30" / "_SUCCESS").write_text("")
    with pytest.warns(UserWarning, match=r"Skipped 1 file\(s\) .* not parquet: README.txt"):
        source = ooc.inspect_parquet(tmp_path, features=["x0", "region"])
    assert source.partition_names == ("date", "region")
    assert source.schema.field("region").type == pa.int64()
    assert source.schema.field("date").type == pa.string()
    X, _ = ooc.read_parquet(tmp_path, features=["x0", "region"])
    assert_array_equal(X.compute()[:, 1], np.repeat([1, 1, 2, 2], ROWS // 4))

    with pytest.warns(UserWarning):
        late, _ = ooc.read_parquet(
            tmp_path, features=["x0"], filters=[("date", ">=", "2026-11-29"), ("region", "==", 2)]
        )
    assert late.shape[0] == ROWS // 2
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="'x0' is not a partition"):
        ooc.read_parquet(tmp_path, filters=[("x0", ">", 1)])


def test_partition_keys_must_agree(tmp_path):
    (tmp_path / "date=1").mkdir()
    pq.write_table(_table(10, 0), tmp_path / "date=1" / "a.parquet")
    pq.write_table(_table(10, 1), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match=r"Partition directories differ: .*b.parquet is under no"):
        ooc.inspect_parquet(tmp_path)


def test_block_rows_must_be_a_positive_int(tmp_path):
    pq.write_table(_table(10, 0), tmp_path / "a.parquet")
    for bad in (0, -5, 2.5, True, "100"):
        with pytest.raises(ValueError, match=f"block_rows must be an int >= 1.*got {bad!r}"):
            ooc.read_parquet(tmp_path, block_rows=bad)
