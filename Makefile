# raylife: thin wrappers over python -m / pytest. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
RAYLIFE := $(VENV)/bin/raylife
INSTALLED := $(VENV)/.installed
MODELS ?= all
SAMPLES ?= 4
SEEDS ?= 0,1,2

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration test-manifests quality selection-study report-cost bench bench-quick serve loadtest serve-configs kuberay-manifests rehearse kuberay-operator-install kuberay-operator-upgrade kuberay-operator-uninstall image-constraints image image-push lint format clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-18s %s\n", $$1, $$2}'

# torch/torchvision are installed first and by exact version: pip takes both from this machine's
# disk; any resolver left to choose would download a different multi-GB build.
$(INSTALLED): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(INSTALLED) ## Create .venv and install raylife (first use only)

run: $(INSTALLED) ## Main job: sweep -> promote -> evaluate -> predict for all four models (MODELS=, SAMPLES=)
	$(RAYLIFE) run --models $(MODELS) --samples $(SAMPLES)

test: $(INSTALLED) ## Full test suite: unit tests, then integration tests on one local Ray cluster
	$(PY) -m pytest

test-unit: $(INSTALLED) ## Unit tests only (no Ray cluster, seconds)
	$(PY) -m pytest tests/unit

test-integration: $(INSTALLED) ## Integration tests only (shared local Ray cluster)
	$(PY) -m pytest tests/integration

quality: $(INSTALLED) ## Registry defaults x seeds through Ray Train -> reports/quality.json (SEEDS=)
	$(RAYLIFE) quality --models $(MODELS) --seeds $(SEEDS)

selection-study: $(INSTALLED) ## LR schedule x best/last epoch by CV off the quality test rows -> reports/selection_study.json (~8 min)
	$(RAYLIFE) selection-study --models ionosphere,iris,boston --seeds $(SEEDS)
	$(RAYLIFE) selection-study --models mnist --seeds $(SEEDS) --folds 5 --repeats 2

report-cost: $(INSTALLED) ## Cost of one ray.train.report + checkpoint: every-epoch vs sparse reports, alternated
	$(PY) -m jobs.report_cost --model iris

bench: $(INSTALLED) ## raylife vs plain PyTorch / bare uvicorn, interleaved -> reports/bench.{json,md} (~20 min)
	$(RAYLIFE) bench

bench-quick: $(INSTALLED) ## The benchmark at smoke-test sizes (CI runs it; ~2 min, no lifecycle section)
	$(RAYLIFE) bench --quick

PORT ?= 8000
MODEL ?= iris
CONCURRENCY ?= 16
REQUESTS ?= 2000

serve: $(INSTALLED) ## Serve the promoted models with Ray Serve on 127.0.0.1:$(PORT) (Ctrl-C stops)
	$(RAYLIFE) serve --port $(PORT)

loadtest: $(INSTALLED) ## Serve vs bare uvicorn on the same artifact, alternated (MODEL=, CONCURRENCY=, REQUESTS=)
	$(RAYLIFE) loadtest --model $(MODEL) --concurrency $(CONCURRENCY) --requests $(REQUESTS) --baseline

serve-configs: $(INSTALLED) ## Render serve_apps/config base + overlays -> serve_apps/rendered/
	$(RAYLIFE) serve-configs

test-manifests: $(INSTALLED) ## KubeRay manifests against the CRDs and Kubernetes schemas (no cluster)
	$(PY) -m pytest tests/manifests

# ---- KubeRay on EKS (docs/deploy-eks.md) ----------------------------------------------------------
KUBERAY_VERSION := 1.7.0
NAMESPACE ?= raylife
REGISTRY ?= 123456789012.dkr.ecr.us-west-2.amazonaws.com/raylife
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
RAY_VERSION := $(shell sed -n 's/.*"ray\[train,tune,serve\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
TAG ?= $(VERSION)-ray$(RAY_VERSION)

kuberay-manifests: $(INSTALLED) serve-configs ## Regenerate kuberay/*.yaml (RayJobs, RayService with the eks Serve config, ...) (REGISTRY=)
	RAYLIFE_REGISTRY=$(REGISTRY) $(PY) -m raylife.kuberay kuberay

rehearse: $(INSTALLED) ## Run kuberay/'s CPU RayJobs and the local Serve config on a local 2-node Ray cluster
	$(PY) -m raylife.rehearsal

kuberay-operator-install: ## helm install the KubeRay operator $(KUBERAY_VERSION) (kuberay/helm/)
	helm repo add kuberay https://ray-project.github.io/kuberay-helm/ && helm repo update kuberay
	helm install kuberay-operator kuberay/kuberay-operator --version $(KUBERAY_VERSION) \
	  --namespace kuberay-system --create-namespace -f kuberay/helm/kuberay-operator.values.yaml

kuberay-operator-upgrade: ## helm upgrade the KubeRay operator with kuberay/helm/ values
	helm upgrade kuberay-operator kuberay/kuberay-operator --version $(KUBERAY_VERSION) \
	  --namespace kuberay-system -f kuberay/helm/kuberay-operator.values.yaml

kuberay-operator-uninstall: ## helm uninstall the KubeRay operator
	helm uninstall kuberay-operator --namespace kuberay-system

image-constraints: $(INSTALLED) ## Pin the images' dependencies to this tested environment (kuberay/docker/constraints.txt)
	( echo "# Exact versions for the images (pip -c): the tested environment of this checkout, without torch"; \
	  echo "# and its CUDA libraries (each Dockerfile installs those from the matching PyTorch index)."; \
	  echo "# Regenerate with \`make image-constraints\` after changing dependencies."; \
	  $(PY) -m pip freeze --exclude-editable | grep -viE '^(-e|raylife|torch|torchvision|triton|nvidia-|cuda-)' ) \
	  > kuberay/docker/constraints.txt

image: ## docker build the CPU and GPU images (REGISTRY=, TAG=)
	docker build -f kuberay/docker/Dockerfile.cpu -t $(REGISTRY):$(TAG)-cpu .
	docker build -f kuberay/docker/Dockerfile.gpu -t $(REGISTRY):$(TAG)-gpu .

image-push: ## docker push both images to REGISTRY (log in to ECR first, see docs/deploy-eks.md)
	docker push $(REGISTRY):$(TAG)-cpu
	docker push $(REGISTRY):$(TAG)-gpu

lint: $(INSTALLED) ## ruff + mypy
	$(VENV)/bin/ruff check lib jobs serve_apps tests
	$(VENV)/bin/mypy

format: $(INSTALLED) ## ruff format + import sorting
	$(VENV)/bin/ruff check --fix --select I lib jobs serve_apps tests
	$(VENV)/bin/ruff format lib jobs serve_apps tests

clean: ## Remove the working folder (.raylife: store, runs, plots); keeps .venv
	rm -rf .raylife
