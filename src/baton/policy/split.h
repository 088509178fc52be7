// A plan's split of each partition's runs between PUs: what the `share`
// low-level policy follows.
//
// The planner's prediction (profile/bounds.h, Predict) solves a throughput LP
// in which a partition listed on several PUs runs a fraction of its requests
// on each; a plan file records those fractions (`shares`). PlanSplit is that
// table for one run, keyed by (model, partition) like the latency model.
//
// Thread-safety: immutable once built (share it between devices and policies).
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"

namespace baton::policy {

struct PuShare {
  PuId pu;
  double share = 0;  // fraction of the partition's runs, in [0, 1]

  friend bool operator==(const PuShare&, const PuShare&) = default;
};

// The share of `pu` in `shares` (0 when it is not listed).
double ShareIn(std::span<const PuShare> shares, PuId pu);

class PlanSplit {
 public:
  // Sets the split of (model, partition). Shares must be finite and >= 0,
  // each PU at most once, and sum to more than 0; they are normalized to sum
  // to 1. InvalidArgument naming the model, partition and PU otherwise.
  absl::Status Set(ModelId model, PartitionId partition, std::vector<PuShare> shares);
  // The split of (model, partition), normalized; empty when the plan gives none.
  std::span<const PuShare> Of(ModelId model, PartitionId partition) const;
  // The share of `pu` (0 when the split does not list it, or there is no split).
  double ShareOf(ModelId model, PartitionId partition, PuId pu) const;
  bool empty() const { return splits_.empty(); }

 private:
  absl::flat_hash_map<std::pair<ModelId, PartitionId>, std::vector<PuShare>> splits_;
};

}  // namespace baton::policy
