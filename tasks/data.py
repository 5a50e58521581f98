"""Tasks for datasets: plan, write partitions (mapped), and check before any fitting."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff

import ooc
from ooc.datasets import DatasetSpec, prepare_dataset_dir

from .faults import maybe_fail

IO_RETRIES = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=1)}


@task(cache_policy=NONE)
def plan_dataset(out: str, spec: DatasetSpec) -> int:
    """Create the dataset directory and manifest; return the number of partitions."""
    prepare_dataset_dir(out, spec)
    return spec.n_partitions


@task(cache_policy=NONE, **IO_RETRIES)
def write_partition(out: str, spec: DatasetSpec, index: int) -> bool:
    """Write one partition atomically (idempotent: a complete file is kept)."""
    maybe_fail("generate-partition", index)
    return ooc.write_partition(out, spec, index)


def split_layout(data: str, target: str | None, holdout_fraction: float, split_seed: int):
    """The dataset's layout from its footers, and its (train, holdout) split by whole files.

    Every task that needs the split derives it here, so they all agree on it.
    """
    layout = ooc.inspect_parquet(data, target=target)
    return (layout, *layout.split(holdout_fraction, seed=split_seed))


@task(cache_policy=NONE)
def check_dataset(data: str, target: str | None, holdout_fraction: float, split_seed: int) -> dict:
    """Read every footer and fail fast on a bad dataset, before any fitting.

    Returns the layout in small numbers: files and rows for training and holdout.
    """
    layout, train, holdout = split_layout(data, target, holdout_fraction, split_seed)
    return {
        "data": str(data),
        "target": target,
        "features": list(layout.features),
        "dtype": str(layout.dtype),
        "n_files": len(layout.files),
        "files": [str(f) for f in layout.files],
        "rows": list(layout.rows),
        "n_rows": layout.n_rows,
        "train_rows": train.n_rows,
        "holdout_rows": holdout.n_rows,
        "holdout_files": [str(f) for f in holdout.files],
    }


def sample_rows(data: str, features: list[str], n: int = 5):
    """The first ``n`` rows of the first file, as a DataFrame (a model's input example)."""
    import pyarrow.parquet as pq

    first = ooc.list_parquet_files(data)[0]
    return pq.ParquetFile(first).read_row_group(0, columns=features).slice(0, n).to_pandas()
