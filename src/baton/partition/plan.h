// A partition plan: the DAG of partitions of one model, with tensor-level edges.
//
// Every node of the model belongs to exactly one partition, except input-less
// Constant nodes whose outputs are only read by partitions (they are copied
// into each reader, see graph/extract.h). Partitions are numbered in a
// topological order of the partition DAG: partition i only reads tensors of
// partitions j < i or model inputs.
//
// Thread-safety: value types and pure functions.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/graph/extract.h"
#include "baton/graph/model.h"

namespace baton::partition {

struct Partition {
  PartitionId id;
  std::string name;            // "<model>.p<i>"
  std::vector<NodeId> nodes;   // topological order
  graph::SubgraphInterface interface;
  int64_t flops = 0;
  double cost = 0;  // the cost used for balancing (see CostOf)
};

struct PlanEdge {
  PartitionId from;
  PartitionId to;
  std::string tensor;
  int64_t bytes = -1;  // -1 when the size is not statically known
};

struct PartitionPlan {
  std::string model_name;
  std::vector<Partition> partitions;
  std::vector<PlanEdge> edges;
  // Model inputs and outputs (outputs may be produced by any partition, or be
  // model inputs passed through unchanged).
  std::vector<std::string> model_inputs;
  std::vector<std::string> model_outputs;

  // JSON text (see docs/partitioning.md for the schema).
  std::string ToJson(const graph::Model& model) const;
};

// Cost used to balance cuts: FLOPs plus a fixed per-node overhead, so that
// chains of cheap ops are not free.
double CostOf(const graph::Node& node);

// Builds and validates a plan from explicit node groups (each group becomes one
// partition; free Constant nodes may be omitted). Errors name the offending
// node or group: a node in two groups, a node in none, an empty or non-convex
// group, or groups whose dependencies form a cycle.
absl::StatusOr<PartitionPlan> BuildPlan(const graph::Model& model,
                                        std::vector<std::vector<NodeId>> groups);

// K contiguous segments of the topological order (always convex), balanced so
// that the most expensive segment is as cheap as possible. K is clamped to the
// number of non-constant nodes, with a warning in `note` when it is.
absl::StatusOr<PartitionPlan> CutBalanced(const graph::Model& model, int k,
                                          std::string* note = nullptr);

// Cuts for a set of PUs with different op support. `support[n]` (indexed by
// NodeId) is the set of PUs that can run node n, as a bit mask (bit u: PU u).
// Walking the topological order, a cut falls wherever the mask changes (the
// `capability` policy: every partition can run on all PUs its nodes share);
// with k > 1 the balanced cuts of CutBalanced(model, k) are added on top (the
// `balanced` policy), so there are at least min(k, nodes) partitions. A node
// no PU can run is an error naming it and its op.
absl::StatusOr<PartitionPlan> CutForPus(const graph::Model& model, std::span<const uint64_t> support, int k);

// Cuts after each named tensor, in order: partition i holds the nodes needed to
// compute tensors 1..i that earlier partitions do not hold; the last partition
// holds the rest. A tensor that is not produced by a node, or that is already
// computed by an earlier partition, is an error that says so.
absl::StatusOr<PartitionPlan> CutAtTensors(const graph::Model& model,
                                           std::span<const std::string> tensors);

// Random valid plan for tests: a random topological order split at random
// points into `k` segments.
absl::StatusOr<PartitionPlan> CutRandom(const graph::Model& model, int k, uint64_t seed);

}  // namespace baton::partition
