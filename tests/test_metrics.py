"""Metrics: PSNR, code statistics and the digit probes, on hand-made inputs."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from runners.training.metrics import (
    bit_entropy,
    code_stats,
    knn_accuracy,
    linear_probe_accuracy,
    mean_image_mse,
    probe_accuracy,
    psnr,
    strip_timing,
)


def test_psnr_for_images_in_minus_one_one():
    assert psnr(4.0) == 0.0
    assert psnr(0.04) == pytest.approx(20.0)
    assert psnr(0.0) == math.inf and math.isnan(psnr(math.nan))


def test_bit_entropy():
    got = bit_entropy(torch.tensor([0.0, 1.0, 0.5, 0.25]))
    assert got[:3].tolist() == [0.0, 0.0, 1.0]
    assert got[3].item() == pytest.approx(-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)))


def test_code_stats():
    codes = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0], [1, 0, 1, 1], [1, 0, 0, 0]])
    stats = code_stats(codes)
    assert stats["bit_rates"] == [1.0, 0.0, 0.5, 0.25]
    assert stats["active_rate"] == pytest.approx(1.75 / 4)
    assert stats["dead_bits"] == 2
    assert stats["unique_codes"] == 3 / 4
    assert stats["bit_flip_rate"] is None
    assert stats["bit_entropy"] == pytest.approx(
        float(bit_entropy(torch.tensor([0.5, 0.25])).sum()) / 4
    )
    flipped = codes.clone()
    flipped[0, 0] = 0
    assert code_stats(flipped, previous=codes)["bit_flip_rate"] == 1 / 16


def _separable(n_per_class: int = 20):
    # Digit d's codes: bit d set, plus some noise bits that carry no label.
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    codes = (torch.rand(len(labels), 32, generator=gen) < 0.3).to(torch.uint8)
    codes[:, :10] = 0
    codes[torch.arange(len(labels)), labels] = 1
    return codes, labels


def test_probes_solve_a_separable_problem():
    codes, labels = _separable()
    assert linear_probe_accuracy(codes, labels, codes, labels) == 1.0
    assert knn_accuracy(codes, labels, codes, labels, k=1) == 1.0
    assert probe_accuracy("linear", codes, labels, codes, labels) == 1.0


def test_probes_are_at_chance_on_constant_codes():
    codes = torch.zeros(100, 8, dtype=torch.uint8)
    labels = torch.arange(100) % 10
    # All distances tie: the neighbours are the first k training images, the vote picks digit 0..
    assert knn_accuracy(codes, labels, codes, labels, k=5) == pytest.approx(0.1)
    assert linear_probe_accuracy(codes, labels, codes, labels) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown probe"):
        probe_accuracy("svm", codes, labels, codes, labels)


def test_strip_timing():
    assert strip_timing({"epoch": 1, "epoch_time_s": 2.0, "images_per_s": 3.0}) == {"epoch": 1}


def test_mean_image_mse_is_the_exact_trivial_reconstruction_error():
    gen = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (7, 1, 3, 3), generator=gen, dtype=torch.uint8)
    test = torch.randint(0, 256, (5, 1, 3, 3), generator=gen, dtype=torch.uint8)

    def scaled(t):  # a pixel in the model's [-1, 1], exactly
        return Fraction(2 * int(t), 255) - 1

    pixels = [[scaled(t) for t in image.flatten()] for image in train]
    mean = [sum(column) / len(train) for column in zip(*pixels, strict=True)]
    want = sum(
        (scaled(t) - m) ** 2 for image in test for t, m in zip(image.flatten(), mean, strict=True)
    ) / (5 * 9)
    assert mean_image_mse(train, test) == float(want)
    # The same images in another order, or another layout, give the same bits.
    assert mean_image_mse(train.flip(0).reshape(7, 9), test.flip(0)) == float(want)
    # An image equal to the mean costs nothing; a constant training set is its own mean.
    same = torch.full((3, 1, 2, 2), 17, dtype=torch.uint8)
    assert mean_image_mse(same, same[:1]) == 0.0
