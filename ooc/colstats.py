"""Mergeable statistics of columns of row blocks: what :class:`ooc.OnePass` fits from.

Each kind reduces one block's columns to a few numbers and merges with another block's,
so that a tree of merges over all blocks gives the statistics of all the rows:

- :class:`Numeric`: rows, non-missing count, mean and M2 (sums of deviations about a
  shift, merged with Chan's update, so a large offset costs no precision), min and
  max, ignoring NaN; infinities are refused;
- :class:`Counts`: each distinct value's count and the missing count, bounded: past a
  column's bound the pass stops with an error naming the column;
- :class:`Missing`: the missing count alone;
- :class:`Nnz`: the stored values of a (sparse) output.

:mod:`ooc.passes` computes them over every block in one read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .blocks import n_rows

__all__ = [
    "KINDS",
    "ColumnCounts",
    "Counts",
    "HighCardinalityError",
    "Missing",
    "Nnz",
    "Numeric",
    "Spec",
    "Summary",
    "column_keys",
    "select",
]

ALL = None  # every column


def select(values, keys, ndim: int = 2):
    """Columns ``keys`` (labels of a DataFrame, else positions) as scikit-learn's
    ``ColumnTransformer`` gives them: a 1-D selection for ``ndim=1``."""
    if isinstance(values, pd.DataFrame):
        return values[keys[0]] if ndim == 1 else values[list(keys)]
    if ndim == 1:
        column = values[:, keys[0]]
        return column.toarray().ravel() if sp.issparse(column) else column
    return values[:, list(keys)]


def column_keys(values) -> list:
    if isinstance(values, pd.DataFrame):
        return list(values.columns)
    return list(range(values.shape[1]))


@dataclass
class Spec:
    """What one block computes for one (base, kind): the columns, who asks for each and,
    for counts, each column's bound and what the error past it advises."""

    keys: list | None
    steps: dict = field(default_factory=dict)
    bounds: dict = field(default_factory=dict)
    advice: dict = field(default_factory=dict)
    step: str = "a step"  # for every column, when asked for ALL columns
    bound: int | None = None
    all_advice: str = ""

    def step_of(self, key) -> str:
        return self.steps.get(key, self.step)

    def bound_of(self, key) -> tuple[int | None, str]:
        """The least bound on the distinct values of column ``key``, and its advice."""
        bound, advice = self.bounds.get(key), self.advice.get(key, "")
        if self.bound is not None and (bound is None or self.bound < bound):
            return self.bound, self.all_advice
        return bound, advice


class HighCardinalityError(ValueError):
    """A column has more distinct values than a step may count."""


def _float_block(values, keys, spec: Spec) -> np.ndarray:
    data = values if keys is None else select(values, keys)
    if isinstance(data, pd.DataFrame):
        try:
            return data.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as err:
            bad = [c for c in data.columns if not pd.api.types.is_numeric_dtype(data[c])]
            who = ", ".join(sorted({spec.step_of(c) for c in bad}))
            raise ValueError(
                f"OnePass: {who or 'a step'} needs numbers, but column(s) {bad} hold "
                f"{[str(data[c].dtype) for c in bad]} values ({err}). Encode them "
                "(OneHotEncoder, OrdinalEncoder) or send them to another transformer."
            ) from err
    if sp.issparse(data):
        return data
    return np.asarray(data, dtype=np.float64)


def _refuse_infinity(data: np.ndarray, keys, spec: Spec) -> None:
    with np.errstate(invalid="ignore", over="ignore"):
        if not np.isinf(data.sum()) and not np.isnan(data.sum()):
            return
    bad = np.isinf(data)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        key = keys[col]
        raise ValueError(
            f"OnePass: column {_show(key)} holds {data[row, col]} ({int(bad[:, col].sum())} "
            f"infinite value(s) in this block), for {spec.step_of(key)}; "
            "expected finite numbers or missing values (NaN). Replace them before fitting."
        )


def _show(key) -> str:
    return repr(key) if isinstance(key, str) else f"{key} (by position)"


@dataclass
class Numeric:
    """Per column: non-missing count, shift, sum of deviations from it, M2, min, max."""

    keys: list
    rows: int
    obs: np.ndarray
    shift: np.ndarray
    dev_sum: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def of(cls, values, keys, spec: Spec) -> Numeric:
        data = _float_block(values, keys, spec)
        keys = column_keys(values) if keys is None else list(keys)
        if sp.issparse(data):
            return cls._of_sparse(data, keys)
        _refuse_infinity(data, keys, spec)
        rows, k = data.shape
        missing = np.isnan(data)
        if not missing.any():
            shift = data[0].copy()
            dev = data - shift
            dev_sum = dev.sum(axis=0)
            m2 = ((dev - dev_sum / rows) ** 2).sum(axis=0)
            obs = np.full(k, rows, dtype=np.int64)
            return cls(keys, rows, obs, shift, dev_sum, m2, data.min(axis=0), data.max(axis=0))
        obs = (~missing).sum(axis=0).astype(np.int64)
        shift, dev_sum, m2 = np.zeros(k), np.zeros(k), np.zeros(k)
        low, high = np.full(k, np.nan), np.full(k, np.nan)
        for j in range(k):
            column = data[~missing[:, j], j]
            if len(column):
                shift[j] = column[0]
                dev = column - shift[j]
                dev_sum[j] = dev.sum()
                m2[j] = np.sum((dev - dev_sum[j] / len(column)) ** 2)
                low[j], high[j] = column.min(), column.max()
        return cls(keys, rows, obs, shift, dev_sum, m2, low, high)

    @classmethod
    def _of_sparse(cls, data, keys) -> Numeric:
        data = sp.csc_matrix(data, dtype=np.float64)
        rows, width = data.shape
        nan = np.isnan(data.data)
        owner = np.repeat(np.arange(width), np.diff(data.indptr))
        clean = data.copy()
        clean.data[nan] = 0.0
        obs = (rows - np.bincount(owner[nan], minlength=width)).astype(np.int64)
        total = np.asarray(clean.sum(axis=0)).ravel()
        squares = np.asarray(clean.multiply(clean).sum(axis=0)).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            m2 = np.where(obs > 0, squares - total**2 / np.maximum(obs, 1), 0.0)
        low = clean.min(axis=0).toarray().ravel()
        high = clean.max(axis=0).toarray().ravel()
        return cls(keys, rows, obs, np.zeros(len(keys)), total, np.maximum(m2, 0.0), low, high)

    def merge(self, other: Numeric) -> Numeric:
        na, nb = self.obs, other.obs
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            offset = other.shift - self.shift
            delta = (offset + other.dev_sum / nb) - self.dev_sum / na
            dev_sum = self.dev_sum + other.dev_sum + nb * offset
            m2 = self.m2 + other.m2 + delta**2 * (na * nb / n)
        only_a, only_b = nb == 0, na == 0
        dev_sum = np.where(only_a, self.dev_sum, np.where(only_b, other.dev_sum, dev_sum))
        m2 = np.where(only_a, self.m2, np.where(only_b, other.m2, m2))
        shift = np.where(only_b, other.shift, self.shift)
        return Numeric(
            self.keys,
            self.rows + other.rows,
            n,
            shift,
            dev_sum,
            m2,
            np.fmin(self.min, other.min),
            np.fmax(self.max, other.max),
        )

    def column(self, key) -> Summary:
        j = self.keys.index(key)
        obs = int(self.obs[j])
        mean = self.shift[j] + self.dev_sum[j] / obs if obs else np.nan
        return Summary(self.rows, obs, mean, self.m2[j], self.min[j], self.max[j])


@dataclass(frozen=True)
class Summary:
    """One column's numeric statistics (what the scalers and the mean imputer need)."""

    rows: int
    obs: int
    mean: float
    m2: float
    min: float
    max: float

    @property
    def missing(self) -> int:
        return self.rows - self.obs

    def imputed(self, fill: float) -> Summary:
        """The statistics after every missing value is replaced by ``fill``: the mean
        moves toward it, M2 gains the spread between them (none when ``fill`` is the
        mean), and min/max take it in."""
        k = self.missing
        if k == 0:
            return self
        if self.obs == 0:
            return Summary(self.rows, self.rows, fill, 0.0, fill, fill)
        n = self.rows
        mean = self.mean + (fill - self.mean) * k / n
        m2 = self.m2 + (self.mean - fill) ** 2 * self.obs * k / n
        return Summary(n, n, mean, m2, min(self.min, fill), max(self.max, fill))

    def indicator(self) -> Summary:
        """The statistics of the column's missing-value indicator (0 or 1)."""
        n, k = self.rows, self.missing
        p = k / n
        low = 0.0 if self.obs else 1.0
        return Summary(n, n, p, n * p * (1 - p), low, 1.0 if k else 0.0)


def _is_missing(values) -> np.ndarray:
    return np.asarray(pd.isna(values))


def _value_counts(column) -> tuple[dict, int]:
    """(counts of each non-missing value, missing count) of one column."""
    if isinstance(column, pd.Series) and isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        present = codes >= 0
        counts = np.bincount(codes[present], minlength=len(column.cat.categories))
        hit = np.flatnonzero(counts)
        categories = column.cat.categories[hit].tolist()
        return dict(zip(categories, counts[hit].tolist(), strict=True)), int((~present).sum())
    array = column.to_numpy() if isinstance(column, pd.Series) else np.asarray(column)
    if array.dtype.kind in "biuf":
        present = ~np.isnan(array) if array.dtype.kind == "f" else np.ones(len(array), bool)
        values, counts = np.unique(array[present], return_counts=True)
        if array.dtype.kind == "f" and len(values) and np.isinf(values[[0, -1]]).any():
            raise ValueError(
                "OnePass: a column to count holds an infinite value; expected finite "
                "numbers, strings or missing values (NaN). Replace them before fitting."
            )
        return dict(zip(values.tolist(), counts.tolist(), strict=True)), int((~present).sum())
    series = pd.Series(array, dtype=object)
    missing = series.isna()
    try:
        counts = series[~missing].value_counts(sort=False)
        found = dict(zip(counts.index.tolist(), counts.tolist(), strict=True))
    except TypeError as err:  # unhashable values: a dict, a list
        kinds = sorted({type(v).__name__ for v in series[~missing]} - {"str"})
        raise TypeError(
            f"OnePass: a column to count holds values of type {kinds}, but each value "
            "passed as argument must be a string or a number (what an encoder can count)."
        ) from err
    return found, int(missing.sum())


@dataclass
class Counts:
    """Per column: each value's count and the missing count."""

    keys: list
    rows: int
    values: list
    missing: list
    spec: Spec

    @classmethod
    def of(cls, values, keys, spec: Spec, block: int) -> Counts:
        keys = column_keys(values) if keys is None else list(keys)
        found, missing = [], []
        for key in keys:
            column = _column(values, key)
            counts, k = _value_counts(column)
            _check_bound(spec, key, len(counts), f"in block {block} alone")
            found.append(counts)
            missing.append(k)
        return cls(keys, n_rows(values), found, missing, spec)

    def merge(self, other: Counts) -> Counts:
        merged = []
        for key, a, b in zip(self.keys, self.values, other.values, strict=True):
            if len(b) > len(a):
                a, b = b, a
            out = dict(a)
            for value, count in b.items():
                out[value] = out.get(value, 0) + count
            _check_bound(self.spec, key, len(out), "so far")
            merged.append(out)
        missing = [a + b for a, b in zip(self.missing, other.missing, strict=True)]
        return Counts(self.keys, self.rows + other.rows, merged, missing, self.spec)

    def column(self, key) -> ColumnCounts:
        j = self.keys.index(key)
        return ColumnCounts(self.rows, dict(self.values[j]), self.missing[j])


@dataclass(frozen=True)
class ColumnCounts:
    rows: int
    counts: dict
    missing: int

    def imputed(self, fill) -> ColumnCounts:
        """The counts after every missing value is replaced by ``fill``."""
        if not self.missing:
            return self
        counts = dict(self.counts)
        fill = fill.item() if isinstance(fill, np.generic) else fill
        counts[fill] = counts.get(fill, 0) + self.missing
        return ColumnCounts(self.rows, counts, 0)


def _check_bound(spec: Spec, key, count: int, when: str) -> None:
    bound, advice = spec.bound_of(key)
    if bound is not None and count > bound:
        step = spec.step_of(key)
        raise HighCardinalityError(
            f"OnePass: column {_show(key)} has more than {bound:,} distinct values ({count:,} "
            f"counted {when}), too many for {step}; counting stopped there. {advice}"
        )


def _column(values, key):
    if isinstance(values, pd.DataFrame):
        return values[key]
    column = values[:, key]
    return column.toarray().ravel() if sp.issparse(column) else column


@dataclass
class Missing:
    keys: list
    rows: int
    missing: np.ndarray

    @classmethod
    def of(cls, values, keys, spec: Spec, block: int) -> Missing:
        keys = column_keys(values) if keys is None else list(keys)
        counts = [int(_is_missing(_column(values, key)).sum()) for key in keys]
        return cls(keys, n_rows(values), np.array(counts, dtype=np.int64))

    def merge(self, other: Missing) -> Missing:
        return Missing(self.keys, self.rows + other.rows, self.missing + other.missing)

    def column(self, key) -> tuple[int, int]:
        """(rows, missing) of one column."""
        return self.rows, int(self.missing[self.keys.index(key)])


@dataclass
class Nnz:
    rows: int
    nnz: int
    size: int
    sparse: bool

    @classmethod
    def of(cls, values, keys, spec: Spec, block: int) -> Nnz:
        rows, width = values.shape[0], (values.shape[1] if values.ndim == 2 else 1)
        if sp.issparse(values):
            return cls(rows, int(values.nnz), rows * width, True)
        return cls(rows, rows * width, rows * width, False)

    def merge(self, other: Nnz) -> Nnz:
        return Nnz(
            self.rows + other.rows,
            self.nnz + other.nnz,
            self.size + other.size,
            self.sparse or other.sparse,
        )


KINDS = {"numeric": Numeric, "counts": Counts, "missing": Missing, "nnz": Nnz}
