"""The DisARM benchmark as a task: a Bernoulli VAE on dynamically binarised MNIST.

Protocol (Dong, Mnih, Tucker, NeurIPS 2020; facts read from google-research
`disarm/binary/experiment_launcher_singlelayer.py`, `networks.py`, `dataset.py`):

- Data: the first 5/6 of the fixed train selection is the training split (MNIST: 50000, the
  reference's `train[:50000]`), the rest its validation split (not scored here); the test set
  as is. Dynamic binarisation: every time an image is used, each pixel is a fresh Bernoulli draw
  with probability intensity/255. The uniforms of step s come from a generator seeded with
  (run seed, s), so every estimator of a seed sees the same bits and a resumed run too.
- Model (`runners.tasks.vae_model`): `vae_arch` linear or nonlinear, `vae_latents` latents,
  learned factorised Bernoulli prior; the decoder's output bias starts at
  logit(clip(mean training pixel, 0.001, 0.999)) (the reference's `initialize_with_bias`).
- Optimisers: Adam (lr 1e-4, betas (0.9, 0.999), ε 1e-7: Keras' defaults) on encoder and
  decoder, plain SGD with `vae_prior_lr` (1e-2) on the prior's logits; batch 50, so an epoch of
  MNIST is 1000 steps, the reference's evaluation interval.
- Gradient: the estimator's estimate of ∇_logits E_q[−ELBO] (`ste_variants.estimate_gradient`),
  averaged over the batch (the reference sums over the batch and divides its variance by B²;
  the variance recorded here is the same number).
- Each epoch: `train_neg_elbo`, −ELBO (one sample) on the fixed first `vae_train_eval` training
  images; `test_iwae_bound`, the `vae_eval_samples`-sample importance-weighted bound on the test set
  (both with a fixed binarisation and fixed latent draws per seed and epoch); `grad_var`, the
  mean over the encoder's parameters of the running variance EMA(g²) − EMA(g)² of the encoder's
  gradient (decay 0.999, starting at zero, as the reference's `compute_grad_variance`);
  `evaluations`, objective evaluations per example and step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runners.config import RunConfig
from runners.config_tasks import VAE_TRAIN_SIZES
from runners.tasks.vae_model import PIXELS, BernoulliVAE
from runners.training.data import (
    TEST_SELECTION_SEED,
    TRAIN_SELECTION_SEED,
    Split,
    load_arrays,
    selection,
)
from runners.training.evaluate import FIGURE_IMAGES, figure_digits, save_reconstruction_png
from runners.training.kernels import adam, tune_cpu_malloc
from runners.training.recipe import derive_seed
from ste_variants import estimate_gradient, evaluations_per_step
from ste_variants.unbiased import check_samples_bernoulli

ADAM_EPS = 1e-7  # Keras' Adam, the reference's optimiser
EMA_DECAY = 0.999  # the reference's running estimate of the gradient's moments
EVAL_CHUNK = 100  # test images per chunk of the K-sample bound (K x 100 x 784 floats)


@dataclass(frozen=True)
class VaeData:
    """Training, validation and test splits (uint8 images (N, 1, 28, 28) on the device), and
    the mean training pixel (784,) as a probability, float64 on the CPU."""

    train: Split
    valid: Split
    test: Split
    pixel_mean: torch.Tensor


def binarize(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dynamic binarisation: uint8 images (B, ...) → float32 (B, 784), 1 with probability
    intensity/255, from float32 uniforms of the (CPU) generator."""
    flat = images.reshape(images.shape[0], PIXELS)
    u = torch.rand(flat.shape, generator=generator, dtype=torch.float32).to(flat.device)
    return (u < flat.to(torch.float32) / 255.0).to(torch.float32)


@functools.lru_cache(maxsize=4)
def _pixel_mean(dataset: str, train_subset: int | None, data_root: str | None) -> torch.Tensor:
    """The mean training pixel (784,) as a probability, float64 on the CPU: exact integer sums
    over chunks of the uint8 images, divided once."""
    train_all, _ = load_arrays(dataset, data_root)
    size = VAE_TRAIN_SIZES[dataset]
    index = selection(len(train_all), TRAIN_SELECTION_SEED)[:size][: train_subset or size]
    total = torch.zeros(PIXELS, dtype=torch.int64)
    for start in range(0, len(index), 5000):
        chunk = train_all.images.index_select(0, index[start : start + 5000])
        total += chunk.reshape(-1, PIXELS).to(torch.int32).sum(0, dtype=torch.int64)
    return total.to(torch.float64) / (255.0 * len(index))


def _generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, stream))


class VaeStep:
    """One training step of the VAE (a `StepStrategy`): estimate, back-propagate, update.

    The encoder gets the estimator's gradient, decoder and prior the gradient of the samples'
    mean −ELBO; Adam steps encoder and decoder, SGD the prior; the running moments of the
    encoder's gradient are updated in `state.extra`.
    """

    verified = True

    def __init__(self, state: Any) -> None:
        self.model: BernoulliVAE = state.model
        self.optimizer = state.optimizer
        self.prior_lr = state.config.vae_prior_lr
        self.extra = state.extra
        self.encoder_params = self.model.encoder_parameters()
        check_samples_bernoulli(self.model.estimator)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        model = self.model
        self.optimizer.zero_grad(set_to_none=True)
        model.prior_logits.grad = None
        logits = model.logits(x)
        out = estimate_gradient(
            model.estimator, logits, model.objective(x, logits), model.binarize.generator
        )
        out.surrogate.mean().backward()
        with torch.no_grad():
            model.prior_logits.sub_(model.prior_logits.grad, alpha=self.prior_lr)
            grad = torch.cat([p.grad.reshape(-1) for p in self.encoder_params])
            mean, square = self.extra["grad_mean"], self.extra["grad_sq"]
            mean.mul_(EMA_DECAY).add_(grad, alpha=1.0 - EMA_DECAY)
            square.mul_(EMA_DECAY).addcmul_(grad, grad, value=1.0 - EMA_DECAY)
        self.optimizer.step()
        return out.loss.mean().detach(), None


class BernoulliVaeTask:
    """The Bernoulli VAE (`runners.tasks.base.Task`)."""

    name = "bernoulli_vae"
    groupable = False
    train_key = "train_loss"
    divergence_key = "test_iwae_bound"
    summary_keys = ("train_neg_elbo", "test_iwae_bound", "grad_var", "evaluations")

    def prepare_data(self, config: RunConfig, device: torch.device) -> VaeData:
        train_all, test_all = load_arrays(config.dataset, config.data_root)
        order = selection(len(train_all), TRAIN_SELECTION_SEED)
        size = VAE_TRAIN_SIZES[config.dataset]
        test_index = selection(len(test_all), TEST_SELECTION_SEED)[: config.test_subset]

        def split(whole: Split, index: torch.Tensor) -> Split:
            images = whole.images.index_select(0, index).unsqueeze(1).contiguous()
            return Split(images.to(device), whole.labels.index_select(0, index))

        train = split(train_all, order[:size][: config.train_subset or size])
        mean = _pixel_mean(config.dataset, config.train_subset, config.data_root)
        return VaeData(train, split(train_all, order[size:]), split(test_all, test_index), mean)

    def build_model(
        self, config: RunConfig, device: torch.device, *, fast: bool = True
    ) -> torch.nn.Module:
        mean = _pixel_mean(config.dataset, config.train_subset, config.data_root)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(config.seed, "init"))
            model = BernoulliVAE(config.vae_arch, config.vae_latents, config.estimator, mean)
        model.estimator.paired_noise = True  # gumbel draws the bits of the others
        if fast and device.type == "cpu":
            tune_cpu_malloc()  # the CPU fast path: freed step memory stays in the process
        return model.to(device)

    def build_optimizer(
        self, config: RunConfig, model: torch.nn.Module, *, fast: bool = True
    ) -> torch.optim.Optimizer:
        params = [*model.encoder.parameters(), *model.decoder.parameters()]
        device = params[0].device
        betas = (config.beta1, config.beta2)
        if fast:
            optimizer = adam(params, config.lr, betas, device)
        else:
            optimizer = torch.optim.Adam(params, lr=config.lr, betas=betas)
        for group in optimizer.param_groups:
            group["eps"] = ADAM_EPS
        return optimizer

    def init_extra(self, model: torch.nn.Module) -> dict[str, Any]:
        """The running moments of the encoder's gradient (zeros), on the model's device."""
        size = sum(p.numel() for p in model.encoder_parameters())
        device = model.prior_logits.device
        zeros = torch.zeros(size, dtype=torch.float32, device=device)
        return {"grad_mean": zeros, "grad_sq": zeros.clone()}

    def step(self, state: Any) -> VaeStep:
        return VaeStep(state)

    def batch(self, state: Any, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        generator = _generator(state.config.seed, f"binarize:{state.step}")
        return binarize(images.index_select(0, index.to(images.device)), generator)

    @torch.no_grad()
    def evaluate(self, state: Any, data: VaeData, epoch: int, final: bool) -> dict[str, Any]:
        config, model = state.config, state.model
        generator = _generator(config.seed, f"evaluate:{epoch}")
        count = min(config.vae_train_eval or len(data.train), len(data.train))
        train_sum = 0.0
        for start in range(0, count, EVAL_CHUNK):
            x = binarize(data.train.images[start : min(start + EVAL_CHUNK, count)], generator)
            train_sum += float(model.iwae_bound(x, 1, generator).sum())
        test_sum = 0.0
        for start in range(0, len(data.test), EVAL_CHUNK):
            x = binarize(data.test.images[start : start + EVAL_CHUNK], generator)
            test_sum += float(model.iwae_bound(x, config.vae_eval_samples, generator).sum())
        mean, square = state.extra["grad_mean"], state.extra["grad_sq"]
        variance = (square.double() - mean.double() ** 2).mean()
        return {
            "train_neg_elbo": train_sum / count,
            "test_iwae_bound": test_sum / len(data.test),
            "grad_var": float(variance),
            "evaluations": evaluations_per_step(model.estimator),
        }

    def diagnostics(self, state: Any, data: VaeData) -> dict[str, Any]:
        return {}  # the article's diagnostics probe its threshold; see docs/tasks.md

    def describe_record(self, record: dict[str, Any]) -> str:
        return (
            f"train_loss={record['train_loss']:.3f} "
            f"-elbo(train)={record['train_neg_elbo']:.3f} "
            f"iwae(test)={record['test_iwae_bound']:.3f} grad_var={record['grad_var']:.3g} "
            f"{record['images_per_s']:.0f} img/s"
        )

    @torch.no_grad()
    def write_figure(self, state: Any, data: VaeData, path: Path) -> bool:
        """Five test digits (grey originals) above the decoder's pixel probabilities at the
        encoder's most likely code 1{logits > 0}, both drawn on [-1, 1]."""
        model = state.model
        chosen = figure_digits(data.test.labels, FIGURE_IMAGES)
        images = data.test.images[torch.tensor(chosen, device=data.test.images.device)]
        grey = images.reshape(len(chosen), PIXELS).to(torch.float32) / 255.0
        code = (model.logits(grey.round()) > 0).to(torch.float32)
        probs = torch.sigmoid(model.decoder(code))
        labels = [int(data.test.labels[i]) for i in chosen]
        save_reconstruction_png(path, (2 * grey - 1).cpu(), (2 * probs - 1).cpu(), labels)
        return True


TASK = BernoulliVaeTask()
