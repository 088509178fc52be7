// Graph view, convexity, interfaces, extraction and cuts on small hand-built models.
#include <gmock/gmock.h>
#include <filesystem>
#include <gtest/gtest.h>

#include "baton/graph/extract.h"
#include "baton/graph/model.h"
#include "baton/partition/plan.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"

namespace baton {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A small builder of float [1,4] models from "op: in,in -> out" lines.
class Proto {
 public:
  Proto() {
    m_.set_ir_version(8);
    auto* op = m_.add_opset_import();
    op->set_domain("");
    op->set_version(17);
    m_.mutable_graph()->set_name("g");
  }
  Proto& Input(const std::string& name) {
    SetType(m_.mutable_graph()->add_input(), name);
    return *this;
  }
  Proto& Output(const std::string& name) {
    SetType(m_.mutable_graph()->add_output(), name);
    return *this;
  }
  Proto& Node(const std::string& name, const std::string& op, std::vector<std::string> in,
              std::vector<std::string> out) {
    return AddNode(m_.mutable_graph(), name, op, std::move(in), std::move(out));
  }
  Proto& ConstNode(const std::string& name, const std::string& out) {
    onnx::NodeProto* n = m_.mutable_graph()->add_node();
    n->set_name(name);
    n->set_op_type("Constant");
    n->add_output(out);
    auto* a = n->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    auto* t = a->mutable_t();
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(1);
    t->add_dims(4);
    for (int i = 0; i < 4; ++i) t->add_float_data(0.5f * i);
    return *this;
  }
  onnx::ModelProto& proto() { return m_; }
  std::shared_ptr<const graph::Model> Load() {
    auto m = graph::Model::LoadBytes(m_.SerializeAsString(), "test.onnx");
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *m : nullptr;
  }

  static void SetType(onnx::ValueInfoProto* vi, const std::string& name) {
    vi->set_name(name);
    auto* tt = vi->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_value(1);
    tt->mutable_shape()->add_dim()->set_dim_value(4);
  }
  Proto& AddNode(onnx::GraphProto* g, const std::string& name, const std::string& op, std::vector<std::string> in,
                 std::vector<std::string> out) {
    onnx::NodeProto* n = g->add_node();
    n->set_name(name);
    n->set_op_type(op);
    for (auto& s : in) n->add_input(s);
    for (auto& s : out) n->add_output(s);
    return *this;
  }

 private:
  onnx::ModelProto m_;
};

std::vector<NodeId> Ids(const graph::Model& m, std::vector<std::string> names) {
  std::vector<NodeId> ids;
  for (const auto& n : names) {
    auto id = m.FindNode(n);
    EXPECT_TRUE(id.has_value()) << n;
    if (id) ids.push_back(*id);
  }
  return ids;
}

// x -> A -> t1 -> B -> t2 -> C -> y ; B also reads x ; D: t1 -> t3 -> C
std::shared_ptr<const graph::Model> Diamond() {
  Proto p;
  p.Input("x").Output("y");
  p.Node("A", "Relu", {"x"}, {"t1"});
  p.Node("B", "Add", {"t1", "x"}, {"t2"});
  p.Node("D", "Sigmoid", {"t1"}, {"t3"});
  p.Node("C", "Mul", {"t2", "t3"}, {"y"});
  return p.Load();
}

TEST(GraphView, ProducersConsumersTopo) {
  auto m = Diamond();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->nodes().size(), 4u);
  EXPECT_THAT(m->inputs(), ElementsAre("x"));
  EXPECT_THAT(m->outputs(), ElementsAre("y"));
  const graph::Value* t1 = m->FindValue("t1");
  ASSERT_NE(t1, nullptr);
  EXPECT_EQ(m->node(*t1->producer).name, "A");
  EXPECT_EQ(t1->consumers.size(), 2u);
  EXPECT_EQ(t1->type.ToString(), "float32[1,4]");
  EXPECT_EQ(t1->type.Bytes(), 16);
  EXPECT_EQ(m->FindValue("x")->consumers.size(), 2u);
  EXPECT_TRUE(m->FindValue("y")->is_graph_output);
  // One FLOP per output element for elementwise ops.
  EXPECT_EQ(m->node(*m->FindNode("C")).flops, 4);
}

TEST(GraphView, SortsUnsortedNodesAndNamesAnonymousOnes) {
  Proto p;
  p.Input("x").Output("y");
  p.Node("", "Relu", {"t"}, {"y"});
  p.Node("", "Sigmoid", {"x"}, {"t"});
  auto m = p.Load();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->node(m->topo_order()[0]).op_type, "Sigmoid");
  EXPECT_FALSE(m->node(NodeId(0)).name.empty());
  EXPECT_NE(m->node(NodeId(0)).name, m->node(NodeId(1)).name);
  EXPECT_EQ(m->warnings().size(), 2u);
}

TEST(Convexity, DetectsPathThatLeavesAndReturns) {
  auto m = Diamond();
  ASSERT_TRUE(m);
  // {A, C} is not convex: A -> D -> C leaves and re-enters.
  auto status = graph::CheckConvex(*m, Ids(*m, {"A", "C"}));
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("not convex"));
  EXPECT_TRUE(graph::CheckConvex(*m, Ids(*m, {"A", "B", "D"})).ok());
  EXPECT_TRUE(graph::CheckConvex(*m, Ids(*m, {"B", "D", "C"})).ok());
  EXPECT_FALSE(graph::CheckConvex(*m, {}).ok());
}

TEST(Interface, InputsAndOutputsIncludingValuesNeededBothSides) {
  auto m = Diamond();
  ASSERT_TRUE(m);
  auto iface = graph::ComputeInterface(*m, Ids(*m, {"A", "B"}));
  ASSERT_TRUE(iface.ok());
  EXPECT_THAT(iface->inputs, ElementsAre("x"));
  // t1 is consumed inside (B) and outside (D): it is an output too.
  EXPECT_THAT(iface->outputs, ElementsAre("t1", "t2"));
  auto tail = graph::ComputeInterface(*m, Ids(*m, {"D", "C"}));
  ASSERT_TRUE(tail.ok());
  EXPECT_THAT(tail->inputs, ElementsAre("t1", "t2"));
  EXPECT_THAT(tail->outputs, ElementsAre("y"));
}

TEST(Extract, StandaloneModelPassesCheckerAndCopiesConstants) {
  Proto p;
  p.Input("x").Output("y");
  p.ConstNode("K", "k");
  p.Node("A", "Add", {"x", "k"}, {"a"});
  p.Node("B", "Mul", {"a", "k"}, {"y"});
  auto m = p.Load();
  ASSERT_TRUE(m);
  auto plan = partition::CutBalanced(*m, 2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->partitions.size(), 2u);
  for (const auto& part : plan->partitions) {
    auto sub = graph::ExtractSubmodel(*m, part.nodes, part.name);
    ASSERT_TRUE(sub.ok()) << sub.status();
    onnx::ModelProto sp;
    ASSERT_TRUE(sp.ParseFromString(sub->onnx_bytes));
    EXPECT_NO_THROW(onnx::checker::check_model(sp));
    // The constant is copied into both partitions instead of crossing as a tensor.
    EXPECT_EQ(sp.graph().node(0).op_type(), "Constant");
    for (const auto& in : sp.graph().input()) EXPECT_NE(in.name(), "k");
  }
  EXPECT_EQ(plan->edges.size(), 1u);
  EXPECT_EQ(plan->edges[0].tensor, "a");
  EXPECT_EQ(plan->edges[0].bytes, 16);
}

TEST(Extract, WholeSubmodelIsTheModelItself) {
  Proto p;
  p.Input("x").Output("y");
  p.Node("A", "Relu", {"x"}, {"a"});
  p.Node("B", "Neg", {"a"}, {"y"});
  auto m = p.Load();
  ASSERT_TRUE(m);
  const graph::Submodel whole = graph::WholeSubmodel(*m);
  EXPECT_EQ(whole.nodes, m->topo_order());
  EXPECT_EQ(whole.interface.inputs, m->inputs());
  EXPECT_EQ(whole.interface.outputs, m->outputs());
  EXPECT_EQ(whole.onnx_bytes, m->SerializeToString());
}

TEST(Extract, IfBodyReadingOuterScopeMakesInputs) {
  Proto p;
  p.Input("x").Output("y");
  p.proto().mutable_graph()->add_input();
  auto* cond = p.proto().mutable_graph()->mutable_input(1);
  cond->set_name("c");
  cond->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::BOOL);
  cond->mutable_type()->mutable_tensor_type()->mutable_shape();
  p.Node("A", "Relu", {"x"}, {"a"});
  p.Node("S", "Sigmoid", {"x"}, {"s"});
  onnx::NodeProto* n = p.proto().mutable_graph()->add_node();
  n->set_name("IF");
  n->set_op_type("If");
  n->add_input("c");
  n->add_output("y");
  for (const char* branch : {"then_branch", "else_branch"}) {
    auto* a = n->add_attribute();
    a->set_name(branch);
    a->set_type(onnx::AttributeProto::GRAPH);
    onnx::GraphProto* g = a->mutable_g();
    g->set_name(branch);
    p.AddNode(g, std::string(branch) + "_add", "Add", {"a", "s"}, {std::string(branch) + "_out"});
    Proto::SetType(g->add_output(), std::string(branch) + "_out");
  }
  auto m = p.Load();
  ASSERT_TRUE(m);
  const graph::Node& if_node = m->node(*m->FindNode("IF"));
  EXPECT_TRUE(if_node.has_subgraphs);
  EXPECT_THAT(if_node.implicit_inputs, ElementsAre("a", "s"));
  auto iface = graph::ComputeInterface(*m, Ids(*m, {"IF"}));
  ASSERT_TRUE(iface.ok());
  EXPECT_THAT(iface->inputs, ElementsAre("c", "a", "s"));
  // {A, IF} is not convex? No: S is not on a path from A. It is convex.
  EXPECT_TRUE(graph::CheckConvex(*m, Ids(*m, {"A", "IF"})).ok());
  auto plan = partition::CutAtTensors(*m, std::vector<std::string>{"a"});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->partitions.size(), 2u);
  EXPECT_THAT(plan->partitions[1].interface.inputs, ElementsAre("x", "c", "a"));
}

TEST(Plan, BuildPlanRejectsBadGroups) {
  auto m = Diamond();
  ASSERT_TRUE(m);
  auto dup = partition::BuildPlan(*m, {Ids(*m, {"A", "B"}), Ids(*m, {"B", "D", "C"})});
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("'B' is in partitions 0 and 1"));
  auto missing = partition::BuildPlan(*m, {Ids(*m, {"A", "B"}), Ids(*m, {"C"})});
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("'D' (Sigmoid) is in no partition"));
  auto nonconvex = partition::BuildPlan(*m, {Ids(*m, {"A", "C"}), Ids(*m, {"B", "D"})});
  EXPECT_THAT(std::string(nonconvex.status().message()), HasSubstr("not convex"));
  auto ok = partition::BuildPlan(*m, {Ids(*m, {"D", "C"}), Ids(*m, {"A", "B"})});
  ASSERT_TRUE(ok.ok()) << ok.status();
  // Renumbered in dependency order.
  EXPECT_EQ(m->node(ok->partitions[0].nodes[0]).name, "A");
  EXPECT_EQ(ok->edges.size(), 2u);
}

TEST(Plan, CutBalancedClampsAndBalances) {
  auto m = Diamond();
  ASSERT_TRUE(m);
  for (int k = 1; k <= 4; ++k) {
    auto plan = partition::CutBalanced(*m, k);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->partitions.size(), static_cast<size_t>(k));
  }
  std::string note;
  auto clamped = partition::CutBalanced(*m, 9, &note);
  ASSERT_TRUE(clamped.ok());
  EXPECT_EQ(clamped->partitions.size(), 4u);
  EXPECT_THAT(note, HasSubstr("only 4"));
  EXPECT_FALSE(partition::CutBalanced(*m, 0).ok());
}

TEST(Plan, CutAtTensorsErrors) {
  auto m = Diamond();
  ASSERT_TRUE(m);
  EXPECT_EQ(partition::CutAtTensors(*m, std::vector<std::string>{"nope"}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(partition::CutAtTensors(*m, std::vector<std::string>{"x"}).status().message()),
              HasSubstr("model input"));
  EXPECT_THAT(std::string(partition::CutAtTensors(*m, std::vector<std::string>{"t2", "t1"}).status().message()),
              HasSubstr("already computed"));
  EXPECT_THAT(std::string(partition::CutAtTensors(*m, std::vector<std::string>{"y"}).status().message()),
              HasSubstr("leaves no node"));
  auto plan = partition::CutAtTensors(*m, std::vector<std::string>{"t1", "t2"});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->partitions.size(), 3u);
  EXPECT_THAT(plan->partitions[0].interface.outputs, ElementsAre("t1"));
}

TEST(Plan, RandomCutsAreValidForManySeeds) {
  auto m = Diamond();
  ASSERT_TRUE(m);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    auto plan = partition::CutRandom(*m, 1 + seed % 4, seed);
    ASSERT_TRUE(plan.ok()) << plan.status();
    size_t nodes = 0;
    for (const auto& p : plan->partitions) nodes += p.nodes.size();
    EXPECT_EQ(nodes, 4u);
  }
}

TEST(Plan, JsonNamesNodesAndEdges) {
  auto m = Diamond();
  ASSERT_TRUE(m);
  auto plan = partition::CutBalanced(*m, 2);
  ASSERT_TRUE(plan.ok());
  std::string json = plan->ToJson(*m);
  EXPECT_THAT(json, HasSubstr("\"partitions\""));
  EXPECT_THAT(json, HasSubstr("\"edges\""));
  EXPECT_THAT(json, HasSubstr("\"A\""));
}

}  // namespace
}  // namespace baton

// A model whose nodes pass sequences to each other (ONNX backend corpus,
// Debian's libonnx-testdata): cuts never fall on a sequence.
TEST(Plan, CutsNeverFallOnSequences) {
  const std::string path = "/usr/share/libonnx-testdata/data/simple/test_sequence_model1/model.onnx";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is not installed (libonnx-testdata)";
  auto model = baton::graph::Model::LoadFile(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const baton::graph::Model& m = **model;
  std::string sequence;
  for (const baton::graph::Value& v : m.values()) {
    if (!v.type.is_tensor && v.producer && !v.consumers.empty()) sequence = v.name;
  }
  ASSERT_FALSE(sequence.empty());
  for (int k : {2, 3, 5}) {
    auto plan = baton::partition::CutBalanced(m, k);
    ASSERT_TRUE(plan.ok()) << plan.status();
    for (const auto& e : plan->edges) EXPECT_TRUE(m.FindValue(e.tensor)->type.is_tensor) << e.tensor;
  }
  // A plan that splits a sequence's producer from its reader is refused, naming the value.
  const baton::graph::Value* v = m.FindValue(sequence);
  std::vector<std::vector<baton::NodeId>> groups(2);
  for (baton::NodeId id : m.topo_order()) {
    groups[m.topo_index(id) <= m.topo_index(*v->producer) ? 0 : 1].push_back(id);
  }
  auto refused = baton::partition::BuildPlan(m, groups);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("baton passes only tensors"));
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr(sequence));
}
