"""Train a SPADE generator (GauGAN) on the RGB + label tiles of a manifest.

Follows diffusers' training examples: an ``Accelerator`` (bf16 on GPU, fp32 on CPU, gradient accumulation),
the two time-scale update rule (Adam with ``g_lr`` for the generator, ``d_lr`` for the discriminator), an EMA of
the generator, ``checkpoint-N`` folders (``accelerator.save_state`` through a temporary name, with
``trainer_state.json``) and ``resume="latest"``, preview PNGs (rows of label | rendered | real on val tiles), and
``metrics.json`` (loss curves, val SSIM/PSNR of the EMA generator, CPU and wall seconds per optimizer step).
Training works on ``size`` px crops; the generator is fully convolutional, so previews and val metrics render whole
tiles. Batches and noise are pure functions of ``(seed, step, micro)`` (``training/tiles.py``), so a resumed
run repeats an uninterrupted one.

Each step: the generator renders the batch once; the discriminator takes a hinge step on (real, fake.detach());
then, with the discriminator frozen, the generator takes hinge + feature matching (+ VGG) on the same fake.
The result is an ``RGBSpadePipeline`` folder in ``<out>/pipeline``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers.training_utils import EMAModel

from synthgen.config import config_to_dict
from synthgen.errors import ConfigError
from synthgen.models.spade import (
    MultiScalePatchDiscriminator,
    SpadeGenerator,
    VGGLoss,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
)
from synthgen.pipelines.rgb_common import label_condition, to_uint8_images
from synthgen.pipelines.rgb_spade import RGBSpadePipeline
from synthgen.schema import ClassScheme, load_scheme
from synthgen.training.checkpoints import ema_model, ema_weights, publish_folder, save_strip
from synthgen.training.spade_config import SpadeTrainConfig
from synthgen.training.tiles import PairedTiles, train_and_val
from synthgen.training.training_run import start_training_run

VGG_OFF = "off: no local VGG19 weights given (set vgg_weights to a torchvision vgg19 state dict to turn it on)"
LOSSES = ("loss_d", "loss_g_adv", "loss_g_fm", "loss_g_vgg")


def build_models(config: SpadeTrainConfig, num_classes: int) -> tuple[SpadeGenerator, MultiScalePatchDiscriminator]:
    """The untrained generator and discriminator of a config."""
    generator = SpadeGenerator(
        num_classes=num_classes,
        with_height=config.with_height,
        z_channels=config.z_channels,
        block_out_channels=config.block_out_channels,
        spade_hidden=config.spade_hidden,
        spectral=config.spectral,
    )
    discriminator = MultiScalePatchDiscriminator(
        num_classes=num_classes,
        with_height=config.with_height,
        channels=config.d_channels,
        layers=config.d_layers,
        num_scales=config.d_num_scales,
        spectral=config.spectral,
    )
    return generator, discriminator


def _condition(batch: dict, scheme: ClassScheme, with_height: bool, device) -> torch.Tensor:
    return label_condition(batch["labels"].to(device), batch["heights"].to(device), scheme, "onehot", with_height)


def _noise(generator: SpadeGenerator, gen: torch.Generator, shape: tuple[int, int, int], device) -> torch.Tensor:
    return torch.randn((shape[0], *generator.noise_shape(shape[1], shape[2])), generator=gen).to(device)


@torch.no_grad()
def render_tiles(generator: SpadeGenerator, tiles: PairedTiles, config: SpadeTrainConfig, size: int, limit: int):
    """(rendered, real, labels) uint8/uint8/uint8 arrays for the first ``limit`` tiles, noise seeded per tile."""
    scheme = load_scheme(config.scheme)
    fakes, reals, labels = [], [], []
    for batch in tiles.eval_batches(config.batch_size, size, limit):
        cond = _condition(batch, scheme, config.with_height, generator.device).to(generator.dtype)
        gens = [torch.Generator().manual_seed(config.seed * 7919 + int(i)) for i in batch["index"]]
        noise = torch.cat([_noise(generator, gen, (1, size, size), "cpu") for gen in gens])
        fakes.append(to_uint8_images(generator(cond, noise.to(generator.device, generator.dtype))))
        reals.append(to_uint8_images(batch["rgb"]))
        labels.append(batch["labels"].numpy().astype(np.uint8))
    if not fakes:
        return None
    return np.concatenate(fakes), np.concatenate(reals), np.concatenate(labels)


def write_preview(rendered, path: Path, scheme: ClassScheme) -> Path:
    """A PNG with one row per tile: label in the scheme's palette | rendered | real."""
    fakes, reals, labels = rendered
    lut = scheme.palette_lut()
    return save_strip([(lut[lab], fake, real) for fake, real, lab in zip(fakes, reals, labels, strict=True)], path)


def _with_ema(ema: EMAModel, generator: SpadeGenerator, fn):
    with ema_weights(ema, generator.parameters()):
        generator.eval()
        try:
            return fn()
        finally:
            generator.train()


def train_spade(config: SpadeTrainConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) SPADE and save the pipeline folder; returns the metrics written to metrics.json."""
    scheme = load_scheme(config.scheme)
    manifest = Path(config.manifest)
    train, val = train_and_val(PairedTiles, manifest, scheme, val_missing_only=True)
    size = config.size or train.tile_size
    if size % config.size_factor or size > train.tile_size or train.tile_size % config.size_factor:
        raise ConfigError(
            f"config 'size': {size} px and the {train.tile_size} px tiles must be multiples of {config.size_factor}, "
            "size at most the tile size (set size, or change block_out_channels)"
        )
    if config.with_height and not train.has_height:
        raise ConfigError(f"config 'with_height': {manifest} has no height rasters (allowed: false for it)")
    vgg = VGGLoss(config.vgg_weights) if config.vgg_weights and config.lambda_vgg > 0 else None
    run = start_training_run(config)
    accelerator = run.accelerator
    generator, discriminator = build_models(config, scheme.num_classes)
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.g_lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.d_lr, betas=betas)
    ema = EMAModel(
        generator.parameters(), decay=config.ema_decay, model_cls=SpadeGenerator, model_config=generator.config
    )
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    raw_g = accelerator.unwrap_model(generator)
    if vgg is not None:
        vgg.to(accelerator.device)

    state: dict = {"step": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0, **{k: [] for k in LOSSES}}
    state = run.resume(state, progress, ema)
    preview_tiles = val if val is not None else train

    while state["step"] < run.stop:
        step = state["step"]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        generator.train()
        discriminator.train()
        totals = dict.fromkeys(LOSSES, 0.0)
        for micro in range(config.gradient_accumulation_steps):
            batch = train.batch(config.seed, step, micro, config.batch_size, size)
            cond = _condition(batch, scheme, config.with_height, accelerator.device)
            real = batch["rgb"].to(accelerator.device)
            noise = _noise(raw_g, run.generator(step, micro), real.shape[:1] + (size, size), "cpu")
            with accelerator.accumulate(generator, discriminator), accelerator.autocast():
                fake = generator(cond, noise.to(accelerator.device))
                pred_real = discriminator(cond, real)
                loss_d = hinge_d_loss(pred_real, discriminator(cond, fake.detach()))
                accelerator.backward(loss_d)
                discriminator.requires_grad_(False)
                pred_fake = discriminator(cond, fake)
                loss_adv = hinge_g_loss(pred_fake)
                loss_fm = feature_matching_loss(pred_real, pred_fake)
                loss_vgg = vgg(fake.float(), real) if vgg is not None else torch.zeros((), device=fake.device)
                accelerator.backward(loss_adv + config.lambda_fm * loss_fm + config.lambda_vgg * loss_vgg)
                discriminator.requires_grad_(True)
                opt_d.step()
                opt_g.step()
                opt_d.zero_grad()
                opt_g.zero_grad()
            for name, value in zip(LOSSES, (loss_d, loss_adv, loss_fm, loss_vgg), strict=True):
                totals[name] += value.item() / config.gradient_accumulation_steps
        curves = {name: totals[name] for name in LOSSES if name != "loss_g_vgg" or vgg is not None}
        run.step_done(state, curves, progress, ema, raw_g.parameters())
        state["cpu_seconds"] += time.process_time() - cpu0
        state["wall_seconds"] += time.perf_counter() - wall0
        due = state["step"] % config.preview_every == 0 or state["step"] == config.steps
        if config.preview_n and due and accelerator.is_main_process:
            rendered = _with_ema(
                ema, raw_g, lambda: render_tiles(raw_g, preview_tiles, config, train.tile_size, config.preview_n)
            )
            write_preview(rendered, run.out_dir / "previews" / f"step-{state['step']:07d}.png", scheme)
        run.checkpoint_if_due(state)

    accelerator.wait_for_everyone()
    metrics = {"step": state["step"]}  # what the other processes of a multi-process run hand to finish()
    if accelerator.is_main_process:
        discriminator = accelerator.unwrap_model(discriminator)
        metrics = _final_save(raw_g, discriminator, ema, config, val, train.tile_size, state, vgg)
    return run.finish(metrics)


def _val_metrics(generator: SpadeGenerator, val: PairedTiles | None, config: SpadeTrainConfig, size: int) -> dict:
    from synthgen.evaluation.rgb import ssim_psnr

    if val is None or config.val_tiles == 0:
        return {"skipped": "no val split" if val is None else "val_tiles is 0"}
    fakes, reals, _ = render_tiles(generator, val, config, size, config.val_tiles)
    ssim, psnr = ssim_psnr(fakes, reals)
    return {"tiles": len(fakes), "ssim": float(ssim.mean()), "psnr_db": float(np.minimum(psnr, 100.0).mean())}


def _final_save(generator, discriminator, ema, config, val, size: int, state: dict, vgg) -> dict:
    final = ema_model(generator, ema)  # with the spectral-norm vectors of the live generator
    final.to(generator.device).eval()
    metrics = {
        "step": state["step"],
        "total_steps": config.steps,
        **{name: state[name] for name in LOSSES},
        "vgg_loss": "on" if vgg is not None else VGG_OFF,
        "cpu_seconds_per_step": state["cpu_seconds"] / max(state["step"], 1),
        "wall_seconds_per_step": state["wall_seconds"] / max(state["step"], 1),
        "params": {"generator": final.num_parameters(), "discriminator": discriminator.num_parameters()},
        "val_ema": _val_metrics(final, val, config, size),
        "config": config_to_dict(config),
    }
    pipe = RGBSpadePipeline(final.to("cpu"), config.scheme, config.with_height)
    publish_folder(config.out_dir / "pipeline", pipe.save_pretrained)
    return metrics
