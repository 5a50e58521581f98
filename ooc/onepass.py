"""``OnePass``: fit a scikit-learn ``ColumnTransformer`` or ``Pipeline`` out of core, in
one read of the data.

Every step is fitted from statistics that merge across blocks (see :mod:`ooc.colstats`
and :mod:`ooc.passes`):
counts, means and M2, min and max, the count of each category and of missing values. A
step after an imputer takes its statistics from the raw column's, through the imputation
(see :mod:`ooc.onepass_steps`), so ``SimpleImputer -> StandardScaler`` and
``SimpleImputer -> OneHotEncoder`` chains, in every branch of a ``ColumnTransformer``,
are all fitted from one pass. Stateless steps (``FunctionTransformer``,
``FeatureHasher``) are applied inside the pass. A step whose input no column statistic
gives (a scaler after a ``OneHotEncoder``, anything after a scaler) is fitted in a
further pass over its branch's columns, said in the log and counted in ``n_passes_``.

How a Pipeline and a ColumnTransformer are walked: :mod:`ooc.onepass_fit`.
"""

from __future__ import annotations

import logging
import numbers

import dask
import dask.array as da
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import get_tags
from sklearn.utils.validation import check_array, check_is_fitted

from .blocks import (
    RowBlocks,
    is_dask_collection,
    is_dask_frame,
    n_rows,
    row_blocks,
    with_all_columns,
)
from .frames import frame_source
from .onepass_fit import Context, Plan, fit_node, input_columns, sample
from .onepass_steps import kind_of
from .onepass_summary import Built
from .passes import ALL, Base, head_rows, run_pass

__all__ = ["OnePass", "column_tokens"]

logger = logging.getLogger(__name__)


def _meta(X):
    if is_dask_frame(X):
        return X._meta
    if isinstance(X, pd.DataFrame):
        return X.iloc[:0]
    return sample(X.shape[1])


class OnePass(TransformerMixin, BaseEstimator):
    """Fit a scikit-learn preprocessing object on data larger than memory, in one pass.

    ``transformer`` is a ``ColumnTransformer``, a ``Pipeline`` or one step, built from
    ``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler``, ``SimpleImputer`` (mean,
    most_frequent, constant; ``add_indicator``), ``OneHotEncoder`` and ``OrdinalEncoder``
    (``handle_unknown``, ``min_frequency``, ``max_categories``, ``drop``) and stateless
    steps (``FunctionTransformer``, ``FeatureHasher``, ``"passthrough"``, ``"drop"``).
    ``fit`` reads every block once and fits every step from statistics that merge
    across blocks; ``transformer_`` is then the plain fitted scikit-learn object, with
    the learned attributes scikit-learn would give fitted on the same data in memory
    (up to rounding), usable without ooc.

    One pass fits: any step on input columns; a scaler, an encoder or an imputer after
    imputers (mean imputation leaves the mean and M2 as they are, the variance becomes
    M2 over all rows; any other fill value is merged into the moments, min/max and
    counts; an indicator column's statistics follow from the missing counts); stateless
    steps, which are applied inside the pass. A step after an encoder or a scaler takes
    a further pass over its branch's columns only (``n_passes_`` says how many passes;
    ``passes_`` and the log why). ``SimpleImputer(strategy="median")`` is refused: no
    mergeable statistic gives the exact median.

    A column whose distinct values exceed the bound stops the pass with an error naming
    it, so the counts never grow past ``max_distinct`` (or ``max_counted``) values; a
    column missing in every row is refused for any step that learns from it.

    Parameters
    ----------
    transformer : scikit-learn transformer
        Cloned on ``fit``.
    max_distinct : int, default 1000
        The most distinct values a ``OneHotEncoder`` column may have (each becomes an
        output column). Past it the pass stops with an error naming the column.
    max_counted : int, default 1_000_000
        The most distinct values counted for any column (grouping encoders,
        ``OrdinalEncoder``, ``most_frequent``), which bounds the memory of the counts.

    Attributes
    ----------
    transformer_ : scikit-learn transformer
        The fitted object.
    n_passes_ : int
        Passes over the data the fit took (1 unless a step's input needed another).
    passes_ : list of str
        What each pass was for (after the first: why it was needed).
    n_samples_seen_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When ``X`` has string column labels.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn.compose import make_column_transformer
    >>> from sklearn.impute import SimpleImputer
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import OneHotEncoder, StandardScaler
    >>> X = pd.DataFrame({"x": [1.0, np.nan, 3.0], "c": ["a", "b", "a"]})
    >>> ct = make_column_transformer(
    ...     (make_pipeline(SimpleImputer(), StandardScaler()), ["x"]),
    ...     (OneHotEncoder(), ["c"]),
    ... )
    >>> fitted = OnePass(ct).fit(X)
    >>> fitted.n_passes_, fitted.transformer_.named_transformers_["onehotencoder"].categories_
    (1, [array(['a', 'b'], dtype=object)])
    >>> fitted.transform(X).round(3)
    array([[-1.225,  1.   ,  0.   ],
           [ 0.   ,  0.   ,  1.   ],
           [ 1.225,  1.   ,  0.   ]])

    Out of core, a dask DataFrame in, sparse blocks streamed into ``partial_fit``:

    >>> import ooc
    >>> from sklearn.linear_model import SGDClassifier
    >>> X, y = ooc.read_parquet("data/shop", target="bought")  # doctest: +SKIP
    >>> model = make_pipeline(OnePass(ct), ooc.Incremental(SGDClassifier()))  # doctest: +SKIP
    >>> model.fit(X, y, incremental__classes=[0, 1])  # doctest: +SKIP
    """

    def __init__(self, transformer, *, max_distinct: int = 1000, max_counted: int = 1_000_000):
        self.transformer = transformer
        self.max_distinct = max_distinct
        self.max_counted = max_counted

    def _check_params(self) -> None:
        for name in ("max_distinct", "max_counted"):
            value = getattr(self, name)
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if not (ok and value >= 1):
                raise ValueError(f"OnePass: {name} must be an int >= 1, got {value!r}.")

    def fit(self, X, y=None):
        """Fit ``transformer`` on ``X``, reading each block once (or as few times as
        its steps allow).

        Parameters
        ----------
        X : dask DataFrame, dask array, pandas DataFrame or array-like
        y : ignored

        Returns
        -------
        self
        """
        self._check_params()
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, attr)
        if not (is_dask_collection(X) or isinstance(X, pd.DataFrame)):
            X = check_array(X, accept_sparse="csr", dtype=None, ensure_all_finite=False)
        blocks = row_blocks(X)
        ctx = Context(self.max_distinct, self.max_counted, _meta(X))
        root = Base(label="X")
        keys = tuple(ctx.meta.columns) if isinstance(ctx.meta, pd.DataFrame) else ALL

        def built() -> Built:
            return Built(root, ctx.raw_head)

        gen = fit_node(clone(self.transformer), Plan(root, (root, keys), built), ctx, "")
        passes = []
        try:
            needs = next(gen)
            while True:
                results = run_pass(self._blocks(X, blocks, needs, root, ctx), needs)
                if needs:
                    ctx.rows = results.rows
                    first = "the statistics of every step"
                    why = "; ".join(ctx.reasons) if passes and ctx.reasons else first
                    passes.append(why)
                    logger.info(
                        "OnePass: pass %d over %d block(s), %d row(s), %d statistic(s): %s.",
                        len(passes),
                        len(blocks),
                        results.rows,
                        len(needs),
                        why,
                    )
                    ctx.reasons = []
                if ctx.raw_head is None:
                    if results.head is None:
                        raise ValueError(
                            "OnePass: X has no rows, so there is nothing to fit on. Check the "
                            "data path and any filtering that emptied it."
                        )
                    ctx.raw_head = results.head
                needs = gen.send(results)
        except StopIteration as stop:
            fitted, out = stop.value
        self.transformer_ = fitted
        self.n_passes_ = len(passes)
        self.passes_ = passes
        self.n_samples_seen_ = ctx.rows
        self._output_head = head_rows(out.head, 0)
        return self

    @staticmethod
    def _blocks(X, blocks, needs, root: Base, ctx: Context):
        """The blocks of a pass: after the first, of a dask DataFrame, only the columns
        the pass needs (the parquet reader reads no other)."""
        if ctx.raw_head is None or not is_dask_frame(X):
            return blocks
        wanted = input_columns(needs, root)
        if wanted is None or set(wanted) >= set(X.columns):
            return blocks
        return RowBlocks(list(X[[c for c in X.columns if c in wanted]].to_delayed()), None, True)

    @property
    def n_features_in_(self) -> int:
        return self.transformer_.n_features_in_

    @property
    def feature_names_in_(self):
        return self.transformer_.feature_names_in_

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        return self.transformer_.get_feature_names_out(input_features)

    def transform(self, X):
        """Transform ``X`` with ``transformer_``, lazily and blockwise for dask input.

        Parameters
        ----------
        X : dask DataFrame, dask array, pandas DataFrame or array-like

        Returns
        -------
        dask array for dask input (of scipy.sparse blocks when the output is sparse,
        which ``ooc.Incremental`` streams into ``partial_fit``); otherwise what
        ``transformer_.transform`` returns.
        """
        check_is_fitted(self)
        if not is_dask_collection(X):
            return self.transformer_.transform(X)
        meta = self._output_head
        if isinstance(meta, pd.DataFrame):  # set_output(transform="pandas")
            import dask.dataframe as dd

            task = dask.delayed(_transform_block, pure=True)
            parts = X.to_delayed() if is_dask_frame(X) else X.to_delayed().ravel()
            return dd.from_delayed([task(p, self.transformer_, meta) for p in parts], meta=meta)
        width, dtype = meta.shape[1], meta.dtype
        if isinstance(X, da.Array):
            X = with_all_columns(X)
            return X.map_blocks(
                _transform_block,
                self.transformer_,
                meta,
                chunks=(X.chunks[0], (width,)),
                dtype=dtype,
                meta=meta,
            )
        source = frame_source(X)
        rows = source.rows if source is not None else (np.nan,) * X.npartitions
        task = dask.delayed(_transform_block, pure=True)
        parts = [
            da.from_delayed(task(part, self.transformer_, meta), (r, width), dtype, meta=meta)
            for part, r in zip(X.to_delayed(), rows, strict=True)
        ]
        return da.concatenate(parts, axis=0)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags = _input_tags(self.transformer)
        return tags


def _input_tags(est):
    """What ``est`` takes as input; a Pipeline takes missing values when its first step
    does (an imputer)."""
    tags = get_tags(est).input_tags
    if kind_of(est) == "pipeline":
        steps = [s for _, s in est.steps if kind_of(s) != "skip"]
        if steps:
            tags.allow_nan = _input_tags(steps[0]).allow_nan
    return tags


def _transform_block(block, transformer, meta):
    if n_rows(block) == 0:
        return meta
    return transformer.transform(block)


def column_tokens(X) -> np.ndarray:
    """Each value as a ``"column=value"`` string, for hashing many-valued columns.

    A ``FeatureHasher(input_type="string")`` after ``FunctionTransformer(column_tokens)``
    encodes columns with any number of distinct values in a fixed width, with nothing
    to learn (so with no pass). A missing value is the token ``"column=nan"``.

    Parameters
    ----------
    X : pandas DataFrame or 2-D array

    Returns
    -------
    ndarray of str objects, of the shape of ``X``

    Examples
    --------
    >>> import pandas as pd
    >>> column_tokens(pd.DataFrame({"city": ["Oslo", None]})).tolist()
    [['city=Oslo'], ['city=nan']]
    """
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=object))
    columns = []
    for label in frame.columns:
        values = frame[label].astype(object).to_numpy()
        text = np.where(pd.isna(values), "nan", values.astype(str))
        columns.append(np.char.add(f"{label}=", text.astype(str)).astype(object))
    if not columns:
        return np.empty((len(frame), 0), dtype=object)
    return np.column_stack(columns)
