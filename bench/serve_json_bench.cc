// What parsing a KServe v2 JSON inference request costs (serve/kserve_json's
// ParseInferRequest): the time per body, and the heap it holds at its peak.
// The REST front-end runs it on every JSON request.
//
// Bodies: one FP32 input of shape [N, 3] (a model with a free first
// dimension), 'data' flat, as random floats printed with six decimals
// ("-0.123456,", ~10 bytes per element) or as "0," (2 bytes, the densest
// text a client can send). Each benchmark reports the body's size and the
// most heap in use while parsing, less the heap before, counted by this
// binary's own operator new / delete.
//
//   serve_json_bench [--benchmark_* flags]
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>
#include <string>

#include "absl/strings/str_format.h"
#include "baton/serve/kserve_json.h"

namespace {

// Heap bytes held through operator new, and the most held since the last reset.
std::atomic<int64_t> g_held{0};
std::atomic<int64_t> g_peak{0};

void Count(int64_t delta) {
  const int64_t now = g_held.fetch_add(delta, std::memory_order_relaxed) + delta;
  int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

}  // namespace

// Sized: every block carries its size in front, so delete knows what it frees.
void* operator new(std::size_t n) {
  void* p = std::malloc(n + 16);
  if (p == nullptr) throw std::bad_alloc();
  *static_cast<std::size_t*>(p) = n;
  Count(static_cast<int64_t>(n));
  return static_cast<char*>(p) + 16;
}
void operator delete(void* p) noexcept {
  if (p == nullptr) return;
  char* block = static_cast<char*>(p) - 16;
  Count(-static_cast<int64_t>(*reinterpret_cast<std::size_t*>(block)));
  std::free(block);
}
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }

namespace {

baton::ModelInfo Model() {
  baton::ModelInfo m;
  m.name = "bench";
  m.inputs = {baton::TensorInfo{"x", baton::dtype::kFloat, "float32", {-1, 3}, true}};
  m.outputs = {baton::TensorInfo{"y", baton::dtype::kFloat, "float32", {-1, 3}, true}};
  return m;
}

std::string Body(int64_t rows, bool zeros) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(-1, 1);
  std::string data;
  data.reserve(static_cast<size_t>(rows) * 3 * (zeros ? 2 : 10));
  for (int64_t i = 0; i < rows * 3; ++i) {
    if (i > 0) data += ',';
    data += zeros ? std::string("0") : absl::StrFormat("%.6f", u(rng));
  }
  return absl::StrFormat(R"({"inputs": [{"name": "x", "shape": [%d, 3], "datatype": "FP32", "data": [%s]}]})", rows,
                         data);
}

void BM_ParseInferRequest(benchmark::State& state) {
  const bool zeros = state.range(1) != 0;
  const std::string body = Body(state.range(0), zeros);
  const baton::ModelInfo model = Model();
  int64_t peak = 0;
  for (auto _ : state) {
    g_peak = g_held.load();
    const int64_t before = g_held.load();
    absl::StatusOr<baton::serve::ParsedRequest> r = baton::serve::ParseInferRequest(body, model, size_t{1} << 28);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(r);
    peak = std::max(peak, g_peak.load() - before);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(body.size()));
  state.counters["body_MB"] = static_cast<double>(body.size()) / 1e6;
  state.counters["peak_heap_MB"] = static_cast<double>(peak) / 1e6;
  state.counters["peak_per_body_byte"] = static_cast<double>(peak) / static_cast<double>(body.size());
  state.SetLabel(zeros ? "\"0,\"" : "floats");
}
// An image-sized input (150,528 elements) and a 16x larger one, in both forms.
BENCHMARK(BM_ParseInferRequest)
    ->Args({50176, 0})
    ->Args({50176, 1})
    ->Args({802816, 0})
    ->Args({802816, 1})
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
