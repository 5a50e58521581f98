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


def _show(files, at_most: int = 3) -> str:
    names = ", ".join(str(f) for f in files[:at_most])
    return f"{names}, … ({len(files)} files)" if len(files) > at_most else names


def check_footer_statistics(layout) -> None:
    """Missing values and infinities that the parquet footers already show.

    Parquet writers store each column chunk's null count and min/max: a null, or an
    infinite min or max, is found without reading any data. (NaN is not in the
    statistics; the read of each block finds it, naming the file, column and row.)
    """
    import pyarrow.parquet as pq

    columns = [*layout.features, *([layout.target] if layout.target else [])]
    for file in layout.files:
        meta = pq.read_metadata(file)
        index = {meta.schema.column(i).name: i for i in range(meta.num_columns)}
        for group in range(meta.num_row_groups):
            chunks = meta.row_group(group)
            for name in columns:
                stats = chunks.column(index[name]).statistics
                if stats is None:
                    continue
                if stats.null_count:
                    raise ValueError(
                        f"{file}: column {name!r} has {stats.null_count} missing value(s) "
                        f"(row group {group}, from the file's footer). Drop or impute them "
                        "before fitting."
                    )
                if stats.has_min_max and isinstance(stats.min, float):
                    for value in (stats.min, stats.max):
                        if value in (float("inf"), float("-inf")):
                            raise ValueError(
                                f"{file}: column {name!r} holds {value} (row group {group}, "
                                "from the file's footer); expected finite numbers. Drop or "
                                "replace the infinite values before fitting."
                            )


def check_classes(train) -> None:
    """A classifier's training files must hold at least two classes of the target.

    Reads the target's min/max from the footers, and only where a footer has none the
    target column itself (never the features), file by file until two classes are seen.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    seen: set = set()
    unknown = []
    for file in train.files:
        meta = pq.read_metadata(file)
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        column = names.index(train.target)
        for group in range(meta.num_row_groups):
            chunk = meta.row_group(group)
            stats = chunk.column(column).statistics
            if chunk.num_rows == 0:
                continue
            if stats is None or not stats.has_min_max:
                unknown.append(file)
                break
            seen.update((stats.min, stats.max))
        if len(seen) >= 2:
            return
    for file in dict.fromkeys(unknown):
        values = pq.read_table(file, columns=[train.target]).column(train.target)
        seen.update(pc.unique(values).to_pylist())
        if len(seen) >= 2:
            return
    found = f"one class ({next(iter(seen))!r})" if seen else "no values"
    raise ValueError(
        f"Target column {train.target!r} has {found} in all training files "
        f"({_show(train.files)}): a classifier needs at least two; check the data or the "
        "target name."
    )


@task(cache_policy=NONE)
def check_dataset(
    data: str,
    target: str | None,
    holdout_fraction: float,
    split_seed: int,
    kind: str | None = None,
) -> dict:
    """Read every footer and fail fast on a bad dataset, before any fitting.

    Checks the schema of every file, missing values and infinities the footers show and,
    for ``kind="classification"``, that the training files hold two classes or more.
    Returns the layout in small numbers: files and rows for training and holdout.
    """
    layout, train, holdout = split_layout(data, target, holdout_fraction, split_seed)
    check_footer_statistics(layout)
    if kind == "classification" and target is not None:
        check_classes(train)
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
