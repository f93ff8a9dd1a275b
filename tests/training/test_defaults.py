"""training.defaults: the defaults chosen from the data's shape, and their record."""

from __future__ import annotations

from training.config import DEFAULT_LATENT, TrainingConfig
from training.defaults import LARGE_IMAGE_LATENT, resolve_data_defaults

RECORDED = {"latent_dim", "arch", "width", "likelihood", "kl_warmup_epochs", "training_length"}


def test_small_images_get_a_code_of_8() -> None:
    config, chosen = resolve_data_defaults(TrainingConfig(), (1, 8, 8), is_image=True)
    assert config.latent_dim == DEFAULT_LATENT == 8
    assert chosen["latent_dim"] == {"value": 8, "why": "64 pixels, at most 256: a code of 8"}
    assert resolve_data_defaults(TrainingConfig(), (1, 16, 16), True)[0].latent_dim == 8


def test_mnist_sized_images_get_a_wider_code() -> None:
    config, chosen = resolve_data_defaults(TrainingConfig(), (1, 28, 28), is_image=True)
    assert config.latent_dim == LARGE_IMAGE_LATENT == 20
    assert chosen["latent_dim"] == {"value": 20, "why": "784 pixels, over 256: a code of 20"}
    assert config.arch == "mlp"  # the conv net is never chosen for the user


def test_every_data_shaped_choice_of_an_image_vae_is_recorded_with_its_reason() -> None:
    _, chosen = resolve_data_defaults(TrainingConfig(), (1, 28, 28), is_image=True)
    assert set(chosen) == RECORDED
    assert chosen["likelihood"]["value"] == "bernoulli"
    assert chosen["width"]["value"] == "256,128"
    assert chosen["arch"]["value"] == "mlp"
    assert chosen["kl_warmup_epochs"]["value"] == 10
    for name, record in chosen.items():
        assert isinstance(record["why"], str), name
        assert len(record["why"]) > 20, name


def test_tables_leave_the_code_and_width_to_the_architecture_search() -> None:
    config, chosen = resolve_data_defaults(TrainingConfig(), (30,), is_image=False)
    assert config.latent_dim is None  # --hidden auto's candidates size their own codes
    assert "latent_dim" not in chosen
    assert chosen["width"]["value"] == "auto"
    assert chosen["likelihood"]["value"] == "laplace"


def test_values_the_user_gave_are_kept_and_recorded_as_theirs() -> None:
    given = TrainingConfig(
        latent_dim=3, hidden="64", likelihood="gaussian", kl_warmup_epochs=0, patience=5
    )
    config, chosen = resolve_data_defaults(given, (1, 28, 28), True)
    assert config.latent_dim == 3
    for name in ("latent_dim", "width", "likelihood", "kl_warmup_epochs", "training_length"):
        assert chosen[name]["why"] == "given", name
    assert chosen["likelihood"]["value"] == "gaussian"
    assert chosen["width"]["value"] == "64"


def test_an_autoencoder_records_no_vae_only_choice() -> None:
    _, chosen = resolve_data_defaults(TrainingConfig(model="ae"), (30,), is_image=False)
    assert "likelihood" not in chosen
    assert "kl_warmup_epochs" not in chosen
    assert chosen["width"]["value"] == "256,128"
