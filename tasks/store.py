"""Saving and loading fitted objects in a run directory (atomic writes, cached loads)."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

from ooc.files import atomic_write


def save_object(obj, path: str | Path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(pickle.dumps(obj, protocol=5)))
    return str(path)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int):
    return pickle.loads(Path(path).read_bytes())


def load_object(path: str | Path):
    """Load a pickled object; repeated loads of an unchanged file in a process are free.

    Only load files this project wrote: unpickling runs code.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No saved object at {path}.")
    return _load(str(path), path.stat().st_mtime_ns)
