#include "baton/graph/extract.h"

#include <algorithm>
#include <cstdint>
#include <deque>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "baton/core/tensor.h"
#include "baton/core/version.h"
#include "onnx/onnx_pb.h"

namespace baton::graph {

namespace {

std::string Q(absl::string_view s) { return absl::StrCat("'", s, "'"); }

// Membership bitmap over node ids; validates the ids.
absl::StatusOr<std::vector<bool>> Membership(const Model& model, std::span<const NodeId> nodes) {
  if (nodes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", Q(model.display_name()), ": a partition needs at least one node"));
  }
  std::vector<bool> in_set(model.nodes().size(), false);
  for (NodeId id : nodes) {
    if (id.value >= in_set.size()) {
      return absl::InvalidArgumentError(absl::StrCat("model ", Q(model.display_name()), " has no node with id ", id.value));
    }
    if (in_set[id.value]) {
      return absl::InvalidArgumentError(absl::StrCat("node ", Q(model.node(id).name), " is listed twice in a partition"));
    }
    in_set[id.value] = true;
  }
  return in_set;
}

std::vector<NodeId> SortedByTopo(const Model& model, std::span<const NodeId> nodes) {
  std::vector<NodeId> sorted(nodes.begin(), nodes.end());
  std::sort(sorted.begin(), sorted.end(),
            [&](NodeId a, NodeId b) { return model.topo_index(a) < model.topo_index(b); });
  return sorted;
}

}  // namespace

bool IsFreeConstant(const Node& node) {
  return node.op_type == "Constant" && node.domain.empty() && node.AllInputs().empty();
}

absl::Status CheckConvex(const Model& model, std::span<const NodeId> nodes) {
  BATON_ASSIGN_OR_RETURN(std::vector<bool> in_set, Membership(model, nodes));
  uint32_t last = 0;
  for (NodeId id : nodes) last = std::max(last, model.topo_index(id));
  // Walk forward from the set through outside nodes; reaching the set again means
  // a path leaves and re-enters it. Nodes after the set's last node cannot re-enter.
  std::vector<bool> visited(model.nodes().size(), false);
  std::deque<std::pair<NodeId, NodeId>> frontier;  // (outside node, set node it was reached from)
  auto push_successors = [&](NodeId from, NodeId origin, bool from_set) -> std::optional<NodeId> {
    for (const auto& out : model.node(from).outputs) {
      if (out.empty()) continue;
      for (NodeId c : model.FindValue(out)->consumers) {
        if (in_set[c.value]) {
          if (!from_set) return c;
          continue;
        }
        if (visited[c.value] || model.topo_index(c) > last) continue;
        visited[c.value] = true;
        frontier.emplace_back(c, origin);
      }
    }
    return std::nullopt;
  };
  for (NodeId id : nodes) push_successors(id, id, /*from_set=*/true);
  while (!frontier.empty()) {
    auto [cur, origin] = frontier.front();
    frontier.pop_front();
    if (auto back = push_successors(cur, origin, /*from_set=*/false)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "partition of model ", Q(model.display_name()), " is not convex: a path leaves it at node ",
          Q(model.node(origin).name), ", passes through node ", Q(model.node(cur).name),
          " outside it, and comes back at node ", Q(model.node(*back).name),
          "; add the outside node to the partition or split the partition there"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SubgraphInterface> ComputeInterface(const Model& model, std::span<const NodeId> nodes) {
  BATON_ASSIGN_OR_RETURN(std::vector<bool> in_set, Membership(model, nodes));
  SubgraphInterface iface;
  absl::flat_hash_set<std::string> seen_inputs;
  absl::flat_hash_set<uint32_t> seen_constants;
  std::vector<NodeId> sorted = SortedByTopo(model, nodes);
  for (NodeId id : sorted) {
    for (const auto& name : model.node(id).AllInputs()) {
      const Value* v = model.FindValue(name);
      if (v->kind == ValueKind::kInitializer) continue;
      if (v->producer) {
        if (in_set[v->producer->value]) continue;
        const Node& producer = model.node(*v->producer);
        if (IsFreeConstant(producer)) {
          if (seen_constants.insert(producer.id.value).second) iface.copied_constants.push_back(producer.id);
          continue;
        }
      }
      if (seen_inputs.insert(name).second) iface.inputs.push_back(name);
    }
  }
  std::sort(iface.copied_constants.begin(), iface.copied_constants.end(),
            [&](NodeId a, NodeId b) { return model.topo_index(a) < model.topo_index(b); });
  for (NodeId id : sorted) {
    const Node& node = model.node(id);
    bool free_constant = IsFreeConstant(node);
    for (const auto& out : node.outputs) {
      if (out.empty()) continue;
      const Value* v = model.FindValue(out);
      bool needed = v->is_graph_output;
      // Readers of a free constant copy it, so only a model output makes it leave the set.
      if (!free_constant) {
        for (NodeId c : v->consumers) needed = needed || !in_set[c.value];
      }
      if (needed) iface.outputs.push_back(out);
    }
  }
  return iface;
}

Submodel WholeSubmodel(const Model& model) {
  Submodel sub;
  sub.interface.inputs = model.inputs();
  sub.interface.outputs = model.outputs();
  sub.nodes = model.topo_order();
  sub.onnx_bytes = model.SerializeToString();
  sub.initializers = model.initializers();
  return sub;
}

std::vector<InitializerView> RawInitializerViews(const Model& model, const Submodel& sub) {
  absl::flat_hash_set<std::string_view> wanted(sub.initializers.begin(), sub.initializers.end());
  std::vector<InitializerView> views;
  for (const onnx::TensorProto& init : model.proto().graph().initializer()) {
    if (!wanted.contains(init.name())) continue;
    if (init.data_location() == onnx::TensorProto::EXTERNAL || init.has_segment()) continue;
    const std::string& raw = init.raw_data();
    if (raw.size() < kMinSharedInitializerBytes || reinterpret_cast<uintptr_t>(raw.data()) % 16 != 0) continue;
    const ElemType type = static_cast<ElemType>(init.data_type());
    std::vector<int64_t> dims(init.dims().begin(), init.dims().end());
    // nullopt for strings, unknown types, negative dims and overflow.
    if (Tensor::ExpectedBytes(type, dims) != raw.size()) continue;
    views.push_back(InitializerView{init.name(), type, std::move(dims), std::string_view(raw.data(), raw.size())});
  }
  return views;
}

absl::StatusOr<Submodel> ExtractSubmodel(const Model& model, std::span<const NodeId> nodes,
                                         const std::string& graph_name) {
  BATON_RETURN_IF_ERROR(CheckConvex(model, nodes));
  BATON_ASSIGN_OR_RETURN(SubgraphInterface iface, ComputeInterface(model, nodes));
  Submodel sub;
  sub.nodes = SortedByTopo(model, nodes);

  const onnx::ModelProto& src = model.proto();
  const onnx::GraphProto& g = src.graph();
  onnx::ModelProto dst;
  dst.set_ir_version(src.ir_version());
  dst.set_producer_name("baton");
  dst.set_producer_version(kVersion);
  dst.set_domain(src.domain());
  dst.set_model_version(src.model_version());
  *dst.mutable_opset_import() = src.opset_import();
  *dst.mutable_functions() = src.functions();
  onnx::GraphProto* out = dst.mutable_graph();
  out->set_name(graph_name);

  absl::flat_hash_map<absl::string_view, const onnx::ValueInfoProto*> infos;
  for (const auto& vi : g.value_info()) infos[vi.name()] = &vi;
  for (const auto& vi : g.output()) infos[vi.name()] = &vi;
  for (const auto& vi : g.input()) infos[vi.name()] = &vi;
  auto value_info = [&](const std::string& name) {
    onnx::ValueInfoProto vi;
    auto it = infos.find(name);
    if (it != infos.end()) vi = *it->second;
    vi.set_name(name);
    return vi;
  };
  for (const auto& name : iface.inputs) *out->add_input() = value_info(name);
  for (const auto& name : iface.outputs) *out->add_output() = value_info(name);

  absl::flat_hash_set<std::string> needed_initializers;
  absl::flat_hash_set<std::string> produced_inside;
  auto copy_node = [&](NodeId id) {
    *out->add_node() = g.node(static_cast<int>(id.value));
    const Node& node = model.node(id);
    for (const auto& name : node.AllInputs()) {
      if (model.FindValue(name)->kind == ValueKind::kInitializer) needed_initializers.insert(name);
    }
    for (const auto& o : node.outputs) {
      if (!o.empty()) produced_inside.insert(o);
    }
  };
  for (NodeId id : iface.copied_constants) copy_node(id);
  for (NodeId id : sub.nodes) copy_node(id);

  for (const auto& init : g.initializer()) {
    if (!needed_initializers.contains(init.name())) continue;
    *out->add_initializer() = init;
    sub.initializers.push_back(init.name());
  }
  for (const auto& sp : g.sparse_initializer()) {
    if (needed_initializers.contains(sp.values().name())) *out->add_sparse_initializer() = sp;
  }
  absl::flat_hash_set<absl::string_view> boundary(iface.outputs.begin(), iface.outputs.end());
  for (const auto& vi : g.value_info()) {
    if (produced_inside.contains(vi.name()) && !boundary.contains(vi.name())) *out->add_value_info() = vi;
  }
  sub.interface = std::move(iface);
  if (!dst.SerializeToString(&sub.onnx_bytes)) {
    return absl::InternalError(absl::StrCat("could not serialize partition ", Q(graph_name),
                                            " (a partition larger than 2 GiB needs external data)"));
  }
  return sub;
}

}  // namespace baton::graph
