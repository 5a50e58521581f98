"""The train flow with ``replicas``: the model is fitted by replicas on both workers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from numpy.testing import assert_array_equal

from flows.params import ModelConfig, TrainingConfig
from flows.pipeline import train
from tasks.store import load_object

from .support import CHUNK_ROWS, ROWS, completed, run

pytestmark = pytest.mark.usefixtures("prefect_server")


def _train(runner, data, workdir, **training):
    return completed(
        run(
            train,
            runner,
            data=str(data),
            workdir=str(workdir),
            model=ModelConfig(params={"random_state": 0}),
            training=TrainingConfig(epochs=2, shuffle_blocks=True, **training),
        )
    )


def test_train_with_replicas_fits_on_both_workers_and_is_reproducible(runner, clf_data, tmp_path):
    first = _train(runner, clf_data, tmp_path / "a", replicas=2, sync_every=1)
    again = _train(runner, clf_data, tmp_path / "b", replicas=2, sync_every=1)

    fit = first["fit"]
    assert fit["n_epochs"] == 2 and fit["n_samples_seen"] == 2 * (ROWS - CHUNK_ROWS)
    assert 0.6 < first["metrics"]["accuracy"] <= 1
    with Path(fit["blocks_path"]).open() as fh:
        blocks = list(csv.DictReader(fh))
    # 7 training files × 2 epochs, each fitted once, by both replicas between them.
    assert len(blocks) == 14
    assert {b["replica"] for b in blocks} == {"0", "1"}
    model, model_again = load_object(fit["model_path"]), load_object(again["fit"]["model_path"])
    assert type(model[-1]).__name__ == "ParallelIncremental"
    assert_array_equal(model[-1].coef_, model_again[-1].coef_)
