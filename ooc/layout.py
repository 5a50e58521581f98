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

__all__ = ["DEFAULT_BLOCK_ROWS", "ParquetSource", "Piece", "inspect_parquet", "plan_blocks"]

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


def _read_footer(file: Path) -> tuple[tuple[int, ...], pa.Schema]:
    try:
        meta = pq.read_metadata(file)
        groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        return groups, meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as err:
        raise ValueError(
            f"Cannot read the parquet footer of {file}: {err}. The file is corrupt or not "
            "parquet; remove or replace it."
        ) from err


def read_footers(files) -> list[tuple[tuple[int, ...], pa.Schema]]:
    """Row groups and schema of every file (in threads: footers of many files are I/O)."""
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
        if want != got:
            raise ValueError(
                f"Schema mismatch: column {name!r} is {got} in {file} but {want} in {first}. "
                "All files of a dataset must have the same column types."
            )


def common_schema(found: DatasetFiles, schemas: list[pa.Schema]) -> tuple[Path, pa.Schema]:
    """The schema every file has (naming the odd file out), with the partition columns."""
    files = found.files
    # The reference is the schema most files share (on a tie, the first file's), so an
    # error names the odd file out, even when it sorts first.
    kinds = [tuple((f.name, str(f.type)) for f in s) for s in schemas]
    ref = kinds.index(Counter(kinds).most_common(1)[0][0])
    first, schema = files[ref], schemas[ref]
    for file, other in zip(files, schemas, strict=True):
        if file != first:
            _check_same_schema(first, schema, file, other)
    for name, kind in zip(found.partition_names, found.partition_types, strict=True):
        if name in schema.names:
            raise ValueError(
                f"Column {name!r} is both a column of {first} and a partition directory "
                f"({name}=...) above it; rename one of them."
            )
        schema = schema.append(pa.field(name, kind))
    return first, schema


def _choose_features(schema: pa.Schema, first: Path, target, features, exclude) -> list[str]:
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
        if not _is_numeric(col_type):
            raise ValueError(
                f"Feature column {name!r} in {first} has type {col_type}; expected a numeric "
                "type (integer, floating point or boolean). Encode it as numbers first, or "
                "leave it out with features=[...]."
            )
    return features


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

    Returns
    -------
    ParquetSource

    Raises
    ------
    FileNotFoundError
        No such path, or no parquet file in it.
    ValueError
        A corrupt footer, files whose schemas disagree, a missing target or feature
        column, or a non-numeric feature column; the message names the file and column.

    Examples
    --------
    >>> source = inspect_parquet("data/clf", target="y")  # doctest: +SKIP
    >>> source.n_rows, len(source.files), len(source.blocks)  # doctest: +SKIP
    (1000000, 10, 2)
    """
    block_rows = _check_block_rows(block_rows)
    found = find_files(path, filters)
    footers = read_footers(found.files)
    row_groups = tuple(groups for groups, _ in footers)
    first, schema = common_schema(found, [s for _, s in footers])
    features = _choose_features(schema, first, target, features, exclude)
    dtype = np.result_type(*(schema.field(c).type.to_pandas_dtype() for c in features))
    target_dtype = None
    if target is not None:
        t = schema.field(target).type
        target_dtype = np.dtype(t.to_pandas_dtype()) if _is_numeric(t) else np.dtype(object)
    return ParquetSource(
        root=found.root,
        files=found.files,
        row_groups=row_groups,
        blocks=plan_blocks(row_groups, block_rows),
        features=tuple(features),
        target=target,
        dtype=np.dtype(dtype),
        target_dtype=target_dtype,
        partition_names=found.partition_names,
        partitions=found.partitions,
        block_rows=block_rows,
        schema=schema,
    )
