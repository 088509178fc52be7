// priority: strict priority classes, FIFO within a class.
//
// Objective: let important models (e.g. a safety detector) overtake background
// ones. Rule: with k = PolicyOptions.priority_classes, an item's class is its
// `priority` clamped into [0, k-1] (so out-of-range priorities are not errors:
// -3 is class 0, 99 is class k-1). Items go by class, highest first, then by
// seq; each is placed as fifo places it (fastest idle capable PU, else it
// waits and the next item is considered). No aging: a steady stream of high
// class work can starve low classes.
//
// Example (k = 3, one idle PU): A(priority 0, seq 0), B(priority 2, seq 1),
// C(priority 7, seq 2).
//   Classes 0, 2, 2 (7 clamped): order B, C, A -> B runs; C and A wait.
//
// Thread-safety: immutable; Decide may be called from any thread.
#pragma once

#include <string>
#include <vector>

#include "baton/policy/policy.h"

namespace baton::policy {

class PriorityPolicy : public LowLevelPolicy {
 public:
  // Requires classes >= 1 (MakeLowLevelPolicy checks it).
  explicit PriorityPolicy(int classes);

  std::string name() const override { return "priority"; }
  std::vector<Decision> Decide(const Snapshot& snapshot) const override;
  bool MayDrop() const override { return false; }

  // `priority` clamped into [0, classes-1].
  int ClassOf(int priority) const;

 private:
  int classes_;
};

}  // namespace baton::policy
