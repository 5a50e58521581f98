"""ooc: scikit-learn on data larger than memory.

Read partitioned parquet as dask arrays with known chunk sizes, scale it in one
parallel pass, and stream its blocks into any estimator's ``partial_fit`` with
prefetching, inside a plain :class:`sklearn.pipeline.Pipeline`.

Names are imported when first used (``ooc.read_parquet`` imports dask, ``ooc.Incremental``
scikit-learn), so ``import ooc`` and its light modules (``ooc.catalog``) are instant.
"""

from __future__ import annotations

import importlib

# Public name -> the module that defines it.
_EXPORTS = {
    "prefetch": "blocks",
    "ConversionResult": "convert",
    "convert_csv": "convert",
    "DatasetSpec": "datasets",
    "GeneratedDataset": "datasets",
    "generate_dataset": "datasets",
    "write_partition": "datasets",
    "list_parquet_files": "discovery",
    "BlockReport": "incremental",
    "Incremental": "incremental",
    "parquet_source": "io",
    "read_parquet": "io",
    "ParquetSource": "layout",
    "inspect_parquet": "layout",
    "BlockScorer": "metrics",
    "evaluate": "metrics",
    "ParallelIncremental": "parallel",
    "PredictionJob": "predict",
    "predict_file": "predict",
    "predict_parquet": "predict",
    "prediction_jobs": "predict",
    "MinMaxScaler": "preprocessing",
    "StandardScaler": "preprocessing",
    "HyperbandSearchCV": "search",
    "SuccessiveHalvingSearchCV": "search",
    "OnePass": "onepass",
    "column_tokens": "onepass",
    "StatsCache": "statcache",
    "LinearFold": "fastpath",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)  # a submodule: ooc.io
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise  # the submodule exists, something it imports does not
            raise AttributeError(f"module 'ooc' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
