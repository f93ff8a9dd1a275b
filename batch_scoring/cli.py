"""`vae-score BUNDLE INPUT OUTPUT`: score a file of any size offline, as the service would.

    vae-score models/records/1 transactions.csv scores.parquet
    vae-score s3://bucket/models/records/1 big.npy flagged.csv --only-flagged --workers 8

Reads .npy (memory-mapped), CSV or Parquet in chunks whose memory `--memory-mb` bounds; writes
Parquet or CSV (by OUTPUT's suffix, or --format) with each row's number, score, is_anomaly and
tail_probability (and each feature's squared error with --per-feature). An interrupted run
rerun the same way goes on from the chunks it finished. Rows that cannot be scored are listed in
OUTPUT.bad-rows.csv with why, and counted; --strict stops at the first. A summary goes to
stdout as JSON. Exit status: 0 done, 2 the job cannot run as asked, 3 --strict met a bad row.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from batch_scoring.chunks import ScoreJobError
from batch_scoring.job import JobSettings, StrictBadRow, default_workers, run_job
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
    p.add_argument("input", type=Path, help="a .npy, .csv/.tsv/.txt or .parquet file")
    p.add_argument("output", type=Path, help="the results: .parquet or .csv")
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


def main(argv: Sequence[str] | None = None) -> int:
    options = parser().parse_args(argv)
    try:
        if options.memory_mb < 16:
            raise ScoreJobError("--memory-mb: at least 16")
        workers = default_workers() if options.workers is None else options.workers
        if workers < 1:
            raise ScoreJobError("--workers: at least 1")
        settings = JobSettings(
            bundle=options.bundle,
            input=options.input,
            output=options.output,
            output_format=_format(options.output, options.format),
            options=ScoreOptions(options.score_type, options.per_feature, options.only_flagged),
            columns=[c.strip() for c in options.columns.split(",")] if options.columns else None,
            memory_mb=options.memory_mb,
            workers=workers,
            strict=options.strict,
            restart=options.restart,
            progress=False if options.quiet else None,
        )
        summary = run_job(settings)
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
