"""Run the image tests (pytest + testinfra, in `buildtool/imagetests/`) against a built pair."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from buildtool.errors import BuildToolError
from buildtool.proc import run
from buildtool.render import RenderedPair

TESTS = Path(__file__).resolve().parent / "imagetests"
# Time limit, in seconds, of one platform's image tests: containers of both images, arm64
# ones under qemu, a Dask cluster among them. Past it they hang; pytest and every process
# it started (docker clients) are killed; containers they started may stay behind.
IMAGE_TESTS_TIMEOUT = 60 * 60


def test_pair(root: Path, build_dir: Path, env: str, extra_args: list[str] | None = None) -> None:
    """Raise BuildToolError unless every image test passes on every platform; a JUnit
    report per platform stays behind."""
    pair = RenderedPair.load(build_dir, env)
    for platform in pair.platforms:
        report = Path(pair.directory) / platform / "image-tests.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(TESTS),
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(TESTS),
            f"--junitxml={report}",
            "-q",
            *(extra_args or []),
        ]
        variables = {
            "BUILDTOOL_ROOT": str(root.resolve()),
            "BUILDTOOL_BUILD_DIR": str(build_dir.resolve()),
            "BUILDTOOL_ENV": env,
            "BUILDTOOL_PLATFORM": platform,
        }
        result = run(
            command,
            env={**os.environ, **variables},
            timeout=IMAGE_TESTS_TIMEOUT,
            what=f"the image tests of {env} on {platform}",
        )
        if result.returncode != 0:
            raise BuildToolError(f"image tests failed for {env} on {platform} (report: {report})")
