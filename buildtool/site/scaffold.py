"""`buildtool init DIR`: a site's own repository, ready to lock, build and publish.

It holds what a site keeps and nothing of this project's lab:

    site.yaml                      the site's settings; `registry` is a placeholder the
                                   tool refuses until it names the site's registry
    analysis/env.yaml              one environment: Python, Dask, Dask Gateway, Jupyter,
                                   from conda-forge
    .github/workflows/nightly.yml  relock, plan, publish each changed pair, regenerate the
                                   catalog and the Helm values, open a pull request
    .gitignore                     build/
    README.md                      what to do next, and where the admin guide is

Every file is written whole; a folder that exists and is not empty is refused, so nothing
of a site's is ever overwritten.
"""

from __future__ import annotations

from pathlib import Path

from buildtool.common import InputError, write_atomic
from buildtool.site.settings import REGISTRY_PLACEHOLDER, SITE_FILE
from buildtool.spec import SPEC_FILE

ENVIRONMENT = "analysis"

SITE_YAML = f"""\
# This DaskHub site's settings (the admin guide says what each key does).
# Where the site's pairs are published: replace the placeholder with your registry and
# namespace, host[:port]/namespace. publish, plan, render and build use it.
registry: {REGISTRY_PLACEHOLDER}

# The bounds of the cluster options users pass to dask-gateway (memory in GiB).
cluster_options:
  worker_cores: {{min: 1, default: 1, max: 4}}
  worker_memory: {{min: 1, default: 2, max: 16}}
  scheduler_cores: {{min: 1, default: 1, max: 2}}
  scheduler_memory: {{min: 1, default: 2, max: 8}}

# The pairs the hub offers, and which one it preselects.
profiles:
  default: {ENVIRONMENT}

# Each pair's version checks (a mismatched worker or client is refused).
version_checks: true

# Users' own pairs and the hub service where they build them (see the admin guide):
# user_images: registry.example.org/daskhub-users/{{username}}
# self_service: {{builders: all, max_pairs: 5}}
"""

ENV_YAML = """\
# One environment: a notebook image and its matched Dask worker image, from one solve.
description: Python with Dask and Dask Gateway, and JupyterLab in the notebook
display_name: Analysis (Dask, JupyterLab)
channels: [conda-forge]
platforms: [linux-64]
dependencies:
  - python 3.11.*
  - dask
  - distributed
  - dask-gateway
  # distributed compares these between client, scheduler and workers:
  - msgpack-python
  - cloudpickle
  - tornado
  - toolz
  - lz4
  - numpy
  - pandas
imports: [dask, distributed, dask_gateway, numpy, pandas]
notebook:
  dependencies: [jupyterlab, jupyterhub-singleuser, ipykernel]
  imports: [jupyterlab, ipykernel]
"""

NIGHTLY = """\
# Nightly: relock every environment, publish each pair whose content changed, regenerate
# the catalog and the Helm values, and open a pull request with the lock diffs.
# Secrets: REGISTRY_USER and REGISTRY_PASSWORD, for site.yaml's registry.
name: nightly
on:
  schedule:
    - cron: "17 3 * * *"
  workflow_dispatch:
permissions:
  contents: write
  pull-requests: write
jobs:
  nightly:
    runs-on: ubuntu-latest
    timeout-minutes: 240
    env:
      REGISTRY_USER: ${{ secrets.REGISTRY_USER }}
      REGISTRY_PASSWORD: ${{ secrets.REGISTRY_PASSWORD }}
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - name: Install buildtool
        run: python -m pip install daskhub-compat daskhub-images
      - name: Relock every environment
        run: buildtool lock --all
      - name: Publish each pair whose content changed (build, image tests, push, tag)
        run: |
          for env in $(buildtool plan --all --names); do
            buildtool publish "$env"
          done
      - name: Regenerate the catalog and the Helm values
        run: |
          buildtool catalog
          buildtool helm-values
      - name: Keep the publish records
        run: |
          shopt -s nullglob
          for record in build/*/published.json build/*/published-lock.yml; do
            install -D --mode=644 "$record" "deploy/published/${record#build/}"
          done
      - uses: peter-evans/create-pull-request@v7
        with:
          branch: nightly/relock
          title: "nightly: relock, publish, regenerate the catalog and Helm values"
          add-paths: |
            */conda-lock.yml
            catalog
            deploy
"""

README = """\
# This site's DaskHub environments

Each folder is one environment (`analysis/env.yaml`): a Jupyter notebook image and its
matched Dask worker image, built by `buildtool` (daskhub-images) from one locked solve.

1. Name your registry in `site.yaml` (`registry:`), and give `buildtool` its credentials
   (`REGISTRY_USER` and `REGISTRY_PASSWORD`, or `docker login`).
2. `buildtool lock analysis`: solve it once against conda-forge; commit the lock.
3. `buildtool publish analysis`: build, test, push by digest, tag last.
4. `buildtool helm-values`: `deploy/daskhub-values.yaml`, for
   `helm upgrade --install daskhub dask/daskhub -f deploy/daskhub-values.yaml`.

The nightly workflow (`.github/workflows/nightly.yml`) does 2 to 4 every night. The admin
guide of daskhub-images (docs/admin.md) goes from here to a live hub.
"""

FILES = {
    SITE_FILE: SITE_YAML,
    f"{ENVIRONMENT}/{SPEC_FILE}": ENV_YAML,
    ".github/workflows/nightly.yml": NIGHTLY,
    ".gitignore": "build/\n",
    "README.md": README,
}


def init_site(folder: Path) -> list[Path]:
    """Write a site repository into `folder` (new, or empty); the files written."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"{folder}: exists and is not an empty folder; init writes a new site")
    written = []
    for relative, text in FILES.items():
        path = folder / relative
        write_atomic(path, text)
        written.append(path)
    return written
