"""The stand-in's CPython made from Debian's own build of it, for arm64 and amd64.

Why Debian's build: the stand-in's main linux-64 CPython is this machine's pyenv build,
which exists for x86_64 only, and building CPython under emulation takes most of an hour
on two cores. Debian's bookworm archive has CPython 3.11 for arm64, built and tested by
Debian. Its amd64 build of the same release sits beside the pyenv one on linux-64: a lock
for both platforms needs one Python release that both have (distributed compares the full
version between client and workers), as conda-forge builds every release for both. The
.debs need nothing executed to unpack: `apt-get download` with a view of the host's own
sources for that architecture fetches them, and they are unpacked on the x86 host (`dpkg-deb
--fsys-tarfile`, extracted by `buildtool.common.confine.extract_tar`: nothing lands outside the
folder, and Debian's links to the system's own files, such as sitecustomize.py's to /etc,
are left out).

Laid out as a conda package (bin/python3.11, lib/python3.11 with lib-dynload), with
changes that make it behave like the upstream CPython conda-forge ships, whose packages
live in lib/python3.11/site-packages under the prefix. Debian's `site` module, frozen into
its interpreter, looks in dist-packages folders instead: lib/python3.11/dist-packages gets
one .pth file, which adds site-packages as a site folder (its .pth files processed).
Debian's `sysconfig.py`, which prefers /usr/local, is replaced by the upstream 3.11 one of
the host's CPython. Debian's sitecustomize hook and its EXTERNALLY-MANAGED marker are
left out. The interpreter is Debian's binary, linked against
the Debian libraries the base images carry (`DEBIAN_LIBRARIES`). Byte code is
compiled on the host by its own CPython 3.11 (the same byte code), as checked-hash pycs.
"""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
from pathlib import Path

from buildtool.common import BuildToolError, cache_root, extract_tar, run
from compat.vocabulary import PLATFORMS
from devsupport.cache import locked
from devsupport.standin.pythonpkg import DROPPED, StagedPython, compile_pyc

DEBIAN_PLATFORMS = tuple(PLATFORMS)
PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11")
# What those packages depend on (their Depends: fields): the base image needs them.
DEBIAN_LIBRARIES = (
    "libexpat1",
    "libdb5.3",
    "libsqlite3-0",
    "libssl3",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "zlib1g",
    "libncursesw6",
    "libtinfo6",
    "libreadline8",
    "libuuid1",
    "libnsl2",
    "libtirpc3",
    "libcrypt1",
    "media-types",
)
UPSTREAM = ("sysconfig.py",)
# Time limits, in seconds: `apt-get update` and `apt-get download` of four packages from
# the host's mirror; `dpkg-deb --fsys-tarfile` of one of them (local, a second).
APT_TIMEOUT = 15 * 60
DPKG_DEB_TIMEOUT = 5 * 60
SITE_PTH = (
    "import os, site, sys; "
    "site.addsitedir(os.path.join(sys.prefix, 'lib', 'python%d.%d' % sys.version_info[:2], "
    "'site-packages'))\n"
)


def download_debs(platform: str) -> list[Path]:
    """Debian's CPython 3.11 packages for `platform`, kept in <cache>/debs-<arch>/."""
    arch = PLATFORMS[platform].debian_architecture
    root = cache_root() / f"debs-{arch}"
    apt = root / "apt"
    with locked(root.with_suffix(".lock")):
        found = sorted((root / "debs").glob("*.deb"))
        if len(found) == len(PACKAGES):
            return found
        for folder in ("state/lists/partial", "cache/archives/partial", "debs"):
            (apt / folder if folder != "debs" else root / folder).mkdir(parents=True, exist_ok=True)
        (apt / "status").touch()
        options = [
            "-o",
            f"Dir::State={apt / 'state'}",
            "-o",
            f"Dir::State::status={apt / 'status'}",
            "-o",
            f"Dir::Cache={apt / 'cache'}",
            "-o",
            f"APT::Architecture={arch}",
            "-o",
            f"APT::Architectures={arch}",
            "-o",
            "APT::Sandbox::User=root",
        ]
        for command in (["update", "-qq"], ["download", *PACKAGES]):
            result = run(
                ["apt-get", *options, *command],
                cwd=root / "debs",
                capture_output=True,
                text=True,
                timeout=APT_TIMEOUT,
                what=f"apt-get {command[0]} ({arch})",
            )
            if result.returncode != 0:
                raise BuildToolError(f"apt-get {command[0]} ({arch}): {result.stderr[-2000:]}")
        found = sorted((root / "debs").glob("*.deb"))
    if len(found) != len(PACKAGES):
        raise BuildToolError(f"{root / 'debs'}: expected {len(PACKAGES)} .debs, found {found}")
    return found


def debian_version(debs: list[Path]) -> str:
    """The upstream version of the packaged CPython: 3.11.2 of 3.11.2-6+deb12u9."""
    minimal = next(d for d in debs if d.name.startswith("python3.11-minimal_"))
    return minimal.name.split("_")[1].split("-")[0]


def stage_debian_python(platform: str, root: Path) -> StagedPython:
    debs = download_debs(platform)
    version = debian_version(debs)
    short = ".".join(version.split(".")[:2])
    unpacked = root.parent / f"{root.name}-debs"
    shutil.rmtree(unpacked, ignore_errors=True)
    unpacked.mkdir(parents=True)
    for deb in debs:
        _unpack_deb(deb, unpacked)
    lib = f"python{short}"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(unpacked / "usr" / "bin" / lib, root / "bin" / lib)
    for alias in ("python3", "python"):
        (root / "bin" / alias).symlink_to(lib)
    shutil.copytree(
        unpacked / "usr" / "lib" / lib,
        root / "lib" / lib,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            *DROPPED, "sitecustomize.py", "EXTERNALLY-MANAGED", "dist-packages"
        ),
    )
    host = Path(sys.base_prefix) / "lib" / lib
    if not (host / "sysconfig.py").exists():
        raise BuildToolError(f"the host's CPython is not {short}: no {host / 'sysconfig.py'}")
    for name in UPSTREAM:
        shutil.copy2(host / name, root / "lib" / lib / name)
    (root / "lib" / lib / "site-packages").mkdir(exist_ok=True)
    (root / "lib" / lib / "site-packages" / "README.txt").write_text(
        "This directory exists so that 3rd party packages can be installed here.\n"
    )
    (root / "lib" / lib / "dist-packages").mkdir()
    (root / "lib" / lib / "dist-packages" / "conda-site-packages.pth").write_text(SITE_PTH)
    shutil.rmtree(unpacked)
    staged = StagedPython(root, version, ())
    compile_pyc(staged, [(root / "lib" / lib, root)], interpreter=Path(sys.executable))
    return staged


def _unpack_deb(deb: Path, dest: Path) -> None:
    """The files of a .deb (its data archive) into dest, each checked to stay inside it."""
    data = run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, timeout=DPKG_DEB_TIMEOUT
    )
    if data.returncode != 0:
        said = data.stderr.decode(errors="replace").strip()
        raise BuildToolError(f"{deb}: dpkg-deb cannot read it: {said or 'no message'}")
    with tarfile.open(fileobj=io.BytesIO(data.stdout)) as tar:
        extract_tar(tar, dest, archive=deb, skip_absolute_links=True)
