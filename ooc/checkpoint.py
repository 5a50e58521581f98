"""Checkpoints of a streaming fit: the estimator and where the fit is, tied to the fit.

A checkpoint is resumed only by the same fit: the same parameters (every one of the
estimator's, deep), the same ``partial_fit`` arguments and the same blocks of data. A
damaged file is a clear error, not a retry.
"""

from __future__ import annotations

import inspect
import pickle
import reprlib
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from .files import atomic_write

__all__ = ["Checkpoint", "comparable"]


def comparable(value):
    """``value`` in a form that compares equal, across processes, when it means the same."""
    if isinstance(value, BaseEstimator):
        # get_params(deep=True) lists its parameters beside it.
        return f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [comparable(v) for v in value]
    if isinstance(value, np.ndarray):
        return ["ndarray", value.dtype.str, comparable(value.tolist())]
    if inspect.isroutine(value):  # its repr holds an address
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


class Checkpoint:
    """An atomically written pickle of (estimator, fit state), tied to the fit's parameters,
    its ``partial_fit`` arguments and the data's blocks."""

    def __init__(self, path: Path, signature: dict, every: int | None):
        self.path, self.signature, self.every = path, signature, every

    @classmethod
    def of(cls, inc, blocks, fit_kwargs: dict):
        """The checkpoint of ``inc``'s fit over ``blocks`` (an :class:`ooc.Incremental` and
        its :class:`ooc.blocks.RowBlocks`), or None without ``checkpoint_path``."""
        if inc.checkpoint_path is None:
            return None
        signature = {
            "n_blocks": len(blocks),
            "rows": comparable(blocks.rows),
            **inc._fit_signature(fit_kwargs),
        }
        return cls(Path(inc.checkpoint_path), signature, inc.checkpoint_every)

    def due(self, position: int) -> bool:
        return bool(self.every) and position % self.every == 0

    def load(self):
        if not self.path.exists():
            return None
        try:
            with self.path.open("rb") as fh:
                saved = pickle.load(fh)
            signature, estimator, state = saved["signature"], saved["estimator"], saved["state"]
        except OSError:
            raise  # reading may work next time
        except Exception as err:  # it will not decode next time either
            raise ValueError(
                f"Checkpoint {self.path} cannot be read ({type(err).__name__}: {err}): it is "
                "damaged (a truncated write?) or not an ooc checkpoint. Delete it to start "
                "the fit over, or point checkpoint_path elsewhere."
            ) from err
        if signature != self.signature:
            keys = sorted(signature.keys() | self.signature.keys())
            differ = [k for k in keys if signature.get(k) != self.signature.get(k)]
            detail = "; ".join(
                f"{k}: {reprlib.repr(signature.get(k))} then, "
                f"{reprlib.repr(self.signature.get(k))} now"
                for k in differ
            )
            raise ValueError(
                f"Checkpoint {self.path} was written by a different fit ({detail}). "
                "Delete it to start over, or point checkpoint_path elsewhere."
            )
        return estimator, state

    def save(self, estimator, state) -> None:
        saved = {"signature": self.signature, "estimator": estimator, "state": state}

        def write(tmp: Path) -> None:
            with tmp.open("wb") as fh:
                pickle.dump(saved, fh, protocol=pickle.HIGHEST_PROTOCOL)

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, write)
