"""Base images from debootstrap, and the stand-in channel's prefix running inside them."""

from __future__ import annotations

import pytest

from devsupport.dockercli import docker, image_exists
from devsupport.installed import InstalledEnv
from devsupport.standin.baseimage import SPECS, ensure_base_image

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]


def test_tags_name_the_kind_suite_and_recipe_hash() -> None:
    runtime, builder = SPECS["runtime"].tag(), SPECS["builder"].tag()
    assert runtime.startswith("local/debian-runtime:bookworm-")
    assert builder.startswith("local/debian-builder:bookworm-")
    assert runtime.split("-")[-1] != builder.split("-")[-1]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="runtime"):
        ensure_base_image("alpine")


def test_runtime_image_is_built_once_and_has_tini_and_cas() -> None:
    tag = ensure_base_image("runtime")
    assert image_exists(tag)
    assert ensure_base_image("runtime") == tag
    out = docker("run", "--rm", tag, "sh", "-c", "tini --version && ls /etc/ssl/certs/*.crt")
    assert b"tini version" in out.stdout
    assert b"ca-certificates.crt" in out.stdout


def test_builder_image_makes_venvs() -> None:
    tag = ensure_base_image("builder")
    out = docker("run", "--rm", tag, "sh", "-c", "python3 -m venv /tmp/v && /tmp/v/bin/python -V")
    assert out.stdout.startswith(b"Python 3.11")


def test_relocated_prefix_runs_in_the_runtime_image(installed_env: InstalledEnv) -> None:
    tag = ensure_base_image("runtime")
    prefix = str(installed_env.prefix)
    code = (
        "import ssl, sqlite3, lzma, bz2, ctypes, readline, uuid, dask, distributed, numpy, pandas;"
        "import sys; print(sys.version); print(ssl.OPENSSL_VERSION)"
    )
    out = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{prefix}:{prefix}:ro",
        tag,
        f"{prefix}/bin/python",
        "-c",
        code,
    )
    assert out.stdout.startswith(b"3.11.7 ")
    scheduler = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{prefix}:{prefix}:ro",
        tag,
        f"{prefix}/bin/dask",
        "scheduler",
        "--help",
    )
    assert b"--dashboard-address" in scheduler.stdout
