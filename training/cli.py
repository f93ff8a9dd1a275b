"""`vae-train`: train a bundle, or `vae-train evaluate BUNDLE` to score one on other data.

The training flags are generated from `TrainingConfig`'s fields, so `--help` documents every
option with the reason for its default, and the config recorded in the bundle is what ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bundle.runtime import BundleError, OnnxBundle
from bundle.scoring import SCORE_TYPES
from training.config import TrainingConfig
from training.data import DataError, load_dataset
from training.evaluate import detection_metrics

# Errors a user can fix by changing a flag or a file: one clear line, exit code 2, no traceback.
USER_ERRORS = (DataError, BundleError, ValueError, FileExistsError, FileNotFoundError)


def _field_type(annotation: Any) -> tuple[Any, list[str] | None]:
    """The argparse `type` and `choices` for a config field's annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return str, [str(v) for v in typing.get_args(annotation)]
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _field_type(inner[0])
    return annotation, None


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainingConfig)
    group = parser.add_argument_group("training options")
    for config_field in dataclasses.fields(TrainingConfig):
        flag = "--" + config_field.name.replace("_", "-")
        kind, choices = _field_type(hints[config_field.name])
        # argparse %-formats help strings; a literal "1%" in a reason would crash --help.
        reason = str(config_field.metadata["help"]).replace("%", "%%")
        help_text = f"{reason} (default: {config_field.default})"
        if kind is bool:
            group.add_argument(
                flag,
                dest=config_field.name,
                action=argparse.BooleanOptionalAction,
                default=config_field.default,
                help=help_text,
            )
        else:
            group.add_argument(
                flag,
                dest=config_field.name,
                type=kind,
                choices=choices,
                default=config_field.default,
                metavar=None if choices else config_field.name.upper(),
                help=help_text,
            )


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-train",
        description=(
            "Train a VAE or autoencoder and write an ONNX model bundle (encoder.onnx, "
            "decoder.onnx, model.json, report/). Run 'vae-train evaluate --help' to score an "
            "existing bundle on other data."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a bundle already at --out"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar and no summary on stdout"
    )
    _add_config_arguments(parser)
    return parser


def build_evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-train evaluate",
        description=(
            "Score data with an exported bundle through onnxruntime (exactly what the service "
            "computes) and print the figures as JSON."
        ),
    )
    parser.add_argument("bundle", type=Path, help="bundle folder (holds model.json)")
    parser.add_argument("--dataset", required=True, help="data to score; same SPEC as training")
    parser.add_argument("--anomaly-labels", default=None, help="0/1 per row marking anomalies")
    parser.add_argument("--image-size", default=None, help="HxW resize for image data")
    parser.add_argument(
        "--score", default=None, choices=list(SCORE_TYPES), help="score type to use"
    )
    parser.add_argument(
        "--scores-out", type=Path, default=None, help="also write per-item scores to this CSV"
    )
    return parser


def evaluate_bundle(args: argparse.Namespace) -> dict[str, Any]:
    bundle = OnnxBundle(args.bundle)
    size = TrainingConfig(image_size=args.image_size).image_size_hw()
    if size is None and bundle.manifest.input.image_shape is not None:
        size = tuple(bundle.manifest.input.image_shape[1:])  # type: ignore[assignment]
    data = load_dataset(args.dataset, image_size=size, anomaly_labels=args.anomaly_labels)
    features = int(np.prod(data.feature_shape))
    if features != bundle.manifest.input.feature_count:
        raise ValueError(
            f"{args.dataset}: items have {features} features, bundle "
            f"{bundle.manifest.name} expects {bundle.manifest.input.feature_count}"
        )
    score_type = args.score or bundle.manifest.anomaly.default_score
    if score_type not in bundle.manifest.anomaly.scores:
        raise ValueError(f"bundle {bundle.manifest.name} has no calibrated {score_type} score")
    threshold = bundle.manifest.anomaly.scores[score_type].threshold
    scores = np.concatenate(
        [
            bundle.scores(data.x[start : start + 1024], score_type)
            for start in range(0, len(data.x), 1024)
        ]
    )
    flagged = scores > threshold
    report: dict[str, Any] = {
        "bundle": f"{bundle.manifest.name}/{bundle.manifest.version}",
        "dataset": data.description,
        "score_type": score_type,
        "threshold": threshold,
        "n_items": len(scores),
        "n_flagged": int(flagged.sum()),
        "score_mean": float(scores.mean()),
        "score_median": float(np.median(scores)),
    }
    if data.is_anomaly is not None:
        report["detection"] = detection_metrics(scores, data.is_anomaly, threshold)
    if args.scores_out is not None:
        args.scores_out.parent.mkdir(parents=True, exist_ok=True)
        with args.scores_out.open("w", encoding="utf-8") as handle:
            handle.write("index,score,is_anomaly_flagged\n")
            for index, (score, flag) in enumerate(zip(scores, flagged, strict=True)):
                handle.write(f"{index},{score:.9g},{int(flag)}\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        if arguments[:1] == ["evaluate"]:
            args = build_evaluate_parser().parse_args(arguments[1:])
            print(json.dumps(evaluate_bundle(args), indent=2))
            return 0
        args = build_train_parser().parse_args(arguments)
        config = TrainingConfig(
            **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingConfig)}
        )
        # Imported here so `vae-train --help` and `evaluate` answer without loading torch.
        from training.pipeline import outcome_summary, run_training_replica
        from training.train import TrainingDiverged

        try:
            # Under torchrun with --distributed, every process runs this; only rank 0 writes
            # the bundle and gets an outcome to print.
            outcome = run_training_replica(
                config,
                args.out,
                overwrite=args.overwrite,
                show_progress=False if args.quiet else None,
            )
        except TrainingDiverged as error:
            raise ValueError(str(error)) from error
        if outcome is not None and not args.quiet:
            print(json.dumps(outcome_summary(outcome), indent=2))
            print(f"bundle written to {outcome.bundle_dir}", file=sys.stderr)
        return 0
    except USER_ERRORS as error:
        print(f"{_program()}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vae-train: interrupted; no bundle was written", file=sys.stderr)
        return 130


def _program() -> str:
    """`vae-train`, with the rank when torchrun started several processes, since each says
    what went wrong for itself."""
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE", "1")
    return "vae-train" if rank is None or world == "1" else f"vae-train [rank {rank}/{world}]"


if __name__ == "__main__":
    raise SystemExit(main())
