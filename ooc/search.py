"""Hyper-parameter searches over streamed models: successive halving and Hyperband.

Candidates are drawn from ``param_distributions``, each a clone of the estimator, and
race on the row blocks of X: they all learn from the same stream of training blocks,
are scored on held-out blocks at each rung, and only the best of each rung go on
(:mod:`ooc.halving` has the arithmetic of the rungs, and how a rung reads each block
once per worker for all the candidates there). The resource is blocks seen, so a
search costs about ``max_blocks`` block reads per worker, not one pass per candidate.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.model_selection import ParameterGrid
from sklearn.utils import check_random_state, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .blocks import aligned_row_blocks, apply_blockwise, is_dask_collection, split_validation
from .halving import (
    Blocks,
    Candidate,
    Rules,
    Settings,
    Stream,
    groups,
    halving_bracket,
    hyperband_brackets,
    plan_metadata,
    race,
    ranked,
    stream_fit,
)
from .incremental import check_count
from .metrics import BlockScorer

__all__ = ["HyperbandSearchCV", "SuccessiveHalvingSearchCV"]


def _best_has(method: str):
    def check(self):
        return hasattr(self.__dict__.get("best_estimator_", self.estimator), method)

    return check


class _BlockSearch(MetaEstimatorMixin, BaseEstimator):
    """What both searches share; a subclass says which brackets to run (``_brackets``)."""

    def __init__(
        self,
        estimator,
        param_distributions,
        max_blocks: int,
        *,
        eta: int = 3,
        scoring=None,
        patience: int | None = None,
        tol: float = 1e-4,
        score_every: int | None = None,
        validation_fraction: float = 0.1,
        refit: bool = False,
        shuffle_blocks: bool = False,
        prefetch: int = 1,
        n_jobs: int | None = None,
        random_state=None,
        callback=None,
    ):
        self.estimator = estimator
        self.param_distributions = param_distributions
        self.max_blocks = max_blocks
        self.eta = eta
        self.scoring = scoring
        self.patience = patience
        self.tol = tol
        self.score_every = score_every
        self.validation_fraction = validation_fraction
        self.refit = refit
        self.shuffle_blocks = shuffle_blocks
        self.prefetch = prefetch
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.callback = callback

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = inner.classifier_tags
        tags.regressor_tags = inner.regressor_tags
        tags.target_tags = inner.target_tags
        return tags

    @property
    def metadata(self) -> dict:
        """The plan, known before fitting: candidates and ``partial_fit`` calls in all and
        per bracket, and each bracket's rungs (blocks per candidate, candidates)."""
        return plan_metadata(self._brackets())

    def _brackets(self) -> list:
        raise NotImplementedError

    # -- fitting --------------------------------------------------------------------------
    def fit(self, X, y=None, **fit_kwargs):
        """Race the candidates on the row blocks of X and y; keep the best.

        Parameters
        ----------
        X : dask array or dask DataFrame of shape (n_samples, n_features)
            At least 2 row blocks: whole blocks are held out for scoring.
        y : dask array/Series of shape (n_samples,), optional
            Partitioned like X.
        **fit_kwargs
            Passed to every ``partial_fit`` call, e.g. ``classes=[0, 1]``.

        Returns
        -------
        self
        """
        self._check_params()
        brackets = self._brackets()
        distributions = _check_distributions(self.estimator, self.param_distributions)
        xb, yb = aligned_row_blocks(X, y)
        fit_kwargs = self._check_data(len(xb), y, fit_kwargs)
        seed = _seed(self.random_state)
        train, validation = _split(len(xb), self.validation_fraction, seed)
        stream = Stream(tuple(train), seed, self.shuffle_blocks)
        rules = Rules(
            stream, tuple(validation), self.max_blocks, self.patience, self.tol, self.score_every
        )
        n_epochs = math.ceil(self.max_blocks / len(train))
        settings = Settings(fit_kwargs, self.scoring, xb.lazy, len(train), n_epochs, self.prefetch)
        candidates = self._candidates(brackets, distributions, seed)
        blocks = Blocks(xb, yb)
        with groups(self.n_jobs) as pool:
            history = race(candidates, blocks, rules, settings, pool, self.callback)
            best = ranked(candidates)[0]
            estimator = (
                self._refit(best, blocks, settings, seed, pool) if self.refit else best.estimator
            )
        self._store(candidates, brackets, history, best, estimator, validation)
        return self

    def _refit(self, best: Candidate, blocks: Blocks, settings: Settings, seed: int, pool):
        """A fresh clone with the best parameters, streamed over every block (held-out ones
        too) for as many epochs as the best candidate saw."""
        n_all = len(blocks)
        n_blocks = math.ceil(best.blocks_seen * n_all / settings.n_train)
        settings = replace(settings, n_train=n_all, n_epochs=math.ceil(n_blocks / n_all))
        everything = Stream(tuple(range(n_all)), seed, self.shuffle_blocks)
        fresh = clone(self.estimator).set_params(**best.params)
        return stream_fit(fresh, n_blocks, blocks, everything, settings, pool)

    def _check_params(self) -> None:
        """Refuse bad parameters before any work (the budget: ``_brackets``)."""
        if not hasattr(self.estimator, "partial_fit"):
            raise TypeError(
                f"{type(self).__name__} streams blocks into partial_fit, but "
                f"{type(self.estimator).__name__} has no partial_fit. Choose an estimator "
                "that learns incrementally (SGDClassifier, SGDRegressor, MLPClassifier, "
                "MiniBatchKMeans, ...) or, for data that fits in memory, "
                "sklearn.model_selection.HalvingRandomSearchCV."
            )
        check_count("patience", self.patience, minimum=1, none=True)
        check_count("score_every", self.score_every, minimum=1, none=True)
        check_count("prefetch", self.prefetch, minimum=0)
        check_count("n_jobs", self.n_jobs, minimum=1, none=True)
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}."
            )
        BlockScorer(self.estimator, self.scoring)  # a bad scoring fails here

    def _check_budget(self) -> None:
        check_count("max_blocks", self.max_blocks, minimum=1)
        check_count("eta", self.eta, minimum=2)

    def _check_data(self, n_blocks: int, y, fit_kwargs: dict) -> dict:
        if n_blocks < 2:
            raise ValueError(
                f"{type(self).__name__} scores candidates on held-out blocks, so X needs "
                f"at least 2 row blocks; it has {n_blocks}. Pass a dask collection in "
                "smaller blocks: ooc.read_parquet(path, block_rows=...), "
                "X.rechunk({0: rows}) or ddf.repartition(npartitions=...)."
            )
        name = type(self.estimator).__name__
        if y is None and get_tags(self.estimator).target_tags.required:
            raise ValueError(f"{name} needs a target, but y is None. Pass y partitioned like X.")
        takes_classes = "classes" in inspect.signature(self.estimator.partial_fit).parameters
        needs_classes = is_classifier(self.estimator) and takes_classes
        if not needs_classes or "classes" in fit_kwargs or y is None:
            return fit_kwargs
        if not is_dask_collection(y):  # in memory: the labels are at hand
            return {**fit_kwargs, "classes": np.unique(np.asarray(y))}
        raise ValueError(
            f"{name}.partial_fit needs every class label up front, but y is streamed block "
            f"by block, so they are not known. Pass them: "
            f"{type(self).__name__}(...).fit(X, y, classes=[0, 1]). To find them: "
            "numpy.unique(y.compute())."
        )

    def _candidates(self, brackets: list, distributions: list[dict], seed: int) -> list:
        params = sample_candidates(distributions, sum(b.candidates[0] for b in brackets), seed)
        starts = [b for b in brackets for _ in range(b.candidates[0])]
        return [
            Candidate(i, bracket, p, clone(self.estimator).set_params(**p))
            for i, (bracket, p) in enumerate(zip(starts, params, strict=True))
        ]

    def _store(self, candidates, brackets, history, best, estimator, validation) -> None:
        self.cv_results_ = _cv_results(candidates)
        self.best_index_ = best.id
        self.best_params_ = best.params
        self.best_score_ = best.score
        self.best_estimator_ = estimator
        self.history_ = history
        self.model_history_ = {
            c.id: [h for h in history if h["candidate"] == c.id] for c in candidates
        }
        self.n_candidates_ = len(candidates)
        self.validation_blocks_ = list(validation)
        self.metadata_ = plan_metadata(brackets)
        self.metadata_["partial_fit_calls"] = sum(c.blocks_seen for c in candidates)
        for entry in self.metadata_["brackets"]:
            seen = [c.blocks_seen for c in candidates if c.bracket.s == entry["bracket"]]
            entry["partial_fit_calls"] = sum(seen)

    # -- the best model -------------------------------------------------------------------
    @property
    def classes_(self):
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.classes_

    def _blockwise(self, method: str, X, meta):
        check_is_fitted(self, "best_estimator_")
        if not is_dask_collection(X):
            return getattr(self.best_estimator_, method)(X)
        return apply_blockwise(self.best_estimator_, method, X, meta, meta_param="meta")

    @available_if(_best_has("predict"))
    def predict(self, X, meta=None):
        """The best estimator's ``predict``, blockwise and lazy on dask input.

        ``meta`` (an empty array shaped like the output past its rows, e.g.
        ``numpy.empty((0,), dtype="int64")``) spares probing the model on a row of zeros;
        the same holds for the other prediction methods.
        """
        return self._blockwise("predict", X, meta)

    @available_if(_best_has("predict_proba"))
    def predict_proba(self, X, meta=None):
        """Class probabilities of the best estimator, blockwise."""
        return self._blockwise("predict_proba", X, meta)

    @available_if(_best_has("predict_log_proba"))
    def predict_log_proba(self, X, meta=None):
        """Log class probabilities of the best estimator, blockwise."""
        return self._blockwise("predict_log_proba", X, meta)

    @available_if(_best_has("decision_function"))
    def decision_function(self, X, meta=None):
        """Decision function of the best estimator, blockwise."""
        return self._blockwise("decision_function", X, meta)

    @available_if(_best_has("transform"))
    def transform(self, X, meta=None):
        """Transform by the best estimator, blockwise."""
        return self._blockwise("transform", X, meta)

    def score(self, X, y=None) -> float:
        """The best estimator's score by ``scoring`` over all blocks, merged exactly from
        per-block statistics where the maths allows (see :class:`ooc.BlockScorer`)."""
        check_is_fitted(self, "best_estimator_")
        scorer = BlockScorer(self.best_estimator_, self.scoring)
        if is_dask_collection(X):
            return scorer.delayed_score(X, y).compute()
        return scorer.score(X, y)


class SuccessiveHalvingSearchCV(_BlockSearch):
    """Successive halving over a stream of blocks, for any estimator with ``partial_fit``.

    ``n_candidates`` settings drawn from ``param_distributions`` start together; at each
    rung every candidate still racing is scored on the held-out blocks and the best
    ``1 / eta`` go on, with ``eta`` times the blocks, until the last rung's have seen
    ``max_blocks``. With ``s`` halvings (the most with ``eta**s <= n_candidates`` and
    ``min_blocks * eta**s <= max_blocks``), rung ``i`` holds ``n_candidates // eta**i``
    candidates that have seen ``max_blocks // eta**(s - i)`` blocks each; ``metadata``
    shows the plan before fitting. The candidates race side by side on the same blocks,
    so the search reads about ``max_blocks`` training blocks per worker (see
    :mod:`ooc.halving`).

    On the current ``dask.distributed`` client the candidates are spread over its
    workers, each reading its blocks where it runs; without one, over threads of this
    process. For a fixed ``random_state`` (and estimators with a fixed ``random_state``)
    the candidates, scores and best are the same either way.

    Parameters
    ----------
    estimator : estimator with ``partial_fit``
        Cloned for each candidate, with the candidate's parameters set.
    param_distributions : dict or list of dicts
        Parameter name (as in ``estimator.get_params()``) -> a list of values, drawn
        uniformly, or a distribution with ``rvs(random_state=...)`` such as
        ``scipy.stats.loguniform(1e-5, 1)``. With lists only, the settings of the grid
        (of the union of grids, for a list of dicts) are drawn without replacement until
        each has been drawn once. With a distribution among them, each candidate picks
        one dict uniformly, then draws each value.
    max_blocks : int
        The most blocks one candidate sees (the resource; dask-ml's ``max_iter``). It may
        exceed the training blocks: the stream goes on into further epochs.
    n_candidates : int, default 10
    min_blocks : int, default 1
        The fewest blocks a candidate sees before its first score check.
    eta : int, default 3
        The halving factor (dask-ml's ``aggressiveness``): ``1 / eta`` go on at each rung.
    scoring : str, callable or None, default None
        None for the estimator's own score; otherwise as in :class:`ooc.Incremental` (the
        names of :data:`ooc.metrics.EXACT_SCORERS` are exact over blocks). Greater is
        better.
    patience : int or None, default None
        Off by default: candidates stop only by halving. With an int ``k``, a candidate
        also leaves the race after ``k`` score checks in a row that do not beat its best
        score by more than ``tol``; it keeps its model and last score (and may still be
        the best) but takes no place in the next rung. Candidates are scored only at rung
        ends unless ``score_every`` is set, so patience usually wants ``score_every``.
    tol : float, default 1e-4
        The improvement ``patience`` asks for.
    score_every : int or None, default None
        Also score every racing candidate every ``score_every`` blocks (each check reads
        the held-out blocks once per worker). Rung ends are always checked.
    validation_fraction : float, default 0.1
        Fraction of the blocks held out for scoring, at least one and never all; drawn
        from ``random_state`` (as :class:`ooc.Incremental`'s early stopping does).
    refit : bool, default False
        False: ``best_estimator_`` is the best candidate's model as the race left it
        (as in dask-ml); it has never seen the held-out blocks. True: a fresh clone with
        ``best_params_`` is then streamed over every block, held-out ones included, for
        as many epochs as the best candidate saw (one more pass, by one worker);
        ``best_score_`` stays the race's.
    shuffle_blocks : bool, default False
        Visit the training blocks in a new random order each epoch (the same for every
        candidate), drawn from ``random_state``.
    prefetch : int, default 1
        Blocks each worker reads ahead of its ``partial_fit`` calls.
    n_jobs : int or None, default None
        Groups of candidates racing at once: by default one per thread of the client's
        workers, or per usable core without a client.
    random_state : int, RandomState or None
        Seeds the candidates, the held-out blocks and the block order.
    callback : callable, optional
        Called with a :class:`ooc.halving.SegmentReport` after each segment of the race
        (progress bars, logs): blocks seen, candidates still racing, the new scores.

    Attributes
    ----------
    cv_results_ : dict of arrays
        One entry per candidate (index = candidate id): ``params``, ``param_<name>``
        (masked where a candidate lacks it), ``test_score`` (its last score),
        ``rank_test_score``, ``blocks_seen``, ``bracket``, ``rung`` (the last it reached),
        ``stopped`` (by patience), ``fit_seconds``.
    best_index_, best_params_, best_score_ :
        The candidate with the highest last score (ties: the lower id).
    best_estimator_ : estimator
    history_ : list of dict
        One per score check: ``candidate``, ``bracket``, ``rung``, ``blocks_seen``,
        ``score``, ``stopped``, ``elapsed_seconds`` (since the race began).
    model_history_ : dict of int to list of dict
        ``history_`` by candidate id.
    n_candidates_ : int
    metadata_ : dict
        ``metadata`` with the ``partial_fit`` calls actually made.
    validation_blocks_ : list of int
        The held-out blocks.

    Examples
    --------
    >>> import dask.array as da
    >>> from sklearn.linear_model import SGDRegressor
    >>> from ooc.search import SuccessiveHalvingSearchCV
    >>> X = da.random.default_rng(0).normal(size=(6_000, 3), chunks=(500, 3))
    >>> y = X[:, 0] - 2 * X[:, 1]
    >>> search = SuccessiveHalvingSearchCV(
    ...     SGDRegressor(random_state=0), {"alpha": [1e-5, 1e-3, 1.0, 10.0]},
    ...     max_blocks=9, n_candidates=4, random_state=0)
    >>> [(r["blocks"], r["candidates"]) for r in search.metadata["brackets"][0]["rungs"]]
    [(3, 4), (9, 1)]
    >>> search.fit(X, y).best_params_["alpha"] < 1
    True
    """

    def __init__(
        self,
        estimator,
        param_distributions,
        max_blocks: int,
        *,
        n_candidates: int = 10,
        min_blocks: int = 1,
        eta: int = 3,
        scoring=None,
        patience: int | None = None,
        tol: float = 1e-4,
        score_every: int | None = None,
        validation_fraction: float = 0.1,
        refit: bool = False,
        shuffle_blocks: bool = False,
        prefetch: int = 1,
        n_jobs: int | None = None,
        random_state=None,
        callback=None,
    ):
        super().__init__(
            estimator,
            param_distributions,
            max_blocks,
            eta=eta,
            scoring=scoring,
            patience=patience,
            tol=tol,
            score_every=score_every,
            validation_fraction=validation_fraction,
            refit=refit,
            shuffle_blocks=shuffle_blocks,
            prefetch=prefetch,
            n_jobs=n_jobs,
            random_state=random_state,
            callback=callback,
        )
        self.n_candidates = n_candidates
        self.min_blocks = min_blocks

    def _brackets(self) -> list:
        self._check_budget()
        check_count("n_candidates", self.n_candidates, minimum=1)
        check_count("min_blocks", self.min_blocks, minimum=1)
        if self.max_blocks < self.min_blocks:
            raise ValueError(
                f"max_blocks={self.max_blocks} gives each candidate fewer blocks than "
                f"min_blocks={self.min_blocks}, the blocks every candidate sees before its "
                f"first score check. Raise max_blocks to at least {self.min_blocks}, or "
                "lower min_blocks."
            )
        return [halving_bracket(self.n_candidates, self.max_blocks, self.eta, self.min_blocks)]


class HyperbandSearchCV(_BlockSearch):
    """Hyperband (Li et al., 2018) over a stream of blocks: successive halving in several
    brackets, from many candidates on few blocks to few candidates on ``max_blocks``.

    With ``s_max = floor(log_eta(max_blocks))``, bracket ``s = s_max .. 0`` starts
    ``ceil((s_max + 1) / (s + 1) * eta**s)`` candidates at ``max_blocks // eta**s``
    blocks and halves them ``s`` times (rung ``i``: ``n // eta**i`` candidates at
    ``max_blocks // eta**(s - i)`` blocks). Brackets need no tuning of how many
    candidates to start against how many blocks to give them: they hedge over it. All
    brackets race side by side on the same blocks, so the whole search reads about
    ``max_blocks`` training blocks per worker (see :mod:`ooc.halving`).

    Parameters
    ----------
    estimator, param_distributions, max_blocks, eta, scoring, patience, tol,\
    score_every, validation_fraction, refit, shuffle_blocks, prefetch, n_jobs,\
    random_state
        As in :class:`SuccessiveHalvingSearchCV`; the number of candidates follows from
        ``max_blocks`` and ``eta`` (``metadata["n_candidates"]``).

    Attributes
    ----------
    cv_results_, best_index_, best_params_, best_score_, best_estimator_, history_,\
    model_history_, n_candidates_, metadata_, validation_blocks_
        As in :class:`SuccessiveHalvingSearchCV`; ``bracket`` is each candidate's ``s``.

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier
    >>> from ooc.search import HyperbandSearchCV
    >>> search = HyperbandSearchCV(SGDClassifier(), {"alpha": [1e-4, 1e-2]}, max_blocks=81)
    >>> [(b["bracket"], b["n_candidates"]) for b in search.metadata["brackets"]]
    [(4, 81), (3, 34), (2, 15), (1, 8), (0, 5)]
    """

    def _brackets(self) -> list:
        self._check_budget()
        return hyperband_brackets(self.max_blocks, self.eta)


# -- candidates -------------------------------------------------------------------------------


def _check_distributions(estimator, param_distributions) -> list[dict]:
    """``param_distributions`` as a list of dicts, each name and value checked."""
    dists = (
        [param_distributions] if isinstance(param_distributions, Mapping) else param_distributions
    )
    if not isinstance(dists, list | tuple) or not all(isinstance(d, Mapping) and d for d in dists):
        raise TypeError(
            "param_distributions must be a non-empty dict of parameter name -> list of values "
            "or distribution, or a non-empty list of such dicts; got "
            f"{param_distributions!r}."
        )
    known = estimator.get_params(deep=True)
    for dist in dists:
        for name, values in dist.items():
            if name not in known:
                raise ValueError(
                    f"param_distributions names {name!r}, which is not a parameter of "
                    f"{type(estimator).__name__}. Its parameters: {', '.join(sorted(known))}."
                )
            if hasattr(values, "rvs"):
                continue
            if not isinstance(values, list | tuple | range | np.ndarray):
                raise TypeError(
                    f"param_distributions[{name!r}] must be a list of values or a "
                    "distribution with an rvs(random_state=...) method, such as "
                    f"scipy.stats.loguniform(1e-5, 1); got {values!r} of type "
                    f"{type(values).__name__}."
                )
            if len(values) == 0:
                raise ValueError(
                    f"param_distributions[{name!r}] is an empty list: give at least one value."
                )
    return list(dists)


def sample_candidates(distributions: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` parameter settings drawn from ``distributions``, the same for a given seed.

    With lists only, the settings of the grid are drawn without replacement (the grid
    starts over, reshuffled, when ``n`` is larger); otherwise each setting picks one dict
    uniformly, then draws each value: ``rvs`` for a distribution, uniformly from a list.

    Examples
    --------
    >>> sample_candidates([{"alpha": [1, 2, 3]}], 4, seed=0)
    [{'alpha': 3}, {'alpha': 1}, {'alpha': 2}, {'alpha': 3}]
    """
    rng = np.random.default_rng([seed, 0])
    if not any(hasattr(v, "rvs") for d in distributions for v in d.values()):
        grid = ParameterGrid(distributions)
        rounds = [rng.permutation(len(grid)) for _ in range(math.ceil(n / len(grid)))]
        return [grid[int(i)] for i in np.concatenate(rounds)[:n]]
    settings = []
    for _ in range(n):
        dist = distributions[int(rng.integers(len(distributions)))]
        settings.append({name: _draw(dist[name], rng) for name in sorted(dist)})
    return settings


def _draw(values, rng):
    if hasattr(values, "rvs"):
        return values.rvs(random_state=rng)
    return values[int(rng.integers(len(values)))]


# -- small rules ------------------------------------------------------------------------------


def _seed(random_state) -> int:
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _split(n_blocks: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Training and held-out blocks: ``round(fraction * n_blocks)``, at least one and
    never all, drawn as :class:`ooc.Incremental`'s early stopping draws them."""
    return split_validation(n_blocks, fraction, seed)


def _cv_results(candidates: list) -> dict:
    params = [c.params for c in candidates]
    scores = np.array([c.score for c in candidates], dtype=float)
    results = {"params": params}
    for name in sorted({k for p in params for k in p}):
        column = np.ma.MaskedArray(np.empty(len(params), dtype=object), mask=True)
        for i, p in enumerate(params):
            if name in p:
                column[i] = p[name]
        results[f"param_{name}"] = column
    return {
        **results,
        "test_score": scores,
        "rank_test_score": rankdata(-np.nan_to_num(scores, nan=-np.inf), method="min").astype(int),
        "blocks_seen": np.array([c.blocks_seen for c in candidates]),
        "bracket": np.array([c.bracket.s for c in candidates]),
        "rung": np.array([c.rung for c in candidates]),
        "stopped": np.array([c.stopped for c in candidates]),
        "fit_seconds": np.array([c.fit_seconds for c in candidates]),
    }
