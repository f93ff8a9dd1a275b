"""training.defaults: the defaults chosen from the data's shape, and their record."""

from __future__ import annotations

from training.config import DEFAULT_LATENT, TrainingConfig
from training.defaults import LARGE_IMAGE_LATENT, resolve_data_defaults


def test_small_images_get_a_code_of_8() -> None:
    config, chosen = resolve_data_defaults(TrainingConfig(), (1, 8, 8), is_image=True)
    assert config.latent_dim == DEFAULT_LATENT == 8
    assert chosen == {
        "latent_dim": {"value": 8, "why": "64 pixels, at most 256: a code of 8"},
    }
    assert resolve_data_defaults(TrainingConfig(), (1, 16, 16), True)[0].latent_dim == 8


def test_mnist_sized_images_get_a_wider_code() -> None:
    config, chosen = resolve_data_defaults(TrainingConfig(), (1, 28, 28), is_image=True)
    assert config.latent_dim == LARGE_IMAGE_LATENT == 20
    assert chosen["latent_dim"] == {"value": 20, "why": "784 pixels, over 256: a code of 20"}
    assert config.arch == "mlp"  # the conv net is never chosen for the user


def test_tables_leave_the_code_to_the_architecture_search() -> None:
    config, chosen = resolve_data_defaults(TrainingConfig(), (30,), is_image=False)
    assert config.latent_dim is None  # --hidden auto's candidates size their own codes
    assert chosen == {}


def test_a_code_size_the_user_gave_is_kept_and_recorded_as_theirs() -> None:
    config, chosen = resolve_data_defaults(TrainingConfig(latent_dim=3), (1, 28, 28), True)
    assert config.latent_dim == 3
    assert chosen == {"latent_dim": {"value": 3, "why": "given"}}
