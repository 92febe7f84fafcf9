"""A local conda channel of real, runnable packages, made without any conda channel.

  python                 the relocated CPython found at $DASKHUB_CPYTHON
                         (default /root/.pyenv/versions/3.11.7), build h0_local
  <wheels>               the pinned closure in realchannel-requirements.txt, converted
                         (wheelconv.py), all linux-64
  jupyterhub-singleuser  a noarch metapackage on jupyterhub and jupyter-server

The channel is built under <cache>/realchannel/<key>, the key hashing the pins, the
converter's sources and the CPython, and served as <cache>/realchannel/current (a symlink
to the latest key); wheels are kept in <cache>/wheels between builds.

CLI:
  python -m tests.support.realchannel [--dest DIR] [--url]   build or reuse; print the path
  python -m tests.support.realchannel --relock               re-resolve the pins (needs PyPI)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from tests.support.cache import cache_root, digest, file_sha256, locked
from tests.support.condaenv import index_channel
from tests.support.condapkg import PackageMeta, write_package
from tests.support.pythonpkg import compile_pyc, python_version, stage_python
from tests.support.wheelconv import Target, conda_depends, read_wheel, stage_wheel

HERE = Path(__file__).parent
REQUIREMENTS = HERE / "realchannel-requirements.txt"
CONVERTER_SOURCES = (
    "cache.py",
    "condaenv.py",
    "condapkg.py",
    "pythonpkg.py",
    "wheelconv.py",
    "realchannel.py",
)
DEFAULT_CPYTHON = Path("/root/.pyenv/versions/3.11.7")
# What the images install; the pins are the closure of these.
ROOTS = (
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
    "jupyterlab",
    "jupyterhub",
    "ipykernel",
    "ipywidgets",
    "dask-labextension",
    "pip",
)
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
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
        raise FileNotFoundError(f"no CPython at {source}; set DASKHUB_CPYTHON")
    return source


def channel_key() -> str:
    """Hash of every input: the pins, the converter's code and the CPython it packages."""
    cpython = cpython_source()
    sources = [(HERE / name).read_bytes() for name in CONVERTER_SOURCES]
    return digest([REQUIREMENTS.read_bytes(), *sources, str(cpython), python_version(cpython)])


def build_real_channel(dest: Path | None = None) -> Path:
    """Build (or reuse) the channel and return its folder; with dest, a copy there.

    The folder is <cache>/realchannel/current, a symlink to the build for the current key,
    so URLs recorded in lock files stay valid across rebuilds that give the same packages.
    """
    key = channel_key()
    root = cache_root() / "realchannel"
    current = root / "current"
    with locked(root / "build.lock"):
        if _key_of(current) != key:
            _build_fresh(root, key)
            current_tmp = root / ".current.new"
            current_tmp.unlink(missing_ok=True)
            current_tmp.symlink_to(key)
            os.replace(current_tmp, current)
            _prune(root, keep=key)
    if dest is None:
        return current
    return _mirror(current, Path(dest), key)


def _key_of(channel: Path) -> str | None:
    marker = channel / KEY_FILE
    return marker.read_text().strip() if marker.exists() else None


def _build_fresh(root: Path, key: str) -> None:
    started = time.monotonic()
    wheels = download_wheels(read_pins())
    building = root / f".building-{key}"
    shutil.rmtree(building, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".staging-") as staging:
        _build(building, Path(staging), wheels)
    _progress("indexing")
    index_channel(building)
    (building / KEY_FILE).write_text(key + "\n")
    shutil.rmtree(root / key, ignore_errors=True)
    building.rename(root / key)
    _progress(f"channel {key} built in {time.monotonic() - started:.0f} s")


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
    infos = {info.name: info for info in map(read_wheel, wheels)}
    _progress(f"converting {len(infos)} wheels")
    for info in infos.values():
        tree = staging / "wheels" / info.name
        meta, placeholders = stage_wheel(info, tree, target, conda_depends(info, infos, target))
        jobs.append((meta, tree, tuple(placeholders)))
    _progress("byte-compiling")
    wheel_trees = [tree for _, tree, _ in jobs[1:]]
    compile_pyc(python, [(t / target.site_packages, t) for t in wheel_trees])
    _progress(f"packing {len(jobs)} packages")
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(write_package, m, t, channel, p) for m, t, p in jobs]
        for future in futures:
            future.result()
    hub = infos[canonicalize_name("jupyterhub")]
    singleuser = PackageMeta(
        "jupyterhub-singleuser",
        hub.version,
        "0",
        depends=(f"jupyterhub =={hub.version}", "jupyter-server"),
        subdir="noarch",
    )
    write_package(singleuser, None, channel)


def read_pins() -> list[Pin]:
    pins = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, _, digest_part = line.partition(" --hash=sha256:")
        name, _, version = requirement.partition("==")
        pins.append(Pin(canonicalize_name(name), version, digest_part.strip()))
    return pins


def download_wheels(pins: list[Pin]) -> list[Path]:
    """The pinned wheels, from <cache>/wheels when there with the right hash, else from PyPI."""
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
            "-r",
            str(REQUIREMENTS),
            "-d",
            str(folder),
        )
        found = _wheels_in(folder, pins)
    missing = sorted(f"{pin.name}=={pin.version}" for pin in pins if pin not in found)
    if missing:
        raise RuntimeError(f"pip download did not provide {missing}")
    return sorted(found.values())


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
    """Resolve ROOTS for the packaged CPython on PyPI and rewrite the requirements file."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        _pip(
            "install",
            "--dry-run",
            "--ignore-installed",
            "--only-binary=:all:",
            "--quiet",
            "--report",
            str(report),
            *ROOTS,
        )
        installs = json.loads(report.read_text())["install"]
    pins = sorted(
        Pin(
            canonicalize_name(item["metadata"]["name"]),
            item["metadata"]["version"],
            item["download_info"]["archive_info"]["hashes"]["sha256"],
        )
        for item in installs
    )
    header = [
        "# The pinned closure of the real test channel (tests/support/realchannel.py).",
        "# Generated by `python -m tests.support.realchannel --relock`; do not edit by hand.",
        f"# Roots: {' '.join(ROOTS)}",
    ]
    REQUIREMENTS.write_text("\n".join(header + [pin.line() for pin in pins]) + "\n")
    return pins


def _pip(*args: str) -> None:
    """Run the packaged CPython's pip against PyPI only, ignoring the host's pip config."""
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if "PIP_CERT" not in env and SYSTEM_CA_BUNDLE.exists():
        env["PIP_CERT"] = str(SYSTEM_CA_BUNDLE)
    python = cpython_source() / "bin" / "python3"
    result = subprocess.run(
        [str(python), "-m", "pip", *args], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"pip {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )


def _mirror(channel: Path, dest: Path, key: str) -> Path:
    """Make dest a copy of channel (hard links where possible), unless it already is."""
    marker = dest / KEY_FILE
    if marker.exists() and marker.read_text().strip() == key:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for subdir in channel.iterdir():
        if subdir.is_dir():
            shutil.rmtree(dest / subdir.name, ignore_errors=True)
            shutil.copytree(subdir, dest / subdir.name, copy_function=_link_or_copy)
    shutil.copyfile(channel / KEY_FILE, marker)
    return dest


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _progress(message: str) -> None:
    print(f"[realchannel {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (once) the real local conda channel")
    parser.add_argument("--dest", type=Path, help="copy the channel into this folder")
    parser.add_argument("--url", action="store_true", help="print a file:// URL, not a path")
    parser.add_argument("--relock", action="store_true", help="re-resolve the pinned closure")
    args = parser.parse_args(argv)
    if args.relock:
        pins = relock()
        print(f"{len(pins)} pins written to {REQUIREMENTS}")
        return
    channel = build_real_channel(args.dest)
    print(channel.absolute().as_uri() if args.url else channel)


if __name__ == "__main__":
    main()
