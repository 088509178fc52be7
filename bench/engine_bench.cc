// Per-request overhead of baton::Engine::Infer over a direct ONNX Runtime Run
// of the same whole model on a small tensor (issue target: <= 20 us median).
//
// Model: y = x * 2 + 1 over float[1, 64]. Both sides run it in a 1-thread
// session with spinning off (the engine: one 1-thread CPU PU, high-level
// `whole`, no profile). Rounds alternate the two sides, each timing `calls`
// sequential requests; the per-call medians over the rounds, and the median
// of the per-round differences, are printed. Numbers go in docs/benchmarks.md.
//
//   engine_bench [--rounds N] [--calls N] [--keep DIR]   (--benchmark_* flags: a smoke run)
// --keep DIR writes the model to DIR/affine.onnx and leaves it there (for
// bench/engine_py_bench.py, which measures the Python module on it).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "baton/backend/ort/ort_runner.h"
#include "baton/baton.h"
#include "bench_common.h"

namespace {

namespace fs = std::filesystem;
using baton::Tensor;

using baton::bench::Median;

}  // namespace

int main(int argc, char** argv) {
  int rounds = 15, calls = 2000;
  std::string keep;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else if (a == "--calls" && i + 1 < argc) {
      calls = std::atoi(argv[++i]);
    } else if (a == "--keep" && i + 1 < argc) {
      keep = argv[++i];
    } else if (a.rfind("--benchmark_", 0) == 0) {
      rounds = 2;
      calls = 20;
    } else {
      std::fprintf(stderr, "usage: %s [--rounds N] [--calls N] [--keep DIR]\n", argv[0]);
      return 2;
    }
  }
  constexpr int kN = 64;
  const fs::path dir =
      keep.empty() ? fs::temp_directory_path() / ("baton_engine_bench_" + std::to_string(::getpid())) : fs::path(keep);
  fs::create_directories(dir);
  const std::string bytes = baton::bench::AffineModel(kN);
  std::ofstream(dir / "affine.onnx", std::ios::binary) << bytes;

  baton::ort::SessionOptions so;
  so.intra_op_threads = 1;
  so.allow_spinning = false;
  auto runner = baton::ort::OrtRunner::Create(bytes, so, "affine");
  if (!runner.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", std::string(runner.status().message()).c_str());
    return 1;
  }
  baton::EngineOptions eo;
  eo.no_profile = true;
  eo.cache_dir = (dir / "cache").string();
  auto engine = baton::Engine::OpenText(
      "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}]\n"
      "models: [{name: affine, path: affine.onnx}]\n"
      "policy: {high_level: whole, low_level: share}\n",
      dir.string(), eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  std::vector<float> x(kN, 0.5f);

  auto time_ort = [&] {
    Tensor t = Tensor::Borrow(baton::dtype::kFloat, {1, kN}, x.data(), x.size() * sizeof(float));
    std::vector<std::pair<std::string, const Tensor*>> feeds = {{"x", &t}};
    const auto start = std::chrono::steady_clock::now();
    for (int c = 0; c < calls; ++c) {
      if (!(*runner)->Run(feeds).ok()) std::abort();
    }
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / calls;
  };
  auto time_engine = [&] {
    const auto start = std::chrono::steady_clock::now();
    for (int c = 0; c < calls; ++c) {
      baton::Tensors in;
      in.emplace("x", Tensor::Borrow(baton::dtype::kFloat, {1, kN}, x.data(), x.size() * sizeof(float)));
      if (!(*engine)->Infer("affine", std::move(in)).ok()) std::abort();
    }
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / calls;
  };
  time_ort();  // warm-up
  time_engine();
  std::vector<double> ort_us, engine_us, overhead_us;
  for (int r = 0; r < rounds; ++r) {
    // Alternate which side goes first.
    double o = 0, e = 0;
    if (r % 2 == 0) {
      o = time_ort();
      e = time_engine();
    } else {
      e = time_engine();
      o = time_ort();
    }
    ort_us.push_back(o);
    engine_us.push_back(e);
    overhead_us.push_back(e - o);
  }
  std::printf("engine_bench: float32[1,%d] affine model, %d rounds x %d sequential calls, alternating\n", kN, rounds,
              calls);
  std::printf("  ORT Run (1 intra-op thread, no spinning)  median %.2f us/call\n", Median(ort_us));
  std::printf("  Engine::Infer (same session settings)     median %.2f us/call\n", Median(engine_us));
  std::printf("  overhead (per-round difference)           median %.2f us/call (target <= 20)\n", Median(overhead_us));
  (*engine)->Close();
  std::error_code ec;
  if (keep.empty()) fs::remove_all(dir, ec);
  return 0;
}
