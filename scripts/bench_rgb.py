"""Benchmark label -> RGB rendering by ControlNet; writes JSON.

CPU part (always), the embedded default ControlNet (``synthgen/weights/rgb_controlnet``) on real Dubai label maps
(``--cond``, its val split, ``--n`` tiles), same size, steps and guidance on both sides:
- synthgen: ``run_rgb`` (``synthgen rgb --method controlnet``): composition prompts, per-tile generators, tiles
  written into shards + a manifest; on CPU tile by tile (byte-identical at any batch size), and once more with the
  batch denoised at once (``tile_by_tile=False``) to show what batching is worth here;
- plain: what a diffusers user writes: ``StableDiffusionControlNetPipeline.__call__`` per tile at batch 1 over the
  same components, the one-hot label map as the control image, the composition prompt, one GeoTIFF written per tile.
Model forwards (UNet, ControlNet, VAE decode, text encoder) are timed by wrapping the classes' methods; the rest of
the wall time is "outside forwards".

GPU part (only when CUDA is available): the full SD 1.5 + ControlNet architecture (UNet 320/640/1280/1280, CLIP-L
sized text encoder, SD VAE; random weights: the FLOPs are the same) at 512 px, 20 steps, classifier-free guidance,
bf16:
- plain: ``StableDiffusionControlNetPipeline.__call__`` at batch 1 (diffusers' defaults, SDPA attention);
- synthgen: ``RGBControlNetPipeline`` at batch ``--gpu-batch``, channels_last, fused QKV projections and
  ``torch.compile`` of the UNet and the ControlNet.
FLOPs per image are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one guided denoising step (UNet +
ControlNet at batch 2) times the steps, plus one VAE decode; the issue's figure is 46 TFLOP per image. Reported:
img/s, achieved TFLOP/s and their share of ``--peak`` (790 TFLOP/s, H100 dense bf16), speed-up over plain.

    python scripts/bench_rgb.py --out bench/rgb.json [--n 16] [--steps 20] [--gpu-batch 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import (
    add_gpu_arguments,
    command_line,
    gpu_section,
    machine_info,
    rates,
    synced_seconds,
    timed_forwards,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


CONTROLNET_FORWARDS = (
    "diffusers:UNet2DConditionModel.forward",
    "diffusers:ControlNetModel.forward",
    "diffusers:AutoencoderKL.decode",
    "transformers:CLIPTextModel.forward",
)


def _cond_subset(cond: Path, n: int, work: Path) -> Path:
    """The first ``n`` val tiles of ``cond`` as a manifest in ``work``."""
    from synthgen.io.manifest import read_manifest
    from synthgen.validation.paper import write_subset

    splits = read_manifest(cond)["split"].tolist()
    rows = [i for i, split in enumerate(splits) if split == "val"][:n]
    if len(rows) < n:
        sys.exit(f"error: {cond} has {len(rows)} val tiles, --n asks for {n}")
    return write_subset(cond, rows, work / "cond.parquet")


def run_synthgen(
    model: str | None, cond: Path, steps: int, guidance: float, batch: int, tile_by_tile: bool, work: Path
) -> dict:
    """One ``synthgen rgb --method controlnet`` job in this process; wall and forward seconds."""
    from synthgen.jobs.rgb import RGBGenerateConfig, run_rgb
    from synthgen.pipelines.rgb_controlnet import RGBControlNetPipeline

    spent = timed_forwards(*CONTROLNET_FORWARDS)
    original = RGBControlNetPipeline.__call__
    if not tile_by_tile:
        RGBControlNetPipeline.__call__ = lambda self, *a, **k: original(self, *a, **{**k, "tile_by_tile": False})
    name = f"synthgen-b{batch}-{'tile' if tile_by_tile else 'batch'}"
    config = RGBGenerateConfig(
        cond=str(cond),
        method="controlnet",
        model=model,
        steps=steps,
        guidance=guidance,
        batch_size=batch,
        name=name,
        out=str(work / name),
        manifest=str(work / f"{name}.parquet"),
    )
    start = time.perf_counter()
    try:
        summary = run_rgb(config)
    finally:
        RGBControlNetPipeline.__call__ = original
    wall = time.perf_counter() - start
    return {"wall_s": wall, "forward_s": spent["seconds"], "tiles": summary.get("tiles_written", None)}


def run_plain(model: str | None, cond: Path, steps: int, guidance: float, work: Path) -> dict:
    """The plain diffusers loop: StableDiffusionControlNetPipeline at batch 1, a GeoTIFF written per tile."""
    import rasterio
    from diffusers import StableDiffusionControlNetPipeline

    from synthgen.engine.job import tile_seed
    from synthgen.io.manifest import iter_samples
    from synthgen.jobs.rgb import load_rgb_pipeline
    from synthgen.pipelines.rgb_common import label_condition
    from synthgen.prompts import composition_prompts
    from synthgen.schema import load_scheme

    spent = timed_forwards(*CONTROLNET_FORWARDS)
    ours, _ = load_rgb_pipeline("controlnet", model)
    keep = ("vae", "text_encoder", "tokenizer", "unet", "controlnet", "scheduler")
    pipe = StableDiffusionControlNetPipeline(
        **{k: getattr(ours, k) for k in keep},
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    scheme = load_scheme(ours.config.scheme)
    out = work / "plain"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tiles = 0
    for index, sample in enumerate(iter_samples(cond)):
        labels = torch.from_numpy(sample["label"].astype(np.int64))[None]
        control = label_condition(labels, None, scheme, ours.config.cond_encoding, ours.config.with_height)
        prompt = composition_prompts(labels, scheme)[0]
        size = labels.shape[-1]
        image = pipe(
            prompt,
            image=control,
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(tile_seed(0, index)),
            output_type="np",
        ).images[0]
        rgb = (image * 255).round().astype(np.uint8).transpose(2, 0, 1)
        profile = {
            "driver": "GTiff",
            "width": size,
            "height": size,
            "count": 3,
            "dtype": "uint8",
            "crs": sample["crs"],
            "transform": sample["transform"],
            "compress": "deflate",
        }
        with rasterio.open(out / f"{index:07d}.rgb.tif", "w", **profile) as dst:
            dst.write(rgb)
        tiles += 1
    return {"wall_s": time.perf_counter() - start, "forward_s": spent["seconds"], "tiles": tiles}


def bench_cpu(args) -> dict:
    """synthgen (tile by tile, and batched) vs the plain loop on the default ControlNet, on CPU."""
    result: dict = {
        "model": args.model or "embedded default (synthgen/weights/rgb_controlnet)",
        "n": args.n,
        "steps": args.steps,
        "guidance": args.guidance,
        "batch_size": args.batch_size,
    }
    with tempfile.TemporaryDirectory(prefix="bench-rgb-") as tmp:
        work = Path(tmp)
        cond = _cond_subset(Path(args.cond), args.n, work)
        runs = {
            "plain": lambda: run_plain(args.model, cond, args.steps, args.guidance, work),
            "synthgen": lambda: run_synthgen(args.model, cond, args.steps, args.guidance, args.batch_size, True, work),
            "synthgen_batched": lambda: run_synthgen(
                args.model, cond, args.steps, args.guidance, args.batch_size, False, work
            ),
        }
        for name, fn in runs.items():
            r = fn()
            r.update(rates(args.n, r["wall_s"], r["forward_s"]))
            print(
                f"{name:17s} {r['tiles_per_s']:.2f} tiles/s  outside forwards {r['share_outside_forwards']:.1%}",
                file=sys.stderr,
            )
            result[name] = r
    result["speedup_vs_plain"] = result["synthgen"]["tiles_per_s"] / result["plain"]["tiles_per_s"]
    result["speedup_batched_vs_plain"] = result["synthgen_batched"]["tiles_per_s"] / result["plain"]["tiles_per_s"]
    return result


def sd15_components(tiny: bool, device: str, dtype: torch.dtype, channels: int) -> dict:
    """SD 1.5's UNet, VAE and a CLIP-L sized text encoder (random weights), a ControlNet from the UNet taking
    ``channels`` control channels, a DDIM scheduler and a locally trained tokenizer. ``tiny``: a CPU smoke size."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel

    from synthgen.models.sd_components import SDArchitecture, build_text_encoder, quiet_loading
    from synthgen.models.text_tokenizer import train_tokenizer
    from synthgen.prompts import prompt_vocabulary
    from synthgen.schema import load_scheme

    widths, vae_widths, text = (320, 640, 1280, 1280), (128, 256, 512, 512), (768, 12, 12, 3072)
    layers, groups, heads = 2, 32, 8
    if tiny:
        widths, vae_widths, text, layers, groups, heads = (32, 32, 64, 64), (32, 32, 32, 32), (32, 1, 2, 64), 1, 8, 2
    tokenizer = train_tokenizer(prompt_vocabulary(load_scheme("oem8")), vocab_size=512)
    arch = SDArchitecture(
        text_hidden_size=text[0], text_layers=text[1], text_heads=text[2], text_intermediate_size=text[3]
    )
    torch.manual_seed(0)
    with torch.device(device), quiet_loading():
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=widths,
            layers_per_block=layers,
            cross_attention_dim=text[0],
            attention_head_dim=heads,
            norm_num_groups=groups,
        )
        vae = AutoencoderKL(
            block_out_channels=vae_widths,
            layers_per_block=layers,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            norm_num_groups=groups,
        )
        controlnet = ControlNetModel.from_unet(unet, conditioning_channels=channels)
        text_encoder = build_text_encoder(arch, tokenizer)
    parts = {"unet": unet, "vae": vae, "controlnet": controlnet, "text_encoder": text_encoder.to(device)}
    for part in parts.values():
        part.to(device, dtype).eval()
    return {**parts, "tokenizer": tokenizer, "scheduler": DDIMScheduler(beta_schedule="scaled_linear")}


def count_flops(parts: dict, px: int, steps: int, device: str, dtype: torch.dtype) -> float:
    """FLOPs of one image: one guided step (UNet + ControlNet at batch 2) x steps + one VAE decode."""
    from torch.utils.flop_counter import FlopCounterMode

    side = px // 8
    z = torch.randn(2, 4, side, side, device=device, dtype=dtype)
    text = torch.randn(2, 77, parts["unet"].config.cross_attention_dim, device=device, dtype=dtype)
    control = torch.rand(2, parts["controlnet"].config.conditioning_channels, px, px, device=device, dtype=dtype)
    t = torch.tensor(500, device=device)
    with torch.no_grad():
        with FlopCounterMode(display=False) as step:
            down, mid = parts["controlnet"](
                z, t, encoder_hidden_states=text, controlnet_cond=control, return_dict=False
            )
            parts["unet"](
                z,
                t,
                encoder_hidden_states=text,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            )
        with FlopCounterMode(display=False) as decode:
            parts["vae"].decode(z[:1])
    return step.get_total_flops() * steps + decode.get_total_flops()


def sd15_flops_on_meta(px: int, steps: int) -> float:
    """FLOPs per image of the full SD 1.5 + ControlNet architecture, counted on the meta device (no memory, no
    compute), so the figure is in the JSON on any machine."""
    from synthgen.pipelines.rgb_common import num_condition_channels
    from synthgen.schema import load_scheme

    channels = num_condition_channels(load_scheme("oem8"), "onehot", False)
    return count_flops(sd15_components(False, "meta", torch.float32, channels), px, steps, "meta", torch.float32)


def bench_gpu(args, tiny: bool) -> dict:
    """SD 1.5 + ControlNet architecture, random weights, bf16: plain batch-1 calls vs synthgen's settings."""
    from diffusers import StableDiffusionControlNetPipeline

    from synthgen.pipelines.rgb_common import label_condition, num_condition_channels
    from synthgen.pipelines.rgb_controlnet import RGBControlNetPipeline
    from synthgen.schema import load_scheme

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    px, steps, batch, repeats = (64, 2, 2, 1) if tiny else (args.gpu_size, args.gpu_steps, args.gpu_batch, args.repeats)
    scheme = load_scheme("oem8")
    parts = sd15_components(tiny, device, dtype, num_condition_channels(scheme, "onehot", False))
    flops = count_flops(parts, px, steps, device, dtype)
    plain = StableDiffusionControlNetPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    ours = RGBControlNetPipeline(**parts, scheme="oem8", cond_encoding="onehot", with_height=False)
    for pipe in (plain, ours):
        pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(1, 9, (batch, px // 16, px // 16), generator=g).repeat_interleave(16, 1)
    labels = labels.repeat_interleave(16, 2)
    control = label_condition(labels[:1].to(device), None, scheme, "onehot", False).to(dtype)

    def run_plain():
        plain(
            "aerial image",
            image=control,
            height=px,
            width=px,
            num_inference_steps=steps,
            guidance_scale=7.5,
            output_type="pt",
        )

    def run_ours():
        ours(
            labels,
            num_inference_steps=steps,
            guidance_scale=7.5,
            tile_by_tile=False,
            generator=[torch.Generator(device).manual_seed(i) for i in range(batch)],
        )

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (tiny smoke run of the GPU code path)"
    result = {
        "device": name,
        "dtype": str(dtype),
        "size": px,
        "steps": steps,
        "guidance": 7.5,
        "flops_per_image": flops,
        "peak_tflops": args.peak,
        "limit_img_per_s": args.peak * 1e12 / flops,
    }
    synced_seconds(run_plain, device)  # warm-up
    t = min(synced_seconds(run_plain, device) for _ in range(repeats))
    result["plain"] = {"batch": 1, "seconds": t, "img_per_s": 1 / t}
    compiled = device == "cuda" and not args.no_compile
    for part in ("unet", "controlnet"):
        model = parts[part].to(memory_format=torch.channels_last)
        model.fuse_qkv_projections()
        if compiled:
            setattr(ours, part, torch.compile(model))
    synced_seconds(run_ours, device)  # warm-up (compiles)
    t = min(synced_seconds(run_ours, device) for _ in range(repeats))
    rate = batch / t
    result["synthgen"] = {
        "batch": batch,
        "seconds": t,
        "img_per_s": rate,
        "channels_last": True,
        "fused_qkv": True,
        "compiled": compiled,
    }
    result["achieved_tflops"] = rate * flops / 1e12
    result["share_of_peak"] = result["achieved_tflops"] / args.peak
    result["speedup_vs_plain"] = rate / result["plain"]["img_per_s"]
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``build_parser().parse_args([])``: the defaults, used by bench_engine)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "rgb.json")
    parser.add_argument("--model", default=None, help="ControlNet pipeline folder (default: the embedded default)")
    parser.add_argument("--cond", default="manifests/dubai128.parquet", help="manifest with real label maps")
    parser.add_argument("--n", type=int, default=16, help="tiles rendered by each CPU run")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gpu-size", type=int, default=512)
    add_gpu_arguments(parser, steps=20, batch=16)
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU part")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Run the CPU part, and the GPU part when CUDA is available; write and return the JSON."""
    args = build_parser().parse_args(argv)
    report: dict = {
        "command": command_line(),
        "machine": machine_info(),
    }
    if not args.skip_cpu:
        report["cpu"] = bench_cpu(args)
    report["gpu"] = gpu_section(lambda tiny: bench_gpu(args, tiny), args.smoke_gpu_path_on_cpu)
    report["gpu"]["sd15_controlnet_flops_per_image"] = sd15_flops_on_meta(args.gpu_size, args.gpu_steps)
    report["targets"] = {"gpu_share_of_peak": ">= 0.5", "gpu_speedup_vs_plain": ">= 1.5"}
    write_report(args.out, report)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
