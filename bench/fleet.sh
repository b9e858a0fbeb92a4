#!/usr/bin/env bash
# The fleet benchmark of the shared token cache: N tokenproxy replicas (one token key each, the
# same for all), the demo issuer with short-lived tokens, the demo API as the upstream, steady
# traffic through every replica for a few token lifetimes; once with each replica on its own and
# once sharing a real redis-server. Prints, per mode: the token requests the issuer answered at
# start-up and per token lifetime (counted at the issuer, its /stats), the Redis operations per
# replica per minute (the proxies' tokenproxy_shared_cache_requests_total), and the requests that
# failed (by the load generator, and the proxies' tokenproxy_token_unavailable_total).
#
# A separate command, never part of the tests; figures are not judged here.
#
# Usage: bench/fleet.sh [--quick] [--replicas N] [--lifetime SECONDS] [--lifetimes K]
#   --quick        5 replicas, 2 lifetimes (a smoke run of the script)
#   --replicas N   replicas (default 20)
#   --lifetime S   token lifetime in whole seconds (default 6)
#   --lifetimes K  measured window in token lifetimes (default 4)
# Environment: BENCH_PROFILE (release; debug builds faster), CARGO_TARGET_DIR,
#              BENCH_FLEET_PORT_BASE (19000: ports 19000-19099 and 19100-19199 on 127.0.0.1).
# Needs redis-server and cmake (scripts/setup.sh installs both), curl and python3. Traffic stays
# on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPLICAS=20 LIFETIME=6 LIFETIMES=4
while (($#)); do
  case $1 in
    --quick) REPLICAS=5 LIFETIMES=2 ;;
    --replicas) REPLICAS=$2; shift ;;
    --lifetime) LIFETIME=$2; shift ;;
    --lifetimes) LIFETIMES=$2; shift ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf 'fleet.sh: unknown argument %s (try --help)\n' "$1" >&2; exit 2 ;;
  esac
  shift
done
for v in REPLICAS LIFETIME LIFETIMES; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { printf 'fleet.sh: %s must be a positive whole number\n' "$v" >&2; exit 2; }
done

log() { printf 'fleet: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
for tool in redis-server cmake curl python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (bash scripts/setup.sh installs redis-server and cmake, which the build needs)"
done

PROFILE=${BENCH_PROFILE:-release}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TP=$TARGET/$PROFILE/tokenproxy
log "building tokenproxy ($PROFILE)"
if [[ $PROFILE == release ]]; then
  (cd "$ROOT" && cargo build --release --quiet)
else
  (cd "$ROOT" && cargo build --quiet)
fi

WORK=$(mktemp -d)
# Every process started, one pid a line: the modes run in subshells, so the list is a file.
touch "$WORK/pids"
stop_all() {
  local pid
  while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$WORK/pids"
  while read -r pid; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  done <"$WORK/pids"
  : >"$WORK/pids"
}
trap 'stop_all; rm -rf "$WORK"' EXIT

# Ports from BENCH_FLEET_PORT_BASE up, below the ephemeral range, so that no outgoing connection
# of another process takes one between the check and the bind: the local mode uses BASE.., the
# shared mode BASE+100.. (3 + 2 per replica each).
PORT_BASE=${BENCH_FLEET_PORT_BASE:-19000}
[[ $PORT_BASE =~ ^[1-9][0-9]*$ ]] || die "BENCH_FLEET_PORT_BASE must be a port number"
((REPLICAS <= 48)) || die "at most 48 replicas (each mode has 100 ports)"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports_from() { # FIRST COUNT
  local p
  for ((p = $1; p < $1 + $2; p++)); do
    port_free "$p" || die "port $p on 127.0.0.1 is taken; set BENCH_FLEET_PORT_BASE to move the ports"
    printf '%s ' "$p"
  done
}

start() { # NAME COMMAND...
  local name=$1
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  echo $! >>"$WORK/pids"
}

wait_http() { # URL SECONDS NAME
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || { tail -n 20 "$WORK/$3.log" >&2; die "$3 did not answer $1 within $2 s"; }
    sleep 0.1
  done
}

issuer_requests() { # PORT
  curl -fsS --max-time 2 "http://127.0.0.1:$1/stats" | sed -n 's/.*"token_requests":\([0-9]*\).*/\1/p'
}

sum_metric() { # ADMIN_PORT REGEX: sum of the samples whose series matches
  curl -fsS --max-time 2 "http://127.0.0.1:$1/metrics" |
    awk -v re="$2" '$0 !~ /^#/ && $1 ~ re { s += $NF } END { printf "%d", s }'
}

# run_mode MODE: prints one result line "MODE startup per_lifetime ops_per_replica_min failed requests"
run_mode() {
  local mode=$1 first=$2 ports issuer api redis="" i admin route cfg
  read -r -a ports <<<"$(ports_from "$first" $((3 + 2 * REPLICAS)))"
  ((${#ports[@]} == 3 + 2 * REPLICAS)) || die "$mode: not enough free ports from $first"
  issuer=${ports[0]} api=${ports[1]}
  start "$mode-issuer" "$TP" demo issuer --listen "127.0.0.1:$issuer" --lifetime "${LIFETIME}s"
  start "$mode-api" "$TP" demo api --listen "127.0.0.1:$api"
  wait_http "http://127.0.0.1:$issuer/healthz" 10 "$mode-issuer"
  wait_http "http://127.0.0.1:$api/healthz" 10 "$mode-api"
  local shared=""
  if [[ $mode == shared ]]; then
    redis=${ports[2]}
    start "$mode-redis" redis-server --port "$redis" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK"
    local deadline=$((SECONDS + 10))
    until (exec 3<>"/dev/tcp/127.0.0.1/$redis") 2>/dev/null; do
      ((SECONDS < deadline)) || die "redis-server did not listen on $redis"
      sleep 0.1
    done
    head -c 32 /dev/urandom | base64 >"$WORK/cache-key"
    shared="shared_cache: { redis: { url: \"redis://127.0.0.1:$redis/0\" }, encryption_key_file: \"$WORK/cache-key\" }"
  fi
  printf 'demo-secret' >"$WORK/client_secret"
  local admins=() routes=()
  for ((i = 0; i < REPLICAS; i++)); do
    admin=${ports[$((3 + 2 * i))]} route=${ports[$((4 + 2 * i))]}
    admins+=("$admin") routes+=("$route")
    cfg=$WORK/$mode-$i.yaml
    {
      printf 'admin: { listen: 127.0.0.1:%s }\nlog: { level: warn }\n' "$admin"
      [[ -z $shared ]] || printf '%s\n' "$shared"
      printf 'providers:\n  demo:\n    token_url: http://127.0.0.1:%s/oauth/token\n' "$issuer"
      printf '    client_id: demo-client\n    client_secret_file: %s\n' "$WORK/client_secret"
      printf 'routes:\n  - name: api\n    listen: 127.0.0.1:%s\n    upstream: http://127.0.0.1:%s\n' "$route" "$api"
      printf '    token: { provider: demo, audience: https://api.example/fleet }\n'
    } >"$cfg"
    start "$mode-tp$i" "$TP" run --config "$cfg"
  done
  for ((i = 0; i < REPLICAS; i++)); do
    wait_http "http://127.0.0.1:${admins[$i]}/readyz" 30 "$mode-tp$i"
  done
  local startup ops0=0 ops1=0 before after
  startup=$(issuer_requests "$issuer")
  if [[ -n $shared ]]; then
    for a in "${admins[@]}"; do ops0=$((ops0 + $(sum_metric "$a" '^tokenproxy_shared_cache_requests_total'))); done
  fi
  before=$(issuer_requests "$issuer")
  local window=$((LIFETIME * LIFETIMES)) load
  log "$mode: $REPLICAS replicas ready ($startup token requests at start-up); load for ${window} s"
  load=$(python3 - "$window" "${routes[@]}" <<'EOF'
import http.client, sys, time
window, ports = float(sys.argv[1]), sys.argv[2:]
conns = {p: http.client.HTTPConnection("127.0.0.1", int(p), timeout=5) for p in ports}
ok = failed = 0
end = time.monotonic() + window
n = 0
while time.monotonic() < end:
    for p in ports:
        n += 1
        try:
            c = conns[p]
            c.request("GET", f"/fleet/{n}")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                ok += 1
            else:
                failed += 1
        except Exception:
            failed += 1
            conns[p] = http.client.HTTPConnection("127.0.0.1", int(p), timeout=5)
    time.sleep(0.02)
print(ok, failed)
EOF
  )
  after=$(issuer_requests "$issuer")
  local unavailable=0
  for a in "${admins[@]}"; do
    unavailable=$((unavailable + $(sum_metric "$a" '^tokenproxy_token_unavailable_total')))
    [[ -z $shared ]] || ops1=$((ops1 + $(sum_metric "$a" '^tokenproxy_shared_cache_requests_total')))
  done
  awk -v m="$mode" -v s="$startup" -v d=$((after - before)) -v k="$LIFETIMES" -v o=$((ops1 - ops0)) \
    -v n="$REPLICAS" -v w="$window" -v load="$load" -v u="$unavailable" -v sh="$shared" 'BEGIN {
      split(load, l, " ")
      ops = sh == "" ? "-" : sprintf("%.1f", o / n / (w / 60))
      printf "%s %s %.2f %s %d %d %d\n", m, s, d / k, ops, l[2], u, l[1] + l[2]
    }'
  stop_all
}

LOCAL=$(run_mode local "$PORT_BASE")
SHARED=$(run_mode shared $((PORT_BASE + 100)))
printf '\nfleet benchmark: %s replicas, one token key, %s s tokens (refresh at 75-80%% of the lifetime), %s lifetimes measured\n' \
  "$REPLICAS" "$LIFETIME" "$LIFETIMES"
printf '%-8s %18s %26s %28s %16s %8s\n' mode "IdP reqs at start" "IdP reqs per lifetime" "Redis ops/replica/minute" "failed requests" requests
for row in "$LOCAL" "$SHARED"; do
  read -r m s d o f u r <<<"$row"
  printf '%-8s %18s %26s %28s %16s %8s\n' "$m" "$s" "$d" "$o" "$f (503s: $u)" "$r"
done
