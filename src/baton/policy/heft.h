// heft: earliest finish time first, over all ready items.
//
// Objective: short makespan for the ready set on heterogeneous PUs (the
// list-scheduling step of HEFT, applied to the ready queue). Rule: repeat —
// over every undecided item and every PU that can run it (with projected
// availability, as in sel), take the (item, PU) pair with the earliest expected
// finish (ties: lower seq; then an idle PU, then lowest PuId). If the PU is
// idle the item starts; otherwise the item waits for that PU and reserves it
// until its expected finish. Stops when no idle PU is left.
//
// Example (now = 0): idle cpu0 and gpu1. A(seq 0): 5 ms on cpu0, 4 ms on gpu1;
// B(seq 1): 8 ms on cpu0, 1 ms on gpu1.
//   Earliest pair: B on gpu1 (1 ms) -> B -> gpu1, gpu1 now free at 1 ms.
//   A: cpu0 at 5 ms ties gpu1 at 1 + 4 = 5 ms -> the idle one: A -> cpu0.
//   Both done by 5 ms; fifo would give A -> gpu1, B -> cpu0, done at 8 ms.
//
// Cost: O(items^2 x PUs) latency look-ups per Decide in the worst case.
//
// Thread-safety: immutable; Decide may be called from any thread.
#pragma once

#include <string>
#include <vector>

#include "baton/policy/policy.h"

namespace baton::policy {

class HeftPolicy : public LowLevelPolicy {
 public:
  std::string name() const override { return "heft"; }
  std::vector<Decision> Decide(const Snapshot& snapshot) const override;
  bool MayDrop() const override { return false; }
};

}  // namespace baton::policy
