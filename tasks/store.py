"""Saving and loading fitted objects in a run directory (atomic writes)."""

from __future__ import annotations

import pickle
from pathlib import Path

from ooc.files import atomic_write


def save_object(obj, path: str | Path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(pickle.dumps(obj, protocol=5)))
    return str(path)


def load_object(path: str | Path):
    """Load a pickled object: a new one at every call, so no caller changes another's.

    A stage loads its model once and ships it to the workers itself. Only load files this
    project wrote: unpickling runs code.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No saved object at {path}.")
    return pickle.loads(path.read_bytes())
