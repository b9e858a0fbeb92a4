#!/usr/bin/env bash
# The tokenproxy benchmark: one machine, one run, the same load against
#
#   direct        wrk -> upstream nginx                      (the harness's ceiling)
#   nginx         wrk -> nginx proxy_set_header -> upstream  (what people use today)
#   tokenproxy    wrk -> tokenproxy (real token) -> upstream   (its lean HTTP/1.1 path)
#   bare-pingora  wrk -> examples/bare_pingora -> upstream   (pingora's general proxy, alone)
#   tokenproxy-pingora  as tokenproxy with lean_path: false  (every request through pingora)
#
# and, to an https:// upstream (the same nginx over TLS, sessions kept for resumption):
#
#   direct-https      wrk -> upstream nginx over TLS
#   nginx-https       wrk -> nginx proxy_pass https:// (SNI, verify, session reuse) -> upstream
#   tokenproxy-https  wrk -> tokenproxy (http2: auto; the upstream selects HTTP/1.1) -> upstream
#   tokenproxy-h2     wrk -> tokenproxy (http2: auto) -> the upstream's h2 listener, over h2
#
# Scenarios: a small body at 64 connections and at 1 connection, to http:// and to https://
# upstreams; 4 KiB and 1 MiB bodies; the
# same load while tokens refresh every ~1.6 s; and each proxy held to half a CPU by a cgroup
# quota, as a sidecar's CPU limit would. Prints a table, the proxy's memory, and PASS/FAIL per
# target (the exit status does not depend on the targets). See bench/README.md.
#
# This script starts and stops processes and collects raw measurements; the arithmetic (busy
# and steal shares, medians, ratios, CPU per request, targets) and the report are
# bench/report's (a small Rust crate with unit tests), fed the files kept in the work directory.
#
# Usage: bench/run.sh [--quick] [--update-readme] [--keep]
#   --quick          smoke mode: 1 s runs, one round, a few seconds of load in all
#   --update-readme  put the report into bench/README.md (full runs only)
#   --keep           keep the work directory (configs, logs, raw wrk output, the report's inputs)
# Environment: BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1), BENCH_PORT_BASE (18080),
#              BENCH_MAX_STEAL (5: a run that lost more than 5% of a core to the hypervisor is
#              measured again), BENCH_STEAL_RETRIES (2; 0 with --quick), BENCH_PROFILE
#              (release; debug builds faster and is only good for checking the script, as CI
#              does with --quick), CARGO_TARGET_DIR, BENCH_HALT_POLL_NS (unset: the
#              machine's; N: on a guest with cpuidle haltpoll, let idle cores poll up to N ns
#              before they halt, for this run only, to see what slow wake-ups cost each row).
#
# Installs nginx, wrk, cyclictest (rt-tests) and the build's cmake and C compiler with apt when
# they are missing (needs root on Debian/Ubuntu). All traffic stays on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
COMMAND_LINE="bench/run.sh${*:+ $*}"

MODE=full
UPDATE_README=0
KEEP=0
for arg in "$@"; do
  case $arg in
    --quick) MODE=quick ;;
    --update-readme) UPDATE_README=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,40p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf 'run.sh: unknown argument %s (try --help)\n' "$arg" >&2; exit 2 ;;
  esac
done

# The 64-connection set decides most targets and this machine class is noisy: more rounds.
if [[ $MODE == full ]]; then
  DURATION=10 WARMUP=2 ROUNDS=2 MAIN_ROUNDS=5 REFRESH_ROUNDS=8 REFRESH_SECS=5 WAKE_SAMPLES=3000
  STEAL_RETRIES=${BENCH_STEAL_RETRIES:-2}
else
  DURATION=1 WARMUP=1 ROUNDS=1 MAIN_ROUNDS=1 REFRESH_ROUNDS=1 REFRESH_SECS=3 WAKE_SAMPLES=300
  STEAL_RETRIES=${BENCH_STEAL_RETRIES:-0}
fi
HALT_POLL=/sys/module/haltpoll/parameters/guest_halt_poll_ns
HALT_POLL_NS=${BENCH_HALT_POLL_NS:-}
[[ -z $HALT_POLL_NS || $HALT_POLL_NS =~ ^[0-9]+$ ]] ||
  { echo "run.sh: BENCH_HALT_POLL_NS must be a whole number of nanoseconds, not '$HALT_POLL_NS'" >&2; exit 2; }
if [[ -n $HALT_POLL_NS && ! -w $HALT_POLL ]]; then
  echo "run.sh: BENCH_HALT_POLL_NS needs guest halt polling ($HALT_POLL: no such file, or not writable without root)" >&2
  exit 2
fi
MAX_STEAL=${BENCH_MAX_STEAL:-5}
[[ $MAX_STEAL =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "run.sh: BENCH_MAX_STEAL must be a percentage, not '$MAX_STEAL'" >&2; exit 2; }
[[ $STEAL_RETRIES =~ ^[0-9]+$ ]] || { echo "run.sh: BENCH_STEAL_RETRIES must be a whole number, not '$STEAL_RETRIES'" >&2; exit 2; }
CONNS=64
THREADS=1
ROUTES=50
REFRESH_LIFETIME=2
# The CPU-limited set: a CFS quota of LIMIT_QUOTA_US per LIMIT_PERIOD_US, Kubernetes' period,
# i.e. `resources.limits.cpu: 500m`, the limit deploy/ sets.
LIMIT_QUOTA_US=50000
LIMIT_PERIOD_US=100000
SMALL_BODY="hello from the bench upstream"

PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
BASE=${BENCH_PORT_BASE:-18080}
P_UPSTREAM=$BASE
P_NGINX=$((BASE + 1))
P_BARE=$((BASE + 2))
P_ISSUER=$((BASE + 3))
P_ISSUER_SHORT=$((BASE + 4))
P_ADMIN=$((BASE + 5))
P_ADMIN_REFRESH=$((BASE + 6))
P_REFRESH=$((BASE + 7))
P_ADMIN_PINGORA=$((BASE + 8))
P_PINGORA=$((BASE + 9))
P_UPSTREAM_TLS=$((BASE + 10))
P_UPSTREAM_H2=$((BASE + 11))
P_NGINX_TLS=$((BASE + 12))
P_ADMIN_TLS=$((BASE + 13))
P_HTTPS=$((BASE + 14))
P_H2=$((BASE + 15))
P_ROUTE0=$((BASE + 100)) # routes r0..r49 listen on P_ROUTE0 + i; the load goes to r0

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

PROFILE=${BENCH_PROFILE:-release}
[[ $PROFILE == release || $PROFILE == debug ]] || die "BENCH_PROFILE must be release or debug, not '$PROFILE'"
if [[ $UPDATE_README == 1 && ($MODE != full || $PROFILE != release) ]]; then
  die "--update-readme records full runs of release builds only"
fi

# ---------------------------------------------------------------------------------------------
# Tools

install_missing() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v cyclictest >/dev/null || missing+=(rt-tests)
  # The build: pingora builds zlib-ng with cmake and a C compiler.
  command -v cmake >/dev/null || missing+=(cmake)
  command -v cc >/dev/null || missing+=(gcc)
  ((${#missing[@]} == 0)) && return
  local sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "missing ${missing[*]}; install them or run as root"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]}"
  # Keep the package's own nginx service from starting on port 80.
  local guard=/usr/sbin/policy-rc.d added_guard=0
  if [[ ! -e $guard ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$guard" >/dev/null && "${sudo[@]}" chmod 755 "$guard" && added_guard=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  ((added_guard)) && "${sudo[@]}" rm -f "$guard"
  return 0
}

install_missing
command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain first"

CPUS=$(nproc)
if ((CPUS < 2)); then
  log "only $CPUS CPU: the proxy and the load generator share it; ratios still hold, absolute figures do not"
  PROXY_CPU=0 LOAD_CPU=0
fi

# ---------------------------------------------------------------------------------------------
# Build

log "building tokenproxy and examples/bare_pingora ($PROFILE)"
if [[ $PROFILE == release ]]; then
  (cd "$ROOT" && cargo build --release --quiet --bin tokenproxy --example bare_pingora)
else
  (cd "$ROOT" && cargo build --quiet --bin tokenproxy --example bare_pingora)
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TP=$TARGET/$PROFILE/tokenproxy
BARE=$TARGET/$PROFILE/examples/bare_pingora
[[ -x $TP && -x $BARE ]] || die "build outputs not found under $TARGET/$PROFILE"
# The arithmetic and the report: a small crate of its own (bench/report), with unit tests.
log "building bench/report"
cargo build --release --quiet --manifest-path "$BENCH/report/Cargo.toml" --target-dir "$TARGET/bench-report"
REPORT_BIN=$TARGET/bench-report/release/bench-report
[[ -x $REPORT_BIN ]] || die "build output not found: $REPORT_BIN"

# ---------------------------------------------------------------------------------------------
# Processes: everything started here is stopped by PID on exit.

WORK=$(mktemp -d /tmp/tokenproxy-bench.XXXXXX)
chmod 755 "$WORK" # the nginx workers run as nobody and read www/ and their configs
PIDS=()

CGROUPS=()

HALT_POLL_WAS=
cleanup() {
  local pid cg
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -z $HALT_POLL_WAS ]] || echo "$HALT_POLL_WAS" >"$HALT_POLL" || log "could not restore $HALT_POLL to $HALT_POLL_WAS"
  # A cgroup can go once its processes have exited.
  for cg in "${CGROUPS[@]}"; do rmdir "$cg" 2>/dev/null || true; done
  if ((KEEP)); then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CPU CMD...: runs CMD pinned to CPU, output in $WORK/NAME.log; sets STARTED_PID.
start() {
  local name=$1 cpu=$2
  shift 2
  taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

stop() {
  local pid=$1 keep=() p
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_http() { # URL SECONDS NAME
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || die "$3 did not answer $1 within $2 s (log: $WORK/$3.log)"
    sleep 0.1
  done
}

render() { # TEMPLATE OUT KEY=VALUE...
  local template=$1 out=$2 kv script=()
  shift 2
  for kv in "$@"; do script+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${script[@]}" "$template" >"$out"
}

start_nginx() { # NAME CPU TEMPLATE KEY=VALUE...
  local name=$1 cpu=$2 template=$3 dir=$WORK/$1
  shift 3
  mkdir -p "$dir/tmp"
  render "$template" "$dir/nginx.conf" DIR="$dir" "$@"
  start "$name" "$cpu" nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
}

vm_kib() { # PID FIELD: VmRSS or VmHWM in KiB
  sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB\$/\1/p" "/proc/$1/status" 2>/dev/null || echo 0
}

# Resets VmHWM to the current RSS (Linux >= 4.0), so that a peak belongs to one scenario.
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }

# Sum of tokenproxy_token_fetches_total (all outcomes, or the one given) on an admin port.
# handoffs ADMIN_PORT: requests the lean path left to pingora's proxy, all routes and reasons.
handoffs() {
  curl -fsS --max-time 2 "http://127.0.0.1:$1/metrics" | "$REPORT_BIN" metric-sum tokenproxy_pingora_handoffs_total
}

# issuer_requests PORT: token requests a demo issuer has answered so far (its /stats), the
# count from the outside, beside each proxy's own tokenproxy_token_fetches_total.
issuer_requests() {
  curl -fsS --max-time 2 "http://127.0.0.1:$1/stats" | sed -n 's/.*"token_requests":\([0-9]*\).*/\1/p'
}

fetches() { # ADMIN_PORT [OUTCOME]
  curl -fsS --max-time 2 "http://127.0.0.1:$1/metrics" |
    "$REPORT_BIN" metric-sum tokenproxy_token_fetches_total ${2:+"outcome=$2"}
}

# cpu_limit NAME PID...: puts the processes (all their threads) into a new cgroup whose CPU
# quota is LIMIT_QUOTA_US per LIMIT_PERIOD_US; cgroup v2 or the v1 cpu controller. Fails (status
# 1, with a reason on stderr) where neither can be written, without root for one.
cpu_limit() {
  local name=$1 dir pid
  shift
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null ||
      echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null ||
      { log "cannot enable the cpu controller in /sys/fs/cgroup"; return 1; }
    dir=/sys/fs/cgroup/tokenproxy-bench-$$-$name
    mkdir "$dir" 2>/dev/null || { log "cannot create $dir"; return 1; }
    CGROUPS+=("$dir")
    echo "$LIMIT_QUOTA_US $LIMIT_PERIOD_US" >"$dir/cpu.max" || return 1
  elif [[ -w /sys/fs/cgroup/cpu ]]; then
    dir=/sys/fs/cgroup/cpu/tokenproxy-bench-$$-$name
    mkdir "$dir" 2>/dev/null || { log "cannot create $dir"; return 1; }
    CGROUPS+=("$dir")
    echo "$LIMIT_PERIOD_US" >"$dir/cpu.cfs_period_us" && echo "$LIMIT_QUOTA_US" >"$dir/cpu.cfs_quota_us" || return 1
  else
    log "no writable cgroup cpu controller under /sys/fs/cgroup"
    return 1
  fi
  for pid in "$@"; do echo "$pid" >"$dir/cgroup.procs" || return 1; done
}

# ---------------------------------------------------------------------------------------------
# Set-up

for p in "$P_UPSTREAM" "$P_NGINX" "$P_BARE" "$P_ISSUER" "$P_ISSUER_SHORT" "$P_ADMIN" \
  "$P_ADMIN_REFRESH" "$P_REFRESH" "$P_ADMIN_PINGORA" "$P_PINGORA" "$P_UPSTREAM_TLS" "$P_UPSTREAM_H2" \
  "$P_NGINX_TLS" "$P_ADMIN_TLS" "$P_HTTPS" "$P_H2" $(seq "$P_ROUTE0" $((P_ROUTE0 + ROUTES - 1))); do
  port_free "$p" || die "port $p on 127.0.0.1 is taken; set BENCH_PORT_BASE to move the bench's ports"
done

# The upstream shares the load generator's core, so that the proxy's core does nothing but
# proxy; the direct row shows how far that core pair goes without a proxy.
mkdir -p "$WORK/upstream/www/body"
head -c 4096 /dev/zero | tr '\0' 'a' >"$WORK/upstream/www/body/4k"
head -c 1048576 /dev/zero | tr '\0' 'b' >"$WORK/upstream/www/body/1m"
chmod -R a+rX "$WORK/upstream"
# A CA of the bench's own and the upstream's certificate for localhost (P-256, as is common).
TLS=$WORK/upstream/tls
mkdir -p "$TLS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=tokenproxy bench CA" \
  -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null || die "openssl could not make the bench CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
  -keyout "$TLS/upstream.key" -out "$TLS/upstream.csr" 2>/dev/null || die "openssl could not make a key"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$TLS/ext.cnf"
openssl x509 -req -in "$TLS/upstream.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial -days 2 \
  -extfile "$TLS/ext.cnf" -out "$TLS/upstream.pem" 2>/dev/null || die "openssl could not sign the certificate"
chmod -R a+rX "$TLS"
start_nginx upstream "$LOAD_CPU" "$BENCH/nginx-upstream.conf.in" PORT="$P_UPSTREAM" SMALL_BODY="$SMALL_BODY" \
  TLS_PORT="$P_UPSTREAM_TLS" H2_PORT="$P_UPSTREAM_H2"
UPSTREAM_PID=$STARTED_PID
wait_http "http://127.0.0.1:$P_UPSTREAM/" 10 upstream

# Issuers are the outside world too: they run beside the load generator.
start issuer "$LOAD_CPU" "$TP" demo issuer --listen "127.0.0.1:$P_ISSUER" --lifetime 1h
start issuer-short "$LOAD_CPU" "$TP" demo issuer --listen "127.0.0.1:$P_ISSUER_SHORT" --lifetime "${REFRESH_LIFETIME}s"
wait_http "http://127.0.0.1:$P_ISSUER/healthz" 10 issuer
wait_http "http://127.0.0.1:$P_ISSUER_SHORT/healthz" 10 issuer-short

# One real token, for the rows that inject a static one, so that every row forwards the same size.
TOKEN=$(curl -fsS -X POST -H 'content-type: application/json' \
  --data '{"grant_type":"client_credentials","client_id":"demo-client","client_secret":"demo-secret","audience":"https://api.example/static"}' \
  "http://127.0.0.1:$P_ISSUER/oauth/token" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[[ -n $TOKEN ]] || die "the demo issuer gave no token"

start_nginx nginx "$PROXY_CPU" "$BENCH/nginx-proxy.conf.in" PORT="$P_NGINX" UPSTREAM_PORT="$P_UPSTREAM" TOKEN="$TOKEN" \
  TLS_PORT="$P_NGINX_TLS" UPSTREAM_TLS_PORT="$P_UPSTREAM_TLS" CA="$TLS/ca.pem"
NGINX_PID=$STARTED_PID
start bare "$PROXY_CPU" "$BARE" --listen "127.0.0.1:$P_BARE" --upstream "127.0.0.1:$P_UPSTREAM" \
  --threads "$THREADS" --authorization "Bearer $TOKEN"
BARE_PID=$STARTED_PID

# tokenproxy with 50 routes, each with its own audience (50 tokens to fetch and keep).
tp_config() { # FILE ADMIN_PORT ISSUER_PORT ROUTES FIRST_PORT [TOP-LEVEL-LINE]
  {
    printf 'admin: { listen: 127.0.0.1:%s }\nthreads: %s\nlog: { level: warn }\n' "$2" "$THREADS"
    [[ -z ${6:-} ]] || printf '%s\n' "$6"
    printf 'providers:\n  demo:\n    token_url: http://127.0.0.1:%s/oauth/token\n' "$3"
    printf '    client_id: demo-client\n    client_secret: demo-secret\n    body: json\n'
    printf 'routes:\n'
    local i
    for ((i = 0; i < $4; i++)); do
      printf '  - name: r%d\n    listen: 127.0.0.1:%d\n    upstream: http://127.0.0.1:%d\n' "$i" $(($5 + i)) "$P_UPSTREAM"
      printf '    token: { provider: demo, audience: "https://api.example/r%d" }\n' "$i"
    done
  } >"$1"
}
tp_config "$WORK/tokenproxy.yaml" "$P_ADMIN" "$P_ISSUER" "$ROUTES" "$P_ROUTE0"
start tokenproxy "$PROXY_CPU" "$TP" run --config "$WORK/tokenproxy.yaml"
TP_PID=$STARTED_PID
# The same proxy with the lean path off: every request through pingora's general proxy.
tp_config "$WORK/tokenproxy-pingora.yaml" "$P_ADMIN_PINGORA" "$P_ISSUER" 1 "$P_PINGORA" "lean_path: false"
start tokenproxy-pingora "$PROXY_CPU" "$TP" run --config "$WORK/tokenproxy-pingora.yaml"
TPP_PID=$STARTED_PID
# The https rows' tokenproxy: two routes with the defaults a user has (http2: auto), trusting
# the bench's CA by ca_file; the upstream's h2 listener is pingora's path.
{
  printf 'admin: { listen: 127.0.0.1:%s }\nthreads: %s\nlog: { level: warn }\n' "$P_ADMIN_TLS" "$THREADS"
  printf 'providers:\n  demo:\n    token_url: http://127.0.0.1:%s/oauth/token\n' "$P_ISSUER"
  printf '    client_id: demo-client\n    client_secret: demo-secret\n    body: json\n'
  printf 'routes:\n'
  printf '  - name: https\n    listen: 127.0.0.1:%s\n    upstream: https://localhost:%s\n    ca_file: %s\n' "$P_HTTPS" "$P_UPSTREAM_TLS" "$TLS/ca.pem"
  printf '    token: { provider: demo, audience: "https://api.example/https" }\n'
  printf '  - name: h2\n    listen: 127.0.0.1:%s\n    upstream: https://localhost:%s\n    ca_file: %s\n' "$P_H2" "$P_UPSTREAM_H2" "$TLS/ca.pem"
  printf '    token: { provider: demo, audience: "https://api.example/h2" }\n'
} >"$WORK/tokenproxy-tls.yaml"
start tokenproxy-tls "$PROXY_CPU" "$TP" run --config "$WORK/tokenproxy-tls.yaml"
TPT_PID=$STARTED_PID

wait_http "http://127.0.0.1:$P_NGINX/" 10 nginx
wait_http "http://127.0.0.1:$P_BARE/" 10 bare
wait_http "http://127.0.0.1:$P_ADMIN/readyz" 30 tokenproxy
wait_http "http://127.0.0.1:$P_ADMIN_PINGORA/readyz" 30 tokenproxy-pingora
wait_http "http://127.0.0.1:$P_ADMIN_TLS/readyz" 30 tokenproxy-tls

declare -A URL=(
  [direct]=http://127.0.0.1:$P_UPSTREAM
  [nginx]=http://127.0.0.1:$P_NGINX
  [tokenproxy]=http://127.0.0.1:$P_ROUTE0
  [bare-pingora]=http://127.0.0.1:$P_BARE
  [tokenproxy-refresh]=http://127.0.0.1:$P_REFRESH
  [tokenproxy-pingora]=http://127.0.0.1:$P_PINGORA
  [direct-https]=https://localhost:$P_UPSTREAM_TLS
  [nginx-https]=http://127.0.0.1:$P_NGINX_TLS
  [tokenproxy-https]=http://127.0.0.1:$P_HTTPS
  [tokenproxy-h2]=http://127.0.0.1:$P_H2
)
# The process whose CPU time and memory a row reports: the proxy, or the upstream for direct.
declare -A ROW_PID=([direct]=$UPSTREAM_PID [nginx]=$NGINX_PID [tokenproxy]=$TP_PID [bare-pingora]=$BARE_PID
  [tokenproxy-pingora]=$TPP_PID [direct-https]=$UPSTREAM_PID [nginx-https]=$NGINX_PID
  [tokenproxy-https]=$TPT_PID [tokenproxy-h2]=$TPT_PID)

# Every proxy row must forward a bearer token before its figures mean anything.
for row in nginx tokenproxy bare-pingora tokenproxy-pingora nginx-https tokenproxy-https tokenproxy-h2; do
  seen=$(curl -fsS --max-time 2 "${URL[$row]}/bench/authorization" || true)
  [[ $seen == "Bearer ey"* ]] || die "$row forwarded Authorization \"${seen:0:40}\", not a bearer JWT"
done
# The https rows compare like with like only if each speaks the same TLS version to the upstream.
for row in nginx-https tokenproxy-https tokenproxy-h2; do
  seen=$(curl -fsS --max-time 2 "${URL[$row]}/bench/tls" || true)
  [[ $seen == TLSv1.3 ]] || die "$row spoke \"$seen\" to the upstream, not TLSv1.3"
done

sleep 2
TP_IDLE_KIB=$(vm_kib "$TP_PID" VmRSS)
BARE_IDLE_KIB=$(vm_kib "$BARE_PID" VmRSS)

# ---------------------------------------------------------------------------------------------
# Load

# The proxy's and the load's core from /proc/stat: "total idle" for each, then the steal of
# each (time the hypervisor ran something else while the core had work). Steal counts as busy.
cpu_ticks() { "$REPORT_BIN" cpu-ticks "$PROXY_CPU" "$LOAD_CPU" </proc/stat; }
# The process under test: a process and its children (nginx's worker).
with_children() { printf '%s\n' "$1" $(cat "/proc/$1/task/"*/children 2>/dev/null); }
# CPU time of a process (all threads) and its children, in clock ticks.
proc_ticks() {
  local pid files=()
  for pid in $(with_children "$1"); do files+=("/proc/$pid/stat"); done
  "$REPORT_BIN" proc-ticks "${files[@]}"
}
CLK_TCK=$(getconf CLK_TCK)
# How many times a process (all threads) and its children went to sleep with nothing to do.
proc_sleeps() {
  local pid files=()
  for pid in $(with_children "$1"); do files+=("/proc/$pid/task/"*/status); done
  "$REPORT_BIN" sleeps "${files[@]}"
}

busy() { "$REPORT_BIN" busy "$@"; } # TOTAL0 IDLE0 TOTAL1 IDLE1: % of the time not idle

RUNS=$WORK/runs.tsv
DISCARDED=$WORK/discarded.tsv
: >"$RUNS"
: >"$DISCARDED"

# measure SET ROW CONNS SECONDS PATH ROUND ATTEMPT: one wrk run; sets MEASURED (its runs.tsv
# line) and MEASURED_STEAL (the larger steal share of the two cores).
measure() {
  local set=$1 row=$2 conns=$3 secs=$4 path=$5 round=$6 attempt=$7
  local out=$WORK/wrk-$set-$row-r$round-a$attempt.txt pid=${ROW_PID[$row]} rss c0 c1 wpid t0 t1 s0 s1
  c0=$(cpu_ticks)
  t0=$(proc_ticks "$pid")
  s0=$(proc_sleeps "$pid")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s --latency \
    -s "$BENCH/report.lua" "${URL[$row]}$path" >"$out" 2>&1 &
  wpid=$!
  sleep "$((secs / 2)).$((secs % 2 * 5))" # half the run, SECONDS being whole
  rss=$(vm_kib "$pid" VmRSS)
  wait "$wpid" || die "wrk failed against $row (see $out)"
  c1=$(cpu_ticks)
  t1=$(proc_ticks "$pid")
  s1=$(proc_sleeps "$pid")
  MEASURED=$("$REPORT_BIN" run-line "$set" "$row" "$conns" "$round" "$out" "$CLK_TCK" "$rss" "$t0" "$t1" "$c0" "$c1" "$s0" "$s1") ||
    die "wrk printed no summary for $row (see $out)"
  MEASURED_STEAL=$("$REPORT_BIN" steal "$MEASURED")
  "$REPORT_BIN" progress "$MEASURED" "$PROXY_CPU" "$LOAD_CPU" >&2
}

# wrk_run SET ROW CONNS SECONDS PATH ROUND: one measured run, appended to runs.tsv. A run during
# which the hypervisor took more than MAX_STEAL % of either core measured the host, not the
# proxy: it is measured again, at most STEAL_RETRIES times, and the attempt kept is the first
# under the limit or else the one with the least steal. Which attempt is kept depends on steal
# alone, never on the figures; the others go to discarded.tsv, whose errors still count.
wrk_run() {
  local attempt kept="" kept_steal=""
  for ((attempt = 1; attempt <= STEAL_RETRIES + 1; attempt++)); do
    measure "$@" "$attempt"
    if [[ -z $kept ]] || "$REPORT_BIN" less "$MEASURED_STEAL" "$kept_steal"; then
      [[ -z $kept ]] || printf '%s\n' "$kept" >>"$DISCARDED"
      kept=$MEASURED kept_steal=$MEASURED_STEAL
    else
      printf '%s\n' "$MEASURED" >>"$DISCARDED"
    fi
    "$REPORT_BIN" less "$MAX_STEAL" "$kept_steal" || break
    ((attempt > STEAL_RETRIES)) || log "steal ${MEASURED_STEAL}% > ${MAX_STEAL}%: measuring $2 again"
  done
  printf '%s\n' "$kept" >>"$RUNS"
}

warm() { # ROW CONNS PATH
  taskset -c "$LOAD_CPU" wrk -t1 -c"$2" -d"${WARMUP}s" --timeout 5s "${URL[$1]}$3" >/dev/null 2>&1 ||
    die "warm-up against $1 failed"
}

# row_set SET CONNS PATH ROUNDS ROW...: warm each row, then the rounds, rows in turn in each.
row_set() {
  local set=$1 conns=$2 path=$3 rounds=$4 round row
  shift 4
  log "$set: ${*} at $conns connection(s), $rounds × ${DURATION} s each after a ${WARMUP} s warm-up"
  for row in "$@"; do warm "$row" "$conns" "$path"; done
  for ((round = 1; round <= rounds; round++)); do
    for row in "$@"; do wrk_run "$set" "$row" "$conns" "$DURATION" "$path" "$round"; done
  done
}

ROWS=(direct nginx tokenproxy bare-pingora tokenproxy-pingora)
HTTPS_ROWS=(direct-https nginx-https tokenproxy-https tokenproxy-h2)

# How the cores idle decides how long a wake-up takes. BENCH_HALT_POLL_NS changes it for this
# run (cleanup puts the machine's value back).
if [[ -n $HALT_POLL_NS ]]; then
  HALT_POLL_WAS=$(<"$HALT_POLL")
  echo "$HALT_POLL_NS" >"$HALT_POLL"
  log "guest halt polling: up to $HALT_POLL_NS ns for this run (the machine's value, $HALT_POLL_WAS, comes back at exit)"
fi
sysfs_word() { # FILE...: the first word of the first readable one, or '-'
  local f
  for f in "$@"; do
    if [[ -r $f ]] && awk 'NR == 1 && NF { print $1; found = 1 } END { exit !found }' "$f"; then return; fi
  done
  echo -
}
CPUIDLE="$(sysfs_word /sys/devices/system/cpu/cpuidle/current_driver) \
$(sysfs_word /sys/devices/system/cpu/cpuidle/current_governor /sys/devices/system/cpu/cpuidle/current_governor_ro) \
$(sysfs_word "$HALT_POLL")"

# Anything else running on the machine shows up in every figure: measure it before starting.
read -r -a b0 <<<"$(cpu_ticks)"
sleep 2
read -r -a b1 <<<"$(cpu_ticks)"
BG_P=$(busy "${b0[0]}" "${b0[1]}" "${b1[0]}" "${b1[1]}")
BG_L=$(busy "${b0[2]}" "${b0[3]}" "${b1[2]}" "${b1[3]}")
if ((BG_P > 10 || BG_L > 10)); then
  log "warning: before any load, cpu$PROXY_CPU was $BG_P% and cpu$LOAD_CPU $BG_L% busy: something else is running"
fi
# How long an idle core takes to wake up. A process that sleeps between requests pays it on the
# request that wakes it, and on a virtual machine whose idle cores halt it is the hypervisor's
# to decide; it sets the p99 of whichever row leaves its core idle (bench/README.md, "Limits").
# One timer thread per core, at real-time priority so that it measures the core and not the
# scheduler; --laptop keeps cyclictest from holding the cores out of their idle states.
wake_cpus=$PROXY_CPU,$LOAD_CPU wake_threads=2
[[ $PROXY_CPU == "$LOAD_CPU" ]] && wake_cpus=$PROXY_CPU wake_threads=1
if ! cyclictest --laptop -q -m -p 90 -t "$wake_threads" -a "$wake_cpus" -i 1000 -l "$WAKE_SAMPLES" -h 5000 \
  >"$WORK/wakeup.txt" 2>"$WORK/cyclictest.log"; then
  log "wake-up latency not measured (cyclictest failed, needs root: $WORK/cyclictest.log)"
  rm -f "$WORK/wakeup.txt"
fi

read -r -a LOAD0 <<<"$(cpu_ticks)"
ISSUER_LONG0=$(issuer_requests "$P_ISSUER")
reset_hwm "$TP_PID"
reset_hwm "$BARE_PID"
row_set small-64 "$CONNS" / "$MAIN_ROUNDS" "${ROWS[@]}"
TP_LOAD_HWM_KIB=$(vm_kib "$TP_PID" VmHWM)
BARE_LOAD_HWM_KIB=$(vm_kib "$BARE_PID" VmHWM)

# At 1 connection every hop between cores wakes an idle core, which costs tens of µs on a VM.
# With the upstream beside the proxy, direct and the proxy rows cross cores alike (wrk to the
# upstream or to the proxy, and back), so the difference is the proxy's own work.
taskset -a -p -c "$PROXY_CPU" "$UPSTREAM_PID" >/dev/null
row_set small-1 1 / "$ROUNDS" "${ROWS[@]}"
row_set https-1 1 / "$ROUNDS" direct-https nginx-https tokenproxy-https
taskset -a -p -c "$LOAD_CPU" "$UPSTREAM_PID" >/dev/null

# https:// upstreams at 64 connections, rows alternating as in set 1. The TLS counters of
# tokenproxy-tls are read around the set: what TLS cost in handshakes and connections.
tls_metric() { # ROUTE METRIC [L=V]
  curl -fsS --max-time 2 "http://127.0.0.1:$P_ADMIN_TLS/metrics" | grep "route=\"$1\"" |
    "$REPORT_BIN" metric-sum "$2" ${3:+"$3"}
}
tls_counters() { # PREFIX: one key=value line per counter of the https and h2 routes
  local route
  for route in https h2; do
    printf '%s_%s_opened_lean=%s\n' "$1" "$route" "$(tls_metric "$route" tokenproxy_upstream_connections_opened_total path=lean)"
    printf '%s_%s_opened_pingora=%s\n' "$1" "$route" "$(tls_metric "$route" tokenproxy_upstream_connections_opened_total path=pingora)"
    printf '%s_%s_full=%s\n' "$1" "$route" "$(tls_metric "$route" tokenproxy_upstream_tls_handshakes_total outcome=full)"
    printf '%s_%s_resumed=%s\n' "$1" "$route" "$(tls_metric "$route" tokenproxy_upstream_tls_handshakes_total outcome=resumed)"
    printf '%s_%s_failed=%s\n' "$1" "$route" "$(tls_metric "$route" tokenproxy_upstream_tls_handshakes_total outcome=failed)"
    printf '%s_%s_handoffs=%s\n' "$1" "$route" "$(tls_metric "$route" tokenproxy_pingora_handoffs_total)"
    printf '%s_%s_requests=%s\n' "$1" "$route" "$(tls_metric "$route" tokenproxy_requests_total)"
  done
}
tls_counters before >"$WORK/tls.txt"
row_set https-64 "$CONNS" / "$MAIN_ROUNDS" "${HTTPS_ROWS[@]}"
tls_counters after >>"$WORK/tls.txt"

reset_hwm "$TP_PID"
row_set 4k "$CONNS" /body/4k "$ROUNDS" direct nginx tokenproxy
row_set 1m "$CONNS" /body/1m "$ROUNDS" direct nginx tokenproxy
TP_BODY_HWM_KIB=$(vm_kib "$TP_PID" VmHWM)

# Refresh: a second tokenproxy, one route, tokens from an issuer whose tokens live 2 s, so the
# proxy refreshes at 80% (minus up to 5% jitter) of that. Alternated with the steady one above.
tp_config "$WORK/tokenproxy-refresh.yaml" "$P_ADMIN_REFRESH" "$P_ISSUER_SHORT" 1 "$P_REFRESH"
start tokenproxy-refresh "$PROXY_CPU" "$TP" run --config "$WORK/tokenproxy-refresh.yaml"
REFRESH_PID=$STARTED_PID
ROW_PID[tokenproxy-refresh]=$REFRESH_PID
wait_http "http://127.0.0.1:$P_ADMIN_REFRESH/readyz" 30 tokenproxy-refresh
log "refresh: tokenproxy with 1 h tokens vs tokenproxy-refresh with ${REFRESH_LIFETIME} s tokens, $CONNS connections"
warm tokenproxy "$CONNS" /
warm tokenproxy-refresh "$CONNS" /
# refresh.tsv: per round, the counters read around the runs: fetches of the steady tokenproxy
# (1 h tokens) around its run; fetches of tokenproxy-refresh (all, then the successful ones)
# and the 2 s issuer's token requests around its run; the start and end of that run (epoch
# seconds, retries for steal included).
: >"$WORK/refresh.tsv"
for ((round = 1; round <= REFRESH_ROUNDS; round++)); do
  steady_before=$(fetches "$P_ADMIN")
  wrk_run refresh tokenproxy "$CONNS" "$REFRESH_SECS" / "$round"
  steady_after=$(fetches "$P_ADMIN")
  before=$(fetches "$P_ADMIN_REFRESH")
  ok_before=$(fetches "$P_ADMIN_REFRESH" success)
  issuer_before=$(issuer_requests "$P_ISSUER_SHORT")
  t_start=$(date +%s.%N)
  wrk_run refresh tokenproxy-refresh "$CONNS" "$REFRESH_SECS" / "$round"
  t_end=$(date +%s.%N)
  issuer_after=$(issuer_requests "$P_ISSUER_SHORT")
  after=$(fetches "$P_ADMIN_REFRESH")
  ok_after=$(fetches "$P_ADMIN_REFRESH" success)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$steady_before" "$steady_after" "$before" "$after" \
    "$ok_before" "$ok_after" "$issuer_before" "$issuer_after" "$t_start" "$t_end" >>"$WORK/refresh.tsv"
done
stop "$REFRESH_PID"

# Last, because the quota stays until the processes exit: nginx and tokenproxy held to half a
# CPU each. Their core has room to spare, and so has the load core, so the proxy's own CPU per
# request sets its requests/s here, not wrk and the upstream.
LIMITED=0
if cpu_limit nginx "$NGINX_PID" $(cat "/proc/$NGINX_PID/task/"*/children 2>/dev/null) &&
  cpu_limit tokenproxy "$TP_PID"; then
  LIMITED=1
  row_set limited "$CONNS" / "$ROUNDS" nginx tokenproxy
else
  log "limited: skipped (no cgroup to set a CPU quota in; run as root on Linux)"
fi

read -r -a LOAD1 <<<"$(cpu_ticks)"
# Every proxy of the 1 h issuer (tokenproxy's 50 routes, tokenproxy-pingora) had its tokens
# before the load: whatever it answered since was fetched on some request's path.
ISSUER_LONG1=$(issuer_requests "$P_ISSUER")
TP_AFTER_KIB=$(vm_kib "$TP_PID" VmRSS)
TP_HANDOFFS=$(handoffs "$P_ADMIN")
TPP_HANDOFFS=$(handoffs "$P_ADMIN_PINGORA")

# ---------------------------------------------------------------------------------------------
# Report

REPORT=$WORK/report.txt
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- src examples Cargo.toml Cargo.lock 2>/dev/null) ]]; then
  commit="$commit + uncommitted changes"
fi
REPORT_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
KERNEL=$(uname -r)
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //' || true)
WRK_VERSION=$(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }' || true)
RUSTC_VERSION=$(rustc --version 2>/dev/null | awk '{ print $1, $2 }' || true)
# facts.txt: every raw input of the report besides runs.tsv, discarded.tsv and refresh.tsv.
{
  printf 'mode=%s\ndate=%s\ncommand=%s\ncpus=%s\ncpu_model=%s\nkernel=%s\ncommit=%s\nprofile=%s\n' "$MODE" \
    "$REPORT_DATE" "$COMMAND_LINE" "$CPUS" "$cpu_model" "$KERNEL" "$commit" "$PROFILE"
  printf 'nginx_version=%s\nwrk_version=%s\nrustc_version=%s\n' "$NGINX_VERSION" "$WRK_VERSION" "$RUSTC_VERSION"
  printf 'proxy_cpu=%s\nload_cpu=%s\nduration=%s\nwarmup=%s\nrounds=%s\nmain_rounds=%s\nrefresh_rounds=%s\n' \
    "$PROXY_CPU" "$LOAD_CPU" "$DURATION" "$WARMUP" "$ROUNDS" "$MAIN_ROUNDS" "$REFRESH_ROUNDS"
  printf 'refresh_secs=%s\nmax_steal=%s\nsteal_retries=%s\nconns=%s\nroutes=%s\nsmall_body=%s\n' \
    "$REFRESH_SECS" "$MAX_STEAL" "$STEAL_RETRIES" "$CONNS" "$ROUTES" "$SMALL_BODY"
  printf 'refresh_lifetime=%s\nlimit_quota_us=%s\nlimit_period_us=%s\nlimited=%s\n' \
    "$REFRESH_LIFETIME" "$LIMIT_QUOTA_US" "$LIMIT_PERIOD_US" "$LIMITED"
  printf 'idle_ticks_before=%s\nidle_ticks_after=%s\nload_ticks_before=%s\nload_ticks_after=%s\n' \
    "${b0[*]}" "${b1[*]}" "${LOAD0[*]}" "${LOAD1[*]}"
  printf 'issuer_long_before=%s\nissuer_long_after=%s\n' "$ISSUER_LONG0" "$ISSUER_LONG1"
  printf 'tp_handoffs=%s\ntpp_handoffs=%s\n' "$TP_HANDOFFS" "$TPP_HANDOFFS"
  printf 'cpuidle=%s\n' "$CPUIDLE"
  printf 'tp_idle_kib=%s\ntp_load_hwm_kib=%s\ntp_body_hwm_kib=%s\ntp_after_kib=%s\nbare_idle_kib=%s\nbare_load_hwm_kib=%s\n' \
    "$TP_IDLE_KIB" "$TP_LOAD_HWM_KIB" "$TP_BODY_HWM_KIB" "$TP_AFTER_KIB" "$BARE_IDLE_KIB" "$BARE_LOAD_HWM_KIB"
} >"$WORK/facts.txt"
"$REPORT_BIN" report "$WORK" >"$REPORT" || { KEEP=1; die "no report from bench-report (its inputs are kept in $WORK)"; }

cat "$REPORT"

if ((UPDATE_README)); then
  readme=$BENCH/README.md
  grep -q '^<!-- results:begin -->$' "$readme" || die "$readme has no <!-- results:begin --> marker"
  awk -v report="$REPORT" '
    /^<!-- results:begin -->$/ {
      print; print "```text"
      while ((getline line < report) > 0) print line
      print "```"; skip = 1; next
    }
    /^<!-- results:end -->$/ { skip = 0 }
    !skip' "$readme" >"$WORK/README.md"
  cp "$WORK/README.md" "$readme"
  log "report written to $readme"
fi
