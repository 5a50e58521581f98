"""Converting CSV files to parquet, out of core and in parallel (one dask task per file).

Types are inferred once, then checked on every row of every file:

- the sample is the first ``sample_rows`` data rows, read in file order (further files
  only when the first is shorter), typed by pyarrow's inference: int64, float64, bool,
  date32, time32, timestamp, string (binary for bytes that are not UTF-8). A column with
  no value in the sample becomes string, the one type that accepts anything;
  ``column_types`` overrides any column;
- each file is streamed with that schema (``pyarrow.csv.open_csv``, ``block_bytes`` at a
  time) into row groups of ``row_group_rows`` rows. pyarrow reads blocks ahead (some 40
  in our measurements), so a task holds about ``40 * block_bytes`` and three row groups,
  whatever the size of the file (the sample, read once, is held while it is typed);
- pyarrow's missing-value spellings (``""``, ``NA``, ``NaN``, ``null``, ...) are nulls in
  every column, strings included, as :func:`pandas.read_csv` reads them.

A value that does not fit its column's type stops with one ValueError naming the file,
the line, the column, the type, the value and the fix, and leaves no output for that file
(or the one an earlier run wrote, still marked stale). Lines are counted as an editor
shows them: from 1, the header being line 1, blank lines included, a quoted field that
spans lines counting each of them; the line named is the one the bad record starts on.

Outputs are written atomically (:func:`ooc.files.atomic_path`) and stamped in their
parquet metadata with the source's path, size and mtime and the schema used: a run again
keeps the outputs complete for their source and converts the missing or changed ones.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import numbers
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import dask
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .discovery import _natural_key
from .files import atomic_path, remove_leftovers

__all__ = ["ConversionResult", "convert_csv"]

CSV_SUFFIXES = (".csv", ".csv.gz")
DEFAULT_BLOCK_BYTES = 1 << 20
_STAMP_KEY = b"ooc.convert"
_TYPE_NAMES = {"double": "float64", "float": "float32", "halffloat": "float16"}


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_csv` did.

    Attributes
    ----------
    out : Path
        The output directory.
    schema : pyarrow.Schema
        The schema of every output file.
    sources : tuple of Path
        The CSV files, in natural sort order (``part-2`` before ``part-10``).
    files : tuple of Path
        The parquet file of each source, in the same order.
    rows : tuple of int
        Data rows of each file.
    written, kept : tuple of Path
        Outputs converted by this call, and outputs already complete for their source.
    """

    out: Path
    schema: pa.Schema
    sources: tuple[Path, ...]
    files: tuple[Path, ...]
    rows: tuple[int, ...]
    written: tuple[Path, ...]
    kept: tuple[Path, ...]

    @property
    def n_rows(self) -> int:
        return sum(self.rows)


@dataclass(frozen=True)
class _Settings:
    """What every conversion task shares (small and picklable)."""

    schema: pa.Schema
    given: frozenset[str]  # columns typed by column_types, not inferred
    sampled: int
    row_group_rows: int
    block_bytes: int
    delimiter: str


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:  # by content: a gzip file need not end in .gz
        return fh.read(2) == b"\x1f\x8b"


def _open_text(path: Path):
    # surrogateescape: bytes that are not UTF-8 are kept, never an error (pyarrow reports them)
    opener = gzip.open if _is_gzip(path) else open
    return opener(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")


def _records(lines, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each record, header included; blank lines are skipped, as
    pyarrow skips them."""
    reader = csv.reader(lines, delimiter=delimiter)
    line = 0
    for fields in reader:
        start, line = line + 1, reader.line_num
        if fields:
            yield start, fields


def _read_header(path: Path, delimiter: str) -> tuple[list[str], bool]:
    """The column names of ``path`` and whether a data row follows."""
    try:
        with _open_text(path) as fh:
            records = _records(fh, delimiter)
            header, has_rows = next(records, None), next(records, None) is not None
    except (csv.Error, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"Cannot read the header of {path}: {err}.") from err
    if header is None:
        raise ValueError(f"{path} is empty; a CSV file needs a header line naming its columns.")
    return header[1], has_rows


def _output_name(path: Path) -> str:
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return Path(name).stem + ".parquet"


def _plan(sources, out: Path) -> list[tuple[Path, Path]]:
    """(source, output) pairs, in natural order of the sources."""
    if isinstance(sources, str | os.PathLike):
        root = Path(sources)
        if root.is_file():
            return [(root, out / _output_name(root))]
        if not root.is_dir():
            raise FileNotFoundError(f"CSV source {root} does not exist.")
        files = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
            files += [
                Path(folder, n)
                for n in names
                if n.lower().endswith(CSV_SUFFIXES) and not n.startswith((".", "_"))
            ]
        if not files:
            raise FileNotFoundError(f"No *.csv or *.csv.gz files found under {root}.")
    else:
        files = [Path(f).resolve() for f in sources]
        missing = [str(f) for f in files if not f.is_file()]
        if missing or not files:
            raise FileNotFoundError(f"CSV files not found: {missing or 'an empty list'}.")
        root = Path(os.path.commonpath([f.parent for f in files]))
    files.sort(key=_natural_key)
    plan = [(f, out / f.parent.relative_to(root) / _output_name(f)) for f in files]
    seen: dict[Path, Path] = {}
    for source, dest in plan:
        if seen.setdefault(dest, source) != source:
            raise ValueError(f"{seen[dest]} and {source} would both become {dest}; rename one.")
    return plan


def _check_headers(plan, heads, delimiter: str) -> list[str]:
    """The columns of every file; the reference is the header most files share, so an
    error names the odd file out even when it sorts first."""
    kinds = [tuple(names) for names, _ in heads]
    ref = kinds.index(Counter(kinds).most_common(1)[0][0])
    first, names = plan[ref][0], list(kinds[ref])
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise ValueError(f"{first} names columns {twice} more than once; make them unique.")
    for (source, _), (other, _) in zip(plan, heads, strict=True):
        if other != names:
            missing = [c for c in names if c not in other]
            extra = [c for c in other if c not in names]
            diff = f"missing {missing}, extra {extra}" if missing or extra else "another order"
            raise ValueError(
                f"{source} has columns {other}, but {first} has {names} ({diff}; delimiter "
                f"{delimiter!r}). Every file must have the same columns in the same order: fix "
                "its header or convert it separately."
            )
    return names


def _parse_types(column_types: Mapping | None, names: list[str]) -> dict[str, pa.DataType]:
    types = {}
    for name, kind in (column_types or {}).items():
        if name not in names:
            raise ValueError(f"column_types names {name!r}, not a column; the columns are {names}.")
        try:
            types[name] = kind if isinstance(kind, pa.DataType) else pa.type_for_alias(kind)
        except (ValueError, TypeError):
            raise ValueError(
                f"column_types[{name!r}] = {kind!r} is not a pyarrow type; use a name such as "
                "'float64', 'int64', 'bool', 'string', 'timestamp[s]', or a pyarrow.DataType."
            ) from None
    return types


def _fields_error(path: Path, line: int, fields: list[str], names, sep: str) -> ValueError:
    return ValueError(
        f"{path}, line {line}: expected {len(names)} fields {list(names)}, got {len(fields)}: "
        f"{sep.join(fields)[:200]!r}. Fix the line; a field holding the delimiter {sep!r} or "
        "a line break must be quoted."
    )


def _infer_schema(files, names, sample_rows: int, sep: str, given) -> tuple[pa.Schema, int]:
    """The schema of the first ``sample_rows`` data rows, and how many rows there were."""
    parts, rows = [], 0
    for index, path in enumerate(files):
        lines: list[str] = []
        try:
            with _open_text(path) as fh:
                # csv pulls only the lines each record needs: `lines` holds just the sample
                records = _records((lines.append(x) or x for x in fh), sep)
                next(records)
                del lines[: len(lines) if index else 0]  # one header
                for line, fields in islice(records, sample_rows - rows):
                    if len(fields) != len(names):
                        raise _fields_error(path, line, fields, names, sep)
                    rows += 1
        except csv.Error as err:
            raise ValueError(f"Cannot read {path} as CSV: {err}.") from err
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines.append("\n")  # the next file's first row must not join this last one
        parts += lines
        if rows == sample_rows:
            break
    table = pcsv.read_csv(
        io.BytesIO("".join(parts).encode("utf-8", "surrogateescape")),
        parse_options=pcsv.ParseOptions(delimiter=sep, newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(strings_can_be_null=True),
    )
    types = [pa.string() if pa.types.is_null(t) else t for t in table.schema.types]
    return pa.schema([(n, given.get(n, t)) for n, t in zip(names, types, strict=True)]), rows


def _locate(path: Path, start: int, bad, delimiter: str) -> tuple[int, list[str]] | None:
    """First line and fields of the first data record from index ``start`` on that is
    ``bad``, or None."""
    try:
        with _open_text(path) as fh:
            records = _records(fh, delimiter)
            next(records)
            for line, fields in islice(records, start, None):
                if bad(fields):
                    return line, fields
    except csv.Error:
        pass
    return None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_error(path: Path, done: int, err: pa.ArrowInvalid, settings: _Settings) -> ValueError:
    """The ValueError for a block pyarrow could not read, ``done`` data rows in.

    pyarrow's message names the column and the value but no line (at best a row in its
    block), so the file is scanned again for the first such record from data row ``done``.
    """
    message, schema, sep = str(err), settings.schema, settings.delimiter
    head, _, value = message.partition(": invalid value '")
    value, found, column = value.removesuffix("'"), None, None
    if head.startswith("In CSV column #") and value:
        column = int(head.removeprefix("In CSV column #").split(":")[0])
        found = _locate(path, done, lambda f: len(f) > column and f[column] == value, sep)
    elif "columns, got" in message:
        found = _locate(path, done, lambda f: len(f) != len(schema), sep)
    if found is None:
        return ValueError(f"Cannot convert {path} after its first {done} data rows: {message}.")
    line, fields = found
    if column is None:
        return _fields_error(path, line, fields, schema.names, sep)
    name, kind = schema.names[column], schema.types[column]
    origin = f"inferred from the first {settings.sampled} rows"
    origin = "given in column_types" if name in settings.given else origin
    fix = "float64" if pa.types.is_integer(kind) and _is_float(value) else "string"
    return ValueError(
        f"{path}, line {line}, column {name!r}: expected {_TYPE_NAMES.get(str(kind), kind)} "
        f"({origin}), got {value!r}. Pass column_types={{{name!r}: {fix!r}}} to read the "
        f"column as {fix}, or correct the value in the file."
    )


def _stamp(source: Path, settings: _Settings) -> dict:
    """What an output records of its source, to be kept only while that is unchanged."""
    stat = source.stat()
    return {
        "source": str(source.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "schema": {f.name: str(f.type) for f in settings.schema},
        "row_group_rows": settings.row_group_rows,
    }


def _complete_rows(dest: Path, stamp: dict) -> int | None:
    """Rows of ``dest`` if it was converted from this very source, else None."""
    try:
        meta = pq.read_metadata(dest)
        found = (meta.metadata or {}).get(_STAMP_KEY)
        return meta.num_rows if found and json.loads(found) == stamp else None
    except (OSError, pa.ArrowException, ValueError):
        return None


def _stream(source: Path, writer: pq.ParquetWriter, settings: _Settings) -> int:
    """Write the rows of ``source`` in row groups of ``row_group_rows``; return them."""
    schema, size = settings.schema, settings.row_group_rows
    read, written, pending = 0, 0, []
    with pa.input_stream(source, compression="gzip" if _is_gzip(source) else None) as stream:
        try:
            reader = pcsv.open_csv(
                stream,
                read_options=pcsv.ReadOptions(block_size=settings.block_bytes),
                parse_options=pcsv.ParseOptions(
                    delimiter=settings.delimiter, newlines_in_values=True
                ),
                convert_options=pcsv.ConvertOptions(
                    column_types=dict(zip(schema.names, schema.types, strict=True)),
                    strings_can_be_null=True,
                ),
            )
            for batch in reader:
                pending.append(batch)
                read += batch.num_rows
                table = pa.Table.from_batches(pending)
                while table.num_rows >= size:  # a full row group: write it, keep the rest
                    writer.write_table(table.slice(0, size), row_group_size=size)
                    table, written = table.slice(size), written + size
                pending = table.to_batches()
        except pa.ArrowInvalid as err:
            # batches come in order: the bad record is at or after data row `read`
            raise _read_error(source, read, err, settings) from err
    if read > written:
        writer.write_table(pa.Table.from_batches(pending), row_group_size=size)
    return read


def _convert_file(source: Path, dest: Path, has_rows: bool, settings: _Settings):
    """Convert one file unless its output is complete; return (rows, written)."""
    stamp = _stamp(source, settings)
    rows = _complete_rows(dest, stamp)
    if rows is not None:
        return rows, False
    schema = settings.schema.with_metadata({_STAMP_KEY: json.dumps(stamp).encode()})
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        # pyarrow refuses a header without a line break, so a header-only file is not read
        rows = _stream(source, writer, settings) if has_rows else 0
    return rows, True


def _check_int(value, name: str, minimum: int) -> int:
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)) or value < minimum:
        raise ValueError(f"convert_csv: {name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def convert_csv(
    sources: str | os.PathLike | list,
    out: str | os.PathLike,
    *,
    row_group_rows: int = 500_000,
    sample_rows: int = 100_000,
    column_types: Mapping[str, str | pa.DataType] | None = None,
    delimiter: str = ",",
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    scheduler=None,
) -> ConversionResult:
    """Convert CSV files, plain or gzip, to parquet files, out of core and in parallel.

    Parameters
    ----------
    sources : path-like or list of path-like
        A CSV file; a directory, searched recursively for ``*.csv`` and ``*.csv.gz``
        (hidden and ``_`` names skipped); or a list of files. Gzip is told by content.
    out : path-like
        Output directory. Each source gives one parquet file at its path relative to the
        source directory (the files' common folder for a list), with the suffix
        ``.parquet``; a single file gives ``out/<stem>.parquet``.
    row_group_rows : int, default 500_000
        Rows per row group.
    sample_rows : int, default 100_000
        Data rows the types are inferred from (see the module's docstring).
    column_types : mapping of str to str or pyarrow.DataType, optional
        Types that replace the inferred ones, such as ``{"id": "string",
        "price": "float64", "when": "timestamp[s]"}``.
    delimiter : str, default ","
    block_bytes : int, default 1 MiB
        Bytes of CSV parsed at once (pyarrow's ``ReadOptions.block_size``); with
        ``row_group_rows``, what bounds the memory of each file's task.
    scheduler : str, optional
        For ``dask.compute``; by default dask's own (threads, or the active distributed
        Client, whose workers must see the same files).

    Returns
    -------
    ConversionResult
        The schema, the outputs and their rows, which were written and which kept.

    Raises
    ------
    FileNotFoundError
        No such source, or no CSV file in it.
    ValueError
        Files whose columns differ; an unknown column in ``column_types``; a value that
        does not fit its column's type, or a line with too many or too few fields (the
        message names the file, the line, the column, the value and the fix).

    Examples
    --------
    >>> result = convert_csv("raw/events", "data/events")  # doctest: +SKIP
    >>> result.schema  # doctest: +SKIP
    id: int64
    price: double
    >>> convert_csv("raw/events", "data/events").kept == result.files  # doctest: +SKIP
    True
    """
    row_group_rows = _check_int(row_group_rows, "row_group_rows", 1)
    sample_rows = _check_int(sample_rows, "sample_rows", 1)
    block_bytes = _check_int(block_bytes, "block_bytes", 1024)
    if not (isinstance(delimiter, str) and len(delimiter) == 1 and delimiter not in '\r\n"'):
        raise ValueError(f"convert_csv: delimiter must be one character, got {delimiter!r}.")
    out = Path(out)
    plan = _plan(sources, out)
    files = [source for source, _ in plan]
    heads = [_read_header(source, delimiter) for source in files]
    names = _check_headers(plan, heads, delimiter)
    given = _parse_types(column_types, names)
    schema, sampled = _infer_schema(files, names, sample_rows, delimiter, given)
    settings = _Settings(schema, frozenset(given), sampled, row_group_rows, block_bytes, delimiter)
    remove_leftovers(dest for _, dest in plan)  # what a killed earlier run left
    done = dask.compute(
        *[
            dask.delayed(_convert_file, pure=False)(source, dest, has_rows, settings)
            for (source, dest), (_, has_rows) in zip(plan, heads, strict=True)
        ],
        scheduler=scheduler,
    )
    dests = tuple(dest for _, dest in plan)
    return ConversionResult(
        out=out,
        schema=schema,
        sources=tuple(files),
        files=dests,
        rows=tuple(rows for rows, _ in done),
        written=tuple(d for d, (_, new) in zip(dests, done, strict=True) if new),
        kept=tuple(d for d, (_, new) in zip(dests, done, strict=True) if not new),
    )
