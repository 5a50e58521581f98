"""Peak memory of a streaming fit depends on the block size, not on the number of rows.

Each fit runs in a fresh subprocess that reports its peak RSS. A control run that loads
the data into memory first shows the measurement does see data-sized growth.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import ooc

from .support import PEAK_RSS

BLOCK_ROWS = 50_000  # 50 000 rows x 20 float64 features = 8 MB per block
MB = 1024 * 1024

SCRIPT = PEAK_RSS + textwrap.dedent(
    """
    import sys
    import numpy as np
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    import ooc

    path, mode, block_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    X, y = ooc.read_parquet(path, block_rows=block_rows)
    if mode == "materialize":
        X, y = X.compute(), y.compute()
    pipe = make_pipeline(ooc.StandardScaler(), ooc.Incremental(SGDClassifier(random_state=0)))
    pipe.fit(X, y, incremental__classes=[0, 1])
    predicted = pipe.predict(X)
    n = int(predicted.shape[0]) if mode == "materialize" else int(predicted.sum().compute() >= 0)
    print(peak_rss())
    """
)


def _peak_rss(path, mode="stream") -> int:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), mode, str(BLOCK_ROWS)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return int(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    sizes = {}
    for n_blocks in (8, 32):
        path = tmp_path_factory.mktemp(f"mem{n_blocks}")
        ooc.generate_dataset(path, n_rows=n_blocks * BLOCK_ROWS, chunk_rows=BLOCK_ROWS, seed=4)
        sizes[n_blocks] = path
    return sizes


def test_peak_memory_does_not_grow_with_rows(datasets):
    small, large = _peak_rss(datasets[8]), _peak_rss(datasets[32])
    data_growth = 24 * BLOCK_ROWS * 21 * 8  # the extra 24 blocks, features and target
    # 4x the rows, and the peak grows by far less than the extra data (192 MB).
    assert large - small < 0.2 * data_growth, (small / MB, large / MB)


def test_control_materializing_the_data_does_grow(datasets):
    small, large = _peak_rss(datasets[8], "materialize"), _peak_rss(datasets[32], "materialize")
    data_growth = 24 * BLOCK_ROWS * 21 * 8
    # Far above the streaming bound (0.2x), with room for the small run's peak to vary
    # with the threads' timing on a loaded machine (seen: 153 MB of growth for 201 MB).
    assert large - small > 0.5 * data_growth, (small / MB, large / MB)
