# seg: `make help` lists the targets. Every target that needs Python creates
# .venv and installs into it when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHAPES := data/shapes/ImageSets/Segmentation/train.txt
SCENES := data/scenes/ImageSets/Segmentation/train.txt
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install data train eval compare check-data bench test test-all lint tensorboard clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# uv, from the registry, installs the pinned set several times faster than pip (parallel
# downloads and unpacking); pip is the fallback. uv reads no pip configuration, so the
# extra indexes and wheel folders pip is configured with (local mirrors of the large
# wheels, where a machine has them) are handed to it, every index weighed as pip does.
# --compile-bytecode, as pip does: else the first `make train` compiles torch on import.
EXTRAS := .[dev,slurm,optuna,export,timm]
pip_config = $(shell $(PYTHON) -m pip config get global.$(1) 2>/dev/null)
UV_ENV = UV_INDEX_STRATEGY=unsafe-best-match \
	$(if $(call pip_config,extra-index-url),UV_EXTRA_INDEX_URL="$(call pip_config,extra-index-url)") \
	$(if $(call pip_config,find-links),UV_FIND_LINKS="$(call pip_config,find-links)")

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --quiet -c constraints.txt uv && $(UV_ENV) $(BIN)/uv pip install --quiet \
		--compile-bytecode --python $(BIN)/python -c constraints.txt -e '$(EXTRAS)'; } \
		|| $(BIN)/pip install --quiet -c constraints.txt -e '$(EXTRAS)'
	@touch $@

install: $(STAMP) ## Create .venv and install seg with the tested versions (constraints.txt)

$(SHAPES): | $(STAMP)
	$(BIN)/python scripts/make_shapes.py --root data/shapes

$(SCENES): | $(STAMP)
	$(BIN)/python scripts/make_scenes.py --root data/scenes

data: $(SHAPES) $(SCENES) ## Generate the embedded datasets into data/shapes and data/scenes

train: $(STAMP) $(SHAPES) ## Train with the defaults; override with ARGS="key=value ..." (dataset=scenes: make data first)
	$(BIN)/seg-train $(ARGS)

eval: $(STAMP) ## Evaluate a checkpoint: make eval CKPT=outputs/<date>/<time>/checkpoints/best.pt
	$(BIN)/seg-eval checkpoint=$(CKPT) $(ARGS)

compare: $(STAMP) $(SHAPES) ## The upsampling study, sized for 2 CPU cores (ARGS="compare=quick" for a 5-minute check)
	$(BIN)/seg-compare $(ARGS)

check-data: $(STAMP) ## Read every sample of a dataset and list problems: make check-data ARGS="dataset=voc"
	$(BIN)/seg-data check $(ARGS)

bench: $(STAMP) ## Run the benchmarks side by side; prints a table and writes BENCHMARKS.md
	$(BIN)/python scripts/bench.py all $(ARGS)

# one pytest worker per core (pytest-xdist): TEST_WORKERS=0 runs them in one process
TEST_WORKERS ?= auto

test: $(STAMP) ## Run the fast tests (about 5 minutes on 2 CPU cores)
	$(BIN)/pytest -q -n $(TEST_WORKERS)

test-all: $(STAMP) ## Run every test, the slow ones included
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m ""

lint: $(STAMP) ## Check the code with ruff
	$(BIN)/ruff check .

tensorboard: $(STAMP) ## Open TensorBoard on every run and sweep under outputs/
	@echo "open http://localhost:6006/?smoothing=0#timeseries (smoothing off: each evaluation as measured)"
	$(BIN)/tensorboard --logdir outputs

clean: ## Remove caches and build leftovers (keeps .venv, data/ and outputs/)
	rm -rf .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
