"""The same rows written three ways: 200 files, 20 files, one file (a typical export)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import ooc


def prepare(rows: int, root: Path, out) -> dict[str, Path]:
    """``{layout: folder}``; the files are made once and kept for the next runs."""
    many = root / "200-files"
    ooc.generate_dataset(many, n_rows=rows, chunk_rows=max(rows // 200, 1))
    files = ooc.list_parquet_files(many)
    folders = {"200 files": many, "20 files": root / "20-files", "1 file": root / "1-file"}
    if not (folders["20 files"] / ".done").exists():
        folders["20 files"].mkdir(parents=True, exist_ok=True)
        for k in range(20):
            group = files[k * len(files) // 20 : (k + 1) * len(files) // 20]
            table = pq.ParquetDataset(group).read()
            pq.write_table(table, folders["20 files"] / f"part-{k:02d}.parquet",
                           row_group_size=len(table))  # fmt: skip
        (folders["20 files"] / ".done").touch()
    if not (folders["1 file"] / ".done").exists():
        folders["1 file"].mkdir(parents=True, exist_ok=True)
        # pyarrow's default row groups (1 Mi rows): larger than a block, so each is read
        # in slices; the file is written a row group at a time, never held whole.
        group_rows, pending = 1024 * 1024, []
        schema = pq.read_schema(files[0])
        with pq.ParquetWriter(folders["1 file"] / "export.parquet", schema) as writer:
            for file in files:
                pending.append(pq.read_table(file))
                if sum(t.num_rows for t in pending) >= group_rows:
                    table = pa.concat_tables(pending)
                    writer.write_table(table.slice(0, group_rows), row_group_size=group_rows)
                    pending = [table.slice(group_rows)]
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=group_rows)
        (folders["1 file"] / ".done").touch()
    out.print("layouts: " + ", ".join(f"{k} ({v})" for k, v in folders.items()))
    return folders
