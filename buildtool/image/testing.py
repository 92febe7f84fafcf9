"""Run the image tests (pytest + testinfra, in `buildtool/image/suite/`) against a pair:
a built site pair, or a published extension pair pulled by digest.

What the tests check is handed to them as a `Subject` (a JSON file named by
`BUILDTOOL_SUBJECT`), one per platform, so the same tests run on both kinds of pair.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from buildtool.common import BuildToolError, read_published, run
from buildtool.image.build import BuiltPair
from buildtool.image.engine import docker
from buildtool.image.render import RenderedPair
from buildtool.image.sandbox import BUILD_ID_ENV, build_id, sandbox
from buildtool.lock import read_lock
from buildtool.spec import Environment, Extension, Target, load_environment
from compat.vocabulary import ROLES

TESTS = Path(__file__).resolve().parent / "suite"
# Time limit, in seconds, of one platform's image tests: containers of both images, arm64
# ones under qemu, a Dask cluster among them. Past it they hang; pytest and every process
# it started (docker clients) are killed; containers they started may stay behind.
IMAGE_TESTS_TIMEOUT = 60 * 60
SUBJECT_ENV = "BUILDTOOL_SUBJECT"
JUPYTER = frozenset({"jupyterlab", "notebook", "jupyter_server"})


@dataclass(frozen=True)
class Subject:
    """What the image tests check on one platform."""

    environment: str
    platform: str
    lock_path: str
    lock_sha256: str  # the images' io.daskhub.lock-sha256
    refs: dict[str, str]  # role -> what the engine runs
    worker_ref: str  # what the notebook names as its worker (label and variable)
    imports: dict[str, list[str]]  # role -> modules the spec says it imports
    worker_asks_jupyter: bool  # the worker's roots name Jupyter itself
    # What every container the tests start takes (`sandbox.Sandbox.run_args`): the
    # build's own network and label, its bounds; filled in when the tests run.
    run_args: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Subject:
        return cls(**json.loads(path.read_text()))


def _run_tests(subject: Subject, report: Path, extra_args: list[str] | None) -> None:
    report.parent.mkdir(parents=True, exist_ok=True)
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
    build = build_id()
    with sandbox(build) as box, tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        file.write(json.dumps(asdict(replace(subject, run_args=box.run_args()))))
        file.flush()
        result = run(
            command,
            env={**os.environ, SUBJECT_ENV: file.name, BUILD_ID_ENV: build},
            timeout=IMAGE_TESTS_TIMEOUT,
            what=f"the image tests of {subject.environment} on {subject.platform}",
        )
    if result.returncode != 0:
        raise BuildToolError(
            f"image tests failed for {subject.environment} on {subject.platform} (report: {report})"
        )


def test_pair(root: Path, build_dir: Path, env: str, extra_args: list[str] | None = None) -> None:
    """Raise BuildToolError unless every image test passes on every platform of a built
    site pair; a JUnit report per platform stays behind."""
    pair = RenderedPair.load(build_dir, env)
    spec = load_environment(root, env)
    built = BuiltPair.load(pair)
    for platform in pair.platforms:
        subject = Subject(
            environment=env,
            platform=platform,
            lock_path=str(spec.lock_path.resolve()),
            lock_sha256=pair.lock_sha256,
            refs={role: built.local_tag(pair, role, platform) for role in ROLES},
            worker_ref=pair.worker.ref,
            imports={role: spec.image(role).imports for role in ROLES},
            worker_asks_jupyter=bool({r.name for r in spec.roots("worker")} & JUPYTER),
        )
        report = Path(pair.directory) / platform / "image-tests.xml"
        _run_tests(subject, report, extra_args)


def test_extension(
    ext: Extension,
    build_dir: Path,
    refs: dict[str, dict[str, str]],
    worker_ref: str,
    imports: list[str],
    extra_args: list[str] | None = None,
) -> None:
    """The same image tests on a published extension pair: each platform's images
    (`refs`: platform -> role -> repository@manifest digest) are pulled by digest, and
    removed again after the tests; `worker_ref` is the worker image the notebook names
    (its top digest); `imports` what both images must import."""
    lock = read_lock(ext.lock_path)
    worker_names = {p.name for p in lock.package if p.in_worker}
    for platform, by_role in refs.items():
        subject = Subject(
            environment=ext.name,
            platform=platform,
            lock_path=str(ext.lock_path.resolve()),
            lock_sha256=lock.content_sha(),
            refs=by_role,
            worker_ref=worker_ref,
            imports={role: imports for role in ROLES},
            worker_asks_jupyter=bool(worker_names & JUPYTER),
        )
        try:
            for role in ROLES:
                docker("pull", "--quiet", by_role[role], timeout=IMAGE_TESTS_TIMEOUT)
            _run_tests(subject, build_dir / ext.name / platform / "image-tests.xml", extra_args)
        finally:  # what was pulled for the tests goes with them
            with contextlib.suppress(BuildToolError):
                docker("rmi", "--force", *by_role.values())


def test(target: Target, build_dir: Path) -> None:
    """The image tests of a built site pair, or of a published extension pair (pulled by
    digest, as its publish record names them)."""
    if isinstance(target, Environment):
        test_pair(target.root, build_dir, target.name)
        return
    published = read_published(build_dir, target.name)
    if published is None:
        raise BuildToolError(
            f"{target.name}: not published yet; run `buildtool publish {target.name}`"
        )
    test_extension(
        target,
        build_dir,
        published.images.platform_refs(),
        published.images.worker.ref,
        published.imports,
    )
