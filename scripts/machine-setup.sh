#!/usr/bin/env bash
# Prepare a Debian bookworm machine (a developer's or CI's) for this project.
#
# Idempotent: every step checks before it acts, so re-running is cheap.
#   1. apt packages: docker.io docker-registry debootstrap patchelf apache2-utils curl nodejs
#      qemu-user-static binfmt-support chromium chromium-driver (the browser tests' headless
#      browser and its WebDriver, devsupport/browser.py); and for the cold node's lazy
#      pulling (devsupport/coldnode.py): containerd, stargz-snapshotter (ctr-remote), and
#      golang-go with golang-github-containerd-stargz-snapshotter-dev, the Go sources the
#      snapshotter daemon is built from (devsupport/snapshotter/, on first use). The cold
#      node runs a containerd of its own: the package's service, where systemd starts it,
#      is left running (Docker may use it) and shares nothing with it
#   2. pip install -e ./compat -e ./devsupport -e '.[test]' of the repository (the parent of
#      this folder)
#   3. arm64 binaries run under qemu (binfmt_misc mounted, qemu-aarch64 enabled), so that
#      linux-aarch64 images can be tested here and their Dockerfile steps run
#   4. dockerd in the background, unless `docker info` already answers
#   5. a distribution registry on 127.0.0.1:${REGISTRY_PORT:-5000} with htpasswd
#      auth; the user `ci` and its password are made once and kept in
#      ${STATE_DIR}/registry/credentials.env (the password is never printed)
#
# Run as root. Works without stdin (CI=true).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${DASKHUB_STATE_DIR:-/var/lib/daskhub-images}"
REGISTRY_PORT="${REGISTRY_PORT:-5000}"
REGISTRY_DIR="${STATE_DIR}/registry"
CREDENTIALS="${REGISTRY_DIR}/credentials.env"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(docker.io docker-registry debootstrap patchelf apache2-utils curl ca-certificates nodejs
              qemu-user-static binfmt-support chromium chromium-driver
              containerd stargz-snapshotter golang-go golang-github-containerd-stargz-snapshotter-dev)

say() { printf '[machine-setup] %s\n' "$*"; }
die() { printf '[machine-setup] ERROR: %s\n' "$*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || die "run as root"

install_apt_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        say "apt packages: all present"
        return
    fi
    say "apt packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${missing[@]}" \
        >"${STATE_DIR}/apt-install.log" 2>&1 \
        || { tail -n 30 "${STATE_DIR}/apt-install.log" >&2; die "apt-get install failed"; }
}

install_repo() {
    # A copy of the checkout run by the test suite keeps the install it is tested with.
    if [[ -n "${DASKHUB_KEEP_INSTALL:-}" ]]; then
        say "pip install: skipped (DASKHUB_KEEP_INSTALL is set)"
        return
    fi
    # Keyed on what it installs: this checkout, its three pyproject.toml files and the
    # Python. When the key is unchanged and the three packages still import from this
    # checkout, pip is not run again (it takes about 13 s even when nothing changes).
    local stamp="${STATE_DIR}/pip-install.stamp" key origins
    key="$(cat "${REPO_ROOT}/pyproject.toml" "${REPO_ROOT}/compat/pyproject.toml" \
        "${REPO_ROOT}/devsupport/pyproject.toml" \
        | sha256sum | cut -d' ' -f1) ${REPO_ROOT} $("$PYTHON" -c 'import sys; print(sys.version)')"
    origins="$("$PYTHON" -I -c 'import importlib.util as u
for name in ("buildtool", "compat", "devsupport"):
    spec = u.find_spec(name)
    print(spec.origin if spec else "-")' 2>/dev/null | tr '\n' ' ')"
    local expected="${REPO_ROOT}/buildtool/__init__.py ${REPO_ROOT}/compat/__init__.py "
    expected+="${REPO_ROOT}/devsupport/__init__.py "
    if [[ -s "$stamp" && "$(cat "$stamp")" == "$key" && "$origins" == "$expected" ]]; then
        say "pip install: up to date (${REPO_ROOT})"
        return
    fi
    # daskhub-compat is the checker's own distribution (compat/), which daskhub-images needs;
    # daskhub-devsupport (devsupport/) the stand-in and the tests' helpers, never shipped.
    say "pip install -e ./compat -e ./devsupport -e '.[test]' (${REPO_ROOT})"
    rm -f "$stamp"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check \
        -e "${REPO_ROOT}/compat" -e "${REPO_ROOT}/devsupport" -e "${REPO_ROOT}[test]" \
        >"${STATE_DIR}/pip-install.log" 2>&1 \
        || { tail -n 30 "${STATE_DIR}/pip-install.log" >&2; die "pip install failed"; }
    printf '%s' "$key" >"$stamp"
}

enable_arm64_emulation() {
    if [[ ! -e /proc/sys/fs/binfmt_misc/status ]]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
            || die "cannot mount binfmt_misc: arm64 images cannot run here"
    fi
    if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 \
            || die "update-binfmts --enable qemu-aarch64 failed"
    fi
    grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
        || die "qemu-aarch64 is registered without the F flag: containers cannot use it"
    say "arm64 emulation: enabled (qemu-aarch64)"
}

start_dockerd() {
    if docker info >/dev/null 2>&1; then
        say "dockerd: already answering"
        return
    fi
    say "dockerd: starting (log ${STATE_DIR}/dockerd.log)"
    setsid nohup dockerd >>"${STATE_DIR}/dockerd.log" 2>&1 </dev/null &
    echo $! >"${STATE_DIR}/dockerd.pid"
    local waited=0
    until docker info >/dev/null 2>&1; do
        ((waited < 60)) || { tail -n 20 "${STATE_DIR}/dockerd.log" >&2; die "dockerd did not answer in 60 s"; }
        sleep 1
        waited=$((waited + 1))
    done
    say "dockerd: ready after ${waited} s"
}

# The Debian package ships a service listening on :5000 with its own config;
# make sure it is not the one answering (systemd or sysvinit, whichever runs).
stop_packaged_registry() {
    if [[ -d /run/systemd/system ]] && systemctl is-active --quiet docker-registry 2>/dev/null; then
        say "registry: stopping the Debian docker-registry service"
        systemctl disable --now docker-registry >/dev/null 2>&1
    fi
    if [[ -s /var/run/docker-registry.pid ]] && kill -0 "$(cat /var/run/docker-registry.pid)" 2>/dev/null; then
        say "registry: stopping the Debian docker-registry service"
        /etc/init.d/docker-registry stop >/dev/null
    fi
}

write_credentials_once() {
    mkdir -p "${REGISTRY_DIR}/data"
    chmod 700 "${REGISTRY_DIR}"
    if [[ -s "${CREDENTIALS}" && -s "${REGISTRY_DIR}/htpasswd" ]]; then
        return
    fi
    say "registry: generating credentials for user ci"
    local password
    password="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')"
    printf '%s\n' "$password" | htpasswd -niB ci >"${REGISTRY_DIR}/htpasswd"
    (umask 077
     printf 'REGISTRY=127.0.0.1:%s\nREGISTRY_USER=ci\nREGISTRY_PASSWORD=%s\n' \
        "$REGISTRY_PORT" "$password" >"${CREDENTIALS}")
}

write_registry_config() {
    cat >"${REGISTRY_DIR}/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: ${REGISTRY_DIR}/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${REGISTRY_PORT}
auth:
  htpasswd:
    realm: daskhub-images
    path: ${REGISTRY_DIR}/htpasswd
EOF
}

# HTTP status of GET /v2/ with the stored credentials (000 when nothing answers).
registry_status() {
    # shellcheck disable=SC1090
    (source "${CREDENTIALS}"
     printf 'user = "%s:%s"\n' "$REGISTRY_USER" "$REGISTRY_PASSWORD" \
        | curl -s -o /dev/null -w '%{http_code}' -K - "http://127.0.0.1:${REGISTRY_PORT}/v2/") || true
}

start_registry() {
    stop_packaged_registry
    write_credentials_once
    grep -q "^REGISTRY=127.0.0.1:${REGISTRY_PORT}$" "${CREDENTIALS}" \
        || sed -i "s/^REGISTRY=.*/REGISTRY=127.0.0.1:${REGISTRY_PORT}/" "${CREDENTIALS}"
    write_registry_config
    local status
    status="$(registry_status)"
    if [[ "$status" == 200 ]]; then
        say "registry: already answering on 127.0.0.1:${REGISTRY_PORT}"
        return
    fi
    [[ "$status" == 000 ]] \
        || die "something else answers on 127.0.0.1:${REGISTRY_PORT} (HTTP ${status} with our credentials)"
    say "registry: starting on 127.0.0.1:${REGISTRY_PORT} (log ${REGISTRY_DIR}/registry.log)"
    setsid nohup /usr/bin/docker-registry serve "${REGISTRY_DIR}/config.yml" \
        >>"${REGISTRY_DIR}/registry.log" 2>&1 </dev/null &
    echo $! >"${REGISTRY_DIR}/registry.pid"
    local waited=0
    until [[ "$(registry_status)" == 200 ]]; do
        ((waited < 30)) || { tail -n 20 "${REGISTRY_DIR}/registry.log" >&2; die "registry did not answer in 30 s"; }
        sleep 1
        waited=$((waited + 1))
    done
    say "registry: ready (credentials in ${CREDENTIALS})"
}

mkdir -p "${STATE_DIR}"
install_apt_packages
install_repo
enable_arm64_emulation
start_dockerd
start_registry
say "done"
