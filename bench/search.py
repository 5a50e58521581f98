"""A search over 27 SGD candidates (9 alphas x 3 penalties): ooc's successive halving, the
same candidates each fitted fully, and dask-ml's search where it runs:
``python -m bench --search``.

Each method runs in a fresh process (``python -m bench.search METHOD DATA``), on the same
training rows, and reports its time, the holdout accuracy of its best model, and peak RSS.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline

import ooc

from . import peak_rss

ALPHAS = [float(a) for a in np.logspace(-7, 1, 9)]
SPACE = {"alpha": ALPHAS, "penalty": ["l2", "l1", "elasticnet"]}
# Rungs of 1, 3, 9 and 27 blocks: 27 candidates, 9, 3, 1.
BUDGET = {"max_blocks": 27, "n_candidates": 27, "eta": 3}


def _data(data: str):
    source = ooc.inspect_parquet(data)
    train, holdout = source.split(0.1, seed=0)
    scaler = ooc.StandardScaler().fit(ooc.io.dask_arrays(train)[0])
    return train, holdout, scaler


def _accuracy(model, scaler, holdout) -> float:
    X, y = ooc.io.dask_arrays(holdout)
    return ooc.evaluate(make_pipeline(scaler, model), X, y)["accuracy"]


def ooc_halving(data: str) -> dict:
    train, holdout, scaler = _data(data)
    X, y = ooc.io.dask_arrays(train)
    start = time.perf_counter()
    search = ooc.SuccessiveHalvingSearchCV(
        SGDClassifier(random_state=0), SPACE, **BUDGET, random_state=0, refit=True
    ).fit(scaler.transform(X), y, classes=[0, 1])
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "candidates": search.n_candidates_,
        "partial_fit_calls": search.metadata_["partial_fit_calls"],
        "best_params": search.best_params_,
        "accuracy": _accuracy(search.best_estimator_, scaler, holdout),
    }


def full_fits(data: str) -> dict:
    """Every candidate fitted on every training block (one epoch), one after another."""
    train, holdout, scaler = _data(data)
    X, y = ooc.io.dask_arrays(train)
    Xt = scaler.transform(X)
    start = time.perf_counter()
    best, times = (-1.0, None), []
    for alpha, penalty in itertools.product(SPACE["alpha"], SPACE["penalty"]):
        began = time.perf_counter()
        inc = ooc.Incremental(SGDClassifier(random_state=0, alpha=alpha, penalty=penalty))
        inc.fit(Xt, y, classes=[0, 1])
        times.append(time.perf_counter() - began)
        accuracy = _accuracy(inc, scaler, holdout)
        best = max(best, (accuracy, {"alpha": alpha, "penalty": penalty}), key=lambda b: b[0])
    return {
        "seconds": time.perf_counter() - start,
        "one_fit_seconds": float(np.median(times)),
        "candidates": len(times),
        "best_params": best[1],
        "accuracy": best[0],
    }


def dask_ml_halving(data: str) -> dict:
    """dask-ml's SuccessiveHalvingSearchCV, same candidates and budget, no distributed
    client (under one it fails with today's dask: an asynchronous client in dask.compute)."""
    from dask_ml.model_selection import SuccessiveHalvingSearchCV

    train, holdout, scaler = _data(data)
    X, y = ooc.io.dask_arrays(train)
    start = time.perf_counter()
    try:
        search = SuccessiveHalvingSearchCV(
            SGDClassifier(random_state=0), SPACE, n_initial_parameters=27,
            n_initial_iter=1, max_iter=27, aggressiveness=3, random_state=0,
        ).fit(scaler.transform(X), y, classes=[0, 1])  # fmt: skip
    except Exception as err:  # noqa: BLE001 - reported in the table
        return {"seconds": float("nan"), "error": f"{type(err).__name__}: {err}"[:200]}
    return {
        "seconds": time.perf_counter() - start,
        "candidates": len(search.cv_results_["params"]),
        "best_params": search.best_params_,
        "accuracy": _accuracy(search.best_estimator_, scaler, holdout),
    }


METHODS = {"ooc-halving": ooc_halving, "full-fits": full_fits, "dask-ml-halving": dask_ml_halving}


def compare(rows: int, root: Path, out) -> dict:
    from .__main__ import _table, machine, run_method, warm_page_cache

    data = root / f"data-{rows}"
    ooc.generate_dataset(data, n_rows=rows)
    warm_page_cache(data)
    results = {m: run_method("bench.search", m, data) for m in METHODS}
    one_fit = results["full-fits"]["one_fit_seconds"]
    table = _table(
        f"27 SGD candidates on {rows:,} rows, on {machine()}; one full fit: {one_fit:.1f} s",
        ["method", "candidates", "seconds", "in full fits", "best", "holdout accuracy", "peak RSS"],
    )
    for method, r in results.items():
        if "error" in r:
            table.add_row(method, "", "failed", "", r["error"], "", "")
            continue
        table.add_row(
            method, str(r["candidates"]), f"{r['seconds']:.1f}", f"{r['seconds'] / one_fit:.1f}",
            json.dumps(r["best_params"]), f"{r['accuracy']:.4f}", f"{r['peak_rss'] / 1e9:.2f} GB",
        )  # fmt: skip
    out.print(table)
    return {"rows": rows, "results": results}


if __name__ == "__main__":
    outcome = METHODS[sys.argv[1]](sys.argv[2])
    outcome["peak_rss"] = peak_rss()
    print(json.dumps(outcome, default=str))
