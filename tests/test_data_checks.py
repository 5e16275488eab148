"""The data a run id names: MNIST's published files and the committed mnist-mini, by checksum."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from test_data import MINI, _full_mnist_root

from runners.errors import UserError
from runners.training import data, data_checks


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data._load_mnist.cache_clear()
    data._load_mini.cache_clear()
    yield
    data._load_mnist.cache_clear()
    data._load_mini.cache_clear()


def test_the_bundled_mnist_mini_is_the_committed_one() -> None:
    assert hashlib.sha256(MINI.read_bytes()).hexdigest() == data_checks.MINI_SHA256
    data_checks.check_mini(MINI)


def test_a_changed_mnist_mini_is_a_one_line_error(tmp_path) -> None:
    changed = tmp_path / "mini.npz"
    content = bytearray(MINI.read_bytes())
    content[len(content) // 2] ^= 1
    changed.write_bytes(bytes(content))
    with pytest.raises(UserError, match="differs from the committed one") as info:
        data_checks.check_mini(changed)
    assert "\n" not in str(info.value)


def fake_root(tmp_path: Path) -> Path:
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.MNIST_FILES:
        (raw / name).write_bytes(b"not mnist " + name.encode())
    return raw


def test_files_that_are_not_mnist_are_refused_naming_the_file(tmp_path) -> None:
    raw = fake_root(tmp_path)
    with pytest.raises(UserError) as info:
        data_checks.check_mnist(raw)
    message = str(info.value)
    assert str(raw / "train-images-idx3-ubyte") in message and "\n" not in message
    assert not data_checks.cache_file().exists()  # nothing remembered


@pytest.mark.skipif(_full_mnist_root() is None, reason="full MNIST not available")
def test_the_published_md5s_are_the_files_of_the_real_mnist() -> None:
    raw = _full_mnist_root() / "MNIST" / "raw"
    for name in data.MNIST_FILES:
        content = (raw / name).read_bytes()
        assert hashlib.md5(content).hexdigest() == data_checks.MNIST_MD5[name]
        assert hashlib.sha256(content).hexdigest() == data_checks.MNIST_SHA256[name]


@pytest.mark.skipif(_full_mnist_root() is None, reason="full MNIST not available")
def test_changed_mnist_labels_are_refused_and_a_checked_root_is_remembered(
    tmp_path, monkeypatch
) -> None:
    raw = tmp_path / "root" / "MNIST" / "raw"
    shutil.copytree(_full_mnist_root() / "MNIST" / "raw", raw)
    for path in raw.iterdir():
        path.chmod(0o644)
    train, test = data.load_arrays("mnist", tmp_path / "root", download=False)
    assert len(train) == 60000 and len(test) == 10000
    assert str(raw.resolve()) in data_checks._read_cache()
    hashed = []
    monkeypatch.setattr(data_checks, "_sha256", lambda p: hashed.append(p) or "x")
    data_checks.check_mnist(raw)  # remembered: no file is hashed again
    assert hashed == []
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    labels = raw / "t10k-labels-idx1-ubyte"
    content = bytearray(labels.read_bytes())
    for i in range(8, 508):  # 500 test labels changed
        content[i] = (content[i] + 1) % 10
    labels.write_bytes(bytes(content))
    data._load_mnist.cache_clear()
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte is not the published one"):
        data.load_arrays("mnist", tmp_path / "root", download=False)
