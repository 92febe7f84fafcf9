"""A user's extension pair on physlite, against a full publish of physlite.

    python -m bench.extend [--repeat 3]

Everything in one run, offline: physlite locked against the conda-forge stand-in and
published into the local registry; then, --repeat times each:

* the baseline: `buildtool publish physlite` into a fresh namespace (build, image tests,
  push), with the package cache warm, as a site's CI has it between nightlies;
* ours: from a spec to a published extension pair, `buildtool lock` then `buildtool
  publish` (no image tests, no Docker), each run with an EMPTY package cache, so every
  added archive is fetched over HTTP. Two sets of additions: two small conda packages
  and one pip pin (the issue's example), and a larger one (scikit-learn, which brings
  joblib and threadpoolctl, plus mimesis);
* through the hub service: a real JupyterHub runs `buildtool serve`; from the page's
  submit (the API call it makes, with a hub token) to the published pair, two small
  packages, no image tests.

The physical limit of the bytes is the added packages' own compressed size: each added
archive's and wheel's Content-Length, asked of the server that serves it. The archives are
zstd; layers must be gzip (Docker 20.10 nodes pull nothing else), so the table also shows
the same files compressed by gzip -9, the least a gzip layer can come to. Bytes pushed
are what the registry client sent (request bodies: layers, configs, manifests, the tag
writes, the attached lock and client pins); bytes fetched are what py-rattler downloaded.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import statistics
import sys
import time
import urllib.request
import zipfile
from functools import partial
from pathlib import Path

import zstandard

from bench.common import Bench, Row, main, mb, run, table, timed, verdict
from buildtool.lock import read_lock
from buildtool.publish import added_records
from buildtool.site import content_length
from devsupport.builder import running_builder
from devsupport.sitepair import publish_site

ENV_NAME = "physlite"
# name -> (conda additions, pip pins)
ADDITIONS = {
    "small": (["threadpoolctl", "wurlitzer"], ["hepunits==2.3.5"]),
    "larger": (["scikit-learn", "mimesis"], []),
}


def _gzip_floor(url: str) -> int:
    """The same files as gzip at its best (-9): what a layer can come to at the least in
    the format every Docker engine pulls (the archives themselves are zstd)."""
    with urllib.request.urlopen(url, timeout=120) as response:
        archive = zipfile.ZipFile(io.BytesIO(response.read()))
    raw = b""
    for name in archive.namelist():
        if name.endswith(".tar.zst"):  # a .conda's info and pkg tars
            raw += zstandard.ZstdDecompressor().decompressobj().decompress(archive.read(name))
        elif not url.endswith(".conda"):  # a wheel's files
            raw += archive.read(name)
    return len(gzip.compress(raw, 9))


def _spec(bench: Bench, name: str, parent: str, conda: list[str], pip: list[str]) -> None:
    folder = bench.work / "users" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "env.yaml").write_text(
        f"from: {parent}\ndescription: physlite and {', '.join(conda + pip)}\n"
        f"dependencies: {json.dumps(conda)}\npip: {json.dumps(pip)}\n"
    )


def _extend(bench: Bench, name: str, registry: str, cache: Path) -> tuple[float, dict]:
    """Lock and publish the extension with an empty package cache: the seconds it took
    and its publish record."""
    users = bench.work / "users"
    env = {**bench.registry_env(), "DASKHUB_CACHE": str(cache)}
    common = ["--root", str(users), "--build-dir", str(users / "build")]
    lock = users / name / "conda-lock.yml"
    lock.unlink(missing_ok=True)
    started = time.perf_counter()
    # The publish alone: its image tests are not what this measures.
    publish = ["publish", name, "--registry", registry, "--image-tests", "no"]
    for args in (["lock", name], publish):
        run(
            [sys.executable, "-m", "buildtool.cli", *common, *args],
            bench.work / f"{name}-{args[0]}.log",
            cwd=users,
            env=env,
        )
    seconds = time.perf_counter() - started
    return seconds, json.loads((users / "build" / name / "published.json").read_text())


def report(bench: Bench) -> str:
    bench.lock(ENV_NAME, ("base", ENV_NAME))
    env = bench.registry_env()
    full_times = []
    for run_index in range(bench.repeat):
        namespace = bench.namespace("site")
        bench.progress(f"full publish {run_index + 1}/{bench.repeat} into {namespace}")
        args = ["publish", ENV_NAME, "--registry", namespace, *bench.image_flags]
        full_times.append(timed(partial(bench.buildtool, *args, log="publish.log", env=env)))
    parent = json.loads((bench.build_dir / ENV_NAME / "published.json").read_text())
    parent_ref = parent["images"]["notebook"]["ref"]
    site_host = parent["registry"].split("/", 1)[0]
    rows: list[Row] = []
    notes = [
        f"Parent: {parent_ref} ({ENV_NAME}).",
        "Full publish runs (s): " + ", ".join(f"{t:.1f}" for t in full_times) + ".",
    ]
    full = statistics.median(full_times)
    for kind, (conda, pip) in ADDITIONS.items():
        name = f"user-{kind}"
        _spec(bench, name, parent_ref, conda, pip)
        times, records = [], []
        for run_index in range(bench.repeat):
            cache = bench.work / f"cache-{kind}-{run_index}"
            registry = f"{site_host}/benchusers{kind}{run_index}{os.getpid()}/alice"
            bench.progress(f"extension {kind} {run_index + 1}/{bench.repeat} into {registry}")
            seconds, record = _extend(bench, name, registry, cache)
            times.append(seconds)
            records.append(record)
        lock = read_lock(bench.work / "users" / name / "conda-lock.yml")
        added, added_pip = added_records(lock, read_lock(bench.root / ENV_NAME / "conda-lock.yml"))
        urls = [p.url for p in added] + [p.url for p in added_pip]
        limit = sum(content_length(url) for url in urls)
        floor = sum(_gzip_floor(url) for url in urls)
        pushed = statistics.median(r["bytes_pushed"] for r in records)
        fetched = statistics.median(r["bytes_fetched"] for r in records)
        ours = statistics.median(times)
        what = ", ".join(sorted([p.name for p in added] + [p.name for p in added_pip]))
        rows += [
            Row(
                f"{kind}: spec to published pair, median of {bench.repeat} (no image tests)",
                f"{ours:.1f} s",
                f"{full:.1f} s (full publish)",
                f"{ours / full:.3f}",
                "< 0.25",
                verdict(ours / full < 0.25),
            ),
            Row(
                f"{kind}: bytes pushed",
                mb(pushed),
                f"{mb(limit)} (added archives)",
                f"{pushed / limit:.2f}",
                "<= 1.1",
                verdict(pushed / limit <= 1.1),
            ),
            Row(
                f"{kind}: bytes pushed, over the same files as gzip -9",
                mb(pushed),
                f"{mb(floor)} (gzip -9 floor)",
                f"{pushed / floor:.2f}",
                "-",
                "-",
            ),
            Row(
                f"{kind}: bytes fetched (empty package cache)",
                mb(fetched),
                f"{mb(limit)} (added archives)",
                f"{fetched / limit:.2f}",
                "-",
                "-",
            ),
        ]
        notes.append(
            f"{kind}: adds {what}; runs (s): {', '.join(f'{t:.1f}' for t in times)}; "
            f"pushed {pushed - limit:+,.0f} bytes beyond the archives (configs, manifests "
            "written once by digest and once per tag, the attached lock and client pins)."
        )
    service_row, service_note = _service(bench, full)
    rows.append(service_row)
    notes.append(service_note)
    return table(rows) + "\n\n" + "\n".join(f"- {note}" for note in notes)


SERVICE_ADDITIONS = ["threadpoolctl", "wurlitzer"]


def _service(bench: Bench, full: float) -> tuple[Row, str]:
    """Through the hub service (`buildtool serve` under a real JupyterHub): from the page's
    submit (its POST to the service's API, with alice's hub token) to the published
    pair, two small packages on physlite, no image tests; each run a new pair."""
    site = publish_site(bench.standin, bench.work / "service-site")
    try:
        with running_builder(
            site, bench.work / "service", ["alice"], self_service="{max_pairs: 100}"
        ) as builder:
            token = builder.hub.token("alice")
            times = []
            for run_index in range(bench.repeat):
                body = {
                    "environment": ENV_NAME,
                    "name": f"bench-{run_index}",
                    "dependencies": SERVICE_ADDITIONS,
                }
                bench.progress(f"through the service {run_index + 1}/{bench.repeat}")
                started = time.perf_counter()
                build = _api(builder.api("builds"), token, body)
                while build.get("state") not in ("succeeded", "failed"):
                    time.sleep(0.2)
                    build = _api(builder.api(f"builds/{build['id']}"), token)
                if build["state"] != "succeeded":
                    raise RuntimeError(f"the service's build failed: {build.get('error')}")
                times.append(time.perf_counter() - started)
    finally:
        site.proxy.close()
    ours = statistics.median(times)
    row = Row(
        f"service: page submit to published pair, median of {bench.repeat} (no image tests)",
        f"{ours:.1f} s",
        f"{full:.1f} s (full publish)",
        f"{ours / full:.3f}",
        "< 60 s",
        verdict(ours < 60),
    )
    note = (
        f"service: adds {', '.join(SERVICE_ADDITIONS)} through `buildtool serve` under "
        f"JupyterHub; runs (s): {', '.join(f'{t:.1f}' for t in times)} (each a new pair; "
        "the package cache warm after the first)."
    )
    return row, note


def _api(url: str, token: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        answer: dict = json.loads(response.read())
    return answer


if __name__ == "__main__":
    main("bench.extend", __doc__, report)
