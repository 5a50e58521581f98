"""Reading a parquet dataset's features as a dask DataFrame, one partition per block.

For real tabular data (issue 14): numeric columns keep their dtype (float64 for an
integer or boolean column that may hold missing values), and text columns (string or
dictionary) are pandas **categoricals** whose categories are each block's values: an
integer code per row, the cheapest form to read and to count, and what scikit-learn's
encoders take as they take strings. Missing values are NaN (or refused, when the source
does not allow them); infinities are refused, naming file, column and row.

The DataFrame is built from the footers alone (no data read): its divisions are the
blocks' first rows, and dask may ask the reader for some columns only.
"""

from __future__ import annotations

import weakref

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .io import _check_finite, _column_values, _refuse_nulls, _token, piece_tables
from .layout import ParquetSource, Piece

__all__ = ["dask_frame", "frame_source", "read_frame"]


def _text_values(source, piece: Piece, table: pa.Table, name: str) -> pd.Categorical:
    """A text (string or dictionary) column of one piece as a pandas Categorical."""
    if name in source.partition_names:
        value = source.partition_value(piece.file, name)
        return pd.Categorical(np.full(piece.rows, value, dtype=object))
    column = table.column(name)
    if column.null_count and not source.allow_missing:
        _refuse_nulls(source, piece, column, name, "feature")
    kind = column.type
    if pa.types.is_dictionary(kind) and not _text_type(kind.value_type):
        return column.cast(pa.dictionary(pa.int32(), kind.value_type)).to_pandas().array
    if pa.types.is_dictionary(kind):
        column = column.cast(pa.dictionary(pa.int32(), pa.string()))
    else:
        column = pc.dictionary_encode(column.cast(pa.string()))
    values = column.to_pandas().array
    if values.categories.dtype != _TEXT:  # no values (an empty dictionary): no dtype known
        categories = pd.Index(values.categories, dtype=_TEXT)
        values = pd.Categorical.from_codes(values.codes, categories=categories)
    return values


# What pandas makes of text (str in pandas 3, object before): every block's categories
# have it, so that blocks concatenate.
_TEXT = pd.Index(["text"]).dtype


def _text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def read_frame(source: ParquetSource, index: int, columns=None) -> pd.DataFrame:
    """Block ``index`` of the feature columns as a pandas DataFrame.

    Numeric columns keep their dtype (float64 for an integer or boolean column that may
    hold missing values, see :meth:`ParquetSource.column_dtype`); text columns (string
    or dictionary) are categoricals, whose categories are this block's values. The index
    is the rows' position in ``source`` (a RangeIndex). Missing values are NaN, unless
    ``source.allow_missing`` is False, when they are refused as in :func:`read_features`.

    Parameters
    ----------
    source : ParquetSource
    index : int
    columns : list of str, optional
        Only these features (a projection: the others are not read).

    Raises
    ------
    ValueError
        An infinite value (naming file, column and row), a refused missing value, or an
        unreadable file.
    """
    names = list(source.features if columns is None else columns)
    block = source.blocks[index]
    parts: dict[str, list] = {name: [] for name in names}
    for piece, table in piece_tables(source, block, tuple(names)):
        for name in names:
            if source.kind(name) == "category":
                parts[name].append(_text_values(source, piece, table, name))
            else:
                parts[name].extend(_column_values(source, piece, table, name, "feature"))
    start = sum(source.rows[:index])
    frame = {}
    for name in names:
        if source.kind(name) == "category":
            frame[name] = _union(parts[name])
            continue
        dtype = source.column_dtype(name)
        values = np.concatenate(parts[name]) if parts[name] else np.empty(0, dtype)
        values = values.astype(dtype, copy=False)
        _check_finite(source, block, values[:, None], [name], allow_nan=source.allow_missing)
        frame[name] = values
    index_ = pd.RangeIndex(start, start + source.rows[index])
    return pd.DataFrame(frame, index=index_, columns=names)


def _union(parts: list) -> pd.Categorical:
    if not parts:
        return pd.Categorical([])
    if len(parts) == 1:
        return parts[0]
    return pd.api.types.union_categoricals(parts)


def _frame_meta(source: ParquetSource) -> pd.DataFrame:
    from dask.dataframe.utils import clear_known_categories

    columns = {}
    for name in source.features:
        dtype = source.column_dtype(name)
        columns[name] = pd.Categorical([]) if dtype == "category" else np.empty(0, dtype)
    meta = pd.DataFrame(columns, index=pd.RangeIndex(0), columns=list(source.features))
    return clear_known_categories(meta)


class _FrameReader:
    """Reads block ``index`` of a source's features (``columns`` only, when dask asks
    for a projection); named for dask by the files, blocks and columns it reads."""

    def __init__(self, source: ParquetSource, token: str):
        self.source = source
        self.token = token

    def __call__(self, index: int, columns=None) -> pd.DataFrame:
        return read_frame(self.source, index, columns)

    def __dask_tokenize__(self):
        return self.token


# Sources of the DataFrames made by dask_frame, by the frames' dask token: a frame changed
# in any way has another token, so it finds no source (as parquet_source for arrays).
_FRAMES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def dask_frame(source: ParquetSource):
    """A dask DataFrame of the features of ``source``, one partition per block, built
    from the footers alone (see :func:`read_parquet`).

    The index is the row's position; the divisions are known (the first row of every
    block) when every block has rows.
    """
    import dask.dataframe as dd
    from dask.base import tokenize

    rows = source.rows
    starts = np.concatenate([[0], np.cumsum(rows)]).astype(int).tolist()
    divisions = None
    if all(rows):
        divisions = (*starts[:-1], starts[-1] - 1)
    reader = _FrameReader(source, f"{_token(source)}-frame")
    # No conversion of object columns to strings: there are none (text is categorical),
    # and without it each block is one task.
    with dask.config.set({"dataframe.convert-string": False}):
        frame = dd.from_map(
            reader,
            range(len(source.blocks)),
            meta=_frame_meta(source),
            divisions=divisions,
            label="read-parquet-frame",
            enforce_metadata=False,
        )
    _FRAMES[tokenize(frame)] = source
    return frame


def frame_source(X) -> ParquetSource | None:
    """The :class:`ParquetSource` behind ``X`` if ``X`` is, unchanged, the feature
    DataFrame of :func:`read_parquet`; None for anything else.

    Examples
    --------
    >>> import pandas as pd, dask.dataframe as dd
    >>> frame_source(dd.from_pandas(pd.DataFrame({"a": [1]}), npartitions=1)) is None
    True
    """
    from dask.base import tokenize

    from .blocks import is_dask_frame

    if not is_dask_frame(X):
        return None
    return _FRAMES.get(tokenize(X))
