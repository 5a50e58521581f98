"""Checks of a dataset from its parquet footers, before any block is read.

Parquet writers store each column chunk's null count and min/max: a missing value, an
infinite value, or a target with a single class is found without reading the data.
(NaN is not in the statistics; reading the block finds it, naming file, column and row.)
"""

from __future__ import annotations

import math

import pyarrow.compute as pc
import pyarrow.parquet as pq

from .layout import ParquetSource

__all__ = ["check_classes", "check_footer_statistics"]


def _show(files, at_most: int = 3) -> str:
    names = ", ".join(str(f) for f in files[:at_most])
    return f"{names}, … ({len(files)} files)" if len(files) > at_most else names


def _column_index(meta) -> dict[str, int]:
    return {meta.schema.column(i).name: i for i in range(meta.num_columns)}


def check_footer_statistics(source: ParquetSource) -> None:
    """Refuse missing values and infinities that the footers already show.

    Raises
    ------
    ValueError
        Naming the file, the column and the row group.

    Examples
    --------
    >>> check_footer_statistics(ooc.inspect_parquet("data/clf"))  # doctest: +SKIP
    """
    columns = [*source.features, *([source.target] if source.target else [])]
    columns = [c for c in columns if c not in source.partition_names]
    for file in source.files:
        meta = pq.read_metadata(file)
        index = _column_index(meta)
        for group in range(meta.num_row_groups):
            chunks = meta.row_group(group)
            for name in columns:
                stats = chunks.column(index[name]).statistics
                if stats is None:
                    continue
                if stats.null_count:
                    raise ValueError(
                        f"{file}: column {name!r} has {stats.null_count} missing value(s) "
                        f"(row group {group}, from the file's footer). Drop or impute them "
                        "before fitting."
                    )
                if stats.has_min_max and isinstance(stats.min, float):
                    for value in (stats.min, stats.max):
                        if math.isinf(value):
                            raise ValueError(
                                f"{file}: column {name!r} holds {value} (row group {group}, "
                                "from the file's footer); expected finite numbers. Drop or "
                                "replace the infinite values before fitting."
                            )


def check_classes(source: ParquetSource) -> None:
    """A classifier's training data must hold at least two classes of the target.

    Reads the target's min/max from the footers, and only where a footer has none the
    target column itself (never the features), file by file until two classes are seen.

    Raises
    ------
    ValueError
        If every file holds a single class (or none), naming the files and the class.
    """
    seen: set = set()
    unknown = []
    used = sorted({piece.file for block in source.blocks for piece in block})
    files = [source.files[i] for i in used]
    for file in files:
        meta = pq.read_metadata(file)
        column = _column_index(meta)[source.target]
        for group in range(meta.num_row_groups):
            chunk = meta.row_group(group)
            stats = chunk.column(column).statistics
            if chunk.num_rows == 0:
                continue
            if stats is None or not stats.has_min_max:
                unknown.append(file)
                break
            seen.update((stats.min, stats.max))
        if len(seen) >= 2:
            return
    for file in dict.fromkeys(unknown):
        values = pq.read_table(file, columns=[source.target]).column(source.target)
        seen.update(pc.unique(values).to_pylist())
        if len(seen) >= 2:
            return
    found = f"one class ({next(iter(seen))!r})" if seen else "no values"
    raise ValueError(
        f"Target column {source.target!r} has {found} in all training files "
        f"({_show(files)}): a classifier needs at least two; check the data or the "
        "target name."
    )
