"""CycloneDX SBOMs of the published images, made from the lock, and attached in the registry.

An image's SBOM lists exactly what it was built from: every conda package of its set in
the lock (purl `pkg:conda/NAME@VERSION?build=...&channel=...&subdir=...&type=conda`, with
the lock's sha256), its pip pins (`pkg:pypi/...`), and the Debian packages dpkg records
in its system layers (`pkg:deb/debian/...`). The image itself is the SBOM's subject, by
the digest users pull (the index's when there are several platforms). Everything is
derived from the lock and the image, so the same pair always gives the same document.

In the registry an SBOM is an OCI artifact (`artifacts.py`) whose `subject` is the
platform's image manifest. The cyclonedx-python-lib library writes the
document and validates it against the CycloneDX schema.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
import uuid
from dataclasses import dataclass

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from packageurl import PackageURL

from buildtool.common import BuildToolError
from buildtool.image import Blob
from buildtool.lock import LockedPackage
from buildtool.publish import artifacts
from buildtool.publish.artifacts import ArtifactFile
from buildtool.publish.registry import Registry
from compat.vocabulary import PLATFORM_ANNOTATION, PLATFORMS

MEDIA_TYPE = "application/vnd.cyclonedx+json"


@dataclass(frozen=True)
class ImageContents:
    """What one published image of one platform holds, for its SBOM."""

    environment: str
    role: str
    platform: str
    repository: str
    digest: str  # what users pull: the index's with several platforms
    manifest: str  # this platform's manifest
    created: int
    conda: list[LockedPackage]
    pip: list[str]
    apt: dict[str, dict[str, str]]  # name -> {"version", "arch"}


def _channel(url: str) -> tuple[str, str]:
    """(channel name, channel URL) of a package URL `<channel>/<subdir>/<file>`."""
    base = url.rsplit("/", 2)[0]
    return urllib.parse.urlsplit(base).path.rstrip("/").rsplit("/", 1)[-1], base


def _conda(package: LockedPackage) -> Component:
    name, base = _channel(package.url)
    purl = PackageURL(
        "conda",
        name=package.name,
        version=package.version,
        qualifiers={
            "build": package.build,
            "channel": name,
            "subdir": package.platform,
            "type": "conda" if package.url.endswith(".conda") else "tar.bz2",
        },
    )
    return Component(
        name=package.name,
        version=package.version,
        purl=purl,
        bom_ref=purl.to_string(),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=package.hash.sha256)],
        properties=[
            Property(name="conda:build", value=package.build),
            Property(name="conda:channel", value=base),
            Property(name="conda:url", value=package.url),
        ],
    )


def _deb(name: str, version: str, arch: str) -> Component:
    purl = PackageURL("deb", "debian", name, version, {"arch": arch, "distro": "debian-12"})
    return Component(name=name, version=version, purl=purl, bom_ref=purl.to_string())


def _pip(pin: str) -> Component:
    name, _, version = pin.partition("==")
    purl = PackageURL("pypi", name=name.split("[")[0].lower(), version=version)
    return Component(name=purl.name, version=version, purl=purl, bom_ref=purl.to_string())


def sbom_json(image: ImageContents) -> str:
    arch = PLATFORMS[image.platform].debian_architecture
    subject = PackageURL(
        "oci",
        name=image.repository.rsplit("/", 1)[-1],
        version=image.digest,
        qualifiers={"repository_url": image.repository, "arch": arch},
    )
    components = [_conda(p) for p in sorted(image.conda, key=lambda p: p.name)]
    components += [_pip(pin) for pin in sorted(image.pip)]
    components += [_deb(n, v["version"], v["arch"]) for n, v in sorted(image.apt.items())]
    root = Component(
        name=image.repository,
        version=image.digest,
        type=ComponentType.CONTAINER,
        purl=subject,
        bom_ref=subject.to_string(),
        properties=[
            Property(name="daskhub:environment", value=image.environment),
            Property(name="daskhub:role", value=image.role),
            Property(name="daskhub:platform", value=image.platform),
            Property(name="oci:manifest", value=image.manifest),
        ],
    )
    bom = Bom(
        components=components,
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"{image.repository}@{image.manifest}"),
        metadata=BomMetaData(
            component=root,
            timestamp=dt.datetime.fromtimestamp(image.created, dt.timezone.utc),
        ),
    )
    bom.register_dependency(root, components)  # the image holds every package
    text = JsonV1Dot6(bom).output_as_string(indent=1)
    # Imported here: the validator's jsonschema builds rfc3987-syntax's grammar on import
    # (about 3 s), which every other buildtool command would pay at start-up.
    from cyclonedx.validation.json import JsonStrictValidator

    problem = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if problem is not None:
        raise BuildToolError(f"SBOM of {image.repository}@{image.digest}: {problem}")
    return text + "\n"


def attach_sbom(registry: Registry, name: str, subject: Blob, document: str, platform: str) -> str:
    """Push the SBOM as an artifact whose subject is `subject`; list it as a referrer."""
    file = ArtifactFile(f"sbom-{platform}.cdx.json", MEDIA_TYPE, document.encode())
    return artifacts.attach(
        registry, name, subject, MEDIA_TYPE, [file], {PLATFORM_ANNOTATION: platform}
    )


def fetch_sboms(registry: Registry, name: str, subject: str) -> list[str]:
    """The SBOM documents attached to `subject`, through the referrers tag schema."""
    return [
        file.data.decode()
        for found in artifacts.fetch(registry, name, subject, MEDIA_TYPE)
        for file in found.values()
        if file.media_type == MEDIA_TYPE
    ]
