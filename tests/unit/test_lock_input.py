"""A lock is input: `read_lock` checks every record, and a hand-edited lock fails in ONE
line naming the file, the key and the line (a SpecError: exit code 2).

Each hostile lock is the committed e2e lock with one line changed, so the line numbers
are those of a real lock of thousands of lines.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from buildtool.common import SpecError
from buildtool.lock import (
    MAX_LOCK_BYTES,
    LockFile,
    PipHash,
    PipLockedPackage,
    dump_lock,
    read_lock,
)

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "environments" / "e2e" / "conda-lock.yml"
SECRET = "s3cr3t-canary"
TOMLI_W = (
    "https://files.pythonhosted.org/packages/c7/18/"
    "c86eb8e0202e32dd3df50d43d7ff9854f8e0603945ff398974c1d91ac1ef/tomli_w-1.2.0-py3-none-any.whl"
)
TOMLI_W_SHA256 = "188306098d013b691fcadc011abd66727d3c414c571bb01b1a174ba8c983cf90"
PIP_RECORD = f"""\
- name: tomli-w
  version: 1.2.0
  manager: pip
  platform: linux-64
  dependencies: {{}}
  url: {TOMLI_W}
  hash:
    sha256: {TOMLI_W_SHA256}
  category: notebook
  optional: true
"""


def _seed() -> str:
    """The committed e2e lock: conda records, then its one pip record (PIP_RECORD)."""
    text = SEED.read_text()
    assert text.endswith(PIP_RECORD)
    return text


def _conda_only() -> str:
    return _seed().removesuffix(PIP_RECORD)


def _record(text: str, name: str) -> tuple[int, dict[str, int]]:
    """The package index of record `name` and the 1-based line of each of its fields."""
    lines = text.splitlines()
    index, start = -1, None
    for number, line in enumerate(lines):
        if line.startswith("- name: "):
            index += 1
            if line == f"- name: {name}":
                start = number
                break
    assert start is not None, name
    fields = {"name": start + 1}
    for number in range(start + 1, len(lines)):
        line = lines[number]
        if line.startswith("- "):
            break
        key = line.strip().split(":", 1)[0]
        fields.setdefault(key, number + 1)
    return index, fields


def _write(tmp_path: Path, text: str, name: str = "conda-lock.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _replace_line(text: str, line: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    indent = lines[line - 1][: len(lines[line - 1]) - len(lines[line - 1].lstrip())]
    lines[line - 1] = indent + new + "\n"
    return "".join(lines)


def _error(path: Path) -> str:
    with pytest.raises(SpecError) as caught:
        read_lock(path)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert "\n" not in message
    return message


# (field, the new text of that line, the key under package[i], what the error says)
HOSTILE_CONDA = [
    ("sha256", "sha256: 284f53b9-not-hex", "hash.sha256", "is not 64 lowercase hex characters"),
    ("sha256", "sha256: " + "A" * 64, "hash.sha256", "is not 64 lowercase hex characters"),
    ("sha256", "sha256: " + "a" * 63, "hash.sha256", "is not 64 lowercase hex characters"),
    ("md5", "md5: " + "0" * 31 + "g", "hash.md5", "is not 32 lowercase hex characters"),
    (
        "url",
        f"url: http://ci:{SECRET}@127.0.0.1:8321/conda-forge/linux-64/python-3.11.7-h0_local.conda",
        "url",
        "holds a user name or password",
    ),
    (
        "url",
        "url: ftp://127.0.0.1:8321/conda-forge/linux-64/python-3.11.7-h0_local.conda",
        "url",
        "is not an http(s) URL",
    ),
    (
        "url",
        "url: http://evil.example/conda-forge/linux-64/python-3.11.7-h0_local.conda",
        "url",
        "lies under none of metadata.channels followed by linux-64/ or noarch/",
    ),
    (
        "url",
        "url: http://127.0.0.1:8321/conda-forge/linux-aarch64/python-3.11.7-h0_local.conda",
        "url",
        "lies under none of metadata.channels followed by linux-64/ or noarch/",
    ),
    (
        "url",
        "url: http://127.0.0.1:8321/conda-forge/linux-64/../../x/python-3.11.7-h0_local.conda",
        "url",
        "lies under none of metadata.channels",
    ),
    (
        "url",
        "url: http://127.0.0.1:8321/conda-forge/linux-64/python-3.11.7-h0_local.conda"
        f"?token={SECRET}",
        "url",
        "has a query or a fragment",
    ),
    (
        "url",
        "url: http://127.0.0.1:8321/conda-forge/linux-64/evil-3.11.7-h0_local.conda",
        "url",
        "is not python-3.11.7-<build>.conda or .tar.bz2",
    ),
    (
        "url",
        "url: http://127.0.0.1:8321/conda-forge/linux-64/python-3.12.0-h0_local.conda",
        "url",
        "is not python-3.11.7-<build>.conda or .tar.bz2",
    ),
    (
        "url",
        "url: http://127.0.0.1:8321/conda-forge/linux-64/python-3.11.7-h0_local.whl",
        "url",
        "is not python-3.11.7-<build>.conda or .tar.bz2",
    ),
    ("platform", "platform: linux-aarch64", "platform", "'linux-aarch64' is not in metadata"),
    ("category", "category: admin", "category", "'admin' is not main or notebook"),
    ("name", "- name: ../python", "name", "holds a path separator"),
    ("version", "version: 3.11.7/../x", "version", "holds a path separator"),
    ("version", 'version: "3.11.7\\n"', "version", "holds a newline"),
    ("version", 'version: "3.11.7\\x1b[2J"', "version", "holds the control character U+001B"),
    ("sha256", "", "hash.sha256", "required key is missing"),
    ("optional", "optional: false\n  extra_key: 1", "extra_key", "unknown key 'extra_key'"),
]


@pytest.mark.parametrize(("field", "new", "key", "says"), HOSTILE_CONDA)
def test_a_hostile_conda_record_is_one_line(
    tmp_path: Path, field: str, new: str, key: str, says: str
) -> None:
    text = _seed()
    index, fields = _record(text, "python")
    line = fields[field]
    if new.startswith("- ") or not new:  # a line of its own indent, or none
        lines = text.splitlines(keepends=True)
        lines[line - 1] = new + "\n" if new else ""
        hostile = "".join(lines)
    else:
        hostile = _replace_line(text, line, new)
    if key == "extra_key":
        line += 1
    if not new:  # the missing key: the line of the mapping that lacks it
        line = fields["hash"]
    path = _write(tmp_path, hostile)
    message = _error(path)
    assert message.startswith(f"{path}:{line}: package[{index}].{key}: "), message
    assert says in message
    assert SECRET not in message


def test_a_hostile_pip_record_is_one_line(tmp_path: Path) -> None:
    text = _seed()
    index, fields = _record(text, "tomli-w")
    url_line, sha_line = fields["url"], fields["sha256"]
    cases = [
        (
            url_line,
            "url: https://evil.example/packages/tomli_w-1.2.0-py3-none-any.whl",
            "url",
            "a pip record's wheel is not under https://files.pythonhosted.org/packages/",
        ),
        (
            url_line,
            "url: https://files.pythonhosted.org/packages/../x/tomli_w-1.2.0-py3-none-any.whl",
            "url",
            "is not under",
        ),
        (
            url_line,
            "url: https://files.pythonhosted.org/packages/c7/evil-1.2.0-py3-none-any.whl",
            "url",
            "'evil-1.2.0-py3-none-any.whl' is not a wheel of tomli-w 1.2.0",
        ),
        (
            url_line,
            "url: https://files.pythonhosted.org/packages/c7/tomli_w-1.2.0.tar.gz",
            "url",
            "'tomli_w-1.2.0.tar.gz' is not a wheel of tomli-w 1.2.0",
        ),
        (
            url_line,
            f"url: https://u:{SECRET}@files.pythonhosted.org/packages/c7/"
            "tomli_w-1.2.0-py3-none-any.whl",
            "url",
            "holds a user name or password",
        ),
        (sha_line, "sha256: nothex", "hash.sha256", "is not 64 lowercase hex characters"),
    ]
    for line, new, key, says in cases:
        path = _write(tmp_path, _replace_line(text, line, new))
        message = _error(path)
        assert message.startswith(f"{path}:{line}: package[{index}].{key}: "), message
        assert says in message
        assert SECRET not in message


def test_a_channel_with_credentials_is_refused(tmp_path: Path) -> None:
    text = _seed().replace(
        "- url: http://127.0.0.1:8321/conda-forge\n",
        f"- url: http://ci:{SECRET}@127.0.0.1:8321/conda-forge\n",
    )
    message = _error(_write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'conda-lock.yml'}:10: metadata.channels[0].url: ")
    assert "carries credentials" in message
    assert SECRET not in message


def test_aliases_are_refused_at_the_alias(tmp_path: Path) -> None:
    text = _seed()
    index, fields = _record(text, "python")
    text = _replace_line(text, fields["hash"], "hash: &h")
    other, other_fields = _record(text, "python-dateutil")
    path = _write(tmp_path, _replace_line(text, other_fields["hash"], "hash: *h"))
    # the alias's own key, with the rest of that mapping gone
    lines = path.read_text().splitlines(keepends=True)
    del lines[other_fields["hash"] : other_fields["hash"] + 2]
    path.write_text("".join(lines))
    message = _error(path)
    assert message == (
        f"{path}:{other_fields['hash']}: package[{other}].hash: "
        "a YAML alias (*name); a lock has none"
    )


def test_an_alias_bomb_is_refused_without_expanding(tmp_path: Path) -> None:
    levels = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    path = _write(tmp_path, "\n".join(levels) + "\n")
    started = time.monotonic()
    assert _error(path) == f"{path}:2: b[0]: a YAML alias (*name); a lock has none"
    assert time.monotonic() - started < 1


def test_a_lock_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "conda-lock.yml"
    with path.open("wb") as handle:  # sparse: the size is there, the bytes are not
        handle.truncate(MAX_LOCK_BYTES + 1)
    message = _error(path)
    assert message == (
        f"{path}: lock file is {MAX_LOCK_BYTES + 1} bytes, more than the {MAX_LOCK_BYTES} allowed"
    )


def test_non_utf8_is_one_line(tmp_path: Path) -> None:
    text = _seed().encode()
    _, fields = _record(_seed(), "python")
    lines = text.split(b"\n")
    lines[fields["version"] - 1] = b"  version: 3.11.7\xff"
    path = tmp_path / "conda-lock.yml"
    path.write_bytes(b"\n".join(lines))
    assert _error(path) == f"{path}:{fields['version']}: not UTF-8 text (byte 0xff)"


def test_broken_yaml_and_duplicate_keys_are_one_line(tmp_path: Path) -> None:
    text = _seed()
    index, fields = _record(text, "python")
    path = _write(tmp_path, _replace_line(text, fields["category"], "category: [main"))
    assert _error(path).startswith(f"{path}:")
    assert "not valid YAML" in _error(path)
    duplicated = _replace_line(text, fields["category"], "category: main\n  category: notebook")
    path = _write(tmp_path, duplicated)
    assert _error(path) == (
        f"{path}:{fields['category'] + 1}: package[{index}].category: "
        "key appears twice in the same mapping"
    )


def test_not_a_lock_is_one_line(tmp_path: Path) -> None:
    not_a_lock = _error(_write(tmp_path, "- a\n- b\n"))
    assert not_a_lock.endswith("not a conda-lock v1 file (version, metadata, package)")
    assert _error(_write(tmp_path, "version: 2\n")).startswith(
        f"{tmp_path}/conda-lock.yml:1: version:"
    )


def test_every_committed_lock_reads_and_physlite_reads_fast() -> None:
    paths = sorted((REPO / "environments").glob("*/conda-lock.yml"))
    paths += sorted((REPO / "tests" / "compat" / "data").glob("*.yml"))
    assert len(paths) >= 6
    for path in paths:
        lock = read_lock(path)
        assert lock.package
    physlite = REPO / "environments" / "physlite" / "conda-lock.yml"
    started = time.perf_counter()
    read_lock(physlite)
    assert time.perf_counter() - started < 0.5
    # A lock without pip records reads back and dumps to the same bytes.
    assert dump_lock(read_lock(physlite)) == physlite.read_text()


def test_pip_records_are_kept_apart_from_the_conda_ones(tmp_path: Path) -> None:
    seed = read_lock(_write(tmp_path, _conda_only(), "conda-only.yml"))
    assert seed.pip == []
    path = SEED
    lock = read_lock(path)
    assert [p.name for p in lock.pip] == ["tomli-w"]
    assert lock.package == seed.package
    assert lock.packages("notebook", "linux-64") == seed.packages("notebook", "linux-64")
    assert [p.name for p in lock.pip_packages("notebook", "linux-64")] == ["tomli-w"]
    assert lock.pip_packages("worker", "linux-64") == []
    assert dump_lock(lock) == path.read_text()
    # Tags and labels change with the wheel, and only where there is one.
    assert lock.content_sha() != seed.content_sha()
    other = lock.model_copy(
        update={"pip": [lock.pip[0].model_copy(update={"hash": PipHash(sha256="0" * 64)})]}
    )
    assert other.content_sha() != lock.content_sha()


def test_a_written_pip_record_is_what_conda_lock_and_rattler_read(tmp_path: Path) -> None:
    import rattler
    from conda_lock.lockfile import parse_conda_lock_file

    seed = read_lock(_write(tmp_path, _conda_only(), "conda-only.yml"))
    record = PipLockedPackage(
        name="tomli-w",
        version="1.2.0",
        platform="linux-64",
        url=TOMLI_W,
        hash=PipHash(sha256=TOMLI_W_SHA256),
        category="notebook",
        optional=True,
    )
    lock = LockFile(metadata=seed.metadata, package=seed.package, pip=[record])
    path = _write(tmp_path, dump_lock(lock))
    assert read_lock(path) == lock
    written = yaml.safe_load(path.read_text())["package"][-1]
    assert written == yaml.safe_load(PIP_RECORD)[0]  # no md5: conda-lock needs none for pip
    parsed = parse_conda_lock_file(path)
    (pip,) = [p for p in parsed.package if p.manager == "pip"]
    assert (pip.name, pip.hash.sha256, pip.categories) == ("tomli-w", TOMLI_W_SHA256, {"notebook"})
    environment = rattler.LockFile.from_path(path).default_environment()
    (platform,) = environment.platforms()
    assert [str(p.location) for p in environment.pypi_packages_for_platform(platform)] == [TOMLI_W]


def test_deep_nesting_and_complex_keys_are_one_line(tmp_path: Path) -> None:
    # composing 100 000 `[` with libyaml crashed the interpreter (a segmentation fault)
    path = _write(tmp_path, "version: " + "[" * 100_000 + "\n")
    assert _error(path) == f"{path}:1: version{'[0]' * 15}: nested deeper than 16 levels"
    path = _write(tmp_path, "version: 1\n? [a, b]\n: c\n")
    assert _error(path) == f"{path}:2: a key that is not a plain value; a lock has none"
