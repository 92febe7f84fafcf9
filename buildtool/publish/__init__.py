"""The publish stage: everything that talks to a registry. A built pair goes up by digest
with its SBOMs, its client's pins and its lock attached, and only then is tagged; a
user's extension pair is built on a published pair without a Docker engine. It hands the
site stage `build/<env>/published.json` (`buildtool.common.Published`).

  registry.py     the push client (the rules are compat.registry_rules')
  artifacts.py    files attached to an image as OCI artifacts, by the referrers tag
  attachments.py  the client's pins and the lock with its file list, attached
  sbom.py         CycloneDX SBOMs of the published images, from the lock
  sitepair.py     a site pair: build, test, push by digest, tag last
  parent.py       a published pair read back from the registry, as an extension's parent
  extend.py       an extension pair: its additions installed and layered, pushed
  targets.py      `publish` for either kind; the parent an extension is locked on
  plan.py         the pairs not in the registry yet, as a CI matrix
  verify.py       a published pair rebuilt on clean caches, its digests compared
"""

from buildtool.publish.artifacts import delete_attached
from buildtool.publish.attachments import fetch_client_files
from buildtool.publish.extend import added_records, publish_extension
from buildtool.publish.parent import gunzip_limited, read_parent, resolve_from
from buildtool.publish.plan import plan, plan_json
from buildtool.publish.registry import (
    MANIFEST_TYPES,
    Credentials,
    Origin,
    Registry,
    credentials_for,
    realm_may_receive_credentials,
    split_reference,
)
from buildtool.publish.sbom import ImageContents, attach_sbom, fetch_sboms, sbom_json
from buildtool.publish.targets import Options, ParentReader, parent_reader, publish
from buildtool.publish.verify import verify

__all__ = [
    "MANIFEST_TYPES",
    "Credentials",
    "ImageContents",
    "Options",
    "Origin",
    "ParentReader",
    "Registry",
    "added_records",
    "attach_sbom",
    "credentials_for",
    "delete_attached",
    "fetch_client_files",
    "fetch_sboms",
    "gunzip_limited",
    "parent_reader",
    "plan",
    "plan_json",
    "publish",
    "publish_extension",
    "read_parent",
    "realm_may_receive_credentials",
    "resolve_from",
    "sbom_json",
    "split_reference",
    "verify",
]
