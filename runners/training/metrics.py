"""Metrics of one run: reconstruction quality, statistics of the binary codes, digit probes.

Everything here is a pure function of tensors (no model, no files), deterministic on the CPU.
"""

from __future__ import annotations

import math

import torch

from runners.store.records import TIMING_KEYS

RIDGE_LAMBDA = 1.0  # ridge penalty of the linear probe (codes are 0/1, so the scale is fixed)
KNN_K = 5


def psnr(mse: float, peak_to_peak: float = 2.0) -> float:
    """PSNR in dB of images whose range is `peak_to_peak` wide ([-1, 1]: 10·log10(4 / mse))."""
    if mse <= 0:
        return math.inf
    if not math.isfinite(mse):
        return math.nan
    return 10.0 * math.log10(peak_to_peak**2 / mse)


def mean_image_mse(train_images: torch.Tensor, test_images: torch.Tensor) -> float:
    """Test MSE of the trivial reconstruction: every test image replaced by the mean training
    image, both in the model's [-1, 1] scale (the floor a reconstruction must beat).

    With x = 2t/255 − 1 for a uint8 pixel t and the mean m = 2s/(255n) − 1 of n training
    pixels summing to s, (x − m)² = 4(nt − s)² / (255n)²: the sum of (nt − s)² is an integer,
    formed exactly (int64 per pixel, Python int in total), so the value is the same on every
    device and thread count. Over about 9.2e18 per pixel (not with MNIST's sizes) float64 is used.
    """
    n, count = train_images.shape[0], test_images.shape[0]
    s = train_images.reshape(n, -1).sum(0, dtype=torch.int64)
    t = test_images.reshape(count, -1).to(torch.int64)
    pixels = t.shape[1]
    if count * (255 * n) ** 2 < 2**63:
        total = sum(((n * t - s) ** 2).sum(0).tolist())
        return 4 * total / ((255 * n) ** 2 * count * pixels)
    mean = s.to(torch.float64) / n
    return float((4 * (t.to(torch.float64) - mean) ** 2).mean()) / 255**2


def bit_entropy(rates: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of Bernoulli(rate), elementwise (0 for rates 0 and 1)."""
    p = rates.to(torch.float64)
    q = 1.0 - p
    # xlogy gives 0·log 0 = 0 exactly, so dead bits have entropy 0, not NaN.
    return -(torch.xlogy(p, p) + torch.xlogy(q, q)) / math.log(2.0)


def code_stats(codes: torch.Tensor, previous: torch.Tensor | None = None) -> dict[str, object]:
    """Statistics of a set of binary codes.

    Args:
        codes: (N, C) tensor of 0/1 (any dtype), one row per test image.
        previous: the same images' codes one epoch earlier, or None (first epoch).

    Returns:
        bit_rates: per-bit activation rate (list of C floats); active_rate: their mean;
        bit_entropy: mean per-bit entropy in bits (1 = a fair coin, 0 = constant); dead_bits: bits
        that are always 0 or always 1 over the set; unique_codes: fraction of distinct codes;
        bit_flip_rate: fraction of (image, bit) pairs that changed since `previous` (None without).
    """
    bits = codes.to(torch.uint8).reshape(codes.shape[0], -1).cpu()
    n = bits.shape[0]
    rates = bits.sum(0, dtype=torch.float64) / n
    dead = int(((rates == 0) | (rates == 1)).sum())
    unique = int(torch.unique(bits, dim=0).shape[0])
    flip = None
    if previous is not None:
        prev = previous.to(torch.uint8).reshape(n, -1).cpu()
        flip = float((bits != prev).to(torch.float64).mean())
    return {
        "bit_rates": [float(r) for r in rates],
        "active_rate": float(rates.mean()),
        "bit_entropy": float(bit_entropy(rates).mean()),
        "dead_bits": dead,
        "unique_codes": unique / n,
        "bit_flip_rate": flip,
    }


def linear_probe_accuracy(
    train_codes: torch.Tensor,
    train_labels: torch.Tensor,
    test_codes: torch.Tensor,
    test_labels: torch.Tensor,
    ridge: float = RIDGE_LAMBDA,
    classes: int = 10,
) -> float:
    """Test accuracy of a ridge-regression classifier on the binary codes (closed form).

    Least squares from [code, 1] to one-hot labels with an L2 penalty `ridge` (the bias is not
    penalised), solved in float64; the prediction is the argmax. No randomness, no iterations.
    """
    x = _with_bias(train_codes)
    y = torch.nn.functional.one_hot(train_labels.cpu().long(), classes).to(torch.float64)
    penalty = torch.full((x.shape[1],), ridge, dtype=torch.float64)
    penalty[-1] = 0.0
    gram = x.T @ x + torch.diag(penalty)
    weights = torch.linalg.solve(gram, x.T @ y)
    predicted = (_with_bias(test_codes) @ weights).argmax(1)
    return float((predicted == test_labels.cpu().long()).to(torch.float64).mean())


def knn_accuracy(
    train_codes: torch.Tensor,
    train_labels: torch.Tensor,
    test_codes: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = KNN_K,
    classes: int = 10,
    chunk: int = 256,  # 256 x 60000 distances: ~60 MB float32 + ~120 MB int64 keys
) -> float:
    """Test accuracy of a k-nearest-neighbour vote in Hamming distance on the binary codes.

    Ties in distance go to the lower training index and ties in the vote to the lower digit, so
    the result is deterministic.
    """
    train = train_codes.reshape(train_codes.shape[0], -1).cpu().to(torch.float32)
    test = test_codes.reshape(test_codes.shape[0], -1).cpu().to(torch.float32)
    labels = train_labels.cpu().long()
    n_train = train.shape[0]
    k = min(k, n_train)
    ones_train = train.sum(1)
    index = torch.arange(n_train, dtype=torch.int64)
    correct = 0
    for start in range(0, test.shape[0], chunk):
        block = test[start : start + chunk]
        # Hamming distance of 0/1 vectors: |a| + |b| - 2 a·b (exact in float32 for <= 2^24 bits).
        dist = block.sum(1, keepdim=True) + ones_train[None, :] - 2.0 * block @ train.T
        key = dist.round().to(torch.int64) * n_train + index[None, :]
        nearest = torch.topk(key, k, dim=1, largest=False).indices
        votes = torch.zeros(block.shape[0], classes, dtype=torch.int64)
        votes.scatter_add_(1, labels[nearest], torch.ones_like(nearest))
        predicted = votes.argmax(1)  # first maximum = the lowest digit among tied votes
        correct += int((predicted == test_labels[start : start + chunk].cpu().long()).sum())
    return correct / test.shape[0]


def probe_accuracy(
    kind: str,
    train_codes: torch.Tensor,
    train_labels: torch.Tensor,
    test_codes: torch.Tensor,
    test_labels: torch.Tensor,
) -> float:
    """The run config's `probe`: "linear" (ridge classifier) or "knn" (Hamming k-NN)."""
    if kind == "linear":
        return linear_probe_accuracy(train_codes, train_labels, test_codes, test_labels)
    if kind == "knn":
        return knn_accuracy(train_codes, train_labels, test_codes, test_labels)
    raise ValueError(f"unknown probe {kind!r}")


def strip_timing(record: dict) -> dict:
    """A copy of a record without its timing keys (for bit-identity comparisons)."""
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def _with_bias(codes: torch.Tensor) -> torch.Tensor:
    x = codes.reshape(codes.shape[0], -1).cpu().to(torch.float64)
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
