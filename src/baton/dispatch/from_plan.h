// ModelGraphFromPlan: turns a partition::PartitionPlan into the dispatcher's
// ModelGraph (each partition's interface inputs/outputs, the model inputs and
// outputs) and places its partitions on devices.
//
// Header-only on purpose: baton_dispatch does not link the partition or graph
// layers; whoever includes this (the CLI, tests) links baton_partition already.
// No ONNX type is involved (plan.h includes only ONNX-free graph headers).
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/dispatch/model_graph.h"
#include "baton/partition/plan.h"

namespace baton::dispatch {

// Where one partition runs.
struct Placement {
  DeviceId device;
  std::optional<PuId> pu;  // becomes PartitionNode::fixed_pu
};

// `placement` holds one entry per partition, in plan order. Errors: a size
// mismatch, or a plan that ValidateModelGraph rejects.
inline absl::StatusOr<ModelGraph> ModelGraphFromPlan(const partition::PartitionPlan& plan,
                                                     std::span<const Placement> placement) {
  if (placement.size() != plan.partitions.size()) {
    return absl::InvalidArgumentError(absl::StrCat("model '", plan.model_name, "': the plan has ",
                                                   plan.partitions.size(), " partitions but ", placement.size(),
                                                   " placements were given; give one per partition"));
  }
  ModelGraph graph;
  graph.name = plan.model_name;
  graph.inputs = plan.model_inputs;
  graph.outputs = plan.model_outputs;
  for (size_t i = 0; i < plan.partitions.size(); ++i) {
    const partition::Partition& p = plan.partitions[i];
    PartitionNode node;
    node.id = p.id;
    node.name = p.name;
    node.inputs = p.interface.inputs;
    node.outputs = p.interface.outputs;
    node.device = placement[i].device;
    node.fixed_pu = placement[i].pu;
    graph.partitions.push_back(std::move(node));
  }
  BATON_RETURN_IF_ERROR(ValidateModelGraph(graph));
  return graph;
}

// Every partition on `device`, no fixed PUs.
inline absl::StatusOr<ModelGraph> ModelGraphFromPlan(const partition::PartitionPlan& plan, DeviceId device) {
  std::vector<Placement> placement(plan.partitions.size(), Placement{device, std::nullopt});
  return ModelGraphFromPlan(plan, placement);
}

}  // namespace baton::dispatch
