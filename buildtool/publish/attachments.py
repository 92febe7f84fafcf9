"""What publish attaches to every image beside its SBOMs, as OCI artifacts
(`artifacts.py`), and reads back:

- the matching client's pins (`buildtool.lock.laptop`'s two files), one artifact of type
  `application/vnd.daskhub.client.v1` whose config is the empty descriptor and whose
  layers are the files (`text/plain`, `application/yaml`), each named by the OCI title
  annotation: the layout ORAS uses, so `oras pull REPO@<artifact digest>` writes them;
- the lock the images were built from and what owns each file of their prefix, both
  gzipped, which extension pairs are built on (`parent.py` reads them back).

Both are attached to the digest users pull (the index's with several platforms), so the
same files serve every platform.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from buildtool.image import Blob
from buildtool.lock import ENVIRONMENT_FILE, FULL_REQUIREMENTS_FILE, REQUIREMENTS_FILE
from buildtool.publish import artifacts
from buildtool.publish.artifacts import ArtifactFile
from buildtool.publish.registry import Registry
from compat.vocabulary import CLIENT_ARTIFACT_TYPE

CLIENT_MEDIA_TYPES = {
    REQUIREMENTS_FILE: "text/plain",
    ENVIRONMENT_FILE: "application/yaml",
    FULL_REQUIREMENTS_FILE: "text/plain",
}
LOCK_ARTIFACT_TYPE = "application/vnd.daskhub.lock.v1"
LOCK_TITLE = "conda-lock.yml.gz"
FILES_TITLE = "files.json.gz"
LOCK_MEDIA_TYPE = "application/vnd.daskhub.conda-lock.v1+yaml+gzip"
FILES_MEDIA_TYPE = "application/vnd.daskhub.files.v1+json+gzip"


def attach_client_files(
    registry: Registry,
    name: str,
    subject: Blob,
    files: dict[str, str],
    mount_from: str | None = None,
) -> str:
    """Push the files as one artifact whose subject is `subject` (mounting them from
    repository `mount_from` when it has them). Returns the artifact manifest's digest."""
    attached = [
        ArtifactFile(f, CLIENT_MEDIA_TYPES[f], files[f].encode())
        for f in CLIENT_MEDIA_TYPES
        if f in files
    ]
    return artifacts.attach(
        registry, name, subject, CLIENT_ARTIFACT_TYPE, attached, mount_from=mount_from
    )


def fetch_client_files(registry: Registry, name: str, digest: str) -> dict[str, str]:
    """The client files attached to image `name@digest`: file name -> text.

    Only the known file names are returned (a title is never used as a path). Empty
    when nothing is attached; the last listed artifact wins if there are several."""
    files: dict[str, str] = {}
    for found in artifacts.fetch(registry, name, digest, CLIENT_ARTIFACT_TYPE):
        known = {
            title: f.data.decode() for title, f in found.items() if title in CLIENT_MEDIA_TYPES
        }
        if known:
            files = known
    return files


def attach_lock(
    registry: Registry,
    name: str,
    subject: Blob,
    lock_text: str,
    owners: dict[str, Any],
    mount_from: str | None = None,
) -> str:
    """Attach the lock and the file owners (platform -> owner -> files) to `subject`, both
    gzipped; an extension pair's owners are only its own files (its parent's are read
    from the parent). Files already in repository `mount_from` are mounted."""
    files = [
        ArtifactFile(LOCK_TITLE, LOCK_MEDIA_TYPE, gzip.compress(lock_text.encode(), mtime=0)),
        ArtifactFile(
            FILES_TITLE,
            FILES_MEDIA_TYPE,
            gzip.compress(json.dumps(owners, sort_keys=True).encode(), mtime=0),
        ),
    ]
    return artifacts.attach(
        registry, name, subject, LOCK_ARTIFACT_TYPE, files, mount_from=mount_from
    )
