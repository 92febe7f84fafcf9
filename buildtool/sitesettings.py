"""Site settings: `site.yaml` in the environments root, beside the environment folders.

What belongs to the DaskHub site rather than to one environment: the bounds of the
cluster options that users may pass to dask-gateway (`worker_cores`, `worker_memory` in
GiB, `scheduler_cores`, `scheduler_memory` in GiB), `profiles` (which published pairs the
hub offers, `hidden`, and which it preselects, `default`), and `version_checks` (default true):
whether the images' version checks run (`buildtool/versionchecks.py`: the scheduler
guard closes a mismatched worker, `Client(...)` fails on a mismatched client); false
makes the Helm values turn both off. `user_images` (default none: off) is where hub users'
own pairs live, a repository template with one `{username}` path component
(`registry.example.org/daskhub-users/{username}`, see :mod:`buildtool.namespaces`): with it,
the hub offers each user their own notebook images by digest, and the gateway starts a
user's own worker images by digest, and no one else's. The file is optional; a missing key
takes the default below. It is validated like the specs: an unknown key, a wrong type or
a default outside its bounds is one line naming the file, the key and the line (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from buildtool import namespaces, yamlfile
from buildtool.models import StrictModel
from buildtool.specfile import EnvironmentName

SITE_FILE = "site.yaml"


class Bounds(StrictModel):
    """What a user may ask for one option, and what they get when they do not ask."""

    # Finite numbers only: each is written into the gateway's Python.
    min: float = Field(gt=0, allow_inf_nan=False)
    default: float = Field(allow_inf_nan=False)
    max: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if not self.min <= self.default <= self.max:
            raise ValueError(
                f"needs min <= default <= max, got {self.min:g}, {self.default:g}, {self.max:g}"
            )
        return self


class ClusterOptions(StrictModel):
    """`cluster_options:` the bounds of each option the gateway offers."""

    worker_cores: Bounds = Bounds(min=1, default=1, max=4)
    worker_memory: Bounds = Bounds(min=1, default=2, max=16)  # GiB
    scheduler_cores: Bounds = Bounds(min=1, default=1, max=2)
    scheduler_memory: Bounds = Bounds(min=1, default=2, max=8)  # GiB


class Profiles(StrictModel):
    """`profiles:` which published pairs the hub offers, and which one it preselects."""

    # Preselected in the hub's profile list (else the first offered, in name order);
    # `helm-values --default` overrides it.
    default: EnvironmentName | None = None
    # Published pairs the hub does not offer and the gateway does not start (a site's
    # own check pairs, such as e2e).
    hidden: list[EnvironmentName] = []

    @model_validator(mode="after")
    def _default_offered(self) -> Profiles:
        if self.default is not None and self.default in self.hidden:
            raise ValueError(f"the default profile {self.default!r} is also hidden")
        return self


def _user_images(template: str) -> str:
    problem = namespaces.template_problem(template)
    if problem:
        raise ValueError(problem)
    return template


class SiteSettings(StrictModel):
    """The schema of `site.yaml`."""

    cluster_options: ClusterOptions = ClusterOptions()
    version_checks: bool = True
    profiles: Profiles = Profiles()
    # Where users' own pairs live: `host[:port]/path/{username}`; None: no user pairs.
    user_images: Annotated[str, AfterValidator(_user_images)] | None = None


def load_site_settings(root: Path) -> SiteSettings:
    """`root/site.yaml`, validated; the defaults when there is no such file."""
    path = root / SITE_FILE
    if not path.exists():
        return SiteSettings()
    settings, _ = yamlfile.load_file(path, SiteSettings, "the site settings")
    return settings
