#!/usr/bin/env bash
# Holds N authenticated sockets (default 19 000: the descriptor ceiling here is
# 20 000 per process) open against a fresh callgate for a while, then runs calls
# on them, and fails unless every socket opened, none was dropped and every
# call set up. Prints the generator's table and the verdict.
#
#   bash bench/hold.sh [--sockets N] [--hold-secs S] [--out DIR]
#
# The hold is the generator's settle time after the connection stage, twice
# (memory sample, then idle-CPU sample), so sockets stay idle for 2 x S
# seconds while Engine.IO pings them every 25 s.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench_dir="$root/bench"
sockets=19000
hold_secs=30
out=""
target_dir=${CARGO_TARGET_DIR:-$root/target}
while [[ $# -gt 0 ]]; do
  case $1 in
    --sockets) sockets=$2; shift 2 ;;
    --hold-secs) hold_secs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
out=${out:-$target_dir/bench-results/hold-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"

ulimit -n 20000 || { echo "cannot raise the descriptor limit to 20000" >&2; exit 1; }
echo "==> building (release) into $target_dir"
CARGO_TARGET_DIR=$target_dir cargo build --release --locked --quiet --manifest-path "$root/Cargo.toml" --bin callgate
CARGO_TARGET_DIR=$target_dir cargo build --release --locked --quiet --manifest-path "$bench_dir/loadgen/Cargo.toml"
bin="$target_dir/release"

seed="$out/seed.json"
"$bin/callgate-loadgen" gen-seed --users "$sockets" --password bench-password --out "$seed"
CALLGATE_JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
export CALLGATE_JWT_SECRET
port=4190

RUST_LOG=warn "$bin/callgate" --listen "127.0.0.1:$port" --seed "$seed" \
  --policy "$bench_dir/policy.toml" >"$out/server.log" 2>&1 &
server_pid=$!
trap 'kill -TERM $server_pid 2>/dev/null || true; wait $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "==> $sockets sockets, idle for 2 x $hold_secs s, then 500 calls/s for 5 s"
"$bin/callgate-loadgen" run --addr "127.0.0.1:$port" --seed "$seed" --server-pid "$server_pid" \
  --connections "$sockets" --settle-secs "$hold_secs" --pairs $((sockets / 2 < 500 ? sockets / 2 : 500)) --warmup-secs 0 \
  --rates 500 --phase-secs 5 --steps --storm-clients 0 --json >"$out/result.json"

kill -0 "$server_pid" || { echo "FAIL: the server exited" >&2; exit 1; }
python3 - "$out/result.json" "$sockets" <<'EOF'
import json, sys
report = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
want = int(sys.argv[2])
stage = report["connect"][-1]
calls = [p for p in report["phases"] if p["kind"] == "fixed"]
problems = []
if stage["opened"] != want:
    problems.append(f"opened {stage['opened']} of {want} sockets (failures: {stage['failed']})")
if report["dropped_sockets"]:
    problems.append(f"the server dropped {report['dropped_sockets']} sockets")
if not calls or any(p["failed"] or p["lost"] or not p["completed"] for p in calls):
    problems.append("calls on the held sockets failed or were lost")
rss = stage.get("rss_kib")
print(f"opened {stage['opened']}, dropped {report['dropped_sockets']}", end="")
print(f", server RSS {rss / 1024:.1f} MiB" if rss else "", end="; ")
print(f"calls completed {sum(p['completed'] for p in calls)}, failed {sum(p['failed'] for p in calls)}")
if problems:
    print("FAIL: " + "; ".join(problems))
    sys.exit(1)
print("PASS")
EOF
