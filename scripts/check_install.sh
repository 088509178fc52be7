#!/usr/bin/env bash
# Installs a build into a temporary prefix and builds examples/embed against
# the installed tree only (not the build tree), twice: with CMake's
# find_package(baton) and with pkg-config. Runs both and checks that they
# load libbaton.so from the prefix. Usage: scripts/check_install.sh BUILD_DIR
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:?usage: scripts/check_install.sh BUILD_DIR}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/baton/baton.h include/baton/core/tensor.h lib/libbaton.so lib/cmake/baton/batonConfig.cmake \
         lib/pkgconfig/baton.pc bin/baton; do
  [ -e "$prefix/$f" ] || { echo "check_install: $f is missing from the installed tree" >&2; exit 1; }
done
# The public headers name no third-party header.
if grep -hE '#include [<"](absl|onnx|onnxruntime|grpc|google)' -r "$prefix/include"; then
  echo "check_install: an installed header includes a third-party header (above)" >&2; exit 1
fi

# 1. CMake: find_package(baton) + baton::baton.
cmake -S "$root/examples/embed" -B "$work/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake" >/dev/null
# 2. pkg-config.
# shellcheck disable=SC2046
c++ -std=c++20 -O2 "$root/examples/embed/main.cc" -o "$work/embed_pc" -pthread \
  $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs baton)

for exe in "$work/cmake/embed" "$work/embed_pc"; do
  lib="$(ldd "$exe" | awk '/libbaton\.so/ {print $3}')"
  case "$lib" in
    "$prefix"/lib/*) ;;
    *) echo "check_install: $exe loads libbaton.so from '$lib', not from the installed prefix" >&2; exit 1 ;;
  esac
  echo "-- $(basename "$exe"): examples/embed against the installed tree"
  "$exe" "$root/examples/embed/models.yaml" 3
done
echo "check_install: ok (find_package and pkg-config)"
