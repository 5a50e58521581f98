"""A flow run's summary: one set of rows, shown as a Prefect markdown artifact and, by the
command line, as tables in the terminal."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact


@dataclass
class Summary:
    """Sections of ``(label, value)`` rows, and per-stage timings."""

    sections: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    stages: list[tuple[str, float, int | None]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)

    def add(self, section: str, label: str, value) -> None:
        self.sections.setdefault(section, []).append((label, str(value)))

    def markdown(self) -> str:
        lines = []
        for section, rows in self.sections.items():
            lines += [f"**{section}**", ""]
            lines += [f"- {label}: {value}" for label, value in rows]
            lines.append("")
        if self.stages:
            lines += ["**Stages**", "", "| stage | seconds | rows/s |", "|---|---:|---:|"]
            lines += [f"| {name} | {s:.2f} | {_rate(rows, s)} |" for name, s, rows in self.stages]
            lines.append("")
        for label, where in self.links:
            if label.endswith("UI"):  # a command that serves the link, not a link
                lines.append(f"- {label}: `{where}`")
            elif label != "Prefect flow run":  # the artifact is on that page already
                lines.append(f"- {label}: [{where}]({where})")
        return "\n".join(lines)


def count(n: int, word: str) -> str:
    """``1 file``, ``2 files``, ``1,000 rows``."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _rate(rows: int | None, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if rows and seconds > 0 else "–"


def _param(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _metric(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:,.1f}"


def _data(summary: Summary, generated, trained) -> None:
    if generated is not None:
        summary.add("Data", "path", f"`{generated.path}`")
        summary.add(
            "Data",
            "rows",
            f"{count(generated.rows, 'row')} in "
            f"{count(generated.partitions, 'file')} ({generated.written} written now)",
        )
        summary.stages.append(("generate", generated.seconds, generated.rows or None))
    if trained is None:
        return
    plan = trained.plan
    if generated is None:
        summary.add("Data", "path", f"`{plan.data}`")
    summary.add(
        "Data",
        "split",
        f"{count(plan.train.n_rows, 'training row')}, "
        f"{plan.holdout.n_rows:,} held out, {count(len(plan.source.blocks), 'block')}",
    )
    pre = trained.preprocessed
    if pre.pieces_read < pre.pieces:
        summary.add(
            "Data",
            "statistics",
            f"{pre.pieces_read} of {count(pre.pieces, 'piece')} "
            "read, the others from the statistics cache",
        )
    if pre.categories:
        summary.add("Data", "encoded", ", ".join(
            f"{name} ({count(len(values), 'category')})" for name, values in pre.categories.items()
        ) + f"; preprocessing in {count(pre.passes, 'pass')}")  # fmt: skip


def _model(summary: Summary, trained) -> None:
    fitted = trained.fitted
    params = ", ".join(f"{k}={_param(v)}" for k, v in trained.model.params.items())
    summary.add("Model", "estimator", f"{trained.model.name} ({params or 'default parameters'})")
    resumed = f", resumed from {fitted.resumed_from}" if fitted.resumed_from else ""
    summary.add(
        "Model",
        "trained on",
        f"{count(fitted.n_samples_seen, 'row')}, {count(fitted.n_epochs, 'epoch')}{resumed}",
    )
    summary.add("Model", "saved as", f"`{fitted.model_path}`")
    for name, value in trained.evaluated.metrics.items():
        summary.add("Holdout metrics", name, _metric(value))
    plan = trained.plan
    summary.stages += [
        ("preprocess", trained.preprocessed.seconds, plan.train.n_rows),
        ("fit", fitted.seconds, fitted.n_samples_seen),
        ("evaluate", trained.evaluated.seconds, plan.holdout.n_rows),
    ]


def build_summary(
    *, generated=None, trained=None, registered=None, predicted=None, predicted_with=None,
    searched=None, evaluated=None, links=(),
) -> Summary:  # fmt: skip
    """The rows of a run's summary from the flows' typed results."""
    summary = Summary(links=list(links))
    _data(summary, generated, trained)
    if trained is not None:
        _model(summary, trained)
    if searched is not None:
        best = ", ".join(f"{k}={_param(v)}" for k, v in searched.best_params.items())
        summary.add(
            "Search",
            "candidates",
            f"{len(searched.candidates)}, {searched.partial_fit_calls:,} partial_fit calls in all",
        )
        summary.add("Search", "best", f"{best} (score {_metric(searched.best_score)})")
        summary.add("Search", "best model", f"`{searched.model_path}`")
        summary.stages.append(("search", searched.seconds, None))
    if evaluated is not None:
        for name, value in evaluated.metrics.items():
            summary.add("Holdout metrics", name, _metric(value))
    if registered is not None:
        outcome = "champion" if registered.promoted else "challenger"
        summary.add("Registry", "version", f"v{registered.version} ({outcome})")
        summary.add("Registry", "decision", registered.reason)
    if predicted is not None:
        summary.add("Predictions", "written to", f"`{predicted.out}`")
        summary.add(
            "Predictions",
            "rows",
            f"{count(predicted.rows, 'row')} in "
            f"{count(predicted.files, 'file')} ({predicted.written} written now)",
        )
        summary.add("Predictions", "model", predicted_with or f"`{predicted.model_ref}`")
        rows = predicted.rows if predicted.written else None
        summary.stages.append(("predict", predicted.seconds, rows))
    return summary


def publish_summary(**results) -> Summary:
    """The summary as the flow run's markdown artifact (key ``ooc-run-summary``)."""
    summary = build_summary(**results)
    create_markdown_artifact(
        summary.markdown(), key="ooc-run-summary", description="ooc run summary"
    )
    metrics = summary.sections.get("Holdout metrics", [])
    if metrics:
        get_run_logger().info(
            "Holdout: %s.", ", ".join(f"{label} {value}" for label, value in metrics)
        )
    return summary
