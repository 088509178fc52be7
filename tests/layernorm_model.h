// A decomposed LayerNorm that ORT fuses as a whole but not when cut: shared by
// the verify library tests and the `baton verify` CLI test.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/graph/builder.h"

namespace baton::testing {

// y = LayerNorm(x) over the last axis, decomposed into ONNX ops (the pattern
// ORT's LayerNormFusion recognises). As a whole, ORT fuses it into its
// LayerNormalization kernel (E[x^2] - E[x]^2 variance); cut after the first
// ReduceMean ("mean"), each partition runs the ops one by one. The results
// differ in the last bits: within the default tolerance, not bit-identical.
inline graph::GraphBuilder LayerNormModel() {
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {int64_t{64}, int64_t{256}});
  b.AddInitializer("two", dtype::kFloat, {}, std::vector<float>{2.0f});
  b.AddInitializer("eps", dtype::kFloat, {}, std::vector<float>{1e-5f});
  b.AddInitializer("gamma", dtype::kFloat, {256}, std::vector<float>(256, 1.5f));
  b.AddInitializer("beta", dtype::kFloat, {256}, std::vector<float>(256, 0.25f));
  b.AddNode("ReduceMean", {"x"}, {"mean"}, {graph::Attr::Ints("axes", {-1})});
  b.AddNode("Sub", {"x", "mean"}, {"centered"});
  b.AddNode("Pow", {"centered", "two"}, {"sq"});
  b.AddNode("ReduceMean", {"sq"}, {"var"}, {graph::Attr::Ints("axes", {-1})});
  b.AddNode("Add", {"var", "eps"}, {"var_eps"});
  b.AddNode("Sqrt", {"var_eps"}, {"std"});
  b.AddNode("Div", {"centered", "std"}, {"normed"});
  b.AddNode("Mul", {"normed", "gamma"}, {"scaled"});
  b.AddNode("Add", {"scaled", "beta"}, {"y"});
  b.AddOutput("y", dtype::kFloat, {int64_t{64}, int64_t{256}});
  return b;
}

}  // namespace baton::testing
