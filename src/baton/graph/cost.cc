#include "baton/graph/cost.h"

#include <algorithm>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "baton/core/saturate.h"
#include "baton/graph/onnx_util.h"

namespace baton::graph {

TensorType TensorTypeFromProto(const onnx::TypeProto& type) {
  TensorType t;
  if (!type.has_tensor_type()) {
    t.is_tensor = false;
    return t;
  }
  t.elem_type = type.tensor_type().elem_type();
  if (type.tensor_type().has_shape()) {
    std::vector<Dim> dims;
    for (const auto& d : type.tensor_type().shape().dim()) {
      Dim dim;
      if (d.has_dim_value()) dim.size = d.dim_value();
      if (d.has_dim_param()) dim.param = d.dim_param();
      dims.push_back(std::move(dim));
    }
    t.shape = std::move(dims);
  }
  return t;
}

TensorType TensorTypeFromInitializer(const onnx::TensorProto& tensor) {
  TensorType t;
  t.elem_type = tensor.data_type();
  std::vector<Dim> dims;
  for (int64_t d : tensor.dims()) dims.push_back(Dim{d, ""});
  t.shape = std::move(dims);
  return t;
}

namespace {

int64_t Elements(const TensorType* t) { return t ? t->NumElements().value_or(0) : 0; }

std::optional<int64_t> DimAt(const TensorType* t, int index) {
  if (!t || !t->shape) return std::nullopt;
  int rank = static_cast<int>(t->shape->size());
  if (index < 0) index += rank;
  if (index < 0 || index >= rank) return std::nullopt;
  return (*t->shape)[index].size;
}

int64_t IntAttr(const onnx::NodeProto& p, const char* name, int64_t def) {
  for (const auto& a : p.attribute()) {
    if (a.name() == name) return a.i();
  }
  return def;
}

}  // namespace

namespace {

int64_t TensorBytes(const onnx::TensorProto& t) {
  if (!t.raw_data().empty()) return static_cast<int64_t>(t.raw_data().size());
  return TensorTypeFromInitializer(t).Bytes().value_or(0);
}

int64_t EstimateFlops(const Node& node, const onnx::NodeProto& proto, const TypeLookup& lookup);

// Cost of a subgraph: types come from the body's own declarations first, then the outer scope.
NodeCost GraphCost(const onnx::GraphProto& g, const TypeLookup& outer) {
  auto types = std::make_shared<absl::flat_hash_map<std::string, TensorType>>();
  for (const auto& vi : g.input()) (*types)[vi.name()] = TensorTypeFromProto(vi.type());
  for (const auto& vi : g.value_info()) (*types)[vi.name()] = TensorTypeFromProto(vi.type());
  for (const auto& vi : g.output()) (*types)[vi.name()] = TensorTypeFromProto(vi.type());
  for (const auto& t : g.initializer()) (*types)[t.name()] = TensorTypeFromInitializer(t);
  TypeLookup lookup = [types, &outer](const std::string& name) -> const TensorType* {
    auto it = types->find(name);
    return it != types->end() ? &it->second : outer(name);
  };
  NodeCost total;
  for (const auto& t : g.initializer()) total.embedded_param_bytes += TensorBytes(t);
  for (const auto& np : g.node()) {
    Node node;
    node.op_type = np.op_type();
    node.domain = np.domain();
    node.inputs.assign(np.input().begin(), np.input().end());
    node.outputs.assign(np.output().begin(), np.output().end());
    NodeCost c = EstimateNodeCost(node, np, lookup);
    total.flops = SatAdd(total.flops, c.flops);
    total.embedded_param_bytes += c.embedded_param_bytes;
  }
  return total;
}

}  // namespace

NodeCost EstimateNodeCost(const Node& node, const onnx::NodeProto& proto, const TypeLookup& lookup) {
  NodeCost cost;
  cost.flops = EstimateFlops(node, proto, lookup);
  int64_t branch_flops = 0;
  for (const auto& a : proto.attribute()) {
    if (a.has_t()) cost.embedded_param_bytes += TensorBytes(a.t());
    std::vector<const onnx::GraphProto*> bodies;
    if (a.has_g()) bodies.push_back(&a.g());
    for (const auto& sg : a.graphs()) bodies.push_back(&sg);
    for (const auto* body : bodies) {
      NodeCost c = GraphCost(*body, lookup);
      cost.embedded_param_bytes += c.embedded_param_bytes;
      // If runs one branch: count the costlier one. Loop/Scan: the body once.
      branch_flops = node.op_type == "If" ? std::max(branch_flops, c.flops) : SatAdd(branch_flops, c.flops);
    }
  }
  cost.flops = SatAdd(cost.flops, branch_flops);
  return cost;
}

namespace {

int64_t EstimateFlops(const Node& node, const onnx::NodeProto& proto, const TypeLookup& lookup) {
  auto in = [&](size_t i) -> const TensorType* {
    return i < node.inputs.size() && !node.inputs[i].empty() ? lookup(node.inputs[i]) : nullptr;
  };
  const TensorType* out = node.outputs.empty() || node.outputs[0].empty() ? nullptr : lookup(node.outputs[0]);
  const std::string& op = node.op_type;
  if (!node.domain.empty() && node.domain != "ai.onnx") return Elements(out);

  if (op == "Conv" || op == "ConvTranspose") {
    const TensorType* w = in(1);
    if (!w || !w->shape || w->shape->size() < 3) return Elements(out);
    int64_t kernel = 1;
    for (size_t i = 2; i < w->shape->size(); ++i) kernel = SatMul(kernel, (*w->shape)[i].size.value_or(1));
    // Conv weight is [M, C/group, k...]: each output element reads C/group * k inputs.
    // ConvTranspose weight is [C, M/group, k...]: each input element writes M/group * k outputs.
    const int64_t per = SatMul(SatMul(2, (*w->shape)[1].size.value_or(1)), kernel);
    return SatMul(per, Elements(op == "Conv" ? out : in(0)));
  }
  if (op == "MatMul" || op == "Gemm" || op == "MatMulInteger" || op == "QLinearMatMul") {
    const TensorType* a = in(0);
    int64_t k = 0;
    if (op == "Gemm") {
      k = DimAt(a, IntAttr(proto, "transA", 0) ? 0 : 1).value_or(0);
    } else {
      k = DimAt(a, -1).value_or(0);
    }
    return SatMul(SatMul(2, Elements(out)), std::max<int64_t>(k, 1));
  }
  if (op == "LSTM" || op == "GRU" || op == "RNN") {
    const TensorType* x = in(0);
    int64_t hidden = IntAttr(proto, "hidden_size", 0);
    int64_t gates = op == "LSTM" ? 4 : (op == "GRU" ? 3 : 1);
    int64_t steps = DimAt(x, 0).value_or(1);
    int64_t batch = DimAt(x, 1).value_or(1);
    int64_t input = DimAt(x, 2).value_or(hidden);
    std::string direction;
    for (const auto& a : proto.attribute()) {
      if (a.name() == "direction") direction = a.s();
    }
    int64_t dirs = direction == "bidirectional" ? 2 : 1;
    int64_t n = 2;
    for (int64_t f : {steps, batch, dirs, gates, hidden}) n = SatMul(n, f);
    return SatMul(n, SatAdd(std::max<int64_t>(input, 0), std::max<int64_t>(hidden, 0)));
  }
  int64_t total = 0;
  for (const auto& o : node.outputs) {
    if (!o.empty()) total = SatAdd(total, Elements(lookup(o)));
  }
  return total;
}

}  // namespace

}  // namespace baton::graph

