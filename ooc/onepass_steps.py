"""How :class:`ooc.OnePass` fits each supported scikit-learn step from column statistics.

Each stateful step says which statistics of its input columns it needs (``needs``) and
builds the fitted scikit-learn object from them (``build``). The object is made with
public API only: a clone of the step is fitted on a small **summary** of the data, a few
rows that give it exactly the statistics of the whole data (each category once or
twice, the imputer's fill value, each column's min and max); where a summary cannot
give a statistic exactly (the count of rows, a mean and a variance), the step's public
learned attribute is set to the value computed from the whole data. Inputs and
summaries: :mod:`ooc.onepass_summary`; encoders: :mod:`ooc.onepass_encoders`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.feature_extraction import FeatureHasher
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)

from .colstats import Summary
from .onepass_encoders import build_encoder, grouping
from .onepass_summary import (
    Built,
    SymCol,
    column_dtype,
    counts_summary,
    make_like,
    missing_summary,
    numeric_summary,
    placeholder,
    refuse_empty,
    scalar,
)
from .passes import Base, Need, Results
from .preprocessing import MinMaxScaler as BlockMinMaxScaler
from .preprocessing import StandardScaler as BlockStandardScaler

__all__ = ["build_stateless", "build_step", "kind_of", "propagates", "step_needs"]

# ooc's own scalers hold the same fitted attributes as scikit-learn's, so either is set
# from the merged statistics the same way.
STANDARD = (StandardScaler, BlockStandardScaler)
SCALERS = (*STANDARD, MinMaxScaler, MaxAbsScaler, BlockMinMaxScaler)
ENCODERS = (OneHotEncoder, OrdinalEncoder)
STATELESS = (FunctionTransformer, FeatureHasher)
SUPPORTED = (
    "StandardScaler, MinMaxScaler, MaxAbsScaler (scikit-learn's or ooc's), SimpleImputer "
    "(mean, most_frequent, constant), OneHotEncoder, OrdinalEncoder, FunctionTransformer, "
    "FeatureHasher, 'passthrough' and 'drop', in Pipelines and ColumnTransformers"
)


def kind_of(step) -> str:
    """``"skip"``, ``"stateless"``, ``"imputer"``, ``"scaler"``, ``"encoder"``,
    ``"pipeline"`` or ``"columns"``; other steps are refused."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if step is None or (isinstance(step, str) and step == "passthrough"):
        return "skip"
    if isinstance(step, Pipeline):
        return "pipeline"
    if isinstance(step, ColumnTransformer):
        return "columns"
    if isinstance(step, STATELESS):
        return "stateless"
    if isinstance(step, SimpleImputer):
        _check_imputer(step)
        return "imputer"
    if isinstance(step, SCALERS):
        return "scaler"
    if isinstance(step, ENCODERS):
        return "encoder"
    raise TypeError(
        f"OnePass cannot fit {type(step).__name__} out of core: its statistics are not "
        f"known to merge across blocks. Supported steps: {SUPPORTED}."
    )


def _check_imputer(step: SimpleImputer) -> None:
    missing = step.missing_values
    if not (isinstance(missing, float) and np.isnan(missing)):
        raise ValueError(
            f"OnePass: SimpleImputer(missing_values={missing!r}) is not supported; missing "
            "values are NaN (parquet nulls are read as NaN). Keep missing_values=np.nan."
        )
    if step.strategy == "median":
        raise ValueError(
            "OnePass: SimpleImputer(strategy='median') is not supported: the exact median "
            "is not a statistic that merges across blocks, and an approximate one would "
            "not equal scikit-learn's. Use strategy='mean' or 'most_frequent', or compute "
            "the median yourself and pass strategy='constant', fill_value=<median>."
        )
    if callable(step.strategy) or step.strategy not in ("mean", "most_frequent", "constant"):
        raise ValueError(
            f"OnePass: SimpleImputer(strategy={step.strategy!r}) is not supported; use "
            "'mean', 'most_frequent' or 'constant'."
        )


def step_needs(step, kind: str, root: Base, keys, label: str, ctx) -> list[Need]:
    """The statistics of columns ``keys`` of ``root`` that ``step`` is fitted from."""
    label = f"{type(step).__name__} '{label}'"
    if kind == "imputer":
        stat = {"mean": "numeric", "most_frequent": "counts", "constant": "missing"}
        wanted = stat[step.strategy]
        bound = ctx.max_counted if wanted == "counts" else None
        advice = (
            "Impute this column with strategy='mean' or 'constant', or hash it (see "
            "ooc.column_tokens)."
        )
        return [Need(root, keys, wanted, label, bound, advice)]
    if kind == "scaler":
        return [Need(root, keys, "numeric", label)]
    if kind == "encoder":
        one_hot = isinstance(step, OneHotEncoder) and not grouping(step)
        bound = ctx.max_distinct if one_hot else ctx.max_counted
        advice = (
            (
                f"Either group its rare values into one column: OneHotEncoder("
                f"max_categories=..., or min_frequency=...) (then up to "
                f"{ctx.max_counted:,} distinct values are counted, see OnePass's "
                f"max_counted); or hash it instead of encoding it: FeatureHasher("
                f"n_features=2**18, input_type='string') after "
                f"FunctionTransformer(ooc.column_tokens)."
            )
            if one_hot
            else (
                "Counting them exactly does not fit in bounded memory: hash the column "
                "instead, FeatureHasher(n_features=2**18, input_type='string') after "
                "FunctionTransformer(ooc.column_tokens), or raise OnePass's max_counted."
            )
        )
        return [Need(root, keys, "counts", label, bound, advice)]
    return []


def propagates(step, kind: str, next_kind: str, next_step) -> bool:
    """Whether a later step's statistics follow from the raw columns' through ``step``:
    through an imputer they do (its indicator columns' too), through anything else not."""
    return kind == "imputer"


# -- summaries --------------------------------------------------------------------------------


# -- building ----------------------------------------------------------------------------------


def build_step(step, kind: str, inp: Built, results: Results, label: str, out_base: Base):
    """The fitted step and what it outputs, from the statistics of its input."""
    builder = {"imputer": _imputer, "scaler": _scaler, "encoder": build_encoder}[kind]
    fitted, cols, nnz = builder(step, inp, results, label)
    head = fitted.transform(inp.head)
    return fitted, Built(out_base, head, cols, nnz)


def _imputer(step: SimpleImputer, inp: Built, results: Results, label: str):
    cols = inp.columns()
    first, second = [], []
    for j, col in enumerate(cols):
        if step.strategy == "constant":
            rows, missing = missing_summary(col, results)
            fill = placeholder(inp.head, j)
        elif step.strategy == "mean":
            summary = numeric_summary(col, results)
            rows, missing, fill = summary.rows, summary.missing, summary.mean
        else:
            counts = counts_summary(col, results, column_dtype(inp.head, j).kind == "O")
            rows, missing = counts.rows, counts.missing
            fill = _mode(counts.counts) if counts.counts else np.nan
        empty = missing == rows
        if empty and not step.keep_empty_features:
            refuse_empty(step, label, inp.head, j, rows)
        first.append(np.nan if empty else fill)  # kept empty: as scikit-learn fills it
        second.append(np.nan if missing else first[-1])
    rows_ = [[a, b] for a, b in zip(first, second, strict=True)]
    fitted = clone(step).fit(make_like(inp.head, rows_))
    out = [
        SymCol(c.root, c.key, (*c.ops, ("impute", scalar(fitted.statistics_[j]))))
        for j, c in enumerate(cols)
    ]
    if step.add_indicator:
        for j in fitted.indicator_.features_:
            out.append(SymCol(cols[j].root, cols[j].key, (*cols[j].ops, ("indicator",))))
    return fitted, out, None


def _mode(counts: dict):
    """The most frequent value; the smallest of those tied, as scikit-learn picks."""
    top = max(counts.values())
    return min(value for value, count in counts.items() if count == top)


def _scaler(step, inp: Built, results: Results, label: str):
    cols = inp.columns()
    stats = [numeric_summary(c, results) for c in cols]
    for j, s in enumerate(stats):
        if s.obs == 0:
            refuse_empty(step, label, inp.head, j, s.rows)
    summary = make_like(inp.head, [[s.min, s.max] for s in stats])
    fitted = clone(step).fit(summary)
    rows = stats[0].rows if stats else 0
    if isinstance(step, STANDARD):
        _set_standard(fitted, step, stats)
    else:  # MinMaxScaler and MaxAbsScaler: min and max are exact; they count every row
        fitted.n_samples_seen_ = type(fitted.n_samples_seen_)(rows)
    nnz = inp.nnz if sp.issparse(inp.head) else None
    return fitted, None, nnz


def _set_standard(fitted: StandardScaler, step: StandardScaler, stats: list[Summary]) -> None:
    """The mean, variance and scale of the whole data (the summary's are its own)."""
    obs = np.array([s.obs for s in stats], dtype=np.int64)
    seen = fitted.n_samples_seen_
    kind = np.asarray(seen).dtype
    fitted.n_samples_seen_ = kind.type(obs[0]) if np.ptp(obs) == 0 else obs.astype(kind)
    if not (step.with_mean or step.with_std):
        return
    mean = np.array([s.mean for s in stats], dtype=np.float64)
    fitted.mean_ = mean
    if step.with_std:
        var = np.array([s.m2 / s.obs for s in stats], dtype=np.float64)
        fitted.var_ = var
        fitted.scale_ = _scale(var, mean, obs)


def _scale(var, mean, n) -> np.ndarray:
    """sqrt(var), with 1 for features that are constant up to rounding error (the rule of
    scikit-learn's StandardScaler)."""
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant | (scale == 0)] = 1.0
    return scale


def build_stateless(step, inp: Built, out_base: Base):
    fitted = clone(step).fit(inp.head)
    return fitted, Built(out_base, fitted.transform(inp.head))
