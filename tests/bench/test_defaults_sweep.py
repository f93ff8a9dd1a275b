"""bench.defaults_sweep: one setting changed reaches the trained model, and the line says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.defaults_sweep import main, sweep_task


def test_the_override_reaches_the_trained_model(tmp_path: Path) -> None:
    line = sweep_task("iris:holdout=0", 0, {"epochs": 2, "kl_warmup_epochs": 0}, tmp_path)
    assert line["epochs"] == 2  # the override, not the default 1000 with early stopping
    assert line["overrides"] == {"epochs": 2, "kl_warmup_epochs": 0}
    assert set(line["auroc"]) == {"recon_mse", "neg_elbo"}  # a held-out class: AUROCs, no ELBO
    assert "heldout_neg_elbo" not in line
    bundle = next(tmp_path.glob("*/1/model.json"))
    config = json.loads(bundle.read_text())["training"]["config"]
    assert config["kl_warmup_epochs"] == 0


def test_a_task_without_anomalies_reports_its_heldout_elbo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(['{"epochs": 1}', "wine"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["heldout_neg_elbo"] > 0
    assert line["auroc"] == {}
