"""CSV to parquet: types inferred once and checked everywhere, errors that name the line,
atomic and resumable outputs, bounded memory."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from ooc.convert import convert_csv

MB = 1024 * 1024


def _write(path, text: str, gz: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt", newline="") as fh:
            fh.write(text)
    else:
        path.write_text(text, newline="")
    return path


def _numbered(n_rows: int, bad_row: int | None = None, value: str = "") -> str:
    """Columns a (int), b (float), c (string); a quoted field over two lines at row 3
    and a blank line after row 6, so records and lines differ."""
    lines, two = ["a,b,c"], '"two\nlines"'
    for i in range(n_rows):
        a = value if i == bad_row else str(i)
        lines.append(f"{a},{i * 0.5},{two if i == 3 else f's{i}'}")
    return "\n".join(lines[:8]) + "\n\n" + "\n".join(lines[8:]) + "\n"


def _all_files(folder) -> list[str]:
    """Every file under ``folder``, hidden ones included."""
    return sorted(
        os.path.relpath(os.path.join(d, n), folder)
        for d, _, names in os.walk(folder)
        for n in names
    )


ROUND_TRIP = (
    "i,x,flag,name,when\n"
    "1,0.5,true,alpha,2024-01-02 03:04:05\n"
    '2,,false,"b, c",2024-02-03 00:00:00\n'
    '-3,1e3,True,"multi\nline",2025-12-31 23:59:59\n'
    "40,-2.25,FALSE,delta,2026-06-30 12:00:00\n"
)


def test_round_trip_equals_pandas(tmp_path):
    src = _write(tmp_path / "in.csv", ROUND_TRIP)
    result = convert_csv(src, tmp_path / "out")
    assert result.files == (tmp_path / "out" / "in.parquet",)
    assert result.written == result.files and result.kept == () and result.rows == (4,)
    assert result.schema == pa.schema(
        [
            ("i", pa.int64()),
            ("x", pa.float64()),
            ("flag", pa.bool_()),
            ("name", pa.string()),
            ("when", pa.timestamp("s")),
        ]
    )
    got = pq.read_table(result.files[0]).to_pandas()
    expected = pd.read_csv(src, parse_dates=["when"])
    # pandas and pyarrow choose other datetime units; every other dtype must agree
    expected["when"] = expected["when"].astype(got["when"].dtype)
    pd.testing.assert_frame_equal(got, expected)


def test_many_files_in_nested_directories_in_natural_order(tmp_path):
    src = tmp_path / "src"
    texts = {
        "a/part-2.csv": "k,v\n1,2.5\n2,3.5\n",
        "a/part-10.csv": "k,v\n3,4.5\n",
        "b/c/more.csv.gz": "k,v\n4,5.5\n5,6.5\n6,7.5\n",
    }
    for name, text in texts.items():
        _write(src / name, text, gz=name.endswith(".gz"))
    _write(src / ".hidden.csv", "other\n1\n")  # skipped: hidden,
    _write(src / "_tmp" / "x.csv", "other\n1\n")  # underscore directory,
    _write(src / "notes.txt", "not,csv\n")  # not CSV
    result = convert_csv(src, tmp_path / "out")
    out = tmp_path / "out"
    assert result.sources == (src / "a/part-2.csv", src / "a/part-10.csv", src / "b/c/more.csv.gz")
    assert result.files == (
        out / "a/part-2.parquet",
        out / "a/part-10.parquet",
        out / "b/c/more.parquet",
    )
    assert result.rows == (2, 1, 3) and result.n_rows == 6
    table = pa.concat_tables(pq.read_table(f) for f in result.files)
    assert table.column("k").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert table.column("v").to_pylist() == [2.5, 3.5, 4.5, 5.5, 6.5, 7.5]
    assert _all_files(out) == ["a/part-10.parquet", "a/part-2.parquet", "b/c/more.parquet"]


def test_list_of_files_and_gzip_told_by_content(tmp_path):
    plain = _write(tmp_path / "x" / "one.csv", "k,v\n1,a\n")
    zipped = _write(tmp_path / "y" / "two.csv", "k,v\n2,b\n", gz=True)  # gzip, named .csv
    assert zipped.read_bytes()[:2] == b"\x1f\x8b"
    result = convert_csv([zipped, plain], tmp_path / "out", scheduler="sync")
    assert result.files == (tmp_path / "out/x/one.parquet", tmp_path / "out/y/two.parquet")
    assert pq.read_table(result.files[1]).to_pylist() == [{"k": 2, "v": "b"}]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("bad_row", [20, 1500], ids=["first-block", "later-block"])
@pytest.mark.parametrize(("value", "fix"), [("abc", "string"), ("3.5", "float64")])
def test_bad_value_names_file_line_column_and_fix(tmp_path, gz, bad_row, value, fix):
    text = _numbered(2000, bad_row, value)
    line = text[: text.index(f"\n{value},") + 1].count("\n") + 1  # as an editor numbers it
    src = _write(tmp_path / ("data.csv.gz" if gz else "data.csv"), text, gz)
    out = tmp_path / "out"
    # 1 KiB blocks: row 20 is in the first block, row 1500 some 30 blocks later
    with pytest.raises(ValueError) as info:
        convert_csv(src, out, sample_rows=10, block_bytes=1024, row_group_rows=100)
    assert str(info.value) == (
        f"{src}, line {line}, column 'a': expected int64 (inferred from the first 10 rows), "
        f"got '{value}'. Pass column_types={{'a': '{fix}'}} to read the column as {fix}, or "
        "correct the value in the file."
    )
    assert line == bad_row + 4  # header, the two-line field, the blank line
    # nothing written, nothing temporary left, in the output or beside the source
    assert _all_files(tmp_path) == [src.name]


@pytest.mark.parametrize("sample_rows", [10, 100_000], ids=["while-streaming", "in-sample"])
def test_line_with_wrong_number_of_fields(tmp_path, sample_rows):
    text = _numbered(300).replace("\n250,", "\n250,1,")
    src = _write(tmp_path / "data.csv", text)
    with pytest.raises(ValueError) as info:
        convert_csv(src, tmp_path / "out", sample_rows=sample_rows, block_bytes=1024)
    assert str(info.value) == (
        f"{src}, line 254: expected 3 fields ['a', 'b', 'c'], got 4: '250,1,125.0,s250'. Fix "
        "the line; a field holding the delimiter ',' or a line break must be quoted."
    )


def test_files_with_other_columns_are_named(tmp_path):
    for name in ("a.csv", "b.csv", "d.csv"):
        _write(tmp_path / "src" / name, "x,y\n1,2\n")
    odd = _write(tmp_path / "src" / "c.csv", "x,z,y\n1,2,3\n")
    with pytest.raises(ValueError) as info:
        convert_csv(tmp_path / "src", tmp_path / "out")
    assert str(info.value).startswith(
        f"{odd} has columns ['x', 'z', 'y'], but {tmp_path / 'src' / 'a.csv'} has ['x', 'y'] "
        "(missing [], extra ['z']"
    )
    _write(odd, "y,x\n1,2\n")
    with pytest.raises(ValueError, match="another order"):
        convert_csv(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_header_only_file_gives_empty_parquet_with_the_schema(tmp_path):
    _write(tmp_path / "src" / "1.csv", "n,s\n1,a\n")
    _write(tmp_path / "src" / "2.csv", "n,s\n")
    _write(tmp_path / "src" / "3.csv", "n,s")  # no line break: pyarrow alone refuses it
    result = convert_csv(tmp_path / "src", tmp_path / "out")
    assert result.rows == (1, 0, 0)
    for file in result.files[1:]:
        table = pq.read_table(file)
        assert table.num_rows == 0 and table.schema == pa.schema(
            [("n", pa.int64()), ("s", pa.string())]
        )
    # only headers: nothing to infer from, every column is string
    alone = convert_csv(tmp_path / "src" / "2.csv", tmp_path / "alone")
    assert alone.schema.types == [pa.string(), pa.string()]


def test_sample_is_the_first_rows_and_empty_columns_become_string(tmp_path):
    _write(tmp_path / "src" / "1.csv", "a,b,e\n1,x,\n")
    _write(tmp_path / "src" / "2.csv", "a,b,e\n2.5,y,\n")
    result = convert_csv(tmp_path / "src", tmp_path / "out")  # the sample spans both
    assert result.schema == pa.schema([("a", pa.float64()), ("b", pa.string()), ("e", pa.string())])
    assert pq.read_table(result.files[0]).column("e").to_pylist() == [None]
    with pytest.raises(ValueError, match=r"2.csv, line 2, column 'a': expected int64 .*got '2.5'"):
        convert_csv(tmp_path / "src", tmp_path / "out1", sample_rows=1)


def test_rerun_keeps_complete_outputs_and_converts_changed_sources(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        _write(src / f"p{i}.csv", f"k,v\n{i},{i}.5\n")
    first = convert_csv(src, tmp_path / "out")
    assert first.written == first.files
    inodes = [os.stat(f).st_ino for f in first.files]  # a rewrite is a new file
    again = convert_csv(src, tmp_path / "out")
    assert again.written == () and again.kept == first.files and again.rows == first.rows
    assert [os.stat(f).st_ino for f in first.files] == inodes
    _write(src / "p1.csv", "k,v\n1,1.5\n7,7.5\n")
    changed = convert_csv(src, tmp_path / "out")
    assert changed.written == (first.files[1],) and changed.rows == (1, 2, 1)
    assert pq.read_table(first.files[1]).column("k").to_pylist() == [1, 7]
    # same size, newer mtime: converted again too
    stat = os.stat(src / "p2.csv")
    os.utime(src / "p2.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert convert_csv(src, tmp_path / "out").written == (first.files[2],)
    # the schema used is part of what makes an output complete
    retyped = convert_csv(src, tmp_path / "out", column_types={"k": "float64"})
    assert retyped.written == first.files
    assert pq.read_schema(first.files[0]).field("k").type == pa.float64()
    # a damaged output is converted again
    first.files[2].write_bytes(b"PAR1 not really")
    assert convert_csv(src, tmp_path / "out", column_types={"k": "float64"}).written == (
        first.files[2],
    )


def test_a_bad_value_leaves_the_previous_output_and_no_temporary_file(tmp_path):
    src = _write(tmp_path / "data.csv", _numbered(500))
    out = tmp_path / "out"
    convert_csv(src, out, sample_rows=10, block_bytes=1024)
    before = (out / "data.parquet").read_bytes()
    _write(src, _numbered(500, 400, "oops"))
    with pytest.raises(ValueError, match="line 404, column 'a'"):
        convert_csv(src, out, sample_rows=10, block_bytes=1024, row_group_rows=50)
    assert _all_files(out) == ["data.parquet"]
    assert (out / "data.parquet").read_bytes() == before


def test_column_types_override_and_errors(tmp_path):
    src = _write(tmp_path / "in.csv", "id,price,when\n007,3,2024-01-01\n010,4,2024-01-02\n")
    result = convert_csv(
        src, tmp_path / "out", column_types={"id": "string", "price": pa.float32()}
    )
    assert result.schema.field("id").type == pa.string()
    assert result.schema.field("price").type == pa.float32()
    assert pq.read_table(result.files[0]).column("id").to_pylist() == ["007", "010"]
    with pytest.raises(
        ValueError,
        match=r"names 'prize', not a column; the columns are \['id', 'price', 'when'\]",
    ):
        convert_csv(src, tmp_path / "out", column_types={"prize": "float64"})
    with pytest.raises(
        ValueError, match="column_types\\['price'\\] = 'flot' is not a pyarrow type"
    ):
        convert_csv(src, tmp_path / "out", column_types={"price": "flot"})
    with pytest.raises(ValueError, match=r"expected bool \(given in column_types\), got '3'"):
        convert_csv(src, tmp_path / "bad", column_types={"price": "bool"})


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_csv(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No \\*.csv or \\*.csv.gz files"):
        convert_csv(tmp_path / "empty", tmp_path / "out")
    _write(tmp_path / "twice" / "a.csv", "k\n1\n")
    _write(tmp_path / "twice" / "a.csv.gz", "k\n1\n", gz=True)
    with pytest.raises(ValueError, match="would both become"):
        convert_csv(tmp_path / "twice", tmp_path / "out")
    with pytest.raises(ValueError, match="is empty; a CSV file needs a header"):
        convert_csv(_write(tmp_path / "blank.csv", ""), tmp_path / "out")
    with pytest.raises(ValueError, match="row_group_rows must be an int >= 1"):
        convert_csv(tmp_path / "twice", tmp_path / "out", row_group_rows=0)


def test_row_groups_hold_at_most_row_group_rows(tmp_path):
    src = _write(tmp_path / "data.csv", _numbered(2500))
    result = convert_csv(src, tmp_path / "out", row_group_rows=1000, block_bytes=1024)
    meta = pq.read_metadata(result.files[0])
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]
    assert pq.read_table(result.files[0]).column("a").to_pylist() == list(range(2500))


MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    import pyarrow as pa, pyarrow.csv as pcsv
    from ooc.convert import convert_csv

    src, out, mode = sys.argv[1:]
    if mode == "convert":
        convert_csv(src, out, row_group_rows=10_000, block_bytes=32 * 1024, sample_rows=1000)
    else:
        pcsv.read_csv(src)
    print(pa.default_memory_pool().max_memory())
    """
)


def _peak(src, out, mode) -> int:
    run = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(src), str(out), mode],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return int(run.stdout.split()[-1])


def test_memory_is_bounded_by_row_groups_and_blocks_not_by_the_file(tmp_path):
    n = 400_000
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "i": np.arange(n),
            "x": rng.standard_normal(n),
            "y": rng.standard_normal(n),
            "s": pa.array([f"k{i % 1000}" for i in range(n)]),
        }
    )
    src = tmp_path / "big.csv"
    pcsv.write_csv(table, src)
    size = src.stat().st_size  # ~20 MB, 40 row groups of 10 000 rows (~0.3 MB each)
    streamed = _peak(src, tmp_path / "out", "convert")
    loaded = _peak(src, tmp_path / "out", "read_csv")  # control: the whole file at once
    print(
        f"CSV {size / MB:.1f} MB; peak {streamed / MB:.1f} MB converting, "
        f"{loaded / MB:.1f} MB in read_csv"
    )
    assert pq.read_metadata(tmp_path / "out" / "big.parquet").num_row_groups == 40
    assert streamed < size / 4, (size / MB, streamed / MB)
    assert loaded > size, (size / MB, loaded / MB)
