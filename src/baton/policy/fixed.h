// fixed: run each item where the plan put it.
//
// Objective: replay an offline placement (a plan file's `fixed_pu`) exactly,
// so runs are reproducible and comparable. Rule: items in arrival order (seq);
// an item with `fixed_pu` runs on that PU when it is idle and can run the item,
// and otherwise waits — it is never moved to another PU, even when its PU is
// missing from the snapshot or cannot run it (the core's timeout/reporting
// applies). An item without `fixed_pu` is placed as fifo places it (fastest
// idle capable PU); this is the documented, error-free fallback for plans that
// pin only some partitions.
//
// Example: idle pu0 and pu1, busy pu2; A(fixed pu2), B(fixed pu1), C(no pin,
// 3 ms on pu0, 1 ms on pu1).
//   A waits (pu2 busy), B -> pu1, C -> pu0 (pu1 is taken by B).
//
// Thread-safety: immutable; Decide may be called from any thread.
#pragma once

#include <string>
#include <vector>

#include "baton/policy/policy.h"

namespace baton::policy {

class FixedPolicy : public LowLevelPolicy {
 public:
  std::string name() const override { return "fixed"; }
  std::vector<Decision> Decide(const Snapshot& snapshot) const override;
  bool MayDrop() const override { return false; }
};

}  // namespace baton::policy
