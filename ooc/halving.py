"""Successive halving over streamed blocks: the plan of rungs, and the race that runs it.

The resource is *blocks seen*. A bracket of successive halving starts ``n`` candidates;
at rung ``i`` its ``n // eta**i`` best have each seen ``max_blocks // eta**(s - i)``
blocks, for ``i = 0 .. s``, so the last rung's survivors have seen ``max_blocks``
(:func:`halving_bracket`, :func:`hyperband_brackets`).

How rungs share block reads
---------------------------
Every candidate learns from the same stream of training blocks: position *p* is the
*p*-th block of the epoch order (epochs repeat, reshuffled with ``shuffle_blocks``). A
candidate that has seen *k* blocks is therefore exactly a ``partial_fit`` loop over the
first *k* blocks of the stream, and all the candidates still racing stand at the same
position. The race (:func:`race`) cuts ``[0, max_blocks)`` at every rung end of every
bracket (and every ``score_every`` blocks); in each segment all racing candidates,
whatever their bracket, advance together over the same blocks, so Hyperband's brackets
run side by side rather than one after the other.

In a segment the racing candidates are dealt round robin into groups, one per Dask
worker thread (or per thread of this process without a client). A group is one task:
it reads each block of the segment once, where it runs, with the synchronous scheduler
and the next blocks prefetched, and feeds it to each of its candidates in turn; then, if
any of them is due a score check, it reads each held-out block once and merges every
candidate's sufficient statistics (:class:`ooc.BlockScorer`). So a whole search reads
``max_blocks`` training blocks per group plus the held-out blocks at each check, however
many candidates it has; its ``partial_fit`` calls are the plan's ``partial_fit_calls``.
The models come back after each segment (there are few: one per rung end), the losers
are dropped and the survivors dealt again, so the groups stay balanced.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import chain

import numpy as np

from .blocks import RowBlocks, compute_blocks, current_client, epoch_order, prefetch, standalone
from .incremental import Step, fit_block
from .metrics import BlockScorer

__all__ = ["Bracket", "halving_bracket", "hyperband_brackets"]


# -- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bracket:
    """One run of successive halving: at rung ``i``, ``candidates[i]`` candidates have
    each seen ``blocks[i]`` blocks; the best ``candidates[i + 1]`` go on.

    Attributes
    ----------
    s : int
        Halvings in the bracket (it has ``s + 1`` rungs); Hyperband's bracket number.
    candidates, blocks : tuple of int
        Candidates and blocks per candidate at each rung.
    """

    s: int
    candidates: tuple[int, ...]
    blocks: tuple[int, ...]

    @property
    def partial_fit_calls(self) -> int:
        """Blocks fitted in the bracket: each rung's candidates go from the previous
        rung's blocks to their own."""
        before = (0, *self.blocks[:-1])
        return sum(
            n * (r - b) for n, r, b in zip(self.candidates, self.blocks, before, strict=True)
        )

    def as_dict(self) -> dict:
        rungs = zip(self.candidates, self.blocks, strict=True)
        return {
            "bracket": self.s,
            "n_candidates": self.candidates[0],
            "partial_fit_calls": self.partial_fit_calls,
            "rungs": [{"rung": i, "blocks": r, "candidates": n} for i, (n, r) in enumerate(rungs)],
        }


def _log(x: int, eta: int) -> int:
    """The largest ``s`` with ``eta**s <= x``: integer arithmetic, no rounding error."""
    s = 0
    while eta ** (s + 1) <= x:
        s += 1
    return s


def _bracket(s: int, n: int, max_blocks: int, eta: int) -> Bracket:
    return Bracket(
        s,
        tuple(n // eta**i for i in range(s + 1)),
        tuple(max_blocks // eta ** (s - i) for i in range(s + 1)),
    )


def halving_bracket(n: int, max_blocks: int, eta: int = 3, min_blocks: int = 1) -> Bracket:
    """The rungs of successive halving for ``n`` candidates.

    It halves (by ``eta``) ``s`` times, the most that leaves at least one candidate
    (``eta**s <= n``) and gives every candidate at least ``min_blocks`` blocks at the
    first rung (``min_blocks * eta**s <= max_blocks``).

    Examples
    --------
    >>> halving_bracket(10, max_blocks=9)
    Bracket(s=2, candidates=(10, 3, 1), blocks=(1, 3, 9))
    >>> halving_bracket(10, max_blocks=20, min_blocks=3)
    Bracket(s=1, candidates=(10, 3), blocks=(6, 20))
    """
    s = min(_log(n, eta), _log(max_blocks // min_blocks, eta))
    return _bracket(s, n, max_blocks, eta)


def hyperband_brackets(max_blocks: int, eta: int = 3) -> list[Bracket]:
    """Hyperband's brackets (Li et al., 2018), from the most candidates to the fewest.

    With ``s_max = floor(log_eta(max_blocks))``, bracket ``s`` starts
    ``ceil((s_max + 1) / (s + 1) * eta**s)`` candidates at ``max_blocks * eta**-s`` blocks
    (rounded down).

    Examples
    --------
    >>> [(b.s, b.candidates, b.blocks) for b in hyperband_brackets(9)]
    [(2, (9, 3, 1), (1, 3, 9)), (1, (5, 1), (3, 9)), (0, (3,), (9,))]
    """
    s_max = _log(max_blocks, eta)
    return [
        _bracket(s, -(-(s_max + 1) * eta**s // (s + 1)), max_blocks, eta)
        for s in range(s_max, -1, -1)
    ]


def plan_metadata(brackets: list[Bracket]) -> dict:
    """The plan as a dict: candidates and ``partial_fit`` calls in all, and per bracket."""
    return {
        "n_candidates": sum(b.candidates[0] for b in brackets),
        "partial_fit_calls": sum(b.partial_fit_calls for b in brackets),
        "brackets": [b.as_dict() for b in brackets],
    }


# -- the race ---------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One parameter setting and its model as it races."""

    id: int
    bracket: Bracket
    params: dict
    estimator: object
    blocks_seen: int = 0
    score: float = float("nan")
    best_score: float = -math.inf
    flat_checks: int = 0  # score checks in a row without an improvement of tol
    stopped: bool = False  # by patience
    pruned: bool = False  # by halving
    fit_seconds: float = 0.0

    @property
    def racing(self) -> bool:
        return not (self.stopped or self.pruned)

    @property
    def rung(self) -> int:
        """The rung it is in: the first whose blocks it has not passed."""
        return next(i for i, r in enumerate(self.bracket.blocks) if r >= self.blocks_seen)


@dataclass(frozen=True)
class Stream:
    """The blocks in the order candidates see them: epochs of ``blocks``, each reshuffled
    from ``seed`` with ``shuffle`` (the same rule as :class:`ooc.Incremental`)."""

    blocks: tuple[int, ...]
    seed: int
    shuffle: bool

    def order(self, epoch: int) -> tuple[int, ...]:
        return tuple(epoch_order(self.blocks, self.seed, epoch, self.shuffle))

    def between(self, start: int, stop: int) -> list[tuple[int, int]]:
        """(position, block) for the positions ``start .. stop - 1``."""
        n = len(self.blocks)
        orders = {e: self.order(e) for e in range(start // n, (stop - 1) // n + 1)}
        return [(p, orders[p // n][p % n]) for p in range(start, stop)]


@dataclass(frozen=True)
class Blocks:
    """The row blocks of X and y, on the caller's side."""

    xb: RowBlocks
    yb: RowBlocks | None

    def __len__(self) -> int:
        return len(self.xb)

    def item(self, block: int) -> tuple:
        """(block, X, y): the block's own graphs only, to ship to a worker."""
        y = standalone(self.yb.blocks[block]) if self.yb else None
        return block, standalone(self.xb.blocks[block]), y


@dataclass(frozen=True)
class Settings:
    """What every group task needs besides its models and blocks."""

    fit_kwargs: dict
    scoring: object
    lazy: bool
    n_train: int  # training blocks per epoch
    n_epochs: int  # epochs of the stream the fit reaches into
    prefetch: int

    def step(self, position: int, group: int) -> Step:
        return Step(
            fit_kwargs=self.fit_kwargs,
            lazy=self.lazy,
            scoring=self.scoring,
            epoch=position // self.n_train,
            n_positions=self.n_train,
            n_epochs=self.n_epochs,
            replica=group,
        )


@dataclass
class _Work:
    """One group's segment: its models, the blocks to fit, the held-out blocks to score."""

    group: int
    models: dict  # candidate id -> estimator
    due: list  # ids of the candidates to score after the segment
    train: list  # (position, block, X, y)
    validation: list  # (block, X, y); empty when nobody is due
    settings: Settings = field(repr=False)

    @classmethod
    def of(cls, k: int, group: list[Candidate], due: set, train, held_out, settings) -> _Work:
        scored = [c.id for c in group if c.id in due]
        models = {c.id: c.estimator for c in group}
        return cls(k, models, scored, train, held_out if scored else [], settings)


@dataclass
class _Outcome:
    id: int
    estimator: object
    fit_seconds: float
    score: float | None


def _loader(x, y):
    return partial(compute_blocks, x, y, scheduler="sync")


def _advance(work: _Work) -> list[_Outcome]:
    """Fit each block of the segment into every model of the group (reading it once),
    then score the models due. Runs as a task on a worker, or in a thread."""
    settings = work.settings
    seconds = dict.fromkeys(work.models, 0.0)
    todo = ((block, _loader(x, y)) for _, block, x, y in work.train)
    positions = [position for position, *_ in work.train]
    loaded_blocks = prefetch(todo, depth=settings.prefetch)
    for (loaded, waited), position in zip(loaded_blocks, positions, strict=True):
        step = settings.step(position, work.group)
        for id, model in work.models.items():
            report, _ = fit_block(
                model, loaded, waited, step, position=position, seen=0, score=False
            )
            seconds[id] += report.fit_seconds
    scores = _validate({id: work.models[id] for id in work.due}, work.validation, settings)
    return [_Outcome(id, m, seconds[id], scores.get(id)) for id, m in work.models.items()]


def _validate(models: dict, validation: list, settings: Settings) -> dict[int, float]:
    """Each model's score on the held-out blocks, merged from per-block statistics."""
    scorers = {id: BlockScorer(model, settings.scoring) for id, model in models.items()}
    totals = dict.fromkeys(models)
    todo = ((block, _loader(x, y)) for block, x, y in validation) if models else ()
    for loaded, _ in prefetch(todo, depth=settings.prefetch):
        xi, yi = loaded.value
        for id, scorer in scorers.items():
            totals[id] = scorer.merge(totals[id], scorer.parts(xi, yi, block=loaded.index))
    return {id: scorer.value(totals[id]) for id, scorer in scorers.items()}


@dataclass(frozen=True)
class Rules:
    """What the race runs on (the stream, the held-out blocks) and when candidates are
    scored and stopped."""

    stream: Stream
    validation: tuple[int, ...]
    max_blocks: int
    patience: int | None
    tol: float
    score_every: int | None

    def check_points(self, brackets) -> list[int]:
        """Positions where some candidate is scored: rung ends, and every ``score_every``."""
        points = {r for b in brackets for r in b.blocks}
        if self.score_every:
            points.update(range(self.score_every, self.max_blocks + 1, self.score_every))
        return sorted(points)

    def is_check(self, position: int, bracket: Bracket) -> bool:
        every = self.score_every is not None and position % self.score_every == 0
        return every or position in bracket.blocks

    def record(self, candidate: Candidate, score: float) -> None:
        """A score check: keep the score, and stop a candidate out of patience."""
        candidate.score = score
        if score > candidate.best_score + self.tol:
            candidate.flat_checks = 0
        else:
            candidate.flat_checks += 1
        candidate.best_score = max(candidate.best_score, score)
        more_to_go = candidate.blocks_seen < self.max_blocks
        if self.patience and candidate.flat_checks >= self.patience and more_to_go:
            candidate.stopped = True


def ranked(candidates: list[Candidate]) -> list[Candidate]:
    """Best score first (NaN last), ties to the lower id: the same on every run."""
    return sorted(candidates, key=lambda c: (-np.nan_to_num(c.score, nan=-np.inf), c.id))


@dataclass(frozen=True)
class SegmentReport:
    """Passed to a search's ``callback`` after each segment of the stream.

    Attributes
    ----------
    blocks : int
        Blocks every racing candidate has seen.
    max_blocks : int
        The budget: blocks the last candidate standing sees.
    racing : int
        Candidates still racing after this segment (pruned and stopped ones left).
    scores : list of dict
        The score checks of this segment (``history_`` entries).
    """

    blocks: int
    max_blocks: int
    racing: int
    scores: list


def race(
    candidates: list[Candidate],
    blocks: Blocks,
    rules: Rules,
    settings: Settings,
    pool,
    callback=None,
) -> list[dict]:
    """Run every bracket's successive halving side by side; return the score history.

    The candidates are updated in place (model, blocks seen, score, stopped, pruned);
    ``callback`` gets a :class:`SegmentReport` after each segment.
    """
    held_out = [blocks.item(block) for block in rules.validation]
    history, started, position = [], time.perf_counter(), 0
    for end in rules.check_points({c.bracket for c in candidates}):
        racing = [c for c in candidates if c.racing]
        if not racing:
            break
        due = {c.id for c in racing if rules.is_check(end, c.bracket)}
        train = [(p, *blocks.item(block)) for p, block in rules.stream.between(position, end)]
        works = [
            _Work.of(k, group, due, train, held_out, settings)
            for k, group in enumerate(_deal(racing, pool.size))
        ]
        by_id = {c.id: c for c in racing}
        scored = len(history)
        for outcome in chain.from_iterable(pool.run(works)):
            candidate = by_id[outcome.id]
            candidate.estimator = outcome.estimator
            candidate.blocks_seen = end
            candidate.fit_seconds += outcome.fit_seconds
            if outcome.score is not None:
                rules.record(candidate, outcome.score)
                history.append(_entry(candidate, time.perf_counter() - started))
        _prune(racing, end)
        position = end
        if callback is not None:
            still = sum(c.racing for c in candidates)
            callback(SegmentReport(end, rules.max_blocks, still, history[scored:]))
    history.sort(key=lambda h: (h["blocks_seen"], h["candidate"]))
    return history


def _deal(racing: list[Candidate], size: int) -> list[list[Candidate]]:
    """Round robin into at most ``size`` groups."""
    return [racing[k::size] for k in range(min(size, len(racing)))]


def _prune(racing: list[Candidate], end: int) -> None:
    """At a rung end, keep the next rung's number of each bracket's best racing candidates."""
    for bracket in {c.bracket for c in racing}:
        if end not in bracket.blocks[:-1]:
            continue
        keep = bracket.candidates[bracket.blocks.index(end) + 1]
        still = [c for c in racing if c.bracket == bracket and c.racing]
        for loser in ranked(still)[keep:]:
            loser.pruned = True


def _entry(candidate: Candidate, elapsed: float) -> dict:
    return {
        "candidate": candidate.id,
        "bracket": candidate.bracket.s,
        "rung": candidate.rung,
        "blocks_seen": candidate.blocks_seen,
        "score": candidate.score,
        "stopped": candidate.stopped,
        "elapsed_seconds": elapsed,
    }


def stream_fit(estimator, n_blocks: int, blocks: Blocks, stream: Stream, settings: Settings, pool):
    """``estimator`` fitted on the first ``n_blocks`` of ``stream``, in one task."""
    train = [(p, *blocks.item(block)) for p, block in stream.between(0, n_blocks)]
    work = _Work(0, {0: estimator}, [], train, [], settings)
    (outcome,) = pool.run([work])[0]
    return outcome.estimator


# -- where groups run ------------------------------------------------------------------------


class _Threads:
    """Groups as threads of this process."""

    def __init__(self, size: int):
        self.size = size
        self._pool = ThreadPoolExecutor(size, thread_name_prefix="ooc-search")

    def run(self, works: list[_Work]) -> list[list[_Outcome]]:
        futures = [self._pool.submit(_advance, work) for work in works]
        return [future.result() for future in futures]

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class _Workers:
    """Groups as tasks on a dask.distributed cluster, group k on the k-th worker (mod)."""

    def __init__(self, client, size: int | None):
        self.client = client
        info = client.scheduler_info(n_workers=-1)["workers"]
        if not info:
            raise RuntimeError(f"The dask client {client} has no workers to run the search on.")
        self.workers = sorted(info)
        self.size = size or sum(w["nthreads"] for w in info.values())

    def run(self, works: list[_Work]) -> list[list[_Outcome]]:
        futures = [
            # Pinned for locality; a lost worker's group reruns elsewhere from the same
            # inputs, with the same result.
            self.client.submit(
                _advance,
                work,
                workers=[self.workers[work.group % len(self.workers)]],
                allow_other_workers=True,
                pure=False,
                key=f"ooc-search-{work.group}-{os.urandom(6).hex()}",
            )
            for work in works
        ]
        return self.client.gather(futures)

    def close(self) -> None:
        pass


@contextmanager
def groups(n_jobs: int | None):
    """Where candidate groups run: the current dask client's workers, else threads."""
    client = current_client()
    pool = (
        _Workers(client, n_jobs)
        if client is not None
        else _Threads(n_jobs or len(os.sched_getaffinity(0)))
    )
    try:
        yield pool
    finally:
        pool.close()
