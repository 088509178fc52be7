// Every zoo model, cut in every way the partitioner offers, computes exactly what
// the whole model computes in ONNX Runtime (tolerance as in `baton verify`).
#include <gtest/gtest.h>

#include "baton/graph/extract.h"
#include "baton/graph/model.h"
#include "baton/partition/plan.h"
#include "baton/verify/verify.h"
#include "baton/zoo/zoo.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"

namespace baton {
namespace {

std::vector<std::string> ZooNames() {
  std::vector<std::string> names;
  for (const auto& e : zoo::List()) names.push_back(e.name);
  return names;
}

class ZooPartitionTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto bytes = zoo::Generate(GetParam(), /*small=*/true);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto model = graph::Model::LoadBytes(*bytes, GetParam() + ".onnx");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *model;
    auto inputs = verify::RandomInputs(*model_, /*seed=*/42);
    ASSERT_TRUE(inputs.ok()) << inputs.status();
    inputs_ = std::move(*inputs);
  }

  void ExpectEquivalent(const partition::PartitionPlan& plan, const std::string& how) {
    auto report = verify::VerifyPlan(*model_, plan, inputs_);
    ASSERT_TRUE(report.ok()) << how << ": " << report.status();
    EXPECT_TRUE(report->ok) << how << ": " << report->message;
    for (const auto& out : report->outputs) {
      EXPECT_TRUE(out.comparison.ok) << how << " output " << out.name << ": " << out.comparison.message;
    }
  }

  std::shared_ptr<const graph::Model> model_;
  verify::NamedTensors inputs_;
};

TEST_P(ZooPartitionTest, BalancedCutsMatchWholeModel) {
  for (int k : {2, 3, 5}) {
    std::string note;
    auto plan = partition::CutBalanced(*model_, k, &note);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->partitions.size(), static_cast<size_t>(k)) << note;
    ExpectEquivalent(*plan, "K=" + std::to_string(k));
  }
}

TEST_P(ZooPartitionTest, RandomValidCutsMatchWholeModel) {
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    int k = 2 + static_cast<int>(seed % 4);
    auto plan = partition::CutRandom(*model_, k, seed * 7919);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ExpectEquivalent(*plan, "random cut seed " + std::to_string(seed));
  }
}

TEST_P(ZooPartitionTest, CutsAtNamedTensorsMatchWholeModel) {
  // Cut after the tensors at 1/3 and 2/3 of the topological order.
  const auto& order = model_->topo_order();
  std::vector<std::string> cut;
  for (size_t frac : {1u, 2u}) {
    for (size_t i = order.size() * frac / 3; i < order.size(); ++i) {
      const graph::Node& node = model_->node(order[i]);
      if (graph::IsFreeConstant(node) || node.outputs.empty() || node.outputs[0].empty()) continue;
      if (!cut.empty() && cut.back() == node.outputs[0]) break;
      cut.push_back(node.outputs[0]);
      break;
    }
  }
  auto plan = partition::CutAtTensors(*model_, cut);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectEquivalent(*plan, "cut at tensors");
}

TEST_P(ZooPartitionTest, EveryPartitionIsAValidStandaloneModel) {
  auto plan = partition::CutBalanced(*model_, 4);
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const auto& p : plan->partitions) {
    auto sub = graph::ExtractSubmodel(*model_, p.nodes, GetParam() + "." + p.name);
    ASSERT_TRUE(sub.ok()) << sub.status();
    onnx::ModelProto proto;
    ASSERT_TRUE(proto.ParseFromString(sub->onnx_bytes));
    EXPECT_NO_THROW(onnx::checker::check_model(proto)) << p.name;
    // A partition loads through the graph layer like any model.
    auto reloaded = graph::Model::LoadBytes(sub->onnx_bytes, p.name);
    ASSERT_TRUE(reloaded.ok()) << reloaded.status();
    EXPECT_EQ((*reloaded)->inputs(), p.interface.inputs);
    EXPECT_EQ((*reloaded)->outputs(), p.interface.outputs);
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, ZooPartitionTest, ::testing::ValuesIn(ZooNames()),
                         [](const auto& param_info) { return param_info.param; });

}  // namespace
}  // namespace baton
