// Internal helpers shared by plan.cc and units.cc (not part of the public
// partition API): which nodes a partition must hold, and balanced splitting of
// a sequence of node costs.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <vector>

#include "baton/core/ids.h"
#include "baton/graph/model.h"

namespace baton::partition::internal {

// False for a free Constant node (no inputs) whose outputs are only read by
// other nodes: every reader gets its own copy (graph/extract.h), so it belongs
// to no partition. A free Constant that produces a model output is placed.
bool MustBePlaced(const graph::Model& model, const graph::Node& node);

// Nodes that must belong to a partition, in the model's topological order.
std::vector<NodeId> PlacedNodes(const graph::Model& model);

// Segment starts (indices into `cost`, first is 0) that split it into exactly k
// contiguous segments (1 <= k <= cost.size()) minimising the costliest segment.
std::vector<size_t> BalancedStarts(const std::vector<double>& cost, int k);

}  // namespace baton::partition::internal
