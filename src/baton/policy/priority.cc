#include "baton/policy/priority.h"

#include <algorithm>
#include <cassert>

#include "baton/policy/placement.h"

namespace baton::policy {

PriorityPolicy::PriorityPolicy(int classes) : classes_(classes) { assert(classes >= 1); }

int PriorityPolicy::ClassOf(int priority) const { return std::clamp(priority, 0, classes_ - 1); }

std::vector<Decision> PriorityPolicy::Decide(const Snapshot& snapshot) const {
  DecisionBuilder builder(snapshot);
  // Negated class: higher classes sort first.
  PlaceEachOnFastestIdle(builder, OrderedItems(snapshot.ready, [this](const WorkItem& item) {
                           return -ClassOf(item.priority);
                         }));
  return std::move(builder).TakeDecisions();
}

}  // namespace baton::policy
