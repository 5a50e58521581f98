"""ooc: scikit-learn on data larger than memory.

Read partitioned parquet as dask arrays with known chunk sizes, scale it in one
parallel pass, and stream its blocks into any estimator's ``partial_fit`` with
prefetching, inside a plain :class:`sklearn.pipeline.Pipeline`.
"""

from .blocks import prefetch
from .datasets import DatasetSpec, GeneratedDataset, generate_dataset, write_partition
from .incremental import BlockReport, Incremental
from .io import ParquetLayout, inspect_parquet, list_parquet_files, read_parquet
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
    "ParquetLayout",
    "PredictionJob",
    "StandardScaler",
    "evaluate",
    "generate_dataset",
    "inspect_parquet",
    "list_parquet_files",
    "predict_file",
    "predict_parquet",
    "prediction_jobs",
    "prefetch",
    "read_parquet",
    "write_partition",
]
__version__ = "0.1.0"
