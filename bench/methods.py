"""The contenders, each measured in a fresh process: ``python -m bench.methods NAME ...``.

Each fits scaler + one epoch of SGDClassifier from the parquet files of the training
split, predicts every file to parquet, scores the holdout files, and prints one JSON
line with its timings, peak RSS and accuracy.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.linear_model import SGDClassifier

import ooc
from ooc.io import dask_arrays, read_features, read_target

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


def plain(train, holdout, all_files, out: Path) -> dict:
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
    for job in ooc.prediction_jobs(all_files, out):
        for index in range(job.n_blocks):
            pred = Model().predict(read_features(job.source, index))
            pq.write_table(pa.table({"prediction": pred}), out / f"{job.dest.stem}-{index}.parquet")
    predict = time.perf_counter() - start
    return {
        "fit_seconds": fit,
        "predict_seconds": predict,
        "accuracy": _holdout_accuracy(Model(), holdout),
    }


def dask_ml(train, holdout, all_files, out: Path) -> dict:
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

    Xa, _ = dask_arrays(all_files)
    start = time.perf_counter()
    pred = pipe.predict(Xa)
    dd.from_dask_array(pred, columns=["prediction"]).to_parquet(str(out), write_index=False)
    predict = time.perf_counter() - start
    return {
        "fit_seconds": fit,
        "predict_seconds": predict,
        "accuracy": _holdout_accuracy(pipe, holdout),
    }


def ooc_pipeline(train, holdout, all_files, out: Path, parallel: bool = False) -> dict:
    """ooc's StandardScaler + Incremental in a sklearn Pipeline, predict_parquet.

    With ``parallel``, ``ParallelIncremental``: one replica per core, averaged every
    ``sync_every`` blocks.
    """
    from sklearn.pipeline import Pipeline

    X, y = dask_arrays(train)
    reports = []
    wrapper = ooc.ParallelIncremental if parallel else ooc.Incremental
    inc = wrapper(_estimator(), block_callback=reports.append)
    start = time.perf_counter()
    pipe = Pipeline([("standardscaler", ooc.StandardScaler()), ("incremental", inc)])
    pipe.fit(X, y, incremental__classes=CLASSES)
    fit = time.perf_counter() - start

    start = time.perf_counter()
    ooc.predict_parquet(pipe, all_files.files[0].parent, out, target=all_files.target)
    predict = time.perf_counter() - start
    blocks = {
        "wait_seconds": sum(r.wait_seconds for r in reports),
        "partial_fit_seconds": sum(r.fit_seconds for r in reports),
        "load_seconds": sum(r.load_seconds for r in reports),
    }
    return {
        "fit_seconds": fit,
        "predict_seconds": predict,
        "accuracy": _holdout_accuracy(pipe, holdout),
        "blocks": blocks,
    }


METHODS = {
    "plain": plain,
    "dask-ml": dask_ml,
    "ooc": ooc_pipeline,
    "ooc-parallel": partial(ooc_pipeline, parallel=True),
}


def main(name: str, data: str, out: str) -> None:
    layout = ooc.inspect_parquet(data, target="y")
    train, holdout = layout.split(0.1, seed=0)
    out_dir = Path(out)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    result = METHODS[name](train, holdout, layout, out_dir)
    result["train_rows"] = train.n_rows
    result["rows"] = layout.n_rows
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shutil.rmtree(out_dir, ignore_errors=True)
    print(json.dumps(result))


def breakdown(train, holdout, all_files, out: Path, n_blocks: int = 4) -> dict:
    """Where one block's time goes, measured stage by stage in one thread."""
    from sklearn.preprocessing import StandardScaler

    files = train.files[:n_blocks]
    first = train.with_blocks(train.blocks[:n_blocks])
    scaler = StandardScaler().fit(read_features(first, 0))
    model = _estimator()
    times = {"read_decode": 0.0, "to_array": 0.0, "transform": 0.0, "partial_fit": 0.0}
    rows = 0
    for index, file in enumerate(files):
        t0 = time.perf_counter()
        pq.read_table(file, columns=list(train.features))
        t1 = time.perf_counter()
        X = read_features(first, index)  # read + decode + to array
        t2 = time.perf_counter()
        Xt = scaler.transform(X)
        t3 = time.perf_counter()
        y = pq.read_table(file, columns=[train.target])[train.target].to_numpy()
        t4 = time.perf_counter()
        model.partial_fit(Xt, y, classes=CLASSES)
        t5 = time.perf_counter()
        times["read_decode"] += t1 - t0
        times["to_array"] += (t2 - t1) - (t1 - t0)
        times["transform"] += t3 - t2
        times["partial_fit"] += t5 - t4
        rows += len(X)
    return {k: v / len(files) for k, v in times.items()} | {"block_rows": rows / len(files)}


METHODS["breakdown"] = breakdown


if __name__ == "__main__":
    main(*sys.argv[1:4])
