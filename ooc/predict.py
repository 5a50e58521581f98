"""Prediction disk to disk: each input parquet file gives one prediction file.

Every output is written under a temporary name and renamed, and an output that is
already complete (same row count as its input) is skipped, so re-running after a crash
leaves exactly one output per input and no partial file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .files import atomic_write, parquet_has_rows
from .io import _read_features, inspect_parquet, list_parquet_files

__all__ = ["PredictionJob", "predict_file", "predict_parquet", "prediction_jobs"]

METHODS = ("predict", "predict_proba", "decision_function", "transform")


@dataclass(frozen=True)
class PredictionJob:
    """One input file, the output file it gives, and the columns the model reads."""

    source: Path
    dest: Path
    rows: int
    features: tuple[str, ...]
    dtype: np.dtype


def prediction_jobs(
    source: str | os.PathLike,
    dest: str | os.PathLike,
    features: list[str] | None = None,
    target: str | None = "y",
) -> list[PredictionJob]:
    """Plan the outputs for every parquet file under ``source``, checking the inputs.

    Parameters
    ----------
    source : path-like
        Parquet file or directory of files to predict on.
    dest : path-like
        Output directory; the input's relative paths are kept.
    features : list of str, optional
        Model inputs; by default every column except ``target`` (if present).
    target : str or None
        Column left out of the default features (so labelled data can be scored).

    Returns
    -------
    list of PredictionJob

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`ooc.inspect_parquet`: missing data, schema mismatch, non-numeric feature.
    """
    files = list_parquet_files(source)
    if features is None:
        names = pq.read_schema(files[0]).names
        features = [c for c in names if c != target and not c.startswith("__index_level_")]
    layout = inspect_parquet(source, target=None, features=features)
    root = Path(source) if Path(source).is_dir() else Path(source).parent
    return [
        PredictionJob(
            file, Path(dest) / file.relative_to(root), rows, layout.features, layout.dtype
        )
        for file, rows in zip(layout.files, layout.rows, strict=True)
    ]


def _output_table(values: np.ndarray, method: str) -> pa.Table:
    if values.ndim == 1:
        return pa.table({"prediction": values})
    prefix = {"predict_proba": "proba", "transform": "component"}.get(method, "score")
    return pa.table({f"{prefix}_{j}": values[:, j] for j in range(values.shape[1])})


def predict_file(model, job: PredictionJob, method: str = "predict") -> bool:
    """Predict one input file and write its output atomically.

    Parameters
    ----------
    model : fitted estimator or Pipeline
    job : PredictionJob
    method : {"predict", "predict_proba", "decision_function", "transform"}

    Returns
    -------
    bool
        True if written, False if a complete output was already there.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if parquet_has_rows(job.dest, job.rows):
        return False
    X = _read_features(job.source, job.features, job.dtype)
    values = np.asarray(getattr(model, method)(X)) if len(X) else np.empty((0,))
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    table = _output_table(values, method)
    atomic_write(job.dest, lambda tmp: pq.write_table(table, tmp))
    return True


def predict_parquet(
    model,
    source: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    features: list[str] | None = None,
    target: str | None = "y",
    method: str = "predict",
) -> list[PredictionJob]:
    """Predict every file under ``source`` into ``dest`` in parallel, one task per file.

    Outputs are written by the tasks themselves; nothing is gathered to the caller.

    Examples
    --------
    >>> import ooc
    >>> jobs = ooc.predict_parquet(pipe, "data/clf", "out/pred")  # doctest: +SKIP
    >>> len(jobs) == len(ooc.list_parquet_files("data/clf"))  # doctest: +SKIP
    True
    """
    jobs = prediction_jobs(source, dest, features, target)
    shared_model = dask.delayed(model)  # shipped once per worker, not once per task
    dask.compute(*[dask.delayed(predict_file)(shared_model, job, method) for job in jobs])
    return jobs
