#!/usr/bin/env bash
# callgate against the Node reference (the seed's handlers on socket.io 4.8) and a
# bare socketioxide relay, with one command:
#
#   bash bench/compare.sh            # the full comparison (about 15 minutes)
#   bash bench/compare.sh --quick    # a smoke run: a few dozen sockets, seconds per server
#
# It builds everything in release, generates a seed, then for each round starts
# each server fresh, drives it with callgate-loadgen and stops it, alternating the
# order (A B C, C B A, ...). A round with listen-queue overflows or a busy generator
# is discarded (and run once more). The last step prints the table of medians and
# ratios. Everything lands in --out (default target/bench-results/<time>).
# See bench/README.md for what each figure means.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench_dir")

usage() {
  cat <<'EOF'
usage: bash bench/compare.sh [--quick] [options]

  --quick                 smoke run: 20/40 sockets, 1-second phases, one round
  --profile release|debug build profile (default release; debug only for smoke runs)
  --callgate-bin PATH     use this callgate binary instead of building one
  --rounds N              rounds per server (default 5)
  --servers LIST          any of callgate,callgate-mongo,callgate-cluster,node,relay,
                          relay-cluster (default callgate,node,relay); callgate-mongo is
                          callgate on the MongoDB store: CALLGATE_BENCH_MONGODB_URI, else a
                          SecantusDB it starts (the one scripts/test installs);
                          callgate-cluster is two callgate nodes on a redis-server it
                          starts (callers on one node, callees on the other);
                          relay-cluster is the same with two bare relays on
                          socketioxide's Redis adapter (its floor). Ratios are to
                          callgate if it runs, else to relay, else to the first
  --connections A,B       idle socket stages (default 5000,10000)
  --rates LIST            fixed call rates, calls/s (default 1000,2000)
  --steps LIST            throughput steps for the knee
                          (default 1000,1500,2000,2500,3000,3500,4000,5000,6000,8000)
  --knee-p99-ms MS        set-up p99 that marks the knee (default 10)
  --pairs N               caller/callee pairs (default 2000)
  --phase-secs S          length of each fixed-rate and storm phase (default 4)
  --step-secs S           length of each throughput step (default 3)
  --storm-clients K       concurrent login loops (default 8; 0 for none)
  --storm-rate R          call rate before and during the storm (default 1000)
  --server-cpus LIST      CPUs for the server (taskset; default 1)
  --loadgen-cpus LIST     CPUs for the generator (default 0)
  --no-pin                do not pin server and generator to separate CPUs
  --nice N                scheduler priority of server and generator (default -10: ahead
                          of other work on a shared machine; needs CAP_SYS_NICE)
  --out DIR               where results go (default target/bench-results/<time>)
EOF
}

rounds=5
servers=callgate,node,relay
connections=5000,10000
rates=1000,2000
steps=1000,1500,2000,2500,3000,3500,4000,5000,6000,8000
knee_p99_ms=10
pairs=2000
phase_secs=4
step_secs=3
storm_clients=8
storm_rate=1000
warmup=(--warmup-rate 500 --warmup-secs 2)
timing=(--settle-secs 2 --drain-secs 2)
server_cpus=1
loadgen_cpus=0
pin=1
niceness=-10
out=""
base_port=4100

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick)
      rounds=1 connections=20,40 rates=50 steps=50,100 pairs=10 phase_secs=1 step_secs=1
      storm_clients=2 storm_rate=50
      warmup=(--warmup-rate 20 --warmup-secs 0.5)
      timing=(--settle-secs 0.5 --drain-secs 1)
      shift ;;
    --rounds) rounds=$2; shift 2 ;;
    --servers) servers=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --callgate-bin) callgate_bin=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --knee-p99-ms) knee_p99_ms=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --phase-secs) phase_secs=$2; shift 2 ;;
    --step-secs) step_secs=$2; shift 2 ;;
    --storm-clients) storm_clients=$2; shift 2 ;;
    --storm-rate) storm_rate=$2; shift 2 ;;
    --server-cpus) server_cpus=$2; shift 2 ;;
    --loadgen-cpus) loadgen_cpus=$2; shift 2 ;;
    --no-pin) pin=0; shift ;;
    --nice) niceness=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

target_dir=${CARGO_TARGET_DIR:-$root/target/bench}
out=${out:-$root/target/bench-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"

# 10 000s of sockets: the server and the generator each need a descriptor per socket.
ulimit -n 20000 2>/dev/null || echo "warning: cannot raise the descriptor limit to 20000 (now $(ulimit -n))" >&2

# --profile debug (CI's smoke) builds fast and measures nothing worth quoting.
profile_flag=(--release)
[[ ${profile:-release} == debug ]] && profile_flag=()
echo "==> building (${profile:-release}) into $target_dir"
if [[ -z ${callgate_bin:-} && ",$servers," == *,callgate* ]]; then
  CARGO_TARGET_DIR=$target_dir cargo build "${profile_flag[@]}" --locked --quiet --manifest-path "$root/Cargo.toml" --bin callgate
fi
CARGO_TARGET_DIR=$target_dir cargo build "${profile_flag[@]}" --locked --quiet --manifest-path "$bench_dir/loadgen/Cargo.toml"
if [[ ",$servers," == *,relay,* || ",$servers," == *,relay-cluster,* ]]; then
  CARGO_TARGET_DIR=$target_dir cargo build "${profile_flag[@]}" --locked --quiet --manifest-path "$bench_dir/bare-relay/Cargo.toml"
fi
if [[ ",$servers," == *,node,* ]]; then
  echo "==> npm ci (bench/node-reference)"
  (cd "$bench_dir/node-reference" && npm ci --no-audit --no-fund --loglevel=error)
fi
bin="$target_dir/${profile:-release}"
callgate_bin=${callgate_bin:-$bin/callgate}
loadgen="$bin/callgate-loadgen"

# Server and generator run on separate CPUs, so the generator never takes the
# server's CPU and each one's CPU time is its own.
if [[ $pin == 1 && $(nproc) -ge 2 ]]; then
  placement="server on CPU $server_cpus, generator on CPU $loadgen_cpus"
else
  server_cpus="" loadgen_cpus=""
  placement="not pinned: server and generator share every CPU"
fi

# Each runs in its own session. With autogroup scheduling (Linux's default)
# the CPU is shared fairly between sessions and a process's own nice value
# only counts inside its session: on a machine where other sessions build and
# test, the server would get a fraction of its CPU. Raising the session's
# (autogroup's) priority puts it ahead of them, while the server's own threads
# (workers, argon2, GC) still share the CPU among themselves as they would in
# production. A real-time class would not: an argon2 hash would hold the core.
launched_pid=""
launch() { # launch CPUS COMMAND...: in the background, in its own session; sets launched_pid
  local cpus=$1
  shift
  [[ -z $cpus ]] || set -- taskset -c "$cpus" "$@"
  # The new session sets its own autogroup priority, then becomes the command.
  SESSION_NICE=$niceness setsid bash -c 'echo "$SESSION_NICE" >/proc/self/autogroup 2>/dev/null; exec "$@"' launch "$@" &
  launched_pid=$!
}
if ! setsid bash -c "echo $niceness >/proc/self/autogroup" 2>/dev/null; then
  echo "warning: cannot raise the scheduler priority (autogroup nice $niceness); continuing without" >&2
  niceness=0
fi
placement+=", session nice $niceness"

users=$(tr ',' '\n' <<<"$connections" | sort -n | tail -1)
seed="$out/seed.json"
password="bench-password"
echo "==> seed: $users users sharing one argon2id hash"
"$loadgen" gen-seed --users "$users" --password "$password" --out "$seed"
CALLGATE_JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
export CALLGATE_JWT_SECRET

# callgate-mongo: a MongoDB for the directory. A real mongod in
# CALLGATE_BENCH_MONGODB_URI, else SecantusDB (installed by scripts/test under
# target/; GPL-2.0, a separate process) on a free port, in memory. It runs
# unpinned: on 2 cores there is no third CPU to give it. Its CPU is not in the
# server's figures but is in "other processes' CPU".
mongo_uri="" mongo_db="" mongo_python="" mongo_pid=""
if [[ ",$servers," == *,callgate-mongo,* ]]; then
  venv="$root/target/secantusdb-0.7.0b3"
  # A venv runs only where it was made: one in a target/ that moved is made again.
  if ! "$venv/bin/secantusd-py" --help >/dev/null 2>&1; then
    rm -rf "$venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install --quiet "SecantusDB==0.7.0b3" pymongo
  fi
  mongo_python="$venv/bin/python"
  if [[ -n ${CALLGATE_BENCH_MONGODB_URI:-} ]]; then
    mongo_uri=$CALLGATE_BENCH_MONGODB_URI
  else
    mongo_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Its own session at the same raised priority as the server, unpinned.
    launch "" "$venv/bin/secantusd-py" --host 127.0.0.1 --port "$mongo_port" --storage-path :memory: --standalone \
      >"$out/secantusdb.log" 2>&1
    mongo_pid=$launched_pid
    for _ in $(seq 200); do
      python3 -c "import socket; socket.create_connection(('127.0.0.1', $mongo_port), 0.2)" 2>/dev/null && break
      sleep 0.1
    done
    mongo_uri="mongodb://127.0.0.1:$mongo_port/?directConnection=true"
    echo "==> SecantusDB 0.7.0b3 on 127.0.0.1:$mongo_port for callgate-mongo"
  fi
fi

server_pid=""
peer_pid=""
redis_pid=""
redis_port=""
loadgen_pid=""
stop_pid() {
  local pid=$1
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop_server() {
  stop_pid "$server_pid"
  stop_pid "$peer_pid"
  stop_pid "$redis_pid"
  server_pid="" peer_pid="" redis_pid=""
}
cleanup() {
  [[ -z $loadgen_pid ]] || kill -TERM "$loadgen_pid" 2>/dev/null || true
  stop_server
  if [[ -n $mongo_pid ]]; then
    kill -TERM "$mongo_pid" 2>/dev/null || true
    wait "$mongo_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

port_of() {
  case "$1" in
    callgate) echo $((base_port + 1)) ;; node) echo $((base_port + 2)) ;; relay) echo $((base_port + 3)) ;;
    callgate-mongo) echo $((base_port + 4)) ;; callgate-cluster) echo $((base_port + 5)) ;;
    relay-cluster) echo $((base_port + 7)) ;;
  esac
}
peer_port=$((base_port + 6)) # node 2 of either cluster (one runs at a time)

wait_healthz() { # wait_healthz NAME PORT PID LOG
  for _ in $(seq 300); do
    if curl -sf "http://127.0.0.1:$2/healthz" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$3" 2>/dev/null; then
      echo "$1 exited during start-up:" >&2
      cat "$4" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$1 did not answer /healthz within 30 s" >&2
  exit 1
}

# callgate-cluster and relay-cluster: a fresh, empty redis-server (no
# persistence, as the README says a deployment needs) and two nodes on it, all
# on the server's CPUs: the cluster gets the same CPU as the single node it is
# compared with. cluster_node NAME N PORT REDIS_URL sets node_command to the
# command line of node N; start_cluster NAME LOG runs Redis and both nodes.
node_command=()
cluster_node() {
  local name=$1 node=$2 port=$3 url=$4
  case "$name" in
    callgate-cluster)
      node_command=(env RUST_LOG=warn CALLGATE_REDIS_URL="$url" \
        CALLGATE__CLUSTER__NODE_ID="bench-$node" CALLGATE__CLUSTER__KEY_PREFIX=bench \
        "$callgate_bin" --listen "127.0.0.1:$port" --seed "$seed" --policy "$bench_dir/policy.toml")
      ;;
    relay-cluster)
      node_command=("$bin/callgate-bare-relay" --listen "127.0.0.1:$port" --redis "$url")
      ;;
  esac
}
start_cluster() {
  local name=$1 log=$2
  redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  launch "$server_cpus" redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --daemonize no --maxclients 1000 >"$log.redis" 2>&1
  redis_pid=$launched_pid
  for _ in $(seq 100); do
    [[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
  done
  local node port pid
  for node in 1 2; do
    port=$(port_of "$name")
    [[ $node == 2 ]] && port=$peer_port
    cluster_node "$name" "$node" "$port" "redis://127.0.0.1:$redis_port"
    launch "$server_cpus" "${node_command[@]}" >"$log.node$node" 2>&1
    pid=$launched_pid
    if [[ $node == 1 ]]; then server_pid=$pid; else peer_pid=$pid; fi
    wait_healthz "$name node $node" "$port" "$pid" "$log.node$node"
  done
}

# Starts server $1 on its port, logging to $2; sets server_pid once /healthz answers.
start_server() {
  local name=$1 log=$2 port
  port=$(port_of "$name")
  if [[ $name == *-cluster ]]; then
    start_cluster "$name" "$log"
    return 0
  fi
  case "$name" in
    callgate)
      launch "$server_cpus" env RUST_LOG=warn "$callgate_bin" --listen "127.0.0.1:$port" \
        --seed "$seed" --policy "$bench_dir/policy.toml" >"$log" 2>&1
      ;;
    callgate-mongo)
      # The same binary and policy; users come from MongoDB (loaded per round
      # by run_round), not from --seed.
      launch "$server_cpus" env RUST_LOG=warn CALLGATE__STORE__KIND=mongodb \
        CALLGATE_MONGODB_URI="$mongo_uri" CALLGATE__STORE__MONGODB__DATABASE="$mongo_db" \
        CALLGATE__STORE__MONGODB__CREATE_INDEXES=false \
        "$callgate_bin" --listen "127.0.0.1:$port" --policy "$bench_dir/policy.toml" >"$log" 2>&1
      ;;
    node)
      launch "$server_cpus" node "$bench_dir/node-reference/server.js" --listen "127.0.0.1:$port" \
        --seed "$seed" >"$log" 2>&1
      ;;
    relay)
      launch "$server_cpus" "$bin/callgate-bare-relay" --listen "127.0.0.1:$port" >"$log" 2>&1
      ;;
    *) echo "unknown server: $name" >&2; exit 2 ;;
  esac
  server_pid=$launched_pid
  for _ in $(seq 300); do
    if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "$name exited during start-up:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$name did not answer /healthz within 30 s" >&2
  exit 1
}

# One round of server $1: start fresh, drive, stop. Returns 1 if the round is to be discarded.
run_round() {
  local name=$1 round=$2 attempt=$3 port storm=$storm_clients tag
  port=$(port_of "$name")
  [[ $name == relay* ]] && storm=0 # the relay has no login route
  tag="$name-r$round-a$attempt"
  local cluster_args=()
  if [[ $name == callgate-mongo ]]; then
    mongo_db="callgate_bench_r${round}a${attempt}"
    "$mongo_python" "$bench_dir/mongo-seed.py" load "$mongo_uri" "$mongo_db" "$seed"
  fi
  start_server "$name" "$out/$tag.server.log"
  if [[ $name == *-cluster ]]; then
    cluster_args=(--peer-addr "127.0.0.1:$peer_port" --peer-pid "$peer_pid" --redis-addr "127.0.0.1:$redis_port")
  fi
  if [[ $name == callgate-mongo ]]; then
    "$mongo_python" "$bench_dir/mongo-seed.py" counters "$mongo_uri" >"$out/$tag.mongo-before.json"
  fi
  launch "$loadgen_cpus" "$loadgen" run --addr "127.0.0.1:$port" --target "$name" --round "$round" \
    --seed "$seed" --password "$password" --server-pid "$server_pid" \
    --connections "$connections" --pairs "$pairs" --rates "$rates" --phase-secs "$phase_secs" \
    --steps "$steps" --step-secs "$step_secs" --knee-p99-ms "$knee_p99_ms" \
    --storm-clients "$storm" --storm-rate "$storm_rate" "${warmup[@]}" "${timing[@]}" \
    "${cluster_args[@]+"${cluster_args[@]}"}" --json >>"$results" 2>"$out/$tag.table"
  loadgen_pid=$launched_pid
  wait "$loadgen_pid"
  loadgen_pid=""
  if [[ $name == callgate-mongo ]]; then
    # Directory round trips of the round: MongoDB's own operation counters.
    "$mongo_python" "$bench_dir/mongo-seed.py" counters "$mongo_uri" >"$out/$tag.mongo-after.json"
    echo "MongoDB operations during the round: before $(cat "$out/$tag.mongo-before.json"), after $(cat "$out/$tag.mongo-after.json")" \
      >>"$out/$tag.table"
  fi
  stop_server
  cat "$out/$tag.table"
  tail -n 1 "$results" | grep -q '"discard":\[\]'
}

IFS=, read -r -a order <<<"$servers"
# Ratios are to callgate if it runs, else to the bare relay, else to the first server.
baseline=${order[0]}
[[ ",$servers," == *,relay,* ]] && baseline=relay
[[ ",$servers," == *,callgate,* ]] && baseline=callgate
echo "==> $rounds round(s) of: ${order[*]} ($placement); results in $out"
started=$SECONDS
for round in $(seq "$rounds"); do
  if ((round % 2 == 0)); then
    mapfile -t this_order < <(printf '%s\n' "${order[@]}" | tac)
  else
    this_order=("${order[@]}")
  fi
  for name in "${this_order[@]}"; do
    echo "==> round $round: $name ($((SECONDS - started)) s elapsed)"
    if ! run_round "$name" "$round" 1; then
      echo "==> round $round of $name discarded (see above); running it once more"
      run_round "$name" "$round" 2 || echo "==> the retry was discarded too"
    fi
  done
done

{
  echo "# callgate vs the Node reference vs a bare socketioxide relay"
  echo
  echo "$rounds round(s) per server, $placement, $(nproc) cores; sockets $connections; pairs $pairs;"
  echo "fixed rates $rates calls/s for ${phase_secs} s; steps $steps (${step_secs} s each);"
  echo "login storm: $storm_clients loops at $storm_rate calls/s. Medians over kept rounds;"
  echo "ratios pair rounds with the same number. Total time $((SECONDS - started)) s."
  echo
  "$loadgen" report --baseline "$baseline" "$results"
} | tee "$out/summary.md"
