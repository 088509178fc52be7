#include "baton/policy/edf.h"

#include <utility>

#include "baton/policy/placement.h"

namespace baton::policy {

std::vector<Decision> EarliestDeadlineFirstPolicy::Decide(const Snapshot& snapshot) const {
  DecisionBuilder builder(snapshot);
  auto order = OrderedItems(snapshot.ready, [](const WorkItem& item) {
    return std::make_pair(!item.deadline.has_value(), item.deadline.value_or(kTimeZero));
  });
  for (const WorkItem* item : order) {
    if (!BestLatency(snapshot, *item)) continue;  // the core reports unrunnable items
    if (item->deadline && snapshot.now > *item->deadline) {
      builder.Drop(*item);
      continue;
    }
    PlaceOnFastestIdle(builder, *item);
  }
  return std::move(builder).TakeDecisions();
}

}  // namespace baton::policy
