// fifo: first in, first out.
//
// Objective: fairness by arrival; no item is overtaken by a younger one that
// could have used the same PU. Rule: ready items by seq (oldest first); each
// goes to the idle PU that can run it with the smallest expected latency (ties:
// lowest PuId). An item with no idle capable PU waits and the next item is
// considered, so an item pinned to busy PUs does not block the queue
// (work-conserving: no idle PU is left unused while an item it can run waits).
//
// Example (now = 0): items A(seq 0), B(seq 1); idle cpu0 and gpu1; A takes
// 4 ms on cpu0 and 1 ms on gpu1; B takes 2 ms on either.
//   A -> gpu1 (fastest idle for A), then B -> cpu0 (the only idle PU left).
//
// Thread-safety: immutable; Decide may be called from any thread.
#pragma once

#include <string>
#include <vector>

#include "baton/policy/policy.h"

namespace baton::policy {

class FifoPolicy : public LowLevelPolicy {
 public:
  std::string name() const override { return "fifo"; }
  std::vector<Decision> Decide(const Snapshot& snapshot) const override;
  bool MayDrop() const override { return false; }
};

}  // namespace baton::policy
