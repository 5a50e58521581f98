"""Prediction disk to disk: one output per input, atomic, idempotent, in parallel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_array_equal
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline

import ooc


@pytest.fixture(scope="module")
def fitted(clf_dir):
    X, y = ooc.read_parquet(clf_dir)
    pipe = make_pipeline(
        ooc.StandardScaler(), ooc.Incremental(SGDClassifier(loss="log_loss", random_state=0))
    )
    return pipe.fit(X, y, incremental__classes=[0, 1]), X


def _outputs(path):
    return sorted(p.name for p in path.rglob("*") if p.is_file())


def test_one_output_per_input_equal_to_in_memory_prediction(fitted, clf_dir, tmp_path):
    pipe, X = fitted
    jobs = ooc.predict_parquet(pipe, clf_dir, tmp_path / "pred")
    inputs = ooc.list_parquet_files(clf_dir)
    assert _outputs(tmp_path / "pred") == sorted(f.name for f in inputs)
    got = np.concatenate([pq.read_table(j.dest)["prediction"].to_numpy() for j in jobs])
    assert_array_equal(got, pipe.predict(X.compute()))


def test_predict_proba_columns(fitted, clf_dir, tmp_path):
    pipe, X = fitted
    jobs = ooc.predict_parquet(pipe, clf_dir, tmp_path / "proba", method="predict_proba")
    table = pq.read_table(jobs[0].dest)
    assert table.column_names == ["proba_0", "proba_1"]
    assert table.num_rows == jobs[0].rows


def test_rerun_after_a_partial_first_run_gives_exactly_one_output_each(fitted, clf_dir, tmp_path):
    pipe, X = fitted
    dest = tmp_path / "pred"
    jobs = ooc.prediction_jobs(clf_dir, dest)
    # A crashed first run: two outputs done, one torn temporary file left behind.
    for job in jobs[:2]:
        assert ooc.predict_file(pipe, job)
    (dest / ".part-00002.parquet.dead.tmp").write_bytes(b"half a file")
    # A torn output under the final name can only come from outside; it is redone.
    jobs[3].dest.write_bytes(b"garbage")
    written = [ooc.predict_file(pipe, job) for job in jobs]
    assert written == [False, False, True, True, True, True]
    total = sum(pq.read_metadata(j.dest).num_rows for j in jobs)
    assert total == X.shape[0]
    assert not [
        p
        for p in dest.iterdir()
        if p.name.startswith(".") and p.name != ".part-00002.parquet.dead.tmp"
    ]


def test_prediction_input_without_target_and_bad_method(fitted, tmp_path):
    pipe, X = fitted
    frame = pd.DataFrame(X[:100].compute(), columns=[f"x{j}" for j in range(X.shape[1])])
    frame.to_parquet(tmp_path / "new.parquet")
    (job,) = ooc.predict_parquet(pipe, tmp_path / "new.parquet", tmp_path / "out")
    assert pq.read_metadata(job.dest).num_rows == 100
    with pytest.raises(ValueError, match="method must be one of"):
        ooc.predict_file(pipe, job, method="explain")


def test_missing_feature_column_fails_before_writing(fitted, tmp_path):
    pipe, _ = fitted
    pd.DataFrame({"x0": [1.0], "y": [0]}).to_parquet(tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=r"Feature columns \['x1'\] not found"):
        ooc.predict_parquet(pipe, tmp_path, tmp_path / "out", features=["x0", "x1"])
    assert not (tmp_path / "out").exists()
