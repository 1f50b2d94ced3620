"""Train a tiny Stable Diffusion base on the RGB tiles of a manifest: tokenizer, then VAE, then UNet + text encoder.

No pretrained Stable Diffusion is reachable here, so the embedded ControlNet default needs a base of the same
architecture trained locally: (0) a byte-level BPE tokenizer on the composition prompts of the train split,
(a) an ``AutoencoderKL`` (L1 + KL), (b) a ``UNet2DConditionModel`` conditioned by a ``CLIPTextModel`` on the
composition prompts (DDPM epsilon objective, a share of empty prompts for classifier-free guidance, EMA).
The loop follows diffusers' examples like ``training/landcover.py``: ``Accelerator`` (bf16 on GPU), gradient
accumulation, warm-up, gradient clipping, ``checkpoint-N`` + ``resume="latest"`` with seeded batches (exact
resume), preview PNGs, ``metrics.json``. The result, ``<out>/pipeline``, is a ``StableDiffusionPipeline`` folder
(the layout of SD 1.5) that ``synthgen train controlnet --base`` takes like a full-size base.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from synthgen.config import config_to_dict
from synthgen.models.schedulers import sd_inference_scheduler, sd_noise_scheduler
from synthgen.models.sd_components import build_text_encoder, build_unet, build_vae, num_parameters
from synthgen.models.text_tokenizer import load_tokenizer, train_tokenizer
from synthgen.pipelines.rgb_common import to_uint8_images
from synthgen.prompts import prompt_vocabulary
from synthgen.schema import load_scheme
from synthgen.training.checkpoints import ema_weights, publish_folder, save_strip, unit_std_scale
from synthgen.training.objective import diffusion_loss
from synthgen.training.sd_base_config import SDBaseTrainConfig
from synthgen.training.tiles import RGBTiles, train_and_val
from synthgen.training.training_run import TrainingRun, start_training_run

TOKENIZER_DIR = "tokenizer"
RESUMABLE_CHANGES = frozenset(
    {"out", "manifest", "resume", "max_steps", "unet_steps", "checkpoint_every", "checkpoints_total_limit"}
    | {"preview_every", "preview_n", "scheduler", "num_inference_steps", "guidance_scale"}
)


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids (B, model_max_length) padded and truncated as Stable Diffusion pipelines do."""
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def drop_prompts(prompts: list[str], proportion: float, rng: np.random.Generator) -> list[str]:
    """Replace each prompt by "" with probability ``proportion`` (classifier-free guidance training)."""
    return ["" if rng.random() < proportion else p for p in prompts]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(a.float().clamp(-1, 1), b.float().clamp(-1, 1)).item()
    return float(10 * np.log10(4.0 / mse)) if mse > 0 else float("inf")


def _tokenizer(config: SDBaseTrainConfig, train: RGBTiles, out_dir: Path):
    folder = out_dir / TOKENIZER_DIR
    if not (folder / "tokenizer.json").is_file():
        tokenizer = train_tokenizer(train.prompts() + prompt_vocabulary(train.scheme), config.tokenizer_vocab_size)
        publish_folder(folder, tokenizer.save_pretrained)
    return load_tokenizer(folder)


def _latent_scale(vae, tiles: RGBTiles, config: SDBaseTrainConfig, size: int) -> float:
    return unit_std_scale(lambda batch: vae.encode(batch.rgb.to(vae.device)).latent_dist.mean, tiles, config, size)


@torch.no_grad()
def evaluate_vae(vae, tiles: RGBTiles, n: int) -> dict:
    """Reconstruction L1 and PSNR of the VAE on ``n`` evenly spaced whole tiles."""
    batch = tiles.spread(n, tiles.tile_size)
    rgb = batch.rgb.to(vae.device, vae.dtype)
    recon = vae.decode(vae.encode(rgb).latent_dist.mean).sample
    return {"tiles": len(rgb), "l1": F.l1_loss(recon.float(), rgb.float()).item(), "psnr_db": psnr(recon, rgb)}


def build_base_pipeline(vae, text_encoder, tokenizer, unet, config: SDBaseTrainConfig) -> StableDiffusionPipeline:
    """The base as a ``StableDiffusionPipeline`` (safety checker off: it blanks aerial images)."""
    scheduler = sd_inference_scheduler(config.scheduler, sd_noise_scheduler(config.num_train_timesteps).config)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def write_preview(pipe: StableDiffusionPipeline, batch, path: Path, config: SDBaseTrainConfig) -> Path:
    """A PNG: top row real val tiles, bottom row images generated from their composition prompts."""
    size = batch.rgb.shape[-1]
    generators = [torch.Generator().manual_seed(config.seed * 1000 + i) for i in range(len(batch.prompts))]
    latents = pipe(
        prompt=batch.prompts,
        height=size,
        width=size,
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
        generator=generators,
        output_type="latent",
    ).images
    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return save_strip([to_uint8_images(batch.rgb), to_uint8_images(images)], path)


def train_sd_base(config: SDBaseTrainConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) the tokenizer, VAE and UNet and save ``<out>/pipeline``; returns the metrics."""
    scheme = load_scheme(config.scheme)
    manifest = Path(config.manifest)
    train, val = train_and_val(RGBTiles, manifest, scheme)
    size = config.size or train.tile_size
    if size > train.tile_size:
        train.batch(config.seed, 0, 0, 1, size)  # raises the one-line error
    run = start_training_run(config, RESUMABLE_CHANGES)
    accelerator, out_dir = run.accelerator, run.out_dir
    tokenizer = _tokenizer(config, train, out_dir)
    arch = config.architecture()
    vae = build_vae(arch)
    unet = build_unet(arch, size // arch.latent_factor)
    text_encoder = build_text_encoder(arch, tokenizer)
    noise_scheduler = sd_noise_scheduler(config.num_train_timesteps)
    denoiser_params = list(unet.parameters()) + (list(text_encoder.parameters()) if config.train_text_encoder else [])
    text_encoder.requires_grad_(config.train_text_encoder)
    opt_vae = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr)
    opt_unet = torch.optim.AdamW(denoiser_params, lr=config.unet_lr)
    lr_vae = get_scheduler("constant_with_warmup", opt_vae, num_warmup_steps=config.lr_warmup_steps)
    lr_unet = get_scheduler("constant_with_warmup", opt_unet, num_warmup_steps=config.lr_warmup_steps)
    ema = EMAModel(denoiser_params, decay=config.ema_decay)
    vae, unet, text_encoder, opt_vae, opt_unet, lr_vae, lr_unet = accelerator.prepare(
        vae, unet, text_encoder, opt_vae, opt_unet, lr_vae, lr_unet
    )
    raw = {"vae": accelerator.unwrap_model(vae), "unet": accelerator.unwrap_model(unet)}
    raw["text_encoder"] = accelerator.unwrap_model(text_encoder)

    state: dict = {"step": 0, "scaling_factor": None, "loss_vae": [], "loss_unet": []}
    state.update({f"{kind}_{phase}": 0.0 for kind in ("seconds", "cpu_seconds") for phase in ("vae", "unet")})
    state = run.resume(state, progress, ema)
    if state["scaling_factor"] is not None:
        raw["vae"].register_to_config(scaling_factor=state["scaling_factor"])
    preview_batch = (val or train).spread(config.preview_n, size) if config.preview_n else None

    while state["step"] < run.stop:
        started, cpu_started = time.perf_counter(), time.process_time()
        step = state["step"]
        phase_vae = step < config.vae_steps
        if not phase_vae and state["scaling_factor"] is None:
            raw["vae"].eval()
            state["scaling_factor"] = _latent_scale(raw["vae"], train, config, size)
            raw["vae"].register_to_config(scaling_factor=state["scaling_factor"])
            if preview_batch is not None:
                _vae_preview(raw["vae"], preview_batch, out_dir / "previews" / f"vae-step-{step:07d}.png")
        total = 0.0
        for micro in range(config.gradient_accumulation_steps):
            batch_size = (config.vae_batch_size or config.batch_size) if phase_vae else config.batch_size
            batch = train.batch(config.seed, step, micro, batch_size, size)
            gen = run.generator(step, micro)
            rgb = batch.rgb.to(accelerator.device)
            if phase_vae:
                vae.train()
                with accelerator.accumulate(vae), accelerator.autocast():
                    posterior = vae.encode(rgb).latent_dist
                    recon = vae.decode(posterior.sample(generator=gen)).sample
                    loss = F.l1_loss(recon.float(), rgb) + config.kl_weight * posterior.kl().mean()
                    run.optimizer_step(loss, opt_vae, lr_vae, vae.parameters())
            else:
                unet.train()
                text_encoder.train(config.train_text_encoder)
                rng = np.random.default_rng([config.seed, step, micro, 1])
                ids = tokenize(tokenizer, drop_prompts(batch.prompts, config.proportion_empty_prompts, rng))
                with accelerator.accumulate(unet, text_encoder), accelerator.autocast():
                    with torch.no_grad():
                        latents = raw["vae"].encode(rgb).latent_dist.sample(generator=gen).float()
                        latents = latents * state["scaling_factor"]
                    noise = torch.randn(latents.shape, generator=gen).to(latents.device)
                    t = torch.randint(0, config.num_train_timesteps, (latents.shape[0],), generator=gen)
                    t = t.to(latents.device)
                    noisy = noise_scheduler.add_noise(latents, noise, t)
                    hidden = text_encoder(ids.to(accelerator.device))[0]
                    loss = diffusion_loss(unet(noisy, t, hidden).sample, latents, noise, t, noise_scheduler)
                    run.optimizer_step(loss, opt_unet, lr_unet, denoiser_params)
            total += loss.item() / config.gradient_accumulation_steps
        curve = "loss_vae" if phase_vae else "loss_unet"
        run.step_done(state, {curve: total}, progress, None if phase_vae else ema, denoiser_params)
        done = state["step"] == config.total_steps
        if not phase_vae and preview_batch is not None and (state["step"] % config.preview_every == 0 or done):
            with ema_weights(ema, denoiser_params):
                pipe = build_base_pipeline(raw["vae"], raw["text_encoder"], tokenizer, raw["unet"], config)
                write_preview(pipe, preview_batch, out_dir / "previews" / f"step-{state['step']:07d}.png", config)
        phase = "vae" if phase_vae else "unet"
        state[f"seconds_{phase}"] += time.perf_counter() - started
        state[f"cpu_seconds_{phase}"] += time.process_time() - cpu_started
        run.checkpoint_if_due(state)

    return run.finish(_final_save(raw, tokenizer, ema, denoiser_params, run, train, val, state))


@torch.no_grad()
def _vae_preview(vae, batch, path: Path) -> None:
    rgb = batch.rgb.to(vae.device, vae.dtype)
    recon = vae.decode(vae.encode(rgb).latent_dist.mean).sample
    save_strip([to_uint8_images(batch.rgb), to_uint8_images(recon)], path)


def _final_save(raw: dict, tokenizer, ema, denoiser_params, run: TrainingRun, train, val, state: dict) -> dict:
    config = run.config
    raw["vae"].eval()
    if state["scaling_factor"] is None and state["step"] >= config.vae_steps:
        state["scaling_factor"] = _latent_scale(raw["vae"], train, config, config.size or train.tile_size)
        raw["vae"].register_to_config(scaling_factor=state["scaling_factor"])
    params = {name: num_parameters(model) for name, model in raw.items()}
    metrics = {
        "step": state["step"],
        "total_steps": config.total_steps,
        "scaling_factor": state["scaling_factor"],
        "loss_vae": state["loss_vae"],
        "loss_unet": state["loss_unet"],
        **{k: round(v, 1) for k, v in state.items() if k.startswith(("seconds_", "cpu_seconds_"))},
        "params": params,
        "val_vae": evaluate_vae(raw["vae"], val, 64) if val is not None else None,
        "config": config_to_dict(config),
    }
    if run.accelerator.is_main_process and state["scaling_factor"] is not None:
        with ema_weights(ema, denoiser_params):
            pipe = build_base_pipeline(raw["vae"], raw["text_encoder"], tokenizer, raw["unet"], config)
            publish_folder(config.out_dir / "pipeline", pipe.save_pretrained)
        metrics["pipeline"] = str(config.out_dir / "pipeline")
    return metrics
