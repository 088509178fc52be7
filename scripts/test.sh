#!/usr/bin/env bash
# The whole test suite, as CI runs it (docs/development.md):
#   1. release  an optimised build with warnings as errors, every test label
#               (unit, integration, corpus, timing; the Python module's pytest
#               suite is an integration test), one smoke run of each benchmark
#               binary, then `cmake --install` into a temporary prefix and
#               examples/embed built against it and run;
#   2. asan     AddressSanitizer + UndefinedBehaviorSanitizer: the unit and
#               integration tests, and a check of the one LSan suppression;
#   3. tsan     ThreadSanitizer: the threaded runtime and the network layer;
#   4. fuzz     every libFuzzer target (clang, ASan + UBSan) for 30 s from its
#               seeds and regression inputs, one target per core at once
#               (scripts/fuzz.sh; a finding fails it).
# Usage: scripts/test.sh [STAGE...]   (default: all four, in that order)
# Compilations go through ccache when it is installed (~/.cache/ccache, shared
# by every clone on the machine); its statistics are printed at the end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
stages=("$@")
[ "${#stages[@]}" -eq 0 ] && stages=(release asan tsan fuzz)
for s in "${stages[@]}"; do
  case "$s" in release | asan | tsan | fuzz) ;; *) echo "scripts/test.sh: unknown stage '$s' (release, asan, tsan, fuzz)" >&2; exit 2 ;; esac
done

bash scripts/install_deps.sh
bash scripts/fetch_test_models.sh
jobs="$(nproc)"
summary=()
command -v ccache >/dev/null 2>&1 && ccache --zero-stats >/dev/null

# run_ctest STAGE ARGS...: ctest with ARGS; records how many tests ran.
run_ctest() {
  local stage="$1"
  shift
  local log
  log="$(mktemp)"
  local rc=0
  # --no-tests=error: a label or -R pattern that matches nothing fails the stage.
  ctest --no-tests=error "$@" 2>&1 | tee "$log" || rc=$?  # pipefail: ctest's status
  local n
  n="$(sed -nE 's/.* tests? failed out of ([0-9]+)$/\1/p' "$log" | tail -1)"
  rm -f "$log"
  summary+=("$stage: ${n:-0} ctest tests ($*)")
  return "$rc"
}

# run_gtests STAGE ENV COMMAND...: test binaries run directly, up to $jobs at
# once (most of them wait on sockets and timers, so two at a time roughly halve
# the stage), each with environment ENV (one VAR=VALUE word) and under a
# bound of $gtest_bound s; each COMMAND is a binary and its arguments in one
# string, split at spaces. Each one's output is printed whole, in the order
# given, once all have ended; each one's test count is recorded. Fails if any
# failed, timed out or ran no test.
gtest_bound=900
run_gtests() {
  local stage="$1" env="$2"
  shift 2
  local dir
  dir="$(mktemp -d)"
  local i=0 cmd
  for cmd in "$@"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    (
      read -ra argv <<<"$cmd"
      rc=0
      env "$env" timeout --kill-after=30 "$gtest_bound" "${argv[@]}" >"$dir/$i.log" 2>&1 || rc=$?
      echo "$rc" >"$dir/$i.rc"
    ) &
    i=$((i + 1))
  done
  wait
  local rc=0 n r
  i=0
  for cmd in "$@"; do
    echo "-- $cmd"
    cat "$dir/$i.log"
    r="$(cat "$dir/$i.rc")"
    n="$(sed -nE 's/^\[==========\] ([0-9]+) tests? from .* ran\..*/\1/p' "$dir/$i.log" | tail -1)"
    summary+=("$stage: ${n:-0} test cases in ${cmd%% *}")
    if [ "$r" -ne 0 ]; then
      [ "$r" -eq 124 ] && echo "${cmd%% *} did not end within $gtest_bound s" >&2
      echo "${cmd%% *} failed (exit status $r)" >&2
      rc=1
    elif [ "${n:-0}" -eq 0 ]; then
      echo "${cmd%% *} ran no test: its --gtest_filter matches nothing" >&2
      rc=1
    fi
    i=$((i + 1))
  done
  rm -rf "$dir"
  return "$rc"
}

stage_release() {
  echo "== release: optimised build (-Werror), all tests, benchmark smoke runs"
  cmake --preset ci >/dev/null
  cmake --build --preset ci -j "$jobs"
  run_ctest release --preset ci -j "$jobs"
  # Each benchmark binary once, with a tiny iteration count: they must build
  # and run; their numbers are meaningless here (docs/benchmarks.md).
  local n=0
  for b in build/ci/bench/*_bench; do
    [ -x "$b" ] || continue
    echo "-- smoke: $b"
    case "$(basename "$b")" in
      agent_bench) "$b" --requests 20 --seconds 0.2 >/dev/null ;;
      *) "$b" --benchmark_min_time=0.0001 >/dev/null ;;
    esac
    n=$((n + 1))
  done
  summary+=("release: $n benchmark binaries smoke-run")
  echo "-- install: examples/embed built against the installed tree and run"
  bash scripts/check_install.sh build/ci
  summary+=("release: examples/embed against the installed tree (find_package and pkg-config)")
}

stage_asan() {
  echo "== asan: AddressSanitizer + UndefinedBehaviorSanitizer, unit and integration tests"
  cmake --preset asan >/dev/null
  cmake --build --preset asan -j "$jobs"
  run_ctest asan --preset asan -j "$jobs" -L '^(unit|integration)$'

  echo "-- the LSan suppression hides at most ONNX Runtime's one 14-byte leak"
  # Whether ORT leaks its 14-byte block depends on the host CPU (it is not seen on
  # every machine), so "nothing suppressed" is fine; anything beyond one block of
  # 14 bytes means a new leak is hiding behind the module-wide rule.
  local log used
  log="$(ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=1" \
    build/asan/tests/zoo_partition_test --gtest_filter='*BalancedCuts*/resnet' 2>&1)" || {
    echo "$log" >&2; echo "the LSan probe run failed (output above)" >&2; return 1; }
  if ! grep -q '\[  PASSED  \] 1 test' <<<"$log"; then
    echo "$log" >&2; echo "the LSan probe ran no test: its --gtest_filter matches nothing; update it" >&2; return 1
  fi
  used="$(awk '/libonnxruntime.so.1$/ {print $1, $2}' <<<"$log")"
  case "$used" in
    "") echo "ok: nothing suppressed (ONNX Runtime did not leak on this machine)" ;;
    "1 14") echo "ok: 1 allocation, 14 bytes" ;;
    *) echo "tests/lsan.supp suppressed '$used' (count bytes); expected at most '1 14'. A new leak is hiding behind it." >&2
       return 1 ;;
  esac
  summary+=("asan: LSan suppression probe")
}

stage_tsan() {
  echo "== tsan: ThreadSanitizer, the threaded runtime and the network layer"
  # runtime_test (the threaded runtime shell and the speed probe, with 1-thread
  # ONNX Runtime sessions), baton::Engine (many application threads, 1-thread
  # PUs), `baton serve`'s engines replaced while requests hold them
  # (ServedEngine), the trace observer, and the ort_tuned baseline's serving threads and
  # its execution-timeout watchdog (1-thread sessions). The
  # other ort_baseline tests are left out: their multi-thread sessions give
  # reports inside libonnxruntime's thread pool, which is not instrumented and
  # could only be suppressed as a whole library. TSAN_OPTIONS (halt_on_error=1)
  # come from the tsan test preset: any report fails the test.
  cmake --preset tsan >/dev/null
  cmake --build --preset tsan -j "$jobs" --target runtime_test ort_baseline_test port_contract_test agent_failover_test \
    engine_test trace_observer_test serve_grpc_test serve_http_limits_test cli_serve_test agent_server_test \
    grpc_library_test agent_execute_test serve_served_engine_test
  run_ctest tsan --preset tsan -j "$jobs" \
    -R '^(Runtime\.|Modes/RuntimeModeTest\.|Deployment\.|SpeedProbe\.|Zoo/ZooRuntimeTest\.|OrtBaselineTest\.Tuned|OrtBaselineTest\.ARunPast|EngineTest\.|TraceObserverTest\.|ServedEngineTest\.)'
  # Then the network layer, with the gRPC suppressions: Debian's gRPC, abseil
  # and OpenSSL are not built with TSan, so races inside those libraries are
  # suppressed (tests/tsan_net.supp). baton's own code is still checked, in
  # the test process and in the agents and `baton` processes it starts (their
  # stderr is checked for reports). Two binaries at a time, the longest first:
  # - serve_grpc_test: `baton serve`'s gRPC front-end and client;
  # - agent_failover_test: remote devices and the agents they lose and regain;
  # - cli_serve_test: `baton serve`'s REST front-end (HTTP workers waiting on
  #   the engine and watching their clients), both front-ends and `baton run
  #   --server` over TLS, SIGTERM stopping both front-ends at once, and
  #   --exit-timeout-secs cancelling what is left in both, and models loaded
  #   and unloaded while REST requests are answered. These
  #   cases only: the others run for minutes under TSan and add no REST or TLS
  #   coverage;
  # - agent_server_test: the agent's Unload withdrawing its partition's work
  #   (the shell's and the agent's locks), the bound on Loads at once, a
  #   remote device's reader and supervisor facing a lying or withholding
  #   agent, a reader held by its completion callback, and the Loads of a
  #   client that went away given back (Execute, Load and Stats threads
  #   counting clients);
  # - serve_http_limits_test: the REST front-end's own connections cut short
  #   while the engine serves;
  # - port_contract_test;
  # - agent_execute_test: the agent's writer answering pings between the
  #   frames of a large completion while its reader queues them;
  # - grpc_library_test: the wait for gRPC's clean-up at exit, whose absence
  #   showed as a thread leak in `baton` processes.
  local tests=build/tsan/tests
  run_gtests tsan "TSAN_OPTIONS=halt_on_error=1 second_deadlock_stack=1 suppressions=$root/tests/tsan_net.supp" \
    "$tests/serve_grpc_test" \
    "$tests/agent_failover_test" \
    "$tests/cli_serve_test --gtest_filter=CliServeTest.*Rest*:CliServeTest.Curl*:CliServeTest.ATls*:CliServeTest.ServesHttps*:CliServeTest.SigtermStops*:CliServeTest.ExitTimeout*:CliServeTest.ASignalWhileStarting*:CliServeTest.Explicit*" \
    "$tests/agent_server_test --gtest_filter=*Unload*:*Lying*:*Concurrent*:*Withholds*:*OwnTime*:*Grace*:*GaveBack*:*Busy*" \
    "$tests/serve_http_limits_test" \
    "$tests/port_contract_test" \
    "$tests/agent_execute_test" \
    "$tests/grpc_library_test"
}

stage_fuzz() {
  local seconds="${BATON_CI_FUZZ_SECONDS:-30}"
  echo "== fuzz: each libFuzzer target for $seconds s (clang, ASan + UBSan)"
  # A fresh corpus each run: every target starts from its seeds and the inputs
  # in tests/fuzz/regressions/, so a run depends on nothing kept between runs.
  local corpus rc=0
  corpus="$(mktemp -d)"
  bash scripts/fuzz.sh "$seconds" --parallel "$jobs" --corpus "$corpus" || rc=$?
  rm -rf "$corpus"
  [ "$rc" -eq 0 ] || return "$rc"
  summary+=("fuzz: every libFuzzer target for $seconds s, no finding")
}

# The summary is printed however the run ends; the first failing command
# stops it (set -e), so stages are called plainly, not in an `||` list.
print_summary() {
  local rc=$?
  echo "== summary"
  printf '  %s\n' "${summary[@]}"
  if command -v ccache >/dev/null 2>&1; then
    echo "== ccache (this run)"
    ccache --show-stats
  fi
  [ "$rc" -eq 0 ] || echo "scripts/test.sh: FAILED (exit status $rc)"
}
trap print_summary EXIT

for s in "${stages[@]}"; do
  start=$SECONDS
  "stage_$s"
  summary+=("$s: $((SECONDS - start)) s")
done
