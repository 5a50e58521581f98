"""Timing profiles of a flow run, recorded in the flow process and drawn as files.

- the Dask task stream (who ran what, when) and Dask's performance report (HTML);
- CPU and memory of every worker (and of the flow process) sampled over time;
- the stages of the run (generate, preprocess, fit, evaluate, predict) as time spans;
- the fit's per-block timeline (reading and partial_fit), from ``blocks.csv``.

The fit is one Dask task that streams blocks through threads, so the task stream alone
would show one long bar: the block lanes show what happens inside it. A stage on a cluster of
one worker runs its files on that worker's threads (``tasks.cluster``), which log a span per
file: they join the task stream, a lane per thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .lifetime import end_with_parent

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
    interval: float = 0.2
    stages: list[tuple[str, float, float]] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    started: float = 0.0

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self._stack = contextlib.ExitStack()
        self._stop = threading.Event()
        self._client = None
        self._report = None  # distributed's performance_report, once entered
        self._report_written = None  # a concurrent Future, once the run is over

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
            # Inline: the report opens offline (BokehJS embedded, not from a CDN).
            self._report = performance_report(filename=str(self.report_path), mode="inline")
            self._report.__enter__()
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
                self.tasks = list(self._stream.data) + self._thread_steps()
        if self._report is not None:
            # Last: while the scheduler builds the report, its event loop answers nothing.
            self._report_written = self._write_report()
            if exc[0] is not None:
                self.report()  # the run failed: nothing to overlap with

    def _thread_steps(self) -> list[dict]:
        """The tasks stages ran on a worker's threads (``tasks.cluster``) during this run,
        as records of the task stream."""
        from .cluster import THREAD_STEPS

        try:
            events = self._client.get_events(THREAD_STEPS)
        except Exception:  # noqa: BLE001 - the profile must not fail the run
            return []
        return [
            {
                "key": step["key"],
                "worker": event["worker"],
                "lane": step["thread"],  # not "thread": Dask's records name its ident
                "startstops": [{"action": "compute", "start": step["start"], "stop": step["stop"]}],
            }
            for when, event in events
            if when >= self.started
            for step in event["steps"]
        ]

    def _write_report(self):
        """Start writing the performance report on the client's event loop and return at
        once: the scheduler builds it (a second at 10M rows) while the flow logs the model."""
        client, report = self._client, self._report

        async def write():
            with client.as_current():
                await report.__aexit__(None, None, None, code=f"ooc run, profile in {self.out_dir}")

        return asyncio.run_coroutine_threadsafe(write(), client.loop.asyncio_loop)

    def report(self) -> list[Path]:
        """Wait for the Dask performance report; the file written (none without Dask)."""
        if self._report_written is None:
            return []
        self._report_written.result()
        return [self.report_path]

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
                    sample["workers"][address] = (metrics.get("cpu", 0.0), metrics.get("memory", 0))
            self.samples.append(sample)

    # -- drawing --------------------------------------------------------------------------
    def draw(self, blocks_csv: str | Path | None = None, origin: float = 0.0) -> Drawing:
        """Start drawing :meth:`figures` in a child process; ``result()`` waits for it.

        matplotlib holds the GIL for the seconds a drawing takes: in the flow's process it
        would slow what runs meanwhile (logging the model, registering it) as much.
        """
        spec = self.out_dir / "profile.json"
        recorded = {
            "out_dir": str(self.out_dir), "interval": self.interval, "started": self.started,
            "stages": self.stages, "samples": self.samples, "tasks": self.tasks,
            "blocks_csv": str(blocks_csv) if blocks_csv else None, "origin": origin,
        }  # fmt: skip
        spec.write_text(json.dumps(recorded, default=str))
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(spec)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, preexec_fn=end_with_parent,
        )  # fmt: skip
        return Drawing(process, spec)

    def figures(self, blocks_csv: str | Path | None = None, origin: float = 0.0) -> list[Path]:
        """Draw the profile; return the PNG files written (:meth:`report` is the HTML one).

        ``blocks_csv`` is the fit's per-block table, its times in seconds from ``origin``
        (a wall-clock time).
        """
        import matplotlib

        matplotlib.use("Agg")
        files = []
        blocks = _read_blocks(blocks_csv, origin) if blocks_csv else []
        for stage, title, extra in (
            ("fit", "Training parallelism", blocks),
            ("predict", "Predicting parallelism", []),
        ):
            span = next(((s, e) for name, s, e in self.stages if name == stage), None)
            if span is not None:
                files.append(self._gantt(stage, title, span, extra))
        files.append(self._resources())
        return files

    def _worker_names(self) -> dict[str, str]:
        """One name per worker for every figure: ``worker 1 (address)``, by address."""
        addresses = sorted(
            {str(r.get("worker", "?")) for r in self.tasks}
            | {w for s in self.samples for w in s["workers"]}
        )
        return {
            a: f"worker {i} (threads of the flow's process)"
            if a.startswith("inproc")
            else f"worker {i} ({a})"
            for i, a in enumerate(addresses, start=1)
        }

    def _gantt(self, stage: str, title: str, span: tuple[float, float], blocks: list) -> Path:
        import matplotlib.pyplot as plt

        names = self._worker_names()
        lanes: dict[str, list[tuple[float, float, str]]] = {}
        for record in self.tasks:
            kind = str(record.get("key", "task")).split("-")[0].strip("('\"_")
            lane = f"Dask tasks on {names.get(str(record.get('worker', '?')), '?')}"
            if "lane" in record:  # a stage's tasks on its worker's threads
                lane += f", thread {record['lane']}"
            for ss in record.get("startstops", ()):
                if ss["stop"] >= span[0] and ss["start"] <= span[1]:
                    lanes.setdefault(lane, []).append((ss["start"], ss["stop"], kind))
        parallel = any(b.get("replica") for b in blocks)
        for b in blocks:
            # One pair of lanes per replica of a parallel fit.
            replica = f", replica {int(b['replica'])}" if parallel else ""
            lanes.setdefault(f"fit{replica}: reading + transforming blocks", []).append(
                (b["load_started"], b["load_started"] + b["load_seconds"], "read + transform")
            )
            lanes.setdefault(f"fit{replica}: partial_fit", []).append(
                (b["fit_started"], b["fit_started"] + b["fit_seconds"], "partial_fit")
            )
        kinds = sorted({n for bars in lanes.values() for *_, n in bars})
        colours = dict(zip(kinds, plt.cm.tab10.colors, strict=False))
        order = sorted(lanes)
        fig, ax = plt.subplots(figsize=(12, 1.6 + 0.45 * max(len(lanes), 1)))
        for row, lane in enumerate(order):
            for start, stop, kind in lanes[lane]:
                ax.barh(
                    row, stop - start, left=start - self.started, height=0.7,
                    color=colours[kind], edgecolor="white", linewidth=0.6,
                )  # fmt: skip
        ax.set_yticks(range(len(order)), order)
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the run started")
        ends = [stop for bars in lanes.values() for _, stop, _ in bars]
        ax.set_xlim(span[0] - self.started, max([span[1], *ends]) - self.started)
        ax.set_title(f"{title}: what ran where, {stage} stage (a bar is one task or block)")
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in kinds]
        if handles:
            # Outside the axes: the legend never hides a bar.
            ax.legend(handles, kinds, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      fontsize="small", title="task")  # fmt: skip
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        path = self.out_dir / f"task-stream-{stage}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def _resources(self) -> Path:
        import matplotlib.pyplot as plt

        names = self._worker_names()
        fig, (stages_ax, cpu_ax, mem_ax) = plt.subplots(
            3, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [0.5, 3, 3]}
        )
        times = [s["time"] - self.started for s in self.samples]
        # Workers that are threads of the flow's process (inproc://) are that process:
        # its own line shows them.
        separate = {w for s in self.samples for w in s["workers"] if not w.startswith("inproc")}
        flow_label = "flow process" + ("" if separate else " (and its worker threads)")
        for address in sorted(separate):
            cpu = [s["workers"].get(address, (float("nan"), 0))[0] for s in self.samples]
            mem = [s["workers"].get(address, (0, float("nan")))[1] / 2**30 for s in self.samples]
            cpu_ax.plot(times, cpu, label=names.get(address, address))
            mem_ax.plot(times, mem, label=names.get(address, address))
        cpu_ax.plot(times, [s["flow_cpu"] for s in self.samples], "--", label=flow_label)
        mem_ax.plot(times, [s["flow_rss"] / 2**30 for s in self.samples], "--", label=flow_label)
        # The stages in a strip of their own, named above the data, not under it; a name
        # that does not fit its stage's span is written vertically.
        width = max((s["time"] for s in self.samples), default=self.started + 1) - self.started
        for name, start, stop in self.stages:
            colour = STAGE_COLOURS.get(name, "#eeeeee")
            stages_ax.axvspan(start - self.started, stop - self.started, color=colour)
            narrow = (stop - start) < 0.07 * width
            stages_ax.text(
                (start + stop) / 2 - self.started,
                0.5,
                name,
                ha="center",
                va="center",
                fontsize="small",
                rotation=90 if narrow else 0,
            )
            for ax in (cpu_ax, mem_ax):
                ax.axvspan(start - self.started, stop - self.started, color=colour, alpha=0.25)
        stages_ax.set_yticks([])
        stages_ax.set_title("CPU and memory of every process over time, by stage")
        cores = psutil.cpu_count() or 1
        cpu_ax.set_ylim(0, 100 * cores * 1.05)
        cpu_ax.set_ylabel(f"CPU % (100% = one core; {cores} here)")
        mem_ax.set_ylim(bottom=0)
        mem_ax.set_ylabel("resident memory (GiB)")
        mem_ax.set_xlabel("seconds since the run started")
        cpu_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        for ax in (cpu_ax, mem_ax):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.out_dir / "cpu-memory.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


@dataclass
class Drawing:
    """The figures of a run, being drawn by a child process."""

    process: subprocess.Popen
    spec: Path

    def result(self) -> list[Path]:
        """Wait for the drawing; the files written, or a RuntimeError with its error."""
        out, err = self.process.communicate()
        self.spec.unlink(missing_ok=True)
        if self.process.returncode:
            raise RuntimeError(f"Drawing the run's profile failed: {err.strip()[-2000:]}")
        return [Path(line) for line in out.splitlines() if line]

    def cancel(self) -> None:
        self.process.kill()
        self.process.communicate()
        self.spec.unlink(missing_ok=True)


def _draw_recorded(spec: Path) -> list[Path]:
    """:meth:`RunProfiler.figures` from a profile recorded by :meth:`RunProfiler.draw`."""
    recorded = json.loads(spec.read_text())
    profiler = RunProfiler(recorded["out_dir"], recorded["interval"])
    profiler.started = recorded["started"]
    profiler.stages = [tuple(stage) for stage in recorded["stages"]]
    profiler.samples, profiler.tasks = recorded["samples"], recorded["tasks"]
    return profiler.figures(recorded["blocks_csv"], recorded["origin"])


def _read_blocks(path: str | Path, origin: float) -> list[dict]:
    """The fit's blocks, each with its read and partial_fit spans in wall-clock time."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open() as fh:
        rows = [
            {k: float(v) if v != "" else None for k, v in row.items()} for row in csv.DictReader(fh)
        ]
    for row in rows:
        row["load_started"] = origin + row["load_start_s"]
        row["load_seconds"] = row["load_s"]
        row["fit_started"] = origin + row["fit_start_s"]
        row["fit_seconds"] = row["partial_fit_s"]
    return rows


if __name__ == "__main__":
    for written in _draw_recorded(Path(sys.argv[1])):
        print(written)
