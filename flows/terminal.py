"""What a command prints when it is done: its summary as tables, then how to look further."""

from __future__ import annotations

import logging
import os

from rich import box
from rich.console import Console
from rich.table import Table

from .summary import build_summary


class _InputErrorsPlain(logging.Formatter):
    """Prefect's console format, without the traceback of an error about the input.

    Such an error's message says what to fix (the file, the column, the option), and the
    command repeats it last; the traceback, still in the run's logs in the Prefect UI,
    would only push it off the screen. Every other error keeps its traceback."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        from ooc.tasks.retries import is_bad_input

        if record.exc_info and is_bad_input(record.exc_info[1]):
            # A copy: the record itself may reach other handlers after this one.
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(record)


def plain_input_errors() -> None:
    """Show errors about the input in the terminal's log without their traceback."""
    from .progress import console_handlers

    for handler in console_handlers():
        if not isinstance(handler.formatter, _InputErrorsPlain):
            handler.setFormatter(_InputErrorsPlain(handler.formatter or logging.Formatter()))


def _results(command: str, result) -> dict:
    if command == "generate":
        return {"generated": result}
    if command == "train":
        return {"trained": result.trained, "registered": result.registered}
    if command == "predict":
        return {"predicted": result.predicted}
    if command == "tune":
        return {
            "searched": result.searched,
            "evaluated": result.evaluated,
            "registered": result.registered,
        }
    return {
        "generated": result.generated,
        "trained": result.trained,
        "registered": result.registered,
        "predicted": result.predicted,
        "predicted_with": result.predicted_with,
    }


def print_result(command: str, result, session, elapsed: float) -> None:
    """The summary as two tables, then the commands that open this run in both UIs."""
    console = Console(soft_wrap=True)
    summary = build_summary(**_results(command, result))
    table = Table(title=f"ooc {command}", show_header=False, title_justify="left",
                  box=box.SIMPLE_HEAD)  # fmt: skip
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # long paths wrap, never cut
    for section, rows in summary.sections.items():
        table.add_row(f"[cyan]{section}[/]", "")
        for label, value in rows:
            table.add_row(f"  {label}", value.replace("`", ""))
    console.print(table)
    stages = Table(box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("stage", "seconds", "rows/s"):
        stages.add_column(name, justify="left" if name == "stage" else "right")
    for name, seconds, rows in summary.stages:
        rate = f"{rows / seconds:,.0f}" if rows and seconds > 0 else "–"
        stages.add_row(name, f"{seconds:.2f}", rate)
    rest = max(elapsed - sum(seconds for _, seconds, _ in summary.stages), 0.0)
    stages.add_row("[dim]start, tracking, registry, figures[/]", f"[dim]{rest:.2f}[/]", "")
    stages.add_row("[bold]the command, in all[/]", f"[bold]{elapsed:.2f}[/]", "")
    console.print(stages)
    links = dict(getattr(result, "links", []) or [])
    if "MLflow run" in links:
        serve = f"{links['MLflow UI']}, then " if "MLflow UI" in links else ""
        console.print(f"[bold]MLflow[/]   {serve}open {links['MLflow run']}", highlight=False)
    if "Prefect flow run" in links:
        home = os.environ.get("PREFECT_HOME", "~/.prefect")
        serve = f"prefect server start (the runs in {home}), then " if session.temporary_api else ""
        console.print(f"[bold]Prefect[/]  {serve}open {links['Prefect flow run']}", highlight=False)
