#!/usr/bin/env bash
# Builds tokenproxy and runs its self-contained demo: a token issuer, an echo API that checks the
# token, and the proxy between them, all on loopback. Ctrl-C to stop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --quiet
exec ./target/debug/tokenproxy demo
