"""One pass over every row block: the statistics that :class:`ooc.OnePass` needs.

A **base** is what a statistic is taken of: the input blocks themselves, or a function
of them (columns selected, a fitted or stateless step applied). A **need** asks for one
kind of statistic (see :mod:`ooc.colstats`) of some columns of a base. :func:`run_pass`
reduces every block to all the needs at once, merges them in a tree and computes it all
with one ``dask.compute``: one read of each block, whatever was asked.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from functools import partial

import dask
import numpy as np
import pandas as pd
from sklearn.base import clone

from .blocks import RowBlocks, n_rows
from .colstats import ALL, KINDS, ColumnCounts, Numeric, Spec, Summary, select

__all__ = ["ALL", "Base", "Need", "Results", "Slot", "head_rows", "run_pass"]

HEAD_ROWS = 8
_ids = itertools.count()


def head_rows(values, rows: int = HEAD_ROWS):
    """The first rows, copied (a view would keep the whole block in memory)."""
    if isinstance(values, pd.DataFrame | pd.Series):
        return values.iloc[:rows].copy()
    return values[:rows].copy()


# -- bases -----------------------------------------------------------------------------------


class Slot:
    """A step fitted later: a base that applies it is ready once it is filled."""

    def __init__(self, label: str):
        self.label = label
        self.fitted = None

    @property
    def ready(self) -> bool:
        return self.fitted is not None


class Base:
    """The values a statistic is taken of: the input blocks (no parent), or ``apply`` of
    the parent's values. ``apply`` is ``("select", keys, ndim)``, ``("transform", slot)``
    (a step fitted in an earlier pass) or ``("stateless", estimator)`` (a step fitted on
    each block, as it learns nothing)."""

    def __init__(self, parent: Base | None = None, apply: tuple = (), label: str = "X"):
        self.id = next(_ids)
        self.parent = parent
        self.apply = apply
        self.label = label

    def ready(self) -> bool:
        """Whether its values can be computed now (every step it applies is fitted)."""
        if self.parent is None:
            return True
        if self.apply[0] == "transform" and not self.apply[1].ready:
            return False
        return self.parent.ready()

    def values(self, raw, cache: dict):
        if self.parent is None:
            return raw
        if self.id not in cache:
            values = self.parent.values(raw, cache)
            kind = self.apply[0]
            if kind == "select":
                values = select(values, self.apply[1], self.apply[2])
            elif kind == "transform":
                values = self.apply[1].fitted.transform(values)
            else:
                values = clone(self.apply[1]).fit_transform(values)
            cache[self.id] = values
        return cache[self.id]


# -- needs and their statistics ----------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """A statistic ``kind`` of columns ``keys`` (or ``ALL``) of ``base``. For ``"counts"``,
    ``bound`` is the most distinct values a column may have and ``advice`` what the
    error says past it; ``step`` names who asks (for messages and the log)."""

    base: Base
    keys: tuple | None
    kind: str
    step: str = ""
    bound: int | None = None
    advice: str = ""


# -- one pass ---------------------------------------------------------------------------------


@dataclass
class Partial:
    """The statistics of some blocks: by (base id, kind), with the first rows seen."""

    stats: dict
    rows: int = 0
    head: tuple | None = None  # (block index, rows)

    def merge(self, other: Partial) -> Partial:
        stats = dict(self.stats)
        for key, value in other.stats.items():
            stats[key] = value if key not in stats else stats[key].merge(value)
        heads = [h for h in (self.head, other.head) if h is not None]
        head = min(heads, key=lambda h: h[0]) if heads else None
        return Partial(stats, self.rows + other.rows, head)


def _plan(needs: list[Need]) -> list[tuple[Base, str, Spec]]:
    """Needs grouped by (base, kind), their columns united (ALL wins)."""
    grouped: dict = {}
    for need in needs:
        key = (need.base.id, need.kind)
        if key not in grouped:
            grouped[key] = (need.base, need.kind, Spec(keys=[]))
        spec = grouped[key][2]
        if need.keys is ALL or spec.keys is ALL:
            spec.keys = ALL
        else:
            spec.keys.extend(k for k in need.keys if k not in spec.keys)
        if need.keys is ALL:
            spec.step = need.step
            if need.bound is not None and need.bound < (spec.bound or np.inf):
                spec.bound, spec.all_advice = need.bound, need.advice
        for k in need.keys or ():
            spec.steps.setdefault(k, need.step)
            if need.bound is not None and need.bound < spec.bounds.get(k, np.inf):
                spec.bounds[k], spec.steps[k], spec.advice[k] = need.bound, need.step, need.advice
    return list(grouped.values())


def _collect(block, index: int, plan) -> Partial:
    rows = n_rows(block)
    if rows == 0:
        return Partial({})
    cache: dict = {}
    stats = {}
    for base, kind, spec in plan:
        values = base.values(block, cache)
        if kind == "numeric":
            stats[(base.id, kind)] = Numeric.of(values, spec.keys, spec)
        else:
            stats[(base.id, kind)] = KINDS[kind].of(values, spec.keys, spec, index)
    return Partial(stats, rows, (index, head_rows(block)))


def _merge(a: Partial, b: Partial) -> Partial:
    return a.merge(b)


def _tree_merge(parts: list):
    merge = dask.delayed(_merge, pure=True)
    while len(parts) > 1:
        pairs = zip(parts[::2], parts[1::2], strict=False)
        parts = [merge(a, b) for a, b in pairs] + ([parts[-1]] if len(parts) % 2 else [])
    return parts[0]


@dataclass
class Results:
    """The merged statistics of a pass, looked up by base and column."""

    partial: Partial

    @property
    def rows(self) -> int:
        return self.partial.rows

    @property
    def head(self):
        return None if self.partial.head is None else self.partial.head[1]

    def get(self, base: Base, kind: str):
        return self.partial.stats.get((base.id, kind))

    def numeric(self, base: Base, key) -> Summary:
        stats = self.get(base, "numeric")
        if stats is None:  # no rows at all
            return Summary(0, 0, np.nan, 0.0, np.nan, np.nan)
        return stats.column(key)

    def counts(self, base: Base, key) -> ColumnCounts:
        stats = self.get(base, "counts")
        return ColumnCounts(0, {}, 0) if stats is None else stats.column(key)

    def missing(self, base: Base, key) -> tuple[int, int]:
        stats = self.get(base, "missing")
        return (0, 0) if stats is None else stats.column(key)

    def keys(self, base: Base, kind: str) -> list | None:
        stats = self.get(base, kind)
        return None if stats is None else list(stats.keys)

    def with_head(self, head) -> Results:
        return Results(replace(self.partial, head=(0, head)))


def run_pass(blocks: RowBlocks, needs: list[Need]) -> Results:
    """Compute ``needs`` over every block in one ``dask.compute`` (one read of each).

    With no needs, only the first rows are read: blocks are computed in order until one
    has rows (a look at the data, not a pass).
    """
    plan = _plan(needs)
    collect = partial(_collect, plan=plan)
    if not blocks.lazy:
        return Results(collect(blocks.blocks[0], 0))
    if not plan:
        for index, block in enumerate(blocks.blocks):
            (value,) = dask.compute(block)
            if n_rows(value):
                return Results(Partial({}, 0, (index, head_rows(value))))
        return Results(Partial({}))
    task = dask.delayed(collect, pure=False)
    parts = [task(block, index) for index, block in enumerate(blocks.blocks)]
    (merged,) = dask.compute(_tree_merge(parts))
    return Results(merged)
