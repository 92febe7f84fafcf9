"""`buildtool helm-values`: DaskHub chart values for the published pairs.

The daskhub chart is the jupyterhub chart plus the dask-gateway chart. The values made here:

- `jupyterhub.singleuser.profileList`: one KubeSpawner profile per published environment
  but those the site hides (`profiles.hidden` in site.yaml, which the gateway then does
  not start either), its notebook image pinned by digest, `profiles.default` (or
  `--default`) preselected;
- `dask-gateway.gateway.extraConfig.optionHandler`: the gateway's cluster options, an
  `image` option that only ever starts a published worker image, and the cores and memory
  (GiB) of the workers and the scheduler, bounded by the site settings
  (`<root>/site.yaml`, see :mod:`buildtool.site.settings`).

The version checks the images carry (`buildtool/image/versionchecks.py`) are on by default.
The gateway starts its schedulers with a `--preload` of its own, which replaces the
preloads the image's dask config names, so the option handler sets the scheduler command
to `dask scheduler --preload compat.plugin` (the gateway appends its own arguments, its
preload among them). The handler always names the commands: the gateway's defaults,
`dask-scheduler` and `dask-worker`, are gone from distributed 2026.6 on
(dask-gateway#945). The site setting `version_checks: false` turns both checks off
instead: the handler sets `DASK_COMPAT__GUARD=off` and `DASK_COMPAT__CLIENT=off` in the
clusters' pods, and each profile sets `DASK_COMPAT__CLIENT=off` in the notebook.

How a notebook gets its matched worker. KubeSpawner sets `JUPYTER_IMAGE_SPEC` to the
notebook image, and each profile sets `DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE` to
`{JUPYTER_IMAGE_SPEC}`: the dask-gateway client formats that with `os.environ` and sends
the notebook's own image as the `image` option. The gateway's option handler holds the
table notebook image -> worker image (both by digest) and starts the matched worker; it
also takes a worker image as is, by digest or by its content tag (the notebook image's own
baked-in variable names its worker by content tag, which publish never moves), and
refuses any other image, date tags included. The table lives in one place, the gateway.

KubeSpawner expands `{name}` placeholders in `environment` values with `str.format` and
fails on a name it does not know, so the profile writes `{{JUPYTER_IMAGE_SPEC}}`: the pod
then gets `{JUPYTER_IMAGE_SPEC}` for the dask-gateway client to fill in.

The `optionHandler` key is the one the daskhub chart's documentation uses, so these values
replace such a handler rather than run next to it.

Users' own pairs (site.yaml `user_images`, a template such as
`registry.example.org/daskhub-users/{username}`; see :mod:`buildtool.site.namespaces`). With it
set, the option handler also takes an image in a user namespace, but only the asking user's
own and only by digest: their worker image starts as it is, their notebook image starts the
worker its `io.daskhub.worker-image` label names (read from the registry, with the pull
credentials of the gateway's environment), which must be theirs and by digest too; any
other image in a user namespace is refused. And the hub's extraConfig
(`jupyterhub.hub.extraConfig.daskhubUserImages`) makes `c.KubeSpawner.profile_list` a
callable: for each user, the site's profiles as they are, then "My own image", a free-form
field whose validation regex admits only that user's images by digest. Both run the
portable part of `buildtool.site.namespaces`, embedded verbatim (neither server has daskhub
packages), so the code they run is the code the tests run.

One gateway, one version. A single dask-gateway server serves every environment, and its
version must match the dask-gateway client in every notebook image (dask-gateway#161):
the server and the client are released together and the project pins them equal, so
"compatible" here means the same version. `gateway_chart` reads the `dask-gateway`
record of each published pair's notebook set (every platform; a pip pin of it wins over
the conda package, as pip installs over it) and fails in one line, naming each
environment and its version, when no single version serves them all, or when a notebook
image has no dask-gateway at all (it could not start gateway clusters). The lock read
is the one the pair was published from (`build/<env>/published-lock.yml`, which `publish`
keeps beside the record), not the environment's current lock: after a relock whose
publish failed, the deployed notebook image still holds the old client. A record without
that copy (made by hand) falls back to `environments/<env>/conda-lock.yml`.

The dask-gateway chart is released with the package, under the same version number, so
the matching chart version is that version; `helm-values` writes it to `charts.yaml`
beside the values file, for the `helm upgrade --version` of the gateway's chart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.utils import canonicalize_name

from buildtool.common import PUBLISHED_LOCK_FILE, BuildToolError, read_published, write_if_changed
from buildtool.image import CHECKS_OFF, CLIENT_ENV, GUARD_ENV, SCHEDULER_PRELOAD_ARGS
from buildtool.lock import LockFile, read_lock
from buildtool.site import namespaces
from buildtool.site.manifests import (
    BUILDER_FILE,
    PREPULLER_FILE,
    builder_manifests,
    prepuller_manifests,
)
from buildtool.site.settings import (
    GPU_RESOURCE,
    SITE_FILE,
    ClusterOptions,
    EnvironmentPlacement,
    Placement,
    SiteSettings,
    check_users_apart,
    load_site_settings,
)
from buildtool.spec import environment_names, load_environment
from compat.vocabulary import IMAGE_OPTION_ENV

VALUES_PATH = Path("deploy/daskhub-values.yaml")
# Written beside the values file: the dask-gateway chart version that matches them.
CHARTS_FILE = "charts.yaml"
GATEWAY = "dask-gateway"
# Doubled braces survive KubeSpawner's expansion as `{JUPYTER_IMAGE_SPEC}`.
NOTEBOOK_IMAGE_PLACEHOLDER = "{{JUPYTER_IMAGE_SPEC}}"
EXTRA_CONFIG_KEY = "optionHandler"
# The hub's extraConfig key of the users' own images (site.yaml: user_images).
HUB_EXTRA_CONFIG_KEY = "daskhubUserImages"
HEADER = (
    "# AUTO GENERATED by `buildtool helm-values` from environments/*/env.yaml and\n"
    "# build/*/published.json. DO NOT EDIT.\n"
    "# Values for the daskhub chart (jupyterhub + dask-gateway), for example:\n"
    "#   helm upgrade --install daskhub dask/daskhub \\\n"
    "#     --values deploy/daskhub-values.yaml --values secrets.yaml\n"
)


@dataclass(frozen=True)
class Pair:
    """One published environment: its profile text and its two images by digest."""

    name: str
    display_name: str
    description: str
    notebook: str
    worker: str
    worker_by_content_tag: str


def published_pairs(root: Path, build_dir: Path) -> list[Pair]:
    """Every environment with a `published.json`, in name order."""
    pairs = []
    for name in environment_names(root):
        published = read_published(build_dir, name)
        if published is None:
            continue
        env = load_environment(root, name)
        pairs.append(
            Pair(
                name=name,
                display_name=env.display_name,
                description=env.description,
                notebook=published.images.notebook.ref,
                worker=published.images.worker.ref,
                worker_by_content_tag=f"{published.images.worker.repository}:"
                f"{published.content_tag}",
            )
        )
    return pairs


def _checks_off() -> dict[str, str]:
    """The environment that turns the images' version checks off."""
    return {GUARD_ENV: CHECKS_OFF, CLIENT_ENV: CHECKS_OFF}


def offered_pairs(root: Path, build_dir: Path, hidden: set[str]) -> list[Pair]:
    """The published pairs the hub offers: all but the site's `profiles.hidden`."""
    published = published_pairs(root, build_dir)
    if not published:
        raise BuildToolError(f"no environment is published yet (no {build_dir}/*/published.json)")
    pairs = [p for p in published if p.name not in hidden]
    if not pairs:
        raise BuildToolError(
            f"every published environment is hidden ({SITE_FILE}: profiles.hidden)"
        )
    return pairs


def _profile(pair: Pair, default: bool, checks: bool, placed: Placement) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "display_name": pair.display_name,
        "description": pair.description,
        "slug": pair.name,
    }
    if default:
        profile["default"] = True
    profile["kubespawner_override"] = {
        "image": pair.notebook,
        "environment": {
            IMAGE_OPTION_ENV: NOTEBOOK_IMAGE_PLACEHOLDER,
            **({} if checks else {CLIENT_ENV: CHECKS_OFF}),
        },
        **_notebook_placement(placed),
    }
    return profile


def _notebook_placement(placed: Placement) -> dict[str, Any]:
    """KubeSpawner's overrides that put the notebook pod where `placed` says."""
    override: dict[str, Any] = {}
    if placed.node_selector:
        override["node_selector"] = dict(placed.node_selector)
    if placed.tolerations:
        override["tolerations"] = [t.spec() for t in placed.tolerations]
    if placed.gpus:
        override["extra_resource_guarantees"] = {GPU_RESOURCE: str(placed.gpus)}
        override["extra_resource_limits"] = {GPU_RESOURCE: str(placed.gpus)}
    return override


def _pod_placement(placed: Placement) -> dict[str, Any]:
    """A pod spec's fields (dask-gateway's extra pod config) for `placed`."""
    pod: dict[str, Any] = {}
    if placed.node_selector:
        pod["nodeSelector"] = dict(placed.node_selector)
    if placed.tolerations:
        pod["tolerations"] = [t.spec() for t in placed.tolerations]
    return pod


def cluster_placement(placement: EnvironmentPlacement) -> dict[str, Any]:
    """What the gateway's option handler adds to a cluster's config for an environment:
    its workers' and scheduler's pod placement, and the workers' GPUs as container
    resources (dask-gateway merges them into the cores and memory it sets)."""
    config: dict[str, Any] = {}
    for role, placed in (("worker", placement.workers), ("scheduler", placement.scheduler)):
        pod = _pod_placement(placed)
        if pod:
            config[f"{role}_extra_pod_config"] = pod
        if placed.gpus:
            gpus = {GPU_RESOURCE: placed.gpus}
            config[f"{role}_extra_container_config"] = {
                "resources": {"limits": gpus, "requests": gpus}
            }
    return config


def _dict_lines(name: str, mapping: dict[str, str]) -> list[str]:
    body = [f"    {json.dumps(k)}: {json.dumps(v)}," for k, v in mapping.items()]
    return [f"{name} = {{", *body, "}"]


def _list_lines(name: str, items: list[str]) -> list[str]:
    return [f"{name} = [", *[f"    {json.dumps(item)}," for item in items], "]"]


# (option, label) of the resource options; memory is in GiB, as users pass it.
RESOURCE_OPTIONS = (
    ("worker_cores", "Worker cores"),
    ("worker_memory", "Worker memory (GiB)"),
    ("scheduler_cores", "Scheduler cores"),
    ("scheduler_memory", "Scheduler memory (GiB)"),
)


def _resource_fields(bounds: ClusterOptions) -> list[str]:
    lines = []
    for option, label in RESOURCE_OPTIONS:
        b = getattr(bounds, option)
        lines.append(
            f'    Float("{option}", default={b.default!r}, min={b.min!r}, max={b.max!r}, '
            f'label="{label}"),'
        )
    return lines


# The gateway's defaults, `dask-scheduler` and `dask-worker`, are gone from distributed
# 2026.6 on (dask-gateway#945); `dask scheduler` and `dask worker` exist since 2022.10.
SCHEDULER_CMD = ["dask", "scheduler"]
WORKER_CMD = ["dask", "worker"]


def _commands_lines(checks: bool) -> list[str]:
    """What the handler returns beside the image and resources: the scheduler and worker
    commands, with the version guard's preload or the environment that turns the
    checks off."""
    scheduler = [*SCHEDULER_CMD, *(SCHEDULER_PRELOAD_ARGS if checks else ())]
    lines = [
        f'        "scheduler_cmd": {json.dumps(scheduler)},',
        f'        "worker_cmd": {json.dumps(WORKER_CMD)},',
    ]
    if not checks:
        lines.append(f'        "environment": {json.dumps(_checks_off())},')
    return lines


def _namespaces_lines() -> list[str]:
    """The portable part of `buildtool.site.namespaces` and what it needs, verbatim."""
    return namespaces.portable_config().splitlines()


def _refusal_lines(indent: str) -> list[str]:
    return [
        f"{indent}raise ValueError(",
        f'{indent}    f"image {{options.image!r}} is not a published DaskHub image; "',
        f'{indent}    f"use one of {{DASKHUB_WORKER_IMAGES}} or their notebook images"',
        f"{indent})",
    ]


def _image_lines(user_images: str | None) -> list[str]:
    """The handler's choice of image: a site image by the table; with `user_images`, an
    image in a user namespace by the namespace rules."""
    lines = [
        "    image = DASKHUB_WORKER_FOR_IMAGE.get(options.image, options.image)",
        "    if image not in DASKHUB_WORKER_IMAGES:",
    ]
    if user_images is None:
        return [*lines, *_refusal_lines("        ")]
    return [
        *lines,
        "        # Not a site image: the user's own (or refused), or no user's at all (None).",
        "        image = user_worker_image(DASKHUB_USER_IMAGES, options.image, user.name)",
        "        if image is None:",
        *_refusal_lines("            "),
    ]


def _user_images_lines(user_images: str | None) -> list[str]:
    if user_images is None:
        return []
    return [
        "# Users' own pairs (site.yaml: user_images): a user starts their own images, by",
        "# digest only. The registry's pull credentials come from the gateway's environment,",
        f"# {namespaces.REGISTRY_USER_ENV} and {namespaces.REGISTRY_PASSWORD_ENV}: set them"
        " from a Kubernetes",
        "# secret with dask-gateway's `gateway.env` (README: Users' own images).",
        f"DASKHUB_USER_IMAGES = {json.dumps(user_images)}",
        "",
        *_namespaces_lines(),
    ]


def options_handler_config(
    pairs: list[Pair],
    default: Pair,
    bounds: ClusterOptions,
    checks: bool = True,
    user_images: str | None = None,
    placements: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The gateway's `dask_gateway_config.py` snippet: the image option with its allowlist
    and mapping, the resource options with the site's bounds, and the version checks
    (`checks`: on, the scheduler command that loads the guard; off, the environment that
    turns both checks off). With `user_images` (site.yaml), the image option also takes
    the asking user's own images by digest (:mod:`buildtool.site.namespaces`)."""
    guard = (
        "# The scheduler command loads the version guard: the gateway's own --preload"
        if checks
        else "# The version checks are off (site.yaml: version_checks: false)."
    )
    guard_more = ["# replaces the preloads of the image's dask config."] if checks else []
    lines = [
        "# AUTO GENERATED by `buildtool helm-values`. DO NOT EDIT.",
        "# The `image` option starts only a published worker image. A notebook image, as",
        f"# sent by {IMAGE_OPTION_ENV}={{JUPYTER_IMAGE_SPEC}},",
        "# starts the worker image built from the same lock. Cores and memory (GiB) are",
        "# bounded by the site settings; requests and limits are set alike.",
        guard,
        *guard_more,
        "from dask_gateway_server.options import Float, Options, String",
        "",
        *_list_lines("DASKHUB_WORKER_IMAGES", [p.worker for p in pairs]),
        *_dict_lines(
            "DASKHUB_WORKER_FOR_IMAGE",
            {
                **{p.notebook: p.worker for p in pairs},
                **{p.worker_by_content_tag: p.worker for p in pairs},
            },
        ),
        f"DASKHUB_DEFAULT_WORKER_IMAGE = {json.dumps(default.worker)}",
        "# Where each pair's workers and scheduler run (site.yaml: placement), by worker",
        "# image; a user's own pair runs where the default placement says.",
        f"DASKHUB_PLACEMENT = {json.dumps(placements or {}, sort_keys=True)}",
        "GIB = 2**30",
        *_user_images_lines(user_images),
        "",
        "",
        "def options_handler(options, user):",
        *_image_lines(user_images),
        "    return {",
        '        "image": image,',
        '        "worker_cores": options.worker_cores,',
        '        "worker_cores_limit": options.worker_cores,',
        '        "worker_memory": int(options.worker_memory * GIB),',
        '        "worker_memory_limit": int(options.worker_memory * GIB),',
        '        "scheduler_cores": options.scheduler_cores,',
        '        "scheduler_cores_limit": options.scheduler_cores,',
        '        "scheduler_memory": int(options.scheduler_memory * GIB),',
        '        "scheduler_memory_limit": int(options.scheduler_memory * GIB),',
        *_commands_lines(checks),
        '        **DASKHUB_PLACEMENT.get(image, DASKHUB_PLACEMENT.get("", {})),',
        "    }",
        "",
        "",
        "c.Backend.cluster_options = Options(",
        '    String("image", default=DASKHUB_DEFAULT_WORKER_IMAGE, label="Worker image"),',
        *_resource_fields(bounds),
        "    handler=options_handler,",
        ")",
    ]
    return "\n".join(lines) + "\n"


# How long the hub's spawn page waits for the service's list of a user's pairs.
PAIRS_TIMEOUT_S = 3.0


def hub_user_images_config(user_images: str, service: bool = False) -> str:
    """The hub's extraConfig snippet: `c.KubeSpawner.profile_list` becomes a callable that
    gives each user the site's profiles (`singleuser.profileList`, which the chart's
    jupyterhub_config.py has set before it runs the extraConfig) and "My own image"; with
    the `service` (`buildtool serve`, registered in `hub.services`), the user's published
    pairs to choose from there, as the service lists them."""
    lines = [
        "# AUTO GENERATED by `buildtool helm-values`. DO NOT EDIT.",
        "# Users' own notebook images (site.yaml: user_images). Each user is offered the",
        "# site's profiles (singleuser.profileList, set by the chart before extraConfig",
        '# runs) and "My own image", whose field admits only their own images by digest.',
        "import asyncio",
        "",
        f"DASKHUB_USER_IMAGES = {json.dumps(user_images)}",
        f"PAIRS_TIMEOUT_S = {PAIRS_TIMEOUT_S}",
        "DASKHUB_SITE_PROFILES = c.KubeSpawner.profile_list",
        "if not isinstance(DASKHUB_SITE_PROFILES, list):",
        "    raise ValueError(",
        '        "daskhub user images: c.KubeSpawner.profile_list is not a list; "',
        '        "set singleuser.profileList from the generated values"',
        "    )",
        "",
        *_namespaces_lines(),
        "",
        "",
        *(
            [
                "# The hub service (hub.services), asked for the user's published pairs with",
                "# its own API token, which the hub holds (z2jh generates it).",
                "DASKHUB_SERVICE = next(",
                "    (s for s in c.JupyterHub.services if s.get('name') == SERVICE_NAME), None",
                ")",
                "",
                "",
                "def daskhub_pairs(name):",
                "    if DASKHUB_SERVICE is None or not DASKHUB_SERVICE.get('url'):",
                "        return []",
                "    token = DASKHUB_SERVICE.get('api_token', '')",
                "    return service_pairs(DASKHUB_SERVICE['url'], token, name)",
            ]
            if service
            else ["def daskhub_pairs(name):", "    return []"]
        ),
        "",
        "",
        "async def daskhub_profile_list(spawner):",
        "    # The hub's event loop runs this: the service is asked on a thread, for at most",
        "    # PAIRS_TIMEOUT_S; a slow or failing service leaves the site's profiles and the",
        "    # own-image field, with no pairs to choose from.",
        "    name = spawner.user.name",
        "    try:",
        "        pairs = await asyncio.wait_for(",
        "            asyncio.to_thread(daskhub_pairs, name), PAIRS_TIMEOUT_S",
        "        )",
        "    except Exception:",
        "        pairs = []",
        "    return user_profile_list(DASKHUB_SITE_PROFILES, DASKHUB_USER_IMAGES, name, pairs)",
        "",
        "",
        "c.KubeSpawner.profile_list = daskhub_profile_list",
    ]
    return "\n".join(lines) + "\n"


# Where the site runs `buildtool serve` (its own Deployment and Service, see the README).
BUILDER_URL = f"http://{namespaces.SERVICE_NAME}:8000"


def builder_service() -> dict[str, Any]:
    """`hub.services` and `hub.loadRoles` for the hub service: every user may reach it
    through the hub (the `user` role gains access to it: the hub grants no service to
    users by default), by OAuth without a consent page (it is the site's own); its token
    may read hub groups (site.yaml's `self_service.builders: group:NAME`, which the
    service itself enforces). z2jh generates its API token. Named servers are on: a pair
    from the service starts in a server of its own (`service.server_name`), beside the
    one the user may have running, never in a server running another image."""
    name = namespaces.SERVICE_NAME
    return {
        "allowNamedServers": True,
        "services": {
            name: {"url": BUILDER_URL, "display": True, "oauth_no_confirm": True},
        },
        "loadRoles": {
            name: {
                "description": "the daskhub pair builder",
                "scopes": ["read:groups"],
                "services": [name],
            },
            "user": {
                "description": "standard user privileges, and the pair builder",
                "scopes": ["self", f"access:services!service={name}"],
            },
        },
    }


def _check_user_images(user_images: str, pairs: list[Pair]) -> None:
    """No site profile may take the own-image profile's slug (no user namespace holds a
    site image: `settings.check_users_apart`)."""
    for pair in pairs:
        if pair.name == namespaces.OWN_IMAGE_SLUG:
            raise BuildToolError(
                f"environment {pair.name!r} has the name of the hub's own-image profile; "
                f"rename it, or hide it ({SITE_FILE}: profiles.hidden)"
            )


def generate_helm_values(root: Path, build_dir: Path, default: str | None = None) -> dict:
    """The chart values; `default` names the preselected environment (else the first)."""
    settings = load_site_settings(root)  # the site's input, checked first
    bounds, checks = settings.cluster_options, settings.version_checks
    hidden = set(settings.profiles.hidden)
    default = default or settings.profiles.default
    pairs = offered_pairs(root, build_dir, hidden)
    names = [p.name for p in pairs]
    if default is not None and default not in names:
        raise BuildToolError(
            f"default environment {default!r} is not published (or is hidden): {names}"
        )
    user_images = settings.user_images
    if user_images is not None:
        check_users_apart(root, build_dir)
        _check_user_images(user_images, pairs)
    chosen = next(p for p in pairs if p.name == (default or names[0]))
    handler = options_handler_config(
        pairs, chosen, bounds, checks, user_images, _placements(settings, pairs)
    )
    profiles = [_profile(p, p is chosen, checks, settings.placed(p.name).notebook) for p in pairs]
    singleuser: dict[str, Any] = {"profileList": profiles}
    gateway: dict[str, Any] = {"extraConfig": {EXTRA_CONFIG_KEY: handler}}
    if settings.image_pull_secret is not None:
        singleuser["image"] = {"pullSecrets": [settings.image_pull_secret]}
        gateway["backend"] = {"imagePullSecrets": [{"name": settings.image_pull_secret}]}
    jupyterhub: dict[str, Any] = {"singleuser": singleuser}
    if user_images is not None:
        service = settings.self_service is not None
        hub: dict[str, Any] = {
            "extraConfig": {HUB_EXTRA_CONFIG_KEY: hub_user_images_config(user_images, service)}
        }
        if service:
            hub.update(builder_service())
        jupyterhub["hub"] = hub
    return {"jupyterhub": jupyterhub, "dask-gateway": {"gateway": gateway}}


def _placements(settings: SiteSettings, pairs: list[Pair]) -> dict[str, dict[str, Any]]:
    """The option handler's table: worker image -> what its clusters' config adds; the
    key "" holds the default placement's (users' own pairs take it)."""
    table = {"": cluster_placement(settings.placed("default"))}
    for pair in pairs:
        table[pair.worker] = cluster_placement(settings.placed(pair.name))
    return {image: config for image, config in table.items() if config}


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (the Python snippet) as readable `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_helm_values(values: dict) -> str:
    return HEADER + yaml.dump(values, Dumper=_Dumper, sort_keys=False, width=1000)


def write_helm_values(values: dict, path: Path) -> bool:
    """Write the values file if its text changed; returns whether it did."""
    return write_if_changed(path, dump_helm_values(values))


@dataclass(frozen=True)
class GatewayChart:
    """The dask-gateway version that serves every published pair, and those pairs."""

    version: str
    environments: list[str]


def published_lock_path(root: Path, build_dir: Path, name: str) -> Path:
    """The lock environment `name` was published from: the copy `publish` keeps, else (a
    record made by hand) the environment's own lock."""
    kept = build_dir / name / PUBLISHED_LOCK_FILE
    return kept if kept.exists() else load_environment(root, name).lock_path


def notebook_gateway_versions(lock: LockFile) -> dict[str, str | None]:
    """platform -> the dask-gateway version in the notebook set there (None: it has none).
    A pip pin of it wins over the conda package, as pip installs over it."""
    versions: dict[str, str | None] = {}
    for platform in lock.metadata.platforms:
        conda = [p.version for p in lock.packages("notebook", platform) if p.name == GATEWAY]
        pip = [
            p.version
            for p in lock.pip_packages("notebook", platform)
            if canonicalize_name(p.name) == GATEWAY
        ]
        found = pip or conda
        versions[platform] = found[0] if found else None
    return versions


def _describe(name: str, versions: dict[str, str | None]) -> str:
    """`e2e has 2026.3.0`, or with the platform where the platforms differ or lack it."""
    if None not in versions.values() and len(set(versions.values())) == 1:
        return f"{name} has {next(iter(versions.values()))}"
    missing = [platform for platform, version in versions.items() if version is None]
    found = [f"{version} ({platform})" for platform, version in versions.items() if version]
    parts = [f"{name} has {', '.join(found)}"] if found else []
    if missing:
        where = "" if not found else f"{', '.join(missing)} "
        parts.append(f"{name}: no dask-gateway in its {where}notebook image")
    return "; ".join(parts)


def gateway_chart(root: Path, build_dir: Path) -> GatewayChart:
    """The one dask-gateway version of every offered pair's notebook image (the site's
    hidden pairs are not deployed).

    One gateway server serves them all, and the server must be the same version as the
    client in each notebook image: dask-gateway releases the two together and pins them
    equal, so compatible means equal. Every offered pair (and every platform of it)
    must therefore hold the same dask-gateway version; a notebook image without it could
    not start gateway clusters at all. Either is one BuildToolError line that names each
    environment and its version.
    """
    pairs = offered_pairs(root, build_dir, set(load_site_settings(root).profiles.hidden))
    found = {
        p.name: notebook_gateway_versions(read_lock(published_lock_path(root, build_dir, p.name)))
        for p in pairs
    }
    versions = {v for per_platform in found.values() for v in per_platform.values()}
    if len(versions) != 1 or None in versions:
        raise BuildToolError(
            "no one dask-gateway version serves every published pair (the gateway server "
            "must be the version of the client in each notebook image): "
            + "; ".join(_describe(name, per_platform) for name, per_platform in found.items())
        )
    (version,) = versions
    return GatewayChart(version=str(version), environments=[p.name for p in pairs])


def dump_charts(chart: GatewayChart) -> str:
    """`charts.yaml`: the dask-gateway chart version that matches the values."""
    header = (
        "# AUTO GENERATED by `buildtool helm-values` from build/*/published.json and the\n"
        "# locks they were published from. DO NOT EDIT.\n"
        "# The dask-gateway chart version whose gateway server matches the dask-gateway\n"
        "# client in every published notebook image (chart, server and client are released\n"
        "# together, under one version number). Deploy the gateway at it:\n"
        f"#   helm upgrade --install ... dask/dask-gateway --version {chart.version}\n"
        "# or, with the daskhub chart, a release whose dask-gateway dependency is this\n"
        "# version (`helm show chart dask/daskhub --version V` lists its dependencies).\n"
    )
    body = {GATEWAY: {"version": chart.version, "environments": chart.environments}}
    return header + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)


def write_charts(chart: GatewayChart, path: Path) -> bool:
    """Write `charts.yaml` if its text changed; returns whether it did."""
    return write_if_changed(path, dump_charts(chart))


def deploy_manifests(root: Path, build_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The Kubernetes manifests beside the values (`buildtool.site.manifests`): the
    builder service's, with site.yaml's self_service, and the worker images' pre-puller
    for every pair the hub offers."""
    settings = load_site_settings(root)
    pairs = offered_pairs(root, build_dir, set(settings.profiles.hidden))
    return {
        BUILDER_FILE: builder_manifests(settings.self_service) if settings.self_service else [],
        PREPULLER_FILE: prepuller_manifests(settings, {p.name: p.worker for p in pairs}),
    }
