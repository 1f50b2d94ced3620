"""Segmentation (+ height) models from segmentation_models_pytorch, as diffusers ModelMixin folders.

``ARCHITECTURES`` is a plain registry; an unknown key lists the valid ones. Any smp encoder works, and any timm
model as ``tu-<name>``. ``encoder_weights`` is None (random init, the default: no hub here) or a local file with an
encoder state dict. The model takes rgb in [0, 1] (it normalises with ImageNet statistics itself) and returns class
logits and, when ``with_height``, a height map in metres from a second head on the same decoder (multi-task).
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from synthgen.errors import ConfigError, allowed

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "unet": smp.Unet,
    "unetplusplus": smp.UnetPlusPlus,
    "deeplabv3plus": smp.DeepLabV3Plus,
}
UNET_DECODER_CHANNELS = (256, 128, 64, 32, 16)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def architecture(name: str) -> type[nn.Module]:
    """The smp class of an architecture name; an unknown name is a ConfigError listing the valid ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown architecture '{name}' (allowed: {allowed(ARCHITECTURES)})") from None


def check_encoder(name: str) -> None:
    """Refuse an encoder neither smp nor timm (as ``tu-<timm name>``) knows, naming close valid ones."""
    if name.startswith("tu-"):
        import timm

        if timm.is_model(name[3:]):
            return
        close = difflib.get_close_matches(name[3:], timm.list_models(), n=3)
        hint = f"close: {allowed('tu-' + c for c in close)}; " if close else ""
        raise ConfigError(f"unknown encoder '{name}': no timm model '{name[3:]}' ({hint}see timm.list_models())")
    names = smp.encoders.get_encoder_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {allowed(close)}? " if close else ""
        raise ConfigError(f"unknown encoder '{name}' ({hint}allowed: {allowed(names)}, or tu-<any timm model>)")


def check_encoder_weights(value: str | None) -> None:
    """``encoder_weights`` must be None or an existing local file (no model hub is reachable)."""
    if value is not None and not Path(value).is_file():
        raise ConfigError(
            f"encoder_weights '{value}': not a local file (allowed: none, or the path of an encoder state dict)"
        )


def _build_net(arch: str, encoder: str, depth: int, decoder_channels: list[int] | None, classes: int) -> nn.Module:
    cls = architecture(arch)
    kwargs: dict = {"encoder_name": encoder, "encoder_weights": None, "encoder_depth": depth, "classes": classes}
    if arch == "deeplabv3plus":
        if depth not in (3, 4, 5):
            raise ConfigError(f"encoder_depth {depth}: deeplabv3plus needs 3, 4 or 5")
        if decoder_channels:
            kwargs["decoder_channels"] = int(decoder_channels[0])
    else:
        channels = list(decoder_channels) if decoder_channels else list(UNET_DECODER_CHANNELS[-depth:])
        if len(channels) != depth:
            raise ConfigError(
                f"decoder_channels {channels}: {arch} needs one width per encoder stage ({depth} for depth {depth})"
            )
        kwargs["decoder_channels"] = channels
    try:
        return cls(**kwargs)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"{arch} with encoder '{encoder}' (depth {depth}): {str(exc).splitlines()[0]}") from None


class SegHeightModel(ModelMixin, ConfigMixin):
    """An smp model with a segmentation head and, when ``with_height``, a height-regression head.

    ``forward(rgb)`` takes (B, 3, H, W) in [0, 1] with H and W multiples of ``output_stride`` and returns
    ``{"logits": (B, K, H, W), "height": (B, 1, H, W) metres}`` (``height`` only with the height head); the height
    head predicts metres / ``height_scale``, so its loss is on the scale of the segmentation loss.
    """

    @register_to_config
    def __init__(
        self,
        arch: str = "unet",
        encoder: str = "resnet18",
        num_classes: int = 8,
        with_height: bool = False,
        encoder_depth: int = 5,
        decoder_channels: list[int] | None = None,
        height_scale: float = 10.0,
        class_codes: list[int] | None = None,
        class_names: list[str] | None = None,
        scheme: str = "oem8",
    ):
        super().__init__()
        self.net = _build_net(arch, encoder, encoder_depth, decoder_channels, num_classes)
        self.height_head = None
        if with_height:
            head = copy.deepcopy(self.net.segmentation_head)
            conv = head[0]
            head[0] = nn.Conv2d(conv.in_channels, 1, conv.kernel_size, padding=conv.padding)
            self.height_head = head
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def output_stride(self) -> int:
        """Input sides must be multiples of this."""
        return int(self.net.encoder.output_stride)

    def load_encoder_weights(self, path: str) -> None:
        """Load a local encoder state dict (.safetensors or a torch file) into the encoder."""
        check_encoder_weights(path)
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = self.net.encoder.load_state_dict(state, strict=False)
        if not state or len(missing) == len(self.net.encoder.state_dict()):
            raise ConfigError(f"encoder_weights '{path}': no tensor matches encoder '{self.config.encoder}'")

    def forward(self, rgb: torch.Tensor) -> dict:
        """Class logits and (with the height head) heights in metres for rgb in [0, 1]."""
        x = (rgb - self.mean.to(rgb.dtype)) / self.std.to(rgb.dtype)
        features = self.net.encoder(x)
        decoded = self.net.decoder(features)
        out = {"logits": self.net.segmentation_head(decoded)}
        if self.height_head is not None:
            out["height"] = self.height_head(decoded) * self.config.height_scale
        return out


def build_model(config, arch: str, class_codes: list[int], class_names: list[str], scheme: str) -> SegHeightModel:
    """A fresh model for a validation config (encoder, depth, decoder widths, tasks) and class list."""
    check_encoder(config.encoder)
    check_encoder_weights(config.encoder_weights)
    model = SegHeightModel(
        arch=arch,
        encoder=config.encoder,
        num_classes=len(class_codes),
        with_height=config.with_height,
        encoder_depth=config.encoder_depth,
        decoder_channels=config.decoder_channels,
        height_scale=config.height_scale,
        class_codes=list(class_codes),
        class_names=list(class_names),
        scheme=scheme,
    )
    if config.encoder_weights:
        model.load_encoder_weights(config.encoder_weights)
    return model
