"""The layout autoencoder: one-hot land-cover labels (plus an optional height channel) <-> a small latent grid.

A diffusers ``AutoencoderKL`` whose input and output have K channels (one per real class of the scheme; code c is
channel c - 1, code 0 is nodata) plus one for height when ``with_height``. The decoder's class channels are
logits trained with cross-entropy, its height channel (metres / ``height_scale``) with a Huber loss on pixels
whose height is known. Latents are the posterior mean times ``scaling_factor`` (set after training so that the
latents have about unit variance, as the diffusion model expects).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from synthgen.errors import ConfigError


class LayoutAutoencoder(ModelMixin, ConfigMixin):
    """Label map (+ height) autoencoder with a spatial factor of ``2 ** (len(block_out_channels) - 1)``."""

    @register_to_config
    def __init__(
        self,
        num_classes: int = 8,
        with_height: bool = False,
        latent_channels: int = 4,
        block_out_channels: list[int] | None = None,
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        scaling_factor: float = 1.0,
        kl_weight: float = 1e-6,
        height_weight: float = 1.0,
        height_scale: float = 10.0,
    ):
        super().__init__()
        channels = [32, 64, 64] if block_out_channels is None else [int(c) for c in block_out_channels]
        self.register_to_config(block_out_channels=channels)
        if num_classes < 2:
            raise ConfigError(f"layout autoencoder: num_classes={num_classes} must be >= 2")
        bad = [c for c in channels if c % norm_num_groups]
        if bad:
            raise ConfigError(
                f"layout autoencoder: block_out_channels {bad} are not divisible by norm_num_groups={norm_num_groups}"
            )
        io_channels = num_classes + int(with_height)
        self.vae = AutoencoderKL(
            in_channels=io_channels,
            out_channels=io_channels,
            down_block_types=("DownEncoderBlock2D",) * len(channels),
            up_block_types=("UpDecoderBlock2D",) * len(channels),
            block_out_channels=tuple(channels),
            layers_per_block=layers_per_block,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            scaling_factor=scaling_factor,
        )

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along each axis."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W) scheme codes 0..K -> (B, K, H, W) float one-hot; nodata (0) is all zeros."""
        k = self.config.num_classes
        onehot = F.one_hot(labels.long().clamp(0, k), k + 1)[..., 1:]
        return onehot.permute(0, 3, 1, 2).to(self.dtype)

    def _inputs(self, labels_onehot: torch.Tensor, height: torch.Tensor | None) -> torch.Tensor:
        if not self.config.with_height:
            return labels_onehot
        if height is None:
            raise ConfigError("layout autoencoder: this model was built with_height=True; pass a height map")
        h = torch.nan_to_num(height.to(labels_onehot.dtype), nan=0.0) / self.config.height_scale
        return torch.cat([labels_onehot, h.reshape(h.shape[0], 1, *h.shape[-2:])], dim=1)

    def posterior(self, labels_onehot: torch.Tensor, height: torch.Tensor | None = None):
        """The encoder's diagonal Gaussian posterior over (unscaled) latents."""
        return self.vae.encode(self._inputs(labels_onehot, height)).latent_dist

    def encode(self, labels_onehot: torch.Tensor, height: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, H, W) one-hot labels (+ (B, 1, H, W) metres) -> scaled latent means (B, C, H/f, W/f)."""
        return self.posterior(labels_onehot, height).mean * self.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled latents -> (class logits (B, K, H, W), height in metres (B, H, W) or None)."""
        out = self.vae.decode(latents / self.config.scaling_factor).sample
        k = self.config.num_classes
        if not self.config.with_height:
            return out, None
        return out[:, :k], out[:, k] * self.config.height_scale

    def forward(
        self, labels: torch.Tensor, height: torch.Tensor | None = None, class_weights: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The training loss (see ``loss``); ``forward`` so that distributed wrappers see the call."""
        return self.loss(labels, height, class_weights)

    def loss(
        self,
        labels: torch.Tensor,
        height: torch.Tensor | None = None,
        class_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training loss on (B, H, W) scheme codes (+ (B, H, W) or (B, 1, H, W) metres, NaN = unknown).

        Cross-entropy on the class logits ignoring nodata, plus ``kl_weight`` times the KL of the posterior,
        plus ``height_weight`` times a Huber loss (in units of ``height_scale``) on pixels with a known height.
        Returns a dict with ``loss`` and its parts.
        """
        labels = labels.long()
        if height is not None and height.dim() == 4:
            height = height[:, 0]
        posterior = self.posterior(self.one_hot(labels), height)
        out = self.vae.decode(posterior.sample()).sample
        k = self.config.num_classes
        weight = None if class_weights is None else class_weights.to(out.device, out.dtype)
        ce = F.cross_entropy(out[:, :k].float(), labels - 1, weight=weight, ignore_index=-1)
        if not (labels > 0).any():
            ce = out.sum() * 0.0
        kl = posterior.kl().mean() / labels[0].numel()
        parts = {"ce": ce, "kl": kl}
        total = ce + self.config.kl_weight * kl
        if self.config.with_height:
            valid = torch.isfinite(height) if height is not None else torch.zeros_like(labels, dtype=torch.bool)
            if valid.any():
                target = height[valid].to(out.dtype) / self.config.height_scale
                huber = F.smooth_l1_loss(out[:, k][valid].float(), target.float(), beta=0.1)
            else:
                huber = out.sum() * 0.0
            parts["height"] = huber
            total = total + self.config.height_weight * huber
        parts["loss"] = total
        return parts
