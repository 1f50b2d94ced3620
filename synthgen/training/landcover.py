"""Train the land-cover generator: (a) the layout autoencoder, (b) a UNet2DModel on its frozen latents.

Follows diffusers' training examples: an ``Accelerator`` (bf16 on GPU, gradient accumulation), DDPM noise with an
epsilon-prediction MSE loss, an EMA of the UNet, ``checkpoint-N`` folders written by ``accelerator.save_state``
(through a temporary name, with ``trainer_state.json``: step, latent scaling factor, loss curves) and
``resume="latest"``, preview PNGs of samples, and ``metrics.json`` (loss curves, autoencoder pixel accuracy and
mIoU on the val split). The result is a ``LandCoverPipeline`` folder in ``<out>/pipeline``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel

from synthgen.config import config_to_dict
from synthgen.errors import ConfigError
from synthgen.models.height_prior import HeightPrior
from synthgen.models.layout_autoencoder import LayoutAutoencoder
from synthgen.models.schedulers import layout_noise_scheduler
from synthgen.pipelines.landcover import LandCoverPipeline, make_scheduler, unet_downsampling
from synthgen.schema import load_scheme
from synthgen.training.checkpoints import ema_model, ema_weights, publish_folder, save_strip, unit_std_scale
from synthgen.training.landcover_config import LandCoverTrainConfig
from synthgen.training.objective import diffusion_loss
from synthgen.training.tiles import LayoutTiles, train_and_val
from synthgen.training.training_run import TrainingRun, start_training_run

# Keys that may differ on --resume: paths, bookkeeping, the length of the UNet phase and the sampler.
RESUMABLE_CHANGES = frozenset(
    {"resume", "max_steps", "out", "checkpoint_every", "checkpoints_total_limit", "preview_every", "preview_n"}
    | {"manifest", "elevation", "unet_steps", "scheduler", "num_inference_steps"}
)


def build_models(config: LandCoverTrainConfig, num_classes: int, size: int) -> tuple[LayoutAutoencoder, UNet2DModel]:
    """The untrained autoencoder and UNet of a config, for tiles of ``size`` px."""
    ae = LayoutAutoencoder(
        num_classes=num_classes,
        with_height=config.with_height,
        latent_channels=config.latent_channels,
        block_out_channels=config.ae_block_out_channels,
        layers_per_block=config.ae_layers_per_block,
        norm_num_groups=config.ae_norm_num_groups,
        kl_weight=config.kl_weight,
    )
    levels = len(config.unet_block_out_channels)
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if config.unet_attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    unet = UNet2DModel(
        sample_size=size // ae.downsample_factor,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        block_out_channels=tuple(config.unet_block_out_channels),
        layers_per_block=config.unet_layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=config.unet_norm_num_groups,
    )
    factor = ae.downsample_factor * unet_downsampling(unet)
    if size % factor:
        raise ConfigError(
            f"config 'size': {size} px is not a multiple of {factor} (the layout autoencoder's factor "
            f"{ae.downsample_factor} x the UNet's downsampling {unet_downsampling(unet)})"
        )
    return ae, unet


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse square-root class frequencies of 1-based ``labels`` (0 = nodata), mean 1 over the classes present."""
    counts = np.bincount(labels[labels > 0].ravel() - 1, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = 1.0 / np.sqrt(counts[present] / counts.sum())
    weights[present] /= weights[present].mean()
    return torch.tensor(weights, dtype=torch.float32)


def _latent_scale(ae: LayoutAutoencoder, tiles: LayoutTiles, config: LandCoverTrainConfig, size: int) -> float:
    def encode(batch):
        labels, heights = batch
        return ae.posterior(ae.one_hot(labels.to(ae.device)), heights.to(ae.device)).mean

    return unit_std_scale(encode, tiles, config, size)


@torch.no_grad()
def evaluate_autoencoder(ae: LayoutAutoencoder, tiles: LayoutTiles, batch_size: int, size: int) -> dict:
    """Reconstruction pixel accuracy and mIoU of the autoencoder on ``tiles`` (nodata pixels left out)."""
    k = ae.config.num_classes
    confusion = np.zeros((k, k), np.int64)
    for labels, heights in tiles.eval_batches(batch_size, size):
        latents = ae.encode(ae.one_hot(labels.to(ae.device)), heights.to(ae.device))
        pred = ae.decode(latents)[0].argmax(1).cpu()
        valid = labels > 0
        confusion += np.bincount(((labels[valid] - 1) * k + pred[valid]).numpy(), minlength=k * k).reshape(k, k)
    return confusion_metrics(confusion)


def confusion_metrics(confusion: np.ndarray) -> dict:
    """Pixel accuracy, mIoU (over classes present in truth or prediction) and IoU per class from a K x K matrix."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    total = confusion.sum()
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "iou_per_class": [None if np.isnan(v) else float(v) for v in iou],
    }


def build_pipeline(ae, unet, config: LandCoverTrainConfig, noise_scheduler, prior: HeightPrior) -> LandCoverPipeline:
    """The inference pipeline around trained components."""
    pipe = LandCoverPipeline(ae, unet, make_scheduler(config.scheduler, noise_scheduler.config), config.scheme, prior)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_preview(pipe: LandCoverPipeline, path: Path, n: int, size: int, steps: int, seed: int) -> Path:
    """A PNG of ``n`` generated label maps side by side, in the scheme's palette."""
    generators = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(n)]
    labels = pipe(batch_size=n, size=size, num_inference_steps=steps, generator=generators, gsd=1.0).labels
    lut = load_scheme(pipe.config.scheme).palette_lut()
    return save_strip([[lut[lab] for lab in labels]], path)


def train_landcover(config: LandCoverTrainConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) both phases and save the pipeline folder; returns the metrics written to metrics.json."""
    scheme = load_scheme(config.scheme)
    manifest = Path(config.manifest)
    train, val = train_and_val(LayoutTiles, manifest, scheme)
    size = config.size or train.tile_size
    run = start_training_run(config, RESUMABLE_CHANGES)
    accelerator = run.accelerator
    ae, unet = build_models(config, scheme.num_classes, size)
    scaling_factor = load_initial_weights(config, ae, unet)
    noise_scheduler = layout_noise_scheduler(config.num_train_timesteps, config.prediction_type)
    opt_ae = torch.optim.AdamW(ae.parameters(), lr=config.ae_lr)
    opt_unet = torch.optim.AdamW(unet.parameters(), lr=config.unet_lr)
    ema = EMAModel(unet.parameters(), decay=config.ema_decay, model_cls=UNet2DModel, model_config=unet.config)
    ae, unet, opt_ae, opt_unet = accelerator.prepare(ae, unet, opt_ae, opt_unet)
    raw_ae, raw_unet = accelerator.unwrap_model(ae), accelerator.unwrap_model(unet)

    state: dict = {"step": 0, "scaling_factor": scaling_factor, "loss_ae": [], "loss_unet": []}
    state = run.resume(state, progress, ema)
    if state["scaling_factor"] is not None:
        raw_ae.register_to_config(scaling_factor=state["scaling_factor"])
    prior = None
    class_weights = balanced_class_weights(train.labels, scheme.num_classes) if config.class_balanced else None

    while state["step"] < run.stop:
        step = state["step"]
        phase_ae = step < config.ae_steps
        if not phase_ae and state["scaling_factor"] is None:
            raw_ae.eval()
            state["scaling_factor"] = _latent_scale(raw_ae, train, config, size)
            raw_ae.register_to_config(scaling_factor=state["scaling_factor"])
        model, opt = (ae, opt_ae) if phase_ae else (unet, opt_unet)
        batch_size = (config.ae_batch_size or config.batch_size) if phase_ae else config.batch_size
        model.train()
        total = 0.0
        for micro in range(config.gradient_accumulation_steps):
            labels, heights = (
                t.to(accelerator.device) for t in train.batch(config.seed, step, micro, batch_size, size)
            )
            with accelerator.accumulate(model), accelerator.autocast():
                if phase_ae:
                    loss = ae(labels, heights if config.with_height else None, class_weights)["loss"]
                else:
                    with torch.no_grad():
                        latents = raw_ae.encode(raw_ae.one_hot(labels), heights).float()
                    gen = run.generator(step, micro)
                    noise = torch.randn(latents.shape, generator=gen).to(latents.device)
                    t = torch.randint(0, config.num_train_timesteps, (latents.shape[0],), generator=gen)
                    t = t.to(latents.device)
                    noisy = noise_scheduler.add_noise(latents, noise, t)
                    pred = unet(noisy, t).sample
                    loss = diffusion_loss(pred, latents, noise, t, noise_scheduler, config.snr_gamma)
                run.optimizer_step(loss, opt)
            total += loss.item() / config.gradient_accumulation_steps
        curve = "loss_ae" if phase_ae else "loss_unet"
        run.step_done(state, {curve: total}, progress, None if phase_ae else ema, raw_unet.parameters())
        if not phase_ae and (state["step"] % config.preview_every == 0 or state["step"] == config.total_steps):
            prior = prior or HeightPrior()
            _preview_with_ema(raw_ae, raw_unet, ema, config, noise_scheduler, prior, size, state["step"])
        run.checkpoint_if_due(state)

    return run.finish(_final_save(raw_ae, raw_unet, ema, run, noise_scheduler, val, size, state))


def load_initial_weights(config: LandCoverTrainConfig, ae: LayoutAutoencoder, unet: UNet2DModel) -> float | None:
    """Load ``config.init_pipeline``'s autoencoder and UNet into ``ae`` and ``unet`` (a one-line error when the
    folder is not a land-cover pipeline or its architecture is not the config's); returns its latent scale when the
    autoencoder is kept as it is (``ae_steps`` 0), else None (the run measures it after training the autoencoder)."""
    if config.init_pipeline is None:
        return None
    folder = Path(config.init_pipeline)
    if not (folder / "model_index.json").is_file():
        raise ConfigError(f"config 'init_pipeline': {folder} is not a land-cover pipeline folder (no model_index.json)")
    source = LandCoverPipeline.from_pretrained(folder)
    for name, target, loaded in (("autoencoder", ae, source.autoencoder), ("unet", unet, source.unet)):
        try:
            target.load_state_dict(loaded.state_dict())
        except RuntimeError as exc:
            raise ConfigError(
                f"config 'init_pipeline': the {name} of {folder} is not this config's architecture "
                f"({str(exc).splitlines()[0]})"
            ) from None
    ae.register_to_config(scaling_factor=source.autoencoder.config.scaling_factor)
    return source.autoencoder.config.scaling_factor if config.ae_steps == 0 else None


def _preview_with_ema(ae, unet, ema, config, noise_scheduler, prior, size: int, step: int) -> None:
    if config.preview_n == 0:
        return
    with ema_weights(ema, unet.parameters()):
        pipe = build_pipeline(ae, unet, config, noise_scheduler, prior)
        write_preview(
            pipe,
            config.out_dir / "previews" / f"step-{step:07d}.png",
            config.preview_n,
            size,
            config.num_inference_steps,
            config.seed,
        )


def _final_save(ae, unet, ema, run: TrainingRun, noise_scheduler, val, size: int, state: dict) -> dict:
    config = run.config
    ae.eval()
    metrics = {
        "step": state["step"],
        "total_steps": config.total_steps,
        "scaling_factor": state["scaling_factor"],
        "loss_ae": state["loss_ae"],
        "loss_unet": state["loss_unet"],
        "params": {"autoencoder": ae.num_parameters(), "unet": unet.num_parameters()},
        "val_autoencoder": evaluate_autoencoder(ae, val, config.batch_size, size) if val is not None else None,
        "config": config_to_dict(config),
    }
    if run.accelerator.is_main_process:
        if config.elevation:
            from synthgen.training.height_prior_fit import fit_height_prior

            prior = fit_height_prior(Path(config.elevation))
        else:
            prior = HeightPrior()
        pipe = build_pipeline(ae, ema_model(unet, ema).to(unet.device), config, noise_scheduler, prior)
        publish_folder(config.out_dir / "pipeline", pipe.save_pretrained)
    return metrics
