"""Successive halving and Hyperband over streamed blocks: the plan by hand, candidates equal
to a manual partial_fit loop, exact held-out scores, determinism on threads and on a real
cluster, and a clear error for each bad input."""

from __future__ import annotations

import math

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import loguniform
from sklearn.base import clone
from sklearn.datasets import make_regression
from sklearn.linear_model import LinearRegression, SGDClassifier, SGDRegressor
from sklearn.metrics import r2_score

import ooc
from ooc.blocks import current_client
from ooc.halving import halving_bracket, hyperband_brackets
from ooc.search import HyperbandSearchCV, SuccessiveHalvingSearchCV

ROWS = 1_000  # rows per block; every dataset here has 20 blocks
ALPHAS = [1e-6, 1e-4, 1e-2, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5]


@pytest.fixture(scope="module")
def reg():
    """A linear target with noise as dask arrays of 20 blocks, and the same in memory."""
    X, y = make_regression(20 * ROWS, 5, noise=10.0, random_state=0)
    y = y / y.std()
    return da.from_array(X, chunks=(ROWS, 5)), da.from_array(y, chunks=ROWS), X, y


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    """Parquet read in 20 blocks of 1 000 rows, scaled lazily (so each block is a read
    and a transform)."""
    path = tmp_path_factory.mktemp("search-clf")
    ooc.generate_dataset(path, n_rows=20 * ROWS, n_features=5, chunk_rows=ROWS, seed=4)
    X, y = ooc.read_parquet(path, block_rows=ROWS)
    return ooc.StandardScaler().fit(X).transform(X), y


def _block(a: np.ndarray, i: int) -> np.ndarray:
    return a[i * ROWS : (i + 1) * ROWS]


def _manual(estimator, params, X, y, blocks):
    """A partial_fit loop over ``blocks`` in order, as the stream would feed them."""
    model = clone(estimator).set_params(**params)
    for i in blocks:
        model.partial_fit(_block(X, i), _block(y, i))
    return model


def _stream(search, n_blocks=20) -> list[int]:
    """The training blocks in order, epoch after epoch (shuffle_blocks=False)."""
    train = [i for i in range(n_blocks) if i not in search.validation_blocks_]
    return train * math.ceil(search.max_blocks / len(train))


# -- the plan, by hand ----------------------------------------------------------------------


def test_successive_halving_rungs_by_hand():
    # 10 candidates, 9 blocks, eta 3: two halvings; 10 -> 3 -> 1 at 1, 3, 9 blocks.
    bracket = halving_bracket(10, max_blocks=9)
    assert (bracket.s, bracket.candidates, bracket.blocks) == (2, (10, 3, 1), (1, 3, 9))
    assert bracket.partial_fit_calls == 10 * 1 + 3 * (3 - 1) + 1 * (9 - 3)
    # Halvings are bounded by the candidates (27 could halve 3 times) and the blocks.
    assert halving_bracket(27, 9).candidates == (27, 9, 3)
    assert halving_bracket(5, 100, eta=2).blocks == (25, 50, 100)
    assert halving_bracket(5, 100, eta=2).candidates == (5, 2, 1)
    # min_blocks=3 allows one halving of 20 blocks: 20 // 3 = 6 blocks first.
    assert halving_bracket(10, 20, min_blocks=3).blocks == (6, 20)
    # The same plan from the estimator, before any fit.
    search = SuccessiveHalvingSearchCV(SGDRegressor(), {"alpha": ALPHAS}, 9, n_candidates=10)
    (entry,) = search.metadata["brackets"]
    assert [(r["blocks"], r["candidates"]) for r in entry["rungs"]] == [(1, 10), (3, 3), (9, 1)]
    assert search.metadata["partial_fit_calls"] == 22


def test_hyperband_brackets_match_li_et_al():
    # Li et al. (2018), Table 1: R = 81, eta = 3.
    table = {
        4: ((81, 27, 9, 3, 1), (1, 3, 9, 27, 81)),
        3: ((34, 11, 3, 1), (3, 9, 27, 81)),
        2: ((15, 5, 1), (9, 27, 81)),
        1: ((8, 2), (27, 81)),
        0: ((5,), (81,)),
    }
    assert {b.s: (b.candidates, b.blocks) for b in hyperband_brackets(81)} == table
    meta = HyperbandSearchCV(SGDRegressor(), {"alpha": ALPHAS}, 81).metadata
    assert meta["n_candidates"] == 81 + 34 + 15 + 8 + 5
    # R = 10 is no power of 3: s_max = 2, blocks rounded down.
    brackets = [(b.s, b.candidates, b.blocks) for b in hyperband_brackets(10)]
    assert brackets == [(2, (9, 3, 1), (1, 3, 10)), (1, (5, 1), (3, 10)), (0, (3,), (10,))]


# -- what the search learns ----------------------------------------------------------------


def test_finds_the_tiny_alpha_and_candidates_stream(reg):
    X, y, Xm, ym = reg
    estimator = SGDRegressor(random_state=0)
    search = SuccessiveHalvingSearchCV(
        estimator, {"alpha": ALPHAS}, max_blocks=27, n_candidates=9, random_state=0
    ).fit(X, y)
    assert search.best_params_["alpha"] <= 1e-2
    assert search.best_score_ > 0.9
    # The best has seen 27 blocks: one and a half epochs of the 18 training blocks.
    stream = _stream(search)
    assert search.cv_results_["blocks_seen"][search.best_index_] == 27
    manual = _manual(estimator, search.best_params_, Xm, ym, stream[:27])
    assert_allclose(search.best_estimator_.coef_, manual.coef_, rtol=1e-12)
    # Every first-rung score is the manual model's exact R² on the held-out rows.
    rows = np.concatenate([np.arange(i * ROWS, (i + 1) * ROWS) for i in search.validation_blocks_])
    for entry in (h for h in search.history_ if h["blocks_seen"] == 3):
        params = search.cv_results_["params"][entry["candidate"]]
        model = _manual(estimator, params, Xm, ym, stream[:3])
        assert_allclose(entry["score"], r2_score(ym[rows], model.predict(Xm[rows])), rtol=1e-10)


def test_results_history_and_list_of_dicts(reg):
    X, y, *_ = reg
    distributions = [
        {"alpha": loguniform(1e-6, 1e-2)},
        {"eta0": [1e-3, 1e-2], "learning_rate": ["constant"]},
    ]
    search = HyperbandSearchCV(
        SGDRegressor(random_state=0), distributions, max_blocks=9, random_state=1
    ).fit(X, y)
    results = search.cv_results_
    assert search.n_candidates_ == len(results["params"]) == 9 + 5 + 3
    assert_array_equal(results["bracket"], [2] * 9 + [1] * 5 + [0] * 3)
    # param_ columns are masked where a candidate's dict lacks the parameter.
    has_eta0 = np.array(["eta0" in p for p in results["params"]])
    assert 0 < has_eta0.sum() < len(has_eta0)
    assert_array_equal(results["param_eta0"].mask, ~has_eta0)
    assert_array_equal(results["param_alpha"].mask, has_eta0)
    order = np.argsort(-results["test_score"], kind="stable")
    assert results["rank_test_score"][order[0]] == 1 and order[0] == search.best_index_
    assert search.best_score_ == results["test_score"].max()
    # Every survivor of a bracket saw 9 blocks; history by candidate adds up.
    assert results["blocks_seen"].max() == 9 and (results["blocks_seen"] >= 1).all()
    assert sum(len(h) for h in search.model_history_.values()) == len(search.history_)
    assert all(h["candidate"] == c for c, hs in search.model_history_.items() for h in hs)
    assert search.metadata_["partial_fit_calls"] == search.metadata["partial_fit_calls"]


def test_dask_dataframe_gives_the_array_results(reg):
    X, y, *_ = reg
    frame = dd.from_dask_array(X, columns=[f"x{i}" for i in range(5)])
    target = dd.from_dask_array(y)
    kwargs = {"max_blocks": 9, "n_candidates": 4, "random_state": 0}
    on_array = SuccessiveHalvingSearchCV(SGDRegressor(random_state=0), {"alpha": ALPHAS}, **kwargs)
    on_frame = clone(on_array)
    assert_allclose(
        on_frame.fit(frame, target).cv_results_["test_score"],
        on_array.fit(X, y).cv_results_["test_score"],
        rtol=1e-12,
    )
    assert on_frame.best_params_ == on_array.best_params_
    assert isinstance(on_frame.predict(frame), dd.Series)


def test_patience_stops_a_flat_candidate(reg):
    X, y, *_ = reg
    # eta0=1e-12 never moves from the first model: every score check is the same.
    estimator = SGDRegressor(learning_rate="constant", random_state=0)
    search = SuccessiveHalvingSearchCV(
        estimator,
        {"eta0": [1e-12, 1e-2]},
        max_blocks=16,
        n_candidates=2,
        eta=2,
        patience=2,
        score_every=1,
        tol=1e-3,
        random_state=0,
    ).fit(X, y)
    flat = search.cv_results_["params"].index({"eta0": 1e-12})
    assert search.cv_results_["stopped"][flat]
    # Checks at 1 (its first), 2 and 3 (no improvement twice): stopped at 3 of 8 blocks.
    assert search.cv_results_["blocks_seen"][flat] == 3
    assert [h["blocks_seen"] for h in search.model_history_[flat]] == [1, 2, 3]
    assert search.best_index_ != flat
    assert search.metadata_["partial_fit_calls"] < search.metadata["partial_fit_calls"]


def test_patience_is_off_by_default(reg):
    X, y, *_ = reg
    estimator = SGDRegressor(learning_rate="constant", random_state=0)
    search = SuccessiveHalvingSearchCV(
        estimator, {"eta0": [1e-12, 1e-2]}, 16, n_candidates=2, eta=2, score_every=1
    ).fit(X, y)
    assert not search.cv_results_["stopped"].any()
    assert sorted(search.cv_results_["blocks_seen"]) == [8, 16]


def test_refit_streams_the_best_params_over_every_block(reg):
    X, y, Xm, ym = reg
    estimator = SGDRegressor(random_state=0)
    kwargs = {"max_blocks": 9, "n_candidates": 3, "random_state": 0}
    kept = SuccessiveHalvingSearchCV(estimator, {"alpha": ALPHAS}, **kwargs).fit(X, y)
    refit = SuccessiveHalvingSearchCV(estimator, {"alpha": ALPHAS}, refit=True, **kwargs)
    refit.fit(X, y)
    assert refit.best_params_ == kept.best_params_ and refit.best_score_ == kept.best_score_
    # As many epochs as the best saw: 9 of 18 training blocks -> 10 of all 20, in order.
    manual = _manual(estimator, refit.best_params_, Xm, ym, range(10))
    assert_allclose(refit.best_estimator_.coef_, manual.coef_, rtol=1e-12)
    kept_manual = _manual(estimator, kept.best_params_, Xm, ym, _stream(kept)[:9])
    assert_allclose(kept.best_estimator_.coef_, kept_manual.coef_, rtol=1e-12)


def test_predict_and_score_delegate_to_the_best_blockwise(reg):
    X, y, Xm, ym = reg
    search = SuccessiveHalvingSearchCV(
        SGDRegressor(random_state=0), {"alpha": ALPHAS}, 9, n_candidates=3, random_state=0
    ).fit(X, y)
    predicted = search.predict(X)
    assert isinstance(predicted, da.Array) and predicted.chunks[0] == X.chunks[0]
    assert_allclose(predicted.compute(), search.best_estimator_.predict(Xm))
    assert_allclose(search.score(X, y), r2_score(ym, search.best_estimator_.predict(Xm)))
    assert_allclose(search.score(Xm, ym), search.best_estimator_.score(Xm, ym))
    assert not hasattr(search, "predict_proba")  # SGDRegressor has none


# -- determinism -------------------------------------------------------------------------------


def _hyperband(X, y, **params):
    distributions = {
        "alpha": loguniform(1e-6, 1.0),
        "loss": ["hinge", "log_loss", "modified_huber"],
    }
    search = HyperbandSearchCV(
        SGDClassifier(random_state=0),
        distributions,
        max_blocks=9,
        scoring="accuracy",
        shuffle_blocks=True,
        random_state=7,
        **params,
    )
    return search.fit(X, y, classes=[0, 1])


@pytest.fixture(scope="module")
def on_threads(clf):
    assert current_client() is None
    return _hyperband(*clf)


def test_same_results_on_threads_and_on_a_cluster(on_threads, clf, dask_client):
    assert current_client() is dask_client
    on_cluster = _hyperband(*clf)
    for name in ("test_score", "blocks_seen", "rank_test_score", "bracket"):
        assert_array_equal(on_cluster.cv_results_[name], on_threads.cv_results_[name])
    assert on_cluster.cv_results_["params"] == on_threads.cv_results_["params"]
    assert on_cluster.best_index_ == on_threads.best_index_
    assert_array_equal(on_cluster.best_estimator_.coef_, on_threads.best_estimator_.coef_)
    strip = [{k: v for k, v in h.items() if k != "elapsed_seconds"} for h in on_threads.history_]
    assert [{k: h[k] for k in strip[0]} for h in on_cluster.history_] == strip
    assert on_threads.best_score_ > 0.8


def test_same_results_with_one_thread(on_threads, clf):
    one = _hyperband(*clf, n_jobs=1)
    assert_array_equal(one.cv_results_["test_score"], on_threads.cv_results_["test_score"])


# -- bad input, refused before any block is read --------------------------------------------


def _never_read(block):
    raise AssertionError("a block was computed before the input was checked")


@pytest.fixture
def unread():
    X = da.zeros((20 * ROWS, 5), chunks=(ROWS, 5)).map_blocks(_never_read, dtype=float)
    y = da.zeros(20 * ROWS, chunks=ROWS).map_blocks(_never_read, dtype=float)
    return X, y


@pytest.mark.parametrize(
    ("distributions", "error", "message"),
    [
        (
            {"alpah": [1.0]},
            ValueError,
            r"'alpah', which is not a parameter of SGDRegressor\. "
            r"Its parameters: alpha, average,",
        ),
        ({"alpha": []}, ValueError, r"param_distributions\['alpha'\] is an empty list"),
        (
            {"alpha": 0.1},
            TypeError,
            r"\['alpha'\] must be a list of values or a distribution "
            r"with an rvs\(random_state=\.\.\.\) method.*got 0\.1 of type float",
        ),
        ({}, TypeError, "param_distributions must be a non-empty dict"),
    ],
)
def test_bad_param_distributions(unread, distributions, error, message):
    search = SuccessiveHalvingSearchCV(SGDRegressor(), distributions, max_blocks=9)
    with pytest.raises(error, match=message):
        search.fit(*unread)


def test_budget_smaller_than_the_first_rung(unread):
    search = SuccessiveHalvingSearchCV(SGDRegressor(), {"alpha": ALPHAS}, 2, min_blocks=3)
    message = r"max_blocks=2 gives each candidate fewer blocks than min_blocks=3.*at least 3"
    with pytest.raises(ValueError, match=message):
        search.fit(*unread)
    with pytest.raises(ValueError, match=message):
        search.metadata  # noqa: B018 - the plan refuses it too
    with pytest.raises(ValueError, match=r"max_blocks must be an int >= 1, got 0"):
        HyperbandSearchCV(SGDRegressor(), {"alpha": ALPHAS}, 0).fit(*unread)
    with pytest.raises(ValueError, match=r"eta must be an int >= 2, got 1"):
        HyperbandSearchCV(SGDRegressor(), {"alpha": ALPHAS}, 9, eta=1).fit(*unread)


def test_one_block_leaves_nothing_to_hold_out(reg):
    X, y, Xm, ym = reg
    search = SuccessiveHalvingSearchCV(SGDRegressor(), {"alpha": ALPHAS}, 9)
    message = r"at least 2 row blocks; it has 1\. Pass a dask collection in smaller blocks"
    with pytest.raises(ValueError, match=message):
        search.fit(X.rechunk({0: -1}), y.rechunk(-1))
    with pytest.raises(ValueError, match=message):
        search.fit(Xm, ym)


def test_estimator_without_partial_fit(unread):
    search = SuccessiveHalvingSearchCV(LinearRegression(), {"fit_intercept": [True]}, 9)
    with pytest.raises(TypeError, match=r"LinearRegression has no partial_fit\. Choose"):
        search.fit(*unread)


def test_classifier_without_classes(unread):
    search = HyperbandSearchCV(SGDClassifier(), {"alpha": ALPHAS}, 9)
    message = r"SGDClassifier\.partial_fit needs every class label up front.*classes=\[0, 1\]"
    with pytest.raises(ValueError, match=message):
        search.fit(*unread)


def test_regressor_without_a_target(unread):
    search = SuccessiveHalvingSearchCV(SGDRegressor(), {"alpha": ALPHAS}, 9)
    with pytest.raises(ValueError, match=r"SGDRegressor needs a target, but y is None"):
        search.fit(unread[0])
