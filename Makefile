# raylife: thin wrappers over python -m / pytest. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
RAYLIFE := $(VENV)/bin/raylife
RUNTIME := $(VENV)/.runtime
INSTALLED := $(VENV)/.installed
MODELS ?= all
SAMPLES ?= 4
SEEDS ?= 0,1,2
QUALITY_SEEDS ?= 0,1,2,3,4,5,6,7,8,9

.DEFAULT_GOAL := help
.PHONY: help install run table-to-http ui test test-fast test-ha test-unit test-integration test-manifests quality quality-stream selection-study recipe-study report-cost bench bench-quick serve loadtest serve-configs kuberay-manifests rehearse eks-addons kuberay-operator-install kuberay-operator-upgrade kuberay-operator-uninstall kuberay-base monitoring-install image-constraints image image-push lint format clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-18s %s\n", $$1, $$2}'

# torch/torchvision are installed first and by exact version: pip takes both from this machine's
# disk; any resolver left to choose would download a different multi-GB build. What runs the
# life-cycle needs the runtime dependencies only ($(RUNTIME)); tests and linters add the dev
# extra ($(INSTALLED)), so a first `make run` does not wait for fuzzers and validators.
# Every install takes the images' pins (-c): the environment the tests pass in is the one the
# images ship, and a dependency released upstream after the pins cannot change what CI tests.
CONSTRAINTS := kuberay/docker/constraints.txt
$(RUNTIME): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e . -c $(CONSTRAINTS)
	@touch $@

$(INSTALLED): $(RUNTIME) lib/raylife_dev/pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]' -c $(CONSTRAINTS)
	$(PY) -m pip install --quiet --no-deps -e lib/raylife_dev
	@touch $@

install: $(INSTALLED) ## Create .venv and install raylife with the dev tools (first use only)

run: $(RUNTIME) ## Main job: sweep -> promote -> evaluate -> predict for all four models (MODELS=, SAMPLES=)
	$(RAYLIFE) run --models $(MODELS) --samples $(SAMPLES)

test: $(INSTALLED) ## Full test suite: unit tests, then integration tests on one local Ray cluster
	$(PY) -m pytest

test-fast: $(INSTALLED) ## The inner loop: unit + manifest tests, no Ray cluster, slow ones left to make test (<= 90 s)
	$(PY) -m pytest -q -m "not slow" tests/unit tests/manifests

test-ha: $(INSTALLED) ## The HA rehearsal as a test (root: network namespaces; opt-in, ~2-5 min)
	RAYLIFE_TEST_HA=1 $(PY) -m pytest -s tests/integration/test_ha_rehearsal.py

test-unit: $(INSTALLED) ## Unit tests only (no Ray cluster, seconds)
	$(PY) -m pytest tests/unit

test-integration: $(INSTALLED) ## Integration tests only (shared local Ray cluster)
	$(PY) -m pytest tests/integration

quality: $(INSTALLED) ## Registry defaults x 10 seeds, mean/std/95% CI -> reports/quality.json (QUALITY_SEEDS=)
	$(RAYLIFE) quality --models $(MODELS) --seeds $(QUALITY_SEEDS)

quality-stream: $(INSTALLED) ## The same recipes through the Ray Data streaming path -> reports/quality-stream.json (~30 min)
	$(RAYLIFE) quality --models $(MODELS) --seeds $(QUALITY_SEEDS) --via stream --output reports/quality-stream.json

selection-study: $(INSTALLED) ## LR schedule x best/last epoch by CV off the quality test rows -> reports/selection_study.json (~8 min)
	$(RAYLIFE) selection-study --models ionosphere,iris,boston --seeds $(SEEDS)
	$(RAYLIFE) selection-study --models mnist --seeds $(SEEDS) --folds 5 --repeats 2

recipe-study: $(INSTALLED) ## The recipe `raylife init` writes, tuned with the default budget, vs sklearn's baselines, 5 seeds -> reports/recipe_study.json (~5 min)
	$(RAYLIFE) recipe-study

report-cost: $(INSTALLED) ## Cost of one ray.train.report + checkpoint: every-epoch vs sparse reports, alternated
	$(RAYLIFE) report-cost --model iris

TABLE_DIR ?= /tmp/raylife-table-to-http

table-to-http: $(INSTALLED) ## A new user's table to an HTTP answer: make-table 10,000 rows, init, run; prints the wall time (~1 min)
	rm -rf $(TABLE_DIR) && mkdir -p $(TABLE_DIR)
	$(RAYLIFE) make-table $(TABLE_DIR)/table --rows 10000 --features 12 --task binary --rows-per-part 10000
	cd $(TABLE_DIR) && export RAYLIFE_HOME=$(TABLE_DIR)/home && start=$$(date +%s.%N) && \
	  $(abspath $(RAYLIFE)) init customers --data table/part-00000.parquet --target target && \
	  $(abspath $(RAYLIFE)) run --models customers && \
	  echo "table to HTTP answer: $$(python3 -c "import time; print(round(time.time() - $$start, 1))") s wall"

bench: $(INSTALLED) ## raylife vs plain PyTorch / bare uvicorn, interleaved -> reports/bench.{json,md} (~20 min)
	$(RAYLIFE) bench

bench-quick: $(INSTALLED) ## The benchmark at smoke-test sizes (CI runs it; ~2 min, no lifecycle section)
	$(RAYLIFE) bench --quick

UI_PORT ?= 5000

ui: $(RUNTIME) ## The MLflow UI of the local tracking store on 127.0.0.1:$(UI_PORT) (Ctrl-C stops)
	$(RAYLIFE) ui --port $(UI_PORT)

PORT ?= 8000
MODEL ?= iris
CONCURRENCY ?= 16
REQUESTS ?= 2000

serve: $(RUNTIME) ## Serve the promoted models with Ray Serve on 127.0.0.1:$(PORT) (Ctrl-C stops)
	$(RAYLIFE) serve --port $(PORT)

loadtest: $(INSTALLED) ## Serve vs bare uvicorn on the same artifact, alternated (MODEL=, CONCURRENCY=, REQUESTS=)
	$(RAYLIFE) loadtest --model $(MODEL) --concurrency $(CONCURRENCY) --requests $(REQUESTS) --baseline

serve-configs: $(RUNTIME) ## Render serve_apps/config base + overlays -> serve_apps/rendered/
	$(RAYLIFE) serve-configs

test-manifests: $(INSTALLED) ## KubeRay manifests against the CRDs and Kubernetes schemas (no cluster)
	$(PY) -m pytest tests/manifests

# ---- KubeRay on EKS (docs/deploy-eks.md) ----------------------------------------------------------
NAMESPACE ?= raylife
REGISTRY ?= 123456789012.dkr.ecr.us-west-2.amazonaws.com/raylife
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
RAY_VERSION := $(shell sed -n 's/.*"ray\[train,tune,serve\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
# Images are tagged by the git commit they are built from and never overwritten (the ECR
# repository is IMMUTABLE): <version>-ray<ray>-g<commit>-<cpu|gpu>, the tag the manifests name.
# Unset, `make image` uses HEAD and `make kuberay-manifests` keeps the committed placeholder.
COMMIT ?=
IMAGE_COMMIT = $(or $(COMMIT),$(shell git rev-parse --short=12 HEAD))
TAG = $(VERSION)-ray$(RAY_VERSION)-g$(IMAGE_COMMIT)
# Optional inputs of the generator (docs/deploy-eks.md, "Set these once per shell").
REDIS_ADDRESS ?=
TRAIN_TOKEN ?=
SERVE_TOKEN ?=
KUBERAY_FLAGS = --registry $(REGISTRY) $(if $(COMMIT),--commit $(COMMIT)) \
  $(if $(REDIS_ADDRESS),--redis-address $(REDIS_ADDRESS)) \
  $(if $(TRAIN_TOKEN),--train-token $(TRAIN_TOKEN)) $(if $(SERVE_TOKEN),--serve-token $(SERVE_TOKEN))

# The generator renders the Serve config in memory and checks everything before writing any file;
# serve_apps/rendered/ is written only after it succeeded.
kuberay-manifests: $(INSTALLED) ## Check, then regenerate kuberay/*.yaml, kuberay/helm/install.sh and the Serve configs (REGISTRY= COMMIT= REDIS_ADDRESS= TRAIN_TOKEN= SERVE_TOKEN=)
	$(RAYLIFE) kuberay-manifests kuberay $(KUBERAY_FLAGS)
	$(RAYLIFE) serve-configs

rehearse: $(INSTALLED) ## Run kuberay/'s CPU RayJobs and the local Serve config on a local 2-node Ray cluster
	$(RAYLIFE) rehearse

eks-addons: ## helm install Cluster Autoscaler and the AWS Load Balancer Controller (pinned charts, kuberay/helm/install.sh)
	bash kuberay/helm/install.sh cluster-autoscaler
	bash kuberay/helm/install.sh aws-load-balancer-controller

kuberay-operator-install: ## helm install (or upgrade) the KubeRay operator with kuberay/helm/ values (pinned chart)
	bash kuberay/helm/install.sh kuberay-operator

kuberay-operator-upgrade: kuberay-operator-install ## Apply changed kuberay/helm/ values (helm upgrade --install)

kuberay-operator-uninstall: ## helm uninstall the KubeRay operator
	helm uninstall kuberay-operator --namespace kuberay-system

kuberay-base: ## kubectl apply the namespace, its NetworkPolicy and the Fluent Bit config (before any Ray pod)
	kubectl apply -f kuberay/namespace.yaml
	kubectl apply -f kuberay/network-policy.yaml
	kubectl apply -f kuberay/fluent-bit.yaml

monitoring-install: ## helm install kube-prometheus-stack (pinned) and apply kuberay/monitoring.yaml
	bash kuberay/helm/install.sh kube-prometheus-stack
	kubectl apply -f kuberay/monitoring.yaml

image-constraints: $(INSTALLED) ## Pin the images' runtime dependencies to this tested environment (kuberay/docker/constraints.txt)
	$(PY) -m raylife.deploy.constraints > kuberay/docker/constraints.txt

image: ## docker build the CPU and GPU images of a clean checkout, tagged by its commit (REGISTRY=, COMMIT=)
	@git diff --quiet HEAD -- lib jobs serve_apps kuberay/docker pyproject.toml README.md \
	  || { echo "uncommitted changes: commit them first, an image tag names one commit"; exit 2; }
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

# ---- images and manifests, checked before they reach AWS (docs/deploy-eks.md) -----------------------
.PHONY: image-rehearsal eks-preflight
FILES ?= kuberay/*.yaml

image-rehearsal: $(INSTALLED) ## Each Dockerfile's Python layer, verbatim, in a clean Python 3.11 venv, then the images' smoke (~6 min, no Docker)
	$(PY) -m raylife_dev.image_rehearsal --python $(PYTHON)

eks-preflight: $(RUNTIME) ## Refuse kuberay/ files that still name a placeholder (account, commit, Redis, digest) before kubectl apply (FILES=)
	$(PY) -m raylife.deploy.preflight $(FILES)
