# synthgen: two commands do all the set-up on a fresh machine.
#   make dataset   install, then run the main job on the embedded defaults (for now: ingest the real data,
#                  summarise and preview it)
#   make test      install with dev extras, run the tests (CPU, no network)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SYNTHGEN := $(VENV)/bin/synthgen
DATA ?= ../shared/data/real
REAL := dubai dubai128 dronedeploy potsdam vaihingen loveda naip elevation
PYTEST_ARGS ?=

.PHONY: install test lint dataset ingest $(addprefix ingest-,$(REAL)) weights-landcover bench-landcover clean

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

dataset: ingest
	@for m in $(REAL); do $(SYNTHGEN) info manifests/$$m.parquet > manifests/$$m.info.txt; \
	  $(SYNTHGEN) preview manifests/$$m.parquet --n 12 >/dev/null; done
	@echo "dataset: shards in data/, manifests, summaries (*.info.txt) and previews (*.preview.png) in manifests/"

# The embedded default land-cover generator: train on Dubai 128 px tiles, ship the pipeline folder.
weights-landcover: ingest-dubai128
	$(SYNTHGEN) train landcover --config default --resume latest
	rm -rf synthgen/weights/landcover
	cp -r runs/landcover/pipeline synthgen/weights/landcover

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

# Batched synthgen generation vs a plain diffusers loop (batch 1, a write per tile): tiles/s, share of wall time
# outside model forwards, peak RSS at n=100 and n=2000. Run it on an idle machine.
bench-landcover: $(VENV)/.installed
	$(PY) scripts/bench_landcover.py --out bench/landcover.json

clean:
	rm -rf data manifests/*.parquet manifests/*.config.yaml manifests/*.png manifests/*.info.txt
