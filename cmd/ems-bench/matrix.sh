#!/usr/bin/env bash
# The runs behind BENCHMARKS.md: each configuration three times,
# interleaved by round so that drift in the shared machine's load spreads
# across configurations. Run from the repository root; results go to
# ${OUT:-bench-runs}/ as JSON, then:  ems-bench summarise bench-runs/*.json
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-bench-runs}"
rounds="${ROUNDS:-3}"
mkdir -p "$out"
go build -o "$out/ems-bench" ./cmd/ems-bench
go build -o "$out/emsd" ./cmd/emsd
common=(--emsd "$out/emsd" --subs 1000000 --endpoints 10000 --seed-cache "${SEED_CACHE:-/tmp/ems-seed-cache}" --hook-listen 127.0.0.1:38417)
for round in $(seq 1 "$rounds"); do
  for sync in interval always; do
    # End to end, flat out: accepted events/s and the time until every
    # delivery has been read and acknowledged.
    "$out/ems-bench" "${common[@]}" --sync "$sync" --duration 8s --warmup 3s --drain-timeout 150s \
      --cpuprofile "$out/flat-$sync-$round.pprof" --mem-trace "$out/flat-$sync-$round.mem.csv" \
      --json "$out/flat-$sync-$round.json" > "$out/flat-$sync-$round.txt" 2>&1
    # Publish latency at 1,000 events/s for 60 s with delivery running (the
    # backlog is not waited for; the baseline's latency at the same rate
    # settles in 15 s).
    "$out/ems-bench" "${common[@]}" --sync "$sync" --rate 1000 --duration 60s --baseline-duration 15s --warmup 3s --drain-timeout 1s \
      --mem-trace "$out/rate1000-$sync-$round.mem.csv" \
      --json "$out/rate1000-$sync-$round.json" > "$out/rate1000-$sync-$round.txt" 2>&1
  done
done
"$out/ems-bench" summarise "$out"/*.json
