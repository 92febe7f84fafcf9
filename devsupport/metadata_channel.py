"""A conda-forge METADATA channel for solver tests, made of records from public lock files.

This machine cannot reach conda-forge, and solving and locking need only metadata
(names, versions, builds, dependencies, hashes), not package archives. The committed
lock files of public repositories hold exactly that for thousands of real conda-forge
packages, CUDA builds of pytorch and tensorflow among them. This module:

- ``extract``: reads those lock files (conda-lock v1) from local clones, keeps the
  `linux-64` conda records, and writes them, deduplicated by sha256, one JSON object per
  line, to ``tests/data/metadata-channel/records.jsonl`` (committed);
- ``build_channel``: turns that file into ``linux-64/repodata.json`` and
  ``noarch/repodata.json`` under a folder, which rattler reads as a `file://` channel.

What a conda-lock record does not keep, the channel does not have: `constrains`,
`track_features`, timestamps, and the build part of dependency specs
(`python_abi 3.12.*`, not `python_abi 3.12.* *_cp312`). The build number is read from the
end of the build string (conda-forge's `..._3`). So this channel solves a little more
loosely than conda-forge would; each lock file's own solution is always in it.

Regenerate the records (after fetching the repositories below at those commits)::

    python -m devsupport.metadata_channel extract DIR_OF_CLONES

where DIR_OF_CLONES holds one git directory per repository, named `owner+name` (or
`owner+name/repo`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from devsupport import REPO

DATA = REPO / "tests" / "data" / "metadata-channel"
RECORDS = DATA / "records.jsonl"
SUBDIRS = ("linux-64", "noarch")

# (repository, commit, lock files), oldest first: when two files hold the same package
# (same sha256) with different dependencies, conda-forge patched its repodata in between,
# and the newer file's record wins.
SOURCES: list[tuple[str, str, tuple[str, ...]]] = [
    # The last commit on Python 3.11 (2024-06-23, "Bump to python 3.12" follows): what this
    # project's base spec pins; tensorflow 2.16 and pytorch 2.3, CUDA 12.0 builds.
    (
        "pangeo-data/pangeo-docker-images",
        "ddb2bb7f4c4095f2f5307c1c3edc3f96897d66fa",
        (
            "base-notebook/conda-lock.yml",
            "pangeo-notebook/conda-lock.yml",
            "ml-notebook/conda-lock.yml",
            "pytorch-notebook/conda-lock.yml",
        ),
    ),
    (
        "BChangs99/dsci522-dockerfile-practice",
        "bd535874919a74533d96ece99b4c6b25615dcf23",
        ("conda-lock.yml",),
    ),  # 2024-11: Python 3.11, numpy 2.1
    (
        "GenericMappingTools/agu24workshop",
        "33ff20b806983c09f6579dc95b084e4d81a5974d",
        ("conda-lock.yml",),
    ),  # 2024-12
    # pangeo-docker-images in 2026-01: Python 3.12, tensorflow 2.19 and pytorch 2.10, CUDA 12.9.
    (
        "pangeo-data/pangeo-docker-images",
        "2f5532bd74055a15071d177a91d434446f0669e2",
        (
            "base-notebook/conda-lock.yml",
            "pangeo-notebook/conda-lock.yml",
            "ml-notebook/conda-lock.yml",
            "pytorch-notebook/conda-lock.yml",
        ),
    ),
    (
        "CryoInTheCloud/hub-image",
        "90ac2f8ac68609072fd9f52fc9b0aeb2cc8f458c",
        ("conda-lock.yml",),
    ),  # 2026-05
]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _record(package: dict) -> dict:
    url: str = package["url"]
    subdir, filename = url.rsplit("/", 2)[-2:]
    stem = filename.removesuffix(".conda").removesuffix(".tar.bz2")
    name_version, build = stem.rsplit("-", 1)
    number = re.search(r"(?:^|_)(\d+)$", build)
    depends = [
        f"{name} {constraint}".strip() for name, constraint in package["dependencies"].items()
    ]
    record = {
        "subdir": subdir,
        "fn": filename,
        "name": package["name"],
        "version": str(package["version"]),
        "build": build,
        "build_number": int(number.group(1)) if number else 0,
        "depends": sorted(depends),
        "md5": package["hash"]["md5"],
        "sha256": package["hash"]["sha256"],
    }
    assert name_version == f"{record['name']}-{record['version']}", url
    if subdir == "noarch":
        python = any(d.split(" ")[0] == "python" for d in depends)
        record["noarch"] = "python" if python else "generic"
    return record


def extract(clones: Path) -> int:
    """Read the SOURCES lock files from `clones` and write RECORDS; returns the count."""
    by_sha: dict[str, dict] = {}
    for repo, commit, paths in SOURCES:
        git_dir = clones / repo.replace("/", "+")
        if (git_dir / "repo").is_dir():  # the layout of `fetch` mirrors
            git_dir = git_dir / "repo"
        for path in paths:
            text = subprocess.run(
                ["git", "-C", str(git_dir), "show", f"{commit}:{path}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            for package in yaml.load(text, Loader=_Loader)["package"]:
                if package["manager"] != "conda" or package["platform"] != "linux-64":
                    continue
                record = _record(package)
                by_sha[record["sha256"]] = record  # the newer file wins
    records = sorted(by_sha.values(), key=lambda r: (r["subdir"], r["fn"]))
    DATA.mkdir(parents=True, exist_ok=True)
    RECORDS.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return len(records)


def build_channel(dest: Path) -> Path:
    """Write `dest/{linux-64,noarch}/repodata.json` from RECORDS; returns `dest`."""
    repodata: dict[str, dict[str, Any]] = {
        subdir: {
            "info": {"subdir": subdir},
            "packages": {},
            "packages.conda": {},
            "repodata_version": 1,
        }
        for subdir in SUBDIRS
    }
    for line in RECORDS.read_text().splitlines():
        record = json.loads(line)
        filename = record.pop("fn")
        kind = "packages.conda" if filename.endswith(".conda") else "packages"
        repodata[record["subdir"]][kind][filename] = record
    for subdir, data in repodata.items():
        (dest / subdir).mkdir(parents=True, exist_ok=True)
        (dest / subdir / "repodata.json").write_text(json.dumps(data, sort_keys=True))
    return dest


#: Where the records come from: a lock made against this channel, its URLs put back.
CONDA_FORGE = "https://conda.anaconda.org/conda-forge"


def lock_as_conda_forge(root: Path, name: str) -> Path:
    """Lock environment `name` under `root` against this channel with the real `buildtool
    lock`, then put conda-forge's own URLs back where the channel's stand (every record
    is conda-forge's, with its real sha256): the lock a site with conda-forge makes, so
    `lock --check` and the generated docs have it, though nothing here can fetch it."""
    with tempfile.TemporaryDirectory() as scratch:
        channel = build_channel(Path(scratch) / "conda-forge").resolve().as_uri()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "buildtool.cli",
                "--root",
                str(root),
                "lock",
                name,
                "--channel",
                channel,
                "--quiet",
            ],
            capture_output=True,
            text=True,
            cwd=scratch,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr)
        path = root / name / "conda-lock.yml"
        path.write_text(path.read_text().replace(channel, CONDA_FORGE))
    return path


if __name__ == "__main__":
    if sys.argv[1:2] == ["extract"]:
        print(f"{extract(Path(sys.argv[2]))} records -> {RECORDS}")
    elif sys.argv[1:2] == ["lock"]:
        print(lock_as_conda_forge(REPO / "environments", sys.argv[2]))
    else:
        print(build_channel(Path(sys.argv[1])).resolve().as_uri())
