"""The hub's named server a pair starts in (`service.server_name`): JupyterHub's own rule
for server names accepts every one, and a rebuilt pair never gets its old server."""

from __future__ import annotations

import pytest
from jupyterhub.slugs import is_valid_safe_slug

from buildtool.site import server_name

DIGEST = "@sha256:" + "0123abcd" + "e" * 56
OTHER = "@sha256:" + "9876fedc" + "e" * 56


@pytest.mark.parametrize(
    "pair",
    ["hep", "hep-extra", "my.pair", "a_b", "a__b", "0day", "x" * 64, "a-------b", "pair.v2"],
)
def test_every_pair_name_gives_a_server_name_jupyterhub_accepts(pair: str) -> None:
    name = server_name(pair, "registry.example.org/u/alice/jupyter-x" + DIGEST)
    assert is_valid_safe_slug(name), name
    assert name.endswith("-0123abcd")


def test_a_rebuilt_pair_starts_in_a_server_of_its_own() -> None:
    ref = "registry.example.org/u/alice/jupyter-hep"
    assert server_name("hep", ref + DIGEST) == "hep-0123abcd"
    assert server_name("hep", ref + OTHER) == "hep-9876fedc"
