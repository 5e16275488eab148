"""Images/s of one training step of our model under each speed option, interleaved.

    python benchmarks/step_variants.py [THREADS] [ROUNDS] [STEPS]

Batch 64 of random images (no data loading): plain, channels_last, fused Adam, the point-layer
matmuls of runners.training.kernels, both, both + channels_last, and bf16 autocast. Prints the median and
best round of each; the best round is the robust number on a shared machine (interference only
ever slows a round down).
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from runners.training.kernels import adam, use_point_matmuls
from runners.training.model import BinaryAutoencoder

VARIANTS = {
    "plain": {},
    "channels_last": {"cl": True},
    "fused Adam": {"fused": True},
    "point layers": {"point": True},
    "fused + point": {"fused": True, "point": True},
    "fused + point + channels_last": {"fused": True, "point": True, "cl": True},
    "bf16 plain": {"bf16": True},
    "bf16 fused + point": {"fused": True, "point": True, "bf16": True},
}


def make(base, x, fused=False, point=False, cl=False, bf16=False):
    net = copy.deepcopy(base)
    if point:
        use_point_matmuls(net)
    if cl:
        net, x = (
            net.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    if fused:
        opt = adam(net.parameters(), 1e-3, (0.5, 0.999), "cpu")
    else:
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))

    def steps(n):
        start = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                recon = net(x)
            loss = F.mse_loss(recon.float(), x)
            loss.backward()
            opt.step()
        loss.item()
        return (time.perf_counter() - start) / n

    return steps


def main() -> None:
    threads, rounds, n = (int(a) for a in (sys.argv[1:] + ["2", "6", "5"][len(sys.argv) - 1 :]))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base, x = BinaryAutoencoder(), torch.rand(64, 1, 28, 28) * 2 - 1
    loops = {name: make(base, x, **kw) for name, kw in VARIANTS.items()}
    for loop in loops.values():
        loop(2)
    rates = {name: [] for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            rates[name].append(64 / loop(n))
    plain = max(rates["plain"])
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{threads} threads, {rounds} rounds x {n} steps, torch {torch.__version__}, load {load}")
    for name, r in rates.items():
        print(
            f"{name:32s} median {statistics.median(r):6.0f}  best {max(r):6.0f}  "
            f"best vs plain {max(r) / plain:4.2f}x"
        )


if __name__ == "__main__":
    main()
