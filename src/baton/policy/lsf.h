// lsf: least slack first, dropping what can no longer make its deadline.
//
// Objective: meet as many deadlines as possible under load by serving the
// most urgent work first and not wasting PU time on hopeless items.
// Rule: slack = deadline - now - best expected latency (the smallest latency
// over every PU that can run the item, busy or idle). Items go in order of
// slack (items without a deadline have infinite slack and come last; ties by
// seq). An item with negative slack — it would miss its deadline even on its
// fastest PU starting now — gets kDrop. The others are placed as sel places
// them (earliest projected finish; wait for a busy PU when that is sooner).
// Zero slack is not dropped. Items no PU can run get no decision at all.
//
// Example (now = 0, one idle PU, latencies as given):
//   A deadline 10 ms, 4 ms -> slack 6; B deadline 5 ms, 3 ms -> slack 2;
//   C deadline 2 ms, 3 ms -> slack -1; D no deadline.
//   Order C, B, A, D: drop C, B -> pu0; A and D wait.
//
// Thread-safety: immutable; Decide may be called from any thread.
#pragma once

#include <string>
#include <vector>

#include "baton/policy/policy.h"

namespace baton::policy {

class LeastSlackFirstPolicy : public LowLevelPolicy {
 public:
  std::string name() const override { return "lsf"; }
  std::vector<Decision> Decide(const Snapshot& snapshot) const override;
};

}  // namespace baton::policy
