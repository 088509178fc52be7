#!/usr/bin/env bash
# What changing the loaded models costs the requests that go on: the default
# workload through `baton serve --model-control-mode explicit --load-model '*'`
# (`baton run --server`, 6 s), alternating runs without a change and with a
# reload of `text` (POST .../models/text/load, a new engine each time) one
# second after the last one ended, 8 in all. Prints each run's req/s, goodput,
# SLO attainment and p99, and the reloads' HTTP status and seconds.
#
#   bench/serve_reload.sh [--rounds N] [--baton PATH]
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="$root/build/ci/tools/baton/baton"
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
    --baton) B="${2:?--baton needs a path}"; shift 2 ;;
    *) echo "serve_reload.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
out="$(mktemp -d -t baton_serve_reload.XXXXXX)"
cd "$out"
$B serve --model-control-mode explicit --load-model '*' -q --grpc 127.0.0.1:18101 --http 127.0.0.1:18100 > srv.log 2>&1 &
S=$!
for i in $(seq 1 120); do grep -q "HTTP listening" srv.log && break; sleep 0.5; done
for r in $(seq 1 "$rounds"); do
  for mode in none reload; do
    if [ $mode = reload ]; then
      ( for k in $(seq 1 8); do sleep 1; curl -s -o /dev/null -w "%{http_code} %{time_total}\n" -XPOST localhost:18100/v2/repository/models/text/load; done ) > reload_$r.txt &
      L=$!
    fi
    $B run --server 127.0.0.1:18101 --duration 6 --no-baselines --json run_${mode}_$r.json > run_${mode}_$r.log 2>&1
    [ $mode = reload ] && wait $L
    python3 - "$mode" "$r" <<'PY'
import json, sys
mode, r = sys.argv[1], sys.argv[2]
j = json.load(open(f"run_{mode}_{r}.json"))
print("round %s %-6s %6.1f req/s, goodput %6.1f/s, SLO %5.1f %%, p99 %5.1f ms" % (
    r, mode, j["throughput_rps"], j["goodput_rps"], 100 * j["slo_attainment"], j["latency_ms"]["p99"]))
PY
    [ $mode = reload ] && echo "  reloads (status, s): $(tr '\n' ' ' < reload_$r.txt)"
  done
done
kill -TERM $S; wait $S
rm -rf "$out"
