#!/usr/bin/env bash
# Throughput of a workload sent through `baton serve` over gRPC (`baton run
# --server`) against the same workload in process (`baton run --no-baselines`),
# in alternating runs on this machine (issue target: >= 0.9x). The server runs
# the same config; both sides' client and server share the machine's cores.
#
#   bench/serve_throughput.sh [CONFIG] [--runs N] [--duration S] [--baton PATH] [--shared-memory] [--streaming]
#
# CONFIG: a run config (default: the embedded default workload). Prints each
# run's req/s and p99, then the medians and their ratio. --shared-memory adds
# a run to each round, `--server ... --shared-memory system` (inputs through
# POSIX shared memory; the server gets --allow-client-shm). --streaming adds
# the same runs again with `--streaming` (every request on one
# ModelStreamInfer stream). All runs of a round alternate.
#
# Then where the CPU goes, in milliseconds of CPU per answered request
# (medians over the runs): in process, the PUs' runs and the rest of the
# process (`baton run --json`: pus[].run_cpu_s, process_cpu_s); through the
# server, its PUs' runs and the rest of the server (its /metrics before and
# after each run: baton_pu_run_cpu_seconds_total, process_cpu_seconds_total,
# successful requests) and the client (its --json). "run share" is the PUs'
# run CPU time over their busy time: below 1 when other threads took their
# cores during runs.
#
# And memory: the peak RSS of each in-process run and of each client run
# (their --json: peak_rss_mb), and the server's own peak over all the runs
# (VmHWM in /proc/PID/status), to set beside the one in-process process.
# Exit status: 0 done, 1 a run failed, 2 usage.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config=""
runs=5
duration=6
baton=""
shm=0
streaming=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="${2:?--runs needs a number}"; shift 2 ;;
    --duration) duration="${2:?--duration needs seconds}"; shift 2 ;;
    --baton) baton="${2:?--baton needs a path}"; shift 2 ;;
    --shared-memory) shm=1; shift ;;
    --streaming) streaming=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "serve_throughput.sh: unknown option $1" >&2; exit 2 ;;
    *) config="$1"; shift ;;
  esac
done
if [ -z "$baton" ]; then
  for b in "$root/build/release/tools/baton/baton" "$root/build/ci/tools/baton/baton"; do
    if [ -x "$b" ]; then baton="$b"; break; fi
  done
fi
[ -x "$baton" ] || { echo "serve_throughput.sh: no baton binary; build first or give --baton" >&2; exit 2; }
out="$(mktemp -d -t baton_serve_throughput.XXXXXX)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$out"
}
trap cleanup EXIT

cfg_args=()
[ -n "$config" ] && cfg_args=("$config")
serve_args=()
[ "$shm" = 1 ] && serve_args=(--allow-client-shm)
# HTTP for /metrics only: the runs use gRPC.
"$baton" serve "${cfg_args[@]}" "${serve_args[@]}" -q --grpc 127.0.0.1:0 --http 127.0.0.1:0 >"$out/serve.out" 2>"$out/serve.err" &
server_pid=$!
for _ in $(seq 1 600); do
  grep -q "listening on" "$out/serve.out" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$out/serve.err" >&2; exit 1; }
  sleep 0.5
done
address="$(sed -n 's/.*gRPC listening on \([^ ]*\) .*/\1/p' "$out/serve.out")"
[ -n "$address" ] || { echo "serve_throughput.sh: the server did not start" >&2; cat "$out/serve.err" >&2; exit 1; }
for _ in $(seq 1 100); do
  grep -q "HTTP listening" "$out/serve.out" 2>/dev/null && break
  sleep 0.1
done
http="$(sed -n 's/.*HTTP listening on \([^ ]*\).*/\1/p' "$out/serve.out")"
[ -n "$http" ] || { echo "serve_throughput.sh: the server's HTTP endpoint did not start" >&2; exit 1; }
echo "server: $address, metrics http://$http/metrics (pid $server_pid)"
bash "$root/bench/machine_facts.sh"
scrape() {
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "http://$http/metrics" >"$1"
}

# The client runs of each round: a file name and its extra arguments.
variants=("server|")
[ "$shm" = 1 ] && variants+=("shm|--shared-memory system")
if [ "$streaming" = 1 ]; then
  variants+=("stream|--streaming")
  [ "$shm" = 1 ] && variants+=("shm-stream|--shared-memory system --streaming")
fi
for i in $(seq 1 "$runs"); do
  "$baton" run "${cfg_args[@]}" --no-baselines --duration "$duration" --quiet --json "$out/local-$i.json" >/dev/null
  for v in "${variants[@]}"; do
    read -r -a extra <<<"${v#*|}"
    scrape "$out/${v%%|*}-$i.before.prom"
    "$baton" run "${cfg_args[@]}" --server "$address" "${extra[@]}" --duration "$duration" --quiet \
      --json "$out/${v%%|*}-$i.json" >/dev/null
    scrape "$out/${v%%|*}-$i.after.prom"
  done
done

server_hwm_kb="$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$server_pid/status" 2>/dev/null || true)"

python3 - "$out" "$runs" "${server_hwm_kb:-0}" "${variants[@]}" <<'PY'
import json, statistics, sys
out, runs, server_hwm_kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
variants = [v.split("|", 1) for v in sys.argv[4:]]
def load(kind):
    rows = []
    for i in range(1, runs + 1):
        j = json.load(open(f"{out}/{kind}-{i}.json"))
        rows.append((j["throughput_rps"], j["latency_ms"]["p99"]))
    return rows
local = load("local")
named = [(f"--server {args}".strip(), load(kind)) for kind, args in variants]
for i in range(runs):
    line = f"run {i + 1}: in process {local[i][0]:7.1f} req/s p99 {local[i][1]:6.2f} ms"
    for name, rows in named:
        line += f" | {name} {rows[i][0]:7.1f} req/s p99 {rows[i][1]:6.2f} ms"
    print(line)
ml = statistics.median(r[0] for r in local)
for name, rows in named:
    ms = statistics.median(r[0] for r in rows)
    ratios = [s[0] / l[0] for l, s in zip(local, rows)]
    print(f"median: in process {ml:.1f} req/s, {name} {ms:.1f} req/s; "
          f"ratio of medians {ms / ml:.3f}, median of per-pair ratios {statistics.median(ratios):.3f} (target >= 0.9)")

# Where the CPU goes (see the header).
def metrics(path):
    values = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.rpartition(" ")
        values[key] = float(value)
    return values
def total(values, prefix, needle=""):
    return sum(v for k, v in values.items() if k.startswith(prefix) and needle in k)
def local_split(i):
    j = json.load(open(f"{out}/local-{i}.json"))
    n = max(j["completed"], 1)
    runs = sum(p.get("run_cpu_s", 0) for p in j.get("pus", []))
    busy = sum(p.get("busy_s", 0) for p in j.get("pus", []))
    return 1000 * runs / n, 1000 * (j.get("process_cpu_s", 0) - runs) / n, runs / busy if busy else 0
def server_split(kind, i):
    a, b = metrics(f"{out}/{kind}-{i}.before.prom"), metrics(f"{out}/{kind}-{i}.after.prom")
    d = lambda prefix, needle="": total(b, prefix, needle) - total(a, prefix, needle)
    n = max(d("baton_inference_requests_total", 'status="success"'), 1)
    runs, busy, cpu = d("baton_pu_run_cpu_seconds_total"), d("baton_pu_busy_seconds_total"), d("process_cpu_seconds_total")
    client = json.load(open(f"{out}/{kind}-{i}.json")).get("process_cpu_ms_per_request", 0)
    return 1000 * runs / n, 1000 * (cpu - runs) / n, client, runs / busy if busy else 0
med = lambda xs: statistics.median(xs)
loc = [local_split(i) for i in range(1, runs + 1)]
print(f"CPU ms per request, in process: PU runs {med([x[0] for x in loc]):.3f}, rest of the process "
      f"{med([x[1] for x in loc]):.3f}; run share {med([x[2] for x in loc]):.3f}")
for (kind, args), (name, _) in zip(variants, named):
    srv = [server_split(kind, i) for i in range(1, runs + 1)]
    print(f"CPU ms per request, {name}: PU runs {med([x[0] for x in srv]):.3f}, rest of the server "
          f"{med([x[1] for x in srv]):.3f}, client {med([x[2] for x in srv]):.3f}; run share {med([x[3] for x in srv]):.3f}")

# Memory (see the header).
def rss(kind):
    values = [json.load(open(f"{out}/{kind}-{i}.json")).get("peak_rss_mb") for i in range(1, runs + 1)]
    return [v for v in values if v is not None]
local_rss = rss("local")
line = f"peak RSS: in process {med(local_rss):.0f} MB (median)" if local_rss else "peak RSS: in process unknown"
line += f"; the server {server_hwm_kb / 1024:.0f} MB (its peak over all runs)" if server_hwm_kb else "; the server unknown"
for (kind, args), (name, _) in zip(variants, named):
    client_rss = rss(kind)
    if client_rss:
        line += f"; {name} client {med(client_rss):.0f} MB (median)"
print(line)
PY
