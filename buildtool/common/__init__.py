"""What every stage stands on; it imports no other stage.

errors.py    BuildToolError and its kinds: the one line and exit code the CLI prints
             (a UsageError with the command's usage line)
files.py     files written whole or not at all, and only when they change
proc.py      child processes with time limits, killed with their whole group
bounded.py   work on a user's input in a child process with CPU, memory, time and
             disk limits
models.py    StrictModel, the one strict pydantic base of every file the tool reads
yamlfile.py  bounded, line-aware YAML reading of what users hand the tool
grammar.py   what each name and value a user gives may look like
confine.py   archive members kept inside their folder
cachedir.py  where the tool keeps what it downloads between builds
records.py   the publish record (`build/<env>/published.json`) that `publish` writes and
             the later stages (tests, docs, Helm values, the service) read
"""

from buildtool.common import grammar, yamlfile
from buildtool.common.bounded import DiskBudget, LimitExceeded, Limits
from buildtool.common.bounded import call as call_bounded
from buildtool.common.cachedir import cache_root
from buildtool.common.confine import UnsafeArchiveMember, check_name, confine, extract_tar
from buildtool.common.errors import (
    BuildToolError,
    InputError,
    LockStaleError,
    SolveError,
    SpecError,
    UsageError,
)
from buildtool.common.files import write_atomic, write_if_changed
from buildtool.common.models import StrictModel
from buildtool.common.proc import (
    CommandTimeout,
    Watchdog,
    describe,
    interrupt_group,
    kill_marked,
    run,
)
from buildtool.common.records import (
    PUBLISHED_FILE,
    PUBLISHED_IMAGES_FILE,
    PUBLISHED_LOCK_FILE,
    SBOM_DIR,
    Published,
    PublishedImage,
    PublishedImages,
    published_extensions,
    read_published,
)
from buildtool.common.yamlfile import key_text, nearest_line, unsafe_character

__all__ = [
    "PUBLISHED_FILE",
    "PUBLISHED_IMAGES_FILE",
    "PUBLISHED_LOCK_FILE",
    "SBOM_DIR",
    "BuildToolError",
    "CommandTimeout",
    "DiskBudget",
    "InputError",
    "LimitExceeded",
    "Limits",
    "LockStaleError",
    "Published",
    "PublishedImage",
    "PublishedImages",
    "SolveError",
    "SpecError",
    "StrictModel",
    "UnsafeArchiveMember",
    "UsageError",
    "Watchdog",
    "cache_root",
    "call_bounded",
    "check_name",
    "confine",
    "describe",
    "extract_tar",
    "grammar",
    "interrupt_group",
    "key_text",
    "kill_marked",
    "nearest_line",
    "published_extensions",
    "read_published",
    "run",
    "unsafe_character",
    "write_atomic",
    "write_if_changed",
    "yamlfile",
]
