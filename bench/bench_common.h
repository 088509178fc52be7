// What several benchmarks share: a small model, and the median of rounds.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/graph/builder.h"

namespace baton::bench {

// y = x * 2 + 1 over float[1, n], as ONNX bytes.
inline std::string AffineModel(int n) {
  graph::GraphBuilder b("affine");
  b.AddInput("x", dtype::kFloat, {int64_t{1}, int64_t{n}});
  b.AddInitializer("two", dtype::kFloat, {}, std::vector<float>{2.0f});
  b.AddInitializer("one", dtype::kFloat, {}, std::vector<float>{1.0f});
  b.AddNode("Mul", {"x", "two"}, {"t"});
  b.AddNode("Add", {"t", "one"}, {"y"});
  b.AddOutput("y", dtype::kFloat, {int64_t{1}, int64_t{n}});
  absl::StatusOr<std::string> bytes = b.Serialize();
  if (!bytes.ok()) {
    std::fprintf(stderr, "bench: the affine model does not build: %s\n", std::string(bytes.status().message()).c_str());
    std::abort();
  }
  return *std::move(bytes);
}

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace baton::bench
