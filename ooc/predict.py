"""Prediction disk to disk: each input parquet file gives one prediction file.

Each block of an input file (see :mod:`ooc.layout`) is predicted on its own and becomes one
row group of the output, so memory is bounded by the block however large the file. A file
of one block is one task that writes its output; the blocks of a larger file are tasks of
their own that write parts, which a last task joins into the output. Every file is written
under a temporary name and renamed, and a complete output (or part) is kept when the
prediction runs again, so re-running after a crash leaves exactly one output per input and
no partial file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn import config_context
from sklearn.pipeline import Pipeline

from .fastpath import LinearFold, scaled_block
from .files import atomic_path, atomic_write, parquet_has_rows, remove_leftovers
from .frames import read_frame
from .io import read_block_columns, read_features
from .layout import DEFAULT_BLOCK_ROWS, ParquetSource, inspect_parquet

__all__ = [
    "PredictionJob",
    "PredictionStep",
    "predict_file",
    "predict_parquet",
    "prediction_graph",
    "prediction_jobs",
]

METHODS = ("predict", "predict_proba", "decision_function", "transform")


@dataclass(frozen=True)
class PredictionJob:
    """One input file, as a one-file :class:`ParquetSource`, and the output it gives.

    Attributes
    ----------
    source : ParquetSource
        The input file alone, with its blocks and the model's feature columns.
    dest : Path
        The output file.
    """

    source: ParquetSource
    dest: Path

    @property
    def rows(self) -> int:
        return self.source.n_rows

    @property
    def n_blocks(self) -> int:
        return len(self.source.blocks)

    @property
    def parts_dir(self) -> Path:
        """Where the blocks of a many-block file are written before they are joined."""
        return self.dest.with_name(f".{self.dest.name}.parts")

    def part(self, index: int) -> Path:
        return self.parts_dir / f"block-{index:05d}.parquet"


def prediction_jobs(
    source: str | os.PathLike | ParquetSource,
    dest: str | os.PathLike,
    features: list[str] | None = None,
    target: str | None = "y",
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    as_frame: bool = False,
) -> list[PredictionJob]:
    """Plan the outputs for every parquet file under ``source``, checking the inputs.

    Parameters
    ----------
    source : path-like or ParquetSource
        Parquet file or directory of files to predict on.
    dest : path-like
        Output directory; the input's relative paths are kept.
    features : list of str, optional
        Model inputs; by default every column except ``target`` (if present) and the
        index columns pandas wrote, the same rule as :func:`ooc.inspect_parquet`'s.
    target : str or None
        Column left out of the default features (so labelled data can be scored).
    block_rows : int, default 500_000
        The most rows predicted at once (one row group of the output).
    as_frame : bool, default False
        Read each block as a DataFrame with text columns and missing values (for a model
        that starts with :class:`ooc.OnePass`); else as a numeric array, NaN refused.

    Returns
    -------
    list of PredictionJob

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`ooc.inspect_parquet`: missing data, schema mismatch, non-numeric feature.
    """
    if not isinstance(source, ParquetSource):
        exclude = (target,) if target is not None else ()
        source = inspect_parquet(
            source, target=None, features=features, block_rows=block_rows, exclude=exclude,
            as_frame=as_frame, allow_missing=as_frame or None,
        )  # fmt: skip
    return [
        PredictionJob(source.only_file(i), Path(dest) / file.relative_to(source.root))
        for i, file in enumerate(source.files)
    ]


def _output_table(values: np.ndarray, method: str) -> pa.Table:
    if values.ndim == 1:
        return pa.table({"prediction": values})
    prefix = {"predict_proba": "proba", "transform": "component"}.get(method, "score")
    return pa.table({f"{prefix}_{j}": values[:, j] for j in range(values.shape[1])})


def _leading_scaler(model):
    """``(ooc scaler, the rest of the pipeline)`` when ``model`` starts with one, else
    ``(None, model)``."""
    from .preprocessing import MinMaxScaler, StandardScaler

    if isinstance(model, Pipeline) and len(model) > 1:
        first = model[0]
        if isinstance(first, StandardScaler | MinMaxScaler):
            return first, model[1:] if len(model) > 2 else model[-1]
    return None, model


class _Predictor:
    """How ``model`` gives ``method``'s output for a block, with as few passes as can be.

    A linear model after a scaler: the decision folded from the parquet columns, no 2-D
    block (:class:`ooc.fastpath.LinearFold`; ``exact=True`` turns it off). Any other
    model after an ooc scaler: the block scaled from the columns in one pass. The data's
    NaN/inf are checked here once, so the model does not check them again
    (scikit-learn's ``assume_finite``).
    """

    def __init__(self, model, method: str, exact: bool = False):
        self.model, self.method = model, method
        fold = None if exact else LinearFold.of(model)
        self.fold = fold if fold is not None and fold.supports(method) else None
        self.scaler, self.rest = _leading_scaler(model)

    def block(self, source: ParquetSource, index: int) -> pa.Table:
        if source.as_frame:  # text and missing values: the model's own preprocessing
            values = getattr(self.model, self.method)(read_frame(source, index))
            return _output_table(np.asarray(values), self.method)
        if self.fold is not None:
            scores = self.fold.decision(read_block_columns(source, index))
            _finite_or_raise(scores, source, index)
            values = self.fold.output(self.method, scores)
        else:
            if self.scaler is not None:
                dtype = source.dtype if source.dtype.kind == "f" else np.dtype(np.float64)
                X = scaled_block(read_block_columns(source, index), self.scaler, dtype)
                _finite_or_raise(X, source, index)
            else:
                X = read_features(source, index)  # checked as it is read
            with config_context(assume_finite=True):
                values = getattr(self.rest, self.method)(X)
        return _output_table(np.asarray(values), self.method)


def takes_frames(model) -> bool:
    """Whether ``model`` starts with an :class:`ooc.OnePass` (it reads DataFrames)."""
    from .onepass import OnePass

    first = model[0] if isinstance(model, Pipeline) else model
    return isinstance(first, OnePass)


def _finite_or_raise(values: np.ndarray, source: ParquetSource, index: int) -> None:
    """A NaN/inf anywhere makes the block reader name its file, column and row."""
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.isfinite(values.sum()):
            read_features(source, index)


def _empty_output(model, source: ParquetSource, method: str) -> pa.Table:
    """The output of a file with no rows: no rows, but the schema of every other file's.

    The model is probed on one row of zeros for the kind and width of its output.
    """
    probe = np.asarray(getattr(model, method)(np.zeros((1, len(source.features)), source.dtype)))
    return _output_table(probe[:0], method)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def predict_parts(
    model, job: PredictionJob, run: tuple[int, ...], method: str = "predict", exact: bool = False
) -> int:
    """Predict the blocks ``run`` of a many-block job into their part files, in order.

    A part that is already complete is kept. Returns the number of parts written.
    """
    predictor = _Predictor(model, method, exact)
    written = 0
    for index in run:
        part = job.part(index)
        if parquet_has_rows(part, job.source.rows[index]):
            continue
        table = predictor.block(job.source, index)
        part.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(part, lambda tmp, table=table: pq.write_table(table, tmp))
        written += 1
    return written


def join_parts(job: PredictionJob, *written) -> bool:
    """Join the parts of a many-block job into its output, one row group per part.

    ``written`` (the parts' results) only orders this after them in a dask graph.
    Returns True if the output was written, False if it was complete already.
    """
    joined = not parquet_has_rows(job.dest, job.rows)
    if joined:
        parts = [job.part(i) for i in range(job.n_blocks)]
        schema = pq.read_schema(parts[0])
        with atomic_path(job.dest) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                writer.write_table(pq.read_table(part))
    shutil.rmtree(job.parts_dir, ignore_errors=True)
    return joined


def predict_file(model, job: PredictionJob, method: str = "predict", exact: bool = False) -> bool:
    """Predict one input file block by block and write its output atomically.

    Each block is one row group of the output; only one block is in memory at a time.

    Parameters
    ----------
    model : fitted estimator or Pipeline
    job : PredictionJob
    method : {"predict", "predict_proba", "decision_function", "transform"}
    exact : bool, default False
        Apply the model to the scaled block even where the scaling folds into a linear
        model's coefficients (see :mod:`ooc.fastpath`: the same labels but for rows at the
        decision boundary, scores within ``n_features × eps`` relative).

    Returns
    -------
    bool
        True if written, False if a complete output was already there.
    """
    _check_method(method)
    if parquet_has_rows(job.dest, job.rows):
        return False
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    if job.n_blocks == 0:
        table = _empty_output(model, job.source, method)
        atomic_write(job.dest, lambda tmp: pq.write_table(table, tmp))
        return True
    with atomic_path(job.dest) as tmp:
        writer = None
        try:
            predictor = _Predictor(model, method, exact)
            for index in range(job.n_blocks):
                table = predictor.block(job.source, index)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
    return True


@dataclass(frozen=True)
class PredictionStep:
    """One task of a prediction graph: it predicts ``blocks`` blocks of ``job`` (0 for the
    task that joins a many-block job's parts); the ``final`` step of a job writes its
    output and gives True if it did (False: the output was complete already)."""

    job: PredictionJob
    task: object  # dask.delayed.Delayed
    blocks: int
    final: bool


def _direct(func, *args):
    return func(*args)


def prediction_graph(
    model, jobs: list[PredictionJob], method: str = "predict", *, call=_direct, exact=False
) -> list[PredictionStep]:
    """The tasks that predict ``jobs``: one per one-block file, and for a many-block file
    one per run of blocks (see :meth:`ParquetSource.runs`) and one that joins them, so a
    large file keeps every core busy.

    Parameters
    ----------
    call : callable, optional
        Runs each step as ``call(func, *args)`` where it runs (e.g. to retry transient
        failures); by default ``func(*args)``.

    Returns
    -------
    list of PredictionStep
        Every task, the joins after the parts they join; computing them all predicts.
    """
    _check_method(method)
    shared = dask.delayed(model)  # shipped once per worker, not once per task
    run = dask.delayed(call, pure=False)
    steps = []
    for job in jobs:
        if job.n_blocks <= 1:
            steps.append(
                PredictionStep(job, run(predict_file, shared, job, method, exact), 1, True)
            )
            continue
        parts = [
            PredictionStep(
                job, run(predict_parts, shared, job, blocks, method, exact), len(blocks), False
            )
            for blocks in job.source.runs()
        ]
        join = run(join_parts, job, *(p.task for p in parts))
        steps += [*parts, PredictionStep(job, join, 0, True)]
    return steps


def clear_leftovers(jobs: list[PredictionJob]) -> list[Path]:
    """Remove what a killed earlier run left beside the planned outputs: temporary files,
    and the parts of outputs that are complete. Parts of unfinished outputs are kept, so
    a re-run continues from them."""
    removed = remove_leftovers(job.dest for job in jobs)
    for job in jobs:
        if job.parts_dir.is_dir():
            removed += remove_leftovers(job.part(i) for i in range(job.n_blocks))
            if parquet_has_rows(job.dest, job.rows):
                shutil.rmtree(job.parts_dir, ignore_errors=True)
                removed.append(job.parts_dir)
    return removed


def predict_parquet(
    model,
    source: str | os.PathLike | ParquetSource,
    dest: str | os.PathLike,
    *,
    features: list[str] | None = None,
    target: str | None = "y",
    method: str = "predict",
    block_rows: int = DEFAULT_BLOCK_ROWS,
    exact: bool = False,
) -> list[PredictionJob]:
    """Predict every file under ``source`` into ``dest`` in parallel, one output per file.

    Outputs are written by the tasks themselves; nothing is gathered to the caller. A file
    larger than one block is predicted block by block in parallel and written as one
    output file with a row group per block.

    Examples
    --------
    >>> import ooc
    >>> jobs = ooc.predict_parquet(pipe, "data/clf", "out/pred")  # doctest: +SKIP
    >>> len(jobs) == len(ooc.list_parquet_files("data/clf"))  # doctest: +SKIP
    True
    """
    jobs = prediction_jobs(
        source, dest, features, target, block_rows=block_rows, as_frame=takes_frames(model)
    )
    clear_leftovers(jobs)
    dask.compute(*(step.task for step in prediction_graph(model, jobs, method, exact=exact)))
    return jobs
