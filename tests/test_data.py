"""Data: the article's normalisation, the data root, mnist-mini, fixed subsets, batch order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from runners.errors import UserError
from runners.training import data

REPO = Path(__file__).resolve().parent.parent
MINI = REPO / "runners" / "data" / "mnist_mini.npz"
SHARED_MNIST = REPO.parent / "shared" / "datasets"  # beside the checkout, when there is one


def _full_mnist_root() -> Path | None:
    for root in (os.environ.get("STE_DATA_ROOT"), SHARED_MNIST):
        if root and (found := data.mnist_available(root)):
            return found
    return None


def test_normalisation_equals_torchvision_transforms():
    from PIL import Image
    from torchvision import transforms

    article = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    train, _ = data.load_arrays("mnist-mini")
    images = train.images[:16]
    ours = data.normalize(images.unsqueeze(1))
    theirs = torch.stack([article(Image.fromarray(img.numpy(), mode="L")) for img in images])
    assert ours.dtype == theirs.dtype == torch.float32
    assert torch.equal(ours, theirs)  # bit for bit, not approximately
    assert ours.min() == -1.0 and ours.max() == 1.0


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("STE_DATA_ROOT", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("STE_DATA_ROOT")
    assert data.resolve_data_root(None) == tmp_path / "xdg" / "ste-ablations" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.resolve_data_root(None) == tmp_path / "home" / ".cache" / "ste-ablations" / "data"


def test_mnist_available_needs_all_four_files_where_a_run_looks(monkeypatch, tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.MNIST_FILES[:-1]:
        (raw / name).write_bytes(b"")
    assert data.mnist_available(tmp_path / "data") is None  # three of four
    (raw / data.MNIST_FILES[-1]).mkdir()
    assert data.mnist_available(tmp_path / "data") is None  # a folder is not the file
    (raw / data.MNIST_FILES[-1]).rmdir()
    (raw / data.MNIST_FILES[-1]).write_bytes(b"")  # contents are checked when they load
    for given in (tmp_path / "data", raw.parent, raw, str(raw)):  # the root, as runs take it
        assert data.mnist_available(given) == tmp_path / "data"
    monkeypatch.setenv("STE_DATA_ROOT", str(raw))
    assert data.mnist_available() == tmp_path / "data"
    monkeypatch.setenv("STE_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert data.mnist_available() is None
    monkeypatch.delenv("STE_DATA_ROOT")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.mnist_available() is None  # the per-user cache folder, empty


def test_missing_mnist_is_one_clear_error(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(UserError) as info:
        data.load_arrays("mnist", root, download=False)
    message = str(info.value)
    assert str(root / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "\n" not in message
    assert not root.exists()  # nothing written


def test_mnist_mini_is_bundled_small_and_balanced():
    assert MINI.stat().st_size <= 2 * 1024 * 1024
    train, test = data.load_arrays("mnist-mini")
    assert train.images.shape == (6000, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (1000, 28, 28)
    assert torch.equal(train.labels.bincount(), torch.full((10,), 600))
    assert torch.equal(test.labels.bincount(), torch.full((10,), 100))


def test_subsets_are_prefixes_of_one_fixed_selection():
    small = data.prepare_data("mnist-mini", 100, 50, "cpu")
    large = data.prepare_data("mnist-mini", 300, None, "cpu")
    assert small.train.images.shape == (100, 1, 28, 28) and small.train.images.dtype == torch.uint8
    assert torch.equal(large.train.images[:100], small.train.images)
    assert torch.equal(large.train.labels[:100], small.train.labels)
    assert torch.equal(large.test.images[:50], small.test.images)
    assert len(large.test) == 1000
    # the selection is a shuffle, not MNIST's first images
    train, _ = data.load_arrays("mnist-mini")
    assert not torch.equal(small.train.images[:, 0], train.images[:100])


def test_batch_order_is_seeded_and_device_independent():
    def order(seed):
        return data.epoch_permutation(500, torch.Generator().manual_seed(seed))

    assert torch.equal(order(3), order(3)) and not torch.equal(order(3), order(4))
    assert sorted(order(3).tolist()) == list(range(500))


def test_batch_bounds_cover_the_epoch_and_drop_a_single_image_batch():
    assert data.batch_bounds(200, 64) == [(0, 64), (64, 128), (128, 192), (192, 200)]
    assert data.batch_bounds(60000, 64)[-1] == (59968, 60000)  # the article keeps 32 last
    assert data.batch_bounds(129, 64) == [(0, 64), (64, 128)]  # BatchNorm needs two images


def test_get_batch_normalises_the_selected_images():
    images = torch.arange(6, dtype=torch.uint8).reshape(6, 1, 1, 1) * 50
    batch = data.get_batch(images, torch.tensor([4, 1]))
    assert torch.equal(batch, data.normalize(images[[4, 1]]))


@pytest.mark.skipif(_full_mnist_root() is None, reason="full MNIST not available")
def test_full_mnist_through_torchvision():
    train, test = data.load_arrays("mnist", _full_mnist_root(), download=False)
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64


@pytest.mark.slow
@pytest.mark.skipif(_full_mnist_root() is None, reason="full MNIST not available")
def test_make_mnist_mini_reproduces_the_bundled_file(tmp_path):
    out = tmp_path / "mini.npz"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_mnist_mini.py"),
         "--root", str(_full_mnist_root()), "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert out.read_bytes() == MINI.read_bytes()
    with np.load(out) as arrays:
        train, _ = data.load_arrays("mnist", _full_mnist_root(), download=False)
        index = torch.from_numpy(arrays["train_index"].astype(np.int64))
        assert torch.equal(torch.from_numpy(arrays["train_x"]), train.images[index])
