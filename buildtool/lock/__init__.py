"""The lock stage: ONE solve per environment, written as one lock for both images. It
hands the image stage `conda-lock.yml` (conda-lock's format, both images' sets in it).

  solve.py     the solve (py-rattler), the worker set as the closure of the worker's
               roots within it, an extension's additions with its parent held fixed;
               `lock` and `check` take either kind of spec
  lockfile.py  the lock file, read as untrusted input and written reproducibly
  diff.py      what a relock changed, per image
  wheels.py    the spec's exact pip pins: one wheel per platform, locked by sha256
  laptop.py    the pins of a laptop's client that matches a pair (what distributed
               compares, or with the package's own distributions every one)
  parent.py    an extension's parent pair, as data (the publish stage reads it)
"""

from buildtool.lock.diff import Change, diff_locks, diff_markdown, diff_text
from buildtool.lock.laptop import (
    CLIENT_DIR,
    ENVIRONMENT_FILE,
    FULL_REQUIREMENTS_FILE,
    GENERATED_MARK,
    REQUIREMENTS_FILE,
    FullPins,
    client_files,
    client_pins,
    disagreements,
    full_pins,
    full_requirements_text,
    write_client_files,
)
from buildtool.lock.lockfile import (
    LAB_ENV,
    MAX_LOCK_BYTES,
    LockedPackage,
    LockFile,
    PipHash,
    PipLockedPackage,
    check_site_channels,
    dump_lock,
    read_lock,
)
from buildtool.lock.parent import Parent, ParentImage
from buildtool.lock.solve import (
    Locked,
    channel_client,
    check,
    check_extension_lock,
    check_lock,
    lock,
    lock_content_hash,
    lock_environment,
    lock_extension,
    solve_with_rattler,
)
from buildtool.lock.wheels import (
    choose_wheel,
    fetch_wheels,
    install_wheels,
    locked_wheels,
    platform_tags,
)

__all__ = [
    "CLIENT_DIR",
    "ENVIRONMENT_FILE",
    "GENERATED_MARK",
    "LAB_ENV",
    "MAX_LOCK_BYTES",
    "REQUIREMENTS_FILE",
    "FULL_REQUIREMENTS_FILE",
    "FullPins",
    "full_pins",
    "full_requirements_text",
    "Change",
    "LockFile",
    "Locked",
    "LockedPackage",
    "Parent",
    "ParentImage",
    "PipHash",
    "PipLockedPackage",
    "channel_client",
    "check",
    "check_extension_lock",
    "check_lock",
    "check_site_channels",
    "choose_wheel",
    "client_files",
    "client_pins",
    "diff_locks",
    "diff_markdown",
    "diff_text",
    "disagreements",
    "dump_lock",
    "fetch_wheels",
    "install_wheels",
    "lock",
    "lock_content_hash",
    "lock_environment",
    "lock_extension",
    "locked_wheels",
    "platform_tags",
    "read_lock",
    "solve_with_rattler",
    "write_client_files",
]
