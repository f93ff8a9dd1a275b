"""vae-score on Apache Spark: the same scores, where a data team's tables already are.

Two ways in:

- `score_dataframe(frame, bundle)` for a Spark job of the team's own: a DataFrame of a table's
  feature columns (or of image files, as Spark's `binaryFile` source reads them) -> the same
  rows with `score`, `is_anomaly`, `tail_probability` (and each feature's error) and
  `bad_reason`, like a Spark ML transformer. Rows stay where they are; nothing is collected.
- `vae-score --engine spark BUNDLE INPUT OUTPUT` (`run_spark_job`): reads Parquet, CSV or a
  folder of images with Spark, writes OUTPUT as Spark writes (a folder of part files) and the
  bad rows beside it, and prints the same summary as the local path.

How the work is spread: the driver reads the bundle once (a path or any fsspec URL; its
checksums checked on loading) and broadcasts its files; each executor's Python worker loads
them once (kept for its later tasks: Spark reuses Python workers) and scores the record
batches that `mapInArrow` hands it with `record_batches.RecordBatchScorer`, one onnxruntime
thread a task (Spark runs a task a core). Executors need this package (the `score` extra)
installed, as they need any Python library a job uses.

An interrupted Spark job is the engine's to recover: a failed task is run again (on a cluster
by default; `local[N,F]` allows retries locally); a rerun of the command rewrites OUTPUT.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batch_scoring.chunks import ScoreJobError
from batch_scoring.job import JobSummary, StrictBadRow, bundle_files, load_bundle, local_bundle
from batch_scoring.record_batches import (
    BAD_REASON,
    CONTENT_COLUMN,
    LENGTH_COLUMN,
    PATH_COLUMN,
    ImageLimits,
    RecordBatchScorer,
)
from batch_scoring.scorer import ScoreOptions, resolve_score_type
from batch_scoring.sources import (
    BYTES_PER_DECODED_PIXEL,
    CSV_SUFFIXES,
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    PARQUET_SUFFIXES,
    select_columns,
)
from bundle.image_decoding import ImagesUnavailable, image_spec
from bundle.runtime import OnnxBundle

if TYPE_CHECKING:  # pyspark is the `spark` extra's; this module imports it when it runs
    from pyspark.sql import DataFrame, SparkSession

MEGABYTE = 1 << 20
INPUT_FORMATS = ("parquet", "csv", "images")
# Rows Spark hands a Python worker at once for a table (Spark's own default), and for image
# files, whose bytes ride in the batch: at most this many files of at most `max_file_bytes`.
TABLE_BATCH_ROWS = 10_000
IMAGE_BATCH_FILES = 32
ROW_INDEX_COLUMN = "row"  # a Parquet file's row index, as the local path numbers rows
MAX_IMAGE_BYTES = 256 * MEGABYTE  # above, an image file is a bad row whatever the memory


@dataclass(frozen=True)
class ShippedBundle:
    """A bundle's files as bytes, for a broadcast: executors need no access to where it was."""

    files: dict[str, bytes]
    key: str  # its graphs' checksums: a worker loads each bundle once


@dataclass(frozen=True)
class ScoringPlan:
    options: ScoreOptions
    memory_bytes: int  # what one task's scoring tensors may hold
    keep: tuple[str, ...]
    features: tuple[str, ...] | None  # a table's feature columns; None: image files
    max_pixels: int  # images: most pixels a file may decode to
    max_file_bytes: int | None  # images: the bytes a file may have, where the reader skipped more


def ship_bundle(location: str) -> tuple[ShippedBundle, OnnxBundle]:
    """Read the bundle here (a path or an fsspec URL), load it once (its checksums checked; the
    driver needs its score types and result columns) and pack its files for the executors."""
    with local_bundle(location) as folder:
        bundle = load_bundle(folder, threads=1)
        files = {name: (folder / name).read_bytes() for name in bundle_files(bundle.manifest)}
    graphs = bundle.manifest.onnx
    return ShippedBundle(files, f"{graphs.encoder.sha256}-{graphs.decoder.sha256}"), bundle


# --- on the executors -------------------------------------------------------------------------

_WORKER_SCORERS: dict[tuple[str, ScoringPlan], RecordBatchScorer] = {}


def worker_scorer(shipped: ShippedBundle, plan: ScoringPlan) -> RecordBatchScorer:
    """This Python worker's scorer for the bundle and plan, made at its first task."""
    key = (shipped.key, plan)
    if key not in _WORKER_SCORERS:
        folder = Path(tempfile.mkdtemp(prefix="vae-score-bundle-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        for name, data in shipped.files.items():
            (folder / name).write_bytes(data)
        _WORKER_SCORERS[key] = plan_scorer(load_bundle(folder, threads=1), plan)
    return _WORKER_SCORERS[key]


def plan_scorer(bundle: OnnxBundle, plan: ScoringPlan) -> RecordBatchScorer:
    images = None
    if plan.features is None:
        spec = image_spec(bundle.manifest, bundle.preprocessing)
        images = ImageLimits(spec, plan.max_pixels, plan.max_file_bytes)
    return RecordBatchScorer(
        bundle, plan.options, plan.memory_bytes, plan.keep, plan.features, images
    )


# --- on the driver ------------------------------------------------------------------------------


def score_dataframe(
    frame: DataFrame,
    bundle: str | Path,
    *,
    score_type: str | None = None,
    per_feature: bool = False,
    columns: Sequence[str] | None = None,
    keep: Sequence[str] | None = None,
    memory_mb: int = 256,
) -> DataFrame:
    """`frame`'s rows scored by the bundle, lazily (a DataFrame: write it, join it, filter it).

    A table's feature columns are the bundle's feature names (or `columns`, names in the
    model's order); their values numbers or text. A frame with `path` and binary `content`
    columns (`spark.read.format("binaryFile")`) holds image files. `keep`: the columns carried
    into the result (default: every column that is not a feature or a file's content).
    `memory_mb`: what one task's scoring tensors may hold."""
    shipped, loaded = ship_bundle(str(bundle))
    plan = scoring_plan(frame, loaded, score_type, per_feature, columns, keep, memory_mb * MEGABYTE)
    return scored_frame(frame, shipped, loaded, plan)


def scoring_plan(
    frame: DataFrame,
    loaded: OnnxBundle,
    score_type: str | None,
    per_feature: bool,
    columns: Sequence[str] | None,
    keep: Sequence[str] | None,
    memory_bytes: int,
    max_file_bytes: int | None = None,
    added: Sequence[str] = (),
) -> ScoringPlan:
    """What the executors do with `frame`, checked here: which score, which columns. `added`:
    columns the reader added (a file's path, row index), never features."""
    chosen = resolve_score_type(loaded, score_type)
    features: tuple[str, ...] | None = None
    if CONTENT_COLUMN in frame.columns:
        try:
            image_spec(loaded.manifest, loaded.preprocessing)
        except ImagesUnavailable as why:
            raise ScoreJobError(f"the frame holds image files, but {why}") from None
        if PATH_COLUMN not in frame.columns:
            raise ScoreJobError(f"an image frame needs a {PATH_COLUMN!r} column to name its files")
    else:
        own = [name for name in frame.columns if name not in added]
        picked = select_columns(Path("the input"), own, len(own), loaded.manifest.input, columns)
        features = tuple(own[at] for at in picked)
        _check_numeric(frame, features)
    excluded = {*(features or ()), CONTENT_COLUMN, LENGTH_COLUMN}
    kept = tuple(keep) if keep is not None else tuple(c for c in frame.columns if c not in excluded)
    plan = ScoringPlan(
        ScoreOptions(chosen, per_feature, only_flagged=False),
        memory_bytes,
        kept,
        features,
        min(MAX_IMAGE_PIXELS, memory_bytes // BYTES_PER_DECODED_PIXEL),
        max_file_bytes,
    )
    for name in kept:
        if name not in frame.columns:
            raise ScoreJobError(f"keep: the frame has no column {name!r}")
    return plan


def scored_frame(
    frame: DataFrame, shipped: ShippedBundle, loaded: OnnxBundle, plan: ScoringPlan
) -> DataFrame:
    fields = plan_scorer(loaded, plan).result_fields()
    for field in fields:
        if field.name in plan.keep:
            raise ScoreJobError(f"keep: {field.name!r} is a result column's name; rename it first")
    broadcast = frame.sparkSession.sparkContext.broadcast(shipped)
    files = (
        PATH_COLUMN,
        CONTENT_COLUMN,
        *([LENGTH_COLUMN] if LENGTH_COLUMN in frame.columns else []),
    )
    needed = list(dict.fromkeys([*plan.keep, *(plan.features or files)]))

    def score_partition(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = worker_scorer(broadcast.value, plan)
        for batch in batches:
            yield scorer.score(batch)

    return frame.select(*needed).mapInArrow(
        score_partition, _result_schema(frame, plan.keep, fields)
    )


def _check_numeric(frame: DataFrame, features: Sequence[str]) -> None:
    from pyspark.sql.types import NumericType, StringType

    for name in features:
        kind = frame.schema[name].dataType
        if not isinstance(kind, NumericType | StringType):
            raise ScoreJobError(f"column {name!r} holds {kind.simpleString()}, not numbers")


def _result_schema(frame: DataFrame, kept: Sequence[str], fields: Sequence[pa.Field]) -> Any:
    """The result's Spark schema: the kept columns as they were, then the scorer's fields."""
    from pyspark.sql.types import BooleanType, DoubleType, FloatType, StringType, StructType

    spark_types = {
        pa.float64(): DoubleType(),
        pa.float32(): FloatType(),
        pa.bool_(): BooleanType(),
        pa.string(): StringType(),
    }
    schema = StructType([frame.schema[name] for name in kept])
    for field in fields:
        schema.add(field.name, spark_types[field.type], nullable=True)
    return schema


# --- the command: vae-score --engine spark --------------------------------------------------


@dataclass(frozen=True)
class SparkJob:
    bundle: str
    input: str  # a path, folder, glob or URL Spark reads (file:, s3a:, hdfs:, ...)
    output: str  # a folder Spark writes, and OUTPUT.bad-rows beside it
    output_format: str
    input_format: str | None  # None: from INPUT's suffix, or a local folder's files
    options: ScoreOptions
    columns: Sequence[str] | None
    keep: Sequence[str] | None
    memory_mb: int
    workers: int  # local[N] when Spark was given no master (spark-submit gives one)
    master: str | None
    strict: bool
    restart: bool  # replace OUTPUT and its bad rows when they exist
    progress: bool


def input_format(location: str, chosen: str | None) -> str:
    if chosen is not None:
        return chosen
    suffix = Path(location.rstrip("/")).suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in CSV_SUFFIXES:
        return "csv"
    folder = Path(location)
    if "://" not in location and folder.is_dir():
        kinds = {"parquet": PARQUET_SUFFIXES, "csv": CSV_SUFFIXES, "images": IMAGE_SUFFIXES}
        counts = dict.fromkeys(kinds, 0)
        for file in folder.rglob("*"):
            for kind, suffixes in kinds.items():
                counts[kind] += file.suffix.lower() in suffixes and file.is_file()
        ranked = sorted(counts.items(), key=lambda item: -item[1])
        if ranked[0][1] > ranked[1][1]:  # the folder holds mostly one kind (a README aside)
            return ranked[0][0]
    raise ScoreJobError(
        f"{location}: say what it holds with --input-format ({', '.join(INPUT_FORMATS)})"
    )


def spark_session(job: SparkJob) -> SparkSession:
    """The session: on --spark-master, else spark-submit's master, else local mode on
    `workers` cores."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    master = job.master
    if master is None and not SparkConf().contains("spark.master"):
        master = f"local[{job.workers}]"
    builder = SparkSession.builder.appName("vae-score")
    if master is not None:
        builder = builder.master(master)
    if (master or "").startswith("local"):
        # Local mode's Python workers: this interpreter, so they import what this one imports.
        # On a cluster, the cluster's PYSPARK_PYTHON (this path may not exist there).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = builder.config("spark.ui.showConsoleProgress", str(job.progress).lower())
    return builder.getOrCreate()


def read_input(
    spark: SparkSession, job: SparkJob, kind: str, max_file_bytes: int
) -> tuple[DataFrame, list[str]]:
    """INPUT as a DataFrame, and the columns added to it: a Parquet row carries its file's `path`
    and `row` index; a CSV row its file's `path`; an image its file's `path`, `length` and
    `content`, which is null for a file above `max_file_bytes` (Spark filters on length before
    it reads a file, so such a file never enters memory)."""
    from pyspark.sql import functions as F

    if kind == "images":
        files = (
            spark.read.format("binaryFile")
            .option("recursiveFileLookup", "true")
            .load(job.input)
            .filter(F.lower(F.col(PATH_COLUMN)).rlike(r"\.(png|jpe?g)$"))
            .drop("modificationTime")
        )
        small = files.filter(F.col(LENGTH_COLUMN) <= max_file_bytes)
        large = files.filter(F.col(LENGTH_COLUMN) > max_file_bytes).select(
            PATH_COLUMN, LENGTH_COLUMN, F.lit(None).cast("binary").alias(CONTENT_COLUMN)
        )
        return small.unionByName(large), []
    if kind == "parquet":
        frame = spark.read.parquet(job.input)
        metadata = {PATH_COLUMN: "_metadata.file_path", ROW_INDEX_COLUMN: "_metadata.row_index"}
    else:
        separator = "\t" if Path(job.input).suffix.lower() == ".tsv" else ","
        frame = spark.read.options(header=True, sep=separator, mode="PERMISSIVE").csv(job.input)
        metadata = {PATH_COLUMN: "_metadata.file_path"}
    added = [name for name in metadata if name not in frame.columns]
    return frame.select("*", *(F.col(metadata[name]).alias(name) for name in added)), added


def run_spark_job(job: SparkJob) -> JobSummary:
    began = time.perf_counter()
    kind = input_format(job.input, job.input_format)
    share = job.memory_mb * MEGABYTE // (2 * max(1, job.workers))  # a task's scoring tensors
    shipped, loaded = ship_bundle(job.bundle)
    spark = spark_session(job)
    try:
        return _run(spark, job, kind, share, shipped, loaded, began)
    finally:
        spark.stop()  # this command's session: its JVM and Python workers end with it


def _run(
    spark: SparkSession,
    job: SparkJob,
    kind: str,
    share: int,
    shipped: ShippedBundle,
    loaded: OnnxBundle,
    began: float,
) -> JobSummary:
    from pyspark import StorageLevel
    from pyspark.errors import PySparkException

    for target in (job.output, bad_rows_location(job.output)):
        if not job.restart and _exists(spark, target):
            raise ScoreJobError(f"{target} exists; --restart replaces it")
    max_file_bytes = max(1, min(MAX_IMAGE_BYTES, share // IMAGE_BATCH_FILES))
    batch_rows = IMAGE_BATCH_FILES if kind == "images" else TABLE_BATCH_ROWS
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
    try:
        frame, added = read_input(spark, job, kind, max_file_bytes)
    except PySparkException as error:  # no such path, not Parquet, ...: worded for a person
        raise ScoreJobError(
            f"{job.input}: Spark cannot read it as {kind} ({_first_line(error)})"
        ) from error
    keep = job.keep if job.keep is not None or kind != "images" else [PATH_COLUMN]
    plan = scoring_plan(
        frame,
        loaded,
        job.options.score_type,
        job.options.per_feature,
        job.columns,
        keep,
        share,
        max_file_bytes,
        added,
    )
    scored = scored_frame(frame, shipped, loaded, plan).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _write(job, scored, plan, began)
    finally:
        scored.unpersist()


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _write(job: SparkJob, scored: DataFrame, plan: ScoringPlan, began: float) -> JobSummary:
    """Count, then write the good rows to OUTPUT and the bad ones (kept columns and reason) to
    OUTPUT.bad-rows; the scored rows are persisted, so each is scored once."""
    from pyspark.sql import functions as F

    totals = scored.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("is_anomaly").cast("long")).alias("flagged"),
        F.count(BAD_REASON).alias("bad"),
    ).first()
    assert totals is not None
    rows, flagged, bad = int(totals["rows"]), int(totals["flagged"] or 0), int(totals["bad"])
    bad_rows = scored.filter(F.col(BAD_REASON).isNotNull()).select(*plan.keep, BAD_REASON)
    if job.strict and bad:
        first = bad_rows.first()
        assert first is not None
        where = ", ".join(f"{name}={first[name]}" for name in plan.keep) or "a row"
        raise StrictBadRow(f"{where}: {first[BAD_REASON]} (--strict stops at a bad row)")
    good = scored.filter(F.col(BAD_REASON).isNull()).drop(BAD_REASON)
    if job.options.only_flagged:
        good = good.filter(F.col("is_anomaly"))
    mode = "overwrite" if job.restart else "errorifexists"
    writer = good.write.mode(mode)
    if job.output_format == "csv":
        writer.option("header", True).csv(job.output)
    else:
        writer.parquet(job.output)
    if bad:
        bad_rows.write.mode(mode).option("header", True).csv(bad_rows_location(job.output))
    return JobSummary(
        rows=rows,
        written=flagged if job.options.only_flagged else rows - bad,
        flagged=flagged,
        bad_rows=bad,
        chunks=scored.rdd.getNumPartitions(),
        resumed_chunks=0,
        seconds=time.perf_counter() - began,
        score_type=plan.options.score_type or "",
        engine="spark",
    )


def bad_rows_location(output: str) -> str:
    return f"{output.rstrip('/')}.bad-rows"


def _exists(spark: SparkSession, location: str) -> bool:
    """Whether Spark's file system holds `location` (a local path or a URL)."""
    context = spark.sparkContext
    jvm = context._jvm  # Hadoop's FileSystem, which Spark writes with, is the JVM's
    assert jvm is not None
    path = jvm.org.apache.hadoop.fs.Path(location)
    return bool(path.getFileSystem(context._jsc.hadoopConfiguration()).exists(path))
