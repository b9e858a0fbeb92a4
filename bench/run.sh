#!/usr/bin/env bash
# The tokenproxy benchmark: one machine, one run, the same load against
#
#   direct        wrk -> upstream nginx                      (the harness's ceiling)
#   nginx         wrk -> nginx proxy_set_header -> upstream  (what people use today)
#   tokenproxy    wrk -> tokenproxy (real token) -> upstream   (its lean HTTP/1.1 path)
#   bare-pingora  wrk -> examples/bare_pingora -> upstream   (pingora's general proxy, alone)
#   tokenproxy-pingora  as tokenproxy with lean_path: false  (every request through pingora)
#
# Scenarios: a small body at 64 connections and at 1 connection; 4 KiB and 1 MiB bodies; the
# same load while tokens refresh every ~1.6 s; and each proxy held to half a CPU by a cgroup
# quota, as a sidecar's CPU limit would. Prints a table, the proxy's memory, and PASS/FAIL per
# target (the exit status does not depend on the targets). See bench/README.md.
#
# Usage: bench/run.sh [--quick] [--update-readme] [--keep]
#   --quick          smoke mode: 1 s runs, one round, a few seconds of load in all
#   --update-readme  put the report into bench/README.md (full runs only)
#   --keep           keep the work directory (configs, logs, raw wrk output)
# Environment: BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1), BENCH_PORT_BASE (18080),
#              BENCH_MAX_STEAL (5: a run that lost more than 5% of a core to the hypervisor is
#              measured again), BENCH_STEAL_RETRIES (2; 0 with --quick), BENCH_PROFILE
#              (release; debug builds faster and is only good for checking the script, as CI
#              does with --quick), CARGO_TARGET_DIR.
#
# Installs nginx and wrk with apt when they are missing (needs root on Debian/Ubuntu). All
# traffic stays on 127.0.0.1.
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
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf 'run.sh: unknown argument %s (try --help)\n' "$arg" >&2; exit 2 ;;
  esac
done

# The 64-connection set decides most targets and this machine class is noisy: more rounds.
if [[ $MODE == full ]]; then
  DURATION=10 WARMUP=2 ROUNDS=2 MAIN_ROUNDS=5 REFRESH_ROUNDS=8 REFRESH_SECS=5
  STEAL_RETRIES=${BENCH_STEAL_RETRIES:-2}
else
  DURATION=1 WARMUP=1 ROUNDS=1 MAIN_ROUNDS=1 REFRESH_ROUNDS=1 REFRESH_SECS=3
  STEAL_RETRIES=${BENCH_STEAL_RETRIES:-0}
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

# ---------------------------------------------------------------------------------------------
# Processes: everything started here is stopped by PID on exit.

WORK=$(mktemp -d /tmp/tokenproxy-bench.XXXXXX)
chmod 755 "$WORK" # the nginx workers run as nobody and read www/ and their configs
PIDS=()

CGROUPS=()

cleanup() {
  local pid cg
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
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
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# Resets VmHWM to the current RSS (Linux >= 4.0), so that a peak belongs to one scenario.
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# Sum of tokenproxy_token_fetches_total (all outcomes, or the one given) on an admin port.
# handoffs ADMIN_PORT: requests the lean path left to pingora's proxy, all routes and reasons.
handoffs() {
  curl -fsS --max-time 2 "http://127.0.0.1:$1/metrics" |
    awk '/^tokenproxy_pingora_handoffs_total[{ ]/ { s += $NF } END { printf "%d", s }'
}

# issuer_requests PORT: token requests a demo issuer has answered so far (its /stats), the
# count from the outside, beside each proxy's own tokenproxy_token_fetches_total.
issuer_requests() {
  curl -fsS --max-time 2 "http://127.0.0.1:$1/stats" | sed -n 's/.*"token_requests":\([0-9]*\).*/\1/p'
}

fetches() { # ADMIN_PORT [OUTCOME]
  curl -fsS --max-time 2 "http://127.0.0.1:$1/metrics" |
    awk -v want="${2:-}" '/^tokenproxy_token_fetches_total[{ ]/ {
        if (want == "" || index($0, "outcome=\"" want "\"")) s += $NF
      } END { printf "%d", s }'
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
  "$P_ADMIN_REFRESH" "$P_REFRESH" "$P_ADMIN_PINGORA" "$P_PINGORA" $(seq "$P_ROUTE0" $((P_ROUTE0 + ROUTES - 1))); do
  port_free "$p" || die "port $p on 127.0.0.1 is taken; set BENCH_PORT_BASE to move the bench's ports"
done

# The upstream shares the load generator's core, so that the proxy's core does nothing but
# proxy; the direct row shows how far that core pair goes without a proxy.
mkdir -p "$WORK/upstream/www/body"
head -c 4096 /dev/zero | tr '\0' 'a' >"$WORK/upstream/www/body/4k"
head -c 1048576 /dev/zero | tr '\0' 'b' >"$WORK/upstream/www/body/1m"
chmod -R a+rX "$WORK/upstream"
start_nginx upstream "$LOAD_CPU" "$BENCH/nginx-upstream.conf.in" PORT="$P_UPSTREAM" SMALL_BODY="$SMALL_BODY"
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

start_nginx nginx "$PROXY_CPU" "$BENCH/nginx-proxy.conf.in" PORT="$P_NGINX" UPSTREAM_PORT="$P_UPSTREAM" TOKEN="$TOKEN"
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

wait_http "http://127.0.0.1:$P_NGINX/" 10 nginx
wait_http "http://127.0.0.1:$P_BARE/" 10 bare
wait_http "http://127.0.0.1:$P_ADMIN/readyz" 30 tokenproxy
wait_http "http://127.0.0.1:$P_ADMIN_PINGORA/readyz" 30 tokenproxy-pingora

declare -A URL=(
  [direct]=http://127.0.0.1:$P_UPSTREAM
  [nginx]=http://127.0.0.1:$P_NGINX
  [tokenproxy]=http://127.0.0.1:$P_ROUTE0
  [bare-pingora]=http://127.0.0.1:$P_BARE
  [tokenproxy-refresh]=http://127.0.0.1:$P_REFRESH
  [tokenproxy-pingora]=http://127.0.0.1:$P_PINGORA
)
# The process whose CPU time and memory a row reports: the proxy, or the upstream for direct.
declare -A ROW_PID=([direct]=$UPSTREAM_PID [nginx]=$NGINX_PID [tokenproxy]=$TP_PID [bare-pingora]=$BARE_PID
  [tokenproxy-pingora]=$TPP_PID)

# Every proxy row must forward a bearer token before its figures mean anything.
for row in nginx tokenproxy bare-pingora tokenproxy-pingora; do
  seen=$(curl -fsS --max-time 2 "${URL[$row]}/bench/authorization" || true)
  [[ $seen == "Bearer ey"* ]] || die "$row forwarded Authorization \"${seen:0:40}\", not a bearer JWT"
done

sleep 2
TP_IDLE_KIB=$(vm_kib "$TP_PID" VmRSS)
BARE_IDLE_KIB=$(vm_kib "$BARE_PID" VmRSS)

# ---------------------------------------------------------------------------------------------
# Load

# The proxy's and the load's core from /proc/stat: "total idle" for each, then the steal of
# each (time the hypervisor ran something else while the core had work). Steal counts as busy.
cpu_ticks() {
  awk -v a="cpu$PROXY_CPU" -v b="cpu$LOAD_CPU" '$1 == a || $1 == b {
      t = 0; for (i = 2; i <= 9; i++) t += $i; r[$1] = t " " ($5 + $6); s[$1] = $9
    } END { print r[a], r[b], s[a], s[b] }' /proc/stat
}
# CPU time of a process (all threads) and its children (nginx's worker), in clock ticks.
proc_ticks() {
  local pid=$1 child total=0
  for pid in "$pid" $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
    child=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }')
    total=$((total + ${child:-0}))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

busy() { awk -v t0="$1" -v i0="$2" -v t1="$3" -v i1="$4" 'BEGIN {
    dt = t1 - t0; b = 0; if (dt > 0) b = 100 * (dt - (i1 - i0)) / dt; printf "%d", b + 0.5 }'; }
# stolen TOTAL0 STEAL0 TOTAL1 STEAL1: the share of the time the hypervisor took, in percent.
stolen() { awk -v t0="$1" -v s0="$2" -v t1="$3" -v s1="$4" 'BEGIN {
    dt = t1 - t0; s = 0; if (dt > 0) s = 100 * (s1 - s0) / dt; printf "%.1f", s }'; }

RUNS=$WORK/runs.tsv
DISCARDED=$WORK/discarded.tsv
: >"$RUNS"
: >"$DISCARDED"

# measure SET ROW CONNS SECONDS PATH ROUND ATTEMPT: one wrk run; sets MEASURED (its runs.tsv
# line) and MEASURED_STEAL (the larger steal share of the two cores).
measure() {
  local set=$1 row=$2 conns=$3 secs=$4 path=$5 round=$6 attempt=$7
  local out=$WORK/wrk-$set-$row-r$round-a$attempt.txt pid=${ROW_PID[$row]} rss c0 c1 wpid t0 t1
  read -r -a c0 <<<"$(cpu_ticks)"
  t0=$(proc_ticks "$pid")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s --latency \
    -s "$BENCH/report.lua" "${URL[$row]}$path" >"$out" 2>&1 &
  wpid=$!
  sleep "$(awk -v s="$secs" 'BEGIN { print s / 2 }')"
  rss=$(vm_kib "$pid" VmRSS)
  wait "$wpid" || die "wrk failed against $row (see $out)"
  read -r -a c1 <<<"$(cpu_ticks)"
  t1=$(proc_ticks "$pid")
  local line
  line=$(sed -n 's/^BENCH //p' "$out")
  [[ -n $line ]] || die "wrk printed no summary for $row (see $out)"
  local requests duration_us bytes p50_us p99_us max_us err_status err_connect err_read err_write err_timeout
  eval "local $line" # the report.lua line is key=integer pairs
  local errors=$((err_status + err_connect + err_read + err_write + err_timeout))
  local cpu_p cpu_l st_p st_l proc_us=$(((t1 - t0) * 1000000 / CLK_TCK))
  cpu_p=$(busy "${c0[0]}" "${c0[1]}" "${c1[0]}" "${c1[1]}")
  cpu_l=$(busy "${c0[2]}" "${c0[3]}" "${c1[2]}" "${c1[3]}")
  st_p=$(stolen "${c0[0]}" "${c0[4]}" "${c1[0]}" "${c1[4]}")
  st_l=$(stolen "${c0[2]}" "${c0[5]}" "${c1[2]}" "${c1[5]}")
  MEASURED=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$set" "$row" "$conns" "$round" \
    "$requests" "$duration_us" "$bytes" "$p50_us" "$p99_us" "$max_us" "$errors" "$cpu_p" "$cpu_l" "$rss" \
    "$proc_us" "$st_p" "$st_l")
  MEASURED_STEAL=$(awk -v a="$st_p" -v b="$st_l" 'BEGIN { print (a > b ? a : b) }')
  printf '    %-8s round %s  %-19s %7.0f req/s  p50 %6s µs  p99 %6s µs  errors %s  %5.1f µs cpu/req  cpu%s %3s%%  cpu%s %3s%%  steal %s/%s%%\n' \
    "$set" "$round" "$row" "$(awk -v r="$requests" -v d="$duration_us" 'BEGIN { print r * 1e6 / d }')" \
    "$p50_us" "$p99_us" "$errors" "$(awk -v u="$proc_us" -v r="$requests" 'BEGIN { print r ? u / r : 0 }')" \
    "$PROXY_CPU" "$cpu_p" "$LOAD_CPU" "$cpu_l" "$st_p" "$st_l" >&2
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
    if [[ -z $kept ]] || awk -v a="$MEASURED_STEAL" -v b="$kept_steal" 'BEGIN { exit !(a < b) }'; then
      [[ -z $kept ]] || printf '%s\n' "$kept" >>"$DISCARDED"
      kept=$MEASURED kept_steal=$MEASURED_STEAL
    else
      printf '%s\n' "$MEASURED" >>"$DISCARDED"
    fi
    awk -v s="$kept_steal" -v m="$MAX_STEAL" 'BEGIN { exit !(s > m) }' || break
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

# Anything else running on the machine shows up in every figure: measure it before starting.
read -r -a b0 <<<"$(cpu_ticks)"
sleep 2
read -r -a b1 <<<"$(cpu_ticks)"
BG_P=$(busy "${b0[0]}" "${b0[1]}" "${b1[0]}" "${b1[1]}")
BG_L=$(busy "${b0[2]}" "${b0[3]}" "${b1[2]}" "${b1[3]}")
if ((BG_P > 10 || BG_L > 10)); then
  log "warning: before any load, cpu$PROXY_CPU was $BG_P% and cpu$LOAD_CPU $BG_L% busy: something else is running"
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
taskset -a -p -c "$LOAD_CPU" "$UPSTREAM_PID" >/dev/null

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
REFRESH_FETCHES=0
REFRESH_FAILED=0
STEADY_FETCHES=0
REFRESH_ISSUED=0 # token requests the 2 s issuer answered during the refresh runs
REFRESH_ELAPSED=0 # seconds those runs took, attempts measured again for steal included
log "refresh: tokenproxy with 1 h tokens vs tokenproxy-refresh with ${REFRESH_LIFETIME} s tokens, $CONNS connections"
warm tokenproxy "$CONNS" /
warm tokenproxy-refresh "$CONNS" /
# refresh.tsv: the raw counters of each round, read before and after the runs.
: >"$WORK/refresh.tsv"
for ((round = 1; round <= REFRESH_ROUNDS; round++)); do
  before=$(fetches "$P_ADMIN")
  wrk_run refresh tokenproxy "$CONNS" "$REFRESH_SECS" / "$round"
  steady_after=$(fetches "$P_ADMIN")
  STEADY_FETCHES=$((STEADY_FETCHES + steady_after - before))
  steady_before=$before
  before=$(fetches "$P_ADMIN_REFRESH")
  ok_before=$(fetches "$P_ADMIN_REFRESH" success)
  issuer_before=$(issuer_requests "$P_ISSUER_SHORT")
  t_start=$(date +%s.%N)
  wrk_run refresh tokenproxy-refresh "$CONNS" "$REFRESH_SECS" / "$round"
  t_end=$(date +%s.%N)
  REFRESH_ELAPSED=$(awk -v e="$REFRESH_ELAPSED" -v a="$t_start" -v b="$t_end" 'BEGIN { printf "%.1f", e + b - a }')
  issuer_after=$(issuer_requests "$P_ISSUER_SHORT")
  REFRESH_ISSUED=$((REFRESH_ISSUED + issuer_after - issuer_before))
  after=$(fetches "$P_ADMIN_REFRESH")
  ok_after=$(fetches "$P_ADMIN_REFRESH" success)
  all=$((after - before))
  REFRESH_FETCHES=$((REFRESH_FETCHES + all))
  REFRESH_FAILED=$((REFRESH_FAILED + all - (ok_after - ok_before)))
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
LONG_ISSUED=$((ISSUER_LONG1 - ISSUER_LONG0))
LOAD_REQUESTS=$(awk -F'\t' '$2 == "tokenproxy" || $2 == "tokenproxy-pingora" { s += $5 } END { printf "%d", s }' "$RUNS")
STEAL_P=$(stolen "${LOAD0[0]}" "${LOAD0[4]}" "${LOAD1[0]}" "${LOAD1[4]}")
STEAL_L=$(stolen "${LOAD0[2]}" "${LOAD0[5]}" "${LOAD1[2]}" "${LOAD1[5]}")
TP_AFTER_KIB=$(vm_kib "$TP_PID" VmRSS)
TP_HANDOFFS=$(handoffs "$P_ADMIN")
TPP_HANDOFFS=$(handoffs "$P_ADMIN_PINGORA")

# ---------------------------------------------------------------------------------------------
# Report

# The median of space-separated numbers, for the awk programs below (mawk has no asort:
# insertion sort, a few values).
AWK_MEDIAN='function median(list,    v, n, i, j, t) {
  n = split(list, v, " ")
  for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
  return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
'

# Per set and row: requests/s over all rounds, median p50/p99, max of max, summed errors, MiB/s,
# mean busy shares, the rounds' requests/s, the largest mid-run RSS, and mean steal shares.
awk -F'\t' "$AWK_MEDIAN"'
  {
    k = $1 SUBSEP $2
    if (!(k in req)) order[++n] = k
    req[k] += $5; dur[k] += $6; bytes[k] += $7; p50[k] = p50[k] " " $8; p99[k] = p99[k] " " $9
    if ($10 > mx[k]) mx[k] = $10
    err[k] += $11; cp[k] += $12; cl[k] += $13; runs[k]++
    if ($14 > rss[k]) rss[k] = $14
    pus[k] += $15; stp[k] += $16; stl[k] += $17
    r = sprintf("%.0f", $5 * 1e6 / $6)
    if (runs[k] == 1) each[k] = r; else each[k] = each[k] " " r
  } END {
    for (i = 1; i <= n; i++) {
      k = order[i]; split(k, p, SUBSEP)
      printf "%s\t%s\t%.0f\t%.0f\t%.0f\t%d\t%d\t%.1f\t%.0f\t%.0f\t%s\t%d\t%d\t%.1f\t%.0f\t%.1f\t%.1f\n", p[1], p[2],
        req[k] * 1e6 / dur[k], median(p50[k]), median(p99[k]), mx[k], err[k],
        bytes[k] * 1e6 / dur[k] / 1048576, cp[k] / runs[k], cl[k] / runs[k], each[k], rss[k], req[k],
        pus[k] / req[k], 100 * pus[k] / dur[k], stp[k] / runs[k], stl[k] / runs[k]
    }
  }' "$RUNS" >"$WORK/agg.tsv"

# get SET ROW FIELD
get() {
  awk -F'\t' -v s="$1" -v r="$2" -v f="$3" 'BEGIN {
      split("set row rps p50 p99 max errors mibs cpu_p cpu_l each rss requests us_req proc_pct st_p st_l", names, " ")
      for (i in names) col[names[i]] = i
    } $1 == s && $2 == r { print $col[f]; found = 1 } END { if (!found) print 0 }' "$WORK/agg.tsv"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { r = 0; if (b > 0) r = a / b; printf "%.2f", r }'; }
# paired SET ROW_A ROW_B: A's p99 over B's in each round (the two runs next to each other in
# time), then "MEDIAN RATIO1 RATIO2 ...". The host's speed drifts between rounds (see the req/s
# per round); a ratio of neighbours cancels most of that, where a ratio of two medians does not.
paired() {
  awk -F'\t' -v s="$1" -v a="$2" -v b="$3" "$AWK_MEDIAN"'
    $1 == s && $2 == a { pa[$4] = $9 } $1 == s && $2 == b { pb[$4] = $9 }
    END {
      for (r = 1; r in pa; r++) if (r in pb && pb[r] > 0) list = list sprintf(" %.2f", pa[r] / pb[r])
      if (list == "") { print "0"; exit }
      printf "%.2f%s\n", median(list), list
    }' "$RUNS"
}

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
  printf 'tp_idle_kib=%s\ntp_load_hwm_kib=%s\ntp_body_hwm_kib=%s\ntp_after_kib=%s\nbare_idle_kib=%s\nbare_load_hwm_kib=%s\n' \
    "$TP_IDLE_KIB" "$TP_LOAD_HWM_KIB" "$TP_BODY_HWM_KIB" "$TP_AFTER_KIB" "$BARE_IDLE_KIB" "$BARE_LOAD_HWM_KIB"
} >"$WORK/facts.txt"
{
  printf 'tokenproxy bench, %s mode, %s\n' "$MODE" "$REPORT_DATE"
  printf 'command:   %s\n' "$COMMAND_LINE"
  printf 'machine:   %s cores, %s, Linux %s\n' "$CPUS" "${cpu_model:-unknown CPU}" "$KERNEL"
  [[ $PROFILE == release ]] || commit="$commit ($PROFILE build: figures not comparable)"
  printf 'software:  tokenproxy %s; %s; %s; %s\n' "$commit" "$NGINX_VERSION" "$WRK_VERSION" "$RUSTC_VERSION"
  printf 'placement: proxy under test on cpu %s; wrk, upstream nginx and token issuers on cpu %s,\n' "$PROXY_CPU" "$LOAD_CPU"
  printf '           except the 1-connection set, where the upstream runs beside the proxy on cpu %s\n' "$PROXY_CPU"
  printf 'idle:      cpu%s %s%%, cpu%s %s%% busy in the 2 s before the load (all started, nothing loaded)\n' \
    "$PROXY_CPU" "$BG_P" "$LOAD_CPU" "$BG_L"
  printf 'load:      wrk -t1 --latency, %s s per run after a %s s warm-up per row, rows alternating,\n' "$DURATION" "$WARMUP"
  printf '           %s rounds in set 1, %s in the refresh set, %s in the others\n' "$MAIN_ROUNDS" "$REFRESH_ROUNDS" "$ROUNDS"
  printf 'columns:   req/s over all rounds; p50, p99 (median of the rounds) and max latency in µs;\n'
  printf '           errors summed; cpu/req: µs of CPU per request used by the process under test (the\n'
  printf '           proxy, or the upstream for direct); proc%%: its CPU as %% of one core; cpu%s%%/cpu%s%%: how\n' "$PROXY_CPU" "$LOAD_CPU"
  printf '           busy each core was, whoever used it (steal included); steal%%: the share of the run\n'
  printf '           the hypervisor held cpu%s/cpu%s back while it had work (mean of the rounds)\n' "$PROXY_CPU" "$LOAD_CPU"
  printf 'steal:     cpu%s %s%%, cpu%s %s%% over all the load; %s run(s) measured again for steal over %s%%\n' \
    "$PROXY_CPU" "$STEAL_P" "$LOAD_CPU" "$STEAL_L" "$(wc -l <"$DISCARDED")" "$MAX_STEAL"
  printf '           (at most %s more time(s) each), %s kept over it for want of a better attempt\n' "$STEAL_RETRIES" \
    "$(awk -F'\t' -v m="$MAX_STEAL" '$16 > m || $17 > m { n++ } END { printf "%d", n }' "$RUNS")"

  steal_cell() { printf '%s/%s' "$(get "$1" "$2" st_p)" "$(get "$1" "$2" st_l)"; }
  table() { # SET ROW...
    local set=$1 row
    shift
    printf '%-19s %7s %6s %6s %6s %6s %7s %6s %6s %6s %9s  %s\n' row req/s p50 p99 max errors cpu/req proc% \
      "cpu$PROXY_CPU%" "cpu$LOAD_CPU%" steal% "req/s per round"
    for row in "$@"; do
      printf '%-19s %7s %6s %6s %6s %6s %7s %6s %6s %6s %9s  %s\n' "$row" "$(get "$set" "$row" rps)" \
        "$(get "$set" "$row" p50)" "$(get "$set" "$row" p99)" "$(get "$set" "$row" max)" \
        "$(get "$set" "$row" errors)" "$(get "$set" "$row" us_req)" "$(get "$set" "$row" proc_pct)" \
        "$(get "$set" "$row" cpu_p)" "$(get "$set" "$row" cpu_l)" "$(steal_cell "$set" "$row")" \
        "$(get "$set" "$row" each)"
    done
  }

  printf '\n1. small body (%s bytes), %s connections\n' "$((${#SMALL_BODY} + 1))" "$CONNS"
  table small-64 "${ROWS[@]}"
  tp=$(get small-64 tokenproxy rps)
  printf 'ratios (req/s): tokenproxy/nginx %s  tokenproxy/bare-pingora %s  tokenproxy/direct %s\n' \
    "$(ratio "$tp" "$(get small-64 nginx rps)")" "$(ratio "$tp" "$(get small-64 bare-pingora rps)")" \
    "$(ratio "$tp" "$(get small-64 direct rps)")"
  tp_us=$(get small-64 tokenproxy us_req)
  printf 'ratios (cpu/req): tokenproxy/nginx %s  tokenproxy/bare-pingora %s\n' \
    "$(ratio "$tp_us" "$(get small-64 nginx us_req)")" "$(ratio "$tp_us" "$(get small-64 bare-pingora us_req)")"
  cap() { awk -v u="$1" 'BEGIN { c = 0; if (u > 0) c = 1e6 / u; printf "%.0f", c }'; }
  printf 'capacity (req/s per second of proxy CPU, 1e6 / cpu/req): tokenproxy %s  nginx %s  bare-pingora %s  tokenproxy-pingora %s\n' \
    "$(cap "$tp_us")" "$(cap "$(get small-64 nginx us_req)")" "$(cap "$(get small-64 bare-pingora us_req)")" \
    "$(cap "$(get small-64 tokenproxy-pingora us_req)")"
  printf 'handoffs to pingora (tokenproxy_pingora_handoffs_total, whole run): tokenproxy %s; tokenproxy-pingora %s (lean_path: false)\n' \
    "$TP_HANDOFFS" "$TPP_HANDOFFS"

  printf '\n2. small body, 1 connection\n'
  table small-1 "${ROWS[@]}"
  d50=$(get small-1 direct p50)
  printf 'p50 added over direct:'
  for row in nginx tokenproxy bare-pingora tokenproxy-pingora; do printf '  %s +%s µs' "$row" $(($(get small-1 "$row" p50) - d50)); done
  printf '\n'

  printf '\n3. response bodies, %s connections\n' "$CONNS"
  printf '%-19s %4s %7s %7s %6s %6s %6s %7s %6s %6s %6s %9s\n' row body MiB/s req/s p50 p99 errors cpu/req proc% \
    "cpu$PROXY_CPU%" "cpu$LOAD_CPU%" steal%
  for set in 4k 1m; do
    for row in direct nginx tokenproxy; do
      printf '%-19s %4s %7s %7s %6s %6s %6s %7s %6s %6s %6s %9s\n' "$row" "$set" "$(get "$set" "$row" mibs)" \
        "$(get "$set" "$row" rps)" "$(get "$set" "$row" p50)" "$(get "$set" "$row" p99)" \
        "$(get "$set" "$row" errors)" "$(get "$set" "$row" us_req)" "$(get "$set" "$row" proc_pct)" \
        "$(get "$set" "$row" cpu_p)" "$(get "$set" "$row" cpu_l)" "$(steal_cell "$set" "$row")"
    done
  done
  printf '(MiB/s counts response bytes as wrk read them, headers included)\n'

  printf '\n4. token refresh, %s connections, %s s per run\n' "$CONNS" "$REFRESH_SECS"
  table refresh tokenproxy tokenproxy-refresh
  printf 'tokenproxy (1 h tokens):         %s token fetches during %s requests\n' "$STEADY_FETCHES" "$(get refresh tokenproxy requests)"
  printf 'tokenproxy-refresh (%s s tokens): %s token fetches (%s failed) in %s s of its runs; ~%s expected from the schedule\n' \
    "$REFRESH_LIFETIME" "$REFRESH_FETCHES" "$REFRESH_FAILED" "$REFRESH_ELAPSED" \
    "$(awk -v s="$REFRESH_ELAPSED" -v l="$REFRESH_LIFETIME" 'BEGIN { printf "%.0f", s / (l * 0.775) }')"
  printf 'issuers (their /stats):          the 2 s issuer answered %s token requests in those %s s;\n' "$REFRESH_ISSUED" "$REFRESH_ELAPSED"
  printf '                                 the 1 h issuer answered %s during all the load (%s requests through tokenproxy rows)\n' \
    "$LONG_ISSUED" "$LOAD_REQUESTS"

  if ((LIMITED)); then
    printf '\n5. each proxy held to %s CPU (cgroup quota %s ms per %s ms, like limits.cpu: %sm), %s connections\n' \
      "$(awk -v q="$LIMIT_QUOTA_US" -v p="$LIMIT_PERIOD_US" 'BEGIN { print q / p }')" $((LIMIT_QUOTA_US / 1000)) \
      $((LIMIT_PERIOD_US / 1000)) $((LIMIT_QUOTA_US * 1000 / LIMIT_PERIOD_US)) "$CONNS"
    table limited nginx tokenproxy
    printf 'ratio (req/s): tokenproxy/nginx %s (latency here is mostly the quota: a throttled proxy waits for its next period)\n' \
      "$(ratio "$(get limited tokenproxy rps)" "$(get limited nginx rps)")"
  else
    printf '\n5. each proxy held to half a CPU: skipped (no writable cgroup cpu controller)\n'
  fi

  printf '\n6. memory (VmRSS; peaks are VmHWM, reset before the scenario where the kernel allows)\n'
  printf 'tokenproxy, %s routes: idle %s MiB; mid-run at %s conns %s MiB; peak %s MiB; peak with 4 KiB/1 MiB bodies %s MiB; idle after all load %s MiB\n' \
    "$ROUTES" "$(mib "$TP_IDLE_KIB")" "$CONNS" "$(mib "$(get small-64 tokenproxy rss)")" "$(mib "$TP_LOAD_HWM_KIB")" \
    "$(mib "$TP_BODY_HWM_KIB")" "$(mib "$TP_AFTER_KIB")"
  printf 'bare-pingora:          idle %s MiB; mid-run at %s conns %s MiB; peak %s MiB\n' \
    "$(mib "$BARE_IDLE_KIB")" "$CONNS" "$(mib "$(get small-64 bare-pingora rss)")" "$(mib "$BARE_LOAD_HWM_KIB")"

  printf '\ntargets (informational: the exit status does not depend on them)\n'
  check() { # DESCRIPTION VALUE CONDITION-ON-v SHOWN
    local verdict
    verdict=$(awk -v v="$2" "BEGIN { r = \"FAIL\"; if ($3) r = \"PASS\"; print r }")
    printf '%s  %-52s %s\n' "$verdict" "$1" "$4"
  }
  nginx_rps=$(get small-64 nginx rps)
  bare_rps=$(get small-64 bare-pingora rps)
  tp_p99=$(get small-64 tokenproxy p99)
  nginx_p99=$(get small-64 nginx p99)
  added=$(($(get small-1 tokenproxy p50) - d50))
  # Errors of every run of every row: a row with errors measured something other than the rest.
  all_errors=$(awk -F'\t' '{ s += $11 } END { printf "%d", s }' "$RUNS" "$DISCARDED")
  tp_errors=$(awk -F'\t' '$2 ~ /^tokenproxy/ { s += $11 } END { printf "%d", s }' "$RUNS" "$DISCARDED")
  steady_p99=$(get refresh tokenproxy p99)
  refresh_p99=$(get refresh tokenproxy-refresh p99)
  check "req/s within 5% of bare pingora (64 conns)" "$(ratio "$tp" "$bare_rps")" 'v >= 0.95' "$(ratio "$tp" "$bare_rps") × bare"
  check "req/s >= 1.1 × nginx (64 conns)" "$(ratio "$tp" "$nginx_rps")" 'v >= 1.1' "$(ratio "$tp" "$nginx_rps") × nginx"
  # Every proxy row repeats direct's work on the load core (wrk and the upstream) and adds its
  # own on the other, so no proxy row can beat direct: when direct itself is under 1.1 × nginx,
  # this target cannot pass here, however little CPU the proxy uses.
  direct_rps=$(get small-64 direct rps)
  if awk -v d="$direct_rps" -v n="$nginx_rps" 'BEGIN { exit !(d < 1.1 * n) }'; then
    printf '      out of reach on this machine: direct, the ceiling of every proxy row, was %s × nginx
' \
      "$(ratio "$direct_rps" "$nginx_rps")"
  fi
  if ((LIMITED)); then
    lim=$(ratio "$(get limited tokenproxy rps)" "$(get limited nginx rps)")
    check "req/s >= 1.1 × nginx, each held to half a CPU" "$lim" 'v >= 1.1' "$lim × nginx"
  fi
  nginx_us=$(get small-64 nginx us_req)
  check "capacity >= 1.1 × nginx (req/s per proxy CPU)" "$(ratio "$nginx_us" "$tp_us")" 'v >= 1.1' \
    "$(ratio "$nginx_us" "$tp_us") × nginx ($tp_us vs $nginx_us µs cpu/req)"
  read -r p99_vs_nginx p99_vs_nginx_rounds <<<"$(paired small-64 tokenproxy nginx)"
  check "p99 <= nginx p99 (64 conns, paired rounds)" "$p99_vs_nginx" 'v <= 1' \
    "$p99_vs_nginx × nginx (rounds:$p99_vs_nginx_rounds; medians $tp_p99 vs $nginx_p99 µs)"
  check "p50 added over direct <= 100 µs (1 conn)" "$added" 'v <= 100' "+$added µs"
  check "zero errors (every run of every row)" "$all_errors" 'v == 0' "$all_errors ($tp_errors in tokenproxy rows)"
  check "idle RSS <= 20 MiB with $ROUTES routes" "$TP_IDLE_KIB" 'v <= 20 * 1024' "$(mib "$TP_IDLE_KIB") MiB"
  check "RSS under load <= 64 MiB (peak, $CONNS conns)" "$TP_LOAD_HWM_KIB" 'v <= 64 * 1024' "$(mib "$TP_LOAD_HWM_KIB") MiB"
  read -r refresh_vs_steady refresh_rounds <<<"$(paired refresh tokenproxy-refresh tokenproxy)"
  check "p99 while refreshing within 10% of steady (paired)" "$refresh_vs_steady" 'v <= 1.10' \
    "$refresh_vs_steady × (rounds:$refresh_rounds; medians $refresh_p99 vs $steady_p99 µs)"
  # Counted at the issuers: a token request on the request path would show up in the 1 h issuer's
  # count (one per request) and push the 2 s one far past one per second.
  check "token requests follow refreshes, not requests" "$REFRESH_ISSUED" \
    "v >= 1 && v <= $REFRESH_ELAPSED && $LONG_ISSUED == 0" \
    "$REFRESH_ISSUED at the 2 s issuer, $LONG_ISSUED at the 1 h one"

  # A row whose load core was saturated measured the harness, not the proxy; a proxy core much
  # busier than the proxy itself was shared with something else.
  awk -F'\t' -v c="$LOAD_CPU" -v pc="$PROXY_CPU" '$2 != "direct" {
      if ($10 >= 97) printf "note: %s/%s: cpu%s (load) was %d%% busy: the row may be limited by wrk and the upstream\n", $1, $2, c, $10
      if ($1 != "small-1" && $9 - $15 - $16 > 15) printf "note: %s/%s: cpu%s was %d%% busy but the proxy used %d%%: something else ran there\n", $1, $2, pc, $9, $15
    }
    # One line per set for the rows that lost 3% or more of a core to the hypervisor.
    $16 >= 3 || $17 >= 3 {
      if (!($1 in stolen)) sets[++n] = $1
      stolen[$1] = stolen[$1] sprintf(" %s %.1f/%.1f", $2, $16, $17)
    }
    END {
      for (i = 1; i <= n; i++)
        printf "note: %s: steal of 3%% or more (cpu%s/cpu%s %%):%s; those rows measured the host too\n", sets[i], pc, c, stolen[sets[i]]
    }' "$WORK/agg.tsv"
} >"$REPORT"

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
