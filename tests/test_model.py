"""The article's autoencoder: parameter count, shapes, exact binary codes, gradient capture."""

from __future__ import annotations

import pytest
import torch

from runners.training.model import ARTICLE_PARAMETERS, BinaryAutoencoder, count_parameters


@pytest.fixture(scope="module")
def model() -> BinaryAutoencoder:
    torch.manual_seed(0)
    return BinaryAutoencoder()


def test_parameter_count_is_the_articles(model):
    assert count_parameters(model) == ARTICLE_PARAMETERS == 6_985_729


def _article_autoencoder() -> torch.nn.Module:
    """The article's model as printed in the article (its STE has no parameters, left out)."""
    from torch import nn

    def conv(i, o):
        return nn.Conv2d(i, o, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1))

    def deconv(i, o, k):
        return nn.ConvTranspose2d(i, o, kernel_size=(k, k), stride=(2, 2), padding=(1, 1))

    net = nn.Module()
    net.encoder = nn.Sequential(
        conv(1, 64), nn.ReLU(), conv(64, 128), nn.BatchNorm2d(128), nn.ReLU(),
        conv(128, 256), nn.BatchNorm2d(256), nn.ReLU(), conv(256, 512), nn.BatchNorm2d(512),
        nn.ReLU(),
    )  # fmt: skip
    net.decoder = nn.Sequential(
        deconv(512, 256, 5), nn.BatchNorm2d(256), nn.ReLU(), deconv(256, 128, 5),
        nn.BatchNorm2d(128), nn.ReLU(), deconv(128, 64, 4), nn.BatchNorm2d(64), nn.ReLU(),
        deconv(64, 1, 4), nn.Tanh(),
    )  # fmt: skip
    return net


def test_layers_are_the_articles(model):
    article = _article_autoencoder()
    ours = {k: v.shape for k, v in model.state_dict().items()}
    assert ours == {k: v.shape for k, v in article.state_dict().items()}
    assert [type(m) for m in model.encoder] == [type(m) for m in article.encoder]
    assert [type(m) for m in model.decoder] == [type(m) for m in article.decoder]
    # Same construction order, so one seed gives the article model's initial weights exactly.
    torch.manual_seed(7)
    ours_init = BinaryAutoencoder().state_dict()
    torch.manual_seed(7)
    article_init = _article_autoencoder().state_dict()
    assert all(torch.equal(ours_init[k], article_init[k]) for k in article_init)


def test_shapes_and_exact_binary_codes(model):
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    code = model.encode(x)
    assert code.shape == (5, 512, 1, 1)
    assert set(code.unique().tolist()) <= {0.0, 1.0}
    out = model.decode(code)
    assert out.shape == (5, 1, 28, 28)
    assert out.abs().max() <= 1.0  # Tanh
    assert torch.equal(model(x), out)
    assert torch.equal(model(x, encode=True), code)
    assert torch.equal(model(code, decode=True), out)


def test_code_channels_option():
    small = BinaryAutoencoder(code_channels=32)
    assert small.encode(torch.zeros(2, 1, 28, 28)).shape == (2, 32, 1, 1)
    assert count_parameters(small) < ARTICLE_PARAMETERS


def test_without_relu_same_forward_different_gradient():
    torch.manual_seed(1)
    with_relu = BinaryAutoencoder(pre_threshold_relu=True)
    without = BinaryAutoencoder(pre_threshold_relu=False)
    without.load_state_dict(with_relu.state_dict())
    assert count_parameters(without) == ARTICLE_PARAMETERS
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    assert torch.equal(with_relu(x), without(x))
    grads = []
    for net in (with_relu, without):
        net.zero_grad()
        net(x).square().mean().backward()
        grads.append(net.encoder[8].weight.grad.clone())
    assert not torch.equal(grads[0], grads[1])


def test_pre_threshold_gradient_norm_is_recorded_without_changing_gradients():
    torch.manual_seed(2)
    net = BinaryAutoencoder()
    x = torch.rand(8, 1, 28, 28) * 2 - 1

    # Reference: the gradient at the threshold's input, read with retain_grad, hook off.
    net.track_pre_grad = False
    pre = net.pre_threshold(x)
    pre.retain_grad()
    net.decode(net.binarize(pre)).square().mean().backward()
    expected_norm = pre.grad.norm()
    expected_grads = [p.grad.clone() for p in net.parameters()]

    net.zero_grad()
    net.track_pre_grad = True
    net(x).square().mean().backward()
    assert torch.allclose(net.pre_grad_norm, expected_norm, rtol=1e-6)
    assert net.pre_grad_norm > 0
    for p, g in zip(net.parameters(), expected_grads, strict=True):
        assert torch.equal(p.grad, g)


def test_estimator_is_pluggable():
    net = BinaryAutoencoder(estimator="sigmoid(beta=4)")
    assert net.binarize.estimator.spec == "sigmoid(beta=4)"
    assert net.estimator.name == "sigmoid"
