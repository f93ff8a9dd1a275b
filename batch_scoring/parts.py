"""Each finished chunk a file, so an interrupted job goes on where it stopped.

Beside OUTPUT, a folder OUTPUT.parts holds `job.json` (what the job is: the bundle's graphs,
the input's size and time, the chunk size and the options) and, per finished chunk, its bad
rows and its results, each written to a temporary name and renamed into place: a results file
exists only whole, and only after its bad rows. A rerun of the same job skips every chunk whose
results file exists; a different job refuses to touch the folder. At the end the parts are
joined into OUTPUT (and OUTPUT.bad-rows.csv when any row was bad) and the folder removed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batch_scoring.chunks import BadRow, ScoreJobError

JOB_FILE = "job.json"
FORMATS = ("parquet", "csv")


def parts_folder(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def bad_rows_path(output: Path) -> Path:
    return output.with_name(output.name + ".bad-rows.csv")


def _results(folder: Path, index: int, output_format: str) -> Path:
    return folder / f"part-{index:07d}.{output_format}"


def _bad(folder: Path, index: int) -> Path:
    return folder / f"bad-{index:07d}.csv"


def _flagged(table: pa.Table) -> int:
    return int(pc.sum(table.column("is_anomaly")).as_py() or 0)


def _replace_atomically(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(temporary)
    os.replace(temporary, path)


class Parts:
    """The parts folder of one job."""

    def __init__(
        self,
        output: Path,
        output_format: str,
        job: dict[str, Any],
        chunk_rows: int,
        restart: bool,
    ):
        """Start a job's folder, or take up the one an interrupted run of the same job left
        (then with the chunk size it started with, whatever this run's memory would give)."""
        self.output, self.output_format = output, output_format
        self.folder = parts_folder(output)
        record = self.folder / JOB_FILE
        if self.folder.exists() and restart:
            shutil.rmtree(self.folder)
        if self.folder.exists():
            try:
                earlier = json.loads(record.read_text())
                chunk_rows = int(earlier.pop("chunk_rows"))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                earlier = None
            if earlier != job:
                raise ScoreJobError(
                    f"{self.folder}: holds the parts of another job (other input, bundle or "
                    "options); rerun with --restart to discard them"
                )
        else:
            if output.exists():
                raise ScoreJobError(f"{output}: exists; remove it or choose another OUTPUT")
            self.folder.mkdir(parents=True)
            text = json.dumps({**job, "chunk_rows": chunk_rows}, indent=2)
            _replace_atomically(record, lambda path: path.write_text(text))
        self.chunk_rows = chunk_rows

    def done(self) -> set[int]:
        """The chunks whose results are written."""
        prefix, suffix = "part-", f".{self.output_format}"
        return {
            int(entry.name[len(prefix) : -len(suffix)])
            for entry in os.scandir(self.folder)
            if entry.name.startswith(prefix) and entry.name.endswith(suffix)
        }

    def write(self, index: int, table: pa.Table, bad: list[BadRow]) -> None:
        if bad:

            def write_bad(path: Path) -> None:
                with path.open("w", newline="") as handle:
                    writer = csv.writer(handle, lineterminator="\n")
                    writer.writerows((row.row, row.reason) for row in bad)

            _replace_atomically(_bad(self.folder, index), write_bad)
        results = _results(self.folder, index, self.output_format)
        if self.output_format == "parquet":
            _replace_atomically(results, lambda path: pq.write_table(table, path))
        else:
            _replace_atomically(results, lambda path: pacsv.write_csv(table, path))

    def _indexes(self) -> Iterator[int]:
        yield from sorted(self.done())

    def finish(self, schema: pa.Schema) -> tuple[int, int, int]:
        """Join the parts into OUTPUT (and the bad rows), remove the folder; (rows written,
        of them flagged, bad rows)."""
        written = flagged = 0
        temporary = self.output.with_name(f".{self.output.name}.tmp-{os.getpid()}")
        if self.output_format == "parquet":
            with pq.ParquetWriter(temporary, schema) as writer:
                for index in self._indexes():
                    table = pq.read_table(_results(self.folder, index, "parquet"))
                    writer.write_table(table.cast(schema))
                    written += table.num_rows
                    flagged += _flagged(table)
        else:
            with pacsv.CSVWriter(temporary, schema) as writer:
                for index in self._indexes():
                    table = pacsv.read_csv(
                        _results(self.folder, index, "csv"),
                        convert_options=pacsv.ConvertOptions(column_types=schema),
                    )
                    writer.write_table(table.select(schema.names).cast(schema))
                    written += table.num_rows
                    flagged += _flagged(table)
        bad_count = self._join_bad_rows()
        os.replace(temporary, self.output)
        shutil.rmtree(self.folder)
        return written, flagged, bad_count

    def _join_bad_rows(self) -> int:
        files = sorted(self.folder.glob("bad-*.csv"))
        target = bad_rows_path(self.output)
        if not files:
            target.unlink(missing_ok=True)
            return 0
        count = 0
        with target.open("w", newline="") as out:
            out.write("row,reason\n")
            for file in files:
                text = file.read_text()
                count += text.count("\n")
                out.write(text)
        return count
