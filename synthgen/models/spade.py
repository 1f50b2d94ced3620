"""SPADE (GauGAN): label map → RGB by spatially-adaptive normalisation, after Park et al., "Semantic Image Synthesis
with Spatially-Adaptive Normalization", CVPR 2019 (https://arxiv.org/abs/1903.07291, github.com/NVlabs/SPADE).

No library ships SPADE, so it is written here, compactly:

- ``SPADE``: parameter-free instance norm of ``x``, then ``x * (1 + gamma) + beta`` where gamma and beta are
  convolutions of the label map (one-hot classes, optionally + height) resized to ``x``'s grid;
- ``SpadeResBlock``: SPADE → LeakyReLU → conv, twice, plus a learned 1x1 shortcut when the width changes;
  convolutions spectrally normalised as in the paper;
- ``SpadeGenerator``: starts from the label map downsampled by ``2 ** (len(block_out_channels) - 1)`` concatenated
  with spatial noise ``z`` (the paper's variant without an encoder feeds the downsampled map alone; the noise gives
  a label map several renderings), then one SPADE block per width with a 2x nearest upsampling between widths, and a
  3x3 conv + tanh to RGB in [-1, 1]. Fully convolutional: any tile size divisible by the factor works;
- ``MultiScalePatchDiscriminator``: pix2pixHD/SPADE PatchGANs on (label map, image) at full and half resolution,
  returning every layer's features for the feature-matching loss;
- losses: hinge adversarial loss, feature matching (L1 between discriminator features of real and fake), and a
  VGG19 perceptual loss (``VGGLoss``) that only exists when a local VGG19 weights file is given.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from synthgen.errors import ConfigError

VGG_LAYERS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in torchvision's vgg19().features
VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def _conv(cin: int, cout: int, kernel: int, sn: bool, stride: int = 1, padding: int | None = None, bias=True):
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2 if padding is None else padding, bias=bias)
    return spectral_norm(conv) if sn else conv


class SPADE(nn.Module):
    """Spatially-adaptive normalisation of ``channels`` features by a ``label_channels`` map."""

    def __init__(self, channels: int, label_channels: int, hidden: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` and modulate it by the label map resized (nearest) to ``x``'s grid."""
        segmap = F.interpolate(segmap, size=x.shape[-2:], mode="nearest")
        actv = self.shared(segmap)
        return self.norm(x) * (1 + self.gamma(actv)) + self.beta(actv)


class SpadeResBlock(nn.Module):
    """SPADE residual block: (SPADE, LeakyReLU, 3x3 conv) twice, with a learned shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, label_channels: int, hidden: int, sn: bool):
        super().__init__()
        middle = min(cin, cout)
        self.norm_0 = SPADE(cin, label_channels, hidden)
        self.conv_0 = _conv(cin, middle, 3, sn)
        self.norm_1 = SPADE(middle, label_channels, hidden)
        self.conv_1 = _conv(middle, cout, 3, sn)
        self.shortcut = None
        if cin != cout:
            self.norm_s = SPADE(cin, label_channels, hidden)
            self.shortcut = _conv(cin, cout, 1, sn, bias=False)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """The block's output for features ``x`` under label map ``segmap``."""
        skip = x if self.shortcut is None else self.shortcut(self.norm_s(x, segmap))
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap), 0.2))
        return skip + dx


class SpadeGenerator(ModelMixin, ConfigMixin):
    """SPADE generator: (label map (B, C, H, W), noise (B, z_channels, H/f, W/f)) → RGB (B, 3, H, W) in [-1, 1].

    ``label_channels`` = ``num_classes`` (+ 1 when ``with_height``); ``f`` = ``downsample_factor``.
    """

    @register_to_config
    def __init__(
        self,
        num_classes: int = 8,
        with_height: bool = False,
        z_channels: int = 32,
        block_out_channels: list[int] | None = None,
        spade_hidden: int = 64,
        spectral: bool = True,
    ):
        super().__init__()
        widths = [256, 128, 64, 32] if block_out_channels is None else [int(c) for c in block_out_channels]
        self.register_to_config(block_out_channels=widths)
        if num_classes < 1 or z_channels < 0 or spade_hidden < 1 or not widths or min(widths) < 1:
            raise ConfigError(
                f"spade generator: num_classes={num_classes}, z_channels={z_channels}, spade_hidden={spade_hidden}, "
                f"block_out_channels={widths} (allowed: positive widths, num_classes >= 1, z_channels >= 0)"
            )
        label_channels = num_classes + int(with_height)
        self.conv_in = nn.Conv2d(label_channels + z_channels, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for i, width in enumerate(widths):
            cin = widths[max(i - 1, 0)]
            self.blocks.append(SpadeResBlock(cin, width, label_channels, spade_hidden, spectral))
        self.conv_out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    @property
    def label_channels(self) -> int:
        """Channels of the label map input: one-hot classes, plus height."""
        return self.config.num_classes + int(self.config.with_height)

    @property
    def downsample_factor(self) -> int:
        """Tile sizes must be multiples of this: the first block works at H / factor."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def noise_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape (C, h, w) of one tile's noise for a tile of ``height`` x ``width`` px."""
        f = self.downsample_factor
        return (self.config.z_channels, height // f, width // f)

    def forward(self, segmap: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Render RGB in [-1, 1] for a label map; ``noise`` None means zeros (a fixed rendering)."""
        b, c, h, w = segmap.shape
        f = self.downsample_factor
        if c != self.label_channels or h % f or w % f:
            raise ConfigError(
                f"spade generator: label map {tuple(segmap.shape)} needs {self.label_channels} channels and a size "
                f"divisible by {f}"
            )
        small = F.interpolate(segmap, size=(h // f, w // f), mode="nearest")
        if noise is None:
            noise = small.new_zeros((b, *self.noise_shape(h, w)))
        x = self.conv_in(torch.cat([small, noise.to(small.dtype)], 1))
        for i, block in enumerate(self.blocks):
            if i:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, segmap)
        return torch.tanh(self.conv_out(F.leaky_relu(x, 0.2)))


class PatchDiscriminator(nn.Module):
    """One pix2pixHD PatchGAN: 4x4 convs (stride 2 then 1), instance norm, LeakyReLU; every layer's output kept."""

    def __init__(self, in_channels: int, channels: int, layers: int, sn: bool):
        super().__init__()
        seq = [nn.Sequential(_conv(in_channels, channels, 4, sn, 2, 2), nn.LeakyReLU(0.2))]
        width = channels
        for i in range(1, layers):
            nxt = min(width * 2, 512)
            stride = 2 if i < layers - 1 else 1
            seq.append(nn.Sequential(_conv(width, nxt, 4, sn, stride, 2), nn.InstanceNorm2d(nxt), nn.LeakyReLU(0.2)))
            width = nxt
        seq.append(nn.Sequential(nn.Conv2d(width, 1, 4, 1, 2)))
        self.layers = nn.ModuleList(seq)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every layer; the last is the patch logits map."""
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiScalePatchDiscriminator(ModelMixin, ConfigMixin):
    """``num_scales`` PatchGANs on (label map, image), the k-th on the input average-pooled k times."""

    @register_to_config
    def __init__(
        self,
        num_classes: int = 8,
        with_height: bool = False,
        channels: int = 64,
        layers: int = 4,
        num_scales: int = 2,
        spectral: bool = True,
    ):
        super().__init__()
        if channels < 1 or layers < 2 or num_scales < 1:
            raise ConfigError(
                f"spade discriminator: channels={channels}, layers={layers}, num_scales={num_scales} "
                "(allowed: channels >= 1, layers >= 2, num_scales >= 1)"
            )
        in_channels = num_classes + int(with_height) + 3
        self.scales = nn.ModuleList(
            PatchDiscriminator(in_channels, channels, layers, spectral) for _ in range(num_scales)
        )

    def forward(self, segmap: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        """For each scale, the features of every layer (last = patch logits)."""
        x = torch.cat([segmap, image], 1)
        out = []
        for i, disc in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(disc(x))
        return out


def hinge_d_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Discriminator hinge loss, mean over scales: relu(1 - D(real)) + relu(1 + D(fake))."""
    losses = [F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean() for r, f in zip(real, fake, strict=True)]
    return torch.stack(losses).mean()


def hinge_g_loss(fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Generator hinge loss, mean over scales: -D(fake)."""
    return torch.stack([-f[-1].mean() for f in fake]).mean()


def feature_matching_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between the discriminator's intermediate features of real and fake, averaged over layers and scales."""
    terms = [
        F.l1_loss(f, r.detach())
        for rs, fs in zip(real, fake, strict=True)
        for r, f in zip(rs[:-1], fs[:-1], strict=True)
    ]
    return torch.stack(terms).mean()


class VGGLoss(nn.Module):
    """Perceptual loss: weighted L1 between VGG19 features (relu1_1 .. relu5_1) of fake and real images.

    The weights come from a local file only (torchvision's ``vgg19-*.pth`` state dict, or one holding just the
    ``features.*`` keys, ``.pth`` or ``.safetensors``); nothing is downloaded.
    """

    def __init__(self, weights_path: str | Path):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        path = Path(weights_path)
        if not path.is_file():
            raise ConfigError(f"vgg_weights: {path} is not a file (give a local VGG19 state dict, or leave it unset)")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        features = make_layers(cfgs["E"])
        wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        try:
            features.load_state_dict(wanted)
        except RuntimeError as exc:
            raise ConfigError(f"vgg_weights: {path} is not a VGG19 state dict ({str(exc).splitlines()[0]})") from None
        self.features = features[: VGG_LAYERS[-1] + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG_LAYERS:
                out.append(x)
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The loss for images in [-1, 1]."""
        pairs = zip(self._feats(fake), self._feats(real), strict=True)
        return sum(w * F.l1_loss(f, r.detach()) for w, (f, r) in zip(VGG_WEIGHTS, pairs, strict=True))
