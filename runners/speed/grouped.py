"""The grouped model of stacked training: K runs of one grid as ONE model (a speed setting).

K cells that differ only in estimator and seed share the architecture and the optimiser's
settings, so they can run as one model whose every layer is the K members' layers side by side:
a convolution becomes a grouped convolution (groups=K) over K·C channels, a BatchNorm a BatchNorm
over K·C channels (its statistics are per channel, hence per member), the threshold applies
each member's own estimator to its own channel slice. Member k's images enter as input channel
k, from member k's own batch order. The loss is the SUM of the members' mean MSEs, so member k's
gradient is exactly its unstacked gradient; Adam is elementwise, so one Adam over the stacked
tensors is K Adams (same lr, betas, eps, bias correction: the step count is shared).

Each member keeps everything else of an ordinary run (`runners.training.state.RunState` and
`runners.engine.run.Run`): its folder, lock, config.json, data and noise generators,
per-step and per-epoch logs, evaluation, checkpoint (unstacked: a stacked cell resumes stacked
or alone), figure, summary and tracker. Results equal the unstacked run's up to float rounding
(grouped kernels sum in another order); `runners.training.kernels` explains how such rounding
differences grow in this chaotic training.

This module: the grouped model and the (un)stacking of weights and optimiser state. How a stack
steps with it: `runners.speed.stacking.GroupedSteps`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from runners.errors import UserError
from runners.training.data import normalize
from runners.training.kernels import FastConv2d, FastConvTranspose2d

# Modules that act elementwise: the stacked model uses them as they are.
_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.LeakyReLU, nn.Sigmoid, nn.Identity, nn.Hardtanh)


class NotStackableError(UserError):
    """The runs cannot be trained as one grouped model (different settings or layers)."""


class StackedAutoencoder(nn.Module):
    """K `BinaryAutoencoder`s as one grouped model.

    Input (N, K, 28, 28): member k's batch in channel k. Output (N, K, 28, 28). The state_dict
    keys are the members' (`encoder.N.*`, `decoder.N.*`); each tensor is the members' tensors
    concatenated along dim 0 (0-d buffers, BatchNorm's batch counter, are shared).

    Args:
        members: the member models (same architecture). Their weights are copied in; their
            `binarize` modules are shared (same estimator objects and noise generators).
        group_estimators: run members with equal deterministic estimators through one call
            (they must be adjacent); stochastic ones always draw from their own generator.
    """

    def __init__(self, members: Sequence[nn.Module], *, group_estimators: bool = True) -> None:
        super().__init__()
        first = members[0]
        self.k = len(members)
        self.code_channels = int(first.code_channels)
        with torch.random.fork_rng(devices=[]):  # building on "meta" draws nothing, but be sure
            self.encoder = _grouped(first.encoder, self.k)
            self.decoder = _grouped(first.decoder, self.k)
        self.binarizers = nn.ModuleList([m.binarize for m in members])
        self.track_pre_grad = True
        self.pre_grad_norms: torch.Tensor | None = None
        self.spans = _estimator_spans([m.binarize for m in members], group_estimators)
        device = next(first.parameters()).device
        self.to_empty(device=device)
        self.load_members(members)

    def load_members(self, members: Sequence[nn.Module]) -> None:
        """Copy the members' weights and BatchNorm statistics into the stack."""
        self.load_state_dict(stack_tensors([m.state_dict() for m in members]))

    def unload_members(self, members: Sequence[nn.Module]) -> None:
        """Copy each member's slice of the stack back into its model."""
        for member, state in zip(members, unstack_tensors(self.state_dict(), self.k), strict=True):
            member.load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct the K members' batches (N, K, 28, 28)."""
        pre = self.encoder(x)
        if self.track_pre_grad and pre.requires_grad:
            pre.register_hook(self._record_pre_grad)
        c = self.code_channels
        parts = []
        for start, stop in self.spans:
            binarize = self.binarizers[start]
            parts.append(binarize(pre[:, start * c : stop * c]))
        code = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return self.decoder(code)

    def _record_pre_grad(self, grad: torch.Tensor) -> None:
        # One norm per member, as BinaryAutoencoder records for one run; no device sync.
        per_member = grad.detach().float().reshape(grad.shape[0], self.k, -1)
        self.pre_grad_norms = torch.linalg.vector_norm(per_member, dim=(0, 2))


def member_losses(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Each member's mean squared error, shape (K,); their sum is what is back-propagated."""
    return (recon - x).square().mean(dim=(0, 2, 3))


def stack_batch(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Member k's images `index[k]` (K, B) of uint8 `images` (N, 1, H, W) as (B, K, H, W) floats.

    The normalisation is `runners.training.data.normalize`, the same arithmetic as one run's
    batches.
    """
    k, b = index.shape
    batch = images.index_select(0, index.reshape(-1))
    batch = batch.reshape(k, b, *images.shape[-2:]).transpose(0, 1).contiguous()
    return normalize(batch)


# --------------------------------------------------------------------------- state (un)stacking


def stack_tensors(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate K state dicts along dim 0 (0-d tensors must agree and are kept once)."""
    out = {}
    for key, value in states[0].items():
        values = [state[key] for state in states]
        if value.dim() == 0:
            if any(not torch.equal(v, value) for v in values[1:]):
                raise NotStackableError(f"members disagree on {key} ({[v.item() for v in values]})")
            out[key] = value.clone()
        else:
            out[key] = torch.cat(values, dim=0)
    return out


def unstack_tensors(state: dict[str, torch.Tensor], k: int) -> list[dict[str, torch.Tensor]]:
    """The inverse of `stack_tensors`: K state dicts of independent (cloned) tensors."""
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(k)]
    for key, value in state.items():
        parts = [value] * k if value.dim() == 0 else value.chunk(k, dim=0)
        for member, part in zip(out, parts, strict=True):
            member[key] = part.detach().clone()
    return out


def stack_optimizer_state(
    stacked: torch.optim.Optimizer, members: Sequence[torch.optim.Optimizer]
) -> None:
    """Load the members' optimiser states, stacked, into `stacked` (all fresh: nothing to do)."""
    states = [m.state_dict()["state"] for m in members]
    if not any(states):
        return
    if not all(s.keys() == states[0].keys() for s in states):
        raise NotStackableError("members' optimiser states differ in shape (different steps?)")
    merged = {
        index: stack_tensors([s[index] for s in states]) for index in sorted(states[0].keys())
    }
    stacked.load_state_dict({"state": merged, "param_groups": stacked.state_dict()["param_groups"]})


def unstack_optimizer_state(
    stacked: torch.optim.Optimizer, members: Sequence[torch.optim.Optimizer]
) -> None:
    """Give each member optimiser its slice of the stacked optimiser's state."""
    state = stacked.state_dict()["state"]
    per_index = {index: unstack_tensors(s, len(members)) for index, s in state.items()}
    for k, member in enumerate(members):
        member.load_state_dict(
            {
                "state": {index: parts[k] for index, parts in per_index.items()},
                "param_groups": member.state_dict()["param_groups"],
            }
        )


# --------------------------------------------------------------------------- grouped layers


def _grouped(module: nn.Module, k: int) -> nn.Module:
    """The K-member version of `module`, with uninitialised ("meta") tensors."""
    meta = {"device": "meta", "dtype": _dtype(module)}
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*(_grouped(child, k) for child in module))
    if isinstance(module, nn.Conv2d) and not isinstance(module, nn.ConvTranspose2d):
        return FastConv2d(
            module.in_channels * k,
            module.out_channels * k,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups * k,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            **meta,
        )
    if isinstance(module, nn.ConvTranspose2d):
        return FastConvTranspose2d(
            module.in_channels * k,
            module.out_channels * k,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            output_padding=module.output_padding,
            groups=module.groups * k,
            bias=module.bias is not None,
            dilation=module.dilation,
            padding_mode=module.padding_mode,
            **meta,
        )
    if type(module) is nn.BatchNorm2d:
        return nn.BatchNorm2d(
            module.num_features * k,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            **meta,
        )
    if isinstance(module, _ELEMENTWISE):
        return module
    raise NotStackableError(f"cannot stack a {type(module).__name__} layer")


def _dtype(module: nn.Module) -> torch.dtype:
    tensor = next(iter(module.parameters()), None)
    return tensor.dtype if tensor is not None else torch.get_default_dtype()


def _estimator_spans(binarizers: Sequence[nn.Module], group: bool) -> list[tuple[int, int]]:
    """[start, stop) runs of adjacent members that one estimator call may serve.

    Members may share a call when their estimators have the same spec and are deterministic:
    the math is elementwise, so one call over their channels equals one call per member (and
    annealed ones read the same progress, as stacked members train in step). Stochastic ones
    draw from each member's own generator, so they stay alone.
    """
    spans: list[tuple[int, int]] = []
    for index, binarize in enumerate(binarizers):
        estimator = binarize.estimator
        if (
            group
            and spans
            and not estimator.stochastic
            and binarizers[spans[-1][0]].estimator.spec == estimator.spec
        ):
            spans[-1] = (spans[-1][0], index + 1)
        else:
            spans.append((index, index + 1))
    return spans
