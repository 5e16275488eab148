"""How far each speed option drifts from the plain fp32 step: same weights, same batches.

    python benchmarks/drift.py [STEPS]

Trains our model STEPS steps (default 30) on the first STEPS x 64 training images (full MNIST
under $STE_DATA_ROOT, else mnist-mini) in each variant and prints the relative difference of the
training loss to the plain one-thread run at steps 1, 10 and STEPS, and of the test MSE (first
1000 test images) and binary codes after training. Rounding differences of ~1e-7 grow in this
training (code bits flip, Adam scales up pure-rounding gradients): compare a variant with the
"plain, 2 threads" row, which is the same code summed in another order.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch
import torch.nn.functional as F

from runners.speed.grouped import StackedAutoencoder, member_losses
from runners.training.data import MNIST_FILES, load_arrays, normalize, resolve_data_root
from runners.training.kernels import adam, prepare_model
from runners.training.model import BinaryAutoencoder

VARIANTS = {
    "plain, same again": {},
    "plain, 2 threads": {"threads": 2},
    "fast path (point layers + fused Adam)": {"fast": True},
    "channels_last": {"cl": True},
    "grouped stack of 1": {"grouped": True},
}


def run(base, x, xt, steps, threads=1, fast=False, cl=False, grouped=False):
    torch.set_num_threads(threads)
    net = copy.deepcopy(base)
    if fast:
        prepare_model(net, "cpu")
    if cl:
        net = net.to(memory_format=torch.channels_last)
    model = StackedAutoencoder([net]) if grouped else net
    if fast:
        opt = adam(model.parameters(), 1e-3, (0.5, 0.999), "cpu")
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    losses = []
    for s in range(steps):
        batch = x[s * 64 : (s + 1) * 64]
        if cl:
            batch = batch.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        recon = model(batch)
        loss = member_losses(recon, batch)[0] if grouped else F.mse_loss(recon, batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    if grouped:
        model.unload_members([net])
    net.eval()
    with torch.no_grad():
        return np.array(losses), F.mse_loss(net(xt), xt).item(), net.encode(xt)


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    root = resolve_data_root()
    full = all((root / "MNIST" / "raw" / f).is_file() for f in MNIST_FILES)
    train, test = load_arrays("mnist" if full else "mnist-mini", root)
    x = normalize(train.images[: steps * 64].unsqueeze(1))
    xt = normalize(test.images[:1000].unsqueeze(1))
    torch.manual_seed(0)
    base = BinaryAutoencoder()
    ref = run(base, x, xt, steps)
    print(
        f"{'full MNIST' if full else 'mnist-mini'}, {steps} steps; plain 1-thread loss "
        f"{ref[0][0]:.5f} -> {ref[0][-1]:.5f}, test MSE {ref[1]:.5f}"
    )
    print(f"| variant | step 1 | step 10 | step {steps} | max | test MSE | code bits differing |")
    for name, kwargs in VARIANTS.items():
        losses, test_mse, codes = run(base, x, xt, steps, **kwargs)
        rel = np.abs(losses - ref[0]) / ref[0]
        print(
            f"| {name} | {rel[0]:.1e} | {rel[min(9, steps - 1)]:.1e} | {rel[-1]:.1e} | "
            f"{rel.max():.1e} | {abs(test_mse - ref[1]) / ref[1]:.1e} | "
            f"{(codes != ref[2]).float().mean():.1%} |"
        )


if __name__ == "__main__":
    main()
