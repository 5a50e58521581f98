"""Child processes that cannot outlive the process that started them."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """``preexec_fn`` of a child: the kernel kills it when its parent dies, however the
    parent dies (``kill -9`` included). Runs in the child between fork and exec."""
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
