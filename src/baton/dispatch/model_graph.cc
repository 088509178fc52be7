#include "baton/dispatch/model_graph.h"

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace baton::dispatch {

namespace {

std::string Where(const ModelGraph& g) { return absl::StrCat("model '", g.name, "'"); }
std::string Where(const ModelGraph& g, const PartitionNode& p) {
  return absl::StrCat("model '", g.name, "' partition '", p.name, "' (id ", p.id.value, ")");
}

// OK when `names` are non-empty and distinct; `what` says which list it is.
absl::Status CheckNames(const std::vector<std::string>& names, const std::string& where,
                        const std::string& what) {
  absl::flat_hash_set<std::string> seen;
  for (const auto& n : names) {
    if (n.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": an empty name in ", what));
    if (!seen.insert(n).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": '", n, "' appears twice in ", what, "; list each tensor once"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateModelGraph(const ModelGraph& g) {
  BATON_RETURN_IF_ERROR(CheckNames(g.inputs, Where(g), "the model inputs"));
  BATON_RETURN_IF_ERROR(CheckNames(g.outputs, Where(g), "the model outputs"));
  if (g.outputs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(Where(g), " has no outputs; a request would never finish"));
  }
  // The producer of every tensor: a partition index, or nullopt for a model input.
  absl::flat_hash_map<std::string, std::optional<size_t>> producer;
  for (const auto& in : g.inputs) producer[in] = std::nullopt;
  absl::flat_hash_set<PartitionId> ids;
  for (size_t i = 0; i < g.partitions.size(); ++i) {
    const PartitionNode& p = g.partitions[i];
    if (!ids.insert(p.id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(g), ": partition id ", p.id.value, " is used twice; ids must be unique"));
    }
    BATON_RETURN_IF_ERROR(CheckNames(p.inputs, Where(g, p), "its inputs"));
    BATON_RETURN_IF_ERROR(CheckNames(p.outputs, Where(g, p), "its outputs"));
    if (p.outputs.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(Where(g, p), " has no outputs"));
    }
    for (const auto& out : p.outputs) {
      auto [it, inserted] = producer.emplace(out, i);
      if (!inserted) {
        std::string other = !it->second.has_value()
                                ? std::string("it is a model input")
                                : absl::StrCat("partition '", g.partitions[*it->second].name,
                                               "' writes it too");
        return absl::InvalidArgumentError(
            absl::StrCat(Where(g, p), " writes tensor '", out, "' but ", other, "; a tensor has one producer"));
      }
    }
  }
  // Every read has a producer; count dependencies for the cycle check.
  std::vector<std::vector<size_t>> successors(g.partitions.size());
  std::vector<size_t> pending(g.partitions.size(), 0);
  for (size_t i = 0; i < g.partitions.size(); ++i) {
    const PartitionNode& p = g.partitions[i];
    for (const auto& in : p.inputs) {
      auto it = producer.find(in);
      if (it == producer.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            Where(g, p), " reads tensor '", in, "' that no partition writes and that is not a model input"));
      }
      if (it->second.has_value()) {
        successors[*it->second].push_back(i);
        ++pending[i];
      }
    }
  }
  for (const auto& out : g.outputs) {
    if (!producer.contains(out)) {
      return absl::InvalidArgumentError(absl::StrCat(
          Where(g), ": model output '", out, "' is written by no partition and is not a model input"));
    }
  }
  // Kahn's algorithm: every partition must become ready.
  std::vector<size_t> ready;
  for (size_t i = 0; i < pending.size(); ++i) {
    if (pending[i] == 0) ready.push_back(i);
  }
  size_t done = 0;
  while (!ready.empty()) {
    size_t i = ready.back();
    ready.pop_back();
    ++done;
    for (size_t s : successors[i]) {
      if (--pending[s] == 0) ready.push_back(s);
    }
  }
  if (done != g.partitions.size()) {
    for (size_t i = 0; i < pending.size(); ++i) {
      if (pending[i] != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            Where(g, g.partitions[i]), " is on a cycle of partitions; the partition graph must be a DAG"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace baton::dispatch
