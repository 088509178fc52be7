#!/usr/bin/env bash
# A/B of two `baton serve` setups on the issue's throughput target: each
# round runs the workload in process (`baton run --no-baselines`, binary A),
# then through server A and server B (`baton run --server`), B first in
# every other round; it prints each round's req/s and ratios to the
# in-process run, then their medians. A setup is a baton binary plus
# environment settings for its server and client (e.g. GRPC_EXPERIMENTS=...),
# so a prototype behind an environment switch compares with the same binary.
#
#   bench/serve_ab.sh --a BATON [--a-env "K=V ..."] --b BATON [--b-env "K=V ..."]
#                     [--rounds N] [--duration S] [CONFIG]
#
# Exit status: 0 done, 1 a run failed, 2 usage.
set -euo pipefail

a="" b="" a_env="" b_env="" rounds=6 duration=6 config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --a) a="${2:?--a needs a path}"; shift 2 ;;
    --b) b="${2:?--b needs a path}"; shift 2 ;;
    --a-env) a_env="${2?}"; shift 2 ;;
    --b-env) b_env="${2?}"; shift 2 ;;
    --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
    --duration) duration="${2:?--duration needs seconds}"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "serve_ab.sh: unknown option $1" >&2; exit 2 ;;
    *) config="$1"; shift ;;
  esac
done
for x in "$a" "$b"; do
  [ -x "$x" ] || { echo "serve_ab.sh: give two baton binaries with --a and --b (got '$x')" >&2; exit 2; }
done
out="$(mktemp -d -t baton_serve_ab.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$out"
}
trap cleanup EXIT
cfg_args=()
[ -n "$config" ] && cfg_args=("$config")

# Starts a server of setup $1 (binary $2, environment $3); sets `address` to its gRPC address.
start() {
  local name="$1" bin="$2" envs="$3"
  # shellcheck disable=SC2086  # the settings are words
  env $envs "$bin" serve "${cfg_args[@]}" -q --grpc 127.0.0.1:0 --http 127.0.0.1:0 >"$out/$name.out" 2>"$out/$name.err" &
  pids+=($!)
  for _ in $(seq 1 600); do
    grep -q "listening on" "$out/$name.out" 2>/dev/null && break
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$out/$name.err" >&2; exit 1; }
    sleep 0.5
  done
  address="$(sed -n 's/.*gRPC listening on \([^ ]*\) .*/\1/p' "$out/$name.out")"
}
start a "$a" "$a_env"
addr_a="$address"
start b "$b" "$b_env"
addr_b="$address"
[ -n "$addr_a" ] && [ -n "$addr_b" ] || { echo "serve_ab.sh: a server did not start" >&2; exit 1; }

client() {  # setup name, binary, environment, address, round
  # shellcheck disable=SC2086
  env $3 "$2" run "${cfg_args[@]}" --server "$4" --duration "$duration" --quiet --json "$out/$1-$5.json" >/dev/null
}
bash "$(dirname "${BASH_SOURCE[0]}")/machine_facts.sh"
for r in $(seq 1 "$rounds"); do
  "$a" run "${cfg_args[@]}" --no-baselines --duration "$duration" --quiet --json "$out/local-$r.json" >/dev/null
  if [ $((r % 2)) = 1 ]; then
    client a "$a" "$a_env" "$addr_a" "$r"; client b "$b" "$b_env" "$addr_b" "$r"
  else
    client b "$b" "$b_env" "$addr_b" "$r"; client a "$a" "$a_env" "$addr_a" "$r"
  fi
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
run = lambda kind, r: json.load(open(f"{out}/{kind}-{r}.json"))
ra, rb, cpu = [], [], []
for r in range(1, rounds + 1):
    local = run("local", r)
    l, a, b = local["throughput_rps"], run("a", r)["throughput_rps"], run("b", r)["throughput_rps"]
    ra.append(a / l)
    rb.append(b / l)
    # The in-process run's CPU per request says how fast this machine was.
    cpu.append(local["process_cpu_ms_per_request"])
    print(f"round {r}: in process {l:6.1f} req/s ({cpu[-1]:.2f} ms CPU per request) | "
          f"A {a:6.1f} ({a / l:.3f}) | B {b:6.1f} ({b / l:.3f})")
print(f"median ratio to in process: A {statistics.median(ra):.3f}, B {statistics.median(rb):.3f}; "
      f"median of B/A per round {statistics.median(y / x for x, y in zip(ra, rb)):.3f}; "
      f"in process {statistics.median(cpu):.2f} ms of CPU per request")
PY
