"""A scoring job from start to end: the bundle (a path or an fsspec URL, its checksums checked
on load), the input, the chunk size the memory setting allows, the chunks scored in this
process or in worker processes, each written as it finishes, and the parts joined at the end.

Memory: the input is never read whole. Chunks in flight are at most workers + 1 (one being
read, one a worker), each of `chunk_rows` rows, sized so that their values, the parsing's
copies and the scoring's tensors stay within `memory_mb` (`bytes_per_row`), and onnxruntime
runs each in batches whose tensors stay within a worker's share (scorer.batch_items).
"""

from __future__ import annotations

import collections
import concurrent.futures as futures
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort
from tqdm.auto import tqdm

from batch_scoring.chunks import BadRow, Chunk, ScoreJobError
from batch_scoring.parts import Parts
from batch_scoring.scorer import ChunkScorer, ScoreOptions, resolve_score_type
from batch_scoring.sources import CSV_SUFFIXES, ImageFolderSource, Source, open_source
from bundle.image_decoding import ImagesUnavailable, image_spec
from bundle.manifest import MANIFEST_FILENAME, ModelManifest
from bundle.runtime import BundleError, OnnxBundle

MEGABYTE = 1 << 20
MAX_CHUNK_ROWS = 1_000_000  # beyond, a chunk is no cheaper a row and a rerun redoes more


@dataclass(frozen=True)
class JobSettings:
    bundle: str  # a folder, or an fsspec URL of one
    input: Path
    output: Path
    output_format: str
    options: ScoreOptions
    columns: Sequence[str] | None
    memory_mb: int
    workers: int
    strict: bool
    restart: bool
    progress: bool | None  # None: when stderr is a terminal


@dataclass(frozen=True)
class JobSummary:
    rows: int  # of the input, bad ones included
    written: int
    flagged: int
    bad_rows: int
    chunks: int
    resumed_chunks: int
    seconds: float
    score_type: str
    engine: str = "local"

    def as_dict(self) -> dict[str, Any]:
        rate = self.rows / self.seconds if self.seconds > 0 else None
        return {**self.__dict__, "rows_per_second": rate}


class StrictBadRow(ScoreJobError):
    pass


def bundle_files(manifest: ModelManifest) -> list[str]:
    """The files of a bundle that scoring reads, model.json first."""
    files = [MANIFEST_FILENAME, manifest.onnx.encoder.file, manifest.onnx.decoder.file]
    if manifest.reference is not None:
        files.append(manifest.reference.file)
    return files


@contextmanager
def local_bundle(location: str) -> Iterator[Path]:
    """The bundle's folder: itself, or a temporary copy of the files model.json names when
    `location` is an fsspec URL (s3://, gs://, hdfs://, file://, ...). The checksums are checked
    when it is loaded, wherever it came from."""
    if "://" not in location:
        yield Path(location)
        return
    import fsspec  # only for URLs

    try:
        filesystem, root = fsspec.core.url_to_fs(location)
        with tempfile.TemporaryDirectory(prefix="vae-score-bundle-") as folder:
            target = Path(folder)
            filesystem.get(f"{root.rstrip('/')}/model.json", str(target / "model.json"))
            for name in bundle_files(ModelManifest.read(target))[1:]:
                filesystem.get(f"{root.rstrip('/')}/{name}", str(target / name))
            yield target
    except (OSError, ValueError) as error:
        raise ScoreJobError(f"{location}: cannot fetch the bundle ({error})") from error


def load_bundle(folder: Path, threads: int | None = None) -> OnnxBundle:
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return OnnxBundle(folder, session_options=options)
    except BundleError as error:
        raise ScoreJobError(str(error)) from error


def bytes_per_row(feature_count: int, text_input: bool) -> int:
    """What a row in flight costs: its float32 values, their copy to a worker and its result
    columns; for text input, Arrow's copy of the fields as text and as float64."""
    values = 4 * feature_count
    text = 16 * feature_count if text_input else 0
    return 3 * values + text + 8 * feature_count + 64


def chunk_rows_for(settings: JobSettings, feature_count: int, reader_bytes: int) -> int:
    slots = settings.workers + 1
    text_input = settings.input.suffix.lower() in CSV_SUFFIXES
    # Half for the chunks and the reader, half for the scoring's tensors.
    budget = settings.memory_mb * MEGABYTE // 2 - reader_bytes
    if budget <= 0:
        raise ScoreJobError(
            f"{settings.input}: reading it holds {reader_bytes / MEGABYTE:,.0f} MB at once (its "
            f"largest row group); --memory-mb {settings.memory_mb} leaves no room for the rows: "
            f"give at least {4 * reader_bytes // MEGABYTE + 16}"
        )
    rows = budget // (slots * bytes_per_row(feature_count, text_input))
    return int(max(1, min(MAX_CHUNK_ROWS, rows)))


def job_record(settings: JobSettings, bundle: OnnxBundle, score_type: str) -> dict[str, Any]:
    """What makes two runs the same job, for resuming (chunk_rows is added by `run_job`)."""
    stat = settings.input.stat()
    manifest = bundle.manifest
    return {
        "bundle": {
            "name": manifest.name,
            "version": manifest.version,
            "encoder_sha256": manifest.onnx.encoder.sha256,
            "decoder_sha256": manifest.onnx.decoder.sha256,
        },
        "input": {
            "path": str(settings.input.resolve()),
            "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        },
        "score_type": score_type,
        "per_feature": settings.options.per_feature,
        "only_flagged": settings.options.only_flagged,
        "columns": list(settings.columns) if settings.columns else None,
        "format": settings.output_format,
    }


def run_job(settings: JobSettings) -> JobSummary:
    began = time.perf_counter()
    with local_bundle(settings.bundle) as folder:
        bundle = load_bundle(folder, threads=None if settings.workers == 1 else 1)
        score_type = resolve_score_type(bundle, settings.options.score_type)
        source = _source(settings, bundle)
        with_paths = isinstance(source, ImageFolderSource)
        job = job_record(settings, bundle, score_type)
        chunk_rows = chunk_rows_for(
            settings, bundle.manifest.input.feature_count, source.reader_bytes
        )
        parts = Parts(settings.output, settings.output_format, job, chunk_rows, settings.restart)
        chunk_rows = parts.chunk_rows  # a resumed job keeps the chunks it started with
        done = parts.done()
        share = settings.memory_mb * MEGABYTE // (2 * max(1, settings.workers))
        scorer = ChunkScorer(bundle, settings.options, share, with_paths)
        total = source.total_rows
        bar = tqdm(
            total=total,
            initial=min(total or 0, len(done) * chunk_rows),
            unit=" rows",
            unit_scale=True,
            disable=None if settings.progress is None else not settings.progress,
            file=sys.stderr,
            smoothing=0.05,
        )
        counts = collections.Counter[str]()
        chunks = source.chunks(chunk_rows, done)
        with bar:
            if settings.workers == 1:
                for chunk in chunks:
                    _tally(counts, bar, _score_and_write(scorer, parts, chunk, settings.strict))
            else:
                _run_in_processes(settings, folder, parts, (share, with_paths), chunks, counts, bar)
        written, flagged, bad_rows = parts.finish(scorer.schema)
    return JobSummary(
        rows=total if total is not None else counts["rows"] + len(done) * chunk_rows,
        written=written,
        flagged=flagged,
        bad_rows=bad_rows,
        chunks=counts["chunks"] + len(done),
        resumed_chunks=len(done),
        seconds=time.perf_counter() - began,
        score_type=score_type,
    )


def _source(settings: JobSettings, bundle: OnnxBundle) -> Source:
    if settings.input.is_dir():
        if settings.columns:
            raise ScoreJobError("--columns picks table columns; a folder holds images")
        try:
            spec = image_spec(bundle.manifest, bundle.preprocessing)
        except ImagesUnavailable as why:
            raise ScoreJobError(f"{settings.input}: a folder of images, but {why}") from None
        # A file decodes while the chunks' half of the memory is in use: the other half.
        return ImageFolderSource(settings.input, spec, settings.memory_mb * MEGABYTE // 2)
    return open_source(settings.input, bundle.manifest.input, settings.columns)


@dataclass(frozen=True)
class ChunkOutcome:
    index: int
    rows: int
    written: int
    flagged: int
    bad: int
    first_bad: BadRow | None


def _score_and_write(scorer: ChunkScorer, parts: Parts, chunk: Chunk, strict: bool) -> ChunkOutcome:
    table, bad = scorer.score(chunk)
    if strict and bad:
        return ChunkOutcome(chunk.index, chunk.rows_spanned, 0, 0, len(bad), bad[0])
    parts.write(chunk.index, table, bad)
    flagged = int(table.column("is_anomaly").to_numpy().sum()) if table.num_rows else 0
    return ChunkOutcome(chunk.index, chunk.rows_spanned, table.num_rows, flagged, len(bad), None)


def _tally(counts: collections.Counter[str], bar: tqdm, outcome: ChunkOutcome) -> None:
    if outcome.first_bad is not None:
        row = outcome.first_bad
        raise StrictBadRow(f"row {row.row}: {row.reason} (--strict stops at the first bad row)")
    counts["rows"] += outcome.rows
    counts["chunks"] += 1
    bar.update(outcome.rows)


# --- worker processes ----------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _start_worker(
    folder: str, options: ScoreOptions, scoring: tuple[int, bool], parts: Parts
) -> None:
    bundle = load_bundle(Path(folder), threads=1)
    _WORKER["scorer"] = ChunkScorer(bundle, options, *scoring)
    _WORKER["parts"] = parts


def _work(chunk: Chunk, strict: bool) -> ChunkOutcome:
    return _score_and_write(_WORKER["scorer"], _WORKER["parts"], chunk, strict)


def _run_in_processes(
    settings: JobSettings,
    folder: Path,
    parts: Parts,
    scoring: tuple[int, bool],  # the memory share of a worker's batches, and paths or not
    chunks: Iterator[Chunk],
    counts: collections.Counter[str],
    bar: tqdm,
) -> None:
    """Chunks read here, scored and written by `workers` processes (one onnxruntime thread
    each), at most workers + 1 in flight."""
    context = multiprocessing.get_context("spawn")  # this process has onnxruntime's threads
    with futures.ProcessPoolExecutor(
        settings.workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(str(folder), settings.options, scoring, parts),
    ) as pool:
        pending: collections.deque[futures.Future[ChunkOutcome]] = collections.deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(_work, chunk, settings.strict))
                while len(pending) > settings.workers:
                    _tally(counts, bar, pending.popleft().result())
            while pending:
                _tally(counts, bar, pending.popleft().result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))
