# substratus — developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
IMG ?= substratus:dev
DEV_DIR ?= .dev

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,lint]'
	@touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv and install substratus with test and lint extras

.PHONY: controlplane
controlplane: ## Build (or reuse) the local kube-apiserver + etcd in ~/.cache/substratus/controlplane
	bash hack/install-controlplane.sh

.PHONY: tools
tools: ## Extract promtool and prometheus from Debian's prometheus package (alert tests, make dashboard)
	bash hack/install-prometheus.sh

.PHONY: test
test: install controlplane tools ## Run the whole test suite against a real local control plane
	$(PY) -m pytest

.PHONY: run
run: install controlplane ## Run the operator: against $$KUBECONFIG if set, else a local control plane
	$(PY) -m substratus dev run $(ARGS)

.PHONY: manifests
manifests: install ## Regenerate manifests/crd from the API types
	$(PY) -m substratus manifests manifests/crd

.PHONY: lint
lint: install ## ruff + mypy
	$(VENV)/bin/ruff check src test bench hack
	$(VENV)/bin/mypy src/substratus

.PHONY: bench
bench: install controlplane ## Run the benchmarks and write docs/benchmarks.md
	$(PIP) install -q -e '.[bench]'
	$(PY) -m bench

.PHONY: docker-build
docker-build: ## Build the operator image (needs a Docker engine)
	docker build -t $(IMG) .

.PHONY: clean
clean: ## Remove the venv and caches (keeps the control-plane binaries)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache $(DEV_DIR)

.PHONY: docs
docs: install ## Regenerate docs/api.md from the API types
	$(PY) -m substratus.api.docs docs/api.md

.PHONY: dashboard
dashboard: install controlplane tools ## Render the Grafana dashboard to docs/dashboard.png from a real run (~4 min)
	$(PIP) install -q -e '.[bench]'
	$(PY) hack/render_dashboard.py
