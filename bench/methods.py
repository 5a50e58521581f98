"""The contenders, each measured in a fresh process: ``python -m bench.methods NAME DATA OUT``.

Each fits scaler + one epoch of SGDClassifier on the training split (90% of the rows,
the same split for all), predicts every file to parquet, scores the holdout rows, and
prints one JSON line with its timings, peak RSS and accuracy. ``ooc`` also refits with
its statistics cache warm (a scheduled retrain on the same files) and reports how much
of its fit was ``partial_fit`` itself.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.linear_model import SGDClassifier

import ooc
from ooc.io import dask_arrays, read_features, read_target

from . import peak_rss

CLASSES = [0, 1]


def _estimator():
    return SGDClassifier(random_state=0)


def _holdout_accuracy(model, holdout) -> float:
    correct = total = 0
    for index in range(len(holdout.blocks)):
        X, y = read_features(holdout, index), read_target(holdout, index)
        correct += int(np.sum(model.predict(X) == y))
        total += len(y)
    return correct / total


def plain(train, holdout, source, out: Path) -> dict:
    """One thread, no dask: pyarrow reads and a partial_fit loop, two passes."""
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    scaler = StandardScaler()
    blocks = range(len(train.blocks))
    for index in blocks:
        scaler.partial_fit(read_features(train, index))
    model = _estimator()
    for index in blocks:
        X = scaler.transform(read_features(train, index))
        model.partial_fit(X, read_target(train, index), classes=CLASSES)
    fit = time.perf_counter() - start

    class Model:  # scaler then model, like the pipelines
        def predict(self, X):
            return model.predict(scaler.transform(X))

    start = time.perf_counter()
    for job in ooc.prediction_jobs(source, out):
        with pq.ParquetWriter(job.dest, pa.schema([("prediction", pa.int64())])) as writer:
            for index in range(job.n_blocks):
                pred = Model().predict(read_features(job.source, index))
                writer.write_table(pa.table({"prediction": pred}))
    predict = time.perf_counter() - start
    return {
        "fit_seconds": fit,
        "predict_seconds": predict,
        "accuracy": _holdout_accuracy(Model(), holdout),
    }


def dask_ml(train, holdout, source, out: Path) -> dict:
    """dask-ml's StandardScaler + Incremental in a sklearn Pipeline (the 2017 seed)."""
    import dask.dataframe as dd
    from dask_ml.preprocessing import StandardScaler
    from dask_ml.wrappers import Incremental
    from sklearn.pipeline import make_pipeline

    X, y = dask_arrays(train)  # footer chunk sizes, as dask-ml needs known chunks
    start = time.perf_counter()
    pipe = make_pipeline(StandardScaler(), Incremental(_estimator()))
    pipe.fit(X, y, incremental__classes=CLASSES)
    fit = time.perf_counter() - start

    Xa, _ = dask_arrays(source)
    start = time.perf_counter()
    pred = pipe.predict(Xa)
    dd.from_dask_array(pred, columns=["prediction"]).to_parquet(str(out), write_index=False)
    predict = time.perf_counter() - start
    return {
        "fit_seconds": fit,
        "predict_seconds": predict,
        "accuracy": _holdout_accuracy(pipe, holdout),
    }


def _ooc_fit(train, wrapper, cache):
    X, y = dask_arrays(train)
    reports = []
    inc = wrapper(_estimator(), block_callback=reports.append)
    pipe = ooc_pipeline_of(inc, cache)
    start = time.perf_counter()
    pipe.fit(X, y, incremental__classes=CLASSES)
    return pipe, time.perf_counter() - start, reports


def ooc_pipeline_of(inc, cache):
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [("standardscaler", ooc.StandardScaler(stats_cache=cache)), ("incremental", inc)]
    )


def ooc_pipeline(train, holdout, source, out: Path, parallel: bool = False) -> dict:
    """ooc's StandardScaler + Incremental in a sklearn Pipeline, then predict_parquet.

    The cold fit computes every statistic; the warm refit finds them in its statistics
    cache (the nightly retrain on unchanged files). With ``parallel``,
    ``ParallelIncremental``: one replica per core, averaged every ``sync_every`` blocks.
    """
    wrapper = ooc.ParallelIncremental if parallel else ooc.Incremental
    with tempfile.TemporaryDirectory() as cache:
        pipe, fit, reports = _ooc_fit(train, wrapper, cache)
        _, warm, _ = _ooc_fit(train, wrapper, cache)
    start = time.perf_counter()
    ooc.predict_parquet(pipe, source, out)
    predict = time.perf_counter() - start
    partial_fit = sum(r.fit_seconds for r in reports)
    return {
        "fit_seconds": fit,
        "warm_fit_seconds": warm,
        "predict_seconds": predict,
        "accuracy": _holdout_accuracy(pipe, holdout),
        "blocks": {
            "partial_fit_seconds": partial_fit,
            "wait_seconds": sum(r.wait_seconds for r in reports),
            "load_seconds": sum(r.load_seconds for r in reports),
        },
    }


def decode_floor(train, holdout, source, out: Path) -> dict:
    """Reading and decoding every feature column, nothing else, on every core: the most
    rows per second any method that reads this data can reach."""
    import os

    columns = list(source.features)

    def read(file):
        return pq.read_table(file, columns=columns, use_threads=False).num_rows

    start = time.perf_counter()
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        rows = sum(pool.map(read, source.files))
    seconds = time.perf_counter() - start
    return {"fit_seconds": seconds, "predict_seconds": seconds, "accuracy": float("nan"),
            "decoded_rows": rows}  # fmt: skip


def breakdown(train, holdout, source, out: Path, n_blocks: int = 4) -> dict:
    """Where one block's time goes, stage by stage in one thread: the old path (a 2-D
    block, then the scaler's transform) and ooc's (columns scaled in one pass), and the
    folded prediction."""
    from sklearn.pipeline import make_pipeline

    from ooc.fastpath import LinearFold, scaled_block
    from ooc.io import read_block_columns

    first = train.with_blocks(train.blocks[:n_blocks])
    scaler = ooc.StandardScaler().fit(read_features(first, 0))
    model = _estimator()
    times = dict.fromkeys(
        ("read_decode", "to_array", "transform", "fused_read_transform", "partial_fit",
         "predict", "folded_predict"), 0.0,
    )  # fmt: skip
    rows = 0
    for index in range(n_blocks):
        piece_files = {first.files[p.file] for p in first.blocks[index]}
        t0 = time.perf_counter()
        for file in piece_files:
            pq.read_table(file, columns=list(train.features))
        t1 = time.perf_counter()
        X = read_features(first, index)  # read + decode + to array
        t2 = time.perf_counter()
        Xt = scaler.transform(X)
        t3 = time.perf_counter()
        scaled_block(read_block_columns(first, index), scaler, X.dtype)
        t4 = time.perf_counter()
        y = read_target(first, index)
        t5 = time.perf_counter()
        model.partial_fit(Xt, y, classes=CLASSES)
        t6 = time.perf_counter()
        model.predict(Xt)
        t7 = time.perf_counter()
        fold = LinearFold.of(make_pipeline(scaler, model))
        columns = read_block_columns(first, index)
        t8 = time.perf_counter()
        fold.output("predict", fold.decision(columns))
        t9 = time.perf_counter()
        times["read_decode"] += t1 - t0
        times["to_array"] += (t2 - t1) - (t1 - t0)
        times["transform"] += t3 - t2
        times["fused_read_transform"] += t4 - t3
        times["partial_fit"] += t6 - t5
        times["predict"] += t7 - t6
        times["folded_predict"] += t9 - t8
        rows += len(X)
    return {k: v / n_blocks for k, v in times.items()} | {"block_rows": rows / n_blocks}


METHODS = {
    "plain": plain,
    "dask-ml": dask_ml,
    "ooc": ooc_pipeline,
    "ooc-parallel": lambda *a: ooc_pipeline(*a, parallel=True),
    "decode-floor": decode_floor,
    "breakdown": breakdown,
}


def main(name: str, data: str, out: str) -> None:
    source = ooc.inspect_parquet(data, target="y")
    train, holdout = source.split(0.1, seed=0)
    out_dir = Path(out)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    result = METHODS[name](train, holdout, source, out_dir)
    result["train_rows"] = train.n_rows
    result["rows"] = source.n_rows
    result["peak_rss"] = peak_rss()
    shutil.rmtree(out_dir, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:4])
