"""What the parquet footers say about a dataset, and how its rows are cut into blocks.

A **block** is the unit that is read, transformed and fitted at once, and so what bounds
memory. It is planned from the footers alone, with no data read:

- row groups, in file order, are joined into one block while it stays within
  ``block_rows`` rows (small row groups and small files are joined, across files too);
- a row group larger than ``block_rows`` is cut into equal slices of at most
  ``block_rows`` rows, read one slice at a time;
- empty files and row groups give no block.

A block is a tuple of :class:`Piece` s, each a row range of one row group.
"""

from __future__ import annotations

import math
import numbers
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .discovery import DatasetFiles, find_files

__all__ = [
    "DEFAULT_BLOCK_ROWS",
    "ParquetSource",
    "Piece",
    "column_kind",
    "inspect_parquet",
    "plan_blocks",
]

DEFAULT_BLOCK_ROWS = 500_000
# Seeds the draw of ParquetSource.split apart from other draws made with the same seed.
_SPLIT_STREAM = 3


@dataclass(frozen=True)
class Piece:
    """Rows ``start:stop`` of row group ``row_group`` of file ``file`` (an index)."""

    file: int
    row_group: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


Block = tuple[Piece, ...]


def plan_blocks(
    row_groups: tuple[tuple[int, ...], ...], block_rows: int, *, join_files: bool = True
) -> tuple[Block, ...]:
    """Cut the row groups of every file into blocks of at most ``block_rows`` rows.

    Parameters
    ----------
    row_groups : tuple of tuple of int
        Rows of each row group, file by file.
    block_rows : int
        The bound.
    join_files : bool, default True
        Whether a block may hold row groups of several files.

    Returns
    -------
    tuple of blocks
        At least one (an empty block when there are no rows).

    Examples
    --------
    >>> [[(p.file, p.row_group, p.start, p.stop) for p in b]
    ...  for b in plan_blocks(((300, 300), (1000,)), 600)]
    [[(0, 0, 0, 300), (0, 1, 0, 300)], [(1, 0, 0, 500)], [(1, 0, 500, 1000)]]
    """
    blocks: list[Block] = []
    current: list[Piece] = []
    size = 0

    def flush():
        nonlocal current, size
        if current:
            blocks.append(tuple(current))
        current, size = [], 0

    for file, groups in enumerate(row_groups):
        if not join_files:
            flush()
        for group, rows in enumerate(groups):
            if rows == 0:
                continue
            if rows > block_rows:
                flush()
                cuts = np.linspace(0, rows, math.ceil(rows / block_rows) + 1).round()
                for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
                    blocks.append((Piece(file, group, int(start), int(stop)),))
                continue
            if size + rows > block_rows:
                flush()
            current.append(Piece(file, group, 0, rows))
            size += rows
    flush()
    return tuple(blocks) or ((),)


def _cut(block: Block, rows: int) -> tuple[Block, Block]:
    """The first ``rows`` rows of ``block`` and the rest."""
    head, tail, left = [], [], rows
    for piece in block:
        if left >= piece.rows:
            head.append(piece)
        elif left <= 0:
            tail.append(piece)
        else:
            head.append(replace(piece, stop=piece.start + left))
            tail.append(replace(piece, start=piece.start + left))
        left -= piece.rows
    return tuple(head), tuple(tail)


@dataclass(frozen=True)
class ParquetSource:
    """A parquet dataset as its footers describe it: files, row groups, columns, blocks.

    Made by :func:`inspect_parquet`; building it reads no data. Immutable and picklable,
    so it can be handed to Dask workers, which read their blocks themselves.

    Attributes
    ----------
    root : Path
        Directory the files were found under.
    files : tuple of Path
    row_groups : tuple of tuple of int
        Rows of each row group of each file.
    blocks : tuple of tuple of Piece
        The row blocks, in order (see the module's docstring).
    features : tuple of str
        Feature columns, in order (may include partition columns).
    target : str or None
    dtype : numpy.dtype
        Common dtype of the feature columns.
    target_dtype : numpy.dtype or None
    partition_names : tuple of str
        Hive partition columns (from ``key=value`` directories).
    partitions : tuple of tuple
        Each file's partition values.
    block_rows : int
        The bound the blocks were planned with.
    schema : pyarrow.Schema
        Columns of the files, then the partition columns.
    as_frame : bool
        Whether the features are read as a pandas DataFrame per block (see
        :func:`ooc.read_parquet`) rather than as one 2-D array.
    allow_missing : bool
        Whether missing feature values are read (as NaN) rather than refused.
    null_counts : tuple of (int or None)
        Missing values of each feature in all the files, from the footers (None where a
        footer has no statistics).
    """

    root: Path
    files: tuple[Path, ...]
    row_groups: tuple[tuple[int, ...], ...]
    blocks: tuple[Block, ...]
    features: tuple[str, ...]
    target: str | None
    dtype: np.dtype
    target_dtype: np.dtype | None
    partition_names: tuple[str, ...]
    partitions: tuple[tuple, ...]
    block_rows: int
    schema: pa.Schema
    as_frame: bool = False
    allow_missing: bool = False
    null_counts: tuple[int | None, ...] = ()

    @property
    def rows(self) -> tuple[int, ...]:
        """Rows of each block."""
        return tuple(sum(p.rows for p in block) for block in self.blocks)

    @property
    def n_rows(self) -> int:
        return sum(self.rows)

    @property
    def file_rows(self) -> tuple[int, ...]:
        """Rows of each file."""
        return tuple(sum(groups) for groups in self.row_groups)

    def kind(self, name: str) -> str:
        """``"float"``, ``"int"``, ``"bool"`` or ``"category"``: see :func:`column_kind`."""
        return column_kind(self.schema.field(name).type)

    def may_be_missing(self, name: str) -> bool:
        """Whether feature ``name`` may hold missing values, as far as the footers tell
        (a footer without statistics tells nothing, so it may)."""
        if name in self.partition_names:
            return any(
                values[self.partition_names.index(name)] is None for values in self.partitions
            )
        if name not in self.features or len(self.null_counts) != len(self.features):
            return True
        count = self.null_counts[self.features.index(name)]
        return count is None or count > 0

    def column_dtype(self, name: str):
        """The dtype feature ``name`` is read as: its own numeric dtype; float64 for an
        integer or boolean column that may hold missing values (when they are allowed);
        ``"category"`` for a string or dictionary column."""
        kind = self.kind(name)
        if kind == "category":
            return "category"
        if kind in ("int", "bool") and self.allow_missing and self.may_be_missing(name):
            return np.dtype(np.float64)
        return np.dtype(self.schema.field(name).type.to_pandas_dtype())

    def file_offset(self, piece: Piece) -> int:
        """Row of the file at which ``piece`` starts (for messages naming a row)."""
        return sum(self.row_groups[piece.file][: piece.row_group]) + piece.start

    def partition_value(self, file: int, name: str):
        return self.partitions[file][self.partition_names.index(name)]

    def with_blocks(self, blocks) -> ParquetSource:
        """This source with other blocks (of the same files)."""
        return replace(self, blocks=tuple(blocks) or ((),))

    def head(self, rows: int) -> ParquetSource:
        """The first ``rows`` rows, as a source of one block (an input example)."""
        return self.with_blocks([_cut(self.blocks[0], rows)[0]])

    def runs(self) -> tuple[tuple[int, ...], ...]:
        """Block indices in order, grouped so that one task reads each group in turn.

        The slices of a row group larger than a block form one run (read in order, the
        row group is decoded once: see :mod:`ooc.slices`); every other block is a run
        of its own, so runs can be read in parallel.
        """
        runs: list[list[int]] = []
        last = None
        for index, block in enumerate(self.blocks):
            first = block[0] if len(block) == 1 else None
            cut = first is not None and self.row_groups[first.file][first.row_group] > (
                self.block_rows
            )
            group = (first.file, first.row_group) if cut else None
            if group is not None and group == last:
                runs[-1].append(index)
            else:
                runs.append([index])
            last = group
        return tuple(tuple(run) for run in runs)

    def only_file(self, file: int) -> ParquetSource:
        """File ``file`` alone, as a source of its own with its own blocks (prediction
        writes one output per input file, so its blocks never span two files)."""
        row_groups = (self.row_groups[file],)
        return replace(
            self,
            files=(self.files[file],),
            row_groups=row_groups,
            partitions=(self.partitions[file],),
            blocks=tuple(b for b in plan_blocks(row_groups, self.block_rows) if b),
        )

    def split(self, fraction: float, seed: int = 0) -> tuple[ParquetSource, ParquetSource]:
        """Split into a training and a holdout source by rows; no data is read.

        Blocks drawn at random from ``seed`` form the holdout until it holds
        ``round(fraction * n_rows)`` rows; the last block drawn is cut where needed, so the
        holdout has exactly that many rows (at least 1, and training keeps at least 1).
        Both parts keep the columns of this source and list their blocks in the original
        order, so a one-file dataset splits as well as a thousand files.

        Parameters
        ----------
        fraction : float
            Share of the rows to hold out, strictly between 0 and 1.
        seed : int, default 0
            Seed of the draw; the same seed and data give the same split.

        Returns
        -------
        train, holdout : ParquetSource
            Disjoint; together they hold every row of this source.

        Raises
        ------
        ValueError
            If ``fraction`` is not in (0, 1), ``seed`` is not an int >= 0, or the data
            has fewer than 2 rows.

        Examples
        --------
        >>> source = inspect_parquet("data/clf", target="y")  # doctest: +SKIP
        >>> train, holdout = source.split(0.2, seed=0)  # doctest: +SKIP
        >>> holdout.n_rows / source.n_rows  # doctest: +SKIP
        0.2
        """
        real = isinstance(fraction, numbers.Real) and not isinstance(fraction, bool)
        if not (real and 0 < fraction < 1):
            raise ValueError(
                f"split: fraction must be a number strictly between 0 and 1 (the share of "
                f"rows to hold out), got {fraction!r}. Pass e.g. fraction=0.2."
            )
        if not (isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0):
            raise ValueError(f"split: seed must be an int >= 0, got {seed!r}.")
        total = self.n_rows
        if total < 2:
            raise ValueError(
                f"split needs at least 2 rows to hold some out; {self.root} has {total}."
            )
        need = min(total - 1, max(1, round(fraction * total)))
        rows = self.rows
        rng = np.random.default_rng([int(seed), _SPLIT_STREAM])
        held: dict[int, int] = {}
        for index in rng.permutation(len(self.blocks)).tolist():
            if need == 0:
                break
            if rows[index]:
                held[index] = min(rows[index], need)
                need -= held[index]
        train, holdout = [], []
        for index, block in enumerate(self.blocks):
            take = held.get(index, 0)
            head, tail = _cut(block, take)
            if head:
                holdout.append(head)
            if tail:
                train.append(tail)
        return self.with_blocks(train), self.with_blocks(holdout)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def column_kind(t: pa.DataType) -> str:
    """What a column of Arrow type ``t`` is to a model: ``"float"``, ``"int"``, ``"bool"``,
    ``"category"`` (strings and dictionary columns), or ``"other"`` (not a feature).

    Examples
    --------
    >>> import pyarrow as pa
    >>> [column_kind(t) for t in (pa.float32(), pa.string(), pa.dictionary(pa.int8(), pa.string()))]
    ['float', 'category', 'category']
    """
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_boolean(t):
        return "bool"
    if _is_text(t) or pa.types.is_dictionary(t):
        return "category"
    return "other"


def _same_kind_of_type(t: pa.DataType) -> str:
    """Types that read alike compare equal across files: text of any encoding (plain,
    large, view, dictionary) is one type; every other type only equals itself (a column
    of type null, every value missing in that file, is allowed against any type)."""
    if _is_text(t) or (pa.types.is_dictionary(t) and _is_text(t.value_type)):
        return "text"
    return str(t)


def _fill_null_types(schema: pa.Schema, schemas: list[pa.Schema]) -> pa.Schema:
    """``schema`` with each column of type null (in the files it was taken from: every
    value missing, as pandas writes an empty or all-None object column) given the type
    the column has in another file, if any."""
    for i, column in enumerate(schema):
        if pa.types.is_null(column.type):
            types = [s.field(column.name).type for s in schemas if column.name in s.names]
            typed = [t for t in types if not pa.types.is_null(t)]
            if typed:
                schema = schema.set(i, column.with_type(typed[0]))
    return schema


@dataclass(frozen=True)
class Footer:
    """What one file's footer says: rows of each row group, schema, missing values of each
    column (None where a row group has no statistics)."""

    row_groups: tuple[int, ...]
    schema: pa.Schema
    null_counts: dict


def _null_counts(meta) -> dict:
    counts: dict = {}
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    for group in range(meta.num_row_groups):
        chunk = meta.row_group(group)
        for i, name in enumerate(names):
            stats = chunk.column(i).statistics
            known = stats is not None and stats.has_null_count
            if chunk.num_rows == 0:
                counts.setdefault(name, 0)
            elif not known or counts.get(name, 0) is None:
                counts[name] = None
            else:
                counts[name] = counts.get(name, 0) + stats.null_count
    return counts


def _read_footer(file: Path) -> Footer:
    try:
        meta = pq.read_metadata(file)
        groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        return Footer(groups, meta.schema.to_arrow_schema(), _null_counts(meta))
    except (OSError, pa.ArrowException) as err:
        raise ValueError(
            f"Cannot read the parquet footer of {file}: {str(err).rstrip('.')}. The file is "
            "corrupt or not parquet; remove or replace it."
        ) from err


def read_footers(files) -> list[Footer]:
    """The footer of every file (in threads: footers of many files are I/O)."""
    if len(files) < 32:
        return [_read_footer(f) for f in files]
    with ThreadPoolExecutor(8, thread_name_prefix="ooc-footers") as pool:
        return list(pool.map(_read_footer, files))


def pandas_index_columns(schema: pa.Schema) -> list[str]:
    """Columns that pandas wrote for a DataFrame index: row labels, not data."""
    meta = schema.pandas_metadata or {}
    # A RangeIndex is stored as metadata only (a dict here), not as a column.
    columns = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    # Written without pandas metadata (another writer, or stripped): the default name.
    unnamed = [c for c in schema.names if c.startswith("__index_level_")]
    return columns + [c for c in unnamed if c not in columns]


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
        if pa.types.is_null(want) or pa.types.is_null(got):
            continue  # every value missing in one of them
        if _same_kind_of_type(want) != _same_kind_of_type(got):
            kinds = {column_kind(want), column_kind(got)}
            text = "category" in kinds and kinds & {"float", "int", "bool"}
            why = (
                " It holds text in one file and numbers (or booleans) in the other, so it "
                "cannot be one feature. Fix the writer, or rewrite the odd file with the "
                "column cast to one type (pyarrow.compute.cast); or leave the column out "
                "with features=[...]."
                if text
                else " Rewrite the odd file with the column cast to one type "
                "(pyarrow.compute.cast), or leave the column out with features=[...]."
            )
            raise ValueError(
                f"Schema mismatch: column {name!r} is {got} in {file} but {want} in {first}. "
                f"All files of a dataset must have the same column types.{why}"
            )


def common_schema(found: DatasetFiles, schemas: list[pa.Schema]) -> tuple[Path, pa.Schema]:
    """The schema every file has (naming the odd file out), with the partition columns."""
    files = found.files
    # The reference is the schema most files share (on a tie, the first file's), so an
    # error names the odd file out, even when it sorts first.
    kinds = [tuple((f.name, _same_kind_of_type(f.type)) for f in s) for s in schemas]
    ref = kinds.index(Counter(kinds).most_common(1)[0][0])
    first, schema = files[ref], schemas[ref]
    for file, other in zip(files, schemas, strict=True):
        if file != first:
            _check_same_schema(first, schema, file, other)
    schema = _fill_null_types(schema, schemas)
    for name, kind in zip(found.partition_names, found.partition_types, strict=True):
        if name in schema.names:
            raise ValueError(
                f"Column {name!r} is both a column of {first} and a partition directory "
                f"({name}=...) above it; rename one of them."
            )
        schema = schema.append(pa.field(name, kind))
    return first, schema


def _choose_features(
    schema: pa.Schema, first: Path, target, features, exclude, as_frame
) -> list[str]:
    if target is not None and target not in schema.names:
        raise ValueError(
            f"Target column {target!r} not found in {first}; its columns are {schema.names}. "
            "Pass target=<column name>, or target=None for unsupervised data."
        )
    if features is None:
        left_out = {target, *exclude, *pandas_index_columns(schema)}
        features = [c for c in schema.names if c not in left_out]
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
        kind = column_kind(col_type)
        if pa.types.is_null(col_type):
            raise ValueError(
                f"Feature column {name!r} in {first} has type null: every value of it is "
                "missing, so it has no type and nothing can be learned from it. Leave it "
                "out with features=[...] (or write it with a type, e.g. float64)."
            )
        if kind == "other":
            raise ValueError(
                f"Feature column {name!r} in {first} has type {col_type}; expected a number, "
                "a boolean, a string or a dictionary (categorical) column. Convert it "
                "(e.g. a timestamp to its epoch seconds) or leave it out with features=[...]."
            )
        if kind == "category" and as_frame is False:
            raise ValueError(
                f"Feature column {name!r} in {first} has type {col_type}; expected a numeric "
                "type (integer, floating point or boolean) for a numeric array. Read it as a "
                "dask DataFrame with as_frame=True or 'auto' (and encode it, e.g. "
                "ooc.OnePass with a OneHotEncoder), or leave it out with features=[...]."
            )
    return features


def _resolve_as_frame(as_frame, schema: pa.Schema, features) -> bool:
    if as_frame not in (True, False, "auto"):
        raise ValueError(f"as_frame must be True, False or 'auto', got {as_frame!r}.")
    if as_frame == "auto":
        kinds = {column_kind(schema.field(c).type) for c in features}
        return bool(kinds & {"category", "bool"})
    return bool(as_frame)


def _feature_nulls(footers: list[Footer], features, partition_names) -> tuple:
    counts = []
    for name in features:
        if name in partition_names:
            counts.append(None)  # see ParquetSource.may_be_missing
            continue
        per_file = [f.null_counts.get(name) for f in footers]
        counts.append(None if any(c is None for c in per_file) else int(sum(per_file)))
    return tuple(counts)


def _check_block_rows(block_rows) -> int:
    ok = isinstance(block_rows, numbers.Integral) and not isinstance(block_rows, bool)
    if not (ok and block_rows >= 1):
        raise ValueError(
            f"block_rows must be an int >= 1 (the most rows read at once), got {block_rows!r}."
        )
    return int(block_rows)


def inspect_parquet(
    path: str | os.PathLike,
    target: str | None = "y",
    features: list[str] | None = None,
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    filters=None,
    exclude: tuple[str, ...] = (),
    as_frame: bool | str = False,
    allow_missing: bool | None = None,
) -> ParquetSource:
    """Check a parquet dataset from its footers alone and plan its blocks.

    Parameters
    ----------
    path : path-like
        A parquet file or a directory of parquet files, searched recursively (hive
        ``key=value`` directories give partition columns).
    target : str or None
        Target column; ``None`` for unsupervised data.
    features : list of str, optional
        Feature columns; by default every column except ``target`` and the index
        columns pandas wrote (``__index_level_0__``, a named index).
    block_rows : int, default 500_000
        The most rows in one block (see the module's docstring).
    filters : list of (column, op, value), optional
        Conditions on partition columns that choose files (see
        :func:`ooc.discovery.find_files`).
    exclude : tuple of str, optional
        Columns left out of the default features, whether present or not (a target
        that prediction data may lack).
    as_frame : bool or "auto", default False
        Plan the features as a DataFrame per block (True), as a numeric array (False,
        which refuses string columns), or as a DataFrame only when a feature is a string,
        dictionary or boolean column ("auto"; the default of :func:`ooc.read_parquet`).
    allow_missing : bool, optional
        Read missing feature values as NaN instead of refusing them; by default True
        for a DataFrame and False for an array (see :func:`ooc.read_parquet`).

    Returns
    -------
    ParquetSource

    Raises
    ------
    FileNotFoundError
        No such path, or no parquet file in it.
    ValueError
        A corrupt footer, files whose schemas disagree (a column numeric in one file and
        text in another), a missing target or feature column, or a feature of a type no
        model takes (a string column with ``as_frame=False``); the message names the
        file and column.

    Examples
    --------
    >>> source = inspect_parquet("data/clf", target="y")  # doctest: +SKIP
    >>> source.n_rows, len(source.files), len(source.blocks)  # doctest: +SKIP
    (1000000, 10, 2)
    """
    block_rows = _check_block_rows(block_rows)
    found = find_files(path, filters)
    footers = read_footers(found.files)
    row_groups = tuple(f.row_groups for f in footers)
    first, schema = common_schema(found, [f.schema for f in footers])
    features = _choose_features(schema, first, target, features, exclude, as_frame)
    frame = _resolve_as_frame(as_frame, schema, features)
    allow_missing = frame if allow_missing is None else bool(allow_missing)
    nulls = _feature_nulls(footers, features, found.partition_names)
    target_dtype = None
    if target is not None:
        t = schema.field(target).type
        target_dtype = np.dtype(t.to_pandas_dtype()) if _is_numeric(t) else np.dtype(object)
    source = ParquetSource(
        root=found.root,
        files=found.files,
        row_groups=row_groups,
        blocks=plan_blocks(row_groups, block_rows),
        features=tuple(features),
        target=target,
        dtype=np.dtype(object),
        target_dtype=target_dtype,
        partition_names=found.partition_names,
        partitions=found.partitions,
        block_rows=block_rows,
        schema=schema,
        as_frame=frame,
        allow_missing=allow_missing,
        null_counts=nulls,
    )
    numeric = [c for c in features if source.kind(c) != "category"]
    dtype = np.result_type(*(source.column_dtype(c) for c in numeric)) if numeric else object
    return replace(source, dtype=np.dtype(dtype))
