"""A faithful copy of the reference article's MNIST training loop (the baseline of `ste-ablate bench`).

Source: "Intuitive Explanation of Straight-Through Estimators with PyTorch Implementation" (2020),
the full code at the end of ../shared/seed/ste_article_zh.txt (beside the checkout). What is the article's, unchanged:
the transform (ToTensor + Normalize((0.5,), (0.5,))), torchvision's `datasets.MNIST`, a
`DataLoader(batch_size=64, shuffle=True)` (no workers, no pinned memory), `STEFunction`,
`StraightThroughEstimator`, `Autoencoder`, Adam(lr=0.001, betas=(0.5, 0.999)), `nn.MSELoss` and
the body of the train loop (`zero_grad`, `X.to(device)`, forward, loss, backward, step, tqdm).

What differs, only so that a benchmark can drive it: the loop is wrapped in `ArticleLoop.steps(n)`,
which runs n steps (epochs restart with a fresh, reshuffled iterator as in the article's
`for e in range(epoch)`), the device and data root are parameters, `download=False` (the
machines here are offline; the files must be in `root/MNIST/raw`), tqdm writes nowhere unless
asked, and the figure / test loop is dropped (the benchmark times training only). The clock
stops after `loss.item()`, which on a GPU waits for the queued work, as the article's per-epoch
`print(f'Loss: {loss.item()}')` does.

This file is not part of the installed package; `runners.bench.main` imports it by path.
"""

from __future__ import annotations

import io
import sys
import time

import torch
import torch.autograd as autograd
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torchvision import datasets, transforms
from tqdm import tqdm

# dataset preparation
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


# defining networks
class STEFunction(autograd.Function):
    @staticmethod
    def forward(ctx, input):
        return (input > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        return F.hardtanh(grad_output)


class StraightThroughEstimator(nn.Module):
    def __init__(self):
        super(StraightThroughEstimator, self).__init__()  # noqa: UP008 - the article's line

    def forward(self, x):
        x = STEFunction.apply(x)
        return x


class Autoencoder(nn.Module):
    def __init__(self):
        super(Autoencoder, self).__init__()  # noqa: UP008 - the article's line
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1)),
            nn.ReLU(),
            nn.Conv2d(64, 128, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1)),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 256, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1)),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Conv2d(256, 512, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1)),
            nn.BatchNorm2d(512),
            nn.ReLU(),
            StraightThroughEstimator(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(512, 256, kernel_size=(5, 5), stride=(2, 2), padding=(1, 1)),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.ConvTranspose2d(256, 128, kernel_size=(5, 5), stride=(2, 2), padding=(1, 1)),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.ConvTranspose2d(128, 64, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1)),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 1, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1)),
            nn.Tanh(),
        )

    def forward(self, x, encode=False, decode=False):
        if encode:
            x = self.encoder(x)
        elif decode:
            x = self.decoder(x)
        else:
            encoding = self.encoder(x)
            x = self.decoder(encoding)
        return x


class ArticleLoop:
    """The article's training loop, runnable a chunk of steps at a time.

    Args:
        device: torch device string, e.g. "cpu" or "cuda:0".
        root: folder holding `MNIST/raw/` with the four IDX files (torchvision's layout).
        progress: show the article's tqdm bar (off for benchmarks: it only adds noise).
    """

    def __init__(self, device: str, root: str, *, progress: bool = False) -> None:
        self.device = device
        trainset = datasets.MNIST(root, train=True, download=False, transform=transform)
        self.trainloader = torch.utils.data.DataLoader(trainset, batch_size=64, shuffle=True)
        self.net = Autoencoder().to(device)
        self.optimizer = optim.Adam(self.net.parameters(), lr=0.001, betas=(0.5, 0.999))
        self.criterion_MSE = nn.MSELoss().to(device)
        self.progress = progress
        self.images = 0  # training images seen so far
        self.last_loss = float("nan")
        self._batches = None

    def _next_batch(self):
        # `for e in range(epoch): for X, y in tqdm(trainloader)`, resumable between chunks.
        while True:
            if self._batches is None:
                self._batches = iter(
                    tqdm(self.trainloader, disable=not self.progress, file=_sink(self.progress))
                )
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None

    def steps(self, n: int) -> float:
        """Train `n` steps of the article's loop; return the wall time in seconds."""
        device, net, optimizer, criterion_MSE = (
            self.device,
            self.net,
            self.optimizer,
            self.criterion_MSE,
        )
        start = time.perf_counter()
        for _ in range(n):
            X, y = self._next_batch()
            optimizer.zero_grad()
            X = X.to(device)
            reconstruction = net(X)
            loss = criterion_MSE(reconstruction, X)
            loss.backward()
            optimizer.step()
            self.images += X.shape[0]
        self.last_loss = loss.item()  # the article prints this; on a GPU it waits for the work
        return time.perf_counter() - start


def _sink(progress: bool):
    return None if progress else io.StringIO()


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - manual use
    """`python benchmarks/article_loop.py ROOT [DEVICE] [STEPS]`: time the article's loop."""
    args = sys.argv[1:] if argv is None else argv
    root = args[0]
    device = args[1] if len(args) > 1 else ("cuda:0" if torch.cuda.is_available() else "cpu")
    n = int(args[2]) if len(args) > 2 else 100
    loop = ArticleLoop(device, root, progress=True)
    loop.steps(5)  # warm-up
    seconds = loop.steps(n)
    print(f"{n * 64 / seconds:.1f} images/s over {n} steps on {device}; loss {loop.last_loss:.4f}")


if __name__ == "__main__":  # pragma: no cover
    main()
