"""Seed-style synthetic datasets, written as independent parquet partitions.

Every partition is a pure function of ``(spec, partition index)``: partitions can be
written in parallel, in any order, and any one regenerated alone. Files are written
under a temporary name and renamed, so a file under its final name is always complete.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .files import atomic_write, parquet_has_rows

__all__ = ["DatasetSpec", "GeneratedDataset", "generate_dataset", "write_partition"]

TASKS = ("classification", "regression", "blobs")
DTYPES = ("float64", "float32")
MANIFEST_NAME = "_manifest.json"


@dataclass(frozen=True)
class DatasetSpec:
    """Parameters of a synthetic dataset; equal specs produce byte-identical data.

    Parameters
    ----------
    n_rows : int
        Total number of rows.
    n_features : int
        Number of feature columns ``x0 .. x{n_features-1}``.
    chunk_rows : int
        Rows per partition file (the last one may be shorter).
    task : {"classification", "regression", "blobs"}
        Kind of target ``y``: int64 class labels, float64 values or int64 cluster ids.
    dtype : {"float64", "float32"}
        Dtype of the feature columns.
    seed : int
        Seed of the whole dataset.
    n_classes : int
        Classes for "classification", cluster centres for "blobs".
    n_categorical : int
        Number of string columns ``c0 .. c{n_categorical-1}`` (see
        :func:`generate_dataset`); 0 gives exactly the data of earlier versions.
    missing_rate : float
        Share of the numeric feature values that are missing (null), in [0, 1); the
        string columns have half as many.
    """

    n_rows: int
    n_features: int = 20
    chunk_rows: int = 500_000
    task: str = "classification"
    dtype: str = "float64"
    seed: int = 0
    n_classes: int = 2
    n_categorical: int = 0
    missing_rate: float = 0.0

    def __post_init__(self):
        minimums = {
            "n_rows": 1,
            "n_features": 1,
            "chunk_rows": 1,
            "n_classes": 2,
            "n_categorical": 0,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            _require(ok and value >= minimum, name, f"an int >= {minimum}", value)
            object.__setattr__(self, name, int(value))
        _require(self.task in TASKS, "task", f"one of {TASKS}", self.task)
        _require(self.dtype in DTYPES, "dtype", f"one of {DTYPES}", self.dtype)
        rate = self.missing_rate
        ok = isinstance(rate, numbers.Real) and not isinstance(rate, bool) and 0 <= rate < 1
        _require(ok, "missing_rate", "a number in [0, 1)", rate)
        object.__setattr__(self, "missing_rate", float(rate))

    @property
    def n_partitions(self) -> int:
        return math.ceil(self.n_rows / self.chunk_rows)

    def partition_rows(self, index: int) -> int:
        return min(self.chunk_rows, self.n_rows - index * self.chunk_rows)

    @staticmethod
    def partition_name(index: int) -> str:
        return f"part-{index:05d}.parquet"

    @property
    def feature_names(self) -> list[str]:
        return [f"x{j}" for j in range(self.n_features)]

    @property
    def categorical_names(self) -> list[str]:
        return [f"c{k}" for k in range(self.n_categorical)]

    def n_categories(self, k: int) -> int:
        """Distinct values of string column ``c{k}``: 3, 12, 48, 192, then 400."""
        return min(3 * 4**k, 400)


@dataclass
class GeneratedDataset:
    """What :func:`generate_dataset` did: where, and which partitions it wrote or kept."""

    path: Path
    spec: DatasetSpec
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def _require(ok, name, expected, got):
    if not ok:
        raise ValueError(f"generate_dataset: {name} must be {expected}, got {got!r}.")


def _dataset_constants(spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Quantities shared by all partitions: weights, centres, per-feature scale and offset."""
    rng = np.random.default_rng([spec.seed, 0])
    return {
        "weights": rng.standard_normal((spec.n_features, spec.n_classes)),
        "centres": rng.uniform(-4, 4, size=(spec.n_classes, spec.n_features)),
        # Scales span three orders of magnitude and offsets are large, so scaling matters.
        "scales": 10.0 ** rng.uniform(-1, 2, size=spec.n_features),
        "offsets": rng.uniform(-50, 50, size=spec.n_features),
    }


def _category_constants(spec: DatasetSpec) -> list[dict[str, np.ndarray]]:
    """Each string column's values, their frequencies and their effect on the target.

    Frequencies are skewed (Zipf-like, the first value most common) and the last value
    is rare (a thousandth of the least common other one). Drawn from their own stream, so
    the numeric data is the same with or without string columns.
    """
    rng = np.random.default_rng([spec.seed, 2])
    width = 1 if spec.task == "regression" else spec.n_classes
    out = []
    for k in range(spec.n_categorical):
        n = spec.n_categories(k)
        weights = 1.0 / np.arange(1, n + 1) ** 1.1
        weights[-1] = weights[:-1].min() / 1000 if n > 1 else 1.0
        out.append(
            {
                "values": np.array([f"v{i:03d}" for i in range(n)], dtype=object),
                "p": weights / weights.sum(),
                # Comparable to the numeric signal, so encoding them pays.
                "effects": rng.normal(scale=2.0, size=(n, width)),
            }
        )
    return out


def _partition_table(spec: DatasetSpec, index: int) -> pa.Table:
    const = _dataset_constants(spec)
    rng = np.random.default_rng([spec.seed, 1, index])
    n = spec.partition_rows(index)
    codes, effect = [], 0.0
    if spec.n_categorical:
        cat_rng = np.random.default_rng([spec.seed, 3, index])
        for column in _category_constants(spec):
            code = cat_rng.choice(len(column["p"]), size=n, p=column["p"])
            codes.append(code)
            effect = effect + column["effects"][code].T
    return _with_missing(spec, index, _numeric_table(spec, index, const, rng, effect), codes)


def _with_missing(spec: DatasetSpec, index: int, table: pa.Table, codes) -> pa.Table:
    """Add the string columns, and null out ``missing_rate`` of the feature values."""
    if not spec.n_categorical and not spec.missing_rate:
        return table
    rng = np.random.default_rng([spec.seed, 4, index])
    columns = {}
    for name in spec.feature_names:
        values = table.column(name).to_numpy()
        mask = rng.random(len(values)) < spec.missing_rate if spec.missing_rate else None
        columns[name] = pa.array(values, mask=mask)
    for name, code, column in zip(
        spec.categorical_names, codes, _category_constants(spec), strict=True
    ):
        mask = rng.random(len(code)) < spec.missing_rate / 2 if spec.missing_rate else None
        columns[name] = pa.array(column["values"][code], type=pa.string(), mask=mask)
    columns["y"] = table.column("y")
    return pa.table(columns)


def _numeric_table(spec: DatasetSpec, index: int, const, rng, effect) -> pa.Table:
    n = spec.partition_rows(index)
    # Feature-major layout: each feature is one contiguous row, i.e. one parquet column.
    if spec.task == "blobs":
        y = rng.integers(spec.n_classes, size=n, dtype=np.int64)
        z = const["centres"][y].T + rng.standard_normal((spec.n_features, n))
    else:
        z = rng.standard_normal((spec.n_features, n))
        signal = const["weights"].T @ z
        if spec.n_categorical:  # the string columns move the target too
            signal = signal + effect
        if spec.task == "classification":
            noise = rng.gumbel(scale=0.5, size=signal.shape)
            y = np.argmax(signal + noise, axis=0).astype(np.int64)
        else:
            y = 10.0 * signal[0] + rng.standard_normal(n) + 3.0
    x = z * const["scales"][:, None] + const["offsets"][:, None]
    columns = {name: x[j].astype(spec.dtype) for j, name in enumerate(spec.feature_names)}
    columns["y"] = y
    return pa.table(columns)


def write_partition(path: str | os.PathLike, spec: DatasetSpec, index: int) -> bool:
    """Write partition ``index`` of ``spec`` under ``path`` unless it is already complete.

    Parameters
    ----------
    path : path-like
        Dataset directory (must exist).
    spec : DatasetSpec
        Dataset parameters.
    index : int
        Partition index, ``0 <= index < spec.n_partitions``.

    Returns
    -------
    bool
        True if the file was written, False if a complete file was already there.

    Examples
    --------
    >>> spec = DatasetSpec(n_rows=1000, chunk_rows=500)
    >>> write_partition(tmp_dir, spec, 1)  # doctest: +SKIP
    True
    """
    if not 0 <= index < spec.n_partitions:
        raise IndexError(f"partition index {index} is outside 0..{spec.n_partitions - 1}")
    target = Path(path) / spec.partition_name(index)
    if parquet_has_rows(target, spec.partition_rows(index)):
        return False
    table = _partition_table(spec, index)
    # Random floats gain nothing from dictionary encoding, and plain pages read ~30%
    # faster; the string columns are dictionary encoded.
    dictionary = spec.categorical_names or False
    atomic_write(
        target,
        lambda tmp: pq.write_table(
            table, tmp, row_group_size=max(table.num_rows, 1), use_dictionary=dictionary
        ),
    )
    return True


def _manifest(spec: DatasetSpec) -> dict:
    schema = {name: spec.dtype for name in spec.feature_names}
    schema.update({name: "string" for name in spec.categorical_names})
    schema["y"] = "float64" if spec.task == "regression" else "int64"
    params = asdict(spec)
    # Parameters added later are recorded only when used, so that a dataset generated
    # before they existed keeps its manifest.
    for name, default in (("n_categorical", 0), ("missing_rate", 0.0)):
        if params[name] == default:
            del params[name]
    return {
        "format": 1,
        "params": params,
        "n_rows": spec.n_rows,
        "schema": schema,
        "partitions": [
            {"file": spec.partition_name(i), "rows": spec.partition_rows(i)}
            for i in range(spec.n_partitions)
        ],
    }


def prepare_dataset_dir(path: str | os.PathLike, spec: DatasetSpec) -> Path:
    """Create ``path`` and its manifest, or check an existing one was made from ``spec``.

    Raises
    ------
    ValueError
        If the directory holds a dataset made with other parameters, or parquet files
        without a manifest (data this function did not generate).
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / MANIFEST_NAME
    wanted = _manifest(spec)
    if manifest_path.exists():
        try:
            found = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{manifest_path} is not valid JSON ({err}); the dataset's manifest is damaged. "
                "Delete the directory and generate it again."
            ) from err
        if found.get("params") != wanted["params"]:
            diff = {
                k: (found.get("params", {}).get(k), v)
                for k, v in wanted["params"].items()
                if found.get("params", {}).get(k) != v
            }
            raise ValueError(
                f"{root} already holds a dataset generated with other parameters "
                f"(name: (found, requested)) {diff}. Use another directory or delete this one."
            )
        return root
    if any(root.rglob("*.parquet")):  # recursive, as read_parquet reads subdirectories
        raise ValueError(
            f"{root} holds parquet files but no {MANIFEST_NAME}: it is not a dataset made by "
            "generate_dataset, and writing into it would mix data. Use an empty directory."
        )
    atomic_write(manifest_path, lambda tmp: tmp.write_text(json.dumps(wanted, indent=2)))
    return root


def generate_dataset(
    path: str | os.PathLike,
    n_rows: int,
    n_features: int = 20,
    chunk_rows: int = 500_000,
    task: str = "classification",
    dtype: str = "float64",
    seed: int = 0,
    *,
    n_classes: int = 2,
    n_categorical: int = 0,
    missing_rate: float = 0.0,
) -> GeneratedDataset:
    """Write a synthetic dataset as parquet partitions, in parallel with dask.

    Features ``x0..x{n-1}`` have different scales and offsets; the target ``y`` holds
    class labels (int64), values (float64) or cluster ids (int64) depending on ``task``.
    A manifest ``_manifest.json`` records the parameters, row counts and schema.
    Re-running with the same arguments only writes the partitions that are missing.

    Real tabular data: ``n_categorical`` string columns ``c0..c{k-1}`` (after the
    numeric ones) with 3, 12, 48, 192 and then 400 distinct values ``"v000"...``, of
    skewed frequencies (the first value most common, the last one rare); each value
    moves the target (for "classification" and "regression"), so a model that encodes
    them beats one that sees only the numbers. ``missing_rate`` of the numeric feature
    values are missing (parquet nulls), and half that share of the string values; the
    target is computed before values go missing. Both default to none, which gives the
    same bytes as before they existed.

    Parameters
    ----------
    path : path-like
        Output directory; created if missing.
    n_rows, n_features, chunk_rows, task, dtype, seed, n_classes, n_categorical, missing_rate
        See :class:`DatasetSpec`.

    Returns
    -------
    GeneratedDataset
        The directory, the spec and which partitions were written or already complete.

    Examples
    --------
    >>> import ooc
    >>> info = ooc.generate_dataset("data/clf", n_rows=10**6, chunk_rows=10**5)  # doctest: +SKIP
    >>> X, y = ooc.read_parquet("data/clf")  # doctest: +SKIP
    >>> info = ooc.generate_dataset(
    ...     "data/shop", n_rows=10**5, n_categorical=3, missing_rate=0.05
    ... )  # doctest: +SKIP
    >>> X, y = ooc.read_parquet("data/shop")  # doctest: +SKIP
    >>> list(X.columns)[-3:]  # doctest: +SKIP
    ['c0', 'c1', 'c2']
    """
    spec = DatasetSpec(
        n_rows, n_features, chunk_rows, task, dtype, seed, n_classes, n_categorical, missing_rate
    )
    root = prepare_dataset_dir(path, spec)
    wrote = dask.compute(
        *[dask.delayed(write_partition)(root, spec, i) for i in range(spec.n_partitions)]
    )
    result = GeneratedDataset(root, spec)
    for index, written in enumerate(wrote):
        (result.written if written else result.skipped).append(index)
    return result
