"""Development support: what this repository's tests, benchmarks and `make demo` share.

Its own distribution, daskhub-devsupport (devsupport/pyproject.toml), installed editable
beside daskhub-images and daskhub-compat by scripts/machine-setup.sh and never published:
nothing here ships in the product's wheel.

  standin/   the conda-forge stand-in: a channel of real packages served over HTTP on
             127.0.0.1, and debootstrap base images (`python -m devsupport.standin up`)
  cache.py   content keys and file locks for what the infrastructure builds
  dockercli.py  the docker command line, through the product's client

The rest are the helpers the tests and benchmarks import (each module says what it is).
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
