# Matched DaskHub notebook and worker images from one locked solve per environment.
# `make help` lists the targets. Variables: ENV (environment), REGISTRY (host/namespace).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

ENV ?= e2e
REGISTRY ?= 127.0.0.1:5000/daskhub
PYTHON ?= python3
BUILDTOOL := $(PYTHON) -m buildtool.cli
# Extra options for lock (e.g. --channel URL) and for render/build/publish.
LOCK_FLAGS ?=
IMAGE_FLAGS ?=
# The local registry's credentials, written by scripts/machine-setup.sh.
CREDENTIALS ?= /var/lib/daskhub-images/registry/credentials.env
WITH_CREDENTIALS := if [ -f $(CREDENTIALS) ]; then set -a; . $(CREDENTIALS); set +a; fi;
# Offline pieces for this machine: a channel of real packages and debootstrap base images.
OFFLINE_CHANNEL = $$($(PYTHON) -m tests.support.realchannel --url)
OFFLINE_IMAGES = --base-image $$($(PYTHON) -m tests.support.baseimage runtime) \
                 --builder-image $$($(PYTHON) -m tests.support.baseimage builder)

.PHONY: help
help: ## show this help
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: setup
setup: ## install and start what the tools need (apt, pip, dockerd, local registry)
	bash scripts/machine-setup.sh

.PHONY: lock
lock: ## solve ENV once and write environments/ENV/conda-lock.yml
	$(BUILDTOOL) lock $(ENV) $(LOCK_FLAGS)

.PHONY: lock-all
lock-all: ## relock every environment
	$(BUILDTOOL) lock --all $(LOCK_FLAGS)

.PHONY: lock-check
lock-check: ## fail if any lock is older than its spec
	$(BUILDTOOL) lock --check --all

.PHONY: render
render: ## write build/ENV: both Dockerfiles and the build context
	$(BUILDTOOL) render $(ENV) --registry $(REGISTRY) $(IMAGE_FLAGS)

.PHONY: build
build: ## build the ENV pair (worker, then notebook on top of it)
	$(BUILDTOOL) build $(ENV) --registry $(REGISTRY) $(IMAGE_FLAGS)

.PHONY: test
test: ## run the image tests (pytest + testinfra, real pair test) on the built ENV pair
	$(BUILDTOOL) test $(ENV)

.PHONY: push
push: ## publish the ENV pair to REGISTRY: build, test, push by digest, tag last
	$(WITH_CREDENTIALS) $(BUILDTOOL) publish $(ENV) --registry $(REGISTRY) $(IMAGE_FLAGS)

.PHONY: compat
compat: ## static compatibility check of ENV's notebook and worker sets
	$(PYTHON) -m compat diff lock:environments/$(ENV)/conda-lock.yml#notebook \
	  lock:environments/$(ENV)/conda-lock.yml#worker

.PHONY: demo
demo: setup ## the main job, offline: lock, build, test and publish e2e to the local registry
	$(MAKE) lock ENV=e2e LOCK_FLAGS="--channel $(OFFLINE_CHANNEL)"
	$(MAKE) push ENV=e2e IMAGE_FLAGS="$(OFFLINE_IMAGES)"

.PHONY: lint
lint: ## ruff
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

.PHONY: check
check: setup lint ## the test suite, from a fresh machine (what CI runs)
	$(PYTHON) -m pytest

.PHONY: clean
clean: ## remove generated build contexts
	rm -rf build
