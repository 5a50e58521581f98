"""Finding the parquet files of a dataset: nested and hive-partitioned directories.

A dataset is a parquet file or a directory searched recursively. Hidden and
underscore-prefixed names (``.part.crc``, ``_SUCCESS``, ``_temporary/``, this project's
temporary files) are skipped silently; other files that are not parquet are skipped with
a warning. Directories named ``key=value`` (hive partitioning, as Spark, pyarrow and dask
write them) give every file below them a column ``key`` with that value, and ``filters``
on those columns choose files before any footer is read.
"""

from __future__ import annotations

import math
import operator
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa

__all__ = ["DatasetFiles", "find_files", "list_parquet_files"]

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_MAGIC = b"PAR1"
_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
_OPS = {
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _natural_key(path: Path):
    """Sort ``part-2`` before ``part-10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _looks_like_parquet(path: Path) -> bool:
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            return fh.read(4) == _MAGIC
    except OSError:
        return False


@dataclass(frozen=True)
class DatasetFiles:
    """The parquet files of a dataset and their hive partition values.

    Attributes
    ----------
    root : Path
        The directory the files were found under (a file's parent for a single file).
    files : tuple of Path
        In natural sort order (``part-2`` before ``part-10``).
    partitions : tuple of tuple
        For each file, its partition values in ``partition_names`` order (None for
        ``__HIVE_DEFAULT_PARTITION__``).
    partition_names : tuple of str
    partition_types : tuple of pyarrow.DataType
        int64 when every value is an integer, float64 when every value is a number,
        else string.
    """

    root: Path
    files: tuple[Path, ...]
    partitions: tuple[tuple, ...]
    partition_names: tuple[str, ...]
    partition_types: tuple[pa.DataType, ...]

    def partition_values(self, index: int) -> dict:
        """``{name: value}`` of file ``index``."""
        return dict(zip(self.partition_names, self.partitions[index], strict=True))


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """(parquet files, other files) under ``root``, hidden and ``_`` names skipped."""
    found, others = [], []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in names:
            if name.startswith((".", "_")):
                continue
            path = Path(folder) / name
            (found if _looks_like_parquet(path) else others).append(path)
    return found, others


def _partition_pairs(root: Path, file: Path) -> list[tuple[str, str]]:
    pairs = []
    for part in file.relative_to(root).parts[:-1]:
        key, sep, value = part.partition("=")
        if sep and key:
            pairs.append((unquote(key), unquote(value)))
    return pairs


def _infer_type(values: list[str | None]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(re.fullmatch(r"[+-]?\d+", v) for v in present):
        return pa.int64()
    try:
        if present and all(math.isfinite(float(v)) for v in present):
            return pa.float64()
    except ValueError:
        pass
    return pa.string()


def _convert(value: str | None, kind: pa.DataType):
    if value is None:
        return None
    if pa.types.is_int64(kind):
        return int(value)
    if pa.types.is_float64(kind):
        return float(value)
    return value


def _partitions(root: Path, files: list[Path]):
    pairs = [_partition_pairs(root, f) for f in files]
    names = tuple(k for k, _ in pairs[0]) if pairs else ()
    for file, found in zip(files, pairs, strict=True):
        keys = tuple(k for k, _ in found)
        if keys != names:
            raise ValueError(
                f"Partition directories differ: {file} is under {list(keys) or 'none'}, but "
                f"{files[0]} is under {list(names) or 'none'}. Every file of a hive-"
                "partitioned dataset must sit under the same key=value levels."
            )
    raw = [[None if v == _NULL_PARTITION else v for _, v in found] for found in pairs]
    types = tuple(_infer_type([row[j] for row in raw]) for j in range(len(names)))
    values = tuple(tuple(_convert(v, t) for v, t in zip(row, types, strict=True)) for row in raw)
    return names, types, values


def _check_filters(filters, names: tuple[str, ...]) -> list[list[tuple]]:
    """Filters in disjunctive normal form: a list of AND-lists of (column, op, value)."""
    if not filters:
        return []
    groups = filters if isinstance(filters[0], list) else [filters]
    for group in groups:
        for item in group:
            if not (isinstance(item, tuple | list) and len(item) == 3):
                raise ValueError(
                    f"filters: each condition is (column, op, value), got {item!r}. "
                    "Example: filters=[('date', '>=', '2026-11-01')]."
                )
            column, op, _ = item
            if column not in names:
                raise ValueError(
                    f"filters: {column!r} is not a partition column; filters choose files by "
                    f"their key=value directories, and this dataset's partition columns are "
                    f"{list(names) or 'none'}."
                )
            if op not in (*_OPS, "in", "not in"):
                raise ValueError(
                    f"filters: unknown operator {op!r} in {item!r}; use one of "
                    f"{[*_OPS, 'in', 'not in']}."
                )
    return groups


def _matches(values: dict, groups, types: dict) -> bool:
    def holds(column, op, wanted) -> bool:
        value, kind = values[column], types[column]
        if op in ("in", "not in"):
            inside = value in {_convert(str(w), kind) for w in wanted}
            return inside if op == "in" else not inside
        if value is None:
            return False
        return _OPS[op](value, _convert(str(wanted), kind))

    return any(all(holds(*item) for item in group) for group in groups)


def find_files(path: str | os.PathLike, filters=None) -> DatasetFiles:
    """The parquet files under ``path`` and their partition values.

    Parameters
    ----------
    path : path-like
        A parquet file, or a directory searched recursively.
    filters : list of (column, op, value), or list of such lists, optional
        Conditions on partition columns; a list is an AND, a list of lists an OR of ANDs
        (pyarrow's convention). Operators: ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``,
        ``in``, ``not in``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist, or holds no parquet file (after filtering).
    ValueError
        Files under different partition keys, or a filter on a column that is not a
        partition column.

    Examples
    --------
    >>> found = find_files("data/events", filters=[("date", ">=", "2026-11-01")])  # doctest: +SKIP
    >>> found.partition_names  # doctest: +SKIP
    ('date',)
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"Data path {root} does not exist.")
    if root.is_file():
        return DatasetFiles(root.parent, (root,), ((),), (), ())
    files, others = _walk(root)
    if others:
        shown = ", ".join(str(p.relative_to(root)) for p in others[:3])
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        warnings.warn(
            f"Skipped {len(others)} file(s) under {root} that are not parquet: {shown}{more}.",
            UserWarning,
            stacklevel=3,
        )
    if not files:
        csv = [p for p in others if p.name.lower().endswith((".csv", ".csv.gz"))]
        hint = f" To read CSV files, convert them first: ooc convert {root} --out <dir>."
        hint = hint if csv else ""
        raise FileNotFoundError(f"No parquet files found under {root}.{hint}")
    files.sort(key=_natural_key)
    names, types, values = _partitions(root, files)
    groups = _check_filters(filters, names)
    if groups:
        kinds = dict(zip(names, types, strict=True))
        keep = [
            i
            for i in range(len(files))
            if _matches(dict(zip(names, values[i], strict=True)), groups, kinds)
        ]
        if not keep:
            raise FileNotFoundError(f"No parquet file under {root} matches filters={filters!r}.")
        files, values = [files[i] for i in keep], tuple(values[i] for i in keep)
    return DatasetFiles(root, tuple(files), values, names, types)


def list_parquet_files(path: str | os.PathLike) -> list[Path]:
    """Parquet files under ``path`` (a file or a directory, searched recursively).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or holds no parquet file.
    """
    return list(find_files(path).files)
