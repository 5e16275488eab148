"""`ste-ablate bench --task bernoulli_vae`: ours against the reference's loop, steps/s.

Two loops of the DisARM protocol (DisARM estimator, linear, 200 latents, batch 50), alternated
round after round in one process on the same data:

- "reference loop": one run, written in plain PyTorch the way the reference
  (google-research `disarm/binary/experiment_launcher_singlelayer.py` and `networks.py`) writes
  it: a per-image dataset that binarises each image when it is read, shuffled and batched by a
  DataLoader; per step one model call for the decoder's and prior's loss (encoder + sample +
  decoder), the estimator's own encoder call and two ELBO calls (each through encoder and
  decoder), the encoder's gradient through `autograd.grad(logits, ..., grad_outputs)`, three
  optimisers (Adam, Adam, SGD) and per-parameter moment averages for the gradient variance.
- "ours": the engine's batch loop (`runners.bench.ours.OursLoop` over
  `runners.engine.loop.BatchLoop`, the loop `train_run` runs) on one run, and on a stack of K
  runs as `train_runs` steps them; the same chunks of steps, with the engine's per-step
  bookkeeping (step records, read-back, divergence check), no evaluation or store writes.

Steps/s counts every run's steps: a stack of K runs does K steps per step of the loop.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from runners.bench.datasets import pick_dataset
from runners.bench.ours import OursLoop
from runners.config import RunConfig
from runners.config_tasks import VAE_TRAIN_SIZES
from runners.tasks.vae_model import BernoulliVAE, bernoulli_log_prob
from runners.training.data import TRAIN_SELECTION_SEED, load_arrays, selection
from runners.training.device import resolve_device

EMA = 0.999


class _DynamicMnist(Dataset):
    """Each read of an image draws a fresh binarisation (the reference's `map(_preprocess)`)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images.reshape(images.shape[0], -1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.bernoulli(self.images[index].to(torch.float32) / 255.0)


class ReferenceLoop:
    """The reference's training step for DisARM, in plain PyTorch (one run)."""

    def __init__(self, images: torch.Tensor, device: torch.device, seed: int = 0) -> None:
        torch.manual_seed(seed)
        mean = images.reshape(images.shape[0], -1).double().mean(0) / 255.0
        self.model = BernoulliVAE("linear", 200, "disarm", mean).to(device)
        self.device = device
        model = self.model
        self.genmo = torch.optim.Adam(model.decoder.parameters(), lr=1e-4, eps=1e-7)
        self.infnet = torch.optim.Adam(model.encoder.parameters(), lr=1e-4, eps=1e-7)
        self.prior = torch.optim.SGD([model.prior_logits], lr=1e-2)
        params = list(model.encoder.parameters())
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        loader = DataLoader(_DynamicMnist(images), batch_size=50, shuffle=True, drop_last=True)
        self.loader, self.batches = loader, iter(loader)
        self.variance = 0.0

    def _batch(self) -> torch.Tensor:
        try:
            return next(self.batches).to(self.device)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches).to(self.device)

    def _elbo(self, x: torch.Tensor, b: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        model = self.model
        logits = model.encoder(x)
        if b is None:
            b = torch.bernoulli(torch.sigmoid(logits)).detach()
        llk = bernoulli_log_prob(logits, b).sum(-1)
        prior = bernoulli_log_prob(model.prior_logits.expand_as(b), b).sum(-1)
        decoder = bernoulli_log_prob(model.decoder(b), x).sum(-1)
        return decoder + prior - llk, logits

    def step(self) -> torch.Tensor:
        model, x = self.model, self._batch()
        elbo, logits = self._elbo(x)
        genmo_loss = -elbo.mean()
        decoder = list(model.decoder.parameters())
        encoder = list(model.encoder.parameters())
        grads = torch.autograd.grad(genmo_loss, [*decoder, model.prior_logits], retain_graph=True)
        with torch.no_grad():  # the estimator's own calls (not under the reference's tape)
            phi = model.encoder(x)
            u = torch.rand_like(phi)
            sigma = torch.sigmoid(phi)
            b1, b2 = (u > 1 - sigma).float(), (u < sigma).float()
            f1, f2 = self._elbo(x, b1)[0][:, None], self._elbo(x, b2)[0][:, None]
            factor = ((1 - b1) * b2 + b1 * (1 - b2)) * (-1.0) ** b2 * torch.sigmoid(phi.abs())
            multiplier = -0.5 * (f1 - f2) * factor
        infnet = torch.autograd.grad(logits, encoder, grad_outputs=multiplier)
        for p, g in zip([*decoder, model.prior_logits], grads, strict=True):
            p.grad = g
        for p, g in zip(encoder, infnet, strict=True):
            p.grad = g
        self.genmo.step()
        self.prior.step()
        self.infnet.step()
        with torch.no_grad():
            parts = []
            for (mean, square), g in zip(self.moments, infnet, strict=True):
                mean.mul_(EMA).add_(g, alpha=1 - EMA)
                square.mul_(EMA).add_(g * g, alpha=1 - EMA)
                parts.append((square - mean**2).reshape(-1))
            self.variance = torch.cat(parts).mean() / 50**2
        return genmo_loss.detach()

    def steps(self, n: int) -> float:
        """Train n steps; their wall time in seconds."""
        start = time.perf_counter()
        for _ in range(n):
            loss = self.step()
        float(loss)
        return time.perf_counter() - start


def run_vae_bench(
    *,
    device: str = "auto",
    steps: int = 200,
    rounds: int = 3,
    stack: int = 4,
    data_root: str | None = None,
    dataset: str = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Alternate the reference loop and ours (single run, and a stack of `stack`) `rounds`
    times for `steps` steps each, after 5 warm-up steps; steps/s per loop (median over rounds;
    a stack counts every run's steps) and ratios. `dataset` as `pick_dataset` reads it."""
    resolved = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    dataset, root = pick_dataset(data_root, dataset)  # root: None for mnist-mini
    train, _ = load_arrays(dataset, root, download=False)
    index = selection(len(train), TRAIN_SELECTION_SEED)[: VAE_TRAIN_SIZES[dataset]]
    images = train.images.index_select(0, index)
    reference = ReferenceLoop(images, resolved)
    config = RunConfig(
        task="bernoulli_vae",
        estimator="disarm",
        dataset=dataset,
        device=str(resolved),
        data_root=str(root) if root is not None else None,
    )
    single = OursLoop(config, None, resolved)
    members = [config.replace(seed=k) for k in range(stack)]
    stacked = OursLoop(members, single.data, resolved)
    loops = {"reference loop": (reference, 1), "ours (1 run)": (single, 1)}
    loops[f"ours (stack of {stack})"] = (stacked, stack)
    for loop, _ in loops.values():
        loop.steps(5)  # warm-up
    rows: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, (loop, runs) in loops.items():
            rows[name].append(runs * steps / loop.steps(steps))
    base = statistics.median(rows["reference loop"])
    return {
        "task": "bernoulli_vae",
        "estimator": "disarm",
        "device": str(resolved),
        "threads": torch.get_num_threads(),
        "dataset": dataset,
        "steps_per_round": steps,
        "rounds": rounds,
        "loops": {
            name: {
                "steps_per_s": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "vs_reference": statistics.median(values) / base,
            }
            for name, values in rows.items()
        },
    }


def format_vae_report(result: dict[str, Any]) -> str:
    """The table of a `run_vae_bench` result."""
    lines = [
        f"Bernoulli VAE (DisARM, linear, batch 50) on {result['device']}, {result['threads']} "
        f"threads, {result['dataset']}: {result['rounds']} rounds x {result['steps_per_round']} "
        "steps per loop, interleaved",
        f"{'loop':<22} {'steps/s':>9} {'min-max':>15} {'vs reference':>13}",
    ]
    for name, row in result["loops"].items():
        spread = f"{row['min']:.0f}-{row['max']:.0f}"
        lines.append(
            f"{name:<22} {row['steps_per_s']:>9.1f} {spread:>15} {row['vs_reference']:>12.2f}x"
        )
    lines.append("(a stack of K runs counts K steps per step of the loop)")
    return "\n".join(lines)
