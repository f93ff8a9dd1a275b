"""Data larger than the memory budget stream from disk, and train what memory would have."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle.preprocessing import PreprocessingKind, fit_preprocessing
from bundle.runtime import OnnxBundle
from training.cli import main
from training.config import TrainingConfig
from training.data import DataError, load_dataset
from training.factory import build_model, build_objective, model_input, resolve_likelihood
from training.pipeline import choose_preprocessing, run_training
from training.streaming.budget import MEGABYTE
from training.streaming.mapped_rows import MappedRows
from training.streaming.preprocessing import fit_preprocessing_in_chunks
from training.streaming.rows import model_rows, torch_rows
from training.streaming.splits import StreamedSplits, split_for_training
from training.train import train_model

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _subprocess_env() -> dict[str, str]:
    """The code under test on the path, one thread (see one_torch_thread)."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _table(path: Path, rows: int, columns: int, dtype: type = np.float32) -> np.ndarray:
    """Rows near a 6-dimensional subspace, plus noise: something worth compressing."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 6)) @ rng.standard_normal((6, columns))
    x = (x + 0.1 * rng.standard_normal((rows, columns))).astype(dtype)
    np.save(path, x, allow_pickle=False)
    return x


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((3000, 40), np.float64), ((3000, 6, 7), np.uint8)],
    ids=["table", "images"],
)
def test_streamed_splits_hold_the_rows_memory_holds(
    tmp_path: Path, shape: tuple[int, ...], dtype: type
) -> None:
    path = tmp_path / "data.npy"
    values: np.ndarray = np.random.default_rng(1).integers(0, 200, size=shape).astype(dtype)
    np.save(path, values, allow_pickle=False)
    config = TrainingConfig(dataset=str(path))
    float32_size = values.size * 4  # about 0.5 MB
    in_memory = load_dataset(str(path), memory_budget=float32_size)
    streamed = load_dataset(str(path), memory_budget=float32_size - 1)
    assert not in_memory.streamed
    assert streamed.streamed
    assert isinstance(streamed.x, np.memmap)  # mapped, not read
    assert streamed.feature_shape == in_memory.feature_shape
    assert streamed.is_image == in_memory.is_image == (len(shape) == 3)

    memory_splits = split_for_training(in_memory, config, float32_size)
    streamed_splits = split_for_training(streamed, config, float32_size // 32)
    assert isinstance(streamed_splits, StreamedSplits)
    assert streamed_splits.train.chunk_rows < len(streamed_splits.train)  # several chunks
    for name in ("train", "validation", "test"):
        rows: MappedRows = getattr(streamed_splits, name)
        expected = getattr(memory_splits, name)
        np.testing.assert_array_equal(rows.read(slice(None)), expected)
        np.testing.assert_array_equal(np.concatenate(list(rows.chunks())), expected)
        shuffled = np.random.default_rng(2).permutation(len(rows))[:50]
        np.testing.assert_array_equal(rows.read(shuffled), expected[shuffled])
    np.testing.assert_array_equal(streamed_splits.test_is_anomaly, memory_splits.test_is_anomaly)


@pytest.mark.parametrize("kind", ["minmax", "standard", "none"])
@pytest.mark.parametrize("per_feature", [True, False])
def test_normalisation_fitted_in_chunks_is_the_in_memory_one(
    kind: PreprocessingKind, per_feature: bool
) -> None:
    rng = np.random.default_rng(3)
    # Columns of different scales and offsets, and a constant one (scale falls back to 1).
    x = (rng.standard_normal((2501, 5)) * [1, 10, 1e-3, 5, 0] + [0, -3, 100, 7, 2]).astype(
        np.float32
    )
    expected = fit_preprocessing(x, kind, per_feature=per_feature)
    for chunk_rows in (len(x), 97, 1):
        rows = MappedRows(x, np.arange(len(x)), chunk_rows)
        fitted = fit_preprocessing_in_chunks(rows, kind, per_feature=per_feature)
        # float32 parameters from float64 statistics: equal, or one rounding step apart.
        np.testing.assert_allclose(fitted.offset, expected.offset, rtol=2e-7, atol=1e-12)
        np.testing.assert_allclose(fitted.scale, expected.scale, rtol=2e-7)
        if chunk_rows == len(x):
            assert fitted.to_manifest() == expected.to_manifest()


def _data_path_peak(path: Path, memory_budget: int | None) -> tuple[int, bool, float]:
    """Peak bytes of Python and numpy memory while a run reads, splits and normalises the data
    and trains two epochs on it (training.pipeline's steps, without the export after them)."""
    config = TrainingConfig(
        dataset=str(path), epochs=2, batch_size=256, hidden="32", latent_dim=4, seed=0
    )
    budget = memory_budget or 1 << 40
    tracemalloc.start()
    try:
        data = load_dataset(str(path), memory_budget=budget)
        splits = split_for_training(data, config, budget)
        shape = model_input(config, data.feature_shape, data.is_image)
        likelihood = resolve_likelihood(config, data.is_image)
        prep = choose_preprocessing(config, data, splits.train, likelihood)
        x_train = model_rows(splits.train, prep, shape.shape)
        x_val = model_rows(splits.validation, prep, shape.shape)
        torch.manual_seed(config.seed)
        model = build_model(config, shape, likelihood)
        cpu = torch.device("cpu")
        result = train_model(
            model,
            build_objective(config),
            torch_rows(x_train, cpu),
            torch_rows(x_val, cpu),
            config,
            show_progress=False,
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, data.streamed, result.best_val_loss


def test_a_file_several_times_the_budget_is_read_a_chunk_at_a_time(tmp_path: Path) -> None:
    # Once on a small file first: the first optimiser step imports parts of torch (tens of MB of
    # code objects), which are no data and must not count.
    _table(tmp_path / "small.npy", 300, 8)
    _data_path_peak(tmp_path / "small.npy", None)
    path = tmp_path / "big.npy"
    _table(path, 24_576, 256)  # 25.2 MB of float32
    size = path.stat().st_size
    budget = 4 * MEGABYTE

    streamed_peak, streamed, streamed_loss = _data_path_peak(path, budget)
    memory_peak, in_memory_streamed, memory_loss = _data_path_peak(path, None)

    assert streamed
    assert not in_memory_streamed
    # numpy reports its arrays to tracemalloc: reading the data into memory shows up as at
    # least the file's size, as the in-memory run proves; the streamed run stays within the
    # budget.
    assert memory_peak > size
    assert streamed_peak < budget, f"peak {streamed_peak / MEGABYTE:.1f} MB"
    assert streamed_loss == memory_loss  # and it trained the very same model


def test_streamed_training_writes_the_bundle_memory_would(tmp_path: Path) -> None:
    path = tmp_path / "table.npy"
    x = _table(path, 6000, 64)  # 1.5 MB
    settings = {
        "dataset": str(path),
        "epochs": 3,
        "hidden": "32",
        "latent_dim": 4,
        "batch_size": 100,
        "iwae_samples": 4,
        "plots": False,
    }
    in_memory = run_training(TrainingConfig(**settings), tmp_path / "memory" / "1")  # type: ignore[arg-type]

    # Streamed through the command line, as a user would, with a budget under the file's size.
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    flags = [flag for flag in flags if not flag.startswith("--plots")]
    out = tmp_path / "streamed" / "1"
    completed = subprocess.run(
        [sys.executable, "-m", "training.cli", *flags, "--no-plots", "--memory-budget-mb=1",
         "--quiet", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=_subprocess_env(), check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr

    streamed = OnnxBundle(out)
    memory = OnnxBundle(in_memory.bundle_dir)
    assert streamed.manifest.training["data_streamed"] is True
    assert streamed.manifest.training["memory_budget_mb"] == 1.0
    assert memory.manifest.training["data_streamed"] is False
    # The same seed trains the same model from disk as from memory: every batch, every
    # normalised value and every noise draw is the same.
    assert streamed.manifest.training["best_val_loss"] == in_memory.result.best_val_loss
    np.testing.assert_array_equal(
        streamed.encode_model(streamed.to_model_input(x)).mu,
        memory.encode_model(memory.to_model_input(x)).mu,
    )
    for score_type, calibration in memory.manifest.anomaly.scores.items():
        assert streamed.manifest.anomaly.scores[score_type].threshold == calibration.threshold
    assert streamed.manifest.metrics["heldout"] == memory.manifest.metrics["heldout"]


def test_a_streamed_run_draws_its_report_from_a_sample(tmp_path: Path) -> None:
    path = tmp_path / "table.npy"
    _table(path, 10_000, 32)  # 1.3 MB
    config = TrainingConfig(
        dataset=str(path), epochs=1, hidden="16", latent_dim=2, iwae_samples=2,
        memory_budget_mb=1,
    )  # fmt: skip
    outcome = run_training(config, tmp_path / "m" / "1", show_progress=False)
    assert outcome.manifest.training["data_streamed"] is True
    report = outcome.bundle_dir / "report"
    for plot in ("loss_curves.png", "reconstructions.png", "latent_space.png", "samples.png"):
        assert (report / plot).stat().st_size > 0, plot


def test_other_formats_over_the_budget_are_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    rows = "\n".join(",".join(str(v) for v in range(40)) for _ in range(30_000))
    path.write_text(rows + "\n")
    assert path.stat().st_size > MEGABYTE
    with pytest.raises(DataError, match=r"only \.npy files stream from disk.*numpy\.save"):
        load_dataset(str(path), memory_budget=MEGABYTE)
    code = main(["--dataset", str(path), "--out", str(tmp_path / "m"), "--memory-budget-mb", "1"])
    assert code == 2
    assert not (tmp_path / "m").exists()


def test_images_of_a_streamed_file_cannot_be_resized(tmp_path: Path) -> None:
    path = tmp_path / "images.npy"
    np.save(path, np.zeros((200, 28, 28), dtype=np.float32), allow_pickle=False)
    with pytest.raises(DataError, match="resize them in the file"):
        load_dataset(str(path), image_size=(8, 8), memory_budget=100_000)


def test_a_non_finite_value_is_found_in_any_chunk(tmp_path: Path) -> None:
    path = tmp_path / "table.npy"
    x = np.ones((5000, 30), dtype=np.float32)
    x[4321, 17] = np.nan
    np.save(path, x, allow_pickle=False)
    with pytest.raises(DataError, match="at row 4321, column 17"):
        load_dataset(str(path), memory_budget=100_000)
