"""The hostile corpus: specs, site files, environment files, locks and command-line values
as an attacker would write them. Each case exits 2 with ONE line naming the file (or the
option), the key and the line, and leaves every file as it was: nothing changed, nothing
written. The CLI runs in-process (`buildtool.cli.main`), as the console script does.
"""

from __future__ import annotations

import http.server
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from buildtool.cli import main

REPO = Path(__file__).resolve().parents[2]
CANARY = "s3cr3t-canary"

# 465 bytes that grow to gigabytes when walked: refused at the first alias.
ALIAS_BOMB = (
    "description: bomb\n"
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)


@dataclass
class Case:
    """`files` (relative to the site folder) are written, then `argv` runs; the one error
    line must start with `where` (a file:line: key:, or an option) and hold `says`."""

    files: dict[str, str | bytes]
    argv: list[str]
    where: str
    says: str
    not_said: list[str] = field(default_factory=list)


def spec(text: str, where: str, says: str) -> Case:
    """A spec `bad` (extending base) checked by `lock --check`, which solves nothing."""
    return Case(
        {"environments/bad/env.yaml": text},
        ["lock", "--check", "bad"],
        f"environments/bad/env.yaml:{where}",
        says,
    )


def site(text: str | bytes, where: str, says: str) -> Case:
    return Case(
        {"environments/site.yaml": text}, ["helm-values"], f"environments/site.yaml:{where}", says
    )


def envfile(text: str | bytes, where: str, says: str, name: str = "imported") -> Case:
    return Case(
        {"environment.yml": text},
        ["import", "environment.yml", "--name", name, "--extends", "base"],
        f"environment.yml:{where}",
        says,
    )


# Every form in which a MatchSpec names a URL that a solve would fetch.
URL_FORMS = [
    'x[url="http://169.254.169.254/latest/x-1.0-0.conda"]',
    "https://10.0.0.5/conda-forge/linux-64/x-1.0-0.conda",
    "file:///etc/x-1.0-0.conda",
    "/etc/x-1.0-0.conda",
    "https://evil.example.net/conda-forge::numpy",
    'numpy[channel="http://127.0.0.4:9/c"]',
]


def extension(form: str, what: str) -> Case:
    """An extension `ext` adding `form`, locked: refused at its line before any request."""
    text = f"from: 127.0.0.1:9/ns/jupyter-e2e:latest\ndescription: x\ndependencies: ['{form}']\n"
    return Case(
        {"environments/ext/env.yaml": text},
        ["lock", "ext"],
        "environments/ext/env.yaml:3: dependencies[0]:",
        f"names {what}",
    )


E2E_LOCK = (REPO / "environments" / "e2e" / "conda-lock.yml").read_text()


def lock(old: str, new: str, field: str, says: str, argv: str = "render") -> Case:
    """e2e's committed lock with the first `old` made `new`; the error names the package
    record and the `field` (`hash.sha256`, `url`) on the line where `new` stands."""
    at = E2E_LOCK.index(old)
    record = E2E_LOCK[:at].count("\n- name:") - 1
    line = E2E_LOCK[:at].count("\n") + 1
    command = ["lock", "--check", "e2e"] if argv == "check" else ["render", "e2e"]
    where = f"environments/e2e/conda-lock.yml:{line}: package[{record}].{field}:"
    return Case(
        {"environments/e2e/conda-lock.yml": E2E_LOCK.replace(old, new, 1)}, command, where, says
    )


FIRST_SHA = "    sha256: 0fe164f3b96791ae62a83b086bfc452f83819e431a3a3edddd2cddada0304e03"
FIRST_URL = "  url: http://127.0.0.1:8321/conda-forge/linux-64/aiodns-4.0.4-py311_0.conda"
PIP_SHA = "    sha256: 188306098d013b691fcadc011abd66727d3c414c571bb01b1a174ba8c983cf90"
HEAD = "description: bad\nextends: base\n"
CASES: dict[str, Case] = {
    # -- specs: Dockerfile injection -------------------------------------------------
    "env value ends its quote and adds RUN": spec(
        HEAD + 'env: {FOO: "1\\"\\nRUN echo pwned > /pwned\\n#"}\n',
        "3: env.FOO:",
        "holds a newline",
    ),
    "base image with a newline": spec(
        HEAD + 'build: {base_image: "debian\\nRUN echo pwned"}\n',
        "3: build.base_image:",
        "holds a newline",
    ),
    "base image that is not a reference": spec(
        HEAD + 'build: {base_image: "debian AS x"}\n',
        "3: build.base_image:",
        "is not an image reference",
    ),
    "base image with a quote": spec(
        HEAD + "build: {base_image: 'debian\"x'}\n",
        "3: build.base_image:",
        "is not an image reference",
    ),
    "description with a carriage return": spec(
        'description: "one\\rLABEL x=y"\nextends: base\n',
        "1: description:",
        "holds a carriage return",
    ),
    "description with a Unicode line separator": spec(
        'description: "one\\u2028two"\nextends: base\n', "1: description:", "U+2028"
    ),
    "description with a bidi override": spec(
        'description: "abc\\u202edef"\nextends: base\n', "1: description:", "U+202E"
    ),
    "description too long": spec(
        f"description: {'x' * 400}\nextends: base\n", "1: description:", "at most 300 characters"
    ),
    "display name over two lines": spec(
        HEAD + "display_name: |\n  one\n  two\n", "3: display_name:", "holds a newline"
    ),
    "apt name with a trailing newline": spec(
        HEAD + 'apt: ["curl\\n"]\n', "3: apt[0]:", "holds a newline"
    ),
    "apt name with a shell command": spec(
        HEAD + 'apt: ["curl;rm"]\n', "3: apt[0]:", "is not a Debian package name"
    ),
    "apt name with a command substitution": spec(
        HEAD + 'apt: ["$(id)"]\n', "3: apt[0]:", "is not a Debian package name"
    ),
    "image name with a trailing newline": spec(
        HEAD + 'notebook: {image: "jupyter-x\\n"}\n', "3: notebook.image:", "holds a newline"
    ),
    "image name with a tag": spec(
        HEAD + "worker: {image: 'evil:latest'}\n",
        "3: worker.image:",
        "is not a valid image repository name",
    ),
    "pip pin with a trailing newline": spec(
        HEAD + 'pip: ["foo==1.0\\n"]\n', "3: pip[0]:", "holds a newline"
    ),
    "pip range": spec(HEAD + 'pip: ["foo>=1"]\n', "3: pip[0]:", "is not an exact pip pin"),
    "pip URL": spec(
        HEAD + 'pip: ["foo @ https://127.0.0.2/x.whl"]\n', "3: pip[0]:", "exact pip pin"
    ),
    "pip option": spec(
        HEAD + 'pip: ["--index-url=http://127.0.0.2/"]\n', "3: pip[0]:", "exact pip pin"
    ),
    "import that runs code": spec(
        HEAD + 'imports: ["os;print(1)"]\n', "3: imports[0]:", "is not a Python module name"
    ),
    "environment variable name with a space": spec(
        HEAD + 'env: {"A B": x}\n', "3: env.A B:", "is not a valid environment variable name"
    ),
    "environment variable name with a newline": spec(
        HEAD + 'env: {"A\\nRUN x": y}\n', "3: env:", "a key holds a newline"
    ),
    "NUL in a dependency": spec(
        HEAD + 'dependencies: ["numpy\\0"]\n', "3: dependencies[0]:", "holds a NUL"
    ),
    "tab in a dependency": spec(
        HEAD + 'dependencies: ["numpy\\t>=1"]\n', "3: dependencies[0]:", "holds a tab"
    ),
    "virtual package name": spec(
        HEAD + 'virtual_packages: {"cuda; x": "12"}\n',
        "3: virtual_packages:",
        "is not a virtual package name",
    ),
    # -- specs: paths and channels ---------------------------------------------------
    "extends out of the root": spec(
        "description: bad\nextends: ../../outside/x\n", "2: extends:", "not an environment name"
    ),
    "extends an absolute path": spec(
        "description: bad\nextends: /etc\n", "2: extends:", "not an environment name"
    ),
    "channel URL with credentials": Case(
        {"environments/bad/env.yaml": HEAD + f"channels: ['http://ci:{CANARY}@127.0.0.2/c']\n"},
        ["lock", "--check", "bad"],
        "environments/bad/env.yaml:3: channels[0]:",
        "carries credentials; put credentials in rattler's authentication file",
        not_said=[CANARY],
    ),
    "channel of another scheme": spec(
        HEAD + "channels: ['ftp://127.0.0.2/c']\n", "3: channels[0]:", "not ftp://"
    ),
    "channel name that climbs": spec(
        HEAD + "channels: ['../c']\n", "3: channels[0]:", "is not a channel name"
    ),
    "folder name with a quote": Case(
        {'environments/bad"x/env.yaml': "description: x\n"},
        ["list", "--all"],
        "environments:",
        "is not an environment name",
    ),
    "folder name in capitals": Case(
        {"environments/Bad/env.yaml": "description: x\n"},
        ["list", "--all"],
        "environments:",
        "is not an environment name",
    ),
    # -- specs: bounded parsing ------------------------------------------------------
    "alias bomb": spec(ALIAS_BOMB, "3:", "YAML aliases (*name) are not allowed"),
    "one alias": spec("description: &d x\ndisplay_name: *d\n", "2:", "aliases"),
    "spec over the size cap": spec(
        "description: big\n" + "# padding\n" * 200_000, "", "more than the 1048576 allowed"
    ),
    "spec not UTF-8": spec(b'description: ok\nenv: {A: "\xff\xfe"}\n', "2:", "not UTF-8"),
    "nesting past the recursion limit": spec(
        "description: " + "[" * 50_000 + "]" * 50_000 + "\n", "", "nested too deeply"
    ),
    "infinity": spec("description: .inf\n", "1: description:", "inf is not a number"),
    "not a number": spec(HEAD + "abstract: .nan\n", "3: abstract:", "nan is not a number"),
    "a Python object tag": spec(
        "description: !!python/object/apply:os.system ['id']\n", "1:", "not valid YAML"
    ),
    # -- site.yaml -------------------------------------------------------------------
    "site bound of infinity": site(
        "cluster_options:\n  worker_cores: {min: 1, default: 1, max: .inf}\n",
        "2: cluster_options.worker_cores.max:",
        "inf is not a number",
    ),
    "site bound of NaN": site(
        "cluster_options:\n  worker_memory: {min: .nan, default: 2, max: 4}\n",
        "2: cluster_options.worker_memory.min:",
        "nan is not a number",
    ),
    "site file not UTF-8": site(b"cluster_options: {}\n# \xc3\x28\n", "2:", "not UTF-8"),
    "site alias bomb": site(ALIAS_BOMB, "3:", "aliases"),
    "site file is a list": site("- worker_cores\n", "1:", "must be a YAML mapping"),
    "site bound as a string": site(
        "cluster_options:\n  worker_cores: {min: 1, default: 1, max: '4'}\n",
        "2: cluster_options.worker_cores.max:",
        "valid number",
    ),
    "site hides a path": site(
        "profiles:\n  hidden: [e2e, ../../etc]\n",
        "2: profiles.hidden[1]:",
        "is not an environment name",
    ),
    "site default is hidden": site(
        "profiles:\n  default: e2e\n  hidden: [e2e]\n",
        "1: profiles:",
        "the default profile 'e2e' is also hidden",
    ),
    "site version checks as text": site(
        "version_checks: maybe\n", "1: version_checks:", "valid boolean"
    ),
    # -- environment.yml imports -----------------------------------------------------
    "import variable key that writes keys": envfile(
        'dependencies: [numpy]\nvariables: {"X\\nbuild:\\n  base_image: attacker/evil": 1}\n',
        "2: variables:",
        "a key holds a newline",
    ),
    "import variable key with a space": envfile(
        "dependencies: [numpy]\nvariables: {A B: 1}\n",
        "2: variables.A B:",
        "is not an environment variable name",
    ),
    "import variable value that is a map": envfile(
        "dependencies: [numpy]\nvariables: {A: {b: c}}\n", "2: variables.A:", "must be a string"
    ),
    "import file not UTF-8": envfile(b"dependencies:\n  - numpy\n  - \xff\n", "3:", "not UTF-8"),
    "import alias bomb": envfile(
        ALIAS_BOMB.replace("description: bomb\n", "name: x\n"), "3:", "aliases"
    ),
    "import pip range": envfile(
        "dependencies:\n  - numpy\n  - pip:\n    - requests>=2\n",
        "4: dependencies[1].pip[0]:",
        "is not an exact pip pin",
    ),
    "import channel with credentials": envfile(
        f"channels: ['https://u:{CANARY}@127.0.0.2/c']\ndependencies: [numpy]\n",
        "1: channels[0]:",
        "carries credentials",
    ),
    "import list-shaped virtual-packages.yml": Case(
        {"environment.yml": "dependencies: [numpy]\n", "virtual-packages.yml": "- __cuda\n"},
        ["import", "environment.yml", "--name", "imported"],
        "virtual-packages.yml:1:",
        "must be a YAML mapping",
    ),
    "import virtual-packages.yml with a bad name": Case(
        {
            "environment.yml": "dependencies: [numpy]\n",
            "virtual-packages.yml": "subdirs:\n  linux-64:\n    packages: {'cuda x': '12'}\n",
        },
        ["import", "environment.yml", "--name", "imported"],
        "virtual-packages.yml:3: subdirs.linux-64.packages.cuda x:",
        "not a virtual package",
    ),
    "import name that climbs out": Case(
        {"environment.yml": "dependencies: [numpy]\n"},
        ["import", "environment.yml", "--name", "../../escaped"],
        "environments:",
        "is not an environment name",
    ),
    # -- locks, read by render and lock --check ---------------------------------------
    "lock sha256 not hex": lock(FIRST_SHA, "    sha256: " + "zz" * 32, "hash.sha256", "64"),
    "lock sha256 too short": lock(
        FIRST_SHA, FIRST_SHA[:-2], "hash.sha256", "64 lowercase hex", argv="check"
    ),
    "lock md5 not hex": lock(
        "    md5: 1daa394bd1a7c5aebea3cfa7cd2ba802",
        "    md5: '../../etc/passwd'",
        "hash.md5",
        "32 lowercase hex",
    ),
    "lock URL on another host": lock(
        FIRST_URL, FIRST_URL.replace("127.0.0.1:8321", "127.0.0.2"), "url", "channel"
    ),
    "lock URL with credentials": Case(
        {
            "environments/e2e/conda-lock.yml": E2E_LOCK.replace(
                FIRST_URL, FIRST_URL.replace("http://", f"http://ci:{CANARY}@"), 1
            )
        },
        ["render", "e2e"],
        "environments/e2e/conda-lock.yml:27: package[0].url:",
        "holds a user name or password",
        not_said=[CANARY],
    ),
    "lock URL that climbs out of its subdir": lock(
        FIRST_URL, FIRST_URL.replace("linux-64/", "linux-64/../../x/"), "url", "channel"
    ),
    "lock file name of another package": lock(
        FIRST_URL, FIRST_URL.replace("aiodns-4.0.4", "evil-4.0.4"), "url", "aiodns"
    ),
    "lock URL of another scheme": lock(
        FIRST_URL, FIRST_URL.replace("http://127.0.0.1:8321", "ftp://127.0.0.1:8321"), "url", "http"
    ),
    "lock record of an unlocked platform": lock(
        "  platform: linux-64\n  dependencies:\n    pycares",
        "  platform: linux-aarch64\n  dependencies:\n    pycares",
        "platform",
        "linux-aarch64",
    ),
    "lock category of its own": lock(
        "  category: notebook\n  optional: true\n- name: aiohappyeyeballs",
        "  category: evil\n  optional: true\n- name: aiohappyeyeballs",
        "category",
        "main",
    ),
    "lock pip wheel sha256 not hex": lock(PIP_SHA, "    sha256: nothex", "hash.sha256", "64"),
    "lock alias bomb": Case(
        {"environments/e2e/conda-lock.yml": ALIAS_BOMB},
        ["render", "e2e"],
        "environments/e2e/conda-lock.yml:3:",
        "alias",
    ),
    "lock not UTF-8": Case(
        {"environments/e2e/conda-lock.yml": E2E_LOCK.encode().replace(b"aiodns", b"\xff", 1)},
        ["lock", "--check", "e2e"],
        "environments/e2e/conda-lock.yml:20:",
        "UTF-8",
    ),
    # -- command-line values ---------------------------------------------------------
    "environment argument that climbs": Case(
        {}, ["lock", "--check", "../e2e"], "environments:", "is not an environment name"
    ),
    "environment argument with a newline": Case(
        {}, ["lock", "--check", "e2e\n"], "environments:", "is not an environment name"
    ),
    "import parent that climbs": Case(
        {"environment.yml": "dependencies: [numpy]\n"},
        ["import", "environment.yml", "--name", "x", "--extends", "../base"],
        "environments:",
        "is not an environment name",
    ),
    "registry with a newline": Case(
        {},
        ["render", "e2e", "--registry", "127.0.0.1:5000/ns\nRUN id"],
        "--registry:",
        "is not a registry and namespace",
    ),
    "registry as a URL": Case(
        {},
        ["render", "e2e", "--registry", "http://127.0.0.1:5000/ns"],
        "--registry:",
        "is not a registry and namespace",
    ),
    "base image argument with a newline": Case(
        {},
        ["render", "e2e", "--base-image", "debian\nRUN id"],
        "--base-image linux-64:",
        "is not an image reference",
    ),
    "base image argument for one platform": Case(
        {},
        ["render", "e2e", "--base-image", "linux-64=debian;id"],
        "--base-image linux-64:",
        "is not an image reference",
    ),
    "channel argument with credentials": Case(
        {},
        ["lock", "e2e", "--channel", f"http://ci:{CANARY}@127.0.0.1:9/c"],
        "--channel:",
        "carries credentials",
        not_said=[CANARY],
    ),
    "empty channel argument": Case(
        {}, ["lock", "e2e", "--channel", ""], "--channel:", "an empty channel"
    ),
    "default profile that climbs": Case(
        {}, ["helm-values", "--default", "../x"], "environments:", "not an environment name"
    ),
    # -- specs: requests a spec's author could aim (solves fetch what a spec names) ----
    **{
        f"site spec naming a URL: {form}": spec(
            HEAD + f"dependencies: ['{form}']\n", "3: dependencies[0]:", "names a URL"
        )
        for form in URL_FORMS
    },
    **{
        f"extension naming {what}: {form}": extension(form, what)
        for form, what in [
            *((form, "a URL") for form in URL_FORMS),
            ("conda-forge::numpy", "a channel"),
            ("numpy[channel=conda-forge]", "a channel"),
            ("numpy[subdir=linux-aarch64]", "a subdir"),
            ("numpy[md5=0123456789abcdef0123456789abcdef]", "an md5"),
            (f"numpy[sha256={'ab' * 32}]", "a sha256"),
        ]
    },
    "environment.yml naming a URL": envfile(
        "dependencies:\n  - x[url=http://169.254.169.254/x-1.0-0.conda]\n",
        "2: dependencies[0]:",
        "names a URL",
    ),
}


@pytest.fixture
def sitedir(tmp_path: Path) -> Path:
    """A site folder: base and e2e with e2e's committed lock."""
    for name in ("base", "e2e"):
        shutil.copytree(REPO / "environments" / name, tmp_path / "environments" / name)
    return tmp_path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_hostile_input_gets_one_line_and_changes_nothing(
    case: Case, sitedir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for relative, content in case.files.items():
        path = sitedir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    before = _snapshot(sitedir)
    monkeypatch.chdir(sitedir)
    root = sitedir / "environments"
    code = main(["--root", str(root), "--build-dir", str(sitedir / "build"), *case.argv])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    line = lines[0].replace(str(sitedir) + "/", "")
    assert line.startswith(f"error: {case.where}"), line
    assert case.says in line, line
    for secret in case.not_said:
        assert secret not in out + err
    assert _snapshot(sitedir) == before, "a hostile input changed or wrote a file"
    assert not (sitedir / "build").exists()
    assert not (sitedir.parent / "escaped").exists()


def test_the_corpus_is_large() -> None:
    assert len(CASES) >= 50


def test_no_url_a_spec_names_is_ever_asked_for(
    sitedir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL forms aimed at a listener on this machine (127.0.0.4, "another host"): each
    `lock` of a site spec or an extension is one line and exit 2, and the listener hears
    nothing."""
    heard: list[str] = []

    class Listener(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the handler's name)
            heard.append(self.path)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.4", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.4:{server.server_address[1]}"
    forms = [
        f'x[url="{base}/pkgs/x-1.0-0.conda"]',
        f"{base}/conda-forge/linux-64/x-1.0-0.conda",
        f"{base}/conda-forge::numpy",
        f'numpy[channel="{base}/c"]',
    ]
    monkeypatch.chdir(sitedir)
    root = sitedir / "environments"
    try:
        for form in forms:
            for name, text in (
                ("bad", HEAD + f"dependencies: ['{form}']\n"),
                (
                    "ext",
                    f"from: {base[7:]}/ns/jupyter-e2e:latest\ndescription: x\n"
                    f"dependencies: ['{form}']\n",
                ),
            ):
                (root / name).mkdir(exist_ok=True)
                (root / name / "env.yaml").write_text(text)
                code = main(
                    ["--root", str(root), "--build-dir", str(sitedir / "build"), "lock", name]
                )
                err = capsys.readouterr().err
                assert code == 2 and len(err.splitlines()) == 1, err
                assert "names a URL" in err, err
    finally:
        server.shutdown()
    assert heard == []
