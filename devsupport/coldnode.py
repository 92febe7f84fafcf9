"""A cold Kubernetes-like node on this machine: a containerd of its own beside the stargz
snapshotter daemon, to pull images plainly (overlayfs) or lazily (stargz) and run
containers from them, as a worker node of a site's pool does.

    with ColdNode(credentials, log_dir, hosts=[proxy.address]) as node:
        node.pull_lazy(f"{proxy.address}/team/worker:estargz")
        result = node.run(f"{proxy.address}/team/worker:estargz", "python", "-c", "...")

Each node has a fresh root (a folder of its own under /tmp, short for the sockets' path
limit), so it is cold: nothing pulled, nothing cached. Leaving the block stops its
containers, its containerd and its snapshotter, unmounts what they left mounted (the
snapshotter's FUSE mounts among them) and removes the root, also when the block failed.
Their logs are written to `log_dir`, which stays.

Registry credentials reach the node in files inside its root (mode 0700), never on a
command line nor in a log: the snapshotter daemon reads them from a docker config.json,
and `ctr` from a hosts directory (`--hosts-dir`) whose hosts.toml sends them as an
Authorization header. `hosts` are the registry's addresses the node may pull from (a
proxy in front of it), which get the same credentials.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from buildtool.common import BuildToolError, CommandTimeout, run
from devsupport import snapshotter
from devsupport.localregistry import RegistryCredentials

log = logging.getLogger(__name__)

CONTAINERD = "containerd"
CTR = "ctr"
# ctr with the stargz snapshotter's commands (`images rpull`, `images convert --estargz`).
CTR_REMOTE = "ctr-remote"
# The snapshotters, as the node's containerd names them.
OVERLAYFS = "overlayfs"
STARGZ = "stargz"  # the proxy plugin: the snapshotter daemon

# Time limits, in seconds.
START_TIMEOUT = 60  # a daemon's socket, once started
QUERY_TIMEOUT = 60  # listing, killing, deleting
PULL_TIMEOUT = 15 * 60  # a pull of a large image at a throttled bandwidth
RUN_TIMEOUT = 10 * 60  # a container run to its end
CONVERT_TIMEOUT = 20 * 60  # recompressing every layer as eStargz
STOP_TIMEOUT = 30  # a daemon's own shutdown, before it is killed


class NodeError(BuildToolError):
    """The node could not start, or one of its commands failed; the message says which."""


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Mount:
    mountpoint: Path
    fstype: str  # "overlay"; "fuse.rawBridge" for a layer the snapshotter mounted
    source: str


@dataclass(frozen=True)
class Fetched:
    """What the node holds that it fetched."""

    content: dict[str, int]  # containerd's content store: digest -> bytes
    # The snapshotter's caches on disk: the compressed chunks it fetched and the files
    # it unpacked from them.
    stargz_bytes: int

    @property
    def content_bytes(self) -> int:
        return sum(self.content.values())


_NODES = itertools.count()


class ColdNode:
    """A second containerd (own root, state, socket and config) and the stargz snapshotter
    daemon behind it, started on entering the block, gone on leaving it."""

    def __init__(
        self, credentials: RegistryCredentials, log_dir: Path, hosts: Iterable[str] = ()
    ) -> None:
        self.credentials = credentials
        self.hosts = list(dict.fromkeys([credentials.registry, *hosts]))
        self.log_dir = log_dir
        # containerd's runc keeps its state per namespace under one folder for every
        # containerd on the machine: a namespace of its own keeps nodes apart.
        self.namespace = f"coldnode-{os.getpid()}-{next(_NODES)}"
        self.root = Path()  # made on entering
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._snapshotters: dict[str, str] = {}  # image reference -> where it was unpacked
        self._containers = itertools.count()

    # -- paths ------------------------------------------------------------------------
    @property
    def address(self) -> Path:
        """The node's containerd socket."""
        return self.root / "containerd.sock"

    @property
    def stargz_address(self) -> Path:
        return self.root / "stargz.sock"

    @property
    def stargz_root(self) -> Path:
        return self.root / "stargz"

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> ColdNode:
        missing = [tool for tool in (CONTAINERD, CTR, CTR_REMOTE) if shutil.which(tool) is None]
        if missing:
            raise NodeError(f"{', '.join(missing)} missing; run scripts/machine-setup.sh")
        self.root = Path(tempfile.mkdtemp(prefix="coldnode-", dir="/tmp"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_credentials()
            self._start_snapshotter()
            self._start_containerd()
        except BaseException:
            self._stop()
            raise
        log.info("cold node up: %s (logs in %s)", self.root, self.log_dir)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop()

    def _write_credentials(self) -> None:
        """A docker config.json for the snapshotter, a hosts directory for ctr."""
        auth = self.root / "auth"
        auth.mkdir(mode=0o700)
        token = base64.b64encode(
            f"{self.credentials.user}:{self.credentials.password}".encode()
        ).decode()
        config = {"auths": {host: {"auth": token} for host in self.hosts}}
        _write_private(auth / "config.json", json.dumps(config))
        for host in self.hosts:
            server = f"http://{host}"  # a loopback registry, as the snapshotter reaches it
            (auth / "hosts" / host).mkdir(parents=True)
            _write_private(
                auth / "hosts" / host / "hosts.toml",
                f'server = "{server}"\n\n[host."{server}"]\n'
                '  capabilities = ["pull", "resolve", "push"]\n'
                f'  [host."{server}".header]\n'
                f'    Authorization = ["{self.credentials.authorization()}"]\n',
            )

    def _start_snapshotter(self) -> None:
        daemon = snapshotter.binary()
        self._spawn(
            "snapshotter",
            [
                str(daemon),
                "-root",
                str(self.stargz_root),
                "-address",
                str(self.stargz_address),
                "-docker-config",
                str(self.root / "auth" / "config.json"),
                "-log",
                str(self.log_dir / "snapshotter.log"),
            ],
            self.log_dir / "snapshotter.log",
        )
        self._wait_for("snapshotter", self.stargz_address.exists)

    def _start_containerd(self) -> None:
        config = self.root / "containerd.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.root / "containerd" / "root"}"\n'
            f'state = "{self.root / "containerd" / "state"}"\n'
            # The CRI plugin would serve Kubernetes' API and set up pod networking: this
            # node is driven by ctr, and its containers use the host's network.
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n\n'
            f'[grpc]\n  address = "{self.address}"\n\n'
            # The snapshotter daemon, as a site's node has it (docs/admin.md).
            f'[proxy_plugins.{STARGZ}]\n  type = "snapshot"\n'
            f'  address = "{self.stargz_address}"\n\n'
            # Where containerd would otherwise install its managed binaries (/opt).
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{self.root / "opt"}"\n'
        )
        self._spawn(
            "containerd",
            [CONTAINERD, "--config", str(config), "--log-level", "info"],
            self.log_dir / "containerd.log",
        )
        self._wait_for("containerd", lambda: self._ctr("version", check=False).returncode == 0)
        # The proxy plugin is only a name until used: a listing reaches the daemon.
        self._ctr("snapshots", "--snapshotter", STARGZ, "ls")

    def _spawn(self, name: str, command: list[str], log_file: Path) -> None:
        with log_file.open("ab") as out:
            self._processes[name] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_for(self, name: str, ready: Callable[[], bool]) -> None:
        process = self._processes[name]
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if process.poll() is not None:
                raise NodeError(
                    f"the node's {name} exited {process.returncode}; see {self.log_dir}"
                )
            if time.monotonic() > deadline:
                raise NodeError(f"the node's {name} did not start in {START_TIMEOUT} s")
            time.sleep(0.1)

    def _stop(self) -> None:
        """Everything the node started, gone; each step even when an earlier one failed."""
        if "containerd" in self._processes:
            with contextlib.suppress(BuildToolError, OSError):
                self._remove_containers()
        for name in ("containerd", "snapshotter"):  # the snapshotter unmounts its layers
            if name in self._processes:
                _terminate(self._processes.pop(name))
        self._kill_shims()
        for mount in sorted(self.mounts(), key=lambda m: len(m.mountpoint.parts), reverse=True):
            if run(["umount", str(mount.mountpoint)], timeout=QUERY_TIMEOUT).returncode != 0:
                run(["umount", "-l", str(mount.mountpoint)], timeout=QUERY_TIMEOUT)
        if self.root != Path() and self.root.is_dir():
            shutil.rmtree(self.root, ignore_errors=True)
            log.info("cold node gone: %s", self.root)

    def _remove_containers(self) -> None:
        for task in self.tasks():
            self._ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
            self._ctr("tasks", "delete", "--force", task, check=False)
        for container in self._ctr("containers", "ls", "--quiet").stdout.split():
            self._ctr("containers", "delete", container, check=False)

    def _kill_shims(self) -> None:
        """The runc shims of this node's containers (named by its socket), should any
        outlive containerd: they run in sessions of their own."""
        marker = str(self.address).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline.split(b"\0"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    # -- ctr --------------------------------------------------------------------------
    def _ctr(
        self, *args: str, tool: str = CTR, timeout: float = QUERY_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`ctr ARGS` (or ctr-remote) against this node; raises NodeError if it fails and
        `check`, CommandTimeout past `timeout` seconds."""
        command = [tool, "--address", str(self.address), "--namespace", self.namespace, *args]
        # An empty stdin: a container gets none, as a pod's does.
        result = run(command, input="", capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise NodeError(
                f"{tool} {' '.join(args)} exited {result.returncode}:\n{result.stderr.strip()}"
            )
        return result

    @property
    def _hosts_dir(self) -> str:
        return str(self.root / "auth" / "hosts")

    # -- pulling ----------------------------------------------------------------------
    def pull(self, ref: str, timeout: float = PULL_TIMEOUT) -> float:
        """Pull `ref` plainly: every layer fetched whole and unpacked into overlayfs.
        Returns the seconds it took."""
        started = time.monotonic()
        self._ctr(
            "images",
            "pull",
            "--hosts-dir",
            self._hosts_dir,
            "--snapshotter",
            OVERLAYFS,
            ref,
            timeout=timeout,
        )
        self._snapshotters[ref] = OVERLAYFS
        return time.monotonic() - started

    def pull_lazy(self, ref: str, timeout: float = PULL_TIMEOUT) -> float:
        """Pull `ref` lazily (`ctr-remote images rpull`): its eStargz layers are mounted by
        the snapshotter over FUSE, their files fetched when read (and the prioritized ones
        prefetched); a layer that is not eStargz is fetched whole. Returns the seconds."""
        started = time.monotonic()
        self._ctr(
            "images",
            "rpull",
            "--hosts-dir",
            self._hosts_dir,
            "--snapshotter",
            STARGZ,
            ref,
            tool=CTR_REMOTE,
            timeout=timeout,
        )
        self._snapshotters[ref] = STARGZ
        return time.monotonic() - started

    def convert_estargz(self, source: str, target: str, timeout: float = CONVERT_TIMEOUT) -> None:
        """Make `target`, an eStargz copy of `source` (pulled here first), with
        `ctr-remote images convert --estargz` and no prefetch list: the harness's own
        converter, not the project's writer."""
        self._ctr(
            "images",
            "convert",
            "--estargz",
            "--oci",
            source,
            target,
            tool=CTR_REMOTE,
            timeout=timeout,
        )

    def push(self, ref: str, timeout: float = PULL_TIMEOUT) -> None:
        self._ctr("images", "push", "--hosts-dir", self._hosts_dir, ref, timeout=timeout)

    # -- containers -------------------------------------------------------------------
    def _run_args(self, ref: str, container: str, command: tuple[str, ...]) -> list[str]:
        if ref not in self._snapshotters:
            raise NodeError(f"{ref} was not pulled on this node")
        return ["--net-host", "--snapshotter", self._snapshotters[ref], ref, container, *command]

    def run(self, ref: str, *command: str, timeout: float = RUN_TIMEOUT) -> RunResult:
        """Run `command` in a container of `ref` (host network) to its end; its exit code
        and output. Past `timeout` seconds the container is killed and CommandTimeout
        raised."""
        container = f"run{next(self._containers)}"
        try:
            result = self._ctr(
                "run",
                "--rm",
                *self._run_args(ref, container, command),
                timeout=timeout,
                check=False,
            )
        except CommandTimeout:
            self.stop(container)
            raise
        return RunResult(result.returncode, result.stdout, result.stderr)

    def start(self, ref: str, *command: str) -> str:
        """Start `command` in a container of `ref` (host network) and leave it running;
        its id, for `stop`."""
        container = f"detached{next(self._containers)}"
        self._ctr("run", "--detach", *self._run_args(ref, container, command))
        return container

    def stop(self, container: str) -> None:
        """Kill a container's task and remove the container."""
        self._ctr("tasks", "kill", "--signal", "SIGKILL", container, check=False)
        self._ctr("tasks", "delete", "--force", container, check=False)
        self._ctr("containers", "delete", container, check=False)

    # -- what the node holds ----------------------------------------------------------
    def tasks(self) -> list[str]:
        """The ids of the containers whose task is there (running or stopped)."""
        return self._ctr("tasks", "ls", "--quiet").stdout.split()

    def images(self) -> list[str]:
        return self._ctr("images", "ls", "--quiet").stdout.split()

    def snapshots(self, snapshotter_name: str) -> list[str]:
        """The keys of the snapshots of `snapshotter_name` (OVERLAYFS, STARGZ)."""
        listing = self._ctr("snapshots", "--snapshotter", snapshotter_name, "ls").stdout
        return [line.split()[0] for line in listing.splitlines()[1:] if line.strip()]

    def fetched(self) -> Fetched:
        blobs = self.root / "containerd/root/io.containerd.content.v1.content/blobs/sha256"
        content = (
            {f"sha256:{blob.name}": blob.stat().st_size for blob in blobs.iterdir()}
            if blobs.is_dir()
            else {}
        )
        stargz = self.stargz_root / "stargz"
        stargz_bytes = (
            sum(f.stat().st_size for f in stargz.rglob("*") if f.is_file())
            if stargz.is_dir()
            else 0
        )
        return Fetched(content, stargz_bytes)

    def mounts(self) -> list[Mount]:
        """What is mounted under the node's root now."""
        found = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            separator = fields.index("-")
            mountpoint = Path(_unescape(fields[4]))
            if self.root != Path() and mountpoint.is_relative_to(self.root):
                found.append(Mount(mountpoint, fields[separator + 1], fields[separator + 2]))
        return found


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are written as octal escapes."""
    for code, char in (("040", " "), ("011", "\t"), ("012", "\n"), ("134", "\\")):
        field = field.replace(f"\\{code}", char)
    return field


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to its group if it has not ended within STOP_TIMEOUT."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
