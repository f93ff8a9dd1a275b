"""`--hidden auto`: a VAE on a table trains an MLP and a linear candidate and keeps the one
with the lower validation loss; everything else trains the one MLP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
import torch

from training.architecture import LINEAR_LR_FACTOR, candidates, fit_best_architecture
from training.config import DEFAULT_LATENT, LINEAR_MAX_LATENT, TrainingConfig
from training.distributed import Replicas
from training.factory import model_input
from training.pipeline import run_training

CPU = Replicas(device=torch.device("cpu"))


@pytest.mark.parametrize(
    ("settings", "is_image", "expected"),
    [
        ({}, False, [("mlp", "256,128", 1e-3), ("linear", "none", 1e-3 * LINEAR_LR_FACTOR)]),
        ({"lr": 2e-3}, False, [("mlp", "256,128", 2e-3), ("linear", "none", 6e-3)]),
        ({}, True, [("mlp", "256,128", 1e-3)]),
        ({"model": "ae"}, False, [("mlp", "256,128", 1e-3)]),
        ({"hidden": "64,32"}, False, [("mlp", "64,32", 1e-3)]),
        ({"hidden": "none"}, False, [("linear", "none", 1e-3)]),
        ({"hidden": "none"}, True, [("linear", "none", 1e-3)]),
    ],
)
def test_only_a_vae_on_a_table_searches(
    settings: dict[str, object], is_image: bool, expected: list[tuple[str, str, float]]
) -> None:
    pool = candidates(TrainingConfig(**settings), is_image, features=30)  # type: ignore[arg-type]
    assert [(c.name, c.hidden) for c in pool] == [(name, hidden) for name, hidden, _ in expected]
    assert [c.lr for c in pool] == pytest.approx([lr for _, _, lr in expected])


@pytest.mark.parametrize(
    ("latent_dim", "features", "codes"),
    [
        (None, 30, [DEFAULT_LATENT, 30]),  # the linear model is full rank
        (None, 4, [DEFAULT_LATENT, 4]),  # narrower than the MLP's code
        (None, 500, [DEFAULT_LATENT, LINEAR_MAX_LATENT]),  # a wide table: capped
        (3, 30, [3, 3]),  # --latent-dim, when given, is every candidate's
    ],
)
def test_the_linear_candidate_gets_a_code_per_column_unless_told(
    latent_dim: int | None, features: int, codes: list[int]
) -> None:
    pool = candidates(TrainingConfig(latent_dim=latent_dim), False, features)
    assert [c.latent_dim for c in pool] == codes


def test_a_single_candidate_keeps_the_default_code() -> None:
    assert [c.latent_dim for c in candidates(TrainingConfig(), True, 64)] == [DEFAULT_LATENT]
    pool = candidates(TrainingConfig(hidden="none"), False, 30)
    assert [c.latent_dim for c in pool] == [DEFAULT_LATENT]


def test_none_builds_a_linear_encoder_and_decoder() -> None:
    assert TrainingConfig(hidden="none").hidden_sizes() == []
    assert TrainingConfig(hidden="auto").hidden_sizes() == [256, 128]
    assert TrainingConfig(hidden=" Auto ").hidden_sizes() == [256, 128]


def _standardised(x: npt.NDArray[np.float64]) -> torch.Tensor:
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return torch.from_numpy(x.astype(np.float32))


def _keeps(x: torch.Tensor, latent_dim: int) -> str:
    config = TrainingConfig(latent_dim=latent_dim, epochs=150, patience=10, plots=False)
    shape = model_input(config, (x.shape[1],), is_image=False)
    cut = int(0.8 * len(x))
    fitted = fit_best_architecture(
        config, shape, "laplace", False, x[:cut], x[cut:], replicas=CPU, show_progress=False
    )
    losses = {record["candidate"]: record["best_val_loss"] for record in fitted.search}
    kept = [str(record["candidate"]) for record in fitted.search if record["kept"]]
    assert kept == [min(losses, key=losses.__getitem__)]  # the lower validation loss wins
    assert fitted.result.best_val_loss == min(losses.values())
    assert fitted.config.hidden == {"mlp": "256,128", "linear": "none"}[kept[0]]
    return kept[0]


def test_rows_near_a_plane_keep_the_linear_candidate() -> None:
    # 160 rows of 20 features lying near a 3-dimensional plane: the MLP overfits the rows, the
    # linear model is the right shape.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 3)) @ rng.normal(size=(3, 20)) + 0.05 * rng.normal(size=(160, 20))
    assert _keeps(_standardised(x), latent_dim=3) == "linear"


def test_rows_on_a_curve_keep_the_mlp() -> None:
    # 600 rows on a closed curve: one code unit can follow it only through a nonlinear decoder.
    t = np.random.default_rng(1).uniform(0, 2 * np.pi, size=600)
    x = np.stack([np.cos(t), np.sin(t), np.cos(2 * t), np.sin(2 * t), np.cos(3 * t)], axis=1)
    assert _keeps(_standardised(x), latent_dim=1) == "mlp"


def test_the_bundle_records_the_search_and_keeps_its_log(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    table = rng.normal(size=(240, 2)) @ rng.normal(size=(2, 8)) + 0.1 * rng.normal(size=(240, 8))
    np.save(tmp_path / "table.npy", table.astype(np.float32))
    config = TrainingConfig(
        dataset=str(tmp_path / "table.npy"), epochs=4, latent_dim=2, iwae_samples=4, plots=False
    )
    outcome = run_training(config, tmp_path / "m" / "1")
    training = outcome.manifest.training
    search = training["architecture_search"]
    assert [record["candidate"] for record in search] == ["mlp", "linear"]
    assert sum(record["kept"] for record in search) == 1
    kept = next(record for record in search if record["kept"])
    # The recorded config is the kept candidate's, so the bundle says what was trained.
    assert training["config"]["hidden"] == kept["hidden"]
    assert training["config"]["lr"] == pytest.approx(kept["lr"])
    assert training["config"]["latent_dim"] == kept["latent_dim"] == 2  # as --latent-dim said
    assert outcome.manifest.latent_dim == 2
    assert training["best_val_loss"] == kept["best_val_loss"]
    assert training["search_cpu_seconds"] == pytest.approx(
        sum(record["cpu_seconds"] for record in search), abs=0.02
    )
    report = outcome.bundle_dir / "report"
    logs = {name: (report / f"training_log.{name}.jsonl").read_text() for name in ("mlp", "linear")}
    assert logs["mlp"] != logs["linear"]
    assert (report / "training_log.jsonl").read_text() == logs[kept["candidate"]]
    assert len((report / "training_log.jsonl").read_text().splitlines()) == kept["epochs_run"]
    # The kept candidate's weights are the ones exported: one layer in a linear encoder.
    encoder = onnx.load(str(outcome.bundle_dir / "encoder.onnx"))
    layers = [node for node in encoder.graph.node if node.op_type in ("Gemm", "MatMul")]
    assert len(layers) == (1 if kept["candidate"] == "linear" else 3)


def test_a_kept_full_rank_linear_model_is_what_the_bundle_serves(tmp_path: Path) -> None:
    # Rows near a 2-dimensional plane in 6 columns, --latent-dim left out: the linear candidate
    # trains a 6-dimensional code, and when it is kept the bundle's code is 6 wide throughout.
    rng = np.random.default_rng(3)
    table = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 6)) + 0.05 * rng.normal(size=(300, 6))
    np.save(tmp_path / "plane.npy", table.astype(np.float32))
    config = TrainingConfig(
        dataset=str(tmp_path / "plane.npy"), epochs=60, iwae_samples=4, plots=False
    )
    outcome = run_training(config, tmp_path / "m" / "1")
    search = outcome.manifest.training["architecture_search"]
    assert [record["latent_dim"] for record in search] == [DEFAULT_LATENT, 6]
    kept = next(record for record in search if record["kept"])
    assert kept["candidate"] == "linear"
    assert outcome.manifest.latent_dim == 6
    assert outcome.manifest.training["config"]["latent_dim"] == 6
    encoder = onnx.load(str(outcome.bundle_dir / "encoder.onnx"))
    mu = next(output for output in encoder.graph.output if output.name == "mu")
    assert mu.type.tensor_type.shape.dim[-1].dim_value == 6
