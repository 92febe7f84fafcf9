"""The spec's exact pip pins, installed from wheels into a staged prefix, for any platform.

pip downloads the pinned wheels for the image's platform and Python (`pip download
--platform ... --only-binary=:all:`: nothing is built, nothing runs), and pypa's
`installer` unpacks them into the staged prefix with the image's interpreter in their
scripts. No byte code is compiled, so the files are the wheels' own and the layer is the
same on every build. Each image's pins form one layer of their own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile

from buildtool.errors import BuildToolError

ARCH = {"linux-64": "x86_64", "linux-aarch64": "aarch64"}
# manylinux wheels up to the base image's glibc (Debian bookworm: 2.36).
GLIBC_MINOR = 36


def platform_tags(platform: str) -> list[str]:
    arch = ARCH[platform]
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, 16, -1)]
    return [*tags, f"manylinux2014_{arch}", f"linux_{arch}"]


def download(pins: list[str], platform: str, python: str, dest: Path) -> list[Path]:
    """The wheels of `pins` (name==version) for `platform` and Python `python` (3.11)."""
    dest.mkdir(parents=True, exist_ok=True)
    abi = "cp" + python.replace(".", "")
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--only-binary=:all:", "--dest", str(dest), "--python-version", python,
        "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none",
        *(arg for tag in platform_tags(platform) for arg in ("--platform", tag)), *pins,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        said = [line for line in result.stderr.splitlines() if "ERROR" in line]
        raise BuildToolError(
            f"pip download {' '.join(pins)} ({platform}): " + (said[-1] if said else "failed")
        )
    wheels = []
    for pin in pins:
        name, _, version = pin.partition("==")
        stem = f"{name.split('[')[0].replace('-', '_').lower()}-{version}-"
        found = sorted(w for w in dest.glob("*.whl") if w.name.lower().startswith(stem))
        if not found:
            raise BuildToolError(f"pip download {pin} ({platform}): no wheel in {dest}")
        wheels.append(found[0])
    return wheels


def install_wheels(wheels: list[Path], stage: Path, prefix: str, python: str) -> list[str]:
    """Unpack `wheels` into `stage`; the paths written, relative to it."""
    site = f"lib/python{python}/site-packages"
    scheme = {
        "purelib": str(stage / site),
        "platlib": str(stage / site),
        "headers": str(stage / "include"),
        "scripts": str(stage / "bin"),
        "data": str(stage),
    }
    written: list[str] = []
    for wheel in wheels:
        destination = SchemeDictionaryDestination(
            scheme, interpreter=f"{prefix}/bin/python", script_kind="posix",
            bytecode_optimization_levels=(),
        )  # fmt: skip
        with WheelFile.open(wheel) as source:
            install(source, destination, additional_metadata={"INSTALLER": b"buildtool\n"})
            dist_info = f"{source.distribution}-{source.version}.dist-info"
        record = stage / site / dist_info / "RECORD"
        for line in record.read_text().splitlines():
            path = line.rsplit(",", 2)[0]
            if path:
                written.append(str((stage / site / path).resolve().relative_to(stage.resolve())))
    return sorted(set(written))
