"""What `ste-ablate bench` measures besides the loops: FLOP per image, the device's fp32 matmul
ceiling, page faults, and the machine (device name, load average)."""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from runners.training.model import BinaryAutoencoder


def conv_macs(model: torch.nn.Module, shape: tuple[int, ...] = (1, 1, 28, 28)) -> int:
    """Multiply-accumulates of the model's (transposed) convolutions for one input of `shape`.

    Conventions: a Conv2d costs out_elements · (Cin/groups) · kh · kw; a ConvTranspose2d costs
    in_elements · (Cout/groups) · kh · kw (every input element meets the whole kernel, also the
    part its padding crops later). BatchNorm, activations and the loss are not counted.
    """
    total = 0

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        if isinstance(module, torch.nn.ConvTranspose2d):
            per = module.out_channels // module.groups * kh * kw
            total += inputs[0].numel() * per
        else:
            total += out.numel() * (module.in_channels // module.groups) * kh * kw

    convs = [
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(torch.zeros(shape, device=next(model.parameters()).device))
            model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return total


def flops_per_image(model: torch.nn.Module | None = None) -> float:
    """Training FLOP per image: 2 · MACs forward, times 3 for forward + backward (input and
    weight gradients). The article's model: 30.7M MACs, 0.184 GFLOP."""
    if model is None:
        model = BinaryAutoencoder()
    return 3 * 2 * conv_macs(model)


def measure_ceiling(device: torch.device, seconds: float = 1.0, size: int | None = None) -> float:
    """Best fp32 GFLOP/s of a square matmul on `device` over ~`seconds` (TF32 off on CUDA)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    with _tf32(False):
        a @ b  # warm-up (kernel choice, memory)
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            start, count = time.perf_counter(), 0
            while count < 3 or time.perf_counter() - start < seconds / 4:
                a @ b
                count += 1
                _sync(device)
            best = max(best, 2 * size**3 * count / (time.perf_counter() - start) / 1e9)
    return best


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def page_faults() -> int:
    """Minor page faults of this process so far (0 where getrusage fails)."""
    try:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    except OSError:
        return 0


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return f"cpu ({os.cpu_count()} CPUs)"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
