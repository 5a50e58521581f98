"""Writing files so that a file under its final name is always complete."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["atomic_write", "parquet_has_rows"]


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a hidden temporary name beside ``path``, then rename it.

    A crash leaves either the old file or none, never a partial one; the temporary file
    is removed on failure.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def parquet_has_rows(path: Path, rows: int) -> bool:
    """True if ``path`` is a readable parquet file with exactly ``rows`` rows."""
    try:
        return pq.read_metadata(path).num_rows == rows
    except (OSError, pa.ArrowException):
        return False
