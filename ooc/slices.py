"""Reading slices of a row group larger than a block, in bounded memory.

Parquet has no row index inside a row group: rows ``start:stop`` of it can only be found by
decoding from its start. A slice is therefore streamed in batches (memory: a batch and the
reader's buffers, never the row group), and the reader is kept when the slice is done, so
the next slice continues where it stopped instead of decoding everything again. Reads of
the slices of one row group in order (a fit, a prediction task, a statistics task) decode
the row group once in all.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["read_slice"]

BATCH_ROWS = 65_536
# The reader's buffer per column: what a kept reader holds besides its current pages.
_BUFFER_BYTES = 1 << 18


class _Readers:
    """Readers of row groups, each positioned at a row, shared by the threads of a process.

    A slice takes the free reader of its row group that is furthest along but not past its
    start. If none is free but one in use will stop at or before that start (the previous
    slice, read by another prefetch thread), it waits for that one rather than decode the
    row group from its start. Only a cache: a slice read without a reader gives the same
    rows.
    """

    def __init__(self, size: int = 2, wait_seconds: float = 30.0):
        self.size = size
        self.wait_seconds = wait_seconds
        self.changed = threading.Condition()
        self.free: OrderedDict = OrderedDict()  # (key, position) -> (batches, leftover)
        self.busy: dict = {}  # key -> positions the readers in use will stop at

    def _take(self, key, start: int):
        with self.changed:
            deadline = None
            while True:
                behind = [pos for (k, pos) in self.free if k == key and pos <= start]
                if behind:
                    position = max(behind)
                    return position, *self.free.pop((key, position))
                ahead = [stop for stop in self.busy.get(key, ()) if stop <= start]
                if not ahead:
                    return 0, None, None
                now = time.monotonic()
                deadline = deadline or now + self.wait_seconds
                if now >= deadline:
                    return 0, None, None
                self.changed.wait(deadline - now)

    def _give_back(self, key, stop: int, batches, left) -> None:
        with self.changed:
            self.busy[key].remove(stop)
            if not self.busy[key]:
                del self.busy[key]
            if batches is not None:
                self.free[(key, stop)] = (batches, left)
                while len(self.free) > self.size:
                    self.free.popitem(last=False)
            self.changed.notify_all()

    def read(self, path: Path, group: int, columns: list[str], start: int, stop: int):
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size, group, tuple(columns))
        position, batches, left = self._take(key, start)
        with self.changed:
            self.busy.setdefault(key, []).append(stop)
        kept = None
        try:
            if batches is None:
                reader = pq.ParquetFile(path, buffer_size=_BUFFER_BYTES, pre_buffer=False)
                batches = reader.iter_batches(
                    batch_size=BATCH_ROWS, row_groups=[group], columns=columns
                )
            parts = []
            while position < stop:
                batch = left if left is not None else next(batches)
                left = None
                end = position + batch.num_rows
                if end > start:
                    lo, hi = max(start - position, 0), min(stop, end) - position
                    parts.append(batch.slice(lo, hi - lo))
                    if end > stop:
                        left = batch.slice(hi)
                position = min(end, stop)
            kept = batches
        finally:
            self._give_back(key, stop, kept, left)
        return pa.Table.from_batches(parts)


_READERS = _Readers()


def read_slice(path: Path, group: int, columns: list[str], start: int, stop: int) -> pa.Table:
    """Rows ``start:stop`` of row group ``group`` of ``path``, columns ``columns``.

    Raises ``StopIteration`` if the row group has fewer rows than ``stop``, and Arrow's
    errors for an unreadable file.
    """
    return _READERS.read(path, group, columns, start, stop)
