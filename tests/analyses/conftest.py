"""Fixtures for the analyses: the shared samples. Building the pairs and running the
analyses on them is devsupport/analyses.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from devsupport.analyses import DATA, SAMPLES


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared samples; missing ones fail the analyses, they never skip them."""
    missing = [name for name in SAMPLES if not (DATA / name).is_file()]
    if missing:
        pytest.fail(f"{DATA}: missing {missing} (see ../shared/data/README.md)")
    return DATA
