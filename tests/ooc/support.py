"""Helpers shared by the library's tests."""

from __future__ import annotations

import textwrap

import pyarrow.parquet as pq

import ooc


def read_by_file(path, **kwargs):
    """``ooc.read_parquet`` with one block per file, as the session datasets are written
    (files of equal rows, one row group each): the tests that compare with a loop over
    files, or need several blocks, read them so."""
    rows = max(pq.read_metadata(f).num_rows for f in ooc.list_parquet_files(path))
    return ooc.read_parquet(path, block_rows=rows, **kwargs)


# For a script run in a child process: its own peak resident memory, from VmHWM.
# Not ru_maxrss, which a child started by fork and exec inherits from the pytest process
# (large by the time the suite reaches the memory tests).
PEAK_RSS = textwrap.dedent(
    """
    def peak_rss():
        with open("/proc/self/status") as status:
            return next(int(ln.split()[1]) * 1024 for ln in status if ln.startswith("VmHWM"))
    """
)
