"""How :class:`ooc.OnePass` builds a ``OneHotEncoder`` or an ``OrdinalEncoder`` from the
count of each value of its columns.

The encoder is fitted on a summary holding each value once. With ``min_frequency`` or
``max_categories``, the infrequent values are found from the real counts (scikit-learn's
documented rule) and the summary holds them once and the others twice, fitted with
``min_frequency=2``; the user's parameters are set back after. A one-hot encoder's
stored values over all rows (what decides a ``ColumnTransformer``'s ``sparse_output_``)
follow from the counts too.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import clone
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from .onepass_summary import (
    Built,
    column_dtype,
    counts_summary,
    is_nan,
    make_like,
    padded,
    refuse_empty,
    scalar,
)
from .passes import Results

__all__ = ["build_encoder", "grouping"]


def grouping(step) -> bool:
    """Whether the encoder groups infrequent categories."""
    return step.min_frequency is not None or step.max_categories is not None


def _infrequent(counts: np.ndarray, rows: int, step) -> np.ndarray:
    """Which categories scikit-learn groups as infrequent (its documented rule: fewer
    than ``min_frequency``, then all but the ``max_categories - 1`` most frequent, ties
    broken by category order)."""
    low = step.min_frequency
    if isinstance(low, numbers.Integral):
        mask = counts < low
    elif isinstance(low, numbers.Real):
        mask = counts < rows * low
    else:
        mask = np.zeros(len(counts), dtype=bool)
    current = counts.size - mask.sum() + 1
    if step.max_categories is not None and step.max_categories < current:
        frequent = step.max_categories - 1
        if frequent == 0:
            mask[:] = True
        else:
            mask[np.argsort(counts, kind="mergesort")[:-frequent]] = True
    return mask


def _count_of(counts, value) -> int:
    if is_nan(value) or value is None:
        return counts.missing
    return counts.counts.get(scalar(value), 0)


def build_encoder(step, inp: Built, results: Results, label: str):
    """The fitted encoder, no derived columns (its output is new columns), and for a
    sparse one-hot encoder the stored values of its output over all rows."""
    cols = inp.columns()
    text = [column_dtype(inp.head, j).kind == "O" for j in range(len(cols))]
    counts = [counts_summary(c, results, t) for c, t in zip(cols, text, strict=True)]
    observed = []
    for j, c in enumerate(counts):
        if c.missing == c.rows:
            refuse_empty(step, label, inp.head, j, c.rows)
        observed.append(list(c.counts) + ([np.nan] if c.missing else []))
    plain = {"min_frequency": None, "max_categories": None}
    probe = clone(step).set_params(**plain).fit(make_like(inp.head, padded(observed)))
    if not grouping(step):
        fitted = probe
    else:
        fitted = _grouped(step, inp.head, probe.categories_, counts)
    nnz = None
    if isinstance(step, OneHotEncoder) and step.sparse_output:
        nnz = sum(c.rows - _zero_rows(fitted, j, c) for j, c in enumerate(counts))
    return fitted, None, nnz


def _grouped(step, head, categories, counts):
    """The encoder fitted on a summary where the infrequent categories (found from the
    real counts) occur once and the others twice, with ``min_frequency=2``."""
    ordinal = isinstance(step, OrdinalEncoder)
    columns, frequents = [], []
    for cats, c in zip(categories, counts, strict=True):
        values = cats.tolist()
        n = np.array([_count_of(c, v) for v in values])
        nan = np.array([is_nan(v) for v in values], dtype=bool)
        kept = ~nan if ordinal else np.ones(len(values), dtype=bool)  # NaN: never rare
        mask = np.zeros(len(values), dtype=bool)
        mask[kept] = _infrequent(n[kept], c.rows, step)
        columns.append([v for v, m in zip(values, mask, strict=True) for _ in range(2 - m)])
        frequents.append([v for v, m in zip(values, mask, strict=True) if not m])
    rows = max(len(column) for column in columns)
    unknown = False
    for column, frequent in zip(columns, frequents, strict=True):
        short = rows - len(column)
        if short and frequent:  # more of a frequent value: it stays frequent
            column.extend([frequent[0]] * short)
        elif short:  # every value is rare: pad with one that is no category
            unknown = True
            column.extend([_unknown_value(column)] * short)
    params = {"categories": list(categories), "min_frequency": 2, "max_categories": None}
    if unknown and ordinal:
        taken = step.encoded_missing_value
        params.update(handle_unknown="use_encoded_value", unknown_value=-3 if taken == -2 else -2)
    elif unknown:
        params["handle_unknown"] = "ignore"
    fitted = clone(step).set_params(**params).fit(make_like(head, columns))
    original = step.get_params(deep=False)
    fitted.set_params(**{name: original[name] for name in params})
    return fitted


def _unknown_value(values: list):
    """A value of the column's type that is none of its categories."""
    numbers_ = [v for v in values if isinstance(v, numbers.Number) and not is_nan(v)]
    if numbers_ and not any(isinstance(v, bool | np.bool_) for v in numbers_):
        return max(numbers_) + 1
    return "\x00ooc-unknown"


def _zero_rows(fitted: OneHotEncoder, j: int, counts) -> int:
    """Training rows of column ``j`` that one-hot encode to no 1 (the dropped category,
    or the infrequent group when it is dropped; values outside ``categories``)."""
    cats = fitted.categories_[j].tolist()
    infrequent = getattr(fitted, "infrequent_categories_", [None] * (j + 1))[j]
    infrequent = [] if infrequent is None else infrequent.tolist()
    zero = 0
    dropped = None if fitted.drop_idx_ is None else fitted.drop_idx_[j]
    infrequent_dropped = False
    if dropped is not None:
        value = cats[dropped]
        if any(_same(value, v) for v in infrequent):
            infrequent_dropped = True
            zero += sum(_count_of(counts, v) for v in infrequent)
        else:
            zero += _count_of(counts, value)
    unknown = counts.rows - sum(_count_of(counts, v) for v in cats)
    if unknown:
        to_group = fitted.handle_unknown in ("infrequent_if_exist", "warn") and infrequent
        if not to_group or infrequent_dropped:
            zero += unknown
    return zero


def _same(a, b) -> bool:
    return (is_nan(a) and is_nan(b)) or (not is_nan(a) and a == b)
