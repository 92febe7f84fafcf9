"""The builds of the hub service (`service.py`): each a user's extension pair, built and
published into that user's namespace, one at a time per user, in a bounded queue.

A build is this tool's own command line, as a user would run it: `buildtool lock` of the
extension's spec in the user's workspace, a check of the added size, then `buildtool
publish` into the user's namespace (with `--image-tests yes` where a Docker engine is
beside the service, so a pair is tagged only after its image tests pass). Each runs as a subprocess
of the service with a time limit; its log is kept beside the build's record, and the
build's step (lock, fetch, layers, push, test, tag) is read from the log's lines.

`Runner` is the interface the service uses; `LocalRunner`, the one here, runs builds in
the service's own pool of processes. A site whose users outgrow one pod would give each
build to a Kubernetes Job instead (see the README); the records and the queue rules stay
as they are, because they live in `BuildQueue`, not in the runner.

A build that fails, times out or is cut short by a restart publishes nothing: publish
writes tags last, and a record left `queued` or `running` by a service that stopped is
marked failed when it starts again.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import ValidationError

from buildtool.common import (
    BuildToolError,
    CommandTimeout,
    StrictModel,
    kill_marked,
    run,
    write_atomic,
)
from buildtool.image import BUILD_ID_ENV, remove_sandbox

logger = logging.getLogger(__name__)

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
#: The states a build ends in.
ENDED = ("succeeded", "failed", "cancelled")
CANCELLED = "cancelled by its user; nothing was tagged"
# What the log's lines say of the step a build is at: the first line holding the text.
STEPS = (
    ("lock", "solving"),
    ("fetch", "fetching"),
    ("layers", "writing the layers"),
    ("push", "pushing"),
    ("test", "running the image tests"),
    ("tag", "tagged"),
)
LOG_FILE = "build.log"
RECORD_FILE = "build.json"
# The most of a build's output its log keeps; the rest is read and dropped.
MAX_LOG_BYTES = 2 * 1024 * 1024


class BuildRefused(BuildToolError):
    """A build the queue will not take: the user has one already, or the queue is full.
    `status` is the HTTP status the service answers with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class BuildCancelled(BuildToolError):
    """The build's user cancelled it."""


class Build(StrictModel):
    """One build's record (`<state>/builds/<id>/build.json`)."""

    id: str
    user: str
    name: str  # the extension's name, in the user's workspace
    environment: str  # the site environment it extends
    state: State = "queued"
    step: str = "queued"
    created: str
    finished: str | None = None
    seconds: float | None = None
    error: str | None = None
    tested: bool = False
    notebook: str | None = None  # the published images, by digest
    worker: str | None = None


@dataclass(frozen=True)
class Job:
    """What a runner runs: the commands of one build, in order, with their time limit."""

    build: Build
    commands: list[list[str]]
    cwd: Path
    env: dict[str, str]
    timeout: float
    log: Path
    # Run after the first command (the lock): raises BuildToolError to stop the build.
    after_lock: Callable[[], None]
    # Run when the last command succeeded: the published refs, and whether it was tested.
    on_success: Callable[[], tuple[str, str, bool]]
    # Run when the build ended, however it ended (what it leaves on disk is pruned).
    after: Callable[[], None] = lambda: None
    # Set by `BuildQueue.cancel`: no further command starts, and the build ends cancelled.
    cancel: threading.Event = field(default_factory=threading.Event)


class Runner(Protocol):
    """Runs jobs; calls `done(job, error)` when one ends (error None: it succeeded)."""

    def submit(
        self, job: Job, started: Callable[[], None], done: Callable[[str | None], None]
    ) -> None: ...

    def shutdown(self) -> None: ...


class LocalRunner:
    """Each job's commands as subprocesses of the service, `concurrent` jobs at once."""

    def __init__(self, concurrent: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=concurrent, thread_name_prefix="build")

    def submit(
        self, job: Job, started: Callable[[], None], done: Callable[[str | None], None]
    ) -> None:
        self._pool.submit(self._run, job, started, done)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _run(job: Job, started: Callable[[], None], done: Callable[[str | None], None]) -> None:
        if job.cancel.is_set():  # cancelled while it waited in the queue
            done(CANCELLED)
            return
        started()
        try:
            LocalRunner._commands(job)
        except BuildCancelled:
            done(CANCELLED)
        except CommandTimeout:
            done(f"the build took longer than {job.timeout:.0f} s (self_service.build_timeout)")
        except BuildToolError as exc:
            done(str(exc))
        except Exception as exc:  # a bug here must not leave the build running forever
            logger.exception("build %s", job.build.id)
            done(f"the build failed: {type(exc).__name__}")
        else:
            done(None)

    @staticmethod
    def _commands(job: Job) -> None:
        """The job's commands, one after another within its time limit; however they end,
        every process of the build ends with them, and every container and network its
        image tests started (`BUILD_ID_ENV` marks the build's processes and containers)."""
        deadline = time.monotonic() + job.timeout
        env = {**job.env, BUILD_ID_ENV: job.build.id}
        try:
            for index, command in enumerate(job.commands):
                if job.cancel.is_set():
                    raise BuildCancelled(CANCELLED)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommandTimeout("the build", job.timeout)
                with _CappedLog(job.log, MAX_LOG_BYTES) as log:
                    result = run(
                        command,
                        cwd=job.cwd,
                        env=env,
                        stdout=log.fd,
                        stderr=subprocess.STDOUT,
                        timeout=left,
                        what="the build",
                    )
                if result.returncode != 0:
                    if job.cancel.is_set():  # its processes were killed by the cancel
                        raise BuildCancelled(CANCELLED)
                    raise BuildToolError(_last_error(job.log))
                if index == 0:
                    job.after_lock()
        finally:
            killed = kill_marked(BUILD_ID_ENV, job.build.id)
            removed = remove_sandbox(job.build.id)
            if killed or removed:
                logger.info(
                    "build %s: ended %d processes and %d containers it left",
                    job.build.id,
                    killed,
                    removed,
                )


class _CappedLog:
    """A pipe for one command's output, copied into the build's log up to `limit` bytes
    (in all, with what the log holds already); past that
    only the last TAIL bytes are kept, written at the end after a line saying what was
    left out (the build's one error line is among its last). The build never blocks."""

    TAIL = 16 * 1024

    def __init__(self, path: Path, limit: int) -> None:
        self.path, self.limit = path, limit
        self.reading, self.fd = os.pipe()
        self.thread = threading.Thread(target=self._copy, daemon=True)

    def __enter__(self) -> _CappedLog:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # the copy ends once the children's copies are closed too
        self.thread.join(5)

    def _copy(self) -> None:
        written = self.path.stat().st_size if self.path.exists() else 0
        tail, dropped = b"", 0
        with open(self.reading, "rb") as pipe, self.path.open("ab") as log:
            while chunk := pipe.read1(65536):
                kept = chunk[: max(self.limit - written, 0)]
                if kept:
                    log.write(kept)
                    log.flush()
                    written += len(kept)
                rest = chunk[len(kept) :]
                if rest:
                    tail += rest
                    dropped += max(len(tail) - self.TAIL, 0)
                    tail = tail[-self.TAIL :]
            if tail:
                log.write(f"\n[{dropped} bytes of the log left out here]\n".encode() + tail)


def _last_error(log: Path) -> str:
    """The build's one error line (`error: ...`), or its last line."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    return (errors or lines[-1:] or ["the build failed"])[-1]


def step_of(log_text: str) -> str:
    """The latest step the log's lines show."""
    step = "lock"
    for line in log_text.splitlines():
        for name, marker in STEPS:
            if marker in line:
                step = name
    return step


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BuildQueue:
    """The builds' records and the queue's rules: one build per user at a time, at most
    `max_queued` waiting or running in all. Records live in `<state>/builds/<id>/`."""

    def __init__(self, state: Path, runner: Runner, max_queued: int) -> None:
        self.folder = state / "builds"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.runner = runner
        self.max_queued = max_queued
        self._lock = threading.Lock()
        self._builds: dict[str, Build] = {}
        self._jobs: dict[str, Job] = {}  # the jobs of the builds not ended yet
        for path in sorted(self.folder.glob(f"*/{RECORD_FILE}")):
            try:
                build = Build.model_validate_json(path.read_text())
            except ValidationError:
                logger.warning("%s: not a build record; left alone", path)
                continue
            if build.state in ("queued", "running"):  # the service stopped mid-build
                build = build.model_copy(
                    update={
                        "state": "failed",
                        "error": "the service restarted; nothing was published",
                        "finished": _now(),
                    }
                )
                self._save(build)
            self._builds[build.id] = build

    def _save(self, build: Build) -> None:
        write_atomic(self.folder / build.id / RECORD_FILE, build.model_dump_json(indent=1))

    def _update(self, build_id: str, **changes: object) -> Build:
        with self._lock:
            build = self._builds[build_id].model_copy(update=changes)
            self._builds[build_id] = build
            self._save(build)
            return build

    def log_path(self, build_id: str) -> Path:
        return self.folder / build_id / LOG_FILE

    def get(self, build_id: str) -> Build | None:
        with self._lock:
            build = self._builds.get(build_id)
        if build is not None and build.state == "running":
            log = self.log_path(build_id)
            step = step_of(log.read_text(errors="replace")) if log.exists() else "lock"
            build = build.model_copy(update={"step": step})
        return build

    def of_user(self, user: str) -> list[Build]:
        with self._lock:
            return sorted(
                (b for b in self._builds.values() if b.user == user),
                key=lambda b: b.created,
                reverse=True,
            )

    def _refused(self, user: str) -> BuildRefused | None:
        """Why the queue takes no build of `user` now (the lock held), or None."""
        active = [b for b in self._builds.values() if b.state in ("queued", "running")]
        if any(b.user == user for b in active):
            return BuildRefused("you have a build queued or running; wait for it to end", 409)
        if len(active) >= self.max_queued:
            return BuildRefused(
                f"{len(active)} builds are queued or running, the most this hub allows "
                "(self_service.max_queued); try again in a few minutes",
                429,
            )
        return None

    def admit(self, user: str) -> None:
        """Raise BuildRefused now if the queue would refuse a build of `user`: before
        anything costly is done for it."""
        with self._lock:
            refused = self._refused(user)
        if refused is not None:
            raise refused

    def new(self, user: str, name: str, environment: str) -> Build:
        """A queued build's record, once the queue's rules allow it."""
        with self._lock:
            refused = self._refused(user)
            if refused is not None:
                raise refused
            build = Build(
                id=secrets.token_hex(8),
                user=user,
                name=name,
                environment=environment,
                created=_now(),
            )
            self._builds[build.id] = build
            (self.folder / build.id).mkdir()
            self._save(build)
            return build

    def cancel(self, build_id: str) -> Build:
        """End a queued or running build as its time limit would: no further command
        starts, every process and container of it is ended now, nothing is tagged."""
        with self._lock:
            build = self._builds[build_id]
            job = self._jobs.get(build_id)
            if build.state in ENDED or job is None:
                raise BuildRefused(f"the build has {build.state} already", 409)
            job.cancel.set()
        killed = kill_marked(BUILD_ID_ENV, build_id)
        removed = remove_sandbox(build_id)
        logger.info("build %s cancelled: %d processes, %d containers", build_id, killed, removed)
        return build

    def start(self, job: Job) -> None:
        build_id = job.build.id
        begun = time.monotonic()
        with self._lock:
            self._jobs[build_id] = job

        def started() -> None:
            self._update(build_id, state="running", step="lock")

        def done(error: str | None) -> None:
            try:
                job.after()
            except Exception:  # a prune that failed must not lose the build's outcome
                logger.exception("build %s: after the build", build_id)
            with self._lock:
                self._jobs.pop(build_id, None)
            seconds = round(time.monotonic() - begun, 1)
            if error is not None:  # where it stopped: the step its log reached
                log = self.log_path(build_id)
                step = step_of(log.read_text(errors="replace")) if log.exists() else "lock"
                self._update(
                    build_id,
                    state="cancelled" if error == CANCELLED else "failed",
                    step=step,
                    error=error,
                    finished=_now(),
                    seconds=seconds,
                )
                return
            try:
                notebook, worker, tested = job.on_success()
            except BuildToolError as exc:
                self._update(build_id, state="failed", error=str(exc), finished=_now())
                return
            self._update(
                build_id,
                state="succeeded",
                step="done",
                notebook=notebook,
                worker=worker,
                tested=tested,
                finished=_now(),
                seconds=seconds,
            )

        self.runner.submit(job, started, done)


def cli_command(*args: str) -> list[str]:
    """This tool's command line, in this Python."""
    return [sys.executable, "-m", "buildtool.cli", *args]


def content_length(url: str) -> int:
    """The size of what `url` serves, as its server says (a HEAD request); a server that
    does not say is an error, never a size of 0."""
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as r:
        length = r.headers.get("Content-Length")
    if length is None:
        raise BuildToolError(f"{url}: its server does not say how large it is")
    return int(length)
