// CPU and emulated-accelerator executors: capability, preparing and running
// partitions, and equality with whole-model ONNX Runtime.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "baton/backend/emu/emu_executor.h"
#include "baton/backend/ort/cpu_executor.h"
#include "baton/core/tensor_ops.h"
#include "baton/graph/batch.h"
#include "baton/graph/extract.h"
#include "baton/partition/plan.h"
#include "baton/verify/verify.h"
#include "baton/zoo/zoo.h"
#include "onnx/onnx_pb.h"

namespace baton::backend {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<const graph::Model> ZooModel(const std::string& name) {
  auto bytes = zoo::Generate(name, /*small=*/true);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  auto model = graph::Model::LoadBytes(*bytes, name + ".onnx");
  EXPECT_TRUE(model.ok()) << model.status();
  return *model;
}

// Contiguous topological segments of nodes with the same capability on `emu`:
// the `capability` cut of the high-level policy, in miniature.
std::vector<std::vector<NodeId>> CapabilitySegments(const graph::Model& model, const std::vector<bool>& capable,
                                                    std::vector<bool>* segment_on_emu) {
  std::vector<std::vector<NodeId>> groups;
  for (NodeId id : model.topo_order()) {
    if (graph::IsFreeConstant(model.node(id))) continue;
    if (groups.empty() || segment_on_emu->back() != capable[id.value]) {
      groups.emplace_back();
      segment_on_emu->push_back(capable[id.value]);
    }
    groups.back().push_back(id);
  }
  return groups;
}

// Runs `plan` piece by piece on the given executors and compares with the whole model.
void ExpectPlanMatchesWholeModel(const graph::Model& model, const partition::PartitionPlan& plan,
                                 const std::vector<const Executor*>& executor_of_partition) {
  auto inputs = verify::RandomInputs(model, 5);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  auto expected = verify::RunWholeModel(model, *inputs);
  ASSERT_TRUE(expected.ok()) << expected.status();
  std::map<std::string, Tensor> available;
  for (auto& [name, t] : *inputs) available.emplace(name, t.Clone());
  for (size_t i = 0; i < plan.partitions.size(); ++i) {
    const auto& p = plan.partitions[i];
    auto sub = graph::ExtractSubmodel(model, p.nodes, p.name);
    ASSERT_TRUE(sub.ok()) << sub.status();
    auto prepared = executor_of_partition[i]->Prepare(model, *sub);
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    std::vector<std::pair<std::string, const Tensor*>> feeds;
    for (const auto& in : sub->interface.inputs) feeds.emplace_back(in, &available.at(in));
    auto result = (*prepared)->Run(feeds);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_GT(result->busy.count(), 0) << p.name;
    for (auto& [name, t] : result->outputs) available.insert_or_assign(name, std::move(t));
  }
  for (const auto& [name, want] : *expected) {
    auto cmp = verify::Compare(want, available.at(name));
    EXPECT_TRUE(cmp.ok) << name << ": " << cmp.message;
  }
}

TEST(CpuExecutor, RunsBalancedPartitionsLikeTheWholeModel) {
  auto model = ZooModel("resnet");
  ASSERT_TRUE(model);
  CpuExecutor cpu0({.name = "cpu0", .threads = 1, .cores = {}});
  CpuExecutor cpu1({.name = "cpu1", .threads = 2, .cores = {}});
  EXPECT_EQ(cpu0.kind(), "cpu");
  auto capable = cpu0.QueryCapability(*model);
  EXPECT_EQ(std::count(capable.begin(), capable.end(), true), static_cast<long>(model->nodes().size()));
  auto plan = partition::CutBalanced(*model, 3);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectPlanMatchesWholeModel(*model, *plan, {&cpu0, &cpu1, &cpu0});
}

TEST(CpuExecutor, PartitionsRunOnTheModelsOwnWeightsAndKeepTheModelAlive) {
  // The sessions take their weights from the graph's protobuf (no second copy);
  // so a prepared partition must keep the model alive after its owner lets go.
  std::shared_ptr<const graph::Model> model = ZooModel("resnet");
  ASSERT_TRUE(model);
  auto inputs = verify::RandomInputs(*model, 3);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  auto expected = verify::RunWholeModel(*model, *inputs);
  ASSERT_TRUE(expected.ok()) << expected.status();
  auto plan = partition::CutBalanced(*model, 2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<graph::Submodel> subs;
  int64_t shared_bytes = 0;
  for (const auto& p : plan->partitions) {
    auto sub = graph::ExtractSubmodel(*model, p.nodes, p.name);
    ASSERT_TRUE(sub.ok()) << sub.status();
    EXPECT_FALSE(sub->initializers.empty()) << p.name;
    for (const graph::InitializerView& v : graph::RawInitializerViews(*model, *sub)) {
      EXPECT_THAT(sub->initializers, ::testing::Contains(v.name));
      EXPECT_GE(v.bytes.size(), graph::kMinSharedInitializerBytes);
      // A view into the model's own protobuf, not a copy.
      bool inside = false;
      for (const auto& init : model->proto().graph().initializer()) {
        inside = inside || (init.name() == v.name && init.raw_data().data() == v.bytes.data());
      }
      EXPECT_TRUE(inside) << v.name;
      shared_bytes += static_cast<int64_t>(v.bytes.size());
    }
    subs.push_back(*std::move(sub));
  }
  // Nearly all of the weights are shared (only tiny tensors are left to ORT).
  EXPECT_GT(shared_bytes, model->total_param_bytes() * 9 / 10);

  CpuExecutor cpu({.name = "cpu0", .threads = 1, .cores = {}});
  std::vector<std::unique_ptr<PreparedPartition>> prepared;
  for (const graph::Submodel& sub : subs) {
    auto p = cpu.Prepare(*model, sub);
    ASSERT_TRUE(p.ok()) << p.status();
    prepared.push_back(*std::move(p));
  }
  std::weak_ptr<const graph::Model> watch = model;
  model.reset();
  EXPECT_FALSE(watch.expired()) << "the sessions run on the model's weights; it must live as long as they do";
  std::map<std::string, Tensor> available;
  for (auto& [name, t] : *inputs) available.emplace(name, t.Clone());
  for (size_t i = 0; i < subs.size(); ++i) {
    std::vector<std::pair<std::string, const Tensor*>> feeds;
    for (const auto& in : subs[i].interface.inputs) feeds.emplace_back(in, &available.at(in));
    auto result = prepared[i]->Run(feeds);
    ASSERT_TRUE(result.ok()) << result.status();
    for (auto& [name, t] : result->outputs) available.insert_or_assign(name, std::move(t));
  }
  for (const auto& [name, want] : *expected) {
    auto cmp = verify::Compare(want, available.at(name));
    EXPECT_TRUE(cmp.ok) << name << ": " << cmp.message;
  }
  prepared.clear();
  EXPECT_TRUE(watch.expired()) << "the last session let go of the model";
}

TEST(EmuExecutor, UnsupportedOpsForceThoseNodesOntoCpu) {
  auto model = ZooModel("transformer");
  ASSERT_TRUE(model);
  EmuExecutor npu({.name = "npu0", .speed = 4.0, .op_speed = {}, .unsupported_ops = {"Softmax", "LayerNormalization"},
                   .compute = true});
  CpuExecutor cpu({.name = "cpu0", .threads = 1, .cores = {}});
  EXPECT_EQ(npu.kind(), "emu");
  auto capable = npu.QueryCapability(*model);
  int softmax = 0;
  for (const auto& node : model->nodes()) {
    bool limited = node.op_type == "Softmax" || node.op_type == "LayerNormalization";
    EXPECT_EQ(capable[node.id.value], !limited) << node.name;
    softmax += node.op_type == "Softmax";
  }
  ASSERT_GT(softmax, 0);

  // A partition holding a Softmax cannot be prepared on the emulated PU.
  auto whole = graph::ExtractSubmodel(*model, model->topo_order(), "whole");
  ASSERT_TRUE(whole.ok());
  auto refused = npu.Prepare(*model, *whole);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("npu0"));

  std::vector<bool> on_emu;
  auto groups = CapabilitySegments(*model, capable, &on_emu);
  ASSERT_GT(groups.size(), 2u);
  auto plan = partition::BuildPlan(*model, groups);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // BuildPlan keeps the segments' order here (they are already in dependency order).
  std::vector<const Executor*> executors;
  for (bool emu : on_emu) executors.push_back(emu ? static_cast<const Executor*>(&npu) : &cpu);
  ExpectPlanMatchesWholeModel(*model, *plan, executors);
}

TEST(EmuExecutor, ControlFlowNodeInheritsItsBodiesLimits) {
  auto model = ZooModel("ifloop");
  ASSERT_TRUE(model);
  const graph::Node* if_node = nullptr;
  for (const auto& node : model->nodes()) {
    if (node.op_type == "If") if_node = &node;
  }
  ASSERT_NE(if_node, nullptr);
  ASSERT_FALSE(if_node->subgraph_ops.empty());
  EmuExecutor npu({.name = "npu0", .speed = 2.0, .op_speed = {}, .unsupported_ops = {if_node->subgraph_ops[0]},
                   .compute = true});
  EXPECT_FALSE(npu.QueryCapability(*model)[if_node->id.value]);
}

TEST(EmuExecutor, ChargedTimeFollowsSpeedAndComputeOffGivesZeros) {
  auto model = ZooModel("squeezenet");
  ASSERT_TRUE(model);
  auto sub = graph::ExtractSubmodel(*model, model->topo_order(), "whole");
  ASSERT_TRUE(sub.ok());
  EmuExecutor slow({.name = "slow", .speed = 0.5, .op_speed = {}, .unsupported_ops = {}, .compute = false});
  EmuExecutor fast({.name = "fast", .speed = 1e6, .op_speed = {}, .unsupported_ops = {}, .compute = false});
  EmuExecutor conv_fast({.name = "conv", .speed = 0.5, .op_speed = {{"Conv", 1e6}}, .unsupported_ops = {},
                         .compute = false});
  auto p_slow = slow.Prepare(*model, *sub);
  auto p_fast = fast.Prepare(*model, *sub);
  auto p_conv = conv_fast.Prepare(*model, *sub);
  ASSERT_TRUE(p_slow.ok() && p_fast.ok() && p_conv.ok());
  auto inputs = verify::RandomInputs(*model, 1);
  ASSERT_TRUE(inputs.ok());
  std::vector<std::pair<std::string, const Tensor*>> feeds;
  for (const auto& [name, t] : *inputs) feeds.emplace_back(name, &t);
  auto r_slow = (*p_slow)->Run(feeds);
  auto r_fast = (*p_fast)->Run(feeds);
  auto r_conv = (*p_conv)->Run(feeds);
  ASSERT_TRUE(r_slow.ok() && r_fast.ok() && r_conv.ok());
  // Twice the one-thread CPU time vs a millionth of it: orders of magnitude apart whatever the noise.
  EXPECT_GT(r_slow->busy, r_fast->busy * 1000);
  EXPECT_GT(r_conv->busy.count(), 0);
  ASSERT_EQ(r_slow->outputs.size(), model->outputs().size());
  const Tensor& out = r_slow->outputs[0].second;
  EXPECT_EQ(out.shape(), std::vector<int64_t>({1, 10}));
  for (float v : out.data<float>()) EXPECT_EQ(v, 0.0f);
}

TEST(EmuExecutor, AFreeBatchDimensionIsCalibratedAtOneRowAndChargedPerRow) {
  auto model = ZooModel("squeezenet");
  ASSERT_TRUE(model);
  absl::StatusOr<std::shared_ptr<const graph::Model>> free = graph::WithFreeBatchDim(*model);
  ASSERT_TRUE(free.ok()) << free.status();
  auto sub = graph::ExtractSubmodel(**free, (*free)->topo_order(), "whole");
  ASSERT_TRUE(sub.ok());
  EmuExecutor npu({.name = "npu", .speed = 2, .op_speed = {}, .unsupported_ops = {}, .compute = false});
  auto prepared = npu.Prepare(**free, *sub);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  auto inputs = verify::RandomInputs(*model, 1);
  ASSERT_TRUE(inputs.ok());
  const Tensor& x = (*inputs)[0].second;
  const Tensor* three[] = {&x, &x, &x};
  absl::StatusOr<Tensor> stacked = ConcatDim0(three);
  ASSERT_TRUE(stacked.ok());
  std::vector<std::pair<std::string, const Tensor*>> one = {{(*inputs)[0].first, &x}};
  std::vector<std::pair<std::string, const Tensor*>> rows3 = {{(*inputs)[0].first, &*stacked}};
  auto r1 = (*prepared)->Run(one);
  auto r3 = (*prepared)->Run(rows3);
  ASSERT_TRUE(r1.ok() && r3.ok());
  EXPECT_GT(r1->busy.count(), 0);
  EXPECT_EQ(r3->busy, r1->busy * 3);  // no gain from batching
  EXPECT_EQ(r1->outputs[0].second.shape(), std::vector<int64_t>({1, 10}));
  EXPECT_EQ(r3->outputs[0].second.shape(), std::vector<int64_t>({3, 10}));
}

TEST(EmuExecutor, ChargedTimeSplitsCpuTimeByCostAndDividesBySpeed) {
  auto model = ZooModel("squeezenet");
  ASSERT_TRUE(model);
  const auto& nodes = model->topo_order();
  const Duration cpu = std::chrono::milliseconds(10);
  EmuPuSpec uniform{.name = "u", .speed = 4.0, .op_speed = {}, .unsupported_ops = {}, .compute = false};
  // One speed for every op: exactly the CPU time over the speed.
  EXPECT_NEAR(EmuChargedTime(*model, nodes, cpu, uniform).count(), 2.5e6, 1);
  // Convolutions carry most of SqueezeNet's estimated cost: making only them 1000x faster
  // leaves the charge at the other ops' share of the CPU time (over speed 1).
  double conv_share = 0, total = 0;
  for (NodeId id : nodes) {
    double c = partition::CostOf(model->node(id));
    total += c;
    if (model->node(id).op_type == "Conv") conv_share += c;
  }
  conv_share /= total;
  ASSERT_GT(conv_share, 0.5);
  EmuPuSpec conv_fast{.name = "c", .speed = 1.0, .op_speed = {{"Conv", 1000.0}}, .unsupported_ops = {},
                      .compute = false};
  double expected_ns = 1e7 * ((1 - conv_share) + conv_share / 1000.0);
  EXPECT_NEAR(EmuChargedTime(*model, nodes, cpu, conv_fast).count(), expected_ns, 2);
}

}  // namespace
}  // namespace baton::backend
