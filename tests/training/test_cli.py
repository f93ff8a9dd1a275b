"""`vae-train` as a user runs it: a real process, real files, exit codes and messages."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from training.cli import main
from training.pipeline import TrainingOutcome

VAE_TRAIN = [sys.executable, "-m", "training.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [*VAE_TRAIN, *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


def test_help_documents_every_option() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for flag in (
        "--dataset",
        "--out",
        "--model",
        "--arch",
        "--latent-dim",
        "--epochs",
        "--batch-size",
        "--lr",
        "--beta",
        "--likelihood",
        "--seed",
        "--threshold-percentile",
        "--name",
        "--version",
        "--image-size",
        "--anomaly-labels",
        "--kl-warmup-epochs",
        "--sparsity-target",
        "--corruption-level",
    ):
        assert flag in result.stdout, flag
    evaluate = _run("evaluate", "--help")
    assert evaluate.returncode == 0
    assert "--dataset" in evaluate.stdout


def test_train_from_the_command_line_writes_a_bundle(tmp_path: Path) -> None:
    out = tmp_path / "models" / "bc" / "2"
    result = _run(
        "--dataset",
        "breast-cancer",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--hidden",
        "8",
        "--latent-dim",
        "2",
        "--no-plots",
        "--name",
        "bc",
        "--version",
        "2",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["bundle"] == "bc/2"
    assert (out / "model.json").is_file()
    assert not (out / "report" / "loss_curves.png").exists()  # --no-plots
    # The loop's time apart from the whole run's, and each phase's (issue 19).
    phases = summary["phase_seconds"]
    assert {"load data", "architecture search", "export", "calibration"} <= set(phases)
    assert summary["training_loop_seconds"] <= phases["architecture search"]
    # Each figure is rounded to 10 ms, so their sum may pass the total by half of that each.
    assert sum(phases.values()) <= summary["total_seconds"] + 0.005 * len(phases)
    written = json.loads((out / "model.json").read_text())["training"]["phase_seconds"]
    assert written["architecture search"] == phases["architecture search"]
    # stderr is a pipe here, as in CI: no phase lines, no progress bars
    assert "vae-train: " not in result.stderr
    assert "epoch" not in result.stderr


def test_a_terminal_sees_each_phase_and_the_progress_bar(tmp_path: Path) -> None:
    """On a real pseudo-terminal, 100 columns wide, as a person at a shell would run it."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    args = ["--dataset", "breast-cancer", "--out", str(tmp_path / "bc" / "1"), "--epochs", "3"]
    process = subprocess.Popen(
        [*VAE_TRAIN, *args, "--hidden", "8", "--no-plots"],
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert process.wait(timeout=300) == 0
    text = seen.decode(errors="replace")
    for phase in ("load data", "architecture search", "export", "calibration"):
        assert f"vae-train: {phase}" in text, phase
    assert "epoch" in text  # the training loop's bar, with its loss
    assert "loss" in text
    assert "calibration folds" in text  # the fold models' bar


def test_bad_data_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b,c\n1,2,3\n4,5\n")
    result = _run("--dataset", str(ragged), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "ragged.csv" in result.stderr
    assert result.stderr.startswith("vae-train: error:")
    assert not (tmp_path / "out").exists()


def test_bad_flag_value_is_a_clear_error(tmp_path: Path) -> None:
    result = _run("--dataset", "digits", "--out", str(tmp_path / "o"), "--latent-dim", "0")
    assert result.returncode == 2
    assert "--latent-dim" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_scores_other_data_through_onnx(
    digits_vae: TrainingOutcome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scores_csv = tmp_path / "scores.csv"
    code = main(
        [
            "evaluate",
            str(digits_vae.bundle_dir),
            "--dataset",
            "digits:holdout=0",
            "--scores-out",
            str(scores_csv),
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_items"] == 1797
    assert report["score_type"] == digits_vae.manifest.anomaly.default_score
    with scores_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1797
    flagged = sum(int(row["is_anomaly_flagged"]) for row in rows)
    assert flagged == report["n_flagged"]
    scores = np.array([float(row["score"]) for row in rows])
    assert np.all(np.isfinite(scores))
    # The reported AUROC is the one of the written scores against the zeros held out.
    is_zero = load_digits().target == 0
    assert report["detection"]["auroc"] == pytest.approx(roc_auc_score(is_zero, scores), abs=1e-6)


def test_evaluate_refuses_data_of_the_wrong_width(digits_vae: TrainingOutcome) -> None:
    code = main(["evaluate", str(digits_vae.bundle_dir), "--dataset", "breast-cancer"])
    assert code == 2


def test_evaluate_refuses_a_missing_bundle(tmp_path: Path) -> None:
    assert main(["evaluate", str(tmp_path / "nothing"), "--dataset", "digits"]) == 2
