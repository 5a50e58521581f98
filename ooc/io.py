"""Reading the blocks of a parquet dataset, alone or as dask arrays or DataFrames.

A block (see :mod:`ooc.layout`) is read from its row groups only: a block of whole row
groups reads exactly their pages; a slice of a row group larger than the block bound is
streamed in batches, so memory stays bounded by the block however the file was written.

Missing values. The target never may have any. Features are read as a numeric array or
as a DataFrame (``as_frame``); missing feature values are allowed by default in a
DataFrame (NaN) and refused by default in an array, whose users (scalers, ``partial_fit``)
cannot take NaN; ``allow_missing=True`` reads them as NaN in an array too. Whatever is
refused (a missing value, NaN, inf) is reported with the file, the column and the row in
that file; infinities are refused everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from .discovery import list_parquet_files
from .layout import DEFAULT_BLOCK_ROWS, Block, ParquetSource, Piece, inspect_parquet
from .slices import read_slice

__all__ = [
    "ParquetSource",
    "dask_arrays",
    "dask_collections",
    "inspect_parquet",
    "list_parquet_files",
    "parquet_source",
    "read_block_columns",
    "read_features",
    "read_parquet",
    "read_target",
]


def _read_error(file: Path, columns, err) -> ValueError:
    return ValueError(
        f"Cannot read columns {list(columns)} of {file}: {err}. The file is corrupt; remove "
        "or replace it."
    )


def piece_tables(
    source: ParquetSource, block: Block, columns: tuple[str, ...]
) -> Iterator[tuple[Piece, pa.Table]]:
    """Each piece of ``block`` with the file columns among ``columns`` (partition columns
    are not in the files; see :func:`_column_values`)."""
    wanted = [c for c in columns if c not in source.partition_names]
    for piece in block:
        path = source.files[piece.file]
        group_rows = source.row_groups[piece.file][piece.row_group]
        try:
            if group_rows > source.block_rows:
                table = read_slice(path, piece.row_group, wanted, piece.start, piece.stop)
            else:
                table = pq.ParquetFile(path).read_row_group(piece.row_group, columns=wanted)
                if piece.rows != group_rows:
                    table = table.slice(piece.start, piece.rows)
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException, StopIteration) as err:
            raise _read_error(path, wanted, err) from err
        if table is None or table.num_rows != piece.rows:
            got = 0 if table is None else table.num_rows
            raise _read_error(path, wanted, f"expected {piece.rows} rows, read {got}")
        yield piece, _typed(source, table)


def _typed(source: ParquetSource, table: pa.Table) -> pa.Table:
    """A column of type null (every value missing in this file) as the dataset's type."""
    for i, column in enumerate(table.schema):
        if pa.types.is_null(column.type):
            want = source.schema.field(column.name).type
            if not pa.types.is_null(want):
                table = table.set_column(i, column.name, table.column(i).cast(want))
    return table


def _first_null(chunks) -> int:
    offset = 0
    for chunk in chunks:
        if chunk.null_count:
            return offset + int(np.flatnonzero(chunk.is_null().to_numpy(zero_copy_only=False))[0])
        offset += len(chunk)
    return -1


def _missing_allowed(source, role: str) -> bool:
    return role == "feature" and source.allow_missing


def _refuse_nulls(source, piece: Piece, column, name: str, role: str) -> None:
    path = source.files[piece.file]
    row = source.file_offset(piece) + _first_null(column.chunks)
    if role == "target":
        what, fix = "target column", "Drop these rows before fitting."
    else:
        what, fix = (
            "column",
            (
                "Drop or impute them before fitting: read them as NaN with "
                "ooc.read_parquet(..., allow_missing=True) (or as_frame=True) and impute them, "
                "e.g. ooc.OnePass(SimpleImputer())."
            ),
        )
    raise ValueError(
        f"{path}: {what} {name!r} has {column.null_count} missing value(s), first at row "
        f"{row}. {fix}"
    )


def _column_values(source, piece: Piece, table: pa.Table, name: str, role: str):
    """The values of column ``name`` in one piece, as numpy chunks.

    Nulls are refused unless missing values are allowed, when they are NaN (an integer
    or boolean column that may hold them is then float64, see
    :meth:`ParquetSource.column_dtype`).
    """
    path = source.files[piece.file]
    allowed = _missing_allowed(source, role)
    if name in source.partition_names:
        value = source.partition_value(piece.file, name)
        if value is None and not allowed:
            raise ValueError(
                f"{path}: partition column {name!r} is missing (__HIVE_DEFAULT_PARTITION__) "
                f"for this file's {piece.rows} rows. Drop or impute them before fitting."
            )
        return [np.full(piece.rows, np.nan if value is None else value)]
    column = table.column(name)
    if column.null_count:
        wanted = source.column_dtype(name) if role == "feature" else None
        if not allowed or wanted is None or wanted.kind != "f":
            _refuse_nulls(source, piece, column, name, role)
        column = pc.cast(column, pa.from_numpy_dtype(wanted))
    return [chunk.to_numpy(zero_copy_only=False) for chunk in column.chunks]


def _locate(source: ParquetSource, block: Block, row: int) -> tuple[Path, int]:
    """The file and the row in that file of row ``row`` of ``block``."""
    for piece in block:
        if row < piece.rows:
            return source.files[piece.file], source.file_offset(piece) + row
        row -= piece.rows
    raise IndexError(row)


def _check_finite(
    source: ParquetSource, block: Block, values: np.ndarray, columns, allow_nan: bool = False
) -> None:
    """Raise naming file, column and row for the first NaN/inf in a float block (only
    for inf with ``allow_nan``: NaN is then a missing value)."""
    if values.dtype.kind != "f":
        return
    # One cheap reduction first; the exact position is only looked up on failure.
    with np.errstate(over="ignore", invalid="ignore"):
        total = values.sum()
    if np.isfinite(total) or (allow_nan and np.isnan(total) and not np.isinf(values).any()):
        return
    grid = values.reshape(len(values), -1)
    bad = np.argwhere(np.isinf(grid) if allow_nan else ~np.isfinite(grid))
    if not len(bad):
        return  # the sum overflowed, but every value is finite
    row, col = bad[0]
    path, file_row = _locate(source, block, int(row))
    if allow_nan:
        raise ValueError(
            f"{path}: column {columns[col]!r} has {grid[row, col]} at row {file_row} "
            f"({len(bad)} infinite value(s) in this block); expected finite numbers or "
            "missing values. Replace them (with a bound, or with NaN to impute them)."
        )
    raise ValueError(
        f"{path}: column {columns[col]!r} has {grid[row, col]} at row {file_row} "
        f"({len(bad)} non-finite value(s) in this block). Drop or impute them before fitting."
    )


def _fill(out: np.ndarray, chunks, offset: int) -> None:
    for chunk in chunks:
        out[offset : offset + len(chunk)] = chunk
        offset += len(chunk)


def read_features(source: ParquetSource, index: int) -> np.ndarray:
    """Block ``index`` of the feature columns as a 2-D array of ``source.dtype``.

    Feature-major: each column is copied once, contiguously; the block returned is its
    transpose (an F-ordered view), which the scalers turn into C order in one pass.

    Raises
    ------
    ValueError
        A missing value or NaN/inf (naming file, column and row; missing values and NaN
        are read when ``source.allow_missing``), or an unreadable file.
    """
    _numeric_only(source)
    block = source.blocks[index]
    by_column = np.empty((len(source.features), source.rows[index]), dtype=source.dtype)
    offset = 0
    for piece, table in piece_tables(source, block, source.features):
        for j, name in enumerate(source.features):
            _fill(by_column[j], _column_values(source, piece, table, name, "feature"), offset)
        offset += piece.rows
    values = by_column.T
    _check_finite(source, block, values, source.features, allow_nan=source.allow_missing)
    return values


def _numeric_only(source: ParquetSource) -> None:
    text = [c for c in source.features if source.kind(c) == "category"]
    if text:
        raise ValueError(
            f"Features {text} of {source.root} are text (string or dictionary columns), so "
            "the features cannot be one numeric array; read them as a DataFrame "
            "(ooc.read_parquet(..., as_frame=True), or read_frame), or leave them out."
        )


def read_target(source: ParquetSource, index: int) -> np.ndarray:
    """Block ``index`` of the target column (missing values and NaN/inf refused)."""
    block = source.blocks[index]
    out = np.empty(source.rows[index], dtype=source.target_dtype)
    offset = 0
    for piece, table in piece_tables(source, block, (source.target,)):
        _fill(out, _column_values(source, piece, table, source.target, "target"), offset)
        offset += piece.rows
    _check_finite(source, block, out, [source.target])
    return out


def read_block_columns(source: ParquetSource, index: int) -> list[np.ndarray]:
    """Block ``index``'s feature columns as 1-D arrays, without building a 2-D block.

    For per-column statistics (a scaler's pass): a column that is one Arrow chunk of the
    right dtype is used as it is, with no copy. Missing values are refused, naming file
    and column (or are NaN when ``source.allow_missing``); NaN and inf are left to the
    caller's statistics to notice.
    """
    _numeric_only(source)
    block = source.blocks[index]
    pieces = list(piece_tables(source, block, source.features))
    columns = []
    for name in source.features:
        chunks = [c for p, t in pieces for c in _column_values(source, p, t, name, "feature")]
        if len(chunks) == 1 and chunks[0].dtype == source.dtype:
            columns.append(chunks[0])
            continue
        out = np.empty(source.rows[index], dtype=source.dtype)
        _fill(out, chunks, 0)
        columns.append(out)
    return columns


class ParquetLayer(MaterializedLayer):
    """The graph layer of an array made by :func:`dask_arrays`, which keeps the source it
    reads and its role (``"features"`` or ``"target"``): :func:`parquet_source` finds them
    there, so they travel with the array, pickled or not."""

    def __init__(self, mapping, source: ParquetSource, role: str):
        super().__init__(mapping)
        self.source = source
        self.role = role


def parquet_source(X, role: str = "features") -> ParquetSource | None:
    """The :class:`ParquetSource` behind ``X`` if ``X`` is, unchanged, the feature array
    (or with ``role="target"``, the target array) of :func:`read_parquet`; None for
    anything else (a slice, a transform, other input).

    Examples
    --------
    >>> import dask.array as da
    >>> parquet_source(da.zeros((4, 2))) is None
    True
    """
    if not isinstance(X, da.Array):
        return None
    layers = X.dask.layers
    layer = layers.get(X.name)
    if isinstance(layer, ParquetLayer) and len(layers) == 1 and layer.role == role:
        return layer.source
    return None


def _array(source: ParquetSource, role: str, name: str) -> da.Array:
    """A dask array with one chunk per block, read by ``read_features``/``read_target``."""
    n = len(source.blocks)
    if role == "features":
        keys = [(name, i, 0) for i in range(n)]
        reader, dtype = read_features, source.dtype
        chunks, meta = (source.rows, (len(source.features),)), np.empty((0, 0), dtype)
    else:
        keys = [(name, i) for i in range(n)]
        reader, dtype = read_target, source.target_dtype
        chunks, meta = (source.rows,), np.empty((0,), dtype)
    layer = ParquetLayer({key: (reader, source, i) for i, key in enumerate(keys)}, source, role)
    graph = HighLevelGraph({name: layer}, {name: set()})
    return da.Array(graph, name, chunks=chunks, dtype=dtype, meta=meta)


def dask_arrays(source: ParquetSource) -> tuple[da.Array, da.Array | None]:
    """Dask arrays ``(X, y)`` with one chunk per block of ``source`` (see
    :func:`read_parquet`)."""
    token = _token(source)
    X = _array(source, "features", f"read-parquet-x-{token}")
    if source.target is None:
        return X, None
    return X, _array(source, "target", f"read-parquet-y-{token}")


def read_parquet(
    path: str | os.PathLike,
    target: str | None = "y",
    features: list[str] | None = None,
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    filters=None,
    as_frame: bool | str = "auto",
    allow_missing: bool | None = None,
):
    """Open a parquet dataset as dask collections ``(X, y)``, one block per chunk.

    No data is read: the rows of every block come from the parquet footers, so the arrays
    have known chunk sizes. A block joins row groups (and small files) up to
    ``block_rows`` rows and cuts larger row groups into slices, so memory depends on
    ``block_rows``, not on how the rows are split into files. Features and target are
    separate column reads, so computing ``y`` alone touches only the target column.

    ``X`` is a dask array when every feature is a number, and a dask DataFrame (one
    partition per block, divisions known from the footers) when a feature is a string,
    dictionary or boolean column, or with ``as_frame=True``. In a DataFrame, numeric
    columns keep their dtype and string and dictionary columns are pandas
    **categoricals** (each block's categories are its own values): the cheapest form to
    read and count (an integer code per row), and what scikit-learn's encoders take as
    they take strings. A DataFrame is what :class:`ooc.OnePass` fits a
    ``ColumnTransformer`` on.

    Missing values: the target may have none (reading it fails naming file and row).
    Missing feature values are read as NaN in a DataFrame, and refused in an array
    (naming file, column and row), since what consumes a numeric array (ooc's scalers,
    ``partial_fit``) cannot take NaN; ``allow_missing=True`` reads them as NaN in an
    array too, for an imputer (``ooc.OnePass(SimpleImputer())``). An integer or boolean
    column that may hold missing values (its footers say so, or have no statistics) is
    then read as float64. Infinite values are always refused.

    Parameters
    ----------
    path : path-like
        A parquet file or a directory of parquet files (searched recursively; hive
        ``key=value`` directories give partition columns).
    target : str or None, default "y"
        Target column. ``None`` returns ``(X, None)``.
    features : list of str, optional
        Feature columns; by default every column except ``target`` and pandas index
        columns.
    block_rows : int, default 500_000
        The most rows in one block.
    filters : list of (column, op, value), optional
        Conditions on partition columns, e.g. ``[("date", ">=", "2026-11-01")]``.
    as_frame : {"auto", True, False}, default "auto"
        ``X`` as a dask DataFrame (True), a dask array (False: string columns are then
        refused), or a DataFrame only when a feature is a string, dictionary or boolean
        column ("auto").
    allow_missing : bool, optional
        Read missing feature values as NaN (True) or refuse them (False); by default
        True for a DataFrame and False for an array.

    Returns
    -------
    X : dask.array.Array of shape (n_rows, n_features), or dask.dataframe.DataFrame
    y : dask.array.Array of shape (n_rows,) or None

    Raises
    ------
    FileNotFoundError, ValueError
        See :func:`ooc.inspect_parquet`. Reading a block with a refused value (a missing
        target or feature value, NaN, inf) raises ValueError naming the file, the
        column and the row.

    Examples
    --------
    >>> import ooc
    >>> X, y = ooc.read_parquet("data/clf", target="y")  # doctest: +SKIP
    >>> X.chunks[0][:3]  # doctest: +SKIP
    (500000, 500000, 500000)
    >>> X, y = ooc.read_parquet("data/shop", target="bought")  # doctest: +SKIP
    >>> X.dtypes["city"]  # doctest: +SKIP
    CategoricalDtype(categories=['__UNKNOWN_CATEGORIES__'], ordered=False, ...)
    """
    source = inspect_parquet(
        path,
        target,
        features,
        block_rows=block_rows,
        filters=filters,
        as_frame=as_frame,
        allow_missing=allow_missing,
    )
    return dask_collections(source)


def dask_collections(source: ParquetSource):
    """``(X, y)`` of :func:`read_parquet` for ``source``: X a DataFrame when
    ``source.as_frame``, else an array; y an array."""
    if not source.as_frame:
        return dask_arrays(source)
    from .frames import dask_frame

    frame = dask_frame(source)
    if source.target is None:
        return frame, None
    token = _token(source)
    return frame, _array(source, "target", f"read-parquet-y-{token}")


def _token(source: ParquetSource) -> str:
    """Deterministic name: the same files, blocks and columns give the same dask keys."""
    from dask.base import tokenize

    stats = [(str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in source.files]
    return tokenize(
        stats,
        source.blocks,
        source.features,
        source.target,
        str(source.dtype),
        source.partitions,
        source.allow_missing,
        [str(source.column_dtype(c)) for c in source.features],
    )
