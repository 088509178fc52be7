#!/usr/bin/env bash
# Reproduces the `baton run` benchmark tables of docs/benchmarks.md: runs
# `baton run CONFIG` N times (each invocation interleaves baton and the
# baselines on the same PUs) and prints, for every metric, the median, the
# minimum and the maximum over the invocations.
#
#   scripts/bench.sh [CONFIG] [--runs N] [--busy-threads K] [--memory] [--out DIR]
#                    [--baton PATH] [-- ARGS for baton run]
#
#   CONFIG          a run config; omitted or "default": the embedded default workload
#   --runs N        invocations (default 5)
#   --busy-threads K  keep K busy-looping background processes running during the
#                   runs (an edge box that also runs other software)
#   --memory        also measure peak RSS as separate processes, alternating:
#                   `baton run --no-baselines` and `baton run --no-baton --baselines ort_tuned`
#   --out DIR       keep the JSON reports here (default: a temporary folder)
#   --baton PATH    the binary (default: build/release, else build/ci)
#
# Metrics: throughput (baton and every baseline), baton's speed-up over the
# best baseline and over ort_tuned, goodput speed-up, SLO attainment and p99
# per model with an SLO (baton and the best baseline), per-model throughput
# ratio against ort_tuned, bound_ratio of every mode, bound violations, and
# with --memory the peak RSS of both processes and their ratio.
# Exit status: 0 done, 1 a run failed, 2 usage.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config=""
runs=5
busy=0
memory=0
out=""
baton=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="${2:?--runs needs a number}"; shift 2 ;;
    --busy-threads) busy="${2:?--busy-threads needs a number}"; shift 2 ;;
    --memory) memory=1; shift ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --baton) baton="${2:?--baton needs a path}"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) [ -z "$config" ] || { echo "bench.sh: one CONFIG only (got '$config' and '$1')" >&2; exit 2; }
       config="$1"; shift ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]{0,3}$ ]] || { echo "bench.sh: --runs must be 1..9999 (got '$runs')" >&2; exit 2; }
[[ "$busy" =~ ^[0-9]{1,3}$ ]] || { echo "bench.sh: --busy-threads must be 0..999 (got '$busy')" >&2; exit 2; }
[ "$config" = "default" ] && config=""
if [ -n "$config" ] && [ ! -f "$config" ]; then
  echo "bench.sh: config '$config' is not a file" >&2; exit 2
fi
if [ -z "$baton" ]; then
  for b in "$root/build/release/tools/baton/baton" "$root/build/ci/tools/baton/baton"; do
    [ -x "$b" ] && { baton="$b"; break; }
  done
fi
[ -x "${baton:-}" ] || { echo "bench.sh: no baton binary; build it (scripts/bootstrap.sh) or give --baton PATH" >&2; exit 2; }
command -v python3 >/dev/null || { echo "bench.sh: needs python3 (scripts/install_deps.sh installs it)" >&2; exit 2; }
if [ -z "$out" ]; then
  out="$(mktemp -d -t baton_bench.XXXXXX)"
fi
mkdir -p "$out"

busy_pids=()
stop_busy() { for p in "${busy_pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_busy EXIT
for ((k = 0; k < busy; k++)); do
  bash -c 'while :; do :; done' &
  busy_pids+=("$!")
done

cfg=()
[ -n "$config" ] && cfg=("$config")
echo "bench.sh: $runs runs of: $baton run ${cfg[*]:-(default)} ${extra[*]:-}; busy threads: $busy; reports in $out" >&2
for ((i = 1; i <= runs; i++)); do
  echo "bench.sh: run $i/$runs" >&2
  "$baton" run "${cfg[@]}" --quiet --json "$out/run_$i.json" "${extra[@]}" > "$out/run_$i.txt" 2>&1 ||
    { echo "bench.sh: run $i failed; see $out/run_$i.txt" >&2; cat "$out/run_$i.txt" >&2; exit 1; }
  if [ "$memory" = 1 ]; then
    # Separate processes, alternating which goes first.
    order=(baton tuned)
    [ $((i % 2)) = 0 ] && order=(tuned baton)
    for who in "${order[@]}"; do
      if [ "$who" = baton ]; then
        args=(--no-baselines)
      else
        args=(--no-baton --baselines ort_tuned)
      fi
      "$baton" run "${cfg[@]}" --quiet "${args[@]}" --json "$out/mem_${who}_$i.json" "${extra[@]}" \
        > "$out/mem_${who}_$i.txt" 2>&1 ||
        { echo "bench.sh: memory run ($who) $i failed; see $out/mem_${who}_$i.txt" >&2; exit 1; }
    done
  fi
done

python3 - "$out" "$runs" "$memory" <<'PY'
import json, os, statistics, sys
out, runs, memory = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
reports = [json.load(open(os.path.join(out, f"run_{i}.json"))) for i in range(1, runs + 1)]
rows = []  # (metric, [values])

def add(name, values):
    values = [v for v in values if v is not None]
    if values:
        rows.append((name, values))

def ratio(a, b):
    return a / b if a is not None and b else None

baselines = []
for r in reports:
    for name in r["baselines"]:
        if name not in baselines:
            baselines.append(name)
add("baton req/s", [r.get("throughput_rps") for r in reports])
for b in baselines:
    add(f"{b} req/s", [r["baselines"].get(b, {}).get("throughput_rps") for r in reports])
add("speed-up vs best baseline", [r.get("speedup_vs_best_baseline") for r in reports])
add("speed-up vs ort_tuned", [r.get("speedup_vs_ort_tuned") for r in reports])
add("goodput speed-up vs best baseline", [r.get("goodput_speedup_vs_best_baseline") for r in reports])
add("baton bound_ratio", [r.get("bound_ratio") for r in reports])
for b in baselines:
    add(f"{b} bound_ratio", [r["baselines"].get(b, {}).get("bound_ratio") for r in reports])
add("bound violations", [len(r.get("bound_violated", [])) for r in reports])
models = [m["name"] for m in reports[0].get("models", [])] or [m["name"] for m in next(iter(reports[0]["baselines"].values()))["models"]]
def model(mode_json, i):
    return mode_json["models"][i] if mode_json and i < len(mode_json.get("models", [])) else None
for i, name in enumerate(models):
    slo = None
    for r in reports:
        m = model(r, i)
        if m and m.get("slo_ms") is not None:
            slo = m["slo_ms"]
    if slo is not None:
        add(f"{name}: baton SLO attainment (SLO {slo:g} ms)", [model(r, i)["slo_attainment"] for r in reports if model(r, i)])
        add(f"{name}: best baseline SLO attainment", [model(r["baselines"].get(r.get("best_baseline") or ""), i)["slo_attainment"]
                                                       for r in reports if model(r["baselines"].get(r.get("best_baseline") or ""), i)])
        add(f"{name}: baton p99 ms", [model(r, i)["latency_ms"]["p99"] for r in reports if model(r, i)])
        add(f"{name}: best baseline p99 ms", [model(r["baselines"].get(r.get("best_baseline") or ""), i)["latency_ms"]["p99"]
                                               for r in reports if model(r["baselines"].get(r.get("best_baseline") or ""), i)])
    add(f"{name}: req/s baton / ort_tuned", [ratio(model(r, i)["throughput_rps"] if model(r, i) else None,
                                                   (model(r["baselines"].get("ort_tuned"), i) or {}).get("throughput_rps"))
                                             for r in reports])
best = [r.get("best_baseline") for r in reports]
if memory:
    mb = [json.load(open(os.path.join(out, f"mem_baton_{i}.json")))["peak_rss_mb"] for i in range(1, runs + 1)]
    mt = [json.load(open(os.path.join(out, f"mem_tuned_{i}.json")))["peak_rss_mb"] for i in range(1, runs + 1)]
    add("peak RSS MB, baton run --no-baselines", mb)
    add("peak RSS MB, --no-baton --baselines ort_tuned", mt)
    add("peak RSS ratio baton / ort_tuned", [a / b for a, b in zip(mb, mt)])
width = max(len(n) for n, _ in rows)
print(f"{'metric':<{width}}  {'median':>9}  {'min':>9}  {'max':>9}")
for name, values in rows:
    print(f"{name:<{width}}  {statistics.median(values):9.3f}  {min(values):9.3f}  {max(values):9.3f}")
print(f"best baseline per run: {', '.join(str(b) for b in best)}")
PY
