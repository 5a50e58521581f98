"""The product benchmark's arithmetic: slopes, the fixed start, and how sure they are."""

from __future__ import annotations

import random

import pytest

from bench.__main__ import main
from bench.product import _interval, summarize

SMALL, LARGE = 2_000_000, 10_000_000


def _runs(per_million: dict[str, float], fixed: dict[str, float], noise: float, repeats: int):
    """Seconds of each side at both sizes: ``fixed + rows × per_million``, plus noise."""
    draw = random.Random(1)
    return {
        "predict": {
            side: {
                rows: [fixed[side] + rows / 1e6 * per_million[side] + draw.gauss(0, noise)
                       for _ in range(repeats)]
                for rows in (SMALL, LARGE)
            }
            for side in ("library", "command", "flow", "stage")
        }
    }  # fmt: skip


def test_without_noise_the_slopes_and_the_intercept_are_exact():
    runs = _runs({"library": 0.5, "command": 0.6, "flow": 0.575, "stage": 0.55},
                 {"library": 1.0, "command": 11.0, "flow": 3.0, "stage": 0.2}, noise=0.0,
                 repeats=5)  # fmt: skip
    (result,) = summarize(runs, SMALL, LARGE).values()
    assert result["per_row_ratio"] == pytest.approx(1.2)
    assert result["flow_ratio"] == pytest.approx(1.15)
    assert result["stage_ratio"] == pytest.approx(1.1)
    assert result["fixed_s"] == pytest.approx(11.0)
    assert result["per_row_interval"] == pytest.approx([1.2, 1.2])
    assert result["large"]["command"] == pytest.approx(11.0 + 10 * 0.6)


def test_the_interval_widens_with_the_noise_of_the_repeats():
    truth = {"library": 0.5, "command": 0.6, "flow": 0.575, "stage": 0.55}
    fixed = {"library": 1.0, "command": 11.0, "flow": 3.0, "stage": 0.2}
    quiet = summarize(_runs(truth, fixed, noise=0.05, repeats=9), SMALL, LARGE)["predict"]
    noisy = summarize(_runs(truth, fixed, noise=1.0, repeats=9), SMALL, LARGE)["predict"]
    width = [r["per_row_interval"][1] - r["per_row_interval"][0] for r in (quiet, noisy)]
    assert 0 < width[0] < 0.2 < width[1]
    for r in (quiet, noisy):
        low, high = r["per_row_interval"]
        assert low <= r["per_row_ratio"] <= high


def test_the_interval_is_the_same_on_every_call():
    command, library = [1.0, 1.4, 0.9, 1.2], [1.0, 1.1, 0.8, 1.0]
    assert _interval(command, library) == _interval(command, library)


def test_an_unknown_stage_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(SystemExit, match="--stages takes generate,train,predict, not fit"):
        main(["--product", "--stages", "predict,fit", "--workdir", str(tmp_path)])
    assert not (tmp_path / "product").exists()


def test_a_flow_runs_seconds_come_from_prefects_database(tmp_path):
    """Its start and end as Prefect's server records them; another flow's run is refused."""
    import sqlite3

    from bench.product import _flow_seconds

    with sqlite3.connect(tmp_path / "prefect.db") as db:
        db.execute("create table flow (id text, name text)")
        db.execute("create table flow_run (id text, flow_id text, start_time text, "
                   "end_time text, state_type text)")  # fmt: skip
        db.execute("insert into flow values ('f1', 'batch-predict'), ('f2', 'train')")
        db.execute(
            "insert into flow_run values ('r1', 'f2', '2026-12-02 14:24:00.000000', "
            "'2026-12-02 14:24:09.000000', 'COMPLETED'), ('r2', 'f1', "
            "'2026-12-02 14:24:51.379739', '2026-12-02 14:24:56.268003', 'COMPLETED')"
        )
    db.close()
    assert _flow_seconds(tmp_path, "predict") == pytest.approx(4.888264)
    with pytest.raises(SystemExit, match="is batch-predict \\(COMPLETED\\), not train"):
        _flow_seconds(tmp_path, "train")


def test_the_side_that_runs_first_alternates_from_one_repeat_to_the_next():
    from bench.product import _pair

    ran = []
    library = lambda: ran.append("library") or 1.0  # noqa: E731
    command = lambda: ran.append("command") or (2.0, {})  # noqa: E731
    assert [_pair(repeat, library, command) for repeat in range(3)] == [(1.0, (2.0, {}))] * 3
    assert ran == ["library", "command", "command", "library", "library", "command"]
    ran.clear()
    _pair(1, library, command, before=lambda: ran.append("warm"))
    assert ran == ["warm", "command", "warm", "library"]
