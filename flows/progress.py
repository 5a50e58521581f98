"""Progress bars in the terminal while the flow waits on its tasks.

Bars show only on an interactive terminal; served and CI runs log instead.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from prefect.futures import as_completed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def _bar(label: str, total: int):
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=False,
    ) as progress:
        bar = progress.add_task(label, total=total)
        yield lambda **kw: progress.update(bar, **kw)


def track_futures(futures, label: str) -> list:
    """Results of mapped task futures, in input order, advancing a bar as each completes."""
    index = {id(f): i for i, f in enumerate(futures)}
    results: list = [None] * len(futures)
    with _bar(label, len(futures)) as update:
        for done, future in enumerate(as_completed(futures), start=1):
            results[index[id(future)]] = future.result()
            update(completed=done)
    return results


def track_fit(future, progress_file: Path, poll_seconds: float = 0.5):
    """Wait for the fit task, showing the blocks it has streamed (from its progress file)."""
    with _bar("fit blocks", 1) as update:
        while True:
            future.wait(timeout=poll_seconds)
            if future.state.is_final():
                break
            try:
                state = json.loads(progress_file.read_text())
                update(completed=state["done"], total=state["total"])
            except (OSError, ValueError, KeyError):
                pass
        result = future.result()
        update(completed=1, total=1)
    return result
