"""Site settings: `site.yaml` in the environments root, beside the environment folders.

What belongs to the DaskHub site rather than to one environment: the bounds of the
cluster options that users may pass to dask-gateway (`worker_cores`, `worker_memory` in
GiB, `scheduler_cores`, `scheduler_memory` in GiB), `profiles` (which published pairs the
hub offers, `hidden`, and which it preselects, `default`), and `version_checks` (default true):
whether the images' version checks run (`buildtool/image/versionchecks.py`: the scheduler
guard closes a mismatched worker, `Client(...)` fails on a mismatched client); false
makes the Helm values turn both off. `user_images` (default none: off) is where hub users'
own pairs live, a repository template with one `{username}` path component
(`registry.example.org/daskhub-users/{username}`, see :mod:`buildtool.site.namespaces`): with it,
the hub offers each user their own notebook images by digest, and the gateway starts a
user's own worker images by digest, and no one else's. `self_service` (default none: off)
turns on the hub service where users build their pairs (`buildtool serve`) and sets its
limits. The file is optional; a missing key
takes the default below. It is validated like the specs: an unknown key, a wrong type or
a default outside its bounds is one line naming the file, the key and the line (exit 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from buildtool.common import (
    BuildToolError,
    InputError,
    SpecError,
    StrictModel,
    grammar,
    read_published,
    yamlfile,
)
from buildtool.site import namespaces
from buildtool.site.namespaces import OWN_IMAGE_SLUG, escape_username
from buildtool.spec import Environment, EnvironmentName, Target, environment_names

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


# A Kubernetes label key or value, and an object's name (what the API server accepts).
_LABEL_KEY = re.compile(
    r"(?:[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_OBJECT_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key, label in value.items():
        _label_key(key)
        _label_value(label)
    return value


def _label_key(value: str) -> str:
    if not _LABEL_KEY.fullmatch(value):
        raise ValueError(f"{value!r} is not a Kubernetes label key")
    return value


def _label_value(value: str) -> str:
    if not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"{value!r} is not a Kubernetes label value")
    return value


def _object_name(value: str) -> str:
    if not _OBJECT_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a Kubernetes object's name")
    return value


Labels = Annotated[dict[str, str], AfterValidator(_labels)]
ObjectName = Annotated[str, AfterValidator(_object_name)]


class Toleration(StrictModel):
    """A Kubernetes toleration, as a pod spec writes it."""

    key: Annotated[str, AfterValidator(_label_key)] | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Annotated[str, AfterValidator(_label_value)] | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    def spec(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)


class Placement(StrictModel):
    """Where pods of one kind run: the nodes' labels, the taints they tolerate, and the
    GPUs each asks for (`nvidia.com/gpu`)."""

    node_selector: Labels = {}
    tolerations: list[Toleration] = []
    gpus: int = Field(default=0, ge=0, le=16)

    @property
    def empty(self) -> bool:
        return not (self.node_selector or self.tolerations or self.gpus)


#: The resource a GPU is asked for by (NVIDIA's device plugin; GKE and EKS alike).
GPU_RESOURCE = "nvidia.com/gpu"


class EnvironmentPlacement(StrictModel):
    """Where one environment's notebook, Dask workers and scheduler run."""

    notebook: Placement = Placement()
    workers: Placement = Placement()
    scheduler: Placement = Placement()


class SecretKey(StrictModel):
    """A key of a Kubernetes Secret in the hub's namespace."""

    name: ObjectName
    key: Annotated[str, AfterValidator(_label_key)]


def _group_name(name: str) -> str:
    """A hub group's name: `group:NAME`, so it can never be mistaken for "all"."""
    if not name.startswith("group:") or not re.fullmatch(r"[A-Za-z0-9_.@-]{1,255}", name[6:]):
        raise ValueError(f"{name!r} is neither 'all' nor 'group:NAME' (a hub group)")
    return name


def _user_images(template: str) -> str:
    problem = namespaces.template_problem(template)
    if problem:
        raise ValueError(problem)
    return template


class SelfService(StrictModel):
    """`self_service:` the limits of the hub service where users build their own pairs
    (`buildtool serve`)."""

    # Who may build: every hub user ("all"), or the members of one hub group.
    builders: Literal["all"] | Annotated[str, AfterValidator(_group_name)] = "all"
    max_pairs: int = Field(default=5, ge=1, le=1000)  # published pairs per user
    max_added_mb: float = Field(default=2000, gt=0, allow_inf_nan=False)  # added archives
    # What the additions may write, uncompressed (conda packages and pip pins, each).
    max_installed_mb: float = Field(default=8000, gt=0, allow_inf_nan=False)
    # What one user's workspace (specs, records, logs) may hold on the service's disk.
    max_user_mb: float = Field(default=500, gt=0, allow_inf_nan=False)
    # What the package cache keeps between builds; pruned after each build.
    max_cache_mb: float = Field(default=20000, gt=0, allow_inf_nan=False)
    build_timeout: int = Field(default=900, ge=30, le=24 * 3600)  # seconds
    max_queued: int = Field(default=8, ge=1, le=1000)  # builds waiting or running, all users
    concurrent: int = Field(default=1, ge=1, le=64)  # builds running at once
    # Its Deployment (deploy/kubernetes/builder.yaml): the image that runs `buildtool
    # serve` with the site's repository in /site, its volume, and its secrets.
    image: str | None = None
    state_gb: int = Field(default=20, ge=1, le=10_000)
    token_secret: SecretKey = SecretKey(name="hub", key="hub.services.daskhub-builder.apiToken")
    registry_secret: ObjectName = "daskhub-builder-registry"

    @property
    def group(self) -> str | None:
        """The hub group whose members may build, or None: every user may."""
        return None if self.builders == "all" else self.builders.removeprefix("group:")


#: What `buildtool init` writes for the registry, which the tool refuses until it is
#: replaced by the site's own.
REGISTRY_PLACEHOLDER = "registry.example.org/CHANGE-ME"


def _registry(value: str) -> str:
    if value == REGISTRY_PLACEHOLDER:
        raise ValueError(
            "still the placeholder of `buildtool init`: write where this site's pairs go "
            "(host[:port]/namespace)"
        )
    problem = grammar.registry_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class SiteSettings(StrictModel):
    """The schema of `site.yaml`."""

    # Where the site's pairs are published (`host[:port]/namespace`): what publish, plan,
    # render and build use when no --registry is given.
    registry: Annotated[str, AfterValidator(_registry)] | None = None
    cluster_options: ClusterOptions = ClusterOptions()
    version_checks: bool = True
    profiles: Profiles = Profiles()
    # Where users' own pairs live: `host[:port]/path/{username}`; None: no user pairs.
    user_images: Annotated[str, AfterValidator(_user_images)] | None = None
    # The hub service where users build their own pairs (`buildtool serve`); None: none.
    self_service: SelfService | None = None
    # Where each environment's pods run (its name, or `default` for every other one).
    placement: dict[str, EnvironmentPlacement] = {}
    # The Kubernetes Secret (docker-registry type) nodes pull the site's images with.
    image_pull_secret: ObjectName | None = None

    @model_validator(mode="after")
    def _placement_names(self) -> SiteSettings:
        for name in self.placement:
            if name != "default" and grammar.environment_name_problem(name):
                raise ValueError(f"placement: {name!r} is neither an environment nor default")
        return self

    def placed(self, environment: str) -> EnvironmentPlacement:
        """Where `environment`'s pods run: its own placement, else the default one."""
        return self.placement.get(environment) or self.placement.get(
            "default", EnvironmentPlacement()
        )


def load_site_settings(root: Path) -> SiteSettings:
    """`root/site.yaml`, validated; the defaults when there is no such file."""
    path = root / SITE_FILE
    if not path.exists():
        return SiteSettings()
    settings, _ = yamlfile.load_file(path, SiteSettings, "the site settings")
    return settings


def user_registry(root: Path, user: str, targets: list[Target]) -> str:
    """Where `publish --user USER` publishes: that hub user's namespace (site.yaml's
    `user_images`), which takes users' extension pairs only."""
    site_pairs = [t.name for t in targets if isinstance(t, Environment)]
    if site_pairs:
        raise BuildToolError(
            f"--user: {site_pairs[0]} is a site environment; only extension pairs go "
            "into a user's namespace"
        )
    return user_namespace(root, user)


def user_namespace(root: Path, user: str) -> str:
    """Where hub user `user`'s own pairs go: site.yaml's `user_images` with their escaped
    name (`alice.b` -> `alice-2eb`). A site without `user_images`, or a name without a
    namespace, is bad input: one line, exit status 2."""
    template = load_site_settings(root).user_images
    if template is None:
        raise InputError(f"{root / SITE_FILE} names no user_images: no user has a namespace")
    try:
        return namespaces.user_prefix(template, user)
    except namespaces.NamespaceError as exc:
        raise InputError(str(exc)) from None


@dataclass(frozen=True)
class ServiceSettings:
    """What the hub service (`buildtool serve`) works from."""

    root: Path  # the site's environments
    build_dir: Path  # the site's build folder: its published pairs
    state: Path  # the service's own: users' workspaces, builds
    image_tests: bool  # `--image-tests`: each pair is image-tested before its tags
    limits: SelfService
    user_images: str  # site.yaml's template
    # The hub's spawn page query that starts a notebook image (`{image}`): KubeSpawner's
    # own-image profile by default (`helm-values`); DockerSpawner takes `image={image}`.
    spawn_query: str = f"profile={OWN_IMAGE_SLUG}&image--unlisted-choice={{image}}"

    def workspace(self, user: str) -> Path:
        return self.state / "users" / escape_username(user)

    @property
    def registry_host(self) -> str:
        """The registry the service publishes to (the users' namespaces'), whose push
        credentials it holds."""
        return self.user_images.partition("/")[0]


def check_users_apart(root: Path, build_dir: Path) -> None:
    """No user's namespace may hold an image the site publishes (that user could publish
    over it): every publish record of a site environment, hidden or not, checked against
    `user_images`, in one line at its site.yaml key. `helm-values` and `serve` check it."""
    path = root / SITE_FILE
    if not path.exists():
        return
    settings, lines = yamlfile.load_file(path, SiteSettings, "the site settings")
    if settings.user_images is None:
        return
    for name in environment_names(root):
        published = read_published(build_dir, name)
        for image in (published.images.notebook, published.images.worker) if published else ():
            if namespaces.in_any_user_namespace(settings.user_images, image.ref):
                raise SpecError(
                    path,
                    "user_images",
                    f"{settings.user_images!r} covers the site's own image {image.ref} "
                    f"({name}): a user could publish there; give users a namespace of "
                    "their own",
                    lines.get(("user_images",)),
                )


def site_registry(root: Path) -> str:
    """site.yaml's `registry`, for the commands given no --registry; one line when there
    is none (its placeholder is refused on reading)."""
    registry = load_site_settings(root).registry
    if registry is None:
        raise BuildToolError(
            "name the registry: --registry HOST[:PORT]/NAMESPACE, or `registry:` in "
            f"{root / SITE_FILE}"
        )
    return registry
