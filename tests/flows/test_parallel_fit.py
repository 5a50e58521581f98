"""The train flow with ``replicas``: the model is fitted by replicas on both workers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from numpy.testing import assert_array_equal

from ooc.flows.pipeline import train
from ooc.tasks.config import ModelConfig
from ooc.tasks.store import load_object

from .support import (
    HOLDOUT_ROWS,
    ROWS,
    completed,
    flow_run_id,
    run,
    tiny_training,
    wait_for_task_runs,
)

pytestmark = pytest.mark.usefixtures("prefect_server")


def _train(runner, data, workdir, **training):
    return run(
        train,
        runner,
        data=str(data),
        workdir=str(workdir),
        model=ModelConfig(params={"random_state": 0}),
        training=tiny_training(epochs=2, shuffle_blocks=True, **training),
    )


def test_train_with_replicas_fits_on_both_workers_and_is_reproducible(runner, clf_data, tmp_path):
    state = _train(runner, clf_data, tmp_path / "a", replicas=2, sync_every=1)
    first = completed(state).trained
    again = completed(_train(runner, clf_data, tmp_path / "b", replicas=2, sync_every=1)).trained

    fit = first.fitted
    n_blocks = len(first.plan.train.blocks)
    assert fit.n_epochs == 2 and fit.n_samples_seen == 2 * (ROWS - HOLDOUT_ROWS)
    assert fit.n_blocks == n_blocks and n_blocks >= 4
    assert 0.6 < first.evaluated.metrics["accuracy"] <= 1
    with Path(fit.blocks_path).open() as fh:
        blocks = list(csv.DictReader(fh))
    # Every training block fitted once per epoch, by both replicas between them.
    assert len(blocks) == 2 * n_blocks
    assert sorted(int(b["block"]) for b in blocks) == sorted(2 * list(range(n_blocks)))
    assert {b["replica"] for b in blocks} == {"0", "1"}
    model, model_again = load_object(fit.model_path), load_object(again.fitted.model_path)
    assert type(model[-1]).__name__ == "ParallelIncremental"
    assert_array_equal(model[-1].coef_, model_again[-1].coef_)
    assert first.evaluated.metrics == again.evaluated.metrics
    # Still one fit task run: the replicas are Dask tasks inside it.
    runs = wait_for_task_runs(flow_run_id(state), {"fit_model": 1})
    assert [(t.name, t.run_count) for t in runs["fit_model"]] == [("fit", 1)]
