"""Evaluation passes of the autoencoder and the article's reconstruction figure.

The article never calls `net.eval()`: its test reconstructions use BatchNorm's batch statistics
and training-mode estimator behaviour. We evaluate in eval mode (BatchNorm running statistics,
deterministic threshold for stochastic estimators), so a test image's code and reconstruction do
not depend on the other images in its batch; the callers switch the mode.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from runners.store.format import atomic_write_bytes
from runners.training.data import normalize
from runners.training.device import autocast

EVAL_BATCH = 1000  # fixed, so evaluation arithmetic does not depend on the dataset size
FIGURE_IMAGES = 5  # the article's figure: five originals beside their reconstructions


@dataclass(frozen=True)
class EvalResult:
    """Test-set results: mean squared error per pixel and the binary codes (N, C) uint8 on CPU."""

    mse: float
    codes: torch.Tensor


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, precision: str = "fp32") -> EvalResult:
    """Test MSE (over all pixels of all images) and codes of uint8 `images` (N, 1, 28, 28)."""
    squared = torch.zeros((), dtype=torch.float64, device=images.device)
    codes = []
    for start in range(0, images.shape[0], EVAL_BATCH):
        x = normalize(images[start : start + EVAL_BATCH])
        with autocast(precision, images.device):
            code = model.encode(x)
            recon = model.decode(code)
        squared += F.mse_loss(recon.float(), x, reduction="sum").to(torch.float64)
        codes.append(code.reshape(code.shape[0], -1).to(torch.uint8))
    mse = float(squared) / images[0].numel() / images.shape[0]
    return EvalResult(mse=mse, codes=torch.cat(codes).cpu())


@torch.no_grad()
def encode_all(
    model: torch.nn.Module, images: torch.Tensor, precision: str = "fp32"
) -> torch.Tensor:
    """Binary codes (N, C) uint8 on the CPU of uint8 `images`."""
    codes = []
    for start in range(0, images.shape[0], EVAL_BATCH):
        with autocast(precision, images.device):
            code = model.encode(normalize(images[start : start + EVAL_BATCH]))
        codes.append(code.reshape(code.shape[0], -1).to(torch.uint8))
    return torch.cat(codes).cpu()


@torch.no_grad()
def reconstruct(
    model: torch.nn.Module, images: torch.Tensor, precision: str = "fp32"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(originals, reconstructions) as float32 CPU tensors in [-1, 1] of uint8 `images`."""
    x = normalize(images)
    with autocast(precision, images.device):
        recon = model(x)
    return x.cpu(), recon.float().cpu()


def figure_digits(labels: torch.Tensor, count: int = FIGURE_IMAGES) -> list[int]:
    """Indices of the first test image of each class, in order of appearance, `count` of them
    (fewer when the set has fewer classes): the figure shows different digits, not five zeros."""
    chosen: dict[int, int] = {}
    for index, label in enumerate(labels.tolist()):
        if len(chosen) == count:
            break
        chosen.setdefault(int(label), index)
    return list(chosen.values())


def save_reconstruction_png(
    path: Path, originals: torch.Tensor, recons: torch.Tensor, labels: list[int] | None = None
) -> None:
    """The article's figure, as a strip: originals on top, their reconstructions below (grey,
    fixed range [-1, 1]), each column titled with its digit when `labels` are given.

    Written with matplotlib's Agg canvas and no PNG metadata, so the same images give the same
    bytes. Unlike the article (autoscaled grey levels) both rows share the fixed range [-1, 1].
    """
    # matplotlib is imported when a figure is drawn: it takes about a second to import.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = originals.shape[0]
    fig = Figure(figsize=(0.35 + 0.9 * columns, 2.1))
    FigureCanvasAgg(fig)
    for col in range(columns):
        for row, (name, image) in enumerate((("original", originals), ("reconstruction", recons))):
            ax = fig.add_subplot(2, columns, row * columns + col + 1)
            ax.imshow(image[col].reshape(28, 28).numpy(), cmap="gray", vmin=-1.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0 and labels is not None:
                ax.set_title(f"digit {labels[col]}", fontsize=9)
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.subplots_adjust(left=0.3 / (0.35 + 0.9 * columns), right=0.99, top=0.86, bottom=0.02)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())
