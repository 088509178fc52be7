// zoo::SpinModel (zoo.h): a Loop of 2^40 iterations.
#include <cstdint>
#include <string>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/graph/builder.h"
#include "baton/zoo/zoo.h"

namespace baton::zoo {

absl::StatusOr<std::string> SpinModel() {
  graph::GraphBuilder body("body");
  body.AddInput("i", dtype::kInt64, {});
  body.AddInput("cond_in", dtype::kBool, {});
  body.AddInput("v_in", dtype::kFloat, {int64_t{1}});
  body.AddNode("Identity", {"cond_in"}, {"cond_out"});
  body.AddNode("Add", {"v_in", "one"}, {"v_out"});
  body.AddOutput("cond_out", dtype::kBool, {});
  body.AddOutput("v_out", dtype::kFloat, {int64_t{1}});

  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {int64_t{1}});
  b.AddInitializer("trips", dtype::kInt64, {}, std::vector<int64_t>{int64_t{1} << 40});
  b.AddInitializer("keep_going", dtype::kBool, {}, std::vector<int64_t>{1});
  b.AddInitializer("one", dtype::kFloat, {int64_t{1}}, std::vector<float>{1.0f});
  b.AddNode("Loop", {"trips", "keep_going", "x"}, {"y"}, {graph::Attr::Graph("body", body)}, "spin");
  b.AddOutput("y", dtype::kFloat, {int64_t{1}});
  return b.Serialize();
}

}  // namespace baton::zoo
