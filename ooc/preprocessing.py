"""Scalers that fit in one parallel pass over dask blocks and transform lazily.

Each scaler reduces every block to small statistics, merges them in a tree, and computes
the whole tree with one ``dask.compute``. ``partial_fit`` merges one more block with the
same formulas, so ``fit`` on a dask array equals ``partial_fit`` over its blocks.
Transforms never mutate the input and return the kind of collection they were given.
"""

from __future__ import annotations

import dataclasses
import functools
from functools import partial

import dask
import dask.array as da
import numpy as np
import pandas as pd
from dask.base import tokenize
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .blocks import is_dask_frame, row_blocks
from .fastpath import scaled_block
from .io import parquet_source, read_block_columns, read_features
from .statcache import StatsCache

__all__ = ["MinMaxScaler", "StandardScaler"]

FLOAT_DTYPES = (np.float64, np.float32)
# Rows of one column whose deviations are summed and squared while in cache (128 KB).
_STATS_TILE = 16_384


def _tree_merge(parts: list, merge) -> object:
    """Combine delayed parts pairwise, so merges run in parallel and the depth is log2(n)."""
    merge = dask.delayed(merge, pure=True)
    while len(parts) > 1:
        parts = [merge(a, b) for a, b in zip(parts[::2], parts[1::2], strict=False)] + (
            [parts[-1]] if len(parts) % 2 else []
        )
    return parts[0]


def _float_values(block) -> tuple[np.ndarray, list]:
    """A block's values as a float array, with its column labels."""
    if isinstance(block, pd.DataFrame):
        columns = list(block.columns)
        values = block.to_numpy()
    else:
        values = np.asarray(block)
        columns = list(range(values.shape[1]))
    if values.dtype not in FLOAT_DTYPES:
        values = values.astype(np.float64)
    return values, columns


class _BlockwiseScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Shared machinery; subclasses define the statistics and the elementwise maps."""

    # -- to be defined by subclasses -------------------------------------------------
    def _stats(self, values: np.ndarray):
        raise NotImplementedError

    def _column_stats(self, columns: list[np.ndarray]):
        raise NotImplementedError

    @staticmethod
    def _merge(a, b):
        raise NotImplementedError

    def _set_stats(self, stats) -> None:
        raise NotImplementedError

    def _forward(self, values, columns=slice(None), out=None):
        raise NotImplementedError

    def _backward(self, values, columns=slice(None)):
        raise NotImplementedError

    def _check_params(self) -> None:
        pass

    # -- statistics ---------------------------------------------------------------------
    def _block_stats(self, block, index: int):
        values, columns = _float_values(block)
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(values.sum())
        if not finite and not np.isfinite(values).all():
            row, col = np.argwhere(~np.isfinite(values))[0]
            raise ValueError(
                f"{type(self).__name__}: block {index} has {values[row, col]} in column "
                f"{columns[col]!r} (row {row} of the block). Input X contains NaN or infinity; "
                "drop or impute these values before scaling."
            )
        return self._stats(values)

    def _dask_stats(self, X):
        source = parquet_source(X)
        if source is not None:
            # Straight from the parquet columns: no 2-D block is built for the statistics.
            stats = dask.delayed(self._run_stats, pure=False)
            # One node for the source: passed as it is, dask would walk the whole plan
            # (every block of every file) once per task, 2.5 s for 200 files.
            shared = dask.delayed(source, traverse=False)
            parts = [stats(shared, run) for run in source.runs()]
            return _tree_merge(parts, partial(_merge_counted, self._merge))
        blocks = row_blocks(X).blocks
        stats = dask.delayed(self._block_stats, pure=True)
        parts = [stats(block, i) for i, block in enumerate(blocks)]
        return dask.delayed(lambda merged: (merged, None))(_tree_merge(parts, self._merge))

    def _run_stats(self, source, run: tuple[int, ...]):
        """The merged statistics of the blocks of one run, read in order, and how many
        pieces were read (not found in ``stats_cache``)."""
        if self.stats_cache is None:
            stats = [self._source_stats(source, index) for index in run]
            return functools.reduce(self._merge, stats), sum(len(source.blocks[i]) for i in run)
        cache, read, stats = StatsCache(self.stats_cache), 0, []
        for index in run:
            for piece in source.blocks[index]:
                found = cache.get(source, piece, self._STATS_KIND)
                if found is None:
                    found = self._source_stats(source.with_blocks([(piece,)]), 0)
                    cache.put(source, piece, self._STATS_KIND, found)
                    read += 1
                stats.append(found)
        return functools.reduce(self._merge, stats), read

    def _source_stats(self, source, index: int):
        columns = read_block_columns(source, index)
        if source.dtype not in FLOAT_DTYPES:  # statistics of integers are floats
            columns = [c.astype(np.float64) for c in columns]
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf: checked just below
            stats = self._column_stats(columns)
        if all(np.isfinite(part).all() for part in stats[1:]):
            return stats
        # NaN or inf somewhere (or an overflow): the block reader names file, column, row
        # (NaN included: a value the scaler sees is not imputed, whatever the source allows).
        strict = dataclasses.replace(source, allow_missing=False)
        return self._block_stats(read_features(strict, index), index)

    def _reset(self) -> None:
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, attr)
        self.__dict__.pop("_running_stats", None)

    def _validate_meta(self, X, reset: bool) -> None:
        """sklearn's feature count and name checks, run on an empty stand-in for X."""
        if isinstance(X, da.Array):
            if X.ndim != 2:
                raise ValueError(f"Expected a 2-D dask array, got {X.ndim}-D.")
            meta = np.empty((0, X.shape[1]), dtype=X.dtype)
        else:
            meta = X._meta
        validate_data(self, meta, reset=reset, ensure_min_samples=0, dtype=None)

    def fit(self, X, y=None):
        """Compute the statistics of ``X`` in one parallel pass.

        Parameters
        ----------
        X : dask array, dask DataFrame, array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        self._reset()
        return self.partial_fit(X)

    def partial_fit(self, X, y=None):
        """Merge the statistics of ``X`` into those seen so far.

        ``X`` may be a numpy block, a pandas DataFrame or a dask collection (whose
        statistics are computed in one pass and then merged).

        Returns
        -------
        self
        """
        self._check_params()
        first = not hasattr(self, "n_samples_seen_")
        if isinstance(X, da.Array) or is_dask_frame(X):
            self._validate_meta(X, reset=first)
            ((stats, pieces_read),) = dask.compute(self._dask_stats(X))
            if pieces_read is not None:
                self.n_pieces_read_ = pieces_read
            if first and stats[0] == 0:
                self._reset()
                raise ValueError(
                    f"{type(self).__name__}: X is a dask collection with 0 rows (shape "
                    f"{X.shape}); at least one sample is needed to fit. Check the data path "
                    "and any filtering that emptied it."
                )
        else:
            values = validate_data(self, X, reset=first, dtype=FLOAT_DTYPES)
            stats = self._stats(values)
        if not first:
            stats = self._merge(self._running_stats, stats)
        # The merged statistics are kept whole so the next partial_fit continues exactly.
        self._running_stats = stats
        self._set_stats(stats)
        return self

    # -- transforms ---------------------------------------------------------------------
    def transform(self, X):
        """Scale ``X`` lazily and blockwise, returning the same kind of collection.

        On a feature array of :func:`ooc.read_parquet`, each block is read as columns and
        scaled straight into the C-ordered block (one pass, no intermediate 2-D copy;
        the same values, see :func:`ooc.fastpath.scaled_block`).

        Parameters
        ----------
        X : dask array, dask DataFrame, array-like of shape (n_samples, n_features)

        Returns
        -------
        Xt : same kind as ``X`` (pandas in gives numpy out, as in scikit-learn)
        """
        source = parquet_source(X)
        if source is not None:
            check_is_fitted(self)
            self._validate_meta(X, reset=False)
            dtype = X.dtype if X.dtype in FLOAT_DTYPES else np.dtype(np.float64)
            # A graph of its own: the blocks of X itself are never read.
            return da.map_blocks(
                _read_scaled, self, source, dtype, chunks=X.chunks, dtype=dtype,
                meta=np.empty((0, 0), dtype), name=f"scaled-{tokenize(self, X.name)}",
            )  # fmt: skip
        return self._map(X, self._forward)

    def inverse_transform(self, X):
        """Undo :meth:`transform`, lazily and blockwise."""
        return self._map(X, self._backward)

    def _map(self, X, func):
        check_is_fitted(self)
        if isinstance(X, da.Array):
            self._validate_meta(X, reset=False)
            if X.dtype not in FLOAT_DTYPES:
                X = X.astype(np.float64)
            return X.map_blocks(_with_column_slice, func, dtype=X.dtype)
        if is_dask_frame(X):
            self._validate_meta(X, reset=False)
            # Mapping the empty meta frame gives the real output dtypes (float32 stays float32).
            meta = _map_frame(func, X._meta)
            return X.map_partitions(partial(_map_frame, func), meta=meta)
        return func(validate_data(self, X, reset=False, dtype=FLOAT_DTYPES))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _merge_counted(merge, a, b):
    """Merge ``(statistics, pieces read)`` pairs."""
    return merge(a[0], b[0]), a[1] + b[1]


def _read_scaled(scaler, source, dtype, block_id=None):
    """Block ``i`` of ``source`` scaled in one pass; NaN/inf named by the block reader."""
    index = block_id[0]
    block = scaled_block(read_block_columns(source, index), scaler, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.isfinite(block.sum()):
            read_features(source, index)  # raises naming the file, column and row
    return block


def _with_column_slice(block, func, block_info=None):
    """Apply ``func`` to one block of a dask array, with the parameters of its columns."""
    start, stop = block_info[0]["array-location"][1]
    return func(block, columns=slice(start, stop))


def _map_frame(func, frame: pd.DataFrame) -> pd.DataFrame:
    values, _ = _float_values(frame)
    return pd.DataFrame(func(values), index=frame.index, columns=frame.columns)


def _params_like(values, columns, *params):
    """The fitted parameters of ``columns``, in the data's dtype (float32 stays float32)."""
    return [p[columns].astype(values.dtype, copy=False) for p in params]


def _c_order_like(values) -> np.ndarray:
    """An output buffer in the C order partial_fit wants, whatever the input's order.

    Writing the first ufunc's result into it folds the transpose of a feature-major
    block (as read from parquet) into the arithmetic: one pass instead of two.
    """
    return np.empty(values.shape, dtype=values.dtype, order="C")


class StandardScaler(_BlockwiseScaler):
    """Standardize features to zero mean and unit variance, out of core.

    Equal to :class:`sklearn.preprocessing.StandardScaler` on the same data, but
    ``fit`` on a dask collection computes the mean and variance of every block in
    parallel and merges them (Chan et al.'s pairwise update) in one ``dask.compute``,
    and ``transform`` is lazy and blockwise. Each block's sums are taken about one of
    its own rows, so a large offset (``1e6 + noise``) costs no precision in the merge.
    Unlike scikit-learn, NaN and inf are rejected in ``fit`` (naming the block and
    column) rather than ignored: in a streamed pipeline they are data errors.

    Parameters
    ----------
    with_mean : bool, default True
        Center the data.
    with_std : bool, default True
        Scale the data to unit variance.
    stats_cache : path-like or None, default None
        A directory where the statistics of each piece of a parquet dataset are kept
        (see :class:`ooc.statcache.StatsCache`): fitting again on unchanged files reads
        none of them, on a grown dataset only the new files. ``n_pieces_read_`` says how
        many pieces were read.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,) or None
    var_ : ndarray of shape (n_features,) or None
    scale_ : ndarray of shape (n_features,) or None
        Per-feature scale; constant features get 1.
    n_samples_seen_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    Examples
    --------
    >>> import dask.array as da
    >>> from ooc import StandardScaler
    >>> X = da.random.random((1000, 3), chunks=(250, 3)) * 10 + 5
    >>> Xt = StandardScaler().fit(X).transform(X)  # lazy
    >>> bool(abs(Xt.mean().compute()) < 1e-12)
    True
    """

    _STATS_KIND = "moments"

    def __init__(self, *, with_mean: bool = True, with_std: bool = True, stats_cache=None):
        self.with_mean = with_mean
        self.with_std = with_std
        self.stats_cache = stats_cache

    def _stats(self, values):
        """``(n, shift, sum of (x - shift), M2)``, the shift being the block's first row.

        Block means rounded to float64 lose the low digits of data far from 0, and the
        merge would square that error; deviations from a shift in the data keep them.
        """
        n, k = values.shape
        if n == 0:
            return 0, np.zeros(k), np.zeros(k), np.zeros(k)
        shift = values[0].astype(np.float64)
        dev = values - shift
        dev_sum = dev.sum(axis=0)
        m2 = ((dev - dev_sum / n) ** 2).sum(axis=0)
        return n, shift, dev_sum, m2

    def _column_stats(self, columns):
        """:meth:`_stats` of the block these 1-D columns make, a tile of rows at a time.

        A tile's deviations stay in cache through its two passes (sum, then the centred
        squares), so a column is read from memory once; the tiles are merged exactly
        (``M2 = sum of the tiles' M2 + sum of n_t (mean_t - mean)^2``).
        """
        n, k = len(columns[0]), len(columns)
        if n == 0:
            return 0, np.zeros(k), np.zeros(k), np.zeros(k)
        shift = np.array([c[0] for c in columns], dtype=np.float64)
        starts = range(0, n, _STATS_TILE)
        sizes = np.array([min(_STATS_TILE, n - lo) for lo in starts], dtype=np.float64)
        tile_sum, tile_m2 = np.empty(len(sizes)), np.empty(len(sizes))
        dev_sum, m2 = np.empty(k), np.empty(k)
        buffer = np.empty(min(n, _STATS_TILE))
        for j, column in enumerate(columns):
            for t, lo in enumerate(starts):
                dev = buffer[: int(sizes[t])]
                np.subtract(column[lo : lo + len(dev)], shift[j], out=dev)
                tile_sum[t] = dev.sum()
                dev -= tile_sum[t] / len(dev)
                tile_m2[t] = np.dot(dev, dev)
            dev_sum[j] = tile_sum.sum()
            spread = tile_sum / sizes - dev_sum[j] / n
            m2[j] = tile_m2.sum() + np.dot(sizes, spread * spread)
        return n, shift, dev_sum, m2

    @staticmethod
    def _merge(a, b):
        (na, shift_a, sum_a, m2a), (nb, shift_b, sum_b, m2b) = a, b
        if nb == 0:
            return a
        if na == 0:
            return b
        n = na + nb
        # b's sums moved to a's shift; every term is on the scale of the spread, not the offset.
        offset = shift_b - shift_a
        delta = (offset + sum_b / nb) - sum_a / na
        return n, shift_a, sum_a + sum_b + nb * offset, m2a + m2b + delta**2 * (na * nb / n)

    def _set_stats(self, stats) -> None:
        n, shift, dev_sum, m2 = stats
        self.n_samples_seen_ = int(n)
        mean = shift + dev_sum / n if n else np.zeros_like(m2)
        var = m2 / n if n else np.zeros_like(m2)
        self.mean_ = mean if (self.with_mean or self.with_std) else None
        self.var_ = var if self.with_std else None
        self.scale_ = _standard_scale(var, mean, n) if self.with_std else None

    def _forward(self, values, columns=slice(None), out=None):
        out = _c_order_like(values) if out is None else out
        if self.with_mean:
            (mean,) = _params_like(values, columns, self.mean_)
            np.subtract(values, mean, out=out)
        else:
            out[...] = values
        if self.with_std:
            (scale,) = _params_like(values, columns, self.scale_)
            np.divide(out, scale, out=out)
        return out

    def _backward(self, values, columns=slice(None)):
        out = _c_order_like(values)
        if self.with_std:
            (scale,) = _params_like(values, columns, self.scale_)
            np.multiply(values, scale, out=out)
        else:
            out[...] = values
        if self.with_mean:
            (mean,) = _params_like(values, columns, self.mean_)
            np.add(out, mean, out=out)
        return out


def _standard_scale(var, mean, n) -> np.ndarray:
    """sqrt(var), with 1 for features that are constant up to rounding error."""
    eps = np.finfo(np.float64).eps
    # A variance this small is what summation error alone produces on constant data.
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return scale


class MinMaxScaler(_BlockwiseScaler):
    """Scale each feature to ``feature_range``, out of core.

    Equal to :class:`sklearn.preprocessing.MinMaxScaler` on the same data; ``fit`` on
    a dask collection reduces every block to its minimum and maximum in parallel in
    one ``dask.compute``, and ``transform`` is lazy and blockwise. Unlike scikit-learn,
    NaN and inf are rejected in ``fit`` (naming the block and column) rather than
    ignored: in a streamed pipeline they are data errors, better caught before fitting.

    Parameters
    ----------
    feature_range : tuple (min, max), default (0, 1)
    clip : bool, default False
        Clip transformed values of unseen data to ``feature_range``.
    stats_cache : path-like or None, default None
        A directory where the statistics of each piece of a parquet dataset are kept
        (see :class:`ooc.statcache.StatsCache`): fitting again on unchanged files reads
        none of them, on a grown dataset only the new files. ``n_pieces_read_`` says how
        many pieces were read.

    Attributes
    ----------
    data_min_, data_max_, data_range_ : ndarray of shape (n_features,)
    scale_, min_ : ndarray of shape (n_features,)
        ``transform(X) = X * scale_ + min_``.
    n_samples_seen_ : int
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from ooc import MinMaxScaler
    >>> MinMaxScaler().fit_transform(np.array([[1.0], [3.0]])).ravel().tolist()
    [0.0, 1.0]
    """

    _STATS_KIND = "min-max"

    def __init__(self, feature_range=(0, 1), *, clip: bool = False, stats_cache=None):
        self.feature_range = feature_range
        self.clip = clip
        self.stats_cache = stats_cache

    def _check_params(self) -> None:
        low, high = self.feature_range
        if low >= high:
            raise ValueError(
                "Minimum of desired feature range must be smaller than maximum. "
                f"Got {tuple(self.feature_range)}."
            )

    def _stats(self, values):
        if len(values) == 0:
            k = values.shape[1]
            return 0, np.full(k, np.inf, values.dtype), np.full(k, -np.inf, values.dtype)
        return len(values), values.min(axis=0), values.max(axis=0)

    def _column_stats(self, columns):
        """:meth:`_stats` of the block these 1-D columns make."""
        if len(columns[0]) == 0:
            return self._stats(np.empty((0, len(columns)), dtype=columns[0].dtype))
        mins = np.array([c.min() for c in columns], dtype=columns[0].dtype)
        maxs = np.array([c.max() for c in columns], dtype=columns[0].dtype)
        return len(columns[0]), mins, maxs

    @staticmethod
    def _merge(a, b):
        return a[0] + b[0], np.minimum(a[1], b[1]), np.maximum(a[2], b[2])

    def _set_stats(self, stats) -> None:
        n, data_min, data_max = stats
        low, high = self.feature_range
        self.n_samples_seen_ = int(n)
        # Copies: the running statistics must not change if a caller edits these.
        self.data_min_, self.data_max_ = data_min.copy(), data_max.copy()
        self.data_range_ = data_max - data_min
        safe_range = self.data_range_.copy()
        safe_range[safe_range < 10 * np.finfo(safe_range.dtype).eps] = 1.0
        self.scale_ = (high - low) / safe_range
        self.min_ = low - data_min * self.scale_

    def _forward(self, values, columns=slice(None), out=None):
        scale, offset = _params_like(values, columns, self.scale_, self.min_)
        out = _c_order_like(values) if out is None else out
        np.multiply(values, scale, out=out)
        np.add(out, offset, out=out)
        if self.clip:
            np.clip(out, *self.feature_range, out=out)
        return out

    def _backward(self, values, columns=slice(None)):
        scale, offset = _params_like(values, columns, self.scale_, self.min_)
        out = _c_order_like(values)
        np.subtract(values, offset, out=out)
        np.divide(out, scale, out=out)
        return out
