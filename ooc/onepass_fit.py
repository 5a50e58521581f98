"""How :class:`ooc.OnePass` walks a ``Pipeline`` and a ``ColumnTransformer``.

The fitting is written as generators: each yields the statistics it needs (a list of
:class:`ooc.passes.Need`) and receives them after the pass, and the branches of a
``ColumnTransformer`` run side by side, so that their needs share the passes.

In a sequence of steps, as many are fitted from one pass as their statistics allow: a
step on the input columns, or after imputers (whose effect on the statistics is known,
see :mod:`ooc.onepass_steps`), takes its statistics from the input columns'; a
stateless step is applied inside the pass. A step after a scaler or an encoder waits for
the pass that fits those, then takes its statistics over their output in the next.

A ``ColumnTransformer`` is fitted around its fitted branches with its own ``fit`` on the
first rows (the branches stand in as they are fitted: the public ``__sklearn_clone__``
protocol), then holds them and the user's parameters again; its ``sparse_output_`` is
decided from the stored values of all the rows, as scikit-learn decides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone

from .blocks import n_rows
from .onepass_steps import build_stateless, build_step, kind_of, propagates, step_needs
from .onepass_summary import Built, SymCol
from .passes import ALL, Base, Need, Slot, select

__all__ = ["Context", "Plan", "fit_node", "input_columns", "sample"]


@dataclass
class Plan:
    """A step's input as planned: a base of its values (ready once the steps before are
    fitted), the root columns it is made of (while only imputers came between), and how
    to get it as built."""

    base: Base
    sym: tuple | None
    built: object  # () -> Built


@dataclass
class Context:
    max_distinct: int
    max_counted: int
    meta: object
    raw_head: object = None
    rows: int = 0
    reasons: list = field(default_factory=list)


def _describe(step) -> str:
    return type(step).__name__


def _join(label: str, name: str) -> str:
    return f"{label}/{name}" if label else name


def fit_node(est, inp: Plan, ctx: Context, label: str):
    """Generator: fit ``est`` on ``inp``; returns (fitted object, Built)."""
    kind = kind_of(est)
    if kind == "pipeline":
        steps, out = yield from _fit_steps(est.steps, inp, ctx, label)
        fitted = clone(est)
        fitted.steps = [(name, f) for (name, _), f in zip(est.steps, steps, strict=True)]
        return fitted, out
    if kind == "columns":
        return (yield from _fit_columns(est, inp, ctx, label))
    steps, out = yield from _fit_steps([(label, est)], inp, ctx, label)
    return steps[0], out


def _fit_steps(steps, inp: Plan, ctx: Context, label: str):
    """Generator: fit a sequence of steps, as many at once as their statistics allow."""
    fitted = [step for _, step in steps]
    state = {"built": None, "pending": [], "needs": []}

    def current() -> Built:
        if state["built"] is None:
            state["built"] = inp.built()
        return state["built"]

    def flush():
        pending, needs = state["pending"], state["needs"]
        if not pending:
            return
        results = None
        if needs or ctx.raw_head is None:
            results = yield list(needs)
        for index, name, step, kind, slot, base, identity in pending:
            where = _where(label, name, step, len(steps))
            inp_ = current()
            if identity:  # planned on the input's own columns, not derived from the root's
                inp_ = Built(inp_.base, inp_.head, None, inp_.nnz)
            if kind == "stateless":
                f, out = build_stateless(step, inp_, base)
            else:
                f, out = build_step(step, kind, inp_, results, where, base)
                slot.fitted = f
            fitted[index] = f
            state["built"] = out
        state["pending"], state["needs"] = [], []

    cur, via = inp, None
    for index, (name, step) in enumerate(steps):
        kind = kind_of(step)
        where = _where(label, name, step, len(steps))
        if kind == "skip":
            continue
        if kind in ("pipeline", "columns"):
            yield from flush()
            f, out = yield from fit_node(step, Plan(cur.base, None, current), ctx, where)
            fitted[index], state["built"] = f, out
            cur, via = Plan(out.base, None, lambda out=out: out), (step, kind)
            continue
        if kind == "stateless":
            base = Base(cur.base, ("stateless", step), where)
            state["pending"].append((index, name, step, kind, None, base, False))
            cur, via = Plan(base, None, current), None
            continue
        sym = cur.sym
        if sym is not None and via is not None and not propagates(*via, kind, step):
            sym = None
        identity = not (sym is not None and sym[0].ready())
        if not identity:
            root, keys = sym[0], sym[1]
        else:
            if not cur.base.ready():
                yield from flush()
            if _after_fitted(cur.base):
                before = _describe(via[0]) if via else "the steps before it"
                ctx.reasons.append(  # for the pass that computes this step's statistics
                    f"{_describe(step)} '{where}' takes the output of {before}, which no "
                    "statistic of the input columns gives: its own statistics take a pass "
                    "over that output"
                )
            root, keys = cur.base, ALL
        state["needs"].extend(step_needs(step, kind, root, keys, where, ctx))
        slot = Slot(where)
        base = Base(cur.base, ("transform", slot), where)
        state["pending"].append((index, name, step, kind, slot, base, identity))
        cur = Plan(base, (root, keys) if kind == "imputer" else None, current)
        via = (step, kind)
    yield from flush()
    return fitted, current()


def _after_fitted(base: Base) -> bool:
    """Whether ``base`` applies a step fitted from statistics (so that its own statistics
    can only be taken in a later pass)."""
    while base.parent is not None:
        if base.apply[0] == "transform":
            return True
        base = base.parent
    return False


def input_columns(needs, root: Base) -> list | None:
    """The input columns that ``needs`` take their values from (None: all of them)."""
    columns: list = []
    for need in needs:
        base = need.base
        if base is root:
            if need.keys is ALL:
                return None
            columns.extend(need.keys)
            continue
        while base.parent is not root:
            base = base.parent
        if base.apply[0] != "select":
            return None
        columns.extend(base.apply[1])
    return columns


def _where(label: str, name: str, step, n_steps: int) -> str:
    if n_steps > 1:
        return _join(label, name)
    return label or type(step).__name__.lower()  # as make_pipeline names it


# -- ColumnTransformer ---------------------------------------------------------------------------


class _Recorder(BaseEstimator):
    """Stands in for a ColumnTransformer's transformer to learn which columns it gets."""

    def __sklearn_clone__(self):
        return self

    def set_output(self, *, transform=None):
        return self

    def fit(self, X, y=None, **params):
        self.seen = X
        return self

    def transform(self, X, **params):
        return np.zeros((n_rows(X), 0))

    def fit_transform(self, X, y=None, **params):
        return self.fit(X).transform(X)


class _Prefitted(BaseEstimator):
    """A fitted transformer that a ColumnTransformer's fit uses as it is (cloning and
    fitting it leave it alone): the ColumnTransformer is fitted around it."""

    def __init__(self, fitted=None):
        self.fitted = fitted

    def __sklearn_clone__(self):
        return self

    def __sklearn_is_fitted__(self):
        return True

    def set_output(self, *, transform=None):
        return self

    def fit(self, X, y=None, **params):
        return self

    def transform(self, X, **params):
        return self.fitted.transform(X)

    def fit_transform(self, X, y=None, **params):
        return self.fitted.transform(X)

    def get_feature_names_out(self, input_features=None):
        return self.fitted.get_feature_names_out(input_features)


def sample(head):
    """What a ColumnTransformer is fitted on to learn its columns: a DataFrame (no rows
    needed), or a row of column positions."""
    if isinstance(head, pd.DataFrame):
        return head.iloc[:0]
    width = head.shape[1] if hasattr(head, "shape") else int(head)
    return np.arange(width, dtype=np.float64)[None, :]


def _known_sample(base: Base, ctx: Context):
    """The columns of ``base`` (as :func:`sample` gives them) if known before any data
    is read: the input's, or a selection of them; else None."""
    if base.parent is None:
        return ctx.meta
    if base.apply[0] == "select" and base.apply[2] == 2:
        parent = _known_sample(base.parent, ctx)
        if isinstance(parent, pd.DataFrame):
            return parent[list(base.apply[1])]
        if parent is not None:
            return sample(len(base.apply[1]))
    return None


def _resolve(ct, sample) -> list[tuple[str, object, tuple, int]]:
    """Each transformer of ``ct`` with the columns it gets (labels of a DataFrame, else
    positions) and whether they come as one 1-D column; found by scikit-learn itself."""
    recorders = {name: _Recorder() for name, est, _ in ct.transformers if est != "drop"}
    probe = clone(ct).set_params(n_jobs=None, **recorders)
    if not (isinstance(ct.remainder, str) and ct.remainder == "drop"):
        recorders["remainder"] = _Recorder()
        probe.set_params(remainder=recorders["remainder"])
    probe.set_output(transform="default").fit(sample)
    out = []
    originals = {name: est for name, est, _ in ct.transformers}
    originals["remainder"] = ct.remainder
    for name, recorder in recorders.items():
        seen = getattr(recorder, "seen", None)
        if seen is None:
            continue  # no column selected
        ndim = 1 if getattr(seen, "ndim", 2) == 1 else 2
        if isinstance(seen, pd.DataFrame):
            keys = tuple(seen.columns)
        elif isinstance(seen, pd.Series):
            keys = (seen.name,)
        else:
            keys = tuple(int(v) for v in np.asarray(seen).ravel())
        if keys:
            out.append((name, originals[name], keys, ndim))
    return out


def _stateless_chain(est) -> list | None:
    """The steps of a transformer that learns nothing (a FunctionTransformer, a
    FeatureHasher, 'passthrough' or a Pipeline of them), else None."""
    if isinstance(est, str) and est == "passthrough":
        return []
    kind = kind_of(est)
    if kind == "stateless":
        return [est]
    if kind == "pipeline":
        steps = [s for _, s in est.steps if kind_of(s) != "skip"]
        return steps if all(kind_of(s) == "stateless" for s in steps) else None
    return None


def _fit_columns(ct, inp: Plan, ctx: Context, label: str):
    """Generator: fit a ColumnTransformer's branches side by side, then the
    ColumnTransformer around them (on the first rows, each branch used as fitted)."""
    columns = _known_sample(inp.base, ctx)
    if columns is None:
        if ctx.raw_head is None:
            yield []  # a look at the first rows, to know the columns
        columns = sample(inp.built().head)
    branches = _resolve(ct, columns)
    gens, done, hashed, selected = {}, {}, {}, {}
    for name, est, keys, ndim in branches:
        where = _join(label, name)
        base = Base(inp.base, ("select", keys, ndim), where)
        selected[name] = base
        sym = (inp.base, keys) if ndim == 2 else None

        def built(base=base, keys=keys, ndim=ndim, sym=sym) -> Built:
            head = select(inp.built().head, keys, ndim)
            cols = [SymCol(inp.base, k) for k in keys] if sym else None
            return Built(base, head, cols)

        chain = _stateless_chain(est)
        if chain and ct.sparse_threshold > 0 and _has_hasher(chain):
            out = base  # hashed output is sparse: its stored values are counted in the pass
            for step in chain:
                out = Base(out, ("stateless", step), where)
            hashed[name] = out
        if isinstance(est, str):  # passthrough
            done[name] = (est, None)
            continue
        gens[name] = fit_node(est, Plan(base, sym, built), ctx, where)
    waiting = {}
    for name, gen in gens.items():
        try:
            waiting[name] = next(gen)
        except StopIteration as stop:
            done[name] = stop.value
    extra = [Need(base, ALL, "nnz", _join(label, name)) for name, base in hashed.items()]
    counted = {}
    while waiting or extra:
        results = yield [n for needs in waiting.values() for n in needs] + extra
        if extra:
            counted = {name: results.get(base, "nnz").nnz for name, base in hashed.items()}
            extra = []
        for name in list(waiting):
            try:
                waiting[name] = gens[name].send(results)
            except StopIteration as stop:
                done[name] = stop.value
                del waiting[name]
    head = inp.built().head
    outputs = {}
    for name, _est, keys, ndim in branches:
        if name not in done:
            continue
        fitted, out = done[name]
        if out is None:  # passthrough: the columns as selected
            out = Built(selected[name], select(head, keys, ndim))
        outputs[name] = (fitted, out, out.head)
    sparse_output, total = yield from _density(ct, outputs, counted, ctx, label)
    fitted = _fit_around(ct, head, {n: f for n, (f, _, _) in outputs.items()})
    if sparse_output is not None:
        fitted.sparse_output_ = sparse_output
    slot = Slot(label)
    slot.fitted = fitted
    base = Base(inp.base, ("transform", slot), label)
    return fitted, Built(base, fitted.transform(head), None, total if sparse_output else None)


def _has_hasher(chain) -> bool:
    from sklearn.feature_extraction import FeatureHasher

    return any(isinstance(step, FeatureHasher) for step in chain)


def _density(ct, outputs, counted: dict, ctx: Context, label: str):
    """Generator: whether the ColumnTransformer's output is sparse, as scikit-learn
    decides it on the whole data (stored values over all values, against
    ``sparse_threshold``), and the stored values; (None, None) when no branch is
    sparse."""
    if not any(sp.issparse(head) for _, _, head in outputs.values()):
        return None, None
    nnz, size, unknown = {}, 0, []
    for name, (_, out, head) in outputs.items():
        width = head.shape[1] if head.ndim == 2 else 1
        size += ctx.rows * width
        if not sp.issparse(head):
            nnz[name] = ctx.rows * width
        elif out.nnz is not None:
            nnz[name] = out.nnz
        elif name in counted:
            nnz[name] = counted[name]
        else:
            unknown.append(name)
    if unknown:
        ctx.reasons.append(
            f"the share of stored values of {label}'s sparse output ({', '.join(unknown)}) "
            "is not known from the statistics; it decides sparse_output_"
        )
        bases = {name: outputs[name][1].base for name in unknown}
        results = yield [Need(base, ALL, "nnz", f"{label}/{name}") for name, base in bases.items()]
        for name, base in bases.items():
            nnz[name] = results.get(base, "nnz").nnz
    total = sum(nnz.values())
    return (bool(total / size < ct.sparse_threshold) if size else False), total


def _fit_around(ct, head, fitted: dict):
    """``ct`` fitted on its first rows with each branch as fitted on all the data, then
    holding the fitted branches themselves and the user's parameters again."""
    proxies = {name: _Prefitted(f) for name, f in fitted.items() if not isinstance(f, str)}
    out = clone(ct).set_params(n_jobs=None, **proxies)
    out.fit(head)
    out.transformers_ = [
        (name, trans.fitted if isinstance(trans, _Prefitted) else trans, columns)
        for name, trans, columns in out.transformers_
    ]
    originals = {name: est for name, est, _ in ct.transformers}
    originals["remainder"] = ct.remainder
    out.set_params(n_jobs=ct.n_jobs, **{name: originals[name] for name in proxies})
    return out
