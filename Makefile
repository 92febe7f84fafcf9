# Matched DaskHub notebook and worker images from one locked solve per environment.
# `make help` lists the targets. Variables: ENV (environment), REGISTRY (host/namespace;
# default: site.yaml's `registry`), LAB (1: this repository's offline lab).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# How many pairs `make nightly` builds at once.
JOBS ?= 2
PYTHON ?= python3
BUILDTOOL := $(PYTHON) -m buildtool.cli

# A site's path is the default: the specs' own channels and base images, the registry of
# site.yaml (or REGISTRY), credentials from the environment or `docker login`, and no
# machine set-up. A lock made against a channel on this machine is refused, in one line.
#
# LAB=1 is this repository's own offline lab, which `make demo` and `make check` ask for:
# every seed environment locked against the conda-forge stand-in (`python -m
# devsupport.standin up`: real packages served over HTTP on 127.0.0.1, debootstrap base
# images for the platforms ENV and ENVS build for), the local registry of
# scripts/machine-setup.sh, and DASKHUB_LAB=1 for buildtool. The build path is the same
# as a site's; only the channel URL, the base images and the registry differ.
LAB ?= 0
STANDIN_ENV := build/standin.env
ifeq ($(LAB),1)
ENV ?= e2e
ENVS ?= e2e physlite pyhep ml
REGISTRY ?= 127.0.0.1:5000/daskhub
# The local registry's credentials, written by scripts/machine-setup.sh.
CREDENTIALS ?= /var/lib/daskhub-images/registry/credentials.env
WITH_CREDENTIALS := if [ -f $(CREDENTIALS) ]; then set -a; . $(CREDENTIALS); set +a; fi;
WITH_STANDIN := set -a; . $(STANDIN_ENV); set +a; export DASKHUB_LAB=1;
LOCK_FLAGS ?= --channel "$$STANDIN_CHANNEL"
# The stand-in makes the base images of the platforms that ENV and ENVS build for, and
# its env file gives `--base-image PLATFORM=REF` for each of them.
STANDIN_FOR = $(if $(filter --all,$(ENVS)),--all,$(addprefix --environment ,$(sort $(ENV) $(ENVS))))
IMAGE_FLAGS ?= $$STANDIN_IMAGE_FLAGS
# Lock before building: against the stand-in a relock is quick and gives the same lock
# unless the spec or the stand-in changed (a rebuilt stand-in may no longer hold an old
# lock's archives).
ENSURE_LOCK = $(BUILDTOOL) lock $(1) $(LOCK_FLAGS) >/dev/null;
else
ENVS ?= --all
WITH_CREDENTIALS :=
WITH_STANDIN :=
LOCK_FLAGS ?=
IMAGE_FLAGS ?=
# A site's build never relocks: a stale lock, or a lab's, is an error.
ENSURE_LOCK = $(BUILDTOOL) lock --check $(1);
endif
REGISTRY_FLAG = $(if $(REGISTRY),--registry $(REGISTRY))
# The targets that build one pair need it named.
NEEDS_ENV = $(if $(ENV),,$(error name the environment: make $@ ENV=name))

.PHONY: help
help: ## show this help
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: setup
setup: ## install and start what the tools need (apt, pip, dockerd, local registry)
	@bash scripts/machine-setup.sh >&2  # progress on stderr: `make plan`'s stdout is its JSON

.PHONY: standin
standin: ## LAB=1: build and serve the conda-forge stand-in, make the base images ENV and ENVS need
ifeq ($(LAB),1)
standin: setup
	@mkdir -p build
	@$(PYTHON) -m devsupport.standin up $(STANDIN_FOR) > $(STANDIN_ENV).tmp
	@mv $(STANDIN_ENV).tmp $(STANDIN_ENV) && cat $(STANDIN_ENV) >&2
endif

.PHONY: lock
lock: standin ## solve ENV once and write environments/ENV/conda-lock.yml
	$(NEEDS_ENV)$(WITH_STANDIN) $(BUILDTOOL) lock $(ENV) $(LOCK_FLAGS)

.PHONY: lock-all
lock-all: standin ## relock every environment (ENVS), writing the lock diffs
	$(WITH_STANDIN) $(BUILDTOOL) lock $(ENVS) $(LOCK_FLAGS)

# The seed locks committed here are the lab's (made against the stand-in), so this
# repository checks them as the lab; a site's own repository runs `buildtool lock --check
# --all`, which refuses a lab's lock.
.PHONY: lock-check
lock-check: ## fail if any lock is older than its spec (every one is reported)
	DASKHUB_LAB=1 $(BUILDTOOL) lock --check --all

.PHONY: render
render: standin ## write build/ENV: the lock and the system Dockerfile of each platform
	$(NEEDS_ENV)$(WITH_STANDIN) $(call ENSURE_LOCK,$(ENV)) \
	  $(BUILDTOOL) render $(ENV) $(REGISTRY_FLAG) $(IMAGE_FLAGS)

.PHONY: build
build: standin ## build the ENV pair (system stages, then conda layers by package) and load it
	$(NEEDS_ENV)$(WITH_STANDIN) $(call ENSURE_LOCK,$(ENV)) \
	  $(BUILDTOOL) build $(ENV) $(REGISTRY_FLAG) $(IMAGE_FLAGS)

.PHONY: test
test: ## run the image tests (pytest + testinfra, real pair test) on the built ENV pair
	$(NEEDS_ENV)$(BUILDTOOL) test $(ENV)

.PHONY: push
push: standin ## publish the ENV pair to REGISTRY: build, test, push by digest, tag last
	$(NEEDS_ENV)$(WITH_STANDIN) $(WITH_CREDENTIALS) $(call ENSURE_LOCK,$(ENV)) \
	  $(BUILDTOOL) publish $(ENV) $(REGISTRY_FLAG) $(IMAGE_FLAGS)

.PHONY: analyses
analyses: setup ## the lab: build, test and run the real analysis of each seed pair
	$(PYTHON) -m pytest tests/analyses -q

.PHONY: compat
compat: ## static compatibility check of ENV's notebook and worker sets
	$(PYTHON) -m compat diff lock:environments/$(ENV)/conda-lock.yml#notebook \
	  lock:environments/$(ENV)/conda-lock.yml#worker

.PHONY: compat-test
compat-test: ## compat checker tests (real Dask clusters from separate venvs)
	$(PYTHON) -m pytest tests/compat -q

.PHONY: compat-all
compat-all: ## compat reports (build/*/compat-report.md) for every environment (ENVS)
	for env in $$($(BUILDTOOL) list $(ENVS)); do \
	  mkdir -p build/$$env; \
	  $(PYTHON) -m compat diff lock:environments/$$env/conda-lock.yml#notebook \
	    lock:environments/$$env/conda-lock.yml#worker \
	    --format markdown --output build/$$env/compat-report.md; \
	done

.PHONY: publish
publish: standin ## publish every pair (ENVS) whose content changed; an unchanged one is a no-op
	$(WITH_STANDIN) $(WITH_CREDENTIALS) \
	  $(BUILDTOOL) publish $(ENVS) $(REGISTRY_FLAG) $(IMAGE_FLAGS)

publish-%: standin
	$(WITH_STANDIN) $(WITH_CREDENTIALS) $(call ENSURE_LOCK,$*) \
	  $(BUILDTOOL) publish $* $(REGISTRY_FLAG) $(IMAGE_FLAGS)

.PHONY: plan
plan: standin ## print, as CI matrix JSON, the pairs (ENVS) whose content tags are not in REGISTRY
	@$(WITH_STANDIN) $(WITH_CREDENTIALS) \
	  $(BUILDTOOL) plan $(ENVS) $(REGISTRY_FLAG) $(IMAGE_FLAGS)

.PHONY: verify
verify: standin ## rebuild the published ENV pair from its lock on clean caches; compare digests
	$(WITH_STANDIN) $(BUILDTOOL) verify $(ENV) $(IMAGE_FLAGS)

.PHONY: catalog
catalog: ## write catalog/: image table, package manifests, lock diffs since publish
	$(BUILDTOOL) catalog

.PHONY: helm-values
helm-values: ## write deploy/daskhub-values.yaml for the published pairs
	$(BUILDTOOL) helm-values

# The nightly's stages, as the CI workflow runs them: relock; plan; publish each planned
# pair, JOBS at a time, each going on when another fails; the catalog and Helm values from every
# record (a pair that failed keeps its last good one). Fails if any pair failed.
.PHONY: nightly
nightly: ## relock, compat-check, plan, publish each planned pair (JOBS at once), catalog, Helm values
	$(MAKE) lock-all
	$(MAKE) compat-all
	planned="$$($(WITH_STANDIN) $(WITH_CREDENTIALS) $(BUILDTOOL) plan $(ENVS) --names \
	  $(REGISTRY_FLAG) $(IMAGE_FLAGS))"; \
	echo "planned: $${planned:-nothing}"; status=0; \
	if [ -n "$$planned" ]; then \
	  $(MAKE) -k -j $(JOBS) --output-sync=target $$(printf 'publish-%s ' $$planned) || status=$$?; \
	fi; \
	$(MAKE) catalog helm-values; \
	exit $$status

.PHONY: demo
demo: setup ## the main job in the lab, on a fresh machine: `make nightly LAB=1` after the set-up
	$(MAKE) LAB=1 nightly

.PHONY: bench
bench: ## run the benchmarks (lock, build, layers, extend, service, compat, coldstart); each prints a table against a baseline
	$(PYTHON) -m bench.lock
	$(PYTHON) -m bench.build
	$(PYTHON) -m bench.layers
	$(PYTHON) -m bench.extend
	$(PYTHON) -m bench.service
	$(PYTHON) -m bench.compat
	$(PYTHON) -m bench.coldstart --bandwidth 0
	$(PYTHON) -m bench.coldstart --bandwidth 100

.PHONY: lint
lint: ## ruff, mypy, and the import directions of buildtool's stages (import-linter)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy
	lint-imports

.PHONY: unit
unit: ## the fast layer: tests/unit (no Docker, no registry, no network), in under a minute
	$(PYTHON) -m pytest tests/unit -q -p no:cacheprovider

.PHONY: check
check: setup lint unit ## the test suite in the lab, from a fresh machine (what CI runs): unit first
	$(PYTHON) -m pytest -m "not beyond_ci" --ignore=tests/unit

.PHONY: clean
clean: ## remove generated build contexts
	rm -rf build
