"""ooc: scikit-learn on data larger than memory.

Read partitioned parquet as dask arrays with known chunk sizes, scale it in one
parallel pass, and stream its blocks into any estimator's ``partial_fit`` with
prefetching, inside a plain :class:`sklearn.pipeline.Pipeline`.
"""

from .blocks import prefetch
from .datasets import DatasetSpec, GeneratedDataset, generate_dataset, write_partition
from .discovery import list_parquet_files
from .incremental import BlockReport, Incremental
from .io import parquet_source, read_parquet
from .layout import ParquetSource, inspect_parquet
from .metrics import BlockScorer, evaluate
from .parallel import ParallelIncremental
from .predict import PredictionJob, predict_file, predict_parquet, prediction_jobs
from .preprocessing import MinMaxScaler, StandardScaler

__all__ = [
    "BlockReport",
    "BlockScorer",
    "DatasetSpec",
    "GeneratedDataset",
    "Incremental",
    "MinMaxScaler",
    "ParallelIncremental",
    "ParquetSource",
    "PredictionJob",
    "StandardScaler",
    "evaluate",
    "generate_dataset",
    "inspect_parquet",
    "list_parquet_files",
    "parquet_source",
    "predict_file",
    "predict_parquet",
    "prediction_jobs",
    "prefetch",
    "read_parquet",
    "write_partition",
]
__version__ = "0.1.0"
