"""Row blocks of any supported input, a bounded prefetching iterator over them, and an
estimator's method applied to each of them (:func:`apply_blockwise`).

Supported inputs are dask arrays, dask DataFrames/Series, numpy arrays and pandas
objects. A dask input becomes one delayed object per row block (a dask array is first
rechunked so each row block holds every column); an in-memory input is one block.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import scipy.sparse as sp
from dask.delayed import Delayed

__all__ = [
    "RowBlocks",
    "apply_blockwise",
    "is_dask_collection",
    "is_dask_frame",
    "n_rows",
    "prefetch",
    "row_blocks",
]


def is_dask_frame(obj) -> bool:
    """True for a dask DataFrame or Series (classic or dask-expr)."""
    return dask.is_dask_collection(obj) and hasattr(obj, "map_partitions")


def is_dask_collection(obj) -> bool:
    return isinstance(obj, da.Array) or is_dask_frame(obj)


def with_all_columns(X: da.Array) -> da.Array:
    """Rechunk a column-chunked 2-D dask array so each row block holds every feature."""
    if X.ndim == 2 and X.numblocks[1] > 1:
        return X.rechunk({1: -1})
    return X


@dataclass
class RowBlocks:
    """A sequence of row blocks: lazy (``Delayed``) for dask input, or one in-memory block.

    Attributes
    ----------
    blocks : list
        ``Delayed`` objects, or ``[array]`` for in-memory input.
    rows : tuple of int or None
        Rows per block when known without computing, else None.
    lazy : bool
        Whether ``blocks`` must be computed.
    """

    blocks: list
    rows: tuple[int, ...] | None
    lazy: bool

    def __len__(self) -> int:
        return len(self.blocks)


def row_blocks(X, *, name: str = "X") -> RowBlocks:
    """Split ``X`` into its row blocks without computing anything.

    Raises
    ------
    ValueError
        If a dask array is not 1-D or 2-D.
    """
    if isinstance(X, da.Array):
        if X.ndim not in (1, 2):
            raise ValueError(f"{name} must be 1-D or 2-D, got a {X.ndim}-D dask array.")
        X = with_all_columns(X)
        blocks = list(X.to_delayed(optimize_graph=False).reshape(-1))
        rows = None if any(np.isnan(c) for c in X.chunks[0]) else tuple(map(int, X.chunks[0]))
        return RowBlocks(blocks, rows, lazy=True)
    if is_dask_frame(X):
        return RowBlocks(list(X.to_delayed(optimize_graph=False)), None, lazy=True)
    return RowBlocks([X], (n_rows(X),), lazy=False)


def n_rows(X) -> int:
    """Rows of an in-memory array-like: numpy, pandas, scipy.sparse, or anything array-like."""
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None else len(np.asarray(X))


def aligned_row_blocks(X, y) -> tuple[RowBlocks, RowBlocks | None]:
    """Row blocks of ``X`` and ``y`` that pair up block by block.

    A dask array ``y`` with known chunks is rechunked to ``X``'s row chunks when the
    totals agree; an in-memory ``y`` is split along ``X``'s known chunks.

    Raises
    ------
    ValueError
        When X and y cannot be paired: different row totals, different block counts
        with unknown sizes, or a lazy X with an in-memory y of unknown split.
    """
    xb = row_blocks(X, name="X")
    if y is None:
        return xb, None
    if xb.lazy and not is_dask_collection(y):
        if xb.rows is None:
            raise ValueError(
                "X is a dask collection with unknown block sizes and y is in memory, so they "
                "cannot be paired block by block. Pass y as a dask collection partitioned like X."
            )
        y = np.asarray(y)
        _check_total(xb.rows, len(y))
        return xb, RowBlocks(np.split(y, np.cumsum(xb.rows)[:-1]), xb.rows, lazy=False)
    if isinstance(y, da.Array) and xb.rows is not None and not any(np.isnan(y.shape)):
        _check_total(xb.rows, y.shape[0])
        if tuple(y.chunks[0]) != xb.rows:
            y = y.rechunk({0: xb.rows})
    yb = row_blocks(y, name="y")
    if xb.lazy != yb.lazy:
        raise ValueError(
            "X is in memory but y is a dask collection; pass both in memory or both as dask."
        )
    if len(xb) != len(yb):
        raise ValueError(
            f"X has {len(xb)} row blocks but y has {len(yb)}: they must be partitioned alike "
            "(one y block per X block with the same rows)."
        )
    if xb.rows is not None and yb.rows is not None and xb.rows != yb.rows:
        block = next(i for i, (a, b) in enumerate(zip(xb.rows, yb.rows, strict=True)) if a != b)
        raise ValueError(
            f"Block {block}: X has {xb.rows[block]} rows but y has {yb.rows[block]}. "
            "X and y must be partitioned alike."
        )
    return xb, yb


def _check_total(x_rows: tuple[int, ...], y_rows: int) -> None:
    if sum(x_rows) != y_rows:
        raise ValueError(
            f"X has {sum(x_rows)} rows but y has {y_rows}: they must describe the same samples."
        )


def apply_blockwise(estimator, method: str, X, meta=None, *, meta_param: str = "meta"):
    """``estimator.method`` on every row block of a dask ``X``, lazily.

    A dask array (of numpy or scipy.sparse blocks) gives a dask array with X's row
    chunks; a dask DataFrame gives a dask Series (one value per row) or DataFrame with
    X's index and divisions. An empty block gives an empty output.

    Parameters
    ----------
    estimator : fitted estimator
    method : str
        ``"predict"``, ``"predict_proba"``, ``"transform"``, ...
    X : dask array or dask DataFrame
        A column-chunked array is rechunked so every block holds every feature.
    meta : array, pandas Series or DataFrame, optional
        An empty array shaped like the output past its rows, giving its dtype and width
        (a DataFrame also its column labels). Without it, ``method`` is run once on one
        row of zeros to learn them.
    meta_param : str
        The name under which the caller takes ``meta``, for error messages.

    Raises
    ------
    ValueError
        When the probe on a row of zeros fails (saying to pass ``meta``), or ``meta`` does
        not give the output's width.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> X = da.ones((6, 2), chunks=(3, 2))
    >>> model = LinearRegression().fit([[0, 0], [1, 0], [0, 1]], [0.0, 1.0, 2.0])
    >>> apply_blockwise(model, "predict", X).compute().round(6)
    array([3., 3., 3., 3., 3., 3.])
    """
    if isinstance(X, da.Array):
        X = with_all_columns(X)
    output = (
        _Output.probe(estimator, method, X, meta_param)
        if meta is None
        else _Output.from_meta(meta, meta_param)
    )
    if is_dask_frame(X):
        frame_meta = output.frame(output.empty(), X._meta.index)
        return X.map_partitions(
            _apply_frame, estimator, method, output, meta=frame_meta, align_dataframes=False
        )
    func = partial(_apply, estimator=estimator, method=method, output=output)
    if output.tail:
        chunks = (X.chunks[0], output.tail)
        return X.map_blocks(func, chunks=chunks, dtype=output.dtype, meta=output.empty())
    return X.map_blocks(func, drop_axis=1, dtype=output.dtype, meta=output.empty())


@dataclass(frozen=True)
class _Output:
    """What a prediction method gives for a block: its dtype and its shape past the rows."""

    dtype: np.dtype
    tail: tuple[int, ...]
    columns: pd.Index | None = None  # the labels of a DataFrame meta

    @classmethod
    def from_meta(cls, meta, param: str) -> _Output:
        if isinstance(meta, pd.DataFrame):
            return cls(np.result_type(*meta.dtypes), (meta.shape[1],), meta.columns)
        meta = np.asarray(meta)
        if meta.ndim not in (1, 2) or (meta.ndim == 2 and meta.shape[1] == 0):
            raise ValueError(
                f"{param} must be an empty array shaped like the output past its rows, e.g. "
                f"numpy.empty((0,), dtype='int64') for one value per row or numpy.empty((0, 2)) "
                f"for two columns; got one of shape {meta.shape}."
            )
        return cls(meta.dtype, meta.shape[1:])

    @classmethod
    def probe(cls, estimator, method: str, X, param: str) -> _Output:
        """Learn the output's dtype and shape by running ``method`` on one row of zeros."""
        try:
            out = np.asarray(getattr(estimator, method)(_zero_row(X)))
        except Exception as err:  # any failure: the probe is ooc's idea, not the caller's
            raise ValueError(
                f"To learn the dtype and shape of {method}'s output, ooc runs "
                f"{type(estimator).__name__}.{method} on one row of zeros, and that failed: "
                f"{err!r}. Give the output's metadata instead and nothing is probed: "
                f"{param}=numpy.empty((0,), dtype='int64') for one value per row, or "
                "numpy.empty((0, n_columns)) for a 2-D output."
            ) from err
        return cls(out.dtype, out.shape[1:])

    def empty(self) -> np.ndarray:
        return np.empty((0, *self.tail), dtype=self.dtype)

    def frame(self, values, index: pd.Index):
        """One partition's output: a Series (one value per row) or a DataFrame."""
        if not self.tail:
            return pd.Series(values, index=index, dtype=self.dtype)
        return pd.DataFrame(values, index=index, columns=self.columns)


def _zero_row(X):
    """One row of zeros of the kind of ``X``'s blocks: numpy, scipy.sparse or pandas."""
    if is_dask_frame(X):
        zeros = np.zeros((1, len(X.columns)))
        return pd.DataFrame(zeros, columns=X.columns).astype(X.dtypes.to_dict())
    if sp.issparse(X._meta):
        return type(X._meta)((1, X.shape[1]), dtype=X.dtype)
    return np.zeros((1, X.shape[1]), dtype=X.dtype)


def _apply(block, estimator, method: str, output: _Output):
    """Run ``estimator.method`` on one block; an empty block gives an empty result."""
    if n_rows(block) == 0:
        return output.empty()
    return getattr(estimator, method)(block)


def _apply_frame(part: pd.DataFrame, estimator, method: str, output: _Output):
    return output.frame(_apply(part, estimator, method, output), part.index)


@dataclass(frozen=True)
class Loaded:
    """A computed item of :func:`prefetch`, with the seconds its computation took."""

    index: int
    value: Any
    load_seconds: float
    started: float  # wall clock (time.time()) when the load began


def prefetch(
    loaders: Iterable[tuple[int, Callable[[], Any]]], depth: int = 2
) -> Iterator[tuple[Loaded, float]]:
    """Run ``loaders`` ahead of the consumer, at most ``depth`` at a time, in order.

    Parameters
    ----------
    loaders : iterable of (index, callable)
        Each callable loads one item (e.g. computes one block).
    depth : int
        How many items may be loading while the consumer works on the current one;
        at most ``depth + 1`` loaded items exist at once. ``0`` loads in the caller.

    Yields
    ------
    loaded : Loaded
        The item, its index and the seconds its load took.
    wait_seconds : float
        How long the consumer waited for it (near 0 when prefetch keeps up).
    """

    def load(index, loader):
        started, start = time.time(), time.perf_counter()
        value = loader()
        return Loaded(index, value, time.perf_counter() - start, started)

    if depth <= 0:
        for index, loader in loaders:
            item = load(index, loader)
            yield item, item.load_seconds
        return

    it = iter(loaders)
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="ooc-prefetch") as pool:
        pending: deque = deque()
        try:
            for index, loader in it:
                pending.append(pool.submit(load, index, loader))
                if len(pending) >= depth:
                    break
            while pending:
                start = time.perf_counter()
                item = pending.popleft().result()
                waited = time.perf_counter() - start
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(load, *nxt))
                yield item, waited
        finally:
            for future in pending:
                future.cancel()


def compute_blocks(*blocks, scheduler=None):
    """Compute lazy blocks together, so reads they share run once; others pass through."""
    lazy = [i for i, b in enumerate(blocks) if isinstance(b, Delayed)]
    if not lazy:
        return blocks
    out = list(blocks)
    values = dask.compute(*(blocks[i] for i in lazy), scheduler=scheduler)
    for i, value in zip(lazy, values, strict=True):
        out[i] = value
    return tuple(out)


# -- rules shared by every streaming fit (Incremental, ParallelIncremental, the searches) ----


def split_validation(n_blocks: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Training and held-out block indices: ``round(fraction * n_blocks)`` held out, at
    least one and never all, drawn from ``seed``."""
    n_val = min(n_blocks - 1, max(1, round(fraction * n_blocks)))
    held = set(np.random.default_rng([seed, 1]).choice(n_blocks, n_val, replace=False))
    return [i for i in range(n_blocks) if i not in held], sorted(int(i) for i in held)


def epoch_order(blocks, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The blocks in the order of ``epoch``: as given, or shuffled from ``(seed, epoch)``."""
    if not shuffle:
        return list(blocks)
    return [int(i) for i in np.random.default_rng([seed, 2, epoch]).permutation(list(blocks))]


def standalone(block):
    """A block's own graph only: ``to_delayed`` blocks carry the whole collection's, which
    a task shipped to a worker should not."""
    if not isinstance(block, Delayed):
        return block
    return Delayed(block.key, dict(block.__dask_graph__().cull({block.key})))


def current_client():
    """The current ``dask.distributed`` client, or None (threads of this process)."""
    from distributed import default_client  # here: importing distributed is slow

    try:
        return default_client()
    except ValueError:
        return None
