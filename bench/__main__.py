"""``python -m bench``: ooc against dask-ml and a plain loop, side by side, in tables.

Modes (one per question):

- default: the library's fit (cold, and warm: a retrain with its statistics cached) and
  prediction to parquet, beside dask-ml, a plain loop and the decode floor (reading the
  features and nothing else, on every core); peak RSS, accuracy; one block stage by stage.
- ``--layouts``: the same rows as 1 file, 20 files and 200 files.
- ``--product``: the ``ooc`` commands against the library doing the same work.
- ``--tabular``: mixed data (strings, missing values) through ``ooc.OnePass`` and
  through dask-ml's best equivalent pipeline.
- ``--search``: Hyperband over streamed SGD candidates against fitting them all fully.

Every measurement runs in a fresh process (so peak RSS is its own); repeats alternate
between methods and the tables show medians. Results also go to JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
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

DEFAULT_METHODS = ["decode-floor", "plain", "dask-ml", "ooc", "ooc-parallel"]


def run_method(module: str, method: str, *args) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", module, method, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"bench: {method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def warm_page_cache(data: Path) -> int:
    """Read every file once, so the first method measured does not pay for the disk.

    Every method then reads from the page cache, as all but the first would anyway
    (when the data fits in memory; otherwise all read from disk alike).
    """
    total = 0
    for file in sorted(data.rglob("*.parquet")):
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                total += len(chunk)
    return total


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def machine() -> str:
    memory = psutil.virtual_memory().total / 2**30
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB"


def console() -> Console:
    out = Console()
    if not out.is_terminal:  # a log file: room for the whole table
        out.width = 200
    return out


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right", no_wrap=True)
    return table


def _save(root: Path, name: str, payload: dict) -> Path:
    out = root / f"{name}-{int(time.time())}.json"
    out.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str))
    return out


def library(args, out: Console) -> dict:
    root = Path(args.workdir)
    data = root / f"data-{args.rows}-{args.chunk_rows}-{args.dtype}"
    start = time.perf_counter()
    ooc.generate_dataset(data, n_rows=args.rows, chunk_rows=args.chunk_rows, dtype=args.dtype)
    out.print(f"data {data} ready in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    cached = warm_page_cache(data)
    out.print(f"read {cached / 1e9:.1f} GB once in {time.perf_counter() - start:.1f} s")

    methods = args.methods.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for repeat in range(args.repeats):
        for method in methods:
            runs[method].append(run_method("bench.methods", method, data, root / "predictions"))
            out.print(f"repeat {repeat + 1}/{args.repeats}: {method} done")
    split = run_method("bench.methods", "breakdown", data, root / "predictions")

    rows = {}
    for m, r in runs.items():
        fit, predict = _median(r, "fit_seconds"), _median(r, "predict_seconds")
        rows[m] = {
            "fit_seconds": fit,
            "fit_rows_per_s": r[0]["train_rows"] / fit,
            "warm_fit_seconds": (
                _median(r, "warm_fit_seconds") if "warm_fit_seconds" in r[0] else None
            ),
            "predict_seconds": predict,
            "predict_rows_per_s": r[0]["rows"] / predict,
            "peak_rss_gb": _median(r, "peak_rss") / 1e9,
            "accuracy": _median(r, "accuracy"),
            "runs": r,
        }
    table = _table(
        f"{args.rows:,} rows x 20 {args.dtype} on {machine()} (medians of {args.repeats})",
        ["method", "fit s", "warm fit s", "fit rows/s", "predict s", "predict rows/s",
         "peak RSS", "accuracy"],
    )  # fmt: skip
    for m, r in rows.items():
        floor = m == "decode-floor"
        table.add_row(
            m + (" (read only)" if floor else ""),
            "" if floor else f"{r['fit_seconds']:.2f}",
            f"{r['warm_fit_seconds']:.2f}" if r["warm_fit_seconds"] else "",
            "" if floor else f"{r['fit_rows_per_s'] / 1e6:.2f} M",
            f"{r['predict_seconds']:.2f}",
            f"{r['predict_rows_per_s'] / 1e6:.2f} M",
            f"{r['peak_rss_gb']:.2f} GB",
            "" if floor else f"{r['accuracy']:.4f}",
        )
    out.print(table)
    # The breakdown's timings (seconds), without its counts.
    stages = [k for k in split if k not in ("block_rows", "train_rows", "rows", "peak_rss")]
    per_block = _table(f"one block of {split['block_rows']:,.0f} rows, stage by stage (ms)", stages)
    per_block.add_row(*(f"{split[s] * 1000:.1f}" for s in stages))
    out.print(per_block)
    if "ooc" in rows:
        first = rows["ooc"]["runs"][0]
        b, fit = first["blocks"], first["fit_seconds"]
        out.print(
            f"ooc fit: partial_fit {b['partial_fit_seconds']:.2f} s of {fit:.2f} s (everything "
            f"else, the statistics pass included: {100 * (fit / b['partial_fit_seconds'] - 1):.0f}"
            f"% of partial_fit's time); waiting for data {b['wait_seconds']:.2f} s"
        )
    return {"args": vars(args), "results": rows, "block": split}


def layouts(args, out: Console) -> dict:
    from .layouts import prepare

    root = Path(args.workdir) / f"layouts-{args.rows}"
    folders = prepare(args.rows, root, out)
    runs: dict[str, list[dict]] = {name: [] for name in folders}
    for repeat in range(args.repeats):
        for name, folder in folders.items():
            warm_page_cache(folder)
            runs[name].append(run_method("bench.methods", "ooc", folder, root / "predictions"))
            out.print(f"repeat {repeat + 1}/{args.repeats}: {name} done")
    table = _table(
        f"{args.rows:,} rows x 20 float64 in three layouts, ooc, on {machine()}",
        ["layout", "blocks", "fit s", "fit rows/s", "predict s", "predict rows/s", "peak RSS"],
    )
    results = {}
    for name, r in runs.items():
        fit, predict = _median(r, "fit_seconds"), _median(r, "predict_seconds")
        blocks = len(ooc.inspect_parquet(folders[name]).blocks)
        results[name] = {"fit_seconds": fit, "predict_seconds": predict, "blocks": blocks,
                         "peak_rss_gb": _median(r, "peak_rss") / 1e9, "runs": r}  # fmt: skip
        table.add_row(
            name, str(blocks), f"{fit:.2f}", f"{r[0]['train_rows'] / fit / 1e6:.2f} M",
            f"{predict:.2f}", f"{r[0]['rows'] / predict / 1e6:.2f} M",
            f"{results[name]['peak_rss_gb']:.2f} GB",
        )  # fmt: skip
    out.print(table)
    return {"args": vars(args), "results": results}


def product(args, out: Console) -> dict:
    from .product import STAGES, product_table

    stages = tuple(args.stages.split(","))
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"bench: --stages takes {','.join(STAGES)}, not {','.join(unknown)}")
    result = product_table(args.rows, Path(args.workdir) / "product", args.repeats, stages)
    small, large = result["rows"]
    table = _table(
        f"ooc commands vs the library, {small:,} and {large:,} rows x 20 float64, on {machine()}"
        f" (medians of {args.repeats})",
        ["stage", f"library s, {small:,}", f"library s, {large:,}", f"ooc s, {small:,}",
         f"ooc s, {large:,}", "per-row ooc/library (90%)", "per-row, flow run (90%)",
         "per-row, stage alone (90%)", "ooc fixed s", f"ooc - library s, {large:,}"],
    )  # fmt: skip

    def ratio(value: float, interval: list[float]) -> str:
        return f"{value:.2f}x ({interval[0]:.2f} to {interval[1]:.2f})"

    for stage, r in result["stages"].items():
        table.add_row(
            stage, f"{r['small']['library']:.2f}", f"{r['large']['library']:.2f}",
            f"{r['small']['command']:.2f}", f"{r['large']['command']:.2f}",
            ratio(r["per_row_ratio"], r["per_row_interval"]),
            ratio(r["flow_ratio"], r["flow_interval"]),
            ratio(r["stage_ratio"], r["stage_interval"]),
            f"{r['fixed_s']:.1f}", f"{r['large']['command'] - r['large']['library']:.1f}",
        )  # fmt: skip
    out.print(table)
    out.print(
        "per-row: the median over the repeats of each one's slope between the two sizes (measured"
        " back to back), with its 90% bootstrap interval over the repeats; flow run: the same"
        " from the flow run's start and end in Prefect's database (the orchestration, without"
        " the process's start and end); stage alone: from the command's own timing of its work"
    )
    out.print(f"first command on a new Prefect home: {result['first_use_s']:.1f} s")
    if importlib.util.find_spec("sparse") is not None:
        out.print("note: sparse (from the bench extra) is installed; dask.array imports it and")
        out.print("numba, so every command started slower than on a user's install")
    return result


def tabular(args, out: Console) -> dict:
    from .tabular import compare

    return compare(args.rows, Path(args.workdir) / "tabular", args.repeats, out)


def search(args, out: Console) -> dict:
    from .search import compare

    return compare(args.rows, Path(args.workdir) / "search", out)


MODES = {"layouts": layouts, "product": product, "tabular": tabular, "search": search}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--chunk-rows", type=int, default=500_000)
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--workdir", default="bench/results")
    p.add_argument("--stages", default="generate,train,predict",
                   help="--product: the stages to measure (comma-separated)")  # fmt: skip
    for mode in MODES:
        p.add_argument(f"--{mode}", action="store_true", help=f"the {mode} benchmark instead")
    args = p.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    out = console()
    chosen = [m for m in MODES if getattr(args, m)]
    name = chosen[0] if chosen else "library"
    result = (MODES[name] if chosen else library)(args, out)
    out.print(f"results: {_save(Path(args.workdir), name, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
