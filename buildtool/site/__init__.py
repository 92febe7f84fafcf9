"""The site stage: what a DaskHub site runs from the published pairs. It hands the
cluster its Helm values and the hub its self-service page.

  settings.py    `site.yaml`: cluster option bounds, profiles, users' namespaces, limits
  namespaces.py  each hub user's registry namespace and who may start which image; its
                 portable part runs inside the gateway and the hub
  helm.py        the daskhub chart's values for the published pairs (`helm-values`)
  catalog.py     the pages of images, packages and lock diffs (`catalog`)
  service.py     `buildtool serve`: the hub service where users build their own pairs
  builds.py      the service's build queue and its runner
  scaffold.py    `buildtool init`: a site's own repository, ready to lock and publish
  manifests.py   the Kubernetes objects the values refer to: the builder service, the
                 worker images' pre-puller
"""

from buildtool.site.builds import (
    MAX_LOG_BYTES,
    Build,
    BuildQueue,
    BuildRefused,
    Job,
    LocalRunner,
    content_length,
    step_of,
)
from buildtool.site.catalog import write_catalog
from buildtool.site.helm import (
    CHARTS_FILE,
    VALUES_PATH,
    Pair,
    cluster_placement,
    deploy_manifests,
    dump_helm_values,
    gateway_chart,
    generate_helm_values,
    hub_user_images_config,
    options_handler_config,
    write_charts,
    write_helm_values,
)
from buildtool.site.manifests import (
    BUILDER_FILE,
    KUBERNETES_DIR,
    PREPULLER_FILE,
    builder_manifests,
    prepuller_manifests,
    write_manifests,
)
from buildtool.site.namespaces import (
    OWN_IMAGE_SLUG,
    REGISTRY_PASSWORD_ENV,
    REGISTRY_USER_ENV,
    SERVICE_NAME,
    NamespaceError,
    RegistryReader,
    escape_username,
    forget_worker_labels,
    in_any_user_namespace,
    own_image_regex,
    portable_config,
    portable_source,
    server_name,
    template_problem,
    user_prefix,
    user_profile_list,
    user_worker_image,
)
from buildtool.site.scaffold import init_site
from buildtool.site.settings import (
    REGISTRY_PLACEHOLDER,
    SITE_FILE,
    ClusterOptions,
    ServiceSettings,
    check_users_apart,
    load_site_settings,
    site_registry,
    user_namespace,
    user_registry,
)


def serve(settings: ServiceSettings, port: int, address: str = "127.0.0.1") -> None:
    """Run the hub service (`service.py`) on `address`:`port` until it is stopped. Its
    own dependencies, JupyterHub's service-auth and tornado, are the `serve` extra:
    imported here, when it runs, so that the rest of the tool needs neither."""
    from buildtool.site.service import serve as run_service

    run_service(settings, port, address)


__all__ = [
    "BUILDER_FILE",
    "KUBERNETES_DIR",
    "PREPULLER_FILE",
    "REGISTRY_PLACEHOLDER",
    "MAX_LOG_BYTES",
    "CHARTS_FILE",
    "OWN_IMAGE_SLUG",
    "REGISTRY_PASSWORD_ENV",
    "REGISTRY_USER_ENV",
    "SERVICE_NAME",
    "SITE_FILE",
    "VALUES_PATH",
    "Build",
    "BuildQueue",
    "BuildRefused",
    "ClusterOptions",
    "ServiceSettings",
    "Job",
    "LocalRunner",
    "NamespaceError",
    "Pair",
    "RegistryReader",
    "dump_helm_values",
    "builder_manifests",
    "check_users_apart",
    "cluster_placement",
    "content_length",
    "deploy_manifests",
    "escape_username",
    "forget_worker_labels",
    "gateway_chart",
    "write_catalog",
    "generate_helm_values",
    "hub_user_images_config",
    "in_any_user_namespace",
    "init_site",
    "load_site_settings",
    "options_handler_config",
    "own_image_regex",
    "portable_config",
    "prepuller_manifests",
    "portable_source",
    "serve",
    "site_registry",
    "step_of",
    "template_problem",
    "server_name",
    "user_prefix",
    "user_profile_list",
    "user_namespace",
    "user_registry",
    "user_worker_image",
    "write_charts",
    "write_helm_values",
    "write_manifests",
]
