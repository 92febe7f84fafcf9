"""Debian bookworm base images made locally with debootstrap, since nothing can be pulled.

Three kinds:
  runtime        minbase + ca-certificates + tini + the shared libraries that the
                 CPythons of the stand-in channel link against (see channel.py)
  runtime-arm64  the same for arm64 (the channel's linux-aarch64 CPython is Debian's
                 only); its second stage runs under qemu
  builder        runtime + Debian's python3 and python3-venv, for the benchmarks'
                 baseline builder stages

Each is made on first use only: `devsupport.standin.up` asks for the runtime of each
platform wanted (linux-64 unless told otherwise) and for the builder only when told.

Each image is tagged by a hash of everything that goes into it (suite, package list,
the host's extra CA certificates, image config), e.g. local/debian-runtime:bookworm-0123abcd4567,
so a changed recipe gives a new tag and an unchanged one is reused. The debootstrap
target is kept under <cache>/rootfs so the image can be re-imported without downloading.

CLI: python -m devsupport.standin.baseimage {runtime,runtime-arm64,builder}   prints the tag
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from buildtool.common import BuildToolError, cache_root, run
from buildtool.image import BlobStore, Image, docker_cli, docker_load
from compat.vocabulary import PLATFORMS
from devsupport import log_progress
from devsupport.cache import digest, locked
from devsupport.dockercli import image_exists, require_docker
from devsupport.standin.debianpython import DEBIAN_LIBRARIES

log = logging.getLogger(__name__)
SUITE = "bookworm"
# Time limits, in seconds. debootstrap downloads and unpacks a base (arm64: its second
# stage under qemu, 4 min here); an hour means the mirror or the emulation hangs.
DEBOOTSTRAP_TIMEOUT = 60 * 60
# update-ca-certificates in the new root (under qemu for arm64): seconds.
CA_UPDATE_TIMEOUT = 10 * 60

# Libraries that lib-dynload of the relocated CPython 3.11 needs (_ssl, _hashlib, _sqlite3,
# _ctypes, _bz2, _lzma, zlib, readline, _curses, _uuid, nis, _crypt) plus the C++ runtime
# that compiled wheels expect, and what Debian's CPython links against (the stand-in's on
# linux-aarch64, and beside the relocated one on linux-64). Most are in minbase already;
# naming them keeps them there. The same list for both architectures.
RUNTIME_PACKAGES = tuple(
    dict.fromkeys(
        (
            "ca-certificates",
            "tini",
            "libssl3",
            "libsqlite3-0",
            "libffi8",
            "libbz2-1.0",
            "liblzma5",
            "zlib1g",
            "libreadline8",
            "libncursesw6",
            "libtinfo6",
            "libuuid1",
            "libnsl2",
            "libtirpc3",
            "libcrypt1",
            "libstdc++6",
            "libgcc-s1",
            *DEBIAN_LIBRARIES,
        )
    )
)
BUILDER_PACKAGES = (*RUNTIME_PACKAGES, "python3", "python3-venv")

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    f"ENV SSL_CERT_FILE={CA_BUNDLE}",
    f"ENV PIP_CERT={CA_BUNDLE}",
    'CMD ["/bin/bash"]',
)
# Later `apt-get install`s in derived images skip docs too, like the trimmed base.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*/LC_MESSAGES/*.mo
"""
TRIMMED = (
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*/LC_MESSAGES/*.mo",
    "var/lib/apt/lists/*",
    "var/cache/apt/*",
    "var/cache/ldconfig/aux-cache",
    "var/log/*.log",
    "var/log/apt/*",
)
HOST_LOCAL_CAS = Path("/usr/local/share/ca-certificates")


@dataclass(frozen=True)
class BaseImageSpec:
    kind: str
    packages: tuple[str, ...]
    arch: str = "amd64"  # Debian's name

    @property
    def repository(self) -> str:
        return f"local/debian-{self.kind}"

    def key(self) -> str:
        cas = [(p.name, p.read_bytes()) for p in host_local_cas()]
        parts: list[str | bytes] = [
            SUITE,
            "minbase",
            *self.packages,
            *IMAGE_CHANGES,
            DPKG_EXCLUDES,
            *TRIMMED,
        ]
        parts += [self.arch] if self.arch != "amd64" else []
        parts += [item for name, data in cas for item in (name, data)]
        return digest(parts, length=12)

    def tag(self) -> str:
        return f"{self.repository}:{SUITE}-{self.key()}"


SPECS = {
    "runtime": BaseImageSpec("runtime", RUNTIME_PACKAGES),
    "runtime-arm64": BaseImageSpec("runtime-arm64", RUNTIME_PACKAGES, "arm64"),
    "builder": BaseImageSpec("builder", BUILDER_PACKAGES),
}
# The runtime image of each platform the stand-in serves packages for.
RUNTIME_KINDS = {"linux-64": "runtime", "linux-aarch64": "runtime-arm64"}


def host_local_cas() -> list[Path]:
    """Extra CA certificates the host trusts (e.g. an egress proxy's); images need them too."""
    if not HOST_LOCAL_CAS.is_dir():
        return []
    return sorted(HOST_LOCAL_CAS.rglob("*.crt"))


def debian_mirror() -> str:
    """$DEBIAN_MIRROR, else the host's apt source for the bookworm suite."""
    if mirror := os.environ.get("DEBIAN_MIRROR"):
        return mirror
    sources = Path("/etc/apt")
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]:
        if path.is_file() and (mirror := _mirror_in(path.read_text())):
            return mirror
    raise BuildToolError(f"no apt source for {SUITE} found under /etc/apt; set DEBIAN_MIRROR")


def _mirror_in(text: str) -> str | None:
    """The URI of the first entry for the plain suite, in one-line or deb822 format."""
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
            return words[1]
    for stanza in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        for line in stanza.splitlines():
            name, colon, value = line.partition(":")
            if colon and not name.startswith("#"):
                fields[name.strip()] = value.split()
        if SUITE in fields.get("Suites", []) and "deb" in fields.get("Types", []):
            return fields["URIs"][0]
    return None


def ensure_base_image(kind: str) -> str:
    """Return the docker tag of a base image of this kind, building it on first use."""
    if kind not in SPECS:
        raise ValueError(f"unknown base image kind {kind!r}; choose from {sorted(SPECS)}")
    spec = SPECS[kind]
    require_docker()
    tag = spec.tag()
    if image_exists(tag):
        return tag
    rootfs_dir = cache_root() / "rootfs"
    # One lock for both kinds: their debootstraps share the .deb cache.
    with locked(rootfs_dir / "build.lock"):
        if not image_exists(tag):
            rootfs = _ensure_rootfs(spec, rootfs_dir / f"{kind}-{SUITE}-{spec.key()}")
            _import(rootfs, tag, spec.arch)
    return tag


def _ensure_rootfs(spec: BaseImageSpec, target: Path) -> Path:
    if (target / ".complete").exists():
        return target
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    debs = target.parent / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    log = target.parent / f"{spec.kind}-debootstrap.log"
    _progress(f"debootstrap {spec.kind} ({len(spec.packages)} packages) -> {target}")
    started = time.monotonic()
    with log.open("w") as out:
        result = run(
            [
                "debootstrap",
                f"--arch={spec.arch}",
                "--variant=minbase",
                f"--include={','.join(spec.packages)}",
                f"--cache-dir={debs}",
                SUITE,
                str(partial),
                debian_mirror(),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=DEBOOTSTRAP_TIMEOUT,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise BuildToolError(f"debootstrap failed (log {log}):\n{tail}")
    _progress(f"debootstrap {spec.kind} took {time.monotonic() - started:.0f} s")
    _trim_and_trust(partial)
    (partial / ".complete").touch()
    for stale in target.parent.glob(f"{spec.kind}-{SUITE}-*"):
        shutil.rmtree(stale)
    partial.rename(target)
    return target


def _trim_and_trust(rootfs: Path) -> None:
    """Drop docs and apt lists; add the host's extra CA certificates to the bundle."""
    for pattern in TRIMMED:
        for path in rootfs.glob(pattern):
            _remove(path)
    for doc in (rootfs / "usr/share/doc").glob("*/*"):
        if doc.name != "copyright":
            _remove(doc)
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker-excludes").write_text(DPKG_EXCLUDES)
    cas = host_local_cas()
    if cas:
        local = rootfs / HOST_LOCAL_CAS.relative_to("/")
        local.mkdir(parents=True, exist_ok=True)
        for ca in cas:
            shutil.copyfile(ca, local / ca.name)
        run(
            ["chroot", str(rootfs), "update-ca-certificates"],
            check=True,
            capture_output=True,
            timeout=CA_UPDATE_TIMEOUT,
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _import(rootfs: Path, tag: str, arch: str) -> None:
    """Load the rootfs as a one-layer image of its architecture (`docker import` cannot
    say which: the engine leaves its own architecture in the config)."""
    _progress(f"loading {tag} ({arch})")
    env = [change.removeprefix("ENV ") for change in IMAGE_CHANGES if change.startswith("ENV ")]
    (command,) = [json.loads(c.removeprefix("CMD ")) for c in IMAGE_CHANGES if c.startswith("CMD ")]
    with tempfile.TemporaryDirectory(dir=rootfs.parent, prefix=".import-") as tmp:
        store = BlobStore(Path(tmp))
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "--exclude=./.complete", "-c", "."],
            stdout=subprocess.PIPE,
        )
        assert tar.stdout is not None
        try:
            layer = store.write_stream(tar.stdout, int(time.time()), f"debootstrap {SUITE}")
        finally:
            tar.stdout.close()
        if tar.wait() != 0:
            raise BuildToolError(f"tar of {rootfs} failed")
        (platform,) = [p.subdir for p in PLATFORMS.values() if p.debian_architecture == arch]
        image = Image(platform, {"config": {"Env": env, "Cmd": command}}, (layer,))
        try:
            docker_load(docker_cli(), [(tag, image)], store)
        except RuntimeError as exc:
            raise BuildToolError(f"importing {rootfs} as {tag}: {exc}") from None


def _progress(message: str) -> None:
    log.info(message)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (once) and print a local base image tag")
    parser.add_argument("kind", choices=sorted(SPECS))
    args = parser.parse_args(argv)
    log_progress()
    print(ensure_base_image(args.kind))


if __name__ == "__main__":
    main()
