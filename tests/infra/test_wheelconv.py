"""Requirement translation from wheels to conda depends."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from devsupport.standin.wheelconv import (
    Target,
    WheelInfo,
    conda_constraint,
    conda_depends,
    conda_name,
)

TARGET = Target("3.11.7")


@pytest.mark.parametrize(
    ("pep440", "conda"),
    [
        ("", ""),
        (">=1.2,<2", "<2,>=1.2"),
        ("==1.0", "==1.0"),
        ("==1.0.*", "1.0.*"),
        ("!=5.0.0", "!=5.0.0"),
        ("!=3.*,>=2.7", ">=2.7"),
        ("~=1.2", ">=1.2,<2"),
        ("~=1.4.5", ">=1.4.5,<1.5"),
        ("===2.0", "==2.0"),
    ],
)
def test_specifiers_become_conda_version_specs(pep440: str, conda: str) -> None:
    assert conda_constraint(SpecifierSet(pep440)) == conda


def test_names_are_normalised_and_mapped() -> None:
    assert conda_name("msgpack") == "msgpack-python"
    assert conda_name("Jupyter_Server") == "jupyter-server"
    assert conda_name("zope.interface") == "zope-interface"


def wheel(name: str, *requires: str) -> WheelInfo:
    return WheelInfo(Path(f"{name}.whl"), name, "1.0", tuple(map(Requirement, requires)), None)


def test_markers_are_evaluated_for_the_target_and_extras_expanded() -> None:
    schema = wheel(
        "jsonschema",
        "attrs>=22",
        "fqdn; extra == 'format-nongpl'",
        "webcolors>=24; extra == 'format-nongpl' and python_version >= '3.9'",
        "rfc3987; extra == 'format'",
    )
    events = wheel(
        "jupyter-events",
        "jsonschema[format-nongpl]>=4.18",
        "tomli; python_version < '3.11'",
        "pywin32; sys_platform == 'win32'",
        "msgpack>=1",
        "sphinx; extra == 'docs'",
    )
    depends = conda_depends(events, {"jsonschema": schema, "jupyter-events": events}, TARGET)
    assert depends == (
        "python >=3.11,<3.12",
        "fqdn",
        "jsonschema >=4.18",
        "msgpack-python >=1",
        "webcolors >=24",
    )
