#include "baton/partition/units.h"

#include <algorithm>
#include <bit>
#include <map>
#include <optional>
#include <queue>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "baton/partition/placed_nodes.h"
#include "baton/partition/plan.h"

namespace baton::partition {

namespace {

using graph::Model;
using graph::Node;
using internal::MustBePlaced;

std::string Q(absl::string_view s) { return absl::StrCat("'", s, "'"); }

// The placed nodes in the greedy order that keeps same-support nodes together:
// Kahn's algorithm where, among the ready nodes, one with the mask of the node
// picked last wins (smallest model topo index first); when none has it, the
// ready node with the smallest topo index starts a new run.
//
// Example: x -> {A (cpu), B (npu), C (cpu)} -> D. The model order A B C D cuts
// into four runs; the greedy order A C B D cuts into three ({A,C}, {B}, {D}).
std::vector<NodeId> GreedyOrder(const Model& model, std::span<const uint64_t> support) {
  const size_t n = model.nodes().size();
  std::vector<bool> placed(n, false);
  for (const Node& node : model.nodes()) placed[node.id.value] = MustBePlaced(model, node);
  std::vector<int> indegree(n, 0);
  std::vector<std::vector<NodeId>> succ(n);
  for (const Node& node : model.nodes()) {
    if (!placed[node.id.value]) continue;
    std::vector<uint32_t> preds;
    for (const auto& in : node.AllInputs()) {
      const graph::Value* v = model.FindValue(in);
      // Unplaced producers are free Constants: copied into readers, never waited for.
      if (v && v->producer && placed[v->producer->value]) preds.push_back(v->producer->value);
    }
    std::sort(preds.begin(), preds.end());
    preds.erase(std::unique(preds.begin(), preds.end()), preds.end());
    for (uint32_t p : preds) {
      succ[p].push_back(node.id);
      ++indegree[node.id.value];
    }
  }
  // Ready nodes by topo index: all of them, and per support mask.
  std::set<uint32_t> ready;
  absl::flat_hash_map<uint64_t, std::set<uint32_t>> ready_by_mask;
  auto push = [&](NodeId id) {
    ready.insert(model.topo_index(id));
    ready_by_mask[support[id.value]].insert(model.topo_index(id));
  };
  for (const Node& node : model.nodes()) {
    if (placed[node.id.value] && indegree[node.id.value] == 0) push(node.id);
  }
  std::vector<NodeId> order;
  std::optional<uint64_t> mask;
  while (!ready.empty()) {
    uint32_t pick = *ready.begin();
    if (mask) {
      auto it = ready_by_mask.find(*mask);
      if (it != ready_by_mask.end() && !it->second.empty()) pick = *it->second.begin();
    }
    NodeId id = model.topo_order()[pick];
    mask = support[id.value];
    ready.erase(pick);
    ready_by_mask[*mask].erase(pick);
    order.push_back(id);
    for (NodeId s : succ[id.value]) {
      if (--indegree[s.value] == 0) push(s);
    }
  }
  return order;
}

// How many atoms each unit gets: one each, then the extra ones one at a time to
// the unit whose atoms would be costliest (highest cost per atom), so that the
// counts end up proportional to unit cost. A unit never gets more atoms than it
// has nodes.
std::vector<int> AtomsPerUnit(const std::vector<double>& unit_cost, const std::vector<int>& unit_nodes, int total) {
  std::vector<int> count(unit_cost.size(), 1);
  using Item = std::pair<double, size_t>;  // (cost per atom, unit); ties go to the earlier unit
  auto cmp = [](const Item& a, const Item& b) { return a.first != b.first ? a.first < b.first : a.second > b.second; };
  std::priority_queue<Item, std::vector<Item>, decltype(cmp)> heap(cmp);
  for (size_t u = 0; u < unit_cost.size(); ++u) {
    if (unit_nodes[u] > 1) heap.emplace(unit_cost[u], u);
  }
  int extra = total - static_cast<int>(unit_cost.size());
  while (extra > 0 && !heap.empty()) {
    size_t u = heap.top().second;
    heap.pop();
    ++count[u];
    --extra;
    if (count[u] < unit_nodes[u]) heap.emplace(unit_cost[u] / count[u], u);
  }
  return count;
}

}  // namespace

absl::StatusOr<Atoms> MakeAtoms(const Model& model, std::span<const uint64_t> support, int min_atoms,
                                int max_atoms) {
  if (min_atoms < 1 || max_atoms < min_atoms) {
    return absl::InvalidArgumentError(absl::StrCat("model ", Q(model.display_name()), ": atom budget min ", min_atoms,
                                                   ", max ", max_atoms,
                                                   " is invalid; use 1 <= min_atoms <= max_atoms"));
  }
  if (support.size() != model.nodes().size()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", Q(model.display_name()), ": capability given for ",
                                                   support.size(), " nodes, the model has ", model.nodes().size()));
  }
  for (NodeId id : model.topo_order()) {
    const Node& node = model.node(id);
    if (support[id.value] == 0 && MustBePlaced(model, node)) {
      return absl::FailedPreconditionError(absl::StrCat("model ", Q(model.display_name()), ": node ", Q(node.name),
                                                        " (op ", node.op_type,
                                                        ") is supported by no PU; add a PU that runs it (e.g. a cpu PU)"));
    }
  }
  std::vector<NodeId> order = GreedyOrder(model, support);
  if (order.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", Q(model.display_name()),
                                                   " has no computing node to partition"));
  }

  std::vector<double> cost(order.size());
  for (size_t i = 0; i < order.size(); ++i) cost[i] = CostOf(model.node(order[i]));

  // Units: maximal runs of one mask in the greedy order.
  std::vector<size_t> unit_start{0};
  std::vector<uint64_t> unit_mask{support[order[0].value]};
  for (size_t i = 1; i < order.size(); ++i) {
    if (support[order[i].value] != support[order[i - 1].value]) {
      unit_start.push_back(i);
      unit_mask.push_back(support[order[i].value]);
    }
  }
  // Too many units for the budget (op support that alternates, e.g. an NPU
  // without Softmax in every attention block): merge the cheapest unit into a
  // neighbour it shares a PU with (the merged unit runs only where both can),
  // preferring the neighbour that keeps more PUs, until they fit.
  auto unit_cost_of = [&](size_t u) {
    const size_t end = u + 1 < unit_start.size() ? unit_start[u + 1] : order.size();
    double c = 0;
    for (size_t i = unit_start[u]; i < end; ++i) c += cost[i];
    return c;
  };
  while (static_cast<int>(unit_start.size()) > max_atoms) {
    std::optional<std::pair<size_t, size_t>> best;  // (unit, neighbour)
    double best_cost = 0;
    int best_keep = -1;
    for (size_t u = 0; u < unit_start.size(); ++u) {
      for (size_t v : {u - 1, u + 1}) {
        if (v >= unit_start.size() || (unit_mask[u] & unit_mask[v]) == 0) continue;  // u - 1 wraps for u == 0
        const double c = unit_cost_of(u);
        const int keep = std::popcount(unit_mask[u] & unit_mask[v]);
        if (!best || c < best_cost || (c == best_cost && keep > best_keep)) {
          best = std::pair(u, v);
          best_cost = c;
          best_keep = keep;
        }
      }
    }
    if (!best) break;
    const size_t lo = std::min(best->first, best->second);
    unit_mask[lo] &= unit_mask[lo + 1];
    unit_start.erase(unit_start.begin() + static_cast<long>(lo) + 1);
    unit_mask.erase(unit_mask.begin() + static_cast<long>(lo) + 1);
    // Keep units maximal: a neighbour with the same mask joins too.
    for (size_t u = lo == 0 ? 0 : lo - 1; u + 1 < unit_start.size() && u <= lo;) {
      if (unit_mask[u] == unit_mask[u + 1]) {
        unit_start.erase(unit_start.begin() + static_cast<long>(u) + 1);
        unit_mask.erase(unit_mask.begin() + static_cast<long>(u) + 1);
      } else {
        ++u;
      }
    }
  }
  const int units = static_cast<int>(unit_start.size());
  if (units > max_atoms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model ", Q(model.display_name()), " has ", units,
        " capability units that share no PU with a neighbour, but the atom budget is ", max_atoms,
        "; raise the budget to at least ", units, " (or give more PUs the same op support)"));
  }
  std::vector<double> unit_cost(units);
  std::vector<int> unit_nodes(units);
  for (int u = 0; u < units; ++u) {
    size_t end = u + 1 < units ? unit_start[u + 1] : order.size();
    unit_nodes[u] = static_cast<int>(end - unit_start[u]);
    for (size_t i = unit_start[u]; i < end; ++i) unit_cost[u] += cost[i];
  }
  const int total = std::max(units, std::min(min_atoms, static_cast<int>(order.size())));
  std::vector<int> per_unit = AtomsPerUnit(unit_cost, unit_nodes, total);

  Atoms out;
  out.units = units;
  std::vector<int> atom_of(model.nodes().size(), -1);
  for (int u = 0; u < units; ++u) {
    size_t begin = unit_start[u];
    size_t end = u + 1 < units ? unit_start[u + 1] : order.size();
    std::vector<double> piece_cost(cost.begin() + static_cast<long>(begin), cost.begin() + static_cast<long>(end));
    std::vector<size_t> starts = internal::BalancedStarts(piece_cost, per_unit[u]);
    for (size_t s = 0; s < starts.size(); ++s) {
      size_t a_begin = begin + starts[s];
      size_t a_end = s + 1 < starts.size() ? begin + starts[s + 1] : end;
      Atom atom;
      atom.unit = u;
      atom.support = unit_mask[static_cast<size_t>(u)];
      for (size_t i = a_begin; i < a_end; ++i) {
        atom.nodes.push_back(order[i]);
        atom.cost += cost[i];
        atom_of[order[i].value] = static_cast<int>(out.atoms.size());
      }
      out.atoms.push_back(std::move(atom));
    }
  }

  // Edges and cuts: each tensor counts once per (producer atom, reader atom)
  // pair, and once for every cut between its producer and its last reader.
  const int n = static_cast<int>(out.atoms.size());
  std::map<std::pair<int, int>, int64_t> edge_bytes;
  std::vector<int64_t> cut_delta(n + 1, 0);
  for (const graph::Value& v : model.values()) {
    if (!v.producer || atom_of[v.producer->value] < 0) continue;  // inputs, initializers, free Constants
    const int from = atom_of[v.producer->value];
    const int64_t bytes = v.type.Bytes().value_or(0);
    std::set<int> readers;
    for (NodeId c : v.consumers) {
      int to = atom_of[c.value];
      if (to >= 0 && to != from) readers.insert(to);
    }
    if (readers.empty()) continue;
    for (int to : readers) edge_bytes[{from, to}] += bytes;
    cut_delta[from] += bytes;  // cuts from..last_reader-1
    cut_delta[*readers.rbegin()] -= bytes;
  }
  for (const auto& [key, bytes] : edge_bytes) out.edges.push_back({key.first, key.second, bytes});
  int64_t running = 0;
  for (int i = 0; i + 1 < n; ++i) {
    running += cut_delta[i];
    out.cut_bytes.push_back(running);
  }
  return out;
}

absl::StatusOr<std::vector<Candidate>> Candidates(const Atoms& atoms, int budget) {
  const int n = static_cast<int>(atoms.atoms.size());
  if (budget < n) {
    return absl::InvalidArgumentError(absl::StrCat("a candidate budget of ", budget, " is less than the ", n,
                                                   " atoms, which are always candidates; raise the budget to at least ",
                                                   n, " or ask for fewer atoms"));
  }
  std::vector<Candidate> out;
  std::set<std::pair<int, int>> seen;
  auto add = [&](int first, int last, uint64_t mask) {
    if (static_cast<int>(out.size()) >= budget || mask == 0) return;
    if (!seen.insert({first, last}).second) return;
    out.push_back({first, last, mask});
  };
  for (int i = 0; i < n; ++i) add(i, i + 1, atoms.atoms[i].support);
  for (int i = 0; i < n;) {  // units: atoms share their unit's mask
    int j = i;
    while (j < n && atoms.atoms[j].unit == atoms.atoms[i].unit) ++j;
    add(i, j, atoms.atoms[i].support);
    i = j;
  }
  // and_of[first]: AND of the masks of atoms [first, first + len).
  std::vector<uint64_t> and_of(n);
  for (int i = 0; i < n; ++i) and_of[i] = atoms.atoms[i].support;
  uint64_t whole = 0;
  if (n > 0) {
    whole = ~uint64_t{0};
    for (const Atom& a : atoms.atoms) whole &= a.support;
  }
  add(0, n, whole);
  for (int len = 2; len <= n && static_cast<int>(out.size()) < budget; ++len) {
    bool any = false;
    for (int first = 0; first + len <= n; ++first) {
      and_of[first] &= atoms.atoms[first + len - 1].support;
      any = any || and_of[first] != 0;
      add(first, first + len, and_of[first]);
    }
    if (!any) break;  // masks only shrink as ranges grow
  }
  return out;
}

std::vector<NodeId> NodesOf(const Atoms& atoms, int first, int last) {
  std::vector<NodeId> nodes;
  for (int i = first; i < last; ++i) {
    const Atom& a = atoms.atoms[i];
    nodes.insert(nodes.end(), a.nodes.begin(), a.nodes.end());
  }
  return nodes;
}

}  // namespace baton::partition
