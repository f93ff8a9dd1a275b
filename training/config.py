"""Every knob of a training run, with the reason for its default beside it.

`TrainingConfig` is recorded whole in the bundle's `model.json`, and the CLI is generated from
these fields (their `help` metadata is what `vae-train --help` prints), so a flag can never
drift from the config it sets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ModelName = Literal["vae", "ae", "sparse-ae", "denoising-ae"]
ArchName = Literal["mlp", "conv"]
LikelihoodName = Literal["auto", "bernoulli", "gaussian", "laplace"]
CorruptionName = Literal["masking", "gaussian"]
PreprocessingName = Literal["auto", "minmax", "standard", "none"]
ScoreName = Literal["auto", "recon_mse", "neg_elbo", "recon_complexity"]
CalibrationName = Literal["auto", "validation", "cross-fit"]
RefitName = Literal["auto", "off"]


# The MLP's hidden sizes: what --hidden auto builds, and one of its candidates for tables.
DEFAULT_HIDDEN = (256, 128)
# The MLP's code size when --latent-dim is left out: small enough to compress, 8 suits digits.
DEFAULT_LATENT = 8
# The code size cap of --hidden auto's linear candidate (one per column up to here), so a wide
# table does not get a code, and an /encode answer, as wide as itself.
LINEAR_MAX_LATENT = 64


def option(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainingConfig:
    # --- data ---
    dataset: str = option(
        "digits",
        "built-in name (digits, digits:holdout=K, mnist-5k, mnist-5k:holdout=K, breast-cancer, "
        "wine, iris) or a path: .npy, .npz, .csv, MNIST IDX (*-idx3-ubyte[.gz]) or a folder of "
        "PNG/JPEG images; options follow ':', e.g. data.csv:label=class,holdout=3",
    )
    anomaly_labels: str | None = option(
        None, "file with one 0/1 per row marking anomalies: never trained on, used to score"
    )
    image_size: str | None = option(
        None, "HxW to resize images to (e.g. 28x28); needed when images differ in size"
    )
    validation_fraction: float = option(
        0.15, "share of normal rows for early stopping and threshold calibration"
    )
    test_fraction: float = option(
        0.15, "share of normal rows held out for the reported figures (anomalies always go here)"
    )
    preprocessing: PreprocessingName = option(
        "auto", "auto = minmax (one global range) for images, standard (per column) for tables"
    )

    memory_budget_mb: int | None = option(
        None,
        "MB the training data may take; a .npy over it streams from disk (memory-mapped, read a "
        "chunk or a batch at a time, training the same model as from memory), other formats "
        "over it are refused; None = an eighth of RAM (or of the container's limit), shared by "
        "the processes on this machine, since training from memory holds ~4 copies of the data",
    )

    # --- model ---
    model: ModelName = option("vae", "vae, ae (plain), sparse-ae or denoising-ae")
    arch: ArchName = option(
        "mlp",
        "mlp for any data; conv (strided conv encoder and decoder) for images. The MLP stays "
        "the images' default: on mnist-5k a conv net (32,64 channels, code 20) modelled held-out "
        "digits better but ranked a held-out class worse (AUROC holdout=1 0.60 vs 0.87, "
        "holdout=9 0.63 vs 0.74) in 2.5x the time (bench/quality_defaults.md)",
    )
    latent_dim: int | None = option(
        None,
        f"size of the code; default for images {DEFAULT_LATENT} up to 16x16 pixels and 20 "
        "above (mnist-5k: -ELBO 116.9 -> 113.3 nats, held-out digits ranked as well; "
        f"training.defaults), for tables {DEFAULT_LATENT}, "
        "except for --hidden auto's linear candidate on a table, which gets one dimension per "
        f"column (up to {LINEAR_MAX_LATENT}): a full-rank probabilistic PCA, whose KL term "
        "switches off the dimensions the data does not use (bench/QUALITY.md)",
    )
    hidden: str = option(
        "auto",
        "MLP hidden sizes, encoder order (the decoder mirrors them), 'none' for a linear "
        "encoder and decoder, or auto: for a VAE on a table, train two candidates, the MLP "
        "256,128 and the linear one (at 3x --lr), and keep the one with the lower validation "
        "loss (a linear model won on breast-cancer's rows, the MLP on wine and iris: "
        "bench/QUALITY.md); 256,128 for everything else (on mnist-5k the textbook's one layer "
        "of 400 modelled held-out digits better, 111.7 vs 113.3 nats, and ranked held-out 1s "
        "worse, AUROC 0.80 vs 0.87: bench/quality_defaults.md)",
    )
    conv_channels: str = option("32,64", "conv channels per stride-2 layer (arch=conv)")
    tied_weights: bool = option(
        False,
        "ae, sparse-ae and denoising-ae (mlp or conv): decoder layer i uses the transpose of "
        "the matching encoder layer's weight (a transposed conv: the conv's adjoint) with a "
        "bias of its own: half the weights, the classic tied autoencoder; not for a VAE, whose "
        "encoder ends in mu and logvar",
    )
    likelihood: LikelihoodName = option(
        "auto",
        "auto = bernoulli for images (values in [0, 1]), laplace for tables: heavier-tailed "
        "than gaussian, so one odd column does not swamp a record's score (bench/QUALITY.md)",
    )
    sigma: str = option(
        "learned",
        "decoder scale in model units (gaussian: std, laplace: b), or 'learned': one global "
        "scale fitted with the weights (Rybkin et al. 2021), which balances reconstruction "
        "against KL by itself",
    )
    beta: float = option(1.0, "weight of the KL term; 1 is the true ELBO")
    kl_warmup_epochs: int = option(
        10,
        "epochs over which the KL weight ramps linearly from 0 to beta, against collapse; 10 "
        "for every data kind: on mnist-5k 0 / 10 / 30 epochs gave held-out -ELBO 114.1 / 113.3 "
        "/ 112.4 nats and held-out 9s AUROC 0.76 / 0.74 / 0.71, a longer ramp modelling better "
        "and ranking worse (bench/quality_defaults.md)",
    )
    sparsity_target: float = option(
        0.05, "sparse-ae: target mean activation rho of each code unit (Ng's notes)"
    )
    sparsity_weight: float = option(3.0, "sparse-ae: weight of the KL(rho || rho_hat) penalty")
    corruption: CorruptionName = option(
        "masking", "denoising-ae: masking noise zeroes inputs; gaussian adds noise"
    )
    corruption_level: float = option(
        0.3, "denoising-ae: share of inputs masked, or the noise std in model units"
    )

    # --- optimisation ---
    epochs: int = option(
        1000, "upper bound; early stopping ended every run in bench/QUALITY.md well before it"
    )
    batch_size: int = option(64, "small data sets train best with many small steps")
    min_steps_per_epoch: int = option(
        16,
        "an epoch repeats passes over the data until it has made this many optimiser steps: "
        "with 1, a 200-row table stopped after ~70 steps, barely trained (bench/QUALITY.md)",
    )
    lr: float = option(1e-3, "Adam's usual step size")
    patience: int = option(20, "epochs without validation improvement before stopping")
    weight_averaging: float = option(
        0.999,
        "decay of the running mean of the weights that is validated and kept (0: off); "
        "Adam's last iterate bounces around the minimum its mean sits closer to",
    )
    min_delta: float = option(1e-4, "relative improvement that counts as progress")
    seed: int = option(0, "seeds the split, the weights and every noise draw")
    device: str = option("cpu", "cpu, cuda, or auto (cuda when present)")
    distributed: bool = option(
        False,
        "data-parallel training, one process per replica, started by torchrun: 'torchrun "
        "--standalone --nproc-per-node N -m training.cli --distributed ...'; --batch-size stays "
        "the global batch, each process taking its share, so the optimisation is the one of a "
        "single process; rank 0 alone writes the bundle",
    )

    # --- evaluation and calibration ---
    threshold_percentile: float = option(
        99.0, "threshold = this percentile of validation scores (about 1% false alarms)"
    )
    calibration: CalibrationName = option(
        "auto",
        "where the threshold's scores come from: validation = the validation split; cross-fit "
        "= every train and validation item, scored by one of --calibration-folds models that "
        "did not train on it; auto = cross-fit when fewer than 2 validation items are expected "
        "above the percentile (under 200 at 99), else validation",
    )
    calibration_folds: int = option(5, "folds of --calibration cross-fit (that many more models)")
    refit: RefitName = option(
        "auto",
        "auto = where the threshold is cross-fitted (small data), train the kept model again "
        "on train + validation rows for the epochs early stopping chose, and each fold model "
        "on its rows for as many, so the model served sees every row; off = keep the "
        "early-stopped model",
    )
    score: ScoreName = option(
        "auto",
        "default anomaly score: auto = recon_complexity for images: log reconstruction error "
        "minus what the training images' fit expects at the image's total variation, since "
        "a plain error, and a likelihood more so, rewards simple inputs (mnist-5k:holdout=1: "
        "AUROC 0.34 recon_mse, 0.11 neg_elbo, 0.93 recon_complexity; bench/QUALITY.md); "
        "neg_elbo for tables (VAEs), which also counts how far the code lies from the prior; "
        "recon_mse for autoencoders of tables",
    )
    elbo_samples: int = option(
        16, "posterior samples per item in the neg_elbo score (shared fixed epsilon)"
    )
    iwae_samples: int = option(100, "K of the importance-weighted -log p(x) estimate")

    # --- bundle ---
    name: str | None = option(
        None, "bundle name; default: the folder above --out (models/NAME/VERSION layout)"
    )
    version: str | None = option(None, "bundle version; default: the --out folder's name")
    opset: int = option(18, "ONNX opset of the exported graphs")
    plots: bool = option(True, "write the report/ plots into the bundle")

    def hidden_sizes(self) -> list[int]:
        """The layers a model is built with; `auto` builds the MLP until the architecture
        search (training.architecture) has replaced it by its choice."""
        text = self.hidden.strip().lower()
        if text == "auto":
            return list(DEFAULT_HIDDEN)
        if text == "none":
            return []
        return _int_list(self.hidden, "hidden")

    def code_size(self) -> int:
        """The code size a model is built with: --latent-dim, or the default when left out
        (the architecture search gives each candidate its own before building it)."""
        return DEFAULT_LATENT if self.latent_dim is None else self.latent_dim

    def conv_channel_sizes(self) -> list[int]:
        return _int_list(self.conv_channels, "conv_channels")

    def image_size_hw(self) -> tuple[int, int] | None:
        if self.image_size is None:
            return None
        parts = self.image_size.lower().replace(",", "x").split("x")
        problem = f"--image-size {self.image_size!r}: expected HxW or one size, e.g. 28x28"
        if len(parts) not in (1, 2):
            raise ValueError(problem)
        try:
            sizes = [int(part) for part in parts]
        except ValueError as error:
            raise ValueError(problem) from error
        height, width = sizes if len(sizes) == 2 else (sizes[0], sizes[0])
        if height < 1 or width < 1:
            raise ValueError(f"--image-size {self.image_size!r}: sizes must be positive")
        return height, width

    def sigma_value(self) -> float | None:
        """None when sigma is learned."""
        if self.sigma == "learned":
            return None
        try:
            value = float(self.sigma)
        except ValueError as error:
            raise ValueError(f"--sigma {self.sigma!r}: a positive number or 'learned'") from error
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"--sigma {self.sigma!r}: must be a positive finite number")
        return value

    def validate(self) -> None:
        """Fail before any data is read, with a message that names the flag."""
        checks = [
            (
                self.latent_dim is None or self.latent_dim >= 1,
                "--latent-dim must be at least 1",
            ),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.min_steps_per_epoch >= 1, "--min-steps-per-epoch must be at least 1"),
            (0 <= self.weight_averaging < 1, "--weight-averaging must lie in [0, 1)"),
            (self.lr > 0, "--lr must be positive"),
            (self.beta >= 0, "--beta must be non-negative"),
            (self.kl_warmup_epochs >= 0, "--kl-warmup-epochs must be non-negative"),
            (0 < self.sparsity_target < 1, "--sparsity-target must lie in (0, 1)"),
            (self.sparsity_weight >= 0, "--sparsity-weight must be non-negative"),
            (self.corruption_level >= 0, "--corruption-level must be non-negative"),
            (
                self.corruption != "masking" or self.corruption_level < 1,
                "--corruption-level for masking must be below 1",
            ),
            (self.patience >= 1, "--patience must be at least 1"),
            (0 < self.validation_fraction < 1, "--validation-fraction must lie in (0, 1)"),
            (0 <= self.test_fraction < 1, "--test-fraction must lie in [0, 1)"),
            (
                self.validation_fraction + self.test_fraction < 1,
                "--validation-fraction plus --test-fraction must stay below 1",
            ),
            (0 < self.threshold_percentile < 100, "--threshold-percentile must lie in (0, 100)"),
            (self.calibration_folds >= 2, "--calibration-folds must be at least 2"),
            (self.elbo_samples >= 1, "--elbo-samples must be at least 1"),
            (self.iwae_samples >= 1, "--iwae-samples must be at least 1"),
            (self.opset >= 17, "--opset must be at least 17"),
            (self.device in ("cpu", "cuda", "auto"), "--device must be cpu, cuda or auto"),
            (
                self.memory_budget_mb is None or self.memory_budget_mb >= 1,
                "--memory-budget-mb must be at least 1",
            ),
            (
                not (self.score == "neg_elbo" and self.model != "vae"),
                "--score neg_elbo needs --model vae",
            ),
            (
                not (self.tied_weights and self.model == "vae"),
                "--tied-weights needs --model ae, sparse-ae or denoising-ae: a VAE's encoder "
                "ends in mu and logvar (2 x --latent-dim wide), whose transpose does not fit "
                "a decoder of the --latent-dim wide code",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.hidden_sizes()
        self.conv_channel_sizes()
        self.image_size_hw()
        self.sigma_value()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int_list(text: str, flag: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(
            f"--{flag.replace('_', '-')} {text!r}: comma-separated integers"
        ) from error
    if not sizes or any(size < 1 for size in sizes):
        raise ValueError(f"--{flag.replace('_', '-')} {text!r}: one or more positive integers")
    return sizes
