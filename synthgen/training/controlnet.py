"""Train a ControlNet on label maps (+ heights) beside a frozen Stable Diffusion base.

Follows diffusers' ``examples/controlnet/train_controlnet.py``: the base (VAE, text encoder, UNet) is loaded with
``from_pretrained`` from a folder or hub id and frozen (``requires_grad_(False)``, bf16 on GPU); the ControlNet
starts as ``ControlNetModel.from_unet`` with ``conditioning_channels`` = the control's channels; ``Accelerator``
(bf16 on GPU, fp32 on CPU), gradient accumulation, warm-up, clipping, ``proportion_empty_prompts``, the base's
noise objective (epsilon or v), ``checkpoint-N`` + ``resume="latest"``, validation images (control | generated |
real) every N steps and ``metrics.json``. Batches are seeded (``tiles.RGBTiles``) so a resumed run equals an
uninterrupted one; an EMA of the ControlNet is optional. The result, ``<out>/pipeline``, is an
``RGBControlNetPipeline`` folder that ``synthgen rgb --method controlnet --model`` loads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ControlNetModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from synthgen.config import config_to_dict
from synthgen.errors import SynthgenError
from synthgen.io.weights import refuse_pickle_weights
from synthgen.models.schedulers import sd_inference_scheduler
from synthgen.models.sd_components import (
    conditioning_embedding_channels,
    load_base_components,
    num_parameters,
    vae_latent_factor,
)
from synthgen.pipelines.rgb_common import label_condition, num_condition_channels, to_uint8_images
from synthgen.pipelines.rgb_controlnet import RGBControlNetPipeline
from synthgen.schema import load_scheme
from synthgen.training.checkpoints import ema_weights, freeze, publish_folder, save_strip
from synthgen.training.controlnet_config import ControlNetTrainConfig
from synthgen.training.objective import diffusion_loss
from synthgen.training.sd_base import drop_prompts, psnr, tokenize
from synthgen.training.tiles import RGBTiles, train_and_val
from synthgen.training.timesteps import sample_timesteps
from synthgen.training.training_run import TrainingRun, start_training_run

BASE_PARTS = ("vae", "text_encoder", "unet")
RESUMABLE_CHANGES = frozenset(
    {"out", "manifest", "resume", "max_steps", "steps", "checkpoint_every", "checkpoints_total_limit"}
    | {"validation_every", "validation_n", "scheduler", "num_inference_steps", "guidance_scale"}
    | {"conditioning_scale"}
)


def weights_fingerprint(*models) -> float:
    """Sum of |w| over every parameter, in float64: changes if any frozen weight changes."""
    return float(sum(p.detach().double().abs().sum().item() for m in models for p in m.parameters()))


def build_pipeline(base: dict, controlnet, config: ControlNetTrainConfig) -> RGBControlNetPipeline:
    """The inference pipeline around the frozen base and a ControlNet."""
    pipe = RGBControlNetPipeline(
        vae=base["vae"],
        text_encoder=base["text_encoder"],
        tokenizer=base["tokenizer"],
        unet=base["unet"],
        controlnet=controlnet,
        scheduler=sd_inference_scheduler(config.scheduler, base["scheduler"].config),
        scheme=config.scheme,
        cond_encoding=config.cond_encoding,
        with_height=config.with_height,
        conditioning_scale=config.conditioning_scale,
        guidance_scale=config.guidance_scale,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def validate(pipe: RGBControlNetPipeline, batch, config: ControlNetTrainConfig, path: Path | None) -> dict:
    """Render the validation tiles; write control | generated | real rows to ``path``; PSNR and L1 to the real."""
    n = len(batch.prompts)
    generators = [torch.Generator().manual_seed(config.seed * 1000 + i) for i in range(n)]
    out = pipe(
        labels=batch.labels,
        heights=batch.heights if config.with_height else None,
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
        generator=generators,
        output_type="np",
    ).images
    generated = torch.from_numpy(out).permute(0, 3, 1, 2) * 2 - 1
    if path is not None:
        control = load_scheme(config.scheme).palette_lut()[batch.labels.numpy()]
        save_strip([control, to_uint8_images(generated), to_uint8_images(batch.rgb)], path)
    return {
        "tiles": n,
        "psnr_db": psnr(generated, batch.rgb),
        "l1": F.l1_loss(generated.float(), batch.rgb.float()).item(),
        "finite": bool(np.isfinite(out).all()),
    }


def train_controlnet(config: ControlNetTrainConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) a ControlNet on the manifest's label→RGB pairs; saves ``<out>/pipeline``, returns metrics."""
    scheme = load_scheme(config.scheme)
    base = load_base_components(config.base)  # first: a bad --base fails before the tiles are read
    manifest = Path(config.manifest)
    train, val = train_and_val(RGBTiles, manifest, scheme)
    size = config.size or train.tile_size
    train.batch(config.seed, 0, 0, 1, size)  # a crop larger than the tiles is a one-line error here
    channels = num_condition_channels(scheme, config.cond_encoding, config.with_height)
    embedding = conditioning_embedding_channels(base["vae"], config.conditioning_embedding_out_channels)
    factor = max(8, vae_latent_factor(base["vae"]))
    if size % factor:
        raise SynthgenError(f"config 'size': {size} px is not a multiple of {factor} (the base's latent grid)")
    run = start_training_run(config, RESUMABLE_CHANGES)
    accelerator, weight_dtype = run.accelerator, run.weight_dtype
    for part in BASE_PARTS:
        freeze(base[part], run.device, weight_dtype)
        base[part].eval()
    fingerprint = weights_fingerprint(*(base[p] for p in BASE_PARTS))
    controlnet = start_controlnet(config, base["unet"], channels, embedding)
    controlnet.train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=config.learning_rate)
    lr_scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=config.lr_warmup_steps)
    ema = EMAModel(controlnet.parameters(), decay=config.ema_decay) if config.use_ema else None
    controlnet, optimizer, lr_scheduler = accelerator.prepare(controlnet, optimizer, lr_scheduler)
    raw_controlnet = accelerator.unwrap_model(controlnet)

    state: dict = {"step": 0, "loss": [], "validation": [], "seconds": 0.0, "cpu_seconds": 0.0}
    state = run.resume(state, progress, ema)
    val_batch = (val or train).spread(config.validation_n, size) if config.validation_n else None
    noise_scheduler = base["scheduler"]
    scaling = base["vae"].config.scaling_factor

    while state["step"] < run.stop:
        started, cpu_started = time.perf_counter(), time.process_time()
        step = state["step"]
        total = 0.0
        for micro in range(config.gradient_accumulation_steps):
            batch = train.batch(config.seed, step, micro, config.batch_size, size)
            gen = run.generator(step, micro)
            rng = np.random.default_rng([config.seed, step, micro, 1])
            ids = tokenize(base["tokenizer"], drop_prompts(batch.prompts, config.proportion_empty_prompts, rng))
            with accelerator.accumulate(controlnet):
                with torch.no_grad():
                    rgb = batch.rgb.to(accelerator.device, weight_dtype)
                    latents = base["vae"].encode(rgb).latent_dist.sample(generator=gen).float() * scaling
                    hidden = base["text_encoder"](ids.to(accelerator.device))[0]
                noise = torch.randn(latents.shape, generator=gen).to(latents.device)
                t = sample_timesteps(
                    config.timestep_sampling, len(latents), noise_scheduler.config.num_train_timesteps, gen
                )
                t = t.to(latents.device)
                noisy = noise_scheduler.add_noise(latents, noise, t)
                control = label_condition(
                    batch.labels.to(accelerator.device),
                    batch.heights.to(accelerator.device),
                    scheme,
                    config.cond_encoding,
                    config.with_height,
                )
                down, mid = controlnet(
                    noisy.to(weight_dtype),
                    t,
                    encoder_hidden_states=hidden,
                    controlnet_cond=control.to(weight_dtype),
                    return_dict=False,
                )
                pred = base["unet"](
                    noisy.to(weight_dtype),
                    t,
                    encoder_hidden_states=hidden,
                    down_block_additional_residuals=[r.to(weight_dtype) for r in down],
                    mid_block_additional_residual=mid.to(weight_dtype),
                    return_dict=False,
                )[0]
                loss = diffusion_loss(pred, latents, noise, t, noise_scheduler)
                run.optimizer_step(loss, optimizer, lr_scheduler, controlnet.parameters())
            total += loss.item() / config.gradient_accumulation_steps
        run.step_done(state, {"loss": total}, progress, ema, raw_controlnet.parameters())
        if val_batch is not None and (state["step"] % config.validation_every == 0 or state["step"] == run.stop):
            path = run.out_dir / "validation" / f"step-{state['step']:07d}.png"
            # fp32 ControlNet beside a bf16 base
            with ema_weights(ema, raw_controlnet.parameters()), accelerator.autocast():
                result = validate(build_pipeline(base, raw_controlnet, config), val_batch, config, path)
            state["validation"].append({"step": state["step"], **result})
        state["seconds"] += time.perf_counter() - started
        state["cpu_seconds"] += time.process_time() - cpu_started
        run.checkpoint_if_due(state)

    return run.finish(_final_save(base, raw_controlnet, ema, run, state, fingerprint))


def start_controlnet(config, unet, channels: int, embedding: list[int]) -> ControlNetModel:
    """The ControlNet to train: ``from_unet`` of the base's UNet, or the ``init_controlnet`` folder (whose control
    channels must be ``channels``: a one-line error otherwise)."""
    if config.init_controlnet is None:
        return ControlNetModel.from_unet(
            unet, conditioning_channels=channels, conditioning_embedding_out_channels=embedding
        )
    folder = Path(config.init_controlnet)
    if not (folder / "config.json").is_file():
        raise SynthgenError(f"config 'init_controlnet': {folder} is not a ControlNetModel folder (no config.json)")
    refuse_pickle_weights(folder)
    controlnet = ControlNetModel.from_pretrained(folder, use_safetensors=True)
    if controlnet.config.conditioning_channels != channels:
        raise SynthgenError(
            f"config 'init_controlnet': {folder} takes {controlnet.config.conditioning_channels} control channels, "
            f"this run's scheme and encoding give {channels}"
        )
    return controlnet


def _final_save(base: dict, controlnet, ema, run: TrainingRun, state: dict, fingerprint: float) -> dict:
    config = run.config
    metrics = {
        "step": state["step"],
        "total_steps": config.total_steps,
        "loss": state["loss"],
        "validation": state["validation"],
        "seconds": round(state["seconds"], 1),
        "cpu_seconds": round(state["cpu_seconds"], 1),
        "params": {"controlnet": num_parameters(controlnet), **{p: num_parameters(base[p]) for p in BASE_PARTS}},
        "base_frozen": weights_fingerprint(*(base[p] for p in BASE_PARTS)) == fingerprint,
        "base": config.base,
        "config": config_to_dict(config),
    }
    if run.accelerator.is_main_process:
        with ema_weights(ema, controlnet.parameters()):
            pipe = build_pipeline(base, controlnet, config)
            if any(base[p].dtype != torch.float32 for p in BASE_PARTS):
                pipe.to(torch.float32)
            publish_folder(config.out_dir / "pipeline", pipe.save_pretrained)
        metrics["pipeline"] = str(config.out_dir / "pipeline")
    return metrics
