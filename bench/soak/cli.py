"""`python -m bench.soak`: the options, the run, SOAK.md and soak.json, the summary printed."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import wrk
from bench.shared import BENCH, ROOT, write_json
from bench.soak.config import MODEL_KEYS, SETTLE_S
from bench.soak.judge import judge, verdict
from bench.soak.report import markdown, status_text
from bench.soak.run import Options, run


def print_summary(result: dict[str, Any]) -> None:
    load = result.get("load")
    if load is not None:
        print(f"{'kind':<22} {'want':>4} {'answered':>9} {'per s':>8}  statuses", flush=True)
        for k in load["kinds"]:
            print(
                f"{k['key']:<22} {k['expected_status']:>4} {k['answered']:>9,} "
                f"{k['per_s']:>8,.1f}  {status_text(k['statuses'])}"
                + (f"  body differs {k['body_mismatches']}" if k["body_mismatches"] else "")
            )
    if result.get("error"):
        print(f"error: {result['error']}")
    for c in result["checks"]:
        print(f"  {c['status']:<4} {c['target']}: {c['measured']}")
    print(f"soak: {verdict(result).replace('**', '')}", flush=True)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="A bounded soak run: mixed valid and invalid requests against vae-serve on "
        "127.0.0.1; zero 5xx, zero dropped requests, flat RSS, or exit status 1. Writes "
        "SOAK.md and soak.json.",
    )
    parser.add_argument("--seconds", type=int, default=120, help="length of the load")
    parser.add_argument(
        "--connections", type=int, default=8, help="wrk connections, one wrk thread each"
    )
    parser.add_argument(
        "--models", default="default", help="default, or default,784 to add the image model"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="VAE_LOG_LEVEL of the server (info, its default, keeps the access log on)",
    )
    parser.add_argument(
        "--out", type=Path, default=BENCH, help="folder for SOAK.md and soak.json (default bench)"
    )
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or models[0] != "default" or any(m not in MODEL_KEYS for m in models):
        parser.error("--models: default, or default,784")
    # The slope is fitted after SETTLE_S; it needs that much again to mean anything.
    shortest = int(2 * SETTLE_S)
    if args.seconds < shortest or not 1 <= args.connections <= 64:
        parser.error(f"--seconds >= {shortest}, --connections 1..64")
    out: Path = args.out if args.out.is_absolute() else ROOT / args.out
    return Options(
        seconds=args.seconds,
        connections=args.connections,
        models=list(dict.fromkeys(models)),
        log_level=args.log_level,
        out=out,
        argv=list(argv if argv is not None else sys.argv[1:]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if shutil.which(wrk.WRK) is None:
        print(f"soak: {wrk.WRK} not found; install wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    began = time.perf_counter()
    result = run(options)
    result["wall_s"] = round(time.perf_counter() - began, 1)
    checks = judge(result)
    result["checks"] = [c.as_dict() for c in checks]
    options.out.mkdir(parents=True, exist_ok=True)
    write_json(options.out / "soak.json", result)
    (options.out / "SOAK.md").write_text(markdown(result))
    print_summary(result)
    where = options.out.relative_to(ROOT) if options.out.is_relative_to(ROOT) else options.out
    print(f"wrote {where}/SOAK.md and {where}/soak.json ({result['wall_s']} s)", flush=True)
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
