"""`python -m bench.quality`: the options, the run (or the stored figures), the report."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.quality.config import (
    ALL_TASKS,
    BREAST_CANCER_SEEDS,
    DEFAULT_SEEDS,
    TASK_GROUPS,
    Options,
    parse_seeds,
    parse_tasks,
)
from bench.quality.figures import normalise
from bench.quality.merge import merge
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
    groups = "; ".join(
        f"{name} = {', '.join(tasks) if name != 'all' else 'every group'}"
        for name, tasks in TASK_GROUPS.items()
    )
    parser.add_argument(
        "--tasks",
        default="all",
        help=f"comma-separated groups and task names (default all). Groups: {groups}. A group "
        "name wins over the task of the same name; '=digits' names the digits likelihood task "
        f"alone. Tasks: {', '.join(ALL_TASKS)}",
    )
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds or ranges ('0,1,2', '0-4'), each seeding a split and every "
        f"model; every task runs once per seed (default {','.join(map(str, DEFAULT_SEEDS))}, "
        f"breast-cancer {BREAST_CANCER_SEEDS[0]}-{BREAST_CANCER_SEEDS[-1]}: the issue's 5 "
        "splits; given, these seeds serve breast-cancer too)",
    )
    seeds.add_argument("--seed", type=int, default=None, help="one seed: --seeds N")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds for the reference VAE on every likelihood task, CPU seconds on digits and "
        "wall seconds on mnist-5k (default: what our training loop took, counted the same way)",
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
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        metavar="QUALITY_JSON",
        help="merge the quality.json of runs on parts of the tasks or seeds into one report in "
        "--out-dir (each task and seed from one part only); no runs",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite QUALITY.md and quality.png from the quality.json in --out-dir; no runs",
    )
    args = parser.parse_args(argv)
    try:
        tasks = parse_tasks(args.tasks)
        given = args.seeds if args.seed is None else str(args.seed)
        chosen = list(DEFAULT_SEEDS) if given is None else parse_seeds(given)
    except ValueError as exc:
        parser.error(str(exc))
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    shown = ["python -m bench.quality", *(argv if argv is not None else sys.argv[1:])]
    return Options(
        tasks=tasks,
        seeds=chosen,
        breast_cancer_seeds=list(BREAST_CANCER_SEEDS) if given is None else chosen,
        budget_s=args.budget_s,
        threads=args.threads,
        out_dir=args.out_dir,
        work_dir=args.work_dir,
        command=" ".join(shown),
        render_only=args.render_only,
        merge=list(args.merge or []),
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options.merge:
        parts = [json.loads(path.read_text()) for path in options.merge]
        results = merge(parts, options.command)
        options.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(options.out_dir / "quality.json", results)
    elif options.render_only:
        # Prose and plot from the stored figures: the numbers are never recomputed here.
        results = normalise(json.loads((options.out_dir / "quality.json").read_text()))
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
