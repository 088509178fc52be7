#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds baton (Release) and runs the main
# job: `baton run` on its embedded default workload (zoo models generated into
# the cache on first use), comparing baton with plain ONNX Runtime on the same
# cores, with every answer checked against whole-model ONNX Runtime (--verify).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install_deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec "$root/build/release/tools/baton/baton" run --verify --json "$root/build/release/run.json" "$@"
