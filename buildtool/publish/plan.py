"""`buildtool plan`: tonight's work, as the JSON a CI job matrix reads.

An environment is planned when either content tag of its pair is not in the registry:
one manifest request per image (a pair whose worker is missing costs one), and nothing
is built. Each entry carries the environment, its platforms and its content tag; a job
builds, tests and publishes all of an environment's platforms, so its images are tagged
only when every platform is there.

    {"include": [{"environment": "physlite", "platforms": "linux-64", "content_tag": "c-..."}]}

GitHub Actions: `strategy: {matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}}`.
"""

from __future__ import annotations

import json

from buildtool.image import RenderedPair
from buildtool.publish.registry import Registry, credentials_for, split_reference
from buildtool.publish.sitepair import published_digests


def plan(pairs: list[RenderedPair]) -> dict[str, list[dict[str, str]]]:
    registries: dict[str, Registry] = {}
    include = []
    for pair in pairs:
        host, _ = split_reference(pair.worker.repository)
        if host not in registries:
            registries[host] = Registry(host, credentials_for(host, configured=host))
        if published_digests(registries[host], pair) is None:
            include.append(
                {
                    "environment": pair.environment,
                    "platforms": " ".join(pair.platforms),
                    "content_tag": pair.content_tag,
                }
            )
    return {"include": include}


def plan_json(pairs: list[RenderedPair]) -> str:
    return json.dumps(plan(pairs), separators=(",", ":"))
