// sel: shortest expected latency, willing to wait for a faster PU.
//
// Objective: low latency per item on heterogeneous PUs: an item runs where it
// is expected to finish first, even if that means waiting for a busy PU.
// Rule: items in arrival order (seq). For each, the candidate PUs are all PUs
// that can run it, each with its projected availability (idle: now; busy:
// expected_free, or now if that has passed; claimed earlier in this call: the
// finish of the item it got). The item goes to the PU with the earliest
// expected finish (availability + latency; ties: an idle PU, then lowest PuId).
// If that PU is idle, the item starts; otherwise it waits for that PU, which
// then counts as reserved until the item's expected finish, so later items do
// not count on it too. With all PUs idle this is "the idle PU with the
// smallest latency". The brief's rule "wait when a busy PU gives
// expected_free + latency < now + latency on the best idle PU" is exactly this.
//
// Example (now = 0): cpu0 idle, gpu1 busy until 2 ms. A: 10 ms on cpu0, 1 ms
// on gpu1; B: 3 ms on cpu0, 1 ms on gpu1.
//   A: gpu1 finishes at 3 ms < cpu0 at 10 ms -> A waits for gpu1 (reserved to 3).
//   B: gpu1 would finish at 4 ms > cpu0 at 3 ms -> B -> cpu0.
//
// Thread-safety: immutable; Decide may be called from any thread.
#pragma once

#include <string>
#include <vector>

#include "baton/policy/policy.h"

namespace baton::policy {

class ShortestExpectedLatencyPolicy : public LowLevelPolicy {
 public:
  std::string name() const override { return "sel"; }
  std::vector<Decision> Decide(const Snapshot& snapshot) const override;
  bool MayDrop() const override { return false; }
};

}  // namespace baton::policy
