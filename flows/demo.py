"""`make demo`: generate a dataset, fit a pipeline out of core, predict disk to disk.

Runs on the library alone with embedded defaults; prints what it did and where.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline

import ooc

WORKDIR = Path(".demo")
ROWS, CHUNK_ROWS = 3_000_000, 250_000


def main() -> None:
    console = Console()
    data, out = WORKDIR / "data", WORKDIR / "predictions"
    timings = {}

    start = time.perf_counter()
    info = ooc.generate_dataset(data, n_rows=ROWS, chunk_rows=CHUNK_ROWS)
    timings["generate"] = time.perf_counter() - start
    console.print(
        f"dataset {data}: {ROWS:,} rows x 20 features in {info.spec.n_partitions} parquet files "
        f"({len(info.written)} written, {len(info.skipped)} already there)"
    )

    X, y = ooc.read_parquet(data, target="y")
    with Progress(console=console) as progress:
        bar = progress.add_task("fit", total=X.numblocks[0])
        incremental = ooc.Incremental(
            SGDClassifier(random_state=0),
            block_callback=lambda report: progress.advance(bar),
        )
        pipe = make_pipeline(ooc.StandardScaler(), incremental)
        start = time.perf_counter()
        pipe.fit(X, y, incremental__classes=[0, 1])
        timings["fit"] = time.perf_counter() - start

    start = time.perf_counter()
    accuracy = pipe.score(X, y)
    timings["score"] = time.perf_counter() - start
    start = time.perf_counter()
    jobs = ooc.predict_parquet(pipe, data, out)
    timings["predict"] = time.perf_counter() - start

    table = Table(title="ooc demo (library only)")
    for column in ("stage", "seconds", "rows/s"):
        table.add_column(column)
    for stage, seconds in timings.items():
        table.add_row(stage, f"{seconds:.2f}", f"{ROWS / seconds:,.0f}")
    console.print(table)
    console.print(f"training accuracy {accuracy:.4f}; {len(jobs)} prediction files in {out}")


if __name__ == "__main__":
    main()
