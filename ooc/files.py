"""Writing files so that a file under its final name is always complete.

Every file this project writes goes through :func:`atomic_write`. Where the file system
supports it (Linux ``O_TMPFILE``: ext4, xfs, btrfs, tmpfs), the data is written into an
anonymous file that has no name until it is complete, so a process killed mid-write
(``kill -9`` included) leaves nothing behind. Elsewhere a hidden temporary name beside the
target is used; :func:`remove_leftovers` clears the ones a killed writer left.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "atomic_path",
    "atomic_write",
    "is_temporary",
    "parquet_has_rows",
    "remove_leftovers",
    "temporary_name",
]

# .<final name>.<32 hex digits>.tmp: the only names this module creates beside a target.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{32}\.tmp")
_AT_FDCWD, _AT_SYMLINK_FOLLOW = -100, 0x400


def temporary_name(path: Path) -> Path:
    """A hidden, unique name beside ``path`` for writing it."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def is_temporary(name: str, of: str | None = None) -> bool:
    """Whether ``name`` is a temporary name of this module (of the final name ``of``)."""
    match = _TEMPORARY.fullmatch(name)
    return match is not None and (of is None or match["name"] == of)


def remove_leftovers(targets: Iterable[Path]) -> list[Path]:
    """Delete the temporary files a killed writer left beside ``targets``; return them.

    Only this module's temporary names of those exact targets are removed, so files of
    other programs, and writers of other targets, are never touched.
    """
    by_folder: dict[Path, set[str]] = {}
    for target in targets:
        by_folder.setdefault(Path(target).parent, set()).add(Path(target).name)
    removed = []
    for folder, names in by_folder.items():
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):
            match = _TEMPORARY.fullmatch(path.name)
            if match and match["name"] in names:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _anonymous_file(folder: Path) -> int | None:
    """A nameless file in ``folder`` (Linux ``O_TMPFILE``), or None where unsupported."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, flag | os.O_WRONLY, 0o666)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None
        raise


def _link(fd: int, name: Path) -> None:
    """Give the anonymous file ``fd`` the name ``name`` (``linkat`` through /proc)."""
    libc = ctypes.CDLL(None, use_errno=True)
    source = f"/proc/self/fd/{fd}".encode()
    if libc.linkat(_AT_FDCWD, source, _AT_FDCWD, os.fsencode(name), _AT_SYMLINK_FOLLOW):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(name))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A path to write ``path``'s content to; it becomes ``path`` when the block ends.

    If the block raises, ``path`` is left as it was (the old file, or none).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("complete")
    >>> target.read_text()
    'complete'
    """
    path = Path(path)
    fd = _anonymous_file(path.parent)
    if fd is None:
        tmp = temporary_name(path)
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return
    try:
        yield Path(f"/proc/self/fd/{fd}")
        # linkat cannot replace an existing file: link under a temporary name, then
        # rename over the target. Only a kill between the two leaves a named file.
        tmp = temporary_name(path)
        _link(fd, tmp)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary path, then publish it as ``path`` atomically.

    A crash leaves either the old file or none, never a partial one.
    """
    with atomic_path(path) as tmp:
        write(tmp)


def parquet_has_rows(path: Path, rows: int) -> bool:
    """True if ``path`` is a readable parquet file with exactly ``rows`` rows."""
    try:
        return pq.read_metadata(path).num_rows == rows
    except (OSError, pa.ArrowException):
        return False
