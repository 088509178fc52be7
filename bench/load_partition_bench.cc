// Load and partition cost on a 10,000-node model (target: load + partition < 1 s).
//
// The model is generated in memory: a ladder of 1,000 residual blocks on a
// [1,16,8,8] activation, each block
//     h -> Conv3x3 -> Relu -> Conv1x1 -> Add(h) -> Relu = r
//     r -> Mul(scale) -> Sigmoid -> Mul(r) -> MatMul(8x8) -> Add(skip) -> next h
// (10 nodes), where `skip` is r, except every 8th block, where it is the output
// of the block 8 earlier (a long skip that crosses the cut points). Every block
// has its own weights (about 10 KiB), so the file is about 10.6 MiB, like a
// small real CNN.
//
// Benchmarks:
//   BM_LoadBytes              graph::Model::LoadBytes (parse, validate, sort, shape-infer, cost)
//   BM_LoadCutExtract/8       LoadBytes + partition::CutBalanced(K=8) + ExtractSubmodel of every partition
//   BM_CutBalanced/8          CutBalanced alone on a loaded model
//   BM_ExtractAll/8           ExtractSubmodel of every partition of a K=8 plan
// Run: build/<dir>/bench/load_partition_bench --benchmark_min_time=2s
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/graph/extract.h"
#include "baton/graph/model.h"
#include "baton/partition/plan.h"
#include "benchmark/benchmark.h"
#include "onnx/onnx_pb.h"

namespace baton {
namespace {

constexpr int kBlocks = 1000;
constexpr int kChannels = 16;
constexpr int kSpatial = 8;
constexpr int kLongSkip = 8;

void SetShape(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
}

void AddInit(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims, float seed) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  int64_t n = 1;
  for (int64_t d : dims) {
    t->add_dims(d);
    n *= d;
  }
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = seed * static_cast<float>((i % 7) - 3) / 64.0f;
  t->set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
}

onnx::NodeProto* AddNode(onnx::GraphProto* g, const std::string& op, std::vector<std::string> in,
                         const std::string& out) {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(out);
  for (auto& i : in) n->add_input(std::move(i));
  n->add_output(out);
  return n;
}

std::string MakeLadderModel() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("load_partition_bench");
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("ladder10k");
  const std::vector<int64_t> act = {1, kChannels, kSpatial, kSpatial};
  SetShape(g->add_input(), "x", act);

  std::vector<std::string> block_out;
  std::string h = "x";
  for (int b = 0; b < kBlocks; ++b) {
    const std::string p = absl::StrCat("b", b, "_");
    const float seed = 1.0f + static_cast<float>(b % 5) / 10.0f;
    AddInit(g, p + "w1", {kChannels, kChannels, 3, 3}, seed);
    AddInit(g, p + "b1", {kChannels}, seed);
    AddInit(g, p + "w2", {kChannels, kChannels, 1, 1}, seed);
    AddInit(g, p + "scale", {1, kChannels, 1, 1}, seed);
    AddInit(g, p + "mm", {kSpatial, kSpatial}, seed);

    auto* conv1 = AddNode(g, "Conv", {h, p + "w1", p + "b1"}, p + "conv1");
    auto* pads = conv1->add_attribute();
    pads->set_name("pads");
    pads->set_type(onnx::AttributeProto::INTS);
    for (int i = 0; i < 4; ++i) pads->add_ints(1);
    AddNode(g, "Relu", {p + "conv1"}, p + "relu1");
    AddNode(g, "Conv", {p + "relu1", p + "w2"}, p + "conv2");
    AddNode(g, "Add", {p + "conv2", h}, p + "res");
    AddNode(g, "Relu", {p + "res"}, p + "relu2");
    AddNode(g, "Mul", {p + "relu2", p + "scale"}, p + "scaled");
    AddNode(g, "Sigmoid", {p + "scaled"}, p + "gate");
    AddNode(g, "Mul", {p + "relu2", p + "gate"}, p + "gated");
    AddNode(g, "MatMul", {p + "gated", p + "mm"}, p + "mixed");
    const bool long_skip = b >= kLongSkip && b % kLongSkip == kLongSkip - 1;
    const std::string skip = long_skip ? block_out[static_cast<size_t>(b - kLongSkip)] : p + "relu2";
    AddNode(g, "Add", {p + "mixed", skip}, p + "out");
    h = p + "out";
    block_out.push_back(h);
  }
  SetShape(g->add_output(), h, act);
  std::string bytes;
  m.SerializeToString(&bytes);
  return bytes;
}

const std::string& LadderBytes() {
  static const std::string* bytes = new std::string(MakeLadderModel());
  return *bytes;
}

std::shared_ptr<const graph::Model> LoadOrNull(benchmark::State& state) {
  auto model = graph::Model::LoadBytes(LadderBytes(), "ladder10k.onnx");
  if (!model.ok()) {
    state.SkipWithError(std::string(model.status().message()).c_str());
    return nullptr;
  }
  return *std::move(model);
}

// Counters that show the model is what it claims: 10k nodes, every value's
// shape inferred, no loader warnings.
void SetCounters(benchmark::State& state, const graph::Model& model) {
  state.counters["nodes"] = static_cast<double>(model.nodes().size());
  state.counters["model_MiB"] = static_cast<double>(LadderBytes().size()) / (1 << 20);
  int64_t unknown = 0;
  for (const graph::Value& v : model.values()) unknown += v.type.NumElements().has_value() ? 0 : 1;
  state.counters["unknown_shapes"] = static_cast<double>(unknown);
  state.counters["warnings"] = static_cast<double>(model.warnings().size());
}

void BM_LoadBytes(benchmark::State& state) {
  std::shared_ptr<const graph::Model> last;
  for (auto _ : state) {
    last = LoadOrNull(state);
    if (!last) return;
    benchmark::DoNotOptimize(last.get());
  }
  SetCounters(state, *last);
}
BENCHMARK(BM_LoadBytes)->Unit(benchmark::kMillisecond);

// Returns false (after reporting the error) when a step fails.
bool CutAndExtract(benchmark::State& state, const graph::Model& model, int k) {
  auto plan = partition::CutBalanced(model, k);
  if (!plan.ok()) {
    state.SkipWithError(std::string(plan.status().message()).c_str());
    return false;
  }
  for (const auto& part : plan->partitions) {
    auto sub = graph::ExtractSubmodel(model, part.nodes, part.name);
    if (!sub.ok()) {
      state.SkipWithError(std::string(sub.status().message()).c_str());
      return false;
    }
    benchmark::DoNotOptimize(sub->onnx_bytes.data());
  }
  return true;
}

void BM_LoadCutExtract(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0));
  std::shared_ptr<const graph::Model> last;
  for (auto _ : state) {
    last = LoadOrNull(state);
    if (!last || !CutAndExtract(state, *last, k)) return;
  }
  SetCounters(state, *last);
}
BENCHMARK(BM_LoadCutExtract)->Arg(8)->Unit(benchmark::kMillisecond);

void BM_CutBalanced(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0));
  auto model = LoadOrNull(state);
  if (!model) return;
  for (auto _ : state) {
    auto plan = partition::CutBalanced(*model, k);
    if (!plan.ok()) {
      state.SkipWithError(std::string(plan.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(plan->partitions.data());
  }
  SetCounters(state, *model);
}
BENCHMARK(BM_CutBalanced)->Arg(8)->Unit(benchmark::kMillisecond);

void BM_ExtractAll(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0));
  auto model = LoadOrNull(state);
  if (!model) return;
  auto plan = partition::CutBalanced(*model, k);
  if (!plan.ok()) {
    state.SkipWithError(std::string(plan.status().message()).c_str());
    return;
  }
  for (auto _ : state) {
    for (const auto& part : plan->partitions) {
      auto sub = graph::ExtractSubmodel(*model, part.nodes, part.name);
      if (!sub.ok()) {
        state.SkipWithError(std::string(sub.status().message()).c_str());
        return;
      }
      benchmark::DoNotOptimize(sub->onnx_bytes.data());
    }
  }
  SetCounters(state, *model);
}
BENCHMARK(BM_ExtractAll)->Arg(8)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace baton

BENCHMARK_MAIN();
