"""Mixed data (20 numeric columns with 2% missing, 4 string columns) through ooc.OnePass and
through dask-ml's best equivalent pipeline: ``python -m bench --tabular``.

Each method runs in a fresh process (``python -m bench.tabular METHOD DATA``): it fits
the preprocessing and one epoch of SGDClassifier on 90% of the rows, scores the rest, and
says how many reads of the data its preprocessing took.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import ooc

from . import peak_rss

CATEGORICAL = [f"c{j}" for j in range(4)]
NUMERIC = [f"x{j}" for j in range(20)]


def _split(data: str):
    from dataclasses import replace

    source = ooc.inspect_parquet(data, as_frame=True, allow_missing=True)
    train, holdout = source.split(0.1, seed=0)
    return replace(train, as_frame=True), replace(holdout, as_frame=True)


def _accuracy(model, holdout) -> float:
    from ooc.frames import read_frame
    from ooc.io import read_target

    correct = total = 0
    for index in range(len(holdout.blocks)):
        y = read_target(holdout, index)
        correct += int(np.sum(model.predict(read_frame(holdout, index)) == y))
        total += len(y)
    return correct / total


def read_floor(data: str) -> dict:
    """Reading every column once with pyarrow: what one pass over the data costs."""
    import pyarrow.parquet as pq

    start = time.perf_counter()
    for file in ooc.list_parquet_files(data):
        pq.read_table(file, columns=NUMERIC + CATEGORICAL)
    return {"preprocess_seconds": time.perf_counter() - start, "passes": 1}


def ooc_onepass(data: str) -> dict:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train, holdout = _split(data)
    X, y = ooc.io.dask_collections(train)
    columns = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), NUMERIC),
            ("categorical", OneHotEncoder(handle_unknown="infrequent_if_exist",
                                          min_frequency=0.0005), CATEGORICAL),
        ]
    )  # fmt: skip
    start = time.perf_counter()
    onepass = ooc.OnePass(columns).fit(X)
    preprocess = time.perf_counter() - start
    inc = ooc.Incremental(SGDClassifier(random_state=0))
    start = time.perf_counter()
    inc.fit(onepass.transform(X), y, classes=[0, 1])
    fit = time.perf_counter() - start
    model = Pipeline([("onepass", onepass), ("incremental", inc)])
    return {
        "preprocess_seconds": preprocess,
        "fit_seconds": fit,
        "passes": onepass.n_passes_,
        "accuracy": _accuracy(model, holdout),
    }


def dask_ml(data: str) -> dict:
    """Categorizer + DummyEncoder + SimpleImputer + StandardScaler + Incremental: each
    fitted stage reads the data again."""
    from dask_ml.impute import SimpleImputer
    from dask_ml.preprocessing import Categorizer, DummyEncoder, StandardScaler
    from dask_ml.wrappers import Incremental
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline

    # The same training rows as ooc's (its split), as a dask DataFrame.
    train, holdout = _split(data)
    X, y = ooc.io.dask_collections(train)
    X = X[NUMERIC + CATEGORICAL]
    from sklearn.preprocessing import FunctionTransformer

    # DummyEncoder's indicator columns are bool, which dask-ml's scaler cannot reduce.
    as_float = FunctionTransformer(lambda frame: frame.astype("float64"))
    preprocess = make_pipeline(
        Categorizer(columns=CATEGORICAL), DummyEncoder(columns=CATEGORICAL),
        SimpleImputer(), as_float, StandardScaler(),
    )  # fmt: skip
    start = time.perf_counter()
    Xt = preprocess.fit_transform(X)
    preprocess_seconds = time.perf_counter() - start
    inc = Incremental(SGDClassifier(random_state=0))
    start = time.perf_counter()
    inc.fit(Xt.to_dask_array(lengths=True).rechunk({0: y.chunks[0]}), y, classes=[0, 1])
    fit = time.perf_counter() - start

    class Chain:  # the fitted dask-ml stages, applied to a pandas block
        def predict(self, frame):
            out = preprocess.transform(frame[NUMERIC + CATEGORICAL])
            return inc.estimator_.predict(np.asarray(out, dtype=np.float64))

    return {
        "preprocess_seconds": preprocess_seconds,
        "fit_seconds": fit,
        "passes": 3,  # Categorizer, SimpleImputer, StandardScaler: one read each
        "accuracy": _accuracy(Chain(), holdout),
    }


METHODS = {"read-floor": read_floor, "ooc": ooc_onepass, "dask-ml": dask_ml}


def compare(rows: int, root: Path, repeats: int, out) -> dict:
    import statistics

    from .__main__ import _table, machine, run_method, warm_page_cache

    data = root / f"mixed-{rows}"
    ooc.generate_dataset(data, n_rows=rows, n_categorical=4, missing_rate=0.02)
    warm_page_cache(data)
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for _ in range(repeats):
        for method in METHODS:
            runs[method].append(run_method("bench.tabular", method, data))
    table = _table(
        f"{rows:,} rows: 20 numeric (2% missing) + 4 string columns, on {machine()}",
        ["method", "preprocessing passes", "preprocessing s", "fit s", "peak RSS", "accuracy"],
    )
    result = {}
    for method, r in runs.items():
        med = {
            k: statistics.median(x[k] for x in r) for k in r[0] if isinstance(r[0][k], float | int)
        }
        result[method] = {**med, "runs": r}
        table.add_row(
            method, str(r[0]["passes"]), f"{med['preprocess_seconds']:.2f}",
            f"{med.get('fit_seconds', float('nan')):.2f}", f"{med['peak_rss'] / 1e9:.2f} GB",
            f"{med['accuracy']:.4f}" if "accuracy" in med else "",
        )  # fmt: skip
    out.print(table)
    return {"rows": rows, "results": result}


if __name__ == "__main__":
    outcome = METHODS[sys.argv[1]](sys.argv[2])
    outcome["peak_rss"] = peak_rss()
    print(json.dumps(outcome))
