"""Checks of a dataset from its parquet footers, before any block is read.

Parquet writers store each column chunk's null count and min/max: a missing value, an
infinite value, or a target with a single class is found without reading the data.
(NaN is not in the statistics; reading the block finds it, naming file, column and row.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from .layout import ParquetSource

__all__ = ["FooterReport", "check_classes", "check_footer_statistics"]


@dataclass(frozen=True)
class FooterReport:
    """What the footers say about missing feature values.

    Attributes
    ----------
    null_counts : dict of str to int
        Missing values of each feature that has any (features without are left out).
    unknown : tuple of str
        Features some footer has no null count for (they may have missing values).
    first_missing : dict of str to (Path, int)
        The file and row group of each such feature's first missing values.
    n_rows : int
        Rows of the files checked.
    """

    null_counts: dict = field(default_factory=dict)
    unknown: tuple = ()
    first_missing: dict = field(default_factory=dict)
    n_rows: int = 0

    @property
    def has_missing(self) -> bool:
        return bool(self.null_counts)

    def missing_fraction(self, name: str) -> float:
        """Share of the rows where feature ``name`` is missing."""
        return self.null_counts.get(name, 0) / self.n_rows if self.n_rows else 0.0

    def raise_for_missing(self) -> None:
        """Refuse any missing feature value, naming the file, the column and the row group.

        Raises
        ------
        ValueError
        """
        for name, count in self.null_counts.items():
            file, group = self.first_missing[name]
            raise ValueError(
                f"{file}: column {name!r} has {count} missing value(s) (row group {group}, "
                "from the file's footer; all files checked). Drop or impute them before "
                "fitting (read them as NaN with allow_missing=True and impute them)."
            )


def _show(files, at_most: int = 3) -> str:
    names = ", ".join(str(f) for f in files[:at_most])
    return f"{names}, … ({len(files)} files)" if len(files) > at_most else names


def _column_index(meta) -> dict[str, int]:
    return {meta.schema.column(i).name: i for i in range(meta.num_columns)}


def check_footer_statistics(
    source: ParquetSource, *, allow_missing: bool | None = None
) -> FooterReport:
    """Refuse what the footers already show is wrong; report missing feature values.

    Infinities (in any column) and missing values of the target are refused. Missing
    feature values are reported, or refused when they are not allowed.

    Parameters
    ----------
    source : ParquetSource
    allow_missing : bool, optional
        Whether missing feature values are allowed; by default as the source reads them
        (``source.allow_missing``: a DataFrame allows them, a numeric array does not).

    Returns
    -------
    FooterReport
        The missing values of each feature, from the footers.

    Raises
    ------
    ValueError
        Naming the file, the column and the row group.

    Examples
    --------
    >>> report = check_footer_statistics(ooc.inspect_parquet("data/clf"))  # doctest: +SKIP
    >>> report.null_counts  # doctest: +SKIP
    {'x3': 120}
    """
    allow = source.allow_missing if allow_missing is None else allow_missing
    features = [c for c in source.features if c not in source.partition_names]
    columns = [*features, *([source.target] if source.target else [])]
    counts: dict[str, int] = {}
    first: dict[str, tuple[Path, int]] = {}
    unknown: set[str] = set()
    n_rows = 0
    for file in source.files:
        meta = pq.read_metadata(file)
        index = _column_index(meta)
        n_rows += meta.num_rows
        for group in range(meta.num_row_groups):
            chunks = meta.row_group(group)
            for name in columns:
                stats = chunks.column(index[name]).statistics
                if stats is None:
                    if chunks.num_rows:
                        unknown.add(name)
                    continue
                if stats.null_count and (name == source.target or not allow):
                    what = "target column" if name == source.target else "column"
                    fix = (
                        "Drop these rows before fitting."
                        if name == source.target
                        else "Drop or impute them before fitting (read them as NaN with "
                        "allow_missing=True and impute them)."
                    )
                    raise ValueError(
                        f"{file}: {what} {name!r} has {stats.null_count} missing value(s) "
                        f"(row group {group}, from the file's footer). {fix}"
                    )
                if stats.null_count:
                    counts[name] = counts.get(name, 0) + stats.null_count
                    first.setdefault(name, (file, group))
                if stats.has_min_max and isinstance(stats.min, float):
                    for value in (stats.min, stats.max):
                        if math.isinf(value):
                            raise ValueError(
                                f"{file}: column {name!r} holds {value} (row group {group}, "
                                "from the file's footer); expected finite numbers. Drop or "
                                "replace the infinite values before fitting."
                            )
    order = {name: i for i, name in enumerate(features)}
    return FooterReport(
        null_counts={k: counts[k] for k in sorted(counts, key=order.get)},
        unknown=tuple(c for c in features if c in unknown),
        first_missing=first,
        n_rows=n_rows,
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
