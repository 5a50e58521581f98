"""Progress bars in the terminal while a flow's stages run, sharing it with the logs.

Each stage's task sends its counts as Dask events (``tasks/progress.py``); here they move
one bar per stage. While the bars show, Prefect's console log handler prints through the
bars' console, so log lines appear above the bars instead of inside them. Bars show only
on an interactive terminal; served and CI runs log instead.
"""

from __future__ import annotations

import logging
import sys
import threading
from contextlib import contextmanager

from rich.console import Console
from rich.default_styles import DEFAULT_STYLES
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.theme import Theme

from ooc.tasks.progress import TOPIC

_active = threading.local()
_BARS = ("bar.", "progress.")


def _dask_client():
    """The running flow's Dask client (the DaskTaskRunner's), or None."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None) if context else None
    try:
        return runner.client if runner is not None and hasattr(runner, "client") else None
    except Exception:  # noqa: BLE001 - a runner without a cluster has no client
        return None


def console_handlers() -> list:
    """Prefect's handlers that print log lines to the terminal."""
    from prefect.logging.handlers import PrefectConsoleHandler

    seen = []
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and handler not in seen:
                seen.append(handler)
    return seen


class _Bars:
    def __init__(self, progress: Progress):
        self.progress = progress
        self.ids: dict[str, int] = {}
        self.lock = threading.Lock()

    def show(self, stage: str, done: int, total: int, unit: str, note: str = "") -> None:
        with self.lock:
            if stage not in self.ids:
                self.ids[stage] = self.progress.add_task(
                    stage, total=total or None, unit=unit, note=note
                )
            self.progress.update(
                self.ids[stage], completed=done, total=total or None, unit=unit, note=note
            )

    def on_event(self, event) -> None:
        _, message = event  # (timestamp, message)
        try:
            self.show(
                message["stage"], message["done"], message["total"], message["unit"],
                message.get("note", ""),
            )  # fmt: skip
        except (KeyError, TypeError):
            pass


@contextmanager
def stage_bars():
    """Show the stages' progress while the block runs (nested use shares the bars)."""
    if getattr(_active, "bars", None) is not None:
        yield _active.bars
        return
    handlers = console_handlers()
    # Prefect's own console, when it has one: the log lines keep its colours, and printed
    # through the bars' console they appear above the bars, not inside them.
    console = handlers[0].console if handlers else Console(file=sys.stderr)
    client = _dask_client()
    if not console.is_terminal or client is None:
        yield None
        return
    progress = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=False,
    )
    bars = _Bars(progress)
    consoles = [h.console for h in handlers]
    # Prefect's theme has only its own styles: lend it rich's styles for the bars.
    console.push_theme(Theme({k: v for k, v in DEFAULT_STYLES.items() if k.startswith(_BARS)}))
    with progress:
        for handler in handlers:
            handler.console = console
        client.subscribe_topic(TOPIC, bars.on_event)
        _active.bars = bars
        try:
            yield bars
        finally:
            _active.bars = None
            client.unsubscribe_topic(TOPIC)
            for handler, original in zip(handlers, consoles, strict=True):
                handler.console = original
    console.pop_theme()
