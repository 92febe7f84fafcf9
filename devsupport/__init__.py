"""Development support: what this repository's tests, benchmarks and `make demo` share.

Its own distribution, daskhub-devsupport (devsupport/pyproject.toml), installed editable
beside daskhub-images and daskhub-compat by scripts/machine-setup.sh and never published:
nothing here ships in the product's wheel.

  standin/          the conda-forge stand-in: a channel of real packages served over HTTP
                    on 127.0.0.1, and debootstrap base images (`python -m devsupport.standin`)
  cache.py          content keys and file locks for what the infrastructure builds
  dockercli.py      the docker command line, through the product's client

The helpers the tests and the benchmarks import (each module says more):

  buildtool_cli.py  the real `buildtool` CLI in a subprocess; a site folder locked with it
  localregistry.py  the local registry's credentials (scripts/machine-setup.sh)
  servers.py        real servers beside the suite's: a registry, a second dockerd, proxies
                    (counting, throttled), recording and fake-registry HTTP servers
  coldnode.py       a cold node: a containerd of its own and the stargz snapshotter, to pull
                    images plainly or lazily and run containers from them
  snapshotter/      that snapshotter's daemon: its Go source, built once into the cache
                    (`python -m devsupport.snapshotter`)
  canary.py         where planted secrets ended up: files, output, registry blobs
  cluster.py        Dask clusters on 127.0.0.1 from venvs of pinned versions
  clients.py        Dask clients and workers from venvs, against clusters in containers
  gateway.py        a real dask-gateway server from its own venv
  chart.py          the chart's consumers of generated Helm values (gateway, KubeSpawner)
  hub.py            a real JupyterHub (DummyAuthenticator, DockerSpawner) behind its proxy;
                    its login form and users' API tokens
  browser.py        headless chromium through selenium; numbered screenshots per test
  sitepair.py       a site with a pair published through a counting proxy (the parent of
                    the extension and service tests)
  builder.py        the hub service (`buildtool serve`) run by a real JupyterHub
  published.py      a publish record, as the publish stage writes it
  lockdata.py       the compat tests' fixture lockfiles, and prefixes laid out from them
  solver_channel.py, metadata_channel.py  channels to solve and lock against, no payload
  installed.py      an environment installed from the stand-in, for its own tests
  analyses.py       a seed pair built from the stand-in, and an analysis run on it
"""

from __future__ import annotations

import logging
from pathlib import Path

#: The checkout this package sits in (an editable install).
REPO = Path(__file__).resolve().parents[1]


def log_progress() -> None:
    """Progress messages (INFO and above) on stderr, for the command lines here."""
    logging.basicConfig(
        level=logging.INFO, format="[%(name)s %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
