"""The spec stage: what a site's folder says, validated and resolved. It hands the lock
stage an `Environment` (a site environment, its `extends` chain merged) or an
`Extension` (a user's packages on a published pair, `from:`); `load` returns either.

  schema.py        one `env.yaml`'s schema, every key validated strictly
  environments.py  a spec resolved through `extends` into one Environment; extensions;
                   the environments a site holds; `load`
  pins.py          pins that contradict each other, found before any solve
  importer.py      a conda `environment.yml` written as a spec (`buildtool import`)

Every error names the file, the key and the line (`SpecError`, exit code 2).
"""

from buildtool.spec.environments import (
    Environment,
    Extension,
    ImageSet,
    Target,
    check_environment_name,
    environment_names,
    is_extension,
    load,
    load_environment,
    load_extension,
)
from buildtool.spec.importer import convert as convert_environment_yml
from buildtool.spec.importer import import_environment
from buildtool.spec.schema import (
    DEFAULT_VIRTUAL_PACKAGES,
    LOCK_FILE,
    SPEC_FILE,
    EnvironmentName,
    Requirement,
    normalize_matchspec,
)

__all__ = [
    "DEFAULT_VIRTUAL_PACKAGES",
    "LOCK_FILE",
    "SPEC_FILE",
    "Environment",
    "EnvironmentName",
    "Extension",
    "ImageSet",
    "Requirement",
    "Target",
    "check_environment_name",
    "convert_environment_yml",
    "environment_names",
    "import_environment",
    "is_extension",
    "load",
    "load_environment",
    "load_extension",
    "normalize_matchspec",
]
