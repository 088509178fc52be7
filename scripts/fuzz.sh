#!/usr/bin/env bash
# Runs the fuzz targets of tests/fuzz as libFuzzer binaries (clang, ASan +
# UBSan; CMake preset `fuzz`), each for SECONDS, on a corpus kept between
# runs. The test suite runs a short deterministic smoke run of the same
# targets; this is the long run (docs/reliability.md).
#
#   scripts/fuzz.sh [SECONDS] [--only TARGET]... [--jobs J] [--parallel P] [--corpus DIR]
#
#   SECONDS    per target (default 60)
#   --only     one target (repeatable): config_fuzz, kserve_json_fuzz,
#              kserve_grpc_fuzz, model_fuzz, plan_profile_fuzz, agent_codec_fuzz,
#              http_connection_fuzz
#   --jobs     libFuzzer worker processes per target (default 1)
#   --parallel targets run at once (default 1); each target's output is
#              printed when it ends. Keep jobs x parallel <= cores, so each
#              target gets its SECONDS of a core.
#   --corpus   the corpora's folder (default build/fuzz/corpus); an empty
#              corpus starts from the target's seeds
# Compiler: clang++-16 when installed (scripts/install_deps.sh installs clang-16,
# libfuzzer-16-dev and libclang-rt-16-dev), else clang++ (Debian 12's clang 14
# has libFuzzer too). CI runs `scripts/test.sh fuzz`: each target for 30 s on an
# empty corpus, that is from its seeds and the regression inputs, one target
# per core at once.
# A crash, leak, sanitizer report or slow input (over 10 s) stops that target
# and leaves the input as crash-*/leak-*/timeout-* in build/fuzz/work/TARGET/
# (with libFuzzer's logs); replay it with the smoke binary:
# build/ci/tests/fuzz/TARGET --mutations 0 FILE, and keep it in tests/fuzz/regressions/TARGET/.
# Exit status: 0 no finding, 1 a target found something, 2 usage or build error.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=60
jobs=1
parallel=1
corpus_root=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --only) targets+=("${2:?--only needs a target}"); shift 2 ;;
    --jobs) jobs="${2:?--jobs needs a number}"; shift 2
      [[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --jobs must be a number >= 1, got '$jobs'" >&2; exit 2; } ;;
    --parallel) parallel="${2:?--parallel needs a number}"; shift 2
      [[ "$parallel" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --parallel must be a number >= 1, got '$parallel'" >&2; exit 2; } ;;
    --corpus) corpus_root="${2:?--corpus needs a folder}"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) [[ "$1" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a number, got '$1'" >&2; exit 2; }
       seconds="$1"; shift ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=(config_fuzz kserve_json_fuzz kserve_grpc_fuzz model_fuzz plan_profile_fuzz
  agent_codec_fuzz http_connection_fuzz)
cxx=clang++
cc=clang
if command -v clang++-16 >/dev/null; then cxx=clang++-16; cc=clang-16; fi
command -v "$cxx" >/dev/null ||
  { echo "fuzz.sh: clang is needed (apt-get install clang-16 libfuzzer-16-dev libclang-rt-16-dev)" >&2; exit 2; }
cd "$root"
cmake --preset fuzz -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" >/dev/null || exit 2
cmake --build build/fuzz -j "$(nproc)" --target "${targets[@]}" || exit 2
[ -n "$corpus_root" ] || corpus_root="$root/build/fuzz/corpus"
work="$root/build/fuzz/work"
mkdir -p "$work"

# Fuzzes target $1; its findings and workers' logs go to its own work folder.
# Exit status: 0 no finding, 1 a finding.
fuzz_one() {
  local t="$1" corpus="$corpus_root/$1" dir="$work/$1"
  mkdir -p "$corpus" "$dir"
  echo "== $t: ${seconds}s, corpus $corpus"
  # An empty corpus starts from the seeds (fuzz_target.h).
  if [ -z "$(ls -A "$corpus")" ]; then
    BATON_FUZZ_WRITE_SEEDS="$corpus" "$root/build/fuzz/tests/fuzz/$t" -runs=0 >/dev/null 2>&1 || true
  fi
  # Inputs that once crashed or hung the target are a second, read-only corpus
  # (libFuzzer adds new inputs to the first folder only).
  local extra=()
  [ -d "$root/tests/fuzz/regressions/$t" ] && extra=("$root/tests/fuzz/regressions/$t")
  # One job runs in this process, its output on stdout; more run as libFuzzer
  # workers, each logging to fuzz-N.log in the work folder.
  local workers=()
  [ "$jobs" -gt 1 ] && workers=(-jobs="$jobs" -workers="$jobs")
  # Run in the work folder: libFuzzer writes its findings (and workers' logs) there.
  if ! (cd "$dir" && "$root/build/fuzz/tests/fuzz/$t" "$corpus" "${extra[@]}" -max_total_time="$seconds" \
      -timeout=10 -rss_limit_mb=4096 "${workers[@]}" -print_final_stats=1); then
    echo "fuzz.sh: $t found a problem: see the crash-/leak-/timeout- file in $dir (and its output above)" >&2
    return 1
  fi
}

found=0
if [ "$parallel" -eq 1 ]; then
  for t in "${targets[@]}"; do fuzz_one "$t" || found=1; done
else
  # Up to $parallel targets at once, each writing to a log that is printed
  # whole when it ends, so the outputs do not interleave.
  declare -A running=()  # pid -> target
  next=0
  while [ "$next" -lt "${#targets[@]}" ] || [ "${#running[@]}" -gt 0 ]; do
    while [ "$next" -lt "${#targets[@]}" ] && [ "${#running[@]}" -lt "$parallel" ]; do
      t="${targets[$next]}"
      next=$((next + 1))
      mkdir -p "$work/$t"
      fuzz_one "$t" >"$work/$t/output.log" 2>&1 &
      running[$!]="$t"
    done
    pid="" rc=0
    wait -n -p pid "${!running[@]}" || rc=$?
    t="${running[$pid]}"
    unset "running[$pid]"
    cat "$work/$t/output.log"
    [ "$rc" -eq 0 ] || found=1
  done
fi
exit "$found"
