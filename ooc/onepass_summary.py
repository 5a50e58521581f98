"""What :class:`ooc.OnePass` builds a step from: its input columns, their statistics
and a small summary input that gives the step those statistics.

A step's input columns are :class:`SymCol` s: a column of a base (see :mod:`ooc.passes`)
and the imputations applied to it since, so that a scaler or an encoder after an
imputer takes its statistics from the raw column's, in the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.impute import SimpleImputer

from .colstats import Summary, column_keys
from .passes import Base, Results

__all__ = [
    "Built",
    "SymCol",
    "column_dtype",
    "counts_summary",
    "is_nan",
    "make_like",
    "missing_summary",
    "numeric_summary",
    "padded",
    "placeholder",
    "refuse_empty",
    "scalar",
]


@dataclass(frozen=True)
class SymCol:
    """Column ``key`` of ``root``, then ``ops``: ``("impute", fill)`` (missing values
    replaced by ``fill``) or ``("indicator",)`` (1 where it was missing, else 0)."""

    root: Base
    key: object
    ops: tuple = ()


@dataclass
class Built:
    """A fitted step's output: a base of its values, its first rows, its columns as
    :class:`SymCol` s (None: the base's own columns) and its stored values over all rows
    (``nnz``, when known without a pass; dense outputs count every value)."""

    base: Base
    head: object
    cols: list | None = None
    nnz: int | None = None

    def columns(self) -> list[SymCol]:
        if self.cols is not None:
            return self.cols
        return [SymCol(self.base, key) for key in column_keys(self.head)]


def scalar(value):
    return value.item() if isinstance(value, np.generic) else value


def is_nan(value) -> bool:
    return isinstance(value, float | np.floating) and np.isnan(value)


def numeric_summary(col: SymCol, results: Results) -> Summary:
    summary = results.numeric(col.root, col.key)
    for op in col.ops:
        summary = summary.imputed(float(op[1])) if op[0] == "impute" else summary.indicator()
    return summary


def counts_summary(col: SymCol, results: Results, as_bool: bool = False):
    """The counts of a column; an indicator's values are False/True (``as_bool``: in an
    array of objects, as scikit-learn stacks them with text) or 0.0/1.0."""
    counts = results.counts(col.root, col.key)
    for op in col.ops:
        if op[0] == "impute":
            counts = counts.imputed(op[1])
            continue
        absent, present = (False, True) if as_bool else (0.0, 1.0)
        values = {absent: counts.rows - counts.missing, present: counts.missing}
        counts = replace(counts, counts={v: n for v, n in values.items() if n}, missing=0)
    return counts


def missing_summary(col: SymCol, results: Results) -> tuple[int, int]:
    """(rows, missing) of one column."""
    if col.ops:
        rows, missing = results.missing(col.root, col.key)
        return rows, 0 if any(op[0] == "impute" for op in col.ops) else missing
    return results.missing(col.root, col.key)


def _name(head, j: int) -> str:
    if isinstance(head, pd.DataFrame):
        return repr(head.columns[j])
    return f"{j} (by position)"


def refuse_empty(step, label: str, head, j: int, rows: int) -> None:
    raise ValueError(
        f"OnePass: column {_name(head, j)} is missing in all {rows:,} rows, so "
        f"{type(step).__name__} '{label}' has nothing to learn from it. Leave the column "
        "out (drop it from the ColumnTransformer, or read without it: features=[...])"
        + (
            ", or keep it filled: SimpleImputer(keep_empty_features=True)."
            if isinstance(step, SimpleImputer)
            else "."
        )
    )


# -- summary data --------------------------------------------------------------------------


def _like_column(template: np.dtype, values: list) -> np.ndarray:
    """``values`` as an array of ``template``'s dtype where they fit, else float64 (or
    object for text): what the real column would be with these values."""
    if template.kind in "OSUT":
        return np.array(values, dtype=object)
    array = np.array(values, dtype=object)
    missing = np.array([is_nan(v) or v is None for v in values], dtype=bool)
    try:
        if template.kind in "iub" and not missing.any():
            cast = array.astype(template)
            if np.array_equal(cast.astype(object), array):
                return cast
        return array.astype(template if template.kind == "f" else np.float64)
    except (TypeError, ValueError):  # not numbers (a padding value): as text
        return array


def column_dtype(head, j: int) -> np.dtype:
    if isinstance(head, pd.DataFrame):
        dtype = head.dtypes.iloc[j]
        return np.dtype(dtype) if isinstance(dtype, np.dtype) else np.dtype(object)
    return head.dtype


def make_like(head, columns: list[list]):
    """A small input shaped like ``head`` (same kind, column labels and dtypes), whose
    column ``j`` holds ``columns[j]``."""
    if isinstance(head, pd.DataFrame):
        data = {
            label: _like_column(column_dtype(head, j), values)
            for j, (label, values) in enumerate(zip(head.columns, columns, strict=True))
        }
        return pd.DataFrame(data, columns=head.columns)
    rows = list(zip(*columns, strict=True))
    if sp.issparse(head):
        dense = np.array(rows, dtype=np.float64).reshape(len(rows), head.shape[1])
        return type(head)(dense.astype(head.dtype))
    flat = [v for row in rows for v in row]
    array = _like_column(head.dtype, flat)
    return array.reshape(len(rows), head.shape[1])


def padded(columns: list[list]) -> list[list]:
    """Columns of equal length: each short one repeats its first value."""
    rows = max(len(c) for c in columns)
    return [c + [c[0]] * (rows - len(c)) for c in columns]


def placeholder(head, j: int):
    """A present value of column ``j`` (for a row whose value does not matter)."""
    column = head.iloc[:, j] if isinstance(head, pd.DataFrame) else head[:, j]
    column = column.toarray().ravel() if sp.issparse(column) else np.asarray(column)
    present = [v for v in column.tolist() if not (is_nan(v) or v is None)]
    if present:
        return present[0]
    return "" if column_dtype(head, j).kind in "OSUT" else 0.0
