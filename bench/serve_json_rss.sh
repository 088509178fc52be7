#!/usr/bin/env bash
# Peak RSS of `baton serve` before and after one REST body of MB MiB of `0,`
# sent to its `camera` model (a fixed [1,3,224,224] input; answered 400). Run
# it with two binaries, alternating, to compare them (docs/benchmarks.md).
#
#   bench/serve_json_rss.sh BATON [MB] [PORT]
set -euo pipefail
baton="${1:?usage: serve_json_rss.sh BATON [MB] [PORT]}"
mb="${2:-32}"
port="${3:-18700}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$work/body.json" "$mb" <<'PY'
import sys
n = (int(sys.argv[2]) << 20) // 2
with open(sys.argv[1], "w") as f:
    f.write('{"inputs":[{"name":"input","shape":[1,3,224,224],"datatype":"FP32","data":[' + "0," * (n - 1) + '0]}]}')
PY
"$baton" serve --grpc "127.0.0.1:$((port + 1))" --http "127.0.0.1:$port" -q --max-request-mb $((mb + 1)) \
  >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 300); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
before=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status")
code=$(curl -s -o "$work/answer" -w '%{http_code}' "127.0.0.1:$port/v2/models/camera/infer" --data-binary @"$work/body.json")
after=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status")
kill -TERM "$pid"
wait "$pid"
echo "$(basename "$baton"): peak RSS ${before} MB before, ${after} MB after a ${mb} MiB body (HTTP $code)"
