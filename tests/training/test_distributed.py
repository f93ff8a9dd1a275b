"""Two processes under torchrun train what one process trains, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import training.architecture
from bundle.runtime import OnnxBundle
from training.cli import main
from training.config import TrainingConfig
from training.data import load_dataset
from training.distributed import LAUNCH_VARIABLES
from training.factory import Objective, build_objective
from training.models import LossTerms
from training.pipeline import run_training

ROOT = Path(__file__).resolve().parents[2]
# A plain autoencoder draws no noise, so one process and two follow the same optimisation path
# and may differ only by the order of floating-point sums. A batch of 63 splits 32 + 31, so
# every step checks that unequal shares are weighted into the global-batch mean (unweighted,
# the encoders below differed by 0.04; weighted, by 1e-6).
SETTINGS: dict[str, str | int | bool] = {
    "dataset": "digits",
    "model": "ae",
    "epochs": 6,
    "batch_size": 63,
    "hidden": "32",
    "latent_dim": 4,
    "iwae_samples": 4,
    "plots": False,
}


def _two_share_objective(
    build: Callable[[TrainingConfig], Objective],
) -> Callable[[TrainingConfig], Objective]:
    """`build_objective` whose training loss is the two replicas' loss computed in one process:
    the batch cut where two processes cut it, each share's mean loss weighted by its size."""

    def build_two_share(config: TrainingConfig) -> Objective:
        inner = build(config)

        def objective(
            model: torch.nn.Module, x: torch.Tensor, kl_weight: float, g: torch.Generator | None
        ) -> LossTerms:
            if not torch.is_grad_enabled():  # validation: the whole batch, as each replica does
                return inner(model, x, kl_weight, g)
            first, second = x[: len(x) // 2], x[len(x) // 2 :]
            a, b = inner(model, first, kl_weight, g), inner(model, second, kl_weight, g)
            return LossTerms(
                a.loss * (len(first) / len(x)) + b.loss * (len(second) / len(x)),
                torch.cat([a.reconstruction, b.reconstruction]),
                torch.cat([a.kl, b.kl]),
                a.penalty,
            )

        return objective

    return build_two_share


@pytest.fixture
def not_launched(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*LAUNCH_VARIABLES, "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def _torchrun(out: Path, audit: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
        "AUDIT_WATCH": str(out.parent.parent),
        "AUDIT_RECORD_DIR": str(audit),
    }
    # --standalone: a rendezvous on a free local port, so parallel runs never collide.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "tests.training.audited_cli", "--distributed",
               *flags, "--out", str(out)]  # fmt: skip
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.usefixtures("one_torch_thread", "not_launched")
def test_two_processes_train_what_one_process_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = run_training(TrainingConfig(**SETTINGS), tmp_path / "one" / "m" / "1")  # type: ignore[arg-type]
    with monkeypatch.context() as patch:
        patch.setattr(
            training.architecture,
            "build_objective",
            _two_share_objective(build_objective),
        )
        shares = run_training(TrainingConfig(**SETTINGS), tmp_path / "shares" / "m" / "1")  # type: ignore[arg-type]

    out = tmp_path / "two" / "m" / "1"
    audit = tmp_path / "audit"
    audit.mkdir()
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items()]
    flags = [flag for flag in flags if not flag.startswith("--plots")]
    completed = _torchrun(out, audit, *flags, "--no-plots")
    assert completed.returncode == 0, completed.stdout + completed.stderr

    two = OnnxBundle(out)
    assert two.manifest.training["processes"] == 2
    assert two.manifest.training["config"]["distributed"] is True
    x = load_dataset("digits").x

    def codes(bundle_dir: Path) -> np.ndarray:
        bundle = OnnxBundle(bundle_dir)
        return bundle.encode_model(bundle.to_model_input(x)).mu

    # Exactly the gradient of the global batch's share-weighted mean: bit for bit what one
    # process computes from the same two shares (DDP's extra factor 2 is exact in binary).
    np.testing.assert_array_equal(codes(out), codes(shares.bundle_dir))
    # ... which is the single-process mean up to the order of floating-point sums.
    difference = np.abs(codes(out) - codes(one.bundle_dir))
    assert difference.max() < 1e-3, difference.max()
    assert two.manifest.training["best_epoch"] == one.result.best_epoch
    assert two.manifest.training["best_val_loss"] == pytest.approx(one.result.best_val_loss, 1e-5)
    log = [json.loads(line) for line in (out / "report" / "training_log.jsonl").open()]
    assert [r["val_loss"] for r in log] == pytest.approx(
        [r["val_loss"] for r in one.result.history], rel=1e-5
    )
    assert [r["train_loss"] for r in log] == pytest.approx(
        [r["train_loss"] for r in one.result.history], rel=1e-5
    )

    # Rank 0 made the bundle (the record sees its writes); rank 1 changed nothing at all.
    written: dict[str, list[Path]] = {event: [] for event in ("open", "os.mkdir", "os.rename")}
    for event, path in json.loads((audit / "rank0.json").read_text()):
        written.setdefault(event, []).append(Path(path))
    assert any(path.name == "encoder.onnx" for path in written["open"])
    assert any(path.name == "training_log.jsonl" for path in written["open"])
    assert any(path.name.startswith(".1.") for path in written["os.mkdir"])  # the staging folder
    assert out in written["os.rename"]
    assert json.loads((audit / "rank1.json").read_text()) == []
    # One summary on stdout: rank 1 prints nothing of its own.
    assert completed.stdout.count('"parity_max_abs_error"') == 1


@pytest.mark.usefixtures("not_launched")
def test_distributed_outside_torchrun_names_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--distributed", "--dataset", "digits", "--out", str(tmp_path / "m" / "1")])
    assert code == 2
    error = capsys.readouterr().err
    assert "torchrun --nproc-per-node N -m training.cli --distributed" in error
    assert "RANK" in error
    assert not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match="torchrun"):
        run_training(TrainingConfig(distributed=True), tmp_path / "m" / "1")


@pytest.mark.usefixtures("not_launched")
def test_several_processes_without_distributed_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["--dataset", "digits", "--out", str(tmp_path / "m" / "1")])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("vae-train [rank 1/2]: error:")
    assert "add --distributed" in error
    assert not (tmp_path / "m").exists()


@pytest.mark.usefixtures("not_launched")
def test_the_global_batch_must_give_every_process_an_item(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "4", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**launch, "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    arguments = ["--distributed", "--batch-size", "3", "--dataset", "digits"]
    code = main([*arguments, "--out", str(tmp_path / "m" / "1")])
    assert code == 2
    assert "--batch-size 3 is the global batch, shared by 4 processes" in capsys.readouterr().err
