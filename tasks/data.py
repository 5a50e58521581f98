"""Tasks for datasets: write a synthetic one, and check and split one before any fitting."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import partial

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

import ooc
from ooc.checks import check_classes, check_footer_statistics
from ooc.datasets import DatasetSpec, prepare_dataset_dir

from .cluster import compute_each
from .config import PreprocessConfig
from .faults import maybe_fail
from .progress import StageProgress
from .retries import IO_RETRIES, retry_transient
from .tabular import as_frame, needs_frame


@dataclass(frozen=True)
class DataPlan:
    """A checked dataset and its split, decided once and handed to every later task.

    Attributes
    ----------
    data : str
        The dataset's path.
    source : ooc.ParquetSource
        Every row, as the footers describe them.
    train, holdout : ooc.ParquetSource
        The split (disjoint, together every row).
    """

    data: str
    source: ooc.ParquetSource
    train: ooc.ParquetSource
    holdout: ooc.ParquetSource

    @property
    def target(self) -> str | None:
        return self.source.target

    @property
    def features(self) -> list[str]:
        return list(self.source.features)

    def fingerprint(self) -> str:
        """A short hash of the files, row groups and columns a run read."""
        s = self.source
        basis = [list(map(str, s.files)), s.row_groups, s.features, s.target, s.partitions]
        return hashlib.sha256(json.dumps(basis, default=str).encode()).hexdigest()[:16]

    def describe(self) -> str:
        s = self.source
        return (
            f"{s.n_rows:,} rows in {len(s.files)} file(s), {len(s.features)} features, "
            f"{len(s.blocks)} block(s) of at most {s.block_rows:,} rows; "
            f"{self.holdout.n_rows:,} rows held out for evaluation"
        )


@task(cache_policy=NONE, task_run_name="check-data")
def check_dataset(
    data: str,
    target: str | None,
    holdout_fraction: float,
    split_seed: int,
    block_rows: int,
    kind: str | None = None,
    preprocess: PreprocessConfig = PreprocessConfig(),  # noqa: B008 - immutable
) -> DataPlan:
    """Read every footer and fail fast on a bad dataset, before any fitting; split it.

    Checks the schema of every file, infinities and missing targets the footers show,
    that a regressor's target is numeric and, for ``kind="classification"``, that the
    training rows hold two classes or more. Missing feature values are reported (they are
    imputed); data with text, booleans or missing values is read as a DataFrame.
    """
    logger = get_run_logger()
    source = ooc.inspect_parquet(
        data, target=target, block_rows=block_rows, as_frame="auto", allow_missing=True,
        exclude=tuple(preprocess.drop),
    )  # fmt: skip
    report = check_footer_statistics(source, allow_missing=True)
    if kind == "regression" and target is not None and source.target_dtype.kind not in "iufb":
        raise ValueError(
            f"Target column {target!r} of {source.files[0]} holds "
            f"{source.schema.field(target).type}, but a regressor learns numbers. Pick a "
            "numeric target, or a classifier (--model sgd-classifier) for labels."
        )
    source = as_frame(source) if needs_frame(source, preprocess) else source
    for name, count in report.null_counts.items():
        text = source.kind(name) in ("category", "bool") or name in preprocess.categorical
        logger.info(
            "Column %r: %d missing value(s) (%.2f%%), %s.",
            name, count, 100 * report.missing_fraction(name),
            "a category of their own" if text else f"imputed ({preprocess.impute})",
        )  # fmt: skip
    train, holdout = source.split(holdout_fraction, seed=split_seed)
    if kind == "classification" and target is not None:
        check_classes(train)
    plan = DataPlan(str(data), source, train, holdout)
    logger.info("Data %s: %s.", data, plan.describe())
    return plan


@dataclass(frozen=True)
class Generated:
    """What the generate stage wrote."""

    path: str
    rows: int
    partitions: int
    written: int
    seconds: float


def _write_partition(out: str, spec: DatasetSpec, index: int) -> tuple[bool, list[str]]:
    """One partition, retried where it runs after a transient failure; the retries are
    returned for the stage's log."""
    notes: list[str] = []

    def attempt():
        maybe_fail("generate-partition", index)
        return ooc.write_partition(out, spec, index)

    def note(error, n):
        notes.append(f"partition {index}: attempt {n} failed ({error!r}), retried")

    return retry_transient(attempt, on_retry=note), notes


@task(cache_policy=NONE, task_run_name="generate", **IO_RETRIES)
def generate_partitions(out: str, spec: DatasetSpec) -> Generated:
    """Write every partition of ``spec`` on the cluster (complete files are kept)."""
    import dask

    start = time.perf_counter()
    prepare_dataset_dir(out, spec)
    progress = StageProgress("generate", spec.n_partitions, "partitions")
    logger = get_run_logger()
    written = 0

    def done(index: int, outcome: tuple[bool, list[str]]) -> None:
        nonlocal written
        wrote, notes = outcome
        written += wrote
        for line in notes:
            logger.warning(line)
        progress.update(advance=1)

    write = dask.delayed(partial(_write_partition, out, spec), pure=False)
    compute_each([write(index) for index in range(spec.n_partitions)], done)
    progress.finish()
    return Generated(str(out), spec.n_rows, spec.n_partitions, written, time.perf_counter() - start)


def sample_rows(plan: DataPlan, n: int = 5):
    """The first ``n`` rows of the data, as a DataFrame (a model's input example); text
    columns as plain strings, as a caller of the model would pass them."""
    import pandas as pd

    head = plan.source.head(n)
    if not head.as_frame:
        return pd.DataFrame(ooc.io.read_features(head, 0), columns=plan.features)
    from ooc.frames import read_frame

    frame = read_frame(head, 0).reset_index(drop=True)
    text = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    return frame.astype({c: object for c in text})
