"""Package sets of a running Dask cluster: client, scheduler and every worker.

The scheduler and each worker run :func:`compat.probe.snapshot`, shipped by
value, so they need only distributed, not this package. Workers are queried one
by one in parallel under a deadline: a worker that leaves the cluster between
being listed and answering is reported as *left*, and one still present that
does not answer in time as *unanswered*; neither stops the check.

``distributed`` (and ``dask_gateway`` for gateway clusters) are imported only
here, inside the functions, so the static checks work without them.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from compat import probe, sources
from compat.model import CheckError, PackageSet

DEFAULT_TIMEOUT_S = 10.0
#: How often to ask the scheduler which workers are still there.
MEMBERSHIP_POLL_S = 0.25

Progress = Callable[[str], None]


@dataclass
class ClusterSnapshot:
    """What every member of a cluster has installed."""

    target: str
    client: PackageSet
    scheduler: PackageSet
    #: worker address -> its package set, for every worker that answered
    workers: dict[str, PackageSet] = field(default_factory=dict)
    #: workers listed at the start that were gone before they answered
    left: list[str] = field(default_factory=list)
    #: workers still present that did not answer: address -> reason
    unanswered: dict[str, str] = field(default_factory=dict)


def quiet(_message: str) -> None:
    """Default progress callback: say nothing."""


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError as error:
        raise CheckError(
            "the live check needs the 'distributed' package in this environment"
        ) from error


def _ship_probe_by_value() -> None:
    """Let scheduler and workers run the probe without this package installed."""
    import cloudpickle

    if probe.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(probe)


async def _connect(address: str, security: Any, timeout: float) -> Any:
    from distributed import Client
    from distributed.versions import VersionMismatchWarning

    with warnings.catch_warnings():
        # The report replaces distributed's own warning.
        warnings.simplefilter("ignore", VersionMismatchWarning)
        try:
            return await asyncio.wait_for(
                Client(
                    address,
                    security=security,
                    asynchronous=True,
                    timeout=timeout,
                    set_as_default=False,
                ),
                timeout=timeout + 1,
            )
        except (OSError, asyncio.TimeoutError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CheckError(
                f"cannot reach scheduler {address} within {timeout:g} s: {reason}"
            ) from None


@dataclass
class _Answers:
    """Where each listed worker stands once the query is over."""

    answered: dict[str, dict[str, str]] = field(default_factory=dict)
    left: list[str] = field(default_factory=list)
    unanswered: dict[str, str] = field(default_factory=dict)

    def record(self, address: str, result: object, present: bool) -> None:
        """File a finished call: a snapshot, or an error from a gone or a present worker."""
        if isinstance(result, dict):
            self.answered[address] = result
        elif not present:
            self.left.append(address)
        else:
            self.unanswered[address] = f"error: {result!r}"


async def _query_workers(client: Any, addresses: list[str], timeout: float) -> _Answers:
    """Run the probe on each worker, all at once, each call on its own.

    While calls are pending, the scheduler is asked every
    :data:`MEMBERSHIP_POLL_S` which workers it still has, so a call to a worker
    that has gone is dropped at once instead of waiting for a connect timeout.
    """
    calls = {
        address: asyncio.ensure_future(
            client.run(probe.snapshot, workers=[address], on_error="return")
        )
        for address in addresses
    }
    try:
        return await _watch_calls(client, calls, timeout)
    finally:
        for call in calls.values():
            call.cancel()
        await asyncio.gather(*calls.values(), return_exceptions=True)


async def _watch_calls(
    client: Any, calls: dict[str, asyncio.Future[dict[str, Any]]], timeout: float
) -> _Answers:
    answers = _Answers()
    pending = dict(calls)
    deadline = time.monotonic() + timeout
    while pending and (remaining := deadline - time.monotonic()) > 0:
        await asyncio.wait(pending.values(), timeout=min(MEMBERSHIP_POLL_S, remaining))
        present = set(await asyncio.wait_for(client.scheduler.ncores(), timeout))
        for address, call in list(pending.items()):
            if call.done():
                result = call.exception() or call.result().get(address)
                answers.record(address, result, address in present)
            elif address in present:
                continue
            else:
                answers.left.append(address)
            del pending[address]
    for address in pending:
        answers.unanswered[address] = f"no answer within {timeout:g} s"
    answers.left.sort()
    return answers


@dataclass(frozen=True)
class Target:
    """What to check: a scheduler address, or a dask-gateway cluster name."""

    address: str | None = None
    gateway_cluster: str | None = None

    def __post_init__(self) -> None:
        if (self.address is None) == (self.gateway_cluster is None):
            raise ValueError("give either a scheduler address or a gateway cluster name")

    def __str__(self) -> str:
        return self.gateway_cluster or str(self.address)


async def _gateway_scheduler(cluster_name: str) -> tuple[str, Any]:
    """Scheduler address and TLS security of a dask-gateway cluster."""
    from dask_gateway import Gateway

    try:
        async with Gateway(asynchronous=True) as gateway:
            cluster = await gateway.connect(cluster_name)
            await cluster.close()  # the local handle only: the cluster keeps running
            return cluster.scheduler_address, cluster.security
    except Exception as error:  # dask_gateway raises many kinds; all mean "cannot run"
        raise CheckError(f"cannot connect to gateway cluster {cluster_name}: {error}") from None


async def _collect(
    target: Target, timeout: float, settle_delay: float, progress: Progress
) -> ClusterSnapshot:
    if target.gateway_cluster is None:
        address, security = str(target.address), None
    else:
        try:
            address, security = await asyncio.wait_for(
                _gateway_scheduler(target.gateway_cluster), timeout
            )
        except asyncio.TimeoutError:
            raise CheckError(
                f"gateway did not answer within {timeout:g} s for cluster {target}"
            ) from None
    client = await _connect(address, security, timeout)
    try:
        scheduler = await asyncio.wait_for(client.run_on_scheduler(probe.snapshot), timeout)
        addresses = sorted(await client.scheduler.ncores())
        progress(f"listed {len(addresses)} workers")
        if settle_delay > 0:
            progress(f"waiting {settle_delay:g} s before querying them")
            await asyncio.sleep(settle_delay)
        answers = await _query_workers(client, addresses, timeout)
    except asyncio.TimeoutError:
        raise CheckError(f"scheduler {address} did not answer within {timeout:g} s") from None
    except OSError as error:
        raise CheckError(f"lost the connection to scheduler {address}: {error}") from None
    finally:
        await client.close()
    return ClusterSnapshot(
        target=str(target),
        client=sources.from_environment("client"),
        scheduler=sources.from_snapshot("scheduler", scheduler),
        workers={a: sources.from_snapshot(a, s) for a, s in sorted(answers.answered.items())},
        left=answers.left,
        unanswered=answers.unanswered,
    )


def collect(
    target: Target,
    timeout: float = DEFAULT_TIMEOUT_S,
    settle_delay: float = 0.0,
    progress: Progress = quiet,
) -> ClusterSnapshot:
    """Snapshot the cluster at ``target``.

    A gateway cluster is found through the gateway named in dask config
    (``gateway.address``, ``gateway.auth``), as ``dask_gateway.Gateway()`` does.
    ``timeout`` bounds, each in turn, the gateway lookup, the connection, the
    scheduler's answer and the workers' answers. ``settle_delay`` pauses between
    listing the workers and querying them, which leaves time for workers to
    come and go (useful to reproduce churn; 0 in normal use).
    """
    _require_distributed()
    if target.gateway_cluster:
        try:
            import dask_gateway  # noqa: F401
        except ImportError as error:
            raise CheckError("--gateway-cluster needs the 'dask-gateway' package") from error
    import dask

    _ship_probe_by_value()
    with dask.config.set({"distributed.comm.timeouts.connect": f"{timeout}s"}):
        return asyncio.run(_collect(target, timeout, settle_delay, progress))
