// Models whose runs take (practically) forever. Used by the execution
// timeout tests (engine, runtime, CLI, baselines) and the stop tests of
// `baton serve`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/graph/builder.h"
#include "baton/zoo/zoo.h"

namespace baton::testing {

// A Loop of 2^40 iterations (zoo::SpinModel): cancelling its run stops it
// at once, between two iterations.
inline absl::StatusOr<std::string> SpinModelBytes() { return zoo::SpinModel(); }

// One operator that runs for tens of seconds: x (float32[1]) expanded to
// [n, n] and multiplied by itself (2 n^3 flops; n = 8192 takes about 1 TFLOP
// and 768 MB), then summed to y (float32[1, 1]). ONNX Runtime checks for
// cancellation only between operators, so cancelling its run does not stop
// it.
inline absl::StatusOr<std::string> OneLongOperatorModelBytes(int64_t n = 8192) {
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {int64_t{1}});
  b.AddInitializer("shape", dtype::kInt64, {2}, std::vector<int64_t>{n, n});
  b.AddNode("Expand", {"x", "shape"}, {"square"});
  b.AddNode("MatMul", {"square", "square"}, {"product"});
  b.AddNode("ReduceSum", {"product"}, {"y"});
  b.AddOutput("y", dtype::kFloat, {int64_t{1}, int64_t{1}});
  return b.Serialize();
}

}  // namespace baton::testing
