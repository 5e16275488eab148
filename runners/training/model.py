"""The reference article's MNIST binary autoencoder, layer for layer.

Encoder: four stride-2 4x4 convolutions (1 -> 64 -> 128 -> 256 -> 512 channels, 28x28 -> 1x1),
BatchNorm + ReLU after all but the first, then a threshold that turns the 512x1x1 activations into
a binary code. Decoder: four transposed convolutions back to 1x28x28 through Tanh. With the
defaults this has 6,985,729 parameters, exactly the article's model; the state_dict keys
(`encoder.N.*`, `decoder.N.*`) are the article's too, because the threshold has no parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from ste_variants.base import Estimator
from ste_variants.module import Binarize

ARTICLE_PARAMETERS = 6_985_729


class BinaryAutoencoder(nn.Module):
    """The article's autoencoder with a pluggable straight-through estimator.

    Args:
        estimator: estimator spec for the threshold (see `ste_variants.get_estimator`); "hardtanh"
            is the article's `F.hardtanh(grad_output)` STE.
        code_channels: width of the 1x1 binary code (the article: 512).
        pre_threshold_relu: keep the ReLU between the last BatchNorm and the threshold (the article
            does). The forward pass is the same either way (ReLU(x) > 0 exactly when x > 0); only
            the gradient differs, because the ReLU zeroes it for negative pre-activations. The
            BatchNorm always stays, so the threshold sees centred values.

    Attributes:
        binarize: the `ste_variants.Binarize` module (its `.generator` drives estimator noise).
        track_pre_grad: when True (the default), each backward pass stores the L2 norm of the
            gradient reaching the threshold's input in `pre_grad_norm` (a 0-d tensor, detached).
            Reading the gradient through a hook does not change it.
    """

    def __init__(
        self,
        estimator: str = "hardtanh",
        code_channels: int = 512,
        pre_threshold_relu: bool = True,
    ) -> None:
        super().__init__()
        self.code_channels = code_channels
        self.pre_threshold_relu = pre_threshold_relu
        # Layers are created in the article's order and before the estimator, so the default
        # initialisation draws the same numbers whatever the estimator is.
        encoder: list[nn.Module] = [
            nn.Conv2d(1, 64, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1)),
            nn.ReLU(),
            nn.Conv2d(64, 128, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1)),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 256, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1)),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Conv2d(256, code_channels, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1)),
            nn.BatchNorm2d(code_channels),
        ]
        if pre_threshold_relu:
            encoder.append(nn.ReLU())
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(
                code_channels, 256, kernel_size=(5, 5), stride=(2, 2), padding=(1, 1)
            ),
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
        self.binarize = Binarize(estimator)
        self.track_pre_grad = True
        self.pre_grad_norm: torch.Tensor | None = None

    @property
    def estimator(self) -> Estimator:
        """The estimator object used by the threshold."""
        return self.binarize.estimator

    def pre_threshold(self, x: torch.Tensor) -> torch.Tensor:
        """The activations that enter the threshold, shape (N, code_channels, 1, 1)."""
        return self.encoder(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 1, 28, 28) in [-1, 1] -> binary codes (N, code_channels, 1, 1), exactly 0/1."""
        pre = self.pre_threshold(x)
        if self.track_pre_grad and pre.requires_grad:
            pre.register_hook(self._record_pre_grad)
        return self.binarize(pre)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Codes (N, code_channels, 1, 1) -> images (N, 1, 28, 28) in [-1, 1]."""
        return self.decoder(code)

    def forward(self, x: torch.Tensor, encode: bool = False, decode: bool = False) -> torch.Tensor:
        """Reconstruct `x`; `encode=True` / `decode=True` as in the article's forward."""
        if encode:
            return self.encode(x)
        if decode:
            return self.decode(x)
        return self.decode(self.encode(x))

    def _record_pre_grad(self, grad: torch.Tensor) -> None:
        # Kept as a tensor: no device sync per step; the training loop sums it on the device.
        self.pre_grad_norm = torch.linalg.vector_norm(grad.detach().float())


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
