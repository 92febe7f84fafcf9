"""The local conda-forge stand-in: real, runnable packages, laid out as conda-forge is.

conda-forge cannot be reached from the machines this project is developed and tested on,
so the stand-in takes its place for `make demo`, the tests and the benchmarks. It holds:

  python                 the relocated CPython found at $DASKHUB_CPYTHON
                         (default /root/.pyenv/versions/3.11.7), build h0_local, and
                         Debian's amd64 CPython 3.11, build h0_debian (debianpython.py):
                         the release linux-aarch64 has too, so that a lock for both
                         platforms can agree on one Python, as conda-forge's can
  <wheels>               the pinned closure in requirements.txt (every PyPI package the
                         seed environments name), converted by wheelconv.py under
                         conda-forge's names (msgpack-python, python-graphviz, ...)
  <older versions>       requirements-older.txt: a previous release of a few small
                         packages, so that a relock can move them
  jupyterhub-singleuser  a noarch metapackage on jupyterhub and jupyter-server

and for linux-aarch64, what the e2e pair needs (the roots of environments/base):

  python                 Debian's arm64 CPython 3.11, build h0_debian (debianpython.py)
  <wheels>               requirements-aarch64.txt: the same releases as on linux-64, as
                         their aarch64 (or pure Python) wheels

It is built under <cache>/standin/<key>/conda-forge/{linux-64,noarch}, the key hashing
the pins, the converter's sources and the CPython; <cache>/standin/current links to the
latest build and is what server.py serves over HTTP, so the channel URL
is http://127.0.0.1:PORT/conda-forge, as conda-forge's is https://conda.anaconda.org/
conda-forge. Wheels are kept in <cache>/wheels between builds.

Own code rather than a library: no maintained tool turns wheels into conda packages
offline (grayskull and conda-build write recipes and need a conda channel to build).

CLI (also `python -m devsupport.standin relock`):
  python -m devsupport.standin.channel            build or reuse; print the folder
  python -m devsupport.standin.channel --relock   re-resolve the pins (needs PyPI and uv)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from buildtool.common import BuildToolError, cache_root, run
from devsupport import log_progress
from devsupport.cache import digest, file_sha256, locked
from devsupport.standin.condaenv import index_channel
from devsupport.standin.condapkg import PackageMeta, write_package
from devsupport.standin.debianpython import DEBIAN_PLATFORMS, download_debs, stage_debian_python
from devsupport.standin.pythonpkg import compile_pyc, python_version, stage_python
from devsupport.standin.wheelconv import Target, conda_depends, read_wheel, stage_wheel

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
DEVSUPPORT = HERE.parent
REQUIREMENTS = HERE / "requirements.txt"
OLDER_REQUIREMENTS = HERE / "requirements-older.txt"
AARCH64_REQUIREMENTS = HERE / "requirements-aarch64.txt"
CHANNEL_NAME = "conda-forge"
# Relative to devsupport/.
CONVERTER_SOURCES = (
    "cache.py",
    "standin/condaenv.py",
    "standin/condapkg.py",
    "standin/debianpython.py",
    "standin/pythonpkg.py",
    "standin/wheelconv.py",
    "standin/channel.py",
    "standin/probe.py",
)
DEFAULT_CPYTHON = Path("/root/.pyenv/versions/3.11.7")
# The PyPI names of what the seed environments install; the pins are their closure.
BASE_ROOTS = (
    # base: Python, Dask, Dask Gateway and what distributed compares
    "dask",
    "distributed",
    "dask-gateway",
    "msgpack",
    "cloudpickle",
    "tornado",
    "toolz",
    "lz4",
    "numpy",
    "pandas",
    "pip",
    # base, notebook image
    "jupyterlab",
    "jupyterhub",
    "ipykernel",
    "ipywidgets",
    "dask-labextension",
)
ROOTS = (
    *BASE_ROOTS,
    # pyhep and physlite
    # (dask-awkward: only its releases that cap dask <2025.4 work with current awkward)
    "coffea",
    "dask-awkward>=2026.2",
    "dask-histogram",
    "uproot",
    "awkward",
    "numba",
    "pyarrow",
    "h5py",
    "aiohttp",
    "graphviz",
    "mimesis",
    # ml (ROOT's PyPI wheel is `ROOT`, canonically `root`; jax is keras's backend)
    "ROOT",
    "keras",
    "jax",
    "jaxlib",
    "flatbuffers",
    "joblib",
    "pillow",
    "pytz",
    "scikit-learn",
    "scipy",
    "energyflow",
)
# linux-aarch64: the roots of environments/base, notebook side included (the e2e pair).
AARCH64_ROOTS = BASE_ROOTS
AARCH64_WHEEL_TAGS = (
    "manylinux_2_28_aarch64",
    "manylinux_2_27_aarch64",
    "manylinux_2_26_aarch64",
    "manylinux_2_17_aarch64",
    "manylinux2014_aarch64",
)
# More releases, as conda-forge keeps them: toolz and pytz so that a relock can move a
# small package; the newest dask, which the coffea environments cannot take (dask-awkward
# caps it); numpy 1.x and what its solve needs, since ml's energyflow requires
# wasserstein, which caps numpy below 2.
OLDER = (
    "toolz==1.1.0",
    "pytz==2026.5",
    "dask==2026.8.0",
    "distributed==2026.8.0",
    "numpy==1.26.4",
    "jax==0.7.1",
    "jaxlib==0.7.1",
    "ml-dtypes==0.5.4",
    "pandas==3.0.6",
    # Notebook-only in every seed environment: bench.layers bumps it.
    "send2trash==1.8.3",
)
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Time limits, in seconds, of the commands that talk to PyPI: one `uv pip compile` of the
# closure, and one pip run (downloading every pinned wheel, gigabytes, on a cold cache).
RESOLVE_TIMEOUT = 30 * 60
PIP_TIMEOUT = 60 * 60
KEY_FILE = ".channel-key"


@dataclass(frozen=True, order=True)
class Pin:
    name: str  # canonical
    version: str
    sha256: str

    def line(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


def cpython_source() -> Path:
    source = Path(os.environ.get("DASKHUB_CPYTHON", DEFAULT_CPYTHON))
    if not (source / "bin" / "python3").exists():
        raise BuildToolError(f"no CPython at {source} to package; set DASKHUB_CPYTHON")
    return source


def channel_key() -> str:
    """Hash of every input: the pins, the converter's code and the CPython it packages."""
    cpython = cpython_source()
    sources = [(DEVSUPPORT / name).read_bytes() for name in CONVERTER_SOURCES]
    pins = [p.read_bytes() for p in (REQUIREMENTS, OLDER_REQUIREMENTS, AARCH64_REQUIREMENTS)]
    debs = [deb.name for platform in DEBIAN_PLATFORMS for deb in download_debs(platform)]
    return digest([*pins, *sources, str(cpython), python_version(cpython), *debs])


def standin_root() -> Path:
    """The folder the web server serves: <cache>/standin/current, holding conda-forge/."""
    return cache_root() / "standin" / "current"


def build_channel() -> Path:
    """Build (or reuse) the stand-in and return its channel folder (.../conda-forge).

    <cache>/standin/current is a symlink to the build for the current key, so a server
    started before a rebuild serves the new packages, and URLs recorded in locks stay
    valid across rebuilds that give the same packages.
    """
    key = channel_key()
    root = cache_root() / "standin"
    current = root / "current"
    with locked(root / "build.lock"):
        if _key_of(current) != key:
            _build_fresh(root, key)
            current_tmp = root / ".current.new"
            current_tmp.unlink(missing_ok=True)
            current_tmp.symlink_to(key)
            os.replace(current_tmp, current)
            _prune(root, keep=key)
    return current / CHANNEL_NAME


def _key_of(root: Path) -> str | None:
    marker = root / KEY_FILE
    return marker.read_text().strip() if marker.exists() else None


def _build_fresh(root: Path, key: str) -> None:
    started = time.monotonic()
    wheels = download_wheels(read_pins(REQUIREMENTS)) + download_wheels(
        read_pins(OLDER_REQUIREMENTS), OLDER_REQUIREMENTS
    )
    aarch64 = download_wheels(
        read_pins(AARCH64_REQUIREMENTS), AARCH64_REQUIREMENTS, AARCH64_WHEEL_TAGS
    )
    building = root / f".building-{key}"
    shutil.rmtree(building, ignore_errors=True)
    channel = building / CHANNEL_NAME
    with tempfile.TemporaryDirectory(dir=root, prefix=".staging-") as staging:
        _build(channel, Path(staging), wheels)
        _build_aarch64(channel, Path(staging) / "aarch64", aarch64)
    _progress("indexing")
    index_channel(channel)
    (building / KEY_FILE).write_text(key + "\n")
    shutil.rmtree(root / key, ignore_errors=True)
    building.rename(root / key)
    _progress(f"stand-in channel {key} built in {time.monotonic() - started:.0f} s")


def _prune(root: Path, keep: str) -> None:
    """Remove the builds for other keys and leftovers of interrupted builds."""
    for path in root.iterdir():
        if path.is_dir() and not path.is_symlink() and path.name != keep:
            shutil.rmtree(path)


def _build(channel: Path, staging: Path, wheels: list[Path]) -> None:
    _progress("staging CPython")
    python = stage_python(cpython_source(), staging / "python")
    target = Target(python.version)
    jobs = [
        (
            PackageMeta("python", python.version, "h0_local", license="PSF-2.0"),
            python.root,
            python.text_placeholders,
        )
    ]
    infos = [read_wheel(wheel) for wheel in wheels]
    # Extras are expanded with the newest release's requirements.
    newest = {}
    for info in sorted(infos, key=lambda i: Version(i.version)):
        newest[info.name] = info
    _progress(f"converting {len(infos)} wheels")
    for info in infos:
        tree = staging / "wheels" / f"{info.name}-{info.version}"
        meta, placeholders = stage_wheel(info, tree, target, conda_depends(info, newest, target))
        jobs.append((meta, tree, tuple(placeholders)))
    _progress("byte-compiling")
    wheel_trees = [tree for _, tree, _ in jobs[1:]]
    compile_pyc(python, [(t / target.site_packages, t) for t in wheel_trees])
    debian = stage_debian_python("linux-64", staging / "python-debian")
    jobs.append(
        (
            PackageMeta("python", debian.version, "h0_debian", license="PSF-2.0"),
            debian.root,
            debian.text_placeholders,
        )
    )
    _progress(f"packing {len(jobs)} packages")
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = [pool.submit(write_package, m, t, channel, p) for m, t, p in jobs]
        for future in futures:
            future.result()
    hub = newest[canonicalize_name("jupyterhub")]
    singleuser = PackageMeta(
        "jupyterhub-singleuser",
        hub.version,
        "0",
        depends=(f"jupyterhub =={hub.version}", "jupyter-server"),
        subdir="noarch",
    )
    write_package(singleuser, None, channel)
    write_package(*_probe(staging / "probe", target), channel)


def _probe(tree: Path, target: Target) -> tuple[PackageMeta, Path]:
    """`daskhub-probe` (probe.py): the hostile package the sandbox tests add."""
    module = tree / target.site_packages / "daskhub_probe.py"
    module.parent.mkdir(parents=True)
    module.write_bytes((HERE / "probe.py").read_bytes())
    meta = PackageMeta("daskhub-probe", "1.0", "0", depends=(f"python {target.short}.*",))
    return meta, tree


def _build_aarch64(channel: Path, staging: Path, wheels: list[Path]) -> None:
    """linux-aarch64 packages, laid out and compiled on this host: nothing is emulated."""
    _progress("staging Debian's arm64 CPython")
    python = stage_debian_python("linux-aarch64", staging / "python")
    target = Target(python.version, subdir="linux-aarch64")
    meta = PackageMeta(
        "python", python.version, "h0_debian", license="PSF-2.0", subdir="linux-aarch64"
    )
    jobs = [(meta, python.root, python.text_placeholders)]
    infos = [read_wheel(wheel) for wheel in wheels]
    newest = {info.name: info for info in infos}
    _progress(f"converting {len(infos)} aarch64 wheels")
    for info in infos:
        tree = staging / "wheels" / f"{info.name}-{info.version}"
        meta, placeholders = stage_wheel(info, tree, target, conda_depends(info, newest, target))
        jobs.append((meta, tree, tuple(placeholders)))
    compile_pyc(
        python,
        [(t / target.site_packages, t) for _, t, _ in jobs[1:]],
        interpreter=Path(sys.executable),
    )
    _progress(f"packing {len(jobs)} aarch64 packages")
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for future in [pool.submit(write_package, m, t, channel, p) for m, t, p in jobs]:
            future.result()


def read_pins(path: Path) -> list[Pin]:
    pins = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, _, digest_part = line.partition(" --hash=sha256:")
        name, _, version = requirement.partition("==")
        pins.append(Pin(canonicalize_name(name), version, digest_part.strip()))
    return pins


def download_wheels(
    pins: list[Pin], requirements: Path = REQUIREMENTS, platforms: tuple[str, ...] = ()
) -> list[Path]:
    """The pinned wheels, from <cache>/wheels when there with the right hash, else from PyPI
    (for another machine than this one when `platforms` names its wheel tags)."""
    folder = cache_root() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    found = _wheels_in(folder, pins)
    if len(found) < len(pins):
        _progress(f"pip download {len(pins) - len(found)} pinned wheels -> {folder}")
        _pip(
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            *_for_platforms(platforms),
            "-r",
            str(requirements),
            "-d",
            str(folder),
        )
        found = _wheels_in(folder, pins)
    missing = sorted(f"{pin.name}=={pin.version}" for pin in pins if pin not in found)
    if missing:
        raise BuildToolError(f"pip download did not provide {missing}")
    return sorted(found.values())


def _for_platforms(platforms: tuple[str, ...]) -> list[str]:
    """pip's options for wheels of another machine, for the packaged CPython's version."""
    if not platforms:
        return []
    short = python_version(cpython_source()).rsplit(".", 1)[0]
    abi = f"cp{short.replace('.', '')}"
    options = [
        "--python-version",
        short,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]
    return options + [arg for tag in platforms for arg in ("--platform", tag)]


def _wheels_in(folder: Path, pins: list[Pin]) -> dict[Pin, Path]:
    by_release = {(pin.name, Version(pin.version)): pin for pin in pins}
    found = {}
    for wheel in folder.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        pin = by_release.get((name, version))
        if pin and file_sha256(wheel) == pin.sha256:
            found[pin] = wheel
    return found


def relock() -> list[Pin]:
    """Resolve ROOTS for the packaged CPython and rewrite both requirements files.

    uv resolves (pip's resolver backtracks for hours on this set); pip then reports the
    one wheel it would take for each exact pin, with its sha256.
    """
    uv = shutil.which("uv")
    if uv is None:
        raise BuildToolError("--relock needs uv on PATH (pip install uv)")
    short = python_version(cpython_source()).rsplit(".", 1)[0]
    with tempfile.TemporaryDirectory() as scratch:
        roots, resolved = Path(scratch) / "roots.in", Path(scratch) / "resolved.txt"
        roots.write_text("\n".join(ROOTS) + "\n")
        result = run(
            [
                uv,
                "pip",
                "compile",
                str(roots),
                "--python-version",
                short,
                "--python-platform",
                "x86_64-manylinux_2_28",
                "--only-binary",
                ":all:",
                "--no-header",
                "--no-annotate",
                "-o",
                str(resolved),
            ],
            env=_pypi_env(),
            capture_output=True,
            text=True,
            timeout=RESOLVE_TIMEOUT,
        )
        if result.returncode != 0:
            raise BuildToolError(f"uv pip compile failed:\n{result.stderr[-3000:]}")
        pins = _hashed(resolved.read_text().split())
        older = _hashed(list(OLDER))
        _write_pins(REQUIREMENTS, pins, f"Roots: {' '.join(ROOTS)}")
        # The same releases for linux-aarch64, where base's closure needs them.
        roots.write_text("\n".join(AARCH64_ROOTS) + "\n")
        result = run(
            [
                uv,
                "pip",
                "compile",
                str(roots),
                "--python-version",
                short,
                "--python-platform",
                "aarch64-manylinux_2_28",
                "--only-binary",
                ":all:",
                "-c",
                str(REQUIREMENTS),
                "--no-header",
                "--no-annotate",
                "-o",
                str(resolved),
            ],
            env=_pypi_env(),
            capture_output=True,
            text=True,
            timeout=RESOLVE_TIMEOUT,
        )
        if result.returncode != 0:
            raise BuildToolError(f"uv pip compile (aarch64) failed:\n{result.stderr[-3000:]}")
        aarch64 = _hashed(resolved.read_text().split(), AARCH64_WHEEL_TAGS)
    _write_pins(OLDER_REQUIREMENTS, older, "More releases of some packages (OLDER in channel.py)")
    _write_pins(AARCH64_REQUIREMENTS, aarch64, f"linux-aarch64, roots: {' '.join(AARCH64_ROOTS)}")
    return pins + older + aarch64


def _hashed(requirements: list[str], platforms: tuple[str, ...] = ()) -> list[Pin]:
    with tempfile.TemporaryDirectory() as scratch:
        listed, report = Path(scratch) / "pins.txt", Path(scratch) / "report.json"
        listed.write_text("\n".join(requirements) + "\n")
        target = ["--target", str(Path(scratch) / "target")] if platforms else []
        _pip(
            "install",
            "--dry-run",
            "--ignore-installed",
            "--no-deps",
            "--only-binary=:all:",
            *_for_platforms(platforms),
            *target,
            "--quiet",
            "--report",
            str(report),
            "-r",
            str(listed),
        )
        installs = json.loads(report.read_text())["install"]
    return sorted(
        Pin(
            canonicalize_name(item["metadata"]["name"]),
            item["metadata"]["version"],
            item["download_info"]["archive_info"]["hashes"]["sha256"],
        )
        for item in installs
    )


def _write_pins(path: Path, pins: list[Pin], what: str) -> None:
    header = [
        "# The pinned wheels of the conda-forge stand-in (devsupport/standin/channel.py).",
        "# Generated by `python -m devsupport.standin relock`; do not edit by hand.",
        f"# {what}",
    ]
    path.write_text("\n".join(header + [pin.line() for pin in pins]) + "\n")


def _pypi_env() -> dict[str, str]:
    """PyPI only, ignoring the host's pip config; the system CA bundle."""
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if SYSTEM_CA_BUNDLE.exists():
        env.setdefault("PIP_CERT", str(SYSTEM_CA_BUNDLE))
        env.setdefault("SSL_CERT_FILE", str(SYSTEM_CA_BUNDLE))
    return env


def _pip(*args: str) -> None:
    """Run the packaged CPython's pip against PyPI."""
    python = cpython_source() / "bin" / "python3"
    result = run(
        [str(python), "-m", "pip", *args],
        env=_pypi_env(),
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        what=f"pip {args[0]}",
    )
    if result.returncode != 0:
        raise BuildToolError(
            f"pip {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )


def _progress(message: str) -> None:
    log.info(message)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (once) the conda-forge stand-in")
    parser.add_argument("--relock", action="store_true", help="re-resolve the pinned closure")
    args = parser.parse_args(argv)
    log_progress()
    if args.relock:
        pins = relock()
        print(f"{len(pins)} pins written to {REQUIREMENTS} and {OLDER_REQUIREMENTS}")
        return
    print(build_channel())


if __name__ == "__main__":
    main()
