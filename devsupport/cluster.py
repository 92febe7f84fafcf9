"""Real Dask clusters on 127.0.0.1, run from separate virtual environments.

Used by the compat tests and by ``python -m bench.compat``. Each environment is
a ``python -m venv`` with pinned requirements, cached under
``<cache>/venvs/<digest of the requirements>`` (see devsupport.cache), and
built from nothing when missing. The environments differ on purpose:

* client: what the checker, the client and the scheduler run; has lz4
* worker: the same but without lz4
* odd worker: like worker, with an older toolz

Every process starts in its own session; :meth:`DaskProcess.stop` kills its
whole process group, nanny children included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from buildtool.common import cache_root
from devsupport import REPO
from devsupport.cache import digest, locked
from devsupport.servers import free_port

DASK_VERSION = "2026.8.0"
#: dask and distributed with every dependency pinned, so that two environments
#: built on different days still hold the same versions.
BASE_REQUIREMENTS = (
    f"dask=={DASK_VERSION}",
    f"distributed=={DASK_VERSION}",
    "click==8.5.1",
    "cloudpickle==3.1.3",
    "fsspec==2026.9.0",
    "importlib-metadata==10.2.0",
    "jinja2==3.1.6",
    "lazy-importer==0.1.0",
    "locket==1.0.0",
    "markupsafe==3.0.4",
    "msgpack==1.2.4",
    "packaging==26.4",
    "partd==1.4.2",
    "psutil==7.2.2",
    "pyyaml==6.0.4",
    "sortedcontainers==2.4.0",
    "tblib==3.2.2",
    "toolz==1.2.0",
    "tornado==6.6.1",
    "zict==3.0.0",
    "zipp==4.1.2",
)
LZ4_VERSION = "4.4.5"
ODD_TOOLZ_VERSION = "0.12.1"
CLIENT_REQUIREMENTS = (*BASE_REQUIREMENTS, f"lz4=={LZ4_VERSION}")
WORKER_REQUIREMENTS = BASE_REQUIREMENTS
ODD_WORKER_REQUIREMENTS = tuple(
    f"toolz=={ODD_TOOLZ_VERSION}" if r.startswith("toolz==") else r for r in BASE_REQUIREMENTS
)

#: Workers start by forking a server that has imported distributed once, which
#: is what makes 50 worker processes affordable on two cores.
WORKER_ENV = {"DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD": "forkserver"}
START_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Venv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def ensure_venv(requirements: Sequence[str]) -> Venv:
    """The cached environment for these requirements, built if missing."""
    key = digest([sys.version, *requirements])
    venv = Venv(cache_root() / "venvs" / key)
    done = venv.path / ".complete"
    with locked(venv.path.with_name(f"{key}.lock")):
        if done.exists():
            return venv
        shutil.rmtree(venv.path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv.path)], check=True)
        install = subprocess.run(
            [
                str(venv.python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                *requirements,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if install.returncode != 0:
            raise RuntimeError(f"pip install into {venv.path} failed:\n{install.stderr[-3000:]}")
        done.write_text("\n".join(requirements) + "\n")
    return venv


def checker_path(root: Path) -> Path:
    """A folder holding only the compat package, for PYTHONPATH.

    Pointing PYTHONPATH at the repository would also expose whatever
    ``*.egg-info`` an editable install left there, as an extra distribution.
    """
    root.mkdir(parents=True, exist_ok=True)
    link = root / "compat"
    if not link.exists():
        link.symlink_to(REPO / "compat", target_is_directory=True)
    return root


@dataclass
class DaskProcess:
    """One command running in its own process group, logging to a file."""

    popen: subprocess.Popen[bytes]
    log: Path

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def stop(self, grace: float = 10) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after `grace` seconds."""
        self.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        self.signal(signal.SIGKILL)
        self.popen.wait()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def spawn(
    command: Sequence[str | Path], log: Path, env: dict[str, str] | None = None
) -> DaskProcess:
    """Start ``command`` in the log's folder: ``python -m`` puts the working directory
    on ``sys.path``, and the repository's would add its ``*.egg-info``."""
    handle = log.open("wb")
    popen = subprocess.Popen(
        [str(c) for c in command],
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=log.parent,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    handle.close()
    return DaskProcess(popen, log)


@dataclass
class Cluster:
    """A scheduler and groups of workers; stop() ends them all."""

    address: str
    client_venv: Venv
    logs: Path
    processes: list[DaskProcess] = field(default_factory=list)

    def add_workers(
        self,
        venv: Venv,
        count: int,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> DaskProcess:
        """Start ``count`` workers (with nannies) from ``venv`` in one process group."""
        command: list[str | Path] = [
            venv.python,
            "-m",
            "dask",
            "worker",
            self.address,
            "--host",
            "127.0.0.1",
            "--nworkers",
            str(count),
            "--nthreads",
            "1",
            "--no-dashboard",
            "--memory-limit",
            "512MiB",
            "--death-timeout",
            "60",
        ]
        if port is not None:
            command += ["--worker-port", str(port)]
        log = self.logs / f"workers-{len(self.processes)}.log"
        process = spawn(command, log, {**WORKER_ENV, **(env or {})})
        self.processes.append(process)
        return process

    def worker_addresses(self, count: int, timeout: float = START_TIMEOUT_S) -> list[str]:
        """Wait until exactly ``count`` workers are connected; return their addresses."""
        script = (
            "import json, sys, time\n"
            "from distributed import Client\n"
            "address, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
            "with Client(address, timeout=30) as client:\n"
            "    deadline = time.monotonic() + timeout\n"
            "    while len(workers := client.ncores()) != count:\n"
            "        if time.monotonic() > deadline:\n"
            "            sys.exit(f'{len(workers)} workers, not {count}')\n"
            "        time.sleep(0.2)\n"
            "    print(json.dumps(sorted(workers)))\n"
        )
        result = subprocess.run(
            [str(self.client_venv.python), "-c", script, self.address, str(count), str(timeout)],
            capture_output=True,
            text=True,
            timeout=timeout + 60,
            check=False,
        )
        if result.returncode != 0:
            logs = "\n".join(p.log_tail() for p in self.processes)
            raise RuntimeError(f"workers did not connect: {result.stderr[-2000:]}\n{logs}")
        return json.loads(result.stdout)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def start_cluster(
    client_venv: Venv, logs: Path, scheduler_env: dict[str, str] | None = None
) -> Cluster:
    """Start a scheduler from the client environment; the caller must stop() it."""
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    command: list[str | Path] = [
        client_venv.python,
        "-m",
        "dask",
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-dashboard",
    ]
    scheduler = spawn(command, logs / "scheduler.log", scheduler_env)
    cluster = Cluster(address, client_venv, logs, [scheduler])
    deadline = time.monotonic() + 60
    while True:
        if scheduler.popen.poll() is not None:
            raise RuntimeError(f"scheduler exited:\n{scheduler.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return cluster
        except OSError:
            if time.monotonic() > deadline:
                cluster.stop()
                raise RuntimeError(f"scheduler did not listen:\n{scheduler.log_tail()}") from None
            time.sleep(0.2)


#: the mixed cluster: this many workers in all, one of them odd
MIXED_WORKERS = 50


@dataclass
class MixedCluster:
    """49 workers from the worker venv and one from the odd-worker venv."""

    cluster: Cluster
    odd_worker: str
    workers: list[str]


#: the ``start_cluster`` fixture: start a scheduler with extra environment variables
StartCluster = Callable[[dict[str, str] | None], Cluster]


def run_checker(
    client_venv: Venv,
    path: Path,
    *args: str,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m compat ARGS`` in the client environment, as a user would.

    It runs in ``path``: ``-m`` puts the working directory on ``sys.path``, and
    the repository's would add its ``*.egg-info`` to the client's packages.
    """
    return subprocess.run(
        [str(client_venv.python), "-m", "compat", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=path,
        env={**os.environ, "PYTHONPATH": str(path), **(env or {})},
    )
