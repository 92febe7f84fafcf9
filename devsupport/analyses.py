"""Build a seed environment's pair from the stand-in, and run an analysis on it (the
analyses in tests/analyses).

The cluster is real and separate: a scheduler and two workers, each its own container of
the worker image, and the client in a container of the notebook image. The shared HEP
samples (../shared/data beside the checkout, or DASKHUB_SHARED_DATA) are mounted
read-only at /data in all of them; the analysis scripts (tests/analyses/scripts) at
/analysis in the client.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from buildtool.image import RenderedPair
from devsupport import REPO
from devsupport.buildtool_cli import buildtool, locked_site
from devsupport.dockercli import docker
from devsupport.servers import free_port
from devsupport.standin import StandIn

DATA = Path(os.environ.get("DASKHUB_SHARED_DATA", REPO.parent / "shared" / "data"))
SCRIPTS = REPO / "tests" / "analyses" / "scripts"
SAMPLES = ("PHYSLITE_example.root", "nano_dy.root")


def build_and_test_pair(name: str, standin: StandIn, work: Path) -> RenderedPair:
    """What `make build ENV=name` then `make test ENV=name` do, from a fresh spec copy."""
    root = locked_site(work, standin.channel, name)
    steps = (
        (
            "build",
            name,
            "--quiet",
            "--registry",
            "localhost/analyses",
            "--base-image",
            standin.base_image,
        ),
        ("test", name),
    )
    for step in steps:
        result = buildtool("--root", root, *step, cwd=work)
        assert result.returncode == 0, (
            f"buildtool {step[0]} {name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )  # noqa: E501
    return RenderedPair.load(work / "build", name)


def run_analysis(
    pair: RenderedPair, script: str, data: Path, then: Callable[[str, str], None] | None = None
) -> dict:
    """Scheduler and two workers from the worker image, the client from the notebook's.
    `then(address, scheduler container)` runs on the same cluster after the analysis."""
    port, name = free_port(), f"analysis-{uuid.uuid4().hex[:8]}"
    address = f"tcp://127.0.0.1:{port}"
    # The samples at /data, and where the host has them: a laptop's graph names them there.
    mount = ["-v", f"{data}:/data:ro", "-v", f"{data}:{data}:ro"]
    cluster = (
        (
            "scheduler",
            [
                "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                ":0",
            ],
        ),
        *(
            (
                f"worker{i}",
                [
                    "dask",
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--name",
                    f"worker{i}",
                ],
            )
            for i in (1, 2)
        ),
    )
    started = []
    try:
        for role, command in cluster:
            started.append(
                docker(
                    "run",
                    "-d",
                    "--network",
                    "host",
                    "--name",
                    f"{name}-{role}",
                    *mount,
                    pair.worker.ref,
                    *command,
                )
                .stdout.decode()
                .strip()
            )
        result = docker(
            "run",
            "--rm",
            "--network",
            "host",
            *mount,
            "-v",
            f"{SCRIPTS}:/analysis:ro",
            "-w",
            "/analysis",
            pair.notebook.ref,
            "python",
            f"/analysis/{script}",
            address,
            check=False,
            timeout=600,
        )
        out, err = result.stdout.decode(), result.stderr.decode(errors="replace")
        assert result.returncode == 0, out[-3000:] + err[-5000:]
        if then is not None:
            then(address, started[0])
        return json.loads(out.strip().splitlines()[-1])
    finally:
        for cid in started:
            docker("rm", "-f", cid, check=False)
