#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds baton (Release) and runs the main job:
# generate the built-in zoo, then check that every model, cut into 3 partitions,
# computes exactly what the whole model computes in ONNX Runtime.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install_deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
baton="$root/build/release/tools/baton/baton"
zoo="$root/build/release/zoo"
"$baton" zoo --out "$zoo"
status=0
for model in "$zoo"/*.onnx; do
  echo "== $(basename "$model")"
  "$baton" verify "$model" --parts 3 || status=1
done
exit $status
