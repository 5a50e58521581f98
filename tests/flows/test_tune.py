"""The tune flow: a search over streamed candidates, visible in Prefect, one MLflow parent run
with a child run per candidate, the best registered under the promotion rules."""

from __future__ import annotations

import pytest

from ooc.flows.pipeline import tune
from ooc.tasks.config import ModelConfig, SearchConfig

from .support import (
    assert_summary_and_progress,
    completed,
    flow_run_id,
    logged,
    registry,
    run,
    task_runs,
    tiny_training,
    wait_for_task_runs,
)

pytestmark = pytest.mark.usefixtures("prefect_server")
SPACE = {"alpha": "loguniform:1e-6:1e0", "penalty": "choice:l2,l1"}


def test_tune_races_candidates_and_registers_the_best(runner, clf_data, tmp_path):
    search = SearchConfig(space=SPACE, max_blocks=9, eta=3)
    model = ModelConfig(params={"random_state": 0})
    state = run(
        tune, runner, data=str(clf_data), search=search, model=model,
        training=tiny_training(), workdir=str(tmp_path),
    )  # fmt: skip
    result = completed(state)
    searched = result.searched

    # Hyperband with R=9, eta=3: brackets of 9, 5 and 3 candidates (Li et al.).
    assert [b["n_candidates"] for b in searched.plan["brackets"]] == [9, 5, 3]
    assert len(searched.candidates) == 17
    best = min(searched.candidates, key=lambda c: c["rank"])
    assert best["params"] == searched.best_params and best["score"] == searched.best_score
    # A tiny alpha beats alpha near 1 on this data.
    assert searched.best_params["alpha"] < 0.1
    assert result.evaluated.metrics["accuracy"] > 0.8
    assert result.registered.version == "1" and result.registered.promoted

    runs = wait_for_task_runs(
        flow_run_id(state), {"check_dataset": 1, "fit_preprocessing": 1, "search_model": 1}
    )
    assert runs["search_model"][0].name == "search"
    assert_summary_and_progress(flow_run_id(state), stages=("search",))
    assert logged(flow_run_id(state), "still racing")

    # One parent MLflow run (the flow run's), one child per candidate, read back.
    client = registry(tmp_path)
    experiment = client.get_experiment_by_name("ooc").experiment_id
    (parent,) = client.search_runs(
        [experiment], filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id(state)}'"
    )
    children = client.search_runs(
        [experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert len(children) == 17
    for child in children:
        assert set(child.data.params) == {"alpha", "penalty"}
        history = client.get_metric_history(child.info.run_id, "score")
        assert history and history[-1].step == int(child.data.tags["ooc.blocks_seen"])
    ranks = sorted(int(c.data.tags["ooc.rank"]) for c in children)
    assert ranks[0] == 1
    assert parent.data.metrics["search/candidates"] == 17
    assert float(parent.data.params["best.alpha"]) == pytest.approx(searched.best_params["alpha"])
    version = client.get_model_version_by_alias("ooc-classification", "challenger")
    assert str(version.version) == "1"


@pytest.mark.parametrize(
    ("space", "max_blocks", "message"),
    [
        ({"alpah": "loguniform:1e-6:1e-2"}, 9, "search space names ['alpah']"),
        ({"alpha": "choice:"}, 9, "choice needs at least one value"),
        ({"alpha": "loguniform:0:1"}, 9, "LOW > 0 for loguniform"),
        ({"alpha": "normal:0:1"}, 9, "unknown distribution 'normal'"),
        ({}, 9, "search space is empty"),
        ({"alpha": "loguniform:1e-6:1e-2"}, 0, "greater than or equal to 1"),
    ],
)
def test_bad_search_fails_before_any_work(runner, clf_data, tmp_path, space, max_blocks, message):
    from pydantic import ValidationError

    if "alpah" not in space:
        with pytest.raises(ValidationError, match=message):
            SearchConfig(space=space, max_blocks=max_blocks)
        return
    state = run(
        tune, runner, data=str(clf_data), search=SearchConfig(space=space), workdir=str(tmp_path)
    )
    assert state.is_failed() and message in state.message
    assert task_runs(flow_run_id(state)) == []
