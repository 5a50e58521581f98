"""Read a directory of parquet files as dask arrays, one block per file.

Chunk sizes come from the parquet footers, so building the arrays reads no data. Every
file is checked against the first one's schema before any block is read, and every
block is checked for NaN/inf as it is decoded, naming the file, column and row.
"""

from __future__ import annotations

import numbers
import os
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import dask.array as da
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["ParquetLayout", "inspect_parquet", "list_parquet_files", "read_parquet"]


def _natural_key(path: Path):
    """Sort ``part-2`` before ``part-10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def list_parquet_files(path: str | os.PathLike) -> list[Path]:
    """Parquet files under ``path`` (a file or a directory, searched recursively).

    Hidden and underscore-prefixed files (temporary files, ``_metadata``) are skipped.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or holds no parquet file.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"Data path {root} does not exist.")
    if root.is_file():
        return [root]
    files = [
        p
        for p in root.rglob("*.parquet")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    ]
    if not files:
        raise FileNotFoundError(f"No parquet files (*.parquet) found under {root}.")
    return sorted(files, key=_natural_key)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


# Seeds the draw of ParquetLayout.split apart from other draws made with the same seed.
_SPLIT_STREAM = 3


@dataclass(frozen=True)
class ParquetLayout:
    """What the footers of a parquet directory say: files, rows per file and columns.

    Attributes
    ----------
    files : tuple of Path
        The files, in natural sort order; file ``i`` is block ``i``.
    rows : tuple of int
        Row count of each file.
    features : tuple of str
        Feature columns, in order.
    target : str or None
        Target column.
    dtype : numpy.dtype
        Dtype of the feature array (the common type of the feature columns).
    target_dtype : numpy.dtype or None
        Dtype of the target array.
    """

    files: tuple[Path, ...]
    rows: tuple[int, ...]
    features: tuple[str, ...]
    target: str | None
    dtype: np.dtype
    target_dtype: np.dtype | None

    @property
    def n_rows(self) -> int:
        return sum(self.rows)

    def split(self, fraction: float, seed: int = 0) -> tuple[ParquetLayout, ParquetLayout]:
        """Split into a training and a holdout layout by whole files; no data is read.

        ``max(1, round(fraction * n_files))`` files, drawn at random from ``seed``,
        form the holdout (at most ``n_files - 1``, so training keeps at least one file);
        the others form the training part. Both keep the columns and dtypes of this
        layout and list their files in the original order, so :func:`dask_arrays`
        turns either into ``(X, y)`` with one block per file.

        Parameters
        ----------
        fraction : float
            Share of the files to hold out, strictly between 0 and 1.
        seed : int, default 0
            Seed of the draw; the same seed and files give the same split.

        Returns
        -------
        train : ParquetLayout
        holdout : ParquetLayout
            Disjoint; together they hold every file of this layout.

        Raises
        ------
        ValueError
            If ``fraction`` is not in (0, 1), ``seed`` is not a non-negative int, or
            the layout has fewer than 2 files.

        Examples
        --------
        >>> layout = inspect_parquet("data/clf", target="y")  # doctest: +SKIP
        >>> train, holdout = layout.split(0.2, seed=0)  # doctest: +SKIP
        >>> len(train.files), len(holdout.files)  # doctest: +SKIP
        (8, 2)
        >>> X_test, y_test = dask_arrays(holdout)  # doctest: +SKIP
        """
        real = isinstance(fraction, numbers.Real) and not isinstance(fraction, bool)
        if not (real and 0 < fraction < 1):
            raise ValueError(
                f"split: fraction must be a number strictly between 0 and 1 (the share of "
                f"files to hold out), got {fraction!r}. Pass e.g. fraction=0.2."
            )
        if not (isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0):
            raise ValueError(f"split: seed must be an int >= 0, got {seed!r}.")
        n_files = len(self.files)
        if n_files < 2:
            raise ValueError(
                f"split holds out whole files, so it needs at least 2 parquet files; this "
                f"layout has {n_files} ({', '.join(map(str, self.files))}). Write the data "
                "as more, smaller files (e.g. a smaller chunk_rows in generate_dataset)."
            )
        n_holdout = min(n_files - 1, max(1, round(fraction * n_files)))
        rng = np.random.default_rng([int(seed), _SPLIT_STREAM])
        held = set(rng.choice(n_files, size=n_holdout, replace=False).tolist())
        train = [i for i in range(n_files) if i not in held]
        return self._subset(train), self._subset(sorted(held))

    def _subset(self, indices: list[int]) -> ParquetLayout:
        """This layout restricted to the files at ``indices`` (in that order)."""
        return replace(
            self,
            files=tuple(self.files[i] for i in indices),
            rows=tuple(self.rows[i] for i in indices),
        )


def _read_schema(file: Path) -> tuple[int, pa.Schema]:
    try:
        meta = pq.read_metadata(file)
        return meta.num_rows, meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as err:
        raise ValueError(
            f"Cannot read the parquet footer of {file}: {err}. The file is corrupt or not "
            "parquet; remove or replace it."
        ) from err


def _pandas_index_columns(schema: pa.Schema) -> list[str]:
    """Columns that pandas wrote for a DataFrame index: row labels, not data."""
    meta = schema.pandas_metadata or {}
    # A RangeIndex is stored as metadata only (a dict here), not as a column.
    return [c for c in meta.get("index_columns", []) if isinstance(c, str)]


def _check_same_schema(first: Path, expected: pa.Schema, file: Path, schema: pa.Schema) -> None:
    if schema.names != expected.names:
        missing = [c for c in expected.names if c not in schema.names]
        extra = [c for c in schema.names if c not in expected.names]
        raise ValueError(
            f"Schema mismatch: {file} has columns {schema.names}, but {first} has "
            f"{expected.names} (missing: {missing}, extra: {extra}, or a different order). "
            "All files of a dataset must have the same columns."
        )
    for name in expected.names:
        want, got = expected.field(name).type, schema.field(name).type
        if want != got:
            raise ValueError(
                f"Schema mismatch: column {name!r} is {got} in {file} but {want} in {first}. "
                "All files of a dataset must have the same column types."
            )


def inspect_parquet(
    path: str | os.PathLike, target: str | None = "y", features: list[str] | None = None
) -> ParquetLayout:
    """Check a parquet dataset from its footers alone and describe its layout.

    Parameters
    ----------
    path : path-like
        A parquet file or a directory of parquet files.
    target : str or None
        Target column; ``None`` for unsupervised data.
    features : list of str, optional
        Feature columns; by default every column except ``target`` and the index
        columns pandas wrote (``__index_level_0__``, a named index).

    Returns
    -------
    ParquetLayout

    Raises
    ------
    FileNotFoundError
        No such path, or no parquet file in it.
    ValueError
        A corrupt footer, files whose schemas disagree, a missing target or feature
        column, or a non-numeric feature column; the message names the file and column.

    Examples
    --------
    >>> layout = inspect_parquet("data/clf", target="y")  # doctest: +SKIP
    >>> layout.n_rows, len(layout.files)  # doctest: +SKIP
    (1000000, 10)
    """
    files = list_parquet_files(path)
    rows, schemas = zip(*(_read_schema(f) for f in files), strict=True)
    # The reference is the schema most files share (on a tie, the first file's), so an
    # error names the odd file out, even when it sorts first.
    kinds = [tuple((f.name, str(f.type)) for f in s) for s in schemas]
    ref = kinds.index(Counter(kinds).most_common(1)[0][0])
    first, schema = files[ref], schemas[ref]
    for file, other in zip(files, schemas, strict=True):
        if file != first:
            _check_same_schema(first, schema, file, other)

    if target is not None and target not in schema.names:
        raise ValueError(
            f"Target column {target!r} not found in {first}; its columns are {schema.names}. "
            "Pass target=<column name>, or target=None for unsupervised data."
        )
    if features is None:
        index = _pandas_index_columns(schema)
        features = [c for c in schema.names if c != target and c not in index]
    else:
        features = [features] if isinstance(features, str) else list(features)
        missing = [c for c in features if c not in schema.names]
        if missing:
            raise ValueError(
                f"Feature columns {missing} not found in {first}; its columns are {schema.names}."
            )
        if target in features:
            raise ValueError(f"Column {target!r} is both the target and a feature.")
    if not features:
        raise ValueError(
            f"No feature columns in {first}: its columns are {schema.names} and {target!r} is "
            "the target. Pass features=[...]."
        )
    for name in features:
        col_type = schema.field(name).type
        if not _is_numeric(col_type):
            raise ValueError(
                f"Feature column {name!r} in {first} has type {col_type}; expected a numeric "
                "type (integer, floating point or boolean). Encode it as numbers first, or "
                "leave it out with features=[...]."
            )

    dtype = np.result_type(*(schema.field(c).type.to_pandas_dtype() for c in features))
    target_dtype = None
    if target is not None:
        t = schema.field(target).type
        target_dtype = np.dtype(t.to_pandas_dtype()) if _is_numeric(t) else np.dtype(object)
    return ParquetLayout(tuple(files), tuple(rows), tuple(features), target, dtype, target_dtype)


def _nonfinite_report(values: np.ndarray, columns, file: Path) -> str | None:
    """Describe the first NaN/inf in a float block, or None if there is none."""
    if values.dtype.kind != "f":
        return None
    # One cheap reduction first; the exact position is only looked up on failure.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(values.sum()):
            return None
    bad = np.argwhere(~np.isfinite(values.reshape(len(values), -1)))
    if not len(bad):
        return None  # the sum overflowed, but every value is finite
    row, col = bad[0]
    value = values.reshape(len(values), -1)[row, col]
    return (
        f"{file}: column {columns[col]!r} has {value} at row {row} "
        f"({len(bad)} non-finite value(s) in this file). Drop or impute them before fitting."
    )


def _read_table(file: Path, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(file, columns=columns)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as err:
        raise ValueError(
            f"Cannot read columns {columns} of {file}: {err}. The file is corrupt; remove or "
            "replace it."
        ) from err


def _first_null(column: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def _no_nulls(file: Path, name: str, col: pa.ChunkedArray) -> pa.ChunkedArray:
    if col.null_count:
        raise ValueError(
            f"{file}: column {name!r} has {col.null_count} missing value(s), first at row "
            f"{_first_null(col)}. Drop or impute them before fitting."
        )
    return col


def read_columns(file: Path, columns: tuple[str, ...], dtype: np.dtype) -> list[np.ndarray]:
    """The feature columns of one file as 1-D arrays, without building a 2-D block.

    For per-column statistics (a scaler's pass): Arrow's buffers are used as they are
    where the dtype already matches. Missing values are refused, naming file and column;
    NaN and inf are left to the caller's statistics to notice.
    """
    table = _read_table(file, list(columns))
    return [
        _no_nulls(file, name, table.column(name)).to_numpy().astype(dtype, copy=False)
        for name in columns
    ]


def _read_features(file: Path, columns: tuple[str, ...], dtype: np.dtype) -> np.ndarray:
    table = _read_table(file, list(columns))
    # Feature-major: each column is one contiguous copy. The block is its transpose (an
    # F-ordered view); the scalers' transforms write C order for partial_fit in one pass.
    by_column = np.empty((len(columns), table.num_rows), dtype=dtype)
    for j, name in enumerate(columns):
        by_column[j] = _no_nulls(file, name, table.column(name)).to_numpy()
    block = by_column.T
    problem = _nonfinite_report(block, columns, file)
    if problem:
        raise ValueError(problem)
    return block


def _read_target(file: Path, column: str, dtype: np.dtype) -> np.ndarray:
    col = _read_table(file, [column]).column(column)
    if col.null_count:
        raise ValueError(
            f"{file}: target column {column!r} has {col.null_count} missing value(s), first at "
            f"row {_first_null(col)}. Drop these rows before fitting."
        )
    values = col.to_numpy().astype(dtype, copy=False)
    problem = _nonfinite_report(values, [column], file)
    if problem:
        raise ValueError(problem)
    return values


def read_parquet(
    path: str | os.PathLike, target: str | None = "y", features: list[str] | None = None
) -> tuple[da.Array, da.Array | None]:
    """Open a parquet dataset as dask arrays ``(X, y)``, one block per file.

    No data is read: the row count of every block comes from the parquet footers, so
    the arrays have known chunk sizes. Features and target are separate column reads,
    so computing ``y`` alone touches only the target column. Any directory of parquet
    files works; no manifest is needed.

    Parameters
    ----------
    path : path-like
        A parquet file or a directory of parquet files (searched recursively).
    target : str or None, default "y"
        Target column. ``None`` returns ``(X, None)``.
    features : list of str, optional
        Feature columns; by default every column except ``target`` and pandas index
        columns.

    Returns
    -------
    X : dask.array.Array of shape (n_rows, n_features)
    y : dask.array.Array of shape (n_rows,) or None

    Raises
    ------
    FileNotFoundError, ValueError
        See :func:`inspect_parquet`. Reading a block with NaN/inf or missing values
        raises ValueError naming the file, the column and the row.

    Examples
    --------
    >>> import ooc
    >>> X, y = ooc.read_parquet("data/clf", target="y")  # doctest: +SKIP
    >>> X.chunks[0][:3]  # doctest: +SKIP
    (100000, 100000, 100000)
    """
    layout = inspect_parquet(path, target, features)
    return dask_arrays(layout)


# The parquet files behind each feature array made here, by the array's (deterministic)
# name: a scaler's pass can then read columns instead of 2-D blocks.
_SOURCES: dict[str, tuple[tuple[Path, ...], tuple[str, ...], np.dtype]] = {}


def parquet_source(X) -> tuple[tuple[Path, ...], tuple[str, ...], np.dtype] | None:
    """``(files, feature columns, dtype)`` if ``X`` is, unchanged, a feature array of
    :func:`read_parquet`; None for anything else (a slice, a transform, other input).

    Examples
    --------
    >>> import dask.array as da
    >>> parquet_source(da.zeros((4, 2))) is None
    True
    """
    return _SOURCES.get(getattr(X, "name", None))


def dask_arrays(layout: ParquetLayout) -> tuple[da.Array, da.Array | None]:
    """Dask arrays over the files of ``layout`` (see :func:`read_parquet`)."""
    files = layout.files

    def read_x(block_id=None):
        return _read_features(files[block_id[0]], layout.features, layout.dtype)

    X = da.map_blocks(
        read_x,
        chunks=(layout.rows, (len(layout.features),)),
        dtype=layout.dtype,
        meta=np.empty((0, 0), dtype=layout.dtype),
        name=f"read-parquet-x-{_token(layout)}",
    )
    _SOURCES[X.name] = (tuple(files), tuple(layout.features), np.dtype(layout.dtype))
    while len(_SOURCES) > 256:  # a long-lived worker opens many datasets
        del _SOURCES[next(iter(_SOURCES))]
    if layout.target is None:
        return X, None

    def read_y(block_id=None):
        return _read_target(files[block_id[0]], layout.target, layout.target_dtype)

    y = da.map_blocks(
        read_y,
        chunks=(layout.rows,),
        dtype=layout.target_dtype,
        meta=np.empty((0,), dtype=layout.target_dtype),
        name=f"read-parquet-y-{_token(layout)}",
    )
    return X, y


def _token(layout: ParquetLayout) -> str:
    """Deterministic name: the same files and columns give the same dask keys."""
    from dask.base import tokenize

    stats = [(str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in layout.files]
    return tokenize(stats, layout.features, layout.target, str(layout.dtype))
