"""Inputs read in chunks of rows: a `.npy`, a CSV file, a Parquet file and a folder of images.

Every source yields `Chunk`s covering fixed spans of input rows (chunk i: rows i*n .. i*n+n-1,
bad rows included), so a rerun finds the same chunks and skips those already done; what a
source holds at once is one chunk and the block its reader is on. A row whose values cannot be
scored (a field that is no number, empty, not finite, beyond float32; a CSV line with the wrong
number of fields) is a `BadRow` with its row number and why, never the job's failure.

Tables pick the model's columns by name when the file has a header and the bundle names its
features (`input.feature_names`), so extra columns (ids, labels) and another order are fine;
otherwise the file must have exactly the model's columns, or `--columns` names them.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import re
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from batch_scoring.chunks import BadRow, Chunk, RowIds, ScoreJobError, chunk_span
from bundle.image_decoding import ImageSpec, image_item
from bundle.manifest import InputSpec

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
# A number as CSV writes one (what Arrow's float parser takes, minus the words nan and inf,
# which are reported as not finite instead).
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_CSV_BLOCK_BYTES = 1 << 22  # what Arrow parses at a time: 4 MiB of text
_REASON_VALUE_CHARS = 40


class Source(Protocol):
    path: Path

    @property
    def total_rows(self) -> int | None:
        """Data rows, when known before reading (npy, Parquet; a CSV's lines)."""

    @property
    def reader_bytes(self) -> int:
        """What the reader itself holds at once, beyond the chunk it fills (a Parquet file's
        largest row group, read whole)."""

    def chunks(self, chunk_rows: int, done: Container[int]) -> Iterator[Chunk]: ...


def open_source(path: Path, spec: InputSpec, columns: Sequence[str] | None) -> Source:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ScoreJobError(f"{path}: no such file")
    if suffix == ".npy":
        if columns:
            raise ScoreJobError("--columns picks table columns; a .npy holds the items as they are")
        return NpySource(path, spec)
    if suffix in CSV_SUFFIXES:
        return CsvSource(path, spec, columns)
    if suffix in PARQUET_SUFFIXES:
        return ParquetSource(path, spec, columns)
    raise ScoreJobError(
        f"{path}: unknown input type {suffix or '(no suffix)'}; vae-score reads .npy, "
        f"{', '.join(CSV_SUFFIXES)} and {', '.join(PARQUET_SUFFIXES)}"
    )


def _excerpt(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= _REASON_VALUE_CHARS else text[:_REASON_VALUE_CHARS] + "...")


# --- values to float32, row by row ---------------------------------------------------------


def checked_rows(
    values: npt.NDArray[np.floating], ids: RowIds, names: Sequence[str]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], list[BadRow]]:
    """`values` (rows x features, any float) in float32, which rows are finite there, and a
    BadRow for each that is not, naming its first bad column."""
    with np.errstate(over="ignore"):  # beyond float32 becomes inf: reported, below
        as32 = values.astype(np.float32, copy=False)
    finite = np.isfinite(as32)
    good: npt.NDArray[np.bool_] = np.asarray(finite.all(axis=1), dtype=np.bool_)
    bad = []
    for at in np.flatnonzero(~good):
        column = int(np.argmin(finite[at]))
        original = values[at, column]
        why = "beyond float32" if np.isfinite(original) else f"not finite ({original})"
        bad.append(BadRow(int(ids[at]), f"{names[column]}: {why}"))
    return as32, good, bad


# --- .npy ----------------------------------------------------------------------------------


class NpySource:
    """Items of a .npy, read a chunk at a time with plain reads (a memory map would count every
    page it touched in the process's resident memory until the end)."""

    def __init__(self, path: Path, spec: InputSpec) -> None:
        self.path = path
        try:
            with path.open("rb") as handle:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
                else:
                    raise ValueError(f"format version {version[0]}.{version[1]}")
                self.offset = handle.tell()
        except (ValueError, OSError) as error:
            raise ScoreJobError(f"{path}: not a readable .npy ({error})") from error
        if dtype.kind not in "fiu" or len(shape) < 2 or dtype.hasobject:
            raise ScoreJobError(
                f"{path}: holds {dtype} of shape {shape}; expected numbers, one item a row, in "
                f"a layout of {_layouts(spec)}"
            )
        if fortran:
            raise ScoreJobError(
                f"{path}: is stored column-major (Fortran order); save it C-ordered"
            )
        if tuple(shape[1:]) not in spec.item_layouts():
            raise ScoreJobError(
                f"{path}: items of shape {tuple(shape[1:])}; the model takes {_layouts(spec)}"
            )
        self.dtype = dtype
        self.item_shape = tuple(shape[1:])
        self.item_bytes = dtype.itemsize * int(np.prod(self.item_shape))
        self.total_rows = int(shape[0])
        if path.stat().st_size < self.offset + self.total_rows * self.item_bytes:
            raise ScoreJobError(f"{path}: shorter than its header says (truncated?)")
        self.names = [f"feature {j}" for j in range(spec.feature_count)]
        self.reader_bytes = 0

    def chunks(self, chunk_rows: int, done: Container[int]) -> Iterator[Chunk]:
        count = -(-self.total_rows // chunk_rows)
        with self.path.open("rb") as handle:
            for index in range(count):
                if index in done:
                    continue
                start, stop = chunk_span(index, chunk_rows)
                stop = min(stop, self.total_rows)
                handle.seek(self.offset + start * self.item_bytes)
                block = np.fromfile(
                    handle,
                    dtype=self.dtype,
                    count=(stop - start) * self.item_bytes // self.dtype.itemsize,
                )
                values = block.reshape(stop - start, -1)
                ids = np.arange(start, stop, dtype=np.int64)
                as32, good, bad = checked_rows(values, ids, self.names)
                items = as32[good]
                yield Chunk(
                    index, start, stop - start, ids[good], items.reshape(-1, *self.item_shape), bad
                )


def _layouts(spec: InputSpec) -> str:
    return " or ".join(str(layout) for layout in spec.item_layouts())


# --- tables: CSV and Parquet ---------------------------------------------------------------


def select_columns(
    where: Path,
    available: Sequence[str] | None,
    width: int,
    spec: InputSpec,
    requested: Sequence[str] | None,
) -> list[int]:
    """The file's columns that hold the model's features, in the model's order."""
    wanted = spec.feature_count
    if requested:
        picked = []
        for entry in requested:
            if available is not None and entry in available:
                picked.append(list(available).index(entry))
            elif entry.isdigit() and int(entry) < width:
                picked.append(int(entry))
            else:
                names = ", ".join(available) if available is not None else "none (no header)"
                raise ScoreJobError(f"{where}: --columns: no column {entry!r}; columns: {names}")
        if len(picked) != wanted:
            raise ScoreJobError(
                f"{where}: --columns names {len(picked)} columns; the model takes {wanted}"
            )
        return picked
    features = spec.feature_names
    if available is not None and features is not None and set(features) <= set(available):
        return [list(available).index(name) for name in features]
    if width == wanted:
        return list(range(width))
    hint = f" ({', '.join(features)})" if features else ""
    raise ScoreJobError(
        f"{where}: {width} columns; the model takes {wanted}{hint}: name the feature columns "
        "in a header, or pick them with --columns"
    )


def _column_values(column: pa.Array, name: str, ids: RowIds) -> tuple[np.ndarray, list[BadRow]]:
    """A column of text or numbers as float64, and a BadRow for each value that is none."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            if column.null_count == 0:
                return column.cast(pa.float64()).to_numpy(zero_copy_only=False), []
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # some value is no number: find which, below
        number = pc.fill_null(pc.match_substring_regex(column, _NUMBER), False)
        kept = pc.if_else(number, column, pa.scalar("nan"))
        values = kept.cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad = []
        for at in np.flatnonzero(~number.to_numpy(zero_copy_only=False)):
            value = column[int(at)].as_py()
            what = (
                "empty" if value is None or not value.strip() else f"not a number {_excerpt(value)}"
            )
            bad.append(BadRow(int(ids[at]), f"{name}: {what}"))
        return values, bad
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        return values, [BadRow(int(ids[at]), f"{name}: empty") for at in np.flatnonzero(nulls)]
    raise ScoreJobError(f"column {name}: holds {column.type}, not numbers")


def table_rows(
    batch: pa.RecordBatch, ids: RowIds, names: Sequence[str]
) -> tuple[RowIds, npt.NDArray[np.float32], list[BadRow]]:
    """A batch of the selected columns -> the good rows' ids and float32 values, the bad rows."""
    values = np.empty((batch.num_rows, batch.num_columns), dtype=np.float64)
    bad: dict[int, BadRow] = {}
    for j in range(batch.num_columns):
        values[:, j], column_bad = _column_values(batch.column(j), names[j], ids)
        for row in column_bad:
            bad.setdefault(row.row, row)  # the first bad column of a row says why
    unreadable = np.isin(ids, np.fromiter(bad, dtype=np.int64, count=len(bad)))
    readable = ids[~unreadable]
    as32, good, not_finite = checked_rows(values[~unreadable], readable, names)
    for row in not_finite:
        bad.setdefault(row.row, row)
    return readable[good], as32[good], sorted(bad.values(), key=lambda r: r.row)


class Rechunker:
    """Pieces of rows in input order (good ids and values, bad rows) -> Chunks of fixed spans.
    A chunk is complete once a row beyond its span has been seen, or at the end."""

    def __init__(self, chunk_rows: int, width: int, done: Container[int]) -> None:
        self.chunk_rows, self.width, self.done = chunk_rows, width, done
        self.index = 0
        self.ids: list[RowIds] = []
        self.values: list[npt.NDArray[np.float32]] = []
        self.bad: list[BadRow] = []

    def add(
        self, ids: RowIds, values: npt.NDArray[np.float32], bad: list[BadRow], seen_to: int
    ) -> Iterator[Chunk]:
        """Take a piece; `seen_to`: every row below it has now been read (good or bad)."""
        self.ids.append(ids)
        self.values.append(values)
        self.bad.extend(bad)
        while chunk_span(self.index, self.chunk_rows)[1] <= seen_to:
            yield from self._emit()

    def finish(self, total_rows: int) -> Iterator[Chunk]:
        while chunk_span(self.index, self.chunk_rows)[0] < total_rows:
            yield from self._emit(total_rows)

    def _emit(self, total_rows: int | None = None) -> Iterator[Chunk]:
        start, stop = chunk_span(self.index, self.chunk_rows)
        if total_rows is not None:
            stop = min(stop, total_rows)
        ids = np.concatenate(self.ids) if self.ids else np.empty(0, np.int64)
        values = (
            np.concatenate(self.values) if self.values else np.empty((0, self.width), np.float32)
        )
        inside = ids < stop
        chunk = Chunk(
            self.index,
            start,
            stop - start,
            ids[inside],
            values[inside],
            [row for row in self.bad if row.row < stop],
        )
        self.ids, self.values = [ids[~inside]], [values[~inside]]
        self.bad = [row for row in self.bad if row.row >= stop]
        self.index += 1
        if chunk.index not in self.done:
            yield chunk


def _is_number(text: str) -> bool:
    return re.match(_NUMBER, text) is not None


class CsvSource:
    """A CSV read a block at a time by Arrow's parser (all fields as text, then numbers, so
    that one bad field costs its row only). A first line with a field that is no number is the
    header, as vae-train reads CSVs."""

    def __init__(self, path: Path, spec: InputSpec, columns: Sequence[str] | None) -> None:
        self.path = path
        self.delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            first = next(csv.reader(handle, delimiter=self.delimiter), None)
        if first is None:
            raise ScoreJobError(f"{path}: is empty")
        self.header = any(cell.strip() and not _is_number(cell) for cell in first)
        width = len(first)
        available = [cell.strip() for cell in first] if self.header else None
        self.columns = select_columns(path, available, width, spec, columns)
        self.width = width
        self.names = [
            f"column {available[c]!r}" if available else f"column {c}" for c in self.columns
        ]
        self.total_rows = _count_lines(path) - int(self.header)
        self.reader_bytes = 0  # a block of text, counted in the chunk's bytes a row

    def chunks(self, chunk_rows: int, done: Container[int]) -> Iterator[Chunk]:
        reported: list[BadRow] = []  # lines with the wrong number of fields, as Arrow finds them
        first_line = 2 if self.header else 1  # Arrow numbers lines from 1

        def wrong_width(row: pacsv.InvalidRow) -> str:
            # Arrow knows the line's number when it parses on one thread (below).
            number = row.number if row.number is not None else first_line
            reported.append(
                BadRow(
                    number - first_line,
                    f"{row.actual_columns} fields where the file has {row.expected_columns}",
                )
            )
            return "skip"

        names = [f"f{c}" for c in range(self.width)]

        def reader() -> pacsv.CSVStreamingReader:  # opened inside _read, which words errors
            return pacsv.open_csv(
                self.path,
                read_options=pacsv.ReadOptions(
                    column_names=names,
                    skip_rows=int(self.header),
                    block_size=_CSV_BLOCK_BYTES,
                    # One thread: a skipped line's number is known only then. Parsing is not the
                    # job's bottleneck (the processes scoring the chunks are).
                    use_threads=False,
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=self.delimiter, invalid_row_handler=wrong_width
                ),
                convert_options=pacsv.ConvertOptions(
                    include_columns=[names[c] for c in self.columns],
                    column_types={names[c]: pa.string() for c in self.columns},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )

        rechunk = Rechunker(chunk_rows, len(self.columns), done)
        skipped = _SkippedLines(reported)
        next_row = 0
        for batch in _read(reader, self.path):
            ids, next_row = skipped.number(batch.num_rows, next_row)
            good_ids, values, bad = table_rows(batch, ids, self.names)
            passed = skipped.before(next_row)
            yield from rechunk.add(good_ids, values, sorted(bad + passed, key=_row), next_row)
        rest = skipped.before(None)
        total = max([next_row, *(row.row + 1 for row in rest)])
        nothing = np.empty((0, len(self.columns)), np.float32)
        yield from rechunk.add(np.empty(0, np.int64), nothing, rest, total)
        yield from rechunk.finish(total)


def _read(
    open_batches: Callable[[], Iterable[pa.RecordBatch]], where: Path
) -> Iterator[pa.RecordBatch]:
    """Arrow's batches, a read that fails on the way (a line longer than a block, a damaged
    page, a file cut short) worded as the job's error rather than raised as Arrow's."""
    try:
        batches = iter(open_batches())
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            yield batch
    except (pa.ArrowException, OSError) as error:
        raise ScoreJobError(f"{where}: cannot be read on ({error})") from error


def _row(row: BadRow) -> int:
    return row.row


class _SkippedLines:
    """The lines Arrow's parser skipped, in row order, for numbering the rows it kept. Arrow
    reports a block's invalid lines while it parses the block, before handing out its rows
    (perhaps from its reading threads, perhaps ahead of the rows numbered now)."""

    def __init__(self, reported: list[BadRow]) -> None:
        self.reported = reported
        self.seen = 0
        self.pending: list[tuple[int, BadRow]] = []  # a heap by row

    def _collect(self) -> None:
        count = len(self.reported)  # entries appended meanwhile are read next time
        for row in self.reported[self.seen : count]:
            heapq.heappush(self.pending, (row.row, row))
        self.seen = count

    def number(self, count: int, next_row: int) -> tuple[RowIds, int]:
        """The row numbers of the next `count` kept rows, from `next_row` on."""
        self._collect()
        skipped = sorted(row for row, _ in self.pending)
        ids = np.empty(count, dtype=np.int64)
        row, at, filled = next_row, bisect.bisect_left(skipped, next_row), 0
        while filled < count:
            if at < len(skipped) and skipped[at] == row:
                at += 1
            else:
                ids[filled] = row
                filled += 1
            row += 1
        return ids, row

    def before(self, stop: int | None) -> list[BadRow]:
        """The skipped lines below `stop` (None: all), taken out."""
        self._collect()
        taken = []
        while self.pending and (stop is None or self.pending[0][0] < stop):
            taken.append(heapq.heappop(self.pending)[1])
        return taken


def _count_lines(path: Path) -> int:
    """Lines of a text file, the last one counted unterminated too (a fast pass in C)."""
    lines, last = 0, b"\n"
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


class ParquetSource:
    """A Parquet file's numeric columns, a record batch at a time."""

    def __init__(self, path: Path, spec: InputSpec, columns: Sequence[str] | None) -> None:
        self.path = path
        try:
            # No pre-buffering: with it, Arrow kept every column chunk it had read until the end
            # (a 1.4 GB file of 10 row groups: 1,556 MB peak RSS for reading it; without, 383).
            self.file = pq.ParquetFile(path, pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as error:
            raise ScoreJobError(f"{path}: not a readable Parquet file ({error})") from error
        available = list(self.file.schema_arrow.names)
        self.columns = select_columns(path, available, len(available), spec, columns)
        self.column_names = [available[c] for c in self.columns]
        for name in self.column_names:
            kind = self.file.schema_arrow.field(name).type
            if not (
                pa.types.is_integer(kind)
                or pa.types.is_floating(kind)
                or pa.types.is_decimal(kind)
                or pa.types.is_string(kind)
            ):
                raise ScoreJobError(f"{path}: column {name!r} holds {kind}, not numbers")
        self.names = [f"column {name!r}" for name in self.column_names]
        self.total_rows = int(self.file.metadata.num_rows)
        # Arrow reads a row group's column chunks whole, compressed and decoded.
        metadata, wanted = self.file.metadata, set(self.column_names)
        self.reader_bytes = max(
            (
                sum(
                    column.total_compressed_size + column.total_uncompressed_size
                    for column in map(metadata.row_group(group).column, range(metadata.num_columns))
                    if column.path_in_schema in wanted
                )
                for group in range(metadata.num_row_groups)
            ),
            default=0,
        )

    def chunks(self, chunk_rows: int, done: Container[int]) -> Iterator[Chunk]:
        rechunk = Rechunker(chunk_rows, len(self.columns), done)
        next_row = 0

        def batches() -> Iterator[pa.RecordBatch]:  # opened inside _read, which words errors
            return self.file.iter_batches(  # type: ignore[no-any-return]
                batch_size=min(chunk_rows, 65_536), columns=self.column_names
            )

        for batch in _read(batches, self.path):
            ids = np.arange(next_row, next_row + batch.num_rows, dtype=np.int64)
            next_row += batch.num_rows
            good_ids, values, bad = table_rows(batch, ids, self.names)
            yield from rechunk.add(good_ids, values, bad, next_row)
        yield from rechunk.finish(next_row)


# --- a folder of images ---------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Pixels a file may decode to (its header is read first): a larger one is a bad row, not a
# job that runs out of memory. At most 64 Mpx, and no more than the memory setting allows: a
# decoded picture is its 8-bit pixels plus three float32 planes while it is mapped and resized,
# about 16 bytes a pixel.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
BYTES_PER_DECODED_PIXEL = 16
# What a file that does not decode raises: it is a bad row.
IMAGE_ERRORS = (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


class ImageFolderSource:
    """PNG and JPEG files under a folder (sorted by relative path: rows are numbered in that
    order), each decoded as the service decodes an image body (bundle.image_decoding)."""

    def __init__(self, path: Path, spec: ImageSpec, memory_bytes: int) -> None:
        self.path, self.spec = path, spec
        self.max_pixels = min(MAX_IMAGE_PIXELS, memory_bytes // BYTES_PER_DECODED_PIXEL)
        self.files = sorted(
            (p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not self.files:
            raise ScoreJobError(f"{path}: holds no {', '.join(IMAGE_SUFFIXES)} files")
        self.total_rows = len(self.files)
        self.reader_bytes = 0  # a file decodes within the other half of the memory setting

    def chunks(self, chunk_rows: int, done: Container[int]) -> Iterator[Chunk]:
        count = -(-self.total_rows // chunk_rows)
        shape = (self.spec.channels, self.spec.height, self.spec.width)
        for index in range(count):
            if index in done:
                continue
            start, stop = chunk_span(index, chunk_rows)
            stop = min(stop, self.total_rows)
            items, ids, paths, bad = [], [], [], []
            for row in range(start, stop):
                name = self.files[row].relative_to(self.path).as_posix()
                try:
                    items.append(self._read(self.files[row]))
                except IMAGE_ERRORS as error:
                    bad.append(BadRow(row, f"{name}: {error}"))
                    continue
                ids.append(row)
                paths.append(name)
            x = np.stack(items) if items else np.empty((0, *shape), np.float32)
            yield Chunk(index, start, stop - start, np.array(ids, np.int64), x, bad, paths)

    def _read(self, file: Path) -> np.ndarray:
        return read_image(file, self.spec, self.max_pixels)


def read_image(file: Path | BinaryIO, spec: ImageSpec, max_pixels: int) -> np.ndarray:
    """A PNG or JPEG file (a path, or its bytes as a file) -> the model's item, as the service
    decodes an image body; ValueError (and PIL's errors) for one that is too large or does not
    decode."""
    with Image.open(file, formats=["PNG", "JPEG"]) as image:  # the header only, so far
        if image.width * image.height > max_pixels:
            raise ValueError(
                f"{image.width}x{image.height} pixels, above the {max_pixels} a file may "
                "decode to (at most 64 Mpx, and --memory-mb / 16 bytes)"
            )
        image.load()
        item = image_item(image, spec)
    values = item.reshape(-1)
    if not np.isfinite(values).all():
        raise ValueError("values not finite once decoded")
    return item
