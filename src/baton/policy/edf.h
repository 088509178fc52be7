// edf: earliest deadline first.
//
// Objective: meet deadlines by serving the most urgent request first (optimal
// for one PU when the load is feasible), without needing accurate latencies.
// Rule: items by deadline (earliest first; items without a deadline last; ties
// by seq). An item whose deadline has passed (now > deadline) gets kDrop; the
// others are placed as fifo places them: the idle capable PU with the smallest
// expected latency (ties: lowest PuId), else the item waits. Items no PU can
// run get no decision at all (not even a drop).
//
// Example (now = 10 ms, idle pu0 and pu1): A deadline 30 ms, B deadline 20 ms,
// C deadline 5 ms, D no deadline.
//   Order C, B, A, D: drop C (5 < 10), B -> fastest PU, A -> the other, D waits.
//
// Thread-safety: immutable; Decide may be called from any thread.
#pragma once

#include <string>
#include <vector>

#include "baton/policy/policy.h"

namespace baton::policy {

class EarliestDeadlineFirstPolicy : public LowLevelPolicy {
 public:
  std::string name() const override { return "edf"; }
  std::vector<Decision> Decide(const Snapshot& snapshot) const override;
};

}  // namespace baton::policy
