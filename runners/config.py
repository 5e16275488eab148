"""The configuration of one training run.

`RunConfig` is a frozen dataclass whose defaults are the reference article's recipe (Adam,
lr 1e-3, betas (0.5, 0.999), batch 64, 5 epochs, MSE loss, the article's hardtanh STE). Specs and
CLI flags are diffs against these defaults. Every value is validated when the config is built, so
a `RunConfig` that exists is a valid one; the estimator spec is stored in its canonical form so
that equal configs give equal run ids.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from runners.config_tasks import (
    DEFAULT_TASK,
    MAX_EVAL_SAMPLES,
    MAX_LATENTS,
    TASK_DEFAULTS,
    TASKS,
    VAE_ARCHS,
    task_problems,
)
from runners.determinism import DEFAULT_MODE
from runners.determinism import MODES as DETERMINISM_MODES
from runners.errors import short_repr, unknown_name
from runners.store.format import IDENTITY_FIELDS, identity_of, run_id_for

# Images per split of each dataset (train, test); train_subset/test_subset may not exceed them.
DATASET_SIZES: dict[str, tuple[int, int]] = {"mnist": (60000, 10000), "mnist-mini": (6000, 1000)}
PRECISIONS = ("fp32", "bf16")
PROBES = ("linear", "knn")
DIAGNOSTICS = ("epoch", "off")
GRADIENT_ERROR = ("off", "checkpoints")
MAX_EXACT_CODE = 16  # widest article code that gradient_error checkpoints enumerate
KEEP_CHECKPOINT = ("final", "none")
# Other names for a field, where spelling is too far off for a close match to find it.
KEY_ALIASES = {
    "learning_rate": "lr",
    "learning-rate": "lr",
    "num_epochs": "epochs",
    "n_epochs": "epochs",
    "bs": "batch_size",
    "random_seed": "seed",
    "threads": "num_threads",
    "n_threads": "num_threads",
    "bits": "code_channels",
    "code_bits": "code_channels",
}
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# Upper bounds: a value past them is a typo, not an experiment (and an unbounded seed makes a
# run id longer than a file name). The memory estimate bounds the model's width with its batch.
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_CODE_CHANNELS = 65_536
MAX_LR = 1e30  # far past any sane rate, still finite: huge rates provoke a divergence
MAX_THREADS_OR_STACK = 1024
MAX_SPEC_CHARS = 200  # estimator spec strings, before parsing
MAX_MEMORY_BYTES = 64 * 2**30


class ConfigError(ValueError):
    """An invalid run configuration (the message is one line naming every bad field)."""


@dataclass(frozen=True)
class RunConfig:
    """One training run of the article's binary autoencoder (defaults = the article's recipe)."""

    # --- identity: these fields define the run and its id ---
    # Estimator spec (stored canonical); None = the task's: "hardtanh" (the article's), "disarm".
    estimator: str | None = None
    seed: int = 0  # drives weights, data order and estimator noise (separate streams)
    dataset: str = "mnist"  # "mnist" (torchvision) or "mnist-mini" (bundled subset)
    train_subset: int | None = None  # first N of the fixed train selection (None = all)
    test_subset: int | None = None  # first N of the fixed test selection (None = all)
    epochs: int = 5
    # None = the task's own value (TASK_DEFAULTS), resolved when the config is built:
    batch_size: int | None = None  # 64 (article), 50 (VAE)
    lr: float | None = None  # Adam: 1e-3 (article), 1e-4 (VAE, encoder and decoder)
    beta1: float | None = None  # 0.5 (the article's GAN-style betas), 0.9 (VAE)
    beta2: float | None = None  # 0.999
    code_channels: int = 512  # bottleneck width: 512 x 1 x 1 binary code
    pre_threshold_relu: bool = True  # the ReLU after the last BatchNorm, before the threshold
    precision: str = "fp32"  # "fp32" or "bf16" (autocast around the forward)
    probe: str = "linear"  # digit probe on the binary codes: "linear" (ridge) or "knn"
    # CPU kernels: "portable" caps ATen and oneDNN at AVX2 and runs MKL's vendor-neutral branch
    # (the same bits on Intel and AMD CPUs with AVX2; docs/portability.md),
    # "machine" lets the libraries choose (runners/determinism.py). In the run id when portable:
    # the two modes give different numbers for the same config.
    determinism: str = DEFAULT_MODE
    # What is trained (runners.tasks): "autoencoder" (the article's) or "bernoulli_vae" (the
    # DisARM benchmark). The fields below are the VAE's; they enter the run id only for it.
    task: str = DEFAULT_TASK
    vae_arch: str = "linear"  # "linear" (784-n / n-784) or "nonlinear" (two hidden 200 each way)
    vae_latents: int = 200  # binary latents n
    vae_eval_samples: int = 100  # K of the K-sample bound on the test set at every evaluation
    vae_prior_lr: float = 1e-2  # SGD on the prior's logits (the reference's optimiser for them)
    # The fixed training subset scored by -ELBO at each evaluation: the first min(vae_train_eval, N)
    # of the N training images (None = all of them).
    vae_train_eval: int | None = 10_000
    # --- execution: how the run is carried out, not part of its id ---
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    data_root: str | None = None  # None -> $STE_DATA_ROOT -> per-user cache folder
    stack: int | None = None  # cells trained together by `run` (None = auto: 1 CPU, <=32 GPU)
    compile: bool = False  # torch.compile of the forward (GPU extra; eager fallback)
    cuda_graph: bool = False  # CUDA-graph capture of the whole step (GPU extra; eager fallback)
    num_threads: int | None = None  # torch CPU threads (None = leave torch's default)
    # gradient diagnostics (docs/diagnostics.md): "epoch" (end of every epoch) or "off"; they
    # never change training. diagnostics_probe: test images in the probe batch (cost ~ P).
    diagnostics: str = "epoch"
    diagnostics_probe: int = 16
    # The run's estimator against the exact expected gradient (docs/gradients.md): "checkpoints"
    # (ends of the epochs nearest 0, 10, 50, 100% of training; Bernoulli-sampling estimators) or
    # "off"; never changes training. gradient_error_probe: examples in its probe batch.
    gradient_error: str = "off"
    gradient_error_probe: int = 16
    # "final": a completed run keeps its weights (checkpoint.pt); "none" deletes them once the
    # run is completed (28 MB a run), so it cannot be evaluated again from its weights.
    keep_checkpoint: str = "final"

    # The run id's fields are part of the store's format (they name its folders).
    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = IDENTITY_FIELDS

    def __post_init__(self) -> None:
        errors, normalised = _check_values({f.name: getattr(self, f.name) for f in fields(self)})
        if errors:
            raise ConfigError("; ".join(errors))
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """All field names, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build a config from a mapping of fields (missing ones take the defaults).

        Raises:
            ConfigError: one line listing every unknown key (with close matches) and bad value.
        """
        errors = validate_dict(data)
        if errors:
            raise ConfigError("; ".join(errors))
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Every field as a JSON-ready dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def identity(self) -> dict[str, Any]:
        """The fields that define the run (those hashed into the run id).

        `determinism` joins them when it is not "machine", so runs trained before the field
        existed (machine kernels) keep their ids.
        """
        return identity_of(self.to_dict())

    @property
    def run_id(self) -> str:
        """`{slug(estimator)}-s{seed}-{sha256(canonical json of identity())[:10]}`
        (`runners.store.format.run_id_for`, which the store's integrity checks use too)."""
        return run_id_for(self.identity())

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (validated like `from_dict`)."""
        return apply_overrides(self, changes, skip_none=False)


def memory_estimate_bytes(code_channels: int, batch_size: int) -> int:
    """Rough peak memory of training and probing the article's model: weights, gradients and
    Adam's two moments (16 bytes per parameter), the activations of a batch kept for the
    backward pass, and the linear probe's float64 Gram matrix of the codes."""
    parameters = 10_499 * code_channels + 1_610_241  # the layers of runners.training.model
    activations = batch_size * (130_000 + 8 * code_channels) * 4
    return 16 * parameters + activations + 8 * code_channels**2


def validate_dict(data: Mapping[str, Any]) -> list[str]:
    """Every problem with a mapping of config fields, as a list of one-line messages."""
    if not isinstance(data, Mapping):
        return [f"a run config must be a mapping, got {type(data).__name__}"]
    names = RunConfig.field_names()
    errors = []
    for key in data:
        if key not in names:
            errors.append(unknown_key_message(key, names))
    known = {k: v for k, v in data.items() if k in names}
    errors += _check_values({**_defaults(), **known}, only=set(known))[0]
    return errors


def apply_overrides(
    base: RunConfig | Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
    *,
    skip_none: bool = True,
) -> RunConfig:
    """Apply CLI-style overrides to a config (or to a mapping, or to the defaults).

    Args:
        base: the config (or field mapping) the overrides apply to; None means the defaults.
        overrides: field -> value; keys are config field names (a '-' is read as '_').
        skip_none: ignore overrides whose value is None (argparse's "flag not given").

    Raises:
        ConfigError: an unknown field or a bad value.
    """
    merged: dict[str, Any] = {}
    if isinstance(base, RunConfig):
        merged.update(base.to_dict())
    elif base is not None:
        merged.update(base)
    for key, value in overrides.items():
        if skip_none and value is None:
            continue
        merged[str(key).replace("-", "_")] = value
    return RunConfig.from_dict(merged)


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields(RunConfig)}


def unknown_key_message(
    key: Any, names: tuple[str, ...] | list[str], what: str = "config key"
) -> str:
    """One line naming an unknown key and what it may have meant (`KEY_ALIASES` too)."""
    return unknown_name(key, names, what, KEY_ALIASES)


def _check_values(
    values: dict[str, Any], only: set[str] | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Check every field's type and range; returns (errors, normalised values)."""
    errors: list[str] = []
    out: dict[str, Any] = {}
    task = values.get("task", DEFAULT_TASK)
    task = task if isinstance(task, str) and task in TASK_DEFAULTS else DEFAULT_TASK
    values = dict(values)  # the task's defaults filled in below
    for name, default in TASK_DEFAULTS.get(task, TASK_DEFAULTS[DEFAULT_TASK]).items():
        if values.get(name) is None:
            values[name] = default

    def want(name: str) -> bool:
        return only is None or name in only

    def check_int(name: str, low: int, high: float, optional: bool = False) -> None:
        value = values[name]
        if value is None and optional:
            out[name] = None
            return
        if isinstance(value, bool) or not isinstance(value, int):
            if want(name):
                kind = "an integer or null" if optional else "an integer"
                errors.append(f"{name} must be {kind}, got {short_repr(value)}")
            return
        if not low <= value <= high:
            if want(name):
                errors.append(f"{name} must be in [{low}, {high}], got {short_repr(value)}")
            return
        out[name] = int(value)

    def check_float(name: str, low: float, high: float, low_open: bool, high_open: bool) -> None:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            if want(name):
                errors.append(f"{name} must be a number, got {short_repr(value)}")
            return
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float
            value = math.inf
        bad = (
            not math.isfinite(value)
            or (value <= low if low_open else value < low)
            or (value >= high if high_open else value > high)
        )
        if bad and want(name):
            lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
            errors.append(f"{name} must be in {lo}{low:g}, {high:g}{hi}, got {value!r}")
            return
        out[name] = value

    def check_choice(name: str, choices: tuple[str, ...]) -> None:
        value = values[name]
        if value not in choices:
            if want(name):
                options = ", ".join(repr(c) for c in choices)
                errors.append(f"{name} must be one of {options}, got {short_repr(value)}")
            return
        out[name] = value

    def check_bool(name: str) -> None:
        if not isinstance(values[name], bool):
            if want(name):
                errors.append(f"{name} must be true or false, got {short_repr(values[name])}")
            return
        out[name] = values[name]

    # Estimator: validated (and canonicalised) by the registry itself.
    spec = values["estimator"]
    try:
        if isinstance(spec, str) and len(spec) > MAX_SPEC_CHARS:
            raise ValueError(f"a spec of {len(spec)} characters (at most {MAX_SPEC_CHARS})")
        from ste_variants import canonical_spec  # lazily: the registry imports torch

        out["estimator"] = canonical_spec(spec)
    except Exception as exc:  # EstimatorSpecError, or a TypeError for a non-spec value
        if want("estimator"):
            errors.append(f"estimator: {_one_line(exc)}")

    check_int("seed", 0, MAX_SEED)
    check_choice("dataset", tuple(DATASET_SIZES))
    # Subsets: bounded by their dataset's size below.
    check_int("train_subset", 2, math.inf, optional=True)  # BatchNorm cannot train on one image
    check_int("test_subset", 1, math.inf, optional=True)
    check_int("epochs", 1, MAX_EPOCHS)
    check_int("batch_size", 2, MAX_BATCH_SIZE)  # BatchNorm on the 1x1 code needs two images
    check_float("lr", 0.0, MAX_LR, low_open=True, high_open=False)
    check_float("beta1", 0.0, 1.0, low_open=False, high_open=True)
    check_float("beta2", 0.0, 1.0, low_open=False, high_open=True)
    check_int("code_channels", 1, MAX_CODE_CHANNELS)
    check_bool("pre_threshold_relu")
    check_choice("precision", PRECISIONS)
    check_choice("probe", PROBES)
    check_choice("determinism", DETERMINISM_MODES)
    check_int("stack", 1, MAX_THREADS_OR_STACK, optional=True)
    check_bool("compile")
    check_bool("cuda_graph")
    check_int("num_threads", 1, MAX_THREADS_OR_STACK, optional=True)
    check_choice("diagnostics", DIAGNOSTICS)
    check_int("diagnostics_probe", 1, 10_000)
    check_choice("gradient_error", GRADIENT_ERROR)
    check_int("gradient_error_probe", 1, 10_000)
    check_choice("keep_checkpoint", KEEP_CHECKPOINT)
    check_choice("task", TASKS)
    check_choice("vae_arch", VAE_ARCHS)
    check_int("vae_latents", 1, MAX_LATENTS)
    check_int("vae_eval_samples", 1, MAX_EVAL_SAMPLES)
    check_float("vae_prior_lr", 0.0, MAX_LR, low_open=False, high_open=False)
    check_int("vae_train_eval", 1, math.inf, optional=True)
    if values.get("task") in TASKS and not errors:
        errors += task_problems(task, {**values, **out}, want, _defaults())

    device = values["device"]
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        if want("device"):
            errors.append(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {short_repr(device)}"
            )
    else:
        out["device"] = device

    root = values["data_root"]
    if root is not None and not isinstance(root, str | os.PathLike):
        if want("data_root"):
            errors.append(f"data_root must be a path or null, got {short_repr(root)}")
    else:
        out["data_root"] = None if root is None else os.fspath(root)

    dataset = out.get("dataset")
    if dataset is not None:
        for name, size in zip(("train_subset", "test_subset"), DATASET_SIZES[dataset], strict=True):
            value = out.get(name)
            if value is not None and value > size and want(name):
                errors.append(f"{name} {value} exceeds the {size} images of {dataset}")
    # The exact-gradient checkpoints on the article's model enumerate its code, or draw (n + 1)
    # decodes per image: with a wide code that would take hours an epoch.
    width = out.get("code_channels")
    if out.get("gradient_error") == "checkpoints" and task == DEFAULT_TASK and width is not None:
        if width > MAX_EXACT_CODE and (want("gradient_error") or want("code_channels")):
            errors.append(
                f"gradient_error: checkpoints needs code_channels at most {MAX_EXACT_CODE} on "
                f"the article's autoencoder (the exact gradient enumerates the code), got {width}"
            )
    width, batch = out.get("code_channels"), out.get("batch_size")
    if width is not None and batch is not None and (want("code_channels") or want("batch_size")):
        need = memory_estimate_bytes(width, batch)
        if need > MAX_MEMORY_BYTES:
            errors.append(
                f"code_channels {width} with batch_size {batch} needs about {need / 2**30:.0f} GiB "
                f"(weights, Adam, activations, probe; at most {MAX_MEMORY_BYTES // 2**30} GiB)"
            )
    return errors, out


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
