"""bench/decoder_experiment.py's context decoders are autoregressive: the logit of pixel i
depends on the code and on earlier pixels only, or the -ELBO they report would be no bound."""

from __future__ import annotations

import pytest
import torch

from bench.decoder_experiment import DECODERS, ContextVAE, build, neighbour_mask, nll
from training.config import TrainingConfig
from training.factory import build_model, model_input
from training.models import VAE

SIDE = 8


def model_for(decoder: str) -> ContextVAE:
    config = TrainingConfig(dataset="test", plots=False)
    shape = model_input(config, (1, SIDE, SIDE), True)
    torch.manual_seed(0)
    base = build_model(config, shape, "bernoulli")
    assert isinstance(base, VAE)
    model = build(decoder, base, SIDE, config.code_size(), seed=0)
    with torch.no_grad():  # the local terms start at zero; make every allowed weight count
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("decoder", DECODERS)
def test_pixel_i_reads_only_earlier_pixels(decoder: str) -> None:
    model = model_for(decoder)
    x = torch.rand(1, SIDE * SIDE, requires_grad=True)
    logits = model.logits(x, torch.randn(1, 8))[0]
    rows = []
    for i in range(len(logits)):
        (grad,) = torch.autograd.grad(logits[i], x, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros(SIDE * SIDE) if grad is None else grad[0])
    dependent = torch.stack(rows).abs() > 0  # (output i, input j)
    assert not dependent.triu().any(), "a logit reads its own pixel or a later one"
    if decoder == "factorised":
        assert not dependent.any()
    else:
        assert dependent.tril(-1).any()


def test_local_neighbourhoods() -> None:
    left_and_above = neighbour_mask(SIDE, ((0, -1), (-1, 0)))
    assert left_and_above[0].sum() == 0  # the first pixel has no context
    assert left_and_above[9].nonzero().flatten().tolist() == [1, 8]  # row 1, column 1
    assert left_and_above[8].nonzero().flatten().tolist() == [0]  # no wrap from the row above
    assert left_and_above[7].nonzero().flatten().tolist() == [6]


def test_nll_is_the_bernoulli_cross_entropy_summed() -> None:
    logits = torch.tensor([[0.0, 2.0]])
    x = torch.tensor([[1.0, 0.0]])
    expected = torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(2.0)))
    assert torch.allclose(nll(logits, x), expected.reshape(1))
