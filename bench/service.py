"""The hub service under load: 20 hub users building at once, and one flooding previews.

    python -m bench.service [--repeat 3]

Everything real and offline: physlite locked against the conda-forge stand-in and
published into the local registry; a real JupyterHub runs `buildtool serve` with the
site's default limits (self_service: max_queued 8, one build at a time, no image tests);
each user calls the service's API with their own hub token, as the page does. --repeat
times each:

* 20 users submit a small addition to physlite at the same moment. Each accepted build is
  followed to its end. Counted: builds published, clear 429s (the queue's bound), and
  anything else (which must be none). Timed: submit to published, p50 and p95.
* The page (`GET` of the service's page, what a browser loads) is asked every 0.2 s by
  another user while the queue is full, and again while one user floods previews from 8
  threads for 20 s. The baseline is the same page asked 50 times with the service idle,
  in the same run.

Every row is the median of the runs; the ratios are against the idle page of each run.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from bench.common import Bench, Row, main, table, verdict
from devsupport.builder import Builder, running_builder
from devsupport.sitepair import publish_site

ENV_NAME = "physlite"
USERS = [f"u{index:02d}" for index in range(20)]
ADDITIONS = (["threadpoolctl"], ["wurlitzer"])  # in the stand-in, not in physlite
FLOOD_SECONDS = 20


def _call(url: str, token: str, body: dict | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            text = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _page_seconds(builder: Builder, token: str) -> float:
    started = time.perf_counter()
    status, _ = _call(builder.url, token)
    if status != 200:
        raise RuntimeError(f"the page answered {status}")
    return time.perf_counter() - started


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _sampling(builder: Builder, token: str, until: Callable[[], bool]) -> list[float]:
    """The page's response times, every 0.2 s, until `until()`."""
    samples = []
    while not until():
        samples.append(_page_seconds(builder, token))
        time.sleep(0.2)
    return samples


def _one_run(builder: Builder, tokens: dict[str, str], run: int, bench: Bench) -> dict[str, Any]:
    watcher = tokens["watcher"]
    idle = [_page_seconds(builder, watcher) for _ in range(50)]
    results: dict[str, tuple[int, float | None, str]] = {}
    barrier = threading.Barrier(len(USERS))

    def submit(index: int, user: str) -> None:
        body = {
            "environment": ENV_NAME,
            "name": f"load-{run}",
            "dependencies": ADDITIONS[index % len(ADDITIONS)],
        }
        barrier.wait()
        started = time.perf_counter()
        status, answer = _call(builder.api("builds"), tokens[user], body)
        if status != 202:
            results[user] = (status, None, str(answer.get("error", answer))[:200])
            return
        while answer.get("state") not in ("succeeded", "failed"):
            time.sleep(0.5)
            _, answer = _call(builder.api(f"builds/{answer['id']}"), tokens[user])
        took = time.perf_counter() - started
        results[user] = (202, took, answer["state"] if answer["state"] == "failed" else "")

    threads = [threading.Thread(target=submit, args=(i, u)) for i, u in enumerate(USERS)]
    for thread in threads:
        thread.start()
    bench.progress(f"run {run + 1}: 20 builds submitted; sampling the page")
    busy = _sampling(builder, watcher, lambda: all(not t.is_alive() for t in threads))
    for thread in threads:
        thread.join()

    bench.progress(f"run {run + 1}: one user floods previews for {FLOOD_SECONDS} s")
    flood_statuses: list[int] = []
    stop = time.monotonic() + FLOOD_SECONDS

    def flood() -> None:
        body = {"environment": ENV_NAME, "dependencies": list(ADDITIONS[0])}
        while time.monotonic() < stop:
            flood_statuses.append(_call(builder.api("preview"), tokens["flooder"], body)[0])

    flooders = [threading.Thread(target=flood) for _ in range(8)]
    for thread in flooders:
        thread.start()
    flooded = _sampling(builder, watcher, lambda: time.monotonic() > stop)
    for thread in flooders:
        thread.join()
    published = [took for status, took, failed in results.values() if took and not failed]
    return {
        "published": len(published),
        "refused": sum(1 for status, _, _ in results.values() if status == 429),
        "other": sorted(
            f"{user}: {status} {said}"
            for user, (status, took, said) in results.items()
            if status not in (202, 429) or (status == 202 and said)  # a 429 says why
        ),
        "p50": _p(published, 0.5) if published else float("nan"),
        "p95": _p(published, 0.95) if published else float("nan"),
        "idle": _p(idle, 0.95),
        "busy": _p(busy, 0.95),
        "flooded": _p(flooded, 0.95),
        "flood_429": flood_statuses.count(429),
        "flood_other": sorted({s for s in flood_statuses if s not in (200, 429)}),
    }


def report(bench: Bench) -> str:
    site = publish_site(bench.standin, bench.work / "site")
    runs = []
    try:
        with running_builder(
            site,
            bench.work / "service",
            [*USERS, "flooder", "watcher"],
            self_service="{max_pairs: 100}",
        ) as builder:
            tokens = {user: builder.hub.token(user) for user in [*USERS, "flooder", "watcher"]}
            for run in range(bench.repeat):
                runs.append(_one_run(builder, tokens, run, bench))
    finally:
        site.proxy.close()

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    others = [line for r in runs for line in r["other"]]
    answered = all(r["published"] + r["refused"] == len(USERS) for r in runs)
    idle = median("idle")
    rows = [
        Row(
            "20 users at once: published + clear 429 (of 20), median",
            f"{median('published'):.0f} + {median('refused'):.0f}",
            "20",
            "-",
            "all 20 published or 429",
            verdict(answered and not others),
        ),
        Row(
            "submit to published, p50 / p95 (s), median",
            f"{median('p50'):.1f} / {median('p95'):.1f}",
            "-",
            "-",
            "reported",
            "-",
        ),
        Row(
            "page p95 while the queue is full",
            f"{median('busy') * 1000:.0f} ms",
            f"{idle * 1000:.0f} ms idle",
            f"{median('busy') / idle:.2f}",
            "<= 200 ms",
            verdict(median("busy") <= 0.2),
        ),
        Row(
            f"page p95 while one user floods previews ({FLOOD_SECONDS} s, 8 threads)",
            f"{median('flooded') * 1000:.0f} ms",
            f"{idle * 1000:.0f} ms idle",
            f"{median('flooded') / idle:.2f}",
            "<= 200 ms",
            verdict(median("flooded") <= 0.2),
        ),
    ]
    notes = [
        f"runs: published {[r['published'] for r in runs]}, 429 {[r['refused'] for r in runs]}; "
        f"p95 submit-to-published (s) {[round(r['p95'], 1) for r in runs]}",
        f"the flood's answers: {[r['flood_429'] for r in runs]} clear 429s a run, other "
        f"statuses {sorted({s for r in runs for s in r['flood_other']}) or 'none'}",
        f"anything else: {others or 'nothing'}",
    ]
    return table(rows) + "\n\n" + "\n".join(f"- {note}" for note in notes)


if __name__ == "__main__":
    main("bench.service", __doc__, report)
