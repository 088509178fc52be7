// The model zoo and the GraphBuilder under it: every model is deterministic,
// passes the ONNX checker and strict shape inference, has the features its
// name promises, and runs in ONNX Runtime with finite outputs; the If/Loop
// model is checked against a reference computation.
//
// ONNX Runtime is used directly (not through baton_ort) so that this test
// depends only on the zoo; the test target links onnxruntime::onnxruntime.
#include "baton/zoo/zoo.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "baton/graph/builder.h"
#include "baton/graph/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"
#include "onnx/shape_inference/implementation.h"
#include "onnxruntime_cxx_api.h"

namespace baton {
namespace {

using ::testing::HasSubstr;

const std::vector<std::string> kModelNames = {"resnet", "mobilenetv2", "squeezenet", "vgg",   "unet",
                                              "yolo",   "transformer", "lstm",       "ifloop"};

onnx::ModelProto Parse(const std::string& bytes) {
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(bytes));
  return model;
}

// Runs the checker and strict shape inference; returns "" or the error text.
std::string CheckAndInfer(onnx::ModelProto& model) {
  try {
    onnx::checker::check_model(model);
    onnx::ShapeInferenceOptions options(/*check_type_val=*/true, /*strict_mode_val=*/1,
                                        /*data_prop_val=*/false);
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(), options);
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::vector<float> FloatsOf(const onnx::TensorProto& t) {
  EXPECT_EQ(t.data_type(), onnx::TensorProto::FLOAT) << t.name();
  std::vector<float> v(t.raw_data().size() / sizeof(float));
  std::memcpy(v.data(), t.raw_data().data(), v.size() * sizeof(float));
  return v;
}

int64_t NumElements(const onnx::TensorProto& t) {
  int64_t n = 1;
  for (int64_t d : t.dims()) n *= d;
  return n;
}

// Visits `graph` and every subgraph below it.
template <typename F>
void ForEachGraph(const onnx::GraphProto& graph, const F& f) {
  f(graph);
  for (const onnx::NodeProto& node : graph.node()) {
    for (const onnx::AttributeProto& attr : node.attribute()) {
      if (attr.has_g()) ForEachGraph(attr.g(), f);
      for (const onnx::GraphProto& g : attr.graphs()) ForEachGraph(g, f);
    }
  }
}

std::map<std::string, int> OpCounts(const onnx::GraphProto& graph) {
  std::map<std::string, int> counts;
  for (const onnx::NodeProto& node : graph.node()) counts[node.op_type()]++;
  return counts;
}

const onnx::NodeProto* FindNode(const onnx::GraphProto& graph, const std::string& name) {
  for (const onnx::NodeProto& node : graph.node()) {
    if (node.name() == name) return &node;
  }
  return nullptr;
}

// Names a subgraph reads without defining them (its outer-scope reads), recursively.
std::set<std::string> OuterScopeReads(const onnx::GraphProto& graph) {
  std::set<std::string> defined, reads;
  for (const auto& v : graph.input()) defined.insert(v.name());
  for (const auto& t : graph.initializer()) defined.insert(t.name());
  for (const auto& node : graph.node()) {
    for (const auto& out : node.output()) defined.insert(out);
  }
  for (const auto& node : graph.node()) {
    for (const auto& in : node.input()) {
      if (!in.empty() && !defined.count(in)) reads.insert(in);
    }
    for (const auto& attr : node.attribute()) {
      if (attr.has_g()) {
        for (const std::string& r : OuterScopeReads(attr.g())) {
          if (!defined.count(r)) reads.insert(r);
        }
      }
    }
  }
  for (const auto& out : graph.output()) {
    if (!defined.count(out.name())) reads.insert(out.name());
  }
  return reads;
}

// Static shape of a graph input/output/value_info entry; empty optional if a dim is unknown.
std::optional<std::vector<int64_t>> StaticShape(const onnx::ValueInfoProto& v) {
  if (!v.type().tensor_type().has_shape()) return std::nullopt;
  std::vector<int64_t> dims;
  for (const auto& d : v.type().tensor_type().shape().dim()) {
    if (!d.has_dim_value()) return std::nullopt;
    dims.push_back(d.dim_value());
  }
  return dims;
}

// ---- ONNX Runtime ----

Ort::Env& Env() {
  static Ort::Env* env = new Ort::Env(ORT_LOGGING_LEVEL_WARNING, "zoo_test");
  return *env;
}

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> f;
  std::vector<int64_t> i;  // for int64 inputs
};

// Runs `model` with the given inputs (by name) and returns every graph output.
std::map<std::string, HostTensor> RunOrt(const onnx::ModelProto& model, std::map<std::string, HostTensor>& inputs) {
  std::string bytes;
  model.SerializeToString(&bytes);
  Ort::SessionOptions options;
  options.SetIntraOpNumThreads(1);
  options.SetInterOpNumThreads(1);
  Ort::Session session(Env(), bytes.data(), bytes.size(), options);
  Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<const char*> in_names, out_names;
  std::vector<Ort::Value> in_values;
  for (auto& [name, t] : inputs) {
    in_names.push_back(name.c_str());
    if (!t.i.empty()) {
      in_values.push_back(
          Ort::Value::CreateTensor<int64_t>(memory, t.i.data(), t.i.size(), t.shape.data(), t.shape.size()));
    } else {
      in_values.push_back(
          Ort::Value::CreateTensor<float>(memory, t.f.data(), t.f.size(), t.shape.data(), t.shape.size()));
    }
  }
  for (const auto& out : model.graph().output()) out_names.push_back(out.name().c_str());
  std::vector<Ort::Value> outs = session.Run(Ort::RunOptions{nullptr}, in_names.data(), in_values.data(),
                                             in_values.size(), out_names.data(), out_names.size());
  std::map<std::string, HostTensor> result;
  for (size_t k = 0; k < outs.size(); ++k) {
    auto info = outs[k].GetTensorTypeAndShapeInfo();
    HostTensor t;
    t.shape = info.GetShape();
    EXPECT_EQ(info.GetElementType(), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) << out_names[k];
    const float* data = outs[k].GetTensorData<float>();
    t.f.assign(data, data + info.GetElementCount());
    result[out_names[k]] = std::move(t);
  }
  return result;
}

// Deterministic pseudo-random values in [-1, 1).
std::vector<float> TestData(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  for (float& x : v) {
    seed = seed * 1664525u + 1013904223u;
    x = static_cast<float>(seed >> 8) / static_cast<float>(1u << 23) - 1.0f;
  }
  return v;
}

std::map<std::string, HostTensor> TestInputs(const onnx::ModelProto& model) {
  std::map<std::string, HostTensor> inputs;
  uint32_t seed = 1;
  for (const auto& in : model.graph().input()) {
    HostTensor t;
    t.shape = *StaticShape(in);
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    if (in.type().tensor_type().elem_type() == onnx::TensorProto::INT64) {
      for (int64_t k = 0; k < n; ++k) t.i.push_back((k * 37 + 5) % 100);  // valid ids for every vocab
    } else {
      t.f = TestData(static_cast<size_t>(n), seed++);
    }
    inputs[in.name()] = std::move(t);
  }
  return inputs;
}

// ---- every model ----

TEST(ZooTest, ListsEveryModelOnce) {
  std::vector<std::string> names;
  for (const zoo::ZooEntry& e : zoo::List()) {
    names.push_back(e.name);
    EXPECT_FALSE(e.description.empty()) << e.name;
  }
  EXPECT_EQ(names, kModelNames);
}

TEST(ZooTest, UnknownNameIsNotFoundAndListsValidNames) {
  absl::StatusOr<std::string> bytes = zoo::Generate("resnet50", true);
  ASSERT_FALSE(bytes.ok());
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(bytes.status().message(), HasSubstr("resnet50"));
  EXPECT_THAT(bytes.status().message(), HasSubstr("mobilenetv2"));
  EXPECT_EQ(zoo::Stats("", false).status().code(), absl::StatusCode::kNotFound);
}

class ZooModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ZooModelTest, SmallVariantIsDeterministicValidAndRuns) {
  const std::string& name = GetParam();
  absl::StatusOr<std::string> bytes = zoo::Generate(name, /*small=*/true);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<std::string> again = zoo::Generate(name, /*small=*/true);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(*bytes == *again) << "generation is not deterministic";

  onnx::ModelProto model = Parse(*bytes);
  EXPECT_EQ(model.ir_version(), 8);
  EXPECT_EQ(model.producer_name(), "baton-zoo");
  ASSERT_EQ(model.opset_import_size(), 1);
  EXPECT_EQ(model.opset_import(0).domain(), "");
  EXPECT_EQ(model.opset_import(0).version(), 17);
  ASSERT_EQ(CheckAndInfer(model), "");

  // Every top-level value has a fully static inferred shape (fixed shapes, batch 1).
  std::set<std::string> static_values;
  for (const auto& v : model.graph().value_info()) {
    if (StaticShape(v)) static_values.insert(v.name());
  }
  for (const auto& v : model.graph().input()) {
    ASSERT_TRUE(StaticShape(v)) << v.name();
    EXPECT_EQ(StaticShape(v)->at(name == "lstm" ? 1 : 0), 1) << "batch of " << v.name();
  }
  for (const auto& v : model.graph().output()) {
    ASSERT_TRUE(StaticShape(v)) << v.name();
    static_values.insert(v.name());
  }
  for (const auto& node : model.graph().node()) {
    for (const auto& out : node.output()) {
      if (!out.empty()) {
        EXPECT_TRUE(static_values.count(out)) << "no static shape for " << out;
      }
    }
  }

  // Node names are unique and non-empty across the model, subgraphs included.
  std::set<std::string> node_names;
  int64_t float_elements = 0;
  ForEachGraph(model.graph(), [&](const onnx::GraphProto& g) {
    for (const auto& node : g.node()) {
      EXPECT_FALSE(node.name().empty());
      EXPECT_TRUE(node_names.insert(node.name()).second) << "duplicate node name " << node.name();
    }
    for (const auto& t : g.initializer()) {
      if (t.data_type() == onnx::TensorProto::FLOAT) float_elements += NumElements(t);
    }
  });
  absl::StatusOr<zoo::ZooStats> stats = zoo::Stats(name, true);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->parameters, float_elements);
  EXPECT_EQ(stats->nodes, model.graph().node_size());
  EXPECT_GT(stats->macs, 0);

  // baton's own loader accepts it as is.
  absl::StatusOr<std::shared_ptr<const graph::Model>> loaded = graph::Model::LoadBytes(*bytes, name);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(static_cast<int>((*loaded)->nodes().size()), model.graph().node_size());
  EXPECT_TRUE((*loaded)->warnings().empty()) << (*loaded)->warnings().front();

  // ONNX Runtime runs it; outputs match the declared shapes, are finite, O(1)
  // in magnitude and not constant.
  std::map<std::string, HostTensor> inputs = TestInputs(model);
  std::map<std::string, HostTensor> outputs;
  ASSERT_NO_THROW(outputs = RunOrt(model, inputs));
  for (const auto& out : model.graph().output()) {
    const HostTensor& t = outputs.at(out.name());
    EXPECT_EQ(t.shape, *StaticShape(out)) << out.name();
    float max_abs = 0;
    for (float v : t.f) {
      ASSERT_TRUE(std::isfinite(v)) << out.name();
      max_abs = std::max(max_abs, std::abs(v));
    }
    EXPECT_LT(max_abs, 100.0f) << out.name();
    EXPECT_GT(max_abs, 1e-3f) << out.name();
    EXPECT_NE(*std::min_element(t.f.begin(), t.f.end()), *std::max_element(t.f.begin(), t.f.end()))
        << out.name() << " is constant";
  }
}

INSTANTIATE_TEST_SUITE_P(AllModels, ZooModelTest, ::testing::ValuesIn(kModelNames),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

TEST(ZooTest, FullVariantsAreValidAndRealisticallySized) {
  std::map<std::string, int64_t> params;
  for (const std::string& name : kModelNames) {
    SCOPED_TRACE(name);
    absl::StatusOr<std::string> bytes = zoo::Generate(name, /*small=*/false);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    onnx::ModelProto model = Parse(*bytes);
    ASSERT_EQ(CheckAndInfer(model), "");
    absl::StatusOr<zoo::ZooStats> stats = zoo::Stats(name, false);
    ASSERT_TRUE(stats.ok());
    int64_t float_elements = 0;
    ForEachGraph(model.graph(), [&](const onnx::GraphProto& g) {
      for (const auto& t : g.initializer()) {
        if (t.data_type() == onnx::TensorProto::FLOAT) float_elements += NumElements(t);
      }
    });
    EXPECT_EQ(stats->parameters, float_elements);
    EXPECT_LT(bytes->size(), size_t{150} << 20);
    params[name] = stats->parameters;
    EXPECT_GT(stats->parameters, zoo::Stats(name, true)->parameters);
    EXPECT_GT(stats->macs, zoo::Stats(name, true)->macs);
  }
  // ResNet-18: 11.7M parameters, 1.8G multiply-accumulates.
  EXPECT_NEAR(params["resnet"], 11.7e6, 0.1e6);
  EXPECT_NEAR(static_cast<double>(zoo::Stats("resnet", false)->macs), 1.82e9, 0.03e9);
  // MobileNetV2: 3.5M; SqueezeNet 1.1: 1.24M.
  EXPECT_NEAR(params["mobilenetv2"], 3.5e6, 0.1e6);
  EXPECT_NEAR(params["squeezenet"], 1.24e6, 0.02e6);
}

// ---- per-model features ----

onnx::ModelProto SmallModel(const std::string& name) {
  absl::StatusOr<std::string> bytes = zoo::Generate(name, true);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return Parse(bytes.value_or(""));
}

TEST(ZooFeatureTest, ResNetHasResidualBlocksWithBatchNorm) {
  const auto ops = OpCounts(SmallModel("resnet").graph());
  EXPECT_EQ(ops.at("Conv"), 20);
  EXPECT_EQ(ops.at("BatchNormalization"), 20);
  EXPECT_EQ(ops.at("Add"), 8);
  EXPECT_EQ(ops.at("MaxPool"), 1);
  EXPECT_EQ(ops.at("Gemm"), 1);
}

TEST(ZooFeatureTest, MobileNetV2HasDepthwiseConvRelu6AndResiduals) {
  const onnx::ModelProto model = SmallModel("mobilenetv2");
  std::map<std::string, int64_t> channels;  // output channels of each conv, from its weight
  for (const auto& t : model.graph().initializer()) {
    if (t.dims_size() == 4) channels[t.name()] = t.dims(0);
  }
  int depthwise = 0;
  for (const auto& node : model.graph().node()) {
    if (node.op_type() != "Conv") continue;
    for (const auto& attr : node.attribute()) {
      if (attr.name() == "group" && attr.i() > 1) {
        EXPECT_EQ(attr.i(), channels.at(node.input(1))) << node.name() << " is grouped but not depthwise";
        ++depthwise;
      }
    }
  }
  EXPECT_GE(depthwise, 7);
  const auto ops = OpCounts(model.graph());
  EXPECT_GE(ops.at("Clip"), 10);
  EXPECT_GE(ops.at("Add"), 3);
}

TEST(ZooFeatureTest, SqueezeNetHasFireModules) {
  const auto ops = OpCounts(SmallModel("squeezenet").graph());
  EXPECT_EQ(ops.at("Concat"), 8);
  EXPECT_EQ(ops.at("MaxPool"), 3);
}

TEST(ZooFeatureTest, VggIsAConvChainWithGemmClassifier) {
  const auto ops = OpCounts(SmallModel("vgg").graph());
  EXPECT_EQ(ops.at("Conv"), 8);
  EXPECT_EQ(ops.at("MaxPool"), 5);
  EXPECT_EQ(ops.at("Gemm"), 3);
  EXPECT_EQ(ops.count("Add"), 0u);
}

TEST(ZooFeatureTest, UNetUpsamplesAndConcatenatesSkips) {
  onnx::ModelProto model = SmallModel("unet");
  const auto ops = OpCounts(model.graph());
  EXPECT_EQ(ops.at("ConvTranspose"), 2);
  EXPECT_EQ(ops.at("Resize"), 2);
  EXPECT_EQ(ops.at("Concat"), 4);
  EXPECT_EQ(ops.at("MaxPool"), 4);
  // Each skip Concat joins an encoder tensor with a decoder tensor of the same scale.
  for (int level = 1; level <= 4; ++level) {
    const onnx::NodeProto* concat = FindNode(model.graph(), "up" + std::to_string(level) + ".concat");
    ASSERT_NE(concat, nullptr);
    EXPECT_EQ(concat->input(0), "down" + std::to_string(level) + ".b");
  }
  ASSERT_EQ(model.graph().output_size(), 1);
  EXPECT_EQ(*StaticShape(model.graph().output(0)), (std::vector<int64_t>{1, 2, 32, 32}));
}

TEST(ZooFeatureTest, YoloHasHeadsAtThreeScales) {
  onnx::ModelProto model = SmallModel("yolo");
  ASSERT_EQ(model.graph().output_size(), 3);
  std::set<int64_t> grid_sizes;
  for (const auto& out : model.graph().output()) {
    const std::vector<int64_t> shape = *StaticShape(out);
    ASSERT_EQ(shape.size(), 5u);  // [1, anchors, H, W, 5 + classes]
    grid_sizes.insert(shape[2]);
  }
  EXPECT_EQ(grid_sizes, (std::set<int64_t>{2, 4, 8}));
  const auto ops = OpCounts(model.graph());
  EXPECT_EQ(ops.at("Resize"), 2);
  EXPECT_EQ(ops.at("Concat"), 2);
  EXPECT_GE(ops.at("Add"), 7);
}

TEST(ZooFeatureTest, TransformerHasAttentionAndLayerNorm) {
  onnx::ModelProto model = SmallModel("transformer");
  const auto ops = OpCounts(model.graph());
  EXPECT_EQ(ops.at("Gather"), 1);
  EXPECT_EQ(ops.at("Softmax"), 2);
  EXPECT_EQ(ops.at("LayerNormalization"), 5);
  EXPECT_GE(ops.at("MatMul"), 2 * 8);
  EXPECT_EQ(ops.at("Erf"), 2);
  ASSERT_EQ(model.graph().input_size(), 1);
  EXPECT_EQ(model.graph().input(0).type().tensor_type().elem_type(), onnx::TensorProto::INT64);
}

TEST(ZooFeatureTest, LstmHasRecurrentOps) {
  const auto ops = OpCounts(SmallModel("lstm").graph());
  EXPECT_EQ(ops.at("LSTM"), 1);
  EXPECT_EQ(ops.at("GRU"), 1);
}

// ---- ifloop: structure and a reference computation ----

TEST(ZooFeatureTest, IfLoopSubgraphsReadOuterScopeValuesMadeByNodes) {
  onnx::ModelProto model = SmallModel("ifloop");
  std::set<std::string> node_outputs;
  for (const auto& node : model.graph().node()) node_outputs.insert(node.output().begin(), node.output().end());
  const onnx::NodeProto* if_node = FindNode(model.graph(), "branch");
  const onnx::NodeProto* loop_node = FindNode(model.graph(), "loop");
  ASSERT_NE(if_node, nullptr);
  ASSERT_NE(loop_node, nullptr);
  EXPECT_EQ(if_node->op_type(), "If");
  EXPECT_EQ(loop_node->op_type(), "Loop");
  ASSERT_EQ(if_node->attribute_size(), 2);
  for (const auto& attr : if_node->attribute()) {
    const std::set<std::string> reads = OuterScopeReads(attr.g());
    EXPECT_TRUE(reads.count("h")) << attr.name();
    EXPECT_TRUE(node_outputs.count("h"));
  }
  EXPECT_THAT(OuterScopeReads(if_node->attribute(1).g()), ::testing::Contains("gate"));
  ASSERT_EQ(loop_node->attribute_size(), 1);
  EXPECT_EQ(OuterScopeReads(loop_node->attribute(0).g()), (std::set<std::string>{"h"}));
  // baton's graph view sees the same outer-scope reads as implicit inputs.
  absl::StatusOr<std::shared_ptr<const graph::Model>> loaded =
      graph::Model::LoadBytes(zoo::Generate("ifloop", true).value(), "ifloop");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const graph::Node& if_view = (*loaded)->node(*(*loaded)->FindNode("branch"));
  const graph::Node& loop_view = (*loaded)->node(*(*loaded)->FindNode("loop"));
  EXPECT_THAT(if_view.implicit_inputs, ::testing::IsSupersetOf({"h", "gate"}));
  EXPECT_THAT(loop_view.implicit_inputs, ::testing::ElementsAre("h"));
  // The If condition is computed from the data; nodes precede and follow.
  EXPECT_EQ(if_node->input(0), "cond");
  EXPECT_EQ(model.graph().node(0).name(), "pre.matmul");
  EXPECT_EQ(model.graph().node(model.graph().node_size() - 1).op_type(), "Gemm");
}

std::vector<float> Affine(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                          bool transposed) {
  const size_t in = x.size(), out = b.size();
  std::vector<float> y(b);
  for (size_t j = 0; j < out; ++j) {
    for (size_t k = 0; k < in; ++k) y[j] += x[k] * (transposed ? w[j * in + k] : w[k * out + j]);
  }
  return y;
}

TEST(ZooFeatureTest, IfLoopTakesBothBranchesAndMatchesReference) {
  onnx::ModelProto model = SmallModel("ifloop");
  std::map<std::string, std::vector<float>> w;
  ForEachGraph(model.graph(), [&](const onnx::GraphProto& g) {
    for (const auto& t : g.initializer()) {
      if (t.data_type() == onnx::TensorProto::FLOAT) w[t.name()] = FloatsOf(t);
    }
  });
  // Also expose the If result to check which branch ran.
  onnx::ValueInfoProto* extra = model.mutable_graph()->add_output();
  extra->set_name("branch");
  extra->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);

  const size_t d = 16;
  for (float sign : {1.0f, -1.0f}) {
    SCOPED_TRACE(sign > 0 ? "then" : "else");
    std::vector<float> x = TestData(d, 7);
    for (float& v : x) v = sign * std::abs(v);
    std::map<std::string, HostTensor> inputs;
    inputs["x"] = HostTensor{{1, static_cast<int64_t>(d)}, x, {}};
    std::map<std::string, HostTensor> outputs = RunOrt(model, inputs);

    const std::vector<float> pre = Affine(x, w.at("pre.weight"), w.at("pre.bias"), false);
    std::vector<float> h(d), gate(d), branch(d);
    for (size_t i = 0; i < d; ++i) {
      h[i] = std::max(pre[i], 0.0f);
      gate[i] = 1.0f / (1.0f + std::exp(-pre[i]));
    }
    if (sign > 0) {
      branch = Affine(h, w.at("then.weight"), std::vector<float>(d, 0.0f), false);
      for (size_t i = 0; i < d; ++i) branch[i] += h[i];
    } else {
      for (size_t i = 0; i < d; ++i) branch[i] = h[i] * gate[i];
    }
    std::vector<float> state = branch;
    for (int trip = 0; trip < 3; ++trip) {
      state = Affine(state, w.at("loop.update.weight"), w.at("loop.update.bias"), false);
      for (size_t i = 0; i < d; ++i) state[i] = std::tanh(state[i] + h[i]);
    }
    const std::vector<float> y = Affine(state, w.at("y.weight"), w.at("y.bias"), true);

    EXPECT_THAT(outputs.at("branch").f, ::testing::Pointwise(::testing::FloatNear(1e-4f), branch));
    EXPECT_THAT(outputs.at("y").f, ::testing::Pointwise(::testing::FloatNear(1e-4f), y));
  }
}

// ---- GraphBuilder ----

TEST(GraphBuilderTest, BuildsARunnableModelWithGeneratedUniqueNames) {
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {"batch", 4});
  b.AddInitializer("w", dtype::kFloat, {4, 2}, std::vector<float>{1, 0, 0, 1, 1, 0, 0, 1});
  b.AddNode("MatMul", {"x", "w"}, {"xw"});
  b.AddNode("Relu", {"xw"}, {"r"});
  b.AddNode("Relu", {"r"}, {"y"}, {}, "Relu_0");  // explicit name that a generated one would take
  b.AddOutput("y", dtype::kFloat, {"batch", ""});
  b.AddValueInfo("xw", dtype::kFloat, {"batch", 2});
  absl::StatusOr<std::string> bytes = b.Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto model = Parse(*bytes);
  const auto& out_dims = model.graph().output(0).type().tensor_type().shape().dim();
  ASSERT_EQ(out_dims.size(), 2);
  EXPECT_FALSE(out_dims[1].has_dim_value() || out_dims[1].has_dim_param());  // "" = unknown
  EXPECT_EQ(model.graph().value_info(0).name(), "xw");
  ASSERT_EQ(CheckAndInfer(model), "");
  EXPECT_EQ(model.graph().node(0).name(), "MatMul_0");
  EXPECT_EQ(model.graph().node(1).name(), "Relu_1");
  EXPECT_EQ(model.graph().node(2).name(), "Relu_0");
  EXPECT_EQ(model.graph().input(0).type().tensor_type().shape().dim(0).dim_param(), "batch");
  EXPECT_EQ(model.graph().name(), "main");

  std::map<std::string, HostTensor> inputs;
  inputs["x"] = HostTensor{{2, 4}, {1, -2, 3, 4, -1, -1, -1, -1}, {}};
  std::map<std::string, HostTensor> out = RunOrt(model, inputs);
  EXPECT_EQ(out.at("y").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(out.at("y").f, (std::vector<float>{4, 2, 0, 0}));
}

TEST(GraphBuilderTest, SubgraphNodesGetPrefixedNamesAndAttributesRoundTrip) {
  graph::GraphBuilder then_branch("then_branch");
  then_branch.AddNode("Constant", {}, {"a"},
                      {graph::Attr::Tensor("value", dtype::kFloat, {2}, std::vector<float>{1, 2})});
  then_branch.AddOutput("a", dtype::kFloat);  // shape left to inference
  graph::GraphBuilder else_branch("else_branch");
  else_branch.AddNode("Constant", {}, {"b"},
                      {graph::Attr::Tensor("value", dtype::kFloat, {2}, std::vector<float>{3, 4})});
  else_branch.AddOutput("b", dtype::kFloat, {2});

  graph::GraphBuilder b;
  b.SetOpset(17);
  b.AddInput("c", dtype::kBool, {});
  b.AddNode("If", {"c"}, {"y"},
            {graph::Attr::Graph("then_branch", then_branch), graph::Attr::Graph("else_branch", else_branch)});
  b.AddNode("Constant", {}, {"k"}, {graph::Attr::Tensor("value", dtype::kInt64, {3}, std::vector<int64_t>{1, -2, 3})});
  b.AddNode("Identity", {"k"}, {"k2"});
  b.AddNode("LeakyRelu", {"y"}, {"z"}, {graph::Attr::Float("alpha", 0.5f)});
  b.AddNode("Transpose", {"z"}, {"t"}, {graph::Attr::Ints("perm", {0})});
  b.AddOutput("t", dtype::kFloat, {2});
  b.AddOutput("k2", dtype::kInt64, {3});
  absl::StatusOr<std::string> bytes = b.Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto model = Parse(*bytes);
  ASSERT_EQ(CheckAndInfer(model), "");
  const onnx::NodeProto& if_node = model.graph().node(0);
  EXPECT_EQ(if_node.name(), "If_0");
  EXPECT_EQ(if_node.attribute(0).g().node(0).name(), "If_0/then_branch/Constant_0");
  EXPECT_EQ(if_node.attribute(1).g().node(0).name(), "If_0/else_branch/Constant_0");
  EXPECT_EQ(model.graph().node(1).name(), "Constant_0");
  EXPECT_FLOAT_EQ(model.graph().node(3).attribute(0).f(), 0.5f);

  std::map<std::string, HostTensor> none;
  // Bool inputs are not in HostTensor; run with a constant condition instead.
  onnx::ModelProto fixed = model;
  fixed.mutable_graph()->clear_input();
  onnx::TensorProto* cond = fixed.mutable_graph()->add_initializer();
  cond->set_name("c");
  cond->set_data_type(onnx::TensorProto::BOOL);
  cond->set_raw_data(std::string(1, '\0'));
  fixed.mutable_graph()->mutable_output()->RemoveLast();  // keep the float output only
  std::map<std::string, HostTensor> out = RunOrt(fixed, none);
  EXPECT_EQ(out.at("t").f, (std::vector<float>{3, 4}));
}

TEST(GraphBuilderTest, InitializerTypesAreStoredLittleEndianInRawData) {
  graph::GraphBuilder b;
  b.AddInitializer("i32", dtype::kInt32, {2}, std::vector<int64_t>{1, -2});
  b.AddInitializer("u8", dtype::kUint8, {2}, std::vector<int64_t>{0, 255});
  b.AddInitializer("flag", dtype::kBool, {}, std::vector<int64_t>{1});
  b.AddInitializer("d", dtype::kDouble, {1}, std::vector<float>{0.5f});
  b.AddNode("Identity", {"i32"}, {"y"});
  b.AddOutput("y", dtype::kInt32, {2});
  absl::StatusOr<std::string> bytes = b.Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto model = Parse(*bytes);
  ASSERT_EQ(CheckAndInfer(model), "");
  const auto& inits = model.graph().initializer();
  EXPECT_EQ(inits[0].raw_data(), std::string("\x01\x00\x00\x00\xfe\xff\xff\xff", 8));
  EXPECT_EQ(inits[1].raw_data(), std::string("\x00\xff", 2));
  EXPECT_EQ(inits[2].raw_data(), std::string("\x01", 1));
  EXPECT_EQ(inits[2].dims_size(), 0);
  EXPECT_EQ(inits[3].data_type(), onnx::TensorProto::DOUBLE);
  EXPECT_EQ(inits[3].raw_data().size(), 8u);
}

TEST(GraphBuilderTest, MisuseIsReportedBySerialize) {
  {
    graph::GraphBuilder b;
    b.AddInitializer("w", dtype::kFloat, {2, 3}, std::vector<float>{1, 2});
    EXPECT_THAT(b.Serialize().status().message(), HasSubstr("initializer 'w': 2 values given for dims [2,3]"));
  }
  {
    graph::GraphBuilder b;
    b.AddInitializer("w", dtype::kInt8, {1}, std::vector<int64_t>{300});
    EXPECT_THAT(b.Serialize().status().message(), HasSubstr("300 does not fit"));
  }
  {
    graph::GraphBuilder b;
    b.AddInitializer("w", dtype::kBool, {1}, std::vector<int64_t>{2});
    EXPECT_THAT(b.Serialize().status().message(), HasSubstr("not a bool"));
  }
  {
    graph::GraphBuilder b;
    b.AddInitializer("w", dtype::kInt64, {1}, std::vector<float>{1});
    EXPECT_THAT(b.Serialize().status().message(), HasSubstr("float data cannot be stored as int64"));
  }
  {
    graph::GraphBuilder b;
    b.AddInput("x", dtype::kFloat, {-3});
    EXPECT_THAT(b.Serialize().status().message(), HasSubstr("negative dimension"));
  }
  {
    graph::GraphBuilder b;
    b.AddNode("Relu", {"x"}, {"y"}, {}, "same");
    b.AddNode("Relu", {"y"}, {"z"}, {}, "same");
    absl::StatusOr<std::string> r = b.Serialize();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("node name 'same' is used twice"));
  }
  {
    graph::GraphBuilder body("body");
    body.AddNode("", {"x"}, {"y"});
    graph::GraphBuilder b;
    b.AddNode("If", {"c"}, {"y"}, {graph::Attr::Graph("then_branch", body)}, "if");
    EXPECT_THAT(b.Serialize().status().message(), HasSubstr("graph 'body': a node has an empty op_type"));
  }
  {
    graph::GraphBuilder b;
    b.AddNode("Relu", {"x"}, {"y"}, {graph::Attr::Int("a", 1), graph::Attr::Int("a", 2)}, "r");
    EXPECT_THAT(b.Serialize().status().message(), HasSubstr("attribute 'a' twice"));
  }
}

TEST(GraphBuilderTest, CopiesAreDeepAndSerializationIsStable) {
  graph::GraphBuilder a;
  a.AddInput("x", dtype::kFloat, {1});
  a.AddNode("Relu", {"x"}, {"y"});
  a.AddOutput("y", dtype::kFloat, {1});
  graph::GraphBuilder b = a;
  b.AddNode("Relu", {"y"}, {"z"});
  EXPECT_EQ(a.num_nodes(), 1);
  EXPECT_EQ(b.num_nodes(), 2);
  EXPECT_EQ(*a.Serialize(), *a.Serialize());
  EXPECT_NE(*a.Serialize(), *b.Serialize());
}

}  // namespace
}  // namespace baton
