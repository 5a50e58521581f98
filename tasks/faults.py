"""Test-only fault injection, inert unless ``OOC_FAULTS`` is set.

``OOC_FAULTS="fit-block:5,predict-partition:2:kill"`` makes the named point fail when
it reaches the given count: by raising :class:`InjectedFault`, or with ``:kill`` by
ending the process at once (as a killed worker would). Each fault fires once: a marker
file in ``OOC_FAULTS_DIR`` records that it has, so the retry succeeds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class InjectedFault(RuntimeError):
    """A failure requested through ``OOC_FAULTS``."""


def maybe_fail(point: str, count: int) -> None:
    spec = os.environ.get("OOC_FAULTS")
    if not spec:
        return
    for item in spec.split(","):
        name, at, *how = item.strip().split(":")
        if name != point or int(at) != count:
            continue
        markers = Path(os.environ.get("OOC_FAULTS_DIR", tempfile.gettempdir()))
        marker = markers / f"ooc-fault-{point}-{count}"
        if marker.exists():
            return
        markers.mkdir(parents=True, exist_ok=True)
        marker.touch()
        if how == ["kill"]:
            os._exit(17)
        raise InjectedFault(f"injected fault at {point} #{count} (OOC_FAULTS={spec!r})")
