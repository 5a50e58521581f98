"""Progress of a stage while its task runs: in the Prefect UI and in the terminal.

A stage's task reports how many of its items (partitions, blocks, files) are done. That
updates a progress artifact of the task run (the Prefect UI) and, when the task runs on a
Dask worker, sends an event through the scheduler to the process that started the flow,
which draws the terminal's progress bar (``flows/progress.py``). Both are throttled, and
the last count is always sent, so the bar ends on the true count.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from prefect.artifacts import create_progress_artifact, update_progress_artifact

TOPIC = "ooc-progress"


@dataclass(frozen=True)
class ProgressEvent:
    """What the terminal's bar of a stage shows."""

    stage: str
    done: int
    total: int
    unit: str
    note: str = ""


def _send(event: ProgressEvent) -> None:
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return  # not on a Dask worker: no terminal is listening
    worker.log_event(TOPIC, asdict(event))


class StageProgress:
    """Report the progress of ``stage``: ``total`` items of ``unit`` (e.g. "blocks").

    Examples
    --------
    >>> progress = StageProgress("predict", total=20, unit="files")  # doctest: +SKIP
    >>> progress.update(done=5)  # doctest: +SKIP
    """

    def __init__(self, stage: str, total: int, unit: str, every_seconds: float = 0.5):
        self.stage, self.total, self.unit = stage, max(int(total), 0), unit
        self.every = every_seconds
        self.done, self.note, self._last = 0, "", 0.0
        self.artifact = create_progress_artifact(
            0.0, key=f"{stage}-progress", description=f"{stage}: {self.total} {unit}"
        )
        _send(ProgressEvent(stage, 0, self.total, unit))

    def update(self, done: int | None = None, *, advance: int = 0, total: int | None = None,
               note: str | None = None) -> None:  # fmt: skip
        """Set (``done``) or advance the count; ``total`` and ``note`` may change too."""
        self.done = self.done + advance if done is None else done
        if total is not None:
            self.total = total
        if note is not None:
            self.note = note
        now = time.monotonic()
        if now - self._last >= self.every or self.done >= self.total:
            self._last = now
            self._publish()

    def _publish(self) -> None:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        update_progress_artifact(self.artifact, min(percent, 100.0))
        _send(ProgressEvent(self.stage, self.done, self.total, self.unit, self.note))

    def finish(self, done: int | None = None, note: str | None = None) -> None:
        """The final count: ``done`` (the true one, even if fewer items than planned were
        done), or every item."""
        self.done = self.total = self.total if done is None else done
        if note is not None:
            self.note = note
        self._publish()
