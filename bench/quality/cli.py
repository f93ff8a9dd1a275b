"""`python -m bench.quality`: the options, the run (or the stored figures), the report."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.quality.config import ALL_TASKS, Options
from bench.quality.plot import plot
from bench.quality.report import markdown
from bench.quality.run import run
from bench.quality.targets import checks
from bench.shared import BENCH, write_json


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality",
        description="Our default models and scores against PyOD's detectors and the classic "
        "VAE recipe, on scikit-learn's data; writes bench/QUALITY.md, quality.json, quality.png.",
    )
    parser.add_argument(
        "--tasks",
        default="all",
        help="comma-separated: breast-cancer, digits, digits:holdout=K, or 'all' (default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the split and every model")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="CPU seconds for the reference VAE (default: what our digits training loop took)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for every torch model (default 1)"
    )
    parser.add_argument("--out-dir", type=Path, default=BENCH, help="where the report goes")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=BENCH / "out" / "quality",
        help="where our bundles are written",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite QUALITY.md and quality.png from the quality.json in --out-dir; no runs",
    )
    args = parser.parse_args(argv)
    tasks = (
        ALL_TASKS
        if args.tasks == "all"
        else [t.strip() for t in args.tasks.split(",") if t.strip()]
    )
    unknown = [t for t in tasks if t not in ALL_TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(ALL_TASKS)}")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    shown = ["python -m bench.quality", *(argv if argv is not None else sys.argv[1:])]
    return Options(
        tasks=tasks,
        seed=args.seed,
        budget_s=args.budget_s,
        threads=args.threads,
        out_dir=args.out_dir,
        work_dir=args.work_dir,
        command=" ".join(shown),
        render_only=args.render_only,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options.render_only:
        # Prose and plot from the stored figures: the numbers are never recomputed here.
        results = json.loads((options.out_dir / "quality.json").read_text())
    else:
        if options.work_dir.exists():
            shutil.rmtree(options.work_dir)
        options.work_dir.mkdir(parents=True)
        results = run(options)
        options.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(options.out_dir / "quality.json", results)
    (options.out_dir / "QUALITY.md").write_text(markdown(results), encoding="utf-8")
    plot(results, options.out_dir / "quality.png")
    failed = [c for c in checks(results) if not c.ok]
    for check in checks(results):
        print(f"[quality] {'pass' if check.ok else 'FAIL'}: {check.target}: {check.measured}")
    print(f"[quality] wrote {options.out_dir / 'QUALITY.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
