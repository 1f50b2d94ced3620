"""Benchmark SD3 climate generation; writes JSON.

CPU part (always): the default climate model (``synthgen/weights/climate``; when it is not trained yet, the same
architecture with untrained weights from ``synthgen/configs/train-sd3/default.yaml`` — speed depends only on the
architecture) on the sites of ``examples/sites_naip.csv``:
- synthgen: ``ClimatePipeline`` (all sites in one batch, per-site generators, no T5 tokens for a model without T5);
- plain: what a diffusers user writes: ``StableDiffusion3Pipeline.__call__(prompt)`` per site at batch 1, defaults.

GPU part (only when CUDA is available): the SD3-medium architecture (24 layers, hidden 1536; random weights) with
SD3's VAE, bf16, 28 steps with classifier-free guidance, at 512 and 1024 px, prompt embeddings given (random, the
shapes of CLIP-L/G + T5: 77 + 256 tokens of 4096), so the text encoders are not part of the timing:
- plain: ``StableDiffusion3Pipeline.__call__`` at batch 1 in bf16 (diffusers' defaults: SDPA attention);
- synthgen settings: batch ``--gpu-batch``, fused QKV projections, ``torch.compile`` of the transformer.
It reports img/s, the FLOPs per image (analytic count, below), achieved TFLOP/s and their share of ``--peak``
(790 TFLOP/s dense bf16), and the speed-up over the plain call.

FLOPs per image: for each of the 24 joint blocks, linear layers 2 x 12 d^2 per token (q, k, v, out and a 4x MLP,
both streams) and attention 4 T^2 d (QK^T and AV), T = image patches + 333 text tokens, d = 1536; times 2 for
guidance and 28 steps; plus the VAE decoder's convolutions, counted by hooks on one decode. The issue's figure for
1024 px is 514 TFLOP per image (limit 1.54 img/s at 790 TFLOP/s).

    python scripts/bench_climate.py --out bench/climate.json [--steps 20] [--gpu-batch 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from bench_common import add_gpu_arguments, command_line, gpu_section, machine_info, synced_seconds, write_report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu_model(sites_path: Path):
    """The default model folder, or an untrained pipeline of the default architecture (its tokenizer trained on
    the sites' prompts, as a training run would), and what it is."""
    from synthgen.climate.prompts import build_prompts, load_prompt_spec, vocabulary_texts
    from synthgen.climate.sites import read_sites
    from synthgen.config import load_config
    from synthgen.jobs.climate import DEFAULT_MODEL
    from synthgen.models.sd3_components import build_sd3_pipeline
    from synthgen.models.text_tokenizer import train_tokenizer
    from synthgen.pipelines.climate import ClimateModelInfo, ClimatePipeline
    from synthgen.training.sd3_config import SD3TrainConfig

    if (DEFAULT_MODEL / "model_index.json").is_file():
        return ClimatePipeline.from_pretrained(DEFAULT_MODEL, device="cpu"), f"trained default ({DEFAULT_MODEL})"
    config = load_config(SD3TrainConfig, "default", "train-sd3")
    spec = load_prompt_spec(config.prompts)
    texts = [build_prompts(s, spec).joined(spec.join) for s in read_sites(sites_path)]
    tokenizer = train_tokenizer(texts + vocabulary_texts(spec), vocab_size=config.vocab_size)
    sd3 = build_sd3_pipeline(config.architecture(), tokenizer, seed=0)
    info = ClimateModelInfo(prompts=spec.to_dict(), max_sequence_length=0, size=config.size)
    return ClimatePipeline(sd3, spec, info, with_t5=False), "untrained, architecture of train-sd3/default.yaml"


def bench_cpu(sites_path: Path, steps: int, guidance: float, repeats: int) -> dict:
    """synthgen's batched ClimatePipeline vs plain per-site StableDiffusion3Pipeline calls, on CPU."""
    from synthgen.climate.prompts import sd3_prompt_kwargs
    from synthgen.climate.sites import read_sites

    pipe, what = _cpu_model(sites_path)
    sites = read_sites(sites_path)
    size = pipe.info.size
    prompts = sd3_prompt_kwargs(pipe.prompts_for(sites), pipe.spec, pipe.with_t5)["prompt"]

    def ours(n_steps: int = steps):
        gens = [torch.Generator().manual_seed(i) for i in range(len(sites))]
        pipe(sites, size=size, num_inference_steps=n_steps, guidance_scale=guidance, generator=gens)

    def plain(n_steps: int = steps):
        for i, text in enumerate(prompts):
            pipe.sd3(text, height=size, width=size, num_inference_steps=n_steps, guidance_scale=guidance,
                     generator=torch.Generator().manual_seed(i))  # fmt: skip

    result = {"model": what, "size": size, "steps": steps, "guidance": guidance, "images": len(sites)}
    for name, fn in (("synthgen", ours), ("plain", plain)):
        fn(1)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        best = min(times)
        result[name] = {"seconds": best, "img_per_s": len(sites) / best, "runs": times}
    result["speedup"] = result["synthgen"]["img_per_s"] / result["plain"]["img_per_s"]
    return result


def step_times(repeats: int = 3) -> dict:
    """Single-thread CPU seconds (``time.process_time``) per training step of the default configs' models, with
    the real classes and random data: what the default configs' step counts are sized from."""
    from synthgen.config import load_config
    from synthgen.models.sd3_components import build_controlnet, build_transformer, build_vae
    from synthgen.training.sd3_config import SD3ControlNetTrainConfig, SD3TrainConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = load_config(SD3TrainConfig, "default", "train-sd3")
    cn_config = load_config(SD3ControlNetTrainConfig, "default", "train-sd3-controlnet")
    arch = config.architecture()
    torch.manual_seed(0)
    vae, transformer = build_vae(arch), build_transformer(arch)
    controlnet = build_controlnet(transformer, cn_config.controlnet_layers)
    side, b = arch.size // arch.vae_factor, config.batch_size
    z = torch.randn(b, arch.latent_channels, side, side)
    text = {
        "encoder_hidden_states": torch.randn(b, arch.text_max_length, 2 * arch.text_hidden_size),
        "pooled_projections": torch.randn(b, 2 * arch.text_projection_dim),
        "timestep": torch.rand(b) * 1000,
    }
    x = torch.randn(config.vae_batch_size, 3, arch.size, arch.size)

    def vae_step():
        post = vae.encode(x).latent_dist
        return (vae.decode(post.sample()).sample - x).abs().mean()

    def transformer_step():
        return transformer(hidden_states=z, return_dict=False, **text)[0].square().mean()

    def controlnet_step():
        blocks = controlnet(hidden_states=z, controlnet_cond=z, return_dict=False, **text)[0]
        out = transformer(hidden_states=z, block_controlnet_hidden_states=blocks, return_dict=False, **text)[0]
        return out.square().mean()

    out = {}
    for name, fn, model, batch, steps in (
        ("vae", vae_step, vae, config.vae_batch_size, config.vae_steps),
        ("transformer", transformer_step, transformer, b, config.transformer_steps),
        ("controlnet", controlnet_step, controlnet, cn_config.batch_size, cn_config.steps),
    ):
        opt = torch.optim.AdamW(model.parameters())
        times = []
        for i in range(repeats + 1):
            start = time.process_time()
            fn().backward()
            opt.step()
            opt.zero_grad()
            if i:
                times.append(time.process_time() - start)
        per = sorted(times)[len(times) // 2]
        out[name] = {"params": model.num_parameters(), "batch": batch, "cpu_s_per_step": per, "steps": steps,
                     "cpu_minutes_for_steps": per * steps / 60}  # fmt: skip
    torch.set_num_threads(threads)
    return out


def transformer_flops(px: int, steps: int = 28, cfg: bool = True, cfg_medium: dict | None = None) -> float:
    """Analytic FLOPs of the SD3 transformer over a whole sampling run for one image (see module docstring)."""
    from synthgen.models.sd3_components import SD3_MEDIUM

    c = cfg_medium or SD3_MEDIUM
    d = c["num_attention_heads"] * c["attention_head_dim"]
    tokens = (px // 8 // c["patch_size"]) ** 2 + 77 + 256
    per_layer = 2 * 12 * d * d * tokens + 4 * tokens * tokens * d
    return per_layer * c["num_layers"] * steps * (2 if cfg else 1)


def _vae_decode_flops(vae, px: int, device, dtype) -> float:
    """FLOPs of one VAE decode at ``px``, from the shapes of its convolutions (hooks)."""
    total = {"flops": 0.0}

    def hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        total["flops"] += 2.0 * output.numel() * module.in_channels * k / module.groups

    handles = [m.register_forward_hook(hook) for m in vae.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        vae.decode(torch.zeros(1, 16, px // 8, px // 8, device=device, dtype=dtype))
    for h in handles:
        h.remove()
    return total["flops"]


def bench_gpu(sizes: list[int], steps: int, batch: int, peak: float, repeats: int, compile_: bool, tiny: bool) -> dict:
    """SD3-medium architecture, random weights, bf16: plain batch-1 call vs synthgen's settings (see docstring)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    from synthgen.models.sd3_components import SD3_MEDIUM, SD3_VAE, quiet

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    arch = dict(SD3_MEDIUM)
    vae_cfg = dict(SD3_VAE)
    if tiny:  # a smoke run of this code path on CPU
        arch.update(num_layers=2, num_attention_heads=2, attention_head_dim=8, joint_attention_dim=32,
                    caption_projection_dim=16, pooled_projection_dim=16)  # fmt: skip
        vae_cfg.update(block_out_channels=[32, 32, 32, 32], layers_per_block=1)
    torch.manual_seed(0)
    with torch.device(device), quiet():
        transformer = SD3Transformer2DModel(**arch).to(dtype)
        vae = AutoencoderKL(**vae_cfg).to(dtype)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    text_tokens = 77 + 256

    def embeds(n: int) -> dict:
        g = torch.Generator(device).manual_seed(0)
        e = torch.randn(n, text_tokens, arch["joint_attention_dim"], generator=g, device=device, dtype=dtype)
        p = torch.randn(n, arch["pooled_projection_dim"], generator=g, device=device, dtype=dtype)
        return {"prompt_embeds": e, "negative_prompt_embeds": torch.zeros_like(e), "pooled_prompt_embeds": p,
                "negative_pooled_prompt_embeds": torch.zeros_like(p)}  # fmt: skip

    def run(n: int, px: int) -> float:
        return synced_seconds(
            lambda: pipe(**embeds(n), height=px, width=px, num_inference_steps=steps, guidance_scale=7.0,
                         output_type="pt"),
            device,
        )  # fmt: skip

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (tiny smoke run)"
    result: dict = {"device": name, "dtype": str(dtype), "steps": steps, "guidance": True, "peak_tflops": peak}
    result["sizes"] = {}
    for px in sizes:
        flops = transformer_flops(px, steps, True, arch) + _vae_decode_flops(vae, px, device, dtype)
        entry: dict = {"flops_per_image": flops, "limit_img_per_s": peak * 1e12 / flops}
        run(1, px)  # warm-up, plain
        t = min(run(1, px) for _ in range(repeats))
        entry["plain"] = {"batch": 1, "seconds": t, "img_per_s": 1 / t}
        result["sizes"][str(px)] = entry
    transformer.fuse_qkv_projections()
    if compile_:
        pipe.transformer = torch.compile(transformer)
    for px in sizes:
        entry = result["sizes"][str(px)]
        n = batch if px <= 512 else max(1, batch // 2)
        run(n, px)  # warm-up (compiles)
        t = min(run(n, px) for _ in range(repeats))
        rate = n / t
        entry["synthgen"] = {"batch": n, "seconds": t, "img_per_s": rate, "fused_qkv": True, "compiled": compile_}
        entry["achieved_tflops"] = rate * entry["flops_per_image"] / 1e12
        entry["share_of_peak"] = entry["achieved_tflops"] / peak
        entry["speedup_vs_plain"] = rate / entry["plain"]["img_per_s"]
    return result


def gpu_run(args: argparse.Namespace, tiny: bool) -> dict:
    """``bench_gpu`` with the command's settings, or at smoke size (``tiny``, on CPU)."""
    return bench_gpu(
        [64] if tiny else args.gpu_sizes, 2 if tiny else args.gpu_steps, 2 if tiny else args.gpu_batch,
        args.peak, 1 if tiny else args.repeats, not args.no_compile and not tiny, tiny,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``build_parser().parse_args([])``: the defaults, used by bench_engine)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "climate.json")
    parser.add_argument("--sites", type=Path, default=ROOT / "examples" / "sites_naip.csv")
    parser.add_argument("--steps", type=int, default=20, help="CPU sampling steps")
    parser.add_argument("--guidance", type=float, default=4.5)
    parser.add_argument("--gpu-sizes", type=int, nargs="+", default=[512, 1024])
    add_gpu_arguments(parser, steps=28, batch=8)
    parser.add_argument("--step-times-only", action="store_true", help="only the training step times (sizing)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Run the CPU part, and the GPU part when CUDA is available; write and return the JSON."""
    args = build_parser().parse_args(argv)
    report = {"command": command_line(), "machine": {**machine_info(), "cpu_threads": torch.get_num_threads()}}
    report["training_step_times"] = step_times()
    if args.step_times_only:
        print(json.dumps(report, indent=1))
        return report
    report["cpu"] = bench_cpu(args.sites, args.steps, args.guidance, args.repeats)
    report["gpu"] = gpu_section(lambda tiny: gpu_run(args, tiny), args.smoke_gpu_path_on_cpu)
    write_report(args.out, report)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
