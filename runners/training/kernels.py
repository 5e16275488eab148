"""Fast paths for training the autoencoder: the same arithmetic with fewer wasted cycles.

Every run uses them: `runners.training.recipe.build_model` returns `prepare_model(...)` and
`build_optimizer` returns `adam(...)` (`fast=False` there gives the plain modules). The speed-ups
are measured in benchmarks/README.md.

- `adam(...)`: the fused Adam kernel where torch has one (one pass over the parameters instead
  of about ten elementwise passes). Same formula.
- `use_point_matmuls(model)`: the encoder's last convolution (3x3 -> 1x1) and the decoder's first
  transposed convolution (1x1 -> 3x3) touch one kernel window only, so they are matrix products;
  the first layer (one input channel) and the last (one output channel) become im2col/col2im +
  matmul, where oneDNN is slow for a single channel. Weights, their names and their gradients
  are unchanged. CPU tensors only: on CUDA the layers run cuDNN's kernels.
- channels_last on CUDA only, where cuDNN prefers NHWC (on the CPU it only adds layout copies).
- `tune_cpu_malloc()`: glibc keeps the memory a step frees instead of returning it to the OS and
  page-faulting it back every step (process-wide, so `prepare_model` does it for CPU runs).

"Same arithmetic" means equal up to float rounding: one step differs by ~1e-7 relative. Training
this model is chaotic (binary codes, Adam on near-zero gradients), so such differences grow to a
few percent of the loss within ~30 steps, exactly as they do between 1 and 2 CPU threads of the
plain code: compare fast and plain runs by their distributions over seeds, not value by value.
Both are deterministic run to run.

Other ways to execute a step (torch.compile, CUDA graphs, grouped models) are step strategies:
`runners.speed.strategies` and `runners.speed.stacking`.
"""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------- point layers


class FastConv2d(nn.Conv2d):
    """A Conv2d computed by matrix products where oneDNN is slow here (else a plain Conv2d).

    - A 1x1 output (the encoder's last layer) has one kernel window: out = W · pad(x) + b, where
      pad(x) is the input zero-padded to that window. Groups become a bmm.
    - One input channel per group (the first layer): im2col (F.unfold) + matmul.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        window = self._window(x)
        if window is None:
            if self._single_input_channel(x):
                return self._unfold_forward(x)
            return super().forward(x)
        hh, ww = window
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        n, groups = x.shape[0], self.groups
        # Zero-pad the input to the whole kernel window rather than crop the weight: the weight
        # enters as a view and its gradient comes out in place, with no copies (as fast as the
        # cropped weight here, and less memory traffic).
        xs = F.pad(x[:, :, :hh, :ww], (pw, kw - pw - ww, ph, kh - ph - hh))
        if groups == 1:
            out = F.linear(xs.reshape(n, -1), self.weight.reshape(self.out_channels, -1), self.bias)
        else:
            xg = xs.reshape(n, groups, -1).transpose(0, 1)  # (G, N, Cin_g*kh*kw)
            wg = self.weight.reshape(groups, self.out_channels // groups, -1).transpose(1, 2)
            out = torch.bmm(xg, wg).transpose(0, 1).reshape(n, self.out_channels)
            if self.bias is not None:
                out = out + self.bias
        return out.reshape(n, self.out_channels, 1, 1)

    def _single_input_channel(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and self.in_channels == self.groups
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        )

    def _unfold_forward(self, x: torch.Tensor) -> torch.Tensor:
        # One input channel per group (the first layer): oneDNN's weight gradient for it is slow;
        # im2col + matmul makes that gradient a small matmul (input gradient: not needed there).
        n, groups, (kh, kw) = x.shape[0], self.groups, self.kernel_size
        cols = F.unfold(x, (kh, kw), self.dilation, self.padding, self.stride)
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        oh = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        cols = cols.reshape(n, groups, kh * kw, -1)  # (N, G, kh*kw, L)
        weight = self.weight.reshape(groups, self.out_channels // groups, kh * kw)
        out = torch.matmul(weight, cols).reshape(n, self.out_channels, oh, ow)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def _window(self, x: torch.Tensor) -> tuple[int, int] | None:
        if (
            x.device.type != "cpu"  # measured on the CPU only; cuDNN keeps its own kernels
            or x.dim() != 4
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
            or self.dilation != (1, 1)
        ):
            return None
        (h, w), (kh, kw), (sh, sw), (ph, pw) = (
            x.shape[-2:],
            self.kernel_size,
            self.stride,
            self.padding,
        )
        if (h + 2 * ph - kh) // sh != 0 or (w + 2 * pw - kw) // sw != 0:
            return None  # more than one output position
        hh, ww = min(h, kh - ph), min(w, kw - pw)
        return (hh, ww) if hh > 0 and ww > 0 else None


class FastConvTranspose2d(nn.ConvTranspose2d):
    """A ConvTranspose2d computed by matrix products where oneDNN is slow here (else plain).

    - A 1x1 input (the decoder's first layer) spreads each channel over one kernel window that
      the padding crops: out[:, o, i, j] = sum_c x[:, c] · W[c, o, i + p, j + p] + b[o].
    - One output channel per group (the last layer): matmul + col2im (F.fold).
    """

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:  # noqa: D102
        if not self._applies(x, output_size):
            if self._single_output_channel(x, output_size):
                return self._fold_forward(x)
            return super().forward(x, output_size)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        n, groups, cout = x.shape[0], self.groups, self.out_channels
        # Only the window the padding keeps is computed: cropping the weight (a copy) measured
        # faster here than computing the whole window and cropping the output.
        w = self.weight[:, :, ph : kh - ph, pw : kw - pw]
        oh, ow = w.shape[-2:]
        if groups == 1:
            out = x.reshape(n, -1) @ w.reshape(w.shape[0], -1)
        else:
            xg = x.reshape(n, groups, -1).transpose(0, 1)  # (G, N, Cin_g)
            wg = w.reshape(groups, w.shape[0] // groups, -1)  # (G, Cin_g, Cout_g*oh*ow)
            out = torch.bmm(xg, wg).transpose(0, 1)
        out = out.reshape(n, cout, oh, ow)
        if self.bias is not None:
            out = out + self.bias.view(1, cout, 1, 1)
        return out

    def _single_output_channel(self, x: torch.Tensor, output_size: list[int] | None) -> bool:
        return (
            x.device.type == "cpu"
            and self.out_channels == self.groups
            and output_size is None
            and x.dim() == 4
            and self.padding_mode == "zeros"
            and self.output_padding == (0, 0)
        )

    def _fold_forward(self, x: torch.Tensor) -> torch.Tensor:
        # One output channel per group (the last layer): oneDNN's deconvolution to a single
        # channel is slow; matmul + col2im (F.fold, a scatter-add) does the same sums.
        n, groups, (kh, kw) = x.shape[0], self.groups, self.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        oh = (x.shape[2] - 1) * sh - 2 * ph + dh * (kh - 1) + 1
        ow = (x.shape[3] - 1) * sw - 2 * pw + dw * (kw - 1) + 1
        weight = self.weight.reshape(groups, self.in_channels // groups, kh * kw)
        inputs = x.reshape(n, groups, self.in_channels // groups, -1)  # (N, G, Cin_g, L)
        cols = torch.matmul(weight.transpose(1, 2), inputs)  # (N, G, kh*kw, L)
        out = F.fold(
            cols.reshape(n, groups * kh * kw, -1),
            (oh, ow),
            (kh, kw),
            self.dilation,
            self.padding,
            self.stride,
        )
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def _applies(self, x: torch.Tensor, output_size: list[int] | None) -> bool:
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        return (
            x.device.type == "cpu"
            and output_size is None
            and x.dim() == 4
            and tuple(x.shape[-2:]) == (1, 1)
            and self.padding_mode == "zeros"
            and self.dilation == (1, 1)
            and self.output_padding == (0, 0)
            and kh - 2 * ph > 0
            and kw - 2 * pw > 0
        )


def use_point_matmuls(model: nn.Module) -> int:
    """Swap every plain Conv2d / ConvTranspose2d of `model` for its point-layer subclass.

    The new modules share the old ones' Parameter objects (an optimiser built before still
    holds them) and keep their names, so state_dicts and checkpoints are unchanged. Returns the
    number of modules swapped. Layers whose shapes do not qualify run as before.
    """
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new_type = {nn.Conv2d: FastConv2d, nn.ConvTranspose2d: FastConvTranspose2d}.get(
                type(child)
            )
            if new_type is None:
                continue
            setattr(parent, name, _retype(child, new_type))
            swapped += 1
    return swapped


def _retype(module: nn.Module, new_type: type[nn.Module]) -> nn.Module:
    clone = new_type.__new__(new_type)
    clone.__dict__ = module.__dict__.copy()  # same parameters, buffers, hooks and settings
    return clone


# --------------------------------------------------------------------------- model, optimiser


_MALLOC = {"tuned": None, "deferred": 0}  # tuned: None (not yet), True/False (applied or not)


def tune_cpu_malloc() -> bool:
    """Keep freed memory inside this process (glibc malloc), once; returns whether it applies.

    A training step frees and reallocates ~30 MB of gradients and activations. With glibc's
    defaults the freed top of the heap goes back to the OS and every step page-faults it in again
    (thousands of faults per step). Raising the mmap threshold to its maximum (32 MB) and
    disabling trimming keeps that memory mapped: the process's resident size stays at its peak,
    and the step gets faster (benchmarks/README.md). Process-wide and not undoable (glibc
    has no way back to its dynamic defaults); a no-op where the C library is not glibc.
    """
    if _MALLOC["deferred"]:
        return False
    if _MALLOC["tuned"] is not None:
        return bool(_MALLOC["tuned"])
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
            ok = bool(libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)) and bool(
                libc.mallopt(m_trim_threshold, 2**31 - 1)
            )
        except (OSError, AttributeError):  # musl and others: no mallopt, nothing to tune
            ok = False
    _MALLOC["tuned"] = ok
    return ok


def malloc_tuned() -> bool:
    """Whether `tune_cpu_malloc` has tuned this process's malloc."""
    return _MALLOC["tuned"] is True


@contextlib.contextmanager
def defer_malloc_tuning() -> Iterator[None]:
    """`tune_cpu_malloc` does nothing inside this block (the bench times the article's loop in
    the process as the article's script would run it, before any tuning)."""
    _MALLOC["deferred"] += 1
    try:
        yield
    finally:
        _MALLOC["deferred"] -= 1


def channels_last_default(device: torch.device) -> bool:
    """Whether to train in channels_last: on CUDA yes (cuDNN), on the CPU no (measured slower)."""
    return device.type == "cuda"


def prepare_model(
    model: nn.Module,
    device: torch.device | str,
    *,
    channels_last: bool | None = None,
    malloc: bool = True,
) -> nn.Module:
    """The model ready for fast training on `device` (in place; returns it).

    Matmul layers always (they are exact up to rounding); channels_last per
    `channels_last_default` unless given; on the CPU, `tune_cpu_malloc()` unless `malloc=False`.
    """
    device = torch.device(device)
    if malloc and device.type == "cpu":
        tune_cpu_malloc()
    use_point_matmuls(model)
    if channels_last is None:
        channels_last = channels_last_default(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def adam(
    params: Iterable[torch.Tensor],
    lr: float,
    betas: tuple[float, float],
    device: torch.device | str,
    *,
    capturable: bool = False,
) -> torch.optim.Adam:
    """Adam with the fused kernel when this torch has it for `device`, else torch's default.

    Fused and default Adam apply the same formula (bias-corrected, eps outside the square root);
    they differ only by float rounding.
    """
    device = torch.device(device)
    kwargs: dict[str, Any] = {"lr": lr, "betas": betas}
    if capturable:
        kwargs["capturable"] = True
    if _fused_adam_supported(device):
        kwargs["fused"] = True
    return torch.optim.Adam(params, **kwargs)


def _fused_adam_supported(device: torch.device) -> bool:
    if "fused" not in inspect.signature(torch.optim.Adam).parameters:
        return False
    if device.type == "cuda":
        return True
    try:  # CPU fused Adam arrived in torch 2.4; probe once rather than parse versions
        probe = torch.zeros(2, requires_grad=True)
        probe.grad = torch.ones(2)
        torch.optim.Adam([probe], fused=True).step()
    except (RuntimeError, TypeError):
        return False
    return True
