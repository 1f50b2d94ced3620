"""``synthgen train sd3``: flow-matching training of an SD3 model on RGB tiles with climate prompts.

Follows diffusers' ``train_dreambooth_sd3.py`` / ``train_dreambooth_lora_sd3.py``: timesteps drawn from SD3's
density (``compute_density_for_timestep_sampling``: logit-normal by default, or "mode"), loss weighted by
``compute_loss_weighting_for_sd3``, flow-matching target ``noise - latents`` (or, with ``precondition_outputs``,
the EDM-style preconditioned prediction against the latents), frozen text encoders with precomputed prompt
embeddings, cached VAE latents, an ``Accelerator`` (bf16 on GPU, fp32 on CPU, gradient accumulation), EMA of the
transformer, ``checkpoint-N`` folders (through a temporary name, with ``trainer_state.json``) and
``resume="latest"``, preview images and ``metrics.json``.

From scratch (the default), the run first trains the 16-channel VAE (L1 + KL), fits its shift/scaling factors to
the latents, then trains the transformer; the tokenizer is trained on the run's prompts and the two CLIP encoders
stay at their seeded random initialisation (frozen, as SD3 keeps its encoders frozen). The untrained components are
saved in ``<out>/init`` so a resumed run continues from exactly the same ones. With ``base_model`` and
``lora_rank``, LoRA adapters (peft) are trained on a full-size SD3 transformer instead and saved as SD3 LoRA
weights. The result is a model folder in ``<out>/pipeline`` with ``climate.json`` (prompts, sequence length, size).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import (
    EMAModel,
    compute_density_for_timestep_sampling,
    compute_loss_weighting_for_sd3,
)

from synthgen.climate.prompts import PromptSpec, load_prompt_spec, vocabulary_texts
from synthgen.config import config_to_dict
from synthgen.models.sd3_components import build_sd3_pipeline, has_t5, load_sd3_pipeline, quiet
from synthgen.pipelines.climate import ClimateModelInfo
from synthgen.training.checkpoints import ema_weights, freeze, publish_folder, save_strip
from synthgen.training.sd3_config import FlowMatchingConfig, SD3TrainConfig
from synthgen.training.sd3_data import (
    ClimateTiles,
    LatentCache,
    TextEmbeddings,
    fit_latent_scaling,
    prompt_variants,
)
from synthgen.training.training_run import start_training_run

LORA_TARGETS = ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
                "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out"]  # fmt: skip


def noisy_inputs(latents: torch.Tensor, scheduler, config: FlowMatchingConfig, generator: torch.Generator):
    """SD3's flow-matching inputs: (noise, timesteps, sigmas, noisy latents) with timesteps from SD3's density."""
    noise = torch.randn(latents.shape, generator=generator)
    u = compute_density_for_timestep_sampling(
        weighting_scheme=config.weighting_scheme,
        batch_size=latents.shape[0],
        logit_mean=config.logit_mean,
        logit_std=config.logit_std,
        mode_scale=config.mode_scale,
        generator=generator,
    )
    n = scheduler.config.num_train_timesteps
    indices = (u * n).long().clamp(0, n - 1)
    timesteps = scheduler.timesteps[indices]
    sigmas = scheduler.sigmas[indices].view(-1, 1, 1, 1).to(latents.dtype)
    noise = noise.to(latents.device)
    sigmas = sigmas.to(latents.device)
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    return noise, timesteps.to(latents.device), sigmas, noisy


def prompt_embeddings(embeds: TextEmbeddings, items, config, gen: torch.Generator, device, dtype=None) -> tuple:
    """(prompt_embeds, pooled) of ``items`` (rows of ``embeds``), each at a prompt variant drawn with ``gen``, on
    ``device`` (and cast to ``dtype`` when given)."""
    variants = torch.randint(0, config.prompt_variants, (len(items),), generator=gen).numpy()
    return tuple(t.to(device, dtype) for t in embeds.get(items, variants))


def flow_matching_loss(model_pred, latents, noise, noisy, sigmas, config: FlowMatchingConfig) -> torch.Tensor:
    """The weighted flow-matching loss of diffusers' SD3 examples."""
    if config.precondition_outputs:
        model_pred = model_pred * (-sigmas) + noisy
        target = latents
    else:
        target = noise - latents
    weighting = compute_loss_weighting_for_sd3(weighting_scheme=config.weighting_scheme, sigmas=sigmas)
    per_item = (weighting.float() * (model_pred.float() - target.float()) ** 2).reshape(target.shape[0], -1)
    return per_item.mean(1).mean()


def write_preview_strip(images: np.ndarray, texts: list[str], path: Path) -> Path:
    """PNG of images side by side, plus a JSON of the prompts beside it."""
    save_strip([images], path)
    path.with_suffix(".json").write_text(json.dumps(texts, indent=1, ensure_ascii=False))
    return path


def _tokenizer_texts(variants, spec: PromptSpec) -> list[str]:
    from synthgen.prompts import prompt_vocabulary
    from synthgen.schema import load_scheme

    texts = [p.joined(spec.join) for vs in variants for p in vs]
    texts += [p.spatial for vs in variants for p in vs] + [p.climate for vs in variants for p in vs]
    return texts + vocabulary_texts(spec) + prompt_vocabulary(load_scheme("oem8"))


def _initial_pipeline(config: SD3TrainConfig, variants, spec: PromptSpec, resuming: bool):
    """The untrained small SD3 (tokenizer trained on the prompts); saved once in <out>/init, reloaded on resume."""
    from synthgen.models.text_tokenizer import train_tokenizer

    init = config.out_dir / "init"
    if resuming and (init / "model_index.json").is_file():
        return load_sd3_pipeline(init)
    tokenizer = train_tokenizer(_tokenizer_texts(variants, spec), vocab_size=config.vocab_size)
    pipe = build_sd3_pipeline(config.architecture(), tokenizer, seed=config.seed)
    with quiet():
        publish_folder(init, pipe.save_pretrained)
    return load_sd3_pipeline(init)


def _add_lora(transformer, rank: int):
    from peft import LoraConfig

    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
    )
    for p in transformer.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return [p for p in transformer.parameters() if p.requires_grad]


def _vae_step(
    vae, tiles: ClimateTiles, config: SD3TrainConfig, gen: torch.Generator, step: int, micro: int, device
) -> torch.Tensor:
    """The VAE loss (L1 + KL) of one micro-batch, its posterior sampled with ``gen``."""
    items, flips = tiles.batch(config.seed + 7, step, micro, config.vae_batch_size)
    x = tiles.images[items]
    x = torch.where(torch.from_numpy(flips).bool()[:, None, None, None], torch.flip(x, dims=[-1]), x).to(device)
    posterior = vae.encode(x).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(device)
    recon = vae.decode(z).sample
    return F.l1_loss(recon.float(), x.float()) + config.kl_weight * posterior.kl().mean()


def train_sd3(config: SD3TrainConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) an SD3 climate model and save ``<out>/pipeline``; returns the metrics of metrics.json."""
    spec = load_prompt_spec(config.prompts)
    tiles = ClimateTiles.from_config(config, config.manifests)
    run = start_training_run(config)
    variants = prompt_variants(tiles.sites, spec, config.prompt_variants, config.seed)
    accelerator, device, weight_dtype = run.accelerator, run.device, run.weight_dtype
    if config.base_model:
        pipe = load_sd3_pipeline(config.base_model)
        with_t5 = has_t5(config.base_model) and pipe.text_encoder_3 is not None
    else:
        pipe = _initial_pipeline(config, variants, spec, resuming=run.checkpoint is not None)
        with_t5 = False
    msl = config.max_sequence_length if with_t5 else 0
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        freeze(getattr(pipe, name, None), device, weight_dtype)
    vae, transformer = pipe.vae, pipe.transformer
    scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config)

    if config.lora_rank:
        freeze(vae, device, weight_dtype)
        transformer.to(device)
        if weight_dtype != torch.float32:
            transformer.to(weight_dtype)
        params = _add_lora(transformer, config.lora_rank)
        ema = None
    else:
        params = list(transformer.parameters())
        ema = EMAModel(params, decay=config.ema_decay, model_cls=type(transformer), model_config=transformer.config)
    opt = torch.optim.AdamW(params, lr=config.lr)
    if config.vae_steps:
        opt_vae = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr)
        vae, transformer, opt, opt_vae = accelerator.prepare(vae, transformer, opt, opt_vae)
    else:
        transformer, opt = accelerator.prepare(transformer, opt)
        vae.requires_grad_(False).to(device)
    raw_vae, raw_tr = accelerator.unwrap_model(vae), accelerator.unwrap_model(transformer)

    state: dict = {"step": 0, "shift_factor": None, "scaling_factor": None, "loss_vae": [], "loss_transformer": []}
    state = run.resume(state, progress, ema)
    latents = embeds = None

    while state["step"] < run.stop:
        step = state["step"]
        phase_vae = step < config.vae_steps
        if not phase_vae and latents is None:
            raw_vae.eval()
            if state["scaling_factor"] is None and not config.base_model:
                state["shift_factor"], state["scaling_factor"] = fit_latent_scaling(raw_vae, tiles.images)
            if state["scaling_factor"] is not None:
                raw_vae.register_to_config(shift_factor=state["shift_factor"], scaling_factor=state["scaling_factor"])
            latents = LatentCache(raw_vae, tiles.images)
            embeds = TextEmbeddings(pipe, variants, spec, with_t5, msl)
        model = vae if phase_vae else transformer
        model.train()
        total = 0.0
        for micro in range(config.gradient_accumulation_steps):
            with accelerator.accumulate(model), accelerator.autocast():
                gen = run.generator(step, micro)
                if phase_vae:
                    loss = _vae_step(vae, tiles, config, gen, step, micro, device)
                else:
                    items, flips = tiles.batch(config.seed, step, micro, config.batch_size)
                    prompt_embeds, pooled = prompt_embeddings(embeds, items, config, gen, device)
                    x = latents.sample(items, flips, gen).to(device)
                    noise, timesteps, sigmas, noisy = noisy_inputs(x, scheduler, config, gen)
                    pred = transformer(
                        hidden_states=noisy,
                        timestep=timesteps,
                        encoder_hidden_states=prompt_embeds,
                        pooled_projections=pooled,
                        return_dict=False,
                    )[0]
                    loss = flow_matching_loss(pred, x, noise, noisy, sigmas, config)
                run.optimizer_step(loss, opt_vae if phase_vae else opt, clip=model.parameters())
            total += loss.item() / config.gradient_accumulation_steps
        curve = "loss_vae" if phase_vae else "loss_transformer"
        run.step_done(state, {curve: total}, progress, None if phase_vae else ema, raw_tr.parameters())
        if not phase_vae and (state["step"] % config.preview_every == 0 or state["step"] == config.total_steps):
            _preview(pipe, raw_tr, ema, embeds, config, state["step"], msl)
        run.checkpoint_if_due(state)

    metrics = {
        "step": state["step"],
        "total_steps": config.total_steps,
        "shift_factor": state["shift_factor"],
        "scaling_factor": state["scaling_factor"],
        "loss_vae": state["loss_vae"],
        "loss_transformer": state["loss_transformer"],
        "tiles": len(tiles),
        "distinct_prompts": len(embeds.texts) if embeds is not None else None,
        "prompts_truncated": embeds.truncated if embeds is not None else None,
        "params": {"transformer": raw_tr.num_parameters(), "vae": raw_vae.num_parameters()},
        "config": config_to_dict(config),
    }
    if accelerator.is_main_process and state["step"] >= config.total_steps:
        info = ClimateModelInfo(
            prompts=spec.to_dict(),
            max_sequence_length=msl,
            size=config.size,
            base=config.base_model,
            trained_on=[str(m) for m in config.manifests],
        )
        _final_save(pipe, raw_tr, raw_vae, ema, config, info)
    return run.finish(metrics)


def _preview(pipe, transformer, ema, embeds, config: FlowMatchingConfig, step: int, msl: int) -> None:
    if config.preview_n == 0 or embeds is None:
        return
    n = min(config.preview_n, len(embeds.texts))
    texts = embeds.texts[:: max(1, len(embeds.texts) // n)][:n]
    with ema_weights(ema, transformer.parameters()):
        transformer.eval()
        images = pipe(
            prompt=texts,
            height=config.size,
            width=config.size,
            num_inference_steps=config.num_inference_steps,
            guidance_scale=config.guidance_scale,
            generator=[torch.Generator().manual_seed(config.seed * 1000 + i) for i in range(n)],
            max_sequence_length=msl,
            output_type="np",
        ).images
    uint8 = (np.clip(np.nan_to_num(images), 0, 1) * 255).round().astype(np.uint8)
    write_preview_strip(uint8, texts, config.out_dir / "previews" / f"step-{step:07d}.png")


def _final_save(pipe, transformer, vae, ema, config: SD3TrainConfig, info: ClimateModelInfo) -> Path:
    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        with quiet():
            if config.lora_rank:
                from diffusers import StableDiffusion3Pipeline
                from peft.utils import get_peft_model_state_dict

                layers = get_peft_model_state_dict(transformer)
                StableDiffusion3Pipeline.save_lora_weights(tmp, transformer_lora_layers=layers)
            else:
                if ema is not None:
                    ema.copy_to(transformer.parameters())
                pipe.transformer, pipe.vae = transformer.float().cpu(), vae.float().cpu()
                for name in ("text_encoder", "text_encoder_2"):
                    getattr(pipe, name).float().cpu()
                pipe.save_pretrained(tmp)
        info.save(tmp)

    return publish_folder(config.out_dir / "pipeline", write)
