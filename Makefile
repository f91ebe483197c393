# Every target is a thin wrapper around the `zoo` CLI. Targets that need the Python environment
# depend on $(ENV), which creates .venv and installs the pinned dependencies on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ZOO := $(BIN)/zoo
# GPU=1 installs tensorflow[and-cuda] in place of tensorflow-cpu.
TF_EXTRA := $(if $(GPU),gpu,cpu)
ENV := $(VENV)/.installed-$(TF_EXTRA)

RECIPE ?= mnist1d/cnn_paper
ARGS ?=
# Training processes for tune, ablate and zoo; empty: one per core (--workers).
WORKERS ?=
WORKERS_ARG = $(if $(WORKERS),--workers $(WORKERS))
MODEL ?= mnist1d/cnn_paper
RECIPES := $(patsubst recipes/%.yaml,%,$(filter-out recipes/base.yaml,$(wildcard recipes/*/*.yaml)))

.DEFAULT_GOAL := help
.PHONY: help setup lock train ablate compare zoo register reproduce predict gradcheck sanity lr-find tune tune-distributed server postgres postgres-stop augment-preview data test test-processes test-scale test-full lint docs ui bench clean list $(RECIPES)

help: ## list the targets and the recipes
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  make <recipe>        train one recipe, e.g. make mnist1d/cnn_paper; recipes:"
	@printf '    %s\n' $(RECIPES)

setup: $(ENV) ## create .venv with the pinned dependencies (GPU=1 for the CUDA build of TensorFlow)

$(ENV): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint requirements.lock --editable '.[$(TF_EXTRA),dev]'
	rm -f $(VENV)/.installed-*
	touch $@

lock: $(ENV) ## rewrite requirements.lock from the current environment
	{ sed -n '1,2p' requirements.lock; $(BIN)/pip freeze --exclude-editable | grep -viE '^(tensorflow-cpu|tensorflow_cpu|tensorflow|zoo)=='; } > requirements.lock.new && mv requirements.lock.new requirements.lock

train: $(ENV) ## train RECIPE (default mnist1d/cnn_paper) with overrides ARGS="key=value ..."
	$(ZOO) train $(RECIPE) $(ARGS)

$(RECIPES): $(ENV)
	$(ZOO) train $@ $(ARGS)

tune: $(ENV) ## tune RECIPE's tune.space (resumes a saved search; ARGS="--overwrite", "--refine")
	$(ZOO) tune $(RECIPE) $(ARGS)

tune-distributed: $(ENV) ## tune with Keras Tuner's chief and WORKERS workers (default: one per core)
	$(ZOO) tune $(RECIPE) $(WORKERS_ARG) $(ARGS)

server: $(ENV) ## MLflow tracking server on 127.0.0.1:5000 (BACKEND=postgresql://... for PostgreSQL)
	$(ZOO) server $(if $(BACKEND),--backend '$(BACKEND)')

postgres: $(ENV) ## start a local PostgreSQL (build/postgres, 127.0.0.1:5433) and print its URI
	$(ZOO) postgres start

postgres-stop: $(ENV) ## stop the local PostgreSQL
	$(ZOO) postgres stop

ablate: $(ENV) ## grid of switches over seeds: ARGS="--axis model.dropout=0,0.3 --seeds 3" (WORKERS=N at once)
	$(ZOO) ablate $(RECIPE) $(WORKERS_ARG) $(ARGS)

compare: $(ENV) ## side-by-side table and plots: ARGS="--parent RUN_ID" (or --experiment NAME)
	$(ZOO) compare $(ARGS)

zoo: $(ENV) ## train every zoo entry over 3 seeds, ship one model each to zoo/pretrained/ and register it (~40 min on 2 cores; WORKERS=N)
	$(ZOO) build-zoo $(WORKERS_ARG) $(ARGS)

register: $(ENV) ## register the shipped models in the MLflow Model Registry (alias "shipped")
	$(ZOO) register $(ARGS)

reproduce: $(ENV) ## retrain pretrained MODEL (default mnist1d/cnn_paper) and compare with the shipped one
	$(ZOO) reproduce $(MODEL) $(ARGS)

predict: $(ENV) ## classes and probabilities of pretrained MODEL for FILE (.npy or image)
	$(ZOO) predict $(MODEL) $(FILE) $(ARGS)

gradcheck: $(ENV) ## compare analytic and numeric gradients of RECIPE's model (float64)
	$(ZOO) gradcheck $(RECIPE) $(ARGS)

sanity: $(ENV) ## initial loss, L2 effect and overfitting a tiny subset, for RECIPE
	$(ZOO) sanity $(RECIPE) $(ARGS)

lr-find: $(ENV) ## learning-rate range test of RECIPE: loss-vs-rate PNG and a suggested rate
	$(ZOO) lr-find $(RECIPE) $(ARGS)

augment-preview: $(ENV) ## write a PNG grid of RECIPE's augmented training samples
	$(ZOO) augment-preview $(RECIPE) $(ARGS)

data: $(ENV) ## find Fashion-MNIST's files, or install Debian's dataset-fashion-mnist (as root)
	$(ZOO) data

list: $(ENV) ## list models, datasets, recipes and pretrained models
	$(ZOO) list all

ui: $(ENV) ## serve the MLflow UI on http://127.0.0.1:5000 over the zoo's store
	$(ZOO) ui

bench: $(ENV) ## the speed contract as ratios measured in one run, each with its target (~6 min)
	$(ZOO) bench $(ARGS)

test: $(ENV) ## run the fast test suite (about 3 minutes on 2 cores)
	$(BIN)/pytest -q -m "not slow and not scale and not processes" $(ARGS)

test-processes: $(ENV) ## the tests with several processes, signals or a PostgreSQL server (~3 min)
	$(BIN)/pytest -q -m "processes and not slow" $(ARGS)

test-scale: $(ENV) ## PostgreSQL, a tracking server, searches, grids and a zoo build with local and joined workers (~4 min)
	$(BIN)/pytest -q -s -m scale tests/test_scale.py $(ARGS)

test-full: $(ENV) ## run every test, slow ones included
	$(BIN)/pytest -q $(ARGS)

lint: $(ENV) ## ruff over the package and the tests
	$(BIN)/ruff check zoo tests

docs: $(ENV) ## regenerate docs/recipe-keys.md from the recipe schema and the model builders
	$(BIN)/python -m zoo.recipe_keys > docs/recipe-keys.md.new && mv docs/recipe-keys.md.new docs/recipe-keys.md

clean: ## remove the environment, caches, trained models, saved searches and the local MLflow store
	rm -rf $(VENV) models build tuning *.egg-info .pytest_cache .ruff_cache
	find mlruns -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
