"""``synthgen train sd3-controlnet``: an SD3 ControlNet for time series, on a frozen SD3 climate model.

Follows diffusers' ``train_controlnet_sd3.py``: ``SD3ControlNetModel`` initialised from the base transformer's first
blocks (zero-initialised outputs), the control image encoded by the base VAE (``(z - shift) * scale``), the
ControlNet's block outputs added into the frozen transformer, SD3's timestep density and loss weighting, the
flow-matching target; accelerate (bf16 on GPU), ``checkpoint-N`` + resume, EMA, preview strips
(control | generated | real), ``metrics.json``. Pairs are the same place at an earlier date (control) and a later
date (target), whose prompt carries the later date and that month's climate; held-back dates never enter training.
The ControlNet folder (``<out>/controlnet``) holds the diffusers model and ``climate.json`` naming its base.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers import SD3ControlNetModel
from diffusers.training_utils import EMAModel

from synthgen.climate.prompts import PromptSpec, load_prompt_spec
from synthgen.config import config_to_dict
from synthgen.errors import ConfigError, PromptError
from synthgen.models.sd3_components import build_controlnet, has_t5, load_sd3_pipeline, quiet
from synthgen.pipelines.climate import ClimateModelInfo
from synthgen.training.checkpoints import ema_model, ema_weights, freeze, publish_folder
from synthgen.training.sd3 import flow_matching_loss, noisy_inputs, prompt_embeddings, write_preview_strip
from synthgen.training.sd3_config import SD3ControlNetTrainConfig
from synthgen.training.sd3_data import ClimateTiles, LatentCache, TextEmbeddings, TimeSeriesPairs, prompt_variants
from synthgen.training.training_run import start_training_run


def load_base(base: str) -> tuple:
    """The frozen base SD3 pipeline, its prompt spec and its climate.json (a one-line error if it is missing)."""
    path = Path(base)
    if not path.exists() and "/" not in base:
        raise ConfigError(f"config 'base': {base} not found (train it with `synthgen train sd3` or give a folder)")
    if path.exists() and not (path / "model_index.json").is_file():
        hint = " (train it: make weights-climate)" if "weights" in str(path) else ""
        raise ConfigError(f"config 'base': {base} is not an SD3 model folder (no model_index.json){hint}")
    pipe = load_sd3_pipeline(base)
    info = ClimateModelInfo.load(base) or ClimateModelInfo()
    spec = PromptSpec.from_dict(info.prompts, f"{base}/climate.json") if info.prompts else None
    return pipe, info, spec


def train_sd3_controlnet(config: SD3ControlNetTrainConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) the ControlNet and save ``<out>/controlnet``; returns the metrics of metrics.json."""
    pipe, info, base_spec = load_base(config.base)
    spec = base_spec or load_prompt_spec(config.prompts)
    tiles = ClimateTiles.from_config(config, [config.manifest])
    pairs = TimeSeriesPairs(tiles, config.pairs)
    run = start_training_run(config)
    accelerator, device, weight_dtype = run.accelerator, run.device, run.weight_dtype
    with_t5 = has_t5(config.base) and pipe.text_encoder_3 is not None
    msl = info.max_sequence_length if with_t5 else 0
    torch.manual_seed(config.seed)
    controlnet = build_controlnet(pipe.transformer, config.controlnet_layers)
    for name in ("vae", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3"):
        freeze(getattr(pipe, name, None), device, weight_dtype)
    ema = EMAModel(controlnet.parameters(), decay=0.999, model_cls=SD3ControlNetModel, model_config=controlnet.config)
    opt = torch.optim.AdamW(controlnet.parameters(), lr=config.lr)
    controlnet, opt = accelerator.prepare(controlnet, opt)
    raw_cn = accelerator.unwrap_model(controlnet)

    state: dict = {"step": 0, "loss": []}
    state = run.resume(state, progress, ema)

    latents = LatentCache(pipe.vae, tiles.images)
    targets = [tiles.sites[p.target] for p in pairs.pairs]
    embeds = TextEmbeddings(
        pipe, prompt_variants(targets, spec, config.prompt_variants, config.seed), spec, with_t5, msl
    )
    scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    control_idx = np.array([p.control for p in pairs.pairs])
    target_idx = np.array([p.target for p in pairs.pairs])

    while state["step"] < run.stop:
        step = state["step"]
        controlnet.train()
        total = 0.0
        for micro in range(config.gradient_accumulation_steps):
            with accelerator.accumulate(controlnet), accelerator.autocast():
                gen = run.generator(step, micro)
                items, flips = pairs.batch(config.seed, step, micro, config.batch_size)
                prompt_embeds, pooled = prompt_embeddings(embeds, items, config, gen, device, weight_dtype)
                x = latents.sample(target_idx[items], flips, gen).to(device)
                control = latents.sample(control_idx[items], flips, gen).to(device)
                noise, timesteps, sigmas, noisy = noisy_inputs(x, scheduler, config, gen)
                blocks = controlnet(
                    hidden_states=noisy,
                    timestep=timesteps,
                    encoder_hidden_states=prompt_embeds,
                    pooled_projections=pooled,
                    controlnet_cond=control,
                    return_dict=False,
                )[0]
                pred = pipe.transformer(
                    hidden_states=noisy.to(weight_dtype),
                    timestep=timesteps,
                    encoder_hidden_states=prompt_embeds,
                    pooled_projections=pooled,
                    block_controlnet_hidden_states=[b.to(weight_dtype) for b in blocks],
                    return_dict=False,
                )[0]
                loss = flow_matching_loss(pred, x, noise, noisy, sigmas, config)
                run.optimizer_step(loss, opt, clip=controlnet.parameters())
            total += loss.item() / config.gradient_accumulation_steps
        run.step_done(state, {"loss": total}, progress, ema, raw_cn.parameters())
        if state["step"] % config.preview_every == 0 or state["step"] == config.total_steps:
            _preview(pipe, raw_cn, ema, tiles, pairs, spec, config, state["step"], msl)
        run.checkpoint_if_due(state)

    metrics = {
        "step": state["step"],
        "total_steps": config.total_steps,
        "loss": state["loss"],
        "pairs": len(pairs),
        "params": {"controlnet": raw_cn.num_parameters()},
        "config": config_to_dict(config),
    }
    if accelerator.is_main_process and state["step"] >= config.total_steps:
        _final_save(raw_cn, ema, config, info)
    return run.finish(metrics)


def _preview(pipe, controlnet, ema, tiles, pairs, spec, config, step: int, msl: int) -> None:
    """A strip of (control | generated | real later image) for the first ``preview_n`` pairs, with EMA weights."""
    from diffusers import StableDiffusion3ControlNetPipeline

    from synthgen.pipelines.climate import ClimatePipeline

    if config.preview_n == 0:
        return
    with ema_weights(ema, controlnet.parameters()):
        controlnet.eval()
        try:
            cpipe = StableDiffusion3ControlNetPipeline(**{**pipe.components, "controlnet": controlnet})
            cpipe.set_progress_bar_config(disable=True)
            climate = ClimatePipeline(cpipe, spec, ClimateModelInfo(max_sequence_length=msl), with_t5=msl > 0)
            chosen = pairs.pairs[:: max(1, len(pairs) // config.preview_n)][: config.preview_n]
            as_uint8 = [((tiles.images[i].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8) for i in
                        [p.control for p in chosen] + [p.target for p in chosen]]  # fmt: skip
            controls, reals = as_uint8[: len(chosen)], as_uint8[len(chosen) :]
            out = climate(
                [{**tiles.sites[p.target], "site_id": str(k)} for k, p in enumerate(chosen)],
                size=config.size,
                num_inference_steps=config.num_inference_steps,
                guidance_scale=config.guidance_scale,
                generator=[torch.Generator().manual_seed(config.seed * 1000 + k) for k in range(len(chosen))],
                control_images=controls,
            )
        except PromptError:  # a site without climate values: no preview, training goes on
            return
    rows = [np.concatenate([c, g, r], 0) for c, g, r in zip(controls, out.images, reals, strict=True)]
    texts = [p.joined(spec.join) for p in out.prompts]
    write_preview_strip(np.stack(rows), texts, config.out_dir / "previews" / f"step-{step:07d}.png")


def _final_save(controlnet, ema, config: SD3ControlNetTrainConfig, base_info: ClimateModelInfo) -> Path:
    final_cn = ema_model(controlnet, ema)

    def write(tmp: Path) -> None:
        with quiet():
            final_cn.save_pretrained(tmp)
        ClimateModelInfo(
            prompts=base_info.prompts,
            max_sequence_length=base_info.max_sequence_length,
            size=config.size,
            base=str(config.base),
            trained_on=[config.manifest],
        ).save(tmp)

    return publish_folder(config.out_dir / "controlnet", write)
