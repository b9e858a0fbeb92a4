#!/usr/bin/env bash
# Installs what building and testing tokenproxy needs on a fresh Debian machine that has only the
# Rust toolchain: cmake (pingora builds zlib-ng with it) and, for the tests, Prometheus and
# promtool, node/npm with panva's oidc-provider (pinned in tests/oidc/package-lock.json) for the
# interop test, and redis-server with redis-cli (the shared-cache tests start their own on
# loopback). Does nothing for what is already there. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || need+=(redis-server redis-tools)

if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "setup: please install as root: apt-get install ${need[*]}" >&2; exit 1
    fi
  fi
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # --no-install-recommends keeps the Prometheus install small; nothing is started.
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for tool in cargo cmake prometheus promtool node npm redis-server redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || { echo "setup: $tool is still missing" >&2; exit 1; }
done

# oidc-provider for tests/oidc.rs, exactly as the lock file pins it; again when the lock changes.
lock_sum="$(sha256sum tests/oidc/package-lock.json | cut -d' ' -f1)"
stamp=tests/oidc/node_modules/.installed-lock-sha256
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
  echo "setup: installing tests/oidc (oidc-provider) with npm ci" >&2
  (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_sum" >"$stamp"
fi
