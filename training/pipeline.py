"""One training run end to end: data -> model -> train -> evaluate/calibrate -> bundle on disk.

`run_training_replica` reads top to bottom as the run's stages, each a function below it that
returns a small dataclass for the next: `prepare_data`, the architecture search,
`fit_final_model`, the export, `calibrate`, `build_manifest`, and writing the bundle. The
bundle is assembled in a temporary sibling folder and renamed into place at the end, so a server
watching the model repository never sees a half-written bundle.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from bundle.arrays import FloatArray
from bundle.manifest import (
    AnomalySpec,
    ComplexitySpec,
    InputSpec,
    LikelihoodSpec,
    ModelManifest,
    OnnxSpec,
    PreprocessingSpec,
    ReferenceSpec,
    ScoreCalibration,
    ScoreType,
)
from bundle.preprocessing import Preprocessing, fit_preprocessing
from bundle.runtime import OnnxBundle
from bundle.scoring import fixed_epsilon
from training.architecture import FittedModel, fit_best_architecture, total_cpu_seconds
from training.calibration.crossfit import needs_cross_fit
from training.calibration.reference import write_monitoring_reference
from training.calibration.scores import (
    SCORE_BATCH,
    calibration_scores,
    fit_recon_complexity,
    score_all,
)
from training.calibration.thresholds import calibrate_threshold
from training.config import TrainingConfig
from training.data import DataSplits, LoadedData, load_dataset
from training.defaults import resolve_data_defaults
from training.distributed import Replicas, check_launch, join_replicas
from training.evaluate import detection_metrics, heldout_likelihood_metrics
from training.export import ExportedGraphs, OnnxGraphs, export_model
from training.factory import BUNDLE_KIND, ModelInput, model_input, resolve_likelihood, resolve_score
from training.models import VAE, Autoencoder, Likelihood
from training.progress import RunProgress
from training.refit import RefitModel, refit_on_all_rows, uses_refit
from training.report_writer import write_report
from training.streaming.budget import MEGABYTE, memory_budget_bytes
from training.streaming.mapped_rows import MappedRows
from training.streaming.preprocessing import fit_preprocessing_in_chunks, value_range
from training.streaming.rows import SplitRows, batch_rows, model_rows, select_rows, torch_rows
from training.streaming.splits import StreamedSplits, report_sample, row_chunks, split_for_training
from training.train import TrainingResult, resolve_device

ELBO_SEED = 0  # the fixed epsilon of neg_elbo; recorded in the bundle


@dataclass(frozen=True)
class TrainingOutcome:
    bundle_dir: Path
    manifest: ModelManifest
    result: TrainingResult
    total_seconds: float = 0.0  # the whole run, data to plots (result.seconds: the loop alone)
    phase_seconds: dict[str, float] = field(default_factory=dict)


def choose_preprocessing(
    config: TrainingConfig,
    data: LoadedData,
    x_train: FloatArray | MappedRows,
    likelihood: Likelihood,
) -> Preprocessing:
    kind = config.preprocessing
    if kind == "auto":
        kind = "minmax" if data.is_image or likelihood == "bernoulli" else "standard"
    if likelihood == "bernoulli":
        if kind == "standard":
            raise ValueError(
                "--likelihood bernoulli needs values in [0, 1]: use --preprocessing minmax "
                "(or auto), not standard"
            )
        low, high = value_range(x_train) if kind == "none" else (0.0, 1.0)
        if low < 0 or high > 1:
            raise ValueError(
                "--likelihood bernoulli with --preprocessing none needs data already in [0, 1]; "
                f"the training data span [{low:g}, {high:g}]"
            )
    clip = (0.0, 1.0) if likelihood == "bernoulli" else None
    # Images share one intensity range; table columns each have their own units.
    if isinstance(x_train, MappedRows):
        return fit_preprocessing_in_chunks(x_train, kind, per_feature=not data.is_image, clip=clip)
    return fit_preprocessing(x_train, kind, per_feature=not data.is_image, clip=clip)


def _as_model_input(
    x: FloatArray | MappedRows, prep: Preprocessing, shape: ModelInput
) -> SplitRows:
    return model_rows(x, prep, shape.shape)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "numpy", "onnx", "onnxscript", "onnxruntime", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def run_training(
    config: TrainingConfig,
    out_dir: Path,
    *,
    overwrite: bool = False,
    show_progress: bool | None = None,
) -> TrainingOutcome:
    """Train in this process and write the bundle (`--distributed` runs go through
    `run_training_replica`, once in each process torchrun starts)."""
    if config.distributed:
        raise ValueError(
            "distributed training runs one process per replica: launch "
            "'vae-train --distributed ...' with torchrun (see training.distributed)"
        )
    outcome = run_training_replica(
        config, out_dir, overwrite=overwrite, show_progress=show_progress
    )
    assert outcome is not None  # one process alone is rank 0, which writes
    return outcome


def run_training_replica(
    config: TrainingConfig,
    out_dir: Path,
    *,
    overwrite: bool = False,
    show_progress: bool | None = None,
) -> TrainingOutcome | None:
    """`run_training`, or with `config.distributed` one replica of a torchrun launch: all
    replicas train together; rank 0 then writes the bundle and returns its outcome, the others
    return None as soon as training ends.

    The stages, in order: prepare the data, search the architecture (every replica), fit the
    final model, export it, calibrate its thresholds, build the manifest, write the bundle.
    Each is a function below returning what the next ones need."""
    config.validate()
    check_launch(config.distributed, config.batch_size)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds files; pick a new --version or pass --overwrite"
        )
    progress = RunProgress(show_progress)
    prepared = prepare_data(config, progress)
    config = prepared.config  # every data-dependent default now concrete
    replicas = join_replicas(config.distributed, resolve_device(config.device), config.batch_size)
    progress.show = progress.show and replicas.is_writer  # one voice among replicas
    staging = _new_staging_folder(out_dir) if replicas.is_writer else None
    try:
        report_dir = None if staging is None else staging / "report"
        if report_dir is not None:
            report_dir.mkdir()
        progress.begin("architecture search")
        with replicas.process_group():
            fitted = fit_best_architecture(
                config,
                prepared.shape,
                prepared.likelihood,
                prepared.data.is_image,
                torch_rows(prepared.x_train, replicas.device),
                torch_rows(prepared.x_val, replicas.device),
                replicas=replicas,
                report_dir=report_dir,
                show_progress=show_progress,
            )
        if staging is None or report_dir is None:
            return None  # not rank 0: the bundle is rank 0's to write
        final = fit_final_model(fitted, prepared, replicas.device, progress, show_progress)
        progress.begin("export", "ONNX encoder and decoder, parity check")
        exported = export_model(
            final.model,
            prepared.shape.shape,
            staging,
            opset=final.config.opset,
            seed=final.config.seed,
        )
        calibration = calibrate(final, prepared, staging, replicas.device, progress, show_progress)
        progress.begin("verify bundle")
        manifest = build_manifest(
            final, prepared, exported, calibration, out_dir, replicas, progress
        )
        manifest.write(staging)
        _verify_bundle(staging, prepared.splits, calibration.val_scores)
        if final.config.plots:
            progress.begin("plots", "report/*.png")
            write_plots(report_dir, final, prepared, calibration)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    progress.end()
    return TrainingOutcome(
        bundle_dir=out_dir,
        manifest=manifest,
        result=final.fitted.result,
        total_seconds=round(progress.total_seconds(), 2),
        phase_seconds=progress.rounded(),
    )


# --------------------------------------------------------------------------- the stages


@dataclass(frozen=True)
class PreparedData:
    """The data set, split, preprocessed into model inputs, and the run's config with the
    defaults that depend on the data resolved (training.defaults)."""

    config: TrainingConfig
    data_defaults: dict[str, dict[str, object]]  # what was chosen from the data, and why
    data: LoadedData
    splits: DataSplits | StreamedSplits
    shape: ModelInput
    likelihood: Likelihood
    prep: Preprocessing
    x_train: SplitRows
    x_val: SplitRows
    x_test: SplitRows
    test_normal: SplitRows
    memory_budget: int


def prepare_data(config: TrainingConfig, progress: RunProgress) -> PreparedData:
    """Load the data set within the memory budget, split it, fit the preprocessing on the
    training split and apply it to every split."""
    memory_budget = memory_budget_bytes(config.memory_budget_mb)
    progress.begin("load data", str(config.dataset))
    data = load_dataset(
        config.dataset,
        image_size=config.image_size_hw(),
        anomaly_labels=config.anomaly_labels,
        memory_budget=memory_budget,
    )
    config, data_defaults = resolve_data_defaults(config, data.feature_shape, data.is_image)
    splits = split_for_training(data, config, memory_budget)
    shape = model_input(config, data.feature_shape, data.is_image)
    likelihood = resolve_likelihood(config, data.is_image)
    resolve_score(config, data.is_image)  # refuses a score the data cannot have, before training
    prep = choose_preprocessing(config, data, splits.train, likelihood)
    x_test = _as_model_input(splits.test, prep, shape)
    return PreparedData(
        config=config,
        data_defaults=data_defaults,
        data=data,
        splits=splits,
        shape=shape,
        likelihood=likelihood,
        prep=prep,
        x_train=_as_model_input(splits.train, prep, shape),
        x_val=_as_model_input(splits.validation, prep, shape),
        x_test=x_test,
        test_normal=select_rows(x_test, ~splits.test_is_anomaly),
        memory_budget=memory_budget,
    )


@dataclass(frozen=True)
class FinalModel:
    """The model the bundle holds, with how it came to be and its held-out figures."""

    fitted: FittedModel  # the architecture search's kept candidate, early-stopped
    model: VAE | Autoencoder  # that model, or its refit on every row
    refit: RefitModel | None
    cross_fit: bool  # whether the thresholds come from cross-fitted scores
    heldout_metrics: dict[str, Any]

    @property
    def config(self) -> TrainingConfig:
        """The run's config with the kept candidate's --hidden and --lr: the bundle records
        it, and cross-fitted calibration trains its fold models the same way."""
        return self.fitted.config


def fit_final_model(
    fitted: FittedModel,
    prepared: PreparedData,
    device: torch.device,
    progress: RunProgress,
    show_progress: bool | None,
) -> FinalModel:
    """Refit the kept candidate on every row when the config asks (training.refit), then
    measure it on held-out normal items."""
    config, result = fitted.config, fitted.result
    early_stopped = fitted.model.to("cpu")
    assert isinstance(early_stopped, VAE | Autoencoder)
    x_train, x_val = prepared.x_train, prepared.x_val
    cross_fit = _cross_fits(config, x_train, x_val)
    refit: RefitModel | None = None
    if uses_refit(config, cross_fit):
        assert isinstance(x_train, np.ndarray)  # _cross_fits refuses streamed data
        assert isinstance(x_val, np.ndarray)
        every_row = torch.from_numpy(np.concatenate([x_train, x_val])).to(device)
        progress.begin("refit", f"all {len(every_row)} rows, {result.best_epoch} epochs")
        refit = refit_on_all_rows(
            config,
            prepared.shape,
            prepared.likelihood,
            every_row,
            result.best_epoch,
            show_progress=show_progress,
        )
    model = early_stopped if refit is None else refit.model.to("cpu")
    assert isinstance(model, VAE | Autoencoder)
    # Figures come from held-out normal items; with --test-fraction 0 the validation split
    # stands in. Held-out figures need rows the model never trained on, and a refit trains on
    # the validation split: there the figures are the early-stopped model's, and the split's
    # name says so.
    heldout, heldout_name = (
        (prepared.test_normal, "test") if len(prepared.test_normal) else (x_val, "validation")
    )
    measured = model
    if refit is not None and heldout_name == "validation":
        measured = early_stopped
        heldout_name = "validation (early-stopped model: the refit trained on these rows)"
    progress.begin("held-out metrics", f"{config.iwae_samples}-sample importance-weighted ELBO")
    metrics: dict[str, Any] = heldout_likelihood_metrics(
        measured, torch_rows(heldout, torch.device("cpu")), iwae_samples=config.iwae_samples
    )
    metrics["split"] = heldout_name
    return FinalModel(fitted, model, refit, cross_fit, metrics)


@dataclass(frozen=True)
class Calibration:
    """The thresholds and the scores behind them, per score type."""

    graphs: OnnxGraphs  # the exported graphs, which scored everything here
    sigma: float | None
    default_score: ScoreType
    thresholds: dict[ScoreType, ScoreCalibration]
    calibrated_on: str  # where the scores each threshold is a percentile of came from
    complexity: ComplexitySpec | None  # recon_complexity's fit (images), else None
    val_scores: dict[ScoreType, npt.NDArray[np.float64]]
    reference: ReferenceSpec | None  # reference.npz, for the service's monitors
    test_scores: dict[str, npt.NDArray[np.float64]]
    detection: dict[str, dict[str, float]]  # test split: held-out normal items and anomalies


def calibrate(
    final: FinalModel,
    prepared: PreparedData,
    staging: Path,
    device: torch.device,
    progress: RunProgress,
    show_progress: bool | None,
) -> Calibration:
    """Score with the exported graphs, as a server will, and set each score type's threshold
    at the configured percentile of the validation scores, or of cross-fitted scores when the
    validation split is too small for it (training.calibration.crossfit)."""
    config, model = final.config, final.model
    progress.begin(
        "calibration",
        f"cross-fitting {config.calibration_folds} fold models"
        if final.cross_fit
        else "validation",
    )
    graphs = OnnxGraphs(staging, variational=isinstance(model, VAE))
    sigma = model.output.sigma()
    epsilon = fixed_epsilon(config.elbo_samples, config.code_size(), ELBO_SEED)
    score_types: list[ScoreType] = (
        ["recon_mse", "neg_elbo"] if isinstance(model, VAE) else ["recon_mse"]
    )
    likelihood, x_test, splits = prepared.likelihood, prepared.x_test, prepared.splits
    complexity, complexity_spec = None, None
    if prepared.shape.image_shape is not None:
        complexity, complexity_spec = fit_recon_complexity(
            graphs, [prepared.x_train, prepared.x_val], prepared.shape.image_shape
        )
        score_types.append("recon_complexity")
    val_scores = {
        t: score_all(graphs, prepared.x_val, t, likelihood, sigma, epsilon, complexity)
        for t in score_types
    }
    threshold_scores, calibrated_on = calibration_scores(
        config,
        prepared.shape,
        likelihood,
        prepared.x_train,
        prepared.x_val,
        val_scores,
        epsilon,
        device,
        final.cross_fit,
        refit_epochs=None if final.refit is None else final.refit.epochs,
        complexity=complexity,
        show_progress=show_progress,
    )
    thresholds: dict[ScoreType, ScoreCalibration] = {}
    test_scores: dict[str, npt.NDArray[np.float64]] = {}
    detection: dict[str, dict[str, float]] = {}
    for score_type in score_types:
        thresholds[score_type] = calibrate_threshold(
            threshold_scores[score_type], config.threshold_percentile
        )
        if len(x_test):
            test_scores[score_type] = score_all(
                graphs, x_test, score_type, likelihood, sigma, epsilon, complexity
            )
            detection[score_type] = detection_metrics(
                test_scores[score_type], splits.test_is_anomaly, thresholds[score_type].threshold
            )
    reference = write_monitoring_reference(
        staging, graphs, threshold_scores, prepared.x_val, prepared.shape.image_shape is not None
    )
    return Calibration(
        graphs=graphs,
        reference=reference,
        sigma=sigma,
        default_score=resolve_score(config, prepared.data.is_image),
        thresholds=thresholds,
        calibrated_on=calibrated_on,
        complexity=complexity_spec,
        val_scores=val_scores,
        test_scores=test_scores,
        detection=detection,
    )


def build_manifest(
    final: FinalModel,
    prepared: PreparedData,
    exported: ExportedGraphs,
    calibration: Calibration,
    out_dir: Path,
    replicas: Replicas,
    progress: RunProgress,
) -> ModelManifest:
    """model.json: what the graphs are, how inputs are prepared, the thresholds, the held-out
    figures, and everything about the run that made them."""
    config, result, shape = final.config, final.fitted.result, prepared.shape
    return ModelManifest(
        name=config.name or _bundle_name(out_dir),
        version=config.version or out_dir.name,
        kind=BUNDLE_KIND[config.model],
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        input=InputSpec(
            shape=list(shape.shape),
            image_shape=list(shape.image_shape) if shape.image_shape else None,
            feature_count=int(np.prod(shape.shape)),
            feature_names=prepared.data.feature_names,
        ),
        latent_dim=config.code_size(),
        preprocessing=PreprocessingSpec(**prepared.prep.to_manifest()),
        likelihood=LikelihoodSpec(kind=prepared.likelihood, sigma=calibration.sigma),
        anomaly=AnomalySpec(
            default_score=calibration.default_score,
            scores=calibration.thresholds,
            calibrated_on=calibration.calibrated_on,
            complexity=calibration.complexity,
            elbo_samples=config.elbo_samples,
            elbo_seed=ELBO_SEED,
        ),
        onnx=OnnxSpec(
            opset=config.opset,
            encoder=exported.encoder,
            decoder=exported.decoder,
            parity_max_abs_error=exported.parity_max_abs_error,
        ),
        metrics={
            "heldout": final.heldout_metrics,
            "units": "nats per item, model space (after preprocessing)",
            "anomaly_detection": calibration.detection,
            "anomaly_detection_split": "test: held-out normal items plus every anomaly",
        },
        training={
            "config": config.to_dict(),
            "data_defaults": prepared.data_defaults,
            "dataset": prepared.data.description,
            "split_sizes": {
                "train": len(prepared.x_train),
                "validation": len(prepared.x_val),
                "test_normal": len(prepared.test_normal),
                "test_anomalous": int(prepared.splits.test_is_anomaly.sum()),
            },
            "seed": config.seed,
            "device": str(replicas.device),
            "processes": replicas.world_size,
            "data_streamed": prepared.data.streamed,
            "memory_budget_mb": round(prepared.memory_budget / MEGABYTE, 1),
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "stop_reason": result.stop_reason,
            "seconds": round(result.seconds, 2),
            "cpu_seconds": round(result.cpu_seconds, 2),
            # wall-clock seconds of each phase up to calibration (the plots come after)
            "phase_seconds": progress.rounded(),
            "refit": None if final.refit is None else _refit_record(final.refit),
            "architecture_search": final.fitted.search,
            "search_cpu_seconds": round(total_cpu_seconds(final.fitted.search), 2),
            "library_versions": library_versions(),
        },
        reference=calibration.reference,
    )


def write_plots(
    report_dir: Path, final: FinalModel, prepared: PreparedData, calibration: Calibration
) -> None:
    """The report's plots (training.report_writer); streamed data shows a seeded sample of its
    held-out items, since all of them may not fit in memory."""
    splits = prepared.splits
    shown_scores = calibration.test_scores.get(calibration.default_score)
    if isinstance(splits, StreamedSplits):
        shown, picked = report_sample(splits, final.config.seed)
        shown_scores = None if shown_scores is None else shown_scores[picked]
    else:
        shown = splits
    write_report(
        report_dir,
        model=final.model,
        history=final.fitted.result.history,
        refit_history=None if final.refit is None else final.refit.result.history,
        data=prepared.data,
        splits=shown,
        shape=prepared.shape,
        prep=prepared.prep,
        graphs=calibration.graphs,
        test_scores=shown_scores,
        threshold=calibration.thresholds[calibration.default_score].threshold,
        score_type=calibration.default_score,
        seed=final.config.seed,
    )


# --------------------------------------------------------------------------- helpers


def _cross_fits(config: TrainingConfig, x_train: SplitRows, x_val: SplitRows) -> bool:
    """Whether the thresholds come from cross-fitted scores (training.calibration.crossfit)."""
    percentile = config.threshold_percentile
    cross_fit = config.calibration == "cross-fit" or (
        config.calibration == "auto" and needs_cross_fit(len(x_val), percentile)
    )
    if cross_fit and not (isinstance(x_train, np.ndarray) and isinstance(x_val, np.ndarray)):
        # Data streamed from disk is large, so its validation split is large too, and auto
        # never gets here; cross-fitting would hold every row in memory at once.
        raise ValueError(
            "--calibration cross-fit needs the data in memory, and this data set is streamed "
            "from disk (larger than --memory-budget-mb): use --calibration validation"
        )
    return cross_fit


def _refit_record(refit: RefitModel) -> dict[str, Any]:
    """What model.json says of the refit (training.refit)."""
    last = refit.result.history[-1] if refit.result.history else {}
    return {
        "rows": refit.rows,
        "epochs": refit.epochs,
        "final_train_loss": last.get("train_loss"),
        "seconds": round(refit.result.seconds, 2),
        "cpu_seconds": round(refit.result.cpu_seconds, 2),
    }


def _new_staging_folder(out_dir: Path) -> Path:
    """A hidden sibling of `out_dir` to assemble the bundle in, renamed into place at the end."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    # mkdtemp makes the folder private (0700); a bundle must be readable like any other files,
    # e.g. by a server running as another user, so it gets the mode the umask allows.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    return staging


def _bundle_name(out_dir: Path) -> str:
    """A model repository is laid out NAME/VERSION, so --out models/digits-vae/1 names the
    bundle digits-vae; the name is kept to characters that are safe in a URL path."""
    folder = out_dir.resolve().parent.name
    name = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in folder).strip("-.")
    return name or "model"


def _verify_bundle(
    bundle_dir: Path,
    splits: DataSplits | StreamedSplits,
    val_scores: dict[ScoreType, npt.NDArray[np.float64]],
) -> None:
    """Load the finished bundle the way a server will, and check it scores the validation split
    as the trainer did.

    The served path starts from raw user-unit inputs, so this also proves the stored
    preprocessing round-trips.
    """
    loaded = OnnxBundle(bundle_dir)
    step = batch_rows(splits.validation, SCORE_BATCH, copies=len(loaded.epsilon))
    for score_type, expected in val_scores.items():
        served = np.concatenate(
            [loaded.scores(chunk, score_type) for chunk in row_chunks(splits.validation, step)]
        )
        if not np.allclose(served, expected, rtol=1e-5, atol=1e-6):
            worst = float(np.max(np.abs(served - expected) / (np.abs(expected) + 1e-6)))
            raise RuntimeError(
                f"the saved bundle scores the validation split's {score_type} up to "
                f"{worst:.3g} (relative) away from the trainer: bundle and trainer disagree"
            )


def outcome_summary(outcome: TrainingOutcome) -> dict[str, Any]:
    """The figures a person wants after a run, small enough to print."""
    summary = manifest_summary(outcome.manifest)
    summary["total_seconds"] = outcome.total_seconds
    summary["phase_seconds"] = outcome.phase_seconds
    return summary


def manifest_summary(manifest: ModelManifest) -> dict[str, Any]:
    """A bundle's figures, from its model.json."""
    return {
        "bundle": f"{manifest.name}/{manifest.version}",
        "kind": manifest.kind,
        "heldout": manifest.metrics["heldout"],
        "thresholds": {k: v.threshold for k, v in manifest.anomaly.scores.items()},
        "anomaly_detection": manifest.metrics["anomaly_detection"],
        "epochs_run": manifest.training["epochs_run"],
        "training_loop_seconds": manifest.training["seconds"],
        "parity_max_abs_error": manifest.onnx.parity_max_abs_error,
    }
