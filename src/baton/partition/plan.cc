#include "baton/partition/plan.h"

#include <algorithm>
#include <numeric>
#include <queue>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/core/saturate.h"
#include "baton/partition/placed_nodes.h"
#include "nlohmann/json.hpp"

namespace baton::partition {

using graph::IsFreeConstant;
using graph::Model;
using graph::Node;

namespace internal {

// A free constant stays in a partition only when it produces a model output;
// otherwise every reader copies it (graph/extract.h).
bool MustBePlaced(const Model& model, const Node& node) {
  if (!IsFreeConstant(node)) return true;
  for (const auto& out : node.outputs) {
    if (!out.empty() && model.FindValue(out)->is_graph_output) return true;
  }
  return false;
}

std::vector<NodeId> PlacedNodes(const Model& model) {
  std::vector<NodeId> nodes;
  for (NodeId id : model.topo_order()) {
    if (MustBePlaced(model, model.node(id))) nodes.push_back(id);
  }
  return nodes;
}

}  // namespace internal

namespace {

using internal::BalancedStarts;
using internal::MustBePlaced;
using internal::PlacedNodes;

std::string Q(absl::string_view s) { return absl::StrCat("'", s, "'"); }

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The segments of `order` that begin at `starts`, merged where a cut would
// fall on a non-tensor value (a sequence, map or optional): baton moves only
// tensors between partitions, so a producer of one and all its readers stay
// in one segment.
std::vector<std::vector<NodeId>> Segments(const Model& model, const std::vector<NodeId>& order,
                                          std::vector<size_t> starts) {
  absl::flat_hash_map<uint32_t, size_t> position;
  for (size_t i = 0; i < order.size(); ++i) position[order[i].value] = i;
  auto segment_of = [&](size_t pos) {
    return static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), pos) - starts.begin()) - 1;
  };
  for (bool merged = true; merged;) {
    merged = false;
    for (const graph::Value& v : model.values()) {
      if (v.type.is_tensor || !v.producer) continue;
      auto from = position.find(v.producer->value);
      if (from == position.end()) continue;
      const size_t first = segment_of(from->second);
      size_t last = first;
      for (NodeId c : v.consumers) {
        if (auto to = position.find(c.value); to != position.end()) last = std::max(last, segment_of(to->second));
      }
      if (last > first) {
        starts.erase(starts.begin() + static_cast<long>(first) + 1, starts.begin() + static_cast<long>(last) + 1);
        merged = true;
      }
    }
  }
  std::vector<std::vector<NodeId>> groups;
  for (size_t i = 0; i < starts.size(); ++i) {
    size_t end = i + 1 < starts.size() ? starts[i + 1] : order.size();
    groups.emplace_back(order.begin() + static_cast<long>(starts[i]), order.begin() + static_cast<long>(end));
  }
  return groups;
}

}  // namespace

double CostOf(const Node& node) {
  // ~1e5 FLOPs is what a fast CPU core does in the tens of microseconds that
  // launching any op costs, so an op is never cheaper than that.
  constexpr double kPerNodeOverheadFlops = 1e5;
  return static_cast<double>(node.flops) + kPerNodeOverheadFlops;
}

absl::StatusOr<PartitionPlan> BuildPlan(const Model& model, std::vector<std::vector<NodeId>> groups) {
  const size_t n = model.nodes().size();
  if (groups.empty()) return absl::InvalidArgumentError("a partition plan needs at least one partition");
  std::vector<std::optional<size_t>> group_of(n);
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    std::vector<NodeId> kept;
    for (NodeId id : groups[gi]) {
      if (id.value >= n) {
        return absl::InvalidArgumentError(absl::StrCat("partition ", gi, " names node id ", id.value,
                                                       " but model ", Q(model.display_name()), " has ", n, " nodes"));
      }
      if (group_of[id.value]) {
        return absl::InvalidArgumentError(absl::StrCat("node ", Q(model.node(id).name), " is in partitions ",
                                                       *group_of[id.value], " and ", gi, "; a node belongs to one partition"));
      }
      group_of[id.value] = gi;
      if (MustBePlaced(model, model.node(id))) kept.push_back(id);
    }
    groups[gi] = std::move(kept);
  }
  for (NodeId id : model.topo_order()) {
    const Node& node = model.node(id);
    if (!group_of[id.value] && MustBePlaced(model, node)) {
      if (IsFreeConstant(node)) {  // a constant model output: the last partition emits it
        groups.back().push_back(id);
        group_of[id.value] = groups.size() - 1;
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat("node ", Q(node.name), " (", node.op_type,
                                                     ") is in no partition; every node must be placed"));
    }
  }
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    if (groups[gi].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("partition ", gi, " of model ", Q(model.display_name()),
                                                     " is empty (or holds only constants, which are copied into their readers)"));
    }
    auto status = graph::CheckConvex(model, groups[gi]);
    if (!status.ok()) return absl::InvalidArgumentError(absl::StrCat("partition ", gi, ": ", status.message()));
    for (NodeId id : groups[gi]) group_of[id.value] = gi;
  }

  // Interfaces and the partition DAG.
  const size_t k = groups.size();
  std::vector<graph::SubgraphInterface> ifaces(k);
  std::vector<std::vector<size_t>> succ(k);
  std::vector<int> indegree(k, 0);
  for (size_t gi = 0; gi < k; ++gi) {
    BATON_ASSIGN_OR_RETURN(ifaces[gi], graph::ComputeInterface(model, groups[gi]));
    absl::flat_hash_map<size_t, bool> preds;
    for (const auto& in : ifaces[gi].inputs) {
      const graph::Value* v = model.FindValue(in);
      if (v->producer && group_of[v->producer->value] && *group_of[v->producer->value] != gi) {
        if (!v->type.is_tensor) {
          return absl::InvalidArgumentError(absl::StrCat(
              "model ", Q(model.display_name()), ": the plan cuts at ", Q(in), ", a ", v->type.ToString(),
              " value; baton passes only tensors between partitions: keep its producer ",
              Q(model.node(*v->producer).name), " and its readers in one partition"));
        }
        preds[*group_of[v->producer->value]] = true;
      }
    }
    for (const auto& [p, unused] : preds) {
      succ[p].push_back(gi);
      ++indegree[gi];
    }
  }
  auto first_topo = [&](size_t gi) {
    uint32_t best = UINT32_MAX;
    for (NodeId id : groups[gi]) best = std::min(best, model.topo_index(id));
    return best;
  };
  using Item = std::pair<uint32_t, size_t>;
  std::priority_queue<Item, std::vector<Item>, std::greater<>> ready;
  for (size_t gi = 0; gi < k; ++gi) {
    if (indegree[gi] == 0) ready.emplace(first_topo(gi), gi);
  }
  std::vector<size_t> order;
  while (!ready.empty()) {
    size_t gi = ready.top().second;
    ready.pop();
    order.push_back(gi);
    for (size_t s : succ[gi]) {
      if (--indegree[s] == 0) ready.emplace(first_topo(s), s);
    }
  }
  if (order.size() != k) {
    std::vector<std::string> stuck;
    for (size_t gi = 0; gi < k; ++gi) {
      if (indegree[gi] > 0) stuck.push_back(absl::StrCat(gi));
    }
    return absl::InvalidArgumentError(absl::StrCat("partitions ", absl::StrJoin(stuck, ", "), " of model ",
                                                   Q(model.display_name()),
                                                   " depend on each other in a cycle; move nodes so that data flows one way"));
  }

  PartitionPlan plan;
  plan.model_name = model.display_name();
  plan.model_inputs = model.inputs();
  plan.model_outputs = model.outputs();
  std::vector<size_t> new_id(k);
  for (size_t i = 0; i < k; ++i) new_id[order[i]] = i;
  for (size_t i = 0; i < k; ++i) {
    size_t gi = order[i];
    Partition p;
    p.id = PartitionId(static_cast<uint32_t>(i));
    p.name = absl::StrCat("p", i);
    p.nodes = std::move(groups[gi]);
    std::sort(p.nodes.begin(), p.nodes.end(),
              [&](NodeId a, NodeId b) { return model.topo_index(a) < model.topo_index(b); });
    p.interface = std::move(ifaces[gi]);
    for (NodeId id : p.nodes) {
      p.flops = SatAdd(p.flops, model.node(id).flops);
      p.cost += CostOf(model.node(id));
    }
    plan.partitions.push_back(std::move(p));
  }
  for (const Partition& p : plan.partitions) {
    for (const auto& in : p.interface.inputs) {
      const graph::Value* v = model.FindValue(in);
      if (!v->producer || !group_of[v->producer->value]) continue;
      PlanEdge e;
      e.from = PartitionId(static_cast<uint32_t>(new_id[*group_of[v->producer->value]]));
      e.to = p.id;
      e.tensor = in;
      e.bytes = v->type.Bytes().value_or(-1);
      plan.edges.push_back(std::move(e));
    }
  }
  return plan;
}

namespace internal {

std::vector<size_t> BalancedStarts(const std::vector<double>& cost, int k) {
  // Smallest bottleneck T such that greedy packing into segments of cost <= T
  // needs at most k segments (binary search on T).
  auto pack = [&](double limit) {
    std::vector<size_t> starts{0};
    double acc = 0;
    for (size_t i = 0; i < cost.size(); ++i) {
      if (acc > 0 && acc + cost[i] > limit) {
        starts.push_back(i);
        acc = 0;
      }
      acc += cost[i];
    }
    return starts;
  };
  double lo = *std::max_element(cost.begin(), cost.end());
  double hi = std::accumulate(cost.begin(), cost.end(), 0.0);
  for (int it = 0; it < 100 && hi - lo > 1e-9 * hi; ++it) {
    double mid = (lo + hi) / 2;
    if (pack(mid).size() <= static_cast<size_t>(k)) hi = mid; else lo = mid;
  }
  std::vector<size_t> starts = pack(hi);
  // Fewer than k segments: split the costliest multi-node segment at its cost midpoint.
  while (starts.size() < static_cast<size_t>(k)) {
    size_t best = starts.size();
    double best_cost = -1;
    for (size_t s = 0; s < starts.size(); ++s) {
      size_t end = s + 1 < starts.size() ? starts[s + 1] : cost.size();
      if (end - starts[s] < 2) continue;
      double c = std::accumulate(cost.begin() + static_cast<long>(starts[s]), cost.begin() + static_cast<long>(end), 0.0);
      if (c > best_cost) {
        best_cost = c;
        best = s;
      }
    }
    size_t begin = starts[best];
    size_t end = best + 1 < starts.size() ? starts[best + 1] : cost.size();
    double acc = 0;
    size_t split = begin + 1;
    for (size_t i = begin; i + 1 < end; ++i) {
      acc += cost[i];
      split = i + 1;
      if (acc >= best_cost / 2) break;
    }
    starts.insert(starts.begin() + static_cast<long>(best) + 1, split);
  }
  return starts;
}

}  // namespace internal

absl::StatusOr<PartitionPlan> CutBalanced(const Model& model, int k, std::string* note) {
  if (k < 1) return absl::InvalidArgumentError(absl::StrCat("--parts must be at least 1 (got ", k, ")"));
  std::vector<NodeId> order = PlacedNodes(model);
  if (order.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", Q(model.display_name()),
                                                   " has no computing node to partition"));
  }
  if (static_cast<size_t>(k) > order.size()) {
    if (note) *note = absl::StrCat("asked for ", k, " partitions but the model has only ", order.size(),
                                   " nodes to place; using ", order.size());
    k = static_cast<int>(order.size());
  }
  std::vector<double> cost(order.size());
  for (size_t i = 0; i < order.size(); ++i) cost[i] = CostOf(model.node(order[i]));
  std::vector<size_t> starts = BalancedStarts(cost, k);
  return BuildPlan(model, Segments(model, order, starts));
}

absl::StatusOr<PartitionPlan> CutForPus(const Model& model, std::span<const uint64_t> support, int k) {
  if (k < 1) return absl::InvalidArgumentError(absl::StrCat("the number of stages must be at least 1 (got ", k, ")"));
  if (support.size() != model.nodes().size()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", Q(model.display_name()), ": capability given for ",
                                                   support.size(), " nodes, the model has ", model.nodes().size()));
  }
  std::vector<NodeId> order = PlacedNodes(model);
  if (order.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", Q(model.display_name()),
                                                   " has no computing node to partition"));
  }
  std::vector<size_t> starts{0};
  for (size_t i = 0; i < order.size(); ++i) {
    const graph::Node& node = model.node(order[i]);
    if (support[order[i].value] == 0) {
      return absl::FailedPreconditionError(absl::StrCat("model ", Q(model.display_name()), ": node ", Q(node.name),
                                                        " (op ", node.op_type,
                                                        ") is supported by no PU; add a PU that runs it (e.g. a cpu PU)"));
    }
    if (i > 0 && support[order[i].value] != support[order[i - 1].value]) starts.push_back(i);
  }
  if (k > 1) {
    std::vector<double> cost(order.size());
    for (size_t i = 0; i < order.size(); ++i) cost[i] = CostOf(model.node(order[i]));
    std::vector<size_t> balanced = BalancedStarts(cost, std::min<int>(k, static_cast<int>(order.size())));
    starts.insert(starts.end(), balanced.begin(), balanced.end());
    std::sort(starts.begin(), starts.end());
    starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
  }
  return BuildPlan(model, Segments(model, order, starts));
}

absl::StatusOr<PartitionPlan> CutAtTensors(const Model& model, std::span<const std::string> tensors) {
  if (tensors.empty()) return absl::InvalidArgumentError("--cut needs at least one tensor name");
  const size_t n = model.nodes().size();
  std::vector<bool> done(n, false);
  std::vector<std::vector<NodeId>> groups;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const std::string& name = tensors[t];
    const graph::Value* v = model.FindValue(name);
    if (!v) {
      return absl::NotFoundError(absl::StrCat("cut tensor ", Q(name), " does not exist in model ",
                                              Q(model.display_name()), "; `baton inspect` lists tensor names"));
    }
    if (!v->producer) {
      return absl::InvalidArgumentError(absl::StrCat("cut tensor ", Q(name),
                                                     " is a model input or initializer, not computed by a node; "
                                                     "cut at a tensor that a node produces"));
    }
    // Everything the tensor depends on that no earlier partition holds.
    std::vector<NodeId> group;
    std::vector<NodeId> stack{*v->producer};
    if (done[v->producer->value]) {
      return absl::InvalidArgumentError(absl::StrCat("cut tensor ", Q(name),
                                                     " is already computed before the previous cut point; list cut "
                                                     "tensors in the order the model computes them"));
    }
    done[v->producer->value] = true;
    while (!stack.empty()) {
      NodeId id = stack.back();
      stack.pop_back();
      group.push_back(id);
      for (const auto& in : model.node(id).AllInputs()) {
        const graph::Value* iv = model.FindValue(in);
        if (iv->producer && !done[iv->producer->value]) {
          done[iv->producer->value] = true;
          stack.push_back(*iv->producer);
        }
      }
    }
    std::erase_if(group, [&](NodeId id) { return !MustBePlaced(model, model.node(id)); });
    if (group.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("cut tensor ", Q(name), " is produced by a constant only; "
                                                     "cut at a computed tensor"));
    }
    groups.push_back(std::move(group));
  }
  std::vector<NodeId> rest;
  for (NodeId id : model.topo_order()) {
    if (!done[id.value] && MustBePlaced(model, model.node(id))) rest.push_back(id);
  }
  if (rest.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cutting after tensor ", Q(tensors.back()),
                                                   " leaves no node for the last partition; drop the last cut point"));
  }
  groups.push_back(std::move(rest));
  return BuildPlan(model, std::move(groups));
}

absl::StatusOr<PartitionPlan> CutRandom(const Model& model, int k, uint64_t seed) {
  // Random topological order: Kahn's algorithm picking a random ready node.
  const size_t n = model.nodes().size();
  std::vector<int> indegree(n, 0);
  std::vector<std::vector<NodeId>> succ(n);
  for (const Node& node : model.nodes()) {
    std::vector<uint32_t> preds;
    for (const auto& in : node.AllInputs()) {
      const graph::Value* v = model.FindValue(in);
      if (v->producer) preds.push_back(v->producer->value);
    }
    std::sort(preds.begin(), preds.end());
    preds.erase(std::unique(preds.begin(), preds.end()), preds.end());
    for (uint32_t p : preds) {
      succ[p].push_back(node.id);
      ++indegree[node.id.value];
    }
  }
  uint64_t state = seed;
  std::vector<NodeId> ready, order;
  for (const Node& node : model.nodes()) {
    if (indegree[node.id.value] == 0) ready.push_back(node.id);
  }
  while (!ready.empty()) {
    size_t pick = SplitMix64(state) % ready.size();
    NodeId id = ready[pick];
    ready[pick] = ready.back();
    ready.pop_back();
    if (MustBePlaced(model, model.node(id))) order.push_back(id);
    for (NodeId s : succ[id.value]) {
      if (--indegree[s.value] == 0) ready.push_back(s);
    }
  }
  if (order.empty()) return absl::InvalidArgumentError("model has no computing node to partition");
  k = std::clamp<int>(k, 1, static_cast<int>(order.size()));
  std::vector<size_t> cuts(order.size() - 1);
  std::iota(cuts.begin(), cuts.end(), 1);
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {  // partial Fisher-Yates: k-1 distinct points
    size_t j = i + SplitMix64(state) % (cuts.size() - i);
    std::swap(cuts[i], cuts[j]);
  }
  std::vector<size_t> starts{0};
  starts.insert(starts.end(), cuts.begin(), cuts.begin() + (k - 1));
  std::sort(starts.begin(), starts.end());
  return BuildPlan(model, Segments(model, order, starts));
}

std::string PartitionPlan::ToJson(const Model& model) const {
  nlohmann::ordered_json j;
  j["model"] = model_name;
  j["model_inputs"] = model_inputs;
  j["model_outputs"] = model_outputs;
  nlohmann::ordered_json parts = nlohmann::ordered_json::array();
  for (const Partition& p : partitions) {
    nlohmann::ordered_json pj;
    pj["id"] = p.id.value;
    pj["name"] = p.name;
    std::vector<std::string> names;
    for (NodeId id : p.nodes) names.push_back(model.node(id).name);
    pj["nodes"] = names;
    std::vector<std::string> consts;
    for (NodeId id : p.interface.copied_constants) consts.push_back(model.node(id).name);
    pj["copied_constants"] = consts;
    pj["inputs"] = p.interface.inputs;
    pj["outputs"] = p.interface.outputs;
    pj["flops"] = p.flops;
    pj["cost"] = p.cost;
    parts.push_back(std::move(pj));
  }
  j["partitions"] = std::move(parts);
  nlohmann::ordered_json edges_json = nlohmann::ordered_json::array();
  for (const PlanEdge& e : edges) {
    edges_json.push_back({{"from", e.from.value}, {"to", e.to.value}, {"tensor", e.tensor}, {"bytes", e.bytes}});
  }
  j["edges"] = std::move(edges_json);
  return j.dump(2);
}

}  // namespace baton::partition
