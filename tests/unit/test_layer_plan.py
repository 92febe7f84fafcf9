"""The layer plan (buildtool/image/layers.py), without Docker: stable, bounded and complete."""

from __future__ import annotations

import pytest

from buildtool.common import BuildToolError
from buildtool.image import EXTENSION_RESERVE, LARGE, MAX_LAYERS, Budget, Package
from buildtool.image import plan_layers as planned

SMALL = [Package(f"pkg-{index:03d}", 10_000 + index) for index in range(120)]
BIG = [Package("numpy", 60 * LARGE // 8), Package("libllvm", 12 * LARGE), Package("scipy", LARGE)]


def _where(plan: list) -> dict[str, str]:
    return {name: layer.key for layer in plan for name in layer.packages}


def test_every_package_is_in_exactly_one_layer_within_the_slots() -> None:
    plan = planned(SMALL + BIG, 20)
    placed = [name for layer in plan for name in layer.packages]
    assert sorted(placed) == sorted(p.name for p in SMALL + BIG)
    assert len(plan) <= 20
    assert all(layer.packages for layer in plan)


def test_large_packages_get_layers_of_their_own_first() -> None:
    plan = planned(SMALL + BIG, 20)
    own = [layer for layer in plan if not layer.key.startswith("group-")]
    assert [layer.packages for layer in own] == [("libllvm",), ("numpy",), ("scipy",)]
    assert plan[: len(own)] == own


def test_the_plan_depends_only_on_names_and_sizes_not_on_their_order() -> None:
    assert planned(SMALL + BIG, 20) == planned(list(reversed(SMALL + BIG)), 20)


def test_adding_or_bumping_a_package_moves_no_other_package() -> None:
    before = _where(planned(SMALL + BIG, 20))
    bumped = [Package(p.name, p.size + 1) if p.name == "pkg-007" else p for p in SMALL]
    after = _where(planned([*bumped, Package("newcomer", 5_000), *BIG], 20))
    assert {n: k for n, k in after.items() if n != "newcomer"} == before


def test_the_budget_splits_what_the_base_leaves_and_a_full_base_is_one_line() -> None:
    budget = Budget.after(10)
    assert budget.worker + budget.notebook == MAX_LAYERS - EXTENSION_RESERVE - 10
    assert budget.worker > budget.notebook >= 2
    with pytest.raises(BuildToolError) as raised:
        Budget.after(MAX_LAYERS - EXTENSION_RESERVE - 2)
    message = str(raised.value)
    assert "\n" not in message and "58 layers" in message and "fewer layers" in message
