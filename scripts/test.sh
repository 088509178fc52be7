#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, third-party test models,
# an optimised build with warnings as errors and all tests, then the unit tests
# again under AddressSanitizer + UndefinedBehaviorSanitizer, then the tests of the
# threaded runtime and of the remote agents under ThreadSanitizer.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install_deps.sh
bash scripts/fetch_test_models.sh
jobs="$(nproc)"

echo "== Release build (-Werror) and tests"
cmake --preset ci >/dev/null
cmake --build --preset ci -j "$jobs"
ctest --preset ci -j "$jobs"

echo "== ASan + UBSan build and tests"
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$jobs"
ctest --preset asan -j "$jobs" -LE slow

echo "== The LSan suppression hides at most ONNX Runtime's one 14-byte leak"
# Whether ORT leaks its 14-byte block depends on the host CPU (it is not seen on
# every machine), so "nothing suppressed" is fine; anything beyond one block of
# 14 bytes means a new leak is hiding behind the module-wide rule.
log="$(ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=1" \
  build/asan/tests/zoo_partition_test --gtest_filter='*BalancedCuts*/resnet' 2>&1)" || {
  echo "$log" >&2; echo "the LSan probe run failed (output above)" >&2; exit 1; }
if ! grep -q '\[  PASSED  \] 1 test' <<<"$log"; then
  echo "$log" >&2; echo "the LSan probe ran no test: its --gtest_filter matches nothing; update it" >&2; exit 1
fi
used="$(awk '/libonnxruntime.so.1$/ {print $1, $2}' <<<"$log")"
case "$used" in
  "") echo "ok: nothing suppressed (ONNX Runtime did not leak on this machine)" ;;
  "1 14") echo "ok: 1 allocation, 14 bytes" ;;
  *) echo "tests/lsan.supp suppressed '$used' (count bytes); expected at most '1 14'. A new leak is hiding behind it." >&2
     exit 1 ;;
esac

echo "== ThreadSanitizer build and the tests that run threads"
# runtime_test (the threaded runtime shell, with 1-thread ONNX Runtime
# sessions). ort_baseline_test is left out: its 2-thread sessions give reports
# inside libonnxruntime's thread pool, which is not instrumented and could only
# be suppressed as a whole library. TSAN_OPTIONS (halt_on_error=1) come from the
# tsan test preset: any report fails the test.
cmake --preset tsan >/dev/null
cmake --build --preset tsan -j "$jobs" --target runtime_test port_contract_test agent_failover_test
ctest --preset tsan -j "$jobs" -R '^(Runtime|Deployment|Zoo/ZooRuntimeTest)\.'
# The remote device and the agent (gRPC): Debian's gRPC and abseil are not
# built with TSan, so races inside those libraries are suppressed
# (tests/tsan_net.supp); baton's own code is still checked.
for t in port_contract_test agent_failover_test; do
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$root/tests/tsan_net.supp" build/tsan/tests/$t
done
