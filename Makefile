# synthgen: two commands do all the set-up on a fresh machine.
#   make dataset   install, then run the main job on the embedded defaults: landcover -> rgb -> climate ->
#                  validate into datasets/laptop/ with report.md (CONFIG=gpu-node on a GPU node)
#   make test      install with dev extras, run the tests (CPU, no network)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SYNTHGEN := $(VENV)/bin/synthgen
DATA ?= ../shared/data/real
REAL := dubai dubai128 dronedeploy potsdam vaihingen loveda naip elevation
PYTEST_ARGS ?=
PROFILE ?= cpu

.PHONY: install test lint dataset ingest $(addprefix ingest-,$(REAL)) weights-landcover bench-landcover validate clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/ruff check synthgen tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check synthgen tests scripts

# One command per real folder; shards in data/<name>/, manifests in manifests/<name>.parquet.
$(addprefix ingest-,$(REAL)): ingest-%: install
	$(SYNTHGEN) ingest --config $* --root $(DATA)/$(subst dubai128,dubai,$(subst naip,naip_timeseries,$*))

ingest: $(addprefix ingest-,$(REAL))

# The main job (issue 7): landcover -> rgb (ControlNet, SPADE) -> climate -> validate from one config into
# datasets/<name>/, ending with report.md / report.json. CONFIG=laptop (embedded weights, CPU, minutes) or gpu-node
# (full-size models, 10,000+ tiles), shipped in synthgen/configs/dataset/, or a .yaml path. Rerun to resume.
# Validation tests on the real Dubai val split when manifests/dubai128.parquet exists (make ingest-dubai128).
CONFIG ?= laptop
dataset: ingest-dubai128
	$(SYNTHGEN) dataset --config $(CONFIG)

# The embedded default land-cover generator, trained on Dubai 128 px tiles in three resumable stages (configs in
# synthgen/configs/train-landcover/): default (autoencoder + epsilon UNet), 1500 more autoencoder steps, then the
# UNet retrained with v-prediction and min-SNR weighting (vpred); ship the last pipeline folder.
weights-landcover: ingest-dubai128
	$(SYNTHGEN) train landcover --config default --resume latest
	$(SYNTHGEN) train landcover --config default --out runs/landcover-ae --set init_pipeline=runs/landcover/pipeline \
	  --set ae_steps=1500 --set unet_steps=0 --set seed=2 --resume latest
	$(SYNTHGEN) train landcover --config vpred --resume latest
	rm -rf synthgen/weights/landcover
	cp -r runs/landcover-vpred/pipeline synthgen/weights/landcover

# The embedded default ControlNet (label -> RGB): a tiny SD base (tokenizer, VAE, UNet + CLIP text encoder) on the
# Dubai 128 px RGB tiles, then a ControlNet beside it (base frozen); ship the RGBControlNetPipeline folder.
.PHONY: weights-rgb-controlnet weights-rgb
weights-rgb-controlnet: ingest-dubai128
	$(SYNTHGEN) train sd-base --config default --resume latest
	$(SYNTHGEN) train controlnet --config default --base runs/sd-base/pipeline --resume latest
	rm -rf synthgen/weights/rgb_controlnet
	cp -r runs/controlnet/pipeline synthgen/weights/rgb_controlnet

# Both embedded label -> RGB defaults.
weights-rgb: weights-rgb-controlnet weights-rgb-spade

# The embedded default SPADE (label -> RGB GAN) on the Dubai 128 px tiles; ship the RGBSpadePipeline folder.
.PHONY: weights-rgb-spade weights-label-filter
weights-rgb-spade: ingest-dubai128
	$(SYNTHGEN) train spade --config default --resume latest
	rm -rf synthgen/weights/rgb_spade
	cp -r runs/spade/pipeline synthgen/weights/rgb_spade

# The embedded label-filter model (synthgen filter, the dataset's filter stage): the fidelity profile's UNet trained
# on the real Dubai train split, seed 0 (about 10 min on one core; the same model as `make fidelity`'s real seed 0).
LABEL_FILTER_RUN = runs/label-filter
weights-label-filter: ingest-dubai128
	$(SYNTHGEN) validate --profile fidelity --train real=manifests/dubai128.parquet:train \
	  --test real=manifests/dubai128.parquet:val --seeds 0 --set real_fraction= --set mix_sets= --out $(LABEL_FILTER_RUN)
	rm -rf synthgen/weights/label_filter
	cp -r "$$($(PY) -c 'import json; print(json.load(open("$(LABEL_FILTER_RUN)/report.json"))["runs"][0]["training"]["folder"])')/model" \
	  synthgen/weights/label_filter

# The ceiling of the land-cover generator's layouts: real val label maps through its autoencoder and back, compared
# by the layout metrics of synthgen evaluate layout.
.PHONY: bench-layout-ae bench-layout-sampling
bench-layout-ae: ingest-dubai128
	$(PY) scripts/layout_roundtrip.py --out bench/layout_roundtrip.json

# Denoising error by noise level and layout metrics per sampler setting of the embedded land-cover model.
bench-layout-sampling: ingest-dubai128
	$(PY) scripts/layout_sampling.py --out bench/layout_sampling.json

# Batched synthgen generation vs a plain diffusers loop (batch 1, a write per tile): tiles/s, share of wall time
# outside model forwards, peak RSS at n=100 and n=2000. Run it on an idle machine.
bench-landcover: $(VENV)/.installed
	$(PY) scripts/bench_landcover.py --out bench/landcover.json

# Label -> RGB by ControlNet: synthgen rgb vs a plain StableDiffusionControlNetPipeline loop (batch 1, a write per
# tile) on CPU with the default; with CUDA, also the SD 1.5 + ControlNet architecture at 512 px (img/s, TFLOP/s).
.PHONY: bench-rgb eval-rgb
bench-rgb: ingest-dubai128
	$(PY) scripts/bench_rgb.py --out bench/rgb.json

# Fidelity of both embedded label -> RGB defaults on the real Dubai val split (SSIM, PSNR, per-class colour and
# texture; FID/KID only with local Inception weights).
eval-rgb: ingest-dubai128
	for m in spade controlnet; do \
	  $(SYNTHGEN) evaluate rgb --real manifests/dubai128.parquet --split val --method $$m \
	    --seg-model synthgen/weights/label_filter --out bench/rgb_fidelity_$$m.json; \
	done

# The ceiling of any ControlNet on the embedded base: real val tiles through its VAE and back (PSNR, SSIM, colour
# saturation, label recovery by the embedded label-filter UNet).
.PHONY: bench-vae
bench-vae: ingest-dubai128
	$(PY) scripts/vae_roundtrip.py --out bench/vae_roundtrip.json

# The published cross-test (issue 6): the four training sets (real Dubai RGB + labels; ControlNet RGB and SPADE RGB
# on the real labels; ControlNet RGB on synthetic labels) built from the embedded defaults, UNet / UNet++ /
# DeepLabV3+ trained on each and tested on every held-out set. Sets whose generator or weights do not exist yet are
# listed as missing in runs/validate/report.md. PROFILE=cpu: minutes on 2 cores; PROFILE=gpu for real runs.
validate: ingest-dubai128
	$(SYNTHGEN) validate --paper --profile $(PROFILE)

# The data-ranking study (issue 14): UNets trained to a plateau of their validation loss (profile `fidelity`: one
# CPU core each, about 10 min) on each of the five sets of the published study (real; SPADE and ControlNet RGB on the
# real labels and on generated labels), on 10 %, 25 %, 100 % of the real train tiles alone and with each
# generated-label set added, and on the label filter's kept tiles against a same-size random subset; 3 seeds, scored
# on the real Dubai val split. Hours on 2 cores: seed 0 first (it builds the sets), then seeds 1 and 2 side by side.
# Resumes where it stopped: finished models are reused, a killed one goes on from its last checkpoint.
# FAST=1: seed 0 only (bench/fidelity_fast.json, docs/fidelity_fast.png).
.PHONY: fidelity
FIDELITY = $(SYNTHGEN) validate --paper --profile fidelity
FIDELITY_OUT = fidelity$(if $(FAST),_fast,)
fidelity: ingest-dubai128
	$(FIDELITY) --seeds 0
ifndef FAST
	$(FIDELITY) --seeds 1 > runs/fidelity-seed1.log 2>&1 & pid=$$!; \
	$(FIDELITY) --seeds 2; rc=$$?; wait $$pid && test $$rc = 0 || { echo "see runs/fidelity-seed1.log" >&2; exit 1; }
	$(FIDELITY)
endif
	$(PY) scripts/fidelity.py runs/fidelity/report.json --out bench/$(FIDELITY_OUT).json --plot docs/$(FIDELITY_OUT).png

# The embedded default climate models (issue 5): the SD3 climate model on the Dubai, NAIP and LoveDA tiles, then the
# time-series ControlNet on the NAIP series, each sized for about 30 min on 2 CPU cores; ship both folders.
.PHONY: weights-climate bench-climate
weights-climate: ingest-dubai128 ingest-naip ingest-loveda
	$(SYNTHGEN) train sd3 --config default --resume latest
	rm -rf synthgen/weights/climate
	cp -r runs/climate/pipeline synthgen/weights/climate
	$(SYNTHGEN) train sd3-controlnet --config default --resume latest
	rm -rf synthgen/weights/climate_controlnet
	cp -r runs/climate-controlnet/controlnet synthgen/weights/climate_controlnet

# SD3 climate generation: synthgen's batched pipeline vs plain StableDiffusion3Pipeline calls at batch 1 (CPU); with
# CUDA also the SD3-medium architecture at 512 and 1024 px (img/s, TFLOP/s and share of 790). JSON in bench/.
bench-climate: $(VENV)/.installed
	$(PY) scripts/bench_climate.py --out bench/climate.json

# Prompt ablation of the climate generator (issue 14): one field at a time (month, cloud cover, temperature,
# precipitation) over the 12 NAIP sites at fixed seeds; greenness, brightness and the distance to the unchanged
# prompt's image against the seed-to-seed noise; a field that moves nothing is reported as such. About 2 min on CPU.
.PHONY: climate-ablation
climate-ablation: $(VENV)/.installed
	$(PY) scripts/climate_prompt_ablation.py --out bench/climate_ablation.json

# Crash safety (issue 7): a 200-tile land-cover job (tiny model built on the fly) killed with SIGKILL at 20 seeded
# random moments and resumed each time; tiles, duplicate keys, hash mismatches and byte-identity with an
# uninterrupted run in bench/crash.json; then the same with 2 writer processes per run at 128 px (shared-memory
# hand-over; also: no writer process of a killed run left running) in bench/crash_writers.json. Exits non-zero if
# any check fails.
.PHONY: bench-crash
bench-crash: $(VENV)/.installed
	$(PY) scripts/bench_crash.py --out bench/crash.json
	$(PY) scripts/bench_crash.py --writers 2 --size 128 --n 64 --tiles-per-shard 4 --out bench/crash_writers.json

# The engine (issue 7): every stage (landcover, rgb SPADE and ControlNet, climate) through its command with the
# embedded defaults: tiles/s and share of wall time outside model forwards; the tile writer at 512 px rgb + label +
# height (tiles/s/core); peak RSS at n and 4 n; one process vs two (--shard-index/--num-shards); with CUDA the share
# of 790 TFLOP/s reached. Targets and pass/fail in bench/engine.json. About 17 minutes on 2 idle cores: run it on an
# idle machine. BENCH_ARGS="--quick --out /tmp/engine.json" for a smoke run of every part.
.PHONY: bench
BENCH_ARGS ?=
bench: ingest-dubai128
	$(PY) scripts/bench_engine.py --out bench/engine.json $(BENCH_ARGS)

clean:
	rm -rf data manifests/*.parquet manifests/*.config.yaml manifests/*.png manifests/*.info.txt

# The README's contact sheet (docs/contact_sheet.png), cropped from the committed preview sheets in docs/ (land cover,
# SPADE and ControlNet RGB of the same tiles, climate); no tile is generated.
.PHONY: docs-figure
docs-figure: $(VENV)/.installed
	$(PY) scripts/readme_figure.py --out docs/contact_sheet.png
