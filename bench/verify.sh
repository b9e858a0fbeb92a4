#!/usr/bin/env bash
# CPU per request of a verify route (issue 16), beside the plain injecting proxy, on one machine
# in one run:
#
#   inject         wrk -> tokenproxy (token: route, lean path) -> API
#   verify-same    wrk -> tokenproxy (verify: route) -> API, one token on every request
#                  (verified once, then answered from the verified-token cache)
#   verify-new     the same, a new token on every request (20,000 tokens in turn, twice the
#                  cache's bound, so each is checked with an RSA signature verification)
#
# Tokens are RS256, 2048-bit, from examples/verify_bench (which also serves the JWKS and a
# plain 200 API); the inject row's tokens come from `tokenproxy demo issuer`. The proxy runs on
# one core (BENCH_PROXY_CPU, 0), wrk and the rest on another (BENCH_LOAD_CPU, 1). Prints a
# table; the exit status is 0 whatever the figures. Needs wrk (installed with apt when missing,
# as root). All traffic stays on 127.0.0.1.
#
# Usage: bench/verify.sh [--quick]      (--quick: 1 s runs, 2,000 tokens; checks the script)
# Environment: BENCH_PROFILE (release; debug builds faster, figures then mean nothing),
#              BENCH_CONNS (64), CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=10 TOKENS=20000
[[ ${1:-} == --quick ]] && DURATION=1 TOKENS=2000
CONNS=${BENCH_CONNS:-64}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
PROFILE=${BENCH_PROFILE:-release}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'verify.sh: %s\n' "$*" >&2; exit 1; }

command -v wrk >/dev/null || {
  [[ $(id -u) == 0 ]] || die "wrk is missing (apt-get install wrk, as root)"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk >/dev/null
}

log "building tokenproxy and examples/verify_bench ($PROFILE)"
flag=()
[[ $PROFILE == release ]] && flag=(--release)
(cd "$ROOT" && cargo build -q "${flag[@]}" --bin tokenproxy --example verify_bench)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL NAME
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || die "$2 did not answer $1 (log: $WORK/$2.log)"
    sleep 0.1
  done
}

log "signing $TOKENS tokens"
taskset -c "$LOAD_CPU" "$BIN/examples/verify_bench" --tokens "$TOKENS" --out "$WORK/tokens.txt" \
  >"$WORK/issuer.json" 2>"$WORK/verify_bench.log" &
PIDS+=($!)
for _ in $(seq 600); do [[ -s $WORK/issuer.json ]] && break; sleep 0.1; done
[[ -s $WORK/issuer.json ]] || die "examples/verify_bench did not start (log: $WORK/verify_bench.log)"
ISSUER=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["issuer"])' <"$WORK/issuer.json")
API_PORT=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["api_port"])' <"$WORK/issuer.json")
AUDIENCE=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["audience"])' <"$WORK/issuer.json")

DEMO_PORT=$(free_port)
taskset -c "$LOAD_CPU" "$BIN/tokenproxy" demo issuer --listen "127.0.0.1:$DEMO_PORT" >"$WORK/demo.log" 2>&1 &
PIDS+=($!)

ADMIN=$(free_port) INJECT=$(free_port) VERIFY=$(free_port)
cat >"$WORK/config.yaml" <<YAML
admin: { listen: 127.0.0.1:$ADMIN }
threads: 1
log: { level: warn }
providers:
  demo:
    token_url: http://127.0.0.1:$DEMO_PORT/oauth/token
    client_id: demo-client
    client_secret: demo-secret
    body: json
routes:
  - name: inject
    listen: 127.0.0.1:$INJECT
    upstream: http://127.0.0.1:$API_PORT
    token: { provider: demo, audience: "https://api.example/" }
  - name: verify
    listen: 127.0.0.1:$VERIFY
    upstream: http://127.0.0.1:$API_PORT
    verify: { issuer: "$ISSUER", audiences: ["$AUDIENCE"], algorithms: [RS256], required_scopes: [read:bench] }
YAML
taskset -c "$PROXY_CPU" "$BIN/tokenproxy" run --config "$WORK/config.yaml" >"$WORK/tokenproxy.log" 2>&1 &
TP_PID=$!
PIDS+=("$TP_PID")
wait_http "http://127.0.0.1:$ADMIN/readyz" tokenproxy

ONE=$(head -1 "$WORK/tokens.txt")
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@"; }
[[ $(code "http://127.0.0.1:$INJECT/") == 200 ]] || die "the inject route does not answer 200"
[[ $(code -H "Authorization: Bearer $ONE" "http://127.0.0.1:$VERIFY/") == 200 ]] || die "the verify route refuses a good token"
[[ $(code "http://127.0.0.1:$VERIFY/") == 401 ]] || die "the verify route lets a request without a token through"

CLK_TCK=$(getconf CLK_TCK)
proc_ticks() { awk '{print $14 + $15}' "/proc/$TP_PID/stat"; }
allowed() {
  curl -fsS "http://127.0.0.1:$ADMIN/metrics" |
    awk '/^tokenproxy_inbound_requests_total\{/ && /outcome="allowed"/ {s += $2} END {print s + 0}'
}

# run ROW URL [wrk args...]: one wrk run against URL; prints the row of the table.
run() {
  local row=$1 url=$2 t0 t1 a0 a1 line
  shift 2
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "$@" "$url" >/dev/null 2>&1 || die "warm-up of $row failed"
  t0=$(proc_ticks) a0=$(allowed)
  line=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency \
    -s "$ROOT/bench/verify.lua" "$@" "$url" | grep '^BENCH ') || die "wrk printed no summary for $row"
  t1=$(proc_ticks) a1=$(allowed)
  awk -v row="$row" -v line="$line" -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" -v allowed=$((a1 - a0)) 'BEGIN {
    n = split(line, kv, /[ =]/)
    for (i = 2; i < n; i += 2) v[kv[i]] = kv[i + 1]
    rps = v["requests"] / (v["duration_us"] / 1e6)
    cpu = ticks / hz * 1e6 / v["requests"]
    printf "%-12s %10.0f %12.1f %9.2f %9.2f %7d %12s\n", row, rps, cpu, v["p50_us"] / 1000, v["p99_us"] / 1000,
      v["errors"], (row == "inject" ? "-" : allowed)
  }'
}

log "$CONNS connections, ${DURATION} s per row; tokenproxy on cpu$PROXY_CPU, the rest on cpu$LOAD_CPU"
printf '%-12s %10s %12s %9s %9s %7s %12s\n' row 'req/s' 'cpu µs/req' 'p50 ms' 'p99 ms' errors 'allowed'
run inject "http://127.0.0.1:$INJECT/"
TOKENS="" run verify-same "http://127.0.0.1:$VERIFY/" -H "Authorization: Bearer $ONE"
TOKENS=$WORK/tokens.txt run verify-new "http://127.0.0.1:$VERIFY/"
printf '\n(%s build; cpu µs/req is tokenproxy'"'"'s own CPU time, all threads, per request; allowed counts\n tokenproxy_inbound_requests_total{outcome="allowed"} during the run: the requests, plus the few\n in flight when wrk stopped counting)\n' "$PROFILE"
