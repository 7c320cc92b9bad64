#!/usr/bin/env bash
# Runs every fuzz target for RUNS iterations (default 1 000 000), two at a
# time, and prints one summary line per target. See docs/fuzzing.md.
#
#   fuzz/run_all.sh [RUNS] [extra cargo-fuzz flags, e.g. --sanitizer none]
set -euo pipefail
cd "$(dirname "$0")"
RUNS="${1:-1000000}"
shift || true
export RUSTC_BOOTSTRAP=1
TARGETS=(token_verify client_ip event_payload login_body)
mkdir -p logs
cargo fuzz build "$@"
run() {
  local t="$1"; shift
  mkdir -p "corpus/$t" "artifacts/$t"
  local start end
  start=$(date +%s)
  # corpus/<t> first: libFuzzer writes new inputs there, never into seeds/.
  if cargo fuzz run "$@" "$t" "corpus/$t" "seeds/$t" -- \
      -runs="$RUNS" -print_final_stats=1 >"logs/$t.log" 2>&1; then
    status=ok
  else
    status="FAILED (see fuzz/logs/$t.log and fuzz/artifacts/$t/)"
  fi
  end=$(date +%s)
  echo "$t: $status, wall $((end - start)) s; $(grep -E '^#[0-9]+[[:space:]]+DONE' "logs/$t.log" | tail -n 1)"
}
for ((i = 0; i < ${#TARGETS[@]}; i += 2)); do
  run "${TARGETS[i]}" "$@" &
  if ((i + 1 < ${#TARGETS[@]})); then run "${TARGETS[i + 1]}" "$@" & fi
  wait
done
