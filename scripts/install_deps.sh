#!/usr/bin/env bash
# Installs everything baton needs on Debian 12, idempotently:
#   1. the Debian packages (only those that are missing), via apt;
#   2. ONNX Runtime 1.29.0 (official prebuilt CPU build) from the npm registry,
#      checked against a pinned sha256, extracted into .deps/onnxruntime with a
#      CMake package (target onnxruntime::onnxruntime).
# Re-running it does nothing when everything is already in place.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---- 1. Debian packages --------------------------------------------------------
packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libonnx-dev libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libabsl-dev libcli11-dev nlohmann-json3-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev libglpk-dev
  libonnx-testdata npm openssl ccache python3 libcpp-httplib-dev zlib1g-dev libbrotli-dev prometheus curl
  python3-dev python3-pybind11 pybind11-dev python3-numpy python3-pytest python3-grpcio python3-protobuf
  clang-16 libfuzzer-16-dev libclang-rt-16-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come from a Node.js install outside apt; do not fight it.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/npm}")
fi
filtered=()
for p in "${missing[@]}"; do [ -n "$p" ] && filtered+=("$p"); done
if [ "${#filtered[@]}" -gt 0 ]; then
  echo "baton setup: installing Debian packages: ${filtered[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${filtered[@]}"; then
    "${sudo_cmd[@]}" apt-get update
    "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${filtered[@]}"
  fi
fi

# ---- 2. ONNX Runtime from the npm registry ------------------------------------
ort_version="1.29.0"
npm_pkg="com.github.asus4.onnxruntime"
npm_ver="0.4.9"
sha256="e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d"
prefix="$root/.deps/onnxruntime"
stamp="$prefix/.installed-$npm_pkg-$npm_ver-$sha256"

if [ -f "$stamp" ]; then
  exit 0
fi

echo "baton setup: fetching ONNX Runtime $ort_version"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# shellcheck source=lib/npm_fetch.sh
source "$root/scripts/lib/npm_fetch.sh"
tarball="$(npm_fetch_verified "$npm_pkg" "$npm_ver" "$sha256" "$work" "baton setup")"

headers="package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers"
libdir="package/Plugins/Linux/x64"
tar -xzf "$tarball" -C "$work" "$headers" "$libdir/libonnxruntime.so"

rm -rf "$prefix"
mkdir -p "$prefix/include" "$prefix/lib" "$prefix/lib/cmake/onnxruntime"
cp "$work/$headers"/*.h "$prefix/include/"
cp "$work/$libdir/libonnxruntime.so" "$prefix/lib/libonnxruntime.so.$ort_version"
ln -sf "libonnxruntime.so.$ort_version" "$prefix/lib/libonnxruntime.so.1"
ln -sf "libonnxruntime.so.1" "$prefix/lib/libonnxruntime.so"
cp "$root/cmake/onnxruntimeConfig.cmake" "$prefix/lib/cmake/onnxruntime/"
cat > "$prefix/lib/cmake/onnxruntime/onnxruntimeConfigVersion.cmake" <<CFG
set(PACKAGE_VERSION "$ort_version")
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
CFG
touch "$stamp"
echo "baton setup: ONNX Runtime $ort_version installed in $prefix"
