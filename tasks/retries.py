"""What is worth retrying, in one place: transient failures, never bad input.

A stage's task is retried by Prefect when it failed for a transient reason; inside a stage,
each file (a partition, a prediction) is retried on its own, so one flaky read does not
redo the stage. Bad input (a ``ValueError`` naming the file and column, a missing file, a
programming error) fails the same way again and is not retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from .faults import InjectedFault

T = TypeVar("T")

# Errors of the environment that a second attempt can get past.
_TRANSIENT = (ConnectionError, TimeoutError, InterruptedError, BlockingIOError, InjectedFault)
# OSErrors that say the input is wrong, not that the system hiccupped.
_PERMANENT_OS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may not happen again: a lost connection, a timeout, an I/O
    error of the disk or the network, a worker that died. Not: a ValueError (bad data),
    a missing file, a TypeError or KeyError (a bug), a MemoryError."""
    if isinstance(error, _PERMANENT_OS):
        return False
    if isinstance(error, _TRANSIENT) or type(error).__name__ in ("KilledWorker", "CommClosedError"):
        return True
    return isinstance(error, OSError)


def is_bad_input(error: BaseException) -> bool:
    """Whether ``error`` is one of the clear messages about the input: a ValueError (bad
    data or options), a missing file, a registry without the model asked for. Its message
    says what to fix; a traceback would only bury it. Not: a KeyError or IndexError (a
    bug), a transient failure."""
    if isinstance(error, KeyError | IndexError):
        return False
    return isinstance(error, (ValueError, LookupError, *_PERMANENT_OS))


def _worth_retrying(task, task_run, state) -> bool:
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 - classified right here
        return is_transient(error)
    return False


def stage_retries(retries: int, backoff: float = 2.0) -> dict:
    """Keyword arguments of ``@task`` that retry transient failures only, after
    ``backoff``, ``2 × backoff``, ... seconds (a list, which the Prefect UI shows)."""
    return {
        "retries": retries,
        "retry_delay_seconds": [backoff * 2**i for i in range(retries)],
        "retry_condition_fn": _worth_retrying,
    }


IO_RETRIES = stage_retries(3, backoff=1.0)
STAGE_RETRIES = stage_retries(2)


def retry_transient(
    func: Callable[..., T], *args, attempts: int = 3, delay: float = 0.5, on_retry=None
) -> T:
    """``func(*args)``, tried again after a transient failure (at most ``attempts`` times,
    waiting ``delay`` seconds, doubled each time). ``on_retry(error, attempt)`` is called
    before each new attempt. Runs where the item runs (a Dask worker), so one flaky file
    costs one file's work."""
    for attempt in range(1, attempts):
        try:
            return func(*args)
        except Exception as error:
            if not is_transient(error):
                raise
            if on_retry is not None:
                on_retry(error, attempt)
            time.sleep(delay * 2 ** (attempt - 1))
    return func(*args)
