"""Fingerprints of the CPU kernels a portable run uses: one sha256 prefix per op result.

Every layer of the article's model as training builds it (the point layers as products, the other
convolutions through oneDNN), in training mode with its gradients (batch 64) and in evaluation
mode (batches 64 and 1000, as `runners.training.evaluate` runs them); fused Adam's step; the
estimators' noise and the data order (torch's CPU generator); the loss and metric reductions;
the digit probe's float64 products and solve; and the Bernoulli VAE task's step (nonlinear
model, every estimator family: its layers, objective, gradients, Adam, the prior's SGD) and its
100-sample bound. Inputs are drawn from numpy's PCG64 (the same bits on every platform) and the
weights from torch's seeded generator.

An op whose hash equals the committed one (`kernels.json`) computes the same arithmetic as on the
machine that recorded it. Because each layer's input is the previous layer's output, the first
op that differs (in the order listed) is the one whose kernel differs; later ones may only
inherit its difference.

    python tests/golden/kernel_cases.py record          # kernels.json, 1 and 2 threads
    python tests/golden/kernel_cases.py print --threads 1

Run in portable mode (`runners.determinism.PORTABLE_ENV` set before torch loads): `record` and
`print` pin it themselves. `tests/test_kernel_fingerprint.py` compares and names what differs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # the checkout, when this file runs as a script
from runners import determinism  # noqa: E402  (pins before torch loads)

GOLDEN = HERE / "kernels.json"
THREADS = (1, 2)


def fingerprint(threads: int) -> dict[str, str]:
    """Every op result's hash, in the order the ops run."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from runners.config import RunConfig
    from runners.training.data import epoch_permutation, normalize
    from runners.training.recipe import build_model, build_optimizer

    determinism.check_active("portable")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(20261207)
    out: dict[str, str] = {}

    def put(name: str, tensor: torch.Tensor) -> None:
        data = tensor.detach().contiguous().cpu().numpy().tobytes()
        out[name] = hashlib.sha256(data).hexdigest()[:16]

    def images(n: int) -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8))

    config = RunConfig(estimator="identity", seed=0, device="cpu")
    model = build_model(config, torch.device("cpu"))
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children()) and n]

    # training mode: every layer's output and the gradient reaching it, every parameter's gradient
    kept: list[tuple[str, torch.Tensor]] = []

    def keep(name: str):
        def hook(module: Any, inputs: Any, output: torch.Tensor) -> None:
            if output.requires_grad:
                output.retain_grad()
            kept.append((f"{name} {type(module).__name__}", output))

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in leaves]
    model.train()
    x = normalize(images(64))
    loss = F.mse_loss(model(x), x)
    loss.backward()
    for name, output in kept:
        put(f"train/{name}.fwd", output)
    put("train/mse_loss", loss)
    for name, output in reversed(kept):
        if output.grad is not None:
            put(f"train/{name}.grad_out", output.grad)
    for name, parameter in model.named_parameters():
        put(f"train/{name}.grad", parameter.grad)
    for name, buffer in model.named_buffers():
        if buffer.is_floating_point():
            put(f"train/{name}", buffer)  # BatchNorm's running statistics

    # fused Adam (the optimiser every run builds), two steps on these gradients
    optimizer = build_optimizer(config, model)
    optimizer.step()
    optimizer.step()
    for name, parameter in model.named_parameters():
        put(f"adam/{name}", parameter)

    # evaluation mode at the batch sizes evaluation uses
    model.eval()
    for batch in (64, 1000):
        kept.clear()
        with torch.no_grad():
            x = normalize(images(batch))
            recon = model(x)
            squared = F.mse_loss(recon.float(), x, reduction="sum").to(torch.float64)
        for name, output in kept:
            put(f"eval{batch}/{name}.fwd", output)
        put(f"eval{batch}/mse_sum", squared)
        (code,) = [output for name, output in kept if name.startswith("binarize")]
        codes = code.reshape(batch, -1).to(torch.uint8)
        put(f"eval{batch}/bit_rates", codes.sum(0, dtype=torch.float64) / batch)
    for handle in handles:
        handle.remove()

    # the digit probe: ridge regression on the codes, in float64 (runners.training.metrics)
    codes = torch.from_numpy(rng.integers(0, 2, (1000, 512)).astype(np.float64))
    x = torch.cat([codes, torch.ones(1000, 1, dtype=torch.float64)], dim=1)
    y = F.one_hot(torch.from_numpy(rng.integers(0, 10, 1000)), 10).to(torch.float64)
    gram = x.T @ x + torch.diag(torch.full((513,), 1e-3, dtype=torch.float64))
    put("probe/gram", gram)
    weights = torch.linalg.solve(gram, x.T @ y)
    put("probe/solve", weights)
    put("probe/predict", x @ weights)

    # random streams: the data order, the estimators' noise, the weights' initialisation
    generator = torch.Generator().manual_seed(1)
    put("random/epoch_permutation", epoch_permutation(60_000, generator))
    put("random/rand", torch.rand(64, 512, generator=generator))
    put("random/randn", torch.randn(64, 512, generator=generator))
    put("random/bernoulli", torch.bernoulli(torch.full((64, 512), 0.3), generator=generator))
    put("random/exponential", torch.empty(64, 512).exponential_(generator=generator))
    logistic = torch.rand(64, 512, generator=generator)
    put("random/logistic", torch.log(logistic) - torch.log1p(-logistic))
    put("random/init", next(build_model(config.replace(seed=3), torch.device("cpu")).parameters()))
    put("pointwise/sigmoid", torch.sigmoid(torch.from_numpy(rng.standard_normal(4096) * 4)).float())
    _vae_fingerprint(rng, put)
    return out


def _vae_fingerprint(rng: Any, put: Any) -> None:
    """The Bernoulli VAE task's step and bound, as `runners.tasks.vae` runs them."""
    import torch

    from runners.config import RunConfig
    from runners.tasks.lookup import get_task

    task = get_task("bernoulli_vae")
    images = torch.from_numpy(rng.integers(0, 256, (50, 1, 28, 28)).astype("uint8"))
    for estimator in ("disarm", "reinforce_loo", "gumbel", "reinmax"):
        config = RunConfig(
            task="bernoulli_vae", dataset="mnist-mini", vae_arch="nonlinear", device="cpu",
            estimator=estimator, seed=0,
        )  # fmt: skip
        device = torch.device("cpu")

        class State:  # what the task's step reads of a run's state
            pass

        state = State()
        state.config, state.step = config, 0
        state.model = task.build_model(config, device)
        state.model.binarize.generator = torch.Generator().manual_seed(5)
        state.optimizer = task.build_optimizer(config, state.model)
        state.extra = task.init_extra(state.model)
        x = task.batch(state, images.reshape(50, 1, 28, 28), torch.arange(50))
        put(f"vae/{estimator}/binarized", x)
        x = x.reshape(50, -1).float() if x.dim() > 2 else x
        put(f"vae/{estimator}/logits", state.model.logits(x))
        loss, _ = task.step(state)(x)
        put(f"vae/{estimator}/loss", loss)
        for name, parameter in state.model.named_parameters():
            put(f"vae/{estimator}/step/{name}", parameter)
        put(f"vae/{estimator}/grad_var_ema", state.extra["grad_sq"])
        bound = state.model.iwae_bound(x, 100, torch.Generator().manual_seed(6))
        put(f"vae/{estimator}/iwae_bound_100", bound)


def machine() -> dict[str, Any]:
    """Where the fingerprint was taken."""
    import torch

    return {
        "cpu_vendor": determinism.cpu_vendor(),
        "cpu_model": determinism.cpu_model(),
        "cpu_flags": determinism.cpu_flags(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_branch": determinism.mkl_branch(),
        "onednn_isa": determinism.onednn_isa(),
        "torch": str(torch.__version__),
    }


def in_fresh_process(threads: int) -> dict[str, Any]:
    """`fingerprint(threads)` in a new interpreter pinned to portable kernels."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__)), "print", "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"fingerprint with {threads} threads failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def differences(want: dict[str, str], got: dict[str, str]) -> list[str]:
    """The ops whose results differ (or are missing on one side), in the recorded order."""
    return [name for name in {**want, **got} if want.get(name) != got.get(name)]


def main(argv: list[str]) -> int:
    if argv[:1] == ["print"] and len(argv) == 3 and argv[1] == "--threads":
        determinism.pin("portable")
        threads = int(argv[2])
        print(json.dumps({"machine": machine(), "ops": fingerprint(threads)}))
        return 0
    if argv == ["record"]:
        runs = {str(t): in_fresh_process(t) for t in THREADS}
        record = {
            "machine": runs["1"]["machine"],
            "threads": {t: run["ops"] for t, run in runs.items()},
        }
        GOLDEN.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {GOLDEN} ({len(runs['1']['ops'])} ops x {len(THREADS)} thread counts)")
        return 0
    print("usage: python tests/golden/kernel_cases.py record | print --threads N", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
