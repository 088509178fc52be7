// Embeds baton: opens an engine on a config, and two threads each send
// requests to one model with a deadline, then print the outputs' checksums
// and the engine's stats. Exit code 0 when every request was answered OK.
//
//   embed CONFIG [REQUESTS_PER_THREAD]
#include <baton/baton.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace {

// Deterministic inputs for every input of `model`: free dims become 1.
baton::Tensors MakeInputs(const baton::ModelInfo& model, int request) {
  baton::Tensors inputs;
  for (const baton::TensorInfo& in : model.inputs) {
    std::vector<int64_t> shape = in.shape;
    for (int64_t& d : shape) d = d < 0 ? 1 : d;
    baton::Tensor t(in.elem_type, shape);
    if (in.elem_type == baton::dtype::kFloat) {
      std::span<float> v = t.data<float>();
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 7 + request) % 13) / 13.0f;
    }
    inputs.emplace(in.name, std::move(t));
  }
  return inputs;
}

double Checksum(const baton::Tensors& outputs) {
  double sum = 0;
  for (const auto& [name, t] : outputs) {
    if (t.elem_type() != baton::dtype::kFloat) continue;
    for (float v : t.data<float>()) sum += std::fabs(v);
  }
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG [REQUESTS_PER_THREAD]\n", argv[0]);
    return 2;
  }
  const int requests = argc > 2 ? std::atoi(argv[2]) : 5;
  baton::EngineOptions options;
  options.no_profile = true;
  options.progress = [](const std::string& line) { std::fprintf(stderr, "baton: %s\n", line.c_str()); };
  baton::Result<std::unique_ptr<baton::Engine>> opened = baton::Engine::Open(argv[1], options);
  if (!opened.ok()) {
    std::fprintf(stderr, "embed: %s\n", opened.status().ToString().c_str());
    return 1;
  }
  baton::Engine& engine = **opened;
  for (const baton::ModelInfo& m : engine.Models()) {
    std::printf("model %s: %zu input(s), %d partition(s) on %s\n", m.name.c_str(), m.inputs.size(), m.partitions,
                m.device.c_str());
  }

  std::vector<int> failures(engine.Models().size(), 0);
  std::vector<std::vector<double>> sums(engine.Models().size());
  std::vector<std::thread> threads;
  for (size_t m = 0; m < engine.Models().size(); ++m) {
    threads.emplace_back([&, m] {
      const baton::ModelInfo& model = engine.Models()[m];
      baton::InferOptions opt;
      opt.deadline = std::chrono::seconds(5);
      for (int r = 0; r < requests; ++r) {
        baton::Result<baton::Tensors> out = engine.Infer(model.name, MakeInputs(model, r), opt);
        if (!out.ok()) {
          std::fprintf(stderr, "embed: %s request %d: %s\n", model.name.c_str(), r, out.status().ToString().c_str());
          ++failures[m];
          continue;
        }
        sums[m].push_back(Checksum(*out));
      }
    });
  }
  for (std::thread& t : threads) t.join();

  int failed = 0;
  for (size_t m = 0; m < engine.Models().size(); ++m) {
    std::printf("%s:", engine.Models()[m].name.c_str());
    for (double s : sums[m]) std::printf(" %.4f", s);
    std::printf("\n");
    failed += failures[m];
  }
  const baton::EngineStats stats = engine.Stats();
  for (const baton::ModelStats& s : stats.models) {
    std::printf("stats %s: completed %llu, p50 %.2f ms, p99 %.2f ms\n", s.name.c_str(),
                static_cast<unsigned long long>(s.completed), s.latency.p50_ms, s.latency.p99_ms);
  }
  engine.Close();
  return failed == 0 ? 0 : 1;
}
