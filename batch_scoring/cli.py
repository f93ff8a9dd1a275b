"""`vae-score BUNDLE INPUT OUTPUT`: score a file of any size offline, as the service would.

    vae-score models/records/1 transactions.csv scores.parquet
    vae-score s3://bucket/models/records/1 big.npy flagged.csv --only-flagged --workers 8

Reads .npy (memory-mapped), CSV or Parquet in chunks whose memory `--memory-mb` bounds; writes
Parquet or CSV (by OUTPUT's suffix, or --format) with each row's number, score, is_anomaly and
tail_probability (and each feature's squared error with --per-feature). An interrupted run
rerun the same way goes on from the chunks it finished. Rows that cannot be scored are listed in
OUTPUT.bad-rows.csv with why, and counted; --strict stops at the first. A summary goes to
stdout as JSON. Exit status: 0 done, 2 the job cannot run as asked, 3 --strict met a bad row.

With --engine spark the same job runs on Apache Spark (batch_scoring.spark): INPUT is whatever
Spark reads, OUTPUT a folder of part files and OUTPUT.bad-rows a folder of the bad rows with
why; a row is known by its kept columns (an id, a Parquet file's path and row index).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from batch_scoring.chunks import ScoreJobError
from batch_scoring.job import JobSettings, JobSummary, StrictBadRow, default_workers, run_job
from batch_scoring.parts import FORMATS
from batch_scoring.scorer import ScoreOptions


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vae-score",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]) if __doc__ else None,
    )
    p.add_argument("bundle", help="the bundle's folder, or an fsspec URL of it (s3://, gs://, ...)")
    p.add_argument(
        "input",
        help="a .npy, .csv/.tsv/.txt or .parquet file, or a folder of images; with --engine "
        "spark, anything Spark reads (a folder, a glob, s3a://..., hdfs://...)",
    )
    p.add_argument(
        "output", help="the results: .parquet or .csv (with --engine spark, a folder of parts)"
    )
    p.add_argument("--score-type", help="one of the bundle's calibrated scores (default: its own)")
    p.add_argument(
        "--per-feature", action="store_true", help="each feature's squared error, as error_<name>"
    )
    p.add_argument("--only-flagged", action="store_true", help="write only rows above threshold")
    p.add_argument("--format", choices=FORMATS, help="default: from OUTPUT's suffix")
    p.add_argument(
        "--columns",
        help="comma-separated names or 0-based indexes of the table's feature columns, in the "
        "model's order (default: the bundle's feature names, or every column)",
    )
    p.add_argument(
        "--memory-mb",
        type=int,
        default=1024,
        help="what the chunks in flight and their scoring may hold (default 1024)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes scoring chunks (default: the cores this process may use; 1: in this "
        "process, onnxruntime using every core)",
    )
    p.add_argument("--strict", action="store_true", help="stop at the first bad row (status 3)")
    engine = p.add_argument_group("distributed: Apache Spark (the spark extra)")
    engine.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local: this machine's processes (default); spark: a Spark job, on the master "
        "spark-submit gives, --spark-master, or local[--workers]",
    )
    engine.add_argument("--spark-master", help="e.g. spark://host:7077, yarn, local[8]")
    engine.add_argument(
        "--input-format",
        choices=("parquet", "csv", "images"),
        help="what INPUT holds, where its name does not say",
    )
    engine.add_argument(
        "--keep",
        help="comma-separated input columns copied into each result and bad row (default: "
        "every column that is not a feature, and a file's path and row index)",
    )
    p.add_argument("--restart", action="store_true", help="discard an earlier run's parts")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _format(output: Path, chosen: str | None) -> str:
    if chosen is not None:
        return chosen
    suffix = output.suffix.lower().lstrip(".")
    if suffix in ("parquet", "pq"):
        return "parquet"
    if suffix == "csv":
        return "csv"
    raise ScoreJobError(f"{output}: say the format with --format (parquet or csv)")


def _names(listed: str | None) -> list[str] | None:
    return [name.strip() for name in listed.split(",")] if listed else None


def _run_on_spark(
    options: argparse.Namespace,
    output_format: str,
    score_options: ScoreOptions,
    columns: list[str] | None,
    workers: int,
) -> JobSummary:
    try:
        from batch_scoring.spark import SparkJob, run_spark_job
    except ImportError as error:  # pyspark is the spark extra's
        raise ScoreJobError(
            f"--engine spark needs pyspark ({error}); pip install 'vae-service[spark]'"
        ) from None
    return run_spark_job(
        SparkJob(
            bundle=options.bundle,
            input=options.input,
            output=options.output,
            output_format=output_format,
            input_format=options.input_format,
            options=score_options,
            columns=columns,
            keep=_names(options.keep),
            memory_mb=options.memory_mb,
            workers=workers,
            master=options.spark_master,
            strict=options.strict,
            restart=options.restart,
            progress=not options.quiet and sys.stderr.isatty(),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parser().parse_args(argv)
    try:
        if options.memory_mb < 16:
            raise ScoreJobError("--memory-mb: at least 16")
        workers = default_workers() if options.workers is None else options.workers
        if workers < 1:
            raise ScoreJobError("--workers: at least 1")
        output_format = _format(Path(options.output), options.format)
        score_options = ScoreOptions(options.score_type, options.per_feature, options.only_flagged)
        columns = _names(options.columns)
        if options.engine == "spark":
            summary = _run_on_spark(options, output_format, score_options, columns, workers)
        else:
            for spark_only in ("spark_master", "input_format", "keep"):
                if getattr(options, spark_only) is not None:
                    raise ScoreJobError(f"--{spark_only.replace('_', '-')}: with --engine spark")
            summary = run_job(
                JobSettings(
                    bundle=options.bundle,
                    input=Path(options.input),
                    output=Path(options.output),
                    output_format=output_format,
                    options=score_options,
                    columns=columns,
                    memory_mb=options.memory_mb,
                    workers=workers,
                    strict=options.strict,
                    restart=options.restart,
                    progress=False if options.quiet else None,
                )
            )
    except StrictBadRow as error:
        print(f"vae-score: {error}", file=sys.stderr)
        return 3
    except ScoreJobError as error:
        print(f"vae-score: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary.as_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
