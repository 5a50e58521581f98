"""Timing profiles of a flow run, recorded in the flow process and drawn as files.

- the Dask task stream (who ran what, when) and Dask's performance report (HTML);
- CPU and memory of every worker (and of the flow process) sampled over time;
- the stages of the run (generate, preprocess, fit, evaluate, predict) as time spans;
- the fit's per-block timeline (reading and partial_fit), from ``blocks.csv``.

The fit is one Dask task that streams blocks through threads, so the task stream alone
would show one long bar: the block lanes show what happens inside it.
"""

from __future__ import annotations

import contextlib
import csv
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

STAGE_COLOURS = {
    "generate": "#c7e9c0",
    "preprocess": "#fdd0a2",
    "fit": "#c6dbef",
    "evaluate": "#dadaeb",
    "predict": "#fcbba1",
}


def _current_dask_client():
    """The Dask client of the running flow's task runner, if it is a DaskTaskRunner."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None) if ctx else None
    try:
        return runner.client if runner is not None and hasattr(runner, "client") else None
    except Exception:  # a runner without a started cluster has no client yet
        return None


@dataclass
class RunProfiler:
    """Context manager recording a run's profile into ``out_dir``; see :meth:`figures`."""

    out_dir: Path
    interval: float = 0.5
    stages: list[tuple[str, float, float]] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    started: float = 0.0

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self._stack = contextlib.ExitStack()
        self._stop = threading.Event()
        self._client = None

    @property
    def client(self):
        """The Dask client the run used, or None without a DaskTaskRunner."""
        return self._client

    @property
    def report_path(self) -> Path:
        return self.out_dir / "dask-performance-report.html"

    def __enter__(self) -> RunProfiler:
        from distributed import get_task_stream, performance_report

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self._client = _current_dask_client()
        if self._client is not None:
            self._stack.enter_context(self._client.as_current())
            self._stream = self._stack.enter_context(get_task_stream(client=self._client))
            self._stack.enter_context(performance_report(filename=str(self.report_path)))
        self._sampler = threading.Thread(target=self._sample, name="ooc-profiler", daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._sampler.join()
        try:
            self._stack.close()
        finally:
            if self._client is not None:
                self.tasks = list(self._stream.data)

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.time()
        try:
            yield
        finally:
            self.stages.append((name, start, time.time()))

    def _sample(self) -> None:
        me = psutil.Process()
        me.cpu_percent()
        while not self._stop.wait(self.interval):
            sample = {"time": time.time(), "flow_rss": me.memory_info().rss, "workers": {}}
            sample["flow_cpu"] = me.cpu_percent()
            if self._client is not None:
                try:
                    workers = self._client.scheduler_info(n_workers=-1)["workers"]
                except Exception:  # the cluster is shutting down
                    workers = {}
                for address, info in workers.items():
                    metrics = info.get("metrics", {})
                    sample["workers"][info.get("name", address)] = (
                        metrics.get("cpu", 0.0),
                        metrics.get("memory", 0),
                    )
            self.samples.append(sample)

    # -- drawing --------------------------------------------------------------------------
    def figures(self, blocks_csv: str | Path | None = None) -> list[Path]:
        """Draw the profile; return the files written (PNGs, and the HTML report)."""
        import matplotlib

        matplotlib.use("Agg")
        files = []
        blocks = _read_blocks(blocks_csv) if blocks_csv else []
        for stage, title, extra in (
            ("fit", "Training parallelism", blocks),
            ("predict", "Predicting parallelism", []),
        ):
            span = next(((s, e) for name, s, e in self.stages if name == stage), None)
            if span is not None:
                files.append(self._gantt(stage, title, span, extra))
        files.append(self._resources())
        if self.report_path.exists():
            files.append(self.report_path)
        return files

    def _gantt(self, stage: str, title: str, span: tuple[float, float], blocks: list) -> Path:
        import matplotlib.pyplot as plt

        lanes: dict[str, list[tuple[float, float, str]]] = {}
        for record in self.tasks:
            name = str(record.get("key", "task")).split("-")[0].strip("('\"")
            lane = f"{record.get('worker', '?')}"
            for ss in record.get("startstops", ()):
                if ss["stop"] >= span[0] and ss["start"] <= span[1]:
                    lanes.setdefault(lane, []).append((ss["start"], ss["stop"], name))
        parallel = any(b.get("replica") for b in blocks)
        for b in blocks:
            # One pair of lanes per replica of a parallel fit.
            replica = f" (replica {int(b['replica'])})" if parallel else ""
            lanes.setdefault(f"fit: reading blocks (prefetch){replica}", []).append(
                (b["load_started"], b["load_started"] + b["load_seconds"], "read+transform")
            )
            lanes.setdefault(f"fit: partial_fit{replica}", []).append(
                (b["fit_started"], b["fit_started"] + b["fit_seconds"], "partial_fit")
            )
        names = sorted({n for bars in lanes.values() for *_, n in bars})
        colours = dict(zip(names, plt.cm.tab10.colors, strict=False))
        fig, ax = plt.subplots(figsize=(11, 1.2 + 0.5 * max(len(lanes), 1)))
        for row, (_, bars) in enumerate(sorted(lanes.items())):
            for start, stop, name in bars:
                ax.barh(row, stop - start, left=start - self.started, color=colours[name])
        ax.set_yticks(range(len(lanes)), sorted(lanes))
        ax.set_xlabel("seconds since the run started")
        ax.set_xlim(span[0] - self.started, span[1] - self.started)
        ax.set_title(f"{title}: tasks per worker over time ({stage} stage)")
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in names]
        if handles:
            ax.legend(handles, names, loc="upper right", fontsize="small")
        fig.tight_layout()
        path = self.out_dir / f"task-stream-{stage}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def _resources(self) -> Path:
        import matplotlib.pyplot as plt

        fig, (cpu_ax, mem_ax) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
        times = [s["time"] - self.started for s in self.samples]
        workers = sorted({w for s in self.samples for w in s["workers"]}, key=str)
        for w in workers:
            cpu = [s["workers"].get(w, (float("nan"), 0))[0] for s in self.samples]
            mem = [s["workers"].get(w, (0, float("nan")))[1] / 2**30 for s in self.samples]
            cpu_ax.plot(times, cpu, label=f"worker {w}")
            mem_ax.plot(times, mem, label=f"worker {w}")
        cpu_ax.plot(times, [s["flow_cpu"] for s in self.samples], "--", label="flow process")
        mem_ax.plot(
            times, [s["flow_rss"] / 2**30 for s in self.samples], "--", label="flow process"
        )
        for ax in (cpu_ax, mem_ax):
            for name, start, stop in self.stages:
                ax.axvspan(
                    start - self.started,
                    stop - self.started,
                    color=STAGE_COLOURS.get(name, "#eeeeee"),
                    alpha=0.5,
                )
            ax.legend(loc="upper right", fontsize="small")
        for name, start, stop in self.stages:
            cpu_ax.annotate(name, ((start + stop) / 2 - self.started, 0), ha="center", va="bottom")
        cpu_ax.set_ylabel("CPU %")
        mem_ax.set_ylabel("memory (GiB)")
        mem_ax.set_xlabel("seconds since the run started")
        cpu_ax.set_title("CPU and memory over time (shaded: stages)")
        fig.tight_layout()
        path = self.out_dir / "cpu-memory.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _read_blocks(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
