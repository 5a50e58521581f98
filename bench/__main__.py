"""``python -m bench --rows N``: ooc against dask-ml and a plain loop, side by side.

Every method runs in a fresh process per repeat (so peak RSS is its own), repeats
alternate between methods, and the table shows medians. Results go to JSON as well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

import ooc

DEFAULT_METHODS = ["plain", "dask-ml", "ooc", "ooc-parallel"]


def _run(method: str, data: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.methods", method, str(data), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"bench: {method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _warm_page_cache(data: Path) -> int:
    """Read every file once, so the first method measured does not pay for the disk.

    Every method then reads from the page cache, as all but the first would anyway
    (when the data fits in memory; otherwise all read from disk alike).
    """
    total = 0
    for file in sorted(data.glob("*.parquet")):
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                total += len(chunk)
    return total


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def machine() -> str:
    memory = psutil.virtual_memory().total / 2**30
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--chunk-rows", type=int, default=500_000)
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--workdir", default="bench/results")
    args = p.parse_args(argv)

    root = Path(args.workdir)
    data = root / f"data-{args.rows}-{args.chunk_rows}-{args.dtype}"
    console = Console()
    if not console.is_terminal:  # a log file: room for the whole table
        console.width = 120
    start = time.perf_counter()
    ooc.generate_dataset(data, n_rows=args.rows, chunk_rows=args.chunk_rows, dtype=args.dtype)
    console.print(f"data {data} ready in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    cached = _warm_page_cache(data)
    console.print(f"read {cached / 1e9:.1f} GB once in {time.perf_counter() - start:.1f} s")

    methods = args.methods.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for repeat in range(args.repeats):
        for method in methods:
            runs[method].append(_run(method, data, root / "predictions"))
            console.print(f"repeat {repeat + 1}/{args.repeats}: {method} done")
    split = _run("breakdown", data, root / "predictions")

    rows = {
        m: {
            "fit_seconds": _median(r, "fit_seconds"),
            "fit_rows_per_s": r[0]["train_rows"] / _median(r, "fit_seconds"),
            "predict_seconds": _median(r, "predict_seconds"),
            "predict_rows_per_s": r[0]["rows"] / _median(r, "predict_seconds"),
            "peak_rss_gb": _median(r, "peak_rss") / 1e9,
            "accuracy": _median(r, "accuracy"),
            "runs": r,
        }
        for m, r in runs.items()
    }
    table = Table(
        title=f"{args.rows:,} rows x 20 {args.dtype} on {machine()} (medians of {args.repeats})"
    )
    for col in (
        "method",
        "fit s",
        "fit rows/s",
        "predict s",
        "predict rows/s",
        "peak RSS",
        "accuracy",
    ):
        table.add_column(col, justify="right", no_wrap=True)
    for m, r in rows.items():
        table.add_row(
            m,
            f"{r['fit_seconds']:.2f}",
            f"{r['fit_rows_per_s'] / 1e6:.2f} M",
            f"{r['predict_seconds']:.2f}",
            f"{r['predict_rows_per_s'] / 1e6:.2f} M",
            f"{r['peak_rss_gb']:.2f} GB",
            f"{r['accuracy']:.4f}",
        )
    console.print(table)
    per_block = Table(title=f"one block of {split['block_rows']:,.0f} rows, stage by stage (ms)")
    for stage in ("read_decode", "to_array", "transform", "partial_fit"):
        per_block.add_column(stage, justify="right")
    per_block.add_row(
        *(f"{split[s] * 1000:.1f}" for s in ("read_decode", "to_array", "transform", "partial_fit"))
    )
    console.print(per_block)
    if "ooc" in rows:
        b = rows["ooc"]["runs"][0]["blocks"]
        console.print(
            f"ooc fit, summed over blocks: partial_fit {b['partial_fit_seconds']:.2f} s, "
            f"waiting for data {b['wait_seconds']:.2f} s, loading (in prefetch threads) "
            f"{b['load_seconds']:.2f} s"
        )
    out = root / f"bench-{args.rows}-{int(time.time())}.json"
    out.write_text(
        json.dumps(
            {"args": vars(args), "machine": machine(), "results": rows, "block": split}, indent=2
        )
    )
    console.print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
