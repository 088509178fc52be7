// round_robin: PUs take turns.
//
// Objective: spread load evenly over PUs without consulting latencies (useful
// with identical PUs, or as a baseline). Rule: PUs are ordered by PuId; the
// rotation starts at position `decisions_so_far % number_of_PUs`. Items go in
// arrival order (seq); each takes the next PU in the rotation that is idle and
// can run it (busy or incapable PUs are skipped), and the rotation continues
// after that PU. An item no idle PU can run waits. Because the start comes
// from the snapshot's `decisions_so_far`, the policy keeps no state.
//
// Example: PUs 0,1,2 all idle, decisions_so_far = 4, items A, B.
//   start = 4 % 3 = 1: A -> pu1, B -> pu2. With pu2 busy instead: A -> pu1,
//   B -> pu0 (pu2 skipped, wrapping around).
//
// Thread-safety: immutable; Decide may be called from any thread.
#pragma once

#include <string>
#include <vector>

#include "baton/policy/policy.h"

namespace baton::policy {

class RoundRobinPolicy : public LowLevelPolicy {
 public:
  std::string name() const override { return "round_robin"; }
  std::vector<Decision> Decide(const Snapshot& snapshot) const override;
  bool MayDrop() const override { return false; }
};

}  // namespace baton::policy
