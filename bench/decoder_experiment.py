"""What leaving the factorised decoder would buy: an experiment for issue 9's -ELBO target, not
a product path.

The bundle contract (DESIGN.md section 2) has the decoder map a code z to the mean of a
factorised p(x | z): every pixel independent given z, which is what lets `/decode`,
`/reconstruct` and `/sample` be one pass of `decoder.onnx`. Every variant measured inside that
contract landed within 1.5% of the reference recipe's held-out -ELBO on digits (bench/QUALITY.md).
This script measures decoders that also see the pixels already generated,
p(x | z) = prod_i p(x_i | x_<i, z) in raster order, with logits = (our MLP decoder of z) + a
context term:

- `factorised`: no context term; our default model, as the baseline;
- `local2`: a linear term in the pixel to the left and the one above;
- `local5`: a linear term in two to the left and three in the row above;
- `made`: a masked MLP (MADE, Germain et al. 2015) over every earlier pixel, fed z too.

Training uses the project's trainer and defaults (`training.train.train_model`); the -ELBO of a
context decoder is exact with teacher forcing (one pass). Development data only
(`bench.quality_select`): the `likelihood` set (digits' benchmark train part split again, against
the reference recipe trained for the CPU time ours took) and the `images` set (`digits/K,J`,
AUROC). Besides the likelihood it reports how much the code is used: the KL term and the active
units (code dimensions whose posterior mean varies over items by more than 0.01, Burda et al.
2016). The `recon_mse` column of a context decoder is its one-step-ahead prediction error at
z = mu (for `factorised` this is exactly the bundles' recon_mse).

    python -m bench.decoder_experiment --decoders factorised,local2,local5 --sets likelihood
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from bench.quality_select import IMAGE_TASKS, SCORE_SAMPLES, prepare
from bench.reference_vae import train_reference
from training.factory import build_model
from training.models import VAE, LossTerms, gaussian_kl_to_standard_normal
from training.train import train_model

DECODERS = ("factorised", "local2", "local5", "made")
# (row, column) offsets of the earlier pixels each local context reads
NEIGHBOURS = {
    "local2": ((0, -1), (-1, 0)),
    "local5": ((0, -2), (0, -1), (-1, -1), (-1, 0), (-1, 1)),
}
MADE_HIDDEN = (256, 256)
IWAE_SAMPLES = 100
EVAL_SEED = 20240601
ACTIVE_UNIT_VARIANCE = 0.01


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out_features, in_features)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.get_buffer("mask")
        return F.linear(x, self.weight * mask, self.bias)


def neighbour_mask(side: int, offsets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(D, D): output pixel i reads input pixel j where j is one of i's earlier neighbours."""
    mask = torch.zeros(side * side, side * side)
    for i in range(side * side):
        row, column = divmod(i, side)
        for dr, dc in offsets:
            r, c = row + dr, column + dc
            if 0 <= r < side and 0 <= c < side:
                mask[i, r * side + c] = 1.0
    return mask


class LocalContext(nn.Module):
    def __init__(self, side: int, offsets: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self.linear = MaskedLinear(neighbour_mask(side, offsets))
        nn.init.zeros_(self.linear.weight)  # starts as the factorised model

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out


class MadeContext(nn.Module):
    """Masked MLP: output i depends on pixels 0..i-1 (and on z through every hidden layer)."""

    def __init__(self, dim: int, code: int, hidden: Sequence[int], seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        degrees = [torch.arange(1, dim + 1)]
        degrees += [torch.randint(1, dim, (h,), generator=generator) for h in hidden]
        self.layers = nn.ModuleList(
            MaskedLinear(after[:, None] >= before[None, :])
            for before, after in itertools.pairwise(degrees)
        )
        self.from_code = nn.ModuleList(nn.Linear(code, h) for h in hidden)
        self.out = MaskedLinear(degrees[0][:, None] > degrees[-1][None, :])

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, from_code in zip(self.layers, self.from_code, strict=True):
            h = F.relu(layer(h) + from_code(z))
        out: torch.Tensor = self.out(h)
        return out


class ContextVAE(nn.Module):
    """Our VAE (encoder and MLP decoder) plus an optional autoregressive context term."""

    def __init__(self, base: VAE, context: nn.Module | None) -> None:
        super().__init__()
        self.base = base
        self.context = context

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.base.encode(x)
        return mu, logvar

    def logits(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits of p(x_i | x_<i, z), flattened: (B, D)."""
        out: torch.Tensor = self.base.decoder(z).flatten(1)
        if self.context is not None:
            out = out + self.context(x.flatten(1), z)
        return out


def build(decoder: str, base: VAE, side: int, code: int, seed: int) -> ContextVAE:
    if decoder == "factorised":
        return ContextVAE(base, None)
    if decoder in NEIGHBOURS:
        return ContextVAE(base, LocalContext(side, NEIGHBOURS[decoder]))
    if decoder == "made":
        return ContextVAE(base, MadeContext(side * side, code, MADE_HIDDEN, seed))
    raise ValueError(f"unknown decoder {decoder!r}")


def nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | z), Bernoulli per pixel on grey levels, summed: (B,)."""
    return F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)


def objective(
    model: nn.Module, x: torch.Tensor, kl_weight: float, generator: torch.Generator | None
) -> LossTerms:
    assert isinstance(model, ContextVAE)
    mu, logvar = model.encode(x)
    z = VAE.reparameterise(mu, logvar, generator)
    reconstruction = nll(model.logits(x, z), x)
    kl = gaussian_kl_to_standard_normal(mu, logvar)
    loss = (reconstruction + kl_weight * kl).mean()
    return LossTerms(loss, reconstruction, kl, torch.zeros(()))


def heldout(model: ContextVAE, x: torch.Tensor) -> dict[str, float]:
    generator = torch.Generator().manual_seed(EVAL_SEED)
    model.eval()
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = VAE.reparameterise(mu, logvar, generator)
        reconstruction = nll(model.logits(x, z), x)
        kl = gaussian_kl_to_standard_normal(mu, logvar)
        eps = torch.randn((IWAE_SAMPLES, *mu.shape), generator=generator)
        zs = mu + torch.exp(0.5 * logvar) * eps  # (K, B, d)
        repeated = x.flatten(1).repeat(IWAE_SAMPLES, 1)
        log_px = -nll(model.logits(repeated, zs.reshape(-1, mu.shape[1])), repeated)
        log_pz = -0.5 * (zs.pow(2) + math.log(2 * math.pi)).sum(-1)
        log_qz = -0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi)).sum(-1)
        log_w = log_px.reshape(IWAE_SAMPLES, -1) + log_pz - log_qz
        iwae = -(torch.logsumexp(log_w, 0) - math.log(IWAE_SAMPLES))
        active = int((mu.var(dim=0) > ACTIVE_UNIT_VARIANCE).sum())
    return {
        "neg_elbo": float((reconstruction + kl).mean()),
        "iwae": float(iwae.mean()),
        "reconstruction": float(reconstruction.mean()),
        "kl": float(kl.mean()),
        "active_units": active,
        "code_size": int(mu.shape[1]),
    }


def scores(model: ContextVAE, x: torch.Tensor, seed: int) -> dict[str, np.ndarray[Any, Any]]:
    """neg_elbo with SCORE_SAMPLES posterior samples (as the bundles), and recon_mse at z = mu."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        mu, logvar = model.encode(x)
        eps = torch.randn((SCORE_SAMPLES, 1, mu.shape[1]), generator=generator)
        z = (mu[None] + torch.exp(0.5 * logvar)[None] * eps).reshape(-1, mu.shape[1])
        repeated = x.flatten(1).repeat(SCORE_SAMPLES, 1)
        sampled = nll(model.logits(repeated, z), repeated).reshape(SCORE_SAMPLES, -1)
        neg_elbo = sampled.mean(0) + gaussian_kl_to_standard_normal(mu, logvar)
        prediction = torch.sigmoid(model.logits(x, mu))
        recon_mse = (prediction - x.flatten(1)).pow(2).mean(1)
    return {"neg_elbo": neg_elbo.numpy(), "recon_mse": recon_mse.numpy()}


def measure(decoder: str, name: str, seed: int) -> dict[str, Any]:
    prepared = prepare(name, seed, {})
    config, splits, shape = prepared.config, prepared.splits, prepared.shape
    if prepared.likelihood != "bernoulli":
        raise ValueError(f"{name}: the context decoders are Bernoulli only")
    train, validation, test = prepared.train, prepared.validation, prepared.heldout
    torch.manual_seed(seed)
    base = build_model(config, shape, prepared.likelihood)
    assert isinstance(base, VAE)
    side = math.isqrt(int(np.prod(shape.shape)))
    model = build(decoder, base, side, config.code_size(), seed)
    result = train_model(model, objective, train, validation, config, show_progress=False)
    row: dict[str, Any] = {
        "decoder": decoder,
        "set": name,
        "seed": seed,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "train_cpu_s": round(result.cpu_seconds, 1),
    }
    anomalies = splits.test_is_anomaly
    if anomalies.any():
        for score, values in scores(model, test, seed).items():
            row[f"auroc_{score}"] = round(float(roc_auc_score(anomalies, values)), 4)
        return row
    figures = heldout(model, test)
    row.update({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()})
    reference = train_reference(
        torch.cat([train, validation]).flatten(1),
        test.flatten(1),
        budget_cpu_s=result.cpu_seconds,
        iwae_samples=IWAE_SAMPLES,
        seed=seed,
    )
    row["reference_neg_elbo"] = round(reference.heldout["neg_elbo"], 3)
    row["ours_vs_reference"] = round(row["neg_elbo"] / reference.heldout["neg_elbo"] - 1, 4)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decoders", default=",".join(DECODERS))
    parser.add_argument("--sets", default="likelihood,images", help="likelihood, images")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # CPU seconds are seconds of one core, as in bench/quality/
    groups = {"likelihood": ["digits"], "images": IMAGE_TASKS}
    names = [n for group in args.sets.split(",") for n in groups[group]]
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in names:
            for decoder in args.decoders.split(","):
                print(json.dumps(measure(decoder, name, seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
