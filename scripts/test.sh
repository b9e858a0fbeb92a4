#!/usr/bin/env bash
# Runs every test: unit tests, and the integration tests that start the real binary, a token
# endpoint, upstreams (plain and TLS) and a real Prometheus, all on loopback; then the tests of
# bench/report, the benchmark's arithmetic.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --all-targets "$@"
# The bench's arithmetic and report (a crate of its own): unit tests and the recorded fixtures.
cargo test --manifest-path bench/report/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-target}/bench-report"
