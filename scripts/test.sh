#!/usr/bin/env bash
# Runs every test: unit tests, and the integration tests that start the real binary, a token
# endpoint, upstreams (plain and TLS) and a real Prometheus, all on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --all-targets "$@"
